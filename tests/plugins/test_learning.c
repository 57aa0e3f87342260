/* test_learning.c: distillseg learns a synthetic scene from a teacher that knows the true labels,
 * served over HTTP on loopback by the reference teacher server (teacher-server/run --model
 * replay, which finds each frame by its content in a video of the scene and answers with its
 * stored labels).
 *
 * - sync=true (the paper's protocol): from random weights, the student's mIoU against the truth
 *   over the last quarter of the stream is >= 0.8 with a teacher fraction <= 1/8; the debug log
 *   (GST_DEBUG=distillseg:5) tells of one round per teacher frame, with the updates counted;
 *   and so with the policy measuring at the frame's size (measure-at-frame-size=true);
 * - sync=false, with a teacher that answers after 3 s and teacher-wait=0: the stream never
 *   waits for it (the longest gap between output buffers stays far below the teacher's
 *   latency) and the student still trains;
 * - sync=false, with a teacher that answers after 200 ms and teacher-wait of 2 s: each teacher
 *   frame is held back until its answer is in and shows it, every frame comes out once and in
 *   order, and the element adds the wait to the latency it reports; a tag after each frame (as
 *   decoders send bitrates) comes out after that frame and does not rush the frames out. */
#include <glib/gstdio.h>
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#include "distill.h"
#include "synthetic_scene.h"
#include "teacher_server.h"

enum { WIDTH = 320, HEIGHT = 192, FRAMES = 480, SCORED_FROM = 360 };

typedef struct {
  gchar *dir;
  SyntheticScene *scene;
  TeacherServer *server;
  const gchar *url;
} Fixture;

/* Writes the scene's frames (ffv1, lossless) and their labels (0 / 255, as teacher labels are
 * stored) as videos with ffmpeg. */
