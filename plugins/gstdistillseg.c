/* gst-distill
 * Copyright (C) 2026 gst-distill authors
 *
 * This library is free software; you can redistribute it and/or modify it under the terms of the
 * GNU Lesser General Public License as published by the Free Software Foundation; either version
 * 2.1 of the License, or (at your option) any later version.
 */

/**
 * SECTION:element-distillseg
 * @title: distillseg
 *
 * Segments every frame with a compact student network and keeps the student specialised to the
 * stream by online distillation: now and then a frame goes to a remote teacher model (a KServe v2
 * server such as NVIDIA Triton) whose mask becomes the target of a few SGD steps, taken beside
 * the stream (`sync=false`) or in line with it (`sync=true`, for evaluation).
 *
 * Every output buffer carries a #GstDistillSegMeta (the class map); the element posts
 * `distill-stats` element messages every `stats-interval` ms. With `sync=false` a frame may be
 * held back up to `teacher-wait` ms for the teacher's answer to it, which it then shows (or a
 * later frame's, when nearer); the element reports that wait as latency.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 filesrc location=vtest.avi ! decodebin ! videoconvert ! \
 *     distillseg teacher-url=http://127.0.0.1:8000 ! videoconvert ! autovideosink
 * ]|
 */
#include <string.h>

#include "gstdistillseg.h"
#include "gstdistillsegmeta.h"
#include "render.h"

GST_DEBUG_CATEGORY_STATIC(gst_distill_seg_debug);
#define GST_CAT_DEFAULT gst_distill_seg_debug

enum {
  PROP_0,
  PROP_TEACHER_URL,
  PROP_TEACHER_MODEL,
  PROP_TEACHER_TOKEN_FILE,
  PROP_TEACHER_TIMEOUT,
  PROP_TEACHER_ENCODING,
  PROP_TEACHER_MAX_SIDE,
  PROP_TEACHER_INFLIGHT,
  PROP_TEACHER_CONFIDENCE,
  PROP_TEACHER_CA_FILE,
  PROP_NUM_CLASSES,
  PROP_INFERENCE_WIDTH,
  PROP_INFERENCE_HEIGHT,
  PROP_INFERENCE_LONG_SIDE,
  PROP_MAX_INFERENCE_LONG_SIDE,
  PROP_INFERENCE_BUDGET,
  PROP_CHECKPOINT,
  PROP_CHECKPOINT_OUT,
  PROP_CHECKPOINT_INTERVAL,
  PROP_MIN_STRIDE,
  PROP_MAX_STRIDE,
  PROP_ACCURACY_THRESHOLD,
  PROP_MAX_UPDATES,
  PROP_LEARNING_RATE,
  PROP_OPTIMIZER,
  PROP_TRAIN,
  PROP_SYNC,
  PROP_MEASURE_AT_FRAME_SIZE,
  PROP_FUSE_TEACHER,
  PROP_FOLLOW_MOTION,
  PROP_TEACHER_WAIT,
  PROP_OUTPUT,
  PROP_THREADS,
  PROP_TRAIN_THREADS,
  PROP_TRAIN_NICE,
  PROP_STATS_INTERVAL,
};

/* The teacher's defaults are the teacher client's (teacher_client.h), the policy's and the
 * trainer's the engine's (distill.h). */
#define DEFAULT_PROP_TEACHER_URL NULL
#define DEFAULT_PROP_TEACHER_MODEL TEACHER_DEFAULT_MODEL
#define DEFAULT_PROP_TEACHER_TOKEN_FILE NULL
#define DEFAULT_PROP_TEACHER_TIMEOUT TEACHER_DEFAULT_TIMEOUT_MS
#define DEFAULT_PROP_TEACHER_ENCODING TEACHER_DEFAULT_ENCODING
#define DEFAULT_PROP_TEACHER_MAX_SIDE 0
#define DEFAULT_PROP_TEACHER_INFLIGHT TEACHER_DEFAULT_INFLIGHT
#define DEFAULT_PROP_TEACHER_CONFIDENCE TEACHER_DEFAULT_CONFIDENCE
#define DEFAULT_PROP_TEACHER_CA_FILE NULL
#define DEFAULT_PROP_NUM_CLASSES 2
#define DEFAULT_PROP_INFERENCE_SIZE 0
#define DEFAULT_PROP_INFERENCE_BUDGET DISTILL_DEFAULT_INFERENCE_BUDGET
#define DEFAULT_PROP_MAX_INFERENCE_LONG_SIDE 640
#define DEFAULT_PROP_CHECKPOINT NULL
#define DEFAULT_PROP_CHECKPOINT_OUT NULL
#define DEFAULT_PROP_CHECKPOINT_INTERVAL 300
#define DEFAULT_PROP_MIN_STRIDE DISTILL_DEFAULT_MIN_STRIDE
#define DEFAULT_PROP_MAX_STRIDE DISTILL_DEFAULT_MAX_STRIDE
#define DEFAULT_PROP_ACCURACY_THRESHOLD DISTILL_DEFAULT_ACCURACY_THRESHOLD
#define DEFAULT_PROP_MAX_UPDATES DISTILL_DEFAULT_MAX_UPDATES
#define DEFAULT_PROP_LEARNING_RATE DISTILL_DEFAULT_LEARNING_RATE
#define DEFAULT_PROP_OPTIMIZER ((GstDistillOptimizer)DISTILL_DEFAULT_OPTIMIZER)
#define DEFAULT_PROP_TRAIN TRUE
#define DEFAULT_PROP_SYNC FALSE
#define DEFAULT_PROP_MEASURE_AT_FRAME_SIZE FALSE
#define DEFAULT_PROP_FUSE_TEACHER TRUE
#define DEFAULT_PROP_FOLLOW_MOTION TRUE
#define DEFAULT_PROP_TEACHER_WAIT 500
#define DEFAULT_PROP_OUTPUT GST_DISTILL_OUTPUT_OVERLAY
#define DEFAULT_PROP_THREADS 0
#define DEFAULT_PROP_TRAIN_THREADS 0
#define DEFAULT_PROP_TRAIN_NICE DISTILL_DEFAULT_TRAIN_NICE
#define DEFAULT_PROP_STATS_INTERVAL 1000

/* The long side of the student's input when inference-width/-height and inference-long-side
 * are 0: in sync mode (and without training), and in real time with training, where an update
 * at a quarter of the cost lets the student adapt four times as often (docs/experiments.md,
 * "A smaller input in real time"). */
#define DEFAULT_INFERENCE_LONG_SIDE 640
#define DEFAULT_REALTIME_LONG_SIDE 320

/* Real time: every this many frames, warn (once) if inference takes more than its budget at the
 * smallest size the governor may use, or, without the governor, this share of a frame's
 * interval (docs/experiments.md, "The head of 16 channels, and 2 AVX2 cores"). */
#define SATURATION_FRAMES 50
#define SATURATION_SHARE 0.75

#define VIDEO_FORMATS "{ RGB, BGR, RGBx, BGRx, xRGB, xBGR, RGBA, BGRA, I420, NV12 }"

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_VIDEO_CAPS_MAKE(VIDEO_FORMATS)));

static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS,
                            GST_STATIC_CAPS(GST_VIDEO_CAPS_MAKE(VIDEO_FORMATS) ";" GST_VIDEO_CAPS_MAKE("GRAY8")));

#define gst_distill_seg_parent_class parent_class
G_DEFINE_TYPE(GstDistillSeg, gst_distill_seg, GST_TYPE_VIDEO_FILTER);
GST_ELEMENT_REGISTER_DEFINE(distillseg, "distillseg", GST_RANK_NONE, GST_TYPE_DISTILL_SEG);

#define GST_TYPE_DISTILL_OUTPUT (gst_distill_output_get_type())
static GType gst_distill_output_get_type(void)
{
  static GType type;
  static const GEnumValue values[] = {
      {GST_DISTILL_OUTPUT_PASSTHROUGH, "The input video, unchanged (the meta carries the mask)",
       "passthrough"},
      {GST_DISTILL_OUTPUT_OVERLAY, "The input video with the classes blended over it", "overlay"},
      {GST_DISTILL_OUTPUT_MASK, "GRAY8 frames of the input's size; pixel value = class index",
       "mask"},
      {0, NULL, NULL}};

  if (g_once_init_enter(&type))
    g_once_init_leave(&type, g_enum_register_static("GstDistillOutput", values));
  return type;
}

#define GST_TYPE_DISTILL_TEACHER_ENCODING (gst_distill_teacher_encoding_get_type())
static GType gst_distill_teacher_encoding_get_type(void)
{
  static GType type;
  static const GEnumValue values[] = {
      {TEACHER_ENCODING_RAW, "UINT8 RGB tensor [1,H,W,3]", "raw"},
      {TEACHER_ENCODING_JPEG, "BYTES tensor [1] holding a JPEG (less bandwidth)", "jpeg"},
      {0, NULL, NULL}};

  if (g_once_init_enter(&type))
    g_once_init_leave(&type, g_enum_register_static("GstDistillTeacherEncoding", values));
  return type;
}

#define GST_TYPE_DISTILL_OPTIMIZER (gst_distill_optimizer_get_type())
static GType gst_distill_optimizer_get_type(void)
{
  static GType type;
  static const GEnumValue values[] = {
      {GST_DISTILL_OPTIMIZER_SGD, "SGD with momentum 0.9", "sgd"},
      {GST_DISTILL_OPTIMIZER_ADAM, "Adam", "adam"},
      {0, NULL, NULL}};

  if (g_once_init_enter(&type))
    g_once_init_leave(&type, g_enum_register_static("GstDistillOptimizer", values));
  return type;
}


/* ---- checkpoints ---------------------------------------------------------------------------- */

static void save_checkpoint(GstDistillSeg *self, const gchar *path)
{
  g_autoptr(GError) error = NULL;

  if (distill_engine_save(self->engine, path, &error))
    GST_INFO_OBJECT(self, "saved the student to %s", path);
  else
    GST_ELEMENT_WARNING(self, RESOURCE, WRITE,
                        ("Cannot save the student to \"%s\": %s", path, error->message),
                        ("Check that the folder exists, is writable and has space; the previous "
                         "file, if any, is left intact."));
}

/* Periodic saves run on their own thread: a fsync must not stall the stream. */
static gpointer periodic_save(gpointer data)
{
  GstDistillSeg *self = data;
  gchar *path;

  GST_OBJECT_LOCK(self);
  path = g_strdup(self->checkpoint_out);
  GST_OBJECT_UNLOCK(self);
  if (path)
    save_checkpoint(self, path);
  g_free(path);
  return NULL;
}

