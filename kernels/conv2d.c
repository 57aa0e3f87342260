/* conv2d.c: public convolution entry points, forward and backward, over the ISA's row kernels.
 *
 * Every pass is one row loop split over the thread pool, one output row per task:
 * - forward: output (r, j) reads input (r * stride + ky - pad_h, j * stride + kx - pad_w);
 * - backward input: dx is cut into stride x stride phases (pixels (i * s + a, j * s + b)); each
 *   phase is a stride-1 convolution of dy with the taps that reach it, the weights transposed
 *   (in <-> out), written to every s-th pixel. Stride 1 is the single phase (a, b) = (0, 0);
 * - backward weights: the forward pass's geometry; each row adds x (taps x cin) times dy (cout)
 *   into a per-thread partial, summed into dw by parallel reduction tasks.
 * Input rows are read in place. Only the pixels whose taps reach past the left or right edge
 * (the first and last EDGE_PIXELS of a wide row, or all of a narrow one) read zero-padded copies
 * in per-thread scratch, so the kernels never test bounds; rows above or below the input drop
 * their taps. The forward pass reads the caller's HWIO weights as they are when every output-
 * channel block is full; other passes pack them, in parallel.
 *
 * conv2d_backward is the training path: pool run 1 takes each dy row back through the ReLU and
 * into the bias sums (bias_row) just before its weight-gradient row reads it, beside the tasks
 * that pack the transposed weights; run 2 reduces the weight-gradient partials beside the
 * input-gradient rows. Two pool runs per layer, no separate ReLU or packing pass.
 *
 * The bfloat16 passes (conv2d_bf16.c) reuse all of this: a map of channel pairs in bfloat16 is a
 * map of 32-bit words with half the channels, which the row machinery reads like any other; the
 * weights are packed as pairs. The weight gradient pairs pixels instead: dy's rows as they become
 * final in run 1, and x once per call into an array of pixel pairs that every tap reads.
 *
 * Measured with distill-bench-conv (best of 3 runs, AVX-512, 640x360 layers) on the 2-core EPYC
 * (Zen 5) while it was shared, at about half its uncontended rate (110-120 GFLOP/s per core on
 * the dense layers instead of about 210): every convolution of the student on one thread,
 * forward 26.4 ms (101 GFLOP/s), backward input 31.8 ms, backward weights 31.4 ms; head.0 forward
 * 10.3 ms (103 GFLOP/s). OpenBLAS 0.3.21 sgemm (single-threaded, per-tap GEMMs over shifted
 * inputs; 1x1 layers one GEMM) on the stride-1 layers, one thread: 1.05-1.45x the direct time on
 * every layer of 32 to 192 channels (head.0 forward 12.5 ms, weight gradient 30.4 ms against
 * 14.6), 2.6-4x on head.1 (8 output channels), and only the 8-to-2 classifier's weight gradient
 * faster (0.06 ms against 0.11 ms, 0.03 ms of a train step). So no GEMM path is used. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "conv2d_impl.h"

static const ConvKernels *conv_kernels(void)
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

/* ---- output-channel blocks and packed weights ------------------------------------------------ */

/* Full blocks of max_block channels, the last one narrowed to the smallest power-of-two width
 * (>= min_block) that holds the rest. */
typedef struct {
  int channels, n_blocks, max_block, last_width;
} ConvBlocks;

static ConvBlocks blocks_of(int channels, int max_block, int min_block)
{
  ConvBlocks b = { channels, (channels + max_block - 1) / max_block, max_block, 0 };
  int rest = channels - (b.n_blocks - 1) * max_block;
  for (b.last_width = min_block; b.last_width < rest; b.last_width *= 2)
    ;
  return b;
}

static ConvBlocks conv_blocks(int channels, const ConvKernels *k)
{
  return blocks_of(channels, k->max_block, k->min_block);
}

/* The bfloat16 row works on whole zmm registers: blocks of 32 or 16 channels. */
static ConvBlocks conv_blocks_bf16(int channels)
{
  return blocks_of(channels, 32, 16);
}

static int block_width(const ConvBlocks *b, int i)
{
  return i == b->n_blocks - 1 ? b->last_width : b->max_block;
}

static int block_channels(const ConvBlocks *b, int i)
{
  return i == b->n_blocks - 1 ? b->channels - i * b->max_block : b->max_block;
}

typedef struct {
  float *data;
  size_t floats;
} PackBuffer;

/* A thread's buffers: packed weights; the bfloat16 copy of a pass's input (channel pairs); x as
 * the pixel pairs of the bfloat16 weight gradient. */
enum { BUFFER_WEIGHTS, BUFFER_BF16_INPUT, BUFFER_BF16_PAIRS, N_BUFFERS };

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

/* One of the calling thread's buffers, grown on demand and kept: training steps repack every
 * layer each time, and allocate nothing once warm. */
static float *pack_buffer(int which, size_t floats)
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
static int packed_rows(const PackedWeights *p)
{
  return p->pairs || p->bf16 ? (p->n_in + 1) / 2 : p->n_in;
}

/* Floats (words) from one packed row of weights to the next, and from one tap's to the next. */
static ptrdiff_t packed_row_step(const PackedWeights *p, const ConvBlocks *blocks, int block)
{
  return p->direct ? p->cout : p->pairs ? 16 : block_width(blocks, block);
}

static size_t packed_tap_floats(const PackedWeights *p, const ConvBlocks *blocks, int block)
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

/* One tap of one block: task index = block * taps + tap. */
static void pack_task(void *ctx, int index, int thread)
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

