/* test_ops.c: element-wise (activations included), global average pooling, per-channel scaling,
 * resize, loss and argmax fast paths against their references.
 *
 * Every ISA the host has, pools of NULL, 2 and 3 threads, odd sizes and channel counts, dense
 * maps and channel slices (ld > c, with a sentinel in the lanes around the slice that no kernel
 * may touch). Outputs start as NaN (random when accumulating), so a lane a kernel forgets shows.
 * The loss is also checked against an independent double-precision computation and, for its
 * gradient, against finite differences; the activations' gradients against PyTorch's values at
 * their kinks (which their inputs hold exactly: 0, 6, -3, 3) and finite differences elsewhere. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "bilinear.h"
#include "kernels.h"
#include "test_map.h"

#define RTOL 2e-5

static const int channel_counts[] = { 1, 2, 3, 8, 15, 16, 17, 33, 64 };
static const int sizes[][2] = { { 1, 1 }, { 3, 5 }, { 12, 20 }, { 45, 80 }, { 90, 161 } };

/* The largest size is there to split work over the threads: a few channel counts suffice. */
static gboolean size_worth_testing(size_t size_index, int c)
{
  return size_index + 1 < G_N_ELEMENTS(sizes) || c == 1 || c == 2 || c == 3 || c == 17;
}

static ThreadPool *pools[3]; /* NULL, 2 and 3 threads */

typedef enum { DENSE, SLICED_BOTH, SLICED_INPUT, SLICED_OUTPUT, N_LAYOUTS } Layout;

static int input_sliced(Layout layout)
{
  return layout == SLICED_BOTH || layout == SLICED_INPUT;
}

static int output_sliced(Layout layout)
{
  return layout == SLICED_BOTH || layout == SLICED_OUTPUT;
}

static const KernelsIsa isas[] = { KERNELS_ISA_SCALAR, KERNELS_ISA_AVX2, KERNELS_ISA_AVX512 };

/* Sets the ISA; FALSE when the host lacks it. */
static gboolean use_isa(KernelsIsa isa)
{
  return kernels_set_isa(isa) == isa;
}

static char *describe(const char *op, KernelsIsa isa, int p, int h, int w, int c, Layout layout)
{
  static const char *layouts[] = { "dense", "sliced", "input sliced", "output sliced" };
  return g_strdup_printf("%s %s pool=%d %dx%dx%d %s", op, kernels_isa_name(isa),
                         thread_pool_threads(pools[p]), h, w, c, layouts[layout]);
}

/* ---- element-wise ------------------------------------------------------------------------- */

typedef enum { RELU_BACKWARD, COPY, ACCUMULATE } PixelwiseOp;

static void run_pixelwise(PixelwiseOp op, const FeatureMap *in, FeatureMap *out,
                          ThreadPool *pool, gboolean reference)
{
  switch (op) {
  case RELU_BACKWARD:
    reference ? relu_backward_ref(in, out) : relu_backward(in, out, pool);
    break;
  case COPY:
  case ACCUMULATE:
    reference ? feature_map_copy_ref(in, out, op == ACCUMULATE)
              : feature_map_copy(in, out, op == ACCUMULATE, pool);
    break;
  }
}

static void check_pixelwise(PixelwiseOp op, const char *name)
{
  for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++)
    for (size_t ci = 0; ci < G_N_ELEMENTS(channel_counts); ci++)
      for (Layout layout = DENSE; layout < N_LAYOUTS; layout++) {
        int h = sizes[s][0], w = sizes[s][1], c = channel_counts[ci];
        if (!size_worth_testing(s, c))
          continue;
        TestMap in = test_map_new(h, w, c, input_sliced(layout));
        TestMap out0 = test_map_new(h, w, c, output_sliced(layout));
        test_map_fill(&in, -1.0f, 1.0f);
        if (op == RELU_BACKWARD) /* exact zeros: not positive, so they block the gradient */
          for (size_t i = 0; i < in.n; i += 5)
            if (test_map_is_channel(&in, i))
              in.buf[i] = 0.0f;
        if (op == COPY)
          test_map_fill_nan(&out0);
        else
          test_map_fill(&out0, -1.0f, 1.0f);
        TestMap want = test_map_copy(&out0);
        run_pixelwise(op, &in.map, &want.map, NULL, TRUE);
        for (size_t i = 0; i < G_N_ELEMENTS(isas); i++)
          for (int p = 0; p < 3 && use_isa(isas[i]); p++) {
            TestMap got = test_map_copy(&out0);
            run_pixelwise(op, &in.map, &got.map, pools[p], FALSE);
            char *what = describe(name, isas[i], p, h, w, c, layout);
            test_maps_close(&got, &want, NULL, 0.0, 0.0, what);
            g_free(what);
            test_map_free(&got);
          }
        test_map_free(&in);
        test_map_free(&out0);
        test_map_free(&want);
      }
}

static void test_relu_backward(void)
{
  check_pixelwise(RELU_BACKWARD, "relu_backward");
}

static void test_copy(void)
{
  check_pixelwise(COPY, "feature_map_copy");
}

static void test_accumulate(void)
{
  check_pixelwise(ACCUMULATE, "feature_map_copy accumulate");
}

