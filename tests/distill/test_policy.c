/* test_policy.c: the paper's stride policy, the configuration and its checks, the input
 * converter, and the engine's bookkeeping of teacher queries (sync mode, no training): strides,
 * answers, failures, queries given up, the sync wait. */
#include <string.h>

#include "distill.h"

static void test_stride_doubles_halves_clamps(void)
{
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.min_stride = 4;
  cfg.max_stride = 32;
  cfg.accuracy_threshold = 0.75;
  g_assert_cmpuint(distill_policy_next_stride(&cfg, 4, 0.75), ==, 8);  /* met: doubles */
  g_assert_cmpuint(distill_policy_next_stride(&cfg, 8, 0.9), ==, 16);
  g_assert_cmpuint(distill_policy_next_stride(&cfg, 16, 0.9), ==, 32);
  g_assert_cmpuint(distill_policy_next_stride(&cfg, 32, 0.9), ==, 32); /* clamped above */
  g_assert_cmpuint(distill_policy_next_stride(&cfg, 32, 0.7), ==, 16); /* missed: halves */
  g_assert_cmpuint(distill_policy_next_stride(&cfg, 8, 0.1), ==, 4);
  g_assert_cmpuint(distill_policy_next_stride(&cfg, 4, 0.1), ==, 4);   /* clamped below */
  g_assert_cmpuint(distill_policy_next_stride(&cfg, 5, 0.1), ==, 4);
  g_assert_cmpuint(distill_policy_next_stride(&cfg, 20, 0.9), ==, 32);
}

/* The stride goes by the map the stream showed before the answer when the answer was fused: a
 * student that fits the frame in its steps after the stream showed it wrong is not trusted for
 * a longer stride. */
static void test_stride_miou_is_the_map_shown(void)
{
  DistillConfig cfg;
  distill_config_default(&cfg);
  DistillRound fitted = { .miou_before = 0.6, .miou_after = 0.95, .held_miou = 0.5,
                          .fused_miou = 0.7 };
  g_assert_cmpfloat(distill_policy_stride_miou(&fitted), ==, 0.7);
  g_assert_cmpuint(distill_policy_next_stride(&cfg, 16, distill_policy_stride_miou(&fitted)),
                   ==, 8);
  DistillRound shown_right = { .miou_before = 0.8, .miou_after = 0.85, .fused_miou = 0.93 };
  g_assert_cmpuint(
      distill_policy_next_stride(&cfg, 16, distill_policy_stride_miou(&shown_right)), ==, 32);
  /* No answer held (the first round, or fuse_teacher off): the student's after its steps. */
  DistillRound unfused = { .miou_before = 0.6, .miou_after = 0.95, .held_miou = -1.0,
                           .fused_miou = -1.0 };
  g_assert_cmpfloat(distill_policy_stride_miou(&unfused), ==, 0.95);
}

static void test_keep_training(void)
{
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.max_updates = 3;
  cfg.accuracy_threshold = 0.8;
  g_assert_true(distill_policy_keep_training(&cfg, 0, 0.5));
  g_assert_true(distill_policy_keep_training(&cfg, 2, 0.79));
  g_assert_false(distill_policy_keep_training(&cfg, 3, 0.5));  /* max-updates reached */
  g_assert_false(distill_policy_keep_training(&cfg, 0, 0.8));  /* threshold met */
  g_assert_false(distill_policy_keep_training(&cfg, 1, 0.95));
  cfg.train = FALSE;
  g_assert_false(distill_policy_keep_training(&cfg, 0, 0.1));
  cfg.train = TRUE;
  cfg.max_updates = 0;
  g_assert_false(distill_policy_keep_training(&cfg, 0, 0.1));
}

