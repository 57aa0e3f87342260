/* distill-rtsp: the annotated stream of every camera over RTSP, each camera's student kept
 * specialised by online distillation (pipelines/README.md).
 *
 *     distill-rtsp --input [NAME=]URI [--input ...] --teacher URL[,URL...] [--model NAME]
 *         [--teacher-token-file F] [--teacher-ca-file F] [--bind ADDR] [--port 8554]
 *         [--auth-file F] [--tls-cert F --tls-key F] [--checkpoint-dir DIR]
 *         [--metrics-port 9090] [--csv FILE]
 *
 * Prints one line per stream on stdout ("distill-rtsp: cam0 at rtsp://.../cam0", rtsps:// with
 * --tls-cert) and the /metrics URL, then a progress line per camera on stderr. SIGINT or SIGTERM
 * stops it cleanly: viewers get the end of their streams, checkpoints are saved. */
#include <glib-unix.h>
#include <unistd.h>

#include "distill-rtsp.h"

static gboolean on_progress(gpointer data)
{
  progress_draw(data);
  return G_SOURCE_CONTINUE;
}

static gboolean on_viewers_told(gpointer data)
{
  g_main_loop_quit(((DistillRtsp *)data)->loop);
  return G_SOURCE_REMOVE;
}

static gboolean on_stop_signal(gpointer data)
{
  DistillRtsp *app = data;

  if (app->stopping) {  /* a second signal: no more waiting */
    g_main_loop_quit(app->loop);
    return G_SOURCE_CONTINUE;
  }
  app->stopping = TRUE;
  g_printerr("distill-rtsp: stopping\n");
  for (guint i = 0; i < app->cameras->len; i++)
    camera_end_viewers(g_ptr_array_index(app->cameras, i));
  /* A moment for the end of the streams to reach the viewers before the connections close. */
  g_timeout_add(300, on_viewers_told, app);
  return G_SOURCE_CONTINUE;
}

static GstRTSPFilterResult close_client(GstRTSPServer *server, GstRTSPClient *client,
                                        gpointer data)
{
  return GST_RTSP_FILTER_REMOVE;
}

/* Compute threads of each camera's student: the cores shared out, so that cameras do not fight
 * over them (each at least one). */
static guint threads_per_camera(guint cameras)
{
  guint cores = MAX(1, (guint)sysconf(_SC_NPROCESSORS_ONLN));
  return MAX(1, cores / cameras);
}

static gboolean add_cameras(DistillRtsp *app, GError **error)
{
  GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points(app->server);
  guint n = g_strv_length(app->options.inputs);
  gboolean ok = TRUE;

  for (guint i = 0; i < n && ok; i++) {
    g_autofree gchar *name = NULL, *input = NULL;
    rtsp_input_split(app->options.inputs[i], i, &name, &input);
    for (guint j = 0; j < app->cameras->len && ok; j++)
      if (g_str_equal(((Camera *)g_ptr_array_index(app->cameras, j))->name, name)) {
        g_set_error(error, g_quark_from_static_string("distill-rtsp"), 0,
                    "two inputs are named '%s': give each a name of its own (NAME=URI)", name);
        ok = FALSE;
      }
    Camera *cam = ok ? camera_new(app, name, input, threads_per_camera(n), error) : NULL;
    if (!cam) {
      ok = FALSE;
      break;
    }
    g_ptr_array_add(app->cameras, cam);
    GstRTSPMediaFactory *factory = camera_media_factory(cam);
    rtsp_out_bind_udp(factory, app->options.bind);
    /* Over TLS the video goes inside the RTSP connection (interleaved): RTP over UDP would
     * leave it in clear. */
    if (app->options.tls_cert)
      gst_rtsp_media_factory_set_protocols(factory, GST_RTSP_LOWER_TRANS_TCP);
    if (gst_rtsp_server_get_auth(app->server)) {
      g_object_unref(gst_rtsp_server_get_auth(app->server));
      gst_rtsp_media_factory_add_role(factory, "viewer", GST_RTSP_PERM_MEDIA_FACTORY_ACCESS,
                                      G_TYPE_BOOLEAN, TRUE, GST_RTSP_PERM_MEDIA_FACTORY_CONSTRUCT,
                                      G_TYPE_BOOLEAN, TRUE, NULL);
    }
    g_autofree gchar *path = g_strdup_printf("/%s", name);
    gst_rtsp_mount_points_add_factory(mounts, path, factory);
  }
  g_object_unref(mounts);
  return ok;
}

