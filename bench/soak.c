/* soak.c: a long run of distillseg, training on, against a teacher that misbehaves; says whether
 * the process holds steady (bench/README.md, "soak").
 *
 * A synthetic scene (tests/common/synthetic_scene.c) loops through appsrc ! distillseg ! fakesink
 * as fast as the element goes. The teacher is the reference replay server over HTTP on loopback,
 * serving the scene's own labels with injected faults (errors, malformed replies, requests never
 * answered, late answers), and it is stopped for a while mid-run (refused connections) and
 * started again on the same port. The resident memory, open file descriptors and threads of this
 * process are sampled while the stream runs; the growth from the end of the warm-up to the last
 * frame goes in one JSON line, with ok = RSS growth < 5 MB and no fd or thread growth. */
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <stdio.h>
#include <string.h>

#include "synthetic_scene.h"
#include "teacher_server.h"

#define LOOP_FRAMES 300       /* the scene's frames streamed in a loop, and what the teacher holds */
#define RSS_LIMIT_KB 5120

typedef struct {
  guint64 frames, warmup, sample_every;
  int width, height;
  double fail_rate, garbage_rate, hang_rate;
  int latency_ms, timeout_ms;
  double outage_from, outage_to;  /* fractions of the run with the teacher stopped */
  double accuracy_threshold;
} SoakOptions;

typedef struct {
  guint64 frame;
  long rss_kb;
  int fds, sockets, threads;  /* fds: all but sockets, the teacher's connections of the moment */
} Sample;

typedef struct {
  char *dir, *video, *labels;
  TeacherServer *server;
  int port; /* 0 until the first start, then the same on each start */
} Teacher;

static long rss_kb(void)
{
  g_autofree char *status = NULL;
  long kb = -1;
  if (g_file_get_contents("/proc/self/status", &status, NULL, NULL)) {
    const char *line = strstr(status, "\nVmRSS:");
    if (line)
      sscanf(line + strlen("\nVmRSS:"), "%ld", &kb);
  }
  return kb;
}

/* Entries of folder; *sockets (if given) counts the links to sockets among them. */
static int count_entries(const char *folder, int *sockets)
{
  GDir *dir = g_dir_open(folder, 0, NULL);
  int n = 0;
  if (!dir)
    return -1;
  for (const char *name; (name = g_dir_read_name(dir));) {
    g_autofree char *path = g_build_filename(folder, name, NULL);
    g_autofree char *target = sockets ? g_file_read_link(path, NULL) : NULL;
    if (target && g_str_has_prefix(target, "socket:"))
      (*sockets)++;
    else
      n++;
  }
  g_dir_close(dir);
  return n;
}

static Sample take_sample(guint64 frame)
{
  Sample s = {.frame = frame, .rss_kb = rss_kb()};
  s.fds = count_entries("/proc/self/fd", &s.sockets);
  s.threads = count_entries("/proc/self/task", NULL);
  return s;
}

/* ---- the teacher ---------------------------------------------------------------------------- */

/* Encodes frame_bytes-sized raw frames from data as a lossless video at path. */
static void encode_video(const char *path, const char *pix_fmt, int width, int height,
                         const guint8 *data, gsize frame_bytes)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *size = g_strdup_printf("%dx%d", width, height);
  g_autoptr(GSubprocess) ffmpeg = g_subprocess_new(
      G_SUBPROCESS_FLAGS_STDIN_PIPE, &error, "ffmpeg", "-nostdin", "-v", "error", "-y", "-f",
      "rawvideo", "-pix_fmt", pix_fmt, "-s", size, "-r", "30", "-i", "pipe:0", "-c:v", "ffv1",
      path, NULL);
  if (!ffmpeg)
    g_error("cannot run ffmpeg: %s", error->message);
  GOutputStream *in = g_subprocess_get_stdin_pipe(ffmpeg);
  if (!g_output_stream_write_all(in, data, frame_bytes * LOOP_FRAMES, NULL, NULL, &error) ||
      !g_output_stream_close(in, NULL, &error) || !g_subprocess_wait_check(ffmpeg, NULL, &error))
    g_error("ffmpeg could not write %s: %s", path, error->message);
}

