/* conv2d_avx2.c */
