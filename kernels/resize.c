/* resize.c: public bilinear resizing entry points: ISA dispatch and row bands over the pool.
 *
 * Both directions are separable: a vertical pass over whole rows (one long span when the map is
 * not a slice), then a horizontal pass within one row. The backward pass gathers: each thread owns
 * a band of dx rows and sums the dy rows that touch them (a contiguous range), so no two threads
 * ever write the same row. */
#include <string.h>

#include "bilinear.h"
#include "kernels.h"
#include "row_bands.h"
#include "simd.h"

typedef struct {
  int32_t *i0, *i1;
  float *frac;
} Taps;

static size_t round16(size_t n)
{
  return (n + 15) & ~(size_t)15;
}

/* Carves n taps out of scratch memory (int32 and float share the float scratch's size). */
static Taps taps_in(float *mem, size_t n)
{
  size_t stride = round16(n);
  Taps t = { (int32_t *)mem, (int32_t *)(mem + stride), mem + 2 * stride };
  return t;
}

typedef struct {
  const FeatureMap *src;
  FeatureMap *dst;
  int accumulate;
  const SimdKernels *k;
  ThreadPool *pool;
} ResizeJob;

/* Row y0 + (y1 - y0) * fy of x into the contiguous row out (x->w * x->c floats). */
static void blend_rows(const SimdKernels *k, const FeatureMap *x, int y0, int y1, float fy,
                       float *out)
{
  if (x->ld == x->c) {
    k->lerp(feature_map_at(x, y0, 0), feature_map_at(x, y1, 0), fy, out, (size_t)x->w * x->c);
    return;
  }
  for (int px = 0; px < x->w; px++)
    k->lerp(feature_map_at(x, y0, px), feature_map_at(x, y1, px), fy, out + (size_t)px * x->c,
            (size_t)x->c);
}

static void resize_forward_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  const ResizeJob *job = arg;
  const FeatureMap *x = job->src;
  FeatureMap *y = job->dst;
  int c = x->c;
  /* Few channels fill no vector per pixel: interpolate the whole output row as one span. */
  int per_element = c < 8 && y->ld == c;
  size_t blended_n = round16((size_t)x->w * c), column_n = 3 * round16((size_t)y->w);
  size_t element_n = per_element ? 3 * round16((size_t)y->w * c) : 0;
  float *blended = thread_pool_scratch(job->pool, thread, blended_n + column_n + element_n);
  Taps column = taps_in(blended + blended_n, (size_t)y->w);
  bilinear_taps(x->w, y->w, column.i0, column.i1, column.frac);
  Taps element = taps_in(blended + blended_n + column_n, (size_t)y->w * c);
  for (int ox = 0; per_element && ox < y->w; ox++)
    for (int ch = 0; ch < c; ch++) {
      size_t e = (size_t)ox * c + ch;
      element.i0[e] = column.i0[ox] * c + ch;
      element.i1[e] = column.i1[ox] * c + ch;
      element.frac[e] = column.frac[ox];
    }

  for (int oy = row_begin; oy < row_end; oy++) {
    int y0, y1;
    float fy;
    bilinear_tap(oy, x->h, y->h, &y0, &y1, &fy);
    blend_rows(job->k, x, y0, y1, fy, blended);
    if (per_element) {
      job->k->lerp_gather(blended, element.i0, element.i1, element.frac,
                          feature_map_at(y, oy, 0), (size_t)y->w * c);
      continue;
    }
    job->k->lerp_pixels(blended, c, column.i0, column.i1, column.frac, feature_map_at(y, oy, 0),
                        y->ld, y->w);
  }
}

void resize_bilinear_forward(const FeatureMap *x, FeatureMap *y, ThreadPool *pool)
{
  const SimdKernels *k = simd_kernels();
  if (!k) {
    resize_bilinear_forward_ref(x, y);
    return;
  }
  ResizeJob job = { x, y, 0, k, pool };
  run_row_bands(pool, y->h, row_band_count(pool, y->h, (size_t)y->w * y->c * 2),
                resize_forward_band, &job);
}

/* The first dy row whose lower tap reaches dx row iy (taps are monotonic in the dy row). */
static int first_dy_row(int iy, int in, int out)
{
  int lo = 0, hi = out;
  while (lo < hi) {
    int mid = (lo + hi) / 2, y0, y1;
    float fy;
    bilinear_tap(mid, in, out, &y0, &y1, &fy);
    if (y1 >= iy)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/* summed = sum over the dy rows touching dx row iy of their vertical weight times the row;
 * returns 0 when none does. */
static int sum_dy_rows(const ResizeJob *job, int iy, float *summed)
{
  const FeatureMap *dy = job->src, *dx = job->dst;
  size_t row_n = (size_t)dy->w * dy->c;
  int touched = 0;
  for (int oy = first_dy_row(iy, dx->h, dy->h); oy < dy->h; oy++) {
    int y0, y1;
    float fy;
    bilinear_tap(oy, dx->h, dy->h, &y0, &y1, &fy);
    if (y0 > iy)
      break;
    float weight = (y0 == iy ? 1.0f - fy : 0.0f) + (y1 == iy ? fy : 0.0f);
    if (!touched)
      memset(summed, 0, row_n * sizeof(float));
    touched = 1;
    if (dy->ld == dy->c) {
      job->k->axpy(weight, feature_map_at(dy, oy, 0), summed, row_n);
      continue;
    }
    for (int ox = 0; ox < dy->w; ox++)
      job->k->axpy(weight, feature_map_at(dy, oy, ox), summed + (size_t)ox * dy->c,
                   (size_t)dy->c);
  }
  return touched;
}

static void resize_backward_band(void *arg, int band, int row_begin, int row_end, int thread)
{
  const ResizeJob *job = arg;
  const FeatureMap *dy = job->src;
  FeatureMap *dx = job->dst;
  int c = dx->c;
  size_t summed_n = round16((size_t)dy->w * c);
  float *summed = thread_pool_scratch(job->pool, thread, summed_n + 3 * round16((size_t)dy->w));
  Taps column = taps_in(summed + summed_n, (size_t)dy->w);
  bilinear_taps(dx->w, dy->w, column.i0, column.i1, column.frac);

  for (int iy = row_begin; iy < row_end; iy++) {
    if (!job->accumulate)
      for (int ix = 0; ix < dx->w; ix++)
        memset(feature_map_at(dx, iy, ix), 0, sizeof(float) * c);
    if (!sum_dy_rows(job, iy, summed))
      continue;
    job->k->lerp_pixels_backward(summed, c, column.i0, column.i1, column.frac,
                                 feature_map_at(dx, iy, 0), dx->ld, dy->w);
  }
}

void resize_bilinear_backward(const FeatureMap *dy, FeatureMap *dx, int accumulate,
                              ThreadPool *pool)
{
  const SimdKernels *k = simd_kernels();
  if (!k) {
    resize_bilinear_backward_ref(dy, dx, accumulate);
    return;
  }
  ResizeJob job = { dy, dx, accumulate, k, pool };
  run_row_bands(pool, dx->h, row_band_count(pool, dx->h, (size_t)dy->w * dy->c * 4),
                resize_backward_band, &job);
}
