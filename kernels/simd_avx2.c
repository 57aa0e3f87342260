/* simd_avx2.c */
