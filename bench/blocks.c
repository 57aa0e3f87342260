/* blocks.c (distill-bench-blocks): the depthwise 3x3 and pointwise (1x1) convolutions of the
 * student architectures mobilenet and repghost (their default configurations) at 640x480, and
 * the pointwise ones of jitnet at 1280x720.
 *
 * Every figure times two or more ways of doing the same work in turns (a run of each, over and
 * over, each round starting with the next), so that a neighbour's load on this shared machine
 * falls on all of them alike, and reports the median of each and their ratio. One JSON line per shape, pass and thread
 * count, each naming the ISA in use (DISTILL_ISA lowers it):
 *
 * - dwconv_forward, dwconv_backward: the depthwise forward (with its activation, and the
 *   pre-activation stored where the activation's gradient needs it) and the fused backward
 *   (activation, bias, weight and input gradients); ms, GFLOP/s, and GB/s counting the bytes the
 *   pass must move at least once (every input read, every output written, once), against
 *   memcpy of the same number of bytes timed in turns with it (copy_gbytes_per_s: the memory's
 *   rate at that size, which a memory-bound pass cannot beat);
 * - pointwise_forward, pointwise_backward_input, pointwise_backward_weights and
 *   pointwise_backward (the fused pass training runs: ReLU, bias, weight and input gradients):
 *   direct_ms (the direct kernels), openblas_ms (sgemm per chunk of pixels, conv1x1_gemm_*),
 *   ratio = openblas / direct, and chosen, what conv2d_* pick for the shape (kernels.h,
 *   conv2d_pointwise_uses_gemm); the fused backward also times rule_ms, the passes as picked;
 * - with AVX512-BF16, pointwise_forward_bf16 and pointwise_backward_bf16: fp32_ms (the passes as
 *   conv2d_* pick them) against bf16_ms (conv2d_forward_bf16, conv2d_backward_bf16), and
 *   dwconv_forward_bf16: the fp32 forward against a bfloat16 forward written here to measure it
 *   (bench_dw_bf16 below; not in kernels/).
 *
 *   distill-bench-blocks [--threads N] [--op dwconv|pointwise|bf16] [--arch NAME] [--seconds S]
 *                                                  (default: 1 and 2 threads, every op and arch) */
#include <glib.h>
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_data.h"

static double min_seconds = 0.3; /* of turns per line */

/* ---- timing in turns ------------------------------------------------------------------------ */

typedef struct {
  void (*fn)(void *ctx, ThreadPool *pool);
  void *ctx;
} Timed;

#define MAX_TURNS 201

/* Median seconds of each of n runs, timed in turns: 2 warm-up rounds, then rounds of each until
 * min_seconds have passed (5 to MAX_TURNS rounds), each round starting with the next run, so that
 * none always follows the same one. */
static void time_turns(const Timed *runs, int n, ThreadPool *pool, double *median)
{
  static double times[8][MAX_TURNS];
  for (int r = 0; r < 2; r++)
    for (int i = 0; i < n; i++)
      runs[i].fn(runs[i].ctx, pool);
  int rounds = 0;
  double start = now_seconds();
  while (rounds < MAX_TURNS && (rounds < 5 || now_seconds() - start < min_seconds)) {
    for (int k = 0; k < n; k++) {
      int i = (rounds + k) % n;
      double t0 = now_seconds();
      runs[i].fn(runs[i].ctx, pool);
      times[i][rounds] = now_seconds() - t0;
    }
    rounds++;
  }
  for (int i = 0; i < n; i++) {
    qsort(times[i], rounds, sizeof(double), compare_doubles);
    median[i] = times[i][rounds / 2];
  }
}

static void print_head(const char *op, const char *arch, const char *layer, const char *shape,
                       int threads)
{
  printf("{\"op\":\"%s\",\"arch\":\"%s\",\"layer\":\"%s\",\"shape\":\"%s\",\"isa\":\"%s\","
         "\"threads\":%d",
         op, arch, layer, shape, kernels_isa_name(kernels_isa()), threads);
}

