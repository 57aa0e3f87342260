/* conv_layers.c (distill-bench-conv): the convolution kernels on the student's layer shapes.
 *
 * For every convolution of the student at 640x360 (and head.0 at 1280x720): forward, backward
 * input and backward weights on 1 and 2 threads, the median of several runs after a warm-up, one
 * JSON line each: {"layer","op","threads","ms","gflops","peak_fraction"}, peak being the FMA
 * throughput measured on as many threads (kernels_measure_fma_peak). Lines with layer "all" sum
 * the 640x360 layers of an op.
 *
 * The fused backward pass of training ("backward": ReLU, bias, weight and input gradients in one
 * call, conv2d_backward) too, and where the CPU has AVX512-BF16 the forward and fused backward
 * passes with bfloat16 products, "impl":"bf16" beside "impl":"direct".
 *
 * Then the same passes as OpenBLAS GEMMs (single-threaded OpenBLAS; on 2 threads each thread of
 * our pool runs its share of the pixels, the weight gradient in per-thread partials summed at the
 * end), "impl":"openblas" beside "impl":"direct", for the stride-1 layers: a 1x1 convolution is one
 * GEMM per pass (pixels x cin times cin x cout, and its transposes); a kh x kw one is kh * kw
 * per-tap GEMMs over the input shifted by the tap (timing only: the wrap of a shifted row into
 * the next is not masked), the forward and the weight gradient; the input gradient of a larger
 * kernel would scatter-add between threads and is left out.
 *
 *   distill-bench-conv [--threads N] [--layer NAME] [--no-openblas]
 *                                                       (default: 1 and 2 threads, every layer) */
#include <cblas.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_data.h"

typedef struct {
  const char *name;
  int h, w; /* input size */
  int kh, kw, stride, cin, cout;
  int residual, relu;
} Layer;

/* student/README.md, input 640x360: the stride-2 layers halve with ceil. */
static const Layer layers[] = {
  { "stem.0", 360, 640, 3, 3, 2, 3, 8, 0, 1 },
  { "stem.1", 180, 320, 3, 3, 2, 8, 32, 0, 1 },
  { "encoder.0.conv1", 90, 160, 3, 3, 2, 32, 64, 0, 1 },
  { "encoder.0.conv2", 45, 80, 1, 3, 1, 64, 64, 0, 0 },
  { "encoder.0.conv3", 45, 80, 3, 1, 1, 64, 64, 1, 1 },
  { "encoder.0.shortcut", 90, 160, 1, 1, 2, 32, 64, 0, 0 },
  { "encoder.1.conv1", 45, 80, 3, 3, 2, 64, 64, 0, 1 },
  { "encoder.1.conv2", 23, 40, 1, 3, 1, 64, 64, 0, 0 },
  { "encoder.1.conv3", 23, 40, 3, 1, 1, 64, 64, 1, 1 },
  { "encoder.2.conv1", 23, 40, 3, 3, 2, 64, 128, 0, 1 },
  { "encoder.2.conv2", 12, 20, 1, 3, 1, 128, 128, 0, 0 },
  { "encoder.2.conv3", 12, 20, 3, 1, 1, 128, 128, 1, 1 },
  { "encoder.2.shortcut", 23, 40, 1, 1, 2, 64, 128, 0, 0 },
  { "decoder.0.conv1", 12, 20, 3, 3, 1, 128, 128, 0, 1 },
  { "decoder.0.conv2", 12, 20, 1, 3, 1, 128, 128, 0, 0 },
  { "decoder.0.conv3", 12, 20, 3, 1, 1, 128, 128, 1, 1 },
  { "decoder.1.conv1", 23, 40, 3, 3, 1, 192, 64, 0, 1 },
  { "decoder.1.conv2", 23, 40, 1, 3, 1, 64, 64, 0, 0 },
  { "decoder.1.conv3", 23, 40, 3, 1, 1, 64, 64, 1, 1 },
  { "decoder.1.shortcut", 23, 40, 1, 1, 1, 192, 64, 0, 0 },
  { "decoder.2.conv1", 45, 80, 3, 3, 1, 128, 32, 0, 1 },
  { "decoder.2.conv2", 45, 80, 1, 3, 1, 32, 32, 0, 0 },
  { "decoder.2.conv3", 45, 80, 3, 1, 1, 32, 32, 1, 1 },
  { "decoder.2.shortcut", 45, 80, 1, 1, 1, 128, 32, 0, 0 },
  { "head.0", 180, 320, 3, 3, 1, 32, 16, 0, 1 },
  { "head.1", 180, 320, 3, 3, 1, 16, 8, 0, 1 },
  { "classifier", 180, 320, 1, 1, 1, 8, 2, 0, 0 },
  { "head.0@1280x720", 360, 640, 3, 3, 1, 32, 16, 0, 1 },
};

typedef struct {
  const Layer *layer;
  ConvGeometry g;
  ConvBuffers b; /* z: the residual */
} LayerData;