static void check_subsample2(int backward, int accumulate)
{
  for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++)
    for (size_t ci = 0; ci < G_N_ELEMENTS(channel_counts); ci++)
      for (Layout layout = DENSE; layout < N_LAYOUTS; layout++) {
        int h = sizes[s][0], w = sizes[s][1], c = channel_counts[ci];
        if (!size_worth_testing(s, c))
          continue;
        int sh = (h + 1) / 2, sw = (w + 1) / 2;
        /* forward: large -> small; backward: small -> large */
        TestMap in = backward ? test_map_new(sh, sw, c, input_sliced(layout))
                              : test_map_new(h, w, c, input_sliced(layout));
        TestMap out0 = backward ? test_map_new(h, w, c, output_sliced(layout))
                                : test_map_new(sh, sw, c, output_sliced(layout));
        test_map_fill(&in, -1.0f, 1.0f);
        test_map_fill_output(&out0, accumulate);
        TestMap want = test_map_copy(&out0);
        if (backward)
          subsample2_backward_ref(&in.map, &want.map, accumulate);
        else
          subsample2_forward_ref(&in.map, &want.map);
        for (size_t i = 0; i < G_N_ELEMENTS(isas); i++)
          for (int p = 0; p < 3 && use_isa(isas[i]); p++) {
            TestMap got = test_map_copy(&out0);
            if (backward)
              subsample2_backward(&in.map, &got.map, accumulate, pools[p]);
            else
              subsample2_forward(&in.map, &got.map, pools[p]);
            char *what = describe(backward ? (accumulate ? "subsample2_backward accumulate"
                                                         : "subsample2_backward")
                                           : "subsample2_forward",
                                  isas[i], p, h, w, c, layout);
            test_maps_close(&got, &want, NULL, 0.0, 0.0, what);
            g_free(what);
            test_map_free(&got);
          }
        test_map_free(&in);
        test_map_free(&out0);
        test_map_free(&want);
      }
}

static void test_subsample2(void)
{
  check_subsample2(0, 0);
  check_subsample2(1, 0);
  check_subsample2(1, 1);
}

/* ---- resize --------------------------------------------------------------------------------- */

/* bilinear.h against the definition in double precision: the position of destination centre
 * d + 0.5 on the source axis, less half a sample, clamped to the first source centre. Every tap
 * lies in the axis, the second is the next sample (or the last again), the taps never go back, and
 * the axis fill gives the same taps one by one. */
static void test_bilinear_taps(void)
{
  static const int lengths[] = { 1, 2, 3, 5, 7, 16, 45, 240, 320, 576, 768, 1280 };
  for (size_t a = 0; a < G_N_ELEMENTS(lengths); a++)
    for (size_t b = 0; b < G_N_ELEMENTS(lengths); b++) {
      int in = lengths[a], out = lengths[b];
      int32_t *i0 = g_new(int32_t, out), *i1 = g_new(int32_t, out);
      float *frac = g_new(float, out);
      bilinear_taps(in, out, i0, i1, frac);
      for (int d = 0; d < out; d++) {
        int lo, hi;
        float f;
        bilinear_tap(d, in, out, &lo, &hi, &f);
        double s = fmax(0.0, (d + 0.5) * in / out - 0.5);
        double want = s >= in - 1 ? in - 1 : s; /* as a position: lo + frac */
        if (lo != i0[d] || hi != i1[d] || f != frac[d] || lo < 0 || lo > in - 1 ||
            hi != (lo < in - 1 ? lo + 1 : lo) || !(f >= 0.0f && f < 1.0f) ||
            (d > 0 && lo < i0[d - 1]) || fabs((hi > lo ? lo + f : lo) - want) > 1e-4 * in) {
          g_test_fail_printf("bilinear_tap(%d, %d, %d) = %d, %d, %.9g; %.9g in double", d, in,
                             out, lo, hi, f, s);
          break;
        }
      }
      g_free(i0);
      g_free(i1);
      g_free(frac);
    }
}

typedef struct {
  int in_h, in_w, out_h, out_w;
  gboolean all_channels; /* the largest pairs run a few channel counts only */
} ResizeCase;

static const ResizeCase resize_cases[] = {
  { 12, 20, 23, 40, TRUE },  { 5, 7, 2, 3, TRUE },     { 23, 40, 12, 20, TRUE },
  { 1, 1, 3, 4, TRUE },      { 7, 5, 7, 5, TRUE },     { 3, 9, 11, 2, TRUE },
  { 23, 40, 45, 80, TRUE },  { 45, 80, 180, 320, FALSE }, { 180, 320, 45, 80, FALSE },
};

static void check_resize(const ResizeCase *rc, int c, Layout layout, int backward, int accumulate)
{
  /* forward: x (in) -> y (out); backward: dy (out size) -> dx (in size) */
  TestMap src = backward ? test_map_new(rc->out_h, rc->out_w, c, input_sliced(layout))
                         : test_map_new(rc->in_h, rc->in_w, c, input_sliced(layout));
  TestMap dst0 = backward ? test_map_new(rc->in_h, rc->in_w, c, output_sliced(layout))
                          : test_map_new(rc->out_h, rc->out_w, c, output_sliced(layout));
  test_map_fill(&src, -1.0f, 1.0f);
  test_map_fill_output(&dst0, accumulate);
  TestMap want = test_map_copy(&dst0);
  /* A backward pixel sums the gradients of every output pixel it feeds, up to
   * ceil(out/in) a side, plus its old value: the sum can cancel to near zero, so its rounding
   * scales with the terms' magnitudes (all within 1), not with the result. */
  double terms = backward ? (double)((rc->out_h + rc->in_h - 1) / rc->in_h) *
                                ((rc->out_w + rc->in_w - 1) / rc->in_w) + accumulate
                          : 0.0;
  if (backward)
    resize_bilinear_backward_ref(&src.map, &want.map, accumulate);
  else
    resize_bilinear_forward_ref(&src.map, &want.map);
  for (size_t i = 0; i < G_N_ELEMENTS(isas); i++)
    for (int p = 0; p < 3 && use_isa(isas[i]); p++) {
      TestMap got = test_map_copy(&dst0);
      if (backward)
        resize_bilinear_backward(&src.map, &got.map, accumulate, pools[p]);
      else
        resize_bilinear_forward(&src.map, &got.map, pools[p]);
      char *shape = describe(backward ? (accumulate ? "resize_backward accumulate"
                                                    : "resize_backward")
                                      : "resize_forward",
                             isas[i], p, rc->in_h, rc->in_w, c, layout);
      char *what = g_strdup_printf("%s -> %dx%d", shape, rc->out_h, rc->out_w);
      test_maps_close(&got, &want, NULL, RTOL, RTOL * terms, what);
      g_free(what);
      g_free(shape);
      test_map_free(&got);
    }
  test_map_free(&src);
  test_map_free(&dst0);
  test_map_free(&want);
}

