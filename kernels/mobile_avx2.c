/* mobile_avx2.c: AVX2 + FMA rows of the depthwise convolution, activations and per-channel
 * operations (see mobile_impl.h, mobile_rows.h). 16 ymm registers: 9 weights, 4 pixels'
 * accumulators and an input column in a depthwise tile. */
#include <immintrin.h>

#include "mobile_impl.h"

static const int lane_masks[16] = { -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0 };

#define MOBILE_VARIANT avx2
#define MOBILE_TABLE mobile_kernels_avx2
#define VEC __m256
#define VEC_LANES 8
#define VEC_MASK __m256i
#define vec_mask(n) _mm256_loadu_si256((const __m256i *)(lane_masks + 8 - (n)))
#define vec_load(p) _mm256_loadu_ps(p)
#define vec_store(p, v) _mm256_storeu_ps(p, v)
#define vec_loadm(p, m) _mm256_maskload_ps(p, m)
#define vec_storem(p, v, m) _mm256_maskstore_ps(p, m, v)
#define vec_set1(f) _mm256_set1_ps(f)
#define vec_zero() _mm256_setzero_ps()
#define vec_add(a, b) _mm256_add_ps(a, b)
#define vec_sub(a, b) _mm256_sub_ps(a, b)
#define vec_mul(a, b) _mm256_mul_ps(a, b)
#define vec_div(a, b) _mm256_div_ps(a, b)
#define vec_min(a, b) _mm256_min_ps(a, b)
#define vec_max(a, b) _mm256_max_ps(a, b)
#define vec_abs(a) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a)
#define vec_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VEC_CMP __m256
#define vec_lt(a, b) _mm256_cmp_ps(a, b, _CMP_LT_OQ)
#define vec_le(a, b) _mm256_cmp_ps(a, b, _CMP_LE_OQ)
#define vec_gt(a, b) _mm256_cmp_ps(a, b, _CMP_GT_OQ)
#define vec_both(p, q) _mm256_and_ps(p, q)
#define vec_select(p, a, b) _mm256_blendv_ps(b, a, p)
#define vec_keep(p, v) _mm256_and_ps(p, v)
#define vec_round(x) _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define vec_pow2(n)                                                                               \
  _mm256_castsi256_ps(                                                                            \
    _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23))
#define DW_TILE 4
#include "mobile_rows.h"