/* ---- memory rate ---------------------------------------------------------------------------- */

typedef struct {
  float *src, *dst;
  size_t n;
} CopyData;

static void copy_task(void *ctx, int i, int thread)
{
  CopyData *d = ctx;
  size_t begin = d->n * i / 8, end = d->n * (i + 1) / 8;
  memcpy(d->dst + begin, d->src + begin, sizeof(float) * (end - begin));
}

static void run_copy(void *ctx, ThreadPool *pool)
{
  thread_pool_run(pool, 8, copy_task, ctx);
}

/* memcpy of `bytes` (half read, half written) */
static CopyData copy_data(double bytes)
{
  size_t n = (size_t)(bytes / 8);
  CopyData d = { random_floats(n), random_floats(n), n };
  return d;
}

/* ---- depthwise 3x3 -------------------------------------------------------------------------- */

typedef struct {
  const char *arch, *layer;
  int h, w, c, stride; /* input */
  Activation f;
} DwShape;

#define RELU ACTIVATION_RELU
#define HSWISH ACTIVATION_HSWISH
#define NONE ACTIVATION_NONE

/* At 640x480, the stem's output 320x240. mobilenet: blocks from 3 on hard-swish; repghost: the
 * ghost modules' first cheap depthwise ReLU, the others none. Layers of the same shape once. */
static const DwShape dw_shapes[] = {
  { "mobilenet", "blocks.0.dw", 240, 320, 16, 2, RELU },
  { "mobilenet", "blocks.1.dw", 120, 160, 64, 2, RELU },
  { "mobilenet", "blocks.2.dw", 60, 80, 72, 1, RELU },
  { "mobilenet", "blocks.3.dw", 60, 80, 96, 2, HSWISH },
  { "mobilenet", "blocks.4-5.dw", 30, 40, 120, 1, HSWISH },
  { "mobilenet", "blocks.6.dw", 30, 40, 144, 1, HSWISH },
  { "repghost", "head.cheap", 240, 320, 16, 1, RELU },
  { "repghost", "encoder.0.shortcut_dw", 240, 320, 16, 2, NONE },
  { "repghost", "encoder.0.ghost1.cheap", 240, 320, 48, 1, RELU },
  { "repghost", "encoder.0.down", 240, 320, 48, 2, NONE },
  { "repghost", "encoder.0.ghost2.cheap", 120, 160, 24, 1, NONE },
  { "repghost", "encoder.1.shortcut_dw", 120, 160, 24, 2, NONE },
  { "repghost", "encoder.1.ghost1.cheap", 120, 160, 72, 1, RELU },
  { "repghost", "encoder.1.down", 120, 160, 72, 2, NONE },
  { "repghost", "decoder.2.ghost1.cheap", 120, 160, 48, 1, RELU },
  { "repghost", "decoder.2.shortcut_dw", 120, 160, 64, 1, NONE },
  { "repghost", "encoder.1.ghost2.cheap", 60, 80, 40, 1, NONE },
  { "repghost", "encoder.2.shortcut_dw", 60, 80, 40, 2, NONE },
  { "repghost", "encoder.2.ghost1.cheap", 60, 80, 120, 1, RELU },
  { "repghost", "encoder.2.down", 60, 80, 120, 2, NONE },
  { "repghost", "decoder.1.ghost1.cheap", 60, 80, 72, 1, RELU },
  { "repghost", "decoder.1.shortcut_dw", 60, 80, 104, 1, NONE },
  { "repghost", "encoder.2.ghost2.cheap", 30, 40, 64, 1, NONE },
  { "repghost", "encoder.3.shortcut_dw", 30, 40, 64, 2, NONE },
  { "repghost", "encoder.3.ghost1.cheap", 30, 40, 192, 1, RELU },
  { "repghost", "encoder.3.down", 30, 40, 192, 2, NONE },
  { "repghost", "decoder.0.ghost1.cheap", 30, 40, 96, 1, RELU },
  { "repghost", "decoder.0.shortcut_dw", 30, 40, 160, 1, NONE },
  { "repghost", "encoder.3.ghost2.cheap", 15, 20, 96, 1, NONE },
};

