/* test_architectures.c: what every architecture must do beside its gradients: its configuration
 * round-trips through JSON and checkpoints, it runs on odd input sizes to logits of the size it
 * announces, and a re-parameterised one's inference form (its fusion branches folded into the
 * depthwise weights) computes the function of its trainable form. Every architecture's shipped
 * weights load and run. */
#include <glib/gstdio.h>
#include <math.h>

#include "student.h"

static Student *random_student(const StudentConfig *cfg, guint64 seed)
{
  Student *s = student_new(cfg, seed);
  GRand *rng = g_rand_new_with_seed(seed);
  /* Every bias and scale away from its initial value, so that no term is left out unseen. */
  for (int i = 0; i < student_tensor_count(s); i++) {
    const StudentTensor *t = student_tensor(s, i);
    float *v = student_params(s) + t->offset;
    for (size_t k = 0; !t->hwio && k < t->count; k++)
      v[k] += (float)g_rand_double_range(rng, -0.3, 0.3);
  }
  g_rand_free(rng);
  return s;
}

static FeatureMap random_input(int h, int w, guint64 seed)
{
  GRand *rng = g_rand_new_with_seed(seed);
  FeatureMap m = feature_map(g_new(float, (size_t)h * w * 3), h, w, 3);
  for (size_t i = 0; i < (size_t)h * w * 3; i++)
    m.data[i] = (float)g_rand_double_range(rng, -0.5, 0.5);
  g_rand_free(rng);
  return m;
}

static void check_config_round_trip(const StudentConfig *cfg)
{
  g_autofree char *json = student_config_to_json(cfg);
  StudentConfig parsed;
  GError *error = NULL;
  g_assert_true(student_config_from_json(json, cfg->arch, &parsed, &error));
  g_assert_no_error(error);
  g_assert_true(student_config_equal(cfg, &parsed));
  StudentArch arch;
  g_assert_true(student_arch_from_name(student_arch_name(cfg->arch), &arch));
  g_assert_cmpint(arch, ==, cfg->arch);
}

static void check_checkpoint_round_trip(Student *s)
{
  g_autofree char *dir = g_dir_make_tmp("architectures-XXXXXX", NULL);
  g_autofree char *path = g_build_filename(dir, "student.safetensors", NULL);
  GError *error = NULL;
  g_assert_true(student_save(s, path, &error));
  g_assert_no_error(error);
  Student *loaded = student_load(path, &error);
  g_assert_no_error(error);
  g_assert_true(student_config_equal(student_get_config(s), student_get_config(loaded)));
  g_assert_cmpmem(student_params(s), student_param_count(s) * sizeof(float),
                  student_params(loaded), student_param_count(loaded) * sizeof(float));
  student_free(loaded);
  g_unlink(path);
  g_rmdir(dir);
}

/* Logits of the announced size, finite, on odd sizes; the operation count grows with the size. */
static void check_runs(Student *s)
{
  static const int sizes[][2] = { { 45, 37 }, { 17, 64 }, { 2, 2 } };
  for (guint i = 0; i < G_N_ELEMENTS(sizes); i++) {
    int h = sizes[i][0], w = sizes[i][1], lh, lw;
    FeatureMap input = random_input(h, w, 3 + i);
    const FeatureMap *logits = student_forward(s, &input, NULL);
    student_logits_size(s, h, w, &lh, &lw);
    g_assert_cmpint(logits->h, ==, lh);
    g_assert_cmpint(logits->w, ==, lw);
    g_assert_cmpint(logits->c, ==, student_get_config(s)->num_classes);
    for (int y = 0; y < lh; y++)
      for (int x = 0; x < lw; x++)
        for (int c = 0; c < logits->c; c++)
          g_assert_true(isfinite(feature_map_at(logits, y, x)[c]));
    g_free(input.data);
  }
  g_assert_cmpfloat(student_forward_flops(s, 480, 640), >, student_forward_flops(s, 240, 320));
}

static void test_architecture(gconstpointer data)
{
  StudentArch arch = GPOINTER_TO_INT(data);
  StudentConfig cfg;
  student_config_default_arch(&cfg, arch, 3);
  check_config_round_trip(&cfg);
  Student *s = random_student(&cfg, 17);
  check_checkpoint_round_trip(s);
  check_runs(s);
  g_test_message("%s: %zu parameters, %.3f GFLOP a 640x480 frame", student_arch_name(arch),
                 student_param_count(s), student_forward_flops(s, 480, 640) / 1e9);
  student_free(s);
}

/* The largest difference between two networks' logits on the same input, relative to their
 * largest magnitude. */
