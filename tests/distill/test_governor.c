/* test_governor.c: the compute governor's decisions, pure functions of measured times (a cost
 * model stands in for the student: a fixed part and a part proportional to the input's area),
 * the frame interval from timestamps, and the engine applying them: a smaller stream input, the
 * class map and the teacher frames at the nominal size, the callback and the statistics. The
 * training size: the resolution measure on labels with thin and with large things, the
 * decisions (grow to the largest size the trainer's time and the inference budget allow, only
 * where the labels need it; step back when the trainer falls behind), and the engine asking for
 * a larger input, then a smaller one, the reason said when inputs of that size come. */
#include <math.h>
#include <string.h>

#include "distill.h"
#include "kernels.h"

/* ms of a forward pass at long side L of a 4:3 input: 2 ms + 30 ms at 640. */
static double cost(int long_side)
{
  return 2.0 + 30.0 * (double)long_side * long_side / (640.0 * 640.0);
}

/* Runs frames at interval_ms through the governor with the cost model (scaled by `slow`,
 * times (1 + noise * u), u uniform in [-1, 1)); returns how many times the size changed. */
static int run(DistillGovernor *g, int frames, double budget, double interval_ms, double others,
               double slow, double noise, GRand *rand)
{
  int changes = 0;
  for (int i = 0; i < frames; i++) {
    double u = rand ? g_rand_double_range(rand, -1.0, 1.0) : 0.0;
    double ms = slow * cost(g->long_side) * (1.0 + noise * u);
    changes += distill_governor_update(g, budget, ms, interval_ms, others) != DISTILL_RESIZE_NONE;
  }
  return changes;
}

static void test_within_budget_keeps_nominal(void)
{
  DistillGovernor g;
  distill_governor_init(&g, 640);
  /* 32 ms of 100 ms: within a budget of 0.5. */
  g_assert_cmpint(run(&g, 500, 0.5, 100.0, 0.0, 1.0, 0.0, NULL), ==, 0);
  g_assert_cmpint(g.long_side, ==, 640);
  g_assert_cmpfloat_with_epsilon(g.ms, 32.0, 1e-9);
}

static void test_over_budget_lowers_once_to_fit(void)
{
  DistillGovernor g;
  distill_governor_init(&g, 640);
  /* 32 ms of a 40 ms interval (25 fps) against a budget of 0.5: 0.8, over. Judged after the mean
   * settled, not at the first frame. */
  for (int i = 0; i < 7; i++)
    g_assert_cmpint(distill_governor_update(&g, 0.5, 32.0, 40.0, 0.0), ==, DISTILL_RESIZE_NONE);
  g_assert_cmpint(distill_governor_update(&g, 0.5, 32.0, 40.0, 0.0), ==,
                  DISTILL_RESIZE_OVER_BUDGET);
  /* Area-proportional prediction: 640 * sqrt(0.85 * 0.5 / 0.8) = 466, on the 32 grid: 448. */
  g_assert_cmpint(g.long_side, ==, 448);
  g_assert_cmpint(g.long_side % DISTILL_GOVERNOR_STEP, ==, 0);
  /* The first frame at the new size plans its buffers, slowly: not held against the size. */
  g_assert_cmpint(distill_governor_update(&g, 0.5, 400.0, 40.0, 0.0), ==, DISTILL_RESIZE_NONE);
  g_assert_cmpint(run(&g, 8, 0.5, 40.0, 0.0, 1.0, 0.0, NULL), ==, 0);
  g_assert_cmpfloat_with_epsilon(g.ms, cost(448), 1e-9);
  /* There it holds: within the budget, without room for the next size up. */
  run(&g, 400, 0.5, 40.0, 0.0, 1.0, 0.0, NULL);
  g_assert_cmpfloat(cost(g.long_side) / 40.0, <=, 0.5);
  g_assert_cmpint(g.long_side, >=, 384);
  int side = g.long_side;
  g_assert_cmpint(run(&g, 2000, 0.5, 40.0, 0.0, 1.0, 0.0, NULL), ==, 0);
  g_assert_cmpint(g.long_side, ==, side);
}

static void test_noise_does_not_oscillate(void)
{
  GRand *rand = g_rand_new_with_seed(7);
  /* Budgets that put the fitting size between grid steps, with ±25% noise per frame: the size
   * settles and stays, within the budget on average. */
  for (double budget = 0.3; budget <= 0.7; budget += 0.05) {
    DistillGovernor g;
    distill_governor_init(&g, 640);
    run(&g, 300, budget, 40.0, 0.0, 1.0, 0.25, rand);
    int changes = run(&g, 3000, budget, 40.0, 0.0, 1.0, 0.25, rand);
    g_assert_cmpint(changes, <=, 1);
    g_assert_cmpfloat(cost(g.long_side) / 40.0, <=, budget * 1.05);
  }
  g_rand_free(rand);
}

