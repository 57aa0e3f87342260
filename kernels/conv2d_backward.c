/* conv2d_backward.c: the input and weight gradients of the convolution, apart or fused in the pass
 * that training runs.
 *
 * conv2d_backward is the training path: pool run 1 takes each dy row back through the ReLU and
 * into the bias sums (bias_row) just before its weight-gradient row reads it, beside the tasks
 * that pack the transposed weights; run 2 reduces the weight-gradient partials beside the
 * input-gradient rows. Two pool runs per layer, no separate ReLU or packing pass.
 *
 * With bfloat16 products the weight gradient pairs pixels rather than channels: dy's rows as they
 * become final in run 1, and x once per call into an array of pixel pairs that every tap reads. */
#include <string.h>

#include "conv2d_pass.h"

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
  conv_pass_finish(ps, 0);
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
  *pack = conv_plan_pack(g, w, NULL, 1, &run->blocks, !bf16 && use_pairs(run->kernels, g->cin),
                         bf16);
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
  if (conv2d_is_pointwise(g) &&
      conv2d_pointwise_uses_gemm(CONV_PASS_BACKWARD_INPUT, dx->h * dx->w, g->cin, g->cout,
                                 thread_pool_threads(pool))) {
    conv1x1_gemm_backward_input(g, dy, w, dx, accumulate, pool);
    return;
  }
  ConvPass passes[4];
  ConvRun run = { .kernels = k, .pool = pool };
  PackJob pack;
  plan_backward_input(&run, passes, &pack, g, dy, w, dx, accumulate);
  conv_run_pack(&pack, pool);
  thread_pool_run(pool, conv_plan_forward_passes(&run), conv_forward_row_task, &run);
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
  run->x_pairs = (const uint32_t *)conv_pack_buffer(
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
    ConvBiasJob bias = conv_bias_job(
      run->relu_y, run->dy, r,
      run->sum_bias ? partial + run->blocks.n_blocks * run->block_floats : NULL);
    run->kernels->bias_row(&bias);
  }
  if (run->bf16_dy)
    conv_bf16_convert_row(run->dy, run->bf16_dy, r);
  if (run->bf16) {
    weights_row_bf16(run, r, partial);
    return;
  }
  PixelRange ranges[3];
  int n = conv_pass_ranges(ps, ranges);
  for (int i = 0; i < n; i++) {
    PassRows pr;
    conv_pass_rows(ps, r, &ranges[i], partial + run->partial_floats, &pr);
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
  conv_pass_forward_taps(pass, g, x, dy->h, dy->w);
  conv_pass_finish(pass, g->kw > 1);
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
  size_t rows = run->bf16 ? (size_t)run->pairs * g->cout : conv_pass_scratch_floats(pass);
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
    conv_pack_task(&b->pack, index - b->weights.dy->h, thread);
}

static void backward_run2_task(void *ctx, int index, int thread)
{
  BackwardRun *b = ctx;
  if (index < b->weights.reduce_tasks)
    weights_reduce_task(&b->weights, index);
  else
    conv_forward_row_task(&b->input, index - b->weights.reduce_tasks, thread);
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
      dy_bf16 = conv_bf16_view(dy);
      b.weights.bf16_dy = &dy_bf16;
    }
    plan_backward_input(&b.input, input_passes, &b.pack, g, bf16 ? &dy_bf16 : dy, w, dx,
                        accumulate);
    /* The input gradient copies rows after the partials, which the reduction still reads. */
    b.input.scratch_offset = b.weights.partial_floats;
    input_rows = conv_plan_forward_passes(&b.input);
    b.pack_tasks = conv_pack_task_count(&b.pack);
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

/* A pointwise convolution whose weight or input gradient runs as sgemm calls (pointwise.c):
 * the passes that the rule gives to the direct kernels run there, after the ReLU. Returns 0,
 * having done nothing, when both passes are direct. */
static int backward_pointwise(const ConvGeometry *g, const FeatureMap *x, const float *w,
                              const FeatureMap *relu_y, FeatureMap *dy, float *dw, float *dbias,
                              FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  if (!conv2d_is_pointwise(g))
    return 0;
  int pixels = dy->h * dy->w, threads = thread_pool_threads(pool);
  int gemm_weights = conv2d_pointwise_uses_gemm(CONV_PASS_BACKWARD_WEIGHTS, pixels, g->cin,
                                                g->cout, threads);
  int gemm_input = dx && conv2d_pointwise_uses_gemm(CONV_PASS_BACKWARD_INPUT, pixels, g->cin,
                                                    g->cout, threads);
  if (!gemm_weights && !gemm_input)
    return 0;
  if (gemm_weights)
    conv1x1_gemm_backward(g, x, w, relu_y, dy, dw, dbias, gemm_input ? dx : NULL, accumulate,
                          pool);
  else
    backward_pass(g, x, w, relu_y, dy, dw, dbias, NULL, 0, pool, 0);
  if (gemm_input && !gemm_weights)
    conv1x1_gemm_backward_input(g, dy, w, dx, accumulate, pool);
  else if (dx && !gemm_input)
    conv2d_backward_input(g, dy, w, dx, accumulate, pool);
  return 1;
}

void conv2d_backward(const ConvGeometry *g, const FeatureMap *x, const float *w,
                     const FeatureMap *relu_y, FeatureMap *dy, float *dw, float *dbias,
                     FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  if (backward_needs_ref(g, dy, dx))
    backward_ref(g, x, w, relu_y, dy, dw, dbias, dx, accumulate, 0);
  else if (!backward_pointwise(g, x, w, relu_y, dy, dw, dbias, dx, accumulate, pool))
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
