/* conv_layer.h: a convolution with bias, an activation and an optional residual, forward and
 * backward over the flat parameter and gradient buffers.
 *
 * Padding is k/2 per axis (student/README.md). output and delta are views planned by the graph:
 * they may be channel slices of a wider buffer (a concatenation), and delta may be shared with
 * another layer that receives the same gradient (a block's shortcut and conv3). */
#pragma once

#include "kernels.h"
#include "arena.h"
#include "param_table.h"

typedef struct {
  ConvGeometry geom;
  size_t weight_offset, bias_offset; /* floats into params / grads */
  /* ReLU rides on the convolution's kernels; another activation is a pass of its own over the
   * pre-activation, kept in preact for the backward pass. */
  Activation act;
  int bf16;         /* the backward pass's products in bfloat16 (conv2d_backward_bf16) */
  int bf16_forward; /* the forward pass's, in the layers where that pays (conv_layer.c) */
  FeatureMap output, delta;
  FeatureMap preact; /* act other than NONE and RELU */
} ConvLayer;

/* Registers "<name>.weight" [cout, cin, kh, kw] and "<name>.bias" [cout] in table. */
void make_conv_layer(ConvLayer *l, ParamTable *table, const char *name, int cin, int cout,
                     int kh, int kw, int stride, Activation act);
void conv_layer_output_size(const ConvLayer *l, int in_h, int in_w, int *out_h, int *out_w);
/* Sets output and delta (and preact where the activation needs it) to fresh buffers of the
 * output size for an in_h x in_w input. */
void plan_conv_layer(ConvLayer *l, int in_h, int in_w, Arena *arena);
/* The same with output and delta given (channel slices of wider buffers, say). */
void plan_conv_layer_into(ConvLayer *l, int in_h, int in_w, FeatureMap output, FeatureMap delta,
                          Arena *arena);
double conv_layer_flops(const ConvLayer *l, int out_h, int out_w);

/* The bfloat16 switches (ConvLayer.bf16, .bf16_forward). */
void conv_layer_set_bf16(ConvLayer *l, int backward, int forward);

/* output = act(conv(x) + bias + residual); residual may be NULL. */
void forward_conv_layer(ConvLayer *l, const FeatureMap *x, const FeatureMap *residual,
                        const float *params, ThreadPool *pool);
/* From delta (the gradient of output; the activation's gradient is applied to it in place, so it
 * holds the pre-activation gradient afterwards): adds the weight and bias gradients to grads
 * and, when dx is not NULL, writes (or with accumulate adds) the input gradient. */
void backward_conv_layer(ConvLayer *l, const FeatureMap *x, const float *params, float *grads,
                         FeatureMap *dx, int accumulate, ThreadPool *pool);
