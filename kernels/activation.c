/* activation.c: the element-wise activations' entry points: ISA dispatch, row bands over the
 * pool, one span per row when no map is a slice. */
#include "mobile_impl.h"
#include "row_bands.h"

typedef struct {
  const MobileKernels *k;
  Activation f;
  const FeatureMap *z, *dy; /* dy: NULL forward */
  FeatureMap *out;          /* y forward, dz backward */
  int accumulate;
} ActivationJob;

static void span(const ActivationJob *job, const float *z, const float *dy, float *out, size_t n)
{
  if (job->dy)
    job->k->activation_backward(job->f, z, dy, out, n, job->accumulate);
  else
    job->k->activation(job->f, z, out, n);
}

static void activation_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  const ActivationJob *job = arg;
  const FeatureMap *z = job->z, *dy = job->dy;
  FeatureMap *out = job->out;
  int whole_rows = z->ld == z->c && out->ld == out->c && (!dy || dy->ld == dy->c);
  for (int py = row_begin; py < row_end; py++) {
    if (whole_rows) {
      span(job, feature_map_at(z, py, 0), dy ? feature_map_at(dy, py, 0) : NULL,
           feature_map_at(out, py, 0), (size_t)z->w * z->c);
      continue;
    }
    for (int px = 0; px < z->w; px++)
      span(job, feature_map_at(z, py, px), dy ? feature_map_at(dy, py, px) : NULL,
           feature_map_at(out, py, px), (size_t)z->c);
  }
}

static void run_activation(const ActivationJob *job, ThreadPool *pool)
{
  const FeatureMap *z = job->z;
  run_row_bands(pool, z->h, row_band_count(pool, z->h, (size_t)z->w * z->c), activation_band,
                (void *)job);
}

void activation_forward(Activation f, const FeatureMap *z, FeatureMap *y, ThreadPool *pool)
{
  const MobileKernels *k = mobile_kernels();
  if (!k) {
    activation_forward_ref(f, z, y);
    return;
  }
  ActivationJob job = { k, f, z, NULL, y, 0 };
  run_activation(&job, pool);
}

void activation_backward(Activation f, const FeatureMap *z, const FeatureMap *dy, FeatureMap *dz,
                         int accumulate, ThreadPool *pool)
{
  const MobileKernels *k = mobile_kernels();
  if (!k) {
    activation_backward_ref(f, z, dy, dz, accumulate);
    return;
  }
  ActivationJob job = { k, f, z, dy, dz, accumulate };
  run_activation(&job, pool);
}
