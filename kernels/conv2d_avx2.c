/* conv2d_avx2.c: AVX2 row kernels of the convolution (see conv2d_impl.h, conv2d_tiles.h).
 * 16 ymm registers: 6 pixels x 2 vectors or 12 x 1 accumulators, the rest for weights and the
 * broadcast input. */
#include <immintrin.h>

#include "conv2d_impl.h"

static const int lane_masks[16] = { -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0 };

#define CONV_VARIANT avx2
#define VEC __m256
#define VEC_LANES 8
#define VEC_MASK __m256i
#define vec_mask(n) _mm256_loadu_si256((const __m256i *)(lane_masks + 8 - (n)))
#define vec_zero() _mm256_setzero_ps()
#define vec_load(p) _mm256_loadu_ps(p)
#define vec_loadm(p, m) _mm256_maskload_ps(p, m)
#define vec_store(p, v) _mm256_storeu_ps(p, v)
#define vec_storem(p, v, m) _mm256_maskstore_ps(p, m, v)
#define vec_bcast(p) _mm256_broadcast_ss(p)
#define vec_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define vec_add(a, b) _mm256_add_ps(a, b)
#define vec_relu(a) _mm256_max_ps(a, _mm256_setzero_ps())
#define vec_relu_grad(d, y) _mm256_and_ps(d, _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ))
#define TILE_NV1 12
#define TILE_NV2 6
#define CASES_NV1 CONV_CASES_12
#define CASES_NV2 CONV_CASES_6
#define ROWS_NV1 12
#define ROWS_NV2 6
#define ROW_CASES_NV1 CONV_CASES_12
#define ROW_CASES_NV2 CONV_CASES_6
#include "conv2d_tiles.h"

const ConvKernels conv_kernels_avx2 = {
  .max_block = 16,
  .min_block = 8,
  .forward_row = forward_row__avx2,
  .weights_row = weights_row__avx2,
  .bias_row = bias_row__avx2,
};