typedef struct {
  const DwShape *l;
  int oh, ow;
  ConvBuffers b;   /* z: the pre-activation */
  uint32_t *pairs; /* bench_dw_bf16: x as pixel pairs */
} DwData;

static int dw_keeps_z(const DwShape *l)
{
  return l->f != ACTIVATION_NONE && l->f != ACTIVATION_RELU;
}

static void run_dw_forward(void *ctx, ThreadPool *pool)
{
  DwData *d = ctx;
  dwconv3x3_forward(&d->b.x, d->b.w, d->b.bias, d->l->stride, d->l->f,
                    dw_keeps_z(d->l) ? &d->b.z : NULL, &d->b.y, pool);
}

static void run_dw_backward(void *ctx, ThreadPool *pool)
{
  DwData *d = ctx;
  dwconv3x3_backward(&d->b.x, d->b.w, d->l->stride, d->l->f,
                     dw_keeps_z(d->l) ? &d->b.z : &d->b.y, &d->b.dy, d->b.dw, d->b.dbias, &d->b.dx,
                     0, pool);
}

static DwData dw_data(const DwShape *l)
{
  DwData d = { .l = l };
  d.oh = dwconv3x3_output_size(l->h, l->stride);
  d.ow = dwconv3x3_output_size(l->w, l->stride);
  d.b = conv_buffers_new(l->h, l->w, l->c, d.oh, d.ow, l->c, 9 * (size_t)l->c);
  return d;
}

static void dw_data_free(DwData *d)
{
  conv_buffers_free(&d->b);
  g_free(d->pairs);
}

static void dw_shape_name(const DwShape *l, char *shape, size_t size)
{
  snprintf(shape, size, "%dx%dx%d s%d %s", l->w, l->h, l->c, l->stride, activation_name(l->f));
}

/* One line: the pass against memcpy of its bytes, in turns. */
static void bench_dw_pass(const char *op, Timed pass, double flops, double bytes, DwData *d,
                          int threads, ThreadPool *pool)
{
  CopyData copy = copy_data(bytes);
  Timed runs[2] = { pass, { run_copy, &copy } };
  double t[2];
  time_turns(runs, 2, pool, t);
  char shape[64];
  dw_shape_name(d->l, shape, sizeof shape);
  print_head(op, d->l->arch, d->l->layer, shape, threads);
  printf(",\"ms\":%.4f,\"gflops\":%.2f,\"gbytes_per_s\":%.2f,\"copy_gbytes_per_s\":%.2f,"
         "\"copy_fraction\":%.3f}\n",
         t[0] * 1e3, flops / t[0] * 1e-9, bytes / t[0] * 1e-9, bytes / t[1] * 1e-9, t[1] / t[0]);
  fflush(stdout);
  g_free(copy.src), g_free(copy.dst);
}

/* ---- a bfloat16 depthwise forward, to measure one ------------------------------------------- */

/* The products in bfloat16 as the dense convolution has them (kernels.h): vdpbf16ps adds two
 * products per 32-bit lane, so taps go in pairs: (kx 0, kx 1) of a row reads the input as pixel
 * pairs, word (j, ch) holding x[j][ch] and x[j + 1][ch], converted once per call (every pixel in
 * two words: as many bytes as the fp32 input); kx 2 pairs with a zero weight. Six vdpbf16ps an
 * output vector instead of nine FMAs. Stride 1 and 2, 16 channels at a time, no activation
 * (timing only: the activation costs the same either way). Per row of the pool's tasks. */
