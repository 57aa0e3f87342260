/* distill_private.h: what the engine's files share (distill.h is the public side). */
#pragma once

#include "distill.h"

/* The scene-change statistic: block means of the input on a small grid. */
#define DISTILL_THUMB_W 16
#define DISTILL_THUMB_H 12
#define DISTILL_THUMB_FLOATS (DISTILL_THUMB_W * DISTILL_THUMB_H * 3)

void distill_thumbnail(const FeatureMap *input, float *thumb);
double distill_thumbnail_distance(const float *a, const float *b);

/* Makes *map an h x w RGB input over its buffer, grown when *capacity (floats) is too small:
 * buffers for the governor's smaller inputs, kept from frame to frame. */
void distill_input_reserve(FeatureMap *map, size_t *capacity, int h, int w);
/* The same for an h x w x c map (logits). */
void distill_map_reserve(FeatureMap *map, size_t *capacity, int h, int w, int c);

/* The trainer's side: its own copy of the network, the optimiser and the buffers of a round,
 * planned for the size of the frames it trains on. Used by one thread at a time. */
typedef struct {
  const DistillConfig *cfg;
  Student *student;
  Optimizer *optimizer;
  uint8_t *pred;
  float *pixel_weight;    /* NULL when foreground_weight is 1 */
  size_t label_capacity;  /* pixels of pred and pixel_weight */
  uint8_t *shown_pred;    /* the class map at the shown labels' size */
  size_t shown_capacity;  /* its pixels */
  /* The policy's measure at the stream's size when the governor runs it smaller than the
   * round's input (DistillRound.measure_h/_w): a copy of the network, given the trainer's
   * weights at each measure, and the input resized. Planned at that size, so the training copy
   * keeps its buffers planned at the nominal one. */
  Student *measurer;
  FeatureMap measure_input;
  size_t measure_capacity; /* floats */
  FeatureMap fused;        /* the stream's logits fused with the held answer, for its measure */
  size_t fused_capacity;   /* floats */
  /* Recent teacher frames against forgetting: replay_frames inputs and labels of replay_h x
   * replay_w (their labels replay_label_h x _w), a ring, made anew at a change of size. */
  float *replay_inputs;
  uint8_t *replay_labels;
  int replay_h, replay_w, replay_label_h, replay_label_w;
  guint replay_count, replay_next, replay_cursor;
  /* Rollback (distill.h, DistillConfig): the last good weights, the usual level of agreement
   * (-1 = none yet) and the teacher frames in a row below it. */
  float *good_params;
  double usual_miou;
  guint rounds_below;
  /* Called after every step with finite weights (NULL: none): the asynchronous engine publishes
   * them, so that the stream gains from a round while it runs. */
  void (*stepped)(gpointer user_data);
  gpointer stepped_user_data;
  DistillFusion fusion;   /* fitted on the rounds with a held answer (DistillRound.held) */
} DistillTrainer;

void distill_trainer_init(DistillTrainer *t, const DistillConfig *cfg, const Student *initial);
void distill_trainer_clear(DistillTrainer *t);
/* The paper's update loop on round->input and round->labels; fills miou_before, miou_after,
 * updates, verdict and collapse, and keeps the frame for replay. After a rollback the trainer's
 * weights are the last good ones. stop (may be NULL): a flag that another thread sets
 * (g_atomic_int_set) to end the round before its next step, the steps taken so far kept: a
 * round of the default 16 steps lasts seconds on a small box, too long to wait for when the
 * stream stops. */
void distill_trainer_round(DistillTrainer *t, DistillRound *round, ThreadPool *pool,
                           const gint *stop);
/* Keeps a teacher frame for replay (a ring of cfg->replay_frames; nothing when 0). A frame of
 * another size than those kept has them resized to its own (on pool). */
void distill_trainer_keep(DistillTrainer *t, const FeatureMap *input, const uint8_t *labels,
                          ThreadPool *pool);