static void test_config_errors(void)
{
  StudentConfig scfg;
  student_config_default(&scfg, 2);
  Student *s = student_new(&scfg, 1);
  DistillConfig cfg;
  GError *error = NULL;

  distill_config_default(&cfg);
  cfg.min_stride = 16;
  cfg.max_stride = 8;
  g_assert_null(distill_engine_new(s, &cfg, &error));
  g_assert_error(error, DISTILL_ERROR, DISTILL_ERROR_CONFIG);
  g_assert_nonnull(strstr(error->message, "min_stride"));
  g_clear_error(&error);

  distill_config_default(&cfg);
  cfg.accuracy_threshold = 1.5;
  g_assert_null(distill_engine_new(s, &cfg, &error));
  g_assert_nonnull(strstr(error->message, "accuracy_threshold"));
  g_clear_error(&error);

  distill_config_default(&cfg);
  cfg.teacher_inflight = 0;
  g_assert_null(distill_engine_new(s, &cfg, &error));
  g_assert_nonnull(strstr(error->message, "teacher_inflight"));
  g_clear_error(&error);
  student_free(s);
}

/* The defaults are the contract's (DESIGN.md; the element's properties alias them). */
static void test_config_defaults(void)
{
  DistillConfig cfg;
  distill_config_default(&cfg);
  g_assert_cmpuint(cfg.min_stride, ==, 8);
  g_assert_cmpuint(cfg.max_stride, ==, 64);
  g_assert_cmpfloat(cfg.accuracy_threshold, ==, 0.9);
  g_assert_cmpuint(cfg.max_updates, ==, 16);
  g_assert_cmpint(cfg.optimizer.kind, ==, OPTIMIZER_ADAM);
  g_assert_cmpfloat_with_epsilon(cfg.optimizer.learning_rate, 5e-4, 1e-9);
  g_assert_false(cfg.sync);
  g_assert_true(cfg.train);
  g_assert_cmpint(cfg.train_nice, ==, 10);
  g_assert_cmpint(distill_config_train_threads(&cfg), >=, 1);
  cfg.train_threads = 3;
  g_assert_cmpint(distill_config_train_threads(&cfg), ==, 3);
}

static void test_input_from_rgb(void)
{
  /* Same size: exact, any channel order. A 2x2 BGRx frame. */
  const uint8_t bgrx[] = { 0, 0, 255, 9, 255, 0, 0, 9, /* row 2: */ 0, 255, 0, 9, 51, 102, 153, 9 };
  float data[2 * 2 * 3];
  FeatureMap m = feature_map(data, 2, 2, 3);
  const int order[3] = { 2, 1, 0 };
  distill_input_from_rgb(bgrx, 2, 2, 8, 4, order, &m);
  const float expected[] = { 0.5f, -0.5f, -0.5f, -0.5f, -0.5f, 0.5f, -0.5f, 0.5f, -0.5f,
                             0.1f, -0.1f, -0.3f };
  for (int i = 0; i < 12; i++)
    g_assert_cmpfloat_with_epsilon(data[i], expected[i], 1e-6);

  /* Downscaling 4 -> 2 with half-pixel centres averages pixel pairs; an horizontal ramp. */
  uint8_t ramp[4 * 1 * 3];
  for (int x = 0; x < 4; x++)
    ramp[x * 3] = ramp[x * 3 + 1] = ramp[x * 3 + 2] = (uint8_t)(x * 60);
  float small[2 * 3];
  FeatureMap ms = feature_map(small, 1, 2, 3);
  distill_input_from_rgb(ramp, 4, 1, 12, 3, NULL, &ms);
  g_assert_cmpfloat_with_epsilon(small[0], 30.0f / 255 - 0.5f, 1e-6);
  g_assert_cmpfloat_with_epsilon(small[3], 150.0f / 255 - 0.5f, 1e-6);
}

/* Labels equal to the engine's own prediction for input: its mIoU is 1. */
static void own_labels(DistillEngine *e, const FeatureMap *input, uint8_t *labels)
{
  Student *copy = distill_engine_snapshot(e);
  argmax_channels(student_forward(copy, input, NULL), labels, NULL);
  student_free(copy);
}