typedef struct {
  DwData *d;
  uint32_t *w_pairs; /* per ky: (w[ky][0], w[ky][1]) then (w[ky][2], 0), c words each */
} Bf16Run;

__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void
pairs_row_task(void *ctx, int r, int thread)
{
  const DwData *d = ((Bf16Run *)ctx)->d;
  const FeatureMap *x = &d->b.x;
  const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                         24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                         16, 0);
  /* word (j + 1, ch): x[j] and x[j + 1], j from -1 to w, zero outside the row */
  uint32_t *dst = d->pairs + (size_t)r * (x->w + 2) * x->c;
  for (int j = -1; j <= x->w; j++, dst += x->c)
    for (int ch = 0; ch < x->c; ch += 16) {
      __mmask16 m = x->c - ch >= 16 ? 0xffff : (__mmask16)((1u << (x->c - ch)) - 1);
      __m512 a = j >= 0 && j < x->w ? _mm512_maskz_loadu_ps(m, feature_map_at(x, r, j) + ch)
                        : _mm512_setzero_ps();
      __m512 b = j + 1 < x->w ? _mm512_maskz_loadu_ps(m, feature_map_at(x, r, j + 1) + ch)
                              : _mm512_setzero_ps();
      __m512i v = _mm512_permutexvar_epi16(order, (__m512i)_mm512_cvtne2ps_pbh(b, a));
      _mm512_mask_storeu_epi32(dst + ch, m, v);
    }
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void
bf16_row_task(void *ctx, int r, int thread)
{
  const Bf16Run *run = ctx;
  const DwData *d = run->d;
  int c = d->b.x.c, s = d->l->stride, words = (d->b.x.w + 2) * c;
  for (int ch = 0; ch < c; ch += 16) {
    __mmask16 m = c - ch >= 16 ? 0xffff : (__mmask16)((1u << (c - ch)) - 1);
    __m512bh vw[6];
    for (int k = 0; k < 6; k++)
      vw[k] = (__m512bh)_mm512_maskz_loadu_epi32(m, run->w_pairs + k * c + ch);
    __m512 vb = _mm512_maskz_loadu_ps(m, d->b.bias + ch);
    for (int p = 0; p < d->ow; p++) {
      __m512 acc = vb;
      for (int ky = 0; ky < 3; ky++) {
        int iy = r * s + ky - 1;
        if (iy < 0 || iy >= d->b.x.h)
          continue;
        /* pair word p * s holds columns p * s - 1 and p * s, word p * s + 2 column p * s + 1 */
        const uint32_t *row = d->pairs + (size_t)iy * words + ch;
        acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi32(m, row + p * s * c),
                               vw[2 * ky]);
        acc = _mm512_dpbf16_ps(acc,
                               (__m512bh)_mm512_maskz_loadu_epi32(m, row + (p * s + 2) * c),
                               vw[2 * ky + 1]);
      }
      _mm512_mask_storeu_ps(feature_map_at(&d->b.y, r, p) + ch, m, acc);
    }
  }
}

static uint16_t to_bf16_bits(float f)
{
  float r = bf16_round(f);
  uint32_t u;
  memcpy(&u, &r, 4);
  return (uint16_t)(u >> 16);
}

static void run_dw_bf16_convert(void *ctx, ThreadPool *pool)
{
  thread_pool_run(pool, ((Bf16Run *)ctx)->d->b.x.h, pairs_row_task, ctx);
}

static void run_dw_bf16_products(void *ctx, ThreadPool *pool)
{
  thread_pool_run(pool, ((Bf16Run *)ctx)->d->oh, bf16_row_task, ctx);
}

static void run_dw_bf16(void *ctx, ThreadPool *pool)
{
  run_dw_bf16_convert(ctx, pool);
  run_dw_bf16_products(ctx, pool);
}

/* The largest difference from the fp32 forward, over the largest output: a check that the
 * kernel above computes the convolution. */