/* Plans the packing of the weights of a pass (nothing to do when direct) into the calling thread's
 * pack buffer; pack_task_count tasks of pack_task then fill it. */
static PackJob plan_pack(const ConvGeometry *g, const float *w, const float *bias, int transpose,
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
    pack_buffer(BUFFER_WEIGHTS, weight_floats + (size_t)blocks->n_blocks * blocks->max_block);
  job.packed_bias = job.data + weight_floats;
  p->data = job.data;
  p->bias = job.packed_bias;
  return job;
}

static int pack_task_count(const PackJob *job)
{
  return job->packed.direct ? 0 : job->blocks->n_blocks * job->g->kh * job->g->kw;
}

/* Below this many floats, packing on the caller's thread costs less than waking the pool. */
#define PACK_PARALLEL_FLOATS 16384

static void run_pack(PackJob *job, ThreadPool *pool)
{
  size_t floats = job->packed.block_step * job->blocks->n_blocks;
  thread_pool_run(floats >= PACK_PARALLEL_FLOATS ? pool : NULL, pack_task_count(job), pack_task,
                  job);
}

static int use_pairs(const ConvKernels *k, int out_channels)
{
  return k->forward_row_pairs && out_channels <= 8;
}

/* ---- passes ---------------------------------------------------------------------------------- */

typedef struct {
  int dr, dc; /* output (r, j) reads input (r * in_mul + dr, j * in_mul + dc) */
  int weight_tap;
} ConvTap;

/* Where a pass reads its input rows. */
typedef enum {
  ROWS_IN_PLACE, /* no tap reaches past the left or right edge */
  ROWS_EDGES,    /* in place, but the first and last few pixels read small zero-padded copies */
  ROWS_COPIED,   /* whole rows copied, zero-padded and compact (ld = c) */
} RowSource;

/* Wide rows copy only their edges: copying the whole row once per tap row costs a few percent of
 * a layer; an edge range of EDGE_PIXELS keeps the kernel's tiles wide enough to be efficient. */
#define EDGE_PIXELS 8
#define EDGE_MIN_PIXELS 24

typedef struct {
  const FeatureMap *in;
  int in_mul;
  int n_taps;
  ConvTap taps[CONV_MAX_TAPS];
  int dr_lo, n_slots; /* input rows r * in_mul + dr_lo + slot, slot < n_slots */
  int dc_lo, dc_hi;   /* output pixel j reads input columns j * in_mul + [dc_lo, dc_hi] */
  RowSource source;
  int left, right;    /* ROWS_EDGES: pixels [0, left) and [right, out_w) read copies */
  int out_h, out_w;
  float *out;
  ptrdiff_t out_row_step, out_col_step;
  const float *residual;
  ptrdiff_t residual_row_step, residual_col_step;
} ConvPass;

static void pass_forward_taps(ConvPass *ps, const ConvGeometry *g, const FeatureMap *x, int out_h,
                              int out_w)
{
  memset(ps, 0, sizeof *ps);
  ps->in = x;
  ps->in_mul = g->stride;
  ps->out_h = out_h;
  ps->out_w = out_w;
  for (int ky = 0; ky < g->kh; ky++)
    for (int kx = 0; kx < g->kw; kx++)
      ps->taps[ps->n_taps++] = (ConvTap){ ky - g->pad_h, kx - g->pad_w, ky * g->kw + kx };
}

/* Rows and columns the taps read, and where they come from; compact: rows whose ld exceeds c are
 * copied (the weight gradient reads the kw x cin inputs of a kernel row as one run). */
static void pass_finish(ConvPass *ps, int compact)
{
  if (ps->n_taps == 0)
    return;
  int dr_lo = ps->taps[0].dr, dr_hi = dr_lo, dc_lo = ps->taps[0].dc, dc_hi = dc_lo;
  for (int t = 1; t < ps->n_taps; t++) {
    const ConvTap *tap = &ps->taps[t];
    dr_lo = tap->dr < dr_lo ? tap->dr : dr_lo;
    dr_hi = tap->dr > dr_hi ? tap->dr : dr_hi;
    dc_lo = tap->dc < dc_lo ? tap->dc : dc_lo;
    dc_hi = tap->dc > dc_hi ? tap->dc : dc_hi;
  }
  ps->dr_lo = dr_lo;
  ps->n_slots = dr_hi - dr_lo + 1;
  ps->dc_lo = dc_lo;
  ps->dc_hi = dc_hi;
  /* Pixels [inner_lo, inner_hi) read only columns inside the map. */
  int m = ps->in_mul, last = ps->in->w - 1 - dc_hi;
  int inner_lo = dc_lo < 0 ? (-dc_lo + m - 1) / m : 0;
  int inner_hi = last < 0 ? 0 : last / m + 1;
  inner_hi = inner_hi < ps->out_w ? inner_hi : ps->out_w;
  ps->left = inner_lo > EDGE_PIXELS ? inner_lo : inner_lo ? EDGE_PIXELS : 0;
  ps->right = inner_hi >= ps->out_w ? ps->out_w
              : inner_hi < ps->out_w - EDGE_PIXELS ? inner_hi : ps->out_w - EDGE_PIXELS;
  if (compact && ps->in->ld != ps->in->c)
    ps->source = ROWS_COPIED;
  else if (inner_lo == 0 && inner_hi == ps->out_w)
    ps->source = ROWS_IN_PLACE;
  else if (ps->out_w >= EDGE_MIN_PIXELS && ps->left < ps->right)
    ps->source = ROWS_EDGES;
  else
    ps->source = ROWS_COPIED;
}