static double logits_difference(Student *a, Student *b, const FeatureMap *input)
{
  const FeatureMap *la = student_forward(a, input, NULL), *lb = student_forward(b, input, NULL);
  double diff = 0.0, size = 1e-30;
  for (int y = 0; y < la->h; y++)
    for (int x = 0; x < la->w; x++)
      for (int c = 0; c < la->c; c++) {
        double u = feature_map_at(la, y, x)[c], v = feature_map_at(lb, y, x)[c];
        diff = fmax(diff, fabs(u - v));
        size = fmax(size, fmax(fabs(u), fabs(v)));
      }
  return diff / size;
}

static void test_repghost_fused(void)
{
  StudentConfig cfg, fused_cfg;
  student_config_default_arch(&cfg, STUDENT_ARCH_REPGHOST, 2);
  student_config_inference(&cfg, &fused_cfg);
  g_assert_true(fused_cfg.repghost.fused);
  check_config_round_trip(&fused_cfg);
  Student *trained = random_student(&cfg, 5);
  Student *fused = student_fused_copy(trained);
  g_assert_true(student_config_equal(student_get_config(fused), &fused_cfg));
  /* The inference form has no fusion tensors, and every other tensor of the trainable form. */
  g_assert_null(student_find_tensor(fused, "encoder.0.ghost1.fusion"));
  g_assert_nonnull(student_find_tensor(trained, "encoder.0.ghost1.fusion"));
  g_assert_cmpint(student_tensor_count(fused), <, student_tensor_count(trained));
  for (int i = 0; i < student_tensor_count(fused); i++)
    g_assert_nonnull(student_find_tensor(trained, student_tensor(fused, i)->name));

  FeatureMap input = random_input(45, 37, 9);
  double diff = logits_difference(trained, fused, &input);
  g_test_message("repghost: fused against trainable logits, largest relative difference %.3g",
                 diff);
  g_assert_cmpfloat(diff, <, 1e-5);
  check_checkpoint_round_trip(fused);
  check_runs(fused);
  g_free(input.data);
  student_free(fused);
  student_free(trained);
}

/* The architectures without training branches run as they train. */
static void test_unfused_architectures(void)
{
  for (int arch = 0; arch < STUDENT_ARCH_COUNT; arch++) {
    StudentConfig cfg, inference;
    student_config_default_arch(&cfg, (StudentArch)arch, 2);
    student_config_inference(&cfg, &inference);
    if (arch == STUDENT_ARCH_REPGHOST)
      continue;
    g_assert_true(student_config_equal(&cfg, &inference));
    Student *s = random_student(&cfg, 3), *copy = student_fused_copy(s);
    g_assert_cmpmem(student_params(s), student_param_count(s) * sizeof(float),
                    student_params(copy), student_param_count(copy) * sizeof(float));
    student_free(copy);
    student_free(s);
  }
}

/* Every architecture ships 2-class weights, named for it. */
static void test_shipped_weights_load(gconstpointer data)
{
  StudentArch arch = (StudentArch)GPOINTER_TO_INT(data);
  g_autofree char *name = g_strdup_printf("%s-2class.safetensors", student_arch_name(arch));
  g_autofree char *path = g_build_filename(SOURCE_WEIGHTS_DIR, name, NULL);
  GError *error = NULL;
  Student *s = student_load(path, &error);
  g_assert_no_error(error);
  g_assert_cmpint(student_get_config(s)->arch, ==, arch);
  check_runs(s);
  student_free(s);
}

/* JITNet at width 0.5, the default until the thinner one measured as accurate, stays shipped. */
static void test_shipped_wide_jitnet_loads(void)
{
  GError *error = NULL;
  Student *s = student_load(SOURCE_WEIGHTS_DIR "/jitnet-wide-2class.safetensors", &error);
  g_assert_no_error(error);
  const StudentConfig *c = student_get_config(s);
  g_assert_cmpint(c->arch, ==, STUDENT_ARCH_JITNET);
  g_assert_cmpint(c->jitnet.stem[1], ==, 32);
  g_assert_cmpint(c->jitnet.encoder[2], ==, 128);
  g_assert_cmpint(c->jitnet.decoder[0], ==, 128);
  check_runs(s);
  student_free(s);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  for (int arch = 0; arch < STUDENT_ARCH_COUNT; arch++) {
    g_autofree char *name = g_strdup_printf("/student/architectures/%s",
                                            student_arch_name((StudentArch)arch));
    g_test_add_data_func(name, GINT_TO_POINTER(arch), test_architecture);
    g_autofree char *shipped = g_strdup_printf("/student/architectures/shipped-weights/%s",
                                               student_arch_name((StudentArch)arch));
    g_test_add_data_func(shipped, GINT_TO_POINTER(arch), test_shipped_weights_load);
  }
  g_test_add_func("/student/architectures/shipped-weights/jitnet-wide",
                  test_shipped_wide_jitnet_loads);
  g_test_add_func("/student/architectures/repghost-fused", test_repghost_fused);
  g_test_add_func("/student/architectures/unfused", test_unfused_architectures);
  return g_test_run();
}
