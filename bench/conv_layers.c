/* conv_layers.c (distill-bench-conv): the convolution kernels on the student's layer shapes.
 *
 * For every convolution of the student at 640x360 (and head.0 at 1280x720): forward, backward
 * input and backward weights on 1 and 2 threads, the median of several runs after a warm-up, one
 * JSON line each: {"layer","op","threads","ms","gflops","peak_fraction"}, peak being the FMA
 * throughput measured on as many threads (kernels_measure_fma_peak). Lines with layer "all" sum
 * the 640x360 layers of an op.
 *
 *   distill-bench-conv [--threads N] [--layer NAME]     (default: 1 and 2 threads, every layer) */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

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
  { "head.0", 180, 320, 3, 3, 1, 32, 32, 0, 1 },
  { "head.1", 180, 320, 3, 3, 1, 32, 8, 0, 1 },
  { "classifier", 180, 320, 1, 1, 1, 8, 2, 0, 0 },
  { "head.0@1280x720", 360, 640, 3, 3, 1, 32, 32, 0, 1 },
};

enum { OP_FORWARD, OP_BACKWARD_INPUT, OP_BACKWARD_WEIGHTS, N_OPS };
static const char *const op_names[N_OPS] = { "forward", "backward_input", "backward_weights" };

typedef struct {
  const Layer *layer;
  ConvGeometry g;
  FeatureMap x, y, residual, dy, dx;
  float *w, *bias, *dw, *dbias;
} LayerData;

static double now_seconds(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static float *random_floats(size_t n)
{
  float *p = g_new(float, n);
  for (size_t i = 0; i < n; i++)
    p[i] = (float)g_random_double_range(-0.5, 0.5);
  return p;
}

static FeatureMap random_map(int h, int w, int c)
{
  return feature_map(random_floats((size_t)h * w * c), h, w, c);
}

static LayerData layer_data_new(const Layer *l)
{
  LayerData d = { .layer = l };
  d.g = (ConvGeometry){ l->kh, l->kw, l->stride, l->kh / 2, l->kw / 2, l->cin, l->cout };
  int oh = conv_output_size(l->h, l->kh, l->stride, d.g.pad_h);
  int ow = conv_output_size(l->w, l->kw, l->stride, d.g.pad_w);
  size_t nw = (size_t)l->kh * l->kw * l->cin * l->cout;
  d.x = random_map(l->h, l->w, l->cin);
  d.dx = random_map(l->h, l->w, l->cin);
  d.y = random_map(oh, ow, l->cout);
  d.residual = random_map(oh, ow, l->cout);
  d.dy = random_map(oh, ow, l->cout);
  d.w = random_floats(nw);
  d.dw = random_floats(nw);
  d.bias = random_floats(l->cout);
  d.dbias = random_floats(l->cout);
  return d;
}

static void layer_data_free(LayerData *d)
{
  g_free(d->x.data), g_free(d->dx.data), g_free(d->y.data), g_free(d->residual.data);
  g_free(d->dy.data), g_free(d->w), g_free(d->dw), g_free(d->bias), g_free(d->dbias);
}

static void run_op(LayerData *d, int op, ThreadPool *pool)
{
  switch (op) {
  case OP_FORWARD:
    conv2d_forward(&d->g, &d->x, d->w, d->bias, d->layer->residual ? &d->residual : NULL,
                   d->layer->relu, &d->y, pool);
    break;
  case OP_BACKWARD_INPUT:
    conv2d_backward_input(&d->g, &d->dy, d->w, &d->dx, 0, pool);
    break;
  default:
    conv2d_backward_weights(&d->g, &d->x, &d->dy, d->dw, d->dbias, pool);
  }
}

static int compare_doubles(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median seconds of one run: 3 warm-up runs, then runs until about 0.15 s have passed (5 to 51). */
static double time_op(LayerData *d, int op, ThreadPool *pool)
{
  double times[51];
  int n = 0;
  for (int i = 0; i < 3; i++)
    run_op(d, op, pool);
  double start = now_seconds();
  while (n < 51 && (n < 5 || now_seconds() - start < 0.15)) {
    double t0 = now_seconds();
    run_op(d, op, pool);
    times[n++] = now_seconds() - t0;
  }
  qsort(times, n, sizeof *times, compare_doubles);
  return times[n / 2];
}

static void print_line(const char *layer, int op, int threads, double seconds, double flops,
                       double peak_gflops)
{
  double gflops = flops / seconds * 1e-9;
  printf("{\"layer\":\"%s\",\"op\":\"%s\",\"threads\":%d,\"ms\":%.4f,\"gflops\":%.2f,"
         "\"peak_fraction\":%.3f}\n",
         layer, op_names[op], threads, seconds * 1e3, gflops, gflops / peak_gflops);
  fflush(stdout);
}

int main(int argc, char **argv)
{
  int only_threads = 0;
  const char *only_layer = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      only_threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--layer") && i + 1 < argc)
      only_layer = argv[++i];
    else {
      fprintf(stderr, "usage: %s [--threads N] [--layer NAME]\n", argv[0]);
      return 2;
    }
  }
  g_random_set_seed(1);
  for (int threads = 1; threads <= 2; threads++) {
    if (only_threads && threads != only_threads)
      continue;
    ThreadPool *pool = thread_pool_new(threads);
    double peak = kernels_measure_fma_peak(threads, 0.2);
    double total_seconds[N_OPS] = { 0 }, total_flops = 0;
    for (size_t i = 0; i < G_N_ELEMENTS(layers); i++) {
      const Layer *l = &layers[i];
      if (only_layer && strcmp(only_layer, l->name))
        continue;
      LayerData d = layer_data_new(l);
      double flops = 2.0 * d.y.h * d.y.w * l->kh * l->kw * l->cin * l->cout;
      int whole_network = !strchr(l->name, '@');
      for (int op = 0; op < N_OPS; op++) {
        double seconds = time_op(&d, op, pool);
        print_line(l->name, op, threads, seconds, flops, peak);
        if (whole_network)
          total_seconds[op] += seconds;
      }
      if (whole_network)
        total_flops += flops;
      layer_data_free(&d);
    }
    if (!only_layer)
      for (int op = 0; op < N_OPS; op++)
        print_line("all", op, threads, total_seconds[op], total_flops, peak);
    thread_pool_free(pool);
  }
  return 0;
}
