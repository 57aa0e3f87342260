/* distill.h: the online-distillation engine (distill/README.md).
 *
 * The engine runs the student on every frame and keeps it specialised to the stream with the
 * policy of Mullapudi et al. (ICCV 2019, JITNet): every `stride` frames one frame goes to a
 * teacher; on its labels the student takes SGD steps while its mIoU against the teacher is below
 * `accuracy_threshold` (at most `max_updates`), then the stride doubles when the threshold is met
 * and halves otherwise, within [min_stride, max_stride]; with the teacher's last answer fused
 * into the stream's map, the stride goes by that map as shown on the frame before its answer.
 *
 * The engine does not talk to the teacher: the caller (the element `distillseg`) asks it, once
 * per frame, whether this frame should go to the teacher, sends it, and hands the labels (or the
 * failure) back through the query it was given. Per frame, on the streaming thread:
 *
 *     convert the frame:   distill_input_from_rgb (frame, &input)
 *     query = distill_engine_wants_teacher (engine, &input);
 *     if (query) send the frame to the teacher; later, on any thread, exactly one of:
 *                  distill_query_answer (query, labels, …)
 *                  distill_query_fail (query)
 *     distill_engine_process (engine, &input, classes);
 *
 * Asynchronous mode (sync = FALSE, the default): the frame's input is copied into one of a few
 * slots; when its labels arrive, a trainer thread trains its own copy of the weights on that
 * frame and publishes them after every step. distill_engine_process only runs inference, with
 * the newest published weights, picked up at the start of a frame without waiting: the stream
 * never waits for the teacher or for training.
 *
 * Synchronous mode (sync = TRUE, the paper's protocol, for evaluation; bit-identical runs with
 * threads = 1): distill_engine_process waits for the answer (or the failure) of its frame's
 * query, then trains on it inline, on the caller's thread, before producing its output.
 *
 * Frames may have any size, and it may change from one frame to the next: the stream's
 * statistics, the learned weights and a round in progress go on. Buffers are planned at the
 * first frame of a size; after that, frames of that size allocate nothing. */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "block_match.h"
#include "miou.h"
#include "optimizer.h"
#include "student.h"

/* ---- configuration (distill_config.c) ----------------------------------------------------- */

/* The defaults, measured on vtest (docs/experiments.md); the element's property defaults are
 * these. */
#define DISTILL_DEFAULT_MIN_STRIDE 8
#define DISTILL_DEFAULT_MAX_STRIDE 64
#define DISTILL_DEFAULT_ACCURACY_THRESHOLD 0.9
#define DISTILL_DEFAULT_MAX_UPDATES 16
#define DISTILL_DEFAULT_OPTIMIZER OPTIMIZER_ADAM
#define DISTILL_DEFAULT_LEARNING_RATE 5e-4
#define DISTILL_DEFAULT_TRAIN_NICE 10
#define DISTILL_DEFAULT_INFERENCE_BUDGET 0.5

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

/* Why the compute governor changed the stream's input size. */
typedef enum {
  DISTILL_RESIZE_NONE,
  DISTILL_RESIZE_OVER_BUDGET, /* lowered: inference took more than its budget */
  DISTILL_RESIZE_ROOM,        /* raised: a larger size fits the budget */
  DISTILL_RESIZE_HIBERNATING, /* raised: training hibernates, inference gets its share back */
  DISTILL_RESIZE_FINER,       /* raised, the training size too: a finer class map would be worth
                               * it, and the trainer has room */
  DISTILL_RESIZE_TRAINER_BEHIND, /* lowered back, the training size too: the trainer cannot keep
                                  * up at this size */
} DistillResizeReason;

typedef struct {
  int from_w, from_h, to_w, to_h; /* the stream's input size before and after */
  DistillResizeReason reason;
  double inference_ms;            /* mean inference time at the old size */
  double interval_ms;             /* the frame interval */
  double others_load;             /* the other streams' of the process, share of their intervals */
  double budget;                  /* the share inference may take, the process's streams together */
} DistillResize;

/* Called on the streaming thread when the governor changes the input size (logs, tests). */
typedef void (*DistillResizeFunc)(const DistillResize *resize, gpointer user_data);

