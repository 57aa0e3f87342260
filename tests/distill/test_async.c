/* test_async.c: the asynchronous mode. Teacher results delivered late, from another thread, are
 * trained on with the input of the frame they belong to, also after the stream's size changed;
 * frames keep coming out while a training round is in progress (the round is held open by its
 * start callback until the stream has produced more frames: were distill_engine_process to wait
 * for training, the test would never end); new weights reach the stream step by step (a
 * published version a step), none before the round's first step; checkpoints can be saved
 * meanwhile; of the answers that came in during a round, the newest is trained next, and the
 * others free their slots at the round's next step, so a long round does not stretch the
 * teacher stride; requests
 * nobody answers are given up after teacher_timeout_ms; stopping ends a round in progress. */
#include <glib/gstdio.h>
#include <string.h>

#include "scene_stream.h"

enum { W = 96, H = 64, FRAMES_DURING_ROUND = 12 };

typedef struct {
  GMutex lock;
  GCond changed;
  SyntheticScene *scene;   /* to re-render a round's frame on the trainer thread */
  guint64 started_query, finished_query;
  guint rounds_started, rounds_finished;
  gboolean input_matches, labels_match;
  guint updates;
  guint frames_produced;   /* by the stream while the first round is held open */
  gboolean hold_first_round;
} Observer;

static void check_round_frame(Observer *o, const DistillRound *round)
{
  /* The frame the query was made for (its id = frame + 1), converted again. */
  guint64 frame = round->query_id - 1;
  static uint8_t rgb[W * H * 3], truth[(W / 2) * (H / 2)];
  static float data[W * H * 3];
  FeatureMap expected = feature_map(data, H, W, 3);
  synthetic_scene_render(o->scene, frame, rgb);
  distill_input_from_rgb(rgb, W, H, W * 3, 3, NULL, &expected);
  synthetic_scene_labels(o->scene, frame, W / 2, H / 2, truth);
  o->input_matches = memcmp(round->input->data, data, sizeof data) == 0;
  o->labels_match = memcmp(round->labels, truth, sizeof truth) == 0;
}

static void on_round_started(const DistillRound *round, gpointer data)
{
  Observer *o = data;
  g_mutex_lock(&o->lock);
  o->rounds_started++;
  o->started_query = round->query_id;
  check_round_frame(o, round);
  g_cond_broadcast(&o->changed);
  while (o->hold_first_round && o->frames_produced < FRAMES_DURING_ROUND)
    g_cond_wait(&o->changed, &o->lock);
  o->hold_first_round = FALSE;
  g_mutex_unlock(&o->lock);
}

static void on_round_finished(const DistillRound *round, gpointer data)
{
  Observer *o = data;
  g_mutex_lock(&o->lock);
  o->rounds_finished++;
  o->finished_query = round->query_id;
  o->updates = round->updates;
  g_cond_broadcast(&o->changed);
  g_mutex_unlock(&o->lock);
}

typedef struct {
  DistillQuery *query;
  uint8_t *labels;
  int label_h, label_w;
  GMutex *lock;
  GCond *go_cond;
  gboolean *go;
} Delivery;

/* The teacher's side: answers once the stream has moved on (the main thread says when). */
static gpointer deliver_late(gpointer data)
{
  Delivery *d = data;
  g_mutex_lock(d->lock);
  while (!*d->go)
    g_cond_wait(d->go_cond, d->lock);
  g_mutex_unlock(d->lock);
  GError *error = NULL;
  gboolean ok = distill_query_answer(d->query, d->labels, d->label_h, d->label_w, &error);
  g_assert_no_error(error);
  return GINT_TO_POINTER(ok);
}

static Student *new_student(void)
{
  StudentConfig scfg;
  student_config_default(&scfg, 3);
  return student_new(&scfg, 11);
}

