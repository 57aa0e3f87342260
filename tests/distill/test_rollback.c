/* test_rollback.c: a bad teacher must not ruin the student. In sync mode, on the synthetic
 * scene, a teacher that turns bad for a stretch (its classes swapped in every other answer, or
 * garbage labels) makes
 * the trainer go back to the last good weights, exactly, and the stream goes on and recovers
 * when the teacher does; a healthy run (a scene cut and a pan included) never rolls back; steps
 * far too large (a learning rate of 100) roll back at once, and the weights stay finite. */
#include <math.h>
#include <string.h>

#include "scene_stream.h"

enum { W = 160, H = 96, BAD_FROM = 200, BAD_TO = 400, FRAMES = 560 };

typedef enum { TEACHER_TRUE, TEACHER_FLIPPING, TEACHER_GARBAGE } TeacherKind;

/* Watches the rounds: the weights entering each (the published ones: in sync mode they are the
 * trainer's), the last that were judged good, and whether a rollback restored exactly those. */
typedef struct {
  DistillEngine *engine;
  Student *entering, *last_good;
  guint rounds, good, below, rolled_back, restored_exactly;
  guint64 first_rollback_query;
  GString *log;
} Watch;

static void on_round_started(const DistillRound *round, gpointer data)
{
  Watch *w = data;
  g_clear_pointer(&w->entering, student_free);
  w->entering = distill_engine_snapshot(w->engine);
}

static gboolean same_weights(Student *a, Student *b)
{
  return memcmp(student_params(a), student_params(b),
                sizeof(float) * student_param_count(a)) == 0;
}

static void on_round_finished(const DistillRound *round, gpointer data)
{
  static const char verdicts[] = { 'g', 'b', 'R', '-' };
  Watch *w = data;
  w->rounds++;
  g_string_append_printf(w->log, " %" G_GUINT64_FORMAT ":%.2f%c", round->query_id - 1,
                         round->miou_before, verdicts[round->verdict]);
  if (round->verdict == DISTILL_ROUND_GOOD) {
    w->good++;
    g_clear_pointer(&w->last_good, student_free);
    w->last_good = g_steal_pointer(&w->entering);
  } else if (round->verdict == DISTILL_ROUND_BELOW) {
    w->below++;
  } else if (round->verdict == DISTILL_ROUND_ROLLED_BACK) {
    if (!w->rolled_back++)
      w->first_rollback_query = round->query_id;
    Student *now = distill_engine_snapshot(w->engine);
    w->restored_exactly += w->last_good && same_weights(now, w->last_good);
    student_free(now);
  }
}

/* The teacher's answer number `answer` for the stream's frame: the truth, or a bad one. */
static void teacher_labels(SceneStream *s, TeacherKind kind, guint answer, GRand *rng,
                           uint8_t *labels)
{
  size_t n = (size_t)s->label_w * s->label_h;
  gboolean flip = kind == TEACHER_FLIPPING && answer % 2;
  for (size_t i = 0; i < n; i++)
    labels[i] = kind == TEACHER_GARBAGE ? (uint8_t)g_rand_int_range(rng, 0, s->num_classes)
                : flip                  ? (uint8_t)((s->truth[i] + 1) % s->num_classes)
                                        : s->truth[i];
}

typedef struct {
  guint rounds, good, below, rolled_back, restored_exactly;
  guint64 first_rollback_frame, rollbacks, frames;
  double miou_before_bad, miou_end; /* student vs truth, over the 80 frames before each */
} RunResult;

/* A stream of FRAMES frames whose teacher is `bad` on [BAD_FROM, BAD_TO). */
static RunResult run_stream(const SyntheticSceneConfig *scene_cfg, TeacherKind bad)
{
  StudentConfig scfg;
  student_config_default(&scfg, scene_cfg->num_classes);
  Student *initial = student_new(&scfg, 3);
  Watch w = { .log = g_string_new(NULL) };
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.sync = TRUE;
  cfg.threads = 1;
  cfg.round_started = on_round_started;
  cfg.round_finished = on_round_finished;
  cfg.round_user_data = &w;
  DistillEngine *engine = distill_engine_new(initial, &cfg, NULL);
  w.engine = engine;
  SceneStream s;
  scene_stream_init(&s, scene_cfg, engine, W, H);
  uint8_t *labels = g_malloc((size_t)s.label_w * s.label_h);
  GRand *rng = g_rand_new_with_seed(9);
  RunResult r = { 0 };
  guint answers = 0;

  for (guint64 f = 0; f < FRAMES; f++) {
    scene_stream_load(&s, f);
    DistillQuery *query = distill_engine_wants_teacher(engine, &s.input);
    if (query) {
      teacher_labels(&s, f >= BAD_FROM && f < BAD_TO ? bad : TEACHER_TRUE, answers++, rng,
                     labels);
      g_assert_true(distill_query_answer(query, labels, s.label_h, s.label_w, NULL));
    }
    distill_engine_process(engine, &s.input, s.classes);
    double miou = frame_miou(s.classes, s.truth, (size_t)s.label_w * s.label_h,
                               s.num_classes);
    if (f >= BAD_FROM - 80 && f < BAD_FROM)
      r.miou_before_bad += miou / 80;
    if (f >= FRAMES - 80)
      r.miou_end += miou / 80;
  }
  DistillStats st;
  distill_engine_get_stats(engine, &st);
  g_test_message("rounds (frame:mIoU before, g good b below R rolled back):%s", w.log->str);
  r.rounds = w.rounds;
  r.good = w.good;
  r.below = w.below;
  r.rolled_back = w.rolled_back;
  r.restored_exactly = w.restored_exactly;
  r.first_rollback_frame = w.first_rollback_query ? w.first_rollback_query - 1 : 0;
  r.rollbacks = st.rollbacks;
  r.frames = st.frames;
  g_test_message("%u rounds: %u good, %u below, %u rolled back (%u to exactly the last good "
                 "weights), first at frame %" G_GUINT64_FORMAT "; student vs truth: %.3f before "
                 "frame %d, %.3f over the last 80 frames", r.rounds, r.good, r.below,
                 r.rolled_back, r.restored_exactly, r.first_rollback_frame, r.miou_before_bad,
                 (int)BAD_FROM, r.miou_end);

  g_rand_free(rng);
  g_free(labels);
  scene_stream_clear(&s);
  distill_engine_free(engine);
  student_free(initial);
  g_clear_pointer(&w.entering, student_free);
  g_clear_pointer(&w.last_good, student_free);
  g_string_free(w.log, TRUE);
  return r;
}

