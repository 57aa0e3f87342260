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
 * sums differs and the same tolerance holds. Pointwise convolutions, whose passes run as OpenBLAS
 * sgemm calls where that is faster, once more with every mix of sgemm and direct passes.
 *
 * The depthwise 3x3 convolution the same way: a sweep over channel counts around the vector
 * widths (1 to 200), input sizes from 1x1 through odd and wide rows (whole tiles, row bands on
 * several threads), strides 1 and 2, every activation, and by the bits of the case number a bias
 * or none, the pre-activation stored or not, slices, accumulation into dx, no dx, no dbias, pools
 * of none, 2 and 3 threads; the activation's input holds its kinks (0, 6, -3, 3) exactly. The
 * reference's gradients are checked against finite differences of its forward pass. */
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

/* |got - want| <= 1e-5 * magnitude, float by float (weight gradients). */
static void assert_close(const float *got, const float *want, const float *magnitude, size_t n,
                         const char *what)
{
  test_floats_close(got, want, magnitude, n, 1e-5, 1e-7, what);
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
  float *wa = test_floats_abs(w, nw), *ba = test_floats_abs(b, g->cout);
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
  test_map_fill_output(&want, cc->accumulate);
  TestMap got = test_map_copy(&want);
  TestMap mag = test_map_abs(&want);

  conv2d_backward_input_ref(g, &dy.map, w, &want.map, cc->accumulate);
  conv2d_backward_input(g, &dy.map, w, &got.map, cc->accumulate, cc->pool);

  TestMap dya = test_map_abs(&dy);
  float *wa = test_floats_abs(w, nw);
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
  float *mag = test_floats_abs(want, nw + g->cout);
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
  test_map_fill_output(&dx_want, cc->accumulate);
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
  float *wa = test_floats_abs(w, nw), *grads_mag = test_floats_abs(grads_want, nw + g->cout);
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

/* Case n of a sweep: its options switch with the bits of n, pools cycle through none, 2 and 3
 * threads. */
static ConvCase sweep_case(int n, ConvGeometry g, int h, int w, ThreadPool *const pools[3])
{
  ConvCase cc = {
    .g = g,
    .h = h,
    .w = w,
    .residual = n & 1,
    .relu = (n >> 1) & 1,
    .accumulate = (n >> 2) & 1,
    .sliced = (n >> 3) & 1,
    .no_dbias = n % 5 == 0,
    .no_dx = n % 7 == 0,
    .pool = pools[n % 3],
  };
  return cc;
}

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
          ConvGeometry g = { k->kh, k->kw, stride, k->pad_h, k->pad_w, channel_pairs[cp][0],
                             channel_pairs[cp][1] };
          ConvCase cc = sweep_case(n, g, input_sizes[sz][0], input_sizes[sz][1], pools);
          cc.bf16 = GPOINTER_TO_INT(data) == BF16_MODE;
          check_case(&cc);
        }
  thread_pool_free(pools[1]);
  thread_pool_free(pools[2]);
  kernels_set_isa(before);
}

/* Pointwise convolutions, each case with a random one of the eight mixes of sgemm and direct
 * passes (or, one case in nine, the passes conv2d_pointwise_uses_gemm picks); wider channel
 * counts than the sweep's, whose GEMMs OpenBLAS blocks. */
