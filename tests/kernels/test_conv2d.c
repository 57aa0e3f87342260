/* test_conv2d.c: the fast convolution paths against the plain-C references.
 *
 * For every ISA the host has, a sweep over kernel shapes (1x1, 3x3, 1x3, 3x1), strides 1 and 2,
 * odd sizes and channel counts around the vector widths, with residual, ReLU, accumulation,
 * channel slices (ld > c) and thread pools of 1, 2 and 3 threads switched on and off along the way;
 * the fused backward pass (ReLU, weights, bias, input) against the references one after another.
 * Outputs start as NaN (or as random values where the operation accumulates); the reference and
 * the fast path start from identical buffers, so every float outside the written channels must
 * come back bit for bit. Written values are compared with a tolerance relative to the sum of the
 * magnitudes of their terms (the reference run on absolute values). The bfloat16 passes
 * (conv2d_forward_bf16, conv2d_backward_bf16) run the same sweep against their references, which
 * round the operands first: products of bfloat16 are exact in fp32, so only the order of the
 * sums differs and the same tolerance holds. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "test_map.h"

typedef struct {
  int kh, kw, pad_h, pad_w;
} KernelShape;

static const KernelShape kernel_shapes[] = {
  { 1, 1, 0, 0 },
  { 3, 3, 1, 1 },
  { 1, 3, 0, 1 },
  { 3, 1, 1, 0 },
};

/* input sizes, h x w (odd and even: stride 2 leaves a right edge or not); rows of 97 and 100
 * pixels are wide enough to be read in place with copied edges, at strides 1 and 2 */
static const int input_sizes[][2] = { { 1, 1 }, { 7, 5 }, { 8, 6 }, { 23, 17 }, { 37, 29 },
                                      { 3, 97 }, { 4, 100 } };

/* (cin, cout): each of 1, 3, 8, 15, 16, 17, 32, 33, 64 appears on both sides. */
static const int channel_pairs[][2] = {
  { 1, 1 },   { 3, 8 },   { 8, 15 },  { 15, 16 }, { 16, 17 },
  { 17, 32 }, { 32, 33 }, { 33, 64 }, { 64, 3 },
};

static void fill_random(float *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    p[i] = (float)g_test_rand_double_range(-1.0, 1.0);
}

static float *abs_copy(const float *p, size_t n)
{
  if (!p)
    return NULL;
  float *a = g_new(float, n);
  for (size_t i = 0; i < n; i++)
    a[i] = fabsf(p[i]);
  return a;
}

/* |got - want| <= 1e-5 * magnitude, float by float (weight gradients). */
static void assert_close(const float *got, const float *want, const float *magnitude, size_t n,
                         const char *what)
{
  for (size_t i = 0; i < n; i++) {
    float tol = 1e-5f * magnitude[i] + 1e-7f;
    if (!(fabsf(got[i] - want[i]) <= tol)) {
      g_test_fail_printf("%s: float %zu is %.8g, reference %.8g (tolerance %.3g)", what, i,
                         got[i], want[i], tol);
      return;
    }
  }
}

/* Map tolerance: that of assert_close. */
#define RTOL 1e-5
#define ATOL 1e-7

typedef struct {
  ConvGeometry g;
  int h, w; /* input size */
  int residual, relu, accumulate, sliced, no_dx;
  int no_dbias; /* no bias gradient, and no bias in the forward pass */
  int bf16;     /* the bfloat16 passes */
  ThreadPool *pool;
} ConvCase;

/* The output size of the case; returns the number of weights. */
static size_t case_sizes(const ConvCase *cc, int *oh, int *ow)
{
  const ConvGeometry *g = &cc->g;
  *oh = conv_output_size(cc->h, g->kh, g->stride, g->pad_h);
  *ow = conv_output_size(cc->w, g->kw, g->stride, g->pad_w);
  return (size_t)g->kh * g->kw * g->cin * g->cout;
}

