/* simd.h: inner loops of the element-wise, resize, loss and argmax kernels, one table per ISA.
 *
 * The public entry points (elementwise.c, resize.c, loss.c, argmax_bilinear.c) split rows over
 * the thread pool and call these on spans of one row; the scalar ISA uses the *_ref functions
 * instead. Spans are plain float runs: a row of a FeatureMap whose ld == c is one span, a slice
 * is one per pixel. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

typedef struct {
  /* dy[i] = y[i] > 0 ? dy[i] : 0 */
  void (*relu_backward)(const float *y, float *dy, size_t n);
  /* dst[i] += src[i] */
  void (*add)(const float *src, float *dst, size_t n);
  /* y[i] += alpha * x[i] */
  void (*axpy)(float alpha, const float *x, float *y, size_t n);
  /* out[i] = a[i] + (b[i] - a[i]) * t */
  void (*lerp)(const float *a, const float *b, float t, float *out, size_t n);
  /* out[i] = row[i0[i]] + (row[i1[i]] - row[i0[i]]) * t[i]: the horizontal pass of a resize
   * with few channels, vectorised over pixels and channels at once. */
  void (*lerp_gather)(const float *row, const int32_t *i0, const int32_t *i1, const float *t,
                      float *out, size_t n);
  /* The horizontal pass of a resize over one row of n output pixels of c channels:
   * out[ox * ld + ch] = a + (b - a) * t[ox], a = row[i0[ox] * c + ch], b = row[i1[ox] * c + ch]. */
  void (*lerp_pixels)(const float *row, int c, const int32_t *i0, const int32_t *i1,
                      const float *t, float *out, ptrdiff_t ld, int n);
  /* Its gradient: dx[i0[ox] * ld + ch] += (1 - t[ox]) * g[ox * c + ch], and dx[i1[ox] * ld + ch]
   * += t[ox] * g[ox * c + ch], pixel after pixel. */
  void (*lerp_pixels_backward)(const float *g, int c, const int32_t *i0, const int32_t *i1,
                               const float *t, float *dx, ptrdiff_t ld, int n);
  /* Softmax cross-entropy of `pixels` pixels (logits z, c channels, ld floats apart): returns
   * sum(weight * loss) over the pixels that count and, when dz is not NULL, writes
   * weight * scale * (softmax - onehot) there (0 at pixels that do not count). weights NULL =
   * all 1. */
  double (*softmax_xent_row)(const float *z, int ld, int c, const uint8_t *labels,
                             const float *weights, float scale, float *dz, int ld_dz,
                             int pixels);
  /* classes[p] = argmax over the c channels of pixel p (lowest index on ties). */
  void (*argmax_row)(const float *z, int ld, int c, uint8_t *classes, int pixels);
  /* The vertical pass and argmax of argmax_bilinear over one row of n pixels: with
   * v(p) = top[p * step + i] + (bottom[p * step + i] - top[p * step + i]) * t, classes[i] = the
   * p < planes of the largest v(p), the lowest on ties; with one plane (the difference of two
   * classes' logits), whether v(0) > 0. */
  void (*lerp_argmax)(const float *top, const float *bottom, size_t step, int planes, float t,
                      uint8_t *classes, int n);
} SimdKernels;

extern const SimdKernels simd_kernels_avx512;
extern const SimdKernels simd_kernels_avx2;

/* The table for the ISA in use; NULL for scalar (the references are the scalar path). */
static inline const SimdKernels *simd_kernels(void)
{
  switch (kernels_isa()) {
  case KERNELS_ISA_AVX512:
    return &simd_kernels_avx512;
  case KERNELS_ISA_AVX2:
    return &simd_kernels_avx2;
  default:
    return NULL;
  }
}

/* FMA throughput probes (fma_peak_*.c): `rounds` rounds of independent FMA chains held in
 * registers; each returns the flops one round performs, and stores a result in *sink so that the
 * work cannot be optimised away. */
uint64_t fma_peak_chains_avx512(uint64_t rounds, float *sink);
uint64_t fma_peak_chains_avx2(uint64_t rounds, float *sink);