/* The scene's loop as the replay teacher's video and labels (0 / 255). */
static void write_teacher_data(Teacher *t, const SoakOptions *o, const guint8 *rgb,
                               const SyntheticScene *scene)
{
  gsize pixels = (gsize)o->width * o->height;
  guint8 *labels = g_malloc(pixels * LOOP_FRAMES);
  for (guint64 f = 0; f < LOOP_FRAMES; f++) {
    guint8 *frame_labels = labels + f * pixels;
    synthetic_scene_labels(scene, f, o->width, o->height, frame_labels);
    for (gsize i = 0; i < pixels; i++)
      frame_labels[i] = frame_labels[i] ? 255 : 0;
  }
  encode_video(t->video, "rgb24", o->width, o->height, rgb, pixels * 3);
  encode_video(t->labels, "gray", o->width, o->height, labels, pixels);
  g_free(labels);
}

/* Starts the replay teacher on t->port (0: a free one, then remembered) and waits for its model
 * to be ready. */
static void teacher_start(Teacher *t, const SoakOptions *o)
{
  g_autoptr(GError) error = NULL;
  char fail[32], garbage[32], hang[32], latency[16];
  g_ascii_dtostr(fail, sizeof fail, o->fail_rate);
  g_ascii_dtostr(garbage, sizeof garbage, o->garbage_rate);
  g_ascii_dtostr(hang, sizeof hang, o->hang_rate);
  g_snprintf(latency, sizeof latency, "%d", o->latency_ms);
  const char *flags[] = {"--model", "replay", "--video", t->video, "--labels", t->labels,
                         "--fail-rate", fail, "--garbage-rate", garbage, "--hang-rate", hang,
                         "--latency-ms", latency, NULL};
  t->server = teacher_server_start(&(TeacherServerOptions){.flags = flags, .port = t->port},
                                   &error);
  if (!t->server)
    g_error("cannot start the teacher: %s", error->message);
  t->port = teacher_server_port(t->server);
}

static void teacher_stop(Teacher *t)
{
  g_clear_pointer(&t->server, teacher_server_stop);
}

/* ---- the stream ----------------------------------------------------------------------------- */

typedef struct {
  guint64 queries, errors, updates;
} TeacherFigures;

/* Takes what the bus holds: the figures of the last distill-stats; an error ends the run. */
static void read_bus(GstBus *bus, TeacherFigures *figures)
{
  GstMessage *msg;
  while ((msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR | GST_MESSAGE_ELEMENT))) {
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
      g_autoptr(GError) error = NULL;
      g_autofree char *debug = NULL;
      gst_message_parse_error(msg, &error, &debug);
      g_error("the pipeline failed: %s (%s)", error->message, debug ? debug : "");
    }
    const GstStructure *s = gst_message_get_structure(msg);
    if (gst_structure_has_name(s, "distill-stats"))
      gst_structure_get(s, "teacher-queries", G_TYPE_UINT64, &figures->queries,
                        "teacher-errors", G_TYPE_UINT64, &figures->errors, "updates",
                        G_TYPE_UINT64, &figures->updates, NULL);
    gst_message_unref(msg);
  }
}

static void print_sample(GString *json, const char *name, const Sample *s)
{
  g_string_append_printf(json, "\"%s\":{\"frame\":%" G_GUINT64_FORMAT ",\"rss_kb\":%ld,"
                         "\"fds\":%d,\"sockets\":%d,\"threads\":%d}", name, s->frame,
                         s->rss_kb, s->fds, s->sockets, s->threads);
}

