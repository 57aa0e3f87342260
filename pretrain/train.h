/* train.h: offline training of the student on a Dataset (distill-train's loop), and its held-out
 * evaluation. */
#pragma once

#include "dataset.h"
#include "student.h"

typedef struct {
  int crop_width, crop_height;  /* training input size */
  int batch;                    /* frames per optimiser step (gradients averaged) */
  int steps;                    /* last step (exclusive) */
  int start_step;               /* first step: resuming keeps the learning-rate schedule */
  double learning_rate;         /* Adam's, cosine-decayed to final_fraction of it */
  double final_fraction;
  double weight_decay;
  double foreground_weight;     /* pixel weight of class 1 in the loss */
  int log_every;                /* steps between loss lines; 0 = none */
  int eval_every;               /* steps between held-out evaluations; 0 = at the end only */
  int save_every;               /* steps between checkpoints; 0 = at the end only */
  const char *checkpoint_out;   /* NULL = never saved */
  guint64 seed;
  AugmentConfig augment;
} TrainConfig;

void train_config_default(TrainConfig *cfg);

typedef struct {
  int steps_done;
  double first_loss, last_loss;  /* mean training loss over the first and last log_every steps */
  double held_out_miou;          /* -1 when nothing is held out */
  double seconds;
} TrainResult;

/* Set by a signal handler to stop after the current step (the checkpoint is then saved). */
extern volatile int train_stop_requested;

/* Trains student in place; prints progress lines on stdout. Fails on an unreadable frame or a
 * checkpoint that cannot be written. */
gboolean train_run(Student *student, const Dataset *set, const TrainConfig *cfg,
                   ThreadPool *pool, TrainResult *result, GError **error);

/* Mean over held-out frames of the frame's mIoU against the teacher (kernels/miou.h: classes
 * present in label or prediction, ignored pixels left out, 1 for a frame with nothing labelled),
 * each frame at its own size. -1 when none is held out. */
gboolean train_evaluate(Student *student, const Dataset *set, double confidence,
                        ThreadPool *pool, double *miou, GError **error);
