/* dataset.h: teacher-labelled frames for offline training, and their augmented samples.
 *
 * A manifest (written by pretrain/label) lists one frame a line: "SOURCE FRAME.ppm LABEL.pgm",
 * paths relative to the manifest's folder. The frame is 8-bit RGB (PPM P6), the label the
 * teacher's foreground probability as 8-bit grey (PGM P5, 255 = certain foreground) of the same
 * size. Files are read when sampled, not held in memory. */
#pragma once

#include <glib.h>
#include <stdint.h>

typedef struct {
  char *source;     /* e.g. "tree-1a2b3c": frames of one source are alike */
  char *frame_path;
  char *label_path;
  gboolean held_out;
} DatasetItem;

typedef struct {
  GPtrArray *items;   /* of DatasetItem */
  guint n_train, n_held_out;
} Dataset;

/* Reads the manifest. Every held_out_every-th frame of each source (0 = none), and every frame
 * of the sources named in held_out_sources (NULL-terminated, may be NULL), are held out for
 * validation. Fails on a missing or malformed manifest, or one without any training frame. */
Dataset *dataset_load(const char *manifest, guint held_out_every,
                      const char *const *held_out_sources, GError **error);
void dataset_free(Dataset *set);
/* How many frames of each source, as "source:train+held" items separated by spaces; g_free it. */
char *dataset_describe(const Dataset *set);

/* An 8-bit PNM (P5 grey or P6 RGB, maxval 255), rows packed. */
typedef struct {
  int width, height, channels;
  uint8_t *data;
} PnmImage;

gboolean pnm_read(const char *path, PnmImage *image, GError **error);
gboolean pnm_write(const char *path, const PnmImage *image, GError **error);
void pnm_clear(PnmImage *image);

typedef struct {
  double min_zoom, max_zoom;  /* crop scale relative to the frame fitting the crop exactly */
  gboolean flip;              /* random horizontal flips */
  double brightness;          /* added in [-b, b] (inputs span [-0.5, 0.5]) */
  double contrast;            /* multiplied by [1 - c, 1 + c] */
  double colour;              /* per-channel gain [1 - g, 1 + g] */
  double confidence;          /* a probability below this for its class marks "ignore" */
} AugmentConfig;

void augment_config_default(AugmentConfig *cfg);

/* Class map (h*w, 0 background, 1 foreground, 255 ignore) of a probability image resized
 * bilinearly to w x h, by the teacher's rule (kernels/probability_labels.h). */
void labels_from_probability(const PnmImage *prob, double confidence, int w, int h,
                             uint8_t *labels);

/* A random view of frame/prob: input (in_h x in_w x 3, network scaling: x/255 - 0.5 before the
 * colour jitter) and labels at label_w x label_h (the logits size); pixels outside the frame
 * (zoomed out) are ignored. */
void augment_sample(const PnmImage *frame, const PnmImage *prob, const AugmentConfig *cfg,
                    GRand *rng, int in_w, int in_h, float *input, int label_w, int label_h,
                    uint8_t *labels);