/* Input columns read by pixels [p0, p1). */
static int pass_columns(const ConvPass *ps, int p0, int p1)
{
  return (p1 - 1 - p0) * ps->in_mul + ps->dc_hi - ps->dc_lo + 1;
}

static size_t pass_scratch_floats(const ConvPass *ps)
{
  int cols = 0;
  if (ps->source == ROWS_COPIED) {
    cols = pass_columns(ps, 0, ps->out_w);
  } else if (ps->source == ROWS_EDGES) {
    int left = ps->left ? pass_columns(ps, 0, ps->left) : 0;
    int right = ps->right < ps->out_w ? pass_columns(ps, ps->right, ps->out_w) : 0;
    cols = left > right ? left : right;
  }
  return (size_t)ps->n_slots * cols * ps->in->c;
}

/* A run of output pixels and whether its input rows are copied. */
typedef struct {
  int p0, p1, copy;
} PixelRange;

static int pass_ranges(const ConvPass *ps, PixelRange ranges[3])
{
  int n = 0;
  switch (ps->source) {
  case ROWS_IN_PLACE:
  case ROWS_COPIED:
    ranges[n++] = (PixelRange){ 0, ps->out_w, ps->source == ROWS_COPIED };
    break;
  case ROWS_EDGES:
    if (ps->left > 0)
      ranges[n++] = (PixelRange){ 0, ps->left, 1 };
    ranges[n++] = (PixelRange){ ps->left, ps->right, 0 };
    if (ps->right < ps->out_w)
      ranges[n++] = (PixelRange){ ps->right, ps->out_w, 1 };
    break;
  }
  return n;
}

/* Input columns [col_lo, col_lo + n) of row y, zero outside the map, channels packed. */
static void copy_padded_row(const FeatureMap *in, int y, int col_lo, int n, float *dst)
{
  int c = in->c;
  int first = col_lo < 0 ? -col_lo : 0;
  int end = in->w - col_lo < n ? in->w - col_lo : n;
  first = first < n ? first : n;
  end = end > first ? end : first;
  memset(dst, 0, sizeof(float) * first * c);
  if (in->ld == c)
    memcpy(dst + (size_t)first * c, feature_map_at(in, y, col_lo + first),
           sizeof(float) * (end - first) * c);
  else
    for (int i = first; i < end; i++)
      memcpy(dst + (size_t)i * c, feature_map_at(in, y, col_lo + i), sizeof(float) * c);
  memset(dst + (size_t)end * c, 0, sizeof(float) * (n - end) * c);
}

/* The input rows of output row r for pixels of range: column col of slot s is at
 * rows[s] + (col - col0) * ld; rows[s] is NULL where the row lies outside the input. */
typedef struct {
  const float *rows[CONV_MAX_TAPS];
  ptrdiff_t ld;
  int col0;
} PassRows;

static void pass_rows(const ConvPass *ps, int r, const PixelRange *range, float *scratch,
                      PassRows *pr)
{
  const FeatureMap *in = ps->in;
  int col_lo = range->p0 * ps->in_mul + ps->dc_lo;
  int n = pass_columns(ps, range->p0, range->p1);
  for (int s = 0; s < ps->n_slots; s++) {
    int y = r * ps->in_mul + ps->dr_lo + s;
    if (y < 0 || y >= in->h) {
      pr->rows[s] = NULL;
    } else if (range->copy) {
      float *dst = scratch + (size_t)s * n * in->c;
      copy_padded_row(in, y, col_lo, n, dst);
      pr->rows[s] = dst;
    } else {
      pr->rows[s] = feature_map_at(in, y, 0);
    }
  }
  pr->ld = range->copy ? in->c : in->ld;
  pr->col0 = range->copy ? col_lo : 0;
}

/* ---- forward-style passes (forward, backward input) ----------------------------------------- */

typedef struct {
  const ConvKernels *kernels;
  ThreadPool *pool;
  const ConvPass *passes;
  int first_row[5]; /* task index where each pass starts; one more than there are passes */
  int n_passes;
  ConvBlocks blocks;
  PackedWeights weights;
  int relu;
  int bf16;              /* rows read channel pairs in bfloat16 (ConvBf16Kernels) */
  size_t scratch_offset; /* row copies start here in a thread's scratch ... */
  size_t scratch_floats; /* ... of this size */
} ConvRun;

static const ConvPass *run_row(const ConvRun *run, int index, int *r)
{
  int p = 0;
  while (index >= run->first_row[p + 1])
    p++;
  *r = index - run->first_row[p];
  return &run->passes[p];
}

