/* distill_input.c: packed 8-bit frames to the student's input, and the thumbnail the
 * scene-change trigger compares. */
#include <math.h>

#include "bilinear.h"
#include "distill_private.h"

/* Horizontal taps are computed once per call, in chunks of this many output columns on the stack,
 * so that the per-pixel work is two loads per channel and a few multiply-adds. */
#define TAP_CHUNK 512

void distill_input_from_rgb(const uint8_t *pixels, int width, int height, int row_stride,
                            int pixel_stride, const int rgb_offset[3], FeatureMap *input)
{
  static const int rgb[3] = { 0, 1, 2 };
  const int *off = rgb_offset ? rgb_offset : rgb;
  const float scale = 1.0f / 255.0f;
  size_t left[TAP_CHUNK], right[TAP_CHUNK];
  float frac[TAP_CHUNK];
  for (int xa = 0; xa < input->w; xa += TAP_CHUNK) {
    int n = input->w - xa < TAP_CHUNK ? input->w - xa : TAP_CHUNK;
    for (int i = 0; i < n; i++) {
      int x0, x1;
      bilinear_tap(xa + i, width, input->w, &x0, &x1, &frac[i]);
      left[i] = (size_t)x0 * pixel_stride;
      right[i] = (size_t)x1 * pixel_stride;
    }
    for (int y = 0; y < input->h; y++) {
      int y0, y1;
      float fy;
      bilinear_tap(y, height, input->h, &y0, &y1, &fy);
      const uint8_t *row0 = pixels + (size_t)y0 * row_stride;
      const uint8_t *row1 = pixels + (size_t)y1 * row_stride;
      float *out = feature_map_at(input, y, xa);
      for (int i = 0; i < n; i++, out += input->ld) {
        float fx = frac[i];
        for (int c = 0; c < 3; c++) {
          int o = off[c];
          out[c] = bilinear_blend(row0[left[i] + o], row0[right[i] + o], row1[left[i] + o],
                                  row1[right[i] + o], fx, fy) * scale - 0.5f;
        }
      }
    }
  }
}

void distill_map_reserve(FeatureMap *map, size_t *capacity, int h, int w, int c)
{
  size_t floats = (size_t)h * w * c;
  if (floats > *capacity) {
    g_free(map->data);
    map->data = g_new(float, floats);
    *capacity = floats;
  }
  *map = feature_map(map->data, h, w, c);
}

void distill_input_reserve(FeatureMap *map, size_t *capacity, int h, int w)
{
  distill_map_reserve(map, capacity, h, w, 3);
}

void distill_thumbnail(const FeatureMap *input, float *thumb)
{
  /* Block means over every second pixel of every second row: plenty for a change statistic. */
  for (int ty = 0; ty < DISTILL_THUMB_H; ty++) {
    int ya = ty * input->h / DISTILL_THUMB_H, yb = (ty + 1) * input->h / DISTILL_THUMB_H;
    for (int tx = 0; tx < DISTILL_THUMB_W; tx++) {
      int xa = tx * input->w / DISTILL_THUMB_W, xb = (tx + 1) * input->w / DISTILL_THUMB_W;
      float sum[3] = { 0 };
      int count = 0;
      for (int y = ya; y < yb; y += 2)
        for (int x = xa; x < xb; x += 2) {
          const float *p = feature_map_at(input, y, x);
          sum[0] += p[0];
          sum[1] += p[1];
          sum[2] += p[2];
          count++;
        }
      float *t = thumb + (ty * DISTILL_THUMB_W + tx) * 3;
      for (int c = 0; c < 3; c++)
        t[c] = count ? sum[c] / (float)count : 0.0f;
    }
  }
}

/* The k-th smallest of v[0..n) (v is reordered): Hoare's selection, in place, so that no sort
 * buffer is allocated per frame. */
static float select_kth(float *v, int n, int k)
{
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    float pivot = v[(lo + hi) / 2];
    int i = lo, j = hi;
    while (i <= j) {
      while (v[i] < pivot)
        i++;
      while (v[j] > pivot)
        j--;
      if (i <= j) {
        float t = v[i];
        v[i++] = v[j];
        v[j--] = t;
      }
    }
    if (k <= j)
      hi = j;
    else if (k >= i)
      lo = i;
    else
      break;
  }
  return v[k];
}

double distill_thumbnail_distance(const float *a, const float *b)
{
  /* The median cell: objects moving over a still scene change a minority of the cells (on the
   * synthetic scene the median stays below 0.005 over 64 frames, where the mean reaches 0.08),
   * while a cut, a camera move or a lighting change moves most of them (0.09 to 0.10 at a cut). */
  enum { CELLS = DISTILL_THUMB_W * DISTILL_THUMB_H };
  float cell[CELLS];
  for (int i = 0; i < CELLS; i++)
    cell[i] = (fabsf(a[3 * i] - b[3 * i]) + fabsf(a[3 * i + 1] - b[3 * i + 1]) +
               fabsf(a[3 * i + 2] - b[3 * i + 2])) / 3.0f;
  return select_kth(cell, CELLS, CELLS / 2);
}
