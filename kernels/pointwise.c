/* pointwise.c: the pointwise (1x1, stride 1, unpadded) convolution's passes as OpenBLAS sgemm
 * calls, and the rule that picks them or the direct kernels per shape (kernels.h).
 *
 * A pointwise convolution is one GEMM per pass over the pixels: y = x w (pixels x cin times
 * cin x cout), dx = dy w^T, dw += x^T dy. Maps may be slices: a pixel's channels are ld apart
 * from the next pixel's, which is the GEMM's leading dimension. OpenBLAS runs single-threaded
 * (isa.c): our pool splits the work, so that its threads and OpenBLAS's never compete for the
 * cores. Forward and input gradient: chunks of pixels, one sgemm each, then (forward) bias,
 * residual and ReLU while the chunk is in cache. Weight gradient: one chunk of pixels per thread,
 * the first into dw, the others into partials added in chunk order (the result does not depend on
 * timing). The ReLU's gradient and the bias sums go first, over row bands, with the direct
 * kernels' bias rows. The plain-C reference of every pass is the convolution's (conv2d_ref.c);
 * tests/kernels compares both paths with it. */
#include <cblas.h>
#include <string.h>

#include "conv2d_impl.h"
#include "mobile_impl.h"
#include "row_bands.h"
#include "simd.h"

/* Pixels per sgemm of the forward and input-gradient passes: enough rows for OpenBLAS's
 * blocking, few enough for the chunk's output to stay in L2 for the epilogue. */
#define CHUNK_PIXELS 256

typedef struct {
  const ConvGeometry *g;
  const FeatureMap *x, *dy, *residual, *relu_y;
  FeatureMap *y, *dx;
  const float *w, *bias;
  int relu, accumulate;
  int chunks;
  float *dw;
  float *partials; /* weight gradient: chunks - 1 blocks of cin x cout */
  float *bias_partials; /* per band, cout floats (rounded up) */
  size_t bias_step;
  int bias_bands;
  float *dbias;
} GemmRun;

static size_t round16(size_t n)
{
  return (n + 15) & ~(size_t)15;
}

static void chunk_range(int pixels, int chunks, int i, int *p0, int *p1)
{
  *p0 = (int)((long long)pixels * i / chunks);
  *p1 = (int)((long long)pixels * (i + 1) / chunks);
}

static int chunk_count(int pixels, int threads)
{
  int chunks = (pixels + CHUNK_PIXELS - 1) / CHUNK_PIXELS;
  return chunks > threads ? chunks : threads < pixels ? threads : pixels;
}

static void forward_chunk(void *ctx, int i, int thread)
{
  const GemmRun *run = ctx;
  const ConvGeometry *g = run->g;
  const FeatureMap *x = run->x, *y = run->y;
  int p0, p1;
  chunk_range(y->h * y->w, run->chunks, i, &p0, &p1);
  if (p1 <= p0)
    return;
  float *out = y->data + (size_t)p0 * y->ld;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p1 - p0, g->cout, g->cin, 1.0f,
              x->data + (size_t)p0 * x->ld, x->ld, run->w, g->cout, 0.0f, out, y->ld);
  const SimdKernels *simd = simd_kernels();
  const MobileKernels *k = mobile_kernels();
  for (int p = p0; p < p1; p++, out += y->ld) {
    if (run->bias)
      simd->add(run->bias, out, (size_t)g->cout);
    if (run->residual)
      simd->add(run->residual->data + (size_t)p * run->residual->ld, out, (size_t)g->cout);
    if (run->relu)
      k->activation(ACTIVATION_RELU, out, out, (size_t)g->cout);
  }
}

void conv1x1_gemm_forward(const ConvGeometry *g, const FeatureMap *x, const float *w,
                          const float *bias, const FeatureMap *residual, int relu, FeatureMap *y,
                          ThreadPool *pool)
{
  if (!simd_kernels()) {
    conv2d_forward_ref(g, x, w, bias, residual, relu, y);
    return;
  }
  int pixels = y->h * y->w;
  if (pixels <= 0 || g->cout <= 0)
    return;
  GemmRun run = { .g = g, .x = x, .y = y, .w = w, .bias = bias, .residual = residual,
                  .relu = relu, .chunks = chunk_count(pixels, thread_pool_threads(pool)) };
  thread_pool_run(pool, run.chunks, forward_chunk, &run);
}

