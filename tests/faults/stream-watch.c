/* stream-watch: runs a pipeline (gst-launch syntax) and reports, as JSON lines on stdout, how
 * its output flows and what its bus says, for the fault tests and bench/faults.
 *
 *   stream-watch [--tick-ms N] [--seconds S] [--loop] PIPELINE...
 *
 * The pipeline needs a sink named "sink": every buffer reaching its sink pad counts as a frame
 * out. Lines (t = seconds since start):
 *   {"t":…,"tick":{"frames":N,"gap_ms":G}}   every tick: frames so far, longest gap between two
 *                                             buffers within the tick (an open gap counts too)
 *   {"t":…,"warning":"…","from":"…"}          a bus warning (also "info", "error")
 *   {"t":…,"stats":{"frames":…,"teacher-queries":…,"teacher-errors":…,"updates":…,
 *                   "rollbacks":…,"fps":…,"last-miou":…}}
 *   {"t":…,"end":"eos|error|stuck","frames":N,"max_gap_ms":G,"first_ms":F}
 * --loop: an end of stream that was not asked for seeks back to the start (a file played for as
 * long as a test needs). SIGINT, SIGTERM or --seconds send EOS; a pipeline that does not reach
 * EOS within 20 s of it ends "stuck". Exit status: 0 at EOS, 1 after an error, 3 stuck, 2 bad usage. */
#include <glib-unix.h>
#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
  GstElement *pipeline;
  GMainLoop *loop;
  gint64 start;
  const char *end;            /* how it ended: "eos", "error", "stuck" */
  int status;
  gboolean eos_sent, repeat;
  GMutex lock;                /* the fields below: the sink's streaming thread writes them */
  guint64 frames;
  gint64 last_buffer, first_buffer;
  gint64 tick_gap, max_gap;   /* microseconds */
} Watch;

/* Prints {"t": seconds since start, ...the members of o} as one line; takes o. */
static void emit(Watch *w, JsonObject *o)
{
  JsonObject *line = json_object_new();
  json_object_set_double_member(line, "t", (g_get_monotonic_time() - w->start) / 1e6);
  GList *members = json_object_get_members(o);
  for (GList *m = members; m; m = m->next)
    json_object_set_member(line, m->data, json_object_dup_member(o, m->data));
  g_list_free(members);
  json_object_unref(o);

  JsonNode *root = json_node_init_object(json_node_alloc(), line);
  gchar *text = json_to_string(root, FALSE);
  printf("%s\n", text);
  fflush(stdout);
  g_free(text);
  json_node_unref(root);
  json_object_unref(line);
}

static GstPadProbeReturn on_buffer(GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  Watch *w = data;
  gint64 now = g_get_monotonic_time();

  g_mutex_lock(&w->lock);
  if (w->frames) {
    gint64 gap = now - w->last_buffer;
    w->tick_gap = MAX(w->tick_gap, gap);
    w->max_gap = MAX(w->max_gap, gap);
  } else {
    w->first_buffer = now;
  }
  w->last_buffer = now;
  w->frames++;
  g_mutex_unlock(&w->lock);
  return GST_PAD_PROBE_OK;
}

/* The longest gap so far, the one still open included. */
static gint64 gap_until(Watch *w, gint64 gap, gint64 now)
{
  return w->frames ? MAX(gap, now - w->last_buffer) : 0;
}

static gboolean on_tick(gpointer data)
{
  Watch *w = data;
  gint64 now = g_get_monotonic_time();

  g_mutex_lock(&w->lock);
  JsonObject *o = json_object_new();
  json_object_set_int_member(o, "frames", w->frames);
  json_object_set_double_member(o, "gap_ms", gap_until(w, w->tick_gap, now) / 1000.0);
  w->tick_gap = 0;
  g_mutex_unlock(&w->lock);
  JsonObject *line = json_object_new();
  json_object_set_object_member(line, "tick", o);
  emit(w, line);
  return G_SOURCE_CONTINUE;
}

static void finish(Watch *w, const char *end, int status)
{
  if (w->end)
    return;
  w->end = end;
  w->status = status;
  g_main_loop_quit(w->loop);
}

static gboolean on_stuck(gpointer data)
{
  finish(data, "stuck", 3);
  return G_SOURCE_REMOVE;
}

static gboolean send_eos(gpointer data)
{
  Watch *w = data;
  if (!w->eos_sent) {
    w->eos_sent = TRUE;
    gst_element_send_event(w->pipeline, gst_event_new_eos());
    g_timeout_add_seconds(20, on_stuck, w);
  }
  return G_SOURCE_REMOVE;
}

static void print_message(Watch *w, GstMessage *msg, const char *key)
{
  GError *error = NULL;
  gchar *debug = NULL;
  if (key[0] == 'w')
    gst_message_parse_warning(msg, &error, &debug);
  else if (key[0] == 'e')
    gst_message_parse_error(msg, &error, &debug);
  else
    gst_message_parse_info(msg, &error, &debug);

  JsonObject *o = json_object_new();
  json_object_set_string_member(o, key, error->message);
  json_object_set_string_member(o, "from", GST_OBJECT_NAME(GST_MESSAGE_SRC(msg)));
  json_object_set_string_member(o, "debug", debug ? debug : "");
  emit(w, o);
  g_clear_error(&error);
  g_free(debug);
}

