/* client.c: the client's life (configuration, its thread and session, shutdown), its streams,
 * submission with in-flight budgets, and the counters. The requests themselves are request.c. */
#include <string.h>

#include "teacher_internal.h"

#define TOKEN_ENV "DISTILL_TEACHER_TOKEN"
#define MAX_FRAME_SIDE 16384

void teacher_client_config_init(TeacherClientConfig *cfg)
{
  *cfg = (TeacherClientConfig){
      .model = TEACHER_DEFAULT_MODEL,
      .timeout_ms = TEACHER_DEFAULT_TIMEOUT_MS,
      .encoding = TEACHER_DEFAULT_ENCODING,
      .inflight = TEACHER_DEFAULT_INFLIGHT,
      .confidence = TEACHER_DEFAULT_CONFIDENCE,
      .max_retries = 4,
      .backoff_ms = 100,
      .max_reply_bytes = (gsize)256 << 20,
      .jpeg_qscale = 3,
  };
}

/* Sets a TEACHER_ERROR_INVALID error and evaluates to FALSE. */
#define invalid(error, ...) \
  (g_set_error(error, TEACHER_ERROR, TEACHER_ERROR_INVALID, __VA_ARGS__), FALSE)

static gboolean parse_endpoints(TeacherClient *client, const char *urls, GError **error)
{
  g_auto(GStrv) parts = g_strsplit(urls ? urls : "", ",", -1);
  g_autofree char *model = g_uri_escape_string(client->cfg.model, NULL, FALSE);
  client->endpoints = g_new0(Endpoint, g_strv_length(parts) + 1);
  for (int i = 0; parts[i]; i++) {
    char *url = g_strstrip(parts[i]);
    if (*url == '\0')
      continue;
    g_autoptr(GError) uri_error = NULL;
    g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_NONE, &uri_error);
    const char *scheme = uri ? g_uri_get_scheme(uri) : NULL;
    if (uri == NULL || (g_strcmp0(scheme, "http") != 0 && g_strcmp0(scheme, "https") != 0) ||
        g_uri_get_host(uri) == NULL || *g_uri_get_host(uri) == '\0' ||
        g_uri_get_query(uri) != NULL)
      return invalid(error,
                     "teacher URL '%.200s' is not an http:// or https:// base URL "
                     "(e.g. http://127.0.0.1:8000)%s%s",
                     url, uri_error ? ": " : "", uri_error ? uri_error->message : "");
    if (g_uri_get_userinfo(uri) != NULL)
      return invalid(error, "teacher URL %u holds credentials; use the token file instead", i + 1);
    size_t length = strlen(url);
    while (length > 0 && url[length - 1] == '/')
      length--;
    Endpoint *ep = &client->endpoints[client->n_endpoints++];
    ep->base = g_strndup(url, length);
    ep->infer_uri = g_strdup_printf("%s/v2/models/%s/infer", ep->base, model);
    ep->ready_uri = g_strdup_printf("%s/v2/health/ready", ep->base);
    g_queue_init(&ep->probe_waiters);
    g_autoptr(SoupMessage) check = soup_message_new("POST", ep->infer_uri);
    if (check == NULL || g_uri_get_fragment(uri) != NULL)
      return invalid(error, "teacher URL '%.200s' does not make a valid infer URL (%.200s)", url,
                     ep->infer_uri);
  }
  if (client->n_endpoints == 0)
    return invalid(error, "no teacher URL given (teacher-url: one or more comma-separated "
                          "http:// or https:// base URLs)");
  return TRUE;
}

/* The bearer token from the file, else from the environment. Its value never enters a message. */
static gboolean read_token(TeacherClient *client, const char *token_file, GError **error)
{
  g_autofree char *token = NULL;
  const char *source = token_file;
  if (token_file != NULL) {
    g_autoptr(GError) file_error = NULL;
    if (!g_file_get_contents(token_file, &token, NULL, &file_error))
      return invalid(error, "cannot read the teacher token file: %s", file_error->message);
  } else if (g_getenv(TOKEN_ENV) != NULL) {
    token = g_strdup(g_getenv(TOKEN_ENV));
    source = "$" TOKEN_ENV;
  } else {
    return TRUE;
  }
  g_strstrip(token);
  if (*token == '\0')
    return invalid(error, "the teacher token in %s is empty", source);
  for (const char *c = token; *c; c++)
    if ((guchar)*c < 0x20 || (guchar)*c == 0x7f)
      return invalid(error, "the teacher token in %s holds control characters (one line "
                            "expected)", source);
  client->authorization = g_strconcat("Bearer ", token, NULL);
  memset(token, 0, strlen(token));
  return TRUE;
}