static void write_scene_videos(Fixture *fx, const gchar *video, const gchar *labels)
{
  gchar *raw_rgb = g_build_filename(fx->dir, "scene.rgb", NULL);
  gchar *raw_labels = g_build_filename(fx->dir, "labels.gray", NULL);
  FILE *frgb = fopen(raw_rgb, "wb"), *flab = fopen(raw_labels, "wb");
  guint8 *rgb = g_malloc(WIDTH * HEIGHT * 3), *lab = g_malloc(WIDTH * HEIGHT);

  g_assert_nonnull(frgb);
  g_assert_nonnull(flab);
  for (guint64 f = 0; f < FRAMES; f++) {
    synthetic_scene_render(fx->scene, f, rgb);
    synthetic_scene_labels(fx->scene, f, WIDTH, HEIGHT, lab);
    for (int i = 0; i < WIDTH * HEIGHT; i++)
      lab[i] = lab[i] ? 255 : 0;
    g_assert_cmpuint(fwrite(rgb, 1, WIDTH * HEIGHT * 3, frgb), ==, WIDTH * HEIGHT * 3);
    g_assert_cmpuint(fwrite(lab, 1, WIDTH * HEIGHT, flab), ==, WIDTH * HEIGHT);
  }
  fclose(frgb);
  fclose(flab);

  gchar *size = g_strdup_printf("%dx%d", WIDTH, HEIGHT);
  const struct { const gchar *in, *pix, *out; } jobs[] = {
      {raw_rgb, "rgb24", video}, {raw_labels, "gray", labels}};
  for (guint j = 0; j < G_N_ELEMENTS(jobs); j++) {
    GError *err = NULL;
    gint status = 0;
    const gchar *argv[] = {"ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt",
                           jobs[j].pix, "-s", size, "-r", "10", "-i", jobs[j].in, "-c:v", "ffv1",
                           jobs[j].out, NULL};
    g_assert_true(g_spawn_sync(NULL, (gchar **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL,
                               NULL, &status, &err));
    g_assert_no_error(err);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
  }
  g_free(size);
  g_unlink(raw_rgb);
  g_unlink(raw_labels);
  g_free(raw_rgb);
  g_free(raw_labels);
  g_free(rgb);
  g_free(lab);
}

/* Starts the replay teacher on a free port and waits until its model is ready; fx->url is its
 * base URL. */
static void start_teacher(Fixture *fx, const gchar *latency_ms)
{
  gchar *video = g_build_filename(fx->dir, "scene.mkv", NULL);
  gchar *labels = g_build_filename(fx->dir, "labels.mkv", NULL);
  GError *err = NULL;

  if (!g_file_test(video, G_FILE_TEST_EXISTS))
    write_scene_videos(fx, video, labels);
  fx->server = teacher_server_start(
      &(TeacherServerOptions){.flags = (const char *[]){"--model", "replay", "--video", video,
                                                        "--labels", labels, "--latency-ms",
                                                        latency_ms, NULL}},
      &err);
  g_assert_no_error(err);
  fx->url = teacher_server_url(fx->server);
  g_free(video);
  g_free(labels);
}

static void fixture_setup(Fixture *fx, gconstpointer data)
{
  SyntheticSceneConfig cfg;

  fx->dir = g_dir_make_tmp("distill-learning-XXXXXX", NULL);
  synthetic_scene_config_default(&cfg, WIDTH, HEIGHT, 11);
  cfg.num_classes = 2; /* the replay teacher stores foreground / background */
  fx->scene = synthetic_scene_new(&cfg);
}

static void fixture_teardown(Fixture *fx, gconstpointer data)
{
  teacher_server_stop(fx->server);
  synthetic_scene_free(fx->scene);
  const gchar *name;
  GDir *dir = g_dir_open(fx->dir, 0, NULL);
  while ((name = g_dir_read_name(dir))) {
    gchar *path = g_build_filename(fx->dir, name, NULL);
    g_unlink(path);
    g_free(path);
  }
  g_dir_close(dir);
  g_rmdir(fx->dir);
  g_free(fx->dir);
}

/* appsrc (the scene, RGB) ! distillseg <properties> output=mask ! appsink */
static GstElement *make_pipeline(const gchar *properties)
{
  GError *err = NULL;
  gchar *launch = g_strdup_printf(
      "appsrc name=src format=time caps=video/x-raw,format=RGB,width=%d,height=%d,"
      "framerate=10/1 ! distillseg name=seg output=mask stats-interval=0 %s ! "
      "appsink name=sink sync=false", WIDTH, HEIGHT, properties);
  GstElement *pipeline = gst_parse_launch(launch, &err);
  g_assert_no_error(err);
  g_free(launch);
  return pipeline;
}

static void stop_pipeline(GstElement *pipeline, GstElement *src, GstElement *sink)
{
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(src);
  gst_object_unref(sink);
  gst_object_unref(pipeline);
}

static void push_frame(GstElement *src, const SyntheticScene *scene, guint64 f)
{
  GstBuffer *buf = gst_buffer_new_allocate(NULL, WIDTH * HEIGHT * 3, NULL);
  GstMapInfo map;

  gst_buffer_map(buf, &map, GST_MAP_WRITE);
  synthetic_scene_render(scene, f, map.data);
  gst_buffer_unmap(buf, &map);
  GST_BUFFER_PTS(buf) = f * GST_SECOND / 10;
  GST_BUFFER_DURATION(buf) = GST_SECOND / 10;
  g_assert_cmpint(gst_app_src_push_buffer(GST_APP_SRC(src), buf), ==, GST_FLOW_OK);
}

/* mIoU of a GRAY8 mask sample against the frame's truth. */
static double sample_miou(GstSample *sample, const SyntheticScene *scene, guint64 f)
{
  GstVideoInfo info;
  GstVideoFrame frame;
  guint8 pred[WIDTH * HEIGHT], truth[WIDTH * HEIGHT];

  g_assert_true(gst_video_info_from_caps(&info, gst_sample_get_caps(sample)));
  g_assert_true(gst_video_frame_map(&frame, &info, gst_sample_get_buffer(sample), GST_MAP_READ));
  for (int y = 0; y < HEIGHT; y++)
    memcpy(pred + y * WIDTH,
           (guint8 *)GST_VIDEO_FRAME_PLANE_DATA(&frame, 0) + y * GST_VIDEO_FRAME_PLANE_STRIDE(&frame, 0),
           WIDTH);
  gst_video_frame_unmap(&frame);
  synthetic_scene_labels(scene, f, WIDTH, HEIGHT, truth);
  return frame_miou(pred, truth, WIDTH * HEIGHT, 2);
}

static void get_stats(GstElement *pipeline, guint64 *frames, guint64 *queries, guint64 *updates)
{
  GstElement *seg = gst_bin_get_by_name(GST_BIN(pipeline), "seg");
  /* stats-interval=0 posts nothing on its own; one message on demand. */
  g_object_set(seg, "stats-interval", 1, NULL);
  GstBus *bus = gst_element_get_bus(pipeline);
  GstAppSrc *src = GST_APP_SRC(gst_bin_get_by_name(GST_BIN(pipeline), "src"));
  gst_app_src_end_of_stream(src);
  GstMessage *msg;
  gboolean found = FALSE;
  while ((msg = gst_bus_timed_pop(bus, 30 * GST_SECOND))) {
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ELEMENT && gst_message_has_name(msg, "distill-stats")) {
      const GstStructure *s = gst_message_get_structure(msg);
      gst_structure_get_uint64(s, "frames", frames);
      gst_structure_get_uint64(s, "teacher-queries", queries);
      gst_structure_get_uint64(s, "updates", updates);
      found = TRUE;
    }
    gboolean end = GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS ||
                   GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR;
    gst_message_unref(msg);
    if (end)
      break;
  }
  g_assert_true(found);
  gst_object_unref(src);
  gst_object_unref(bus);
  gst_object_unref(seg);
}