static void test_floor_and_room(void)
{
  DistillGovernor g;
  distill_governor_init(&g, 640);
  g_assert_cmpint(g.floor, ==, DISTILL_GOVERNOR_FLOOR);
  /* Another load on the cores makes inference four times slower: down to the floor, and no
   * further even though still over. */
  run(&g, 200, 0.5, 40.0, 0.0, 4.0, 0.0, NULL);
  g_assert_cmpint(g.long_side, ==, DISTILL_GOVERNOR_FLOOR);
  g_assert_cmpint(distill_governor_update(&g, 0.5, 4.0 * cost(320), 40.0, 0.0), ==,
                  DISTILL_RESIZE_NONE);
  /* The load goes: the size comes back to the nominal, which fits with room. */
  g_assert_cmpint(run(&g, 300, 0.8, 100.0, 0.0, 1.0, 0.0, NULL), >=, 1);
  g_assert_cmpint(g.long_side, ==, 640);
}

static void test_raises_only_with_room(void)
{
  DistillGovernor g;
  distill_governor_init(&g, 640);
  run(&g, 100, 0.5, 40.0, 0.0, 4.0, 0.0, NULL); /* at the floor */
  /* Back to normal speed: 320 costs 9.5 ms of 40, 0.24; 640 would cost 0.8, 448 0.43 > 0.75 *
   * 0.5: raised to what fits in three quarters of the budget, not to the budget's edge. */
  run(&g, 200, 0.5, 40.0, 0.0, 1.0, 0.0, NULL);
  g_assert_cmpint(g.long_side, >, DISTILL_GOVERNOR_FLOOR);
  g_assert_cmpint(g.long_side, <, 640);
  g_assert_cmpfloat(cost(g.long_side) / 40.0, <=, 0.5);
}

static void test_other_streams_share_the_budget(void)
{
  DistillGovernor g;
  distill_governor_init(&g, 640);
  /* 32 ms of 100 is within 0.5 alone, not beside streams taking 0.4 of theirs. */
  run(&g, 100, 0.5, 100.0, 0.4, 1.0, 0.0, NULL);
  g_assert_cmpint(g.long_side, <, 640);
  g_assert_cmpfloat(cost(g.long_side) / 100.0 + 0.4, <=, 0.5);
  /* They stop: it grows back. */
  run(&g, 100, 0.5, 100.0, 0.0, 1.0, 0.0, NULL);
  g_assert_cmpint(g.long_side, ==, 640);
}

static void test_off_and_unknown_interval(void)
{
  DistillGovernor g;
  distill_governor_init(&g, 640);
  g_assert_cmpint(run(&g, 100, 0.0, 10.0, 0.0, 1.0, 0.0, NULL), ==, 0);  /* budget 0: off */
  g_assert_cmpint(run(&g, 100, 0.5, 0.0, 0.0, 1.0, 0.0, NULL), ==, 0);   /* no interval yet */
  g_assert_cmpint(g.long_side, ==, 640);
  g_assert_cmpfloat_with_epsilon(g.ms, 32.0, 1e-9); /* still measured */

  /* A frame smaller than the floor is never lowered. */
  distill_governor_init(&g, 240);
  g_assert_cmpint(g.floor, ==, 240);
  g_assert_cmpint(run(&g, 100, 0.5, 1.0, 0.0, 1.0, 0.0, NULL), ==, 0);
  g_assert_cmpint(g.long_side, ==, 240);
}

static void test_sizes(void)
{
  DistillGovernor g;
  int h, w;
  distill_governor_init(&g, 640);
  distill_governor_size(&g, 480, 640, &h, &w);
  g_assert_cmpint(w, ==, 640);
  g_assert_cmpint(h, ==, 480);
  g.long_side = 320;
  distill_governor_size(&g, 480, 640, &h, &w);
  g_assert_cmpint(w, ==, 320);
  g_assert_cmpint(h, ==, 240);
  distill_governor_size(&g, 360, 640, &h, &w); /* 16:9 */
  g_assert_cmpint(w, ==, 320);
  g_assert_cmpint(h, ==, 180);
  distill_governor_size(&g, 640, 470, &h, &w); /* portrait, odd scaled side made even */
  g_assert_cmpint(h, ==, 320);
  g_assert_cmpint(w, ==, 236);
  g.long_side = 352;
  distill_governor_size(&g, 528, 640, &h, &w); /* Megamind's aspect, 720x528 as 640x470 */
  g_assert_cmpint(w, ==, 352);
  g_assert_cmpint(h % 2, ==, 0);
}

