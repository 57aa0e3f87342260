/* upsample.c (distill-bench-upsample): the student's class map at the frame's size.
 *
 * argmax_bilinear, the upsampling of the logits to the video frame and their argmax that the
 * element runs on every frame it draws, from the student's output size to the frame's: 320x240 to
 * 768x576 and 640x360 to 1280x720, on 1 and 2 threads, beside its plain-C reference. The median of
 * the timed runs after a warm-up, one JSON line each:
 * {"op","impl","isa","classes","from","to","threads","ms"}; impl is "kernel" (the ISA in use)
 * or "ref".
 *
 *   distill-bench-upsample [--classes N] [--threads N]   (default: 2 classes, 1 and 2 threads) */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels.h"

static const struct {
  int in_w, in_h, out_w, out_h;
} sizes[] = {
  { 320, 240, 768, 576 },
  { 640, 360, 1280, 720 },
};

static double now_seconds(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void upsample(const FeatureMap *logits, int width, int height, uint8_t *classes,
                     ThreadPool *pool, gboolean reference)
{
  if (reference)
    argmax_bilinear_ref(logits, width, height, classes, (size_t)width);
  else
    argmax_bilinear(logits, width, height, classes, (size_t)width, pool);
}

/* Median seconds of one run: 3 warm-up runs, then runs until about 0.2 s have passed (5 to 101). */
static double time_upsample(const FeatureMap *logits, int width, int height, uint8_t *classes,
                            ThreadPool *pool, gboolean reference)
{
  double times[101];
  int n = 0;
  for (int i = 0; i < 3; i++)
    upsample(logits, width, height, classes, pool, reference);
  double start = now_seconds();
  while (n < 101 && (n < 5 || now_seconds() - start < 0.2)) {
    double t0 = now_seconds();
    upsample(logits, width, height, classes, pool, reference);
    times[n++] = now_seconds() - t0;
  }
  qsort(times, n, sizeof *times, compare_doubles);
  return times[n / 2];
}

static void print_line(gboolean reference, int classes, int in_w, int in_h, int w, int h,
                       int threads, double seconds)
{
  printf("{\"op\":\"argmax_bilinear\",\"impl\":\"%s\",\"isa\":\"%s\",\"classes\":%d,"
         "\"from\":\"%dx%d\",\"to\":\"%dx%d\",\"threads\":%d,\"ms\":%.3f}\n",
         reference ? "ref" : "kernel", reference ? "scalar" : kernels_isa_name(kernels_isa()),
         classes, in_w, in_h, w, h, threads, seconds * 1e3);
}

int main(int argc, char **argv)
{
  int classes = 2, threads = 0;
  GOptionEntry entries[] = {
    { "classes", 0, 0, G_OPTION_ARG_INT, &classes, "Classes of the logits (default 2)", "N" },
    { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "Only this many threads", "N" },
    { NULL },
  };
  g_autoptr(GOptionContext) context = g_option_context_new(NULL);
  g_autoptr(GError) error = NULL;
  g_option_context_add_main_entries(context, entries, NULL);
  if (!g_option_context_parse(context, &argc, &argv, &error) || classes < 1 || classes > 255) {
    fprintf(stderr, "distill-bench-upsample: %s\n",
            error ? error->message : "--classes: 1 to 255");
    return 2;
  }
  for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
    int in_w = sizes[s].in_w, in_h = sizes[s].in_h, w = sizes[s].out_w, h = sizes[s].out_h;
    float *data = g_new(float, (size_t)in_w * in_h * classes);
    for (size_t i = 0; i < (size_t)in_w * in_h * classes; i++)
      data[i] = (float)g_random_double_range(-4.0, 4.0);
    FeatureMap logits = feature_map(data, in_h, in_w, classes);
    uint8_t *out = g_malloc((size_t)w * h);
    for (int t = 1; t <= 2; t++) {
      if (threads && t != threads)
        continue;
      ThreadPool *pool = thread_pool_new(t);
      print_line(FALSE, classes, in_w, in_h, w, h, t,
                 time_upsample(&logits, w, h, out, pool, FALSE));
      thread_pool_free(pool);
    }
    print_line(TRUE, classes, in_w, in_h, w, h, 1, time_upsample(&logits, w, h, out, NULL, TRUE));
    g_free(out);
    g_free(data);
  }
  return 0;
}
