/* ghost.h: RepGhost's module and bottleneck (student/README.md, "Architecture repghost").
 *
 * Module: p = act(conv1x1(x)), y = act(dw3x3(p) + fusion * p); fused, the fusion sits in the
 * depthwise weights' centre taps (dw_layer.h). Bottleneck: module (ReLU), a stride-2 depthwise
 * convolution when it downsamples, module (linear), plus the input or a depthwise-pointwise
 * shortcut. */
#pragma once

#include "conv_layer.h"
#include "dw_layer.h"

typedef struct {
  ConvLayer conv;
  DwLayer cheap; /* its output and delta are the module's */
} GhostModule;

/* Registers "<name>.conv", "<name>.cheap" and, unless fused, "<name>.fusion". */
void make_ghost_module(GhostModule *m, ParamTable *table, const char *name, int cin, int cout,
                       Activation act, gboolean fused);
/* output and delta are the module's (the caller's buffers); the inner ones come from arena. */
void plan_ghost_module(GhostModule *m, int h, int w, FeatureMap output, FeatureMap delta,
                       Arena *arena);
double ghost_module_flops(const GhostModule *m, int h, int w);
void forward_ghost_module(GhostModule *m, const FeatureMap *x, const float *params,
                          ThreadPool *pool);
void backward_ghost_module(GhostModule *m, const FeatureMap *x, const float *params,
                           float *grads, FeatureMap *dx, int accumulate, ThreadPool *pool);

typedef struct {
  GhostModule ghost1, ghost2;
  int has_down;
  DwLayer down;
  int identity;               /* stride 1 and equal widths: the input is added */
  DwLayer shortcut_dw;        /* otherwise: conv1x1(dw3x3/s(x)), whose sum with ghost2's */
  ConvLayer shortcut_pw;      /* output is the bottleneck's */
  FeatureMap output, delta;   /* the bottleneck's (ghost2's with the identity) */
} GhostBottleneck;

void make_ghost_bottleneck(GhostBottleneck *b, ParamTable *table, const char *name, int cin,
                           int mid, int cout, int stride, gboolean fused);
void ghost_bottleneck_output_size(const GhostBottleneck *b, int in_h, int in_w, int *out_h,
                                  int *out_w);
void plan_ghost_bottleneck(GhostBottleneck *b, int in_h, int in_w, FeatureMap output,
                           FeatureMap delta, Arena *arena);
double ghost_bottleneck_flops(const GhostBottleneck *b, int in_h, int in_w);
void ghost_bottleneck_set_bf16(GhostBottleneck *b, int backward, int forward);
void forward_ghost_bottleneck(GhostBottleneck *b, const FeatureMap *x, const float *params,
                              ThreadPool *pool);
/* From the gradient in the bottleneck's delta. */
void backward_ghost_bottleneck(GhostBottleneck *b, const FeatureMap *x, const float *params,
                               float *grads, FeatureMap *dx, int accumulate, ThreadPool *pool);

static inline FeatureMap *ghost_bottleneck_output(GhostBottleneck *b)
{
  return &b->output;
}

static inline FeatureMap *ghost_bottleneck_delta(GhostBottleneck *b)
{
  return &b->delta;
}