static void test_late_results_and_non_blocking_stream(void)
{
  Observer o = { .input_matches = FALSE, .hold_first_round = TRUE };
  g_mutex_init(&o.lock);
  g_cond_init(&o.changed);
  SyntheticSceneConfig scene_cfg;
  synthetic_scene_config_default(&scene_cfg, W, H, 9);
  Student *initial = new_student();
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.min_stride = 4;
  cfg.max_updates = 3;
  cfg.accuracy_threshold = 1.0; /* take every update: the weights must change */
  cfg.fuse_teacher = FALSE;     /* the stream's map is the weights' alone */
  cfg.threads = 1;
  cfg.train_threads = 1;
  cfg.round_started = on_round_started;
  cfg.round_finished = on_round_finished;
  cfg.round_user_data = &o;
  DistillEngine *engine = distill_engine_new(initial, &cfg, NULL);
  SceneStream s;
  scene_stream_init(&s, &scene_cfg, engine, W, H);
  o.scene = s.scene;

  /* Frame 0 goes to the teacher; the answer comes from another thread after frame 5. */
  scene_stream_load(&s, 0);
  DistillQuery *query = distill_engine_wants_teacher(engine, &s.input);
  g_assert_cmpuint(distill_query_id(query), ==, 1);
  GMutex go_lock;
  GCond go_cond;
  gboolean go = FALSE;
  g_mutex_init(&go_lock);
  g_cond_init(&go_cond);
  Delivery d = { query, g_memdup2(s.truth, (gsize)s.label_w * s.label_h), s.label_h,
                 s.label_w, &go_lock, &go_cond, &go };
  GThread *teacher = g_thread_new("teacher", deliver_late, &d);
  distill_engine_process(engine, &s.input, s.classes);
  uint8_t *before = g_memdup2(s.classes, (gsize)s.label_w * s.label_h);
  for (guint64 f = 1; f <= 5; f++) {
    scene_stream_load(&s, f);
    DistillQuery *q = distill_engine_wants_teacher(engine, &s.input);
    if (q)
      distill_query_fail(q); /* frame 4's request: fails */
    distill_engine_process(engine, &s.input, s.classes);
  }
  g_mutex_lock(&go_lock);
  go = TRUE;
  g_cond_signal(&go_cond);
  g_mutex_unlock(&go_lock);
  g_assert_true(GPOINTER_TO_INT(g_thread_join(teacher)));

  /* The round on frame 0 starts and is held open by its start callback. */
  g_mutex_lock(&o.lock);
  while (o.rounds_started == 0)
    g_cond_wait(&o.changed, &o.lock);
  g_mutex_unlock(&o.lock);
  g_assert_cmpuint(o.started_query, ==, 1);
  g_assert_true(o.input_matches);
  g_assert_true(o.labels_match);

  /* Meanwhile: frames come out, with the old weights, and a checkpoint can be saved. */
  char *dir = g_dir_make_tmp("distill-async-XXXXXX", NULL);
  char *path = g_build_filename(dir, "student.safetensors", NULL);
  guint failed = 1;
  for (guint64 f = 6; f < 6 + FRAMES_DURING_ROUND; f++) {
    scene_stream_load(&s, 0); /* the same picture as frame 0: the output must not change */
    DistillQuery *q = distill_engine_wants_teacher(engine, &s.input);
    if (q) {
      distill_query_fail(q);
      failed++;
    }
    distill_engine_process(engine, &s.input, s.classes);
    g_assert_cmpmem(s.classes, (gsize)s.label_w * s.label_h, before,
                    (gsize)s.label_w * s.label_h);
    g_mutex_lock(&o.lock);
    o.frames_produced++;
    g_assert_cmpuint(o.rounds_finished, ==, 0);
    g_cond_broadcast(&o.changed);
    g_mutex_unlock(&o.lock);
  }
  DistillStats st;
  distill_engine_get_stats(engine, &st);
  g_assert_cmpuint(st.weights_version, ==, 0);
  g_assert_cmpuint(st.frames, ==, 6 + FRAMES_DURING_ROUND);
  g_assert_true(distill_engine_save(engine, path, NULL));
  Student *saved = student_load(path, NULL);
  g_assert_cmpmem(student_params(saved), student_param_count(saved) * sizeof(float),
                  student_params(initial), student_param_count(initial) * sizeof(float));
  student_free(saved);

  /* The round ends; the next frame picks up the weights of its last step. */
  g_mutex_lock(&o.lock);
  while (o.rounds_finished == 0)
    g_cond_wait(&o.changed, &o.lock);
  g_mutex_unlock(&o.lock);
  g_assert_cmpuint(o.finished_query, ==, 1);
  g_assert_cmpuint(o.updates, ==, 3);
  scene_stream_load(&s, 0);
  distill_engine_process(engine, &s.input, s.classes);
  distill_engine_get_stats(engine, &st);
  g_assert_cmpuint(st.weights_version, ==, 3); /* one a step */
  g_assert_cmpuint(st.updates, ==, 3);
  g_assert_cmpuint(st.teacher_errors, ==, failed);
  g_assert_true(memcmp(s.classes, before, (gsize)s.label_w * s.label_h) != 0);
  g_assert_true(distill_engine_save(engine, path, NULL));
  saved = student_load(path, NULL);
  Student *snapshot = distill_engine_snapshot(engine);
  g_assert_cmpmem(student_params(saved), student_param_count(saved) * sizeof(float),
                  student_params(snapshot), student_param_count(snapshot) * sizeof(float));
  student_free(saved);
  student_free(snapshot);

  g_unlink(path);
  g_rmdir(dir);
  g_free(path);
  g_free(dir);
  g_free(before);
  g_free(d.labels);
  scene_stream_clear(&s);
  distill_engine_free(engine);
  student_free(initial);
  g_mutex_clear(&go_lock);
  g_cond_clear(&go_cond);
  g_mutex_clear(&o.lock);
  g_cond_clear(&o.changed);
}