/* A 2-class engine in sync mode, training off, strides from 2 to max_stride, on one thread;
 * queries are given up after 50 ms. */
static DistillEngine *new_measuring_engine(guint max_stride, double scene_change,
                                           Student **student)
{
  StudentConfig scfg;
  student_config_default(&scfg, 2);
  *student = student_new(&scfg, 1);
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.sync = TRUE;
  cfg.train = FALSE;
  cfg.min_stride = 2;
  cfg.max_stride = max_stride;
  cfg.scene_change_threshold = scene_change;
  cfg.teacher_timeout_ms = 50;
  cfg.threads = 1;
  return distill_engine_new(*student, &cfg, NULL);
}

/* A 48x64 input of fixed pseudo-random texture (free its data). */
static FeatureMap textured_input(void)
{
  FeatureMap input = feature_map(g_new(float, 48 * 64 * 3), 48, 64, 3);
  for (int i = 0; i < 48 * 64 * 3; i++)
    input.data[i] = (float)((i * 7919) % 101) / 100.0f - 0.5f;
  return input;
}

/* The policy measures the student where the user sees it: with labels at the frame's size, a
 * student that agrees with the teacher at the logits' size but not at the frame's misses the
 * threshold; labels smaller than the logits are refused. */
static void test_measured_at_shown_size(void)
{
  Student *s;
  DistillEngine *e = new_measuring_engine(8, 0.0, &s);
  FeatureMap input = textured_input();
  int lh, lw;
  distill_engine_label_size(e, 48, 64, &lh, &lw);
  uint8_t *labels = g_malloc(lh * lw), *shown = g_malloc(96 * 128), *classes = g_malloc(lh * lw);
  own_labels(e, &input, labels);
  Student *copy = distill_engine_snapshot(e);
  argmax_bilinear(student_forward(copy, &input, NULL), 128, 96, shown, 128, NULL);
  student_free(copy);
  DistillStats stats;

  /* Agreeing at both sizes: 1, the stride doubles. */
  DistillQuery *q = distill_engine_wants_teacher(e, &input);
  g_assert_true(distill_query_answer_shown(q, labels, lh, lw, shown, 96, 128, NULL));
  distill_engine_process(e, &input, classes);
  distill_engine_get_stats(e, &stats);
  g_assert_cmpfloat(stats.last_miou, >, 0.95);
  g_assert_cmpuint(stats.stride, ==, 4);

  /* The teacher sees the opposite at the frame's size: measured there, far below. */
  for (int i = 0; i < 96 * 128; i++)
    shown[i] = 1 - shown[i];
  for (int f = 0; f < 4; f++) {
    q = distill_engine_wants_teacher(e, &input);
    if (q)
      g_assert_true(distill_query_answer_shown(q, labels, lh, lw, shown, 96, 128, NULL));
    distill_engine_process(e, &input, classes);
  }
  distill_engine_get_stats(e, &stats);
  g_assert_cmpfloat(stats.last_miou, <, 0.5);
  g_assert_cmpuint(stats.stride, ==, 2);

  /* Shown labels smaller than the logits: refused, counted. */
  guint64 errors = stats.teacher_errors;
  GError *error = NULL;
  while (!(q = distill_engine_wants_teacher(e, &input)))
    distill_engine_process(e, &input, classes);
  g_assert_false(distill_query_answer_shown(q, labels, lh, lw, shown, lh - 1, lw, &error));
  g_assert_error(error, DISTILL_ERROR, DISTILL_ERROR_LABELS);
  g_clear_error(&error);
  distill_engine_process(e, &input, classes);
  distill_engine_get_stats(e, &stats);
  g_assert_cmpuint(stats.teacher_errors, ==, errors + 1);

  distill_engine_free(e);
  student_free(s);
  g_free(labels);
  g_free(shown);
  g_free(classes);
  g_free(input.data);
}

