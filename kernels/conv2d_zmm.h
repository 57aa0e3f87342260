/* conv2d_zmm.h: the 16-lane zmm vector layer of conv2d_tiles.h (see there), shared by the fp32
 * (conv2d_avx512.c) and bfloat16 (conv2d_bf16.c) instances, which add vec_fma and, for fp32,
 * vec_relu_grad. Included once per instance; the includer #undefs what it must redefine. */
#define VEC __m512
#define VEC_LANES 16
#define VEC_MASK __mmask16
#define vec_mask(n) ((__mmask16)((1u << (n)) - 1))
#define vec_zero() _mm512_setzero_ps()
#define vec_load(p) _mm512_loadu_ps(p)
#define vec_loadm(p, m) _mm512_maskz_loadu_ps(m, p)
#define vec_store(p, v) _mm512_storeu_ps(p, v)
#define vec_storem(p, v, m) _mm512_mask_storeu_ps(p, m, v)
/* In the bfloat16 instance a word of two bfloat16, moved as the bits of a float. */
#define vec_bcast(p) _mm512_set1_ps(*(p))
#define vec_add(a, b) _mm512_add_ps(a, b)
#define vec_relu(a) _mm512_max_ps(a, _mm512_setzero_ps())
/* 24 accumulators of the 32 registers: 24 pixels x 1 vector or 12 x 2. */
#define TILE_NV1 24
#define TILE_NV2 12
#define CASES_NV1 CONV_CASES_24
#define CASES_NV2 CONV_CASES_12
#define ROWS_NV1 24
#define ROWS_NV2 12
#define ROW_CASES_NV1 CONV_CASES_24
#define ROW_CASES_NV2 CONV_CASES_12