/* Rounds in the order they start, the first held open until released. */
typedef struct {
  GMutex lock;
  GCond changed;
  gboolean release;
  guint64 query_ids[4];
  guint started, finished;
} RoundLog;

static void log_round_started(const DistillRound *round, gpointer data)
{
  RoundLog *l = data;
  g_mutex_lock(&l->lock);
  if (l->started < G_N_ELEMENTS(l->query_ids))
    l->query_ids[l->started] = round->query_id;
  l->started++;
  g_cond_broadcast(&l->changed);
  while (!l->release)
    g_cond_wait(&l->changed, &l->lock);
  g_mutex_unlock(&l->lock);
}

static void log_round_finished(const DistillRound *round, gpointer data)
{
  RoundLog *l = data;
  (void)round;
  g_mutex_lock(&l->lock);
  l->finished++;
  g_cond_broadcast(&l->changed);
  g_mutex_unlock(&l->lock);
}

/* Every frame due for the teacher, one step a round, on one thread each for inference and
 * training. */
static void one_step_rounds(DistillConfig *cfg)
{
  distill_config_default(cfg);
  cfg->min_stride = 1;
  cfg->max_updates = 1;
  cfg->accuracy_threshold = 1.0;
  cfg->threads = 1;
  cfg->train_threads = 1;
}

/* An engine of cfg whose rounds l logs, each held at its start until l->release. */
static DistillEngine *new_logged_engine(RoundLog *l, DistillConfig *cfg, const Student *initial)
{
  g_mutex_init(&l->lock);
  g_cond_init(&l->changed);
  cfg->round_started = log_round_started;
  cfg->round_finished = log_round_finished;
  cfg->round_user_data = l;
  return distill_engine_new(initial, cfg, NULL);
}

static void answer(DistillQuery *query, SceneStream *s)
{
  GError *error = NULL;
  g_assert_true(distill_query_answer(query, s->truth, s->label_h, s->label_w, &error));
  g_assert_no_error(error);
}

/* Answers with labels no student fits exactly (noise), so that nothing but a stop ends a round
 * that takes every update. */
static void answer_with_noise(DistillQuery *query, SceneStream *s)
{
  gsize n = (gsize)s->label_h * s->label_w;
  uint8_t *noise = g_malloc(n);
  GRand *rand = g_rand_new_with_seed(3);
  for (gsize i = 0; i < n; i++)
    noise[i] = (uint8_t)g_rand_int_range(rand, 0, 3);
  g_rand_free(rand);
  g_assert_true(distill_query_answer(query, noise, s->label_h, s->label_w, NULL));
  g_free(noise);
}

/* While the round on frame 0 is held at its start: frames 1 and 2 are asked and answered, and
 * frame 3 finds every slot taken (one in training, two answered). */
static void ask_while_a_round_is_held(DistillEngine *engine, SceneStream *s)
{
  for (guint64 f = 1; f <= 3; f++) {
    scene_stream_load(s, f);
    DistillQuery *q = distill_engine_wants_teacher(engine, &s->input);
    g_assert_cmpuint(q ? distill_query_id(q) : 0, ==, f < 3 ? f + 1 : 0);
    if (q)
      answer(q, s);
    distill_engine_process(engine, &s->input, s->classes);
  }
}

/* Teacher frames go on being asked at the stride while a round runs; the next round trains the
 * newest answer, and the older one waiting beside it gets no round of its own (it joins the
 * replay frames), so the stream never learns from a backlog of seconds-old frames. */
