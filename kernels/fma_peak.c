/* fma_peak.c */