static void forward_range(const ConvRun *run, const ConvPass *ps, int r, const PassRows *pr,
                          int p0, int p1)
{
  ConvRowJob job = {
    .in_step = (ptrdiff_t)ps->in_mul * pr->ld,
    .cin = run->bf16 ? packed_rows(&run->weights) : run->weights.n_in,
    .out_step = ps->out_col_step,
    .residual_step = ps->residual_col_step,
    .relu = run->relu,
    .pixels = p1 - p0,
  };
  int weight_tap[CONV_MAX_TAPS];
  for (int t = 0; t < ps->n_taps; t++) {
    const ConvTap *tap = &ps->taps[t];
    const float *row = pr->rows[tap->dr - ps->dr_lo];
    if (!row)
      continue;
    job.in[job.n_taps] = row + ((ptrdiff_t)p0 * ps->in_mul + tap->dc - pr->col0) * pr->ld;
    weight_tap[job.n_taps++] = tap->weight_tap;
  }
  float *out = ps->out + r * ps->out_row_step + p0 * ps->out_col_step;
  const float *residual =
    ps->residual ? ps->residual + r * ps->residual_row_step + p0 * ps->residual_col_step : NULL;
  for (int b = 0; b < run->blocks.n_blocks; b++) {
    int first = b * run->blocks.max_block;
    job.block_width = block_width(&run->blocks, b);
    job.channels = block_channels(&run->blocks, b);
    const float *w = run->weights.data + b * run->weights.block_step;
    size_t tap_floats = packed_tap_floats(&run->weights, &run->blocks, b);
    job.w_step = packed_row_step(&run->weights, &run->blocks, b);
    for (int t = 0; t < job.n_taps; t++)
      job.w[t] = w + weight_tap[t] * tap_floats;
    job.bias = run->weights.bias + first;
    job.out = out + first;
    job.residual = residual ? residual + first : NULL;
    if (run->bf16)
      conv_kernels_bf16.forward_row(&job);
    else if (run->weights.pairs)
      run->kernels->forward_row_pairs(&job);
    else
      run->kernels->forward_row(&job);
  }
}

static void forward_row_task(void *ctx, int index, int thread)
{
  const ConvRun *run = ctx;
  int r;
  const ConvPass *ps = run_row(run, index, &r);
  float *scratch =
    thread_pool_scratch(run->pool, thread, run->scratch_floats) + run->scratch_offset;
  PixelRange ranges[3];
  int n = pass_ranges(ps, ranges);
  for (int i = 0; i < n; i++) {
    PassRows pr;
    pass_rows(ps, r, &ranges[i], scratch, &pr);
    forward_range(run, ps, r, &pr, ranges[i].p0, ranges[i].p1);
  }
}

/* Task indices and scratch of the passes; returns the tasks (rows of every pass). */
static int plan_forward_passes(ConvRun *run)
{
  run->first_row[0] = 0;
  size_t scratch = 0;
  for (int p = 0; p < run->n_passes; p++) {
    run->first_row[p + 1] = run->first_row[p] + run->passes[p].out_h;
    size_t floats = pass_scratch_floats(&run->passes[p]);
    scratch = floats > scratch ? floats : scratch;
  }
  run->scratch_floats = run->scratch_offset + scratch;
  return run->first_row[run->n_passes];
}

/* ---- bfloat16 copies of pass inputs ----------------------------------------------------------- */

/* x as channel pairs of bfloat16 in the calling thread's buffer, viewed as a map of 32-bit words
 * (c = ld = ceil(x->c / 2)) that the passes read like any other. Rows are converted later, by
 * convert_row, so that a pass can convert each row where it is already in cache. */
static FeatureMap bf16_view(const FeatureMap *x)
{
  int words = (x->c + 1) / 2;
  float *data = pack_buffer(BUFFER_BF16_INPUT, (size_t)x->h * x->w * words);
  return (FeatureMap){ data, x->h, x->w, words, words };
}

static void convert_row(const FeatureMap *x, const FeatureMap *view, int r)
{
  conv_kernels_bf16.to_pairs_row(feature_map_at(x, r, 0), x->ld, x->w, x->c,
                                 (uint32_t *)feature_map_at(view, r, 0));
}

typedef struct {
  const FeatureMap *x, *view;
} ConvertJob;

static void convert_task(void *ctx, int r, int thread)
{
  (void)thread;
  const ConvertJob *job = ctx;
  convert_row(job->x, job->view, r);
}

static void forward_pass(const ConvGeometry *g, const FeatureMap *x, const float *w,
                         const float *bias, const FeatureMap *residual, int relu, FeatureMap *y,
                         ThreadPool *pool, int bf16)
{
  const ConvKernels *k = conv_kernels();
  FeatureMap view;
  if (bf16) {
    view = bf16_view(x);
    ConvertJob convert = { x, &view };
    thread_pool_run(pool, x->h, convert_task, &convert);
    x = &view;
  }
  ConvPass pass;
  pass_forward_taps(&pass, g, x, y->h, y->w);
  pass.out = y->data;
  pass.out_row_step = (ptrdiff_t)y->w * y->ld;
  pass.out_col_step = y->ld;
  if (residual) {
    pass.residual = residual->data;
    pass.residual_row_step = (ptrdiff_t)residual->w * residual->ld;
    pass.residual_col_step = residual->ld;
  }
  pass_finish(&pass, 0);

  ConvRun run = { .kernels = k, .pool = pool, .passes = &pass, .n_passes = 1, .relu = relu,
                  .bf16 = bf16 };
  run.blocks = bf16 ? conv_blocks_bf16(g->cout) : conv_blocks(g->cout, k);
  PackJob pack = plan_pack(g, w, bias, 0, &run.blocks, !bf16 && use_pairs(k, g->cout), bf16);
  run_pack(&pack, pool);
  run.weights = pack.packed;
  thread_pool_run(pool, plan_forward_passes(&run), forward_row_task, &run);
}

void conv2d_forward(const ConvGeometry *g, const FeatureMap *x, const float *w, const float *bias,
                    const FeatureMap *residual, int relu, FeatureMap *y, ThreadPool *pool)
{
  if (!conv_kernels() || g->kh * g->kw > CONV_MAX_TAPS) {
    conv2d_forward_ref(g, x, w, bias, residual, relu, y);
    return;
  }
  if (y->h <= 0 || y->w <= 0 || g->cout <= 0)
    return;
  forward_pass(g, x, w, bias, residual, relu, y, pool, 0);
}