static double dw_bf16_error(Bf16Run *run, ThreadPool *pool)
{
  DwData *d = run->d;
  size_t n = (size_t)d->oh * d->ow * d->b.x.c;
  float *want = g_new(float, n);
  dwconv3x3_forward(&d->b.x, d->b.w, d->b.bias, d->l->stride, ACTIVATION_NONE, NULL, &d->b.y,
                    pool);
  memcpy(want, d->b.y.data, sizeof(float) * n);
  run_dw_bf16(run, pool);
  double err = 0, scale = 0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs(d->b.y.data[i] - want[i]), a = fabs(want[i]);
    err = e > err ? e : err;
    scale = a > scale ? a : scale;
  }
  g_free(want);
  return err / scale;
}

static void run_dw_forward_none(void *ctx, ThreadPool *pool)
{
  DwData *d = ctx;
  dwconv3x3_forward(&d->b.x, d->b.w, d->b.bias, d->l->stride, ACTIVATION_NONE, NULL, &d->b.y,
                    pool);
}

static void bench_dw_bf16(DwData *d, int threads, ThreadPool *pool)
{
  const DwShape *l = d->l;
  d->pairs = g_new(uint32_t, (size_t)l->h * (l->w + 2) * l->c);
  Bf16Run run = { d, g_new(uint32_t, 6 * (size_t)l->c) };
  for (int ky = 0; ky < 3; ky++)
    for (int ch = 0; ch < l->c; ch++) {
      const float *w = d->b.w + ky * 3 * l->c + ch;
      run.w_pairs[2 * ky * l->c + ch] = to_bf16_bits(w[0]) | (uint32_t)to_bf16_bits(w[l->c])
                                                               << 16;
      run.w_pairs[(2 * ky + 1) * l->c + ch] = to_bf16_bits(w[2 * l->c]);
    }
  double err = dw_bf16_error(&run, pool);
  Timed runs[3] = { { run_dw_forward_none, d }, { run_dw_bf16, &run },
                    { run_dw_bf16_products, &run } };
  double t[3];
  time_turns(runs, 3, pool, t);
  char shape[64];
  dw_shape_name(l, shape, sizeof shape);
  print_head("dwconv_forward_bf16", l->arch, l->layer, shape, threads);
  printf(",\"fp32_ms\":%.4f,\"bf16_ms\":%.4f,\"bf16_products_ms\":%.4f,\"ratio\":%.3f,"
         "\"products_ratio\":%.3f,\"max_rel_error\":%.2g}\n",
         t[0] * 1e3, t[1] * 1e3, t[2] * 1e3, t[1] / t[0], t[2] / t[0], err);
  fflush(stdout);
  g_free(run.w_pairs);
}

/* Every depthwise shape: fp32 passes, or (bf16) the bfloat16 forward against the fp32 one. */
static void bench_dwconv(const char *arch, int bf16, int threads, ThreadPool *pool)
{
  for (size_t i = 0; i < G_N_ELEMENTS(dw_shapes); i++) {
    const DwShape *l = &dw_shapes[i];
    if (arch && strcmp(arch, l->arch))
      continue;
    DwData d = dw_data(l);
    if (bf16) {
      bench_dw_bf16(&d, threads, pool);
      dw_data_free(&d);
      continue;
    }
    double in = 4.0 * l->h * l->w * l->c, out = 4.0 * d.oh * d.ow * l->c;
    double flops = 2.0 * 9 * out / 4;
    int z = dw_keeps_z(l);
    /* forward: x read, y (and z) written; backward: x, dy (and the activation's input) read, dy
     * written back where there is an activation, dx written */
    bench_dw_pass("dwconv_forward", (Timed){ run_dw_forward, &d }, flops, in + out * (1 + z), &d,
                  threads, pool);
    int act = l->f != ACTIVATION_NONE;
    bench_dw_pass("dwconv_backward", (Timed){ run_dw_backward, &d }, 2 * flops,
                  2 * in + out * (1 + 2 * act), &d, threads, pool);
    dw_data_free(&d);
  }
}

