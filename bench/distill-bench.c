/* distill-bench: how fast the student runs and trains on this machine, and how close to the
 * CPU's peak.
 *
 *   distill-bench [--arch NAME] [--threads N] [--runs N] [--size WxH]... [--classes N]
 *                 [--checkpoint F] [--json-only]
 *
 * For each size, one JSON line for the forward pass as the engine runs it (the network's
 * inference form: re-parameterised branches fused) and one for the train step (zero grads,
 * forward, backward, a step of the element's default optimiser) as the engine trains
 * ("precision": bf16 products where the CPU has AVX512-BF16, else fp32), plus "forward-fp32" and
 * "train-step-fp32" beside them on such CPUs; every line names the architecture: the median
 * time of --runs runs after warm-up, the work
 * per frame, the throughput achieved and its fraction of the fp32 FMA peak measured in the same
 * run, the peak RSS, and the memory growth over steady-state frames (nonzero means frames
 * allocate). */
#include <glib.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "distill.h"
#include "kernels.h"
#include "optimizer.h"
#include "student.h"

#define WARMUP_RUNS 3
#define STEADY_FRAMES 50
/* The peak is a ceiling: the best of a few probes, so that a neighbour holding a core for part of
 * one probe does not lower it. */
#define PEAK_PROBES 3
#define PEAK_PROBE_SECONDS 0.3
#define BENCH_SEED 20261122

typedef struct {
  int threads, runs, classes;
  char **sizes;
  char *checkpoint, *arch;
  gboolean json_only;
} BenchOptions;

/* One network, its inference form and its working set, for one input size. */
typedef struct {
  Student *student, *inference;
  Optimizer *optimizer;
  ThreadPool *pool;
  FeatureMap input;
  uint8_t *labels;
} Bench;

typedef void (*BenchFrame)(Bench *bench);

typedef struct {
  double median_ms, min_ms;
  double rss_growth_kb, heap_growth_bytes;
} FrameTimes;

static double now_seconds(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double peak_rss_mb(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0; /* kilobytes on Linux */
}

static double current_rss_kb(void)
{
  long pages_total = 0, pages_resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL)
    return 0.0;
  if (fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2)
    pages_resident = 0;
  fclose(f);
  return pages_resident * (sysconf(_SC_PAGESIZE) / 1024.0);
}

/* Bytes the allocator has handed out and not got back, mmapped blocks included. */
static double heap_in_use_bytes(void)
{
  struct mallinfo2 mi = mallinfo2();
  return (double)mi.uordblks + (double)mi.hblkhd;
}

