/* fma_peak_avx2.c */