static void print_stats(Watch *w, const GstStructure *s)
{
  static const char *const counters[] = {"frames", "teacher-queries", "teacher-errors", "updates",
                                         "rollbacks"};
  JsonObject *o = json_object_new();

  for (guint i = 0; i < G_N_ELEMENTS(counters); i++) {
    guint64 v = 0;
    gst_structure_get_uint64(s, counters[i], &v);
    json_object_set_int_member(o, counters[i], v);
  }
  double fps = 0, last_miou = -1;
  gst_structure_get_double(s, "fps", &fps);
  json_object_set_double_member(o, "fps", fps);
  gst_structure_get_double(s, "last-miou", &last_miou);
  json_object_set_double_member(o, "last-miou", last_miou);
  JsonObject *line = json_object_new();
  json_object_set_object_member(line, "stats", o);
  emit(w, line);
}

static gboolean on_bus(GstBus *bus, GstMessage *msg, gpointer data)
{
  Watch *w = data;

  switch (GST_MESSAGE_TYPE(msg)) {
  case GST_MESSAGE_WARNING:
    print_message(w, msg, "warning");
    break;
  case GST_MESSAGE_INFO:
    print_message(w, msg, "info");
    break;
  case GST_MESSAGE_ERROR:
    print_message(w, msg, "error");
    finish(w, "error", 1);
    break;
  case GST_MESSAGE_EOS:
    if (w->repeat && !w->eos_sent &&
        gst_element_seek_simple(w->pipeline, GST_FORMAT_TIME,
                                GST_SEEK_FLAG_FLUSH | GST_SEEK_FLAG_KEY_UNIT, 0))
      break;
    finish(w, "eos", 0);
    break;
  case GST_MESSAGE_ELEMENT:
    if (gst_message_has_name(msg, "distill-stats"))
      print_stats(w, gst_message_get_structure(msg));
    break;
  default:
    break;
  }
  return G_SOURCE_CONTINUE;
}

int main(int argc, char **argv)
{
  Watch w = {0};
  gint tick_ms = 250;
  gdouble seconds = 0;
  GOptionEntry entries[] = {
      {"tick-ms", 0, 0, G_OPTION_ARG_INT, &tick_ms, "period of the tick lines (250)", "N"},
      {"seconds", 0, 0, G_OPTION_ARG_DOUBLE, &seconds, "send EOS after S seconds", "S"},
      {"loop", 0, 0, G_OPTION_ARG_NONE, &w.repeat, "play the input again at its end", NULL},
      {NULL}};
  GOptionContext *context = g_option_context_new("PIPELINE...");
  GError *error = NULL;

  g_option_context_add_main_entries(context, entries, NULL);
  g_option_context_add_group(context, gst_init_get_option_group());
  if (!g_option_context_parse(context, &argc, &argv, &error) || argc < 2 || tick_ms <= 0) {
    g_printerr("stream-watch: %s\nusage: stream-watch [--tick-ms N] [--seconds S] [--loop] PIPELINE...\n",
               error ? error->message : "a pipeline with a sink named \"sink\" is needed");
    return 2;
  }
  g_option_context_free(context);

  gchar *description = g_strjoinv(" ", argv + 1);
  w.pipeline = gst_parse_launch(description, &error);
  g_free(description);
  GstElement *sink = GST_IS_BIN(w.pipeline) ? gst_bin_get_by_name(GST_BIN(w.pipeline), "sink")
                                            : NULL;
  if (!sink) {
    g_printerr("stream-watch: %s\n", error ? error->message : "no element named \"sink\"");
    return 2;
  }
  GstPad *pad = gst_element_get_static_pad(sink, "sink");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, on_buffer, &w, NULL);
  gst_object_unref(pad);
  gst_object_unref(sink);

  g_mutex_init(&w.lock);
  w.loop = g_main_loop_new(NULL, FALSE);
  w.start = g_get_monotonic_time();
  GstBus *bus = gst_element_get_bus(w.pipeline);
  gst_bus_add_watch(bus, on_bus, &w);
  g_timeout_add(tick_ms, on_tick, &w);
  g_unix_signal_add(SIGINT, send_eos, &w);
  g_unix_signal_add(SIGTERM, send_eos, &w);
  if (seconds > 0)
    g_timeout_add((guint)(seconds * 1000), send_eos, &w);

  if (gst_element_set_state(w.pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    /* The error message on the bus says why; let the loop print it. */
    g_timeout_add_seconds(5, on_stuck, &w);
  }
  g_main_loop_run(w.loop);

  g_mutex_lock(&w.lock);
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "end", w.end);
  json_object_set_int_member(o, "frames", w.frames);
  json_object_set_double_member(o, "max_gap_ms", w.max_gap / 1000.0);
  json_object_set_double_member(o, "first_ms",
                                w.frames ? (w.first_buffer - w.start) / 1000.0 : -1.0);
  g_mutex_unlock(&w.lock);
  emit(&w, o);

  gst_element_set_state(w.pipeline, GST_STATE_NULL);
  gst_bus_remove_watch(bus);
  gst_object_unref(bus);
  gst_object_unref(w.pipeline);
  g_main_loop_unref(w.loop);
  return w.status;
}
