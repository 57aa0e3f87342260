/* distill-camera: serves a video file as a live RTSP camera (H.264), for demos and tests.
 *
 *     distill-camera FILE [--loop] [--bind ADDR] [--port 8554] [--name camera]
 *
 * The file is decoded at its own frame rate, as a camera delivers frames, and re-encoded to H.264
 * (x264, zero latency, a key frame every second), whatever its codec: Debian's vtest.avi is
 * MS-MPEG4, which no RTP payloader takes. Every viewer shares the one encode. With --loop the
 * file starts again at its end; without, the stream ends there and the program exits. When
 * listening it prints "distill-camera: serving rtsp://ADDR:PORT/NAME" on stdout (--port 0 picks a
 * free port). */
#include <glib-unix.h>
#include <stdio.h>
#include <stdlib.h>

#include "rtsp-out.h"

typedef struct {
  GMainLoop *loop;
  GstElement *decoder;          /* file -> H.264 access units, paced at the file's rate */
  RtspOut out;
  gboolean loop_file;
  int exit_status;
} Camera;

static gboolean on_decoder_message(GstBus *bus, GstMessage *msg, gpointer data)
{
  Camera *cam = data;
  g_autoptr(GError) error = NULL;
  g_autofree gchar *debug = NULL;

  switch (GST_MESSAGE_TYPE(msg)) {
  case GST_MESSAGE_EOS:
    if (cam->loop_file &&
        gst_element_seek_simple(cam->decoder, GST_FORMAT_TIME,
                                GST_SEEK_FLAG_FLUSH | GST_SEEK_FLAG_KEY_UNIT, 0))
      break;
    rtsp_out_end(&cam->out);
    g_main_loop_quit(cam->loop);
    break;
  case GST_MESSAGE_ERROR:
    gst_message_parse_error(msg, &error, &debug);
    g_printerr("distill-camera: %s\n", error->message);
    cam->exit_status = 1;
    g_main_loop_quit(cam->loop);
    break;
  default:
    break;
  }
  return G_SOURCE_CONTINUE;
}

static gboolean on_signal(gpointer data)
{
  g_main_loop_quit(((Camera *)data)->loop);
  return G_SOURCE_CONTINUE;
}

int main(int argc, char **argv)
{
  Camera cam = {0};
  gboolean loop_file = FALSE;
  gchar *bind = NULL, *name = NULL;
  gint port = 8554;
  GOptionEntry entries[] = {
      {"loop", 0, 0, G_OPTION_ARG_NONE, &loop_file, "Start the file again at its end", NULL},
      {"bind", 0, 0, G_OPTION_ARG_STRING, &bind, "Address to listen on (127.0.0.1)", "ADDR"},
      {"port", 0, 0, G_OPTION_ARG_INT, &port, "RTSP port (8554; 0 = a free one)", "PORT"},
      {"name", 0, 0, G_OPTION_ARG_STRING, &name, "Mount point (camera)", "NAME"},
      {NULL}};
  g_autoptr(GError) error = NULL;
  g_autoptr(GOptionContext) options = g_option_context_new("FILE");

  g_option_context_set_summary(options, "Serves a video file as a live H.264 RTSP camera.");
  g_option_context_add_main_entries(options, entries, NULL);
  g_option_context_add_group(options, gst_init_get_option_group());
  if (!g_option_context_parse(options, &argc, &argv, &error) || argc != 2 || port < 0 ||
      port > 65535) {
    g_printerr("distill-camera: %s\nUsage: distill-camera FILE [--loop] [--bind ADDR] "
               "[--port PORT] [--name NAME]\n",
               error ? error->message : argc != 2 ? "give one video file" : "bad --port");
    return 2;
  }
  if (!g_file_test(argv[1], G_FILE_TEST_IS_REGULAR)) {
    g_printerr("distill-camera: no such file: %s\n", argv[1]);
    return 2;
  }
  cam.loop_file = loop_file;

  g_autofree gchar *uri = gst_filename_to_uri(argv[1], NULL);
  g_autofree gchar *launch = g_strdup_printf(
      "uridecodebin uri=\"%s\" ! videoconvert ! video/x-raw,format=I420 ! "
      "x264enc name=encoder tune=zerolatency speed-preset=ultrafast threads=1 ! "
      "video/x-h264,profile=constrained-baseline ! h264parse config-interval=-1 ! "
      "video/x-h264,stream-format=byte-stream,alignment=au ! "
      "appsink name=out sync=true max-buffers=4 drop=true emit-signals=false",
      uri);
  cam.decoder = gst_parse_launch(launch, &error);
  if (!cam.decoder) {
    g_printerr("distill-camera: %s (is gstreamer1.0-plugins-ugly installed?)\n", error->message);
    return 1;
  }
  GstElement *encoder = gst_bin_get_by_name(GST_BIN(cam.decoder), "encoder");
  GstElement *out = gst_bin_get_by_name(GST_BIN(cam.decoder), "out");
  rtsp_out_init(&cam.out, encoder, NULL, out);
  gst_object_unref(encoder);
  gst_object_unref(out);

  GstRTSPServer *server = gst_rtsp_server_new();
  gst_rtsp_server_set_address(server, bind ? bind : "127.0.0.1");
  g_autofree gchar *service = g_strdup_printf("%d", port);
  gst_rtsp_server_set_service(server, service);
  GstRTSPMediaFactory *factory = rtsp_out_factory(&cam.out);
  rtsp_out_bind_udp(factory, bind ? bind : "127.0.0.1");
  GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points(server);
  g_autofree gchar *path = g_strdup_printf("/%s", name ? name : "camera");
  gst_rtsp_mount_points_add_factory(mounts, path, factory);
  g_object_unref(mounts);

  cam.loop = g_main_loop_new(NULL, FALSE);
  if (gst_rtsp_server_attach(server, NULL) == 0) {
    g_printerr("distill-camera: cannot listen on %s port %d (in use? try --port 0)\n",
               bind ? bind : "127.0.0.1", port);
    return 1;
  }
  GstBus *bus = gst_element_get_bus(cam.decoder);
  gst_bus_add_watch(bus, on_decoder_message, &cam);
  gst_object_unref(bus);
  g_unix_signal_add(SIGINT, on_signal, &cam);
  g_unix_signal_add(SIGTERM, on_signal, &cam);
  if (gst_element_set_state(cam.decoder, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    g_printerr("distill-camera: cannot play %s\n", argv[1]);
    return 1;
  }
  printf("distill-camera: serving rtsp://%s:%d%s\n", bind ? bind : "127.0.0.1",
         gst_rtsp_server_get_bound_port(server), path);
  fflush(stdout);
  g_main_loop_run(cam.loop);

  /* Viewers get the end of the stream before the connections close. */
  rtsp_out_end(&cam.out);
  gst_element_set_state(cam.decoder, GST_STATE_NULL);
  GstRTSPSessionPool *pool = gst_rtsp_server_get_session_pool(server);
  gst_rtsp_session_pool_cleanup(pool);
  g_object_unref(pool);
  gst_object_unref(cam.decoder);
  g_object_unref(server);
  rtsp_out_clear(&cam.out);
  return cam.exit_status;
}
