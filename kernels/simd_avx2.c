/* simd_avx2.c: AVX2 + FMA inner loops of the element-wise, resize, loss and argmax kernels
 * (see simd.h). Span tails use maskload/maskstore; the pixel-parallel loops of the loss and
 * argmax hand their last few pixels to the per-pixel code, which handles any channel count. */
#include <immintrin.h>
#include <math.h>

#include "simd.h"

/* Lanes [0, n) set, n clamped to 8. */
static inline __m256i tail_mask(size_t n)
{
  static const int32_t ones_then_zeros[16] = { -1, -1, -1, -1, -1, -1, -1, -1 };
  return _mm256_loadu_si256((const __m256i *)(ones_then_zeros + 8 - (n < 8 ? n : 8)));
}

static inline float reduce_add(__m256 v)
{
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static inline float reduce_max(__m256 v)
{
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

static void relu_backward__avx2(const float *y, float *dy, size_t n)
{
  const __m256 vzero = _mm256_setzero_ps();
  for (size_t i = 0; i < n; i += 8) {
    __m256i m = tail_mask(n - i);
    __m256 positive = _mm256_cmp_ps(_mm256_maskload_ps(y + i, m), vzero, _CMP_GT_OQ);
    _mm256_maskstore_ps(dy + i, m, _mm256_and_ps(_mm256_maskload_ps(dy + i, m), positive));
  }
}

static void add__avx2(const float *src, float *dst, size_t n)
{
  for (size_t i = 0; i < n; i += 8) {
    __m256i m = tail_mask(n - i);
    __m256 vs = _mm256_maskload_ps(src + i, m);
    _mm256_maskstore_ps(dst + i, m, _mm256_add_ps(_mm256_maskload_ps(dst + i, m), vs));
  }
}

static void axpy__avx2(float alpha, const float *x, float *y, size_t n)
{
  const __m256 valpha = _mm256_set1_ps(alpha);
  for (size_t i = 0; i < n; i += 8) {
    __m256i m = tail_mask(n - i);
    __m256 vx = _mm256_maskload_ps(x + i, m);
    _mm256_maskstore_ps(y + i, m, _mm256_fmadd_ps(valpha, vx, _mm256_maskload_ps(y + i, m)));
  }
}

static void lerp__avx2(const float *a, const float *b, float t, float *out, size_t n)
{
  const __m256 vt = _mm256_set1_ps(t);
  for (size_t i = 0; i < n; i += 8) {
    __m256i m = tail_mask(n - i);
    __m256 va = _mm256_maskload_ps(a + i, m), vb = _mm256_maskload_ps(b + i, m);
    _mm256_maskstore_ps(out + i, m, _mm256_fmadd_ps(_mm256_sub_ps(vb, va), vt, va));
  }
}

/* One call per row: the per-pixel spans inline. */
static void lerp_pixels__avx2(const float *row, int c, const int32_t *i0, const int32_t *i1,
                               const float *t, float *out, ptrdiff_t ld, int n)
{
  for (int ox = 0; ox < n; ox++)
    lerp__avx2(row + (size_t)i0[ox] * c, row + (size_t)i1[ox] * c, t[ox], out + ox * ld,
                (size_t)c);
}

static void lerp_pixels_backward__avx2(const float *g, int c, const int32_t *i0,
                                        const int32_t *i1, const float *t, float *dx,
                                        ptrdiff_t ld, int n)
{
  for (int ox = 0; ox < n; ox++, g += c) {
    axpy__avx2(1.0f - t[ox], g, dx + i0[ox] * ld, (size_t)c);
    axpy__avx2(t[ox], g, dx + i1[ox] * ld, (size_t)c);
  }
}

static void lerp_gather__avx2(const float *row, const int32_t *i0, const int32_t *i1,
                              const float *t, float *out, size_t n)
{
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 va = _mm256_i32gather_ps(row, _mm256_loadu_si256((const __m256i *)(i0 + i)), 4);
    __m256 vb = _mm256_i32gather_ps(row, _mm256_loadu_si256((const __m256i *)(i1 + i)), 4);
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(_mm256_sub_ps(vb, va), _mm256_loadu_ps(t + i), va));
  }
  for (; i < n; i++)
    out[i] = fmaf(row[i1[i]] - row[i0[i]], t[i], row[i0[i]]);
}

