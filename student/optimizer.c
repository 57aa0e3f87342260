/* optimizer.c: SGD with momentum and Adam, PyTorch's semantics (torch.optim.SGD with momentum
 * and weight_decay, dampening 0, not Nesterov; torch.optim.Adam with weight_decay, not AMSGrad),
 * one plain loop each over the flat buffers. */
#include "optimizer.h"

#include <glib.h>
#include <math.h>
#include <string.h>

struct Optimizer {
  OptimizerConfig cfg;
  size_t n_params;
  float *momentum; /* SGD's velocity, Adam's first moment */
  float *second;   /* Adam's second moment */
  long steps;
};

void optimizer_config_default(OptimizerConfig *cfg, OptimizerKind kind)
{
  *cfg = (OptimizerConfig){
    .kind = kind,
    .learning_rate = kind == OPTIMIZER_SGD ? 0.01f : 1e-3f,
    .momentum = 0.9f,
    .beta1 = 0.9f,
    .beta2 = 0.999f,
    .epsilon = 1e-8f,
    .weight_decay = 0.0f,
  };
}

Optimizer *optimizer_new(const OptimizerConfig *cfg, size_t n_params)
{
  Optimizer *opt = g_new0(Optimizer, 1);
  opt->cfg = *cfg;
  opt->n_params = n_params;
  opt->momentum = g_new0(float, n_params);
  if (cfg->kind == OPTIMIZER_ADAM)
    opt->second = g_new0(float, n_params);
  return opt;
}

void optimizer_free(Optimizer *opt)
{
  if (!opt)
    return;
  g_free(opt->momentum);
  g_free(opt->second);
  g_free(opt);
}

void optimizer_reset(Optimizer *opt)
{
  memset(opt->momentum, 0, sizeof(float) * opt->n_params);
  if (opt->second)
    memset(opt->second, 0, sizeof(float) * opt->n_params);
  opt->steps = 0;
}

/* With v starting at 0, the first step gives v = g, as PyTorch's buffer initialised to g. */
static void sgd_step(Optimizer *opt, float *params, const float *grads)
{
  const float lr = opt->cfg.learning_rate, mu = opt->cfg.momentum, wd = opt->cfg.weight_decay;
  float *v = opt->momentum;
  for (size_t i = 0; i < opt->n_params; i++) {
    float g = grads[i] + wd * params[i];
    v[i] = mu * v[i] + g;
    params[i] -= lr * v[i];
  }
}

/* As PyTorch: p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
static void adam_step(Optimizer *opt, float *params, const float *grads)
{
  const float b1 = opt->cfg.beta1, b2 = opt->cfg.beta2, eps = opt->cfg.epsilon;
  const float wd = opt->cfg.weight_decay;
  opt->steps++;
  const float step_size = (float)(opt->cfg.learning_rate / (1.0 - pow(b1, opt->steps)));
  const float sqrt_correction2 = (float)sqrt(1.0 - pow(b2, opt->steps));
  float *m = opt->momentum, *v = opt->second;
  for (size_t i = 0; i < opt->n_params; i++) {
    float g = grads[i] + wd * params[i];
    m[i] = b1 * m[i] + (1.0f - b1) * g;
    v[i] = b2 * v[i] + (1.0f - b2) * g * g;
    params[i] -= step_size * m[i] / (sqrtf(v[i]) / sqrt_correction2 + eps);
  }
}

void optimizer_step(Optimizer *opt, float *params, const float *grads)
{
  if (opt->cfg.kind == OPTIMIZER_SGD)
    sgd_step(opt, params, grads);
  else
    adam_step(opt, params, grads);
}