/* Training rounds the element logged (GST_DEBUG=distillseg:5) and the updates they report. */
typedef struct {
  guint rounds, updates;
  gboolean malformed;
} RoundLog;

static void collect_rounds(GstDebugCategory *category, GstDebugLevel level, const gchar *file,
                           const gchar *function, gint line, GObject *object,
                           GstDebugMessage *message, gpointer user_data)
{
  RoundLog *log = user_data;
  const gchar *text = gst_debug_message_get(message);
  guint64 ticket;
  double before, after;
  guint updates = 0, stride;

  if (level != GST_LEVEL_DEBUG || strcmp(gst_debug_category_get_name(category), "distillseg") ||
      !g_str_has_prefix(text, "round on teacher query "))
    return;
  if (sscanf(text, "round on teacher query %" G_GUINT64_FORMAT ": mIoU %lf -> %lf in %u updates, "
             "stride %u", &ticket, &before, &after, &updates, &stride) != 5 ||
      before < 0 || before > 1 || after < 0 || after > 1 || stride == 0)
    log->malformed = TRUE;
  g_atomic_int_inc(&log->rounds);
  g_atomic_int_add(&log->updates, updates);
}

static void test_sync_learns(Fixture *fx, gconstpointer data)
{
  RoundLog log = {0};
  gst_debug_set_threshold_for_name("distillseg", GST_LEVEL_DEBUG);
  gst_debug_add_log_function(collect_rounds, &log, NULL);
  gst_debug_remove_log_function(gst_debug_log_default); /* the test's output stays readable */

  start_teacher(fx, "0");
  gchar *props = g_strdup_printf("sync=true teacher-url=%s num-classes=2 %s", fx->url,
                                 data ? (const char *)data : "");
  GstElement *pipeline = make_pipeline(props);
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  double miou_sum = 0, first_miou = -1;

  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  for (guint64 f = 0; f < FRAMES; f++) {
    push_frame(src, fx->scene, f);
    GstSample *sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 60 * GST_SECOND);
    g_assert_nonnull(sample);
    double miou = sample_miou(sample, fx->scene, f);
    if (f == 0)
      first_miou = miou;
    if (f >= SCORED_FROM)
      miou_sum += miou;
    gst_sample_unref(sample);
  }
  guint64 frames = 0, queries = 0, updates = 0;
  get_stats(pipeline, &frames, &queries, &updates);
  double miou = miou_sum / (FRAMES - SCORED_FROM);
  double fraction = (double)queries / (double)frames;
  g_test_message("sync %s: first-frame mIoU %.3f; mIoU vs truth over frames %d..%d: %.3f; teacher "
                 "fraction %.4f (%" G_GUINT64_FORMAT " / %" G_GUINT64_FORMAT "); %"
                 G_GUINT64_FORMAT " updates", data ? (const char *)data : "", first_miou, SCORED_FROM, FRAMES - 1, miou,
                 fraction, queries, frames, updates);
  g_assert_cmpuint(frames, ==, FRAMES);
  g_assert_cmpfloat(miou, >=, 0.8);
  g_assert_cmpfloat(fraction, <=, 1.0 / 8);
  g_assert_cmpuint(updates, >, 0);

  stop_pipeline(pipeline, src, sink);
  gst_debug_remove_log_function(collect_rounds);
  gst_debug_add_log_function(gst_debug_log_default, NULL, NULL);
  gst_debug_unset_threshold_for_name("distillseg");
  g_assert_false(log.malformed);
  g_assert_cmpuint(log.rounds, ==, queries);
  g_assert_cmpuint(log.updates, ==, updates);
  g_free(props);
}

