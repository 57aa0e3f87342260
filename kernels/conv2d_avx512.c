/* conv2d_avx512.c: AVX-512 row kernels of the convolution (see conv2d_impl.h, conv2d_tiles.h).
 *
 * Blocks of 32 and 16 output channels use zmm registers: 12 pixels x 2 vectors or 24 x 1, i.e.
 * 24 accumulators of the 32 registers. Forward rows with 8 or fewer output channels (stem.0,
 * head.1, the classifier; the backward input of stem.0) fill a zmm with pairs of input channels
 * instead (forward_row_pairs), and their weight gradients run along the inputs
 * (weights_row_narrow): a half-empty vector would waste half of the
 * FMA rate on cores with full-width 512-bit units (Zen 5). */
#include <immintrin.h>

#include "conv2d_impl.h"

/* ---- 16 lanes ---- */
#define CONV_VARIANT zmm
#include "conv2d_zmm.h"
#define vec_fma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vec_relu_grad(d, y)                                                                       \
  _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ), d)
#include "conv2d_tiles.h"
#undef CONV_VARIANT
#undef VEC
#undef VEC_LANES
#undef VEC_MASK
#undef vec_mask
#undef vec_zero
#undef vec_load
#undef vec_loadm
#undef vec_store
#undef vec_storem
#undef vec_bcast
#undef vec_fma
#undef vec_add
#undef vec_relu
#undef vec_relu_grad

/* ---- 8 lanes (the tile sizes stay) ---- */
#define CONV_VARIANT ymm
#define VEC __m256
#define VEC_LANES 8
#define VEC_MASK __mmask8
#define vec_mask(n) ((__mmask8)((1u << (n)) - 1))
#define vec_zero() _mm256_setzero_ps()
#define vec_load(p) _mm256_loadu_ps(p)
#define vec_loadm(p, m) _mm256_maskz_loadu_ps(m, p)
#define vec_store(p, v) _mm256_storeu_ps(p, v)
#define vec_storem(p, v, m) _mm256_mask_storeu_ps(p, m, v)
#define vec_bcast(p) _mm256_broadcast_ss(p)
#define vec_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vec_add(a, b) _mm256_add_ps(a, b)
#define vec_relu(a) _mm256_max_ps(a, _mm256_setzero_ps())
#define vec_relu_grad(d, y) _mm256_and_ps(d, _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ))
#include "conv2d_tiles.h"

/* ---- forward rows of at most 8 output channels, two input channels per zmm ---- */

/* Lane 2 * co + e accumulates input channels of parity e of output channel co: one 64-bit
 * broadcast of channels (2j, 2j + 1) against weights packed the same way keeps all 16 lanes busy.
 * The epilogue adds the lane pairs. An odd last channel is broadcast alone (its odd-lane weights
 * are zero), so nothing past the pixel's channels is read. */
/* _mm_loadl_epi64 reads 8 bytes at any alignment; _mm_load_sd would read a double at a float's
 * alignment (undefined behaviour, reported by UBSan). */
#define PAIR_BCAST(p) \
  _mm512_castsi512_ps(_mm512_broadcastq_epi64(_mm_loadl_epi64((const __m128i *)(p))))

/* One tap: a broadcast per pixel and FMA. */
CONV_INLINE void pairs_tap(const ConvRowJob *job, int k, int p0, const int T, __m512 *vacc)
{
  const ptrdiff_t step = job->in_step;
  const float *in = job->in[k] + p0 * step;
  const float *w = job->w[k];
  for (int j = 0; j < job->cin / 2; j++, in += 2, w += 16) {
    __m512 vw = _mm512_loadu_ps(w);
#pragma GCC unroll 24
    for (int t = 0; t < T; t++)
      vacc[t] = _mm512_fmadd_ps(PAIR_BCAST(in + t * step), vw, vacc[t]);
  }
  if (job->cin & 1) {
    __m512 vw = _mm512_loadu_ps(w);
#pragma GCC unroll 24
    for (int t = 0; t < T; t++)
      vacc[t] = _mm512_fmadd_ps(_mm512_set1_ps(in[t * step]), vw, vacc[t]);
  }
}

