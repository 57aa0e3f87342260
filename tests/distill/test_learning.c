/* test_learning.c: from random initialisation, in sync mode (the paper's protocol), with a
 * teacher that knows the true labels, the student learns the synthetic scene: mIoU against the
 * truth >= 0.8 over the last quarter of the stream, at a teacher fraction <= 1/8, with the
 * engine's default policy and optimiser, and never rolls back (test_rollback.c). */
#include "scene_stream.h"

enum { FRAMES = 480, SCORED_FROM = 360 };

static void test_learns_scene(void)
{
  SyntheticSceneConfig scene_cfg;
  synthetic_scene_config_default(&scene_cfg, 320, 192, 1);
  StudentConfig student_cfg;
  student_config_default(&student_cfg, scene_cfg.num_classes);
  Student *initial = student_new(&student_cfg, 5);
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.sync = TRUE;
  cfg.threads = 1; /* bit-identical runs: the policy branches on a threshold */
  DistillEngine *engine = distill_engine_new(initial, &cfg, NULL);
  SceneStream s;
  scene_stream_init(&s, &scene_cfg, engine, 320, 192);

  /* Before training: no better than chance. */
  scene_stream_load(&s, 0);
  distill_engine_process(engine, &s.input, s.classes);
  double initial_miou = frame_miou(s.classes, s.truth, (size_t)s.label_w * s.label_h, 3);

  for (guint64 f = 1; f < FRAMES; f++)
    scene_stream_sync_frame(&s, f, f >= SCORED_FROM);
  DistillStats st;
  distill_engine_get_stats(engine, &st);
  double fraction = (double)st.teacher_queries / (double)st.frames;
  g_test_message("initial mIoU %.3f; mIoU vs truth over frames %d..%d: %.3f; teacher fraction "
                 "%.4f (%" G_GUINT64_FORMAT " queries / %" G_GUINT64_FORMAT " frames); %"
                 G_GUINT64_FORMAT " updates in %" G_GUINT64_FORMAT " rounds; final stride %u; "
                 "%.1f ms per round, %.2f ms per frame",
                 initial_miou, SCORED_FROM, FRAMES - 1, scene_stream_miou(&s), fraction,
                 st.teacher_queries, st.frames, st.updates, st.rounds, st.stride, st.train_ms,
                 st.student_ms);
  g_assert_cmpfloat(initial_miou, <, 0.5);
  g_assert_cmpfloat(scene_stream_miou(&s), >=, 0.8);
  g_assert_cmpfloat(fraction, <=, 1.0 / 8);
  g_assert_cmpuint(st.updates, >, 0);
  g_assert_cmpuint(st.frames, ==, FRAMES);
  g_assert_cmpuint(st.rollbacks, ==, 0);

  scene_stream_clear(&s);
  distill_engine_free(engine);
  student_free(initial);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/distill/learning/sync-true-teacher", test_learns_scene);
  return g_test_run();
}
