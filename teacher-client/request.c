/* request.c: one submission's life on the client thread: encode the frame, pick a base URL (probing
 * its readiness first), POST the infer request, read the reply within the size limit, parse it,
 * and on failure retry with back-off until the request's deadline. Every path ends in finish(),
 * which calls the caller's callback exactly once. */
#include <string.h>

#include "teacher_internal.h"

#define ERROR_BODY_LIMIT (64 * 1024)  /* of an error reply, only the message is wanted */
#define READ_CHUNK (64 * 1024)
#define MAX_BACKOFF_US (5 * G_USEC_PER_SEC)

typedef enum {
  REQUEST_QUEUED,      /* submitted, not started on the client thread yet */
  REQUEST_WAITING,     /* back-off before the next attempt */
  REQUEST_PROBE_WAIT,  /* waiting for an endpoint's health probe */
  REQUEST_SENDING,     /* an infer attempt on the wire */
  REQUEST_DONE,        /* callback called; only libsoup's cancelled operations may hold it */
} RequestState;

struct Request {
  gatomicrefcount refs;
  TeacherClient *client;
  TeacherStream *stream;   /* valid until finish() returns */
  char *id;
  uint8_t *rgb;            /* packed copy of the frame, until encoded */
  int width, height, out_width, out_height, shown_width, shown_height;
  guint64 frame;
  TeacherResultFunc callback;
  gpointer user_data;

  RequestState state;
  gint64 submitted, deadline;  /* monotonic µs */
  guint attempts;
  GCancellable *cancellable;
  GSource *deadline_source, *wait_source;
  Endpoint *endpoint;      /* of the attempt on the wire */
  Endpoint *probe_endpoint;  /* whose probe_waiters hold this request */
  GBytes *body;
  gsize json_length;
  GError *last_error;
  guint64 bytes_sent, bytes_received;
};

/* One HTTP exchange: an infer attempt (req set) or a health probe (req NULL). */
typedef struct {
  TeacherClient *client;
  Request *req;
  Endpoint *endpoint;
  SoupMessage *msg;
  GInputStream *input;
  GByteArray *reply;
  gsize limit;
  GSource *probe_timeout;
  gboolean probe_timed_out;
  gboolean counted;
} Exchange;

static void request_attempt(Request *req);
static Endpoint *pick_endpoint(TeacherClient *client, gint64 now, gint64 *next);
static void probe_start(TeacherClient *client, Endpoint *ep);

Request *request_new(TeacherStream *stream, const TeacherFrame *frame, TeacherResultFunc callback,
                     gpointer user_data)
{
  Request *req = g_new0(Request, 1);
  g_atomic_ref_count_init(&req->refs);
  g_atomic_ref_count_inc(&req->refs);  /* one for its life, one for request_start */
  req->client = stream->client;
  req->stream = stream;
  req->id = g_strdup_printf("%s:%" G_GUINT64_FORMAT, stream->name, frame->frame);
  req->frame = frame->frame;
  req->width = frame->width;
  req->height = frame->height;
  req->out_width = frame->out_width;
  req->out_height = frame->out_height;
  req->shown_width = frame->shown_width;
  req->shown_height = frame->shown_height;
  req->callback = callback;
  req->user_data = user_data;
  req->submitted = g_get_monotonic_time();
  req->deadline = req->submitted + (gint64)stream->client->cfg.timeout_ms * 1000;
  req->cancellable = g_cancellable_new();
  gsize row = (gsize)frame->width * 3, stride = frame->stride ? (gsize)frame->stride : row;
  gsize size = row * frame->height;
  g_mutex_lock(&stream->client->lock);
  if (stream->spare_frame && stream->spare_size >= size)
    req->rgb = g_steal_pointer(&stream->spare_frame);
  g_mutex_unlock(&stream->client->lock);
  if (req->rgb == NULL)
    req->rgb = g_malloc0(size + TEACHER_FRAME_PADDING);  /* zeroed: the padding is read */
  for (int y = 0; y < frame->height; y++)
    memcpy(req->rgb + row * y, frame->rgb + stride * y, row);
  return req;
}