/* The engine's bookkeeping: strides, answers, failures and queries given up. */
static void test_engine_queries(void)
{
  Student *s;
  DistillEngine *e = new_measuring_engine(8, 0.0, &s);
  int lh, lw, qh, qw;
  distill_engine_label_size(e, 16, 32, &lh, &lw);
  g_assert_cmpint(lh, ==, 8);
  g_assert_cmpint(lw, ==, 16);
  float data[32 * 16 * 3] = { 0 };
  FeatureMap input = feature_map(data, 16, 32, 3);
  uint8_t classes[8 * 16], labels[8 * 16];
  GError *error = NULL;

  /* Frame 0 always asks; a second call for the same frame does not. */
  DistillQuery *q0 = distill_engine_wants_teacher(e, &input);
  g_assert_nonnull(q0);
  g_assert_cmpuint(distill_query_id(q0), ==, 1);
  distill_query_label_size(q0, &qh, &qw);
  g_assert_cmpint(qh, ==, lh);
  g_assert_cmpint(qw, ==, lw);
  g_assert_null(distill_engine_wants_teacher(e, &input));
  /* Labels of the wrong size fail the query. */
  own_labels(e, &input, labels);
  g_assert_false(distill_query_answer(q0, labels, lh + 1, lw, &error));
  g_assert_error(error, DISTILL_ERROR, DISTILL_ERROR_LABELS);
  g_clear_error(&error);
  distill_engine_process(e, &input, classes);
  g_assert_cmpmem(classes, sizeof classes, labels, sizeof labels);

  DistillStats st;
  distill_engine_get_stats(e, &st);
  g_assert_cmpuint(st.teacher_queries, ==, 1);
  g_assert_cmpuint(st.teacher_errors, ==, 1);
  g_assert_cmpuint(st.rounds, ==, 0);
  g_assert_cmpuint(st.stride, ==, 2);

  /* Frame 1: not due. Frame 2: due; answered with the student's labels: mIoU 1, the stride
   * doubles (2 -> 4). */
  g_assert_null(distill_engine_wants_teacher(e, &input));
  distill_engine_process(e, &input, classes);
  DistillQuery *q2 = distill_engine_wants_teacher(e, &input);
  g_assert_cmpuint(distill_query_id(q2), ==, 3);
  g_assert_true(distill_query_answer(q2, labels, lh, lw, &error));
  g_assert_no_error(error);
  distill_engine_process(e, &input, classes);
  distill_engine_get_stats(e, &st);
  g_assert_cmpuint(st.rounds, ==, 1);
  g_assert_cmpuint(st.updates, ==, 0);
  g_assert_cmpfloat(st.last_miou, ==, 1.0);
  g_assert_cmpuint(st.stride, ==, 4);

  /* Frames 3..5 not due, frame 6 due; all-wrong labels: the stride halves back to 2. */
  for (int f = 3; f < 6; f++) {
    g_assert_null(distill_engine_wants_teacher(e, &input));
    distill_engine_process(e, &input, classes);
  }
  DistillQuery *q6 = distill_engine_wants_teacher(e, &input);
  g_assert_cmpuint(distill_query_id(q6), ==, 7);
  for (int i = 0; i < lh * lw; i++)
    labels[i] = (uint8_t)(1 - classes[i]);
  g_assert_true(distill_query_answer(q6, labels, lh, lw, NULL));
  distill_engine_process(e, &input, classes);
  distill_engine_get_stats(e, &st);
  g_assert_cmpfloat(st.last_miou, ==, 0.0);
  g_assert_cmpuint(st.stride, ==, 2);

  /* Frame 7 not due; frame 8 due, its query fails; frame 9 not due (the query counted). */
  g_assert_null(distill_engine_wants_teacher(e, &input));
  distill_engine_process(e, &input, classes);
  DistillQuery *q8 = distill_engine_wants_teacher(e, &input);
  g_assert_cmpuint(distill_query_id(q8), ==, 9);
  distill_query_fail(q8);
  distill_engine_process(e, &input, classes);
  g_assert_null(distill_engine_wants_teacher(e, &input));
  distill_engine_process(e, &input, classes);
  /* Frame 10 due, never answered: processing it waits for the timeout (and the grace the
   * caller's own timeout is given), then gives the query up; its late answer is refused. */
  DistillQuery *q10 = distill_engine_wants_teacher(e, &input);
  g_assert_nonnull(q10);
  distill_engine_process(e, &input, classes);
  g_assert_false(distill_query_answer(q10, labels, lh, lw, &error));
  g_assert_error(error, DISTILL_ERROR, DISTILL_ERROR_QUERY);
  g_clear_error(&error);
  distill_engine_get_stats(e, &st);
  g_assert_cmpuint(st.frames, ==, 11);
  g_assert_cmpuint(st.teacher_queries, ==, 5);
  g_assert_cmpuint(st.teacher_errors, ==, 4); /* wrong size, failed, given up, refused */
  g_assert_cmpuint(st.rounds, ==, 2);

  distill_engine_free(e);
  student_free(s);
}

