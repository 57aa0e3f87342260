/* distill_config.c: the engine's defaults and the checks a configuration must pass (distill.h). */
#include <unistd.h>

#include "distill.h"

G_DEFINE_QUARK(distill-error-quark, distill_error)

void distill_config_default(DistillConfig *cfg)
{
  *cfg = (DistillConfig){
    .min_stride = DISTILL_DEFAULT_MIN_STRIDE,
    .max_stride = DISTILL_DEFAULT_MAX_STRIDE,
    .accuracy_threshold = DISTILL_DEFAULT_ACCURACY_THRESHOLD,
    .max_updates = DISTILL_DEFAULT_MAX_UPDATES,
    .train = TRUE,
    .train_bf16 = TRUE,
    .forward_bf16 = TRUE,
    .sync = FALSE,
    .threads = 0,
    .train_threads = 0,
    .train_nice = DISTILL_DEFAULT_TRAIN_NICE,
    .teacher_inflight = 1,
    .teacher_timeout_ms = 0,
    .scene_change_threshold = 0.03,
    .replay_frames = 4,
    .foreground_weight = 1.0,
    .fuse_teacher = TRUE,
    .follow_motion = TRUE,
    .rollback_rounds = 6,
    .rollback_drop = 0.25,
    .inference_budget = DISTILL_DEFAULT_INFERENCE_BUDGET,
    .hibernate_budget = 0.9,
  };
  optimizer_config_default(&cfg->optimizer, DISTILL_DEFAULT_OPTIMIZER);
  cfg->optimizer.learning_rate = (float)DISTILL_DEFAULT_LEARNING_RATE;
}

static gboolean invalid(GError **error, const char *what)
{
  g_set_error(error, DISTILL_ERROR, DISTILL_ERROR_CONFIG, "distill: %s", what);
  return FALSE;
}

gboolean distill_config_check(const DistillConfig *c, int num_classes, GError **error)
{
  if (c->min_stride < 1 || c->max_stride < c->min_stride || c->max_stride > (1u << 20))
    return invalid(error, "strides must satisfy 1 <= min_stride <= max_stride <= 1048576");
  if (!(c->accuracy_threshold >= 0.0 && c->accuracy_threshold <= 1.0))
    return invalid(error, "accuracy_threshold is an mIoU: give a value in [0, 1]");
  if (c->teacher_inflight < 1 || c->teacher_inflight > 62)
    return invalid(error, "teacher_inflight must be in [1, 62]");
  if (!(c->optimizer.learning_rate > 0.0f))
    return invalid(error, "the learning rate must be positive");
  if (!(c->rollback_drop > 0.0 && c->rollback_drop <= 1.0))
    return invalid(error, "rollback_drop is an mIoU difference: give a value in (0, 1]");
  if (!(c->foreground_weight > 0.0))
    return invalid(error, "foreground_weight must be positive (1 = plain loss)");
  if (!(c->scene_change_threshold >= 0.0))
    return invalid(error, "scene_change_threshold must be >= 0 (0 = off)");
  if (c->replay_frames > 64)
    return invalid(error, "replay_frames must be at most 64");
  if (c->train_nice < 0 || c->train_nice > 19)
    return invalid(error, "train_nice is a nice value in [0, 19]");
  if (!(c->inference_budget >= 0.0 && c->inference_budget <= 1.0) ||
      !(c->hibernate_budget >= 0.0 && c->hibernate_budget <= 1.0))
    return invalid(error, "inference_budget and hibernate_budget are shares of the frame "
                          "interval: give values in [0, 1] (0 = the governor is off)");
  if (num_classes < 2 || num_classes > 254)
    return invalid(error, "the student must have 2 to 254 classes");
  return TRUE;
}

/* Two threads even on 2 cores: at nice 10 the second takes what inference leaves idle without
 * slowing the stream, and real time is short of training compute (docs/experiments.md, "The
 * trainer's priority and the stream's latency"). */
int distill_config_train_threads(const DistillConfig *cfg)
{
  if (cfg->train_threads > 0)
    return cfg->train_threads;
  int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
  return cores <= 1 ? 1 : MAX(2, cores / 2);
}
