/* bench_data.h: what the kernel benchmarks share: a clock, medians, and the random buffers of
 * one convolution (input, output and their gradients, weights, bias and their gradients). */
#pragma once

#include <glib.h>
#include <stdlib.h>
#include <time.h>

#include "kernels.h"

static inline double now_seconds(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static inline int compare_doubles(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static inline float *random_floats(size_t n)
{
  float *p = g_new(float, n > 0 ? n : 1);
  for (size_t i = 0; i < n; i++)
    p[i] = (float)g_random_double_range(-0.5, 0.5);
  return p;
}

static inline FeatureMap random_map(int h, int w, int c)
{
  return feature_map(random_floats((size_t)h * w * c), h, w, c);
}

/* The passes of a convolution: forward, input gradient, weight gradient, and the fused backward
 * pass training runs (ReLU, bias, weight and input gradients). */
enum { OP_FORWARD, OP_BACKWARD_INPUT, OP_BACKWARD_WEIGHTS, OP_BACKWARD, N_OPS };
static const char *const op_names[N_OPS] = { "forward", "backward_input", "backward_weights",
                                             "backward" };

/* x and dx of the input's size, y, z (a residual, or a pre-activation) and dy of the output's;
 * weights and bias with their gradients. */
typedef struct {
  FeatureMap x, dx, y, z, dy;
  float *w, *dw, *bias, *dbias;
} ConvBuffers;

static inline ConvBuffers conv_buffers_new(int h, int w, int cin, int out_h, int out_w, int cout,
                                           size_t weights)
{
  ConvBuffers b;
  b.x = random_map(h, w, cin);
  b.dx = random_map(h, w, cin);
  b.y = random_map(out_h, out_w, cout);
  b.z = random_map(out_h, out_w, cout);
  b.dy = random_map(out_h, out_w, cout);
  b.w = random_floats(weights);
  b.dw = random_floats(weights);
  b.bias = random_floats(cout);
  b.dbias = random_floats(cout);
  return b;
}

static inline void conv_buffers_free(ConvBuffers *b)
{
  g_free(b->x.data), g_free(b->dx.data), g_free(b->y.data), g_free(b->z.data);
  g_free(b->dy.data), g_free(b->w), g_free(b->dw), g_free(b->bias), g_free(b->dbias);
}
