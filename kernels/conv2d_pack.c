/* conv2d_pack.c: the packing of convolution weights and inputs (conv2d_pack.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "conv2d_pack.h"

typedef struct {
  float *data;
  size_t floats;
} PackBuffer;

static pthread_key_t pack_key;
static pthread_once_t pack_once = PTHREAD_ONCE_INIT;

static void pack_buffer_free(void *p)
{
  PackBuffer *b = p;
  for (int i = 0; i < N_BUFFERS; i++)
    free(b[i].data);
  free(b);
}

static void pack_key_create(void)
{
  pthread_key_create(&pack_key, pack_buffer_free);
}

float *conv_pack_buffer(int which, size_t floats)
{
  pthread_once(&pack_once, pack_key_create);
  PackBuffer *buffers = pthread_getspecific(pack_key);
  if (!buffers) {
    buffers = calloc(N_BUFFERS, sizeof *buffers);
    pthread_setspecific(pack_key, buffers);
  }
  PackBuffer *b = &buffers[which];
  if (b->floats < floats) {
    free(b->data);
    b->data = aligned_alloc(64, (floats * sizeof(float) + 63) & ~(size_t)63);
    b->floats = floats;
  }
  return b->data;
}

/* Pairs: lane 2 * o + e of row r holds input channel 2r + e of output channel o. */
static void pack_pairs_tap(const PackJob *job, const float *src, float *dst, int channels)
{
  const ConvGeometry *g = job->g;
  int n_in = job->packed.n_in;
  for (int r = 0; r < (n_in + 1) / 2; r++, dst += 16)
    for (int lane = 0; lane < 16; lane++) {
      int i = 2 * r + lane % 2, o = lane / 2;
      size_t at = job->transpose ? (size_t)o * g->cout + i : (size_t)i * g->cout + o;
      dst[lane] = i < n_in && o < channels ? src[at] : 0.0f;
    }
}

static uint32_t bf16_bits(float f)
{
  uint32_t u;
  f = bf16_round(f);
  memcpy(&u, &f, sizeof u);
  return u >> 16;
}

/* bf16: word lane of row r holds input channels 2r (low half) and 2r + 1 of output channel
 * first + lane. */
static void pack_bf16_tap(const PackJob *job, const float *src, uint32_t *dst, int channels,
                          int width, int first)
{
  const ConvGeometry *g = job->g;
  int n_in = job->packed.n_in;
  for (int r = 0; r < (n_in + 1) / 2; r++, dst += width)
    for (int lane = 0; lane < width; lane++) {
      uint32_t word = 0;
      for (int e = 0; e < 2 && lane < channels; e++) {
        int i = 2 * r + e, o = first + lane;
        size_t at = job->transpose ? (size_t)o * g->cout + i : (size_t)i * g->cout + o;
        word |= i < n_in ? bf16_bits(src[at]) << (16 * e) : 0;
      }
      dst[lane] = word;
    }
}

void conv_pack_task(void *ctx, int index, int thread)
{
  const PackJob *job = ctx;
  const ConvGeometry *g = job->g;
  int taps = g->kh * g->kw, b = index / taps, t = index % taps;
  int channels = block_channels(job->blocks, b), first = b * job->blocks->max_block;
  int width = block_width(job->blocks, b), n_in = job->packed.n_in;
  const float *src = job->w + (size_t)t * g->cin * g->cout;
  float *dst = job->data + b * job->packed.block_step +
               t * packed_tap_floats(&job->packed, job->blocks, b);
  if (job->packed.bf16) {
    pack_bf16_tap(job, src, (uint32_t *)dst, channels, width, first);
  } else if (job->packed.pairs) {
    pack_pairs_tap(job, src + (job->transpose ? (size_t)first * g->cout : (size_t)first), dst,
                   channels);
  } else if (job->transpose) {
    /* dst[r][lane] = w[t][first + lane][r]: read along HWIO rows, write down the columns. */
    for (int lane = 0; lane < channels; lane++) {
      const float *s = src + (size_t)(first + lane) * g->cout;
      for (int r = 0; r < n_in; r++)
        dst[(size_t)r * width + lane] = s[r];
    }
    for (int r = 0; channels < width && r < n_in; r++)
      memset(dst + (size_t)r * width + channels, 0, sizeof(float) * (width - channels));
  } else {
    for (int r = 0; r < n_in; r++, dst += width) {
      memcpy(dst, src + (size_t)r * g->cout + first, sizeof(float) * channels);
      memset(dst + channels, 0, sizeof(float) * (width - channels));
    }
  }
  if (t == 0) {
    float *db = job->packed_bias + first;
    for (int o = 0; o < job->blocks->max_block; o++)
      db[o] = job->bias && o < channels ? job->bias[first + o] : 0.0f;
  }
}

PackJob conv_plan_pack(const ConvGeometry *g, const float *w, const float *bias, int transpose,
                         const ConvBlocks *blocks, int pairs, int bf16)
{
  int taps = g->kh * g->kw;
  PackJob job = { .g = g, .w = w, .bias = bias, .transpose = transpose, .blocks = blocks };
  PackedWeights *p = &job.packed;
  *p = (PackedWeights){ .n_in = transpose ? g->cout : g->cin, .cout = g->cout, .pairs = pairs,
                        .bf16 = bf16 };
  int last = blocks->n_blocks - 1;
  int full = block_channels(blocks, last) == block_width(blocks, last);
  if (!pairs && !bf16 && !transpose && bias && full) {
    p->direct = 1;
    p->data = w;
    p->bias = bias;
    p->block_step = blocks->max_block;
    return job;
  }
  p->block_step = pairs ? packed_tap_floats(p, blocks, 0) * taps
                        : (size_t)taps * packed_rows(p) * blocks->max_block;
  size_t weight_floats = p->block_step * blocks->n_blocks;
  job.data =
    conv_pack_buffer(BUFFER_WEIGHTS, weight_floats + (size_t)blocks->n_blocks * blocks->max_block);
  job.packed_bias = job.data + weight_floats;
  p->data = job.data;
  p->bias = job.packed_bias;
  return job;
}

int conv_pack_task_count(const PackJob *job)
{
  return job->packed.direct ? 0 : job->blocks->n_blocks * job->g->kh * job->g->kw;
}

/* Below this many floats, packing on the caller's thread costs less than waking the pool. */
#define PACK_PARALLEL_FLOATS 16384

void conv_run_pack(PackJob *job, ThreadPool *pool)
{
  size_t floats = job->packed.block_step * job->blocks->n_blocks;
  thread_pool_run(floats >= PACK_PARALLEL_FLOATS ? pool : NULL, conv_pack_task_count(job),
                  conv_pack_task, job);
}

FeatureMap conv_bf16_view(const FeatureMap *x)
{
  int words = (x->c + 1) / 2;
  float *data = conv_pack_buffer(BUFFER_BF16_INPUT, (size_t)x->h * x->w * words);
  return (FeatureMap){ data, x->h, x->w, words, words };
}

void conv_bf16_convert_row(const FeatureMap *x, const FeatureMap *view, int r)
{
  conv_kernels_bf16.to_pairs_row(feature_map_at(x, r, 0), x->ld, x->w, x->c,
                                 (uint32_t *)feature_map_at(view, r, 0));
}
