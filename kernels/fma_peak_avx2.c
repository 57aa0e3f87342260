/* fma_peak_avx2.c: the AVX2 FMA throughput probe (see simd.h). */
#include <immintrin.h>

#include "simd.h"

/* 12 independent chains, as in fma_peak_avx512.c, on ymm registers. */
uint64_t fma_peak_chains_avx2(uint64_t rounds, float *sink)
{
  const __m256 m = _mm256_set1_ps(0.999f), a = _mm256_set1_ps(0.001f);
  __m256 acc0 = _mm256_set1_ps(0.0f), acc1 = _mm256_set1_ps(0.1f), acc2 = _mm256_set1_ps(0.2f);
  __m256 acc3 = _mm256_set1_ps(0.3f), acc4 = _mm256_set1_ps(0.4f), acc5 = _mm256_set1_ps(0.5f);
  __m256 acc6 = _mm256_set1_ps(0.6f), acc7 = _mm256_set1_ps(0.7f), acc8 = _mm256_set1_ps(0.8f);
  __m256 acc9 = _mm256_set1_ps(0.9f), acc10 = _mm256_set1_ps(1.0f), acc11 = _mm256_set1_ps(1.1f);
  for (uint64_t r = 0; r < rounds; r++) {
    acc0 = _mm256_fmadd_ps(acc0, m, a);
    acc1 = _mm256_fmadd_ps(acc1, m, a);
    acc2 = _mm256_fmadd_ps(acc2, m, a);
    acc3 = _mm256_fmadd_ps(acc3, m, a);
    acc4 = _mm256_fmadd_ps(acc4, m, a);
    acc5 = _mm256_fmadd_ps(acc5, m, a);
    acc6 = _mm256_fmadd_ps(acc6, m, a);
    acc7 = _mm256_fmadd_ps(acc7, m, a);
    acc8 = _mm256_fmadd_ps(acc8, m, a);
    acc9 = _mm256_fmadd_ps(acc9, m, a);
    acc10 = _mm256_fmadd_ps(acc10, m, a);
    acc11 = _mm256_fmadd_ps(acc11, m, a);
  }
  __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)),
                             _mm256_add_ps(_mm256_add_ps(acc4, acc5), _mm256_add_ps(acc6, acc7)));
  sum = _mm256_add_ps(sum, _mm256_add_ps(_mm256_add_ps(acc8, acc9), _mm256_add_ps(acc10, acc11)));
  float lanes[8];
  _mm256_storeu_ps(lanes, sum);
  *sink = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
  return 12 * 8 * 2;
}
