/* isa.c: which instruction set the fast kernels use, decided once per process. */
#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static KernelsIsa cpu_best = KERNELS_ISA_SCALAR;
static KernelsIsa in_use = KERNELS_ISA_SCALAR;
static int cpu_bf16;
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;

static void detect(void)
{
  /* Kernels split their work over their own pool: OpenBLAS threads would compete with it. */
  openblas_set_num_threads(1);
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    cpu_best = KERNELS_ISA_AVX512;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    cpu_best = KERNELS_ISA_AVX2;
  cpu_bf16 = cpu_best == KERNELS_ISA_AVX512 && __builtin_cpu_supports("avx512bf16");
  in_use = cpu_best;
  const char *forced = getenv("DISTILL_ISA");
  if (forced) {
    KernelsIsa want = cpu_best;
    if (!strcmp(forced, "scalar"))
      want = KERNELS_ISA_SCALAR;
    else if (!strcmp(forced, "avx2"))
      want = KERNELS_ISA_AVX2;
    else if (!strcmp(forced, "avx512"))
      want = KERNELS_ISA_AVX512;
    in_use = want < cpu_best ? want : cpu_best;
  }
}

KernelsIsa kernels_isa(void)
{
  pthread_once(&detect_once, detect);
  return in_use;
}

KernelsIsa kernels_set_isa(KernelsIsa isa)
{
  pthread_once(&detect_once, detect);
  in_use = isa < cpu_best ? isa : cpu_best;
  return in_use;
}

int kernels_have_bf16(void)
{
  return kernels_isa() == KERNELS_ISA_AVX512 && cpu_bf16;
}

const char *kernels_isa_name(KernelsIsa isa)
{
  switch (isa) {
  case KERNELS_ISA_AVX512:
    return "avx512";
  case KERNELS_ISA_AVX2:
    return "avx2";
  default:
    return "scalar";
  }
}
