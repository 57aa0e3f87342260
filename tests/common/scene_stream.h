/* scene_stream.h: drives a DistillEngine over a synthetic scene, the "teacher" being the scene's
 * true labels, and scores the student against the truth. Shared by the tests and distill-eval. */
#pragma once

#include "distill.h"
#include "synthetic_scene.h"

typedef struct {
  SyntheticScene *scene;
  DistillEngine *engine;
  int num_classes;
  int scene_w, scene_h, input_w, input_h, label_w, label_h;
  uint8_t *rgb, *truth, *classes;
  FeatureMap input;
  double miou_sum;       /* student vs truth, over the scored frames */
  guint64 scored;
} SceneStream;

/* Frames rendered at the scene's size, converted to the student's input size. */
void scene_stream_init(SceneStream *s, const SyntheticSceneConfig *scene_cfg,
                       DistillEngine *engine, int input_w, int input_h);
void scene_stream_clear(SceneStream *s);
/* Renders and converts frame `frame` into s->input and its truth into s->truth. */
void scene_stream_load(SceneStream *s, guint64 frame);
/* One sync-mode frame: asks the engine, answers with the truth at once, processes; adds the
 * student's mIoU against the truth to the score when `score`. */
void scene_stream_sync_frame(SceneStream *s, guint64 frame, gboolean score);
double scene_stream_miou(const SceneStream *s);

/* Training rounds finished so far: scene_rounds_finished is the engine's round_finished, with
 * the counter as its round_user_data. */
typedef struct {
  GMutex lock;
  GCond changed;
  guint64 finished;
} SceneRounds;

void scene_rounds_init(SceneRounds *r);
void scene_rounds_clear(SceneRounds *r);
void scene_rounds_finished(const DistillRound *round, gpointer data);
/* Frames [from, to), each query answered with the truth at once. The frame is processed while its
 * round (async) runs; the next frame waits for the round, so that every due frame gets a round.
 * *answered counts the queries answered. */
void scene_stream_run_answered(SceneStream *s, SceneRounds *r, guint64 from, guint64 to,
                               guint64 *answered);
