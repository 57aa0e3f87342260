/* argmax_bilinear.c: the class map of logits resized bilinearly: ISA dispatch and row bands.
 *
 * Separable, and horizontal first, as the reference: each source row the band needs is resized to
 * the destination's width once, into one of two slots, as planes of floats (the difference of the
 * two logits with two classes, one plane per class otherwise); each destination row is then the
 * vertical interpolation of two slots and its argmax, in one pass. Upsampling, a source row serves
 * two or three destination rows.
 *
 * The scalar ISA runs the same passes in plain C rather than the reference: pixel by pixel, the
 * reference recomputes four source pixels and their taps for each destination pixel, several
 * times the work, on the CPUs least able to afford it. */
#include "bilinear.h"
#include "kernels.h"
#include "row_bands.h"
#include "simd.h"

typedef struct {
  const FeatureMap *logits;
  int width, height;
  uint8_t *classes;
  size_t row_stride;
  int planes; /* 1: the two-class difference; else one per class */
  /* SimdKernels.lerp_gather and .lerp_argmax, or their plain-C versions below */
  void (*lerp_gather)(const float *row, const int32_t *i0, const int32_t *i1, const float *t,
                      float *out, size_t n);
  void (*lerp_argmax)(const float *top, const float *bottom, size_t step, int planes, float t,
                      uint8_t *classes, int n);
  ThreadPool *pool;
} ArgmaxBilinearJob;

static void lerp_gather_scalar(const float *row, const int32_t *i0, const int32_t *i1,
                               const float *t, float *out, size_t n)
{
  for (size_t i = 0; i < n; i++)
    out[i] = row[i0[i]] + (row[i1[i]] - row[i0[i]]) * t[i];
}

static void lerp_argmax_scalar(const float *top, const float *bottom, size_t step, int planes,
                               float t, uint8_t *classes, int n)
{
  for (int i = 0; i < n; i++) {
    float best = top[i] + (bottom[i] - top[i]) * t;
    if (planes == 1) {
      classes[i] = best > 0.0f;
      continue;
    }
    int index = 0;
    for (int p = 1; p < planes; p++) {
      const float *a = top + p * step, *b = bottom + p * step;
      float v = a[i] + (b[i] - a[i]) * t;
      if (v > best) {
        best = v;
        index = p;
      }
    }
    classes[i] = (uint8_t)index;
  }
}

/* A source row resized horizontally: planes of the destination's width (BandRows.plane_step). */
typedef struct {
  int row; /* -1: empty */
  float *planes;
} ResizedRow;

/* A band's working set in its thread's scratch: the column taps, one source row as planes, and
 * the two slots. */
typedef struct {
  int32_t *i0, *i1;
  float *frac;
  float *source;
  size_t source_step, plane_step;
  ResizedRow slot[2];
} BandRows;

static size_t round16(size_t n)
{
  return (n + 15) & ~(size_t)15;
}

static void band_rows_init(const ArgmaxBilinearJob *job, int thread, BandRows *rows)
{
  size_t wide = round16((size_t)job->width), narrow = round16((size_t)job->logits->w);
  size_t planes = (size_t)job->planes;
  float *mem = thread_pool_scratch(job->pool, thread, 3 * wide + planes * (narrow + 2 * wide));
  rows->i0 = (int32_t *)mem;
  rows->i1 = (int32_t *)(mem + wide);
  rows->frac = mem + 2 * wide;
  rows->source = mem + 3 * wide;
  rows->source_step = narrow;
  rows->plane_step = wide;
  for (int s = 0; s < 2; s++)
    rows->slot[s] = (ResizedRow){ -1, rows->source + planes * narrow + s * planes * wide };
  bilinear_taps(job->logits->w, job->width, rows->i0, rows->i1, rows->frac);
}

/* Source row r resized, from a slot, or into the slot that does not hold row `keep`. */
static const float *resized_row(const ArgmaxBilinearJob *job, BandRows *rows, int r, int keep)
{
  for (int s = 0; s < 2; s++)
    if (rows->slot[s].row == r)
      return rows->slot[s].planes;
  ResizedRow *slot = &rows->slot[rows->slot[0].row == keep ? 1 : 0];
  const FeatureMap *z = job->logits;
  const float *px = feature_map_at(z, r, 0);
  if (job->planes == 1)
    for (int x = 0; x < z->w; x++, px += z->ld)
      rows->source[x] = px[1] - px[0];
  else
    for (int x = 0; x < z->w; x++, px += z->ld)
      for (int ch = 0; ch < z->c; ch++)
        rows->source[ch * rows->source_step + x] = px[ch];
  for (int p = 0; p < job->planes; p++)
    job->lerp_gather(rows->source + p * rows->source_step, rows->i0, rows->i1, rows->frac,
                     slot->planes + p * rows->plane_step, (size_t)job->width);
  slot->row = r;
  return slot->planes;
}

static void argmax_bilinear_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  const ArgmaxBilinearJob *job = arg;
  BandRows rows;
  band_rows_init(job, thread, &rows);
  for (int y = row_begin; y < row_end; y++) {
    int y0, y1;
    float fy;
    bilinear_tap(y, job->logits->h, job->height, &y0, &y1, &fy);
    const float *top = resized_row(job, &rows, y0, y1);
    const float *bottom = resized_row(job, &rows, y1, y0);
    job->lerp_argmax(top, bottom, rows.plane_step, job->planes, fy,
                     job->classes + (size_t)y * job->row_stride, job->width);
  }
}

void argmax_bilinear(const FeatureMap *logits, int width, int height, uint8_t *classes,
                     size_t row_stride, ThreadPool *pool)
{
  if (logits->c < 2) {
    argmax_bilinear_ref(logits, width, height, classes, row_stride);
    return;
  }
  const SimdKernels *k = simd_kernels();
  int planes = logits->c == 2 ? 1 : logits->c;
  ArgmaxBilinearJob job = {
    logits, width, height, classes, row_stride, planes,
    k ? k->lerp_gather : lerp_gather_scalar, k ? k->lerp_argmax : lerp_argmax_scalar, pool,
  };
  run_row_bands(pool, height, row_band_count(pool, height, (size_t)width * planes * 2),
                argmax_bilinear_band, &job);
}