void request_unref(Request *req)
{
  if (!g_atomic_ref_count_dec(&req->refs))
    return;
  g_free(req->id);
  g_free(req->rgb);
  g_clear_object(&req->cancellable);
  g_clear_pointer(&req->body, g_bytes_unref);
  g_clear_error(&req->last_error);
  g_free(req);
}

TeacherStream *request_stream(Request *req)
{
  return req->stream;
}

static void destroy_source(GSource **source)
{
  if (*source) {
    g_source_destroy(*source);
    g_source_unref(*source);
    *source = NULL;
  }
}

static GSource *add_timer(TeacherClient *client, gint64 until, GSourceFunc function, gpointer data)
{
  gint64 wait_us = MAX(0, until - g_get_monotonic_time());
  GSource *source = g_timeout_source_new((guint)MIN((wait_us + 999) / 1000, G_MAXUINT));
  g_source_set_callback(source, function, data, NULL);
  g_source_attach(source, client->context);
  return source;
}

/* The outcome: error NULL = labels (out_width x out_height, and shown_labels when asked for)
 * delivered. */
static void finish(Request *req, uint8_t *labels, uint8_t *shown_labels, int num_classes,
                   const TeacherMask *mask, GError *error)
{
  g_assert(req->state != REQUEST_DONE);
  req->state = REQUEST_DONE;
  destroy_source(&req->deadline_source);
  destroy_source(&req->wait_source);
  if (req->probe_endpoint) {
    g_queue_remove(&req->probe_endpoint->probe_waiters, req);
    req->probe_endpoint = NULL;
  }
  g_cancellable_cancel(req->cancellable);
  double latency_ms = (double)(g_get_monotonic_time() - req->submitted) / 1000.0;
  TeacherStream *stream = req->stream;
  client_request_done(req->client, req, error, latency_ms);
  TeacherResult result = {
      .stream = stream->name,
      .frame = req->frame,
      .labels = labels,
      .width = req->out_width,
      .height = req->out_height,
      .shown_labels = shown_labels,
      .shown_width = shown_labels ? req->shown_width : 0,
      .shown_height = shown_labels ? req->shown_height : 0,
      .num_classes = num_classes,
      .mask_width = mask ? mask->width : 0,
      .mask_height = mask ? mask->height : 0,
      .latency_ms = latency_ms,
      .bytes_sent = req->bytes_sent,
      .bytes_received = req->bytes_received,
  };
  req->callback(error ? NULL : &result, error, req->user_data);
  g_free(result.labels);
  g_free(result.shown_labels);
  g_clear_error(&error);
  req->stream = NULL;
  client_request_returned(req->client, stream);
  request_unref(req);
}

static void fail(Request *req, int code, const char *format, ...) G_GNUC_PRINTF(3, 4);

static void fail(Request *req, int code, const char *format, ...)
{
  va_list args;
  va_start(args, format);
  g_autofree char *message = g_strdup_vprintf(format, args);
  va_end(args);
  finish(req, NULL, NULL, 0, NULL, g_error_new_literal(TEACHER_ERROR, code, message));
}

/* Ends with the last attempt's error, saying why there is no further attempt. */
static void give_up(Request *req, const char *why)
{
  GError *last = req->last_error;
  fail(req, last->code, "%s (%s)", last->message, why);
}

void request_cancel(Request *req)
{
  if (req->state == REQUEST_DONE)
    return;
  finish(req, NULL, NULL, 0, NULL,
         g_error_new(G_IO_ERROR, G_IO_ERROR_CANCELLED, "teacher request %s cancelled", req->id));
}

static void endpoint_failed(TeacherClient *client, Endpoint *ep, const GError *error,
                            gint64 not_before);