static void test_interval_from_timestamps(void)
{
  double mean = 0.0;
  GRand *rand = g_rand_new_with_seed(3);
  mean = distill_frame_interval(mean, 33.0);
  g_assert_cmpfloat_with_epsilon(mean, 33.0, 1e-9);   /* the first gap stands alone */
  for (int i = 0; i < 200; i++)                       /* 30 fps with jitter */
    mean = distill_frame_interval(mean, 1000.0 / 30.0 + g_rand_double_range(rand, -5.0, 5.0));
  g_assert_cmpfloat(fabs(mean - 1000.0 / 30.0), <, 2.0);
  double before = mean;
  g_assert_cmpfloat(distill_frame_interval(mean, -40.0), ==, before);  /* backwards */
  g_assert_cmpfloat(distill_frame_interval(mean, 0.0), ==, before);    /* same timestamp */
  g_assert_cmpfloat(distill_frame_interval(mean, 2000.0), ==, before); /* a pause */
  for (int i = 0; i < 200; i++)                       /* the camera drops to 10 fps */
    mean = distill_frame_interval(mean, 100.0);
  g_assert_cmpfloat(fabs(mean - 100.0), <, 1.0);
  g_rand_free(rand);
}

/* ---- the training size ------------------------------------------------------------------ */

/* Labels of h x w: vertical lines of class 1, `width` pixels wide every `period` pixels. */
static uint8_t *stripes(int h, int w, int width, int period)
{
  uint8_t *labels = g_malloc((size_t)h * w);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      labels[y * w + x] = x % period < width;
  return labels;
}

static double resolution_miou(const uint8_t *labels, int h, int w)
{
  float *shares = g_new(float, (size_t)((h + 1) / 2) * ((w + 1) / 2) * 2);
  uint8_t *coarse = g_malloc((size_t)h * w);
  double miou = distill_resolution_miou(labels, h, w, 2, shares, coarse, NULL);
  g_free(shares);
  g_free(coarse);
  return miou;
}

/* Lines one pixel wide vanish in a class map of half the size; a large block keeps all but its
 * edge; LABEL_IGNORE does not count. */
static void test_resolution_miou(void)
{
  uint8_t *thin = stripes(60, 80, 1, 4), *thick = stripes(60, 80, 20, 40);
  double thin_miou = resolution_miou(thin, 60, 80), thick_miou = resolution_miou(thick, 60, 80);
  g_assert_cmpfloat(thin_miou, <, 0.5);
  g_assert_cmpfloat(thick_miou, >, 0.95);
  g_assert_cmpfloat(thick_miou, <=, 1.0);
  /* Odd sizes: the last row and column are blocks of their own. */
  uint8_t *odd = stripes(61, 81, 20, 40);
  g_assert_cmpfloat(resolution_miou(odd, 61, 81), >, 0.95);
  /* Nothing but background, and nothing but ignored pixels, lose nothing. */
  memset(odd, 0, 61 * 81);
  g_assert_cmpfloat(resolution_miou(odd, 61, 81), ==, 1.0);
  memset(thin, LABEL_IGNORE, 60 * 80);
  g_assert_cmpfloat(resolution_miou(thin, 60, 80), ==, 1.0);
  g_free(thin);
  g_free(thick);
  g_free(odd);
}

/* Feeds rounds of the same measures; returns the first reason other than NONE (and how many
 * rounds it took in *rounds), or NONE after `max` rounds. */
static DistillResizeReason feed(DistillGrowth *g, int max, double coarse, double busy,
                                double load, double room, int *rounds)
{
  for (int i = 1; i <= max; i++) {
    DistillResizeReason reason = distill_growth_update(g, coarse, busy, load, room, FALSE);
    if (reason != DISTILL_RESIZE_NONE) {
      if (rounds)
        *rounds = i;
      return reason;
    }
  }
  return DISTILL_RESIZE_NONE;
}

static void test_grows_to_what_the_trainer_allows(void)
{
  DistillGrowth g;
  distill_growth_init(&g, 320, 640);
  int rounds = 0;
  /* The trainer busy a fifth of the time: 640 (4 times the area) would be 0.8, within reach,
   * after a few rounds measured, not at the first. */
  g_assert_cmpint(feed(&g, 50, 0.85, 0.2, 0.05, 0.5, &rounds), ==, DISTILL_RESIZE_FINER);
  g_assert_cmpint(rounds, >, 1);
  g_assert_cmpint(g.long_side, ==, 640);
  g_assert_cmpint(feed(&g, 50, 0.85, 0.8, 0.2, 0.5, NULL), ==, DISTILL_RESIZE_NONE);

  /* Busy a third of the time: the largest step with busy * area within reach is 512. */
  distill_growth_init(&g, 320, 640);
  g_assert_cmpint(feed(&g, 50, 0.85, 0.33, 0.05, 0.5, NULL), ==, DISTILL_RESIZE_FINER);
  g_assert_cmpint(g.long_side, ==, 512);
  g_assert_cmpint((g.long_side - 320) % DISTILL_GROWTH_STEP, ==, 0);
  /* At 512 the trainer is busy 0.7 of the time: 576 would be 0.89, within reach. */
  g_assert_cmpint(feed(&g, 50, 0.88, 0.7, 0.05, 0.5, NULL), ==, DISTILL_RESIZE_FINER);
  g_assert_cmpint(g.long_side, ==, 576);

  /* A largest size off the grid is reached all the same. */
  distill_growth_init(&g, 320, 600);
  g_assert_cmpint(feed(&g, 50, 0.85, 0.1, 0.05, 0.5, NULL), ==, DISTILL_RESIZE_FINER);
  g_assert_cmpint(g.long_side, ==, 600);
}