static void test_newest_answer_trained_next(void)
{
  RoundLog l = { 0 };
  SyntheticSceneConfig scene_cfg;
  synthetic_scene_config_default(&scene_cfg, W, H, 9);
  Student *initial = new_student();
  DistillConfig cfg;
  one_step_rounds(&cfg);
  g_assert_cmpuint(cfg.teacher_inflight, ==, 1); /* three frames held: inflight + 2 */
  DistillEngine *engine = new_logged_engine(&l, &cfg, initial);
  SceneStream s;
  scene_stream_init(&s, &scene_cfg, engine, W, H);

  scene_stream_load(&s, 0);
  DistillQuery *first = distill_engine_wants_teacher(engine, &s.input);
  g_assert_cmpuint(distill_query_id(first), ==, 1);
  answer(first, &s);
  distill_engine_process(engine, &s.input, s.classes);
  g_mutex_lock(&l.lock);
  while (l.started == 0)
    g_cond_wait(&l.changed, &l.lock);
  g_mutex_unlock(&l.lock);

  ask_while_a_round_is_held(engine, &s);

  g_mutex_lock(&l.lock);
  l.release = TRUE;
  g_cond_broadcast(&l.changed);
  while (l.finished < 2)
    g_cond_wait(&l.changed, &l.lock);
  g_mutex_unlock(&l.lock);
  g_assert_cmpuint(l.query_ids[0], ==, 1);
  g_assert_cmpuint(l.query_ids[1], ==, 3); /* frame 2's answer, not frame 1's */

  /* Frame 1's slot was freed without a round: the next frame can ask again. */
  scene_stream_load(&s, 4);
  DistillQuery *q = distill_engine_wants_teacher(engine, &s.input);
  g_assert_cmpuint(distill_query_id(q), ==, 5);
  distill_query_fail(q);
  distill_engine_process(engine, &s.input, s.classes);
  DistillStats st;
  distill_engine_get_stats(engine, &st);
  g_assert_cmpuint(st.teacher_queries, ==, 4);
  g_assert_cmpuint(st.updates, ==, 2);
  g_mutex_lock(&l.lock);
  g_assert_cmpuint(l.started, ==, 2);
  g_mutex_unlock(&l.lock);

  scene_stream_clear(&s);
  distill_engine_free(engine);
  student_free(initial);
  g_mutex_clear(&l.lock);
  g_cond_clear(&l.changed);
}

/* A round longer than the teacher stride does not stretch the stride: answers that came in
 * during it, but the newest, join the replay frames after its next step, freeing their slots for
 * the frames the policy asks next, while the round goes on (only the stop ends this one). */
static void test_stride_kept_during_a_long_round(void)
{
  RoundLog l = { 0 };
  SyntheticSceneConfig scene_cfg;
  synthetic_scene_config_default(&scene_cfg, W, H, 9);
  Student *initial = new_student();
  DistillConfig cfg;
  one_step_rounds(&cfg);
  cfg.max_updates = G_MAXUINT;
  cfg.rollback_rounds = 0;
  DistillEngine *engine = new_logged_engine(&l, &cfg, initial);
  SceneStream s;
  scene_stream_init(&s, &scene_cfg, engine, W, H);

  scene_stream_load(&s, 0);
  answer_with_noise(distill_engine_wants_teacher(engine, &s.input), &s);
  distill_engine_process(engine, &s.input, s.classes);
  g_mutex_lock(&l.lock);
  while (l.started == 0)
    g_cond_wait(&l.changed, &l.lock);
  g_mutex_unlock(&l.lock);

  ask_while_a_round_is_held(engine, &s); /* no step yet: nothing joined the replay frames */

  /* Once it steps, frame 1's answer joins the replay frames: a frame is asked, mid-round. */
  g_mutex_lock(&l.lock);
  l.release = TRUE;
  g_cond_broadcast(&l.changed);
  g_mutex_unlock(&l.lock);
  DistillQuery *q = NULL;
  gint64 deadline = g_get_monotonic_time() + 60 * G_TIME_SPAN_SECOND;
  for (guint64 f = 4; !q && g_get_monotonic_time() < deadline; f++) {
    scene_stream_load(&s, f % 8);
    q = distill_engine_wants_teacher(engine, &s.input);
    distill_engine_process(engine, &s.input, s.classes);
    if (!q)
      g_usleep(1000);
  }
  g_assert_nonnull(q);
  distill_query_fail(q);
  DistillStats st;
  distill_engine_get_stats(engine, &st);
  g_assert_cmpuint(st.teacher_queries, ==, 4);
  g_assert_cmpuint(st.weights_version, >, 0);
  g_mutex_lock(&l.lock);
  g_assert_cmpuint(l.finished, ==, 0);
  g_assert_cmpuint(l.started, ==, 1);
  g_mutex_unlock(&l.lock);

  distill_engine_free(engine);
  g_assert_cmpuint(l.finished, ==, 1);
  scene_stream_clear(&s);
  student_free(initial);
  g_mutex_clear(&l.lock);
  g_cond_clear(&l.changed);
}

