/* optimizer.h: SGD with momentum and Adam over a flat parameter buffer, with weight decay. */
#pragma once

#include <stddef.h>

typedef enum {
  OPTIMIZER_SGD,  /* heavy-ball momentum: v = momentum * v + g; p -= lr * v */
  OPTIMIZER_ADAM, /* Kingma & Ba, with bias correction */
} OptimizerKind;

typedef struct {
  OptimizerKind kind;
  float learning_rate;
  float momentum;     /* SGD */
  float beta1, beta2; /* Adam */
  float epsilon;      /* Adam */
  float weight_decay; /* L2: g += weight_decay * p, before the update (PyTorch's semantics) */
} OptimizerConfig;

typedef struct Optimizer Optimizer;

/* Defaults: SGD lr 0.01 momentum 0.9; Adam lr 1e-3 betas 0.9/0.999 epsilon 1e-8; no decay. */
void optimizer_config_default(OptimizerConfig *cfg, OptimizerKind kind);
Optimizer *optimizer_new(const OptimizerConfig *cfg, size_t n_params);
void optimizer_free(Optimizer *opt);
/* One update of params (n_params floats) from grads. */
void optimizer_step(Optimizer *opt, float *params, const float *grads);
/* Forgets momentum / moments (e.g. after weights were rolled back). */
void optimizer_reset(Optimizer *opt);