static void check_resize_all(int backward, int accumulate)
{
  static const int few_channels[] = { 1, 2, 17 };
  for (size_t r = 0; r < G_N_ELEMENTS(resize_cases); r++) {
    const ResizeCase *rc = &resize_cases[r];
    const int *cs = rc->all_channels ? channel_counts : few_channels;
    size_t n = rc->all_channels ? G_N_ELEMENTS(channel_counts) : G_N_ELEMENTS(few_channels);
    for (size_t ci = 0; ci < n; ci++)
      for (Layout layout = DENSE; layout < N_LAYOUTS; layout++)
        check_resize(rc, cs[ci], layout, backward, accumulate);
  }
}

static void test_resize_forward(void)
{
  check_resize_all(0, 0);
}

static void test_resize_backward(void)
{
  check_resize_all(1, 0);
  check_resize_all(1, 1);
}

/* ---- loss and argmax ------------------------------------------------------------------------ */

/* Labels in [0, c + 2) (so some are >= c) with about one in ten LABEL_IGNORE. */
static uint8_t *random_labels(size_t n, int c)
{
  uint8_t *labels = g_new(uint8_t, n > 0 ? n : 1);
  for (size_t i = 0; i < n; i++)
    labels[i] = g_test_rand_int_range(0, 10) == 0 ? LABEL_IGNORE
                                                   : (uint8_t)g_test_rand_int_range(0, c + 2);
  return labels;
}

/* Weights in [0, 2) with about one in eight exactly 0. */
static float *random_weights(size_t n)
{
  float *weights = g_new(float, n > 0 ? n : 1);
  for (size_t i = 0; i < n; i++)
    weights[i] = g_test_rand_int_range(0, 8) == 0 ? 0.0f
                                                   : (float)g_test_rand_double_range(0.0, 2.0);
  return weights;
}

/* The definition, all in double: softmax, its cross-entropy, the normalised gradient. */
static double xent_double(const FeatureMap *z, const uint8_t *labels, const float *weights,
                          double *grad)
{
  int c = z->c;
  size_t pixels = (size_t)z->h * z->w;
  double loss = 0.0, weight_sum = 0.0;
  double *p = g_new(double, c);
  for (size_t i = 0; i < pixels; i++) {
    double weight = weights ? weights[i] : 1.0;
    if (labels[i] < c)
      weight_sum += weight;
  }
  for (size_t i = 0; i < pixels; i++) {
    const float *zi = z->data + i * z->ld;
    double weight = weights ? weights[i] : 1.0, max = zi[0], sum = 0.0;
    int counts = labels[i] < c && weight != 0.0;
    for (int k = 1; k < c; k++)
      max = fmax(max, zi[k]);
    for (int k = 0; k < c; k++)
      sum += p[k] = exp(zi[k] - max);
    if (counts)
      loss += weight * (log(sum) - (zi[labels[i]] - max));
    for (int k = 0; k < c; k++)
      grad[i * c + k] = counts ? weight / weight_sum * (p[k] / sum - (k == labels[i])) : 0.0;
  }
  g_free(p);
  return weight_sum > 0.0 ? loss / weight_sum : 0.0;
}

static void check_xent_against_double(const char *what, double loss, const FeatureMap *dz,
                                      double want_loss, const double *want_grad, double atol)
{
  if (fabs(loss - want_loss) > 1e-5 * fmax(1.0, fabs(want_loss)))
    g_test_fail_printf("%s: loss %.9g, double precision %.9g", what, loss, want_loss);
  if (!dz)
    return;
  double scale = 0.0;
  size_t pixels = (size_t)dz->h * dz->w;
  for (size_t i = 0; i < pixels * dz->c; i++)
    scale = fmax(scale, fabs(want_grad[i]));
  for (size_t i = 0; i < pixels; i++)
    for (int k = 0; k < dz->c; k++) {
      double got = dz->data[i * dz->ld + k], want = want_grad[i * dz->c + k];
      if (!(fabs(got - want) <= 1e-5 * (fabs(want) + scale) + atol)) {
        g_test_fail_printf("%s: dlogits pixel %zu class %d is %.9g, double precision %.9g", what,
                           i, k, got, want);
        return;
      }
    }
}

