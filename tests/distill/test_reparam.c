/* test_reparam.c: a re-parameterised student (repghost) in the engine: the trainer trains its
 * trainable form, the stream runs its inference form with the weights the trainer publishes
 * fused, and checkpoints keep the trainable form. In both modes. */
#include <glib/gstdio.h>
#include <string.h>

#include "scene_stream.h"

enum { W = 96, H = 64, FRAMES = 24 };

static void run(gboolean sync)
{
  StudentConfig scfg;
  student_config_default_arch(&scfg, STUDENT_ARCH_REPGHOST, 3);
  Student *initial = student_new(&scfg, 4);
  SceneRounds r;
  scene_rounds_init(&r);
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.sync = sync;
  cfg.min_stride = 4;
  cfg.max_updates = 3;
  cfg.accuracy_threshold = 1.0;
  cfg.threads = 1;
  cfg.train_threads = 1;
  cfg.forward_bf16 = FALSE; /* the class maps are compared with an fp32 forward pass */
  cfg.fuse_teacher = FALSE;  /* and with the student's alone */
  cfg.round_finished = scene_rounds_finished;
  cfg.round_user_data = &r;
  DistillEngine *engine = distill_engine_new(initial, &cfg, NULL);
  SyntheticSceneConfig scene_cfg;
  synthetic_scene_config_default(&scene_cfg, W, H, 6);
  SceneStream s;
  scene_stream_init(&s, &scene_cfg, engine, W, H);

  guint64 answered = 0;
  scene_stream_run_answered(&s, &r, 0, FRAMES, &answered);
  DistillStats st;
  distill_engine_get_stats(engine, &st);
  g_assert_cmpuint(st.updates, >, 0);

  /* The checkpoint is the trainable form, with the weights the stream runs. */
  g_autofree char *dir = g_dir_make_tmp("reparam-XXXXXX", NULL);
  g_autofree char *path = g_build_filename(dir, "student.safetensors", NULL);
  g_assert_true(distill_engine_save(engine, path, NULL));
  Student *saved = student_load(path, NULL);
  g_assert_false(student_get_config(saved)->repghost.fused);
  g_assert_nonnull(student_find_tensor(saved, "head.fusion"));
  Student *snapshot = distill_engine_snapshot(engine);
  g_assert_cmpmem(student_params(saved), student_param_count(saved) * sizeof(float),
                  student_params(snapshot), student_param_count(snapshot) * sizeof(float));
  g_assert_true(memcmp(student_params(saved), student_params(initial),
                       student_param_count(saved) * sizeof(float)) != 0);

  /* The stream's class map on a new frame is that of the saved weights, fused. */
  Student *fused = student_fused_copy(saved);
  scene_stream_load(&s, FRAMES);
  distill_engine_process(engine, &s.input, s.classes);
  uint8_t *expected = g_malloc((size_t)s.label_w * s.label_h);
  argmax_channels(student_forward(fused, &s.input, NULL), expected, NULL);
  g_assert_cmpmem(s.classes, (gsize)s.label_w * s.label_h, expected,
                  (gsize)s.label_w * s.label_h);

  g_free(expected);
  student_free(fused);
  student_free(snapshot);
  student_free(saved);
  g_unlink(path);
  g_rmdir(dir);
  scene_stream_clear(&s);
  distill_engine_free(engine);
  student_free(initial);
  scene_rounds_clear(&r);
}

static void test_sync(void) { run(TRUE); }
static void test_async(void) { run(FALSE); }

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/distill/reparam/sync", test_sync);
  g_test_add_func("/distill/reparam/async", test_async);
  return g_test_run();
}