/* exp(x) for -87 <= x <= 0 after clamping (softmax after subtracting the maximum): Cody-Waite
 * reduction, the Cephes polynomial, 2^n built in the exponent field. */
static inline __m256 exp_nonpositive(__m256 x)
{
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
                                    23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
}

/* log(x) for normal positive x: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then the atanh
 * series of t = (m - 1) / (m + 1). */
static inline __m256 log_positive(__m256 x)
{
  __m256i bits = _mm256_castps_si256(x);
  __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127)));
  __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x7fffff)),
                                                 _mm256_set1_epi32(0x3f800000)));
  __m256 high = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), high);
  e = _mm256_add_ps(e, _mm256_and_ps(high, _mm256_set1_ps(1.0f)));
  __m256 one = _mm256_set1_ps(1.0f);
  __m256 t = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
  __m256 t2 = _mm256_mul_ps(t, t);
  __m256 p = _mm256_set1_ps(2.0f / 9.0f);
  p = _mm256_fmadd_ps(p, t2, _mm256_set1_ps(2.0f / 7.0f));
  p = _mm256_fmadd_ps(p, t2, _mm256_set1_ps(2.0f / 5.0f));
  p = _mm256_fmadd_ps(p, t2, _mm256_set1_ps(2.0f / 3.0f));
  p = _mm256_fmadd_ps(p, t2, _mm256_set1_ps(2.0f));
  return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693147180559945f), _mm256_mul_ps(p, t));
}

/* Channels [ch, ch + 8) of z, -inf past c. */
static inline __m256 load_or_minus_inf(const float *z, int ch, int c)
{
  __m256i m = tail_mask((size_t)(c - ch));
  return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_maskload_ps(z + ch, m),
                          _mm256_castsi256_ps(m));
}

/* One pixel, vectorised over its channels; any c. Returns weight * loss. */
static double softmax_xent_pixel(const float *z, int c, int label, float weight, float scale,
                                 float *dz)
{
  if (label >= c || weight == 0.0f) {
    for (int ch = 0; dz && ch < c; ch++)
      dz[ch] = 0.0f;
    return 0.0;
  }
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  for (int ch = 0; ch < c; ch += 8)
    vmax = _mm256_max_ps(vmax, load_or_minus_inf(z, ch, c));
  float max = reduce_max(vmax);
  __m256 vsum = _mm256_setzero_ps();
  for (int ch = 0; ch < c; ch += 8) {
    __m256i m = tail_mask((size_t)(c - ch));
    __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_maskload_ps(z + ch, m), _mm256_set1_ps(max)));
    e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
    vsum = _mm256_add_ps(vsum, e);
    if (dz)
      _mm256_maskstore_ps(dz + ch, m, e); /* scaled below, once the sum is known */
  }
  float sum = reduce_add(vsum);
  if (dz) {
    __m256 vg = _mm256_set1_ps(weight * scale / sum);
    for (int ch = 0; ch < c; ch += 8) {
      __m256i m = tail_mask((size_t)(c - ch));
      _mm256_maskstore_ps(dz + ch, m, _mm256_mul_ps(_mm256_maskload_ps(dz + ch, m), vg));
    }
    dz[label] -= weight * scale;
  }
  return weight * (log(sum) + max - z[label]);
}

