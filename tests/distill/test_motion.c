/* test_motion.c: the teacher's last answer moved with the scene (distill_motion.c). On the
 * synthetic scene (textured objects moving, over a still or a panning background), an answer
 * carried from its frame to one some frames later (or back to one before) matches that frame's
 * truth better than the answer held where it was, on the pixels it is sure of (most); a change
 * of input size, or a frame without motion, leaves the answer in place. The engine's use of it:
 * test_fusion.c. */
#include <string.h>

#include "kernels.h"
#include "scene_stream.h"

enum { SW = 256, SH = 192, LW = 128, LH = 96 };

typedef struct {
  SyntheticScene *scene;
  uint8_t rgb[SW * SH * 3];
  float input_data[SW * SH * 3];
  FeatureMap input;
} Frames;

static void frames_init(Frames *f, double pan)
{
  SyntheticSceneConfig cfg;
  synthetic_scene_config_default(&cfg, SW, SH, 7);
  cfg.pan = pan;
  f->scene = synthetic_scene_new(&cfg);
  f->input = feature_map(f->input_data, SH, SW, 3);
}

static void frames_load(Frames *f, guint64 frame)
{
  synthetic_scene_render(f->scene, frame, f->rgb);
  distill_input_from_rgb(f->rgb, SW, SH, SW * 3, 3, NULL, &f->input);
}

/* The truth of frame `anchor` carried to frame `to` (later, or earlier: back), and held,
 * against the truth there, on the pixels the carried answer is sure of; *unsure: the share it
 * is not. */
static void carry_over(double pan, guint64 anchor, guint64 to, double *moved_miou,
                       double *held_miou, double *unsure)
{
  static Frames f;
  static uint8_t held[LW * LH], truth[LW * LH], moved[LW * LH];
  static uint8_t sure_moved[LW * LH], sure_held[LW * LH], sure_truth[LW * LH];
  frames_init(&f, pan);
  DistillMotion m;
  distill_motion_init(&m);
  for (guint64 frame = MIN(anchor, to) - 2; frame <= MAX(anchor, to); frame++) {
    frames_load(&f, frame);
    distill_motion_add(&m, &f.input, frame);
  }
  synthetic_scene_labels(f.scene, anchor, LW, LH, held);
  synthetic_scene_labels(f.scene, to, LW, LH, truth);
  g_assert_nonnull(distill_motion_carry(&m, anchor, to));
  distill_motion_sample(&m, held, LH, LW, moved);
  size_t n = 0;
  for (int i = 0; i < LW * LH; i++)
    if (moved[i] != DISTILL_MOTION_UNSURE) {
      sure_moved[n] = moved[i];
      sure_held[n] = held[i];
      sure_truth[n++] = truth[i];
    }
  *unsure = 1.0 - (double)n / (LW * LH);
  *moved_miou = frame_miou(sure_moved, sure_truth, n, 3);
  *held_miou = frame_miou(sure_held, sure_truth, n, 3);
  distill_motion_clear(&m);
  synthetic_scene_free(f.scene);
}

static void test_carried_answer_follows_objects(void)
{
  double moved, held, unsure;
  carry_over(0.0, 20, 28, &moved, &held, &unsure);
  g_test_message("objects moving, 8 frames on: held %.3f, moved %.3f (unsure of %.3f)", held,
                 moved, unsure);
  g_assert_cmpfloat(unsure, <, 0.1);
  g_assert_cmpfloat(moved, >, held + 0.05);
}

/* The background scrolling under the objects: they are still followed. */
static void test_carried_answer_follows_objects_over_pan(void)
{
  double moved, held, unsure;
  carry_over(10.0, 20, 28, &moved, &held, &unsure);
  g_test_message("objects moving over a panning background, 8 frames on: held %.3f, moved %.3f "
                 "(unsure of %.3f)", held, moved, unsure);
  g_assert_cmpfloat(unsure, <, 0.1);
  g_assert_cmpfloat(moved, >, held + 0.1);
}

/* A later answer carried back to a frame 4 before it (a frame held back for it), along the
 * same vectors: the objects, and the background scrolling under them, are still followed. */
static void test_carried_back(void)
{
  double moved, held, unsure, pan_moved, pan_held, pan_unsure;
  carry_over(0.0, 24, 20, &moved, &held, &unsure);
  carry_over(10.0, 24, 20, &pan_moved, &pan_held, &pan_unsure);
  g_test_message("carried back 4 frames: objects moving, held %.3f, moved %.3f (unsure of "
                 "%.3f); over a panning background, held %.3f, moved %.3f (unsure of %.3f)",
                 held, moved, unsure, pan_held, pan_moved, pan_unsure);
  g_assert_cmpfloat(unsure, <, 0.1);
  g_assert_cmpfloat(pan_unsure, <, 0.1);
  g_assert_cmpfloat(moved, >, held + 0.05);
  g_assert_cmpfloat(pan_moved, >, pan_held + 0.05);
}

/* The map is carried once per frame: asking again changes nothing; a newer anchor starts anew
 * (the identity: the answer as it came). */