static void scene_config(SyntheticSceneConfig *cfg)
{
  synthetic_scene_config_default(cfg, W, H, 4);
}

static void assert_rolls_back(TeacherKind bad)
{
  SyntheticSceneConfig scene_cfg;
  scene_config(&scene_cfg);
  RunResult r = run_stream(&scene_cfg, bad);
  g_assert_cmpuint(r.frames, ==, FRAMES);  /* the stream went on */
  g_assert_cmpuint(r.rolled_back, >=, 1);
  g_assert_cmpuint(r.rollbacks, ==, r.rolled_back);
  g_assert_cmpuint(r.restored_exactly, ==, r.rolled_back);
  g_assert_cmpuint(r.first_rollback_frame, >=, BAD_FROM);
  g_assert_cmpuint(r.first_rollback_frame, <, BAD_TO);
  /* Back to the level it had before the teacher went bad, give or take. */
  g_assert_cmpfloat(r.miou_end, >=, r.miou_before_bad - 0.1);
}

static void test_flipping_teacher(void) { assert_rolls_back(TEACHER_FLIPPING); }
static void test_garbage_teacher(void) { assert_rolls_back(TEACHER_GARBAGE); }

static void test_healthy_run(void)
{
  SyntheticSceneConfig scene_cfg;
  scene_config(&scene_cfg);
  scene_cfg.cut_frame = 300;
  scene_cfg.pan = 0.5;
  scene_cfg.absent_from = 150;
  scene_cfg.absent_to = 250;
  RunResult r = run_stream(&scene_cfg, TEACHER_TRUE);
  g_assert_cmpuint(r.rounds, >, 0);
  g_assert_cmpuint(r.rolled_back, ==, 0);
  g_assert_cmpuint(r.rollbacks, ==, 0);
}

static gboolean all_finite(Student *s)
{
  for (size_t i = 0; i < student_param_count(s); i++)
    if (!isfinite(student_params(s)[i]))
      return FALSE;
  return TRUE;
}

static void test_diverging_steps(void)
{
  SyntheticSceneConfig scene_cfg;
  scene_config(&scene_cfg);
  StudentConfig scfg;
  student_config_default(&scfg, scene_cfg.num_classes);
  Student *initial = student_new(&scfg, 3);
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.sync = TRUE;
  cfg.threads = 1;
  optimizer_config_default(&cfg.optimizer, OPTIMIZER_SGD);
  cfg.optimizer.learning_rate = 100.0f;
  DistillEngine *engine = distill_engine_new(initial, &cfg, NULL);
  SceneStream s;
  scene_stream_init(&s, &scene_cfg, engine, W, H);
  for (guint64 f = 0; f < 40; f++)
    scene_stream_sync_frame(&s, f, FALSE);
  DistillStats st;
  distill_engine_get_stats(engine, &st);
  g_test_message("%" G_GUINT64_FORMAT " rounds, %" G_GUINT64_FORMAT " rollbacks, the last "
                 "because %s", st.rounds, st.rollbacks,
                 distill_collapse_describe(st.last_collapse));
  g_assert_cmpuint(st.frames, ==, 40);
  g_assert_cmpuint(st.rollbacks, >=, 1);
  g_assert_true(st.last_collapse == DISTILL_COLLAPSE_EXPLODING_LOSS ||
                st.last_collapse == DISTILL_COLLAPSE_NON_FINITE);
  Student *now = distill_engine_snapshot(engine);
  g_assert_true(all_finite(now));
  student_free(now);
  scene_stream_clear(&s);
  distill_engine_free(engine);
  student_free(initial);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/distill/rollback/flipping-teacher", test_flipping_teacher);
  g_test_add_func("/distill/rollback/garbage-teacher", test_garbage_teacher);
  g_test_add_func("/distill/rollback/healthy-run", test_healthy_run);
  g_test_add_func("/distill/rollback/diverging-steps", test_diverging_steps);
  return g_test_run();
}
