/* test_training.c: a few dozen Adam steps on one small synthetic image with a simple label
 * pattern (a bright disc on a dark, noisy background) drive the loss down a lot. */
#include "optimizer.h"
#include "student.h"

static void test_adam_fits_one_image(void)
{
  const int h = 48, w = 64, steps = 40;
  StudentConfig cfg;
  student_config_default(&cfg, 2);
  Student *s = student_new(&cfg, 7);
  int lh, lw;
  student_logits_size(s, h, w, &lh, &lw);

  GRand *rng = g_rand_new_with_seed(3);
  float *image = g_new(float, h * w * 3);
  uint8_t *labels = g_new(uint8_t, lh * lw);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      gboolean disc = (x - 40) * (x - 40) + (y - 20) * (y - 20) < 12 * 12;
      for (int c = 0; c < 3; c++)
        image[(y * w + x) * 3 + c] =
          (disc ? 0.3f : -0.3f) + (float)g_rand_double_range(rng, -0.1, 0.1);
    }
  for (int y = 0; y < lh; y++)
    for (int x = 0; x < lw; x++) {
      /* Logit pixel (x, y) covers input pixels around (2x + 0.5, 2y + 0.5). */
      float dx = 2 * x + 0.5f - 40, dy = 2 * y + 0.5f - 20;
      labels[y * lw + x] = dx * dx + dy * dy < 12 * 12;
    }

  OptimizerConfig ocfg;
  optimizer_config_default(&ocfg, OPTIMIZER_ADAM);
  ocfg.learning_rate = 3e-3f;
  Optimizer *opt = optimizer_new(&ocfg, student_param_count(s));
  FeatureMap input = feature_map(image, h, w, 3);
  double first = 0.0, last = 0.0;
  for (int i = 0; i < steps; i++) {
    student_zero_grads(s);
    student_forward(s, &input, NULL);
    last = student_backward(s, labels, NULL, NULL);
    if (i == 0)
      first = last;
    optimizer_step(opt, student_params(s), student_grads(s));
  }
  g_test_message("loss %.4f -> %.4f after %d Adam steps", first, last, steps);
  g_assert_cmpfloat(first, >, 0.3);
  g_assert_cmpfloat(last, <, 0.1 * first);

  optimizer_free(opt);
  g_rand_free(rng);
  g_free(image);
  g_free(labels);
  student_free(s);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/student/training/adam-fits-one-image", test_adam_fits_one_image);
  return g_test_run();
}
