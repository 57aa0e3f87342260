/* camera.c: one camera of distill-rtsp.
 *
 * Two pipelines, so that a camera that drops costs neither the student's weights nor the
 * viewers' sessions:
 *   source:  the input, decoded -> appsink "frames"        (torn down and rebuilt on failure)
 *   process: appsrc "feed" -> distillseg -> valve -> x264enc -> appsink "encoded"  (lives on)
 * Encoded access units go to the shared RTSP media of the camera (appsrc "src"), so that every
 * viewer costs the one encode; the valve stops the encoder while nobody watches. */
#include <string.h>

#include "distill-rtsp.h"
#include "rtsp-out.h"

#define DISTILL_RTSP_ERROR (g_quark_from_static_string("distill-rtsp"))
#define MAX_BACKOFF_S 30
/* A source that delivers nothing for this long is taken as lost (e.g. a camera whose network
 * went away without closing the connection). */
#define STALL_TIMEOUT_S 10

static void schedule_restart(Camera *cam, const char *why);

/* ---- frames: source -> process -------------------------------------------------------- */

static GstFlowReturn on_frame(GstAppSink *sink, gpointer data)
{
  Camera *cam = data;
  GstSample *sample = gst_app_sink_pull_sample(sink);

  if (!sample)
    return GST_FLOW_EOS;
  g_atomic_int_inc(&cam->frames_in);
  /* The process pipeline stamps frames on arrival (do-timestamp): its clock stays monotonic
   * across reconnections, whatever timestamps the new source starts from. */
  GstBuffer *frame = gst_buffer_copy(gst_sample_get_buffer(sample));
  GST_BUFFER_PTS(frame) = GST_BUFFER_DTS(frame) = GST_CLOCK_TIME_NONE;
  GstSample *restamped = gst_sample_new(frame, gst_sample_get_caps(sample), NULL, NULL);
  gst_app_src_push_sample(cam->feed, restamped);
  gst_sample_unref(restamped);
  gst_buffer_unref(frame);
  gst_sample_unref(sample);
  return GST_FLOW_OK;
}

/* ---- the source: start, failure, reconnection --------------------------------------------- */

static void on_source_setup(GstElement *decodebin, GstElement *source, gpointer data)
{
  /* Interleaved TCP: a camera that goes away closes the connection, which is noticed at once
   * (UDP would only time out); and it crosses NAT and firewalls. */
  if (g_object_class_find_property(G_OBJECT_GET_CLASS(source), "protocols") &&
      g_object_class_find_property(G_OBJECT_GET_CLASS(source), "latency"))
    g_object_set(source, "protocols", 0x4 /* GST_RTSP_LOWER_TRANS_TCP */, "latency", 200u, NULL);
}

static gboolean on_source_message(GstBus *bus, GstMessage *msg, gpointer data)
{
  Camera *cam = data;
  g_autoptr(GError) error = NULL;
  g_autofree gchar *debug = NULL;

  if (msg->src && GST_MESSAGE_SRC(msg) != GST_OBJECT(cam->source) &&
      GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS)
    return G_SOURCE_CONTINUE;
  switch (GST_MESSAGE_TYPE(msg)) {
  case GST_MESSAGE_EOS:
    schedule_restart(cam, "end of stream");
    break;
  case GST_MESSAGE_ERROR:
    gst_message_parse_error(msg, &error, &debug);
    schedule_restart(cam, error->message);
    break;
  default:
    break;
  }
  return G_SOURCE_CONTINUE;
}

static gboolean build_source(Camera *cam, GError **error)
{
  g_autofree gchar *launch = g_strdup_printf(
      "%s ! videoconvert ! video/x-raw,format=I420 ! "
      "appsink name=frames sync=true max-buffers=2 drop=true",
      cam->source_description);
  cam->source = gst_parse_launch(launch, error);
  if (!cam->source)
    return FALSE;
  GstElement *decode = gst_bin_get_by_name(GST_BIN(cam->source), "decode");
  if (decode) {
    g_signal_connect(decode, "source-setup", G_CALLBACK(on_source_setup), cam);
    gst_object_unref(decode);
  }
  GstElement *frames = gst_bin_get_by_name(GST_BIN(cam->source), "frames");
  GstAppSinkCallbacks callbacks = {.new_sample = on_frame};
  gst_app_sink_set_callbacks(GST_APP_SINK(frames), &callbacks, cam, NULL);
  gst_object_unref(frames);
  GstBus *bus = gst_element_get_bus(cam->source);
  gst_bus_add_watch(bus, on_source_message, cam);
  gst_object_unref(bus);
  return TRUE;
}

