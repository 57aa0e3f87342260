/* conv2d_forward.c: the forward convolution, fp32 and with bfloat16 products, and the
 * forward-style row run it shares with the backward-input pass (conv2d_pass.h). */
#include "conv2d_pass.h"

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

void conv_forward_row_task(void *ctx, int index, int thread)
{
  const ConvRun *run = ctx;
  int r;
  const ConvPass *ps = run_row(run, index, &r);
  float *scratch =
    thread_pool_scratch(run->pool, thread, run->scratch_floats) + run->scratch_offset;
  PixelRange ranges[3];
  int n = conv_pass_ranges(ps, ranges);
  for (int i = 0; i < n; i++) {
    PassRows pr;
    conv_pass_rows(ps, r, &ranges[i], scratch, &pr);
    forward_range(run, ps, r, &pr, ranges[i].p0, ranges[i].p1);
  }
}

int conv_plan_forward_passes(ConvRun *run)
{
  run->first_row[0] = 0;
  size_t scratch = 0;
  for (int p = 0; p < run->n_passes; p++) {
    run->first_row[p + 1] = run->first_row[p] + run->passes[p].out_h;
    size_t floats = conv_pass_scratch_floats(&run->passes[p]);
    scratch = floats > scratch ? floats : scratch;
  }
  run->scratch_floats = run->scratch_offset + scratch;
  return run->first_row[run->n_passes];
}

typedef struct {
  const FeatureMap *x, *view;
} ConvertJob;

static void convert_task(void *ctx, int r, int thread)
{
  (void)thread;
  const ConvertJob *job = ctx;
  conv_bf16_convert_row(job->x, job->view, r);
}

static void forward_pass(const ConvGeometry *g, const FeatureMap *x, const float *w,
                         const float *bias, const FeatureMap *residual, int relu, FeatureMap *y,
                         ThreadPool *pool, int bf16)
{
  const ConvKernels *k = conv_kernels();
  FeatureMap view;
  if (bf16) {
    view = conv_bf16_view(x);
    ConvertJob convert = { x, &view };
    thread_pool_run(pool, x->h, convert_task, &convert);
    x = &view;
  }
  ConvPass pass;
  conv_pass_forward_taps(&pass, g, x, y->h, y->w);
  pass.out = y->data;
  pass.out_row_step = (ptrdiff_t)y->w * y->ld;
  pass.out_col_step = y->ld;
  if (residual) {
    pass.residual = residual->data;
    pass.residual_row_step = (ptrdiff_t)residual->w * residual->ld;
    pass.residual_col_step = residual->ld;
  }
  conv_pass_finish(&pass, 0);

  ConvRun run = { .kernels = k, .pool = pool, .passes = &pass, .n_passes = 1, .relu = relu,
                  .bf16 = bf16 };
  run.blocks = bf16 ? conv_blocks_bf16(g->cout) : conv_blocks(g->cout, k);
  PackJob pack = conv_plan_pack(g, w, bias, 0, &run.blocks, !bf16 && use_pairs(k, g->cout), bf16);
  conv_run_pack(&pack, pool);
  run.weights = pack.packed;
  thread_pool_run(pool, conv_plan_forward_passes(&run), conv_forward_row_task, &run);
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
  if (conv2d_is_pointwise(g) && conv2d_pointwise_uses_gemm(CONV_PASS_FORWARD, y->h * y->w, g->cin,
                                                           g->cout, thread_pool_threads(pool)))
    conv1x1_gemm_forward(g, x, w, bias, residual, relu, y, pool);
  else
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
