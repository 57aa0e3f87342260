/* dwconv.c: the depthwise 3x3 convolution's entry points: ISA dispatch, row bands over the pool.
 *
 * Forward: one output row per kernel call, over row bands. Backward: run 1 streams each row of
 * dy once (activation gradient, written back, bias and weight gradients into the band's partial
 * sums); run 2 adds the partials into dw and dbias in band order beside the rows of the input
 * gradient, which gathers from dy: at stride 1 it is the forward row over dy with the taps
 * flipped, at stride 2 a row of its own (mobile_impl.h). The kernels never test rows: a tap row
 * outside the map reads a row of zeros. The zeros, the flipped taps and the partials live in the
 * caller's scratch, the pool held from planning to reduction. */
#include <string.h>

#include "mobile_impl.h"
#include "row_bands.h"

typedef struct {
  const MobileKernels *k;
  const FeatureMap *x, *act;
  FeatureMap *dy, *z, *y, *dx;
  const float *w, *bias;
  const float *w_flipped; /* stride-1 input gradient: tap 8 - k of w as tap k */
  const float *zeros;
  int stride;
  Activation f;
  int accumulate;
  float *partials; /* per band of run 1: 9 taps then the bias sum, c floats each */
  int weight_bands, input_bands;
  float *dw, *dbias;
} DwRun;

static size_t round16(size_t n)
{
  return (n + 15) & ~(size_t)15;
}

/* The rows output row r of `pixels` pixels reads from in, taps ky = 0, 1, 2. */
static DwRows rows_of(const FeatureMap *in, int r, int stride, int pixels, const float *zeros)
{
  DwRows rows = { .in_w = in->w, .stride = stride, .channels = in->c, .pixels = pixels };
  for (int ky = 0; ky < 3; ky++) {
    int iy = r * stride + ky - 1;
    int inside = iy >= 0 && iy < in->h;
    rows.in[ky] = inside ? feature_map_at(in, iy, 0) : zeros;
    rows.in_step[ky] = inside ? in->ld : 0;
  }
  return rows;
}

static void band_range(int rows, int bands, int band, int *begin, int *end)
{
  *begin = (int)((long long)rows * band / bands);
  *end = (int)((long long)rows * (band + 1) / bands);
}

static void forward_band(void *ctx, int band, int row_begin, int row_end, int thread)
{
  const DwRun *run = ctx;
  for (int r = row_begin; r < row_end; r++) {
    DwForwardJob job = {
      .rows = rows_of(run->x, r, run->stride, run->y->w, run->zeros),
      .w = run->w,
      .bias = run->bias,
      .f = run->f,
      .out = feature_map_at(run->y, r, 0),
      .out_step = run->y->ld,
      .z = run->z ? feature_map_at(run->z, r, 0) : NULL,
      .z_step = run->z ? run->z->ld : 0,
    };
    run->k->dw_forward_row(&job);
  }
}

/* Floats a row of the pass touches, for row_band_count. */
static size_t row_floats(const FeatureMap *out)
{
  return (size_t)out->w * out->c * 4;
}

void dwconv3x3_forward(const FeatureMap *x, const float *w, const float *bias, int stride,
                       Activation f, FeatureMap *z, FeatureMap *y, ThreadPool *pool)
{
  const MobileKernels *k = mobile_kernels();
  if (!k || (stride != 1 && stride != 2)) {
    dwconv3x3_forward_ref(x, w, bias, stride, f, z, y);
    return;
  }
  if (y->h <= 0 || y->w <= 0 || x->c <= 0)
    return;
  thread_pool_hold(pool);
  float *zeros = thread_pool_scratch(pool, 0, (size_t)x->c);
  memset(zeros, 0, sizeof(float) * x->c);
  DwRun run = { .k = k, .x = x, .w = w, .bias = bias, .stride = stride, .f = f, .z = z, .y = y,
                .zeros = zeros };
  run_row_bands(pool, y->h, row_band_count(pool, y->h, row_floats(y)), forward_band, &run);
  thread_pool_release(pool);
}

/* ---- backward ------------------------------------------------------------------------------- */

static void weights_band(void *ctx, int band, int row_begin, int row_end, int thread)
{
  const DwRun *run = ctx;
  int c = run->x->c;
  float *partial = run->partials + band * round16((size_t)10 * c);
  memset(partial, 0, sizeof(float) * 10 * c);
  for (int r = row_begin; r < row_end; r++) {
    DwWeightsJob job = {
      .rows = rows_of(run->x, r, run->stride, run->dy->w, run->zeros),
      .f = run->f,
      .act = run->f != ACTIVATION_NONE ? feature_map_at(run->act, r, 0) : NULL,
      .act_step = run->f != ACTIVATION_NONE ? run->act->ld : 0,
      .dy = feature_map_at(run->dy, r, 0),
      .dy_step = run->dy->ld,
      .partial = partial,
    };
    run->k->dw_weights_row(&job);
  }
}

