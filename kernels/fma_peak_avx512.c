/* fma_peak_avx512.c: the AVX-512 FMA throughput probe (see simd.h). */
#include <immintrin.h>

#include "simd.h"

/* 12 independent chains: more than latency (4) x ports (2) on current cores, so the FMA units
 * never wait for a result. acc = acc * m + a converges to a / (1 - m): no overflow, no
 * denormals however long it runs. */
uint64_t fma_peak_chains_avx512(uint64_t rounds, float *sink)
{
  const __m512 m = _mm512_set1_ps(0.999f), a = _mm512_set1_ps(0.001f);
  __m512 acc0 = _mm512_set1_ps(0.0f), acc1 = _mm512_set1_ps(0.1f), acc2 = _mm512_set1_ps(0.2f);
  __m512 acc3 = _mm512_set1_ps(0.3f), acc4 = _mm512_set1_ps(0.4f), acc5 = _mm512_set1_ps(0.5f);
  __m512 acc6 = _mm512_set1_ps(0.6f), acc7 = _mm512_set1_ps(0.7f), acc8 = _mm512_set1_ps(0.8f);
  __m512 acc9 = _mm512_set1_ps(0.9f), acc10 = _mm512_set1_ps(1.0f), acc11 = _mm512_set1_ps(1.1f);
  for (uint64_t r = 0; r < rounds; r++) {
    acc0 = _mm512_fmadd_ps(acc0, m, a);
    acc1 = _mm512_fmadd_ps(acc1, m, a);
    acc2 = _mm512_fmadd_ps(acc2, m, a);
    acc3 = _mm512_fmadd_ps(acc3, m, a);
    acc4 = _mm512_fmadd_ps(acc4, m, a);
    acc5 = _mm512_fmadd_ps(acc5, m, a);
    acc6 = _mm512_fmadd_ps(acc6, m, a);
    acc7 = _mm512_fmadd_ps(acc7, m, a);
    acc8 = _mm512_fmadd_ps(acc8, m, a);
    acc9 = _mm512_fmadd_ps(acc9, m, a);
    acc10 = _mm512_fmadd_ps(acc10, m, a);
    acc11 = _mm512_fmadd_ps(acc11, m, a);
  }
  __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)),
                             _mm512_add_ps(_mm512_add_ps(acc4, acc5), _mm512_add_ps(acc6, acc7)));
  sum = _mm512_add_ps(sum, _mm512_add_ps(_mm512_add_ps(acc8, acc9), _mm512_add_ps(acc10, acc11)));
  *sink = _mm512_reduce_add_ps(sum);
  return 12 * 16 * 2;
}
