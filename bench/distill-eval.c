/* distill-eval: runs the distillation engine over a synthetic scene, the teacher being the
 * scene's true labels, and prints one JSON line of figures. Used to choose the engine's defaults
 * and its optional features (docs/experiments.md, "The engine on the synthetic scene").
 *
 *   distill-eval [--frames N] [--score-from F] [--scene-change T] [--replay K] [--fg-weight W]
 *                [--cut F] [--absent A:B] [--lr X] [--optimizer sgd|adam] …
 *   distill-eval --async --fps 30 --teacher-delay-ms 200 …   per-frame latency of the stream
 *
 * Sync mode scores the student against the truth on frames [score-from, frames) (default the
 * second half; with --cut, also the 60 frames after the cut). Async mode paces frames at --fps
 * and delivers the labels from another thread --teacher-delay-ms after the query, then reports
 * the latency of distill_engine_process on frames that overlapped a training round and on those
 * that did not. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scene_stream.h"

static int frames = 480, score_from = -1, seed = 1, min_stride = 8, max_stride = 64,
           max_updates = 16, replay = -1, train_threads = 0, train_nice = -1, threads = 0, fps = 30,
           teacher_delay_ms = 200, cut = 0, student_seed = 5;
static double threshold = 0.9, lr = 0, fg_weight = -1, scene_change = -1, pan = 0.0;
static char *optimizer = NULL, *absent = NULL, *scene_size = NULL, *input_size = NULL;
static gboolean async_mode = FALSE, no_train = FALSE;

static GOptionEntry entries[] = {
  { "frames", 0, 0, G_OPTION_ARG_INT, &frames, "frames to run (480)", "N" },
  { "score-from", 0, 0, G_OPTION_ARG_INT, &score_from, "first scored frame (frames/2)", "F" },
  { "seed", 0, 0, G_OPTION_ARG_INT, &seed, "scene seed (1)", "S" },
  { "student-seed", 0, 0, G_OPTION_ARG_INT, &student_seed, "initialisation seed (5)", "S" },
  { "scene", 0, 0, G_OPTION_ARG_STRING, &scene_size, "rendered size (320x192)", "WxH" },
  { "input", 0, 0, G_OPTION_ARG_STRING, &input_size, "student input size (160x96)", "WxH" },
  { "min-stride", 0, 0, G_OPTION_ARG_INT, &min_stride, "(8)", "N" },
  { "max-stride", 0, 0, G_OPTION_ARG_INT, &max_stride, "(64)", "N" },
  { "threshold", 0, 0, G_OPTION_ARG_DOUBLE, &threshold, "accuracy threshold (0.9)", "X" },
  { "max-updates", 0, 0, G_OPTION_ARG_INT, &max_updates, "(16)", "N" },
  { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &lr, "learning rate (engine default)", "X" },
  { "optimizer", 0, 0, G_OPTION_ARG_STRING, &optimizer, "sgd or adam (engine default)", "O" },
  { "scene-change", 0, 0, G_OPTION_ARG_DOUBLE, &scene_change, "trigger threshold (0 = off; engine default)", "T" },
  { "replay", 0, 0, G_OPTION_ARG_INT, &replay, "replayed teacher frames (0 = off; engine default)", "K" },
  { "fg-weight", 0, 0, G_OPTION_ARG_DOUBLE, &fg_weight, "foreground pixel weight (1 = off; engine default)", "W" },
  { "cut", 0, 0, G_OPTION_ARG_INT, &cut, "scene cut at this frame (0 = none)", "F" },
  { "absent", 0, 0, G_OPTION_ARG_STRING, &absent, "class 2 off screen on [A, B)", "A:B" },
  { "pan", 0, 0, G_OPTION_ARG_DOUBLE, &pan, "background pan, widths per 100 frames", "X" },
  { "no-train", 0, 0, G_OPTION_ARG_NONE, &no_train, "never update the weights", NULL },
  { "async", 0, 0, G_OPTION_ARG_NONE, &async_mode, "latency run, asynchronous mode", NULL },
  { "fps", 0, 0, G_OPTION_ARG_INT, &fps, "async: frame rate (30)", "N" },
  { "teacher-delay-ms", 0, 0, G_OPTION_ARG_INT, &teacher_delay_ms, "async: (200)", "MS" },
  { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "inference threads (0 = cores)", "N" },
  { "train-threads", 0, 0, G_OPTION_ARG_INT, &train_threads, "(0 = engine default)", "N" },
  { "train-nice", 0, 0, G_OPTION_ARG_INT, &train_nice, "(engine default)", "N" },
  { NULL },
};

static void parse_size(const char *text, int *w, int *h, int dw, int dh)
{
  *w = dw;
  *h = dh;
  if (text && sscanf(text, "%dx%d", w, h) != 2) {
    fprintf(stderr, "distill-eval: a size is WxH, e.g. 320x192, not '%s'\n", text);
    exit(2);
  }
}

/* ---- async: a teacher thread answering after a delay ---------------------------------------- */

