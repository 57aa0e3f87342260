/* simd_avx512.c */
