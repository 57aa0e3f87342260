/* gstdistillseg.h: the distillseg element (gstdistillseg.c). */
#pragma once

#include <gst/gst.h>
#include <gst/video/gstvideofilter.h>
#include <gst/video/video.h>

#include "distill.h"
#include "teacher_client.h"
#include "teacher_group.h"

G_BEGIN_DECLS

#define GST_TYPE_DISTILL_SEG (gst_distill_seg_get_type())
G_DECLARE_FINAL_TYPE(GstDistillSeg, gst_distill_seg, GST, DISTILL_SEG, GstVideoFilter)

typedef enum {
  GST_DISTILL_OUTPUT_PASSTHROUGH,
  GST_DISTILL_OUTPUT_OVERLAY,
  GST_DISTILL_OUTPUT_MASK,
} GstDistillOutput;

typedef enum {
  GST_DISTILL_OPTIMIZER_SGD = OPTIMIZER_SGD,
  GST_DISTILL_OPTIMIZER_ADAM = OPTIMIZER_ADAM,
} GstDistillOptimizer;

/* Writes the student's input (self->input) from a frame: set_info picks one per format. */
typedef void (*GstDistillSegToInput)(GstDistillSeg *self, GstVideoFrame *frame);

struct _GstDistillSeg {
  GstVideoFilter parent;

  /* Properties, under the object lock. */
  gchar *teacher_url, *teacher_model, *teacher_token_file, *teacher_ca_file;
  guint teacher_timeout, teacher_max_side, teacher_inflight;
  TeacherEncoding teacher_encoding;
  gdouble teacher_confidence;
  guint num_classes, inference_width, inference_height, inference_long_side;
  guint max_inference_long_side;
  gchar *checkpoint, *checkpoint_out;
  guint checkpoint_interval;
  guint min_stride, max_stride, max_updates;
  gdouble accuracy_threshold, learning_rate;
  GstDistillOptimizer optimizer;
  gboolean learning_rate_set;  /* else the optimizer's own default applies */
  gboolean train, sync, measure_at_frame_size, fuse_teacher, follow_motion;
  guint teacher_wait;
  GstDistillOutput output;
  guint threads, train_threads, train_nice, stats_interval;
  gdouble inference_budget;

  /* Between start and stop. */
  DistillEngine *engine;
  TeacherMember *teacher;     /* NULL: inference only */
  TeacherStream *stream;      /* the member's, for its counters */
  gint teacher_failures;      /* failed queries since the last answer (atomic) */
  GThread *saver;             /* a periodic checkpoint save in progress */
  guint64 frame;
  gint64 last_stats_time, last_save_time;
  guint64 last_stats_frames;
  double last_stats_train_ms; /* DistillStats.train_ms_total at the last distill-stats */
  gboolean saturation_warned; /* said that inference leaves training no time */
  GstClockTime last_pts;      /* for the frame interval when the caps give no rate */
  double interval_ms;
  gint64 wait_us;             /* teacher-wait in effect (0 = none), µs */
  GQueue waiting;             /* WaitingFrame: frames inferred, not yet shown, oldest first */

  /* Between set_info calls: the buffers of the negotiated size (the input's and the class
   * map's follow the training size the engine asks for: distill_engine_input_long_side). */
  GstVideoInfo frame_info;          /* the frames', as the converters take them */
  int input_w, input_h, label_w, label_h;
  GstDistillSegToInput to_input;
  FeatureMap input;
  uint8_t *classes;                 /* at logits size */
  uint8_t *frame_classes;           /* at frame size, for the overlay */
  GstVideoConverter *to_rgb_small;  /* YUV input: to RGB at inference size */
  guint8 *rgb_small;
  GstVideoConverter *to_rgb_full;   /* teacher frames not already packed RGB */
  guint8 *rgb_full;
  int rgb_offset[3], pixel_stride;  /* packed RGB input: byte offsets of R, G, B */
  GstBufferPool *mask_pool;         /* GRAY8 class maps for the meta */
  GstVideoInfo mask_info;
};

GST_ELEMENT_REGISTER_DECLARE(distillseg);

G_END_DECLS
