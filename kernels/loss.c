/* loss.c: public loss and argmax entry points: ISA dispatch and row bands over the pool.
 *
 * The gradient needs 1 / (sum of the weights that count) before the first pixel is written, so
 * the loss runs in two passes: the weight sum (labels and weights only), then loss and gradient
 * together. Each band sums into its own double; bands are reduced in order, so a given pool
 * size always gives the same result. */
#include "kernels.h"
#include "row_bands.h"
#include "simd.h"

typedef struct {
  const FeatureMap *logits;
  const uint8_t *labels;
  const float *pixel_weight;
  FeatureMap *dlogits;
  float scale;
  const SimdKernels *k;
  double band_sum[ROW_BANDS_MAX];
} SoftmaxXentJob;

static void weight_sum_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  SoftmaxXentJob *job = arg;
  int classes = job->logits->c;
  size_t begin = (size_t)row_begin * job->logits->w, end = (size_t)row_end * job->logits->w;
  double sum = 0.0;
  for (size_t i = begin; i < end; i++)
    if (job->labels[i] < classes)
      sum += job->pixel_weight ? job->pixel_weight[i] : 1.0f;
  job->band_sum[band] = sum;
}

static void softmax_xent_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  SoftmaxXentJob *job = arg;
  const FeatureMap *z = job->logits;
  FeatureMap *dz = job->dlogits;
  double sum = 0.0;
  for (int py = row_begin; py < row_end; py++) {
    size_t i = (size_t)py * z->w;
    sum += job->k->softmax_xent_row(feature_map_at(z, py, 0), z->ld, z->c, job->labels + i,
                                    job->pixel_weight ? job->pixel_weight + i : NULL, job->scale,
                                    dz ? feature_map_at(dz, py, 0) : NULL, dz ? dz->ld : 0, z->w);
  }
  job->band_sum[band] = sum;
}

static double sum_of_bands(const double *band_sum, int bands)
{
  double sum = 0.0;
  for (int b = 0; b < bands; b++)
    sum += band_sum[b];
  return sum;
}

double softmax_xent(const FeatureMap *logits, const uint8_t *labels, const float *pixel_weight,
                    FeatureMap *dlogits, ThreadPool *pool)
{
  const SimdKernels *k = simd_kernels();
  if (!k)
    return softmax_xent_ref(logits, labels, pixel_weight, dlogits);
  SoftmaxXentJob job = { logits, labels, pixel_weight, dlogits, 0.0f, k, { 0 } };
  int h = logits->h;
  run_row_bands(pool, h, row_band_count(pool, h, (size_t)logits->w), weight_sum_band, &job);
  double weight_sum = sum_of_bands(job.band_sum, row_band_count(pool, h, (size_t)logits->w));
  double scale = weight_sum > 0.0 ? 1.0 / weight_sum : 0.0;
  job.scale = (float)scale;
  /* exp, log and the gradient: about 8 floats of work per logit */
  int bands = row_band_count(pool, h, (size_t)logits->w * logits->c * 8);
  run_row_bands(pool, h, bands, softmax_xent_band, &job);
  return sum_of_bands(job.band_sum, bands) * scale;
}

typedef struct {
  const FeatureMap *logits;
  uint8_t *classes;
  const SimdKernels *k;
} ArgmaxJob;

static void argmax_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  const ArgmaxJob *job = arg;
  const FeatureMap *z = job->logits;
  for (int py = row_begin; py < row_end; py++)
    job->k->argmax_row(feature_map_at(z, py, 0), z->ld, z->c, job->classes + (size_t)py * z->w,
                       z->w);
}

void argmax_channels(const FeatureMap *logits, uint8_t *classes, ThreadPool *pool)
{
  const SimdKernels *k = simd_kernels();
  if (!k) {
    argmax_channels_ref(logits, classes);
    return;
  }
  ArgmaxJob job = { logits, classes, k };
  run_row_bands(pool, logits->h,
                row_band_count(pool, logits->h, (size_t)logits->w * logits->c), argmax_band,
                &job);
}