static LayerData layer_data_new(const Layer *l)
{
  LayerData d = { .layer = l };
  d.g = (ConvGeometry){ l->kh, l->kw, l->stride, l->kh / 2, l->kw / 2, l->cin, l->cout };
  int oh = conv_output_size(l->h, l->kh, l->stride, d.g.pad_h);
  int ow = conv_output_size(l->w, l->kw, l->stride, d.g.pad_w);
  d.b = conv_buffers_new(l->h, l->w, l->cin, oh, ow, l->cout,
                         (size_t)l->kh * l->kw * l->cin * l->cout);
  return d;
}

/* Whether op has a bfloat16 version. */
static int bf16_applies(int op)
{
  return op == OP_FORWARD || op == OP_BACKWARD;
}

static void run_op(LayerData *d, int op, int bf16, ThreadPool *pool)
{
  switch (op) {
  case OP_FORWARD:
    (bf16 ? conv2d_forward_bf16 : conv2d_forward)(&d->g, &d->b.x, d->b.w, d->b.bias,
                                                  d->layer->residual ? &d->b.z : NULL,
                                                  d->layer->relu, &d->b.y, pool);
    break;
  case OP_BACKWARD: /* stem.0 computes no input gradient in training */
    (bf16 ? conv2d_backward_bf16 : conv2d_backward)(
      &d->g, &d->b.x, d->b.w, d->layer->relu ? &d->b.y : NULL, &d->b.dy, d->b.dw, d->b.dbias,
      strcmp(d->layer->name, "stem.0") ? &d->b.dx : NULL, 0, pool);
    break;
  case OP_BACKWARD_INPUT:
    conv2d_backward_input(&d->g, &d->b.dy, d->b.w, &d->b.dx, 0, pool);
    break;
  default:
    conv2d_backward_weights(&d->g, &d->b.x, &d->b.dy, d->b.dw, d->b.dbias, pool);
  }
}

/* Median seconds of one run: 3 warm-up runs, then runs until about 0.15 s have passed (5 to 51). */
static double time_op(LayerData *d, int op, int bf16, ThreadPool *pool)
{
  double times[51];
  int n = 0;
  for (int i = 0; i < 3; i++)
    run_op(d, op, bf16, pool);
  double start = now_seconds();
  while (n < 51 && (n < 5 || now_seconds() - start < 0.15)) {
    double t0 = now_seconds();
    run_op(d, op, bf16, pool);
    times[n++] = now_seconds() - t0;
  }
  qsort(times, n, sizeof *times, compare_doubles);
  return times[n / 2];
}

static void print_line(const char *layer, int op, const char *impl, int threads, double seconds,
                       double flops, double peak_gflops)
{
  double gflops = flops / seconds * 1e-9;
  printf("{\"layer\":\"%s\",\"op\":\"%s\",\"impl\":\"%s\",\"threads\":%d,\"ms\":%.4f,"
         "\"gflops\":%.2f,\"peak_fraction\":%.3f}\n",
         layer, op_names[op], impl, threads, seconds * 1e3, gflops, gflops / peak_gflops);
  fflush(stdout);
}

/* ---- the same passes as OpenBLAS GEMMs ---- */

typedef struct {
  LayerData *d;
  int op;
  float *x_padded; /* the input with a margin of (pad_h * w + pad_w) pixels on both sides */
  float *partials; /* per thread: dw (taps x cin x cout) */
  size_t margin, dw_floats;
  int threads;
} GemmRun;

