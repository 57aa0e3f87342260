/* mobile_impl.h: the row kernels of the depthwise convolution, the activations and the
 * per-channel operations of efficient blocks (mobile_rows.h), one table per ISA.
 *
 * The public entry points (dwconv.c, activation.c, channel.c) split rows over the thread pool and
 * call these on one output row, or on spans of channels; the scalar ISA runs the references. */
#pragma once

#include <stddef.h>

#include "kernels.h"

/* The three input rows a row of the depthwise convolution reads, ky = 0, 1, 2: column col,
 * channel ch is at in[ky][col * in_step[ky] + ch]. A row outside the map is a row of zeros
 * (in_step 0), so the kernels never test rows; columns past the left or right edge they skip. */
typedef struct {
  const float *in[3];
  ptrdiff_t in_step[3];
  int in_w;
  int stride; /* 1 or 2 */
  int channels;
  int pixels; /* output pixels of the row */
} DwRows;

/* out[p] = f(bias + sum over taps of in * w) (or out[p] += the sum, without bias or activation,
 * when accumulate); z[p] = the sum before f when z is not NULL. */
typedef struct {
  DwRows rows;
  const float *w; /* 9 taps of `channels` floats, tap-major */
  const float *bias; /* NULL = 0 */
  Activation f;
  int accumulate;
  float *out;
  ptrdiff_t out_step;
  float *z;
  ptrdiff_t z_step;
} DwForwardJob;

/* Per output pixel: dy = f'(act) * dy in place (act skipped with ACTIVATION_NONE), then
 * partial[tap * channels + ch] += dy * in at that tap and partial[9 * channels + ch] += dy. */
typedef struct {
  DwRows rows;
  Activation f;
  const float *act;
  ptrdiff_t act_step;
  float *dy;
  ptrdiff_t dy_step;
  float *partial;
} DwWeightsJob;

/* One row of the stride-2 input gradient: dx[2j] = sum over r of dy_r[j] * w[ky_r][1], and
 * dx[2j + 1] = sum over r of dy_r[j] * w[ky_r][2] + dy_r[j + 1] * w[ky_r][0] (the last term
 * where j + 1 < dy_w); = or += when accumulate. */
typedef struct {
  int n_rows; /* 1 or 2 */
  const float *dy[2];
  int ky[2];
  ptrdiff_t dy_step;
  int dy_w;
  const float *w;
  float *dx;
  ptrdiff_t dx_step;
  int dx_w;
  int channels;
  int accumulate;
} DwInputJob;

typedef struct {
  void (*dw_forward_row)(const DwForwardJob *job);
  void (*dw_weights_row)(const DwWeightsJob *job);
  void (*dw_input_row_s2)(const DwInputJob *job);
  /* y[i] = f(z[i]) */
  void (*activation)(Activation f, const float *z, float *y, size_t n);
  /* dz[i] (=, or += when accumulate) dy[i] * f'(z[i]) */
  void (*activation_backward)(Activation f, const float *z, const float *dy, float *dz, size_t n,
                              int accumulate);
  /* y[i] = x[i] * s[i] */
  void (*mul)(const float *x, const float *s, float *y, size_t n);
  /* sums[i] += x[i] * y[i] */
  void (*dot_add)(const float *x, const float *y, float *sums, size_t n);
  /* dx[i] (=, or += when accumulate) dy[i] * s[i] */
  void (*mul_into)(const float *dy, const float *s, float *dx, size_t n, int accumulate);
} MobileKernels;

extern const MobileKernels mobile_kernels_avx512;
extern const MobileKernels mobile_kernels_avx2;

/* The table for the ISA in use; NULL for scalar (the references are the scalar path). */
static inline const MobileKernels *mobile_kernels(void)
{
  switch (kernels_isa()) {
  case KERNELS_ISA_AVX512:
    return &mobile_kernels_avx512;
  case KERNELS_ISA_AVX2:
    return &mobile_kernels_avx2;
  default:
    return NULL;
  }
}
