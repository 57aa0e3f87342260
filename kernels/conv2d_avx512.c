/* conv2d_avx512.c */
