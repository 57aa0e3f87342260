/* metrics.c: the figures of every camera, three ways: a progress line per camera on stderr, a
 * CSV log, and a Prometheus text page at /metrics. */
#include <string.h>

#include "distill-rtsp.h"

#define DISTILL_RTSP_ERROR (g_quark_from_static_string("distill-rtsp"))

/* ---- progress ------------------------------------------------------------------------------ */

static gchar *progress_line(Camera *cam)
{
  CameraStats *st = &cam->stats;

  if (!camera_up(cam))
    return g_strdup_printf("%-10s down%s%s (reconnections %" G_GUINT64_FORMAT ")", cam->name,
                           cam->last_error ? ": " : "", cam->last_error ? cam->last_error : "",
                           cam->reconnects);
  if (!st->valid)
    return g_strdup_printf("%-10s starting", cam->name);
  g_autofree gchar *miou = st->last_miou < 0 ? g_strdup("  -  ")
                                             : g_strdup_printf("%.3f", st->last_miou);
  return g_strdup_printf("%-10s %5.1f fps  stride %3u  teacher %5.1f%%  mIoU %s  student "
                         "%5.1f ms  updates %" G_GUINT64_FORMAT "  teacher errors %"
                         G_GUINT64_FORMAT,
                         cam->name, st->fps, st->stride,
                         st->frames ? 100.0 * st->teacher_queries / st->frames : 0.0, miou,
                         st->student_ms, st->updates, st->teacher_errors);
}

void progress_draw(DistillRtsp *app)
{
  GString *out = g_string_new(NULL);

  /* On a terminal the block of lines is redrawn in place; in a log, one line per camera and
   * interval. */
  if (app->tty && app->progress_lines)
    g_string_append_printf(out, "\033[%uA", app->progress_lines);
  for (guint i = 0; i < app->cameras->len; i++) {
    g_autofree gchar *line = progress_line(g_ptr_array_index(app->cameras, i));
    g_string_append_printf(out, "%s%s%s\n", app->tty ? "\r\033[K" : "distill-rtsp: ", line, "");
  }
  app->progress_lines = app->cameras->len;
  fputs(out->str, stderr);
  fflush(stderr);
  g_string_free(out, TRUE);
}

/* ---- CSV ----------------------------------------------------------------------------------- */

#define CSV_HEADER "time_s,camera,frames,fps,stride,teacher_queries,teacher_errors,updates," \
                   "last_miou,student_ms,train_ms,teacher_latency_ms,input_width," \
                   "input_height,inference_share,train_share,hibernating,shown_miou\n"

gboolean csv_open(DistillRtsp *app, GError **error)
{
  if (!app->options.csv)
    return TRUE;
  app->csv = fopen(app->options.csv, "a");
  if (!app->csv) {
    g_set_error(error, DISTILL_RTSP_ERROR, 0, "cannot open --csv %s: %s", app->options.csv,
                g_strerror(errno));
    return FALSE;
  }
  if (ftell(app->csv) == 0)
    fputs(CSV_HEADER, app->csv);
  return TRUE;
}

void csv_write(DistillRtsp *app, Camera *cam)
{
  CameraStats *st = &cam->stats;

  if (!app->csv)
    return;
  fprintf(app->csv,
          "%.3f,%s,%" G_GUINT64_FORMAT ",%.2f,%u,%" G_GUINT64_FORMAT ",%" G_GUINT64_FORMAT
          ",%" G_GUINT64_FORMAT ",%.4f,%.2f,%.1f,%.1f,%d,%d,%.3f,%.3f,%d,%.4f\n",
          (g_get_monotonic_time() - app->start_time) / 1e6, cam->name, st->frames, st->fps,
          st->stride, st->teacher_queries, st->teacher_errors, st->updates, st->last_miou,
          st->student_ms, st->train_ms, st->teacher_latency_ms, st->input_width,
          st->input_height, st->inference_share, st->train_share, st->hibernating,
          st->shown_miou);
  fflush(app->csv);
}

/* ---- /metrics ------------------------------------------------------------------------------ */

typedef enum { COUNTER, GAUGE } MetricKind;

typedef struct {
  const char *name, *help;
  MetricKind kind;
} Metric;

