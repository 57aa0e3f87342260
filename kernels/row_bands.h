/* row_bands.h: splitting a kernel's output rows into bands over the thread pool.
 *
 * Each band is a contiguous range of rows written by one thread only. The band count depends on
 * the rows and the pool, never on timing, so per-band partial sums reduce deterministically. */
#pragma once

#include <stddef.h>

#include "threadpool.h"

/* Below this many floats of work the wake-up of the workers costs more than it saves. */
#define ROW_BANDS_MIN_FLOATS 16384
/* A few bands per thread even out uneven rows; bounded so partial sums fit on the stack. */
#define ROW_BANDS_PER_THREAD 4
#define ROW_BANDS_MAX 64

typedef void (*RowBandFn)(void *ctx, int band, int row_begin, int row_end, int thread);

typedef struct {
  RowBandFn fn;
  void *ctx;
  int rows, bands;
} RowBands;

static inline int row_band_count(const ThreadPool *pool, int rows, size_t floats_per_row)
{
  int threads = thread_pool_threads(pool);
  if (threads == 1 || rows <= 1 || (size_t)rows * floats_per_row < ROW_BANDS_MIN_FLOATS)
    return rows > 0 ? 1 : 0;
  int bands = threads * ROW_BANDS_PER_THREAD;
  bands = bands < ROW_BANDS_MAX ? bands : ROW_BANDS_MAX;
  return bands < rows ? bands : rows;
}

static void row_bands_task(void *arg, int band, int thread)
{
  const RowBands *b = arg;
  int begin = (int)((long long)b->rows * band / b->bands);
  int end = (int)((long long)b->rows * (band + 1) / b->bands);
  b->fn(b->ctx, band, begin, end, thread);
}

/* Runs fn over `bands` bands (from row_band_count) covering rows [0, rows). */
static inline void run_row_bands(ThreadPool *pool, int rows, int bands, RowBandFn fn, void *ctx)
{
  RowBands b = { fn, ctx, rows, bands };
  thread_pool_run(pool, bands, row_bands_task, &b);
}
