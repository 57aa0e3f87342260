/* bilinear.h: the source taps of bilinear resampling with half-pixel centres (PyTorch's
 * align_corners=False), the one definition that every resize, upsampling and label map uses.
 *
 * Include it only in code built for the baseline ISA: where FMA is enabled, the compiler may fuse
 * the multiply and the subtraction below, and a tap would then differ from the references'. The
 * fast kernels take their taps from their baseline-built entry points. */
#pragma once

#include <stdint.h>

/* Destination sample d of an axis resized from `in` samples to `out` reads source samples *i0
 * and *i1 (the next one, or *i0 again at the last), weighted 1 - *frac and *frac. Destinations
 * before the first source centre read it alone (*frac = 0). */
static inline void bilinear_tap(int d, int in, int out, int *i0, int *i1, float *frac)
{
  float s = ((float)d + 0.5f) * ((float)in / (float)out) - 0.5f;
  if (s < 0.0f)
    s = 0.0f;
  int lo = (int)s;
  if (lo > in - 1)
    lo = in - 1;
  *i0 = lo;
  *i1 = lo < in - 1 ? lo + 1 : lo;
  *frac = s - (float)lo;
}

/* The taps of destinations [0, out) of an axis, one array each. */
static inline void bilinear_taps(int in, int out, int32_t *i0, int32_t *i1, float *frac)
{
  for (int d = 0; d < out; d++) {
    int lo, hi;
    bilinear_tap(d, in, out, &lo, &hi, &frac[d]);
    i0[d] = lo;
    i1[d] = hi;
  }
}

/* The bilinear value between a (top left), b (top right), c (bottom left) and d (bottom right):
 * the two rows at frac fx first, then between them at fy. */
static inline float bilinear_blend(float a, float b, float c, float d, float fx, float fy)
{
  float top = a + (b - a) * fx, bottom = c + (d - c) * fx;
  return top + (bottom - top) * fy;
}