static void join_saver(GstDistillSeg *self)
{
  if (self->saver)
    g_thread_join(g_steal_pointer(&self->saver));
}

/* ---- teacher -------------------------------------------------------------------------------- */

/* Converts frame into packed RGB pixels of the converter's output size (rgb_info_like). An
 * interlaced frame goes as the progressive one it is laid out as (see set_info). */
static void convert_to_rgb(GstVideoConverter *converter, GstVideoFrame *frame, guint8 *pixels,
                           int width, int height)
{
  GstVideoFrame whole = *frame, rgb = {0};

  whole.info.interlace_mode = GST_VIDEO_INTERLACE_MODE_PROGRESSIVE;
  whole.flags &= ~(GST_VIDEO_FRAME_FLAG_INTERLACED | GST_VIDEO_FRAME_FLAG_TFF |
                   GST_VIDEO_FRAME_FLAG_RFF | GST_VIDEO_FRAME_FLAG_ONEFIELD);
  gst_video_info_set_format(&rgb.info, GST_VIDEO_FORMAT_RGB, width, height);
  rgb.info.stride[0] = width * 3;
  rgb.data[0] = pixels;
  gst_video_converter_frame(converter, &whole, &rgb);
}

typedef struct {
  GstDistillSeg *self;
  DistillQuery *query;
} TeacherQuery;

/* A teacher that fails fails many queries in a row: the bus hears of the first failure of a
 * burst and of the answer that ends it; distill-stats counts every one. */
static void report_teacher_health(GstDistillSeg *self, const GError *error)
{
  if (!error) {
    gint failures = g_atomic_int_exchange(&self->teacher_failures, 0);
    if (failures)
      GST_ELEMENT_INFO(self, RESOURCE, READ, ("The teacher answers again after %d failed "
                       "queries; training resumes.", failures), (NULL));
  } else if (!g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED) &&
             g_atomic_int_add(&self->teacher_failures, 1) == 0) {
    GST_ELEMENT_WARNING(self, RESOURCE, READ, ("The teacher failed: %s", error->message),
                        ("The stream goes on without training until the teacher answers; "
                         "failures are counted in distill-stats teacher-errors. Check "
                         "teacher-url, teacher-model, teacher-token-file and the server."));
  }
}

/* On the teacher client's thread. */
static void on_teacher_result(TeacherResult *result, const GError *error, gpointer user_data)
{
  TeacherQuery *tq = user_data;
  GstDistillSeg *self = tq->self;
  g_autoptr(GError) refused = NULL;

  if (!result) {
    if (!g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
      GST_DEBUG_OBJECT(self, "teacher query %" G_GUINT64_FORMAT " failed: %s",
                       distill_query_id(tq->query), error->message);
    distill_query_fail(tq->query);
  } else if (!distill_query_answer_shown(tq->query, result->labels, result->height,
                                         result->width, result->shown_labels,
                                         result->shown_height, result->shown_width, &refused)) {
    GST_DEBUG_OBJECT(self, "teacher answer dropped: %s", refused->message);
  }
  report_teacher_health(self, error);
  g_free(tq);
}

/* Whether the teacher can take a query now: the elements sharing it (teacher_group.h) rank
 * their queries by their recent accuracy. */
static gboolean teacher_has_room(GstDistillSeg *self)
{
  DistillStats stats;

  distill_engine_get_stats(self->engine, &stats);
  teacher_member_set_need(self->teacher, stats.last_miou);
  return teacher_member_outstanding(self->teacher) < self->teacher_inflight;
}

/* Sends the frame of query to the teacher, through the arbiter of the elements sharing it. */
static void send_to_teacher(GstDistillSeg *self, GstVideoFrame *frame, DistillQuery *query)
{
  g_autoptr(GError) error = NULL;
  TeacherFrame tf = {
      .width = GST_VIDEO_FRAME_WIDTH(frame),
      .height = GST_VIDEO_FRAME_HEIGHT(frame),
      .frame = self->frame,
  };

  distill_query_label_size(query, &tf.out_height, &tf.out_width);
  if (self->measure_at_frame_size) {
    tf.shown_width = tf.width;
    tf.shown_height = tf.height;
  }
  if (self->to_rgb_full) {
    convert_to_rgb(self->to_rgb_full, frame, self->rgb_full, tf.width, tf.height);
    tf.rgb = self->rgb_full;
    tf.stride = tf.width * 3;
  } else {
    tf.rgb = GST_VIDEO_FRAME_PLANE_DATA(frame, 0);
    tf.stride = GST_VIDEO_FRAME_PLANE_STRIDE(frame, 0);
  }

  GST_LOG_OBJECT(self, "teacher query %" G_GUINT64_FORMAT " for frame %" G_GUINT64_FORMAT,
                 distill_query_id(query), (guint64)self->frame);
  TeacherQuery *tq = g_new(TeacherQuery, 1);
  tq->self = self;
  tq->query = query;
  if (!teacher_member_request(self->teacher, &tf, on_teacher_result, tq, &error)) {
    GST_DEBUG_OBJECT(self, "teacher query not sent: %s", error ? error->message : "busy");
    distill_query_fail(query);
    g_free(tq);
  }
}

/* ---- per frame ------------------------------------------------------------------------------ */

/* Packed RGB variants, straight from the frame. */
static void input_from_packed_rgb(GstDistillSeg *self, GstVideoFrame *frame)
{
  distill_input_from_rgb(GST_VIDEO_FRAME_PLANE_DATA(frame, 0), GST_VIDEO_FRAME_WIDTH(frame),
                         GST_VIDEO_FRAME_HEIGHT(frame), GST_VIDEO_FRAME_PLANE_STRIDE(frame, 0),
                         self->pixel_stride, self->rgb_offset, &self->input);
}

/* YUV formats: converted to RGB at the input's size first. */
static void input_through_rgb(GstDistillSeg *self, GstVideoFrame *frame)
{
  convert_to_rgb(self->to_rgb_small, frame, self->rgb_small, self->input_w, self->input_h);
  distill_input_from_rgb(self->rgb_small, self->input_w, self->input_h, self->input_w * 3, 3,
                         NULL, &self->input);
}

static void post_stats(GstDistillSeg *self, gint64 now)
{
  DistillStats stats;
  TeacherCounters counters = {0};
  double seconds = (now - self->last_stats_time) / (double)G_TIME_SPAN_SECOND;

  distill_engine_get_stats(self->engine, &stats);
  if (self->stream)
    teacher_stream_get_counters(self->stream, &counters);
  GstStructure *s = gst_structure_new(
      "distill-stats", "frames", G_TYPE_UINT64, stats.frames, "teacher-queries", G_TYPE_UINT64,
      stats.teacher_queries, "teacher-errors", G_TYPE_UINT64, stats.teacher_errors, "updates",
      G_TYPE_UINT64, stats.updates, "stride", G_TYPE_UINT, stats.stride, "fps", G_TYPE_DOUBLE,
      seconds > 0 ? (stats.frames - self->last_stats_frames) / seconds : 0.0, "student-ms",
      G_TYPE_DOUBLE, stats.student_ms, "teacher-latency-ms", G_TYPE_DOUBLE,
      counters.mean_latency_ms, "last-miou", G_TYPE_DOUBLE, stats.last_miou, "shown-miou",
      G_TYPE_DOUBLE, stats.shown_miou, "train-ms",
      G_TYPE_DOUBLE, stats.train_ms, "teacher-bytes-sent", G_TYPE_UINT64, counters.bytes_sent,
      "teacher-bytes-received", G_TYPE_UINT64, counters.bytes_received, "rollbacks",
      G_TYPE_UINT64, stats.rollbacks, "arch", G_TYPE_STRING, distill_engine_arch(self->engine),
      "input-width", G_TYPE_INT, stats.input_w, "input-height", G_TYPE_INT, stats.input_h,
      "inference-share", G_TYPE_DOUBLE, stats.inference_share, "train-share", G_TYPE_DOUBLE,
      seconds > 0 ? (stats.train_ms_total - self->last_stats_train_ms) / (1000.0 * seconds)
                  : 0.0,
      "hibernating", G_TYPE_BOOLEAN, stats.hibernating, NULL);
  gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), s));
  self->last_stats_time = now;
  self->last_stats_frames = stats.frames;
  self->last_stats_train_ms = stats.train_ms_total;
}

/* Says once per rollback of the engine's trainer that training collapsed and was undone. */
static void warn_of_rollback(GstDistillSeg *self)
{
  DistillStats stats;

  if (!distill_engine_rollback_news(self->engine, &stats))
    return;
  GST_ELEMENT_WARNING(self, STREAM, FAILED,
                      ("Online training collapsed (%s): the student went back to its last good "
                       "weights (rollback %" G_GUINT64_FORMAT ").",
                       distill_collapse_describe(stats.last_collapse), stats.rollbacks),
                      ("%s", stats.last_collapse == DISTILL_COLLAPSE_AGREEMENT
                                 ? "Check the teacher at teacher-url: its labels no longer agree "
                                   "with what it taught before (a wrong model, class order or "
                                   "input)."
                                 : "Lower learning-rate: the steps were too large."));
}

/* The governor's report, once: in real time, the student's inference takes more of each frame's
 * interval than inference-budget even at the smallest input the governor uses (or, with the
 * input size set, SATURATION_SHARE). The trainer, at a lower priority, then gets next to
 * nothing and the student stops adapting to the scene with no other sign of it. */
static void warn_if_inference_saturates(GstDistillSeg *self)
{
  const DistillConfig *cfg = distill_engine_get_config(self->engine);
  gboolean governed = cfg->inference_budget > 0.0;
  DistillStats stats;

  /* Looked at every SATURATION_FRAMES frames: the stats take the lock the trainer holds. */
  if (self->saturation_warned || self->frame % SATURATION_FRAMES || !self->teacher ||
      !cfg->train || cfg->sync || self->interval_ms <= 0.0)
    return;
  distill_engine_get_stats(self->engine, &stats);
  int floor = MIN(MAX(self->input_w, self->input_h), DISTILL_GOVERNOR_FLOOR);
  if (stats.frames < SATURATION_FRAMES || (governed && MAX(stats.input_w, stats.input_h) > floor))
    return;
  if (stats.hibernating ||
      stats.inference_share <= (governed ? cfg->inference_budget : SATURATION_SHARE))
    return;
  self->saturation_warned = TRUE;
  GST_ELEMENT_WARNING(self, RESOURCE, BUSY,
                      ("The student takes %.1f ms of each %.1f ms frame (%d%%) at an input of "
                       "%dx%d: online training gets almost no time and the student stops "
                       "adapting.", stats.inference_share * self->interval_ms, self->interval_ms,
                       (int)(100.0 * stats.inference_share + 0.5), stats.input_w, stats.input_h),
                      ("%s", governed ? "Lower the frame rate (videorate), run fewer cameras in "
                                        "this process, or give it more cores."
                                      : "Unset inference-width and inference-height (the "
                                        "governor then lowers the input size), lower the frame "
                                        "rate (videorate), or give the pipeline more cores."));
}