static void check_softmax_xent(int h, int w, int c, Layout layout, gboolean weighted)
{
  size_t pixels = (size_t)h * w;
  TestMap z = test_map_new(h, w, c, input_sliced(layout));
  test_map_fill(&z, -8.0f, 8.0f);
  TestMap dz0 = test_map_new(h, w, c, output_sliced(layout));
  test_map_fill_nan(&dz0);
  uint8_t *labels = random_labels(pixels, c);
  float *weights = weighted ? random_weights(pixels) : NULL;
  TestMap want = test_map_copy(&dz0);
  double want_loss = softmax_xent_ref(&z.map, labels, weights, &want.map);
  double *grad = g_new(double, pixels * c + 1);
  double exact_loss = xent_double(&z.map, labels, weights, grad);
  /* p - 1 cancels when p is near 1: float softmax is good to a few ulp of the pixel's weight
   * share, not of the difference. */
  double weight_sum = 0.0, weight_max = 0.0;
  for (size_t i = 0; i < pixels; i++)
    if (labels[i] < c) {
      weight_sum += weights ? weights[i] : 1.0;
      weight_max = fmax(weight_max, weights ? weights[i] : 1.0);
    }
  double atol = weight_sum > 0.0 ? 1e-6 * weight_max / weight_sum : 0.0;
  for (size_t i = 0; i < G_N_ELEMENTS(isas); i++)
    for (int p = 0; p < 3 && use_isa(isas[i]); p++) {
      char *what = describe(weighted ? "softmax_xent weighted" : "softmax_xent", isas[i], p, h,
                            w, c, layout);
      TestMap got = test_map_copy(&dz0);
      double loss = softmax_xent(&z.map, labels, weights, &got.map, pools[p]);
      if (fabs(loss - want_loss) > 1e-5 * fmax(1.0, fabs(want_loss)))
        g_test_fail_printf("%s: loss %.9g, reference %.9g", what, loss, want_loss);
      test_maps_close(&got, &want, NULL, RTOL, atol, what);
      check_xent_against_double(what, loss, &got.map, exact_loss, grad, atol);
      double loss_only = softmax_xent(&z.map, labels, weights, NULL, pools[p]);
      check_xent_against_double(what, loss_only, NULL, exact_loss, NULL, 0.0);
      g_free(what);
      test_map_free(&got);
    }
  g_free(grad);
  g_free(labels);
  g_free(weights);
  test_map_free(&z);
  test_map_free(&dz0);
  test_map_free(&want);
}

static void test_softmax_xent(void)
{
  for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++)
    for (size_t ci = 0; ci < G_N_ELEMENTS(channel_counts); ci++)
      for (Layout layout = DENSE; layout < N_LAYOUTS; layout++)
        if (channel_counts[ci] >= 2 && size_worth_testing(s, channel_counts[ci])) {
          check_softmax_xent(sizes[s][0], sizes[s][1], channel_counts[ci], layout, FALSE);
          check_softmax_xent(sizes[s][0], sizes[s][1], channel_counts[ci], layout, TRUE);
        }
}

/* No pixel counts: all ignored, labels >= C, or all weights 0. The loss is 0 and so is every
 * gradient lane, NaN before. */
static void test_softmax_xent_nothing_counts(void)
{
  const int h = 9, w = 37, c = 3;
  size_t pixels = (size_t)h * w;
  TestMap z = test_map_new(h, w, c, 1);
  test_map_fill(&z, -4.0f, 4.0f);
  uint8_t *labels = g_new(uint8_t, pixels);
  float *zero_weights = g_new0(float, pixels);
  for (int variant = 0; variant < 3; variant++) {
    for (size_t i = 0; i < pixels; i++)
      labels[i] = variant == 0 ? LABEL_IGNORE : variant == 1 ? (uint8_t)(c + i % 5) : i % c;
    for (size_t i = 0; i < G_N_ELEMENTS(isas); i++)
      for (int p = 0; p < 3 && use_isa(isas[i]); p++) {
        TestMap dz = test_map_new(h, w, c, 1);
        test_map_fill_nan(&dz);
        double loss = softmax_xent(&z.map, labels, variant == 2 ? zero_weights : NULL, &dz.map,
                                   pools[p]);
        g_assert_cmpfloat(loss, ==, 0.0);
        for (size_t k = 0; k < dz.n; k++)
          if (test_map_is_channel(&dz, k))
            g_assert_cmpfloat(dz.buf[k], ==, 0.0f);
        test_map_free(&dz);
      }
  }
  g_free(zero_weights);
  g_free(labels);
  test_map_free(&z);
}

/* Central differences of the returned loss against dlogits, every logit of a small map. */
static void check_xent_gradient(int c, Layout layout)
{
  const int h = 3, w = 5;
  size_t pixels = (size_t)h * w;
  TestMap z = test_map_new(h, w, c, input_sliced(layout));
  test_map_fill(&z, -3.0f, 3.0f);
  uint8_t *labels = random_labels(pixels, c);
  labels[0] = 0; /* at least one pixel counts */
  float *weights = random_weights(pixels);
  weights[0] = 1.0f;
  for (size_t i = 0; i < G_N_ELEMENTS(isas); i++)
    for (int p = 0; p < 3 && use_isa(isas[i]); p++) {
      TestMap dz = test_map_new(h, w, c, output_sliced(layout));
      softmax_xent(&z.map, labels, weights, &dz.map, pools[p]);
      double scale = 0.0;
      for (size_t k = 0; k < dz.n; k++)
        if (test_map_is_channel(&dz, k))
          scale = fmax(scale, fabs(dz.buf[k]));
      for (size_t px = 0; px < pixels; px++)
        for (int k = 0; k < c; k++) {
          float *logit = z.map.data + px * z.map.ld + k, saved = *logit;
          float up = saved + 1e-2f, down = saved - 1e-2f;
          *logit = up;
          double loss_up = softmax_xent(&z.map, labels, weights, NULL, pools[p]);
          *logit = down;
          double loss_down = softmax_xent(&z.map, labels, weights, NULL, pools[p]);
          *logit = saved;
          double numeric = (loss_up - loss_down) / ((double)up - (double)down);
          double analytic = dz.map.data[px * dz.map.ld + k];
          if (fabs(numeric - analytic) > 5e-4 * scale + 1e-6)
            g_test_fail_printf("softmax_xent gradient %s c=%d: pixel %zu class %d: %.7g, finite "
                               "differences %.7g",
                               kernels_isa_name(isas[i]), c, px, k, analytic, numeric);
        }
      test_map_free(&dz);
    }
  g_free(labels);
  g_free(weights);
  test_map_free(&z);
}

