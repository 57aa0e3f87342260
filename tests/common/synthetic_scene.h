/* synthetic_scene.h: a synthetic video with true labels, for tests of online distillation.
 *
 * Textured objects of two kinds move over a textured background: class 1, discs striped in warm
 * colours; class 2, squares checkered in cool colours (class 0 is the background, a smooth
 * noise in earthy colours). Objects bounce off the frame edges; with a camera pan the background
 * scrolls. Every frame is a pure function of the seed and the frame index (any frame can be
 * rendered in any order, on any thread), with a little per-frame sensor noise. From frame
 * `cut_frame` on (0 = never), the background, its colours and the objects' paths change: a
 * scene cut. */
#pragma once

#include <glib.h>
#include <stdint.h>

typedef struct {
  int width, height;       /* of the rendered frames */
  guint64 seed;
  int num_classes;         /* 2 (discs only) or 3 */
  int objects_per_class;   /* 2 */
  guint64 cut_frame;       /* 0 = no cut */
  double pan;              /* background scroll, in frame widths per 100 frames; 0 = still */
  guint64 absent_from, absent_to;  /* class-2 objects are off screen on [from, to); 0, 0 = never */
} SyntheticSceneConfig;

typedef struct SyntheticScene SyntheticScene;

void synthetic_scene_config_default(SyntheticSceneConfig *cfg, int width, int height,
                                    guint64 seed);
SyntheticScene *synthetic_scene_new(const SyntheticSceneConfig *cfg);
void synthetic_scene_free(SyntheticScene *scene);

/* Frame `frame` as packed RGB, width x height x 3 bytes, row stride width * 3. */
void synthetic_scene_render(const SyntheticScene *scene, guint64 frame, uint8_t *rgb);
/* Its true class map at any resolution (e.g. the student's logits size), sampled at the centres
 * of a width x height grid over the frame. */
void synthetic_scene_labels(const SyntheticScene *scene, guint64 frame, int width, int height,
                            uint8_t *labels);