static void test_grows_only_where_labels_need_it(void)
{
  DistillGrowth g;
  distill_growth_init(&g, 320, 640);
  /* Large things: a class map half as fine loses little. The trainer idle does not matter. */
  g_assert_cmpint(feed(&g, 100, 0.97, 0.1, 0.05, 0.5, NULL), ==, DISTILL_RESIZE_NONE);
  g_assert_cmpint(g.long_side, ==, 320);
  /* No room for inference at a larger size, or none at all. */
  g_assert_cmpint(feed(&g, 100, 0.8, 0.1, 0.4, 0.5, NULL), ==, DISTILL_RESIZE_NONE);
  g_assert_cmpint(feed(&g, 100, 0.8, 0.1, 0.05, 0.0, NULL), ==, DISTILL_RESIZE_NONE);
  /* The trainer too busy for any step. */
  distill_growth_init(&g, 320, 640);
  g_assert_cmpint(feed(&g, 100, 0.8, 0.7, 0.05, 0.5, NULL), ==, DISTILL_RESIZE_NONE);
  g_assert_cmpint(g.long_side, ==, 320);
  /* No larger size allowed. */
  distill_growth_init(&g, 320, 320);
  g_assert_cmpint(feed(&g, 100, 0.5, 0.0, 0.0, 1.0, NULL), ==, DISTILL_RESIZE_NONE);
}

static void test_steps_back_when_behind(void)
{
  DistillGrowth g;
  distill_growth_init(&g, 320, 640);
  g_assert_cmpint(feed(&g, 50, 0.85, 0.2, 0.05, 0.5, NULL), ==, DISTILL_RESIZE_FINER);
  g_assert_cmpint(g.long_side, ==, 640);
  /* The trainer in rounds all the time: one step down per judgement, to the base and no lower. */
  int sizes[] = { 576, 512, 448, 384, 320 };
  for (guint i = 0; i < G_N_ELEMENTS(sizes); i++) {
    g_assert_cmpint(feed(&g, 50, 0.85, 1.0, 0.05, 0.5, NULL), ==,
                    DISTILL_RESIZE_TRAINER_BEHIND);
    g_assert_cmpint(g.long_side, ==, sizes[i]);
  }
  g_assert_cmpint(feed(&g, 50, 0.85, 1.0, 0.05, 0.5, NULL), ==, DISTILL_RESIZE_NONE);
  /* Stepped back from 640, the trainer idle again: 576 at once, 640 not before some 40 rounds
   * (then the trainer's time is measured there afresh). */
  distill_growth_init(&g, 320, 640);
  g_assert_cmpint(feed(&g, 50, 0.85, 0.2, 0.05, 0.5, NULL), ==, DISTILL_RESIZE_FINER);
  g_assert_cmpint(feed(&g, 50, 0.85, 1.0, 0.05, 0.5, NULL), ==, DISTILL_RESIZE_TRAINER_BEHIND);
  g_assert_cmpint(g.long_side, ==, 576);
  int rounds = 0;
  g_assert_cmpint(feed(&g, 100, 0.85, 0.2, 0.05, 0.5, &rounds), ==, DISTILL_RESIZE_FINER);
  g_assert_cmpint(g.long_side, ==, 640);
  g_assert_cmpint(rounds, >=, 30);
  /* The governor runs the stream below the training size (inference over its budget): training
   * steps back too, whatever the trainer's time. */
  distill_growth_init(&g, 320, 640);
  g_assert_cmpint(feed(&g, 50, 0.85, 0.2, 0.05, 0.5, NULL), ==, DISTILL_RESIZE_FINER);
  for (int i = 0; i < 3; i++)
    g_assert_cmpint(distill_growth_update(&g, 0.85, 0.2, 0.05, 0.0, TRUE), ==,
                    DISTILL_RESIZE_NONE);
  g_assert_cmpint(distill_growth_update(&g, 0.85, 0.2, 0.05, 0.0, TRUE), ==,
                  DISTILL_RESIZE_OVER_BUDGET);
  g_assert_cmpint(g.long_side, ==, 576);
  /* Busy but keeping up (between the thresholds): the size stays. */
  distill_growth_init(&g, 320, 640);
  g_assert_cmpint(feed(&g, 50, 0.85, 0.2, 0.05, 0.5, NULL), ==, DISTILL_RESIZE_FINER);
  g_assert_cmpint(feed(&g, 100, 0.85, 0.92, 0.05, 0.5, NULL), ==, DISTILL_RESIZE_NONE);
  g_assert_cmpint(g.long_side, ==, 640);
}

/* ---- the engine ------------------------------------------------------------------------- */

typedef struct {
  int calls;
  DistillResize last;
} Resizes;

static void on_resized(const DistillResize *r, gpointer user_data)
{
  Resizes *seen = user_data;
  seen->calls++;
  seen->last = *r;
}