/* With cfg->fuse_teacher the stream's logits l become l_c + held * [k == c], k the class of
 * the pixel in the teacher's last answer (distill_fusion.c): the answer's class wins unless the
 * student prefers another by more than `held`. DISTILL_FUSION_ALONE (the held answer alone)
 * until a first fit, and on the frame the answer is of. */
#define DISTILL_FUSION_GRID 14
#define DISTILL_FUSION_ALONE 64.0 /* beyond any logit margin */
typedef struct {
  double held;
  double score[DISTILL_FUSION_GRID]; /* running mIoU of each weight the fit tries */
  guint rounds;                      /* fits so far */
} DistillFusion;

typedef struct {
  guint64 query_id;         /* distill_query_id of the frame's query */
  const FeatureMap *input;  /* the frame's input (the slot's copy) */
  const uint8_t *labels;    /* the teacher's labels, at logits size */
  const uint8_t *shown_labels; /* and at the size the user sees the class map (NULL = none) */
  const uint8_t *held;      /* the answer the stream held for this frame (moved with the scene
                             * with follow_motion), at the labels' size (NULL = none): what the
                             * fused class map used */
  int shown_h, shown_w;
  /* The stream's input size when the round started (the governor's; 0 = the input's): the
   * student is measured at the size in use. */
  int measure_h, measure_w;
  /* mIoU of the student's class map, from the input at the measure size, resized to the shown
   * labels' size (bilinear logits, as the user sees it) against them; without shown labels, at
   * the labels' (logits) size. Within the round, the decision to stop at the threshold is taken
   * on the training pass's own logits (the input's size). */
  double miou_before;   /* student vs teacher before the round's first step */
  double miou_after;    /* after its last step (= miou_before when no step was taken) */
  /* With a held answer (cfg->fuse_teacher), -1 without: the mIoU against the new answer of the
   * held answer, at the logits' size, and of the fused map as the stream showed it (the student
   * before the first step at the measure size, the weight before this round's fit), measured
   * as miou_before is. The fusion's weight after the round. */
  double held_miou, fused_miou;
  double fusion_weight;
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
  /* The paper's policy (element properties of the same names). */
  guint min_stride, max_stride; /* DISTILL_DEFAULT_MIN_STRIDE, _MAX_STRIDE */
  double accuracy_threshold;    /* DISTILL_DEFAULT_ACCURACY_THRESHOLD */
  guint max_updates;            /* DISTILL_DEFAULT_MAX_UPDATES */

  gboolean train;               /* TRUE; FALSE = measure and adapt the stride, never update */
  OptimizerConfig optimizer;    /* DISTILL_DEFAULT_OPTIMIZER at DISTILL_DEFAULT_LEARNING_RATE */
  gboolean train_bf16;          /* TRUE: backward products in bfloat16 where the CPU has them
                                 * (student_set_bf16) */
  gboolean forward_bf16;        /* TRUE: the forward passes' too, the stream's and the trainer's,
                                 * in the wide layers (student_set_bf16_forward) */
  gboolean sync;                /* FALSE */

  /* Compute threads of inference (0 = the process's shared pool of one per online core, which
   * the engines of several cameras take in turns: kernels/threadpool.h). The trainer has its own
   * pool of train_threads (0 = distill_config_train_threads) running at nice value train_nice
   * (0..19), so that on a small box training mostly takes the cores inference leaves idle. In
   * sync mode training uses the inference pool. */
  int threads;
  int train_threads;
  int train_nice;               /* DISTILL_DEFAULT_TRAIN_NICE */

  /* Most teacher queries the caller keeps outstanding at once (the element's teacher-inflight).
   * The engine holds that many frames and two more (one in training, one answered): a frame due
   * for the teacher while all are in use waits for the next frame. Asynchronous mode trains the
   * newest answered frame next; the older ones join the replay frames. */
  guint teacher_inflight;       /* 1 */
  /* The caller's teacher timeout (ms): a query older than this without an answer or failure is
   * given up and counted as a teacher error, so that a lost callback cannot hold a slot, nor
   * (sync mode) the stream, for long; 0 = queries wait for their answer or failure. */
  guint teacher_timeout_ms;     /* 0 */

  /* Beyond the paper (distill/README.md; 0, 0 and 1 turn them off): */
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
  /* The stream's class map from the student's logits fused with the teacher's last mask, held,
   * at a weight fitted on each teacher frame to how the student and the previous answer
   * predicted it (distill_fusion.c). A scene change drops the held mask until the next answer. */
  gboolean fuse_teacher;        /* TRUE */
  /* With fuse_teacher: the held mask moves with the scene, along block vectors from its frame
   * to the one shown (distill_motion.c); FALSE holds it where it was. */
  gboolean follow_motion;       /* TRUE */

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

  /* The compute governor (asynchronous mode with train = TRUE; see "the compute governor"):
   * the share of each frame interval the stream's inference may take, all the engines of the
   * process together; 0 = off, the input is used at its own size. */
  double inference_budget;      /* DISTILL_DEFAULT_INFERENCE_BUDGET */
  /* While training hibernates (the student met the threshold at max_stride), the budget is
   * this: the trainer has little to do and inference gets its share back. */
  double hibernate_budget;      /* 0.9 */

  DistillRoundFunc round_started, round_finished;  /* NULL = none */
  DistillResizeFunc resized;                       /* NULL = none */
  gpointer round_user_data;     /* of the three callbacks */
} DistillConfig;

