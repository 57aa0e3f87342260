/* test_fusion.c: the student's logits fused with the teacher's last mask. The fit weighs the
 * held mask when it predicted the next answer and the student did not, the student when the
 * reverse, and both when each is right in its own part (the student sure where it is right);
 * the fused class map then beats either alone. Fits are averaged over teacher frames. In the engine (sync mode, training off, an untrained student, the synthetic scene), the
 * fused stream scores far above the student's own, and the same engine without fusion does not;
 * with the held answers moved with the scene, higher than with them held still; with frames held
 * back until their answers are in, a teacher frame shows its own answer, and the stream scores
 * higher than shown at once; held back longer, a frame takes a later answer when it is nearer. */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "scene_stream.h"

enum { H = 24, W = 32, N = H * W };

/* Two-class logits with the student's choice `pick` at confidence `margin`. */
static void set_logits(FeatureMap *l, const uint8_t *pick, const float *margin)
{
  for (int i = 0; i < N; i++) {
    l->data[2 * i] = pick[i] ? -margin[i] : margin[i];
    l->data[2 * i + 1] = -l->data[2 * i];
  }
}

static double fused_miou(const DistillFusion *f, const FeatureMap *logits, const uint8_t *held,
                         const uint8_t *truth)
{
  float out_data[2 * N];
  uint8_t classes[N];
  FeatureMap out = feature_map(out_data, H, W, 2);
  distill_fusion_apply(f->held, logits, held, H, W, &out);
  argmax_channels(&out, classes, NULL);
  return frame_miou(classes, truth, N, 2);
}

/* A random truth (a blob), the held mask and the student each right on a chosen part. */
typedef struct {
  uint8_t truth[N], held[N], pick[N];
  float margin[N];
  float logits_data[2 * N];
  FeatureMap logits;
} Case;

static void make_case(Case *c, GRand *rng, double held_wrong, double student_wrong,
                      gboolean student_sure_when_right)
{
  c->logits = feature_map(c->logits_data, H, W, 2);
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      int i = y * W + x;
      c->truth[i] = (x - 16) * (x - 16) + (y - 12) * (y - 12) < 64;
      gboolean held_ok = g_rand_double(rng) >= held_wrong;
      gboolean student_ok = g_rand_double(rng) >= student_wrong;
      c->held[i] = held_ok ? c->truth[i] : 1 - c->truth[i];
      c->pick[i] = student_ok ? c->truth[i] : 1 - c->truth[i];
      c->margin[i] = student_ok && student_sure_when_right ? 4.0f : 0.5f;
    }
  set_logits(&c->logits, c->pick, c->margin);
}

/* A case of seed `seed` (make_case) and a fresh fusion fitted on it once. */
static DistillFusion fit_case(Case *c, guint32 seed, double held_wrong, double student_wrong,
                              gboolean student_sure_when_right)
{
  GRand *rng = g_rand_new_with_seed(seed);
  make_case(c, rng, held_wrong, student_wrong, student_sure_when_right);
  g_rand_free(rng);
  DistillFusion f;
  uint8_t scratch[N];
  distill_fusion_init(&f);
  g_assert_cmpfloat(f.held, ==, 64.0); /* before a fit, the held answer alone */
  distill_fusion_fit(&f, &c->logits, c->held, c->truth, scratch);
  g_assert_cmpuint(f.rounds, ==, 1);
  return f;
}

/* The held mask exactly right, the student no better than chance: the fit leans on the held
 * mask and the fused map is the truth. */
static void test_held_right_student_wrong(void)
{
  Case c;
  DistillFusion f = fit_case(&c, 1, 0.0, 0.5, FALSE);
  /* The student's margins are 1: a weight above wins every pixel for the held answer. */
  g_assert_cmpfloat(f.held, >, 1.0);
  g_assert_cmpfloat(fused_miou(&f, &c.logits, c.held, c.truth), ==, 1.0);
}

/* The student right, the held mask wrong on a third of the pixels: the fit leans on the
 * student, whose map the fused one is. */
static void test_student_right_held_wrong(void)
{
  Case c;
  DistillFusion f = fit_case(&c, 2, 0.33, 0.0, TRUE);
  /* Margins of 8: below that the student keeps every pixel. */
  g_assert_cmpfloat(f.held, <, 8.0);
  g_assert_cmpfloat(fused_miou(&f, &c.logits, c.held, c.truth), ==, 1.0);
}

/* Each wrong on its own pixels, the student unsure where it is wrong: the fused map beats both
 * the held mask and the student. */