/* 8 pixels at once, one vector per channel (c < 8). */
static double softmax_xent_pixels8(const float *z, __m256i vz_offsets, int c,
                                   const uint8_t *labels, const float *weights, float scale,
                                   float *dz, int ld_dz)
{
  __m256i vlabel = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)labels));
  __m256 vweight = weights ? _mm256_loadu_ps(weights) : _mm256_set1_ps(1.0f);
  __m256 counts = _mm256_and_ps(
      _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(c), vlabel)),
      _mm256_cmp_ps(vweight, _mm256_setzero_ps(), _CMP_NEQ_UQ));
  __m256 v[8], vmax = _mm256_set1_ps(-INFINITY);
  for (int ch = 0; ch < c; ch++) {
    v[ch] = _mm256_i32gather_ps(z + ch, vz_offsets, 4);
    vmax = _mm256_max_ps(vmax, v[ch]);
  }
  __m256 vsum = _mm256_setzero_ps(), vzlabel = _mm256_setzero_ps();
  for (int ch = 0; ch < c; ch++) {
    __m256 is_label = _mm256_castsi256_ps(_mm256_cmpeq_epi32(vlabel, _mm256_set1_epi32(ch)));
    vzlabel = _mm256_blendv_ps(vzlabel, v[ch], is_label);
    v[ch] = exp_nonpositive(_mm256_sub_ps(v[ch], vmax));
    vsum = _mm256_add_ps(vsum, v[ch]);
  }
  __m256 vloss = _mm256_sub_ps(_mm256_add_ps(log_positive(vsum), vmax), vzlabel);
  __m256 vwloss = _mm256_and_ps(counts, _mm256_mul_ps(vweight, vloss));
  __m256d acc = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(vwloss)),
                              _mm256_cvtps_pd(_mm256_extractf128_ps(vwloss, 1)));
  if (dz) {
    __m256 vws = _mm256_and_ps(counts, _mm256_mul_ps(vweight, _mm256_set1_ps(scale)));
    __m256 vg = _mm256_div_ps(vws, vsum);
    for (int ch = 0; ch < c; ch++) {
      __m256 is_label = _mm256_castsi256_ps(_mm256_cmpeq_epi32(vlabel, _mm256_set1_epi32(ch)));
      __m256 g = _mm256_sub_ps(_mm256_mul_ps(v[ch], vg), _mm256_and_ps(is_label, vws));
      float lanes[8];
      _mm256_storeu_ps(lanes, g);
      for (int p = 0; p < 8; p++) /* no scatter in AVX2 */
        dz[(size_t)p * ld_dz + ch] = lanes[p];
    }
  }
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

static double softmax_xent_row__avx2(const float *z, int ld, int c, const uint8_t *labels,
                                     const float *weights, float scale, float *dz, int ld_dz,
                                     int pixels)
{
  double loss = 0.0;
  int p = 0;
  if (c < 8) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i vz_offsets = _mm256_mullo_epi32(iota, _mm256_set1_epi32(ld));
    for (; p + 8 <= pixels; p += 8)
      loss += softmax_xent_pixels8(z + (size_t)p * ld, vz_offsets, c, labels + p,
                                   weights ? weights + p : NULL, scale,
                                   dz ? dz + (size_t)p * ld_dz : NULL, ld_dz);
  }
  for (; p < pixels; p++)
    loss += softmax_xent_pixel(z + (size_t)p * ld, c, labels[p], weights ? weights[p] : 1.0f,
                               scale, dz ? dz + (size_t)p * ld_dz : NULL);
  return loss;
}

/* One pixel over its channels: the maximum, then the first channel that holds it. */
static int argmax_pixel(const float *z, int c)
{
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  for (int ch = 0; ch < c; ch += 8)
    vmax = _mm256_max_ps(vmax, load_or_minus_inf(z, ch, c));
  __m256 vbest = _mm256_set1_ps(reduce_max(vmax));
  for (int ch = 0; ch < c; ch += 8) {
    int hit = _mm256_movemask_ps(_mm256_cmp_ps(load_or_minus_inf(z, ch, c), vbest, _CMP_EQ_OQ));
    if (hit)
      return ch + __builtin_ctz((unsigned)hit);
  }
  return 0; /* all NaN */
}

