/* distill.h: the online-distillation engine (student/README.md, "Online distillation").
 *
 * The engine runs the student on every frame and keeps it specialised to the stream with the
 * policy of Mullapudi et al. (ICCV 2019, JITNet): every `stride` frames one frame goes to a
 * teacher; on its labels the student takes SGD steps while its mIoU against the teacher is below
 * `accuracy_threshold` (at most `max_updates`), then the stride doubles when the threshold is met
 * and halves otherwise, within [min_stride, max_stride].
 *
 * The engine does not talk to the teacher: the caller (the element `distillseg`) asks it, once
 * per frame, whether this frame should go to the teacher, sends it, and hands the labels (or the
 * failure) back with the ticket it was given. Per frame, on the streaming thread:
 *
 *     convert the frame:   distill_input_from_rgb (frame, &input)
 *     ticket = distill_engine_wants_teacher (engine, &input);
 *     if (ticket) send the frame to the teacher; later, on any thread:
 *                  distill_engine_teacher_result (engine, ticket, labels, …)
 *               or distill_engine_teacher_failed (engine, ticket)
 *     distill_engine_process (engine, &input, classes);
 *
 * Asynchronous mode (sync = FALSE, the default): the frame's input is copied into one of a few
 * preallocated slots; when its labels arrive, a trainer thread trains its own copy of the weights
 * on that frame and publishes them after every step. distill_engine_process only runs
 * inference, with the newest published weights, picked up at the start of a frame without
 * waiting: the stream never waits for the teacher or for training.
 *
 * Synchronous mode (sync = TRUE, the paper's protocol, for evaluation; bit-identical runs with
 * threads = 1): the caller delivers the result (or the failure) of a teacher frame before calling
 * distill_engine_process for it, which then trains on it inline, on the caller's thread, before
 * producing its output.
 *
 * Steady-state frames allocate nothing: every buffer is planned for the input size given at
 * creation. Another input size needs another engine (distill_engine_snapshot keeps the weights).
 */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "optimizer.h"
#include "student.h"

/* What a training round found about the weights it started from (see "Rollback" below). */
typedef enum {
  DISTILL_ROUND_GOOD,        /* they agreed with the teacher at the usual level: kept as the
                              * last good weights */
  DISTILL_ROUND_BELOW,       /* below the usual level, the round trained as usual */
  DISTILL_ROUND_ROLLED_BACK, /* training collapsed: the weights went back to the last good ones */
  DISTILL_ROUND_UNCHECKED,   /* train = FALSE: nothing is judged */
} DistillVerdict;

/* Why training was judged to have collapsed. */
typedef enum {
  DISTILL_COLLAPSE_NONE,
  DISTILL_COLLAPSE_NON_FINITE,     /* a loss or a weight became NaN or infinite */
  DISTILL_COLLAPSE_EXPLODING_LOSS, /* a step's loss grew far above the round's first */
  DISTILL_COLLAPSE_AGREEMENT,      /* mIoU against the teacher stayed well below its usual level
                                    * for rollback_rounds teacher frames in a row */
} DistillCollapse;

typedef struct {
  guint64 ticket;       /* as returned by distill_engine_wants_teacher */
  const FeatureMap *input;  /* the frame's input (the slot's copy) */
  const uint8_t *labels;    /* the teacher's labels, at logits size */
  double miou_before;   /* student vs teacher before the round's first step */
  double miou_after;    /* after its last step (= miou_before when no step was taken) */
  guint updates;        /* SGD steps taken */
  guint stride;         /* the teacher stride decided by this round */
  DistillVerdict verdict;
  DistillCollapse collapse; /* with DISTILL_ROUND_ROLLED_BACK */
} DistillRound;

/* Called on the thread that trains (the trainer thread, or the caller's in sync mode), at the
 * start (miou_*, updates and stride not yet known) and at the end of each training round.
 * For observation (logs, tests); the engine waits for it to return. */
typedef void (*DistillRoundFunc)(const DistillRound *round, gpointer user_data);

