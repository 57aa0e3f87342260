/* block.h: the residual block of student/README.md,
 * out = relu(conv3x1(conv1x3(relu(conv3x3/s(x)))) + shortcut(x)). */
#pragma once

#include "conv_layer.h"

typedef enum {
  SHORTCUT_IDENTITY,  /* cin == cout, stride 1 */
  SHORTCUT_SUBSAMPLE, /* cin == cout, stride 2: x[::2, ::2], no weights */
  SHORTCUT_CONV,      /* otherwise: conv1x1/s */
} ShortcutKind;

typedef struct {
  ConvLayer conv1, conv2, conv3; /* conv3.output / .delta are the block's */
  ShortcutKind shortcut_kind;
  ConvLayer shortcut;            /* SHORTCUT_CONV; its delta is conv3's */
  FeatureMap subsampled;         /* SHORTCUT_SUBSAMPLE */
} Block;

/* Registers "<name>.conv1" … "<name>.shortcut" (the latter only where it has weights). */
void make_block(Block *b, ParamTable *table, const char *name, int cin, int cout, int stride);
void block_output_size(const Block *b, int in_h, int in_w, int *out_h, int *out_w);
/* output and delta (the block's result and its gradient, possibly channel slices of wider
 * buffers) are placed by the caller; the inner buffers come from arena. */
void plan_block(Block *b, int in_h, int in_w, FeatureMap output, FeatureMap delta,
                Arena *arena);
double block_flops(const Block *b, int in_h, int in_w);

/* Every convolution of the block with bfloat16 products in its backward and its forward passes
 * or not (ConvLayer.bf16, .bf16_forward). */
void block_set_bf16(Block *b, int backward, int forward);

void forward_block(Block *b, const FeatureMap *x, const float *params, ThreadPool *pool);
/* From the gradient in the block's delta: adds to grads, and writes (or with accumulate adds)
 * the input gradient into dx. */
void backward_block(Block *b, const FeatureMap *x, const float *params, float *grads,
                    FeatureMap *dx, int accumulate, ThreadPool *pool);

static inline FeatureMap *block_output(Block *b)
{
  return &b->conv3.output;
}

static inline FeatureMap *block_delta(Block *b)
{
  return &b->conv3.delta;
}
