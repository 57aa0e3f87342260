/* conv2d_pack.h: output-channel blocks, and the weights packed for them (conv2d_pack.c).
 *
 * The row kernels write one block of output channels at a time, from weights laid out block by
 * block. The forward pass reads the caller's HWIO weights as they are when every output-channel
 * block is full; other passes pack them, in parallel, as pool tasks beside the pass's rows. The
 * packed weights and the bfloat16 copies of a pass's input live in buffers of the calling thread,
 * grown on demand and kept: training steps repack every layer each time, and allocate nothing
 * once warm. */
#pragma once

#include "conv2d_impl.h"

/* Full blocks of max_block channels, the last one narrowed to the smallest power-of-two width
 * (>= min_block) that holds the rest. */
typedef struct {
  int channels, n_blocks, max_block, last_width;
} ConvBlocks;

static inline ConvBlocks blocks_of(int channels, int max_block, int min_block)
{
  ConvBlocks b = { channels, (channels + max_block - 1) / max_block, max_block, 0 };
  int rest = channels - (b.n_blocks - 1) * max_block;
  for (b.last_width = min_block; b.last_width < rest; b.last_width *= 2)
    ;
  return b;
}

static inline ConvBlocks conv_blocks(int channels, const ConvKernels *k)
{
  return blocks_of(channels, k->max_block, k->min_block);
}

/* The bfloat16 row works on whole zmm registers: blocks of 32 or 16 channels. */
static inline ConvBlocks conv_blocks_bf16(int channels)
{
  return blocks_of(channels, 32, 16);
}

static inline int block_width(const ConvBlocks *b, int i)
{
  return i == b->n_blocks - 1 ? b->last_width : b->max_block;
}

static inline int block_channels(const ConvBlocks *b, int i)
{
  return i == b->n_blocks - 1 ? b->channels - i * b->max_block : b->max_block;
}

/* A thread's buffers: packed weights; the bfloat16 copy of a pass's input (channel pairs); x as
 * the pixel pairs of the bfloat16 weight gradient. */
enum { BUFFER_WEIGHTS, BUFFER_BF16_INPUT, BUFFER_BF16_PAIRS, N_BUFFERS };

/* One of the calling thread's buffers (BUFFER_*), of at least `floats` floats. */
float *conv_pack_buffer(int which, size_t floats);

/* Weights as the row kernels read them: per output-channel block (block_step apart), taps x n_in
 * rows of the block's width, zero-padded; then the bias, max_block floats per block. With pairs
 * (one block of at most 8 channels, ConvKernels.forward_row_pairs): taps x ceil(n_in / 2) x 16,
 * input channels 2j and 2j + 1 interleaved. bf16: taps x ceil(n_in / 2) rows of the block's
 * width in 32-bit words, each the bfloat16 of input channels 2j (low half) and 2j + 1. Direct:
 * the caller's HWIO weights and bias as they are, rows cout apart, when every block is full (a
 * forward pass with a bias needs no copy then; the transposed backward-input pass has none). */
typedef struct {
  const float *data;
  const float *bias;
  size_t block_step;
  int n_in, cout;
  int pairs, bf16, direct;
} PackedWeights;

/* Input rows of a tap: channels, or channel pairs. */
static inline int packed_rows(const PackedWeights *p)
{
  return p->pairs || p->bf16 ? (p->n_in + 1) / 2 : p->n_in;
}

/* Floats (words) from one packed row of weights to the next, and from one tap's to the next. */
static inline ptrdiff_t packed_row_step(const PackedWeights *p, const ConvBlocks *blocks,
                                        int block)
{
  return p->direct ? p->cout : p->pairs ? 16 : block_width(blocks, block);
}

static inline size_t packed_tap_floats(const PackedWeights *p, const ConvBlocks *blocks,
                                       int block)
{
  return (size_t)packed_rows(p) * packed_row_step(p, blocks, block);
}

typedef struct {
  const ConvGeometry *g;
  const float *w, *bias;
  int transpose; /* the backward-input pass: HWIO's in and out channels swap roles */
  const ConvBlocks *blocks;
  PackedWeights packed;
  float *data, *packed_bias;
} PackJob;

/* Plans the packing of the weights of a pass (nothing to do when direct) into the calling thread's
 * pack buffer; conv_pack_task_count tasks of conv_pack_task then fill it. transpose: the
 * backward-input pass, whose weights swap input and output channels. */
PackJob conv_plan_pack(const ConvGeometry *g, const float *w, const float *bias, int transpose,
                       const ConvBlocks *blocks, int pairs, int bf16);
int conv_pack_task_count(const PackJob *job);
/* One tap of one block: task index = block * taps + tap (a ThreadPoolTask over a PackJob). */
void conv_pack_task(void *ctx, int index, int thread);
/* All the pack tasks, on the pool when there are enough floats to pack. */
void conv_run_pack(PackJob *job, ThreadPool *pool);

static inline int use_pairs(const ConvKernels *k, int out_channels)
{
  return k->forward_row_pairs && out_channels <= 8;
}

/* x as channel pairs of bfloat16 in the calling thread's buffer, viewed as a map of 32-bit words
 * (c = ld = ceil(x->c / 2)) that the passes read like any other. Rows are converted later, by
 * conv_bf16_convert_row, so that a pass can convert each row where it is already in cache. */
FeatureMap conv_bf16_view(const FeatureMap *x);
void conv_bf16_convert_row(const FeatureMap *x, const FeatureMap *view, int r);