/* dw and dbias += the partials, band after band. */
static void reduce_partials(const DwRun *run)
{
  int c = run->x->c;
  for (int b = 0; b < run->weight_bands; b++) {
    const float *partial = run->partials + b * round16((size_t)10 * c);
    for (int i = 0; i < 9 * c; i++)
      run->dw[i] += partial[i];
    for (int ch = 0; run->dbias && ch < c; ch++)
      run->dbias[ch] += partial[9 * c + ch];
  }
}

static void input_row(const DwRun *run, int r)
{
  const FeatureMap *dy = run->dy, *dx = run->dx;
  if (run->stride == 1) {
    DwForwardJob job = {
      .rows = rows_of(dy, r, 1, dx->w, run->zeros),
      .w = run->w_flipped,
      .accumulate = run->accumulate,
      .out = feature_map_at(dx, r, 0),
      .out_step = dx->ld,
    };
    run->k->dw_forward_row(&job);
    return;
  }
  /* Row r = 2i reads dy row i at ky = 1; row 2i + 1 rows i (ky = 2) and i + 1 (ky = 0). */
  DwInputJob job = {
    .dy_step = dy->ld,
    .dy_w = dy->w,
    .w = run->w,
    .dx = feature_map_at(dx, r, 0),
    .dx_step = dx->ld,
    .dx_w = dx->w,
    .channels = dx->c,
    .accumulate = run->accumulate,
  };
  int i = r / 2;
  job.dy[0] = feature_map_at(dy, i, 0);
  job.ky[0] = r % 2 ? 2 : 1;
  job.n_rows = 1;
  if (r % 2 && i + 1 < dy->h) {
    job.dy[1] = feature_map_at(dy, i + 1, 0);
    job.ky[1] = 0;
    job.n_rows = 2;
  }
  run->k->dw_input_row_s2(&job);
}

/* Run 2: task 0 reduces the partials, the others are bands of input-gradient rows. */
static void run2_task(void *ctx, int index, int thread)
{
  const DwRun *run = ctx;
  if (index == 0) {
    reduce_partials(run);
    return;
  }
  int begin, end;
  band_range(run->dx->h, run->input_bands, index - 1, &begin, &end);
  for (int r = begin; r < end; r++)
    input_row(run, r);
}

void dwconv3x3_backward(const FeatureMap *x, const float *w, int stride, Activation f,
                        const FeatureMap *act_input, FeatureMap *dy, float *dw, float *dbias,
                        FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  const MobileKernels *k = mobile_kernels();
  int c = x->c;
  if (!k || (stride != 1 && stride != 2) || dy->h <= 0 || dy->w <= 0 || c <= 0) {
    dwconv3x3_backward_ref(x, w, stride, f, act_input, dy, dw, dbias, dx, accumulate);
    return;
  }
  DwRun run = { .k = k, .x = x, .act = act_input, .dy = dy, .dx = dx, .w = w, .stride = stride,
                .f = f, .accumulate = accumulate, .dw = dw, .dbias = dbias };
  run.weight_bands = row_band_count(pool, dy->h, row_floats(dy));
  run.input_bands = dx ? row_band_count(pool, dx->h, row_floats(dx)) : 0;
  size_t zeros = round16((size_t)c), flipped = round16((size_t)9 * c);
  thread_pool_hold(pool);
  float *scratch = thread_pool_scratch(
    pool, 0, zeros + flipped + run.weight_bands * round16((size_t)10 * c));
  memset(scratch, 0, sizeof(float) * c);
  run.zeros = scratch;
  float *w_flipped = scratch + zeros;
  for (int tap = 0; dx && stride == 1 && tap < 9; tap++)
    memcpy(w_flipped + tap * c, w + (8 - tap) * c, sizeof(float) * c);
  run.w_flipped = w_flipped;
  run.partials = scratch + zeros + flipped;
  run_row_bands(pool, dy->h, run.weight_bands, weights_band, &run);
  if (dx)
    thread_pool_run(pool, 1 + run.input_bands, run2_task, &run);
  else
    reduce_partials(&run);
  thread_pool_release(pool);
}