static void test_both_partly_right(void)
{
  Case c;
  DistillFusion f = fit_case(&c, 3, 0.15, 0.15, TRUE);
  double held_miou = frame_miou(c.held, c.truth, N, 2);
  double student_miou = frame_miou(c.pick, c.truth, N, 2);
  double fused = fused_miou(&f, &c.logits, c.held, c.truth);
  g_test_message("held %.3f, student %.3f, fused %.3f (weight %.2f)", held_miou, student_miou,
                 fused, f.held);
  g_assert_cmpfloat(fused, >, MAX(held_miou, student_miou) + 0.1);
}

/* Fits are averaged: after a still frame (the held answer right) and a busy one (the student
 * right), each weight's score is the mean of its two, and the weight chosen suits both. */
static void test_fits_averaged(void)
{
  GRand *rng = g_rand_new_with_seed(4);
  Case still, busy;
  make_case(&still, rng, 0.0, 0.5, FALSE);
  make_case(&busy, rng, 0.33, 0.0, TRUE);
  uint8_t scratch[N];
  DistillFusion both, a, b;
  distill_fusion_init(&a);
  distill_fusion_fit(&a, &still.logits, still.held, still.truth, scratch);
  distill_fusion_init(&b);
  distill_fusion_fit(&b, &busy.logits, busy.held, busy.truth, scratch);
  both = a;
  distill_fusion_fit(&both, &busy.logits, busy.held, busy.truth, scratch);
  for (int j = 0; j < DISTILL_FUSION_GRID; j++)
    g_assert_cmpfloat(fabs(both.score[j] - 0.5 * (a.score[j] + b.score[j])), <, 1e-12);
  /* Margins of 1 on the still frame, 8 on the busy one: a weight between is right on both. */
  g_assert_cmpfloat(both.held, >, 1.0);
  g_assert_cmpfloat(both.held, <, 8.0);
  g_assert_cmpfloat(fused_miou(&both, &still.logits, still.held, still.truth), ==, 1.0);
  g_assert_cmpfloat(fused_miou(&both, &busy.logits, busy.held, busy.truth), ==, 1.0);
  g_rand_free(rng);
}

/* A held mask of another size is read at the nearest pixel: a 2x larger held mask gives the
 * same map as the mask at the logits' size. */
static void test_held_of_another_size(void)
{
  GRand *rng = g_rand_new_with_seed(5);
  Case c;
  make_case(&c, rng, 0.0, 0.5, FALSE);
  static uint8_t big[4 * N];
  for (int y = 0; y < 2 * H; y++)
    for (int x = 0; x < 2 * W; x++)
      big[y * 2 * W + x] = c.held[(y / 2) * W + x / 2];
  DistillFusion f = { .held = 3.0, .rounds = 1 };
  float a[2 * N], b[2 * N];
  FeatureMap fa = feature_map(a, H, W, 2), fb = feature_map(b, H, W, 2);
  distill_fusion_apply(f.held, &c.logits, c.held, H, W, &fa);
  distill_fusion_apply(f.held, &c.logits, big, 2 * H, 2 * W, &fb);
  g_assert_cmpmem(a, sizeof a, b, sizeof b);
  g_rand_free(rng);
}

/* The weight by the answer's age: alone on its own frame, the fit's at the age it was fitted at
 * and after, in between on the way; without a fit, the fitted (initial) weight. */
static void test_weight_by_age(void)
{
  g_assert_cmpfloat(distill_fusion_weight_at(2.0, 8, 0), ==, DISTILL_FUSION_ALONE);
  g_assert_cmpfloat(distill_fusion_weight_at(2.0, 8, 8), ==, 2.0);
  g_assert_cmpfloat(distill_fusion_weight_at(2.0, 8, 20), ==, 2.0);
  g_assert_cmpfloat(fabs(distill_fusion_weight_at(2.0, 8, 4) - (2.0 + DISTILL_FUSION_ALONE) / 2),
                    <, 1e-9);
  g_assert_cmpfloat(distill_fusion_weight_at(0.0, 8, 6), >, distill_fusion_weight_at(0.0, 8, 7));
  g_assert_cmpfloat(distill_fusion_weight_at(3.0, 0, 5), ==, 3.0);
}

/* The engine: an untrained student (training off) on the synthetic scene in sync mode, the
 * teacher every 4 frames. The fused stream shows about what the held answers show, and the
 * statistics say how the map shown did on the teacher frames; without fusion, the untrained
 * student's own map, and no such figure. */
/* An untrained student, and an engine configuration without training, the teacher every
 * `stride` frames, on one thread. */
static Student *untrained(DistillConfig *cfg, guint stride)
{
  StudentConfig scfg;
  student_config_default(&scfg, 3);
  distill_config_default(cfg);
  cfg->train = FALSE;
  cfg->min_stride = cfg->max_stride = stride;
  cfg->threads = 1;
  return student_new(&scfg, 11);
}

