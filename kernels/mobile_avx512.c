/* mobile_avx512.c: AVX-512 rows of the depthwise convolution, activations and per-channel
 * operations (see mobile_impl.h, mobile_rows.h). 32 zmm registers: 9 weights, 8 pixels'
 * accumulators and an input column in a depthwise tile; tails in mask registers. */
#include <immintrin.h>

#include "mobile_impl.h"

#define MOBILE_VARIANT avx512
#define MOBILE_TABLE mobile_kernels_avx512
#define VEC __m512
#define VEC_LANES 16
#define VEC_MASK __mmask16
#define vec_mask(n) ((__mmask16)((1u << (n)) - 1))
#define vec_load(p) _mm512_loadu_ps(p)
#define vec_store(p, v) _mm512_storeu_ps(p, v)
#define vec_loadm(p, m) _mm512_maskz_loadu_ps(m, p)
#define vec_storem(p, v, m) _mm512_mask_storeu_ps(p, m, v)
#define vec_set1(f) _mm512_set1_ps(f)
#define vec_zero() _mm512_setzero_ps()
#define vec_add(a, b) _mm512_add_ps(a, b)
#define vec_sub(a, b) _mm512_sub_ps(a, b)
#define vec_mul(a, b) _mm512_mul_ps(a, b)
#define vec_div(a, b) _mm512_div_ps(a, b)
#define vec_min(a, b) _mm512_min_ps(a, b)
#define vec_max(a, b) _mm512_max_ps(a, b)
#define vec_abs(a) _mm512_abs_ps(a)
#define vec_fma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VEC_CMP __mmask16
#define vec_lt(a, b) _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)
#define vec_le(a, b) _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ)
#define vec_gt(a, b) _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ)
#define vec_both(p, q) ((__mmask16)((p) & (q)))
#define vec_select(p, a, b) _mm512_mask_blend_ps(p, b, a)
#define vec_keep(p, v) _mm512_maskz_mov_ps(p, v)
#define vec_round(x) _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vec_pow2(n)                                                                               \
  _mm512_castsi512_ps(                                                                            \
    _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23))
#define DW_TILE 8
#include "mobile_rows.h"