static const Metric metrics[] = {
    {"distill_frames_total", "Frames segmented by the student.", COUNTER},
    {"distill_fps", "Frames per second over the last statistics interval.", GAUGE},
    {"distill_stride", "Current teacher stride (frames between teacher queries).", GAUGE},
    {"distill_last_miou", "Student-vs-teacher mIoU on the last teacher frame (-1 = none yet).",
     GAUGE},
    {"distill_shown_miou", "mIoU of the class map shown (the student's fused with the teacher's "
     "last answer) against the last teacher frame (-1 = none yet).", GAUGE},
    {"distill_teacher_queries_total", "Frames sent to the teacher.", COUNTER},
    {"distill_teacher_errors_total", "Teacher queries that failed.", COUNTER},
    {"distill_updates_total", "SGD steps taken by the student.", COUNTER},
    {"distill_student_ms", "Mean student inference time per frame, in milliseconds.", GAUGE},
    {"distill_train_ms", "Mean duration of a training round, in milliseconds.", GAUGE},
    {"distill_teacher_latency_ms", "Mean teacher reply latency, in milliseconds.", GAUGE},
    {"distill_input_width", "Width of the student's input in use (the compute governor's).",
     GAUGE},
    {"distill_input_height", "Height of the student's input in use.", GAUGE},
    {"distill_inference_share", "Mean inference time over the frame interval.", GAUGE},
    {"distill_train_share", "Share of the time the trainer spent in rounds, over the last "
     "statistics interval.", GAUGE},
    {"distill_hibernating", "1 while training hibernates (the student meets the threshold at the "
     "longest stride).", GAUGE},
    {"distill_camera_up", "1 while the camera delivers frames.", GAUGE},
    {"distill_reconnects_total", "Times the camera's input was lost and reopened.", COUNTER},
};

static double metric_value(guint m, Camera *cam)
{
  CameraStats *st = &cam->stats;
  double fps = camera_up(cam) ? st->fps : 0.0;  /* the last figure is stale while it is down */
  double values[] = {st->frames,          fps,            st->stride,
                     st->last_miou,       st->shown_miou,  st->teacher_queries,
                     st->teacher_errors,
                     st->updates,         st->student_ms, st->train_ms,
                     st->teacher_latency_ms, st->input_width, st->input_height,
                     st->inference_share, st->train_share, st->hibernating,
                     camera_up(cam), cam->reconnects};
  G_STATIC_ASSERT(G_N_ELEMENTS(values) == G_N_ELEMENTS(metrics));
  return values[m];
}

/* Label values escape backslash, double quote and newline (the exposition format). */
static void append_label(GString *out, const char *value)
{
  for (; *value; value++) {
    if (*value == '\\' || *value == '"')
      g_string_append_c(out, '\\');
    if (*value == '\n')
      g_string_append(out, "\\n");
    else
      g_string_append_c(out, *value);
  }
}

gchar *metrics_render(DistillRtsp *app)
{
  GString *out = g_string_new(NULL);

  for (guint m = 0; m < G_N_ELEMENTS(metrics); m++) {
    g_string_append_printf(out, "# HELP %s %s\n# TYPE %s %s\n", metrics[m].name, metrics[m].help,
                           metrics[m].name, metrics[m].kind == COUNTER ? "counter" : "gauge");
    for (guint i = 0; i < app->cameras->len; i++) {
      Camera *cam = g_ptr_array_index(app->cameras, i);
      char number[G_ASCII_DTOSTR_BUF_SIZE];
      g_string_append_printf(out, "%s{camera=\"", metrics[m].name);
      append_label(out, cam->name);
      g_string_append_printf(out, "\"} %s\n",
                             g_ascii_formatd(number, sizeof number, "%.6g",
                                             metric_value(m, cam)));
    }
  }
  return g_string_free(out, FALSE);
}

static void on_metrics(SoupServer *server, SoupServerMessage *msg, const char *path,
                       GHashTable *query, gpointer data)
{
  if (strcmp(soup_server_message_get_method(msg), "GET") != 0 &&
      strcmp(soup_server_message_get_method(msg), "HEAD") != 0) {
    soup_server_message_set_status(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, NULL);
    return;
  }
  if (strcmp(path, "/metrics") != 0) {
    soup_server_message_set_status(msg, SOUP_STATUS_NOT_FOUND, NULL);
    soup_server_message_set_response(msg, "text/plain", SOUP_MEMORY_STATIC,
                                     "not found: the page is /metrics\n", 32);
    return;
  }
  gchar *text = metrics_render(data);
  soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response(msg, "text/plain; version=0.0.4; charset=utf-8",
                                   SOUP_MEMORY_TAKE, text, strlen(text));
}

gboolean metrics_start(DistillRtsp *app, GError **error)
{
  if (app->options.metrics_port < 0)
    return TRUE;
  g_autoptr(GInetAddress) address = g_inet_address_new_from_string(app->options.bind);
  if (!address) {
    g_set_error(error, DISTILL_RTSP_ERROR, 0, "--bind %s is not an IP address",
                app->options.bind);
    return FALSE;
  }
  g_autoptr(GSocketAddress) where = g_inet_socket_address_new(address, app->options.metrics_port);
  app->metrics = soup_server_new("server-header", "distill-rtsp", NULL);
  soup_server_add_handler(app->metrics, NULL, on_metrics, app, NULL);
  if (!soup_server_listen(app->metrics, where, 0, error)) {
    g_prefix_error(error, "/metrics on %s port %d (in use? --metrics-port 0 picks a free one): ",
                   app->options.bind, app->options.metrics_port);
    return FALSE;
  }
  GSList *uris = soup_server_get_uris(app->metrics);
  if (uris) {
    g_autofree gchar *uri = g_uri_to_string(uris->data);
    printf("distill-rtsp: metrics at %smetrics\n", uri);
  }
  g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
  return TRUE;
}
