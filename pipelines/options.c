/* options.c: distill-rtsp's command line, inputs, authentication file and TLS certificate. */
#include <errno.h>
#include <string.h>
#include <glib/gstdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "distill-rtsp.h"

#define DISTILL_RTSP_ERROR (g_quark_from_static_string("distill-rtsp"))

gboolean rtsp_options_parse(RtspOptions *o, int *argc, char ***argv, GError **error)
{
  o->port = 8554;
  o->metrics_port = 9090;
  o->stats_interval_ms = 1000;
  o->inference_budget = -1.0; /* the element's default */
  GOptionEntry entries[] = {
      {"input", 'i', 0, G_OPTION_ARG_STRING_ARRAY, &o->inputs,
       "A camera: a file, rtsp://, http(s):// or file:// URI, or a V4L2 device (/dev/video0); "
       "NAME= names its stream (default cam0, cam1, ... in order). Repeat for more cameras",
       "[NAME=]URI"},
      {"teacher", 't', 0, G_OPTION_ARG_STRING, &o->teacher,
       "Base URL of the KServe v2 teacher; several, comma-separated, for fail-over", "URL[,URL...]"},
      {"model", 'm', 0, G_OPTION_ARG_STRING, &o->model, "Teacher model name (teacher)", "NAME"},
      {"teacher-token-file", 0, 0, G_OPTION_ARG_FILENAME, &o->token_file,
       "File holding the teacher's bearer token (sent as 'Authorization: Bearer', never printed; "
       "default: $DISTILL_TEACHER_TOKEN)", "F"},
      {"teacher-ca-file", 0, 0, G_OPTION_ARG_FILENAME, &o->ca_file,
       "CA bundle (PEM) an https:// teacher is checked with (default: the system's CAs)", "F"},
      {"bind", 'b', 0, G_OPTION_ARG_STRING, &o->bind,
       "Address of the RTSP server, its UDP ports and /metrics (127.0.0.1: this machine only; "
       "0.0.0.0 = every interface)",
       "ADDR"},
      {"port", 'p', 0, G_OPTION_ARG_INT, &o->port, "RTSP port (8554; 0 = a free one)", "PORT"},
      {"auth-file", 0, 0, G_OPTION_ARG_FILENAME, &o->auth_file,
       "File of user:password lines; viewers must log in with one (RTSP basic authentication)",
       "F"},
      {"tls-cert", 0, 0, G_OPTION_ARG_FILENAME, &o->tls_cert,
       "Certificate (PEM, the chain after it) of the server: streams are served as rtsps:// "
       "(RTSP over TLS, the video inside the same connection); needs --tls-key", "F"},
      {"tls-key", 0, 0, G_OPTION_ARG_FILENAME, &o->tls_key,
       "Private key (PEM) of --tls-cert", "F"},
      {"checkpoint-dir", 'c', 0, G_OPTION_ARG_FILENAME, &o->checkpoint_dir,
       "Each camera's student is loaded from and saved to DIR/NAME.safetensors", "DIR"},
      {"metrics-port", 0, 0, G_OPTION_ARG_INT, &o->metrics_port,
       "Port of the Prometheus /metrics page (9090; 0 = a free one; -1 = none)", "PORT"},
      {"csv", 0, 0, G_OPTION_ARG_FILENAME, &o->csv,
       "Append every camera's statistics to this CSV file (pipelines/plot-stats charts it)",
       "FILE"},
      {"stats-interval", 0, 0, G_OPTION_ARG_INT, &o->stats_interval_ms,
       "Milliseconds between statistics (progress line, CSV rows) (1000)", "MS"},
      {"inference-budget", 0, 0, G_OPTION_ARG_DOUBLE, &o->inference_budget,
       "Share of each frame interval the students' inference may take, all cameras together; "
       "over it their input shrinks and training gets the rest (0 = off; default: distillseg's "
       "inference-budget)", "SHARE"},
      {"element-option", 'o', 0, G_OPTION_ARG_STRING_ARRAY, &o->element_options,
       "Set a property of every distillseg element (e.g. max-stride=128); repeatable",
       "PROP=VALUE"},
      {NULL}};
  g_autoptr(GOptionContext) context = g_option_context_new("");

  g_option_context_set_summary(
      context, "Serves one annotated H.264 stream per camera at rtsp://HOST:PORT/NAME, the "
               "student of each kept specialised by online distillation from a teacher.");
  g_option_context_set_description(
      context, "Example:\n  distill-rtsp --input entrance=rtsp://10.0.0.7/stream1 "
               "--teacher http://gpu-box:8000 --checkpoint-dir /var/lib/distill\n\n"
               "Secure setup (pipelines/README.md): --bind only where viewers are, --auth-file "
               "with --tls-cert/--tls-key\n(viewers watch rtsps://, passwords encrypted), an "
               "https:// teacher with --teacher-token-file\nand --teacher-ca-file; secret files "
               "chmod 600.\n");
  g_option_context_add_main_entries(context, entries, NULL);
  g_option_context_add_group(context, gst_init_get_option_group());
  if (!g_option_context_parse(context, argc, argv, error))
    return FALSE;
  if (*argc > 1) {
    g_set_error(error, DISTILL_RTSP_ERROR, 0,
                "unexpected argument '%s': give cameras with --input", (*argv)[1]);
    return FALSE;
  }
  if (!o->inputs || !o->inputs[0]) {
    g_set_error(error, DISTILL_RTSP_ERROR, 0,
                "no camera: give at least one --input (a file, an rtsp:// URI, /dev/video0, ...)");
    return FALSE;
  }
  if (o->port < 0 || o->port > 65535 || o->metrics_port < -1 || o->metrics_port > 65535) {
    g_set_error(error, DISTILL_RTSP_ERROR, 0,
                "--port must be 0..65535 and --metrics-port -1..65535");
    return FALSE;
  }
  if (o->inference_budget != -1.0 && !(o->inference_budget >= 0.0 && o->inference_budget <= 1.0)) {
    g_set_error(error, DISTILL_RTSP_ERROR, 0,
                "--inference-budget is a share of the frame interval: give 0..1 (0 = off)");
    return FALSE;
  }
  if (o->stats_interval_ms < 100) {
    g_set_error(error, DISTILL_RTSP_ERROR, 0, "--stats-interval must be at least 100 ms");
    return FALSE;
  }
  if (!o->tls_cert != !o->tls_key) {
    g_set_error(error, DISTILL_RTSP_ERROR, 0,
                "--tls-cert and --tls-key go together: give the certificate and its key");
    return FALSE;
  }
  if (o->ca_file) {  /* GLib's TLS takes a CA file by its absolute path only */
    gchar *absolute = g_canonicalize_filename(o->ca_file, NULL);
    g_free(o->ca_file);
    o->ca_file = absolute;
  }
  if (!o->bind)
    o->bind = g_strdup("127.0.0.1");
  return TRUE;
}

