/* test_pretrain.c: distill-train's loop on a few tiny synthetic frames written as pretrain/label
 * writes them (PPM frames, PGM probabilities, a manifest) lowers the loss, beats the untrained
 * network on held-out frames and writes a checkpoint student_load accepts; bad manifests and
 * files are refused with a message; the shipped weights load with the expected architecture. */
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "dataset.h"
#include "synthetic_scene.h"
#include "train.h"

#define FRAME_W 96
#define FRAME_H 64
#define FRAMES 12

/* Frames of the synthetic scene with their true labels as certain probabilities (0 or 255),
 * every other frame of two sources; returns the manifest's path. */
static char *write_synthetic_set(const char *dir)
{
  GString *manifest = g_string_new("# source frame label\n");
  for (int s = 0; s < 2; s++) {
    SyntheticSceneConfig cfg;
    synthetic_scene_config_default(&cfg, FRAME_W, FRAME_H, 11 + s);
    cfg.num_classes = 2;
    SyntheticScene *scene = synthetic_scene_new(&cfg);
    PnmImage frame = { FRAME_W, FRAME_H, 3, g_malloc(FRAME_W * FRAME_H * 3) };
    PnmImage prob = { FRAME_W, FRAME_H, 1, g_malloc(FRAME_W * FRAME_H) };
    for (int i = 0; i < FRAMES / 2; i++) {
      synthetic_scene_render(scene, i * 7, frame.data);
      synthetic_scene_labels(scene, i * 7, FRAME_W, FRAME_H, prob.data);
      for (int p = 0; p < FRAME_W * FRAME_H; p++)
        prob.data[p] = prob.data[p] ? 255 : 0;
      char *fname = g_strdup_printf("s%d-%02d.ppm", s, i), *lname = g_strdup_printf("s%d-%02d.pgm", s, i);
      char *fpath = g_build_filename(dir, fname, NULL), *lpath = g_build_filename(dir, lname, NULL);
      g_assert_true(pnm_write(fpath, &frame, NULL));
      g_assert_true(pnm_write(lpath, &prob, NULL));
      g_string_append_printf(manifest, "scene%d %s %s\n", s, fname, lname);
      g_free(fname);
      g_free(lname);
      g_free(fpath);
      g_free(lpath);
    }
    pnm_clear(&frame);
    pnm_clear(&prob);
    synthetic_scene_free(scene);
  }
  char *path = g_build_filename(dir, "manifest.txt", NULL);
  g_assert_true(g_file_set_contents(path, manifest->str, -1, NULL));
  g_string_free(manifest, TRUE);
  return path;
}

static void remove_tree(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    char *path = g_build_filename(dir, name, NULL);
    g_remove(path);
    g_free(path);
  }
  if (d)
    g_dir_close(d);
  g_rmdir(dir);
}