static void test_softmax_xent_gradient(void)
{
  const int cs[] = { 2, 3, 8, 17 };
  for (size_t ci = 0; ci < G_N_ELEMENTS(cs); ci++)
    for (Layout layout = DENSE; layout < N_LAYOUTS; layout++)
      check_xent_gradient(cs[ci], layout);
}

static void check_argmax(int h, int w, int c, Layout layout, gboolean ties)
{
  size_t pixels = (size_t)h * w;
  TestMap z = test_map_new(h, w, c, input_sliced(layout));
  test_map_fill(&z, -1.0f, 1.0f);
  if (ties) /* few distinct values: the lowest index must win */
    for (size_t i = 0; i < z.n; i++)
      if (test_map_is_channel(&z, i))
        z.buf[i] = floorf(z.buf[i] * 2.0f);
  uint8_t *want = g_new(uint8_t, pixels + 1), *got = g_new(uint8_t, pixels + 1);
  argmax_channels_ref(&z.map, want);
  for (size_t i = 0; i < G_N_ELEMENTS(isas); i++)
    for (int p = 0; p < 3 && use_isa(isas[i]); p++) {
      memset(got, 0xee, pixels + 1);
      argmax_channels(&z.map, got, pools[p]);
      for (size_t k = 0; k < pixels; k++)
        if (got[k] != want[k]) {
          char *what = describe(ties ? "argmax_channels ties" : "argmax_channels", isas[i], p,
                                h, w, c, layout);
          g_test_fail_printf("%s: pixel %zu is %d, expected %d", what, k, got[k], want[k]);
          g_free(what);
          break;
        }
      g_assert_cmpint(got[pixels], ==, 0xee); /* nothing past the end */
    }
  g_free(want);
  g_free(got);
  test_map_free(&z);
}

static void test_argmax(void)
{
  for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++)
    for (size_t ci = 0; ci < G_N_ELEMENTS(channel_counts); ci++)
      for (Layout layout = DENSE; layout < N_LAYOUTS; layout++) {
        if (!size_worth_testing(s, channel_counts[ci]))
          continue;
        check_argmax(sizes[s][0], sizes[s][1], channel_counts[ci], layout, FALSE);
        check_argmax(sizes[s][0], sizes[s][1], channel_counts[ci], layout, TRUE);
      }
}

/* ---- class maps at another size ------------------------------------------------------------ */

/* The reference's resized scores: the logits, or with two classes their difference, through
 * resize_bilinear_forward_ref (the same taps and arithmetic as argmax_bilinear_ref). */
static TestMap resized_scores(const FeatureMap *z, int height, int width)
{
  int planes = z->c == 2 ? 1 : z->c;
  TestMap source = test_map_new(z->h, z->w, planes, FALSE);
  for (int y = 0; y < z->h; y++)
    for (int x = 0; x < z->w; x++) {
      const float *l = feature_map_at(z, y, x);
      float *s = feature_map_at(&source.map, y, x);
      for (int p = 0; p < planes; p++)
        s[p] = z->c == 2 ? l[1] - l[0] : l[p];
    }
  TestMap scores = test_map_new(height, width, planes, FALSE);
  resize_bilinear_forward_ref(&source.map, &scores.map);
  test_map_free(&source);
  return scores;
}

/* A class that differs from the reference's is wrong unless the reference's scores of the two
 * are within rounding (the fast path may fuse its multiply-adds), and a tie still goes to the
 * lower class. */
static gboolean class_close(const float *score, int planes, int got, int want, float tol)
{
  if (got == want)
    return TRUE;
  if (planes == 1)
    return got <= 1 && fabsf(score[0]) <= tol;
  if (got >= planes)
    return FALSE;
  float margin = score[want] - score[got];
  return margin <= tol && !(margin == 0.0f && got > want);
}

typedef struct {
  int in_h, in_w, out_h, out_w;
} UpsampleCase;

static void check_argmax_bilinear(const UpsampleCase *uc, int c, gboolean sliced, int pad,
                                  gboolean ties)
{
  TestMap z = test_map_new(uc->in_h, uc->in_w, c, sliced);
  test_map_fill(&z, -4.0f, 4.0f);
  if (ties) /* classes 1 and 2 alike: where they win, 1 must; two classes: many zero differences */
    for (int y = 0; y < uc->in_h; y++)
      for (int x = 0; x < uc->in_w; x++) {
        float *l = feature_map_at(&z.map, y, x);
        if (c == 2)
          l[1] = (x + y) % 3 ? l[0] : l[1];
        else if (c > 2)
          l[2] = l[1];
      }
  size_t stride = (size_t)uc->out_w + pad, n = stride * uc->out_h + 1;
  uint8_t *want = g_malloc(n), *got = g_malloc(n);
  memset(want, 0xee, n);
  argmax_bilinear_ref(&z.map, uc->out_w, uc->out_h, want, stride);
  TestMap scores = resized_scores(&z.map, uc->out_h, uc->out_w);
  int planes = scores.map.c;
  float largest = 0.0f;
  for (size_t i = 0; i < scores.n; i++)
    largest = fmaxf(largest, fabsf(scores.buf[i]));
  float tol = 1e-5f * largest;
  for (size_t i = 0; i < G_N_ELEMENTS(isas); i++)
    for (int p = 0; p < 3 && use_isa(isas[i]); p++) {
      memset(got, 0xee, n);
      argmax_bilinear(&z.map, uc->out_w, uc->out_h, got, stride, pools[p]);
      char *what = g_strdup_printf("argmax_bilinear%s %s pool=%d %dx%dx%d%s -> %dx%d stride %zu",
                                   ties ? " ties" : "", kernels_isa_name(isas[i]),
                                   thread_pool_threads(pools[p]), uc->in_h, uc->in_w, c,
                                   sliced ? " sliced" : "", uc->out_h, uc->out_w, stride);
      for (size_t k = 0; k < n; k++) {
        int y = (int)(k / stride), x = (int)(k % stride);
        gboolean pixel = y < uc->out_h && x < uc->out_w;
        if (!pixel ? got[k] != 0xee
                   : !class_close(feature_map_at(&scores.map, y, x), planes, got[k], want[k],
                                  tol)) {
          g_test_fail_printf("%s: byte %zu (row %d, column %d) is %d, the reference's %d", what,
                             k, y, x, got[k], want[k]);
          break;
        }
      }
      g_free(what);
    }
  test_map_free(&scores);
  g_free(want);
  g_free(got);
  test_map_free(&z);
}

