/* elementwise.c: public element-wise entry points: ISA dispatch and row bands over the pool. */
#include <string.h>

#include "kernels.h"
#include "row_bands.h"
#include "simd.h"

/* A span operation: out[i] = f(in[i], out[i]) for i in [0, n). */
typedef void (*SpanFn)(const float *in, float *out, size_t n);

typedef struct {
  const FeatureMap *in;
  FeatureMap *out;
  SpanFn span;
} PixelwiseJob;

static void copy_span(const float *src, float *dst, size_t n)
{
  memcpy(dst, src, n * sizeof(float));
}

/* Rows of two maps of the same size: one span per row when neither is a slice. */
static void pixelwise_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  const PixelwiseJob *job = arg;
  const FeatureMap *in = job->in;
  FeatureMap *out = job->out;
  int whole_rows = in->ld == in->c && out->ld == out->c;
  for (int py = row_begin; py < row_end; py++) {
    if (whole_rows) {
      job->span(feature_map_at(in, py, 0), feature_map_at(out, py, 0), (size_t)in->w * in->c);
      continue;
    }
    for (int px = 0; px < in->w; px++)
      job->span(feature_map_at(in, py, px), feature_map_at(out, py, px), (size_t)in->c);
  }
}

static void run_pixelwise(const FeatureMap *in, FeatureMap *out, SpanFn span, ThreadPool *pool)
{
  PixelwiseJob job = { in, out, span };
  run_row_bands(pool, in->h, row_band_count(pool, in->h, (size_t)in->w * in->c), pixelwise_band,
                &job);
}

void relu_backward(const FeatureMap *y, FeatureMap *dy, ThreadPool *pool)
{
  const SimdKernels *k = simd_kernels();
  if (!k) {
    relu_backward_ref(y, dy);
    return;
  }
  run_pixelwise(y, dy, k->relu_backward, pool);
}

void feature_map_copy(const FeatureMap *src, FeatureMap *dst, int accumulate, ThreadPool *pool)
{
  const SimdKernels *k = simd_kernels();
  if (!k) {
    feature_map_copy_ref(src, dst, accumulate);
    return;
  }
  run_pixelwise(src, dst, accumulate ? k->add : copy_span, pool);
}

typedef struct {
  const FeatureMap *small, *large; /* y and x forward, dy and dx backward */
  int accumulate;
  const SimdKernels *k;
} Subsample2Job;

static void subsample2_forward_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  const Subsample2Job *job = arg;
  for (int py = row_begin; py < row_end; py++)
    for (int px = 0; px < job->small->w; px++)
      memcpy(feature_map_at(job->small, py, px), feature_map_at(job->large, 2 * py, 2 * px),
             sizeof(float) * job->small->c);
}

/* Rows of dx: even rows take dy at even columns and zero elsewhere; odd rows are all zero. */
static void subsample2_backward_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  const Subsample2Job *job = arg;
  const FeatureMap *dy = job->small, *dx = job->large;
  size_t bytes = sizeof(float) * dx->c;
  for (int py = row_begin; py < row_end; py++)
    for (int px = 0; px < dx->w; px++) {
      float *d = feature_map_at(dx, py, px);
      if (py % 2 == 0 && px % 2 == 0) {
        const float *s = feature_map_at(dy, py / 2, px / 2);
        if (job->accumulate)
          job->k->add(s, d, (size_t)dx->c);
        else
          memcpy(d, s, bytes);
      } else if (!job->accumulate) {
        memset(d, 0, bytes);
      }
    }
}

void subsample2_forward(const FeatureMap *x, FeatureMap *y, ThreadPool *pool)
{
  const SimdKernels *k = simd_kernels();
  if (!k) {
    subsample2_forward_ref(x, y);
    return;
  }
  Subsample2Job job = { y, x, 0, k };
  run_row_bands(pool, y->h, row_band_count(pool, y->h, (size_t)y->w * y->c),
                subsample2_forward_band, &job);
}

void subsample2_backward(const FeatureMap *dy, FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  const SimdKernels *k = simd_kernels();
  if (!k) {
    subsample2_backward_ref(dy, dx, accumulate);
    return;
  }
  Subsample2Job job = { dy, dx, accumulate, k };
  run_row_bands(pool, dx->h, row_band_count(pool, dx->h, (size_t)dx->w * dx->c),
                subsample2_backward_band, &job);
}