static gboolean parse_options(int *argc, char ***argv, SoakOptions *o)
{
  g_autofree char *size = NULL;
  g_autoptr(GError) error = NULL;
  gint64 frames = 100000, warmup = 10000, sample_every = 5000;
  GOptionEntry entries[] = {
      {"frames", 0, 0, G_OPTION_ARG_INT64, &frames, "Frames in all (100000)", "N"},
      {"warmup", 0, 0, G_OPTION_ARG_INT64, &warmup, "Frames before the first measure (10000)",
       "N"},
      {"sample-every", 0, 0, G_OPTION_ARG_INT64, &sample_every,
       "Frames between samples (5000)", "N"},
      {"size", 0, 0, G_OPTION_ARG_STRING, &size, "Frame size (96x64)", "WxH"},
      {"fail-rate", 0, 0, G_OPTION_ARG_DOUBLE, &o->fail_rate,
       "Teacher requests answered 500 or 503 (0.1)", "F"},
      {"garbage-rate", 0, 0, G_OPTION_ARG_DOUBLE, &o->garbage_rate,
       "Teacher requests answered with a malformed body (0.1)", "F"},
      {"hang-rate", 0, 0, G_OPTION_ARG_DOUBLE, &o->hang_rate,
       "Teacher requests never answered (0.05)", "F"},
      {"latency-ms", 0, 0, G_OPTION_ARG_INT, &o->latency_ms, "Teacher latency (20)", "MS"},
      {"teacher-timeout", 0, 0, G_OPTION_ARG_INT, &o->timeout_ms,
       "distillseg's teacher-timeout (500)", "MS"},
      {"accuracy-threshold", 0, 0, G_OPTION_ARG_DOUBLE, &o->accuracy_threshold,
       "distillseg's accuracy-threshold (0.95: the student trains on most teacher frames)",
       "F"},
      {"outage-from", 0, 0, G_OPTION_ARG_DOUBLE, &o->outage_from,
       "Fraction of the run at which the teacher stops (0.4)", "F"},
      {"outage-to", 0, 0, G_OPTION_ARG_DOUBLE, &o->outage_to,
       "Fraction at which it starts again (0.5)", "F"},
      {NULL}};
  *o = (SoakOptions){.fail_rate = 0.1, .garbage_rate = 0.1, .hang_rate = 0.05,
                     .latency_ms = 20, .timeout_ms = 500, .outage_from = 0.4, .outage_to = 0.5,
                     .accuracy_threshold = 0.95};
  g_autoptr(GOptionContext) context = g_option_context_new("- distillseg soak benchmark");
  g_option_context_add_main_entries(context, entries, NULL);
  g_option_context_add_group(context, gst_init_get_option_group());
  if (!g_option_context_parse(context, argc, argv, &error)) {
    g_printerr("soak: %s (soak --help lists the options)\n", error->message);
    return FALSE;
  }
  o->width = 96;
  o->height = 64;
  if (size && sscanf(size, "%dx%d", &o->width, &o->height) != 2) {
    g_printerr("soak: --size wants WxH, e.g. 96x64, not '%s'\n", size);
    return FALSE;
  }
  if (frames < 1 || warmup < 0 || warmup >= frames || sample_every < 1 || o->width < 2 ||
      o->height < 2 || o->outage_from > o->outage_to) {
    g_printerr("soak: wants 0 <= warmup < frames, sample-every >= 1, a size of at least 2x2 "
               "and outage-from <= outage-to\n");
    return FALSE;
  }
  o->frames = (guint64)frames;
  o->warmup = (guint64)warmup;
  o->sample_every = (guint64)sample_every;
  return TRUE;
}

