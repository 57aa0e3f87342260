/* dw_layer.h: a depthwise 3x3 convolution with bias and an activation, optionally with a
 * re-parameterisable identity branch (RepGhost's "fusion"), forward and backward over the flat
 * parameter and gradient buffers.
 *
 * With a fusion branch the layer computes act(dw3x3(x) + bias + fusion * x): the same function
 * as a plain depthwise convolution whose centre tap holds the fusion added, which is how it runs
 * (effective weights made before each pass) and how a fused network stores it. */
#pragma once

#include "arena.h"
#include "kernels.h"
#include "param_table.h"

typedef struct {
  int channels, stride;
  Activation act;
  size_t weight_offset, bias_offset; /* floats into params / grads */
  size_t fusion_offset;              /* DW_NO_FUSION: a plain depthwise convolution */
  FeatureMap output, delta;
  FeatureMap preact;                 /* act other than NONE and RELU */
  float *fused_weights, *fused_grads; /* with fusion: 9 x channels each, from the arena */
} DwLayer;

#define DW_NO_FUSION ((size_t)-1)

/* Registers "<name>.weight" [channels, 1, 3, 3] and "<name>.bias" [channels] in table; with
 * fusion_name, also that tensor [channels] (initialised to 1). */
void make_dw_layer(DwLayer *l, ParamTable *table, const char *name, int channels, int stride,
                   Activation act, const char *fusion_name);
void dw_layer_output_size(const DwLayer *l, int in_h, int in_w, int *out_h, int *out_w);
void plan_dw_layer(DwLayer *l, int in_h, int in_w, Arena *arena);
/* The same with output and delta given. */
void plan_dw_layer_into(DwLayer *l, int in_h, int in_w, FeatureMap output, FeatureMap delta,
                        Arena *arena);
double dw_layer_flops(const DwLayer *l, int out_h, int out_w);

void forward_dw_layer(DwLayer *l, const FeatureMap *x, const float *params, ThreadPool *pool);
/* From delta (turned into the pre-activation gradient in place): adds the weight, bias (and
 * fusion) gradients to grads and, when dx is not NULL, writes (or with accumulate adds) the
 * input gradient. */
void backward_dw_layer(DwLayer *l, const FeatureMap *x, const float *params, float *grads,
                       FeatureMap *dx, int accumulate, ThreadPool *pool);

/* Writes the weights of the fused layer (its centre taps holding the fusion) of a layer with a
 * fusion branch, from the parameters of the unfused one: the 9 x channels floats at
 * fused_weights. */
void dw_layer_fuse(const DwLayer *l, const float *params, float *fused_weights);