void rtsp_options_clear(RtspOptions *o)
{
  g_strfreev(o->inputs);
  g_strfreev(o->element_options);
  g_free(o->teacher);
  g_free(o->model);
  g_free(o->token_file);
  g_free(o->ca_file);
  g_free(o->bind);
  g_free(o->auth_file);
  g_free(o->tls_cert);
  g_free(o->tls_key);
  g_free(o->checkpoint_dir);
  g_free(o->csv);
}

/* A name is what may stand in the URL's path: letters, digits, '-', '_', '.'. */
static gboolean valid_name(const char *s, gsize n)
{
  if (n == 0)
    return FALSE;
  for (gsize i = 0; i < n; i++)
    if (!g_ascii_isalnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
      return FALSE;
  return TRUE;
}

void rtsp_input_split(const char *spec, guint n, gchar **name, gchar **input)
{
  const char *eq = strchr(spec, '=');

  /* "http://host/?a=b" has '=' after characters a name cannot hold: it is all input. */
  if (eq && valid_name(spec, eq - spec)) {
    *name = g_strndup(spec, eq - spec);
    *input = g_strdup(eq + 1);
  } else {
    *name = g_strdup_printf("cam%u", n);
    *input = g_strdup(spec);
  }
}

gchar *rtsp_input_without_password(const char *input)
{
  g_autoptr(GUri) uri = g_uri_parse(input, G_URI_FLAGS_HAS_PASSWORD | G_URI_FLAGS_ENCODED, NULL);

  if (!uri || !g_uri_get_password(uri))
    return g_strdup(input);
  return g_uri_to_string_partial(uri, G_URI_HIDE_PASSWORD);
}

/* Quotes a value for a gst-launch description. */
static gchar *launch_quote(const char *s)
{
  GString *q = g_string_new("\"");
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      g_string_append_c(q, '\\');
    g_string_append_c(q, *s);
  }
  g_string_append_c(q, '"');
  return g_string_free(q, FALSE);
}