typedef struct {
  DistillQuery *query;  /* NULL: the end */
  gint64 due;
  uint8_t *labels;
} Pending;

typedef struct {
  DistillEngine *engine;
  GAsyncQueue *queue;
  int label_h, label_w;
  atomic_int training;
} AsyncRun;

static gpointer teacher_main(gpointer data)
{
  AsyncRun *run = data;
  for (;;) {
    Pending *p = g_async_queue_pop(run->queue);
    if (!p->query) {
      g_free(p);
      return NULL;
    }
    gint64 wait = p->due - g_get_monotonic_time();
    if (wait > 0)
      g_usleep((gulong)wait);
    distill_query_answer(p->query, p->labels, run->label_h, run->label_w, NULL);
    g_free(p->labels);
    g_free(p);
  }
}

static void on_round_started(const DistillRound *round, gpointer data)
{
  atomic_store(&((AsyncRun *)data)->training, 1);
}

static void on_round_finished(const DistillRound *round, gpointer data)
{
  atomic_store(&((AsyncRun *)data)->training, 0);
}

static int compare_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void print_latency(const char *name, GArray *ms)
{
  if (!ms->len) {
    printf(",\"%s_frames\":0", name);
    return;
  }
  g_array_sort(ms, compare_double);
  double *v = (double *)ms->data;
  double sum = 0;
  for (guint i = 0; i < ms->len; i++)
    sum += v[i];
  printf(",\"%s_frames\":%u,\"%s_mean_ms\":%.2f,\"%s_p50_ms\":%.2f,\"%s_p95_ms\":%.2f,"
         "\"%s_max_ms\":%.2f", name, ms->len, name, sum / ms->len, name, v[ms->len / 2], name,
         v[(guint)(ms->len * 0.95)], name, v[ms->len - 1]);
}

static void run_async(SceneStream *s, AsyncRun *run)
{
  GArray *busy = g_array_new(FALSE, FALSE, sizeof(double));
  GArray *idle = g_array_new(FALSE, FALSE, sizeof(double));
  GThread *teacher = g_thread_new("teacher", teacher_main, run);
  gint64 period = 1000000 / fps, next = g_get_monotonic_time();
  for (int f = 0; f < frames; f++) {
    scene_stream_load(s, (guint64)f);
    gint64 wait = next - g_get_monotonic_time();
    if (wait > 0)
      g_usleep((gulong)wait);
    next += period;
    int training_before = atomic_load(&run->training);
    gint64 start = g_get_monotonic_time();
    DistillQuery *query = distill_engine_wants_teacher(s->engine, &s->input);
    distill_engine_process(s->engine, &s->input, s->classes);
    double ms = (double)(g_get_monotonic_time() - start) / 1000.0;
    if (query) {
      Pending *p = g_new(Pending, 1);
      *p = (Pending){ query, g_get_monotonic_time() + teacher_delay_ms * 1000LL,
                      g_memdup2(s->truth, (gsize)s->label_w * s->label_h) };
      g_async_queue_push(run->queue, p);
    }
    g_array_append_val(training_before || atomic_load(&run->training) ? busy : idle, ms);
    if (f >= score_from) {
      s->miou_sum += frame_miou(s->classes, s->truth, (size_t)s->label_w * s->label_h,
                                  s->num_classes);
      s->scored++;
    }
  }
  g_async_queue_push(run->queue, g_new0(Pending, 1));
  g_thread_join(teacher);
  print_latency("training", busy);
  print_latency("idle", idle);
  g_array_free(busy, TRUE);
  g_array_free(idle, TRUE);
}