static void test_training_lowers_loss(void)
{
  char *dir = g_dir_make_tmp("pretrain-XXXXXX", NULL);
  char *manifest = write_synthetic_set(dir);
  GError *error = NULL;
  Dataset *set = dataset_load(manifest, 3, NULL, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(set->n_train, ==, 8);
  g_assert_cmpuint(set->n_held_out, ==, 4);

  StudentConfig scfg;
  student_config_default(&scfg, 2);
  Student *student = student_new(&scfg, 5);
  ThreadPool *pool = thread_pool_new(2);
  double untrained;
  g_assert_true(train_evaluate(student, set, 0.6, pool, &untrained, &error));

  TrainConfig cfg;
  train_config_default(&cfg);
  cfg.crop_width = 64;
  cfg.crop_height = 48;
  cfg.batch = 2;
  cfg.steps = 150;
  cfg.learning_rate = 3e-3;
  cfg.log_every = 25;
  cfg.eval_every = 0;
  cfg.save_every = 100;
  cfg.augment.min_zoom = 0.8;
  cfg.augment.max_zoom = 1.4;
  char *out = g_build_filename(dir, "student.safetensors", NULL);
  cfg.checkpoint_out = out;
  TrainResult result;
  g_assert_true(train_run(student, set, &cfg, pool, &result, &error));
  g_assert_no_error(error);
  g_test_message("loss %.4f -> %.4f in %d steps (%.1f s); held-out miou %.4f (untrained %.4f)",
                 result.first_loss, result.last_loss, result.steps_done, result.seconds,
                 result.held_out_miou, untrained);
  g_assert_cmpint(result.steps_done, ==, 150);
  g_assert_cmpfloat(result.last_loss, <, 0.6 * result.first_loss);
  g_assert_cmpfloat(result.held_out_miou, >, untrained + 0.1);
  g_assert_cmpfloat(result.held_out_miou, >, 0.6);

  /* The checkpoint is the trained network. */
  Student *loaded = student_load(out, &error);
  g_assert_no_error(error);
  g_assert_true(student_config_equal(student_get_config(loaded), &scfg));
  g_assert_cmpmem(student_params(loaded), student_param_count(loaded) * sizeof(float),
                  student_params(student), student_param_count(student) * sizeof(float));

  /* Resuming it keeps the schedule: only the remaining steps run. */
  cfg.start_step = 140;
  g_assert_true(train_run(loaded, set, &cfg, pool, &result, &error));
  g_assert_cmpint(result.steps_done, ==, 10);

  student_free(loaded);
  student_free(student);
  thread_pool_free(pool);
  dataset_free(set);
  remove_tree(dir);
  g_free(out);
  g_free(manifest);
  g_free(dir);
}

static void test_bad_input_is_refused(void)
{
  char *dir = g_dir_make_tmp("pretrain-XXXXXX", NULL);
  char *manifest = g_build_filename(dir, "manifest.txt", NULL);
  GError *error = NULL;

  g_assert_true(g_file_set_contents(manifest, "src only-two-fields.ppm\n", -1, NULL));
  g_assert_null(dataset_load(manifest, 0, NULL, &error));
  g_assert_nonnull(strstr(error->message, "expected \"SOURCE FRAME.ppm LABEL.pgm\""));
  g_clear_error(&error);

  g_assert_true(g_file_set_contents(manifest, "\n# nothing\n", -1, NULL));
  g_assert_null(dataset_load(manifest, 0, NULL, &error));
  g_assert_nonnull(strstr(error->message, "no training frame"));
  g_clear_error(&error);

  /* Everything held out leaves nothing to train on. */
  g_assert_true(g_file_set_contents(manifest, "a f.ppm l.pgm\n", -1, NULL));
  const char *held[] = { "a", NULL };
  g_assert_null(dataset_load(manifest, 0, held, &error));
  g_clear_error(&error);

  char *bad = g_build_filename(dir, "f.ppm", NULL);
  g_assert_true(g_file_set_contents(bad, "P6\n4 4\n255\nshort", -1, NULL));
  PnmImage image;
  g_assert_false(pnm_read(bad, &image, &error));
  g_assert_nonnull(strstr(error->message, "not a complete 8-bit binary PNM"));
  g_clear_error(&error);
  g_assert_true(g_file_set_contents(bad, "P3\n1 1\n255\n0 0 0\n", -1, NULL));
  g_assert_false(pnm_read(bad, &image, &error));
  g_clear_error(&error);

  g_remove(bad);
  g_remove(manifest);
  g_rmdir(dir);
  g_free(bad);
  g_free(manifest);
  g_free(dir);
}

static void test_labels_from_probability(void)
{
  uint8_t data[4] = { 0, 110, 160, 255 };  /* 0, 0.43, 0.63, 1 */
  PnmImage prob = { 4, 1, 1, data };
  uint8_t labels[4];
  labels_from_probability(&prob, 0.6, 4, 1, labels);
  g_assert_cmpuint(labels[0], ==, 0);
  g_assert_cmpuint(labels[1], ==, 255);
  g_assert_cmpuint(labels[2], ==, 1);
  g_assert_cmpuint(labels[3], ==, 1);
}

static void test_shipped_weights(void)
{
  StudentConfig expected;
  student_config_default(&expected, 2);
  g_autofree char *path = g_strdup_printf(SOURCE_WEIGHTS_DIR "/%s-2class.safetensors",
                                          student_arch_name(expected.arch));
  GError *error = NULL;
  Student *student = student_load(path, &error);
  g_assert_no_error(error);
  g_assert_true(student_config_equal(student_get_config(student), &expected));
  const float *params = student_params(student);
  double norm = 0;
  for (size_t i = 0; i < student_param_count(student); i++) {
    g_assert_true(isfinite(params[i]));
    norm += (double)params[i] * params[i];
  }
  g_assert_cmpfloat(norm, >, 0);
  student_free(student);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/pretrain/training-lowers-loss", test_training_lowers_loss);
  g_test_add_func("/pretrain/bad-input-is-refused", test_bad_input_is_refused);
  g_test_add_func("/pretrain/labels-from-probability", test_labels_from_probability);
  g_test_add_func("/pretrain/shipped-weights", test_shipped_weights);
  return g_test_run();
}