static void input_chunk(const GemmRun *run, int i)
{
  const ConvGeometry *g = run->g;
  const FeatureMap *dy = run->dy, *dx = run->dx;
  int p0, p1;
  chunk_range(dx->h * dx->w, run->chunks, i, &p0, &p1);
  if (p1 > p0)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p1 - p0, g->cin, g->cout, 1.0f,
                dy->data + (size_t)p0 * dy->ld, dy->ld, run->w, g->cout,
                run->accumulate ? 1.0f : 0.0f, dx->data + (size_t)p0 * dx->ld, dx->ld);
}

static void input_task(void *ctx, int i, int thread)
{
  input_chunk(ctx, i);
}

void conv1x1_gemm_backward_input(const ConvGeometry *g, const FeatureMap *dy, const float *w,
                                 FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  if (!simd_kernels()) {
    conv2d_backward_input_ref(g, dy, w, dx, accumulate);
    return;
  }
  int pixels = dx->h * dx->w;
  if (pixels <= 0 || g->cin <= 0)
    return;
  GemmRun run = { .g = g, .dy = dy, .dx = dx, .w = w, .accumulate = accumulate,
                  .chunks = chunk_count(pixels, thread_pool_threads(pool)) };
  thread_pool_run(pool, run.chunks, input_task, &run);
}

/* ---- backward: ReLU and bias, then the weight and input gradients ---------------------------- */

static void bias_band(void *ctx, int band, int row_begin, int row_end, int thread)
{
  const GemmRun *run = ctx;
  float *sums = run->dbias ? run->bias_partials + band * run->bias_step : NULL;
  if (sums)
    memset(sums, 0, sizeof(float) * run->dy->c);
  for (int r = row_begin; r < row_end; r++) {
    ConvBiasJob job = conv_bias_job(run->relu_y, run->dy, r, sums);
    conv_kernels()->bias_row(&job);
  }
}

/* Chunk i of the weight gradient: x^T dy over its pixels, into dw (chunk 0) or its partial. */
static void weights_chunk(const GemmRun *run, int i)
{
  const ConvGeometry *g = run->g;
  const FeatureMap *x = run->x, *dy = run->dy;
  int p0, p1;
  chunk_range(dy->h * dy->w, run->chunks, i, &p0, &p1);
  float *out = i == 0 ? run->dw : run->partials + (size_t)(i - 1) * g->cin * g->cout;
  if (p1 > p0)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g->cin, g->cout, p1 - p0, 1.0f,
                x->data + (size_t)p0 * x->ld, x->ld, dy->data + (size_t)p0 * dy->ld, dy->ld,
                i == 0 ? 1.0f : 0.0f, out, g->cout);
  else if (i > 0)
    memset(out, 0, sizeof(float) * g->cin * g->cout);
}

/* Tasks [0, chunks) the weight gradient's chunks, then the input gradient's (input_chunks). */
typedef struct {
  GemmRun weights, input;
  int input_chunks;
} BackwardRun;

static void backward_task(void *ctx, int i, int thread)
{
  const BackwardRun *b = ctx;
  if (i < b->weights.chunks)
    weights_chunk(&b->weights, i);
  else
    input_chunk(&b->input, i - b->weights.chunks);
}