static double engine_miou(gboolean fuse, gboolean follow_motion, int width, int height,
                          guint stride, double pan, double *shown_miou)
{
  DistillConfig cfg;
  Student *student = untrained(&cfg, stride);
  cfg.sync = TRUE;
  cfg.fuse_teacher = fuse;
  cfg.follow_motion = follow_motion;
  DistillEngine *e = distill_engine_new(student, &cfg, NULL);
  g_assert_nonnull(e);
  SyntheticSceneConfig scene;
  synthetic_scene_config_default(&scene, width, height, 21);
  scene.pan = pan;
  SceneStream s;
  scene_stream_init(&s, &scene, e, width, height);
  for (guint64 frame = 0; frame < 80; frame++)
    scene_stream_sync_frame(&s, frame, frame >= 8);
  double miou = scene_stream_miou(&s);
  DistillStats stats;
  distill_engine_get_stats(e, &stats);
  *shown_miou = stats.shown_miou;
  scene_stream_clear(&s);
  distill_engine_free(e);
  student_free(student);
  return miou;
}

static void test_engine_fuses_held_answers(void)
{
  double shown_fused, shown_alone;
  double fused = engine_miou(TRUE, TRUE, 128, 96, 4, 0.0, &shown_fused);
  double alone = engine_miou(FALSE, TRUE, 128, 96, 4, 0.0, &shown_alone);
  g_test_message("untrained student alone %.3f, fused with the held answers %.3f (on the last "
                 "teacher frame %.3f)", alone, fused, shown_fused);
  g_assert_cmpfloat(alone, <, 0.5);
  g_assert_cmpfloat(fused, >, 0.8);
  g_assert_cmpfloat(shown_fused, >, 0.5);
  g_assert_cmpfloat(shown_alone, ==, -1.0);
}

/* The held answers moved with the scene (follow_motion, the default) between teacher frames
 * (every 6, a 256x192 scene over a panning background): the fused stream scores higher than with
 * them held where they were. */
static void test_engine_moves_held_answers(void)
{
  double shown_moved, shown_still;
  double moved = engine_miou(TRUE, TRUE, 256, 192, 6, 5.0, &shown_moved);
  double still = engine_miou(TRUE, FALSE, 256, 192, 6, 5.0, &shown_still);
  g_test_message("the untrained student fused with the held answers: held still %.3f, moved "
                 "with the scene %.3f", still, moved);
  g_assert_cmpfloat(moved, >, still + 0.03);
}

/* The async engine (training off, the untrained student) over a panning scene, the teacher every
 * HB_STRIDE frames answering HB_LATE frames late; each frame shown `lag` frames after it was
 * inferred (distill_engine_infer, then distill_engine_show). Each answer's round (the fusion's
 * fit) ends before the next frame, so that runs are alike. The mean mIoU of the frames shown;
 * *before: of the frames two before a teacher frame; *exact: every teacher frame showed its own
 * answer as it came. */
enum { HB_LATE = 3, HB_STRIDE = 6, HB_FRAMES = 60 };

/* Whether frame `shown`, shown at frame `now`, is ready (distill_engine_show_ready): no query
 * of it or before it is out, nor a nearer one after it (answered HB_LATE frames after it). */
static gboolean expect_ready(const gboolean *asked, guint64 shown, guint64 now)
{
  guint64 before = shown, after = shown + 1;
  while (before > 0 && !asked[before])
    before--;
  while (after < HB_FRAMES && !asked[after])
    after++;
  if (asked[before] && before + HB_LATE > now)
    return FALSE;
  if (shown == before && asked[before])
    return TRUE;
  return !(after < HB_FRAMES && (!asked[before] || after - shown < shown - before) &&
           after + HB_LATE > now);
}

