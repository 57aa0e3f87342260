/* rtsps-view: a viewer that checks the server's certificate, for the RTSPS tests (ffmpeg reads
 * rtsps:// without checking it; gst-launch-1.0 cannot hand rtspsrc a CA file).
 *
 *     rtsps-view URL CA_FILE|- FRAMES
 *
 * Decodes FRAMES video frames of URL with rtspsrc, trusting only the CA in CA_FILE ("-": the
 * system's CAs), and prints "decoded N frames"; exit status 0 when all came, 1 on an error (printed
 * on stderr: a refused certificate, 401, ...) or after 30 s. */
#include <gio/gio.h>
#include <gst/gst.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
  GMainLoop *loop;
  guint wanted, decoded;
  int status;
} Viewer;

static void on_frame(GstElement *sink, GstBuffer *buffer, GstPad *pad, gpointer data)
{
  Viewer *v = data;

  if ((guint)g_atomic_int_add(&v->decoded, 1) + 1 == v->wanted)
    g_main_loop_quit(v->loop);
}

/* Called only for a certificate that failed validation: it is refused, and says why. */
static gboolean on_bad_certificate(GstElement *src, GTlsConnection *connection,
                                   GTlsCertificate *peer, GTlsCertificateFlags errors,
                                   gpointer data)
{
  g_printerr("rtsps-view: certificate refused (GTlsCertificateFlags 0x%x%s)\n", errors,
             errors & G_TLS_CERTIFICATE_UNKNOWN_CA ? ": unknown CA" : "");
  return FALSE;
}

static gboolean on_message(GstBus *bus, GstMessage *msg, gpointer data)
{
  Viewer *v = data;
  g_autoptr(GError) error = NULL;
  g_autofree gchar *debug = NULL;

  if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
    gst_message_parse_error(msg, &error, &debug);
    g_printerr("rtsps-view: %s\n%s\n", error->message, debug ? debug : "");
    v->status = 1;
    g_main_loop_quit(v->loop);
  } else if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS) {
    v->status = 1;
    g_main_loop_quit(v->loop);
  }
  return G_SOURCE_CONTINUE;
}

static gboolean on_timeout(gpointer data)
{
  Viewer *v = data;

  g_printerr("rtsps-view: no %u frames after 30 s\n", v->wanted);
  v->status = 1;
  g_main_loop_quit(v->loop);
  return G_SOURCE_REMOVE;
}

int main(int argc, char **argv)
{
  Viewer v = {0};
  g_autoptr(GError) error = NULL;

  gst_init(&argc, &argv);
  if (argc != 4 || atoi(argv[3]) <= 0) {
    g_printerr("usage: rtsps-view URL CA_FILE|- FRAMES\n");
    return 2;
  }
  v.wanted = atoi(argv[3]);
  GstElement *pipeline = gst_parse_launch(
      "rtspsrc name=src protocols=tcp latency=200 ! decodebin ! "
      "fakesink name=sink signal-handoffs=true sync=false", &error);
  if (!pipeline) {
    g_printerr("rtsps-view: %s\n", error->message);
    return 2;
  }
  GstElement *src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
  g_object_set(src, "location", argv[1], NULL);
  if (g_strcmp0(argv[2], "-") != 0) {
    g_autofree gchar *path = g_canonicalize_filename(argv[2], NULL);  /* GLib wants it whole */
    g_autoptr(GTlsDatabase) ca = g_tls_file_database_new(path, &error);
    if (!ca) {
      g_printerr("rtsps-view: %s: %s\n", argv[2], error->message);
      return 2;
    }
    g_object_set(src, "tls-database", ca, NULL);
  }
  g_signal_connect(src, "accept-certificate", G_CALLBACK(on_bad_certificate), NULL);
  gst_object_unref(src);
  GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  g_signal_connect(sink, "handoff", G_CALLBACK(on_frame), &v);
  gst_object_unref(sink);

  v.loop = g_main_loop_new(NULL, FALSE);
  GstBus *bus = gst_element_get_bus(pipeline);
  gst_bus_add_watch(bus, on_message, &v);
  g_timeout_add_seconds(30, on_timeout, &v);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  g_main_loop_run(v.loop);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_bus_remove_watch(bus);
  gst_object_unref(bus);
  gst_object_unref(pipeline);
  g_main_loop_unref(v.loop);
  printf("decoded %u frames\n", g_atomic_int_get(&v.decoded));
  return v.status == 0 && v.decoded >= v.wanted ? 0 : 1;
}
