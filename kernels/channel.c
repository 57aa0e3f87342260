/* channel.c: global average pooling and per-channel scaling: ISA dispatch, row bands over the
 * pool. The sums over pixels (the pooling, the scale's gradient) go into one partial per band,
 * in the caller's scratch (the pool held), added in band order: the result does not depend on
 * which thread ran which band. */
#include <string.h>

#include "mobile_impl.h"
#include "row_bands.h"
#include "simd.h"

typedef struct {
  const SimdKernels *simd;
  const MobileKernels *k;
  const FeatureMap *x, *dy;
  FeatureMap *out; /* y, or dx */
  const float *s;  /* the scale, or the pooling's dy / (h * w) */
  float *partials; /* per band, c floats (NULL: no sums) */
  size_t partial_step;
  int accumulate;
} ChannelJob;

static void pool_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  const ChannelJob *job = arg;
  const FeatureMap *x = job->x;
  float *sums = job->partials + band * job->partial_step;
  memset(sums, 0, sizeof(float) * x->c);
  for (int py = row_begin; py < row_end; py++)
    for (int px = 0; px < x->w; px++)
      job->simd->add(feature_map_at(x, py, px), sums, (size_t)x->c);
}

/* The channel sums of the bands' partials, band after band, into sums (= or +=). */
static void add_partials(const ChannelJob *job, int bands, int c, float *sums, int accumulate)
{
  for (int ch = 0; ch < c; ch++) {
    float total = 0.0f;
    for (int b = 0; b < bands; b++)
      total += job->partials[b * job->partial_step + ch];
    sums[ch] = accumulate ? sums[ch] + total : total;
  }
}

static float *band_partials(ThreadPool *pool, int bands, size_t step)
{
  return thread_pool_scratch(pool, 0, bands * step);
}

void global_avg_pool_forward(const FeatureMap *x, float *y, ThreadPool *pool)
{
  const SimdKernels *simd = simd_kernels();
  if (!simd || x->h <= 0 || x->w <= 0) {
    global_avg_pool_forward_ref(x, y);
    return;
  }
  ChannelJob job = { .simd = simd, .x = x, .partial_step = ((size_t)x->c + 15) & ~(size_t)15 };
  int bands = row_band_count(pool, x->h, (size_t)x->w * x->c);
  thread_pool_hold(pool);
  job.partials = band_partials(pool, bands, job.partial_step);
  run_row_bands(pool, x->h, bands, pool_band, &job);
  add_partials(&job, bands, x->c, y, 0);
  thread_pool_release(pool);
  float n = (float)x->h * (float)x->w;
  for (int ch = 0; ch < x->c; ch++)
    y[ch] /= n;
}

/* dx (= or +=) s * dy per pixel, and the partial sums of dy * x when partials is not NULL: the
 * scale's backward; the pooling's backward is a broadcast (dy NULL: dx = or += s). */
static void spread_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  const ChannelJob *job = arg;
  const FeatureMap *x = job->x, *dy = job->dy;
  FeatureMap *dx = job->out;
  int c = dx ? dx->c : x->c;
  float *sums = job->partials ? job->partials + band * job->partial_step : NULL;
  if (sums)
    memset(sums, 0, sizeof(float) * c);
  int w = dx ? dx->w : x->w;
  for (int py = row_begin; py < row_end; py++)
    for (int px = 0; px < w; px++) {
      const float *grad = dy ? feature_map_at(dy, py, px) : NULL;
      if (sums)
        job->k->dot_add(grad, feature_map_at(x, py, px), sums, (size_t)c);
      if (!dx)
        continue;
      float *d = feature_map_at(dx, py, px);
      if (grad)
        job->k->mul_into(grad, job->s, d, (size_t)c, job->accumulate);
      else if (job->accumulate)
        job->simd->add(job->s, d, (size_t)c);
      else
        memcpy(d, job->s, sizeof(float) * c);
    }
}

void global_avg_pool_backward(const float *dy, FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  const SimdKernels *simd = simd_kernels();
  if (!simd || dx->h <= 0 || dx->w <= 0) {
    global_avg_pool_backward_ref(dy, dx, accumulate);
    return;
  }
  thread_pool_hold(pool);
  float *share = thread_pool_scratch(pool, 0, (size_t)dx->c);
  float n = (float)dx->h * (float)dx->w;
  for (int ch = 0; ch < dx->c; ch++)
    share[ch] = dy[ch] / n;
  ChannelJob job = { .simd = simd, .out = dx, .s = share, .accumulate = accumulate };
  run_row_bands(pool, dx->h, row_band_count(pool, dx->h, (size_t)dx->w * dx->c), spread_band,
                &job);
  thread_pool_release(pool);
}

static void scale_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  const ChannelJob *job = arg;
  const FeatureMap *x = job->x;
  for (int py = row_begin; py < row_end; py++)
    for (int px = 0; px < x->w; px++)
      job->k->mul(feature_map_at(x, py, px), job->s, feature_map_at(job->out, py, px),
                  (size_t)x->c);
}

void channel_scale_forward(const FeatureMap *x, const float *s, FeatureMap *y, ThreadPool *pool)
{
  const MobileKernels *k = mobile_kernels();
  if (!k) {
    channel_scale_forward_ref(x, s, y);
    return;
  }
  ChannelJob job = { .k = k, .x = x, .out = y, .s = s };
  run_row_bands(pool, x->h, row_band_count(pool, x->h, (size_t)x->w * x->c), scale_band, &job);
}

void channel_scale_backward(const FeatureMap *x, const float *s, const FeatureMap *dy,
                            FeatureMap *dx, float *ds, int accumulate, ThreadPool *pool)
{
  const MobileKernels *k = mobile_kernels();
  if (!k || x->h <= 0 || x->w <= 0) {
    channel_scale_backward_ref(x, s, dy, dx, ds, accumulate);
    return;
  }
  ChannelJob job = { .simd = simd_kernels(), .k = k, .x = x, .dy = dy, .out = dx, .s = s,
                     .partial_step = ((size_t)x->c + 15) & ~(size_t)15,
                     .accumulate = accumulate };
  int bands = row_band_count(pool, x->h, (size_t)x->w * x->c * 2);
  thread_pool_hold(pool);
  if (ds)
    job.partials = band_partials(pool, bands, job.partial_step);
  run_row_bands(pool, x->h, bands, spread_band, &job);
  if (ds)
    add_partials(&job, bands, x->c, ds, 1);
  thread_pool_release(pool);
}