/* ---- pointwise ------------------------------------------------------------------------------ */

typedef struct {
  const char *arch, *layer;
  int h, w, cin, cout;
  int relu, residual;
} PwShape;

/* At 640x480 as above. Activations other than ReLU run apart from the convolution (student/
 * conv_layer.c): here they are none. Layers of the same shape once. */
static const PwShape pw_shapes[] = {
  { "mobilenet", "blocks.0.project", 120, 160, 16, 16, 0, 0 },
  { "mobilenet", "blocks.1.expand", 120, 160, 16, 64, 1, 0 },
  { "mobilenet", "blocks.1.project", 60, 80, 64, 24, 0, 0 },
  { "mobilenet", "blocks.2.expand", 60, 80, 24, 72, 1, 0 },
  { "mobilenet", "blocks.2.project", 60, 80, 72, 24, 0, 1 },
  { "mobilenet", "blocks.3.expand", 60, 80, 24, 96, 0, 0 },
  { "mobilenet", "blocks.3.project", 30, 40, 96, 40, 0, 0 },
  { "mobilenet", "blocks.4-5.expand", 30, 40, 40, 120, 0, 0 },
  { "mobilenet", "blocks.4-5.project", 30, 40, 120, 40, 0, 1 },
  { "mobilenet", "blocks.6.expand", 30, 40, 40, 144, 0, 0 },
  { "mobilenet", "blocks.6.project", 30, 40, 144, 48, 0, 0 },
  { "mobilenet", "aspp.conv", 30, 40, 48, 64, 1, 0 },
  { "mobilenet", "classifier.high", 30, 40, 64, 2, 0, 0 },
  { "mobilenet", "classifier.low8", 60, 80, 24, 2, 0, 1 },
  { "mobilenet", "classifier.low4", 120, 160, 16, 2, 0, 1 },
  { "mobilenet", "classifier.low2", 240, 320, 16, 2, 0, 1 },
  { "repghost", "encoder.0.ghost1.conv", 240, 320, 16, 48, 1, 0 },
  { "repghost", "encoder.0.ghost2.conv", 120, 160, 48, 24, 0, 0 },
  { "repghost", "encoder.0.shortcut_pw", 120, 160, 16, 24, 0, 1 },
  { "repghost", "encoder.1.ghost1.conv", 120, 160, 24, 72, 1, 0 },
  { "repghost", "encoder.1.ghost2.conv", 60, 80, 72, 40, 0, 0 },
  { "repghost", "encoder.1.shortcut_pw", 60, 80, 24, 40, 0, 1 },
  { "repghost", "encoder.2.ghost1.conv", 60, 80, 40, 120, 1, 0 },
  { "repghost", "encoder.2.ghost2.conv", 30, 40, 120, 64, 0, 0 },
  { "repghost", "encoder.2.shortcut_pw", 30, 40, 40, 64, 0, 1 },
  { "repghost", "encoder.3.ghost1.conv", 30, 40, 64, 192, 1, 0 },
  { "repghost", "encoder.3.ghost2.conv", 15, 20, 192, 96, 0, 0 },
  { "repghost", "encoder.3.shortcut_pw", 15, 20, 64, 96, 0, 1 },
  { "repghost", "decoder.0.ghost1.conv", 30, 40, 160, 96, 1, 0 },
  { "repghost", "decoder.0.ghost2.conv", 30, 40, 96, 64, 0, 0 },
  { "repghost", "decoder.0.shortcut_pw", 30, 40, 160, 64, 0, 1 },
  { "repghost", "decoder.1.ghost1.conv", 60, 80, 104, 72, 1, 0 },
  { "repghost", "decoder.1.ghost2.conv", 60, 80, 72, 40, 0, 0 },
  { "repghost", "decoder.1.shortcut_pw", 60, 80, 104, 40, 0, 1 },
  { "repghost", "decoder.2.ghost1.conv", 120, 160, 64, 48, 1, 0 },
  { "repghost", "decoder.2.ghost2.conv", 120, 160, 48, 24, 0, 0 },
  { "repghost", "decoder.2.shortcut_pw", 120, 160, 64, 24, 0, 1 },
  { "repghost", "head.conv", 240, 320, 40, 16, 1, 0 },
  { "repghost", "classifier", 240, 320, 16, 2, 0, 0 },
  /* the jitnet student's (student/README.md) at 1280x720, where its maps are largest */
  { "jitnet", "decoder.1.shortcut@1280x720", 45, 80, 192, 64, 0, 0 },
  { "jitnet", "decoder.2.shortcut@1280x720", 90, 160, 128, 32, 0, 0 },
};