static gboolean check_config(const TeacherClientConfig *cfg, GError **error)
{
  if (cfg->timeout_ms == 0)
    return invalid(error, "teacher timeout must be at least 1 ms");
  if (cfg->inflight == 0)
    return invalid(error, "teacher inflight must be at least 1");
  if (!(cfg->confidence >= 0.0 && cfg->confidence <= 1.0))
    return invalid(error, "teacher confidence %g is outside 0..1", cfg->confidence);
  if (cfg->jpeg_qscale < 2 || cfg->jpeg_qscale > 31)
    return invalid(error, "JPEG qscale %d is outside 2..31", cfg->jpeg_qscale);
  if (cfg->encoding != TEACHER_ENCODING_RAW && cfg->encoding != TEACHER_ENCODING_JPEG)
    return invalid(error, "unknown teacher encoding %d", (int)cfg->encoding);
  if (cfg->max_reply_bytes < 1024)
    return invalid(error, "a reply limit under 1 KiB cannot hold a mask");
  if (cfg->model == NULL || *cfg->model == '\0')
    return invalid(error, "teacher model name is empty");
  return TRUE;
}

static gboolean on_drain_limit(gpointer data)
{
  *(gboolean *)data = TRUE;
  return G_SOURCE_REMOVE;
}

static gpointer client_thread(gpointer data)
{
  TeacherClient *client = data;
  g_main_context_push_thread_default(client->context);
  /* No I/O timeout of libsoup's own: each request has its deadline (request.c). */
  client->session = soup_session_new_with_options("max-conns", 64, "max-conns-per-host", 32,
                                                  "timeout", 0, "user-agent",
                                                  "gst-distill-teacher-client/0.1", NULL);
  if (client->tls_database)
    soup_session_set_tls_database(client->session, client->tls_database);
  client->encoder = teacher_encoder_new(client->cfg.encoding, client->cfg.max_side,
                                        client->cfg.jpeg_qscale);
  client->rand = g_rand_new();
  g_mutex_lock(&client->lock);
  client->started = TRUE;
  g_cond_broadcast(&client->cond);
  g_mutex_unlock(&client->lock);

  g_main_loop_run(client->loop);

  /* Shutdown: every request has ended; let libsoup's cancelled operations return. */
  soup_session_abort(client->session);
  gboolean gave_up = FALSE;
  GSource *limit = g_timeout_source_new(2000);
  g_source_set_callback(limit, on_drain_limit, &gave_up, NULL);
  g_source_attach(limit, client->context);
  while (client->io_pending > 0 && !gave_up)
    g_main_context_iteration(client->context, TRUE);
  g_source_destroy(limit);
  g_source_unref(limit);
  g_clear_object(&client->session);
  while (g_main_context_iteration(client->context, FALSE))
    ;
  teacher_encoder_free(client->encoder);
  g_rand_free(client->rand);
  g_main_context_pop_thread_default(client->context);
  return NULL;
}

static void client_free_config(TeacherClient *client)
{
  for (guint i = 0; i < client->n_endpoints; i++)
    endpoint_clear(&client->endpoints[i]);
  g_free(client->endpoints);
  g_free((char *)client->cfg.urls);
  g_free((char *)client->cfg.model);
  if (client->authorization)
    memset(client->authorization, 0, strlen(client->authorization));
  g_free(client->authorization);
  g_clear_object(&client->tls_database);
  g_ptr_array_unref(client->streams);
  g_ptr_array_unref(client->requests);
  g_mutex_clear(&client->lock);
  g_cond_clear(&client->cond);
  g_free(client);
}

