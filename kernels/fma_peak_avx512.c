/* fma_peak_avx512.c */