typedef struct {
  const PwShape *l;
  ConvGeometry g;
  ConvBuffers b; /* z: the residual */
} PwData;

/* One pass of one shape, run with the passes of gemm_passes as sgemm calls (or as the rule
 * picks them), or with bfloat16 products. */
typedef struct {
  PwData *d;
  int op, gemm_passes, bf16;
} PwRun;

static void run_pointwise(void *ctx, ThreadPool *pool)
{
  const PwRun *r = ctx;
  PwData *d = r->d;
  const FeatureMap *residual = d->l->residual ? &d->b.z : NULL;
  int saved = conv2d_set_pointwise_gemm(r->gemm_passes);
  switch (r->op) {
  case OP_FORWARD:
    (r->bf16 ? conv2d_forward_bf16 : conv2d_forward)(&d->g, &d->b.x, d->b.w, d->b.bias, residual,
                                                     d->l->relu, &d->b.y, pool);
    break;
  case OP_BACKWARD_INPUT:
    conv2d_backward_input(&d->g, &d->b.dy, d->b.w, &d->b.dx, 0, pool);
    break;
  case OP_BACKWARD_WEIGHTS:
    conv2d_backward_weights(&d->g, &d->b.x, &d->b.dy, d->b.dw, d->b.dbias, pool);
    break;
  default:
    (r->bf16 ? conv2d_backward_bf16 : conv2d_backward)(
      &d->g, &d->b.x, d->b.w, d->l->relu ? &d->b.y : NULL, &d->b.dy, d->b.dw, d->b.dbias,
      &d->b.dx, 0, pool);
  }
  conv2d_set_pointwise_gemm(saved);
}

static PwData pw_data(const PwShape *l)
{
  PwData d = { .l = l, .g = { 1, 1, 1, 0, 0, l->cin, l->cout } };
  d.b = conv_buffers_new(l->h, l->w, l->cin, l->h, l->w, l->cout, (size_t)l->cin * l->cout);
  return d;
}

/* The passes conv2d_* run as sgemm calls for this shape: F, I, W (forward, input and weight
 * gradients) in capitals where sgemm, in small letters where the direct kernels. */
static void chosen(const PwShape *l, int threads, char *out, size_t size)
{
  int pixels = l->h * l->w;
  snprintf(out, size, "%s%s%s",
           conv2d_pointwise_uses_gemm(CONV_PASS_FORWARD, pixels, l->cin, l->cout, threads)
             ? "F" : "f",
           conv2d_pointwise_uses_gemm(CONV_PASS_BACKWARD_INPUT, pixels, l->cin, l->cout, threads)
             ? "I" : "i",
           conv2d_pointwise_uses_gemm(CONV_PASS_BACKWARD_WEIGHTS, pixels, l->cin, l->cout,
                                      threads)
             ? "W" : "w");
}