/* Requests never answered are given up after teacher_timeout_ms, when a frame due for the
 * teacher finds every slot taken; their late answers are refused, and their slots serve the next
 * requests. */
static void test_unanswered_requests_given_up(void)
{
  Student *initial = new_student();
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.min_stride = 1;
  cfg.teacher_timeout_ms = 200;
  cfg.threads = 1;
  DistillEngine *engine = distill_engine_new(initial, &cfg, NULL);
  float data[32 * 16 * 3] = { 0 };
  FeatureMap input = feature_map(data, 16, 32, 3);
  uint8_t classes[16 * 8] = { 0 };
  DistillQuery *unanswered[3];
  /* Frames 0 to 2 take the three slots (teacher_inflight + 2); frame 3 finds none. */
  for (int f = 0; f < 3; f++) {
    unanswered[f] = distill_engine_wants_teacher(engine, &input);
    g_assert_nonnull(unanswered[f]);
    distill_engine_process(engine, &input, classes);
  }
  g_assert_null(distill_engine_wants_teacher(engine, &input));
  distill_engine_process(engine, &input, classes);
  g_usleep(250 * 1000); /* past the timeout */
  DistillQuery *next = distill_engine_wants_teacher(engine, &input);
  g_assert_nonnull(next);
  GError *error = NULL;
  g_assert_false(distill_query_answer(unanswered[0], classes, 8, 16, &error));
  g_assert_error(error, DISTILL_ERROR, DISTILL_ERROR_QUERY);
  g_clear_error(&error);
  DistillStats st;
  distill_engine_get_stats(engine, &st);
  g_assert_cmpuint(st.teacher_queries, ==, 4);
  g_assert_cmpuint(st.teacher_errors, ==, 4); /* three given up, then a late answer refused */
  /* Failing a query given up counts nothing more. */
  distill_query_fail(unanswered[1]);
  distill_query_fail(unanswered[2]);
  distill_query_fail(next);
  distill_engine_get_stats(engine, &st);
  g_assert_cmpuint(st.teacher_errors, ==, 5);
  distill_engine_free(engine);
  student_free(initial);
}

/* Rounds as they finish: the size of the frame each trained on. */
typedef struct {
  GMutex lock;
  GCond changed;
  guint finished;
  int widths[4], heights[4];
} RoundSizes;

static void log_round_size(const DistillRound *round, gpointer data)
{
  RoundSizes *r = data;
  g_mutex_lock(&r->lock);
  if (r->finished < G_N_ELEMENTS(r->widths)) {
    r->widths[r->finished] = round->input->w;
    r->heights[r->finished] = round->input->h;
  }
  r->finished++;
  g_cond_broadcast(&r->changed);
  g_mutex_unlock(&r->lock);
}

static void wait_rounds(RoundSizes *r, guint rounds)
{
  g_mutex_lock(&r->lock);
  while (r->finished < rounds)
    g_cond_wait(&r->changed, &r->lock);
  g_mutex_unlock(&r->lock);
}

/* The stream's size changes while a query of the old size is out: its late answer is trained on
 * with its own frame; the stream goes on at the new size with the weights and the statistics it
 * had; queries of the new size ask for labels of the new size and are trained on at that size. */
