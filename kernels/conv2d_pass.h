/* conv2d_pass.h: the row machinery every convolution pass shares (conv2d_pass.c), and the
 * forward-style run of the forward and backward-input passes (conv2d_forward.c).
 *
 * Every pass is one row loop split over the thread pool, one output row per task:
 * - forward: output (r, j) reads input (r * stride + ky - pad_h, j * stride + kx - pad_w);
 * - backward input: dx is cut into stride x stride phases (pixels (i * s + a, j * s + b)); each
 *   phase is a stride-1 convolution of dy with the taps that reach it, the weights transposed
 *   (in <-> out), written to every s-th pixel. Stride 1 is the single phase (a, b) = (0, 0);
 * - backward weights: the forward pass's geometry; each row adds x (taps x cin) times dy (cout)
 *   into a per-thread partial, summed into dw by parallel reduction tasks.
 * Input rows are read in place. Only the pixels whose taps reach past the left or right edge
 * (the first and last few of a wide row, or all of a narrow one) read zero-padded copies in
 * per-thread scratch, so the kernels never test bounds; rows above or below the input drop their
 * taps.
 *
 * The bfloat16 passes (conv2d_bf16.c) reuse all of this: a map of channel pairs in bfloat16 is a
 * map of 32-bit words with half the channels, which the row machinery reads like any other; the
 * weights are packed as pairs (conv2d_pack.h).
 *
 * No pass calls a GEMM: OpenBLAS's sgemm, as per-tap GEMMs over shifted inputs, was measured
 * slower than these direct kernels on the student's stride-1 layers, all but the classifier's
 * weight gradient, a negligible part of a training step (bench/README.md). A pointwise
 * convolution's passes may run as sgemm calls instead of these (pointwise.c), on the shapes where
 * that measured faster. */
#pragma once

#include "conv2d_pack.h"

typedef struct {
  int dr, dc; /* output (r, j) reads input (r * in_mul + dr, j * in_mul + dc) */
  int weight_tap;
} ConvTap;

/* Where a pass reads its input rows. */
typedef enum {
  ROWS_IN_PLACE, /* no tap reaches past the left or right edge */
  ROWS_EDGES,    /* in place, but the first and last few pixels read small zero-padded copies */
  ROWS_COPIED,   /* whole rows copied, zero-padded and compact (ld = c) */
} RowSource;

typedef struct {
  const FeatureMap *in;
  int in_mul;
  int n_taps;
  ConvTap taps[CONV_MAX_TAPS];
  int dr_lo, n_slots; /* input rows r * in_mul + dr_lo + slot, slot < n_slots */
  int dc_lo, dc_hi;   /* output pixel j reads input columns j * in_mul + [dc_lo, dc_hi] */
  RowSource source;
  int left, right;    /* ROWS_EDGES: pixels [0, left) and [right, out_w) read copies */
  int out_h, out_w;
  float *out;
  ptrdiff_t out_row_step, out_col_step;
  const float *residual;
  ptrdiff_t residual_row_step, residual_col_step;
} ConvPass;

/* The taps of a forward-geometry pass of x (the forward pass and the weight gradient). */
void conv_pass_forward_taps(ConvPass *ps, const ConvGeometry *g, const FeatureMap *x, int out_h,
                            int out_w);
/* Rows and columns the taps read, and where they come from; compact: rows whose ld exceeds c are
 * copied (the weight gradient reads the kw x cin inputs of a kernel row as one run). */
void conv_pass_finish(ConvPass *ps, int compact);
/* Floats of scratch a row's copies need. */
size_t conv_pass_scratch_floats(const ConvPass *ps);

/* A run of output pixels and whether its input rows are copied. */
typedef struct {
  int p0, p1, copy;
} PixelRange;

/* The pixel ranges of a row: one, or the copied edges and the middle read in place. */
int conv_pass_ranges(const ConvPass *ps, PixelRange ranges[3]);

/* The input rows of output row r for pixels of range: column col of slot s is at
 * rows[s] + (col - col0) * ld; rows[s] is NULL where the row lies outside the input. */
typedef struct {
  const float *rows[CONV_MAX_TAPS];
  ptrdiff_t ld;
  int col0;
} PassRows;

void conv_pass_rows(const ConvPass *ps, int r, const PixelRange *range, float *scratch,
                    PassRows *pr);

/* ---- forward-style passes (forward, backward input) ----------------------------------------- */

typedef struct {
  const ConvKernels *kernels;
  ThreadPool *pool;
  const ConvPass *passes;
  int first_row[5]; /* task index where each pass starts; one more than there are passes */
  int n_passes;
  ConvBlocks blocks;
  PackedWeights weights;
  int relu;
  int bf16;              /* rows read channel pairs in bfloat16 (ConvBf16Kernels) */
  size_t scratch_offset; /* row copies start here in a thread's scratch ... */
  size_t scratch_floats; /* ... of this size */
} ConvRun;

/* The row of task `index` over the run's passes (a ThreadPoolTask over a ConvRun). */
void conv_forward_row_task(void *ctx, int index, int thread);
/* Task indices and scratch of the passes; returns the tasks (rows of every pass). */
int conv_plan_forward_passes(ConvRun *run);