/* The highest update count in the distill-stats messages waiting on the bus; does not block. */
static guint64 posted_updates(GstElement *pipeline)
{
  GstBus *bus = gst_element_get_bus(pipeline);
  GstMessage *msg;
  guint64 updates = 0, u;

  while ((msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ELEMENT))) {
    if (gst_message_has_name(msg, "distill-stats") &&
        gst_structure_get_uint64(gst_message_get_structure(msg), "updates", &u))
      updates = MAX(updates, u);
    gst_message_unref(msg);
  }
  gst_object_unref(bus);
  return updates;
}

/* Frames are pushed at 30 fps while the teacher takes 3 s per answer: 240 of them, and on, up to
 * a minute, until the stats show a first update (a sanitized build on busy cores trains its
 * first late answer after the 8 s of the 240 frames). */
static void test_async_never_stalls(Fixture *fx, gconstpointer data)
{
  const guint min_frames = 240, max_frames = 30 * 60;
  guint64 f; /* after the loop: the frames pushed */
  start_teacher(fx, "3000");
  gchar *props = g_strdup_printf("sync=false teacher-url=%s num-classes=2 min-stride=4 "
                                 "stats-interval=250 teacher-wait=0", fx->url);
  GstElement *pipeline = make_pipeline(props);
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  gint64 last = 0, longest_gap = 0;
  guint64 longest_at = 0;

  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  for (f = 0; f < min_frames || (f < max_frames && posted_updates(pipeline) == 0); f++) {
    gint64 start = g_get_monotonic_time();
    push_frame(src, fx->scene, f);
    GstSample *sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 60 * GST_SECOND);
    g_assert_nonnull(sample);
    gst_sample_unref(sample);
    gint64 now = g_get_monotonic_time();
    if (last && now - last > longest_gap) {
      longest_gap = now - last;
      longest_at = f;
    }
    last = now;
    gint64 pause = 33333 - (now - start);
    if (pause > 0)
      g_usleep(pause);
  }
  guint64 frames = 0, queries = 0, updates = 0;
  get_stats(pipeline, &frames, &queries, &updates);
  g_test_message("async, teacher latency 3000 ms: longest gap between output buffers %.1f ms "
                 "(before frame %" G_GUINT64_FORMAT ") over %" G_GUINT64_FORMAT " frames at 30 "
                 "fps; %" G_GUINT64_FORMAT " teacher queries, %" G_GUINT64_FORMAT " updates",
                 longest_gap / 1000.0, longest_at, f, queries, updates);
  g_assert_cmpuint(frames, ==, f);
  /* Waiting for the teacher even once would leave a gap of about 3 s; a busy machine can delay
   * a frame by a fraction of that, not by all of it. */
  g_assert_cmpint(longest_gap, <, 1500 * 1000);
  g_assert_cmpuint(queries, >=, 2);
  g_assert_cmpuint(updates, >, 0);

  stop_pipeline(pipeline, src, sink);
  g_free(props);
}