static Student *two_class_student(void)
{
  StudentConfig scfg;
  student_config_default(&scfg, 2);
  return student_new(&scfg, 1);
}

static FeatureMap random_input(int h, int w, guint32 seed)
{
  FeatureMap x = feature_map(g_new(float, (size_t)h * w * 3), h, w, 3);
  GRand *rand = g_rand_new_with_seed(seed);
  for (size_t i = 0; i < (size_t)h * w * 3; i++)
    x.data[i] = (float)g_rand_double_range(rand, -0.5, 0.5);
  g_rand_free(rand);
  return x;
}

/* An interval far too short for any CPU: the engine goes to the floor within a few frames and
 * tells why; the class maps keep the nominal logits size, and so do teacher frames. */
static void test_engine_lowers_the_stream_only(void)
{
  Student *student = two_class_student();
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.inference_budget = 0.5;
  cfg.resized = on_resized;
  Resizes seen = { 0 };
  cfg.round_user_data = &seen;
  DistillEngine *engine = distill_engine_new(student, &cfg, NULL);
  g_assert_nonnull(engine);
  FeatureMap input = random_input(480, 640, 5);
  int label_h, label_w;
  distill_engine_label_size(engine, 480, 640, &label_h, &label_w);
  uint8_t *classes = g_malloc((size_t)label_h * label_w);
  DistillStats stats;

  /* No interval yet: measured, not governed. */
  for (int i = 0; i < 12; i++)
    distill_engine_process(engine, &input, classes);
  distill_engine_get_stats(engine, &stats);
  g_assert_cmpint(stats.input_w, ==, 640);
  g_assert_cmpint(seen.calls, ==, 0);

  distill_engine_set_frame_interval(engine, 0.01);
  for (int i = 0; i < 12; i++)
    distill_engine_process(engine, &input, classes);
  g_assert_cmpint(seen.calls, ==, 1);
  g_assert_cmpint(seen.last.reason, ==, DISTILL_RESIZE_OVER_BUDGET);
  g_assert_cmpint(seen.last.from_w, ==, 640);
  g_assert_cmpint(seen.last.to_w, ==, DISTILL_GOVERNOR_FLOOR);
  g_assert_cmpint(seen.last.to_h, ==, 240);
  g_assert_cmpfloat(seen.last.budget, ==, 0.5);
  distill_engine_get_stats(engine, &stats);
  g_assert_cmpint(stats.input_w, ==, 320);
  g_assert_cmpint(stats.input_h, ==, 240);
  g_assert_cmpfloat(stats.inference_share, >, 0.5);
  g_assert_false(stats.hibernating);
  /* The class map is still of the nominal input's logits size, and says something. */
  distill_engine_process(engine, &input, classes);
  gboolean classes_valid = TRUE;
  for (int i = 0; i < label_h * label_w; i++)
    classes_valid &= classes[i] < 2;
  g_assert_true(classes_valid);
  /* A teacher frame goes at the nominal size. */
  DistillQuery *query = distill_engine_wants_teacher(engine, &input);
  g_assert_nonnull(query);
  int qh, qw;
  distill_query_label_size(query, &qh, &qw);
  g_assert_cmpint(qh, ==, label_h);
  g_assert_cmpint(qw, ==, label_w);
  distill_query_fail(query);
  distill_engine_process(engine, &input, classes);

  /* A long interval: room again, back to the nominal size. */
  distill_engine_set_frame_interval(engine, 1e6);
  for (int i = 0; i < 40; i++)
    distill_engine_process(engine, &input, classes);
  g_assert_cmpint(seen.calls, ==, 2);
  g_assert_cmpint(seen.last.reason, ==, DISTILL_RESIZE_ROOM);
  g_assert_cmpint(seen.last.to_w, ==, 640);
  distill_engine_get_stats(engine, &stats);
  g_assert_cmpint(stats.input_w, ==, 640);

  distill_engine_free(engine);
  g_free(classes);
  g_free(input.data);
  student_free(student);
}

/* The student's own class map of input, as a teacher that agrees with it would label it. */
static uint8_t *own_labels(const Student *student, const FeatureMap *input, int n)
{
  Student *copy = student_copy(student);
  uint8_t *labels = g_malloc(n);
  argmax_channels(student_forward(copy, input, NULL), labels, NULL);
  student_free(copy);
  return labels;
}

/* Hibernation: a round that meets the threshold with the stride at max_stride puts training to
 * rest; a frame below the threshold wakes it, and so does a scene change, at its query. */