static gboolean on_deadline(gpointer data)
{
  Request *req = data;
  g_source_unref(req->deadline_source);
  req->deadline_source = NULL;
  TeacherClient *client = req->client;
  if (req->state == REQUEST_SENDING) {
    /* A server that hangs: send the next requests elsewhere, and probe it before its next use. */
    g_autoptr(GError) hang = g_error_new(TEACHER_ERROR, TEACHER_ERROR_TIMEOUT,
                                         "teacher at %s did not answer within %u ms",
                                         req->endpoint->base, client->cfg.timeout_ms);
    endpoint_failed(client, req->endpoint, hang, 0);
  }
  if (req->state == REQUEST_SENDING && req->last_error)
    fail(req, TEACHER_ERROR_TIMEOUT,
         "no reply from the teacher within %u ms (%u attempts; the one before failed: %s)",
         client->cfg.timeout_ms, req->attempts, req->last_error->message);
  else if (req->last_error)  /* between attempts: the failure is what the caller needs to know */
    give_up(req, "dropped at the request's timeout");
  else
    fail(req, TEACHER_ERROR_TIMEOUT, "no reply from the teacher within %u ms (teacher-timeout)",
         client->cfg.timeout_ms);
  return G_SOURCE_REMOVE;
}

/* Gives the frame copy's buffer to the stream for its next submission. */
static void recycle_frame(Request *req)
{
  TeacherStream *stream = req->stream;
  gsize size = (gsize)req->width * req->height * 3;
  g_mutex_lock(&req->client->lock);
  if (stream->spare_frame == NULL || stream->spare_size < size) {
    g_free(stream->spare_frame);
    stream->spare_frame = g_steal_pointer(&req->rgb);
    stream->spare_size = size;
  }
  g_mutex_unlock(&req->client->lock);
  g_clear_pointer(&req->rgb, g_free);
}

gboolean request_start(gpointer data)
{
  Request *req = data;
  TeacherClient *client = req->client;
  if (req->state == REQUEST_QUEUED) {
    g_autoptr(GError) error = NULL;
    req->body = teacher_encoder_request(client->encoder, req->id, req->rgb, req->width,
                                        req->height, &req->json_length, &error);
    recycle_frame(req);
    if (req->body == NULL) {
      finish(req, NULL, NULL, 0, NULL, g_steal_pointer(&error));
    } else {
      req->deadline_source = add_timer(client, req->deadline, on_deadline, req);
      request_attempt(req);
    }
  }
  request_unref(req);
  return G_SOURCE_REMOVE;
}

/* Exponential back-off with "equal jitter": half fixed, half random, so that streams that failed
 * together do not retry together. */
static gint64 backoff_us(TeacherClient *client, guint failures)
{
  gint64 base = (gint64)client->cfg.backoff_ms * 1000 << MIN(failures > 0 ? failures - 1 : 0, 16);
  base = MIN(base, MAX_BACKOFF_US);
  return base / 2 + (gint64)(g_rand_double(client->rand) * (double)(base / 2));
}

static gboolean on_wait_done(gpointer data)
{
  Request *req = data;
  g_source_unref(req->wait_source);
  req->wait_source = NULL;
  request_attempt(req);
  return G_SOURCE_REMOVE;
}

static void wait_until(Request *req, gint64 until)
{
  if (until >= req->deadline) {
    give_up(req, "dropped: the next attempt would come after the request's timeout");
    return;
  }
  req->state = REQUEST_WAITING;
  req->wait_source = add_timer(req->client, until, on_wait_done, req);
}

/* After a failed attempt: another one after the back-off (or not before not_before), if the
 * retry budget and the deadline allow. Takes error. */
static void retry(Request *req, GError *error, gint64 not_before)
{
  g_clear_error(&req->last_error);
  req->last_error = error;
  if (req->attempts > req->client->cfg.max_retries) {
    g_autofree char *why = g_strdup_printf("gave up after %u attempts", req->attempts);
    give_up(req, why);
    return;
  }
  gint64 now = g_get_monotonic_time(), next;
  /* An unreachable URL: fail over to another one at once, if one is available. */
  if (error->code == TEACHER_ERROR_CONNECT && pick_endpoint(req->client, now, &next) != NULL) {
    request_attempt(req);
    return;
  }
  wait_until(req, MAX(now + backoff_us(req->client, req->attempts), not_before));
}

static void endpoint_failed(TeacherClient *client, Endpoint *ep, const GError *error,
                            gint64 not_before)
{
  ep->ready = FALSE;
  ep->failures++;
  ep->not_before = MAX(not_before, g_get_monotonic_time() + backoff_us(client, ep->failures));
  g_clear_error(&ep->last_error);
  ep->last_error = g_error_copy(error);
  if (&client->endpoints[client->preferred] == ep)
    client->preferred = (client->preferred + 1) % client->n_endpoints;
}