/* The frames the element sent to the teacher (GST_DEBUG=distillseg:6, "teacher query N for
 * frame F"). */
typedef struct {
  GMutex lock;
  GArray *frames; /* guint64 */
} QueryLog;

static void collect_queries(GstDebugCategory *category, GstDebugLevel level, const gchar *file,
                            const gchar *function, gint line, GObject *object,
                            GstDebugMessage *message, gpointer user_data)
{
  QueryLog *log = user_data;
  guint64 query, frame;

  if (level != GST_LEVEL_LOG || strcmp(gst_debug_category_get_name(category), "distillseg") ||
      sscanf(gst_debug_message_get(message), "teacher query %" G_GUINT64_FORMAT " for frame %"
             G_GUINT64_FORMAT, &query, &frame) != 2)
    return;
  g_mutex_lock(&log->lock);
  g_array_append_val(log->frames, frame);
  g_mutex_unlock(&log->lock);
}

/* The order things leave distillseg in: each tag's frame (its bitrate, as the test sends it)
 * against the frames out before it. */
typedef struct {
  guint64 buffers;
  guint tags, tags_out_of_turn;
} OutputOrder;

static GstPadProbeReturn watch_output(GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  OutputOrder *order = user_data;
  guint frame;

  if (info->type & GST_PAD_PROBE_TYPE_BUFFER) {
    order->buffers++;
  } else if (GST_EVENT_TYPE(GST_PAD_PROBE_INFO_EVENT(info)) == GST_EVENT_TAG) {
    GstTagList *tags;
    gst_event_parse_tag(GST_PAD_PROBE_INFO_EVENT(info), &tags);
    if (gst_tag_list_get_uint(tags, GST_TAG_BITRATE, &frame)) {
      order->tags++;
      order->tags_out_of_turn += frame + 1 != order->buffers;
    }
  }
  return GST_PAD_PROBE_OK;
}

/* Keeps the mIoU of each sample waiting at the sink, by its frame (from its timestamp), in
 * order; blocks up to timeout for the first. FALSE at the end of the stream. */
static gboolean pull_outputs(GstElement *sink, const SyntheticScene *scene, GstClockTime timeout,
                             double *miou, guint64 *pulled)
{
  GstSample *sample;
  while ((sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), timeout))) {
    guint64 f = GST_BUFFER_PTS(gst_sample_get_buffer(sample)) / (GST_SECOND / 10);
    g_assert_cmpuint(f, ==, *pulled); /* every frame, once, in order */
    miou[f] = sample_miou(sample, scene, f);
    (*pulled)++;
    gst_sample_unref(sample);
    timeout = 0;
  }
  return !gst_app_sink_is_eos(GST_APP_SINK(sink));
}