void distill_config_default(DistillConfig *cfg);
/* FALSE and DISTILL_ERROR_CONFIG, naming the field and its range, when cfg cannot be used with
 * a student of num_classes classes. */
gboolean distill_config_check(const DistillConfig *cfg, int num_classes, GError **error);
/* The trainer's thread count: cfg->train_threads, or for 0: 2, or half the cores above 4 (1 on
 * a single core). */
int distill_config_train_threads(const DistillConfig *cfg);

/* ---- policy (pure functions; the engine applies them) ----------------------------------- */

/* The policy measures the student against the teacher with frame_miou (kernels/miou.h), the
 * scorer's per-frame mIoU. */
/* Whether to take another SGD step after `updates` steps, the student now at `miou`. */
gboolean distill_policy_keep_training(const DistillConfig *cfg, guint updates, double miou);
/* The stride after a teacher frame whose round ended at `miou`. */
guint distill_policy_next_stride(const DistillConfig *cfg, guint stride, double miou);
/* What the stride and hibernation go by: the map the stream showed on the round's frame before
 * its answer (round->fused_miou) when an answer was held and fused, else the student's after its
 * steps (round->miou_after, the paper's). */
double distill_policy_stride_miou(const DistillRound *round);

/* ---- fusion with the teacher's last mask (pure functions; the engine applies them) -------- */

void distill_fusion_init(DistillFusion *f);
/* The weight fitted on one more teacher frame (the student's logits on it, the previous answer
 * held, the new answer; all at the logits' size): of a grid from 0 to 64, the one of the best
 * mIoU on the recent frames. scratch: a class map of the logits' size. Returns the mIoU on this
 * frame of the weight before the fit: the fused map the stream showed. */
double distill_fusion_fit(DistillFusion *f, const FeatureMap *logits, const uint8_t *held,
                          const uint8_t *labels, uint8_t *scratch);
/* The weight of an answer `age` frames old, the fit's being `fitted` for one fitted_age old: the
 * fit measures the held answer when the next answer comes, a stride after it; a frame shown
 * sooner (its answers waited for: the element's teacher-wait) holds a younger one, right more
 * often, up to its own frame's, which it shows alone. Linear from DISTILL_FUSION_ALONE at age
 * 0 to `fitted` at fitted_age and after; `fitted` past age 0 when fitted_age is 0 (no fit). */
double distill_fusion_weight_at(double fitted, guint fitted_age, guint age);
/* out (logits' size and channels) = the logits fused at `weight` (DistillFusion.held); held is
 * held_h x held_w, taken at the nearest pixel. */
void distill_fusion_apply(double weight, const FeatureMap *logits, const uint8_t *held,
                          int held_h, int held_w, FeatureMap *out);

/* ---- the scene's motion, and the held answer carried along it (distill_motion.c) --------- */

/* Motion is measured on grey frames of about this long side (the input's, divided by a whole
 * factor), where a block of kernels/block_match.h covers a walking person's limb. */
