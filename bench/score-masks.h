/* score-masks: the parts of the scorer (bench/score-masks.c): the label video and the predicted
 * masks. */
#pragma once

#include <glib.h>
#include <stdint.h>

/* ---- labels: a video of 8-bit grey frames, decoded with libavformat / libavcodec ---------- */

typedef struct LabelVideo LabelVideo;

LabelVideo *label_video_open(const char *path, GError **error);
int label_video_width(const LabelVideo *video);
int label_video_height(const LabelVideo *video);
/* The next frame, as width * height grey bytes (converted and resized to the stream's size if a
 * frame is in another format). FALSE at the end of the video, or with error set. */
gboolean label_video_next(LabelVideo *video, uint8_t *gray, GError **error);
void label_video_close(LabelVideo *video);

/* ---- predictions: one file per frame in a folder ---------------------------------------------- */

typedef struct PredictionDir PredictionDir;

/* Indexes the folder: a file's frame number is the last run of digits in its name (0-based);
 * files without digits take their rank in name order. Names starting with '.' are skipped. */
PredictionDir *prediction_dir_open(const char *path, GError **error);
/* Reads the prediction of frame into mask (label_w * label_h class indices): a binary PGM (P5)
 * of any size, resized (nearest) to the label size, or raw GRAY8 of exactly the label size.
 * FALSE when the frame has no file or the file is neither. */
gboolean prediction_dir_read(const PredictionDir *dir, long frame, int label_w, int label_h,
                             uint8_t *mask);
void prediction_dir_free(PredictionDir *dir);