/* Passwords (--auth-file) and TLS (--tls-cert) both go through the server's authenticator. */
static gboolean set_up_auth(DistillRtsp *app, GError **error)
{
  RtspOptions *o = &app->options;
  g_autoptr(GTlsCertificate) certificate = NULL;

  if (!o->auth_file && !o->tls_cert)
    return TRUE;
  if (o->tls_cert && !(certificate = rtsp_tls_certificate_load(o->tls_cert, o->tls_key, error)))
    return FALSE;
  GstRTSPAuth *auth = o->auth_file ? rtsp_auth_from_file(o->auth_file, error) : rtsp_auth_anyone();
  if (!auth)
    return FALSE;
  if (certificate)
    gst_rtsp_auth_set_tls_certificate(auth, certificate);
  gst_rtsp_server_set_auth(app->server, auth);
  g_object_unref(auth);
  return TRUE;
}

static gboolean run(DistillRtsp *app, GError **error)
{
  app->server = gst_rtsp_server_new();
  gst_rtsp_server_set_address(app->server, app->options.bind);
  g_autofree gchar *service = g_strdup_printf("%d", app->options.port);
  gst_rtsp_server_set_service(app->server, service);
  if (!set_up_auth(app, error))
    return FALSE;
  if (app->options.checkpoint_dir && g_mkdir_with_parents(app->options.checkpoint_dir, 0755)) {
    g_set_error(error, g_quark_from_static_string("distill-rtsp"), 0,
                "cannot create --checkpoint-dir %s: %s", app->options.checkpoint_dir,
                g_strerror(errno));
    return FALSE;
  }
  if (!csv_open(app, error) || !add_cameras(app, error))
    return FALSE;
  if (gst_rtsp_server_attach(app->server, NULL) == 0) {
    g_set_error(error, g_quark_from_static_string("distill-rtsp"), 0,
                "cannot listen for RTSP on %s port %d (in use? --port 0 picks a free one)",
                app->options.bind, app->options.port);
    return FALSE;
  }
  if (!metrics_start(app, error))
    return FALSE;
  for (guint i = 0; i < app->cameras->len; i++)
    if (!camera_start(g_ptr_array_index(app->cameras, i), error))
      return FALSE;

  int port = gst_rtsp_server_get_bound_port(app->server);
  gboolean any = g_str_equal(app->options.bind, "0.0.0.0") || g_str_equal(app->options.bind, "::");
  for (guint i = 0; i < app->cameras->len; i++) {
    Camera *cam = g_ptr_array_index(app->cameras, i);
    printf("distill-rtsp: %s at %s://%s:%d/%s\n", cam->name,
           app->options.tls_cert ? "rtsps" : "rtsp", any ? g_get_host_name() : app->options.bind,
           port, cam->name);
  }
  fflush(stdout);

  g_unix_signal_add(SIGINT, on_stop_signal, app);
  g_unix_signal_add(SIGTERM, on_stop_signal, app);
  g_timeout_add(app->options.stats_interval_ms, on_progress, app);
  g_main_loop_run(app->loop);
  return TRUE;
}

int main(int argc, char **argv)
{
  DistillRtsp app = {0};
  g_autoptr(GError) error = NULL;

  if (!rtsp_options_parse(&app.options, &argc, &argv, &error)) {
    g_printerr("distill-rtsp: %s\n(distill-rtsp --help lists the options)\n", error->message);
    rtsp_options_clear(&app.options);
    return 2;
  }
  app.loop = g_main_loop_new(NULL, FALSE);
  app.cameras = g_ptr_array_new_with_free_func((GDestroyNotify)camera_free);
  app.start_time = g_get_monotonic_time();
  app.tty = isatty(STDERR_FILENO);
  if (!run(&app, &error)) {
    g_printerr("distill-rtsp: %s\n", error->message);
    app.exit_status = 2;
  }

  /* Shut down: viewers' connections close, the cameras stop and save their students. */
  if (app.server)
    gst_rtsp_server_client_filter(app.server, close_client, NULL);
  for (guint i = 0; i < app.cameras->len; i++)
    camera_stop(g_ptr_array_index(app.cameras, i));
  if (app.progress_lines)
    progress_draw(&app);
  g_clear_object(&app.metrics);
  g_clear_object(&app.server);
  g_ptr_array_free(app.cameras, TRUE);  /* after the server: its media refer to the cameras */
  if (app.csv)
    fclose(app.csv);
  g_main_loop_unref(app.loop);
  rtsp_options_clear(&app.options);
  return app.exit_status;
}
