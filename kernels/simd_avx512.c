/* simd_avx512.c: AVX-512 inner loops of the element-wise, resize, loss and argmax kernels
 * (see simd.h). Tails use mask registers, so every span length runs through the same code. */
#include <immintrin.h>
#include <math.h>

#include "simd.h"

static inline __mmask16 tail_mask(size_t n)
{
  return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

static void relu_backward__avx512(const float *y, float *dy, size_t n)
{
  const __m512 vzero = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask(n - i);
    __mmask16 positive = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, y + i), vzero,
                                                 _CMP_GT_OQ);
    _mm512_mask_storeu_ps(dy + i, m, _mm512_maskz_loadu_ps(positive, dy + i));
  }
}

static void add__avx512(const float *src, float *dst, size_t n)
{
  for (size_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask(n - i);
    __m512 vs = _mm512_maskz_loadu_ps(m, src + i);
    _mm512_mask_storeu_ps(dst + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst + i), vs));
  }
}

static void axpy__avx512(float alpha, const float *x, float *y, size_t n)
{
  const __m512 valpha = _mm512_set1_ps(alpha);
  for (size_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask(n - i);
    __m512 vx = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(y + i, m,
                          _mm512_fmadd_ps(valpha, vx, _mm512_maskz_loadu_ps(m, y + i)));
  }
}

static void lerp__avx512(const float *a, const float *b, float t, float *out, size_t n)
{
  const __m512 vt = _mm512_set1_ps(t);
  for (size_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask(n - i);
    __m512 va = _mm512_maskz_loadu_ps(m, a + i), vb = _mm512_maskz_loadu_ps(m, b + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_fmadd_ps(_mm512_sub_ps(vb, va), vt, va));
  }
}

/* One call per row: the per-pixel spans inline. */
static void lerp_pixels__avx512(const float *row, int c, const int32_t *i0, const int32_t *i1,
                               const float *t, float *out, ptrdiff_t ld, int n)
{
  for (int ox = 0; ox < n; ox++)
    lerp__avx512(row + (size_t)i0[ox] * c, row + (size_t)i1[ox] * c, t[ox], out + ox * ld,
                (size_t)c);
}

static void lerp_pixels_backward__avx512(const float *g, int c, const int32_t *i0,
                                        const int32_t *i1, const float *t, float *dx,
                                        ptrdiff_t ld, int n)
{
  for (int ox = 0; ox < n; ox++, g += c) {
    axpy__avx512(1.0f - t[ox], g, dx + i0[ox] * ld, (size_t)c);
    axpy__avx512(t[ox], g, dx + i1[ox] * ld, (size_t)c);
  }
}

static void lerp_gather__avx512(const float *row, const int32_t *i0, const int32_t *i1,
                                const float *t, float *out, size_t n)
{
  const __m512 vzero = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask(n - i);
    __m512i vi0 = _mm512_maskz_loadu_epi32(m, i0 + i), vi1 = _mm512_maskz_loadu_epi32(m, i1 + i);
    __m512 va = _mm512_mask_i32gather_ps(vzero, m, vi0, row, 4);
    __m512 vb = _mm512_mask_i32gather_ps(vzero, m, vi1, row, 4);
    __m512 vt = _mm512_maskz_loadu_ps(m, t + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_fmadd_ps(_mm512_sub_ps(vb, va), vt, va));
  }
}

/* exp(x) for x <= 0 (softmax after subtracting the maximum): Cody-Waite reduction, the Cephes
 * polynomial, and scalef for 2^n. Inputs below -87 give about 1e-38 instead of less. */