static void endpoint_ok(TeacherClient *client, Endpoint *ep)
{
  ep->ready = TRUE;
  ep->failures = 0;
  client->preferred = (guint)(ep - client->endpoints);
}

void endpoint_clear(Endpoint *ep)
{
  g_free(ep->base);
  g_free(ep->infer_uri);
  g_free(ep->ready_uri);
  g_clear_object(&ep->probe_cancellable);
  g_clear_error(&ep->last_error);
}

void endpoint_cancel_probe(Endpoint *ep)
{
  if (ep->probe_cancellable)
    g_cancellable_cancel(ep->probe_cancellable);
}

/* The preferred endpoint, else the next one in order that is not backing off; NULL with *next
 * the earliest time one will be. */
static Endpoint *pick_endpoint(TeacherClient *client, gint64 now, gint64 *next)
{
  *next = G_MAXINT64;
  for (guint i = 0; i < client->n_endpoints; i++) {
    Endpoint *ep = &client->endpoints[(client->preferred + i) % client->n_endpoints];
    if (ep->not_before <= now)
      return ep;
    *next = MIN(*next, ep->not_before);
  }
  return NULL;
}

static Exchange *exchange_new(TeacherClient *client, Request *req, Endpoint *ep,
                              const char *method, const char *uri)
{
  Exchange *ex = g_new0(Exchange, 1);
  ex->client = client;
  ex->req = req;
  if (req)
    g_atomic_ref_count_inc(&req->refs);
  ex->endpoint = ep;
  ex->msg = soup_message_new(method, uri);
  soup_message_add_flags(ex->msg, SOUP_MESSAGE_COLLECT_METRICS);
  if (client->authorization)
    soup_message_headers_replace(soup_message_get_request_headers(ex->msg), "Authorization",
                                 client->authorization);
  ex->reply = g_byte_array_new();
  return ex;
}

/* Adds the exchange's bytes on the wire to the counters, once. */
static void exchange_count(Exchange *ex)
{
  if (ex->counted)
    return;
  ex->counted = TRUE;
  SoupMessageMetrics *m = soup_message_get_metrics(ex->msg);
  guint64 sent = 0, received = 0;
  if (m) {
    sent = soup_message_metrics_get_request_header_bytes_sent(m) +
           soup_message_metrics_get_request_body_bytes_sent(m);
    received = soup_message_metrics_get_response_header_bytes_received(m) +
               soup_message_metrics_get_response_body_bytes_received(m);
  }
  gboolean live = ex->req && ex->req->state != REQUEST_DONE;
  if (live) {
    ex->req->bytes_sent += sent;
    ex->req->bytes_received += received;
  }
  client_count_bytes(ex->client, live ? ex->req->stream : NULL, sent, received, ex->req == NULL,
                     FALSE);
}

static void exchange_free(Exchange *ex)
{
  exchange_count(ex);
  destroy_source(&ex->probe_timeout);
  if (ex->input)
    g_input_stream_close(ex->input, NULL, NULL);
  g_clear_object(&ex->input);
  g_clear_object(&ex->msg);
  if (ex->reply)
    g_byte_array_unref(ex->reply);
  if (ex->req)
    request_unref(ex->req);
  g_free(ex);
}

static gboolean is_cancelled(const GError *error)
{
  return g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
}

/* ---- health probes ---- */

/* The readiness probe's answer (body NULL on error): the endpoint is ready or backs off, and the
 * requests waiting for it go on. A 4xx (401, 403, 404…) ends them: retrying will not help. */