static void destroy_source(Camera *cam)
{
  if (!cam->source)
    return;
  gst_element_set_state(cam->source, GST_STATE_NULL);
  GstBus *bus = gst_element_get_bus(cam->source);
  gst_bus_remove_watch(bus);
  gst_object_unref(bus);
  gst_clear_object(&cam->source);
  cam->source_running = FALSE;
}

static gboolean on_restart(gpointer data);

static void start_source(Camera *cam)
{
  g_autoptr(GError) error = NULL;

  cam->restart_timer = 0;
  if (!build_source(cam, &error)) {
    schedule_restart(cam, error->message);
    return;
  }
  g_atomic_int_set(&cam->frames_in, 0);
  cam->frames_seen = 0;
  cam->progress_time = g_get_monotonic_time();
  cam->source_running = TRUE;
  if (gst_element_set_state(cam->source, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE)
    schedule_restart(cam, "the input cannot be opened");
}

static gboolean on_restart(gpointer data)
{
  Camera *cam = data;

  if (cam->reconnects)
    g_printerr("distill-rtsp: %s: reconnecting to %s\n", cam->name, cam->input);
  start_source(cam);
  return G_SOURCE_REMOVE;
}

/* The input failed or ended: a file starts again at once, a camera after a growing wait. */
static void schedule_restart(Camera *cam, const char *why)
{
  if (cam->restart_timer || cam->app->stopping)
    return;
  gboolean delivered = cam->source_running && g_atomic_int_get(&cam->frames_in) > 0;
  gboolean file = g_str_has_prefix(cam->source_description, "uridecodebin name=decode uri=\"file:");
  destroy_source(cam);
  g_free(cam->last_error);
  cam->last_error = g_strdup(why);
  if (delivered)
    cam->backoff_s = 1;  /* it worked before: the first retry comes soon */
  guint wait = file && delivered ? 0 : cam->backoff_s;
  if (!file || !delivered)
    g_printerr("distill-rtsp: %s: input lost (%s); reconnecting in %u s\n", cam->name, why,
               wait);
  cam->backoff_s = MIN(cam->backoff_s * 2, MAX_BACKOFF_S);
  cam->reconnects++;
  cam->restart_timer = g_timeout_add_seconds(wait, on_restart, cam);
}

static gboolean on_watchdog(gpointer data)
{
  Camera *cam = data;
  gint frames = g_atomic_int_get(&cam->frames_in);
  gint64 now = g_get_monotonic_time();

  if (!cam->source_running)
    return G_SOURCE_CONTINUE;
  if (frames != cam->frames_seen) {
    cam->frames_seen = frames;
    cam->progress_time = now;
  } else if (now - cam->progress_time > STALL_TIMEOUT_S * G_TIME_SPAN_SECOND) {
    schedule_restart(cam, "no frame for " G_STRINGIFY(STALL_TIMEOUT_S) " s");
  }
  return G_SOURCE_CONTINUE;
}

/* ---- the process pipeline ----------------------------------------------------------------- */

static gboolean on_process_message(GstBus *bus, GstMessage *msg, gpointer data)
{
  Camera *cam = data;
  g_autoptr(GError) error = NULL;
  g_autofree gchar *debug = NULL;
  const GstStructure *s = gst_message_get_structure(msg);

  switch (GST_MESSAGE_TYPE(msg)) {
  case GST_MESSAGE_ELEMENT:
    if (s && gst_structure_has_name(s, "distill-stats"))
      camera_take_stats(cam, s);
    break;
  case GST_MESSAGE_WARNING:
    gst_message_parse_warning(msg, &error, &debug);
    g_printerr("distill-rtsp: %s: warning: %s\n", cam->name, error->message);
    break;
  case GST_MESSAGE_INFO:  /* e.g. the teacher answering again after a burst of failures */
    gst_message_parse_info(msg, &error, &debug);
    g_printerr("distill-rtsp: %s: %s\n", cam->name, error->message);
    break;
  case GST_MESSAGE_ERROR:
    /* The element's own failures (bad checkpoint, settings) do not heal by retrying. */
    gst_message_parse_error(msg, &error, &debug);
    g_printerr("distill-rtsp: %s: %s\n%s%s", cam->name, error->message, debug ? debug : "",
               debug ? "\n" : "");
    cam->app->exit_status = 1;
    g_main_loop_quit(cam->app->loop);
    break;
  default:
    break;
  }
  return G_SOURCE_CONTINUE;
}

static gboolean set_element_options(Camera *cam, GError **error)
{
  gchar **options = cam->app->options.element_options;

  for (guint i = 0; options && options[i]; i++) {
    g_auto(GStrv) kv = g_strsplit(options[i], "=", 2);
    if (!kv[1] || !g_object_class_find_property(G_OBJECT_GET_CLASS(cam->distill), kv[0])) {
      g_set_error(error, DISTILL_RTSP_ERROR, 0,
                  "--element-option %s: expected PROP=VALUE with a property of distillseg "
                  "(gst-inspect-1.0 distillseg lists them)",
                  options[i]);
      return FALSE;
    }
    gst_util_set_object_arg(G_OBJECT(cam->distill), kv[0], kv[1]);
  }
  return TRUE;
}

static gboolean build_process(Camera *cam, guint threads, GError **error)
{
  RtspOptions *o = &cam->app->options;

  /* The element is named after the camera: it names the teacher stream (request ids read
   * "<camera>:<frame>") and its messages. The other names hold a space, which camera names
   * cannot. */
  g_autofree gchar *launch = g_strdup_printf(
      "appsrc name=\"camera feed\" is-live=true do-timestamp=true format=time max-buffers=2 "
      "leaky-type=downstream ! distillseg name=%s ! valve name=\"viewer gate\" drop=true ! "
      "x264enc name=\"h264 encoder\" tune=zerolatency speed-preset=ultrafast threads=1 ! "
      "video/x-h264,profile=constrained-baseline ! h264parse config-interval=-1 ! "
      "video/x-h264,stream-format=byte-stream,alignment=au ! "
      "appsink name=\"h264 out\" sync=false max-buffers=8 drop=true",
      cam->name);
  cam->process = gst_parse_launch(launch, error);
  if (!cam->process)
    return FALSE;
  gst_object_set_name(GST_OBJECT(cam->process), cam->name);
  cam->feed = GST_APP_SRC(gst_bin_get_by_name(GST_BIN(cam->process), "camera feed"));
  cam->distill = gst_bin_get_by_name(GST_BIN(cam->process), cam->name);
  cam->gate = gst_bin_get_by_name(GST_BIN(cam->process), "viewer gate");
  cam->encoder = gst_bin_get_by_name(GST_BIN(cam->process), "h264 encoder");
  g_object_set(cam->distill, "threads", threads, "stats-interval",
               (guint)o->stats_interval_ms, NULL);
  if (o->inference_budget >= 0.0)
    g_object_set(cam->distill, "inference-budget", o->inference_budget, NULL);
  if (o->teacher)
    g_object_set(cam->distill, "teacher-url", o->teacher, NULL);
  if (o->model)
    g_object_set(cam->distill, "teacher-model", o->model, NULL);
  if (o->token_file)
    g_object_set(cam->distill, "teacher-token-file", o->token_file, NULL);
  if (o->ca_file)
    g_object_set(cam->distill, "teacher-ca-file", o->ca_file, NULL);
  if (cam->checkpoint) {
    if (g_file_test(cam->checkpoint, G_FILE_TEST_IS_REGULAR))
      g_object_set(cam->distill, "checkpoint", cam->checkpoint, NULL);
    g_object_set(cam->distill, "checkpoint-out", cam->checkpoint, NULL);
  }
  if (!set_element_options(cam, error))
    return FALSE;

  GstElement *encoded = gst_bin_get_by_name(GST_BIN(cam->process), "h264 out");
  rtsp_out_init(&cam->out, cam->encoder, cam->gate, encoded);
  gst_object_unref(encoded);
  GstBus *bus = gst_element_get_bus(cam->process);
  gst_bus_add_watch(bus, on_process_message, cam);
  gst_object_unref(bus);
  return TRUE;
}

/* ---- viewers ------------------------------------------------------------------------------ */

GstRTSPMediaFactory *camera_media_factory(Camera *cam)
{
  return rtsp_out_factory(&cam->out);
}

void camera_end_viewers(Camera *cam)
{
  rtsp_out_end(&cam->out);
}

/* ---- statistics --------------------------------------------------------------------------- */

void camera_take_stats(Camera *cam, const GstStructure *s)
{
  CameraStats *st = &cam->stats;

  gst_structure_get(s, "frames", G_TYPE_UINT64, &st->frames, "teacher-queries", G_TYPE_UINT64,
                    &st->teacher_queries, "teacher-errors", G_TYPE_UINT64, &st->teacher_errors,
                    "updates", G_TYPE_UINT64, &st->updates, "stride", G_TYPE_UINT, &st->stride,
                    "fps", G_TYPE_DOUBLE, &st->fps, "student-ms", G_TYPE_DOUBLE, &st->student_ms,
                    "train-ms", G_TYPE_DOUBLE, &st->train_ms, "teacher-latency-ms",
                    G_TYPE_DOUBLE, &st->teacher_latency_ms, "last-miou", G_TYPE_DOUBLE,
                    &st->last_miou, "shown-miou", G_TYPE_DOUBLE, &st->shown_miou,
                    "input-width", G_TYPE_INT, &st->input_width, "input-height", G_TYPE_INT,
                    &st->input_height, "inference-share", G_TYPE_DOUBLE,
                    &st->inference_share, "train-share", G_TYPE_DOUBLE, &st->train_share,
                    "hibernating", G_TYPE_BOOLEAN, &st->hibernating, NULL);
  st->valid = TRUE;
  csv_write(cam->app, cam);
}

gboolean camera_up(Camera *cam)
{
  return cam->source_running && cam->frames_seen > 0;
}

/* ---- life ----------------------------------------------------------------------------------- */

Camera *camera_new(DistillRtsp *app, const char *name, const char *input, guint threads,
                   GError **error)
{
  Camera *cam = g_new0(Camera, 1);

  cam->app = app;
  cam->name = g_strdup(name);
  cam->input = rtsp_input_without_password(input);
  cam->backoff_s = 1;
  cam->stats.last_miou = cam->stats.shown_miou = -1;
  if (app->options.checkpoint_dir) {
    g_autofree gchar *file = g_strdup_printf("%s.safetensors", name);
    cam->checkpoint = g_build_filename(app->options.checkpoint_dir, file, NULL);
  }
  cam->source_description = rtsp_source_description(input, error);
  if (!cam->source_description || !build_process(cam, threads, error)) {
    camera_free(cam);
    return NULL;
  }
  return cam;
}

gboolean camera_start(Camera *cam, GError **error)
{
  if (gst_element_set_state(cam->process, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    /* The element says why on the bus (and how to fix it, in the debug part). */
    GstBus *bus = gst_element_get_bus(cam->process);
    GstMessage *msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
    g_autoptr(GError) cause = NULL;
    g_autofree gchar *hint = NULL;
    if (msg)
      gst_message_parse_error(msg, &cause, &hint);
    g_set_error(error, DISTILL_RTSP_ERROR, 0, "%s: %s%s%s", cam->name,
                cause ? cause->message : "the distillation pipeline does not start",
                hint ? "\n" : "", hint ? hint : "");
    g_clear_pointer(&msg, gst_message_unref);
    gst_object_unref(bus);
    return FALSE;
  }
  start_source(cam);
  cam->watchdog = g_timeout_add_seconds(1, on_watchdog, cam);
  return TRUE;
}

void camera_stop(Camera *cam)
{
  g_clear_handle_id(&cam->restart_timer, g_source_remove);
  g_clear_handle_id(&cam->watchdog, g_source_remove);
  destroy_source(cam);
  /* To NULL: the element saves its checkpoint, and its teacher requests are cancelled. */
  if (cam->process)
    gst_element_set_state(cam->process, GST_STATE_NULL);
}

void camera_free(Camera *cam)
{
  camera_stop(cam);
  if (cam->process) {
    GstBus *bus = gst_element_get_bus(cam->process);
    gst_bus_remove_watch(bus);
    gst_object_unref(bus);
  }
  gst_clear_object(&cam->feed);
  gst_clear_object(&cam->distill);
  gst_clear_object(&cam->gate);
  gst_clear_object(&cam->encoder);
  gst_clear_object(&cam->process);
  if (cam->out.encoder)
    rtsp_out_clear(&cam->out);
  g_free(cam->name);
  g_free(cam->input);
  g_free(cam->source_description);
  g_free(cam->checkpoint);
  g_free(cam->last_error);
  g_free(cam);
}