static inline __m512 exp_nonpositive(__m512 x)
{
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

/* log(x) for normal positive x: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then the atanh
 * series of t = (m - 1) / (m + 1), good to about 1 ulp. */
static inline __m512 log_positive(__m512 x)
{
  __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
  __m512 e = _mm512_getexp_ps(x);
  __mmask16 high = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
  m = _mm512_mask_mul_ps(m, high, m, _mm512_set1_ps(0.5f));
  e = _mm512_mask_add_ps(e, high, e, _mm512_set1_ps(1.0f));
  __m512 one = _mm512_set1_ps(1.0f);
  __m512 t = _mm512_div_ps(_mm512_sub_ps(m, one), _mm512_add_ps(m, one));
  __m512 t2 = _mm512_mul_ps(t, t);
  __m512 p = _mm512_set1_ps(2.0f / 9.0f);
  p = _mm512_fmadd_ps(p, t2, _mm512_set1_ps(2.0f / 7.0f));
  p = _mm512_fmadd_ps(p, t2, _mm512_set1_ps(2.0f / 5.0f));
  p = _mm512_fmadd_ps(p, t2, _mm512_set1_ps(2.0f / 3.0f));
  p = _mm512_fmadd_ps(p, t2, _mm512_set1_ps(2.0f));
  return _mm512_fmadd_ps(e, _mm512_set1_ps(0.693147180559945f), _mm512_mul_ps(p, t));
}

/* One pixel, vectorised over its channels (c >= 8). Returns weight * loss. */
static double softmax_xent_pixel(const float *z, int c, int label, float weight, float scale,
                                 float *dz)
{
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int ch = 0; ch < c; ch += 16)
    vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(vmax, tail_mask(c - ch), z + ch));
  float max = _mm512_reduce_max_ps(vmax);
  __m512 vsum = _mm512_setzero_ps();
  for (int ch = 0; ch < c; ch += 16) {
    __mmask16 m = tail_mask(c - ch);
    __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, z + ch),
                                             _mm512_set1_ps(max)));
    vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
    if (dz)
      _mm512_mask_storeu_ps(dz + ch, m, e); /* scaled below, once the sum is known */
  }
  float sum = _mm512_reduce_add_ps(vsum);
  if (dz) {
    __m512 vg = _mm512_set1_ps(weight * scale / sum);
    for (int ch = 0; ch < c; ch += 16) {
      __mmask16 m = tail_mask(c - ch);
      _mm512_mask_storeu_ps(dz + ch, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dz + ch), vg));
    }
    dz[label] -= weight * scale;
  }
  return weight * (log(sum) + max - z[label]);
}

/* 16 pixels at once, one vector per channel (c < 8: few channels fill no vector). */
static double softmax_xent_pixels16(const float *z, __m512i vz_offsets, int c,
                                    const uint8_t *labels, const float *weights, float scale,
                                    float *dz, __m512i vdz_offsets, __mmask16 m)
{
  __m512i vlabel = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, labels));
  __m512 vweight = weights ? _mm512_maskz_loadu_ps(m, weights) : _mm512_set1_ps(1.0f);
  __mmask16 counts = _mm512_mask_cmplt_epi32_mask(m, vlabel, _mm512_set1_epi32(c)) &
                     _mm512_cmp_ps_mask(vweight, _mm512_setzero_ps(), _CMP_NEQ_UQ);
  __m512 v[8], vmax = _mm512_set1_ps(-INFINITY);
  for (int ch = 0; ch < c; ch++) {
    v[ch] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, vz_offsets, z + ch, 4);
    vmax = _mm512_max_ps(vmax, v[ch]);
  }
  __m512 vsum = _mm512_setzero_ps(), vzlabel = _mm512_setzero_ps();
  for (int ch = 0; ch < c; ch++) {
    __mmask16 is_label = _mm512_cmpeq_epi32_mask(vlabel, _mm512_set1_epi32(ch));
    vzlabel = _mm512_mask_mov_ps(vzlabel, is_label, v[ch]);
    v[ch] = exp_nonpositive(_mm512_sub_ps(v[ch], vmax));
    vsum = _mm512_add_ps(vsum, v[ch]);
  }
  __m512 vloss = _mm512_sub_ps(_mm512_add_ps(log_positive(vsum), vmax), vzlabel);
  __m512 vwloss = _mm512_maskz_mul_ps(counts, vweight, vloss);
  __m512d acc = _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(vwloss)),
                              _mm512_cvtps_pd(_mm512_extractf32x8_ps(vwloss, 1)));
  if (dz) {
    __m512 vws = _mm512_maskz_mul_ps(counts, vweight, _mm512_set1_ps(scale));
    __m512 vg = _mm512_div_ps(vws, vsum);
    for (int ch = 0; ch < c; ch++) {
      __mmask16 is_label = _mm512_cmpeq_epi32_mask(vlabel, _mm512_set1_epi32(ch));
      __m512 g = _mm512_mask_sub_ps(_mm512_mul_ps(v[ch], vg), is_label,
                                    _mm512_mul_ps(v[ch], vg), vws);
      _mm512_mask_i32scatter_ps(dz + ch, m, vdz_offsets, g, 4);
    }
  }
  return _mm512_reduce_add_pd(acc);
}

