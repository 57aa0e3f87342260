/* conv2d.c: public convolution entry points, forward and backward, over the ISA's row kernels.
 *
 * All three passes are one row loop (a "pass") split over the thread pool, one output row per
 * task:
 * - forward: output (r, j) reads input (r * stride + ky - pad_h, j * stride + kx - pad_w);
 * - backward input: dx is cut into stride x stride phases (pixels (i * s + a, j * s + b)); each
 *   phase is a stride-1 convolution of dy with the taps that reach it, the weights transposed
 *   (in <-> out), written to every s-th pixel. Stride 1 is the single phase (a, b) = (0, 0);
 * - backward weights: the forward pass's geometry; each row adds x (taps x cin) times dy (cout)
 *   into a per-thread partial, summed into dw at the end.
 * Rows reaching past the left or right edge are copied, zero-padded, into per-thread scratch, so
 * the kernels never test bounds; rows above or below the input drop their taps.
 *
 * Measured with distill-bench-conv on one core of the 2-core EPYC (family 1Ah, Zen 5: two 512-bit
 * FMA pipes, about 210 GFLOP/s per core when uncontended), AVX-512, 640x360 layers: head.0
 * forward 5.2 ms (204 GFLOP/s), backward input 5.2 ms, backward weights 5.7 ms; every
 * convolution of the student: forward 14.6 ms (183 GFLOP/s), backward input 14.5 ms, backward
 * weights 15.0 ms. At about 90% of a core's FMA rate on the dense layers, the direct kernels
 * leave little to per-tap OpenBLAS GEMMs, which are not used. */
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