void conv2d_forward_bf16(const ConvGeometry *g, const FeatureMap *x, const float *w,
                         const float *bias, const FeatureMap *residual, int relu, FeatureMap *y,
                         ThreadPool *pool)
{
  if (!kernels_have_bf16() || g->kh * g->kw > CONV_MAX_TAPS) {
    conv2d_forward_bf16_ref(g, x, w, bias, residual, relu, y);
    return;
  }
  if (y->h <= 0 || y->w <= 0 || g->cout <= 0)
    return;
  forward_pass(g, x, w, bias, residual, relu, y, pool, 1);
}

/* Phase (a, b) of dx: pixels (i * s + a, j * s + b), fed by the taps with ky = a + pad_h (mod s)
 * and kx = b + pad_w (mod s) from dy pixel (i + (a + pad_h - ky) / s, ...). */
static void pass_backward_phase(ConvPass *ps, const ConvGeometry *g, const FeatureMap *dy,
                                FeatureMap *dx, int a, int b, int accumulate)
{
  int s = g->stride;
  memset(ps, 0, sizeof *ps);
  ps->in = dy;
  ps->in_mul = 1;
  ps->out_h = (dx->h - a + s - 1) / s;
  ps->out_w = (dx->w - b + s - 1) / s;
  for (int ky = 0; ky < g->kh; ky++)
    for (int kx = 0; kx < g->kw; kx++) {
      int row = a + g->pad_h - ky, col = b + g->pad_w - kx;
      if (row % s == 0 && col % s == 0)
        ps->taps[ps->n_taps++] = (ConvTap){ row / s, col / s, ky * g->kw + kx };
    }
  if (ps->out_h > 0 && ps->out_w > 0)
    ps->out = feature_map_at(dx, a, b);
  ps->out_row_step = (ptrdiff_t)s * dx->w * dx->ld;
  ps->out_col_step = (ptrdiff_t)s * dx->ld;
  if (accumulate) {
    ps->residual = ps->out;
    ps->residual_row_step = ps->out_row_step;
    ps->residual_col_step = ps->out_col_step;
  }
  pass_finish(ps, 0);
}

/* The passes of the input gradient (stride x stride phases) and the plan of their weights. */
static void plan_backward_input(ConvRun *run, ConvPass passes[4], PackJob *pack,
                                const ConvGeometry *g, const FeatureMap *dy, const float *w,
                                FeatureMap *dx, int accumulate)
{
  int bf16 = run->bf16;
  run->passes = passes;
  for (int a = 0; a < g->stride; a++)
    for (int b = 0; b < g->stride; b++) {
      ConvPass *ps = &passes[run->n_passes];
      pass_backward_phase(ps, g, dy, dx, a, b, accumulate);
      if (ps->out_h > 0 && ps->out_w > 0)
        run->n_passes++;
    }
  run->blocks = bf16 ? conv_blocks_bf16(g->cin) : conv_blocks(g->cin, run->kernels);
  *pack = plan_pack(g, w, NULL, 1, &run->blocks, !bf16 && use_pairs(run->kernels, g->cin), bf16);
  run->weights = pack->packed;
}

void conv2d_backward_input(const ConvGeometry *g, const FeatureMap *dy, const float *w,
                           FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  const ConvKernels *k = conv_kernels();
  if (!k || g->kh * g->kw > CONV_MAX_TAPS || g->stride > 2) {
    conv2d_backward_input_ref(g, dy, w, dx, accumulate);
    return;
  }
  if (dx->h <= 0 || dx->w <= 0 || g->cin <= 0)
    return;
  ConvPass passes[4];
  ConvRun run = { .kernels = k, .pool = pool };
  PackJob pack;
  plan_backward_input(&run, passes, &pack, g, dy, w, dx, accumulate);
  run_pack(&pack, pool);
  thread_pool_run(pool, plan_forward_passes(&run), forward_row_task, &run);
}

/* ---- backward weights ------------------------------------------------------------------------ */

typedef struct {
  const ConvKernels *kernels;
  ThreadPool *pool;
  const ConvGeometry *g;
  const ConvPass *pass;
  const FeatureMap *relu_y; /* NULL = no ReLU to go back through */
  const FeatureMap *dy;
  const FeatureMap *bf16_dy; /* NULL, or where each row of dy goes in bfloat16 once final */
  int bf16;                  /* bfloat16 products, over pixel pairs (weights_row_bf16) */
  int pairs;                 /* bf16: output pixel pairs of a row */
  const uint32_t *x_pairs;   /* bf16: x as pixel pairs, see plan_x_pairs */
  int x_pairs_w;             /* bf16: words per row of x_pairs, in units of cin */
  int sum_bias;
  ConvBlocks blocks;
  int narrow;            /* ConvKernels.weights_row_narrow: kh x 8 x narrow_ld, co-major */
  int narrow_ld;         /* kw * cin rounded up to 16 */
  size_t block_floats;   /* per block of a partial: taps x cin x width */
  size_t partial_floats; /* the blocks, then cout sums of dy; rounded up to a cache line */
  size_t scratch_floats; /* partial, then the copied rows */
  unsigned char *started; /* per thread: its partial is zeroed and holds sums */
  int reduce_tasks;
  float *dw, *dbias;
} WeightsRun;