static void after_frame(GstDistillSeg *self)
{
  gint64 now = g_get_monotonic_time();
  guint stats_interval, checkpoint_interval;
  gboolean save;

  warn_of_rollback(self);
  warn_if_inference_saturates(self);

  GST_OBJECT_LOCK(self);
  stats_interval = self->stats_interval;
  checkpoint_interval = self->checkpoint_interval;
  save = self->checkpoint_out != NULL;
  GST_OBJECT_UNLOCK(self);

  if (stats_interval && now - self->last_stats_time >= stats_interval * G_TIME_SPAN_MILLISECOND)
    post_stats(self, now);
  if (save && checkpoint_interval &&
      now - self->last_save_time >= checkpoint_interval * G_TIME_SPAN_SECOND) {
    join_saver(self);
    self->saver = g_thread_new("distill-save", periodic_save, self);
    self->last_save_time = now;
  }
}

/* The class map at logits size as a GRAY8 buffer in a meta on outbuf. */
static void attach_meta(GstDistillSeg *self, GstVideoFrame *frame, GstBuffer *outbuf)
{
  GstBuffer *mask = NULL;
  GstVideoFrame mf;

  if (gst_buffer_pool_acquire_buffer(self->mask_pool, &mask, NULL) != GST_FLOW_OK)
    return;
  if (!gst_video_frame_map(&mf, &self->mask_info, mask, GST_MAP_WRITE)) {
    gst_buffer_unref(mask);
    return;
  }
  for (int y = 0; y < self->label_h; y++)
    memcpy((guint8 *)GST_VIDEO_FRAME_PLANE_DATA(&mf, 0) + y * GST_VIDEO_FRAME_PLANE_STRIDE(&mf, 0),
           self->classes + (size_t)y * self->label_w, self->label_w);
  gst_video_frame_unmap(&mf);
  gst_buffer_add_distill_seg_meta(outbuf, mask, self->num_classes, GST_VIDEO_FRAME_WIDTH(frame),
                                  GST_VIDEO_FRAME_HEIGHT(frame));
}

/* The interval the governor's budget is a share of: from the caps' rate, or from the
 * timestamps when they give none (framerate=0/1: a camera's variable rate). */
static void update_frame_interval(GstDistillSeg *self, GstBuffer *buffer)
{
  const GstVideoInfo *info = &GST_VIDEO_FILTER(self)->in_info;
  GstClockTime pts = GST_BUFFER_PTS(buffer);

  if (info->fps_n > 0 && info->fps_d > 0) {
    self->interval_ms = 1000.0 * info->fps_d / info->fps_n;
  } else if (GST_CLOCK_TIME_IS_VALID(pts) && GST_CLOCK_TIME_IS_VALID(self->last_pts)) {
    double delta_ms = ((double)pts - (double)self->last_pts) / GST_MSECOND;
    self->interval_ms = distill_frame_interval(self->interval_ms, delta_ms);
  }
  self->last_pts = pts;
  distill_engine_set_frame_interval(self->engine, self->interval_ms);
}

static gboolean plan_input(GstDistillSeg *self, int long_side);

/* Runs the student on frame, and sends it to the teacher when its turn comes; its class map
 * waits in the engine until the frame is shown (the transform, below). */
static void segment_frame(GstDistillSeg *self, GstVideoFrame *frame)
{
  DistillQuery *query = NULL;

  update_frame_interval(self, frame->buffer);
  self->to_input(self, frame);
  /* While the teacher has all it may take, the frame due for it waits: the policy asks again at
   * the next frame. */
  if (self->teacher && teacher_has_room(self))
    query = distill_engine_wants_teacher(self->engine, &self->input);
  if (query)
    send_to_teacher(self, frame, query);
  distill_engine_infer(self->engine, &self->input);
  self->frame++;
  after_frame(self);
}

/* A frame held back for the teacher (teacher-wait), with when it came (monotonic µs); or an
 * event that came after the frames before it (a tag: decoders send bitrates every few frames),
 * sent on in its turn so that it neither overtakes them nor pushes them out before their
 * answers. */
typedef struct {
  GstBuffer *buffer;
  GstEvent *event;
  gint64 arrived;
} WaitingFrame;

/* Whether the oldest frame waiting has waited teacher-wait: since it came, or in the stream's
 * time, by the newest frame's timestamp. A live source gives both alike; a file read as fast
 * as downstream takes it comes in bursts, and its frames' timestamps bound the frames held. */
static gboolean waited_enough(GstDistillSeg *self, const WaitingFrame *w)
{
  GstClockTime pts = GST_BUFFER_PTS(w->buffer);
  if (g_get_monotonic_time() - w->arrived >= self->wait_us)
    return TRUE;
  return GST_CLOCK_TIME_IS_VALID(pts) && GST_CLOCK_TIME_IS_VALID(self->last_pts) &&
         self->last_pts >= pts + self->wait_us * GST_USECOND;
}

static void waiting_frame_free(gpointer data)
{
  WaitingFrame *w = data;
  if (w->buffer)
    gst_buffer_unref(w->buffer);
  if (w->event)
    gst_event_unref(w->event);
  g_free(w);
}

/* Sends on the events at the head of the line; the oldest frame waiting, if any, is then at its
 * head. */
static void send_waiting_events(GstDistillSeg *self)
{
  WaitingFrame *w;
  while ((w = g_queue_peek_head(&self->waiting)) && w->event) {
    g_queue_pop_head(&self->waiting);
    gst_pad_push_event(GST_BASE_TRANSFORM_SRC_PAD(self), w->event);
    g_free(w);
  }
}

/* The oldest frame waiting goes out: the base class's output path (a writable buffer, or a new
 * one for output=mask) then the transform below, which shows its class map. */
static GstFlowReturn show_oldest(GstDistillSeg *self, GstBuffer **outbuf)
{
  GstBaseTransform *trans = GST_BASE_TRANSFORM(self);
  WaitingFrame *w = g_queue_pop_head(&self->waiting);

  trans->queued_buf = w->buffer;
  g_free(w);
  return GST_BASE_TRANSFORM_CLASS(parent_class)->generate_output(trans, outbuf);
}

/* Pushes every frame waiting, in order: at once, or (wait, at the end of the stream) each when
 * its answers are in or its time is up. */
static GstFlowReturn push_waiting(GstDistillSeg *self, gboolean wait)
{
  GstFlowReturn ret = GST_FLOW_OK;

  while (ret == GST_FLOW_OK) {
    send_waiting_events(self);
    WaitingFrame *w = g_queue_peek_head(&self->waiting);
    if (!w)
      break;
    GstBuffer *out = NULL;
    if (wait)
      distill_engine_show_ready(self->engine, w->arrived + self->wait_us);
    ret = show_oldest(self, &out);
    if (ret == GST_FLOW_OK && out)
      ret = gst_pad_push(GST_BASE_TRANSFORM_SRC_PAD(self), out);
  }
  return ret;
}

static void drop_waiting(GstDistillSeg *self)
{
  g_queue_clear_full(&self->waiting, waiting_frame_free);
  if (self->engine)
    distill_engine_drop_pending(self->engine);
}

/* The input at the training size the engine asks for (distill_engine_input_long_side). The
 * frames waiting were inferred at the size before: they go out first, each once the answers it
 * waits for are in or its time is up (the stream stalls at most teacher-wait, once a resize:
 * rushed out, the frames before a teacher frame would miss its answer). */
static GstFlowReturn follow_training_size(GstDistillSeg *self)
{
  int long_side = distill_engine_input_long_side(self->engine);
  if (!long_side || long_side == MAX(self->input_w, self->input_h))
    return GST_FLOW_OK;
  GstFlowReturn ret = push_waiting(self, TRUE);
  if (ret != GST_FLOW_OK)
    return ret;
  if (plan_input(self, long_side))
    return GST_FLOW_OK;
  GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Cannot allocate class map buffers."),
                    ("for a student input of long side %d", long_side));
  return GST_FLOW_ERROR;
}

/* A frame comes in: the student runs on it, and it goes to the teacher when its turn comes. It
 * then waits (teacher-wait) or goes out at once (generate_output). */
static GstFlowReturn gst_distill_seg_submit_input_buffer(GstBaseTransform *trans,
                                                         gboolean is_discont, GstBuffer *input)
{
  GstDistillSeg *self = GST_DISTILL_SEG(trans);
  GstVideoFrame frame;
  GstFlowReturn ret;

  /* The base class drops frames QoS finds late, and keeps the others in queued_buf. */
  ret = GST_BASE_TRANSFORM_CLASS(parent_class)->submit_input_buffer(trans, is_discont, input);
  if (ret != GST_FLOW_OK || !trans->queued_buf)
    return ret;
  GstBuffer *buffer = g_steal_pointer(&trans->queued_buf);
  ret = follow_training_size(self);
  if (ret != GST_FLOW_OK)
    goto done;
  if (!gst_video_frame_map(&frame, &GST_VIDEO_FILTER(self)->in_info, buffer, GST_MAP_READ))
    goto no_frame;
  segment_frame(self, &frame);
  gst_video_frame_unmap(&frame);
  /* A frame held back is a copy: upstream's buffer goes back to its pool (a camera's holds a
   * few) now, not after the wait. One that goes out at once (generate_output: nothing before
   * it, no answer due) is not held. */
  if (self->wait_us &&
      (!g_queue_is_empty(&self->waiting) || !distill_engine_show_ready(self->engine, 0))) {
    GstBuffer *copy = gst_buffer_copy_deep(buffer);
    gst_buffer_unref(buffer);
    buffer = copy;
  }
  WaitingFrame *w = g_new0(WaitingFrame, 1);
  w->buffer = g_steal_pointer(&buffer);
  w->arrived = g_get_monotonic_time();
  g_queue_push_tail(&self->waiting, w);

done:
  if (buffer)
    gst_buffer_unref(buffer);
  return ret;

  /* ERRORS */
no_frame:
  {
    GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("Cannot read the frame."),
                      ("The buffer is smaller than its caps say (%" G_GSIZE_FORMAT " bytes).",
                       gst_buffer_get_size(buffer)));
    ret = GST_FLOW_ERROR;
    goto done;
  }
}