static ConvBlocks conv_blocks(int channels, const ConvKernels *k)
{
  ConvBlocks b = { channels, (channels + k->max_block - 1) / k->max_block, k->max_block, 0 };
  int rest = channels - (b.n_blocks - 1) * k->max_block;
  for (b.last_width = k->min_block; b.last_width < rest; b.last_width *= 2)
    ;
  return b;
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

static pthread_key_t pack_key;
static pthread_once_t pack_once = PTHREAD_ONCE_INIT;

static void pack_buffer_free(void *p)
{
  PackBuffer *b = p;
  free(b->data);
  free(b);
}

static void pack_key_create(void)
{
  pthread_key_create(&pack_key, pack_buffer_free);
}

/* The calling thread's buffer for packed weights, grown on demand and kept: training steps
 * repack every layer each time, and allocate nothing once warm. */
static float *pack_buffer(size_t floats)
{
  pthread_once(&pack_once, pack_key_create);
  PackBuffer *b = pthread_getspecific(pack_key);
  if (!b) {
    b = calloc(1, sizeof *b);
    pthread_setspecific(pack_key, b);
  }
  if (b->floats < floats) {
    free(b->data);
    b->data = aligned_alloc(64, (floats * sizeof(float) + 63) & ~(size_t)63);
    b->floats = floats;
  }
  return b->data;
}

/* Weight of tap t from input channel i to output channel o of the pass: transpose swaps the
 * roles of HWIO's in and out channels (the backward-input pass). */
static float weight_at(const ConvGeometry *g, const float *w, int transpose, int t, int i, int o)
{
  size_t ci = transpose ? o : i, co = transpose ? i : o;
  return w[((size_t)t * g->cin + ci) * g->cout + co];
}

/* Weights as the row kernels read them: per output-channel block (block_floats apart), taps x
 * n_in x width, zero-padded; then the bias, max_block floats per block. With pairs (one block of
 * at most 8 channels, ConvKernels.forward_row_pairs): taps x ceil(n_in / 2) x 16, input channels
 * 2j and 2j + 1 interleaved. */
typedef struct {
  const float *data;
  const float *bias;
  size_t block_floats;
  int n_in;
  int pairs;
} PackedWeights;

static PackedWeights pack_weights(const ConvGeometry *g, const float *w, const float *bias,
                                  int transpose, const ConvBlocks *blocks, int pairs)
{
  int taps = g->kh * g->kw;
  int n_in = transpose ? g->cout : g->cin;
  int rows = pairs ? (n_in + 1) / 2 : n_in, width = pairs ? 16 : blocks->max_block;
  size_t block_floats = (size_t)taps * rows * width;
  float *data = pack_buffer(block_floats * blocks->n_blocks + blocks->n_blocks * blocks->max_block);
  float *packed_bias = data + block_floats * blocks->n_blocks;
  for (int b = 0; b < blocks->n_blocks; b++) {
    int channels = block_channels(blocks, b), first = b * blocks->max_block;
    if (!pairs)
      width = block_width(blocks, b);
    float *dst = data + b * block_floats;
    for (int t = 0; t < taps; t++)
      for (int r = 0; r < rows; r++, dst += width)
        for (int lane = 0; lane < width; lane++) {
          int i = pairs ? 2 * r + lane % 2 : r, o = pairs ? lane / 2 : lane;
          dst[lane] = i < n_in && o < channels ? weight_at(g, w, transpose, t, i, first + o) : 0.0f;
        }
    float *db = packed_bias + first;
    for (int o = 0; o < blocks->max_block; o++)
      db[o] = bias && o < channels ? bias[first + o] : 0.0f;
  }
  return (PackedWeights){ data, packed_bias, block_floats, n_in, pairs };
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

typedef struct {
  const FeatureMap *in;
  int in_mul;
  int n_taps;
  ConvTap taps[CONV_MAX_TAPS];
  int dr_lo, n_slots; /* input rows r * in_mul + dr_lo + slot, slot < n_slots */
  int col_lo, n_cols; /* input columns read */
  int padded;         /* rows are copied (zero-padded, ld = c) rather than read in place */
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

/* Rows and columns the taps read; compact: copy rows whose ld exceeds c too. */
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
  int col_hi = (ps->out_w - 1) * ps->in_mul + dc_hi;
  ps->dr_lo = dr_lo;
  ps->n_slots = dr_hi - dr_lo + 1;
  ps->col_lo = dc_lo;
  ps->n_cols = col_hi - dc_lo + 1;
  ps->padded = dc_lo < 0 || col_hi >= ps->in->w || (compact && ps->in->ld != ps->in->c);
}

static size_t pass_scratch_floats(const ConvPass *ps)
{
  return ps->padded ? (size_t)ps->n_slots * ps->n_cols * ps->in->c : 0;
}

/* Input columns [col_lo, col_lo + n) of row y, zero outside the map, channels packed. */
static void copy_padded_row(const FeatureMap *in, int y, int col_lo, int n, float *dst)
{
  int c = in->c;
  int first = col_lo < 0 ? -col_lo : 0;
  int end = in->w - col_lo < n ? in->w - col_lo : n;
  memset(dst, 0, sizeof(float) * first * c);
  if (in->ld == c)
    memcpy(dst + (size_t)first * c, feature_map_at(in, y, col_lo + first),
           sizeof(float) * (end - first) * c);
  else
    for (int i = first; i < end; i++)
      memcpy(dst + (size_t)i * c, feature_map_at(in, y, col_lo + i), sizeof(float) * c);
  memset(dst + (size_t)end * c, 0, sizeof(float) * (n - end) * c);
}

/* The input rows of output row r: column col of slot s is at rows[s] + (col - *col0) * *ld;
 * rows[s] is NULL where the row lies outside the input. */
static void pass_rows(const ConvPass *ps, int r, float *scratch, const float **rows, int *ld,
                      int *col0)
{
  const FeatureMap *in = ps->in;
  for (int s = 0; s < ps->n_slots; s++) {
    int y = r * ps->in_mul + ps->dr_lo + s;
    if (y < 0 || y >= in->h) {
      rows[s] = NULL;
    } else if (ps->padded) {
      float *dst = scratch + (size_t)s * ps->n_cols * in->c;
      copy_padded_row(in, y, ps->col_lo, ps->n_cols, dst);
      rows[s] = dst;
    } else {
      rows[s] = feature_map_at(in, y, 0);
    }
  }
  *ld = ps->padded ? in->c : in->ld;
  *col0 = ps->padded ? ps->col_lo : 0;
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
  size_t scratch_floats;
} ConvRun;

static const ConvPass *run_row(const ConvRun *run, int index, int *r)
{
  int p = 0;
  while (index >= run->first_row[p + 1])
    p++;
  *r = index - run->first_row[p];
  return &run->passes[p];
}

static void forward_row_task(void *ctx, int index, int thread)
{
  const ConvRun *run = ctx;
  int r, ld, col0;
  const ConvPass *ps = run_row(run, index, &r);
  const float *rows[CONV_MAX_TAPS];
  pass_rows(ps, r, thread_pool_scratch(run->pool, thread, run->scratch_floats), rows, &ld, &col0);

  ConvRowJob job = {
    .in_step = (ptrdiff_t)ps->in_mul * ld,
    .cin = run->weights.n_in,
    .out_step = ps->out_col_step,
    .residual_step = ps->residual_col_step,
    .relu = run->relu,
    .pixels = ps->out_w,
  };
  int weight_tap[CONV_MAX_TAPS];
  for (int t = 0; t < ps->n_taps; t++) {
    const ConvTap *tap = &ps->taps[t];
    const float *row = rows[tap->dr - ps->dr_lo];
    if (!row)
      continue;
    job.in[job.n_taps] = row + (ptrdiff_t)(tap->dc - col0) * ld;
    weight_tap[job.n_taps++] = tap->weight_tap;
  }
  for (int b = 0; b < run->blocks.n_blocks; b++) {
    int first = b * run->blocks.max_block;
    job.block_width = block_width(&run->blocks, b);
    job.channels = block_channels(&run->blocks, b);
    const float *w = run->weights.data + b * run->weights.block_floats;
    size_t tap_floats = run->weights.pairs ? (size_t)(job.cin + 1) / 2 * 16
                                           : (size_t)job.cin * job.block_width;
    for (int t = 0; t < job.n_taps; t++)
      job.w[t] = w + weight_tap[t] * tap_floats;
    job.bias = run->weights.bias + first;
    job.out = ps->out + r * ps->out_row_step + first;
    job.residual = ps->residual ? ps->residual + r * ps->residual_row_step + first : NULL;
    if (run->weights.pairs)
      run->kernels->forward_row_pairs(&job);
    else
      run->kernels->forward_row(&job);
  }
}

static void run_forward_passes(ConvRun *run)
{
  run->first_row[0] = 0;
  run->scratch_floats = 0;
  for (int p = 0; p < run->n_passes; p++) {
    run->first_row[p + 1] = run->first_row[p] + run->passes[p].out_h;
    size_t floats = pass_scratch_floats(&run->passes[p]);
    run->scratch_floats = floats > run->scratch_floats ? floats : run->scratch_floats;
  }
  thread_pool_run(run->pool, run->first_row[run->n_passes], forward_row_task, run);
}

void conv2d_forward(const ConvGeometry *g, const FeatureMap *x, const float *w, const float *bias,
                    const FeatureMap *residual, int relu, FeatureMap *y, ThreadPool *pool)
{
  const ConvKernels *k = conv_kernels();
  if (!k || g->kh * g->kw > CONV_MAX_TAPS) {
    conv2d_forward_ref(g, x, w, bias, residual, relu, y);
    return;
  }
  if (y->h <= 0 || y->w <= 0 || g->cout <= 0)
    return;
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

  ConvRun run = { .kernels = k, .pool = pool, .passes = &pass, .n_passes = 1, .relu = relu };
  run.blocks = conv_blocks(g->cout, k);
  run.weights = pack_weights(g, w, bias, 0, &run.blocks, use_pairs(k, g->cout));
  run_forward_passes(&run);
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
  ConvRun run = { .kernels = k, .pool = pool, .passes = passes };
  for (int a = 0; a < g->stride; a++)
    for (int b = 0; b < g->stride; b++) {
      ConvPass *ps = &passes[run.n_passes];
      pass_backward_phase(ps, g, dy, dx, a, b, accumulate);
      if (ps->out_h > 0 && ps->out_w > 0)
        run.n_passes++;
    }
  run.blocks = conv_blocks(g->cin, k);
  run.weights = pack_weights(g, w, NULL, 1, &run.blocks, use_pairs(k, g->cin));
  run_forward_passes(&run);
}

/* ---- backward weights ------------------------------------------------------------------------ */

typedef struct {
  const ConvKernels *kernels;
  ThreadPool *pool;
  const ConvGeometry *g;
  const ConvPass *pass;
  const FeatureMap *dy;
  ConvBlocks blocks;
  int pairs;             /* ConvKernels.weights_row_pairs, on one block: kh x ceil(kw * cin / 2) x 16 */
  size_t block_floats;   /* per block of a partial: taps x cin x width */
  size_t partial_floats; /* the blocks, then cout sums of dy; rounded up to a cache line */
  size_t scratch_floats; /* partial, then the copied rows */
} WeightsRun;

static void weights_row_task(void *ctx, int r, int thread)
{
  const WeightsRun *run = ctx;
  const ConvPass *ps = run->pass;
  const ConvGeometry *g = run->g;
  float *partial = thread_pool_scratch(run->pool, thread, run->scratch_floats);
  const float *rows[CONV_MAX_TAPS];
  int ld, col0;
  pass_rows(ps, r, partial + run->partial_floats, rows, &ld, &col0);

  const float *dy = feature_map_at(run->dy, r, 0);
  /* Rows are copied compact whenever kw > 1, so the kw x cin inputs of a kernel row are one
   * contiguous run, as are their gradients in HWIO order. */
  ConvWeightsJob job = {
    .in_step = (ptrdiff_t)ps->in_mul * ld,
    .rows = g->kw * g->cin,
    .dy_step = run->dy->ld,
    .pixels = ps->out_w,
  };
  for (int ky = 0; ky < g->kh; ky++) {
    const float *row = rows[ky - g->pad_h - ps->dr_lo];
    if (!row)
      continue;
    job.in = row + (ptrdiff_t)(-g->pad_w - col0) * ld;
    for (int b = 0; b < run->blocks.n_blocks; b++) {
      job.block_width = block_width(&run->blocks, b);
      job.channels = block_channels(&run->blocks, b);
      job.dy = dy + b * run->blocks.max_block;
      if (run->pairs) {
        job.dw = partial + (size_t)ky * ((job.rows + 1) / 2) * 16;
        run->kernels->weights_row_pairs(&job);
      } else {
        job.dw = partial + b * run->block_floats + (size_t)ky * job.rows * job.block_width;
        run->kernels->weights_row(&job);
      }
    }
  }

  float *dbias = partial + run->blocks.n_blocks * run->block_floats;
  for (int j = 0; j < run->dy->w; j++)
    for (int co = 0; co < g->cout; co++)
      dbias[co] += dy[(size_t)j * run->dy->ld + co];
}

static void add_partial(const WeightsRun *run, const float *partial, float *dw, float *dbias)
{
  const ConvGeometry *g = run->g;
  int rows = g->kh * g->kw * g->cin;
  if (run->pairs) {
    int kernel_row = g->kw * g->cin, pairs = (kernel_row + 1) / 2;
    for (int k = 0; k < rows; k++) {
      const float *src = partial + ((size_t)(k / kernel_row) * pairs + k % kernel_row / 2) * 16;
      for (int co = 0; co < g->cout; co++)
        dw[(size_t)k * g->cout + co] += src[2 * co + k % kernel_row % 2];
    }
  }
  for (int b = 0; !run->pairs && b < run->blocks.n_blocks; b++) {
    int width = block_width(&run->blocks, b), channels = block_channels(&run->blocks, b);
    const float *src = partial + b * run->block_floats;
    float *dst = dw + b * run->blocks.max_block;
    for (int k = 0; k < rows; k++, src += width, dst += g->cout)
      for (int co = 0; co < channels; co++)
        dst[co] += src[co];
  }
  const float *sums = partial + run->blocks.n_blocks * run->block_floats;
  if (dbias)
    for (int co = 0; co < g->cout; co++)
      dbias[co] += sums[co];
}

void conv2d_backward_weights(const ConvGeometry *g, const FeatureMap *x, const FeatureMap *dy,
                             float *dw, float *dbias, ThreadPool *pool)
{
  const ConvKernels *k = conv_kernels();
  if (!k || g->kh * g->kw > CONV_MAX_TAPS) {
    conv2d_backward_weights_ref(g, x, dy, dw, dbias);
    return;
  }
  if (dy->h <= 0 || dy->w <= 0 || g->cout <= 0 || g->cin <= 0)
    return;
  ConvPass pass;
  pass_forward_taps(&pass, g, x, dy->h, dy->w);
  pass_finish(&pass, g->kw > 1);

  WeightsRun run = { .kernels = k, .pool = pool, .g = g, .pass = &pass, .dy = dy };
  run.blocks = conv_blocks(g->cout, k);
  run.pairs = k->weights_row_pairs && g->cout <= 8;
  run.block_floats = run.pairs ? (size_t)g->kh * ((g->kw * g->cin + 1) / 2) * 16
                               : (size_t)g->kh * g->kw * g->cin * run.blocks.max_block;
  run.partial_floats = run.blocks.n_blocks * (run.block_floats + run.blocks.max_block);
  run.partial_floats = (run.partial_floats + 15) & ~(size_t)15;
  run.scratch_floats = run.partial_floats + pass_scratch_floats(&pass);

  int threads = thread_pool_threads(pool);
  for (int t = 0; t < threads; t++)
    memset(thread_pool_scratch(pool, t, run.scratch_floats), 0,
           sizeof(float) * run.partial_floats);
  thread_pool_run(pool, dy->h, weights_row_task, &run);
  for (int t = 0; t < threads; t++)
    add_partial(&run, thread_pool_scratch(pool, t, run.scratch_floats), dw, dbias);
}