static void test_size_change(void)
{
  enum { SMALL_W = 48, SMALL_H = 32 };
  RoundSizes r = { 0 };
  g_mutex_init(&r.lock);
  g_cond_init(&r.changed);
  SyntheticSceneConfig scene_cfg;
  synthetic_scene_config_default(&scene_cfg, W, H, 9);
  Student *initial = new_student();
  DistillConfig cfg;
  one_step_rounds(&cfg);
  cfg.round_finished = log_round_size;
  cfg.round_user_data = &r;
  DistillEngine *engine = distill_engine_new(initial, &cfg, NULL);
  SceneStream big, small;
  scene_stream_init(&big, &scene_cfg, engine, W, H);
  scene_stream_init(&small, &scene_cfg, engine, SMALL_W, SMALL_H);

  scene_stream_load(&big, 0);
  DistillQuery *old = distill_engine_wants_teacher(engine, &big.input);
  g_assert_nonnull(old);
  distill_engine_process(engine, &big.input, big.classes);
  DistillQuery *fresh = NULL;
  for (guint64 f = 1; f <= 3; f++) {
    scene_stream_load(&small, f);
    DistillQuery *q = distill_engine_wants_teacher(engine, &small.input);
    if (f == 1) {
      int qh, qw;
      distill_query_label_size(q, &qh, &qw);
      g_assert_cmpint(qh, ==, small.label_h);
      g_assert_cmpint(qw, ==, small.label_w);
      fresh = q;
    } else if (q) {
      distill_query_fail(q);
    }
    distill_engine_process(engine, &small.input, small.classes);
  }

  /* The answer of the first frame, at its size, after the stream moved on to the new size. */
  GError *error = NULL;
  g_assert_true(distill_query_answer(old, big.truth, big.label_h, big.label_w, &error));
  g_assert_no_error(error);
  wait_rounds(&r, 1);
  g_assert_true(distill_query_answer(fresh, small.truth, small.label_h, small.label_w, &error));
  g_assert_no_error(error);
  wait_rounds(&r, 2);
  g_assert_cmpint(r.widths[0], ==, W);
  g_assert_cmpint(r.heights[0], ==, H);
  g_assert_cmpint(r.widths[1], ==, SMALL_W);
  g_assert_cmpint(r.heights[1], ==, SMALL_H);

  /* The stream, at the new size, takes up the trained weights. */
  scene_stream_load(&small, 4);
  distill_engine_process(engine, &small.input, small.classes);
  DistillStats st;
  distill_engine_get_stats(engine, &st);
  g_assert_cmpuint(st.frames, ==, 5);
  g_assert_cmpuint(st.rounds, ==, 2);
  g_assert_cmpuint(st.updates, ==, 2);
  g_assert_cmpuint(st.weights_version, ==, 2);

  scene_stream_clear(&big);
  scene_stream_clear(&small);
  distill_engine_free(engine);
  student_free(initial);
  g_mutex_clear(&r.lock);
  g_cond_clear(&r.changed);
}

/* Freeing the engine (the stream stops) ends a training round in progress between two steps
 * instead of waiting for all of them: this round would take millions. Were the round not to
 * end, distill_engine_free would not return. */
static void test_stop_ends_a_running_round(void)
{
  Observer o = { 0 };
  g_mutex_init(&o.lock);
  g_cond_init(&o.changed);
  Student *initial = new_student();
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.max_updates = G_MAXUINT;
  cfg.accuracy_threshold = 1.0;
  cfg.rollback_rounds = 0;
  cfg.threads = 1;
  cfg.train_threads = 1;
  cfg.round_started = on_round_started;
  cfg.round_finished = on_round_finished;
  cfg.round_user_data = &o;
  DistillEngine *engine = distill_engine_new(initial, &cfg, NULL);
  SyntheticSceneConfig scene_cfg;
  synthetic_scene_config_default(&scene_cfg, W, H, 5);
  SceneStream s;
  scene_stream_init(&s, &scene_cfg, engine, W, H);
  o.scene = s.scene;

  scene_stream_load(&s, 0);
  DistillQuery *query = distill_engine_wants_teacher(engine, &s.input);
  g_assert_nonnull(query);
  distill_engine_process(engine, &s.input, s.classes);
  answer_with_noise(query, &s);
  g_mutex_lock(&o.lock);
  while (o.rounds_started == 0)
    g_cond_wait(&o.changed, &o.lock);
  g_mutex_unlock(&o.lock);

  distill_engine_free(engine);
  g_assert_cmpuint(o.rounds_finished, ==, 1);
  g_assert_cmpuint(o.updates, <, cfg.max_updates);
  g_test_message("the round ended after %u steps", o.updates);
  scene_stream_clear(&s);
  student_free(initial);
  g_mutex_clear(&o.lock);
  g_cond_clear(&o.changed);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/distill/async/late-results-non-blocking-stream",
                  test_late_results_and_non_blocking_stream);
  g_test_add_func("/distill/async/newest-answer-trained-next", test_newest_answer_trained_next);
  g_test_add_func("/distill/async/stride-kept-during-a-long-round",
                  test_stride_kept_during_a_long_round);
  g_test_add_func("/distill/async/unanswered-requests-given-up",
                  test_unanswered_requests_given_up);
  g_test_add_func("/distill/async/size-change", test_size_change);
  g_test_add_func("/distill/async/stop-ends-a-running-round", test_stop_ends_a_running_round);
  return g_test_run();
}