/* Three taps reading one input row at successive pixels (kx = 0, 1, 2 of a stride-1 kernel row):
 * input pixel q feeds output pixels q, q - 1 and q - 2, so each broadcast serves three FMAs and
 * the loads no longer bound the FMA rate. */
CONV_INLINE void pairs_tap_row3(const ConvRowJob *job, int k, int p0, const int T, __m512 *vacc)
{
  const ptrdiff_t step = job->in_step;
  const float *in = job->in[k] + p0 * step;
  const float *w0 = job->w[k], *w1 = job->w[k + 1], *w2 = job->w[k + 2];
  const int pairs = job->cin / 2;
  for (int j = 0; j <= pairs; j++, in += 2, w0 += 16, w1 += 16, w2 += 16) {
    if (j == pairs && !(job->cin & 1))
      break;
    __m512 vw0 = _mm512_loadu_ps(w0), vw1 = _mm512_loadu_ps(w1), vw2 = _mm512_loadu_ps(w2);
    const int single = j == pairs;
#pragma GCC unroll 26
    for (int q = 0; q < T + 2; q++) {
      __m512 vi = single ? _mm512_set1_ps(in[q * step]) : PAIR_BCAST(in + q * step);
      if (q < T)
        vacc[q] = _mm512_fmadd_ps(vi, vw0, vacc[q]);
      if (q >= 1 && q - 1 < T)
        vacc[q - 1] = _mm512_fmadd_ps(vi, vw1, vacc[q - 1]);
      if (q >= 2)
        vacc[q - 2] = _mm512_fmadd_ps(vi, vw2, vacc[q - 2]);
    }
  }
}

CONV_INLINE void forward_pairs_tile(const ConvRowJob *job, int p0, const int T)
{
  const ptrdiff_t step = job->in_step;
  __m512 vacc[24];

#pragma GCC unroll 24
  for (int t = 0; t < T; t++)
    vacc[t] = _mm512_setzero_ps();
  for (int k = 0; k < job->n_taps;) {
    if (k + 2 < job->n_taps && job->in[k + 1] == job->in[k] + step &&
        job->in[k + 2] == job->in[k + 1] + step) {
      pairs_tap_row3(job, k, p0, T, vacc);
      k += 3;
    } else {
      pairs_tap(job, k, p0, T, vacc);
      k++;
    }
  }

  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
  const __mmask8 m = (__mmask8)((1u << job->channels) - 1);
  const __m256 vbias = _mm256_loadu_ps(job->bias);
#pragma GCC unroll 24
  for (int t = 0; t < T; t++) {
    __m512 sum = _mm512_add_ps(vacc[t], _mm512_permute_ps(vacc[t], 0xB1));
    __m256 va = _mm256_add_ps(_mm512_castps512_ps256(_mm512_permutexvar_ps(even, sum)), vbias);
    if (job->residual)
      va = _mm256_add_ps(
        va, _mm256_maskz_loadu_ps(m, job->residual + (p0 + t) * job->residual_step));
    if (job->relu)
      va = _mm256_max_ps(va, _mm256_setzero_ps());
    _mm256_mask_storeu_ps(job->out + (p0 + t) * job->out_step, m, va);
  }
}

static void forward_row_pairs__avx512(const ConvRowJob *job)
{
  const int n_tiles = (job->pixels + 23) / 24;
  int p = 0;
  for (int i = 0; i < n_tiles; i++) {
    int left = n_tiles - i;
    int t = (job->pixels - p + left - 1) / left;
#define FORWARD_PAIRS(T)                                                                          \
  case T:                                                                                         \
    forward_pairs_tile(job, p, T);                                                                \
    break;
    switch (t) { CONV_CASES_24(FORWARD_PAIRS) }
#undef FORWARD_PAIRS
    p += t;
  }
}

/* ---- weight-gradient rows of at most 8 output channels ---- */