static void test_pointwise_gemm(gconstpointer data)
{
  KernelsIsa before;
  if (!enter_mode(GPOINTER_TO_INT(data), &before))
    return;
  static const int wide_pairs[][2] = { { 96, 24 }, { 24, 144 }, { 256, 200 } };
  ThreadPool *pools[3] = { NULL, thread_pool_new(2), thread_pool_new(3) };
  int n = 0;
  for (size_t sz = 0; sz < G_N_ELEMENTS(input_sizes); sz++)
    for (size_t cp = 0; cp < G_N_ELEMENTS(channel_pairs) + G_N_ELEMENTS(wide_pairs); cp++, n++) {
      int nc = G_N_ELEMENTS(channel_pairs);
      const int *pair = (int)cp < nc ? channel_pairs[cp] : wide_pairs[cp - nc];
      ConvGeometry g = { 1, 1, 1, 0, 0, pair[0], pair[1] };
      ConvCase cc = sweep_case(n, g, input_sizes[sz][0], input_sizes[sz][1], pools);
      int passes = g_test_rand_int_range(0, 9);
      int saved = conv2d_set_pointwise_gemm(passes == 8 ? POINTWISE_BY_RULE : passes);
      check_case(&cc);
      conv2d_set_pointwise_gemm(saved);
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

/* ---- depthwise 3x3 ----------------------------------------------------------------------- */

static const int dw_channel_counts[] = { 1, 3, 7, 8, 9, 15, 16, 17, 24, 33, 40, 64, 72, 120, 200 };
static const int dw_input_sizes[][2] = { { 1, 1 }, { 1, 6 }, { 6, 1 }, { 2, 2 }, { 3, 7 },
                                      { 8, 6 }, { 9, 9 }, { 13, 21 }, { 15, 20 }, { 24, 37 } };

typedef struct {
  int h, w, c, stride;
  Activation f;
  int bias, store_z, sliced, accumulate, no_dx, no_dbias;
  ThreadPool *pool;
} DwCase;

static char *describe_dw(const DwCase *dc, const char *what)
{
  return g_strdup_printf("%s %s %dx%dx%d stride %d %s%s%s pool=%d", what,
                         kernels_isa_name(kernels_isa()), dc->h, dc->w, dc->c, dc->stride,
                         activation_name(dc->f), dc->sliced ? " sliced" : "",
                         dc->accumulate ? " accumulate" : "", thread_pool_threads(dc->pool));
}

static void check_dw_forward(const DwCase *dc)
{
  int oh = dwconv3x3_output_size(dc->h, dc->stride), ow = dwconv3x3_output_size(dc->w, dc->stride);
  TestMap x = test_map_new(dc->h, dc->w, dc->c, dc->sliced);
  TestMap y_want = test_map_new(oh, ow, dc->c, dc->sliced);
  test_map_fill(&x, -1.0f, 1.0f);
  test_map_fill_nan(&y_want);
  TestMap z_want = test_map_copy(&y_want), y_got = test_map_copy(&y_want);
  TestMap z_got = test_map_copy(&y_want), mag = test_map_copy(&y_want);
  float *w = test_floats_new(9 * (size_t)dc->c, -1.0f, 1.0f);
  float *bias = dc->bias ? test_floats_new((size_t)dc->c, -1.0f, 1.0f) : NULL;

  dwconv3x3_forward_ref(&x.map, w, bias, dc->stride, dc->f, dc->store_z ? &z_want.map : NULL,
                        &y_want.map);
  dwconv3x3_forward(&x.map, w, bias, dc->stride, dc->f, dc->store_z ? &z_got.map : NULL,
                    &y_got.map, dc->pool);

  TestMap xa = test_map_abs(&x);
  float *wa = test_floats_abs(w, 9 * (size_t)dc->c), *ba = test_floats_abs(bias, (size_t)dc->c);
  dwconv3x3_forward_ref(&xa.map, wa, ba, dc->stride, ACTIVATION_NONE, NULL, &mag.map);
  char *what = describe_dw(dc, "forward y");
  /* The steepest activation (hard-swish, 3/2) scales the pre-activation's rounding. */
  test_maps_close(&y_got, &y_want, &mag, 2 * RTOL, ATOL, what);
  g_free(what);
  what = describe_dw(dc, dc->store_z ? "forward z" : "forward no z");
  if (dc->store_z)
    test_maps_close(&z_got, &z_want, &mag, RTOL, ATOL, what);
  else
    test_maps_equal(&z_got, &z_want, what);
  g_free(what);

  test_map_free(&x), test_map_free(&y_want), test_map_free(&z_want), test_map_free(&y_got);
  test_map_free(&z_got), test_map_free(&mag), test_map_free(&xa);
  g_free(w), g_free(bias), g_free(wa), g_free(ba);
}

/* The activation's input: uniform, with the kinks of every activation (0, 6, -3, 3) exactly. */
static void fill_act_input(TestMap *a)
{
  static const float kinks[] = { 0.0f, 6.0f, -3.0f, 3.0f };
  test_map_fill(a, -7.0f, 7.0f);
  for (size_t i = 0, k = 0; i < a->n; i += 5)
    if (test_map_is_channel(a, i))
      a->buf[i] = kinks[k++ % G_N_ELEMENTS(kinks)];
}

static void check_dw_backward(const DwCase *dc)
{
  int oh = dwconv3x3_output_size(dc->h, dc->stride), ow = dwconv3x3_output_size(dc->w, dc->stride);
  size_t nw = 9 * (size_t)dc->c;
  TestMap x = test_map_new(dc->h, dc->w, dc->c, dc->sliced);
  TestMap act = test_map_new(oh, ow, dc->c, dc->sliced);
  TestMap dy_want = test_map_new(oh, ow, dc->c, dc->sliced);
  TestMap dx_want = test_map_new(dc->h, dc->w, dc->c, dc->sliced);
  test_map_fill(&x, -1.0f, 1.0f);
  fill_act_input(&act);
  test_map_fill(&dy_want, -1.0f, 1.0f);
  test_map_fill_output(&dx_want, dc->accumulate);
  float *w = test_floats_new(nw, -1.0f, 1.0f);
  float *grads_want = test_floats_new(nw + dc->c, -1.0f, 1.0f); /* dw, dbias accumulate */
  float *grads_got = g_memdup2(grads_want, sizeof(float) * (nw + dc->c));
  float *grads_mag = test_floats_abs(grads_want, nw + dc->c);
  TestMap dy_got = test_map_copy(&dy_want), dx_got = test_map_copy(&dx_want);
  FeatureMap *dx_arg_want = dc->no_dx ? NULL : &dx_want.map;
  FeatureMap *dx_arg_got = dc->no_dx ? NULL : &dx_got.map;

  dwconv3x3_backward_ref(&x.map, w, dc->stride, dc->f, &act.map, &dy_want.map, grads_want,
                         dc->no_dbias ? NULL : grads_want + nw, dx_arg_want, dc->accumulate);
  dwconv3x3_backward(&x.map, w, dc->stride, dc->f, &act.map, &dy_got.map, grads_got,
                     dc->no_dbias ? NULL : grads_got + nw, dx_arg_got, dc->accumulate, dc->pool);

  /* Magnitudes: the reference on absolute values, from the pre-activation gradient. */
  TestMap xa = test_map_abs(&x), dya = test_map_abs(&dy_want), dxa = test_map_abs(&dx_want);
  float *wa = test_floats_abs(w, nw);
  dwconv3x3_backward_ref(&xa.map, wa, dc->stride, ACTIVATION_NONE, NULL, &dya.map, grads_mag,
                         grads_mag + nw, dc->no_dx ? NULL : &dxa.map, dc->accumulate);

  char *what = describe_dw(dc, "backward dy");
  test_maps_close(&dy_got, &dy_want, NULL, RTOL, 0.0, what);
  g_free(what);
  what = describe_dw(dc, "backward dw, dbias");
  test_floats_close(grads_got, grads_want, grads_mag, nw + dc->c, RTOL, 1e-5, what);
  g_free(what);
  what = describe_dw(dc, dc->no_dx ? "backward no dx" : "backward dx");
  if (dc->no_dx)
    test_maps_equal(&dx_got, &dx_want, what);
  else
    test_maps_close(&dx_got, &dx_want, &dxa, RTOL, ATOL, what);
  g_free(what);

  test_map_free(&x), test_map_free(&act), test_map_free(&dy_want), test_map_free(&dx_want);
  test_map_free(&dy_got), test_map_free(&dx_got), test_map_free(&xa), test_map_free(&dya);
  test_map_free(&dxa);
  g_free(w), g_free(wa), g_free(grads_want), g_free(grads_got), g_free(grads_mag);
}

static void test_dw_sweep(gconstpointer data)
{
  KernelsIsa before;
  if (!enter_mode(GPOINTER_TO_INT(data), &before))
    return;
  ThreadPool *pools[3] = { NULL, thread_pool_new(2), thread_pool_new(3) };
  int n = 0;
  for (int stride = 1; stride <= 2; stride++)
    for (size_t sz = 0; sz < G_N_ELEMENTS(dw_input_sizes); sz++)
      for (size_t ci = 0; ci < G_N_ELEMENTS(dw_channel_counts); ci++, n++) {
        DwCase dc = {
          .h = dw_input_sizes[sz][0],
          .w = dw_input_sizes[sz][1],
          .c = dw_channel_counts[ci],
          .stride = stride,
          .f = (Activation)(n % N_ACTIVATIONS),
          .bias = (n >> 1) & 1,
          .store_z = (n >> 2) & 1,
          .sliced = (n >> 3) & 1,
          .accumulate = (n >> 4) & 1,
          .no_dx = n % 7 == 0,
          .no_dbias = n % 5 == 0,
          .pool = pools[n % 3],
        };
        check_dw_forward(&dc);
        check_dw_backward(&dc);
      }
  thread_pool_free(pools[1]);
  thread_pool_free(pools[2]);
  kernels_set_isa(before);
}

/* Layers of an efficient student at a 640x480 input, on a smaller frame: many channel vectors,
 * both strides, maps large enough for every thread to take several bands. */
static void test_dw_block_layers(gconstpointer data)
{
  KernelsIsa before;
  if (!enter_mode(GPOINTER_TO_INT(data), &before))
    return;
  static const struct {
    int h, w, c, stride;
    Activation f;
  } layers[] = {
    { 60, 80, 16, 1, ACTIVATION_RELU },   { 60, 80, 64, 2, ACTIVATION_RELU },
    { 30, 40, 72, 1, ACTIVATION_RELU },   { 30, 40, 72, 2, ACTIVATION_RELU },
    { 15, 20, 120, 1, ACTIVATION_HSWISH }, { 15, 20, 240, 2, ACTIVATION_HSWISH },
    { 8, 10, 200, 1, ACTIVATION_HSWISH },
  };
  ThreadPool *pool = thread_pool_new(2);
  for (size_t i = 0; i < G_N_ELEMENTS(layers); i++) {
    DwCase dc = { .h = layers[i].h, .w = layers[i].w, .c = layers[i].c,
                  .stride = layers[i].stride, .f = layers[i].f, .bias = 1, .store_z = i & 1,
                  .sliced = (i >> 1) & 1, .accumulate = (i >> 2) & 1, .pool = pool };
    check_dw_forward(&dc);
    check_dw_backward(&dc);
  }
  thread_pool_free(pool);
  kernels_set_isa(before);
}

/* sum(y * r) for a fixed random r: a loss whose gradient with respect to y is r. */
static double weighted_sum(const FeatureMap *y, const float *r)
{
  double sum = 0.0;
  for (int py = 0; py < y->h; py++)
    for (int px = 0; px < y->w; px++)
      for (int c = 0; c < y->c; c++)
        sum += (double)feature_map_at(y, py, px)[c] * r[((size_t)py * y->w + px) * y->c + c];
  return sum;
}

/* The reference's backward pass (the definition of the gradients the kernels match) against
 * central differences of its forward pass, a smooth activation and none, both strides. */
static void test_dw_reference_gradients(void)
{
  const int h = 5, w = 7, c = 3;
  for (int stride = 1; stride <= 2; stride++)
    for (int smooth = 0; smooth < 2; smooth++) {
      Activation f = smooth ? ACTIVATION_SIGMOID : ACTIVATION_NONE;
      int oh = dwconv3x3_output_size(h, stride), ow = dwconv3x3_output_size(w, stride);
      TestMap x = test_map_new(h, w, c, FALSE), y = test_map_new(oh, ow, c, FALSE);
      TestMap z = test_map_new(oh, ow, c, FALSE), dx = test_map_new(h, w, c, FALSE);
      test_map_fill(&x, -1.0f, 1.0f);
      float *wt = test_floats_new(9 * c, -1.0f, 1.0f), *bias = test_floats_new(c, -1.0f, 1.0f);
      float *r = test_floats_new((size_t)oh * ow * c, -1.0f, 1.0f);
      float *grads = test_floats_new(10 * (size_t)c, 0.0f, 0.0f);
      dwconv3x3_forward_ref(&x.map, wt, bias, stride, f, &z.map, &y.map);
      TestMap dy = test_map_new(oh, ow, c, FALSE);
      memcpy(dy.buf, r, sizeof(float) * dy.n);
      dwconv3x3_backward_ref(&x.map, wt, stride, f, &z.map, &dy.map, grads, grads + 9 * c,
                             &dx.map, 0);
      /* Every parameter and input: x's floats, then w, then bias. */
      size_t n_params = x.n + 10 * (size_t)c;
      for (size_t i = 0; i < n_params; i++) {
        float *p = i < x.n ? &x.buf[i] : i < x.n + 9 * c ? &wt[i - x.n] : &bias[i - x.n - 9 * c];
        float analytic = i < x.n ? dx.buf[i] : grads[i - x.n];
        float saved = *p, step = 1e-2f;
        *p = saved + step;
        dwconv3x3_forward_ref(&x.map, wt, bias, stride, f, NULL, &y.map);
        double up = weighted_sum(&y.map, r);
        *p = saved - step;
        dwconv3x3_forward_ref(&x.map, wt, bias, stride, f, NULL, &y.map);
        double down = weighted_sum(&y.map, r);
        *p = saved;
        double numeric = (up - down) / (2.0 * step);
        if (fabs(numeric - analytic) > 2e-3 * (1.0 + fabs(numeric)))
          g_test_fail_printf("dwconv3x3 stride %d %s: parameter %zu: gradient %.6g, finite "
                             "differences %.6g",
                             stride, activation_name(f), i, analytic, numeric);
      }
      test_map_free(&x), test_map_free(&y), test_map_free(&z), test_map_free(&dx);
      test_map_free(&dy);
      g_free(wt), g_free(bias), g_free(r), g_free(grads);
    }
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
    if (isas[i] == BF16_MODE)
      continue;
    g_autofree char *pointwise = g_strdup_printf("/conv2d/%s/pointwise-gemm", name);
    g_test_add_data_func(pointwise, GINT_TO_POINTER(isas[i]), test_pointwise_gemm);
    g_autofree char *dw_sweep = g_strdup_printf("/dwconv/%s/sweep", name);
    g_autofree char *dw_layers = g_strdup_printf("/dwconv/%s/block-layers", name);
    g_test_add_data_func(dw_sweep, GINT_TO_POINTER(isas[i]), test_dw_sweep);
    g_test_add_data_func(dw_layers, GINT_TO_POINTER(isas[i]), test_dw_block_layers);
  }
  g_test_add_func("/dwconv/reference-gradients", test_dw_reference_gradients);
  return g_test_run();
}