#define DISTILL_MOTION_LONG_SIDE 320
/* Frames whose motion is kept: an answer up to this many frames late is still carried. */
#define DISTILL_MOTION_HISTORY 64
/* A block that matched worse than this on its way from the answer's frame (sum of absolute
 * differences over its 16 grey pixels: 12 grey levels a pixel) is where something appeared or
 * was hidden: the answer says nothing there. On vtest such pixels of the answer moved were wrong
 * 9-29% of the time, the others 0.4-6%. */
#define DISTILL_MOTION_UNSURE_SAD 192.0f
/* The class distill_motion_sample gives such pixels: no class (the fusion leaves them to the
 * student). */
#define DISTILL_MOTION_UNSURE 255

/* The stream's side: each frame's grey image and its block vectors against the one before, and
 * a map, at the blocks' centres, of where the content of each block of the newest frame was in
 * the frame an answer is of (the anchor), carried frame by frame. Streaming thread only. */
typedef struct {
  int h, w;                 /* the grey frames'; 0 = none yet */
  uint8_t *grey[2];         /* padded (kernels/block_match.h); grey[newest] is of frame_of */
  size_t grey_capacity;
  int newest;
  guint64 frame_of;         /* frame + 1 of grey[newest]; 0 = none */
  gboolean one_way;         /* set by a caller that never carries back: no vectors the other
                             * way are matched, and a carry back holds the answer still */
  BlockVector *vectors;     /* DISTILL_MOTION_HISTORY entries of (h / 4) x (w / 4) vectors,
                             * then as many the other way (frame - 1 against frame) */
  size_t vectors_capacity;  /* bytes of one entry */
  guint64 vectors_of[DISTILL_MOTION_HISTORY]; /* frame + 1 whose motion (from the one before)
                                               * an entry holds; 0 = none */
  uint8_t *scratch;         /* block_match's */
  size_t scratch_capacity;  /* bytes */
  float *map, *next;        /* map_h x map_w blocks x 3: how far (x, y) the block's content
                             * was in the anchor (grey pixels), and its worst match since */
  size_t map_capacity;      /* floats */
  int map_h, map_w;
  guint64 anchor, map_of;   /* frame + 1 of the anchor and of the frame the map is for; 0 = none */
} DistillMotion;

void distill_motion_init(DistillMotion *m);
void distill_motion_clear(DistillMotion *m);
/* Takes frame `frame` (0-based, in order): its grey image, and its motion from the frame before
 * when that one was taken at the same size. */
void distill_motion_add(DistillMotion *m, const FeatureMap *input, guint64 frame);
/* The map for frame `anchor`, carried to frame `frame` (the newest taken at most): started anew
 * when the anchor or the size change or the frame is before the last one carried to, along
 * every frame of the history between (a frame without motion, as after a change of size, counts
 * as still). An anchor after the frame (a later answer, for a frame held back) is carried back,
 * anew. NULL before a frame was taken. */
const float *distill_motion_carry(DistillMotion *m, guint64 anchor, guint64 frame);
/* out (h x w) = held (h x w, an answer for the anchor, covering the frame) taken through the
 * map at the nearest pixel: the answer moved with the scene; DISTILL_MOTION_UNSURE where the
 * way from the anchor matched worse than DISTILL_MOTION_UNSURE_SAD. After distill_motion_carry. */
void distill_motion_sample(DistillMotion *m, const uint8_t *held, int h, int w, uint8_t *out);

/* ---- the compute governor (pure functions; the engine applies them) ---------------------- */

/* In real time the stream's inference may take cfg->inference_budget of each frame interval,
 * the streams of the process together, and the trainer gets the rest. Over the budget, the
 * stream's input shrinks (the long side on a grid of DISTILL_GOVERNOR_STEP, down to
 * DISTILL_GOVERNOR_FLOOR or the nominal size if smaller); with room, it grows back to the
 * nominal size, the input the caller gives. Teacher frames, their labels and the replay frames
 * stay at the nominal size: only the stream's forward pass shrinks. */
#define DISTILL_GOVERNOR_FLOOR 320
#define DISTILL_GOVERNOR_STEP 32

typedef struct {
  int nominal;     /* long side of the nominal input */
  int floor;       /* smallest long side: DISTILL_GOVERNOR_FLOOR, or nominal if smaller */
  int long_side;   /* in use */
  double ms;       /* mean inference time at long_side */
  guint frames;    /* frames measured at long_side */
  guint settling;  /* frames at a new size still to leave out */
} DistillGovernor;

