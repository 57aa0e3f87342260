/* conv2d_avx512.c: AVX-512 row kernels of the convolution (see conv2d_impl.h, conv2d_tiles.h).
 *
 * Blocks of 32 and 16 output channels use zmm registers: 12 pixels x 2 vectors or 24 x 1, i.e.
 * 24 accumulators of the 32 registers. Blocks of 8 or fewer (cout 8 of stem.0 and head.1, the
 * classifier) use ymm registers, which AVX-512VL lets reach all 32: Zen 4 runs a zmm FMA as two
 * 256-bit halves, so 8-wide FMAs lose no throughput there, where a half-empty zmm would waste
 * half of it. */
#include <immintrin.h>

#include "conv2d_impl.h"

/* ---- 16 lanes ---- */
#define CONV_VARIANT zmm
#define VEC __m512
#define VEC_LANES 16
#define VEC_MASK __mmask16
#define vec_mask(n) ((__mmask16)((1u << (n)) - 1))
#define vec_zero() _mm512_setzero_ps()
#define vec_load(p) _mm512_loadu_ps(p)
#define vec_loadm(p, m) _mm512_maskz_loadu_ps(m, p)
#define vec_store(p, v) _mm512_storeu_ps(p, v)
#define vec_storem(p, v, m) _mm512_mask_storeu_ps(p, m, v)
#define vec_bcast(p) _mm512_set1_ps(*(p))
#define vec_fma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define vec_add(a, b) _mm512_add_ps(a, b)
#define vec_relu(a) _mm512_max_ps(a, _mm512_setzero_ps())
#define TILE_NV1 24
#define TILE_NV2 12
#define CASES_NV1 CONV_CASES_24
#define CASES_NV2 CONV_CASES_12
#define ROWS_NV1 24
#define ROWS_NV2 12
#define ROW_CASES_NV1 CONV_CASES_24
#define ROW_CASES_NV2 CONV_CASES_12
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
#include "conv2d_tiles.h"

static void forward_row__avx512(const ConvRowJob *job)
{
  if (job->block_width == 8)
    forward_row__ymm(job);
  else
    forward_row__zmm(job);
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
  .weights_row = weights_row__avx512,
};