TeacherClient *teacher_client_new(const TeacherClientConfig *cfg, GError **error)
{
  if (!check_config(cfg, error))
    return NULL;
  TeacherClient *client = g_new0(TeacherClient, 1);
  client->cfg = *cfg;
  client->cfg.urls = g_strdup(cfg->urls);
  client->cfg.model = g_strdup(cfg->model);
  client->cfg.token_file = client->cfg.ca_file = NULL;
  g_mutex_init(&client->lock);
  g_cond_init(&client->cond);
  client->streams = g_ptr_array_new();
  client->requests = g_ptr_array_new();
  if (!parse_endpoints(client, cfg->urls, error) || !read_token(client, cfg->token_file, error)) {
    client_free_config(client);
    return NULL;
  }
  if (cfg->ca_file != NULL) {
    g_autoptr(GError) tls_error = NULL;
    /* GLib's TLS backend takes CA files by absolute path only: a relative one would load and
     * then fail every handshake. */
    g_autofree char *ca_path = g_canonicalize_filename(cfg->ca_file, NULL);
    client->tls_database = g_tls_file_database_new(ca_path, &tls_error);
    if (client->tls_database == NULL) {
      g_set_error(error, TEACHER_ERROR, TEACHER_ERROR_INVALID, "cannot load the teacher CA file: %s",
                  tls_error->message);
      client_free_config(client);
      return NULL;
    }
  }
  client->context = g_main_context_new();
  client->loop = g_main_loop_new(client->context, FALSE);
  client->thread = g_thread_new("teacher-client", client_thread, client);
  g_mutex_lock(&client->lock);
  while (!client->started)
    g_cond_wait(&client->cond, &client->lock);
  g_mutex_unlock(&client->lock);
  return client;
}

static void invoke(TeacherClient *client, GSourceFunc function, gpointer data,
                   GDestroyNotify destroy)
{
  GSource *source = g_idle_source_new();
  g_source_set_priority(source, G_PRIORITY_DEFAULT);
  g_source_set_callback(source, function, data, destroy);
  g_source_attach(source, client->context);
  g_source_unref(source);
}

/* Cancels the requests of stream (NULL: all of them); client thread. */
static void cancel_requests(TeacherClient *client, TeacherStream *stream)
{
  g_mutex_lock(&client->lock);
  g_autoptr(GPtrArray) doomed = g_ptr_array_new();
  for (guint i = 0; i < client->requests->len; i++) {
    Request *req = client->requests->pdata[i];
    if (stream == NULL || request_stream(req) == stream)
      g_ptr_array_add(doomed, req);
  }
  g_mutex_unlock(&client->lock);
  for (guint i = 0; i < doomed->len; i++)
    request_cancel(doomed->pdata[i]);
}

typedef struct {
  TeacherClient *client;
  TeacherStream *stream;   /* NULL: the whole client (shutdown) */
  gboolean done;
} CancelJob;

static gboolean on_cancel_job(gpointer data)
{
  CancelJob *job = data;
  TeacherClient *client = job->client;
  cancel_requests(client, job->stream);
  if (job->stream == NULL) {
    for (guint i = 0; i < client->n_endpoints; i++)
      endpoint_cancel_probe(&client->endpoints[i]);
    g_main_loop_quit(client->loop);
  }
  g_mutex_lock(&client->lock);
  job->done = TRUE;
  g_cond_broadcast(&client->cond);
  g_mutex_unlock(&client->lock);
  return G_SOURCE_REMOVE;
}

/* Cancels on the client thread and waits until that is done; the job lives on this stack. */
static void cancel_on_client_thread(TeacherClient *client, TeacherStream *stream)
{
  CancelJob job = {client, stream, FALSE};
  if (g_main_context_is_owner(client->context)) {
    on_cancel_job(&job);
    return;
  }
  invoke(client, on_cancel_job, &job, NULL);
  g_mutex_lock(&client->lock);
  while (!job.done)
    g_cond_wait(&client->cond, &client->lock);
  g_mutex_unlock(&client->lock);
}