int main(int argc, char **argv)
{
  GOptionContext *context = g_option_context_new("- online distillation on a synthetic scene");
  g_option_context_add_main_entries(context, entries, NULL);
  GError *error = NULL;
  if (!g_option_context_parse(context, &argc, &argv, &error)) {
    fprintf(stderr, "distill-eval: %s\n", error->message);
    return 2;
  }
  g_option_context_free(context);
  if (score_from < 0)
    score_from = frames / 2;

  SyntheticSceneConfig scene_cfg;
  int sw, sh, iw, ih;
  parse_size(scene_size, &sw, &sh, 320, 192);
  parse_size(input_size, &iw, &ih, 160, 96);
  synthetic_scene_config_default(&scene_cfg, sw, sh, (guint64)seed);
  scene_cfg.cut_frame = (guint64)cut;
  scene_cfg.pan = pan;
  if (absent && sscanf(absent, "%" G_GUINT64_FORMAT ":%" G_GUINT64_FORMAT,
                       &scene_cfg.absent_from, &scene_cfg.absent_to) != 2) {
    fprintf(stderr, "distill-eval: --absent takes A:B, two frame numbers\n");
    return 2;
  }

  StudentConfig student_cfg;
  student_config_default(&student_cfg, scene_cfg.num_classes);
  Student *initial = student_new(&student_cfg, (guint64)student_seed);
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.sync = !async_mode;
  cfg.min_stride = (guint)min_stride;
  cfg.max_stride = (guint)max_stride;
  cfg.accuracy_threshold = threshold;
  cfg.max_updates = (guint)max_updates;
  if (optimizer) {
    float keep_lr = cfg.optimizer.learning_rate;
    optimizer_config_default(&cfg.optimizer, g_str_equal(optimizer, "sgd") ? OPTIMIZER_SGD
                                                                          : OPTIMIZER_ADAM);
    if (!lr)
      cfg.optimizer.learning_rate = g_str_equal(optimizer, "sgd") ? cfg.optimizer.learning_rate
                                                                 : keep_lr;
  }
  if (lr)
    cfg.optimizer.learning_rate = (float)lr;
  cfg.train = !no_train;
  if (scene_change >= 0)
    cfg.scene_change_threshold = scene_change;
  if (replay >= 0)
    cfg.replay_frames = (guint)replay;
  if (fg_weight >= 0)
    cfg.foreground_weight = fg_weight;
  cfg.threads = threads;
  cfg.train_threads = train_threads;
  if (train_nice >= 0)
    cfg.train_nice = train_nice;
  AsyncRun run = { 0 };
  if (async_mode) {
    cfg.round_started = on_round_started;
    cfg.round_finished = on_round_finished;
    cfg.round_user_data = &run;
  }
  DistillEngine *engine = distill_engine_new(initial, &cfg, &error);
  if (!engine) {
    fprintf(stderr, "distill-eval: %s\n", error->message);
    return 2;
  }
  SceneStream s;
  scene_stream_init(&s, &scene_cfg, engine, iw, ih);

  gint64 start = g_get_monotonic_time();
  double cut_sum = 0, all_sum = 0;
  int cut_frames = 0;
  printf("{\"mode\":\"%s\"", async_mode ? "async" : "sync");
  if (async_mode) {
    run = (AsyncRun){ .engine = engine, .queue = g_async_queue_new(), .label_h = s.label_h,
                      .label_w = s.label_w };
    run_async(&s, &run);
    g_async_queue_unref(run.queue);
  } else {
    for (int f = 0; f < frames; f++) {
      double before = s.miou_sum;
      scene_stream_sync_frame(&s, (guint64)f, TRUE);
      if (f < score_from) { /* scored separately: only the tail counts as "miou" */
        s.miou_sum = before;
        s.scored--;
      }
      double miou = frame_miou(s.classes, s.truth, (size_t)s.label_w * s.label_h,
                                 s.num_classes);
      all_sum += miou;
      if (cut && f >= cut && f < cut + 60) {
        cut_sum += miou;
        cut_frames++;
      }
    }
  }
  DistillStats st;
  distill_engine_get_stats(engine, &st);
  printf(",\"frames\":%" G_GUINT64_FORMAT ",\"miou\":%.4f", st.frames, scene_stream_miou(&s));
  if (!async_mode)
    printf(",\"miou_all\":%.4f", all_sum / frames);
  if (cut_frames)
    printf(",\"miou_after_cut\":%.4f", cut_sum / cut_frames);
  printf(",\"teacher_fraction\":%.4f,\"queries\":%" G_GUINT64_FORMAT ",\"updates\":%" G_GUINT64_FORMAT
         ",\"rounds\":%" G_GUINT64_FORMAT ",\"stride\":%u,\"train_ms\":%.1f,\"student_ms\":%.2f"
         ",\"wall_s\":%.1f}\n",
         (double)st.teacher_queries / (double)st.frames, st.teacher_queries, st.updates,
         st.rounds, st.stride, st.train_ms, st.student_ms,
         (double)(g_get_monotonic_time() - start) / 1e6);
  scene_stream_clear(&s);
  distill_engine_free(engine);
  student_free(initial);
  return 0;
}
