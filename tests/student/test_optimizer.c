/* test_optimizer.c: SGD with momentum and Adam, with weight decay, against steps worked out by
 * hand from PyTorch's update rules. */
#include <math.h>

#include "optimizer.h"
#include "student.h"

/* Two parameters, p = (1, -2), the same gradient g = (0.5, 0.25) at every step. */
static const float grad[2] = { 0.5f, 0.25f };

static void test_sgd_momentum(void)
{
  OptimizerConfig cfg;
  optimizer_config_default(&cfg, OPTIMIZER_SGD);
  cfg.learning_rate = 0.1f;
  cfg.momentum = 0.9f;
  cfg.weight_decay = 0.01f;
  Optimizer *opt = optimizer_new(&cfg, 2);
  float p[2] = { 1.0f, -2.0f };

  /* Step 1: g' = g + 0.01 p = (0.51, 0.23); v = g' ; p -= 0.1 v -> (0.949, -2.023). */
  optimizer_step(opt, p, grad);
  g_assert_cmpfloat_with_epsilon(p[0], 0.949f, 1e-6f);
  g_assert_cmpfloat_with_epsilon(p[1], -2.023f, 1e-6f);
  /* Step 2: g' = (0.5 + 0.00949, 0.25 - 0.02023) = (0.50949, 0.22977);
   * v = 0.9 (0.51, 0.23) + g' = (0.96849, 0.43677); p -= 0.1 v -> (0.852151, -2.066677). */
  optimizer_step(opt, p, grad);
  g_assert_cmpfloat_with_epsilon(p[0], 0.852151f, 1e-6f);
  g_assert_cmpfloat_with_epsilon(p[1], -2.066677f, 1e-6f);

  /* After a reset the first step is plain again: v = g'. */
  optimizer_reset(opt);
  float q[2] = { 1.0f, -2.0f };
  optimizer_step(opt, q, grad);
  g_assert_cmpfloat_with_epsilon(q[0], 0.949f, 1e-6f);
  optimizer_free(opt);
}

static void test_adam(void)
{
  OptimizerConfig cfg;
  optimizer_config_default(&cfg, OPTIMIZER_ADAM);
  g_assert_cmpfloat(cfg.beta1, ==, 0.9f);
  g_assert_cmpfloat(cfg.beta2, ==, 0.999f);
  cfg.learning_rate = 0.1f;
  cfg.weight_decay = 0.1f;
  Optimizer *opt = optimizer_new(&cfg, 2);
  float p[2] = { 1.0f, -2.0f };

  /* Step 1: g' = g + 0.1 p = (0.6, 0.05); m = 0.1 g', v = 0.001 g'^2; the bias corrections
   * give m^ = g', sqrt(v^) = |g'|, so p -= 0.1 g' / (|g'| + 1e-8) -> (0.9, -2.1). */
  optimizer_step(opt, p, grad);
  g_assert_cmpfloat_with_epsilon(p[0], 0.9f, 1e-6f);
  g_assert_cmpfloat_with_epsilon(p[1], -2.1f, 1e-6f);

  /* Step 2, worked in double: g' = (0.59, 0.04);
   * m = 0.9 (0.06, 0.005) + 0.1 g' = (0.113, 0.0085);
   * v = 0.999 (0.00036, 0.0000025) + 0.001 g'^2 = (0.00070774, 0.0000040975);
   * p -= 0.1 / (1 - 0.81) m / (sqrt(v) / sqrt(1 - 0.998001) + 1e-8). */
  optimizer_step(opt, p, grad);
  double c2 = sqrt(1.0 - 0.999 * 0.999);
  double want0 = 0.9 - 0.1 / 0.19 * 0.113 / (sqrt(0.00070774) / c2 + 1e-8);
  double want1 = -2.1 - 0.1 / 0.19 * 0.0085 / (sqrt(0.0000040975) / c2 + 1e-8);
  g_assert_cmpfloat_with_epsilon(p[0], want0, 1e-5);
  g_assert_cmpfloat_with_epsilon(p[1], want1, 1e-5);
  /* The steps are about lr, as Adam's are: want = (0.800047, -2.198813). */
  g_assert_cmpfloat_with_epsilon(want0, 0.800047, 1e-6);
  g_assert_cmpfloat_with_epsilon(want1, -2.198813, 1e-6);
  optimizer_free(opt);
}

static void test_defaults(void)
{
  OptimizerConfig sgd, adam;
  optimizer_config_default(&sgd, OPTIMIZER_SGD);
  optimizer_config_default(&adam, OPTIMIZER_ADAM);
  g_assert_cmpfloat_with_epsilon(sgd.learning_rate, 0.01f, 1e-9f);
  g_assert_cmpfloat_with_epsilon(sgd.momentum, 0.9f, 1e-9f);
  g_assert_cmpfloat_with_epsilon(adam.learning_rate, 1e-3f, 1e-9f);
  g_assert_cmpfloat_with_epsilon(adam.epsilon, 1e-8f, 1e-12f);
  g_assert_cmpfloat(sgd.weight_decay, ==, 0.0f);
  g_assert_cmpfloat(adam.weight_decay, ==, 0.0f);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/student/optimizer/sgd-momentum", test_sgd_momentum);
  g_test_add_func("/student/optimizer/adam", test_adam);
  g_test_add_func("/student/optimizer/defaults", test_defaults);
  return g_test_run();
}