typedef struct {
  /* Input size of the student (the element's inference-width/-height). */
  int input_width, input_height;

  /* The paper's policy (element properties of the same names). */
  guint min_stride, max_stride; /* 8, 64 */
  double accuracy_threshold;    /* 0.9 */
  guint max_updates;            /* 16 */

  gboolean train;               /* TRUE; FALSE = measure and adapt the stride, never update */
  OptimizerConfig optimizer;    /* Adam, lr 5e-4 (measured in student/README.md) */
  gboolean train_bf16;          /* TRUE: backward products in bfloat16 where the CPU has them
                                 * (student_set_bf16) */
  gboolean forward_bf16;        /* TRUE: the forward passes' too, the stream's and the trainer's,
                                 * in the wide layers (student_set_bf16_forward): inference
                                 * 1.2-1.4x faster at 640x480, the same accuracy on vtest */
  gboolean sync;                /* FALSE */

  /* Compute threads of inference (0 = the process's shared pool of one per online core, which
   * the engines of several cameras take in turns: kernels/threadpool.h). The trainer has its own
   * pool of train_threads (0 = 2, or half the cores above 4; 1 on a single core) running at
   * nice value train_nice (0..19), so that on a small box training mostly takes the cores
   * inference leaves idle (at nice 10 it gets about a tenth of a contended core: it slows
   * inference little and is not starved; student/README.md). In sync mode training uses the
   * inference pool. */
  int threads;
  int train_threads;
  int train_nice;               /* 10 */

  /* Frames sent to the teacher and not yet trained on, at most (the element: teacher-inflight
   * + 2: one in training, one answered, the rest asked). A frame due for the teacher while all
   * are in use waits for the next frame. Asynchronous mode trains the newest answered frame
   * next; the older ones join the replay frames. */
  guint max_pending;            /* 3 */
  /* A request older than this (ms) without a result or failure is given up and counted as a
   * teacher error, so a lost callback cannot leak a slot; 0 = never. */
  guint teacher_timeout_ms;     /* 10000 */

  /* Beyond the paper (measured in student/README.md; 0, 0 and 1 turn them off): */
  /* Query the teacher early (but not within min_stride frames of the last query) when the frame
   * departs from the last teacher frame by more than this: the median, over the cells of a 16x12
   * thumbnail (block means), of the absolute difference averaged over R, G, B, in input units
   * (RGB/255 - 0.5; 0.03 is about 8 grey levels). */
  double scene_change_threshold; /* 0.03 */
  /* Keep this many recent teacher frames and add the gradient of one of them (in turn) to each
   * update, against forgetting. Doubles the cost of an update. */
  guint replay_frames;          /* 4 */
  /* Loss weight of pixels of classes other than 0 (background weighs 1); 1 = plain loss. */
  double foreground_weight;     /* 1: weights above 1 did not help on the synthetic scene */

  /* Rollback (a bad teacher must not ruin the student). The trainer keeps the last good weights:
   * those that, entering a round, agreed with the teacher's fresh frame (mIoU before training)
   * at no less than the usual level - rollback_drop, the usual level being a moving average of
   * such rounds. It goes back to them, with a fresh optimiser and no replay frames, when a loss
   * or a weight is not finite, when a step's loss exceeds 10 times the round's first (or 10
   * times ln(classes), the loss of knowing nothing, if that is more), or when rollback_rounds
   * teacher frames in a row score below the usual level - rollback_drop. Each such rollback
   * lowers the usual level by rollback_drop / 2, so that a teacher that stays at a new, lower
   * agreement for good (a harder scene) is followed after a few rollbacks. */
  guint rollback_rounds;        /* 6; 0 = no rollback on agreement (collapses still roll back) */
  double rollback_drop;         /* 0.25 */

  DistillRoundFunc round_started, round_finished;  /* NULL = none */
  gpointer round_user_data;
} DistillConfig;

/* Defaults above, for an input of width x height. */
void distill_config_default(DistillConfig *cfg, int width, int height);

/* ---- policy (pure functions; the engine applies them) ----------------------------------- */

/* mIoU of predicted against reference class maps of n pixels: the mean, over the classes present
 * in either (pixels labelled LABEL_IGNORE or >= num_classes in reference left out), of
 * |pred ∩ ref| / |pred ∪ ref|; 1 when no pixel counts. */
double distill_miou(const uint8_t *pred, const uint8_t *reference, size_t n, int num_classes);
/* Whether to take another SGD step after `updates` steps, the student now at `miou`. */
gboolean distill_policy_keep_training(const DistillConfig *cfg, guint updates, double miou);
/* The stride after a teacher frame whose round ended at `miou`. */
guint distill_policy_next_stride(const DistillConfig *cfg, guint stride, double miou);

/* ---- input conversion ------------------------------------------------------------------- */

/* Writes input (input->h x input->w x 3, ld 3) from a packed 8-bit frame of width x height:
 * bilinear resize (half-pixel centres, as student/README.md's `up`), RGB/255 - 0.5. Pixel
 * (x, y) starts at pixels + y * row_stride + x * pixel_stride; rgb_offset gives the byte offsets
 * of R, G and B in a pixel (NULL = {0, 1, 2}; BGRx is {2, 1, 0}, xRGB {1, 2, 3}). */