void conv1x1_gemm_backward(const ConvGeometry *g, const FeatureMap *x, const float *w,
                           const FeatureMap *relu_y, FeatureMap *dy, float *dw, float *dbias,
                           FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  int pixels = dy->h * dy->w;
  if (!conv_kernels() || pixels <= 0 || g->cin <= 0 || g->cout <= 0) {
    if (relu_y)
      relu_backward_ref(relu_y, dy);
    conv2d_backward_weights_ref(g, x, dy, dw, dbias);
    if (dx)
      conv2d_backward_input_ref(g, dy, w, dx, accumulate);
    return;
  }
  int threads = thread_pool_threads(pool);
  BackwardRun b = {
    .weights = { .g = g, .x = x, .dy = dy, .relu_y = relu_y, .dw = dw, .dbias = dbias,
                 .chunks = threads < pixels ? threads : pixels },
    .input = { .g = g, .dy = dy, .dx = dx, .w = w, .accumulate = accumulate },
  };
  GemmRun *wr = &b.weights;
  wr->bias_step = round16((size_t)g->cout);
  wr->bias_bands = row_band_count(pool, dy->h, (size_t)dy->w * dy->c);
  size_t bias_floats = dbias ? wr->bias_bands * wr->bias_step : 0;
  thread_pool_hold(pool);
  float *scratch = thread_pool_scratch(
    pool, 0, bias_floats + (size_t)(wr->chunks - 1) * g->cin * g->cout);
  wr->bias_partials = scratch;
  wr->partials = scratch + bias_floats;
  if (relu_y || dbias)
    run_row_bands(pool, dy->h, wr->bias_bands, bias_band, wr);
  if (dx) {
    b.input.chunks = chunk_count(pixels, threads);
    b.input_chunks = b.input.chunks;
  }
  thread_pool_run(pool, wr->chunks + b.input_chunks, backward_task, &b);
  size_t n = (size_t)g->cin * g->cout;
  for (int i = 1; i < wr->chunks; i++)
    for (size_t k = 0; k < n; k++)
      dw[k] += wr->partials[(size_t)(i - 1) * n + k];
  for (int band = 0; dbias && band < wr->bias_bands; band++)
    for (int co = 0; co < g->cout; co++)
      dbias[co] += wr->bias_partials[band * wr->bias_step + co];
  thread_pool_release(pool);
}

/* ---- the rule -------------------------------------------------------------------------------- */

static int forced_passes = POINTWISE_BY_RULE;

int conv2d_set_pointwise_gemm(int passes)
{
  int before = forced_passes;
  forced_passes = passes;
  return before;
}

/* A table, from distill-bench-blocks on the student architectures at 640x480 (bench/README.md,
 * "Pointwise convolution"), not a measurement at run time: the choice, and so the rounding, is the
 * same on every call and run of an ISA and pool size. OpenBLAS 0.3.21 runs its Haswell (AVX2)
 * kernels on AVX-512 machines too: with AVX-512 the direct kernels won every pass of every shape
 * but one (OpenBLAS 1.3-4.8x the time on one thread). The exception, with either ISA on more than
 * one thread: the classifiers of at most 2 classes on maps up to 80x60, whose fused backward
 * pass, all sgemm, takes one run of the pool rather than two and 0.55-0.76x the time (the direct
 * kernels' second run costs more than its work there). With AVX2, OpenBLAS's weight gradient won
 * by 1-11% on the small maps (up to 40x30) with many weights (cin * cout from 6144); in the fused
 * backward pass that is 4% in the median on one thread, but on two the input gradient, run apart
 * from the weight gradient then, costs more than that saves (1.05-1.3x). The direct kernels won
 * everything else. */
#define GEMM_WEIGHTS_MAX_PIXELS 1200
#define GEMM_WEIGHTS_MIN_WEIGHTS 6144
#define GEMM_CLASSIFIER_MAX_PIXELS 4800
#define GEMM_CLASSIFIER_MAX_COUT 2

int conv2d_pointwise_uses_gemm(ConvPassKind pass, int pixels, int cin, int cout, int threads)
{
  if (forced_passes != POINTWISE_BY_RULE)
    return (forced_passes >> pass) & 1;
  if (pass != CONV_PASS_FORWARD && threads > 1 && cout <= GEMM_CLASSIFIER_MAX_COUT &&
      pixels <= GEMM_CLASSIFIER_MAX_PIXELS)
    return 1;
  return kernels_isa() == KERNELS_ISA_AVX2 && threads == 1 &&
         pass == CONV_PASS_BACKWARD_WEIGHTS && pixels <= GEMM_WEIGHTS_MAX_PIXELS &&
         cin * cout >= GEMM_WEIGHTS_MIN_WEIGHTS;
}