static void test_async_waits_for_answers(Fixture *fx, gconstpointer data)
{
  enum { PUSHED = 120 };
  QueryLog log = {.frames = g_array_new(FALSE, FALSE, sizeof(guint64))};
  double miou[PUSHED];
  guint64 pulled = 0;
  gboolean live;
  GstClockTime min_latency, max_latency;

  g_mutex_init(&log.lock);
  gst_debug_set_threshold_for_name("distillseg", GST_LEVEL_LOG);
  gst_debug_add_log_function(collect_queries, &log, NULL);
  gst_debug_remove_log_function(gst_debug_log_default);
  start_teacher(fx, "200");
  gchar *props = g_strdup_printf("sync=false teacher-url=%s num-classes=2 max-stride=8 "
                                 "teacher-wait=2000",
                                 fx->url);
  GstElement *pipeline = make_pipeline(props);
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  GstElement *seg = gst_bin_get_by_name(GST_BIN(pipeline), "seg");

  OutputOrder order = {0};
  GstPad *seg_src = gst_element_get_static_pad(seg, "src");
  gst_pad_add_probe(seg_src, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM,
                    watch_output, &order, NULL);
  gst_object_unref(seg_src);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstQuery *latency = gst_query_new_latency();
  g_assert_true(gst_element_query(seg, latency));
  gst_query_parse_latency(latency, &live, &min_latency, &max_latency);
  g_assert_cmpuint(min_latency, >=, 2 * GST_SECOND);
  gst_query_unref(latency);
  for (guint64 f = 0; f < PUSHED; f++) { /* at 10 fps, as a camera */
    gint64 start = g_get_monotonic_time();
    push_frame(src, fx->scene, f);
    /* appsrc sends serialized events in turn with its buffers. */
    gst_element_send_event(src, gst_event_new_tag(gst_tag_list_new(GST_TAG_BITRATE, (guint)f,
                                                                   NULL)));
    pull_outputs(sink, fx->scene, 0, miou, &pulled);
    gint64 pause = 100000 - (g_get_monotonic_time() - start);
    if (pause > 0)
      g_usleep(pause);
  }
  /* As a file's demuxer does before its end (appsrc does not pass it on; every frame is in):
   * it waits in line, and the frames held back still come out once each, in order. */
  GstPad *seg_sink = gst_element_get_static_pad(seg, "sink");
  g_assert_true(gst_pad_send_event(seg_sink,
                                   gst_event_new_stream_group_done(gst_util_group_id_next())));
  gst_object_unref(seg_sink);
  g_assert_cmpint(gst_app_src_end_of_stream(GST_APP_SRC(src)), ==, GST_FLOW_OK);
  while (pull_outputs(sink, fx->scene, 10 * GST_SECOND, miou, &pulled))
    ;
  g_assert_cmpuint(pulled, ==, PUSHED);

  gst_debug_remove_log_function(collect_queries);
  gst_debug_add_log_function(gst_debug_log_default, NULL, NULL);
  gst_debug_unset_threshold_for_name("distillseg");
  double worst = 1.0;
  for (guint i = 0; i < log.frames->len; i++)
    worst = MIN(worst, miou[g_array_index(log.frames, guint64, i)]);
  g_test_message("async, teacher latency 200 ms, teacher-wait 2000 ms: %u teacher frames, the "
                 "worst of them %.3f against the truth; reported latency %.1f s; %u tags, %u "
                 "out of turn", log.frames->len, worst, (double)min_latency / GST_SECOND,
                 order.tags, order.tags_out_of_turn);
  g_assert_cmpuint(log.frames->len, >=, 5);
  g_assert_cmpfloat(worst, >=, 0.9);
  g_assert_cmpuint(order.tags, ==, PUSHED);
  g_assert_cmpuint(order.tags_out_of_turn, ==, 0);

  gst_object_unref(seg);
  stop_pipeline(pipeline, src, sink);
  g_array_unref(log.frames);
  g_mutex_clear(&log.lock);
  g_free(props);
}

int main(int argc, char **argv)
{
  gst_init(&argc, &argv);
  g_test_init(&argc, &argv, NULL);
  g_test_add("/plugins/learning/sync", Fixture, NULL, fixture_setup, test_sync_learns,
             fixture_teardown);
  g_test_add("/plugins/learning/sync-measured-at-frame-size", Fixture,
             "measure-at-frame-size=true", fixture_setup, test_sync_learns, fixture_teardown);
  g_test_add("/plugins/learning/async-slow-teacher", Fixture, NULL, fixture_setup,
             test_async_never_stalls, fixture_teardown);
  g_test_add("/plugins/learning/async-waits-for-answers", Fixture, NULL, fixture_setup,
             test_async_waits_for_answers, fixture_teardown);
  return g_test_run();
}