static void stream_free(TeacherStream *stream)
{
  g_free(stream->spare_frame);
  g_free(stream->name);
  g_free(stream);
}

void teacher_client_free(TeacherClient *client)
{
  if (client == NULL)
    return;
  g_return_if_fail(!g_main_context_is_owner(client->context));
  g_mutex_lock(&client->lock);
  client->closing = TRUE;
  for (guint i = 0; i < client->streams->len; i++)
    ((TeacherStream *)client->streams->pdata[i])->closing = TRUE;
  g_mutex_unlock(&client->lock);
  cancel_on_client_thread(client, NULL);
  g_thread_join(client->thread);
  g_main_loop_unref(client->loop);
  g_main_context_unref(client->context);
  for (guint i = 0; i < client->streams->len; i++)
    stream_free(client->streams->pdata[i]);
  client_free_config(client);
}

TeacherStream *teacher_client_open_stream(TeacherClient *client, const char *name, guint inflight)
{
  g_return_val_if_fail(client != NULL && name != NULL, NULL);
  TeacherStream *stream = g_new0(TeacherStream, 1);
  stream->client = client;
  stream->name = g_strdup(name);
  stream->inflight_max = inflight ? inflight : client->cfg.inflight;
  g_mutex_lock(&client->lock);
  stream->closing = client->closing;
  g_ptr_array_add(client->streams, stream);
  g_mutex_unlock(&client->lock);
  return stream;
}

void teacher_stream_close(TeacherStream *stream)
{
  if (stream == NULL)
    return;
  TeacherClient *client = stream->client;
  g_mutex_lock(&client->lock);
  stream->closing = TRUE;
  g_mutex_unlock(&client->lock);
  cancel_on_client_thread(client, stream);
  g_mutex_lock(&client->lock);
  while (stream->active > 0)
    g_cond_wait(&client->cond, &client->lock);
  g_ptr_array_remove(client->streams, stream);
  g_mutex_unlock(&client->lock);
  stream_free(stream);
}

/* Sets error (TEACHER_ERROR, code) and evaluates to status. */
#define refuse(status, error, code, ...) \
  (g_set_error(error, TEACHER_ERROR, code, __VA_ARGS__), (status))

static gboolean frame_valid(const TeacherFrame *frame)
{
  return frame != NULL && frame->rgb != NULL && frame->width > 0 && frame->height > 0 &&
         frame->width <= MAX_FRAME_SIDE && frame->height <= MAX_FRAME_SIDE &&
         (frame->stride == 0 || frame->stride >= frame->width * 3) && frame->out_width > 0 &&
         frame->out_height > 0 && frame->out_width <= MAX_FRAME_SIDE &&
         frame->out_height <= MAX_FRAME_SIDE && (frame->shown_width > 0) == (frame->shown_height > 0) &&
         frame->shown_width >= 0 && frame->shown_height >= 0 &&
         frame->shown_width <= MAX_FRAME_SIDE && frame->shown_height <= MAX_FRAME_SIDE;
}