/* The oldest frame goes out once its answers are in, its wait is over, or the engine holds all
 * the frames it can; the base class calls this until it gives no buffer. */
static GstFlowReturn gst_distill_seg_generate_output(GstBaseTransform *trans, GstBuffer **outbuf)
{
  GstDistillSeg *self = GST_DISTILL_SEG(trans);

  *outbuf = NULL;
  send_waiting_events(self);
  WaitingFrame *w = g_queue_peek_head(&self->waiting);
  if (!w)
    return GST_FLOW_OK;
  if (waited_enough(self, w) || distill_engine_pending(self->engine) >= DISTILL_SHOW_PENDING_MAX ||
      distill_engine_show_ready(self->engine, 0))
    return show_oldest(self, outbuf);
  return GST_FLOW_OK;
}

static GstFlowReturn gst_distill_seg_transform_frame_ip(GstVideoFilter *filter,
                                                        GstVideoFrame *frame)
{
  GstDistillSeg *self = GST_DISTILL_SEG(filter);

  distill_engine_show(self->engine, self->classes);
  attach_meta(self, frame, frame->buffer);
  if (self->output == GST_DISTILL_OUTPUT_OVERLAY) {
    int width = GST_VIDEO_FRAME_WIDTH(frame), height = GST_VIDEO_FRAME_HEIGHT(frame);
    distill_engine_class_map(self->engine, width, height, self->frame_classes, width);
    render_overlay(frame, self->frame_classes, width, height);
  }
  return GST_FLOW_OK;
}

static GstFlowReturn gst_distill_seg_transform_frame(GstVideoFilter *filter, GstVideoFrame *in,
                                                     GstVideoFrame *out)
{
  GstDistillSeg *self = GST_DISTILL_SEG(filter);

  /* The GRAY8 frame is the class map at the frame's size. */
  distill_engine_show(self->engine, self->classes);
  attach_meta(self, in, out->buffer);
  distill_engine_class_map(self->engine, GST_VIDEO_FRAME_WIDTH(out), GST_VIDEO_FRAME_HEIGHT(out),
                           GST_VIDEO_FRAME_PLANE_DATA(out, 0),
                           GST_VIDEO_FRAME_PLANE_STRIDE(out, 0));
  return GST_FLOW_OK;
}

/* The frames held back for the teacher add teacher-wait to the latency downstream sees. */
static gboolean gst_distill_seg_query(GstBaseTransform *trans, GstPadDirection direction,
                                      GstQuery *query)
{
  GstDistillSeg *self = GST_DISTILL_SEG(trans);
  gboolean live;
  GstClockTime min, max;

  if (!GST_BASE_TRANSFORM_CLASS(parent_class)->query(trans, direction, query))
    return FALSE;
  if (direction == GST_PAD_SRC && GST_QUERY_TYPE(query) == GST_QUERY_LATENCY && self->wait_us) {
    gst_query_parse_latency(query, &live, &min, &max);
    min += self->wait_us * GST_USECOND;
    if (GST_CLOCK_TIME_IS_VALID(max))
      max += self->wait_us * GST_USECOND;
    gst_query_set_latency(query, live, min, max);
  }
  return TRUE;
}

/* ---- negotiation ---------------------------------------------------------------------------- */