static void bench_pointwise(const char *arch, int bf16, int threads, ThreadPool *pool)
{
  for (size_t i = 0; i < G_N_ELEMENTS(pw_shapes); i++) {
    const PwShape *l = &pw_shapes[i];
    if (arch && strcmp(arch, l->arch))
      continue;
    PwData d = pw_data(l);
    char shape[64], pick[8];
    snprintf(shape, sizeof shape, "%dx%d %d>%d", l->w, l->h, l->cin, l->cout);
    chosen(l, threads, pick, sizeof pick);
    double flops = 2.0 * l->h * l->w * l->cin * l->cout;
    for (int op = 0; op < N_OPS; op++) {
      double op_flops = op == OP_BACKWARD ? 2 * flops : flops;
      double t[3];
      char name[64];
      snprintf(name, sizeof name, "pointwise_%s%s", op_names[op], bf16 ? "_bf16" : "");
      if (bf16) {
        if (op != OP_FORWARD && op != OP_BACKWARD)
          continue;
        PwRun fp32 = { &d, op, POINTWISE_BY_RULE, 0 }, half = { &d, op, POINTWISE_BY_RULE, 1 };
        time_turns((Timed[]){ { run_pointwise, &fp32 }, { run_pointwise, &half } }, 2, pool, t);
        print_head(name, l->arch, l->layer, shape, threads);
        printf(",\"chosen\":\"%s\",\"fp32_ms\":%.4f,\"bf16_ms\":%.4f,\"ratio\":%.3f}\n", pick,
               t[0] * 1e3, t[1] * 1e3, t[1] / t[0]);
        continue;
      }
      PwRun direct = { &d, op, 0, 0 }, blas = { &d, op, 7, 0 };
      PwRun rule = { &d, op, POINTWISE_BY_RULE, 0 };
      int n = op == OP_BACKWARD ? 3 : 2;
      time_turns((Timed[]){ { run_pointwise, &direct }, { run_pointwise, &blas },
                            { run_pointwise, &rule } },
                 n, pool, t);
      print_head(name, l->arch, l->layer, shape, threads);
      printf(",\"chosen\":\"%s\",\"direct_ms\":%.4f,\"openblas_ms\":%.4f", pick, t[0] * 1e3,
             t[1] * 1e3);
      if (n == 3)
        printf(",\"rule_ms\":%.4f", t[2] * 1e3);
      printf(",\"ratio\":%.3f,\"direct_gflops\":%.2f,\"openblas_gflops\":%.2f}\n", t[1] / t[0],
             op_flops / t[0] * 1e-9, op_flops / t[1] * 1e-9);
      fflush(stdout);
    }
    conv_buffers_free(&d.b);
  }
}

int main(int argc, char **argv)
{
  int only_threads = 0;
  const char *only_op = NULL, *arch = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      only_threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--op") && i + 1 < argc)
      only_op = argv[++i];
    else if (!strcmp(argv[i], "--arch") && i + 1 < argc)
      arch = argv[++i];
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
      min_seconds = atof(argv[++i]);
    else {
      fprintf(stderr,
              "usage: %s [--threads N] [--op dwconv|pointwise|bf16] [--arch NAME] "
              "[--seconds S]\n",
              argv[0]);
      return 2;
    }
  }
  g_random_set_seed(1);
  int first = only_threads ? only_threads : 1, last = only_threads ? only_threads : 2;
  for (int threads = first; threads <= last; threads++) {
    ThreadPool *pool = thread_pool_new(threads);
    printf("# %s%s, %d threads\n", kernels_isa_name(kernels_isa()),
           kernels_have_bf16() ? " with AVX512-BF16" : "", threads);
    if (!only_op || !strcmp(only_op, "dwconv"))
      bench_dwconv(arch, 0, threads, pool);
    if (!only_op || !strcmp(only_op, "pointwise"))
      bench_pointwise(arch, 0, threads, pool);
    if ((!only_op || !strcmp(only_op, "bf16")) && kernels_have_bf16()) {
      bench_pointwise(arch, 1, threads, pool);
      bench_dwconv(arch, 1, threads, pool);
    }
    thread_pool_free(pool);
  }
  return 0;
}