TeacherSubmitStatus teacher_stream_submit(TeacherStream *stream, const TeacherFrame *frame,
                                          TeacherResultFunc callback, gpointer user_data,
                                          GError **error)
{
  g_return_val_if_fail(stream != NULL && callback != NULL, TEACHER_SUBMIT_INVALID);
  TeacherClient *client = stream->client;
  if (!frame_valid(frame))
    return refuse(TEACHER_SUBMIT_INVALID, error, TEACHER_ERROR_INVALID,
                  "teacher frame refused: pixels and sizes (1..%d, stride >= width * 3, a class "
                  "map size) must be given",
                  MAX_FRAME_SIDE);
  g_mutex_lock(&client->lock);
  if (stream->closing) {
    g_mutex_unlock(&client->lock);
    return refuse(TEACHER_SUBMIT_CLOSED, error, TEACHER_ERROR_INVALID,
                  "teacher stream '%s' is closing", stream->name);
  }
  if (stream->inflight >= stream->inflight_max) {
    stream->counters.errors[TEACHER_ERROR_BUSY]++;
    client->counters.errors[TEACHER_ERROR_BUSY]++;
    guint inflight = stream->inflight;
    g_mutex_unlock(&client->lock);
    return refuse(TEACHER_SUBMIT_BUSY, error, TEACHER_ERROR_BUSY,
                  "teacher busy: stream '%s' has %u of %u requests in flight; submit again "
                  "when one completes",
                  stream->name, inflight, stream->inflight_max);
  }
  stream->inflight++;
  stream->active++;
  g_mutex_unlock(&client->lock);

  /* The copy happens outside the lock, so that other streams go on meanwhile. */
  Request *req = request_new(stream, frame, callback, user_data);
  g_mutex_lock(&client->lock);
  if (stream->closing) {  /* closed during the copy: the shutdown did not see this request */
    stream->inflight--;
    stream->active--;
    g_cond_broadcast(&client->cond);
    g_mutex_unlock(&client->lock);
    request_unref(req);
    request_unref(req);
    return refuse(TEACHER_SUBMIT_CLOSED, error, TEACHER_ERROR_INVALID,
                  "teacher stream '%s' is closing", stream->name);
  }
  stream->counters.queries++;
  client->counters.queries++;
  g_ptr_array_add(client->requests, req);
  g_mutex_unlock(&client->lock);
  invoke(client, request_start, req, NULL);
  return TEACHER_SUBMIT_OK;
}

guint teacher_stream_inflight(TeacherStream *stream)
{
  g_mutex_lock(&stream->client->lock);
  guint inflight = stream->inflight;
  g_mutex_unlock(&stream->client->lock);
  return inflight;
}

static void finish_counters(TeacherCounters *counters, double *latency_sum)
{
  guint64 n = counters->replies;
  counters->mean_latency_ms = n ? *latency_sum / (double)n : 0.0;
}

void teacher_client_get_counters(TeacherClient *client, TeacherCounters *counters)
{
  g_mutex_lock(&client->lock);
  *counters = client->counters;
  finish_counters(counters, &client->latency_sum);
  g_mutex_unlock(&client->lock);
}

void teacher_stream_get_counters(TeacherStream *stream, TeacherCounters *counters)
{
  g_mutex_lock(&stream->client->lock);
  *counters = stream->counters;
  finish_counters(counters, &stream->latency_sum);
  g_mutex_unlock(&stream->client->lock);
}

void client_count_bytes(TeacherClient *client, TeacherStream *stream, guint64 sent,
                        guint64 received, gboolean probe, gboolean retry)
{
  g_mutex_lock(&client->lock);
  TeacherCounters *all[] = {&client->counters, stream ? &stream->counters : NULL};
  for (guint i = 0; i < G_N_ELEMENTS(all) && all[i]; i++) {
    all[i]->bytes_sent += sent;
    all[i]->bytes_received += received;
    all[i]->health_probes += probe;
    all[i]->retries += retry;
  }
  g_mutex_unlock(&client->lock);
}

/* The request has its outcome: the budget is given back before the callback runs, so that the
 * callback may submit the next frame. */
void client_request_done(TeacherClient *client, Request *req, const GError *error,
                         double latency_ms)
{
  TeacherStream *stream = request_stream(req);
  g_mutex_lock(&client->lock);
  g_ptr_array_remove_fast(client->requests, req);
  stream->inflight--;
  TeacherCounters *all[] = {&client->counters, &stream->counters};
  double *sums[] = {&client->latency_sum, &stream->latency_sum};
  for (guint i = 0; i < G_N_ELEMENTS(all); i++) {
    if (error == NULL) {
      all[i]->replies++;
      all[i]->last_latency_ms = latency_ms;
      *sums[i] += latency_ms;
    } else if (error->domain == TEACHER_ERROR && error->code < TEACHER_ERROR_N_KINDS) {
      all[i]->errors[error->code]++;
    } else {
      all[i]->cancelled++;
    }
  }
  g_mutex_unlock(&client->lock);
}

void client_request_returned(TeacherClient *client, TeacherStream *stream)
{
  g_mutex_lock(&client->lock);
  stream->active--;
  g_cond_broadcast(&client->cond);
  g_mutex_unlock(&client->lock);
}