static void probe_done(Exchange *ex, GBytes *body, const GError *error)
{
  TeacherClient *client = ex->client;
  Endpoint *ep = ex->endpoint;
  ep->probing = FALSE;
  guint status = soup_message_get_status(ex->msg);
  gboolean refused = !error && status >= 400 && status < 500 && status != 408 && status != 429;
  g_autoptr(GError) failure = NULL;
  if (is_cancelled(error) && !ex->probe_timed_out) {  /* shutdown: no waiters are left */
    exchange_free(ex);
    return;
  }
  if (error && ex->probe_timed_out) {
    failure = g_error_new(TEACHER_ERROR, TEACHER_ERROR_TIMEOUT,
                          "teacher at %s: no answer to its readiness probe within %u ms",
                          ep->base, client->cfg.timeout_ms);
  } else if (error) {
    failure = g_error_new(TEACHER_ERROR, TEACHER_ERROR_CONNECT,
                          "cannot reach the teacher at %s: %s", ep->base, error->message);
  } else if (status != SOUP_STATUS_OK) {
    g_autofree char *message = teacher_error_reply_message(body);
    failure = g_error_new(TEACHER_ERROR, refused ? TEACHER_ERROR_HTTP : TEACHER_ERROR_CONNECT,
                          "teacher at %s %s: GET /v2/health/ready answered HTTP %u %s%s%s",
                          ep->base, refused ? "refuses the client" : "is not ready", status,
                          soup_message_get_reason_phrase(ex->msg), message ? ": " : "",
                          message ? message : "");
  }
  if (failure)
    endpoint_failed(client, ep, failure, 0);
  else
    endpoint_ok(client, ep);
  exchange_free(ex);
  while (!g_queue_is_empty(&ep->probe_waiters)) {
    Request *req = g_queue_pop_head(&ep->probe_waiters);
    req->probe_endpoint = NULL;
    if (refused) {
      finish(req, NULL, NULL, 0, NULL, g_error_copy(failure));
      continue;
    }
    if (failure) {
      g_clear_error(&req->last_error);
      req->last_error = g_error_copy(failure);
    }
    request_attempt(req);
  }
}

static void on_probe_sent(GObject *source, GAsyncResult *result, gpointer data)
{
  Exchange *ex = data;
  ex->client->io_pending--;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) body = soup_session_send_and_read_finish(SOUP_SESSION(source), result, &error);
  probe_done(ex, body, error);
}

static gboolean on_probe_timeout(gpointer data)
{
  Exchange *ex = data;
  g_source_unref(ex->probe_timeout);
  ex->probe_timeout = NULL;
  ex->probe_timed_out = TRUE;
  g_cancellable_cancel(ex->endpoint->probe_cancellable);
  return G_SOURCE_REMOVE;
}

static void probe_start(TeacherClient *client, Endpoint *ep)
{
  ep->probing = TRUE;
  g_clear_object(&ep->probe_cancellable);
  ep->probe_cancellable = g_cancellable_new();
  Exchange *ex = exchange_new(client, NULL, ep, "GET", ep->ready_uri);
  ex->probe_timeout = add_timer(client, g_get_monotonic_time() +
                                            (gint64)client->cfg.timeout_ms * 1000,
                                on_probe_timeout, ex);
  client->io_pending++;
  soup_session_send_and_read_async(client->session, ex->msg, G_PRIORITY_DEFAULT,
                                   ep->probe_cancellable, on_probe_sent, ex);
}

/* ---- infer exchanges ---- */

/* A teacher asking for a longer pause gets this one: past it the client asks again, so that a
 * wrong or hostile header cannot keep distillation off for long after the teacher is back. */
#define RETRY_AFTER_MAX_S 300

/* Seconds or an HTTP date, as µs from now, at most RETRY_AFTER_MAX_S; 0 when absent or past. */
static gint64 retry_after_us(SoupMessageHeaders *headers)
{
  const gint64 max_us = (gint64)RETRY_AFTER_MAX_S * G_USEC_PER_SEC;
  const char *value = soup_message_headers_get_one(headers, "Retry-After");
  guint64 seconds;
  if (value == NULL)
    return 0;
  if (g_ascii_string_to_unsigned(value, 10, 0, G_MAXUINT64, &seconds, NULL))
    return seconds > RETRY_AFTER_MAX_S ? max_us : (gint64)seconds * G_USEC_PER_SEC;
  g_autoptr(GDateTime) date = soup_date_time_new_from_http_string(value);
  if (date == NULL)
    return 0;
  g_autoptr(GDateTime) now = g_date_time_new_now_utc();
  return CLAMP(g_date_time_difference(date, now), 0, max_us);
}