void distill_input_from_rgb(const uint8_t *pixels, int width, int height, int row_stride,
                            int pixel_stride, const int rgb_offset[3], FeatureMap *input);

/* ---- the engine ------------------------------------------------------------------------- */

typedef struct DistillEngine DistillEngine;

#define DISTILL_ERROR (distill_error_quark())
GQuark distill_error_quark(void);
typedef enum {
  DISTILL_ERROR_CONFIG,  /* a configuration field out of range */
  DISTILL_ERROR_TICKET,  /* a teacher result for a ticket not (or no longer) outstanding */
  DISTILL_ERROR_LABELS,  /* teacher labels of the wrong size */
} DistillError;

/* A new engine starting from initial's weights (copied; initial stays the caller's). Fails with
 * DISTILL_ERROR_CONFIG on a bad configuration, saying which field and why. */
DistillEngine *distill_engine_new(const Student *initial, const DistillConfig *cfg,
                                  GError **error);
/* Stops the trainer (an ongoing round ends first); outstanding tickets become invalid. No
 * distill_engine_teacher_result or _teacher_failed may run during or after it: stop (cancel) the
 * teacher requests first. */
void distill_engine_free(DistillEngine *engine);
const DistillConfig *distill_engine_get_config(const DistillEngine *engine);
/* Logits size (= size of the class maps and of the teacher labels): half the input, rounded up. */
void distill_engine_label_size(const DistillEngine *engine, int *height, int *width);

/* Streaming thread, once per frame, before distill_engine_process: 0 when the frame need not go
 * to the teacher, otherwise a ticket for its result (the input is copied). */
guint64 distill_engine_wants_teacher(DistillEngine *engine, const FeatureMap *input);
/* Any thread: the teacher's labels for a ticket, height x width (= distill_engine_label_size),
 * row-major class indices, LABEL_IGNORE = no label. FALSE (and an error) for a ticket given up,
 * already answered or unknown, or labels of the wrong size; the labels are dropped then. */
gboolean distill_engine_teacher_result(DistillEngine *engine, guint64 ticket,
                                       const uint8_t *labels, int height, int width,
                                       GError **error);
/* Any thread: no labels will come for this ticket (error, timeout, cancellation). Frees its slot
 * and counts a teacher error; nothing for a ticket no longer outstanding. */
void distill_engine_teacher_failed(DistillEngine *engine, guint64 ticket);

/* Streaming thread, once per frame: the student's class map of input (height x width of
 * distill_engine_label_size) into classes. Sync mode: first trains on this frame if its
 * teacher labels were delivered (a ticket of this frame still outstanding counts as failed). */
void distill_engine_process(DistillEngine *engine, const FeatureMap *input, uint8_t *classes);

/* Streaming thread: the logits of the last distill_engine_process (logits size, one channel per
 * class), valid until the next call, e.g. for a class map at a higher resolution. */
const FeatureMap *distill_engine_logits(DistillEngine *engine);

typedef struct {
  guint64 frames;            /* processed */
  guint64 teacher_queries;   /* tickets given */
  guint64 teacher_errors;    /* failures, given-up requests, results refused */
  guint64 updates;           /* SGD steps */
  guint64 rounds;            /* teacher frames trained on (rounds finished) */
  guint64 weights_version;   /* weights published so far (the inference side's: in use) */
  guint stride;              /* current teacher stride */
  double last_miou;          /* student vs teacher at the start of the last round; -1 = none */
  double train_ms;           /* mean duration of a training round */
  double student_ms;         /* mean duration of distill_engine_process's inference */
  guint64 rollbacks;         /* times training went back to the last good weights */
  DistillCollapse last_collapse; /* why it did, the last time */
  /* (means since the engine was made) */
} DistillStats;

/* Any thread. */
void distill_engine_get_stats(DistillEngine *engine, DistillStats *stats);
/* Streaming thread: TRUE once after each run of rollbacks not yet reported this way, with the
 * statistics at that moment (stats->rollbacks, stats->last_collapse), so that the caller can say
 * so once. */
gboolean distill_engine_rollback_news(DistillEngine *engine, DistillStats *stats);
/* A short English phrase for a collapse, for messages ("the training loss became NaN or
 * infinite"). */
const char *distill_collapse_describe(DistillCollapse collapse);

/* Any thread, while training runs: saves the newest published weights (student_save's atomic
 * write). */
gboolean distill_engine_save(DistillEngine *engine, const char *path, GError **error);
/* Any thread: a new Student holding the newest published weights (student_free() it). */
Student *distill_engine_snapshot(DistillEngine *engine);