/* output=mask turns any accepted format into GRAY8 of the same size, and back. */
static GstCaps *gst_distill_seg_transform_caps(GstBaseTransform *trans, GstPadDirection direction,
                                               GstCaps *caps, GstCaps *filter)
{
  GstDistillSeg *self = GST_DISTILL_SEG(trans);
  GstCaps *result;
  gboolean mask;

  GST_OBJECT_LOCK(self);
  mask = self->output == GST_DISTILL_OUTPUT_MASK;
  GST_OBJECT_UNLOCK(self);

  if (!mask) {
    result = gst_caps_ref(caps);
  } else {
    GstCaps *templ = gst_static_pad_template_get_caps(direction == GST_PAD_SINK ? &src_template
                                                                                 : &sink_template);
    result = gst_caps_new_empty();
    for (guint i = 0; i < gst_caps_get_size(caps); i++) {
      GstStructure *s = gst_structure_copy(gst_caps_get_structure(caps, i));
      if (direction == GST_PAD_SINK)
        gst_structure_set(s, "format", G_TYPE_STRING, "GRAY8", NULL);
      else
        gst_structure_remove_fields(s, "format", "colorimetry", "chroma-site", NULL);
      result = gst_caps_merge_structure(result, s);
    }
    GstCaps *allowed = gst_caps_intersect_full(result, templ, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref(result);
    gst_caps_unref(templ);
    result = allowed;
  }
  if (filter) {
    GstCaps *filtered = gst_caps_intersect_full(filter, result, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref(result);
    result = filtered;
  }
  GST_DEBUG_OBJECT(self, "%s caps %" GST_PTR_FORMAT " -> %" GST_PTR_FORMAT,
                   direction == GST_PAD_SINK ? "sink" : "src", caps, result);
  return result;
}


static gboolean realtime_training(GstDistillSeg *self)
{
  return !self->sync && self->train && self->teacher_url && *self->teacher_url;
}

/* inference-width/-height, or the frame scaled so its long side is at most wanted, or
 * without it (0) inference-long-side (by default 640, or 320 in real time with training),
 * aspect kept, both sides even. */
static void inference_size(GstDistillSeg *self, int frame_w, int frame_h, int wanted, int *w,
                           int *h)
{
  int limit = wanted                          ? wanted
              : self->inference_long_side     ? (int)self->inference_long_side
              : realtime_training(self)       ? DEFAULT_REALTIME_LONG_SIDE
                                              : DEFAULT_INFERENCE_LONG_SIDE;
  int long_side = MAX(frame_w, frame_h);
  double scale = long_side > limit ? (double)limit / long_side : 1.0;

  *w = self->inference_width ? (int)self->inference_width : (int)(frame_w * scale / 2) * 2;
  *h = self->inference_height ? (int)self->inference_height : (int)(frame_h * scale / 2) * 2;
  *w = MAX(*w, 2);
  *h = MAX(*h, 2);
}

/* Packed RGB of width x height; the converter wants the rest (rate, aspect) as in in_info. */
static void rgb_info_like(const GstVideoInfo *in_info, int width, int height, GstVideoInfo *rgb)
{
  gst_video_info_set_format(rgb, GST_VIDEO_FORMAT_RGB, width, height);
  rgb->fps_n = in_info->fps_n;
  rgb->fps_d = in_info->fps_d;
  rgb->par_n = in_info->par_n;
  rgb->par_d = in_info->par_d;
  rgb->stride[0] = width * 3;
  rgb->size = (gsize)width * height * 3;
}

/* The largest long side the engine may grow the student's input to (max-inference-long-side,
 * the frame's own at most): only at the default size, in real time with training. */
static int largest_long_side(GstDistillSeg *self, int frame_w, int frame_h)
{
  if (!realtime_training(self) || self->inference_width || self->inference_height ||
      self->inference_long_side)
    return 0;
  return MIN((int)self->max_inference_long_side, MAX(frame_w, frame_h));
}

static void free_input_buffers(GstDistillSeg *self)
{
  g_clear_pointer(&self->to_rgb_small, gst_video_converter_free);
  g_clear_pointer(&self->rgb_small, g_free);
  g_clear_pointer(&self->input.data, g_free);
  g_clear_pointer(&self->classes, g_free);
  if (self->mask_pool) {
    gst_buffer_pool_set_active(self->mask_pool, FALSE);
    gst_clear_object(&self->mask_pool);
  }
}

static void free_frame_buffers(GstDistillSeg *self)
{
  free_input_buffers(self);
  g_clear_pointer(&self->to_rgb_full, gst_video_converter_free);
  g_clear_pointer(&self->rgb_full, g_free);
  g_clear_pointer(&self->frame_classes, g_free);
}

/* The student's input from frames of frame_info: straight from packed RGB, through a converter
 * to RGB at the input's size from YUV. */
static void choose_input_conversion(GstDistillSeg *self, const GstVideoInfo *frame_info)
{
  const GstVideoFormatInfo *finfo = frame_info->finfo;
  GstVideoInfo small;

  if (GST_VIDEO_FORMAT_INFO_IS_RGB(finfo)) {
    self->to_input = input_from_packed_rgb;
    self->pixel_stride = GST_VIDEO_FORMAT_INFO_PSTRIDE(finfo, 0);
    for (int c = 0; c < 3; c++)
      self->rgb_offset[c] = (int)GST_VIDEO_FORMAT_INFO_POFFSET(finfo, c);
    return;
  }
  self->to_input = input_through_rgb;
  rgb_info_like(frame_info, self->input_w, self->input_h, &small);
  self->to_rgb_small = gst_video_converter_new(
      frame_info, &small,
      gst_structure_new("options", GST_VIDEO_CONVERTER_OPT_RESAMPLER_METHOD,
                        GST_TYPE_VIDEO_RESAMPLER_METHOD, GST_VIDEO_RESAMPLER_METHOD_LINEAR, NULL));
  self->rgb_small = g_malloc((size_t)self->input_w * self->input_h * 3);
}

/* GRAY8 buffers of the class map's size, for the meta. */
static gboolean make_mask_pool(GstDistillSeg *self)
{
  GstStructure *config;
  GstCaps *caps;

  gst_video_info_set_format(&self->mask_info, GST_VIDEO_FORMAT_GRAY8, self->label_w,
                            self->label_h);
  self->mask_pool = gst_video_buffer_pool_new();
  config = gst_buffer_pool_get_config(self->mask_pool);
  caps = gst_video_info_to_caps(&self->mask_info);
  gst_buffer_pool_config_set_params(config, caps, (guint)self->mask_info.size, 2, 0);
  gst_buffer_pool_config_add_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
  gst_caps_unref(caps);
  return gst_buffer_pool_set_config(self->mask_pool, config) &&
         gst_buffer_pool_set_active(self->mask_pool, TRUE);
}

/* The student's input and class map buffers for self->frame_info at a long side (0 = the
 * properties' size, inference_size). */
static gboolean plan_input(GstDistillSeg *self, int long_side)
{
  const GstVideoInfo *info = &self->frame_info;

  free_input_buffers(self);
  inference_size(self, GST_VIDEO_INFO_WIDTH(info), GST_VIDEO_INFO_HEIGHT(info), long_side,
                 &self->input_w, &self->input_h);
  distill_engine_label_size(self->engine, self->input_h, self->input_w, &self->label_h,
                            &self->label_w);
  GST_INFO_OBJECT(self, "%dx%d %s frames, student input %dx%d, class map %dx%d",
                  GST_VIDEO_INFO_WIDTH(info), GST_VIDEO_INFO_HEIGHT(info),
                  GST_VIDEO_INFO_NAME(info), self->input_w, self->input_h, self->label_w,
                  self->label_h);
  self->input = feature_map(g_new(float, (size_t)self->input_w * self->input_h * 3),
                            self->input_h, self->input_w, 3);
  self->classes = g_malloc0((size_t)self->label_w * self->label_h);
  choose_input_conversion(self, info);
  return make_mask_pool(self);
}

/* The engine goes on through a change of size: the learned weights, the statistics and a round
 * in progress are kept. */
static gboolean gst_distill_seg_set_info(GstVideoFilter *filter, GstCaps *incaps,
                                         GstVideoInfo *in_info, GstCaps *outcaps,
                                         GstVideoInfo *out_info)
{
  GstDistillSeg *self = GST_DISTILL_SEG(filter);
  int fw = GST_VIDEO_INFO_WIDTH(in_info), fh = GST_VIDEO_INFO_HEIGHT(in_info);
  /* The student and the teacher see whole frames, both fields of interlaced ones (their layout
   * in memory is a progressive frame's): the converters scale them as progressive. Field by
   * field, GStreamer's scaler fails assertions on odd heights and crashes on 1-row frames. */
  self->frame_info = *in_info;
  self->frame_info.interlace_mode = GST_VIDEO_INTERLACE_MODE_PROGRESSIVE;

  /* passthrough and overlay work on the frame itself (made writable for the meta); mask writes
   * a new GRAY8 frame. */
  gst_base_transform_set_in_place(GST_BASE_TRANSFORM(filter),
                                  self->output != GST_DISTILL_OUTPUT_MASK);
  free_frame_buffers(self);
  if (self->output == GST_DISTILL_OUTPUT_OVERLAY)
    self->frame_classes = g_malloc((size_t)fw * fh);
  if (self->teacher && GST_VIDEO_INFO_FORMAT(in_info) != GST_VIDEO_FORMAT_RGB) {
    GstVideoInfo full;
    rgb_info_like(&self->frame_info, fw, fh, &full);
    self->to_rgb_full = gst_video_converter_new(&self->frame_info, &full, NULL);
    self->rgb_full = g_malloc((size_t)fw * fh * 3);
  }
  if (!plan_input(self, 0))
    goto no_mask_pool;
  distill_engine_set_input_range(self->engine, MAX(self->input_w, self->input_h),
                                 largest_long_side(self, fw, fh));
  return TRUE;

  /* ERRORS */
no_mask_pool:
  {
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Cannot allocate class map buffers."), (NULL));
    return FALSE;
  }
}

/* ---- events, start and stop ----------------------------------------------------------------- */

/* Events that say nothing of the frames' format or time line wait behind the frames held back
 * before them (a file's last frames come just before its stream-group-done); the others (caps,
 * segment, stream start, EOS) end the wait. */
static gboolean waits_in_line(GstEvent *event)
{
  switch (GST_EVENT_TYPE(event)) {
  case GST_EVENT_TAG:
  case GST_EVENT_GAP:
  case GST_EVENT_CUSTOM_DOWNSTREAM:
  case GST_EVENT_STREAM_GROUP_DONE:
  case GST_EVENT_SEGMENT_DONE:
    return TRUE;
  default:
    return FALSE;
  }
}

static gboolean gst_distill_seg_sink_event(GstBaseTransform *trans, GstEvent *event)
{
  GstDistillSeg *self = GST_DISTILL_SEG(trans);

  /* The frames waiting go out before what follows them: a tag or a stream-group-done waits in
   * line behind them; at the end of the stream they go once their answers are in or their time
   * is up; before new caps, a segment or a stream start, at once. A flush drops them. */
  if (GST_EVENT_TYPE(event) == GST_EVENT_FLUSH_STOP) {
    drop_waiting(self);
  } else if (waits_in_line(event) && !g_queue_is_empty(&self->waiting)) {
    WaitingFrame *w = g_new0(WaitingFrame, 1);
    w->event = event;
    g_queue_push_tail(&self->waiting, w);
    return TRUE;
  } else if (GST_EVENT_IS_SERIALIZED(event) && self->engine) {
    push_waiting(self, GST_EVENT_TYPE(event) == GST_EVENT_EOS);
  }

  if (GST_EVENT_TYPE(event) == GST_EVENT_EOS && self->engine) {
    gchar *path;
    GST_OBJECT_LOCK(self);
    path = g_strdup(self->checkpoint_out);
    GST_OBJECT_UNLOCK(self);
    join_saver(self);
    /* A rollback after the last frame is said too. */
    warn_of_rollback(self);
    if (self->last_stats_time && self->stats_interval)
      post_stats(self, g_get_monotonic_time());
    if (path)
      save_checkpoint(self, path);
    g_free(path);
  }
  return GST_BASE_TRANSFORM_CLASS(parent_class)->sink_event(trans, event);
}

/* GST_DEBUG=distillseg:5 shows how well each teacher frame was learned, to tune the policy by. */
static void log_round(const DistillRound *round, gpointer user_data)
{
  static const char *verdicts[] = {
      [DISTILL_ROUND_GOOD] = "good",
      [DISTILL_ROUND_BELOW] = "below the usual level",
      [DISTILL_ROUND_ROLLED_BACK] = "rolled back",
      [DISTILL_ROUND_UNCHECKED] = "unchecked",
  };

  GST_DEBUG_OBJECT(user_data, "round on teacher query %" G_GUINT64_FORMAT ": mIoU %.3f -> %.3f in "
                   "%u updates, stride %u, %s", round->query_id, round->miou_before,
                   round->miou_after, round->updates, round->stride, verdicts[round->verdict]);
  if (round->held_miou >= 0.0)
    GST_DEBUG_OBJECT(user_data, "fusion on teacher query %" G_GUINT64_FORMAT ": the held answer "
                     "%.3f, fused %.3f; the held answer's weight now %.2f", round->query_id,
                     round->held_miou, round->fused_miou, round->fusion_weight);
}

/* GST_DEBUG=distillseg:5 shows each change of the student's input size and why. */
static void log_resize(const DistillResize *r, gpointer user_data)
{
  GST_DEBUG_OBJECT(user_data, "student input %dx%d -> %dx%d: %s (inference %.1f ms of a %.1f ms "
                   "frame, other streams %.0f%%, budget %.0f%%)", r->from_w, r->from_h, r->to_w,
                   r->to_h, distill_resize_describe(r->reason), r->inference_ms, r->interval_ms,
                   100.0 * r->others_load, 100.0 * r->budget);
}

/* The engine's configuration from the properties, under the object lock. */
static void engine_config(GstDistillSeg *self, DistillConfig *cfg)
{
  distill_config_default(cfg);
  cfg->min_stride = self->min_stride;
  cfg->max_stride = self->max_stride;
  cfg->accuracy_threshold = self->accuracy_threshold;
  cfg->max_updates = self->max_updates;
  cfg->train = self->train;
  cfg->sync = self->sync;
  cfg->threads = (int)self->threads;
  cfg->train_threads = (int)self->train_threads;
  cfg->train_nice = (int)self->train_nice;
  /* Another optimizer brings its own learning rate unless one was set. */
  if ((OptimizerKind)self->optimizer != cfg->optimizer.kind)
    optimizer_config_default(&cfg->optimizer, (OptimizerKind)self->optimizer);
  if (self->learning_rate_set)
    cfg->optimizer.learning_rate = (float)self->learning_rate;
  cfg->teacher_inflight = self->teacher_inflight;
  cfg->teacher_timeout_ms = self->teacher_timeout;
  cfg->fuse_teacher = self->fuse_teacher;
  cfg->follow_motion = self->follow_motion;
  /* The governor adapts the size the element chose; one set by hand stays, and without a teacher
   * there is no training to make room for. */
  cfg->inference_budget = self->inference_width || !self->teacher_url || !*self->teacher_url
                              ? 0.0 : self->inference_budget;
  if (gst_debug_category_get_threshold(GST_CAT_DEFAULT) >= GST_LEVEL_DEBUG) {
    cfg->round_finished = log_round;
    cfg->resized = log_resize;
    cfg->round_user_data = self;
  }
}

static gboolean open_teacher(GstDistillSeg *self)
{
  g_autoptr(GError) error = NULL;
  TeacherClientConfig cfg;

  teacher_client_config_init(&cfg);
  cfg.urls = self->teacher_url;
  cfg.model = self->teacher_model;
  cfg.token_file = self->teacher_token_file;
  cfg.ca_file = self->teacher_ca_file;
  cfg.timeout_ms = self->teacher_timeout;
  cfg.encoding = self->teacher_encoding;
  cfg.max_side = self->teacher_max_side;
  cfg.inflight = self->teacher_inflight;
  cfg.confidence = self->teacher_confidence;
  /* Elements with the same teacher settings share one client (teacher_group.h). */
  self->teacher = teacher_group_join(&cfg, GST_OBJECT_NAME(self), &error);
  if (!self->teacher)
    goto no_client;
  self->stream = teacher_member_stream(self->teacher);
  g_atomic_int_set(&self->teacher_failures, 0);
  return TRUE;

  /* ERRORS */
no_client:
  {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("Cannot set up the teacher client: %s",
                      error->message),
                      ("Check teacher-url (http:// or https:// base URLs, comma-separated), "
                       "teacher-token-file and teacher-ca-file."));
    return FALSE;
  }
}

/* A failed start is not followed by stop: nothing may stay behind. */
static gboolean gst_distill_seg_start(GstBaseTransform *trans)
{
  GstDistillSeg *self = GST_DISTILL_SEG(trans);
  g_autoptr(GError) error = NULL;
  g_autoptr(GError) refused = NULL;
  g_autofree gchar *checkpoint = NULL;
  g_autofree gchar *origin = NULL;
  guint num_classes, min_stride, max_stride;
  DistillConfig cfg;
  Student *initial;

  GST_OBJECT_LOCK(self);
  min_stride = self->min_stride;
  max_stride = self->max_stride;
  if (min_stride > max_stride)
    goto bad_strides;
  if ((self->inference_width == 0) != (self->inference_height == 0))
    goto half_size;
  checkpoint = g_strdup(self->checkpoint);
  num_classes = self->num_classes;
  engine_config(self, &cfg);
  GST_OBJECT_UNLOCK(self);

  initial = student_load_start(checkpoint, (int)num_classes, &origin, &refused, &error);
  if (!initial)
    goto no_student;
  if (refused)
    GST_ELEMENT_WARNING(self, RESOURCE, OPEN_READ,
                        ("Cannot use %s; starting from the shipped weights \"%s\" instead.",
                         refused->message, origin),
                        ("Fix the file, set checkpoint to a student of %u classes, or set "
                         "num-classes to the checkpoint's.", num_classes));
  if (origin)
    GST_INFO_OBJECT(self, "starting from the %s %s",
                    g_strcmp0(origin, checkpoint) == 0 ? "checkpoint" : "shipped weights", origin);
  else
    GST_INFO_OBJECT(self, "no checkpoint and no shipped weights for %u classes: starting from "
                    "random weights", num_classes);
  self->engine = distill_engine_new(initial, &cfg, &error);
  student_free(initial);
  if (!self->engine)
    goto bad_settings;
  if (self->teacher_url && *self->teacher_url && !open_teacher(self)) {
    g_clear_pointer(&self->engine, distill_engine_free);
    return FALSE;
  }
  /* Frames wait for the teacher only where its answers are fused into what is shown, and where
   * the stream does not wait for them anyway (sync). */
  GST_OBJECT_LOCK(self);
  self->wait_us = self->teacher && !self->sync && self->fuse_teacher
                      ? (gint64)self->teacher_wait * G_TIME_SPAN_MILLISECOND : 0;
  GST_OBJECT_UNLOCK(self);
  self->frame = 0;
  self->saturation_warned = FALSE;
  self->last_pts = GST_CLOCK_TIME_NONE;
  self->interval_ms = 0.0;
  self->last_stats_train_ms = 0.0;
  self->last_stats_time = self->last_save_time = g_get_monotonic_time();
  self->last_stats_frames = 0;
  return TRUE;

  /* ERRORS */
bad_strides:
  {
    GST_OBJECT_UNLOCK(self);
    GST_ELEMENT_ERROR(self, LIBRARY, SETTINGS,
                      ("min-stride (%u) is larger than max-stride (%u).", min_stride, max_stride),
                      ("Set min-stride <= max-stride."));
    return FALSE;
  }
half_size:
  {
    GST_OBJECT_UNLOCK(self);
    GST_ELEMENT_ERROR(self, LIBRARY, SETTINGS,
                      ("Only one of inference-width and inference-height is set."),
                      ("Set both, or neither (the frame scaled to a long side of at most "
                       "inference-long-side)."));
    return FALSE;
  }
no_student:
  {
    GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("Cannot load the student: %s.", error->message),
                      ("Set checkpoint to a student of %u classes (or num-classes to the "
                       "checkpoint's), fix or remove it, or reinstall gst-distill for its "
                       "shipped weights.", num_classes));
    return FALSE;
  }
bad_settings:
  {
    GST_ELEMENT_ERROR(self, LIBRARY, SETTINGS, ("Invalid distillation settings: %s",
                      error->message), ("Fix the property named in the message."));
    return FALSE;
  }
}

