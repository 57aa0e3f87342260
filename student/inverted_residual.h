/* inverted_residual.h: MobileNetV2/V3's inverted residual block (student/README.md,
 * "Architecture mobilenet"): act(conv1x1) to the expansion width, act(dw3x3/s), a linear
 * conv1x1 to the output width, and the input added when the shapes allow. */
#pragma once

#include "conv_layer.h"
#include "dw_layer.h"

typedef struct {
  int has_expand; /* expansion width != input width */
  ConvLayer expand;
  DwLayer dw;
  ConvLayer project; /* its output and delta are the block's */
  int residual;      /* stride 1 and equal widths */
} InvertedResidual;

/* Registers "<name>.expand" (only with expansion != cin), "<name>.dw" and "<name>.project". */
void make_inverted_residual(InvertedResidual *b, ParamTable *table, const char *name, int cin,
                            int expansion, int cout, int stride, Activation act);
void inverted_residual_output_size(const InvertedResidual *b, int in_h, int in_w, int *out_h,
                                   int *out_w);
void plan_inverted_residual(InvertedResidual *b, int in_h, int in_w, Arena *arena);
double inverted_residual_flops(const InvertedResidual *b, int in_h, int in_w);
void inverted_residual_set_bf16(InvertedResidual *b, int backward, int forward);

void forward_inverted_residual(InvertedResidual *b, const FeatureMap *x, const float *params,
                               ThreadPool *pool);
/* From the gradient in the block's delta: adds to grads, and writes (or with accumulate adds)
 * the input gradient into dx. */
void backward_inverted_residual(InvertedResidual *b, const FeatureMap *x, const float *params,
                                float *grads, FeatureMap *dx, int accumulate, ThreadPool *pool);