/* Vectors run along the inputs k instead of the output channels: accumulator (v, co) holds
 * dw[k0 + 16 v .. + 15][co], transposed (dw is co-major, ld_dw floats per channel). Per pixel, V
 * input loads and one broadcast of dy per channel feed C V FMAs (C = the channels). */
CONV_INLINE void weights_narrow_tile(const ConvWeightsJob *job, int k0, const int V, const int C,
                                     __mmask16 tail)
{
  const ptrdiff_t step = job->in_step, ld_dw = job->block_width;
  const float *in = job->in + k0, *dy = job->dy;
  float *dw = job->dw + k0;
  __m512 vacc[3][8];

#pragma GCC unroll 8
  for (int co = 0; co < C; co++)
#pragma GCC unroll 3
    for (int v = 0; v < V; v++)
      vacc[v][co] = _mm512_loadu_ps(dw + co * ld_dw + v * 16);
  for (int p = 0; p < job->pixels; p++, in += step, dy += job->dy_step) {
    __m512 vx[3];
#pragma GCC unroll 3
    for (int v = 0; v < V; v++)
      vx[v] = _mm512_maskz_loadu_ps(v == V - 1 ? tail : (__mmask16)0xFFFF, in + v * 16);
#pragma GCC unroll 8
    for (int co = 0; co < C; co++) {
      __m512 vd = _mm512_set1_ps(dy[co]);
#pragma GCC unroll 3
      for (int v = 0; v < V; v++)
        vacc[v][co] = _mm512_fmadd_ps(vx[v], vd, vacc[v][co]);
    }
  }
#pragma GCC unroll 8
  for (int co = 0; co < C; co++)
#pragma GCC unroll 3
    for (int v = 0; v < V; v++)
      _mm512_storeu_ps(dw + co * ld_dw + v * 16, vacc[v][co]);
}

#define NARROW_CASES(F) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8)

/* dw: channels x block_width floats (block_width >= rows rounded up to 16), dw[co][k]. */
static void weights_row_narrow__avx512(const ConvWeightsJob *job)
{
  const int vectors = (job->rows + 15) / 16;
  const int n_tiles = (vectors + 2) / 3;
  const int last = job->rows - (vectors - 1) * 16;
  int v = 0;
  for (int i = 0; i < n_tiles; i++) {
    int left = n_tiles - i;
    int nv = (vectors - v + left - 1) / left;
    __mmask16 tail = v + nv == vectors ? (__mmask16)((1u << last) - 1) : (__mmask16)0xFFFF;
#define NARROW_TILE(C)                                                                            \
  case C:                                                                                         \
    if (nv == 3)                                                                                  \
      weights_narrow_tile(job, v * 16, 3, C, tail);                                               \
    else if (nv == 2)                                                                             \
      weights_narrow_tile(job, v * 16, 2, C, tail);                                               \
    else                                                                                          \
      weights_narrow_tile(job, v * 16, 1, C, tail);                                               \
    break;
    switch (job->channels) { NARROW_CASES(NARROW_TILE) }
#undef NARROW_TILE
    v += nv;
  }
}

static void forward_row__avx512(const ConvRowJob *job)
{
  if (job->block_width == 8)
    forward_row__ymm(job);
  else
    forward_row__zmm(job);
}

/* Bias sums over a row: zmm unless the channels fit a ymm. */
static void bias_row__avx512(const ConvBiasJob *job)
{
  if (job->channels <= 8)
    bias_row__ymm(job);
  else
    bias_row__zmm(job);
}

static void weights_row__avx512(const ConvWeightsJob *job)
{
  if (job->block_width == 8)
    weights_row__ymm(job);
  else
    weights_row__zmm(job);
}

const ConvKernels conv_kernels_avx512 = {
  .max_block = 32,
  .min_block = 8,
  .forward_row = forward_row__avx512,
  .forward_row_pairs = forward_row_pairs__avx512,
  .weights_row = weights_row__avx512,
  .weights_row_narrow = weights_row_narrow__avx512,
  .bias_row = bias_row__avx512,
};