static void check_forward(const ConvCase *cc)
{
  const ConvGeometry *g = &cc->g;
  int oh, ow;
  size_t nw = case_sizes(cc, &oh, &ow);
  TestMap x = test_map_new(cc->h, cc->w, g->cin, cc->sliced);
  TestMap res = test_map_new(oh, ow, g->cout, cc->sliced);
  TestMap want = test_map_new(oh, ow, g->cout, cc->sliced);
  float *w = g_new(float, nw), *bias = g_new(float, g->cout);
  test_map_fill(&x, -1.0f, 1.0f);
  test_map_fill(&res, -1.0f, 1.0f);
  fill_random(w, nw);
  fill_random(bias, g->cout);
  test_map_fill_nan(&want);
  TestMap got = test_map_copy(&want);
  const FeatureMap *residual = cc->residual ? &res.map : NULL;
  const float *b = cc->no_dbias ? NULL : bias; /* no bias either */

  if (cc->bf16) {
    conv2d_forward_bf16_ref(g, &x.map, w, b, residual, cc->relu, &want.map);
    conv2d_forward_bf16(g, &x.map, w, b, residual, cc->relu, &got.map, cc->pool);
  } else {
    conv2d_forward_ref(g, &x.map, w, b, residual, cc->relu, &want.map);
    conv2d_forward(g, &x.map, w, b, residual, cc->relu, &got.map, cc->pool);
  }

  TestMap xa = test_map_abs(&x), ra = test_map_abs(&res), mag = test_map_copy(&got);
  float *wa = abs_copy(w, nw), *ba = abs_copy(b, g->cout);
  conv2d_forward_ref(g, &xa.map, wa, ba, cc->residual ? &ra.map : NULL, 0, &mag.map);
  test_maps_close(&got, &want, &mag, RTOL, ATOL, "forward");

  test_map_free(&x), test_map_free(&res), test_map_free(&want), test_map_free(&got);
  test_map_free(&xa), test_map_free(&ra), test_map_free(&mag);
  g_free(w), g_free(bias), g_free(wa), g_free(ba);
}

static void check_backward_input(const ConvCase *cc)
{
  const ConvGeometry *g = &cc->g;
  int oh, ow;
  size_t nw = case_sizes(cc, &oh, &ow);
  TestMap dy = test_map_new(oh, ow, g->cout, cc->sliced);
  TestMap want = test_map_new(cc->h, cc->w, g->cin, cc->sliced);
  float *w = g_new(float, nw);
  test_map_fill(&dy, -1.0f, 1.0f);
  fill_random(w, nw);
  if (cc->accumulate)
    test_map_fill(&want, -1.0f, 1.0f);
  else
    test_map_fill_nan(&want);
  TestMap got = test_map_copy(&want);
  TestMap mag = test_map_abs(&want);

  conv2d_backward_input_ref(g, &dy.map, w, &want.map, cc->accumulate);
  conv2d_backward_input(g, &dy.map, w, &got.map, cc->accumulate, cc->pool);

  TestMap dya = test_map_abs(&dy);
  float *wa = abs_copy(w, nw);
  conv2d_backward_input_ref(g, &dya.map, wa, &mag.map, cc->accumulate);
  test_maps_close(&got, &want, &mag, RTOL, ATOL, "backward input");

  test_map_free(&dy), test_map_free(&want), test_map_free(&got);
  test_map_free(&dya), test_map_free(&mag);
  g_free(w), g_free(wa);
}

static void check_backward_weights(const ConvCase *cc)
{
  const ConvGeometry *g = &cc->g;
  int oh, ow;
  size_t nw = case_sizes(cc, &oh, &ow);
  TestMap x = test_map_new(cc->h, cc->w, g->cin, cc->sliced);
  TestMap dy = test_map_new(oh, ow, g->cout, cc->sliced);
  float *want = g_new(float, nw + g->cout), *got = g_new(float, nw + g->cout);
  test_map_fill(&x, -1.0f, 1.0f);
  test_map_fill(&dy, -1.0f, 1.0f);
  fill_random(want, nw + g->cout); /* dw and dbias accumulate */
  memcpy(got, want, sizeof(float) * (nw + g->cout));
  float *mag = abs_copy(want, nw + g->cout);
  float *want_db = cc->no_dbias ? NULL : want + nw, *got_db = cc->no_dbias ? NULL : got + nw;

  conv2d_backward_weights_ref(g, &x.map, &dy.map, want, want_db);
  conv2d_backward_weights(g, &x.map, &dy.map, got, got_db, cc->pool);

  TestMap xa = test_map_abs(&x), dya = test_map_abs(&dy);
  conv2d_backward_weights_ref(g, &xa.map, &dya.map, mag, cc->no_dbias ? NULL : mag + nw);
  assert_close(got, want, mag, nw + g->cout, "backward weights");

  test_map_free(&x), test_map_free(&dy), test_map_free(&xa), test_map_free(&dya);
  g_free(want), g_free(got), g_free(mag);
}

/* conv2d_backward against the references one after the other: relu_backward, backward weights,
 * backward input (when cc->no_dx is 0). The forward output y holds zeros, negatives and NaN. */
