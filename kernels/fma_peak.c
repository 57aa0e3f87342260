/* fma_peak.c: the machine's fp32 FMA throughput, measured with the ISA in use.
 *
 * Each thread runs independent FMA chains held in registers (no memory traffic) in chunks of
 * about a millisecond until its time is up; all start together behind a barrier, so the figure
 * is what the cores sustain at once, clock throttling and shared cores included. */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "kernels.h"
#include "simd.h"

typedef uint64_t (*FmaChains)(uint64_t rounds, float *sink);

typedef struct {
  pthread_barrier_t *start;
  FmaChains chains;
  double seconds;
  uint64_t flops;
  double begin, end;
  float sink;
} ProbeThread;

/* Multiply-add chains in plain C: 16 accumulators the compiler keeps in registers. Without FMA
 * in the baseline ISA a multiply and an add stand for one FMA (2 flops per lane either way). */
static uint64_t fma_peak_chains_scalar(uint64_t rounds, float *sink)
{
  float acc[16];
  for (int i = 0; i < 16; i++)
    acc[i] = 0.1f * (float)i;
  for (uint64_t r = 0; r < rounds; r++)
    for (int i = 0; i < 16; i++)
      acc[i] = acc[i] * 0.999f + 0.001f;
  float sum = 0.0f;
  for (int i = 0; i < 16; i++)
    sum += acc[i];
  *sink = sum;
  return 16 * 2;
}

static double seconds_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *probe_main(void *arg)
{
  ProbeThread *t = arg;
  const uint64_t rounds = 1 << 16; /* 0.2-1 ms per chunk, depending on the ISA */
  pthread_barrier_wait(t->start);
  t->begin = seconds_now();
  do {
    t->flops += t->chains(rounds, &t->sink) * rounds;
    t->end = seconds_now();
  } while (t->end - t->begin < t->seconds);
  return NULL;
}

static FmaChains chains_for(KernelsIsa isa)
{
  switch (isa) {
  case KERNELS_ISA_AVX512:
    return fma_peak_chains_avx512;
  case KERNELS_ISA_AVX2:
    return fma_peak_chains_avx2;
  default:
    return fma_peak_chains_scalar;
  }
}

double kernels_measure_fma_peak(int threads, double seconds)
{
  if (threads <= 0)
    threads = 1;
  ProbeThread *probes = calloc((size_t)threads, sizeof *probes);
  pthread_t *handles = calloc((size_t)threads, sizeof *handles);
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)threads);
  for (int i = 0; i < threads; i++) {
    probes[i] = (ProbeThread){ &start, chains_for(kernels_isa()), seconds, 0, 0.0, 0.0, 0.0f };
    pthread_create(&handles[i], NULL, probe_main, &probes[i]);
  }
  uint64_t flops = 0;
  double first_begin = 0.0, last_end = 0.0;
  for (int i = 0; i < threads; i++) {
    pthread_join(handles[i], NULL);
    flops += probes[i].flops;
    first_begin = i == 0 || probes[i].begin < first_begin ? probes[i].begin : first_begin;
    last_end = probes[i].end > last_end ? probes[i].end : last_end;
  }
  pthread_barrier_destroy(&start);
  free(handles);
  free(probes);
  return last_end > first_begin ? (double)flops / (last_end - first_begin) * 1e-9 : 0.0;
}