/* The low byte of each int32 lane, lane 0 in the lowest byte. */
static inline uint64_t low_bytes(__m256i v)
{
  const __m256i pick_low_bytes = _mm256_setr_epi8(
      0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
      0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  __m256i bytes = _mm256_shuffle_epi8(v, pick_low_bytes);
  uint32_t lo = (uint32_t)_mm256_extract_epi32(bytes, 0);
  uint32_t hi = (uint32_t)_mm256_extract_epi32(bytes, 4);
  return lo | (uint64_t)hi << 32;
}

static void argmax_row__avx2(const float *z, int ld, int c, uint8_t *classes, int pixels)
{
  int p = 0;
  if (c < 8) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i offsets = _mm256_mullo_epi32(iota, _mm256_set1_epi32(ld));
    for (; p + 8 <= pixels; p += 8) {
      const float *zp = z + (size_t)p * ld;
      __m256 vbest = _mm256_i32gather_ps(zp, offsets, 4);
      __m256i vindex = _mm256_setzero_si256();
      for (int ch = 1; ch < c; ch++) {
        __m256 v = _mm256_i32gather_ps(zp + ch, offsets, 4);
        __m256 greater = _mm256_cmp_ps(v, vbest, _CMP_GT_OQ);
        vbest = _mm256_blendv_ps(vbest, v, greater);
        vindex = _mm256_blendv_epi8(vindex, _mm256_set1_epi32(ch), _mm256_castps_si256(greater));
      }
      uint64_t packed = low_bytes(vindex);
      __builtin_memcpy(classes + p, &packed, 8);
    }
  }
  for (; p < pixels; p++)
    classes[p] = (uint8_t)argmax_pixel(z + (size_t)p * ld, c);
}

static inline __m256 lerp_masked(const float *a, const float *b, __m256 vt, __m256i m)
{
  __m256 va = _mm256_maskload_ps(a, m), vb = _mm256_maskload_ps(b, m);
  return _mm256_fmadd_ps(_mm256_sub_ps(vb, va), vt, va);
}

/* Classes of 8 pixels (lanes past the mask read nothing), as int32 lanes. */
static inline __m256i lerp_argmax8(const float *top, const float *bottom, size_t step, int planes,
                                   __m256 vt, __m256i m)
{
  __m256 vbest = lerp_masked(top, bottom, vt, m);
  if (planes == 1) {
    __m256 positive = _mm256_cmp_ps(vbest, _mm256_setzero_ps(), _CMP_GT_OQ);
    return _mm256_and_si256(_mm256_castps_si256(positive), _mm256_set1_epi32(1));
  }
  __m256i vindex = _mm256_setzero_si256();
  for (int p = 1; p < planes; p++) {
    __m256 v = lerp_masked(top + p * step, bottom + p * step, vt, m);
    __m256 greater = _mm256_cmp_ps(v, vbest, _CMP_GT_OQ);
    vbest = _mm256_blendv_ps(vbest, v, greater);
    vindex = _mm256_blendv_epi8(vindex, _mm256_set1_epi32(p), _mm256_castps_si256(greater));
  }
  return vindex;
}

static void lerp_argmax__avx2(const float *top, const float *bottom, size_t step, int planes,
                              float t, uint8_t *classes, int n)
{
  const __m256 vt = _mm256_set1_ps(t);
  const __m256i all = _mm256_set1_epi32(-1);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t packed = low_bytes(lerp_argmax8(top + i, bottom + i, step, planes, vt, all));
    __builtin_memcpy(classes + i, &packed, 8);
  }
  if (i < n) {
    __m256i m = tail_mask((size_t)(n - i));
    uint64_t packed = low_bytes(lerp_argmax8(top + i, bottom + i, step, planes, vt, m));
    __builtin_memcpy(classes + i, &packed, (size_t)(n - i));
  }
}

const SimdKernels simd_kernels_avx2 = {
  .relu_backward = relu_backward__avx2,
  .add = add__avx2,
  .axpy = axpy__avx2,
  .lerp = lerp__avx2,
  .lerp_gather = lerp_gather__avx2,
  .lerp_pixels = lerp_pixels__avx2,
  .lerp_pixels_backward = lerp_pixels_backward__avx2,
  .softmax_xent_row = softmax_xent_row__avx2,
  .argmax_row = argmax_row__avx2,
  .lerp_argmax = lerp_argmax__avx2,
};