static void weights_range(const WeightsRun *run, int r, const PassRows *pr, int p0, int p1,
                          float *partial)
{
  const ConvPass *ps = run->pass;
  const ConvGeometry *g = run->g;
  /* The kw x cin inputs of a kernel row are one contiguous run (rows are compact whenever
   * kw > 1), as are their gradients in HWIO order. */
  ConvWeightsJob job = {
    .in_step = (ptrdiff_t)ps->in_mul * pr->ld,
    .rows = g->kw * g->cin,
    .dy = feature_map_at(run->dy, r, p0),
    .dy_step = run->dy->ld,
    .pixels = p1 - p0,
  };
  const float *dy = job.dy;
  for (int ky = 0; ky < g->kh; ky++) {
    const float *row = pr->rows[ky - g->pad_h - ps->dr_lo];
    if (!row)
      continue;
    job.in = row + ((ptrdiff_t)p0 * ps->in_mul + ps->dc_lo - pr->col0) * pr->ld;
    for (int b = 0; b < run->blocks.n_blocks; b++) {
      job.block_width = block_width(&run->blocks, b);
      job.channels = block_channels(&run->blocks, b);
      job.dy = dy + b * run->blocks.max_block;
      if (run->narrow) {
        job.block_width = run->narrow_ld;
        job.dw = partial + (size_t)ky * 8 * run->narrow_ld;
        run->kernels->weights_row_narrow(&job);
      } else {
        job.dw = partial + b * run->block_floats + (size_t)ky * job.rows * job.block_width;
        run->kernels->weights_row(&job);
      }
    }
  }
}

/* The bfloat16 weight gradient of output row r: dy's row as pixel pairs in scratch (after the
 * partial), then one weight-gradient row per tap, reading x_pairs. */
static void weights_row_bf16(const WeightsRun *run, int r, float *partial)
{
  const ConvGeometry *g = run->g;
  const FeatureMap *dy = run->dy;
  int pairs = run->pairs, s = g->stride;
  uint32_t *dy_pairs = (uint32_t *)(partial + run->partial_floats);
  for (int q = 0; q < pairs; q++)
    conv_kernels_bf16.pair_pixels(feature_map_at(dy, r, 2 * q),
                                  2 * q + 1 < dy->w ? feature_map_at(dy, r, 2 * q + 1) : NULL,
                                  g->cout, dy_pairs + (size_t)q * g->cout);
  ConvWeightsJob job = {
    .in_step = (ptrdiff_t)2 * s * g->cin,
    .rows = g->cin,
    .dy_step = g->cout,
    .pixels = pairs,
  };
  for (int ky = 0; ky < g->kh; ky++) {
    int iy = r * s + ky - g->pad_h;
    if (iy < 0 || iy >= run->pass->in->h)
      continue;
    for (int kx = 0; kx < g->kw; kx++) {
      /* Output pixel 2q reads column 2qs + kx - pad_w: x_pairs column 2qs + kx. */
      job.in = (const float *)run->x_pairs + ((size_t)iy * run->x_pairs_w + kx) * g->cin;
      for (int b = 0; b < run->blocks.n_blocks; b++) {
        job.block_width = block_width(&run->blocks, b);
        job.channels = block_channels(&run->blocks, b);
        job.dy = (const float *)dy_pairs + b * run->blocks.max_block;
        job.dw = partial + b * run->block_floats +
                 (size_t)(ky * g->kw + kx) * g->cin * job.block_width;
        conv_kernels_bf16.weights_row(&job);
      }
    }
  }
}

/* x as the pixel pairs that the weight gradient's taps read: word ci of column j of a row holds
 * x[j - pad_w] (low half) and x[j - pad_w + stride], channel ci, zero outside the map. Output
 * pixels 2q and 2q + 1 read columns 2q * stride + kx - pad_w and stride further on, so one array
 * serves every tap and both pixels of a pair; building it costs one pass over x. */
static void x_pairs_task(void *ctx, int iy, int thread)
{
  (void)thread;
  const WeightsRun *run = ctx;
  const ConvGeometry *g = run->g;
  const FeatureMap *x = run->pass->in;
  uint32_t *dst = (uint32_t *)run->x_pairs + (size_t)iy * run->x_pairs_w * g->cin;
  for (int col = 0; col < run->x_pairs_w; col++, dst += g->cin) {
    int a = col - g->pad_w, b = a + g->stride;
    conv_kernels_bf16.pair_pixels(a >= 0 && a < x->w ? feature_map_at(x, iy, a) : NULL,
                                  b >= 0 && b < x->w ? feature_map_at(x, iy, b) : NULL, g->cin,
                                  dst);
  }
}

/* Columns up to the last pair's first pixel's last tap: (2 * pairs - 2) * stride + kw. */
static void plan_x_pairs(WeightsRun *run)
{
  const ConvGeometry *g = run->g;
  run->x_pairs_w = (2 * run->pairs - 2) * g->stride + g->kw;
  run->x_pairs = (const uint32_t *)pack_buffer(
    BUFFER_BF16_PAIRS, (size_t)run->pass->in->h * run->x_pairs_w * g->cin);
}