static void test_engine_hibernates(void)
{
  Student *student = two_class_student();
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.sync = TRUE; /* rounds inline: the flag is the same in both modes */
  cfg.threads = 1;
  cfg.train_bf16 = cfg.forward_bf16 = FALSE;
  cfg.min_stride = 1;
  cfg.max_stride = 2;
  cfg.max_updates = 1;
  DistillEngine *engine = distill_engine_new(student, &cfg, NULL);
  FeatureMap input = random_input(96, 128, 8);
  int label_h, label_w;
  distill_engine_label_size(engine, 96, 128, &label_h, &label_w);
  int n = label_h * label_w;
  uint8_t *agree = own_labels(student, &input, n), *disagree = g_malloc(n);
  for (int i = 0; i < n; i++)
    disagree[i] = 1 - agree[i];
  uint8_t *classes = g_malloc(n);
  DistillStats stats;

  /* Frame 0: asked (stride 1), agrees; the stride doubles to max_stride: hibernating. */
  DistillQuery *q = distill_engine_wants_teacher(engine, &input);
  g_assert_nonnull(q);
  g_assert_true(distill_query_answer(q, agree, label_h, label_w, NULL));
  distill_engine_process(engine, &input, classes);
  distill_engine_get_stats(engine, &stats);
  g_assert_cmpuint(stats.stride, ==, 2);
  g_assert_true(stats.hibernating);
  /* Frame 1: a new scene, within the stride: asked at once, and awake before its answer. */
  FeatureMap changed = random_input(96, 128, 8);
  for (size_t i = 0; i < (size_t)96 * 128 * 3; i++)
    changed.data[i] = changed.data[i] * 0.2f + 0.4f;
  q = distill_engine_wants_teacher(engine, &changed);
  g_assert_nonnull(q);
  distill_engine_get_stats(engine, &stats);
  g_assert_false(stats.hibernating);
  distill_query_fail(q);
  distill_engine_process(engine, &changed, classes);
  /* Frame 2, the first scene again, departs from frame 1's: asked, agrees, asleep again through
   * frame 3; frames 4 and 5 disagree: awake, the stride back at min_stride. */
  for (int frame = 2; frame < 6; frame++) {
    q = distill_engine_wants_teacher(engine, &input);
    if (q)
      g_assert_true(distill_query_answer(q, frame < 4 ? agree : disagree, label_h, label_w,
                                         NULL));
    distill_engine_process(engine, &input, classes);
    distill_engine_get_stats(engine, &stats);
    if (frame == 3)
      g_assert_true(stats.hibernating);
  }
  g_assert_false(stats.hibernating);
  g_assert_cmpuint(stats.stride, ==, 1);

  distill_engine_free(engine);
  g_free(agree);
  g_free(disagree);
  g_free(classes);
  g_free(input.data);
  g_free(changed.data);
  student_free(student);
}

typedef struct {
  GMutex lock;
  GCond done;
  int rounds;
  DistillRound first;
} Rounds;

static void on_round_finished(const DistillRound *round, gpointer user_data)
{
  Rounds *seen = user_data;
  g_mutex_lock(&seen->lock);
  if (seen->rounds++ == 0)
    seen->first = *round;
  g_cond_signal(&seen->done);
  g_mutex_unlock(&seen->lock);
}

/* The policy measures the student at the size the stream runs it: with the governor at its
 * floor, a teacher who labels the frame as the student does at the nominal size (mIoU 1 there)
 * is measured against the class map of the smaller input, resized as the user gets it. */
static void test_engine_measures_at_the_size_in_use(void)
{
  Student *student = two_class_student();
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.train_bf16 = cfg.forward_bf16 = FALSE;
  cfg.round_finished = on_round_finished;
  Rounds seen = { 0 };
  g_mutex_init(&seen.lock);
  g_cond_init(&seen.done);
  cfg.round_user_data = &seen;
  DistillEngine *engine = distill_engine_new(student, &cfg, NULL);
  FeatureMap input = random_input(480, 640, 10);
  int label_h, label_w;
  distill_engine_label_size(engine, 480, 640, &label_h, &label_w);
  int n = label_h * label_w;
  uint8_t *agree = own_labels(student, &input, n), *classes = g_malloc(n);
  distill_engine_set_frame_interval(engine, 0.01);
  for (int i = 0; i < 12; i++)
    distill_engine_process(engine, &input, classes);
  DistillStats stats;
  distill_engine_get_stats(engine, &stats);
  g_assert_cmpint(stats.input_w, ==, DISTILL_GOVERNOR_FLOOR);

  DistillQuery *q = NULL;
  for (int i = 0; i < 64 && !q; i++) {
    q = distill_engine_wants_teacher(engine, &input);
    if (!q)
      distill_engine_process(engine, &input, classes);
  }
  g_assert_nonnull(q);
  g_assert_true(distill_query_answer(q, agree, label_h, label_w, NULL));
  g_mutex_lock(&seen.lock);
  while (seen.rounds == 0) {
    g_mutex_unlock(&seen.lock);
    distill_engine_process(engine, &input, classes);
    g_mutex_lock(&seen.lock);
    if (seen.rounds == 0)
      g_cond_wait_until(&seen.done, &seen.lock, g_get_monotonic_time() + G_TIME_SPAN_SECOND / 10);
  }
  DistillRound round = seen.first;
  g_mutex_unlock(&seen.lock);

  /* What the user sees: the initial weights on the input at 320x240, resized to the labels. */
  Student *copy = student_copy(student);
  FeatureMap small = feature_map(g_new(float, 320 * 240 * 3), 240, 320, 3);
  resize_bilinear_forward(&input, &small, NULL);
  uint8_t *shown = g_malloc(n);
  argmax_bilinear(student_forward(copy, &small, NULL), label_w, label_h, shown, label_w, NULL);
  double expected = frame_miou(shown, agree, n, 2);
  g_assert_cmpint(round.measure_w, ==, 320);
  g_assert_cmpint(round.measure_h, ==, 240);
  g_assert_cmpfloat(expected, <, 1.0);
  g_assert_cmpfloat_with_epsilon(round.miou_before, expected, 1e-9);

  distill_engine_free(engine);
  g_mutex_clear(&seen.lock);
  g_cond_clear(&seen.done);
  student_free(copy);
  g_free(small.data);
  g_free(shown);
  g_free(agree);
  g_free(classes);
  g_free(input.data);
  student_free(student);
}