static gboolean gst_distill_seg_stop(GstBaseTransform *trans)
{
  GstDistillSeg *self = GST_DISTILL_SEG(trans);
  gchar *path;

  /* Leaving the group ends the queries still out (their callbacks fail them), which the engine
   * must outlive. */
  self->stream = NULL;
  g_clear_pointer(&self->teacher, teacher_group_leave);
  drop_waiting(self);
  join_saver(self);
  GST_OBJECT_LOCK(self);
  path = g_strdup(self->checkpoint_out);
  GST_OBJECT_UNLOCK(self);
  if (path && self->engine)
    save_checkpoint(self, path);
  g_free(path);
  g_clear_pointer(&self->engine, distill_engine_free);
  free_frame_buffers(self);
  return TRUE;
}

/* ---- properties ----------------------------------------------------------------------------- */

static void gst_distill_seg_set_property(GObject *object, guint prop_id, const GValue *value,
                                         GParamSpec *pspec)
{
  GstDistillSeg *self = GST_DISTILL_SEG(object);

  GST_OBJECT_LOCK(self);
  switch (prop_id) {
  case PROP_TEACHER_URL:
    g_free(self->teacher_url);
    self->teacher_url = g_value_dup_string(value);
    break;
  case PROP_TEACHER_MODEL:
    g_free(self->teacher_model);
    self->teacher_model = g_value_dup_string(value);
    break;
  case PROP_TEACHER_TOKEN_FILE:
    g_free(self->teacher_token_file);
    self->teacher_token_file = g_value_dup_string(value);
    break;
  case PROP_TEACHER_TIMEOUT:
    self->teacher_timeout = g_value_get_uint(value);
    break;
  case PROP_TEACHER_ENCODING:
    self->teacher_encoding = g_value_get_enum(value);
    break;
  case PROP_TEACHER_MAX_SIDE:
    self->teacher_max_side = g_value_get_uint(value);
    break;
  case PROP_TEACHER_INFLIGHT:
    self->teacher_inflight = g_value_get_uint(value);
    break;
  case PROP_TEACHER_CONFIDENCE:
    self->teacher_confidence = g_value_get_double(value);
    break;
  case PROP_TEACHER_CA_FILE:
    g_free(self->teacher_ca_file);
    self->teacher_ca_file = g_value_dup_string(value);
    break;
  case PROP_NUM_CLASSES:
    self->num_classes = g_value_get_uint(value);
    break;
  case PROP_INFERENCE_WIDTH:
    self->inference_width = g_value_get_uint(value);
    break;
  case PROP_INFERENCE_HEIGHT:
    self->inference_height = g_value_get_uint(value);
    break;
  case PROP_INFERENCE_LONG_SIDE:
    self->inference_long_side = g_value_get_uint(value);
    break;
  case PROP_MAX_INFERENCE_LONG_SIDE:
    self->max_inference_long_side = g_value_get_uint(value);
    break;
  case PROP_INFERENCE_BUDGET:
    self->inference_budget = g_value_get_double(value);
    break;
  case PROP_CHECKPOINT:
    g_free(self->checkpoint);
    self->checkpoint = g_value_dup_string(value);
    break;
  case PROP_CHECKPOINT_OUT:
    g_free(self->checkpoint_out);
    self->checkpoint_out = g_value_dup_string(value);
    break;
  case PROP_CHECKPOINT_INTERVAL:
    self->checkpoint_interval = g_value_get_uint(value);
    break;
  case PROP_MIN_STRIDE:
    self->min_stride = g_value_get_uint(value);
    break;
  case PROP_MAX_STRIDE:
    self->max_stride = g_value_get_uint(value);
    break;
  case PROP_ACCURACY_THRESHOLD:
    self->accuracy_threshold = g_value_get_double(value);
    break;
  case PROP_MAX_UPDATES:
    self->max_updates = g_value_get_uint(value);
    break;
  case PROP_LEARNING_RATE:
    self->learning_rate = g_value_get_double(value);
    self->learning_rate_set = TRUE;
    break;
  case PROP_OPTIMIZER:
    self->optimizer = g_value_get_enum(value);
    break;
  case PROP_TRAIN:
    self->train = g_value_get_boolean(value);
    break;
  case PROP_SYNC:
    self->sync = g_value_get_boolean(value);
    break;
  case PROP_MEASURE_AT_FRAME_SIZE:
    self->measure_at_frame_size = g_value_get_boolean(value);
    break;
  case PROP_FUSE_TEACHER:
    self->fuse_teacher = g_value_get_boolean(value);
    break;
  case PROP_FOLLOW_MOTION:
    self->follow_motion = g_value_get_boolean(value);
    break;
  case PROP_TEACHER_WAIT:
    self->teacher_wait = g_value_get_uint(value);
    break;
  case PROP_OUTPUT:
    self->output = g_value_get_enum(value);
    break;
  case PROP_THREADS:
    self->threads = g_value_get_uint(value);
    break;
  case PROP_TRAIN_THREADS:
    self->train_threads = g_value_get_uint(value);
    break;
  case PROP_TRAIN_NICE:
    self->train_nice = g_value_get_uint(value);
    break;
  case PROP_STATS_INTERVAL:
    self->stats_interval = g_value_get_uint(value);
    break;
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
    break;
  }
  GST_OBJECT_UNLOCK(self);

  if (prop_id == PROP_OUTPUT)
    gst_base_transform_reconfigure_src(GST_BASE_TRANSFORM(self));
}