typedef struct {
  DistillQuery *query;
  uint8_t *labels;
  int h, w;
} LateAnswer;

static gpointer answer_later(gpointer data)
{
  LateAnswer *a = data;
  g_usleep(100 * 1000);
  return GINT_TO_POINTER(distill_query_answer(a->query, a->labels, a->h, a->w, NULL));
}

/* Sync mode: the frame's processing waits for its query's answer, which comes from another
 * thread a tenth of a second later, and trains on it before returning. */
static void test_sync_waits_for_answer(void)
{
  Student *s;
  DistillEngine *e = new_measuring_engine(8, 0.0, &s);
  float data[32 * 16 * 3] = { 0 };
  FeatureMap input = feature_map(data, 16, 32, 3);
  uint8_t classes[8 * 16], labels[8 * 16];
  own_labels(e, &input, labels);

  LateAnswer a = { distill_engine_wants_teacher(e, &input), labels, 8, 16 };
  g_assert_nonnull(a.query);
  GThread *teacher = g_thread_new("teacher", answer_later, &a);
  distill_engine_process(e, &input, classes);
  DistillStats st;
  distill_engine_get_stats(e, &st);
  g_assert_cmpuint(st.rounds, ==, 1);
  g_assert_cmpuint(st.teacher_errors, ==, 0);
  g_assert_true(GPOINTER_TO_INT(g_thread_join(teacher)));
  distill_engine_free(e);
  student_free(s);
}

static void fill(FeatureMap *m, int x_end, int y_end, float value)
{
  for (int y = 0; y < y_end; y++)
    for (int x = 0; x < x_end; x++)
      for (int c = 0; c < 3; c++)
        feature_map_at(m, y, x)[c] = value + 0.01f * (float)((x * 7 + y * 3 + c) % 5);
}

/* The stride goes by the fused map the stream showed: an answer the student agrees with, after a
 * held answer that disagrees with it (shown alone until the first fit), does not lengthen the
 * stride; the next one, the held answer now agreeing too, does. */
static void test_stride_follows_the_map_shown(void)
{
  Student *s;
  DistillEngine *e = new_measuring_engine(8, 0.0, &s);
  FeatureMap input = textured_input();
  int lh, lw;
  distill_engine_label_size(e, 48, 64, &lh, &lw);
  uint8_t *own = g_malloc(lh * lw), *other = g_malloc(lh * lw), *classes = g_malloc(lh * lw);
  own_labels(e, &input, own);
  for (int i = 0; i < lh * lw; i++)
    other[i] = 1 - own[i];
  const uint8_t *answers[] = { other, own, own };
  const guint strides[] = { 2, 2, 4 };
  DistillStats stats;
  for (int k = 0; k < 3; k++) {
    DistillQuery *q;
    while (!(q = distill_engine_wants_teacher(e, &input)))
      distill_engine_process(e, &input, classes);
    g_assert_true(distill_query_answer(q, answers[k], lh, lw, NULL));
    distill_engine_process(e, &input, classes);
    distill_engine_get_stats(e, &stats);
    if (k > 0)
      g_assert_cmpfloat(stats.last_miou, ==, 1.0); /* the student agrees */
    g_assert_cmpuint(stats.stride, ==, strides[k]);
  }
  g_assert_cmpfloat(stats.shown_miou, ==, 1.0);
  distill_engine_free(e);
  student_free(s);
  g_free(input.data);
  g_free(own);
  g_free(other);
  g_free(classes);
}