/* The budget holds per process: a stream far within its own interval shrinks all the same while
 * another engine of the process overloads the cores, and grows back once that one is gone. */
static void test_engines_share_the_budget(void)
{
  Student *student = two_class_student();
  DistillConfig cfg;
  distill_config_default(&cfg);
  DistillEngine *busy = distill_engine_new(student, &cfg, NULL);
  DistillEngine *calm = distill_engine_new(student, &cfg, NULL);
  FeatureMap input = random_input(480, 640, 9);
  uint8_t *classes = g_malloc(320 * 240);
  DistillStats stats;

  distill_engine_set_frame_interval(busy, 0.01);
  distill_engine_set_frame_interval(calm, 1e6);
  for (int i = 0; i < 12; i++) {
    distill_engine_process(busy, &input, classes);
    distill_engine_process(calm, &input, classes);
  }
  distill_engine_get_stats(calm, &stats);
  g_assert_cmpfloat(stats.inference_share, <, 0.01);
  g_assert_cmpint(stats.input_w, ==, DISTILL_GOVERNOR_FLOOR);

  distill_engine_free(busy);
  for (int i = 0; i < 40; i++)
    distill_engine_process(calm, &input, classes);
  distill_engine_get_stats(calm, &stats);
  g_assert_cmpint(stats.input_w, ==, 640);

  distill_engine_free(calm);
  g_free(classes);
  g_free(input.data);
  student_free(student);
}

/* The governor is off in sync mode, with train = FALSE and with a budget of 0. */
static void test_engine_off(void)
{
  Student *student = two_class_student();
  FeatureMap input = random_input(480, 640, 6);
  uint8_t *classes = g_malloc(320 * 240);
  for (int which = 0; which < 3; which++) {
    DistillConfig cfg;
    distill_config_default(&cfg);
    cfg.sync = which == 0;
    cfg.train = which != 1;
    cfg.inference_budget = which == 2 ? 0.0 : 0.5;
    DistillEngine *engine = distill_engine_new(student, &cfg, NULL);
    distill_engine_set_frame_interval(engine, 0.01);
    for (int i = 0; i < 12; i++)
      distill_engine_process(engine, &input, classes);
    DistillStats stats;
    distill_engine_get_stats(engine, &stats);
    g_assert_cmpint(stats.input_w, ==, 640);
    distill_engine_free(engine);
  }
  g_free(classes);
  g_free(input.data);
  student_free(student);
}

/* One frame of long side `side` (4:3): asked of the teacher when due, answered at once with
 * thin stripes; returns whether it was asked. */
static gboolean frame(DistillEngine *engine, int side, uint8_t *classes)
{
  int h = side * 3 / 4, w = side;
  FeatureMap input = feature_map(g_new(float, (size_t)h * w * 3), h, w, 3);
  for (size_t i = 0; i < (size_t)h * w * 3; i++)
    input.data[i] = (float)(i * 7919 % 1000) / 1000.0f - 0.5f;
  DistillQuery *query = distill_engine_wants_teacher(engine, &input);
  if (query) {
    int lh, lw;
    distill_query_label_size(query, &lh, &lw);
    uint8_t *labels = stripes(lh, lw, 1, 3);
    g_assert_true(distill_query_answer(query, labels, lh, lw, NULL));
    g_free(labels);
  }
  distill_engine_process(engine, &input, classes);
  g_free(input.data);
  return query != NULL;
}

static void wait_rounds(DistillEngine *engine, guint64 rounds)
{
  DistillStats stats;
  for (distill_engine_get_stats(engine, &stats); stats.rounds < rounds;
       distill_engine_get_stats(engine, &stats))
    g_usleep(1000);
}

/* Teacher frames of thin things, the trainer idle between them: the engine asks for the largest
 * input; given it, it says why. Rounds back to back: it asks for smaller ones, down to the base,
 * and trains on (replay frames resized) throughout. Off in sync mode. */