static void test_argmax_bilinear(void)
{
  static const UpsampleCase cases[] = {
    { 1, 1, 3, 4 },     { 4, 3, 5, 1 },    { 5, 7, 2, 3 },      { 7, 5, 7, 5 },
    { 3, 9, 11, 2 },    { 9, 16, 17, 33 }, { 12, 20, 23, 40 },  { 23, 40, 45, 80 },
    { 45, 80, 180, 320 }, { 180, 320, 45, 80 }, { 240, 320, 576, 768 },
  };
  static const int class_counts[] = { 1, 2, 3, 5, 17 };
  for (size_t u = 0; u < G_N_ELEMENTS(cases); u++)
    for (size_t ci = 0; ci < G_N_ELEMENTS(class_counts); ci++) {
      int c = class_counts[ci];
      gboolean large = cases[u].out_h * cases[u].out_w > 50000;
      if (large && c != 2 && c != 3)
        continue;
      for (int sliced = 0; sliced < 2; sliced++) {
        check_argmax_bilinear(&cases[u], c, sliced, 0, FALSE);
        check_argmax_bilinear(&cases[u], c, sliced, large ? 0 : 5, TRUE);
      }
    }
}

/* ---- activations ---------------------------------------------------------------------------- */

/* torch.nn.functional's forward and backward (torch 1.13) at the kinks and either side. */
static void test_activation_kinks(void)
{
  static const float z[] = { -3.5f, -3.0f, -1.0f, 0.0f, 3.0f, 3.5f, 6.0f };
  static const struct {
    Activation f;
    float grad[G_N_ELEMENTS(z)];
  } cases[] = {
    { ACTIVATION_HSWISH, { 0.0f, -0.5f, 1.0f / 6.0f, 0.5f, 1.5f, 1.0f, 1.0f } },
    { ACTIVATION_HSIGMOID, { 0.0f, 0.0f, 1.0f / 6.0f, 1.0f / 6.0f, 0.0f, 0.0f, 0.0f } },
    { ACTIVATION_RELU6, { 0.0f, 0.0f, 0.0f, 0.0f, 1.0f, 1.0f, 0.0f } },
    { ACTIVATION_RELU, { 0.0f, 0.0f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f } },
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
    for (size_t k = 0; k < G_N_ELEMENTS(z); k++) {
      float want = cases[i].grad[k], got_ref = activation_grad_ref(cases[i].f, z[k], 1.0f);
      if (fabsf(got_ref - want) > 1e-7f)
        g_test_fail_printf("%s'(%g): %.9g, PyTorch %.9g", activation_name(cases[i].f), z[k],
                           got_ref, want);
      for (size_t j = 0; j < G_N_ELEMENTS(isas); j++) {
        if (!use_isa(isas[j]))
          continue;
        TestMap zm = test_map_new(1, 1, 1, FALSE), dy = test_map_new(1, 1, 1, FALSE);
        zm.buf[0] = z[k];
        dy.buf[0] = 1.0f;
        activation_backward(cases[i].f, &zm.map, &dy.map, &dy.map, 0, NULL);
        if (fabsf(dy.buf[0] - want) > 1e-7f)
          g_test_fail_printf("%s %s'(%g): %.9g, PyTorch %.9g", kernels_isa_name(isas[j]),
                             activation_name(cases[i].f), z[k], dy.buf[0], want);
        test_map_free(&zm), test_map_free(&dy);
      }
    }
}

/* Central differences of activation_ref against activation_grad_ref, away from the kinks. */
static void test_activation_gradients(void)
{
  for (Activation f = ACTIVATION_NONE; f < N_ACTIVATIONS; f++)
    for (int i = 0; i < 200; i++) {
      float z = -8.0f + 16.0f * (i + 0.5f) / 200.0f;
      if (fabsf(z) < 0.05f || fabsf(fabsf(z) - 3.0f) < 0.05f || fabsf(z - 6.0f) < 0.05f)
        continue;
      double step = 1e-2;
      double numeric = ((double)activation_ref(f, z + (float)step) -
                        (double)activation_ref(f, z - (float)step)) / (2.0 * step);
      double analytic = activation_grad_ref(f, z, 1.0f);
      if (fabs(numeric - analytic) > 1e-3)
        g_test_fail_printf("%s'(%g): %.6g, finite differences %.6g", activation_name(f), z,
                           analytic, numeric);
    }
}

static void fill_with_kinks(TestMap *m)
{
  static const float kinks[] = { 0.0f, 6.0f, -3.0f, 3.0f };
  test_map_fill(m, -8.0f, 8.0f);
  for (size_t i = 0, k = 0; i < m->n; i += 7)
    if (test_map_is_channel(m, i))
      m->buf[i] = kinks[k++ % G_N_ELEMENTS(kinks)];
}

/* Forward (backward == 0) or backward of f on one shape and layout, every ISA and pool; the
 * in-place forms with the dense layout. */
static void check_activation(Activation f, int backward, int accumulate, int h, int w, int c,
                             Layout layout)
{
  TestMap z = test_map_new(h, w, c, input_sliced(layout));
  TestMap dy = test_map_new(h, w, c, input_sliced(layout));
  TestMap out0 = test_map_new(h, w, c, output_sliced(layout));
  fill_with_kinks(&z);
  test_map_fill(&dy, -1.0f, 1.0f);
  test_map_fill_output(&out0, accumulate);
  TestMap want = test_map_copy(&out0);
  if (backward)
    activation_backward_ref(f, &z.map, &dy.map, &want.map, accumulate);
  else
    activation_forward_ref(f, &z.map, &want.map);
  const char *op = backward ? accumulate ? "activation_backward accumulate" : "activation_backward"
                            : "activation_forward";
  for (size_t i = 0; i < G_N_ELEMENTS(isas); i++)
    for (int p = 0; p < 3 && use_isa(isas[i]); p++) {
      char *what = describe(op, isas[i], p, h, w, c, layout);
      char *full = g_strdup_printf("%s %s", what, activation_name(f));
      /* In place: the output is the input's buffer (dy's, backward). */
      int in_place = layout == DENSE && !accumulate && p == 1;
      TestMap got = in_place ? test_map_copy(backward ? &dy : &z) : test_map_copy(&out0);
      if (backward)
        activation_backward(f, &z.map, in_place ? &got.map : &dy.map, &got.map, accumulate,
                            pools[p]);
      else
        activation_forward(f, in_place ? &got.map : &z.map, &got.map, pools[p]);
      /* A gradient near 0 comes of cancellation (hard-swish's (2z + 3) / 6 near z = -1.5), where
       * an FMA's rounding differs from the reference's: the backward pass is held to dy's scale
       * (|dy| <= 1, slopes <= 1.5). */
      test_maps_close(&got, &want, NULL, 1e-6, backward ? 2e-6 : 1e-37, full);
      test_map_free(&got);
      g_free(full);
      g_free(what);
    }
  test_map_free(&z), test_map_free(&dy), test_map_free(&out0), test_map_free(&want);
}

/* The channel counts of the sweeps and, on the smaller sizes, 200 (a wide block's). */
static int block_channels(size_t size_index, size_t i)
{
  if (i < G_N_ELEMENTS(channel_counts))
    return size_worth_testing(size_index, channel_counts[i]) ? channel_counts[i] : 0;
  return size_index + 2 < G_N_ELEMENTS(sizes) ? 200 : 0;
}

static void test_activations(void)
{
  for (Activation f = ACTIVATION_NONE; f < N_ACTIVATIONS; f++)
    for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++)
      for (size_t ci = 0; ci <= G_N_ELEMENTS(channel_counts); ci++)
        for (Layout layout = DENSE; layout < N_LAYOUTS; layout += 1 + (layout == DENSE)) {
          int h = sizes[s][0], w = sizes[s][1], c = block_channels(s, ci);
          if (c == 0)
            continue;
          check_activation(f, 0, 0, h, w, c, layout);
          check_activation(f, 1, 0, h, w, c, layout);
          check_activation(f, 1, 1, h, w, c, layout);
        }
}