static double softmax_xent_row__avx512(const float *z, int ld, int c, const uint8_t *labels,
                                       const float *weights, float scale, float *dz, int ld_dz,
                                       int pixels)
{
  double loss = 0.0;
  if (c >= 8) {
    for (int p = 0; p < pixels; p++) {
      float weight = weights ? weights[p] : 1.0f;
      float *dzp = dz ? dz + (size_t)p * ld_dz : NULL;
      if (labels[p] >= c || weight == 0.0f) {
        for (int ch = 0; dzp && ch < c; ch += 16)
          _mm512_mask_storeu_ps(dzp + ch, tail_mask(c - ch), _mm512_setzero_ps());
        continue;
      }
      loss += softmax_xent_pixel(z + (size_t)p * ld, c, labels[p], weight, scale, dzp);
    }
    return loss;
  }
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i vz_offsets = _mm512_mullo_epi32(iota, _mm512_set1_epi32(ld));
  __m512i vdz_offsets = _mm512_mullo_epi32(iota, _mm512_set1_epi32(ld_dz));
  for (int p = 0; p < pixels; p += 16)
    loss += softmax_xent_pixels16(z + (size_t)p * ld, vz_offsets, c, labels + p,
                                  weights ? weights + p : NULL, scale,
                                  dz ? dz + (size_t)p * ld_dz : NULL, vdz_offsets,
                                  tail_mask((size_t)(pixels - p)));
  return loss;
}

/* One pixel over its channels: the maximum, then the first channel that holds it. */
static int argmax_pixel(const float *z, int c)
{
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int ch = 0; ch < c; ch += 16)
    vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(vmax, tail_mask(c - ch), z + ch));
  __m512 vbest = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  for (int ch = 0; ch < c; ch += 16) {
    __mmask16 m = tail_mask(c - ch);
    __mmask16 hit = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, z + ch), vbest,
                                            _CMP_EQ_OQ);
    if (hit)
      return ch + __builtin_ctz(hit);
  }
  return 0; /* all NaN */
}

static void argmax_row__avx512(const float *z, int ld, int c, uint8_t *classes, int pixels)
{
  if (c >= 8) {
    for (int p = 0; p < pixels; p++)
      classes[p] = (uint8_t)argmax_pixel(z + (size_t)p * ld, c);
    return;
  }
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i offsets = _mm512_mullo_epi32(iota, _mm512_set1_epi32(ld));
  for (int p = 0; p < pixels; p += 16) {
    __mmask16 m = tail_mask((size_t)(pixels - p));
    const float *zp = z + (size_t)p * ld;
    __m512 vbest = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, offsets, zp, 4);
    __m512i vindex = _mm512_setzero_si512();
    for (int ch = 1; ch < c; ch++) {
      __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, offsets, zp + ch, 4);
      __mmask16 greater = _mm512_cmp_ps_mask(v, vbest, _CMP_GT_OQ);
      vbest = _mm512_mask_mov_ps(vbest, greater, v);
      vindex = _mm512_mask_mov_epi32(vindex, greater, _mm512_set1_epi32(ch));
    }
    _mm_mask_storeu_epi8(classes + p, m, _mm512_cvtepi32_epi8(vindex));
  }
}

static void lerp_argmax__avx512(const float *top, const float *bottom, size_t step, int planes,
                                float t, uint8_t *classes, int n)
{
  const __m512 vt = _mm512_set1_ps(t), vzero = _mm512_setzero_ps();
  for (int i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask((size_t)(n - i));
    __m512 va = _mm512_maskz_loadu_ps(m, top + i), vb = _mm512_maskz_loadu_ps(m, bottom + i);
    __m512 vbest = _mm512_fmadd_ps(_mm512_sub_ps(vb, va), vt, va);
    if (planes == 1) {
      __mmask16 positive = _mm512_cmp_ps_mask(vbest, vzero, _CMP_GT_OQ);
      _mm_mask_storeu_epi8(classes + i, m, _mm_maskz_mov_epi8(positive, _mm_set1_epi8(1)));
      continue;
    }
    __m512i vindex = _mm512_setzero_si512();
    for (int p = 1; p < planes; p++) {
      va = _mm512_maskz_loadu_ps(m, top + p * step + i);
      vb = _mm512_maskz_loadu_ps(m, bottom + p * step + i);
      __m512 v = _mm512_fmadd_ps(_mm512_sub_ps(vb, va), vt, va);
      __mmask16 greater = _mm512_cmp_ps_mask(v, vbest, _CMP_GT_OQ);
      vbest = _mm512_mask_mov_ps(vbest, greater, v);
      vindex = _mm512_mask_mov_epi32(vindex, greater, _mm512_set1_epi32(p));
    }
    _mm_mask_storeu_epi8(classes + i, m, _mm512_cvtepi32_epi8(vindex));
  }
}

const SimdKernels simd_kernels_avx512 = {
  .relu_backward = relu_backward__avx512,
  .add = add__avx512,
  .axpy = axpy__avx512,
  .lerp = lerp__avx512,
  .lerp_gather = lerp_gather__avx512,
  .lerp_pixels = lerp_pixels__avx512,
  .lerp_pixels_backward = lerp_pixels_backward__avx512,
  .softmax_xent_row = softmax_xent_row__avx512,
  .argmax_row = argmax_row__avx512,
  .lerp_argmax = lerp_argmax__avx512,
};