void distill_governor_init(DistillGovernor *g, int nominal_long_side);
/* Takes one frame's inference time (ms, at g->long_side) and decides: the frame interval,
 * the share of their intervals the process's other streams take (others_load) and the budget
 * give the room. Returns why g->long_side changed, or DISTILL_RESIZE_NONE. budget or
 * interval_ms <= 0: measures only. */
DistillResizeReason distill_governor_update(DistillGovernor *g, double budget, double ms,
                                            double interval_ms, double others_load);
/* The input size at g->long_side for a nominal input of nominal_h x nominal_w: aspect kept,
 * both sides even. */
void distill_governor_size(const DistillGovernor *g, int nominal_h, int nominal_w, int *h,
                           int *w);
/* The mean frame interval after one more gap between timestamps (delta_ms), for streams whose
 * caps give no rate: gaps, steps backwards and the like are left out. mean_ms 0 = none yet. */
double distill_frame_interval(double mean_ms, double delta_ms);
/* A short English phrase for a reason, for logs. */
const char *distill_resize_describe(DistillResizeReason reason);

/* ---- the training size (pure functions; the engine applies them) ------------------------- */

/* In real time the student's input, for the stream and the trainer alike, starts at the caller's
 * size (the real-time default, or the frame's if smaller) and grows in steps of
 * DISTILL_GROWTH_STEP on the long side, up to a largest size, where the scene's class maps need
 * a finer resolution than they have and the trainer has time to spare: thin things (people far
 * away) come out at a long side of 320 as a blur a finer input resolves, while large ones gain
 * nothing and every update costs the square of the size. It steps back when the trainer cannot
 * keep up. The need for resolution is measured on the teacher's labels, at the logits' size:
 * their mIoU against themselves through a class map of half that size
 * (distill_resolution_miou), what halving the resolution would lose; under
 * DISTILL_GROWTH_COARSE_MIOU, doubling it is taken to be worth its cost. */
#define DISTILL_GROWTH_STEP 64
#define DISTILL_GROWTH_COARSE_MIOU 0.93

typedef struct {
  int base;            /* long side: the caller's */
  int largest;         /* long side: the largest allowed (<= base: no growth) */
  int long_side;       /* wanted now */
  double coarse_miou;  /* mean of distill_resolution_miou over the rounds at long_side */
  double busy;         /* mean share of the time the trainer spends in rounds, at long_side */
  guint rounds;        /* rounds measured at long_side */
  int too_large;       /* the size last stepped back from (0 = none), not tried again for a
                        * while: a size the area prediction lets through but the trainer cannot
                        * keep up at would come and go */
  guint since_too_large; /* rounds since */
} DistillGrowth;

void distill_growth_init(DistillGrowth *g, int base, int largest);
/* Takes one round at g->long_side: its labels' distill_resolution_miou, and the share of the
 * time since the previous round's end the trainer spent in this one (1: rounds back to back).
 * inference_load is the stream's inference time over the frame interval at g->long_side and
 * inference_room the share it may take (DistillConfig.inference_budget and the process's other
 * streams; <= 0: no room to grow); stream_lowered: the governor runs the stream below
 * g->long_side (over its budget), and training steps back too, so that the student is not
 * trained at one scale and run at another. Returns why g->long_side changed, or
 * DISTILL_RESIZE_NONE. */
DistillResizeReason distill_growth_update(DistillGrowth *g, double coarse_miou, double busy,
                                          double inference_load, double inference_room,
                                          gboolean stream_lowered);
/* The mIoU of labels (h x w class indices, LABEL_IGNORE left out) against the same labels
 * through a class map of half their size: the class shares of each 2x2 block, resized back
 * bilinearly and argmaxed, as the stream's class map is made from its logits. scratch holds
 * ceil(h/2) * ceil(w/2) * num_classes floats, coarse h * w bytes. */
double distill_resolution_miou(const uint8_t *labels, int h, int w, int num_classes,
                               float *scratch, uint8_t *coarse, ThreadPool *pool);

/* ---- input conversion ------------------------------------------------------------------- */