static void weights_row_task(const WeightsRun *run, int r, int thread)
{
  const ConvPass *ps = run->pass;
  float *partial = thread_pool_scratch(run->pool, thread, run->scratch_floats);
  if (!run->started[thread]) {
    memset(partial, 0, sizeof(float) * run->partial_floats);
    run->started[thread] = 1;
  }
  /* Back through the ReLU and into the bias first: the row's gradient is final after this. */
  if (run->relu_y || run->sum_bias) {
    const FeatureMap *y = run->relu_y, *dy = run->dy;
    ConvBiasJob bias = {
      .y = y ? feature_map_at(y, r, 0) : NULL,
      .y_step = y ? y->ld : 0,
      .dy = feature_map_at(dy, r, 0),
      .dy_step = dy->ld,
      .pixels = dy->w,
      .channels = dy->c,
      .sums = run->sum_bias ? partial + run->blocks.n_blocks * run->block_floats : NULL,
    };
    run->kernels->bias_row(&bias);
  }
  if (run->bf16_dy)
    convert_row(run->dy, run->bf16_dy, r);
  if (run->bf16) {
    weights_row_bf16(run, r, partial);
    return;
  }
  PixelRange ranges[3];
  int n = pass_ranges(ps, ranges);
  for (int i = 0; i < n; i++) {
    PassRows pr;
    pass_rows(ps, r, &ranges[i], partial + run->partial_floats, &pr);
    weights_range(run, r, &pr, ranges[i].p0, ranges[i].p1, partial);
  }
}

/* Adds rows [k0, k1) of a partial (HWIO rows of cout floats) into dw. */
static void add_partial_rows(const WeightsRun *run, const float *partial, float *dw, int k0,
                             int k1)
{
  const ConvGeometry *g = run->g;
  if (run->narrow) {
    int kernel_row = g->kw * g->cin;
    for (int k = k0; k < k1; k++) {
      const float *src = partial + (size_t)(k / kernel_row) * 8 * run->narrow_ld + k % kernel_row;
      for (int co = 0; co < g->cout; co++)
        dw[(size_t)k * g->cout + co] += src[(size_t)co * run->narrow_ld];
    }
    return;
  }
  for (int b = 0; b < run->blocks.n_blocks; b++) {
    int width = block_width(&run->blocks, b), channels = block_channels(&run->blocks, b);
    const float *src = partial + b * run->block_floats + (size_t)k0 * width;
    float *dst = dw + (size_t)k0 * g->cout + b * run->blocks.max_block;
    for (int k = k0; k < k1; k++, src += width, dst += g->cout)
      for (int co = 0; co < channels; co++)
        dst[co] += src[co];
  }
}

/* Reduction task i of reduce_tasks: a range of dw's rows summed over the threads' partials, in
 * thread order; task 0 also the bias. */
static void weights_reduce_task(const WeightsRun *run, int i)
{
  const ConvGeometry *g = run->g;
  int rows = g->kh * g->kw * g->cin;
  int k0 = (int)((long long)rows * i / run->reduce_tasks);
  int k1 = (int)((long long)rows * (i + 1) / run->reduce_tasks);
  int threads = thread_pool_threads(run->pool);
  for (int t = 0; t < threads; t++) {
    if (!run->started[t])
      continue;
    const float *partial = thread_pool_scratch(run->pool, t, run->scratch_floats);
    add_partial_rows(run, partial, run->dw, k0, k1);
    const float *sums = partial + run->blocks.n_blocks * run->block_floats;
    if (i == 0 && run->dbias)
      for (int co = 0; co < g->cout; co++)
        run->dbias[co] += sums[co];
  }
}

/* Floats of dw per reduction task: enough to be worth a task, few tasks on small layers. */
#define REDUCE_TASK_FLOATS 8192

static void plan_weights(WeightsRun *run, ConvPass *pass, const ConvGeometry *g,
                         const FeatureMap *x, const FeatureMap *dy, int bf16)
{
  pass_forward_taps(pass, g, x, dy->h, dy->w);
  pass_finish(pass, g->kw > 1);
  run->g = g;
  run->pass = pass;
  run->dy = dy;
  run->bf16 = bf16;
  run->pairs = (dy->w + 1) / 2;
  run->blocks = run->bf16 ? conv_blocks_bf16(g->cout) : conv_blocks(g->cout, run->kernels);
  run->narrow = !run->bf16 && run->kernels->weights_row_narrow && g->cout <= 8;
  run->narrow_ld = (g->kw * g->cin + 15) & ~15;
  run->block_floats = run->narrow ? (size_t)g->kh * 8 * run->narrow_ld
                                  : (size_t)g->kh * g->kw * g->cin * run->blocks.max_block;
  run->partial_floats = run->blocks.n_blocks * (run->block_floats + run->blocks.max_block);
  run->partial_floats = (run->partial_floats + 15) & ~(size_t)15;
  size_t rows = run->bf16 ? (size_t)run->pairs * g->cout : pass_scratch_floats(pass);
  run->scratch_floats = run->partial_floats + rows;
  size_t dw_floats = (size_t)g->kh * g->kw * g->cin * g->cout;
  int dw_rows = g->kh * g->kw * g->cin;
  run->reduce_tasks = (int)((dw_floats + REDUCE_TASK_FLOATS - 1) / REDUCE_TASK_FLOATS);
  run->reduce_tasks = run->reduce_tasks < dw_rows ? run->reduce_tasks : dw_rows;
}

/* ---- backward: weights and input gradients in two runs of the pool -------------------------- */

/* Run 1: the weight-gradient rows (ReLU and bias first), and the packing of the transposed
 * weights the input gradient needs. Run 2: the reduction of the weight-gradient partials, and the
 * input-gradient rows. */
typedef struct {
  WeightsRun weights;
  ConvRun input;
  PackJob pack;
  int has_input;
  int pack_tasks;
} BackwardRun;