static void parse_reply(Exchange *ex)
{
  Request *req = ex->req;
  TeacherClient *client = ex->client;
  g_autoptr(GBytes) body = g_byte_array_free_to_bytes(g_steal_pointer(&ex->reply));
  g_autofree char *header_length = g_strdup(soup_message_headers_get_one(
      soup_message_get_response_headers(ex->msg), "Inference-Header-Content-Length"));
  exchange_free(ex);
  TeacherMask mask;
  GError *error = NULL;
  if (!teacher_reply_parse(body, header_length, req->id, client->cfg.max_reply_bytes, &mask,
                           &error)) {
    finish(req, NULL, NULL, 0, NULL, error);
    return;
  }
  uint8_t *labels = g_malloc((gsize)req->out_width * req->out_height), *shown = NULL;
  int classes = teacher_mask_to_labels(&mask, client->cfg.confidence, req->out_width,
                                       req->out_height, labels, &error);
  if (classes >= 0 && req->shown_width) {
    shown = g_malloc((gsize)req->shown_width * req->shown_height);
    teacher_mask_to_labels(&mask, client->cfg.confidence, req->shown_width, req->shown_height,
                           shown, NULL);
  }
  if (classes < 0)
    g_clear_pointer(&labels, g_free);
  finish(req, labels, shown, MAX(classes, 0), &mask, error);
  teacher_mask_clear(&mask);
}

/* The whole reply is read (or its reading failed with read_error). */
static void on_reply(Exchange *ex, const GError *read_error)
{
  Request *req = ex->req;
  TeacherClient *client = ex->client;
  Endpoint *ep = ex->endpoint;
  guint status = soup_message_get_status(ex->msg);
  exchange_count(ex);
  if (status == SOUP_STATUS_OK && read_error) {
    guint got = ex->reply->len;
    exchange_free(ex);
    fail(req, TEACHER_ERROR_PROTOCOL, "truncated reply from the teacher at %s after %u bytes: %s",
         ep->base, got, read_error->message);
    return;
  }
  if (status == SOUP_STATUS_OK) {
    endpoint_ok(client, ep);
    parse_reply(ex);
    return;
  }
  g_autoptr(GBytes) body = g_byte_array_free_to_bytes(g_steal_pointer(&ex->reply));
  g_autofree char *message = teacher_error_reply_message(body);
  gint64 wait = retry_after_us(soup_message_get_response_headers(ex->msg));
  GError *error = g_error_new(TEACHER_ERROR, TEACHER_ERROR_HTTP,
                              "teacher at %s answered HTTP %u %s%s%s", ep->base, status,
                              soup_message_get_reason_phrase(ex->msg), message ? ": " : "",
                              message ? message : "");
  exchange_free(ex);
  if (status == 429 /* Too Many Requests */ || status == SOUP_STATUS_SERVICE_UNAVAILABLE) {
    /* Overloaded or not ready: nobody uses it before Retry-After; 503 re-probes it first. */
    gint64 not_before = g_get_monotonic_time() + wait;
    ep->not_before = MAX(ep->not_before, not_before);
    if (status == SOUP_STATUS_SERVICE_UNAVAILABLE)
      ep->ready = FALSE;
    retry(req, error, not_before);
  } else if (status == SOUP_STATUS_INTERNAL_SERVER_ERROR || status == SOUP_STATUS_BAD_GATEWAY ||
             status == SOUP_STATUS_GATEWAY_TIMEOUT) {
    retry(req, error, 0);
  } else {
    finish(req, NULL, NULL, 0, NULL, error);
  }
}

static void read_more(Exchange *ex);

static void on_read(GObject *source, GAsyncResult *result, gpointer data)
{
  Exchange *ex = data;
  ex->client->io_pending--;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) chunk = g_input_stream_read_bytes_finish(G_INPUT_STREAM(source), result,
                                                             &error);
  if (ex->req->state == REQUEST_DONE) {
    exchange_free(ex);
    return;
  }
  if (error || g_bytes_get_size(chunk) == 0) {
    on_reply(ex, error);
    return;
  }
  gsize size = g_bytes_get_size(chunk);
  if (ex->reply->len + size > ex->limit) {
    if (soup_message_get_status(ex->msg) == SOUP_STATUS_OK) {
      Request *req = ex->req;
      gsize limit = ex->limit;
      exchange_free(ex);
      fail(req, TEACHER_ERROR_PROTOCOL,
           "teacher reply larger than the limit of %" G_GSIZE_FORMAT " bytes", limit);
      return;
    }
    /* An error reply: its beginning holds the message. */
    g_byte_array_append(ex->reply, g_bytes_get_data(chunk, NULL), ex->limit - ex->reply->len);
    on_reply(ex, NULL);
    return;
  }
  g_byte_array_append(ex->reply, g_bytes_get_data(chunk, NULL), (guint)size);
  read_more(ex);
}