/* ---- pooling and scaling (squeeze-and-excitation) -------------------------------------------------------------------- */

static void check_pool(int h, int w, int c, Layout layout)
{
  TestMap x = test_map_new(h, w, c, input_sliced(layout));
  test_map_fill(&x, -1.0f, 1.0f);
  TestMap xa = test_map_abs(&x);
  float *want = test_floats_new(c, 0.0f, 0.0f), *mag = test_floats_new(c, 0.0f, 0.0f);
  float *dy = test_floats_new(c, -1.0f, 1.0f);
  global_avg_pool_forward_ref(&x.map, want);
  global_avg_pool_forward_ref(&xa.map, mag);
  for (int accumulate = 0; accumulate < 2; accumulate++) {
    TestMap dx0 = test_map_new(h, w, c, output_sliced(layout));
    test_map_fill_output(&dx0, accumulate);
    TestMap dx_want = test_map_copy(&dx0);
    global_avg_pool_backward_ref(dy, &dx_want.map, accumulate);
    for (size_t i = 0; i < G_N_ELEMENTS(isas); i++)
      for (int p = 0; p < 3 && use_isa(isas[i]); p++) {
        char *what = describe(accumulate ? "global_avg_pool_backward accumulate"
                                         : "global_avg_pool", isas[i], p, h, w, c, layout);
        float *got = test_floats_new(c, NAN, NAN);
        global_avg_pool_forward(&x.map, got, pools[p]);
        test_floats_close(got, want, mag, c, 1e-5, 0.0, what);
        TestMap dx_got = test_map_copy(&dx0);
        global_avg_pool_backward(dy, &dx_got.map, accumulate, pools[p]);
        test_maps_equal(&dx_got, &dx_want, what);
        test_map_free(&dx_got);
        g_free(got);
        g_free(what);
      }
    test_map_free(&dx0), test_map_free(&dx_want);
  }
  test_map_free(&x), test_map_free(&xa);
  g_free(want), g_free(mag), g_free(dy);
}

