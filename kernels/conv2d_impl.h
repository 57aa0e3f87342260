/* conv2d_impl.h: the row kernels behind the convolution passes, one table per ISA.
 *
 * The passes (conv2d_forward.c, conv2d_backward.c, on the machinery of conv2d_pass.h) turn every
 * convolution (forward, and both backward passes) into calls on one output row at a time: the
 * input rows a row needs are resolved (zero-padded copies where a tap reaches past the left or
 * right edge, so the kernels never test bounds) and the weights are packed into output-channel
 * blocks. The kernels are register-tiled loops over those rows. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/* Up to 7x7 kernels take the fast paths; larger ones run the references. */
#define CONV_MAX_TAPS 49

/* Forward-style row: out[p][co] = bias[co] + sum over taps, ci of in[tap][p * in_step + ci] *
 * w[tap][ci * w_step + co], then + residual, then ReLU, for p < pixels, co < channels. */
typedef struct {
  int n_taps;
  const float *in[CONV_MAX_TAPS]; /* per tap: the input of output pixel 0, channel 0 */
  const float *w[CONV_MAX_TAPS];  /* per tap: weights, cin rows of block_width, w_step apart */
  ptrdiff_t w_step;               /* floats from one input channel's weights to the next */
  ptrdiff_t in_step;              /* floats from the input of one output pixel to the next */
  int cin;
  const float *bias; /* block_width floats, zero-padded */
  float *out;
  ptrdiff_t out_step;
  const float *residual; /* NULL = none; may equal out (accumulating backward pass) */
  ptrdiff_t residual_step;
  int relu;
  int pixels;
  int channels;    /* output channels written, <= block_width */
  int block_width; /* 8, 16 or 32, from ConvKernels.max_block down */
} ConvRowJob;

/* Weight-gradient row: dw[k][co] += sum over p of in[p * in_step + k] * dy[p * dy_step + co],
 * for k < rows, co < channels (dw is packed: rows x block_width). */
typedef struct {
  const float *in;
  ptrdiff_t in_step;
  int rows;
  const float *dy;
  ptrdiff_t dy_step;
  int pixels;
  float *dw;
  int channels;
  int block_width;
} ConvWeightsJob;

/* Before a row's weight gradient: dy[p][co] = 0 where y[p][co] is not > 0 (the gradient through
 * a ReLU whose output was y; skipped when y is NULL), then sums[co] += dy[p][co] (skipped when
 * sums is NULL), for p < pixels, co < channels. */
typedef struct {
  const float *y;
  ptrdiff_t y_step;
  float *dy;
  ptrdiff_t dy_step;
  int pixels, channels;
  float *sums;
} ConvBiasJob;

/* The bias job of row r of dy (y NULL: no ReLU). */
static inline ConvBiasJob conv_bias_job(const FeatureMap *y, const FeatureMap *dy, int r,
                                        float *sums)
{
  ConvBiasJob job = {
    .y = y ? feature_map_at(y, r, 0) : NULL,
    .y_step = y ? y->ld : 0,
    .dy = feature_map_at(dy, r, 0),
    .dy_step = dy->ld,
    .pixels = dy->w,
    .channels = dy->c,
    .sums = sums,
  };
  return job;
}

typedef struct {
  int max_block; /* widest output-channel block, in floats */
  int min_block; /* narrowest */
  void (*forward_row)(const ConvRowJob *job);
  /* Optional (NULL = use forward_row), for blocks of at most 8 output channels: weights packed
   * in pairs of input channels, per tap ceil(cin / 2) x 16 floats, lane 2 * co + e holding
   * input channel 2j + e (zero where there is none); bias 8 floats. */
  void (*forward_row_pairs)(const ConvRowJob *job);
  void (*weights_row)(const ConvWeightsJob *job);
  /* Optional, for at most 8 output channels (one block): dw transposed, dw[co * block_width + k]
   * for co < channels (block_width: rows rounded up to 16). */
  void (*weights_row_narrow)(const ConvWeightsJob *job);
  void (*bias_row)(const ConvBiasJob *job);
} ConvKernels;

/* The bfloat16 products of conv2d_forward_bf16 / conv2d_backward_bf16 (conv2d_bf16.c): ConvRowJob
 * with in[] rows of 32-bit words holding channel pairs (cin counts the pairs, in_step is in
 * words) and weights packed the same way, per tap ceil(n_in / 2) rows of block_width words. */
typedef struct {
  void (*forward_row)(const ConvRowJob *job);
  /* ConvWeightsJob with in and dy holding pixel pairs: word k of pair q is input k (or channel
   * k of dy) of pixels 2q (low half) and 2q + 1; pixels counts the pairs, steps are in words. */
  void (*weights_row)(const ConvWeightsJob *job);
  /* dst: per pixel, ceil(channels / 2) words; an odd channel count pads its last word with 0. */
  void (*to_pairs_row)(const float *src, ptrdiff_t src_step, int pixels, int channels,
                       uint32_t *dst);
  /* dst[i] = a[i] (low half) and b[i] in bfloat16, i < n; NULL a or b reads zeros. */
  void (*pair_pixels)(const float *a, const float *b, int n, uint32_t *dst);
} ConvBf16Kernels;

extern const ConvKernels conv_kernels_avx512;
extern const ConvBf16Kernels conv_kernels_bf16;
extern const ConvKernels conv_kernels_avx2;

/* The table for the ISA in use; NULL for scalar (the references are the scalar path). */
static inline const ConvKernels *conv_kernels(void)
{
  switch (kernels_isa()) {
  case KERNELS_ISA_AVX512:
    return &conv_kernels_avx512;
  case KERNELS_ISA_AVX2:
    return &conv_kernels_avx2;
  default:
    return NULL;
  }
}