/* Writes input (input->h x input->w x 3, ld 3) from a packed 8-bit frame of width x height:
 * bilinear resize (half-pixel centres), RGB/255 - 0.5. Pixel (x, y) starts at pixels + y *
 * row_stride + x * pixel_stride; rgb_offset gives the byte offsets of R, G and B in a pixel
 * (NULL = {0, 1, 2}; BGRx is {2, 1, 0}, xRGB {1, 2, 3}). */
void distill_input_from_rgb(const uint8_t *pixels, int width, int height, int row_stride,
                            int pixel_stride, const int rgb_offset[3], FeatureMap *input);

/* ---- the engine ------------------------------------------------------------------------- */

typedef struct DistillEngine DistillEngine;
/* A frame out to the teacher, from distill_engine_wants_teacher until its answer or failure. */
typedef struct DistillQuery DistillQuery;

#define DISTILL_ERROR (distill_error_quark())
GQuark distill_error_quark(void);
typedef enum {
  DISTILL_ERROR_CONFIG,  /* a configuration field out of range */
  DISTILL_ERROR_QUERY,   /* an answer to a query given up (older than teacher_timeout_ms) */
  DISTILL_ERROR_LABELS,  /* teacher labels of the wrong size */
} DistillError;

/* A new engine starting from initial's weights (copied; initial stays the caller's). Fails with
 * DISTILL_ERROR_CONFIG on a bad configuration, saying which field and why. */
DistillEngine *distill_engine_new(const Student *initial, const DistillConfig *cfg,
                                  GError **error);
/* Stops the trainer (an ongoing round ends first). No query may be outstanding: stop (cancel)
 * the teacher requests first, which answers or fails each. */
void distill_engine_free(DistillEngine *engine);
const DistillConfig *distill_engine_get_config(const DistillEngine *engine);
/* The student's architecture ("jitnet", student.h). */
const char *distill_engine_arch(const DistillEngine *engine);
/* Logits size (= size of the class maps and of the teacher labels) for an input of in_h x in_w:
 * half of it, rounded up. */
void distill_engine_label_size(const DistillEngine *engine, int in_h, int in_w, int *height,
                               int *width);

/* Streaming thread, once per frame, before distill_engine_process: NULL when the frame need not
 * go to the teacher, otherwise its query (the input is copied). */
DistillQuery *distill_engine_wants_teacher(DistillEngine *engine, const FeatureMap *input);
/* Any thread: the frame's index in the stream + 1, for logs (DistillRound.query_id). */
guint64 distill_query_id(const DistillQuery *query);
/* Any thread: the size the labels must have (distill_engine_label_size of the frame's input). */
void distill_query_label_size(const DistillQuery *query, int *height, int *width);
/* Any thread: the teacher's labels, height x width (distill_query_label_size), row-major class
 * indices, LABEL_IGNORE = no label. Ends the query (it is freed). FALSE and an error, the labels
 * dropped and a teacher error counted, for labels of the wrong size or a query given up. */
gboolean distill_query_answer(DistillQuery *query, const uint8_t *labels, int height, int width,
                              GError **error);
/* The same, with the teacher's labels also at the size the user sees the student's class map
 * (the frame's, shown_height x shown_width, at least the logits size): the policy measures the
 * student there (DistillRound.miou_*), where thin things the logits' size flatters show. */
gboolean distill_query_answer_shown(DistillQuery *query, const uint8_t *labels, int height,
                                    int width, const uint8_t *shown_labels, int shown_height,
                                    int shown_width, GError **error);
/* Any thread: no labels will come (error, timeout, cancellation). Ends the query and counts a
 * teacher error, unless it was given up already (counted then). */
void distill_query_fail(DistillQuery *query);

/* Streaming thread: the interval between frames, in ms (from the caps' frame rate or the
 * timestamps, distill_frame_interval), which the governor's budget is a share of; 0 = unknown
 * (the governor waits). */
void distill_engine_set_frame_interval(DistillEngine *engine, double interval_ms);

/* Streaming thread: the long sides of the student's input the caller gives at first (base) and
 * at most (largest; the frame's own at most: larger ones cost more than finer class maps give,
 * docs/experiments.md, "A smaller input in real time"). In real time with training and the
 * governor's budget, the engine may ask for a larger input, up to largest, when the scene's
 * class maps need it and the trainer has room, and for a smaller one, down to base, when the
 * trainer falls behind (DistillGrowth). largest <= base: the input stays at base. */