static void test_engine_asks_for_the_training_size(void)
{
  StudentConfig scfg;
  student_config_default(&scfg, 2);
  Student *student = student_new(&scfg, 1);
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.threads = cfg.train_threads = 1;
  cfg.min_stride = cfg.max_stride = 1;
  cfg.max_updates = 1;
  cfg.accuracy_threshold = 1.0;
  cfg.resized = on_resized;
  Resizes seen = { 0 };
  cfg.round_user_data = &seen;
  DistillEngine *engine = distill_engine_new(student, &cfg, NULL);
  uint8_t *classes = g_malloc(160 * 120);

  distill_engine_set_frame_interval(engine, 1e6); /* all the room inference could want */
  g_assert_cmpint(distill_engine_input_long_side(engine), ==, 0);
  distill_engine_set_input_range(engine, 64, 128);
  g_assert_cmpint(distill_engine_input_long_side(engine), ==, 64);

  /* A round every 100 ms of a few ms each: the trainer is idle most of the time. */
  int rounds = 0;
  while (distill_engine_input_long_side(engine) == 64 && rounds < 40) {
    if (frame(engine, 64, classes))
      wait_rounds(engine, ++rounds);
    g_usleep(100 * 1000);
  }
  g_assert_cmpint(distill_engine_input_long_side(engine), ==, 128);
  g_assert_cmpint(rounds, >=, 2);
  g_assert_cmpint(seen.calls, ==, 0); /* said when inputs of the size come */
  frame(engine, 128, classes);
  g_assert_cmpint(seen.calls, ==, 1);
  g_assert_cmpint(seen.last.reason, ==, DISTILL_RESIZE_FINER);
  g_assert_cmpint(seen.last.from_w, ==, 64);
  g_assert_cmpint(seen.last.to_w, ==, 128);
  g_assert_cmpint(seen.last.to_h, ==, 96);

  /* Frames answered as fast as they come: an answer always waits when a round ends, the
   * trainer is behind and the engine steps back to the base. */
  int side = 128;
  gint64 until = g_get_monotonic_time() + 60 * G_TIME_SPAN_SECOND;
  while (side > 64 && g_get_monotonic_time() < until) {
    frame(engine, side, classes);
    side = distill_engine_input_long_side(engine);
  }
  g_assert_cmpint(side, ==, 64);
  frame(engine, 64, classes);
  g_assert_cmpint(seen.last.reason, ==, DISTILL_RESIZE_TRAINER_BEHIND);
  g_assert_cmpint(seen.last.to_w, ==, 64);
  DistillStats stats;
  distill_engine_get_stats(engine, &stats);
  g_assert_cmpuint(stats.updates, >, 0);
  g_assert_cmpuint(stats.rollbacks, ==, 0);
  g_assert_cmpint(stats.input_w, ==, 64);
  distill_engine_free(engine);

  /* Sync mode: no growth. */
  cfg.sync = TRUE;
  engine = distill_engine_new(student, &cfg, NULL);
  distill_engine_set_input_range(engine, 64, 128);
  g_assert_cmpint(distill_engine_input_long_side(engine), ==, 0);
  distill_engine_free(engine);

  g_free(classes);
  student_free(student);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/governor/within-budget-keeps-nominal", test_within_budget_keeps_nominal);
  g_test_add_func("/governor/over-budget-lowers-once-to-fit", test_over_budget_lowers_once_to_fit);
  g_test_add_func("/governor/noise-does-not-oscillate", test_noise_does_not_oscillate);
  g_test_add_func("/governor/floor-and-room", test_floor_and_room);
  g_test_add_func("/governor/raises-only-with-room", test_raises_only_with_room);
  g_test_add_func("/governor/other-streams-share-the-budget",
                  test_other_streams_share_the_budget);
  g_test_add_func("/governor/off-and-unknown-interval", test_off_and_unknown_interval);
  g_test_add_func("/governor/sizes", test_sizes);
  g_test_add_func("/governor/interval-from-timestamps", test_interval_from_timestamps);
  g_test_add_func("/governor/engine-lowers-the-stream-only", test_engine_lowers_the_stream_only);
  g_test_add_func("/governor/engines-share-the-budget", test_engines_share_the_budget);
  g_test_add_func("/governor/engine-off", test_engine_off);
  g_test_add_func("/governor/engine-hibernates", test_engine_hibernates);
  g_test_add_func("/governor/engine-measures-at-the-size-in-use",
                  test_engine_measures_at_the_size_in_use);
  g_test_add_func("/governor/growth/resolution-miou", test_resolution_miou);
  g_test_add_func("/governor/growth/grows-to-what-the-trainer-allows",
                  test_grows_to_what_the_trainer_allows);
  g_test_add_func("/governor/growth/grows-only-where-labels-need-it",
                  test_grows_only_where_labels_need_it);
  g_test_add_func("/governor/growth/steps-back-when-behind", test_steps_back_when_behind);
  g_test_add_func("/governor/growth/engine-asks-for-the-training-size",
                  test_engine_asks_for_the_training_size);
  return g_test_run();
}