int main(int argc, char **argv)
{
  SoakOptions o;
  /* The plugin of this build, unless told otherwise. */
  g_setenv("GST_PLUGIN_PATH", DISTILL_PLUGIN_DIR, FALSE);
  if (!parse_options(&argc, &argv, &o))
    return 2;

  SyntheticSceneConfig scene_cfg;
  synthetic_scene_config_default(&scene_cfg, o.width, o.height, 7);
  scene_cfg.num_classes = 2; /* the replay teacher stores foreground / background */
  SyntheticScene *scene = synthetic_scene_new(&scene_cfg);
  gsize frame_bytes = (gsize)o.width * o.height * 3;
  guint8 *loop = g_malloc(frame_bytes * LOOP_FRAMES);
  for (guint64 f = 0; f < LOOP_FRAMES; f++)
    synthetic_scene_render(scene, f, loop + f * frame_bytes);

  Teacher teacher = {0};
  g_autoptr(GError) error = NULL;
  teacher.dir = g_dir_make_tmp("distill-soak-XXXXXX", &error);
  if (!teacher.dir)
    g_error("%s", error->message);
  teacher.video = g_build_filename(teacher.dir, "scene.mkv", NULL);
  teacher.labels = g_build_filename(teacher.dir, "labels.mkv", NULL);
  write_teacher_data(&teacher, &o, loop, scene);
  synthetic_scene_free(scene);
  teacher_start(&teacher, &o);

  g_autofree char *launch = g_strdup_printf(
      "appsrc name=src format=time block=true max-bytes=%" G_GSIZE_FORMAT
      " caps=video/x-raw,format=RGB,width=%d,height=%d,framerate=30/1 ! distillseg "
      "teacher-url=%s teacher-timeout=%d accuracy-threshold=%g stats-interval=500 ! "
      "fakesink sync=false", frame_bytes * 4, o.width, o.height,
      teacher_server_url(teacher.server), o.timeout_ms,
      o.accuracy_threshold);
  GstElement *pipeline = gst_parse_launch(launch, &error);
  if (!pipeline)
    g_error("%s", error->message);
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  GstBus *bus = gst_element_get_bus(pipeline);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);

  guint64 outage_from = (guint64)(o.outage_from * o.frames);
  guint64 outage_to = (guint64)(o.outage_to * o.frames);
  TeacherFigures figures = {0};
  GString *samples = g_string_new(NULL);
  Sample warm = {0}, last = {0};
  int max_sockets = 0;
  gint64 started = g_get_monotonic_time(), warm_time = started;
  for (guint64 f = 0; f < o.frames; f++) {
    if (outage_from < outage_to && f == outage_from)
      teacher_stop(&teacher);
    if (outage_from < outage_to && f == outage_to)
      teacher_start(&teacher, &o);
    /* A new buffer a frame, as from a decoder; the element draws its overlay on it. */
    GstBuffer *buffer = gst_buffer_new_allocate(NULL, frame_bytes, NULL);
    gst_buffer_fill(buffer, 0, loop + (f % LOOP_FRAMES) * frame_bytes, frame_bytes);
    GST_BUFFER_PTS(buffer) = gst_util_uint64_scale(f, GST_SECOND, 30);
    GST_BUFFER_DURATION(buffer) = GST_SECOND / 30;
    if (gst_app_src_push_buffer(GST_APP_SRC(src), buffer) != GST_FLOW_OK)
      g_error("the pipeline stopped taking frames at frame %" G_GUINT64_FORMAT, f);
    guint64 done = f + 1;
    if (done % 100 == 0)
      read_bus(bus, &figures);
    if (done == o.warmup || done % o.sample_every == 0 || done == o.frames) {
      last = take_sample(done);
      g_string_append_printf(samples, "%s[%" G_GUINT64_FORMAT ",%ld,%d,%d,%d]",
                             samples->len ? "," : "", last.frame, last.rss_kb, last.fds,
                             last.sockets, last.threads);
      max_sockets = MAX(max_sockets, last.sockets);
      if (done == o.warmup) {
        warm = last;
        warm_time = g_get_monotonic_time();
      }
    }
  }
  gint64 ended = g_get_monotonic_time();

  gst_app_src_end_of_stream(GST_APP_SRC(src));
  g_autoptr(GstMessage) eos =
      gst_bus_timed_pop_filtered(bus, 60 * GST_SECOND, GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  read_bus(bus, &figures);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(bus);
  gst_object_unref(src);
  gst_object_unref(pipeline);
  teacher_stop(&teacher);

  long rss_growth = last.rss_kb - warm.rss_kb;
  int fd_growth = last.fds - warm.fds, thread_growth = last.threads - warm.threads;
  gboolean ok = rss_growth < RSS_LIMIT_KB && fd_growth <= 0 && thread_growth <= 0;
  GString *json = g_string_new("{");
  g_string_append_printf(
      json, "\"frames\":%" G_GUINT64_FORMAT ",\"size\":\"%dx%d\",\"seconds\":%.1f,"
      "\"fps_after_warmup\":%.1f,\"teacher\":{\"fail_rate\":%g,\"garbage_rate\":%g,"
      "\"hang_rate\":%g,\"latency_ms\":%d,\"timeout_ms\":%d,\"outage_frames\":[%"
      G_GUINT64_FORMAT ",%" G_GUINT64_FORMAT "]},\"teacher_queries\":%" G_GUINT64_FORMAT
      ",\"teacher_errors\":%" G_GUINT64_FORMAT ",\"updates\":%" G_GUINT64_FORMAT ",",
      o.frames, o.width, o.height, (ended - started) / 1e6,
      (o.frames - o.warmup) / ((ended - warm_time) / 1e6), o.fail_rate, o.garbage_rate,
      o.hang_rate, o.latency_ms, o.timeout_ms, outage_from, outage_to, figures.queries,
      figures.errors, figures.updates);
  print_sample(json, "warm", &warm);
  g_string_append_c(json, ',');
  print_sample(json, "end", &last);
  g_string_append_printf(json, ",\"rss_growth_kb\":%ld,\"fd_growth\":%d,\"thread_growth\":%d,"
                         "\"max_sockets\":%d,\"ok\":%s,\"samples\":[%s]}", rss_growth,
                         fd_growth, thread_growth, max_sockets, ok ? "true" : "false",
                         samples->str);
  puts(json->str);
  g_string_free(json, TRUE);
  g_string_free(samples, TRUE);

  g_unlink(teacher.video);
  g_unlink(teacher.labels);
  g_rmdir(teacher.dir);
  g_free(teacher.video);
  g_free(teacher.labels);
  g_free(teacher.dir);
  g_free(loop);
  return ok ? 0 : 1;
}