void distill_engine_set_input_range(DistillEngine *engine, int base_long_side,
                                    int largest_long_side);
/* Streaming thread, before each frame: the long side the engine asks the caller to give the
 * input at (the stream and the trainer alike), 0 = no growth: the caller's own size. Inputs of
 * another long side are taken all the same (the change comes when the caller makes it). */
int distill_engine_input_long_side(DistillEngine *engine);

/* Streaming thread, once per frame: the student's class map of input (distill_engine_label_size)
 * into classes: distill_engine_infer, then distill_engine_show. With the governor on, the
 * student may run on input resized to a smaller size; its class map is resized to input's
 * logits size all the same. Sync mode: first waits for this frame's query, if it has one, to be
 * answered or failed (up to teacher_timeout_ms, then it is given up), and trains on the labels. */
void distill_engine_process(DistillEngine *engine, const FeatureMap *input, uint8_t *classes);

/* A caller may hold frames back until the teacher's answer to them (or to a frame before them)
 * is in, so that it shows on the frame it is of rather than some frames later (the element's
 * teacher-wait): each frame is inferred as it comes (after distill_engine_wants_teacher) and
 * shown, in order, when ready or when the caller stops waiting. At most this many wait. */
#define DISTILL_SHOW_PENDING_MAX 64
/* Streaming thread: the student's logits of input, kept until the frame is shown. */
void distill_engine_infer(DistillEngine *engine, const FeatureMap *input);
/* Streaming thread: frames inferred and not yet shown. */
guint distill_engine_pending(const DistillEngine *engine);
/* Streaming thread: whether the oldest waiting frame has all the answers it may take (no query
 * of it or of a frame before it is out), waiting up to deadline (monotonic µs; 0 = not at
 * all). FALSE when no frame waits. */
gboolean distill_engine_show_ready(DistillEngine *engine, gint64 deadline);
/* Streaming thread: the oldest waiting frame's class map into classes (its input's
 * distill_engine_label_size): its logits fused with the newest answer of its time (fuse_teacher:
 * alone when the answer is of this very frame, moved with the scene otherwise). */
void distill_engine_show(DistillEngine *engine, uint8_t *classes);
/* Streaming thread: the waiting frames will not be shown (a flush). */
void distill_engine_drop_pending(DistillEngine *engine);

/* Streaming thread: the class of every pixel of a width x height picture, from the last frame
 * shown (before the next is inferred): its logits resized bilinearly, then the most likely class
 * (sharper than resizing its class map), rows row_stride bytes apart (kernels.h,
 * argmax_bilinear). */
void distill_engine_class_map(DistillEngine *engine, int width, int height, uint8_t *classes,
                              size_t row_stride);

typedef struct {
  guint64 frames;            /* processed */
  guint64 teacher_queries;   /* queries made */
  guint64 teacher_errors;    /* failures, given-up queries, answers refused */
  guint64 updates;           /* SGD steps */
  guint64 rounds;            /* teacher frames trained on (rounds finished) */
  guint64 weights_version;   /* weights published so far (the inference side's: in use) */
  guint stride;              /* current teacher stride */
  double last_miou;          /* student vs teacher at the start of the last round; -1 = none */
  double shown_miou;         /* the stream's class map (fused: fuse_teacher) vs the teacher on
                              * the last teacher frame with an answer held; -1 = none */
  double train_ms;           /* mean duration of a training round */
  double student_ms;         /* mean duration of distill_engine_process's inference */
  guint64 rollbacks;         /* times training went back to the last good weights */
  DistillCollapse last_collapse; /* why it did, the last time */
  /* (means since the engine was made) */
  /* The compute governor: */
  int input_w, input_h;      /* the stream's input size in use (0 before the first frame) */
  double inference_share;    /* mean inference time over the frame interval; 0 = no interval */
  double train_ms_total;     /* time the trainer spent in rounds, the one running included */
  gboolean hibernating;      /* the student met the threshold at max_stride: training rests */
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

/* Any thread, while training runs: saves the newest published weights, in their trainable form
 * (student_save's atomic write). */
gboolean distill_engine_save(DistillEngine *engine, const char *path, GError **error);
/* Any thread: a new Student holding the newest published weights, in their trainable form
 * (student_free() it). */
Student *distill_engine_snapshot(DistillEngine *engine);