static void check_backward_fused(const ConvCase *cc)
{
  const ConvGeometry *g = &cc->g;
  int oh, ow;
  size_t nw = case_sizes(cc, &oh, &ow);
  TestMap x = test_map_new(cc->h, cc->w, g->cin, cc->sliced);
  TestMap y = test_map_new(oh, ow, g->cout, cc->sliced);
  TestMap dy_want = test_map_new(oh, ow, g->cout, cc->sliced);
  TestMap dx_want = test_map_new(cc->h, cc->w, g->cin, cc->sliced);
  float *w = g_new(float, nw);
  float *grads_want = g_new(float, nw + g->cout);
  test_map_fill(&x, -1.0f, 1.0f);
  test_map_fill(&y, -1.0f, 1.0f);
  for (size_t i = 0; i < y.n; i += 7)
    if (test_map_is_channel(&y, i))
      y.buf[i] = i % 2 ? 0.0f : NAN;
  test_map_fill(&dy_want, -1.0f, 1.0f);
  fill_random(w, nw);
  fill_random(grads_want, nw + g->cout);
  if (cc->accumulate)
    test_map_fill(&dx_want, -1.0f, 1.0f);
  else
    test_map_fill_nan(&dx_want);
  TestMap dy_got = test_map_copy(&dy_want), dx_got = test_map_copy(&dx_want);
  float *grads_got = g_memdup2(grads_want, sizeof(float) * (nw + g->cout));
  float *db_want = cc->no_dbias ? NULL : grads_want + nw;
  float *db_got = cc->no_dbias ? NULL : grads_got + nw;
  const FeatureMap *relu_y = cc->relu ? &y.map : NULL;

  /* Magnitudes: the references on absolute values, from the masked gradient. */
  TestMap dy_masked = test_map_copy(&dy_want);
  if (relu_y)
    relu_backward_ref(relu_y, &dy_masked.map);
  TestMap xa = test_map_abs(&x), dya = test_map_abs(&dy_masked), dxa = test_map_abs(&dx_want);
  float *wa = abs_copy(w, nw), *grads_mag = abs_copy(grads_want, nw + g->cout);
  conv2d_backward_weights_ref(g, &xa.map, &dya.map, grads_mag,
                              cc->no_dbias ? NULL : grads_mag + nw);
  conv2d_backward_input_ref(g, &dya.map, wa, &dxa.map, cc->accumulate);

  if (relu_y)
    relu_backward_ref(relu_y, &dy_want.map);
  (cc->bf16 ? conv2d_backward_weights_bf16_ref : conv2d_backward_weights_ref)(
    g, &x.map, &dy_want.map, grads_want, db_want);
  if (!cc->no_dx && cc->bf16)
    conv2d_backward_input_bf16_ref(g, &dy_want.map, w, &dx_want.map, cc->accumulate);
  else if (!cc->no_dx)
    conv2d_backward_input_ref(g, &dy_want.map, w, &dx_want.map, cc->accumulate);
  (cc->bf16 ? conv2d_backward_bf16 : conv2d_backward)(g, &x.map, w, relu_y, &dy_got.map,
                                                      grads_got, db_got,
                                                      cc->no_dx ? NULL : &dx_got.map,
                                                      cc->accumulate, cc->pool);

  test_maps_equal(&dy_got, &dy_want, "fused backward: dy");
  assert_close(grads_got, grads_want, grads_mag, nw + g->cout, "fused backward: weights");
  if (cc->no_dx)
    test_maps_equal(&dx_got, &dx_want, "fused backward: no dx");
  else
    test_maps_close(&dx_got, &dx_want, &dxa, RTOL, ATOL, "fused backward: input");

  test_map_free(&x), test_map_free(&y), test_map_free(&dy_want), test_map_free(&dx_want);
  test_map_free(&dy_got), test_map_free(&dx_got), test_map_free(&dy_masked);
  test_map_free(&xa), test_map_free(&dya), test_map_free(&dxa);
  g_free(w), g_free(wa), g_free(grads_want), g_free(grads_got), g_free(grads_mag);
}

static void check_case(const ConvCase *cc)
{
  check_forward(cc);
  if (!cc->bf16) { /* no separate bfloat16 entry points for these */
    check_backward_input(cc);
    check_backward_weights(cc);
  }
  check_backward_fused(cc);
}

/* Test data: an ISA, or BF16_MODE for the bfloat16 passes (on AVX-512). */
#define BF16_MODE 0x100

/* Sets the ISA of the mode; FALSE (test skipped) when the CPU lacks it. */
static gboolean enter_mode(int mode, KernelsIsa *before)
{
  KernelsIsa isa = mode == BF16_MODE ? KERNELS_ISA_AVX512 : (KernelsIsa)mode;
  *before = kernels_isa();
  if (kernels_set_isa(isa) != isa || (mode == BF16_MODE && !kernels_have_bf16())) {
    kernels_set_isa(*before);
    g_test_skip("this CPU lacks the instruction set");
    return FALSE;
  }
  return TRUE;
}