static double held_back_miou(guint lag, double *before, gboolean *exact)
{
  DistillConfig cfg;
  Student *student = untrained(&cfg, HB_STRIDE);
  SceneRounds rounds;
  scene_rounds_init(&rounds);
  cfg.round_finished = scene_rounds_finished;
  cfg.round_user_data = &rounds;
  guint64 answered = 0;
  DistillEngine *e = distill_engine_new(student, &cfg, NULL);
  SyntheticSceneConfig scene;
  synthetic_scene_config_default(&scene, 256, 192, 21);
  scene.pan = 5.0;
  SceneStream s;
  scene_stream_init(&s, &scene, e, 256, 192);
  size_t n = (size_t)s.label_w * s.label_h;
  DistillQuery *out[HB_FRAMES] = {0};
  gboolean asked[HB_FRAMES] = {0};
  uint8_t *truth = g_malloc(n);
  double miou[HB_FRAMES], sum = 0.0, sum_before = 0.0;
  guint n_before = 0;
  *exact = TRUE;
  for (guint64 f = 0; f < HB_FRAMES + lag; f++) {
    if (f < HB_FRAMES) {
      scene_stream_load(&s, f);
      out[f] = distill_engine_wants_teacher(e, &s.input);
      asked[f] = out[f] != NULL;
      distill_engine_infer(e, &s.input);
    }
    if (f == 0 && lag > 0) { /* frame 0's query is out: it waits, up to the deadline */
      g_assert_false(distill_engine_show_ready(e, 0));
      g_assert_false(distill_engine_show_ready(e, g_get_monotonic_time() + 10000));
    }
    if (f >= HB_LATE && f - HB_LATE < HB_FRAMES && out[f - HB_LATE]) {
      synthetic_scene_labels(s.scene, f - HB_LATE, s.label_w, s.label_h, truth);
      g_assert_true(distill_query_answer(out[f - HB_LATE], truth, s.label_h, s.label_w, NULL));
      answered++;
      g_mutex_lock(&rounds.lock);
      while (rounds.finished < answered)
        g_cond_wait(&rounds.changed, &rounds.lock);
      g_mutex_unlock(&rounds.lock);
    }
    if (f < lag)
      continue;
    guint64 shown = f - lag;
    if (lag > 0 && f < HB_FRAMES) /* past the last frame, those to come never do */
      g_assert_true(distill_engine_show_ready(e, 0) == expect_ready(asked, shown, f));
    g_assert_cmpuint(distill_engine_pending(e), ==, MIN(f + 1, HB_FRAMES) - shown);
    distill_engine_show(e, s.classes);
    synthetic_scene_labels(s.scene, shown, s.label_w, s.label_h, truth);
    miou[shown] = frame_miou(s.classes, truth, n, 2);
    if (asked[shown] && memcmp(s.classes, truth, n) != 0)
      *exact = FALSE;
  }
  g_assert_cmpuint(distill_engine_pending(e), ==, 0);
  for (guint64 f = 0; f < HB_FRAMES; f++) {
    sum += miou[f];
    if (f + 2 < HB_FRAMES && asked[f + 2] && !asked[f + 1] && !asked[f]) {
      sum_before += miou[f];
      n_before++;
    }
  }
  /* A flush: the frames waiting are not shown. */
  distill_engine_infer(e, &s.input);
  distill_engine_infer(e, &s.input);
  g_assert_cmpuint(distill_engine_pending(e), ==, 2);
  distill_engine_drop_pending(e);
  g_assert_cmpuint(distill_engine_pending(e), ==, 0);
  g_free(truth);
  scene_stream_clear(&s);
  distill_engine_free(e);
  scene_rounds_clear(&rounds);
  student_free(student);
  *before = sum_before / n_before;
  return sum / HB_FRAMES;
}

/* Held back until the answers of their time are in, the teacher frames show their own answers
 * and the stream scores higher than shown at once; held back longer, the frames two before a
 * teacher frame wait for its answer, nearer than the last one, and score higher with it. */
static void test_engine_shows_held_back_frames(void)
{
  enum { OWN = HB_LATE + 1, NEARER = HB_LATE + HB_STRIDE / 2 };
  gboolean exact_own, exact_nearer, exact_at_once;
  double before_own, before_nearer, before_at_once;
  double own = held_back_miou(OWN, &before_own, &exact_own);
  double nearer = held_back_miou(NEARER, &before_nearer, &exact_nearer);
  double at_once = held_back_miou(0, &before_at_once, &exact_at_once);
  g_test_message("answers %d frames late, every %d frames: frames shown at once %.3f, held back "
                 "%d frames %.3f, %d frames %.3f; two frames before a teacher frame %.3f, %.3f "
                 "and %.3f", HB_LATE, HB_STRIDE, at_once, OWN, own, NEARER, nearer,
                 before_at_once, before_own, before_nearer);
  g_assert_true(exact_own);
  g_assert_true(exact_nearer);
  g_assert_false(exact_at_once);
  g_assert_cmpfloat(own, >, at_once + 0.03);
  g_assert_cmpfloat(nearer, >, own);
  g_assert_cmpfloat(before_nearer, >, before_own + 0.01);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/fusion/held-right-student-wrong", test_held_right_student_wrong);
  g_test_add_func("/fusion/student-right-held-wrong", test_student_right_held_wrong);
  g_test_add_func("/fusion/both-partly-right", test_both_partly_right);
  g_test_add_func("/fusion/fits-averaged", test_fits_averaged);
  g_test_add_func("/fusion/held-of-another-size", test_held_of_another_size);
  g_test_add_func("/fusion/weight-by-age", test_weight_by_age);
  g_test_add_func("/fusion/engine-fuses-held-answers", test_engine_fuses_held_answers);
  g_test_add_func("/fusion/engine-moves-held-answers", test_engine_moves_held_answers);
  g_test_add_func("/fusion/engine-shows-held-back-frames", test_engine_shows_held_back_frames);
  return g_test_run();
}