/* Pixels [begin, end) of the output, every tap. */
static void gemm_task(void *ctx, int index, int thread)
{
  GemmRun *run = ctx;
  const ConvGeometry *g = &run->d->g;
  int pixels = run->d->b.y.h * run->d->b.y.w;
  int begin = (int)((long long)pixels * index / run->threads);
  int end = (int)((long long)pixels * (index + 1) / run->threads), m = end - begin;
  if (m <= 0)
    return;
  const float *x = run->x_padded + run->margin * g->cin;
  float *dy = run->d->b.dy.data + (size_t)begin * g->cout;
  if (run->op == OP_BACKWARD_INPUT) {
    /* 1x1 only: dx = dy * w^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, g->cin, g->cout, 1.0f, dy, g->cout,
                run->d->b.w, g->cout, 0.0f, run->d->b.dx.data + (size_t)begin * g->cin, g->cin);
    return;
  }
  float *dw = run->partials + (size_t)index * run->dw_floats;
  for (int ky = 0; ky < g->kh; ky++)
    for (int kx = 0; kx < g->kw; kx++) {
      int t = ky * g->kw + kx;
      ptrdiff_t shift = (ptrdiff_t)(ky - g->pad_h) * run->d->b.x.w + (kx - g->pad_w);
      const float *a = x + ((ptrdiff_t)begin + shift) * g->cin;
      const float *w = run->d->b.w + (size_t)t * g->cin * g->cout;
      if (run->op == OP_FORWARD)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, g->cout, g->cin, 1.0f, a, g->cin,
                    w, g->cout, t ? 1.0f : 0.0f, run->d->b.y.data + (size_t)begin * g->cout,
                    g->cout);
      else
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g->cin, g->cout, m, 1.0f, a, g->cin,
                    dy, g->cout, 1.0f, dw + (size_t)t * g->cin * g->cout, g->cout);
    }
}

static void run_gemm_op(GemmRun *run, ThreadPool *pool)
{
  if (run->op == OP_BACKWARD_WEIGHTS)
    memset(run->partials, 0, sizeof(float) * run->dw_floats * run->threads);
  thread_pool_run(pool, run->threads, gemm_task, run);
  if (run->op == OP_BACKWARD_WEIGHTS)
    for (int t = 0; t < run->threads; t++)
      for (size_t i = 0; i < run->dw_floats; i++)
        run->d->b.dw[i] += run->partials[(size_t)t * run->dw_floats + i];
}

static double time_gemm_op(LayerData *d, int op, ThreadPool *pool)
{
  const ConvGeometry *g = &d->g;
  GemmRun run = { .d = d, .op = op, .threads = thread_pool_threads(pool) };
  run.margin = (size_t)g->pad_h * d->b.x.w + g->pad_w;
  size_t pixels = (size_t)d->b.x.h * d->b.x.w;
  run.x_padded = g_new0(float, (pixels + 2 * run.margin) * g->cin);
  memcpy(run.x_padded + run.margin * g->cin, d->b.x.data, sizeof(float) * pixels * g->cin);
  run.dw_floats = (size_t)g->kh * g->kw * g->cin * g->cout;
  run.partials = g_new(float, run.dw_floats * run.threads);
  double times[51];
  int n = 0;
  for (int i = 0; i < 3; i++)
    run_gemm_op(&run, pool);
  double start = now_seconds();
  while (n < 51 && (n < 5 || now_seconds() - start < 0.15)) {
    double t0 = now_seconds();
    run_gemm_op(&run, pool);
    times[n++] = now_seconds() - t0;
  }
  g_free(run.x_padded);
  g_free(run.partials);
  qsort(times, n, sizeof *times, compare_doubles);
  return times[n / 2];
}

/* Stride 1 only (a strided input is no GEMM operand); the input gradient for 1x1 only. */
static int gemm_applies(const Layer *l, int op)
{
  return l->stride == 1 && (op != OP_BACKWARD_INPUT || l->kh * l->kw == 1);
}

int main(int argc, char **argv)
{
  int only_threads = 0;
  const char *only_layer = NULL;
  int openblas = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--no-openblas"))
      openblas = 0;
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      only_threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--layer") && i + 1 < argc)
      only_layer = argv[++i];
    else {
      fprintf(stderr, "usage: %s [--threads N] [--layer NAME] [--no-openblas]\n", argv[0]);
      return 2;
    }
  }
  g_random_set_seed(1);
  for (int threads = 1; threads <= 2; threads++) {
    if (only_threads && threads != only_threads)
      continue;
    ThreadPool *pool = thread_pool_new(threads);
    double peak = kernels_measure_fma_peak(threads, 0.2);
    double total_seconds[N_OPS] = { 0 }, total_bf16[N_OPS] = { 0 }, total_flops = 0;
    for (size_t i = 0; i < G_N_ELEMENTS(layers); i++) {
      const Layer *l = &layers[i];
      if (only_layer && strcmp(only_layer, l->name))
        continue;
      LayerData d = layer_data_new(l);
      double flops = 2.0 * d.b.y.h * d.b.y.w * l->kh * l->kw * l->cin * l->cout;
      int whole_network = !strchr(l->name, '@');
      for (int op = 0; op < N_OPS; op++) {
        /* The fused backward does two passes' work (one on stem.0). */
        double op_flops = op == OP_BACKWARD && strcmp(l->name, "stem.0") ? 2 * flops : flops;
        double seconds = time_op(&d, op, 0, pool);
        print_line(l->name, op, "direct", threads, seconds, op_flops, peak);
        if (kernels_have_bf16() && bf16_applies(op)) {
          double bf16_seconds = time_op(&d, op, 1, pool);
          print_line(l->name, op, "bf16", threads, bf16_seconds, op_flops, peak);
          if (whole_network)
            total_bf16[op] += bf16_seconds;
        }
        if (openblas && op != OP_BACKWARD && gemm_applies(l, op))
          print_line(l->name, op, "openblas", threads, time_gemm_op(&d, op, pool), flops, peak);
        if (whole_network)
          total_seconds[op] += seconds;
      }
      if (whole_network)
        total_flops += flops;
      conv_buffers_free(&d.b);
    }
    if (!only_layer)
      for (int op = 0; op < N_OPS; op++) {
        /* flops of "all" count every layer's pass once (twice for the fused backward, less
         * stem.0's input gradient, which is small). */
        double all_flops = op == OP_BACKWARD ? 2 * total_flops : total_flops;
        print_line("all", op, "direct", threads, total_seconds[op], all_flops, peak);
        if (kernels_have_bf16() && bf16_applies(op))
          print_line("all", op, "bf16", threads, total_bf16[op], all_flops, peak);
      }
    thread_pool_free(pool);
  }
  return 0;
}