static int compare_doubles(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void forward_frame(Bench *bench)
{
  student_forward(bench->inference, &bench->input, bench->pool);
}

static void train_frame(Bench *bench)
{
  student_zero_grads(bench->student);
  student_forward(bench->student, &bench->input, bench->pool);
  student_backward(bench->student, bench->labels, NULL, bench->pool);
  optimizer_step(bench->optimizer, student_params(bench->student), student_grads(bench->student));
}

/* Warm-up, timed runs, then STEADY_FRAMES more frames over which resident memory and heap in
 * use must not grow: every buffer is planned at the first frame of a size. */
static FrameTimes time_frames(Bench *bench, BenchFrame frame, int runs)
{
  FrameTimes t = { 0 };
  double *ms = g_new(double, runs);
  for (int i = 0; i < WARMUP_RUNS; i++)
    frame(bench);
  for (int i = 0; i < runs; i++) {
    double start = now_seconds();
    frame(bench);
    ms[i] = (now_seconds() - start) * 1e3;
  }
  qsort(ms, runs, sizeof *ms, compare_doubles);
  t.median_ms = runs % 2 ? ms[runs / 2] : 0.5 * (ms[runs / 2 - 1] + ms[runs / 2]);
  t.min_ms = ms[0];
  g_free(ms);

  double rss_before = current_rss_kb();
  double heap_before = heap_in_use_bytes();
  for (int i = 0; i < STEADY_FRAMES; i++)
    frame(bench);
  t.rss_growth_kb = current_rss_kb() - rss_before;
  t.heap_growth_bytes = heap_in_use_bytes() - heap_before;
  return t;
}

static void print_measurement(const char *name, int w, int h, const BenchOptions *opts,
                              const char *precision, double gflop, double peak_gflops,
                              const FrameTimes *t)
{
  double gflops = gflop / (t->median_ms * 1e-3);
  printf("{\"bench\":\"%s\",\"arch\":\"%s\",\"size\":\"%dx%d\",\"precision\":\"%s\","
         "\"threads\":%d,"
         "\"isa\":\"%s\",\"runs\":%d,"
         "\"ms\":%.3f,\"min_ms\":%.3f,\"gflop\":%.4f,\"gflops\":%.2f,\"peak_gflops\":%.2f,"
         "\"peak_fraction\":%.4f,\"peak_rss_mb\":%.1f,\"steady_frames\":%d,"
         "\"rss_growth_kb\":%.0f,\"heap_growth_bytes\":%.0f}\n",
         name, opts->arch, w, h, precision, opts->threads, kernels_isa_name(kernels_isa()), opts->runs, t->median_ms,
         t->min_ms, gflop, gflops, peak_gflops, gflops / peak_gflops, peak_rss_mb(),
         STEADY_FRAMES, t->rss_growth_kb, t->heap_growth_bytes);
  fflush(stdout);
}

/* A fixed pseudo-random frame in [-0.5, 0.5) and labels over every class. */
static void bench_fill_frame(Bench *bench, int w, int h)
{
  GRand *rand = g_rand_new_with_seed(BENCH_SEED);
  int lh, lw;
  float *pixels = g_new(float, (size_t)w * h * 3);
  for (size_t i = 0; i < (size_t)w * h * 3; i++)
    pixels[i] = (float)g_rand_double(rand) - 0.5f;
  bench->input = feature_map(pixels, h, w, 3);
  student_logits_size(bench->student, h, w, &lh, &lw);
  int classes = student_get_config(bench->student)->num_classes;
  bench->labels = g_new(uint8_t, (size_t)lh * lw);
  for (size_t i = 0; i < (size_t)lh * lw; i++)
    bench->labels[i] = (uint8_t)g_rand_int_range(rand, 0, classes);
  g_rand_free(rand);
}

static void run_size(Bench *bench, int w, int h, const BenchOptions *opts, double peak_gflops)
{
  bench_fill_frame(bench, w, h);
  double forward_gflop = student_forward_flops(bench->student, h, w) * 1e-9;

  FrameTimes t;
  /* As the engine runs it: bfloat16 products in the wide layers where the CPU has them, the
   * all-fp32 pass beside it. */
  if (student_set_bf16_forward(bench->inference, TRUE)) {
    student_set_bf16_forward(bench->inference, FALSE);
    t = time_frames(bench, forward_frame, opts->runs);
    print_measurement("forward-fp32", w, h, opts, "fp32", forward_gflop, peak_gflops, &t);
    student_set_bf16_forward(bench->inference, TRUE);
  }
  t = time_frames(bench, forward_frame, opts->runs);
  print_measurement("forward", w, h, opts,
                    student_get_bf16_forward(bench->inference) ? "bf16" : "fp32", forward_gflop,
                    peak_gflops, &t);
  /* Backward costs about two forwards (input and weight gradients); stem.0 skips its input
   * gradient, so 3x slightly overcounts. */
  if (student_set_bf16(bench->student, TRUE)) {
    student_set_bf16(bench->student, FALSE);
    student_set_bf16_forward(bench->student, FALSE);
    t = time_frames(bench, train_frame, opts->runs);
    print_measurement("train-step-fp32", w, h, opts, "fp32", 3.0 * forward_gflop, peak_gflops,
                      &t);
    student_set_bf16(bench->student, TRUE);
    student_set_bf16_forward(bench->student, TRUE);
  }
  t = time_frames(bench, train_frame, opts->runs);
  print_measurement("train-step", w, h, opts, student_get_bf16(bench->student) ? "bf16" : "fp32",
                    3.0 * forward_gflop, peak_gflops, &t);
  student_set_bf16(bench->student, FALSE);
  student_set_bf16_forward(bench->student, FALSE);

  g_free(bench->input.data);
  g_free(bench->labels);
}

static double measure_peak_gflops(int threads)
{
  double best = 0.0;
  for (int i = 0; i < PEAK_PROBES; i++)
    best = MAX(best, kernels_measure_fma_peak(threads, PEAK_PROBE_SECONDS));
  return best;
}

static Student *open_student(const BenchOptions *opts)
{
  if (opts->checkpoint == NULL) {
    StudentConfig cfg;
    student_config_default(&cfg, opts->classes);
    if (opts->arch && !student_arch_from_name(opts->arch, &cfg.arch)) {
      fprintf(stderr, "distill-bench: no architecture \"%s\"\n", opts->arch);
      return NULL;
    }
    student_config_default_arch(&cfg, cfg.arch, opts->classes);
    return student_new(&cfg, BENCH_SEED);
  }
  GError *error = NULL;
  Student *student = student_load(opts->checkpoint, &error);
  if (student == NULL) {
    fprintf(stderr, "distill-bench: %s\n", error->message);
    g_error_free(error);
  }
  return student;
}

static gboolean parse_options(int argc, char **argv, BenchOptions *opts)
{
  GOptionEntry entries[] = {
    { "arch", 0, 0, G_OPTION_ARG_STRING, &opts->arch,
      "Architecture of a freshly initialised student (default: the element's)", "NAME" },
    { "threads", 0, 0, G_OPTION_ARG_INT, &opts->threads, "Compute threads (default 2)", "N" },
    { "runs", 0, 0, G_OPTION_ARG_INT, &opts->runs, "Timed runs per measurement (default 20)",
      "N" },
    { "size", 0, 0, G_OPTION_ARG_STRING_ARRAY, &opts->sizes,
      "Input size, repeatable (default 640x360 and 1280x720)", "WxH" },
    { "classes", 0, 0, G_OPTION_ARG_INT, &opts->classes,
      "Classes of a freshly initialised student (default 2)", "N" },
    { "checkpoint", 0, 0, G_OPTION_ARG_FILENAME, &opts->checkpoint,
      "Benchmark this checkpoint instead of a fresh student", "F" },
    { "json-only", 0, 0, G_OPTION_ARG_NONE, &opts->json_only, "Print only the JSON lines", NULL },
    { NULL }
  };
  GOptionContext *context = g_option_context_new("- time the student's forward and train step");
  g_option_context_add_main_entries(context, entries, NULL);
  GError *error = NULL;
  gboolean ok = g_option_context_parse(context, &argc, &argv, &error);
  g_option_context_free(context);
  if (!ok) {
    fprintf(stderr, "distill-bench: %s\n", error->message);
    g_error_free(error);
    return FALSE;
  }
  if (opts->threads < 1 || opts->runs < 1 || opts->classes < 2 || opts->classes > 255) {
    fprintf(stderr, "distill-bench: --threads and --runs must be >= 1, --classes 2..255\n");
    return FALSE;
  }
  if (opts->sizes == NULL) {
    const char *defaults[] = { "640x360", "1280x720", NULL };
    opts->sizes = g_strdupv((char **)defaults);
  }
  return TRUE;
}

int main(int argc, char **argv)
{
  BenchOptions opts = { .threads = 2, .runs = 20, .classes = 2 };
  if (!parse_options(argc, argv, &opts))
    return 2;
  for (char **size = opts.sizes; *size != NULL; size++) {
    int w, h;
    if (sscanf(*size, "%dx%d", &w, &h) != 2 || w < 1 || h < 1) {
      fprintf(stderr, "distill-bench: bad size '%s' (want WxH)\n", *size);
      return 2;
    }
  }
  Bench bench = { .student = open_student(&opts) };
  if (bench.student == NULL)
    return 1;
  g_free(opts.arch);
  opts.arch = g_strdup(student_arch_name(student_get_config(bench.student)->arch));
  bench.inference = student_fused_copy(bench.student);
  /* The element's default optimiser (distill.h). */
  DistillConfig distill_cfg;
  distill_config_default(&distill_cfg);
  bench.optimizer = optimizer_new(&distill_cfg.optimizer, student_param_count(bench.student));
  bench.pool = thread_pool_new(opts.threads);

  double peak_gflops = measure_peak_gflops(opts.threads);
  if (!opts.json_only)
    printf("# %s, %zu parameters; isa %s, %d threads, fp32 FMA peak %.1f GFLOP/s; a train step "
           "counts 3x the forward work (an approximation: the first layer computes no input "
           "gradient)\n", opts.arch, student_param_count(bench.student),
           kernels_isa_name(kernels_isa()), opts.threads, peak_gflops);
  for (char **size = opts.sizes; *size != NULL; size++) {
    int w, h;
    sscanf(*size, "%dx%d", &w, &h);
    run_size(&bench, w, h, &opts, peak_gflops);
  }

  thread_pool_free(bench.pool);
  optimizer_free(bench.optimizer);
  student_free(bench.inference);
  student_free(bench.student);
  g_strfreev(opts.sizes);
  g_free(opts.checkpoint);
  g_free(opts.arch);
  return 0;
}