static void backward_run1_task(void *ctx, int index, int thread)
{
  BackwardRun *b = ctx;
  if (index < b->weights.dy->h)
    weights_row_task(&b->weights, index, thread);
  else
    pack_task(&b->pack, index - b->weights.dy->h, thread);
}

static void backward_run2_task(void *ctx, int index, int thread)
{
  BackwardRun *b = ctx;
  if (index < b->weights.reduce_tasks)
    weights_reduce_task(&b->weights, index);
  else
    forward_row_task(&b->input, index - b->weights.reduce_tasks, thread);
}

static void backward_ref(const ConvGeometry *g, const FeatureMap *x, const float *w,
                         const FeatureMap *relu_y, FeatureMap *dy, float *dw, float *dbias,
                         FeatureMap *dx, int accumulate, int bf16)
{
  if (relu_y)
    relu_backward_ref(relu_y, dy);
  (bf16 ? conv2d_backward_weights_bf16_ref : conv2d_backward_weights_ref)(g, x, dy, dw, dbias);
  if (dx)
    (bf16 ? conv2d_backward_input_bf16_ref : conv2d_backward_input_ref)(g, dy, w, dx, accumulate);
}

/* What the fast backward pass does not take: the references run it. */
static int backward_needs_ref(const ConvGeometry *g, const FeatureMap *dy, const FeatureMap *dx)
{
  return !conv_kernels() || g->kh * g->kw > CONV_MAX_TAPS || (dx && g->stride > 2) ||
         dy->h <= 0 || dy->w <= 0 || g->cout <= 0 || g->cin <= 0 ||
         (dx && (dx->h <= 0 || dx->w <= 0));
}

/* bf16: the products in bfloat16; each row of dy is converted in run 1 right after its ReLU,
 * while it is in cache: to channel pairs for the input gradient, to pixel pairs for the weight
 * gradient. */
static void backward_pass(const ConvGeometry *g, const FeatureMap *x, const float *w,
                          const FeatureMap *relu_y, FeatureMap *dy, float *dw, float *dbias,
                          FeatureMap *dx, int accumulate, ThreadPool *pool, int bf16)
{
  const ConvKernels *k = conv_kernels();
  int threads = thread_pool_threads(pool);
  unsigned char started[threads];
  memset(started, 0, sizeof started);
  BackwardRun b = { .weights = { .kernels = k, .pool = pool, .relu_y = relu_y,
                                 .sum_bias = dbias != NULL, .started = started, .dw = dw,
                                 .dbias = dbias } };
  ConvPass weights_pass, input_passes[4];
  plan_weights(&b.weights, &weights_pass, g, x, dy, bf16);
  if (b.weights.bf16) {
    plan_x_pairs(&b.weights);
    thread_pool_run(pool, x->h, x_pairs_task, &b.weights);
  }
  b.input = (ConvRun){ .kernels = k, .pool = pool, .bf16 = bf16 && dx };
  int input_rows = 0;
  FeatureMap dy_bf16;
  if (dx) {
    if (bf16) {
      dy_bf16 = bf16_view(dy);
      b.weights.bf16_dy = &dy_bf16;
    }
    plan_backward_input(&b.input, input_passes, &b.pack, g, bf16 ? &dy_bf16 : dy, w, dx,
                        accumulate);
    /* The input gradient copies rows after the partials, which the reduction still reads. */
    b.input.scratch_offset = b.weights.partial_floats;
    input_rows = plan_forward_passes(&b.input);
    b.pack_tasks = pack_task_count(&b.pack);
  }
  /* One size for both runs: growing the scratch would drop the partials. */
  size_t scratch = b.input.scratch_floats > b.weights.scratch_floats ? b.input.scratch_floats
                                                                       : b.weights.scratch_floats;
  b.weights.scratch_floats = b.input.scratch_floats = scratch;
  /* Run 2 reads the partials run 1 left in the scratch: no other caller's run in between. */
  thread_pool_hold(pool);
  thread_pool_run(pool, dy->h + b.pack_tasks, backward_run1_task, &b);
  thread_pool_run(pool, b.weights.reduce_tasks + input_rows, backward_run2_task, &b);
  thread_pool_release(pool);
}

void conv2d_backward(const ConvGeometry *g, const FeatureMap *x, const float *w,
                     const FeatureMap *relu_y, FeatureMap *dy, float *dw, float *dbias,
                     FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  if (backward_needs_ref(g, dy, dx))
    backward_ref(g, x, w, relu_y, dy, dw, dbias, dx, accumulate, 0);
  else
    backward_pass(g, x, w, relu_y, dy, dw, dbias, dx, accumulate, pool, 0);
}

void conv2d_backward_bf16(const ConvGeometry *g, const FeatureMap *x, const float *w,
                          const FeatureMap *relu_y, FeatureMap *dy, float *dw, float *dbias,
                          FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  if (!conv2d_bf16_backward_applies(g)) {
    conv2d_backward(g, x, w, relu_y, dy, dw, dbias, dx, accumulate, pool);
  } else if (!kernels_have_bf16() || backward_needs_ref(g, dy, dx)) {
    backward_ref(g, x, w, relu_y, dy, dw, dbias, dx, accumulate, 1);
  } else {
    backward_pass(g, x, w, relu_y, dy, dw, dbias, dx, accumulate, pool, 1);
  }
}

void conv2d_backward_weights(const ConvGeometry *g, const FeatureMap *x, const FeatureMap *dy,
                             float *dw, float *dbias, ThreadPool *pool)
{
  conv2d_backward(g, x, NULL, NULL, (FeatureMap *)dy, dw, dbias, NULL, 0, pool);
}