/* Options switch with the bits of the case number, pools cycle through none, 2 and 3 threads. */
static void test_sweep(gconstpointer data)
{
  KernelsIsa before;
  if (!enter_mode(GPOINTER_TO_INT(data), &before))
    return;
  ThreadPool *pools[3] = { NULL, thread_pool_new(2), thread_pool_new(3) };
  int n = 0;
  for (size_t ks = 0; ks < G_N_ELEMENTS(kernel_shapes); ks++)
    for (int stride = 1; stride <= 2; stride++)
      for (size_t sz = 0; sz < G_N_ELEMENTS(input_sizes); sz++)
        for (size_t cp = 0; cp < G_N_ELEMENTS(channel_pairs); cp++, n++) {
          const KernelShape *k = &kernel_shapes[ks];
          ConvCase cc = {
            .g = { k->kh, k->kw, stride, k->pad_h, k->pad_w, channel_pairs[cp][0],
                   channel_pairs[cp][1] },
            .h = input_sizes[sz][0],
            .w = input_sizes[sz][1],
            .residual = n & 1,
            .relu = (n >> 1) & 1,
            .accumulate = (n >> 2) & 1,
            .sliced = (n >> 3) & 1,
            .no_dbias = n % 5 == 0,
            .no_dx = n % 7 == 0,
            .bf16 = GPOINTER_TO_INT(data) == BF16_MODE,
            .pool = pools[n % 3],
          };
          check_case(&cc);
        }
  thread_pool_free(pools[1]);
  thread_pool_free(pools[2]);
  kernels_set_isa(before);
}

/* The student's own layer shapes (student/README.md) on a small frame: wide channel counts,
 * several output-channel blocks, the concatenated decoder inputs read as slices. */
static void test_student_layers(gconstpointer data)
{
  KernelsIsa before;
  if (!enter_mode(GPOINTER_TO_INT(data), &before))
    return;
  static const struct {
    int kh, kw, stride, pad_h, pad_w, cin, cout, h, w;
  } layers[] = {
    { 3, 3, 2, 1, 1, 3, 8, 36, 130 },   /* stem.0, rows wide enough for in-place reads */
    { 3, 3, 2, 1, 1, 8, 32, 18, 32 },   /* stem.1 */
    { 3, 3, 2, 1, 1, 32, 64, 9, 16 },   /* encoder.0.conv1 */
    { 1, 3, 1, 0, 1, 64, 64, 5, 8 },    /* encoder.0.conv2 */
    { 3, 1, 1, 1, 0, 64, 64, 5, 8 },    /* encoder.0.conv3 */
    { 1, 1, 2, 0, 0, 32, 64, 9, 16 },   /* encoder.0.shortcut */
    { 3, 3, 1, 1, 1, 128, 128, 3, 5 },  /* decoder.0.conv1 */
    { 3, 3, 1, 1, 1, 192, 64, 5, 8 },   /* decoder.1.conv1 */
    { 1, 1, 1, 0, 0, 192, 64, 5, 8 },   /* decoder.1.shortcut */
    { 3, 3, 1, 1, 1, 128, 32, 9, 16 },  /* decoder.2.conv1 */
    { 3, 3, 1, 1, 1, 32, 16, 18, 65 },  /* head.0 */
    { 3, 3, 1, 1, 1, 16, 8, 18, 65 },   /* head.1 */
    { 1, 1, 1, 0, 0, 8, 2, 18, 65 },    /* classifier */
  };
  ThreadPool *pool = thread_pool_new(2);
  for (size_t i = 0; i < G_N_ELEMENTS(layers); i++) {
    ConvCase cc = {
      .g = { layers[i].kh, layers[i].kw, layers[i].stride, layers[i].pad_h, layers[i].pad_w,
             layers[i].cin, layers[i].cout },
      .h = layers[i].h,
      .w = layers[i].w,
      .residual = i & 1,
      .relu = 1,
      .accumulate = (i >> 1) & 1,
      .sliced = (i >> 2) & 1,
      .bf16 = GPOINTER_TO_INT(data) == BF16_MODE,
      .pool = i % 3 ? pool : NULL,
    };
    check_case(&cc);
  }
  thread_pool_free(pool);
  kernels_set_isa(before);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  static const int isas[] = { KERNELS_ISA_SCALAR, KERNELS_ISA_AVX2, KERNELS_ISA_AVX512,
                               BF16_MODE };
  for (size_t i = 0; i < G_N_ELEMENTS(isas); i++) {
    const char *name = isas[i] == BF16_MODE ? "bf16" : kernels_isa_name(isas[i]);
    g_autofree char *sweep = g_strdup_printf("/conv2d/%s/sweep", name);
    g_autofree char *layers = g_strdup_printf("/conv2d/%s/student-layers", name);
    g_test_add_data_func(sweep, GINT_TO_POINTER(isas[i]), test_sweep);
    g_test_add_data_func(layers, GINT_TO_POINTER(isas[i]), test_student_layers);
  }
  return g_test_run();
}