gchar *rtsp_source_description(const char *input, GError **error)
{
  g_autofree gchar *quoted = NULL;

  if (g_str_has_prefix(input, "v4l2://"))
    input += strlen("v4l2://");
  if (g_str_has_prefix(input, "/dev/")) {
    quoted = launch_quote(input);
    /* decodebin takes the MJPEG many USB cameras deliver, and raw formats as they are. */
    return g_strdup_printf("v4l2src device=%s ! decodebin", quoted);
  }
  if (gst_uri_is_valid(input)) {
    g_autofree gchar *protocol = gst_uri_get_protocol(input);
    if (!gst_uri_protocol_is_supported(GST_URI_SRC, protocol)) {
      g_set_error(error, DISTILL_RTSP_ERROR, 0,
                  "no GStreamer source reads %s:// URIs (input '%s'); install the plugin that "
                  "does (rtsp: gstreamer1.0-plugins-good, http: gstreamer1.0-plugins-good)",
                  protocol, input);
      return NULL;
    }
    quoted = launch_quote(input);
    return g_strdup_printf("uridecodebin name=decode uri=%s", quoted);
  }
  if (!g_file_test(input, G_FILE_TEST_IS_REGULAR)) {
    g_set_error(error, DISTILL_RTSP_ERROR, 0,
                "input '%s' is neither a file, nor a URI (rtsp://, http://, file://), nor a "
                "V4L2 device (/dev/videoN)",
                input);
    return NULL;
  }
  g_autofree gchar *uri = gst_filename_to_uri(input, error);
  if (!uri)
    return NULL;
  quoted = launch_quote(uri);
  return g_strdup_printf("uridecodebin name=decode uri=%s", quoted);
}

/* Reads a file that holds a secret, warning when anyone may read it. */
static gboolean read_secret(const char *option, const char *path, gchar **text, GError **error)
{
  GStatBuf st;

  if (!g_file_get_contents(path, text, NULL, error)) {
    g_prefix_error(error, "%s: ", option);
    return FALSE;
  }
  if (g_stat(path, &st) == 0 && (st.st_mode & 0004))
    g_printerr("distill-rtsp: warning: %s is readable by everyone; chmod 600 it\n", path);
  return TRUE;
}

GstRTSPAuth *rtsp_auth_from_file(const char *path, GError **error)
{
  g_autofree gchar *text = NULL;

  if (!read_secret("--auth-file", path, &text, error))
    return NULL;

  GstRTSPAuth *auth = gst_rtsp_auth_new();
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  guint users = 0;
  for (guint i = 0; lines[i]; i++) {
    g_strchomp(lines[i]);  /* also a trailing '\r' */
    if (lines[i][0] == '\0' || lines[i][0] == '#')
      continue;
    char *colon = strchr(lines[i], ':');
    if (!colon || colon == lines[i] || colon[1] == '\0') {
      g_set_error(error, DISTILL_RTSP_ERROR, 0,
                  "%s line %u: expected user:password (a non-empty user and password)", path,
                  i + 1);
      g_object_unref(auth);
      return NULL;
    }
    *colon = '\0';
    g_autofree gchar *basic = gst_rtsp_auth_make_basic(lines[i], colon + 1);
    GstRTSPToken *token = gst_rtsp_token_new(GST_RTSP_TOKEN_MEDIA_FACTORY_ROLE, G_TYPE_STRING,
                                             "viewer", NULL);
    gst_rtsp_auth_add_basic(auth, basic, token);
    gst_rtsp_token_unref(token);
    users++;
  }
  if (users == 0) {
    g_set_error(error, DISTILL_RTSP_ERROR, 0, "%s holds no user:password line", path);
    g_object_unref(auth);
    return NULL;
  }
  return auth;
}

GstRTSPAuth *rtsp_auth_anyone(void)
{
  GstRTSPAuth *auth = gst_rtsp_auth_new();
  GstRTSPToken *token =
      gst_rtsp_token_new(GST_RTSP_TOKEN_MEDIA_FACTORY_ROLE, G_TYPE_STRING, "viewer", NULL);

  gst_rtsp_auth_set_default_token(auth, token);
  gst_rtsp_token_unref(token);
  return auth;
}

/* ---- TLS certificate ---------------------------------------------------------------------- */

typedef struct {
  gboolean done;
  GError *error;
} Handshake;

static void on_handshake(GObject *connection, GAsyncResult *result, gpointer data)
{
  Handshake *h = data;

  g_tls_connection_handshake_finish(G_TLS_CONNECTION(connection), result, &h->error);
  h->done = TRUE;
  if (h->error)  /* the other side must not wait for this one */
    g_io_stream_close(G_IO_STREAM(connection), NULL, NULL);
}