/* Forward (in place on the dense maps of pool 1) and backward with and without dx, ds. */
static void check_scale(int h, int w, int c, Layout layout, int accumulate)
{
  TestMap x = test_map_new(h, w, c, input_sliced(layout));
  TestMap dy = test_map_new(h, w, c, input_sliced(layout));
  TestMap out0 = test_map_new(h, w, c, output_sliced(layout));
  test_map_fill(&x, -1.0f, 1.0f);
  test_map_fill(&dy, -1.0f, 1.0f);
  test_map_fill_output(&out0, accumulate);
  float *s = test_floats_new(c, -2.0f, 2.0f);
  float *ds0 = test_floats_new(c, -1.0f, 1.0f), *ds_want = g_memdup2(ds0, sizeof(float) * c);
  float *ds_mag = test_floats_abs(ds0, c);
  TestMap y_want = test_map_copy(&out0), dx_want = test_map_copy(&out0);
  channel_scale_forward_ref(&x.map, s, &y_want.map);
  channel_scale_backward_ref(&x.map, s, &dy.map, &dx_want.map, ds_want, accumulate);
  TestMap xa = test_map_abs(&x), dya = test_map_abs(&dy);
  channel_scale_backward_ref(&xa.map, s, &dya.map, NULL, ds_mag, 0);
  for (size_t i = 0; i < G_N_ELEMENTS(isas); i++)
    for (int p = 0; p < 3 && use_isa(isas[i]); p++) {
      char *what = describe(accumulate ? "channel_scale accumulate" : "channel_scale", isas[i],
                            p, h, w, c, layout);
      int in_place = layout == DENSE && p == 1;
      TestMap y = in_place ? test_map_copy(&x) : test_map_copy(&out0);
      channel_scale_forward(in_place ? &y.map : &x.map, s, &y.map, pools[p]);
      test_maps_equal(&y, &y_want, what);
      for (int variant = 0; variant < 3; variant++) { /* dx and ds, dx only, ds only */
        TestMap dx = test_map_copy(&out0);
        float *ds = g_memdup2(ds0, sizeof(float) * c);
        channel_scale_backward(&x.map, s, &dy.map, variant == 2 ? NULL : &dx.map,
                               variant == 1 ? NULL : ds, accumulate, pools[p]);
        if (variant == 2)
          test_maps_equal(&dx, &out0, what);
        else /* dy * s + dx may be fused into one rounding */
          test_maps_close(&dx, &dx_want, NULL, 1e-6, 0.0, what);
        test_floats_close(ds, variant == 1 ? ds0 : ds_want, ds_mag, c, 1e-5, 0.0, what);
        test_map_free(&dx);
        g_free(ds);
      }
      test_map_free(&y);
      g_free(what);
    }
  test_map_free(&x), test_map_free(&dy), test_map_free(&out0), test_map_free(&y_want);
  test_map_free(&dx_want), test_map_free(&xa), test_map_free(&dya);
  g_free(s), g_free(ds0), g_free(ds_want), g_free(ds_mag);
}

static void test_pool_and_scale(void)
{
  for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++)
    for (size_t ci = 0; ci <= G_N_ELEMENTS(channel_counts); ci++)
      for (Layout layout = DENSE; layout < N_LAYOUTS; layout++) {
        int h = sizes[s][0], w = sizes[s][1], c = block_channels(s, ci);
        if (c == 0)
          continue;
        check_pool(h, w, c, layout);
        check_scale(h, w, c, layout, 0);
        check_scale(h, w, c, layout, 1);
      }
}

/* ---- machine -------------------------------------------------------------------------------- */

static void test_fma_peak(void)
{
  for (size_t i = 0; i < G_N_ELEMENTS(isas); i++) {
    if (!use_isa(isas[i]))
      continue;
    double one = kernels_measure_fma_peak(1, 0.05), two = kernels_measure_fma_peak(2, 0.05);
    g_test_message("FMA peak %s: %.1f GFLOP/s on 1 thread, %.1f on 2", kernels_isa_name(isas[i]),
                   one, two);
    g_assert_true(isfinite(one) && one > 0.0);
    g_assert_true(isfinite(two) && two > 0.0);
  }
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  pools[1] = thread_pool_new(2);
  pools[2] = thread_pool_new(3);
  g_test_add_func("/ops/relu-backward", test_relu_backward);
  g_test_add_func("/ops/copy", test_copy);
  g_test_add_func("/ops/accumulate", test_accumulate);
  g_test_add_func("/ops/subsample2", test_subsample2);
  g_test_add_func("/ops/bilinear-taps", test_bilinear_taps);
  g_test_add_func("/ops/resize-forward", test_resize_forward);
  g_test_add_func("/ops/resize-backward", test_resize_backward);
  g_test_add_func("/ops/softmax-xent", test_softmax_xent);
  g_test_add_func("/ops/softmax-xent-nothing-counts", test_softmax_xent_nothing_counts);
  g_test_add_func("/ops/softmax-xent-gradient", test_softmax_xent_gradient);
  g_test_add_func("/ops/argmax", test_argmax);
  g_test_add_func("/ops/argmax-bilinear", test_argmax_bilinear);
  g_test_add_func("/ops/activation-kinks", test_activation_kinks);
  g_test_add_func("/ops/activation-gradients", test_activation_gradients);
  g_test_add_func("/ops/activations", test_activations);
  g_test_add_func("/ops/pool-and-scale", test_pool_and_scale);
  g_test_add_func("/ops/fma-peak", test_fma_peak);
  int status = g_test_run();
  thread_pool_free(pools[1]);
  thread_pool_free(pools[2]);
  return status;
}
