/* gstdistillseg.h: the distillseg element (gstdistillseg.c). */
#pragma once

#include <gst/gst.h>
#include <gst/video/gstvideofilter.h>
#include <gst/video/video.h>

#include "distill.h"
#include "teacher_client.h"
#include "teachergroup.h"

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

struct _GstDistillSeg {
  GstVideoFilter parent;

  /* Properties, under the object lock. */
  gchar *teacher_url, *teacher_model, *teacher_token_file, *teacher_ca_file;
  guint teacher_timeout, teacher_max_side, teacher_inflight;
  TeacherEncoding teacher_encoding;
  gdouble teacher_confidence;
  guint num_classes, inference_width, inference_height;
  gchar *checkpoint, *checkpoint_out;
  guint checkpoint_interval;
  guint min_stride, max_stride, max_updates;
  gdouble accuracy_threshold, learning_rate;
  GstDistillOptimizer optimizer;
  gboolean learning_rate_set, optimizer_set;
  gboolean train, sync;
  GstDistillOutput output;
  guint threads, train_threads, train_nice, stats_interval;

  /* Between start and stop. */
  Student *initial;           /* the weights the stream starts from (checkpoint or shipped) */
  TeacherMember *teacher;     /* NULL: inference only */
  TeacherStream *stream;      /* the member's, for its counters */
  GMutex teacher_lock;        /* sync mode: waiting for the teacher's answer; the engine
                               * swap on a size change against the answers still coming */
  GCond teacher_cond;
  guint64 engine_generation;  /* which engine a query was sent for (under teacher_lock) */
  guint64 teacher_answered;   /* ticket of the last answer (sync mode) */
  guint64 teacher_failures;   /* failed queries since the last answer (under teacher_lock) */
  GThread *saver;             /* a periodic checkpoint save in progress */

  /* Between set_info calls: the engine for the negotiated size and its buffers. */
  DistillEngine *engine;
  int input_w, input_h, label_w, label_h;
  FeatureMap input;
  float *input_data;
  uint8_t *classes;                 /* at logits size */
  uint8_t *frame_classes;           /* at frame size, for overlay and mask output */
  float *upsample_scratch;
  GstVideoConverter *to_rgb_small;  /* YUV input: to RGB at inference size */
  guint8 *rgb_small;
  GstVideoConverter *to_rgb_full;   /* teacher frames not already packed RGB */
  guint8 *rgb_full;
  int rgb_offset[3], pixel_stride;  /* packed RGB input: byte offsets of R, G, B */
  gboolean packed_rgb;
  GstBufferPool *mask_pool;         /* GRAY8 class maps for the meta */
  GstVideoInfo mask_info;

  guint64 frame;
  gint64 last_stats_time, last_save_time;
  guint64 last_stats_frames;
  DistillStats past;          /* totals of the engines this run replaced on size changes */
  gboolean error_posted;
  gboolean saturation_warned; /* said that inference leaves training no time */
};

GST_ELEMENT_REGISTER_DECLARE(distillseg);

G_END_DECLS