static gboolean accept_any(GTlsConnection *connection, GTlsCertificate *peer,
                           GTlsCertificateFlags errors, gpointer data)
{
  return TRUE;
}

static gboolean on_handshake_timeout(gpointer data)
{
  g_cancellable_cancel(data);
  return G_SOURCE_REMOVE;
}

static GIOStream *socket_stream(int fd, GError **error)
{
  g_autoptr(GSocket) socket = g_socket_new_from_fd(fd, error);

  if (!socket) {
    close(fd);
    return NULL;
  }
  return G_IO_STREAM(g_socket_connection_factory_create_connection(socket));
}

/* GLib loads a certificate with the key of another one without a word; the first viewer would
 * then fail its handshake. A handshake of the certificate with itself, over a socket pair, tells
 * at start-up. */
static gboolean tls_handshake_with_self(GTlsCertificate *certificate, GError **error)
{
  int fds[2];
  Handshake server_side = {0}, client_side = {0};

  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) {
    g_set_error(error, DISTILL_RTSP_ERROR, 0, "socketpair: %s", g_strerror(errno));
    return FALSE;
  }
  g_autoptr(GIOStream) server_base = socket_stream(fds[0], error);
  if (!server_base) {
    close(fds[1]);
    return FALSE;
  }
  g_autoptr(GIOStream) client_base = socket_stream(fds[1], error);
  if (!client_base)
    return FALSE;
  g_autoptr(GIOStream) server = g_tls_server_connection_new(server_base, certificate, error);
  g_autoptr(GIOStream) client = server ? g_tls_client_connection_new(client_base, NULL, error)
                                       : NULL;
  if (!client)
    return FALSE;
  g_signal_connect(client, "accept-certificate", G_CALLBACK(accept_any), NULL);

  g_autoptr(GMainContext) context = g_main_context_new();
  g_autoptr(GCancellable) cancellable = g_cancellable_new();
  g_main_context_push_thread_default(context);
  GSource *timeout = g_timeout_source_new_seconds(10);
  g_source_set_callback(timeout, on_handshake_timeout, cancellable, NULL);
  g_source_attach(timeout, context);
  g_tls_connection_handshake_async(G_TLS_CONNECTION(server), G_PRIORITY_DEFAULT, cancellable,
                                   on_handshake, &server_side);
  g_tls_connection_handshake_async(G_TLS_CONNECTION(client), G_PRIORITY_DEFAULT, cancellable,
                                   on_handshake, &client_side);
  while (!server_side.done || !client_side.done)
    g_main_context_iteration(context, TRUE);
  g_source_destroy(timeout);
  g_source_unref(timeout);
  g_main_context_pop_thread_default(context);

  GError *cause = server_side.error ? server_side.error : client_side.error;
  gboolean ok = cause == NULL;
  if (cause)
    g_set_error(error, DISTILL_RTSP_ERROR, 0, "%s", cause->message);
  g_clear_error(&server_side.error);
  g_clear_error(&client_side.error);
  return ok;
}

GTlsCertificate *rtsp_tls_certificate_load(const char *cert_file, const char *key_file,
                                           GError **error)
{
  g_autofree gchar *cert_text = NULL, *key_text = NULL;

  if (!g_tls_backend_supports_tls(g_tls_backend_get_default())) {
    g_set_error(error, DISTILL_RTSP_ERROR, 0,
                "--tls-cert: GLib has no TLS backend; install glib-networking");
    return NULL;
  }
  if (!g_file_get_contents(cert_file, &cert_text, NULL, error)) {
    g_prefix_error(error, "--tls-cert: ");
    return NULL;
  }
  if (!read_secret("--tls-key", key_file, &key_text, error))
    return NULL;
  GTlsCertificate *certificate = g_tls_certificate_new_from_files(cert_file, key_file, error);
  if (!certificate) {
    g_prefix_error(error, "--tls-cert %s / --tls-key %s (PEM files expected): ", cert_file,
                   key_file);
    return NULL;
  }
  if (!tls_handshake_with_self(certificate, error)) {
    g_prefix_error(error, "--tls-key %s does not serve --tls-cert %s (is it the key of that "
                   "certificate?): a TLS handshake with them fails: ", key_file, cert_file);
    g_object_unref(certificate);
    return NULL;
  }
  return certificate;
}