/* The scene-change trigger: a frame that departs from the last teacher frame over most of the
 * picture goes to the teacher before the stride is over (not within min_stride frames of the
 * last query); one changed in a corner does not. */
static void test_scene_change_trigger(void)
{
  Student *s;
  DistillEngine *e = new_measuring_engine(64, 0.03, &s);
  int lh, lw;
  distill_engine_label_size(e, 48, 64, &lh, &lw);
  float a[64 * 48 * 3], corner[64 * 48 * 3], b[64 * 48 * 3];
  FeatureMap fa = feature_map(a, 48, 64, 3), fc = feature_map(corner, 48, 64, 3);
  FeatureMap fb = feature_map(b, 48, 64, 3);
  fill(&fa, 64, 48, -0.1f);
  fill(&fc, 64, 48, -0.1f);
  fill(&fc, 30, 22, 0.3f); /* about a fifth of the picture */
  fill(&fb, 64, 48, 0.2f);
  uint8_t labels[24 * 32], classes[24 * 32];
  own_labels(e, &fa, labels);

  /* Frames 0 and 4 go to the teacher at mIoU 1: the stride grows 2 -> 4 -> 8. */
  const guint64 expected_ids[6] = { 1, 0, 0, 0, 5, 0 };
  for (int f = 0; f < 6; f++) {
    DistillQuery *q = distill_engine_wants_teacher(e, &fa);
    g_assert_cmpuint(q ? distill_query_id(q) : 0, ==, expected_ids[f]);
    if (q)
      g_assert_true(distill_query_answer(q, labels, lh, lw, NULL));
    distill_engine_process(e, &fa, classes);
  }
  DistillStats st;
  distill_engine_get_stats(e, &st);
  g_assert_cmpuint(st.stride, ==, 8);
  /* Frame 6: a changed corner, no query. Frame 7: another picture, a query, 5 frames early. */
  g_assert_null(distill_engine_wants_teacher(e, &fc));
  distill_engine_process(e, &fc, classes);
  DistillQuery *q = distill_engine_wants_teacher(e, &fb);
  g_assert_nonnull(q);
  g_assert_cmpuint(distill_query_id(q), ==, 8);
  distill_query_fail(q);
  distill_engine_process(e, &fb, classes);
  /* Frame 8: the same new picture again, within min_stride of the last query: no query. */
  g_assert_null(distill_engine_wants_teacher(e, &fb));
  distill_engine_process(e, &fb, classes);
  distill_engine_free(e);
  student_free(s);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/distill/policy/stride", test_stride_doubles_halves_clamps);
  g_test_add_func("/distill/policy/stride-by-the-map-shown", test_stride_miou_is_the_map_shown);
  g_test_add_func("/distill/policy/keep-training", test_keep_training);
  g_test_add_func("/distill/engine/config-errors", test_config_errors);
  g_test_add_func("/distill/engine/config-defaults", test_config_defaults);
  g_test_add_func("/distill/input/from-rgb", test_input_from_rgb);
  g_test_add_func("/distill/engine/queries", test_engine_queries);
  g_test_add_func("/distill/engine/measured-at-shown-size", test_measured_at_shown_size);
  g_test_add_func("/distill/engine/stride-follows-the-map-shown",
                  test_stride_follows_the_map_shown);
  g_test_add_func("/distill/engine/sync-waits-for-answer", test_sync_waits_for_answer);
  g_test_add_func("/distill/engine/scene-change-trigger", test_scene_change_trigger);
  return g_test_run();
}