static void read_more(Exchange *ex)
{
  ex->client->io_pending++;
  g_input_stream_read_bytes_async(ex->input, READ_CHUNK, G_PRIORITY_DEFAULT, ex->req->cancellable,
                                  on_read, ex);
}

static void on_sent(GObject *source, GAsyncResult *result, gpointer data)
{
  Exchange *ex = data;
  Request *req = ex->req;
  TeacherClient *client = ex->client;
  client->io_pending--;
  g_autoptr(GError) error = NULL;
  ex->input = soup_session_send_finish(SOUP_SESSION(source), result, &error);
  if (req->state == REQUEST_DONE) {
    exchange_free(ex);
    return;
  }
  Endpoint *ep = ex->endpoint;
  if (error) {
    GError *failure = g_error_new(TEACHER_ERROR, TEACHER_ERROR_CONNECT,
                                  "cannot reach the teacher at %s: %s", ep->base, error->message);
    exchange_free(ex);
    endpoint_failed(client, ep, failure, 0);
    retry(req, failure, 0);
    return;
  }
  SoupMessageHeaders *headers = soup_message_get_response_headers(ex->msg);
  gboolean ok = soup_message_get_status(ex->msg) == SOUP_STATUS_OK;
  ex->limit = ok ? client->cfg.max_reply_bytes : ERROR_BODY_LIMIT;
  if (ok && soup_message_headers_get_encoding(headers) == SOUP_ENCODING_CONTENT_LENGTH &&
      (guint64)soup_message_headers_get_content_length(headers) > ex->limit) {
    goffset length = soup_message_headers_get_content_length(headers);
    gsize limit = ex->limit;
    exchange_free(ex);
    fail(req, TEACHER_ERROR_PROTOCOL,
         "teacher reply of %" G_GOFFSET_FORMAT " bytes exceeds the limit of %" G_GSIZE_FORMAT
         " bytes",
         length, limit);
    return;
  }
  read_more(ex);
}

static void send_infer(Request *req, Endpoint *ep)
{
  TeacherClient *client = req->client;
  if (++req->attempts > 1)
    client_count_bytes(client, req->stream, 0, 0, FALSE, TRUE);
  Exchange *ex = exchange_new(client, req, ep, "POST", ep->infer_uri);
  char length[32];
  g_snprintf(length, sizeof length, "%" G_GSIZE_FORMAT, req->json_length);
  soup_message_headers_replace(soup_message_get_request_headers(ex->msg),
                               "Inference-Header-Content-Length", length);
  soup_message_set_request_body_from_bytes(ex->msg, "application/octet-stream", req->body);
  req->state = REQUEST_SENDING;
  req->endpoint = ep;
  client->io_pending++;
  soup_session_send_async(client->session, ex->msg, G_PRIORITY_DEFAULT, req->cancellable, on_sent,
                          ex);
}

static void request_attempt(Request *req)
{
  TeacherClient *client = req->client;
  gint64 next;
  Endpoint *ep = pick_endpoint(client, g_get_monotonic_time(), &next);
  if (ep == NULL) {
    if (req->last_error == NULL) {  /* other requests' failures put every URL on hold */
      Endpoint *first = &client->endpoints[client->preferred];
      req->last_error = first->last_error ? g_error_copy(first->last_error)
                                          : g_error_new(TEACHER_ERROR, TEACHER_ERROR_CONNECT,
                                                        "no teacher URL is available");
    }
    wait_until(req, next);
  } else if (ep->ready) {
    send_infer(req, ep);
  } else {
    req->state = REQUEST_PROBE_WAIT;
    req->probe_endpoint = ep;
    g_queue_push_tail(&ep->probe_waiters, req);
    if (!ep->probing)
      probe_start(client, ep);
  }
}