static void gst_distill_seg_get_property(GObject *object, guint prop_id, GValue *value,
                                         GParamSpec *pspec)
{
  GstDistillSeg *self = GST_DISTILL_SEG(object);

  GST_OBJECT_LOCK(self);
  switch (prop_id) {
  case PROP_TEACHER_URL:
    g_value_set_string(value, self->teacher_url);
    break;
  case PROP_TEACHER_MODEL:
    g_value_set_string(value, self->teacher_model);
    break;
  case PROP_TEACHER_TOKEN_FILE:
    g_value_set_string(value, self->teacher_token_file);
    break;
  case PROP_TEACHER_TIMEOUT:
    g_value_set_uint(value, self->teacher_timeout);
    break;
  case PROP_TEACHER_ENCODING:
    g_value_set_enum(value, self->teacher_encoding);
    break;
  case PROP_TEACHER_MAX_SIDE:
    g_value_set_uint(value, self->teacher_max_side);
    break;
  case PROP_TEACHER_INFLIGHT:
    g_value_set_uint(value, self->teacher_inflight);
    break;
  case PROP_TEACHER_CONFIDENCE:
    g_value_set_double(value, self->teacher_confidence);
    break;
  case PROP_TEACHER_CA_FILE:
    g_value_set_string(value, self->teacher_ca_file);
    break;
  case PROP_NUM_CLASSES:
    g_value_set_uint(value, self->num_classes);
    break;
  case PROP_INFERENCE_WIDTH:
    g_value_set_uint(value, self->inference_width);
    break;
  case PROP_INFERENCE_HEIGHT:
    g_value_set_uint(value, self->inference_height);
    break;
  case PROP_INFERENCE_LONG_SIDE:
    g_value_set_uint(value, self->inference_long_side);
    break;
  case PROP_MAX_INFERENCE_LONG_SIDE:
    g_value_set_uint(value, self->max_inference_long_side);
    break;
  case PROP_INFERENCE_BUDGET:
    g_value_set_double(value, self->inference_budget);
    break;
  case PROP_CHECKPOINT:
    g_value_set_string(value, self->checkpoint);
    break;
  case PROP_CHECKPOINT_OUT:
    g_value_set_string(value, self->checkpoint_out);
    break;
  case PROP_CHECKPOINT_INTERVAL:
    g_value_set_uint(value, self->checkpoint_interval);
    break;
  case PROP_MIN_STRIDE:
    g_value_set_uint(value, self->min_stride);
    break;
  case PROP_MAX_STRIDE:
    g_value_set_uint(value, self->max_stride);
    break;
  case PROP_ACCURACY_THRESHOLD:
    g_value_set_double(value, self->accuracy_threshold);
    break;
  case PROP_MAX_UPDATES:
    g_value_set_uint(value, self->max_updates);
    break;
  case PROP_LEARNING_RATE:
    g_value_set_double(value, self->learning_rate);
    break;
  case PROP_OPTIMIZER:
    g_value_set_enum(value, self->optimizer);
    break;
  case PROP_TRAIN:
    g_value_set_boolean(value, self->train);
    break;
  case PROP_SYNC:
    g_value_set_boolean(value, self->sync);
    break;
  case PROP_MEASURE_AT_FRAME_SIZE:
    g_value_set_boolean(value, self->measure_at_frame_size);
    break;
  case PROP_FUSE_TEACHER:
    g_value_set_boolean(value, self->fuse_teacher);
    break;
  case PROP_FOLLOW_MOTION:
    g_value_set_boolean(value, self->follow_motion);
    break;
  case PROP_TEACHER_WAIT:
    g_value_set_uint(value, self->teacher_wait);
    break;
  case PROP_OUTPUT:
    g_value_set_enum(value, self->output);
    break;
  case PROP_THREADS:
    g_value_set_uint(value, self->threads);
    break;
  case PROP_TRAIN_THREADS:
    g_value_set_uint(value, self->train_threads);
    break;
  case PROP_TRAIN_NICE:
    g_value_set_uint(value, self->train_nice);
    break;
  case PROP_STATS_INTERVAL:
    g_value_set_uint(value, self->stats_interval);
    break;
  default:
    G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
    break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_distill_seg_finalize(GObject *object)
{
  GstDistillSeg *self = GST_DISTILL_SEG(object);

  g_free(self->teacher_url);
  g_free(self->teacher_model);
  g_free(self->teacher_token_file);
  g_free(self->teacher_ca_file);
  g_free(self->checkpoint);
  g_free(self->checkpoint_out);
  G_OBJECT_CLASS(parent_class)->finalize(object);
}

/* ---- class ---------------------------------------------------------------------------------- */

#define READY_ONLY (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY)
#define ANY_TIME (G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING)

static void install_properties(GObjectClass *klass)
{
  /* The teacher */
  g_object_class_install_property(klass, PROP_TEACHER_URL,
      g_param_spec_string("teacher-url", "Teacher URL",
          "Base URL of a KServe v2 server (e.g. http://127.0.0.1:8000); several, comma-separated, "
          "are tried in order (fail-over). NULL = inference only, no training",
          DEFAULT_PROP_TEACHER_URL, READY_ONLY));
  g_object_class_install_property(klass, PROP_TEACHER_MODEL,
      g_param_spec_string("teacher-model", "Teacher model",
          "Model name on the teacher server, as in /v2/models/{name}/infer",
          DEFAULT_PROP_TEACHER_MODEL, READY_ONLY));
  g_object_class_install_property(klass, PROP_TEACHER_TOKEN_FILE,
      g_param_spec_string("teacher-token-file", "Teacher token file",
          "File holding the token sent as 'Authorization: Bearer'; NULL = the environment "
          "variable DISTILL_TEACHER_TOKEN, if set. The token is never printed or logged",
          DEFAULT_PROP_TEACHER_TOKEN_FILE, READY_ONLY));
  g_object_class_install_property(klass, PROP_TEACHER_CA_FILE,
      g_param_spec_string("teacher-ca-file", "Teacher CA file",
          "CA bundle (PEM) that https:// teachers are verified with; NULL = the system CAs",
          DEFAULT_PROP_TEACHER_CA_FILE, READY_ONLY));
  g_object_class_install_property(klass, PROP_TEACHER_TIMEOUT,
      g_param_spec_uint("teacher-timeout", "Teacher timeout",
          "Milliseconds after which a teacher request is abandoned (retries included)", 100,
          600000, DEFAULT_PROP_TEACHER_TIMEOUT, READY_ONLY));
  g_object_class_install_property(klass, PROP_TEACHER_ENCODING,
      g_param_spec_enum("teacher-encoding", "Teacher encoding",
          "How frames are sent to the teacher", GST_TYPE_DISTILL_TEACHER_ENCODING,
          DEFAULT_PROP_TEACHER_ENCODING, READY_ONLY));
  g_object_class_install_property(klass, PROP_TEACHER_MAX_SIDE,
      g_param_spec_uint("teacher-max-side", "Teacher max side",
          "Downscale frames sent to the teacher so that their long side is at most this many "
          "pixels; 0 = send them as they are", 0, 16384, DEFAULT_PROP_TEACHER_MAX_SIDE,
          READY_ONLY));
  g_object_class_install_property(klass, PROP_TEACHER_INFLIGHT,
      g_param_spec_uint("teacher-inflight", "Teacher requests in flight",
          "Most teacher requests outstanding at once", 1, 16, DEFAULT_PROP_TEACHER_INFLIGHT,
          READY_ONLY));
  g_object_class_install_property(klass, PROP_TEACHER_CONFIDENCE,
      g_param_spec_double("teacher-confidence", "Teacher confidence",
          "A teacher probability below this (for its most likely class) leaves the pixel out "
          "of training", 0.0, 1.0, DEFAULT_PROP_TEACHER_CONFIDENCE, READY_ONLY));

  /* The student and its checkpoints */
  g_object_class_install_property(klass, PROP_NUM_CLASSES,
      g_param_spec_uint("num-classes", "Number of classes",
          "Classes of the student (0 = background); must match the checkpoint", 2, 255,
          DEFAULT_PROP_NUM_CLASSES, READY_ONLY));
  g_object_class_install_property(klass, PROP_CHECKPOINT,
      g_param_spec_string("checkpoint", "Checkpoint",
          "safetensors file of the student to start from; NULL = the shipped weights",
          DEFAULT_PROP_CHECKPOINT, READY_ONLY));
  g_object_class_install_property(klass, PROP_CHECKPOINT_OUT,
      g_param_spec_string("checkpoint-out", "Checkpoint out",
          "Where the trained student is saved (atomically): on EOS, on stop and every "
          "checkpoint-interval seconds; NULL = never", DEFAULT_PROP_CHECKPOINT_OUT, ANY_TIME));
  g_object_class_install_property(klass, PROP_CHECKPOINT_INTERVAL,
      g_param_spec_uint("checkpoint-interval", "Checkpoint interval",
          "Seconds between saves to checkpoint-out; 0 = only on EOS and stop", 0, G_MAXUINT,
          DEFAULT_PROP_CHECKPOINT_INTERVAL, ANY_TIME));

  /* The policy */
  g_object_class_install_property(klass, PROP_MIN_STRIDE,
      g_param_spec_uint("min-stride", "Minimum stride",
          "Fewest frames between teacher queries (the stride starts here)", 1, 100000,
          DEFAULT_PROP_MIN_STRIDE, READY_ONLY));
  g_object_class_install_property(klass, PROP_MAX_STRIDE,
      g_param_spec_uint("max-stride", "Maximum stride",
          "Most frames between teacher queries", 1, 100000, DEFAULT_PROP_MAX_STRIDE,
          READY_ONLY));
  g_object_class_install_property(klass, PROP_ACCURACY_THRESHOLD,
      g_param_spec_double("accuracy-threshold", "Accuracy threshold",
          "Student-vs-teacher mIoU on a teacher frame below which the student trains on the "
          "frame; the stride doubles when the map shown on that frame before its answer (the "
          "student's, fused with the held answer under fuse-teacher) is at or above it, and "
          "halves otherwise", 0.0, 1.0,
          DEFAULT_PROP_ACCURACY_THRESHOLD, READY_ONLY));
  g_object_class_install_property(klass, PROP_MAX_UPDATES,
      g_param_spec_uint("max-updates", "Maximum updates",
          "Most SGD steps taken on one teacher frame", 0, 1000, DEFAULT_PROP_MAX_UPDATES,
          READY_ONLY));
  g_object_class_install_property(klass, PROP_LEARNING_RATE,
      g_param_spec_double("learning-rate", "Learning rate",
          "Step size of the online updates (the default is tuned for the default optimizer)",
          1e-7, 10.0, DEFAULT_PROP_LEARNING_RATE, READY_ONLY));
  g_object_class_install_property(klass, PROP_OPTIMIZER,
      g_param_spec_enum("optimizer", "Optimizer", "Optimiser of the online updates",
          GST_TYPE_DISTILL_OPTIMIZER, DEFAULT_PROP_OPTIMIZER, READY_ONLY));
  g_object_class_install_property(klass, PROP_TRAIN,
      g_param_spec_boolean("train", "Train",
          "Update the student's weights; FALSE = inference only (the teacher is still queried "
          "to measure accuracy when teacher-url is set)", DEFAULT_PROP_TRAIN, READY_ONLY));
  g_object_class_install_property(klass, PROP_SYNC,
      g_param_spec_boolean("sync", "Synchronous",
          "TRUE: the stream waits for the teacher (up to teacher-timeout) and for the updates, "
          "deterministic, for evaluation; FALSE: teacher and training run beside the stream, "
          "which never stalls", DEFAULT_PROP_SYNC, READY_ONLY));
  g_object_class_install_property(klass, PROP_MEASURE_AT_FRAME_SIZE,
      g_param_spec_boolean("measure-at-frame-size", "Measure at the frame's size",
          "TRUE: the policy compares the student with the teacher at the frame's size, its "
          "logits resized as the mask and overlay are (the teacher's labels are asked for at "
          "that size too); FALSE: at the logits' size, half the input's, as trained",
          DEFAULT_PROP_MEASURE_AT_FRAME_SIZE, READY_ONLY));
  g_object_class_install_property(klass, PROP_FUSE_TEACHER,
      g_param_spec_boolean("fuse-teacher", "Fuse the teacher's last mask",
          "TRUE: the mask, overlay and meta come from the student's logits fused with the "
          "teacher's last answer, weighed by how well each predicted the next teacher frame "
          "(a still scene leans on the answer, a busy one on the student); FALSE: the "
          "student's alone", DEFAULT_PROP_FUSE_TEACHER, READY_ONLY));
  g_object_class_install_property(klass, PROP_FOLLOW_MOTION,
      g_param_spec_boolean("follow-motion", "Move the teacher's last mask with the scene",
          "With fuse-teacher, TRUE: the held answer is moved along the scene's motion (block "
          "vectors from frame to frame) from the frame it is of to the one shown; FALSE: held "
          "where it was", DEFAULT_PROP_FOLLOW_MOTION, READY_ONLY));
  g_object_class_install_property(klass, PROP_TEACHER_WAIT,
      g_param_spec_uint("teacher-wait", "Wait for the teacher's answer (ms)",
          "sync=false with a teacher and fuse-teacher: a frame is held back until the teacher "
          "has answered for it and the frames before it, and for a later frame nearer to it "
          "than the last answer, up to this long, so that an answer shows on the frame it is "
          "of instead of some frames later, and a frame takes the nearest answer; the output "
          "runs up to this much behind the input (added to the latency the pipeline reports). 0 = "
          "every frame goes out at once", 0, 10000, DEFAULT_PROP_TEACHER_WAIT, READY_ONLY));

  /* Compute */
  g_object_class_install_property(klass, PROP_INFERENCE_WIDTH,
      g_param_spec_uint("inference-width", "Inference width",
          "Width of the student's input; 0 (with inference-height 0) = the frame scaled to a "
          "long side of at most inference-long-side, aspect kept, even", 0, 8192,
          DEFAULT_PROP_INFERENCE_SIZE,
          READY_ONLY));
  g_object_class_install_property(klass, PROP_INFERENCE_HEIGHT,
      g_param_spec_uint("inference-height", "Inference height",
          "Height of the student's input; 0 = see inference-width", 0, 8192,
          DEFAULT_PROP_INFERENCE_SIZE, READY_ONLY));
  g_object_class_install_property(klass, PROP_INFERENCE_LONG_SIDE,
      g_param_spec_uint("inference-long-side", "Inference long side",
          "Without inference-width/-height: the student's input is the frame scaled down to a "
          "long side of at most this, aspect kept, even (the compute governor may lower it "
          "further). 0 = 320 with sync=false, a teacher and train=true (updates at a quarter of "
          "the cost: the student adapts four times as often), else 640", 0, 8192,
          DEFAULT_PROP_INFERENCE_SIZE, READY_ONLY));
  g_object_class_install_property(klass, PROP_MAX_INFERENCE_LONG_SIDE,
      g_param_spec_uint("max-inference-long-side", "Max inference long side",
          "sync=false with a teacher, train=true and the default input size (inference-width/"
          "-height and inference-long-side 0): the student's input, for the stream and "
          "training alike, grows in steps up to this long side (the frame's own at most) where "
          "the teacher's masks show thin things a finer class map would resolve and the "
          "trainer has time to spare, and steps back when the trainer falls behind. "
          "0 = no growth", 0, 8192, DEFAULT_PROP_MAX_INFERENCE_LONG_SIDE, READY_ONLY));
  g_object_class_install_property(klass, PROP_INFERENCE_BUDGET,
      g_param_spec_double("inference-budget", "Inference budget",
          "sync=false with a teacher: the share of each frame interval the student's inference "
          "may take, all the distillseg of the process together; over it, the student runs on "
          "a smaller input (long side down to 320; masks and overlay keep the frame's size) and "
          "training gets the rest. 0 = off; inference-width/-height set = off", 0.0, 1.0,
          DEFAULT_PROP_INFERENCE_BUDGET, READY_ONLY));
  g_object_class_install_property(klass, PROP_THREADS,
      g_param_spec_uint("threads", "Threads",
          "Compute threads of the student; 0 = one per core, in a pool that every distillseg of "
          "the process takes in turns", 0, 256, DEFAULT_PROP_THREADS,
          READY_ONLY));
  g_object_class_install_property(klass, PROP_TRAIN_THREADS,
      g_param_spec_uint("train-threads", "Training threads",
          "Compute threads of the online training (sync=false), beside the threads of "
          "inference; 0 = 2, or half the cores above 4 (1 on a single core)", 0, 256,
          DEFAULT_PROP_TRAIN_THREADS, READY_ONLY));
  g_object_class_install_property(klass, PROP_TRAIN_NICE,
      g_param_spec_uint("train-nice", "Training nice value",
          "Scheduling nice value of the training threads (sync=false): the higher, the more "
          "training yields the cores to inference, so the stream keeps its rate", 0, 19,
          DEFAULT_PROP_TRAIN_NICE, READY_ONLY));

  /* Output */
  g_object_class_install_property(klass, PROP_OUTPUT,
      g_param_spec_enum("output", "Output", "What the source pad carries",
          GST_TYPE_DISTILL_OUTPUT, DEFAULT_PROP_OUTPUT, READY_ONLY));
  g_object_class_install_property(klass, PROP_STATS_INTERVAL,
      g_param_spec_uint("stats-interval", "Stats interval",
          "Milliseconds between distill-stats element messages; 0 = none", 0, G_MAXUINT,
          DEFAULT_PROP_STATS_INTERVAL, ANY_TIME));
}

static void gst_distill_seg_class_init(GstDistillSegClass *klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS(klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS(klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS(klass);

  GST_DEBUG_CATEGORY_INIT(gst_distill_seg_debug, "distillseg", 0,
                          "online-distilled segmentation");

  gobject_class->set_property = gst_distill_seg_set_property;
  gobject_class->get_property = gst_distill_seg_get_property;
  gobject_class->finalize = gst_distill_seg_finalize;
  install_properties(gobject_class);

  gst_element_class_set_static_metadata(element_class, "Online-distilled segmentation",
      "Filter/Analyzer/Video",
      "Segments every frame with a compact student network kept accurate by online "
      "distillation from a remote KServe v2 teacher model",
      "gst-distill authors");
  gst_element_class_add_static_pad_template(element_class, &sink_template);
  gst_element_class_add_static_pad_template(element_class, &src_template);

  trans_class->start = GST_DEBUG_FUNCPTR(gst_distill_seg_start);
  trans_class->stop = GST_DEBUG_FUNCPTR(gst_distill_seg_stop);
  trans_class->sink_event = GST_DEBUG_FUNCPTR(gst_distill_seg_sink_event);
  trans_class->submit_input_buffer = GST_DEBUG_FUNCPTR(gst_distill_seg_submit_input_buffer);
  trans_class->generate_output = GST_DEBUG_FUNCPTR(gst_distill_seg_generate_output);
  trans_class->query = GST_DEBUG_FUNCPTR(gst_distill_seg_query);
  trans_class->transform_caps = GST_DEBUG_FUNCPTR(gst_distill_seg_transform_caps);
  filter_class->set_info = GST_DEBUG_FUNCPTR(gst_distill_seg_set_info);
  filter_class->transform_frame = GST_DEBUG_FUNCPTR(gst_distill_seg_transform_frame);
  filter_class->transform_frame_ip = GST_DEBUG_FUNCPTR(gst_distill_seg_transform_frame_ip);

  gst_type_mark_as_plugin_api(GST_TYPE_DISTILL_OUTPUT, 0);
  gst_type_mark_as_plugin_api(GST_TYPE_DISTILL_TEACHER_ENCODING, 0);
  gst_type_mark_as_plugin_api(GST_TYPE_DISTILL_OPTIMIZER, 0);
}

static void gst_distill_seg_init(GstDistillSeg *self)
{
  self->teacher_url = g_strdup(DEFAULT_PROP_TEACHER_URL);
  self->teacher_model = g_strdup(DEFAULT_PROP_TEACHER_MODEL);
  self->teacher_timeout = DEFAULT_PROP_TEACHER_TIMEOUT;
  self->teacher_encoding = DEFAULT_PROP_TEACHER_ENCODING;
  self->teacher_max_side = DEFAULT_PROP_TEACHER_MAX_SIDE;
  self->teacher_inflight = DEFAULT_PROP_TEACHER_INFLIGHT;
  self->teacher_confidence = DEFAULT_PROP_TEACHER_CONFIDENCE;
  self->num_classes = DEFAULT_PROP_NUM_CLASSES;
  self->checkpoint_interval = DEFAULT_PROP_CHECKPOINT_INTERVAL;
  self->min_stride = DEFAULT_PROP_MIN_STRIDE;
  self->max_stride = DEFAULT_PROP_MAX_STRIDE;
  self->accuracy_threshold = DEFAULT_PROP_ACCURACY_THRESHOLD;
  self->max_updates = DEFAULT_PROP_MAX_UPDATES;
  self->learning_rate = DEFAULT_PROP_LEARNING_RATE;
  self->optimizer = DEFAULT_PROP_OPTIMIZER;
  self->train = DEFAULT_PROP_TRAIN;
  self->sync = DEFAULT_PROP_SYNC;
  self->output = DEFAULT_PROP_OUTPUT;
  self->threads = DEFAULT_PROP_THREADS;
  self->train_threads = DEFAULT_PROP_TRAIN_THREADS;
  self->train_nice = DEFAULT_PROP_TRAIN_NICE;
  self->stats_interval = DEFAULT_PROP_STATS_INTERVAL;
  self->inference_budget = DEFAULT_PROP_INFERENCE_BUDGET;
  self->max_inference_long_side = DEFAULT_PROP_MAX_INFERENCE_LONG_SIDE;
  self->measure_at_frame_size = DEFAULT_PROP_MEASURE_AT_FRAME_SIZE;
  self->fuse_teacher = DEFAULT_PROP_FUSE_TEACHER;
  self->follow_motion = DEFAULT_PROP_FOLLOW_MOTION;
  self->teacher_wait = DEFAULT_PROP_TEACHER_WAIT;
  g_queue_init(&self->waiting);
}