static void test_carry_is_incremental(void)
{
  static Frames f;
  static uint8_t held[LW * LH], a[LW * LH], b[LW * LH];
  frames_init(&f, 10.0);
  DistillMotion m;
  distill_motion_init(&m);
  g_assert_null(distill_motion_carry(&m, 0, 0));
  synthetic_scene_labels(f.scene, 3, LW, LH, held);
  for (guint64 frame = 0; frame < 10; frame++) {
    frames_load(&f, frame);
    distill_motion_add(&m, &f.input, frame);
    if (frame >= 3) /* carried as the stream goes */
      distill_motion_carry(&m, 3, frame);
  }
  distill_motion_sample(&m, held, LH, LW, a);
  distill_motion_carry(&m, 3, 9);
  distill_motion_sample(&m, held, LH, LW, b);
  g_assert_cmpmem(a, sizeof a, b, sizeof b);
  g_assert_cmpint(memcmp(a, held, sizeof a), !=, 0); /* it did move */
  /* Carried all at once from the anchor: the same map. */
  DistillMotion once;
  distill_motion_init(&once);
  for (guint64 frame = 0; frame < 10; frame++) {
    frames_load(&f, frame);
    distill_motion_add(&once, &f.input, frame);
  }
  distill_motion_carry(&once, 3, 9);
  distill_motion_sample(&once, held, LH, LW, b);
  g_assert_cmpmem(a, sizeof a, b, sizeof b);
  /* An answer of the newest frame is where it is. */
  distill_motion_carry(&m, 9, 9);
  distill_motion_sample(&m, held, LH, LW, b);
  g_assert_cmpmem(held, sizeof held, b, sizeof b);
  distill_motion_clear(&once);
  distill_motion_clear(&m);
  synthetic_scene_free(f.scene);
}

/* A frame held back is shown after newer ones were taken: the map carried to it is the one it
 * had when it was the newest, also after a carry to a newer frame. */
static void test_carry_to_an_earlier_frame(void)
{
  static Frames f;
  static uint8_t held[LW * LH], then[LW * LH], later[LW * LH];
  frames_init(&f, 10.0);
  DistillMotion m;
  distill_motion_init(&m);
  synthetic_scene_labels(f.scene, 2, LW, LH, held);
  for (guint64 frame = 0; frame < 10; frame++) {
    frames_load(&f, frame);
    distill_motion_add(&m, &f.input, frame);
    if (frame == 6) {
      distill_motion_carry(&m, 2, 6);
      distill_motion_sample(&m, held, LH, LW, then);
    }
  }
  distill_motion_carry(&m, 2, 9);
  distill_motion_sample(&m, held, LH, LW, later);
  g_assert_cmpint(memcmp(later, then, sizeof then), !=, 0);
  distill_motion_carry(&m, 2, 6);
  distill_motion_sample(&m, held, LH, LW, later);
  g_assert_cmpmem(later, sizeof later, then, sizeof then);
  distill_motion_clear(&m);
  synthetic_scene_free(f.scene);
}

/* A frame of another size has no motion against the one before: an answer carried across the
 * change moves only with the frames after it. */
static void test_size_change_holds_still(void)
{
  static Frames f;
  static uint8_t held[LW * LH], out[LW * LH];
  static float small_data[(SW / 2) * (SH / 2) * 3];
  FeatureMap small = feature_map(small_data, SH / 2, SW / 2, 3);
  frames_init(&f, 10.0);
  DistillMotion m;
  distill_motion_init(&m);
  synthetic_scene_labels(f.scene, 1, LW, LH, held);
  for (guint64 frame = 0; frame < 6; frame++) {
    frames_load(&f, frame);
    if (frame < 4) {
      distill_motion_add(&m, &f.input, frame);
    } else { /* the last two at half the size */
      distill_input_from_rgb(f.rgb, SW, SH, SW * 3, 3, NULL, &small);
      distill_motion_add(&m, &small, frame);
    }
  }
  /* Frames 2 and 3 moved at the old size, gone with it; frame 4 has none; frame 5 has. */
  g_assert_cmpuint(m.vectors_of[5 % DISTILL_MOTION_HISTORY], ==, 6);
  g_assert_cmpuint(m.vectors_of[4 % DISTILL_MOTION_HISTORY], ==, 0);
  g_assert_cmpuint(m.vectors_of[3 % DISTILL_MOTION_HISTORY], ==, 0);
  distill_motion_carry(&m, 4, 5);
  distill_motion_sample(&m, held, LH, LW, out);
  g_assert_cmpint(memcmp(out, held, sizeof out), !=, 0);
  /* Without frame 5's motion (the anchor is the newest frame): in place. */
  distill_motion_carry(&m, 5, 5);
  distill_motion_sample(&m, held, LH, LW, out);
  g_assert_cmpmem(out, sizeof out, held, sizeof held);
  distill_motion_clear(&m);
  synthetic_scene_free(f.scene);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/motion/carried_answer_follows_objects", test_carried_answer_follows_objects);
  g_test_add_func("/motion/carried_answer_follows_objects_over_pan",
                  test_carried_answer_follows_objects_over_pan);
  g_test_add_func("/motion/carried_back", test_carried_back);
  g_test_add_func("/motion/carry_is_incremental", test_carry_is_incremental);
  g_test_add_func("/motion/carry_to_an_earlier_frame", test_carry_to_an_earlier_frame);
  g_test_add_func("/motion/size_change_holds_still", test_size_change_holds_still);
  return g_test_run();
}
