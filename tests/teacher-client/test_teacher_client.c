/* test_teacher_client.c: the teacher client over real HTTP on loopback against the KServe v2 test
 * double (kserve_double.h): every mask form, encodings, faults (garbage, truncated, oversized,
 * wrong shapes and datatypes, error statuses), retries with Retry-After, timeouts of a hanging
 * server, a slow one, recovery after each fault, a server down then up again on its port,
 * fail-over, bearer tokens, TLS with a CA made by openssl, in-flight budgets, a caller that never
 * waits, and shutdown while the server hangs. */
#include <glib/gstdio.h>
#include <string.h>

#include "kserve_double.h"
#include "outcome.h"

#define FRAME_W 192
#define FRAME_H 144
#define OUT_W 96
#define OUT_H 72

static KserveDouble *server;
static char *folder;

/* A refused loopback URL: a port that was free a moment ago. */
static char *refused_url(void)
{
  g_autoptr(GSocket) socket = g_socket_new(G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM,
                                           G_SOCKET_PROTOCOL_TCP, NULL);
  g_autoptr(GInetAddress) loopback = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
  g_autoptr(GSocketAddress) any = g_inet_socket_address_new(loopback, 0);
  g_assert_true(g_socket_bind(socket, any, TRUE, NULL));
  g_autoptr(GSocketAddress) bound = g_socket_get_local_address(socket, NULL);
  guint16 port = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound));
  g_socket_close(socket, NULL);
  return g_strdup_printf("http://127.0.0.1:%u", port);
}

static TeacherClient *client_for(const char *urls, guint timeout_ms, GError **error)
{
  TeacherClientConfig cfg;
  teacher_client_config_init(&cfg);
  cfg.urls = urls;
  cfg.timeout_ms = timeout_ms;
  cfg.backoff_ms = 20;
  return teacher_client_new(&cfg, error);
}

static TeacherClient *client_new_checked(const TeacherClientConfig *cfg)
{
  g_autoptr(GError) error = NULL;
  TeacherClient *client = teacher_client_new(cfg, &error);
  g_assert_no_error(error);
  return client;
}

static TeacherSubmitStatus submit(TeacherStream *stream, Collector *collector, guint64 frame,
                                  const guint8 *rgb, GError **error)
{
  TeacherFrame f = {.rgb = rgb, .width = FRAME_W, .height = FRAME_H, .frame = frame,
                    .out_width = OUT_W, .out_height = OUT_H};
  return teacher_stream_submit(stream, &f, collector_on_result, collector, error);
}

/* One frame through client; returns its outcome. */
static Outcome *round_trip(TeacherClient *client)
{
  Collector collector;
  collector_init(&collector);
  TeacherStream *stream = teacher_client_open_stream(client, "cam0", 0);
  g_autofree guint8 *rgb = bands_new(FRAME_W, FRAME_H);
  g_autoptr(GError) error = NULL;
  g_assert_cmpint(submit(stream, &collector, 7, rgb, &error), ==, TEACHER_SUBMIT_OK);
  g_assert_no_error(error);
  Outcome *outcome = collector_wait(&collector);
  teacher_stream_close(stream);
  collector_clear(&collector);
  return outcome;
}

static Outcome *round_trip_with(const DoubleBehaviour *behaviour, guint timeout_ms,
                                gsize max_reply_bytes)
{
  kserve_double_set(server, behaviour);
  TeacherClientConfig cfg;
  teacher_client_config_init(&cfg);
  cfg.urls = kserve_double_url(server);
  cfg.timeout_ms = timeout_ms;
  cfg.backoff_ms = 20;
  if (max_reply_bytes)
    cfg.max_reply_bytes = max_reply_bytes;
  TeacherClient *client = client_new_checked(&cfg);
  Outcome *outcome = round_trip(client);
  teacher_client_free(client);
  return outcome;
}

static void assert_error(const Outcome *outcome, int code, const char *fragment)
{
  g_assert_nonnull(outcome->error);
  if (!g_error_matches(outcome->error, TEACHER_ERROR, code) ||
      strstr(outcome->error->message, fragment) == NULL)
    g_error("expected error %d with '%s', got %s %d: %s", code, fragment,
            g_quark_to_string(outcome->error->domain), outcome->error->code,
            outcome->error->message);
}

static void check_record_protocol(void)
{
  DoubleRecord record;
  kserve_double_record(server, &record);
  g_assert_cmpstr(record.id, ==, "cam0:7");
  g_assert_cmpstr(record.content_type, ==, "application/octet-stream");
  g_assert_nonnull(record.header_length);
  g_assert_cmpstr(record.input_datatype, ==, "UINT8");
  g_assert_cmpint(record.image_width, ==, FRAME_W);
  g_assert_cmpint(record.image_height, ==, FRAME_H);
  g_assert_null(record.authorization);
  kserve_double_record_clear(&record);
}

static void test_mask_forms(void)
{
  static const struct {
    const char *datatype;
    int channels;
    int num_classes;
  } forms[] = {
      {"UINT8", 0, 2}, {"INT32", 0, 2}, {"INT64", 0, 2},
      {"FP32", 1, 2},  {"FP32", 2, 2},  {"FP32", 3, 3},
  };
  for (guint i = 0; i < G_N_ELEMENTS(forms); i++) {
    for (int json = 0; json <= 1; json++) {
      /* The mask at another size and aspect than both the frame and the class map. */
      DoubleBehaviour b = {.mode = DOUBLE_MASK, .datatype = forms[i].datatype,
                           .channels = forms[i].channels, .json_data = json,
                           .mask_width = 150, .mask_height = 40};
      Outcome *outcome = round_trip_with(&b, 10000, 0);
      g_test_message("%s C=%d %s: %s", forms[i].datatype, forms[i].channels,
                     json ? "JSON" : "binary",
                     outcome->error ? outcome->error->message : "ok");
      g_assert_no_error(outcome->error);
      g_assert_cmpint(outcome->width, ==, OUT_W);
      g_assert_cmpint(outcome->height, ==, OUT_H);
      g_assert_cmpint(outcome->mask_width, ==, 150);
      g_assert_cmpint(outcome->mask_height, ==, 40);
      g_assert_cmpint(outcome->num_classes, ==, forms[i].num_classes);
      g_assert_cmpuint(outcome->frame, ==, 7);
      g_assert_cmpuint(outcome->bytes_sent, >, FRAME_W * FRAME_H * 3);
      g_assert_cmpuint(outcome->bytes_received, >, 0);
      bands_check(outcome->labels, OUT_W, OUT_H);
      outcome_free(outcome);
      check_record_protocol();
    }
  }
}

/* A second class map at the size the user sees (here the frame's), from the same mask; none
 * unless asked for. Half a shown size is refused. */
static void test_shown_labels(void)
{
  DoubleBehaviour b = {.mode = DOUBLE_MASK, .datatype = "FP32", .channels = 2,
                       .mask_width = 150, .mask_height = 40};
  kserve_double_set(server, &b);
  g_autoptr(GError) error = NULL;
  TeacherClient *client = client_for(kserve_double_url(server), 10000, &error);
  TeacherStream *stream = teacher_client_open_stream(client, "cam0", 0);
  Collector collector;
  collector_init(&collector);
  g_autofree guint8 *rgb = bands_new(FRAME_W, FRAME_H);
  TeacherFrame f = {.rgb = rgb, .width = FRAME_W, .height = FRAME_H, .frame = 7,
                    .out_width = OUT_W, .out_height = OUT_H, .shown_width = FRAME_W,
                    .shown_height = FRAME_H};
  g_assert_cmpint(teacher_stream_submit(stream, &f, collector_on_result, &collector, &error), ==,
                  TEACHER_SUBMIT_OK);
  Outcome *outcome = collector_wait(&collector);
  g_assert_no_error(outcome->error);
  bands_check(outcome->labels, OUT_W, OUT_H);
  g_assert_cmpint(outcome->shown_width, ==, FRAME_W);
  g_assert_cmpint(outcome->shown_height, ==, FRAME_H);
  bands_check(outcome->shown_labels, FRAME_W, FRAME_H);
  outcome_free(outcome);

  f.shown_width = f.shown_height = 0;
  g_assert_cmpint(teacher_stream_submit(stream, &f, collector_on_result, &collector, &error), ==,
                  TEACHER_SUBMIT_OK);
  outcome = collector_wait(&collector);
  g_assert_no_error(outcome->error);
  g_assert_null(outcome->shown_labels);
  g_assert_cmpint(outcome->shown_width, ==, 0);
  outcome_free(outcome);

  f.shown_height = FRAME_H;
  g_assert_cmpint(teacher_stream_submit(stream, &f, collector_on_result, &collector, &error), ==,
                  TEACHER_SUBMIT_INVALID);
  g_assert_error(error, TEACHER_ERROR, TEACHER_ERROR_INVALID);
  teacher_stream_close(stream);
  teacher_client_free(client);
  collector_clear(&collector);
}

static void test_chunked_reply(void)
{
  DoubleBehaviour b = {.mode = DOUBLE_CHUNKED, .datatype = "FP32", .channels = 2};
  Outcome *outcome = round_trip_with(&b, 10000, 0);
  g_assert_no_error(outcome->error);
  bands_check(outcome->labels, OUT_W, OUT_H);
  outcome_free(outcome);
}

/* Raw and JPEG, at full size and downscaled: what the server received, and the bytes each way. */
static void test_encodings(void)
{
  kserve_double_set(server, &(DoubleBehaviour){.mode = DOUBLE_MASK});
  guint64 sent[2][2];
  for (int jpeg = 0; jpeg <= 1; jpeg++) {
    for (int scaled = 0; scaled <= 1; scaled++) {
      TeacherClientConfig cfg;
      teacher_client_config_init(&cfg);
      cfg.urls = kserve_double_url(server);
      cfg.encoding = jpeg ? TEACHER_ENCODING_JPEG : TEACHER_ENCODING_RAW;
      cfg.max_side = scaled ? 63 : 0;  /* odd sizes: 63x47 */
      TeacherClient *client = client_new_checked(&cfg);
      Outcome *outcome = round_trip(client);
      g_assert_no_error(outcome->error);
      bands_check(outcome->labels, OUT_W, OUT_H);
      DoubleRecord record;
      kserve_double_record(server, &record);
      g_assert_cmpstr(record.input_datatype, ==, jpeg ? "BYTES" : "UINT8");
      g_assert_cmpint(record.image_width, ==, scaled ? 63 : FRAME_W);
      g_assert_cmpint(record.image_height, ==, scaled ? 47 : FRAME_H);
      g_test_message("%s %dx%d: %" G_GUINT64_FORMAT " bytes sent, %" G_GUINT64_FORMAT
                     " received",
                     jpeg ? "jpeg" : "raw", record.image_width, record.image_height,
                     outcome->bytes_sent, outcome->bytes_received);
      sent[jpeg][scaled] = outcome->bytes_sent;
      TeacherCounters counters;
      teacher_client_get_counters(client, &counters);
      g_assert_cmpuint(counters.bytes_sent, >=, outcome->bytes_sent);
      g_assert_cmpuint(counters.replies, ==, 1);
      kserve_double_record_clear(&record);
      outcome_free(outcome);
      teacher_client_free(client);
    }
  }
  g_assert_cmpuint(sent[0][1], <, sent[0][0]);
  g_assert_cmpuint(sent[1][0], <, sent[0][0] / 4);
  g_assert_cmpuint(sent[1][1], <, sent[1][0]);
}

static void test_garbage(void)
{
  Outcome *outcome = round_trip_with(&(DoubleBehaviour){.mode = DOUBLE_GARBAGE}, 10000, 0);
  assert_error(outcome, TEACHER_ERROR_PROTOCOL, "malformed JSON");
  outcome_free(outcome);
}

static void test_truncated(void)
{
  Outcome *outcome = round_trip_with(&(DoubleBehaviour){.mode = DOUBLE_TRUNCATED}, 10000, 0);
  assert_error(outcome, TEACHER_ERROR_PROTOCOL, "truncated");
  outcome_free(outcome);
}

static void test_oversize(void)
{
  for (int chunked = 0; chunked <= 1; chunked++) {
    DoubleBehaviour b = {.mode = chunked ? DOUBLE_CHUNKED : DOUBLE_MASK, .mask_width = 512,
                         .mask_height = 512};
    Outcome *outcome = round_trip_with(&b, 10000, 64 * 1024);
    assert_error(outcome, TEACHER_ERROR_PROTOCOL, "limit of 65536 bytes");
    outcome_free(outcome);
  }
}

static void test_wrong_shapes_and_datatypes(void)
{
  static const struct {
    DoubleBehaviour behaviour;
    const char *fragment;
  } cases[] = {
      {{.datatype = "UINT8", .shape = "[1,2,72,96]"}, "shape [1,h,w]"},
      {{.datatype = "FP32", .channels = 2, .shape = "[1,72,96]"}, "shape [1,C,h,w]"},
      {{.datatype = "UINT8", .shape = "[2,72,96]"}, "shape [1,h,w]"},
      {{.datatype = "UINT8", .shape = "[1,10,10]"}, "does not match its shape"},
      {{.datatype = "UINT8", .shape = "[1,10,10]", .json_data = TRUE}, "holds"},
      {{.datatype = "FP32", .channels = 1, .shape = "[1,1,0,96]"}, "outside"},
      {{.datatype = "FP16"}, "datatype 'FP16'"},
      {{.datatype = "BYTES"}, "datatype 'BYTES'"},
  };
  for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
    Outcome *outcome = round_trip_with(&cases[i].behaviour, 10000, 0);
    g_test_message("%s", outcome->error ? outcome->error->message : "no error");
    assert_error(outcome, TEACHER_ERROR_PROTOCOL, cases[i].fragment);
    outcome_free(outcome);
  }
}

static KserveDouble *fresh_server(void)
{
  if (server)
    kserve_double_free(server);
  server = kserve_double_new(NULL, NULL);
  return server;
}

/* A 400 is the request's fault: no retry, and the server's message (cleaned) in the error. */
static void test_http_error(void)
{
  fresh_server();
  DoubleBehaviour b = {.mode = DOUBLE_STATUS, .status = 400, .fail_count = 1};
  Outcome *outcome = round_trip_with(&b, 10000, 0);
  assert_error(outcome, TEACHER_ERROR_HTTP, "HTTP 400 Bad Request: model overloaded retry later");
  outcome_free(outcome);
  DoubleRecord record;
  kserve_double_record(server, &record);
  g_assert_cmpuint(record.infer_requests, ==, 1);
  kserve_double_record_clear(&record);
}

/* 503 with Retry-After: 1: the retry waits for it, and probes readiness again first. */
static void test_retry_after(void)
{
  fresh_server();
  DoubleBehaviour b = {.mode = DOUBLE_STATUS, .status = 503, .retry_after = "1", .fail_count = 1};
  kserve_double_set(server, &b);
  TeacherClient *client = client_for(kserve_double_url(server), 10000, NULL);
  Outcome *outcome = round_trip(client);
  g_assert_no_error(outcome->error);
  bands_check(outcome->labels, OUT_W, OUT_H);
  TeacherCounters counters;
  teacher_client_get_counters(client, &counters);
  g_assert_cmpuint(counters.retries, ==, 1);
  g_assert_cmpuint(counters.replies, ==, 1);
  g_assert_cmpuint(counters.health_probes, ==, 2);
  DoubleRecord record;
  kserve_double_record(server, &record);
  g_assert_cmpuint(record.infer_requests, ==, 2);
  g_assert_cmpuint(record.probes, ==, 2);
  g_assert_cmpint(record.infer_times[1] - record.infer_times[0], >=, G_USEC_PER_SEC);
  kserve_double_record_clear(&record);
  outcome_free(outcome);
  teacher_client_free(client);
}

/* A Retry-After beyond the request's timeout: dropped at once rather than retried late; one of
 * years (capped at a few minutes, not read as "no wait") the same. */
static void test_retry_after_too_late(void)
{
  const char *waits[] = { "30", "99999999999" };
  for (size_t i = 0; i < G_N_ELEMENTS(waits); i++) {
    fresh_server();
    DoubleBehaviour b = {.mode = DOUBLE_STATUS, .status = 429, .retry_after = waits[i],
                         .fail_count = 100};
    Outcome *outcome = round_trip_with(&b, 5000, 0);
    assert_error(outcome, TEACHER_ERROR_HTTP, "dropped");
    g_assert_nonnull(strstr(outcome->error->message, "429"));
    outcome_free(outcome);
    DoubleRecord record;
    kserve_double_record(server, &record);
    g_assert_cmpuint(record.infer_requests, ==, 1);
    kserve_double_record_clear(&record);
  }
}

/* 500s are retried with back-off until the retry budget runs out. */
static void test_server_errors_retried(void)
{
  fresh_server();
  DoubleBehaviour b = {.mode = DOUBLE_STATUS, .status = 500, .fail_count = 2};
  Outcome *outcome = round_trip_with(&b, 10000, 0);
  g_assert_no_error(outcome->error);
  outcome_free(outcome);
  fresh_server();
  b.fail_count = 100;
  kserve_double_set(server, &b);
  TeacherClientConfig cfg;
  teacher_client_config_init(&cfg);
  cfg.urls = kserve_double_url(server);
  cfg.backoff_ms = 10;
  cfg.max_retries = 2;
  TeacherClient *client = client_new_checked(&cfg);
  outcome = round_trip(client);
  assert_error(outcome, TEACHER_ERROR_HTTP, "gave up after 3 attempts");
  TeacherCounters counters;
  teacher_client_get_counters(client, &counters);
  g_assert_cmpuint(counters.retries, ==, 2);
  g_assert_cmpuint(counters.errors[TEACHER_ERROR_HTTP], ==, 1);
  outcome_free(outcome);
  teacher_client_free(client);
}

/* The caller never waits: submit returns while the server sits on the request, a second
 * submission is refused as busy, and the hanging request ends in a timeout. */
static void test_hang_timeout_and_busy(void)
{
  fresh_server();
  kserve_double_set(server, &(DoubleBehaviour){.mode = DOUBLE_HANG});
  TeacherClient *client = client_for(kserve_double_url(server), 3000, NULL);
  TeacherStream *stream = teacher_client_open_stream(client, "cam0", 0);
  Collector collector;
  collector_init(&collector);
  g_autofree guint8 *rgb = bands_new(FRAME_W, FRAME_H);
  g_assert_cmpint(submit(stream, &collector, 1, rgb, NULL), ==, TEACHER_SUBMIT_OK);
  /* The caller's buffer is free to reuse at once: the client copied it. */
  memset(rgb, 0, FRAME_W * FRAME_H * 3);
  g_autoptr(GError) busy = NULL;
  g_assert_cmpint(submit(stream, &collector, 2, rgb, &busy), ==, TEACHER_SUBMIT_BUSY);
  g_assert_error(busy, TEACHER_ERROR, TEACHER_ERROR_BUSY);
  g_assert_nonnull(strstr(busy->message, "1 of 1"));
  kserve_double_wait_infers(server, 1);
  g_assert_null(collector_poll(&collector));  /* the server has it, and has not answered */
  g_assert_cmpuint(teacher_stream_inflight(stream), ==, 1);

  Outcome *outcome = collector_wait(&collector);
  assert_error(outcome, TEACHER_ERROR_TIMEOUT, "within 3000 ms");
  g_assert_cmpuint(teacher_stream_inflight(stream), ==, 0);
  TeacherCounters counters;
  teacher_stream_get_counters(stream, &counters);
  g_assert_cmpuint(counters.queries, ==, 1);
  g_assert_cmpuint(counters.errors[TEACHER_ERROR_TIMEOUT], ==, 1);
  g_assert_cmpuint(counters.errors[TEACHER_ERROR_BUSY], ==, 1);
  g_assert_cmpuint(counters.replies, ==, 0);
  outcome_free(outcome);
  teacher_stream_close(stream);
  collector_clear(&collector);
  teacher_client_free(client);
}

/* Freeing the client while the server hangs cancels the request before returning. */
static void test_shutdown_while_hanging(void)
{
  fresh_server();
  kserve_double_set(server, &(DoubleBehaviour){.mode = DOUBLE_HANG});
  TeacherClient *client = client_for(kserve_double_url(server), 600000, NULL);
  TeacherStream *stream = teacher_client_open_stream(client, "cam0", 2);
  Collector collector;
  collector_init(&collector);
  g_autofree guint8 *rgb = bands_new(FRAME_W, FRAME_H);
  g_assert_cmpint(submit(stream, &collector, 1, rgb, NULL), ==, TEACHER_SUBMIT_OK);
  g_assert_cmpint(submit(stream, &collector, 2, rgb, NULL), ==, TEACHER_SUBMIT_OK);
  kserve_double_wait_infers(server, 2);
  teacher_client_free(client);  /* the stream is closed with it */
  for (int i = 0; i < 2; i++) {
    Outcome *outcome = collector_poll(&collector);
    g_assert_nonnull(outcome);
    g_assert_error(outcome->error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    outcome_free(outcome);
  }
  collector_clear(&collector);
}

/* Streams share the client, each with its own budget; closing one cancels only its requests. */
static void test_streams(void)
{
  fresh_server();
  kserve_double_set(server, &(DoubleBehaviour){.mode = DOUBLE_HANG});
  TeacherClient *client = client_for(kserve_double_url(server), 600000, NULL);
  TeacherStream *a = teacher_client_open_stream(client, "a", 1);
  TeacherStream *b = teacher_client_open_stream(client, "b", 2);
  Collector ca, cb;
  collector_init(&ca);
  collector_init(&cb);
  g_autofree guint8 *rgb = bands_new(FRAME_W, FRAME_H);
  g_assert_cmpint(submit(a, &ca, 1, rgb, NULL), ==, TEACHER_SUBMIT_OK);
  g_assert_cmpint(submit(a, &ca, 2, rgb, NULL), ==, TEACHER_SUBMIT_BUSY);
  g_assert_cmpint(submit(b, &cb, 1, rgb, NULL), ==, TEACHER_SUBMIT_OK);
  g_assert_cmpint(submit(b, &cb, 2, rgb, NULL), ==, TEACHER_SUBMIT_OK);
  g_assert_cmpint(submit(b, &cb, 3, rgb, NULL), ==, TEACHER_SUBMIT_BUSY);
  kserve_double_wait_infers(server, 3);
  teacher_stream_close(a);
  Outcome *outcome = collector_poll(&ca);
  g_assert_nonnull(outcome);
  g_assert_error(outcome->error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  outcome_free(outcome);
  g_assert_null(collector_poll(&cb));
  g_assert_cmpuint(teacher_stream_inflight(b), ==, 2);
  TeacherCounters counters;
  teacher_client_get_counters(client, &counters);
  g_assert_cmpuint(counters.queries, ==, 3);
  g_assert_cmpuint(counters.errors[TEACHER_ERROR_BUSY], ==, 2);
  g_assert_cmpuint(counters.cancelled, ==, 1);
  teacher_client_free(client);
  g_assert_cmpuint(g_queue_get_length(&cb.outcomes), ==, 2);
  collector_clear(&ca);
  collector_clear(&cb);
}

typedef struct {
  TeacherStream *stream;
  guint8 *rgb;
  guint submitted, delivered, failed;
  GMutex *lock;
  GCond *cond;
} Feeder;

#define FEED_FRAMES 20

static void feed(Feeder *feeder);

/* Runs on the client thread: the budget is back before the callback, so it can submit again. */
static void on_fed(TeacherResult *result, const GError *error, gpointer data)
{
  Feeder *feeder = data;
  if (error == NULL)
    bands_check(result->labels, result->width, result->height);
  else
    g_test_message("%s", error->message);
  g_mutex_lock(feeder->lock);
  feeder->delivered += error == NULL;
  feeder->failed += error != NULL;
  g_cond_broadcast(feeder->cond);
  if (feeder->submitted < FEED_FRAMES)
    feed(feeder);
  g_mutex_unlock(feeder->lock);
}

/* Submits the next frame; feeder->lock held. */
static void feed(Feeder *feeder)
{
  TeacherFrame f = {.rgb = feeder->rgb, .width = FRAME_W, .height = FRAME_H,
                    .frame = feeder->submitted, .out_width = OUT_W, .out_height = OUT_H};
  g_autoptr(GError) error = NULL;
  g_assert_cmpint(teacher_stream_submit(feeder->stream, &f, on_fed, feeder, &error), ==,
                  TEACHER_SUBMIT_OK);
  feeder->submitted++;
}

/* Four streams, two requests in flight each, each callback submitting the next frame. */
static void test_streams_feeding_from_callbacks(void)
{
  fresh_server();
  kserve_double_set(server, &(DoubleBehaviour){.mode = DOUBLE_MASK, .datatype = "FP32",
                                               .channels = 3});
  TeacherClient *client = client_for(kserve_double_url(server), 10000, NULL);
  GMutex lock;
  GCond cond;
  g_mutex_init(&lock);
  g_cond_init(&cond);
  Feeder feeders[4];
  g_autofree guint8 *rgb = bands_new(FRAME_W, FRAME_H);
  for (int i = 0; i < 4; i++) {
    g_autofree char *name = g_strdup_printf("cam%d", i);
    feeders[i] = (Feeder){.stream = teacher_client_open_stream(client, name, 2), .rgb = rgb,
                          .lock = &lock, .cond = &cond};
  }
  /* Only the first two of each stream come from this thread; the rest from callbacks. */
  for (int i = 0; i < 4; i++)
    for (int k = 0; k < 2; k++) {
      g_mutex_lock(&lock);
      feed(&feeders[i]);
      g_mutex_unlock(&lock);
    }
  g_mutex_lock(&lock);
  for (int i = 0; i < 4; i++)
    while (feeders[i].delivered + feeders[i].failed < FEED_FRAMES)
      g_cond_wait(&cond, &lock);
  g_mutex_unlock(&lock);
  TeacherCounters counters;
  teacher_client_get_counters(client, &counters);
  g_assert_cmpuint(counters.queries, ==, 4 * FEED_FRAMES);
  g_assert_cmpuint(counters.replies, ==, 4 * FEED_FRAMES);
  for (int i = 0; i < 4; i++) {
    g_assert_cmpuint(feeders[i].failed, ==, 0);
    teacher_stream_get_counters(feeders[i].stream, &counters);
    g_assert_cmpuint(counters.replies, ==, FEED_FRAMES);
    g_assert_cmpuint(counters.errors[TEACHER_ERROR_BUSY], ==, 0);
    g_assert_cmpfloat(counters.mean_latency_ms, >, 0.0);
    teacher_stream_close(feeders[i].stream);
  }
  teacher_client_free(client);
  g_mutex_clear(&lock);
  g_cond_clear(&cond);
}

/* A refused first URL, then a not-ready one: the request fails over to the one that works. */
static void test_failover(void)
{
  fresh_server();
  kserve_double_set(server, &(DoubleBehaviour){.mode = DOUBLE_MASK});
  KserveDouble *not_ready = kserve_double_new(NULL, NULL);
  kserve_double_set(not_ready, &(DoubleBehaviour){.not_ready = TRUE});
  g_autofree char *refused = refused_url();
  g_autofree char *urls = g_strdup_printf("%s, %s/ ,%s", refused, kserve_double_url(not_ready),
                                          kserve_double_url(server));
  TeacherClient *client = client_for(urls, 10000, NULL);
  Outcome *outcome = round_trip(client);
  g_assert_no_error(outcome->error);
  bands_check(outcome->labels, OUT_W, OUT_H);
  outcome_free(outcome);
  DoubleRecord record;
  kserve_double_record(not_ready, &record);
  g_assert_cmpuint(record.probes, ==, 1);
  g_assert_cmpuint(record.infer_requests, ==, 0);
  kserve_double_record_clear(&record);
  kserve_double_record(server, &record);
  g_assert_cmpuint(record.infer_requests, ==, 1);
  kserve_double_record_clear(&record);
  /* The next request goes straight to the URL that worked. */
  outcome = round_trip(client);
  g_assert_no_error(outcome->error);
  outcome_free(outcome);
  kserve_double_record(not_ready, &record);
  g_assert_cmpuint(record.probes, ==, 1);
  kserve_double_record_clear(&record);
  teacher_client_free(client);
  kserve_double_free(not_ready);

  client = client_for(refused, 3000, NULL);
  outcome = round_trip(client);
  assert_error(outcome, TEACHER_ERROR_CONNECT, "cannot reach the teacher at http://127.0.0.1");
  outcome_free(outcome);
  teacher_client_free(client);
}

/* A slow teacher, still within the timeout: the reply is awaited, not retried. */
static void test_slow(void)
{
  fresh_server();
  kserve_double_set(server, &(DoubleBehaviour){.mode = DOUBLE_MASK, .latency_ms = 1500});
  TeacherClient *client = client_for(kserve_double_url(server), 5000, NULL);
  Outcome *outcome = round_trip(client);
  g_assert_no_error(outcome->error);
  bands_check(outcome->labels, OUT_W, OUT_H);
  g_assert_cmpfloat(outcome->latency_ms, >=, 1500.0);
  TeacherCounters counters;
  teacher_client_get_counters(client, &counters);
  g_assert_cmpuint(counters.retries, ==, 0);
  DoubleRecord record;
  kserve_double_record(server, &record);
  g_assert_cmpuint(record.infer_requests, ==, 1);
  kserve_double_record_clear(&record);
  outcome_free(outcome);
  teacher_client_free(client);
}

/* Expects a delivered class map from client. */
static void assert_delivers(TeacherClient *client)
{
  Outcome *outcome = round_trip(client);
  g_assert_no_error(outcome->error);
  bands_check(outcome->labels, OUT_W, OUT_H);
  outcome_free(outcome);
}

/* One client through every fault a server can show: each is reported with its kind, and the
 * next request after the server is sound again is answered. */
static void test_recovery(void)
{
  static const struct {
    DoubleBehaviour fault;
    int code;
    const char *fragment;
  } faults[] = {
      {{.mode = DOUBLE_GARBAGE}, TEACHER_ERROR_PROTOCOL, "malformed JSON"},
      {{.mode = DOUBLE_TRUNCATED}, TEACHER_ERROR_PROTOCOL, "truncated"},
      {{.mode = DOUBLE_MASK, .mask_width = 512, .mask_height = 512}, TEACHER_ERROR_PROTOCOL,
       "limit of 65536 bytes"},
      {{.mode = DOUBLE_MASK, .shape = "[1,10,10]"}, TEACHER_ERROR_PROTOCOL, "does not match"},
      {{.mode = DOUBLE_STATUS, .status = 503, .retry_after = "1", .fail_count = 100},
       TEACHER_ERROR_HTTP, "503"},
      {{.mode = DOUBLE_STATUS, .status = 500, .fail_count = 100}, TEACHER_ERROR_HTTP,
       "gave up after 5 attempts"},
      {{.mode = DOUBLE_HANG}, TEACHER_ERROR_TIMEOUT, "within 2000 ms"},
      {{.mode = DOUBLE_MASK, .token = "another-token"}, TEACHER_ERROR_HTTP, "401"},
  };
  fresh_server();
  kserve_double_set(server, &(DoubleBehaviour){.mode = DOUBLE_MASK});
  TeacherClientConfig cfg;
  teacher_client_config_init(&cfg);
  cfg.urls = kserve_double_url(server);
  cfg.timeout_ms = 2000;
  cfg.backoff_ms = 20;
  cfg.max_reply_bytes = 64 * 1024;
  TeacherClient *client = client_new_checked(&cfg);
  assert_delivers(client);
  for (guint i = 0; i < G_N_ELEMENTS(faults); i++) {
    kserve_double_set(server, &faults[i].fault);
    Outcome *outcome = round_trip(client);
    g_test_message("fault %u: %s", i, outcome->error ? outcome->error->message : "no error");
    assert_error(outcome, faults[i].code, faults[i].fragment);
    outcome_free(outcome);
    kserve_double_set(server, &(DoubleBehaviour){.mode = DOUBLE_MASK});
    assert_delivers(client);
  }
  TeacherCounters counters;
  teacher_client_get_counters(client, &counters);
  g_assert_cmpuint(counters.replies, ==, G_N_ELEMENTS(faults) + 1);
  g_assert_cmpuint(counters.errors[TEACHER_ERROR_PROTOCOL], ==, 4);
  g_assert_cmpuint(counters.errors[TEACHER_ERROR_HTTP], ==, 3);
  g_assert_cmpuint(counters.errors[TEACHER_ERROR_TIMEOUT], ==, 1);
  teacher_client_free(client);
}

/* The server goes away (requests fail to connect) and comes back on the same port while a
 * request waits: that request probes readiness and is answered, and so are the next ones. The
 * timeout outlasts the back-off the failures put on the URL (doubling up to 5 s). */
static void test_down_then_up(void)
{
  fresh_server();
  kserve_double_set(server, &(DoubleBehaviour){.mode = DOUBLE_MASK});
  guint port = kserve_double_port(server);
  TeacherClient *client = client_for(kserve_double_url(server), 10000, NULL);
  assert_delivers(client);
  kserve_double_free(server);
  server = NULL;
  Outcome *outcome = round_trip(client);
  assert_error(outcome, TEACHER_ERROR_CONNECT, "cannot reach the teacher at http://127.0.0.1");
  outcome_free(outcome);

  TeacherStream *stream = teacher_client_open_stream(client, "cam0", 0);
  Collector collector;
  collector_init(&collector);
  g_autofree guint8 *rgb = bands_new(FRAME_W, FRAME_H);
  g_assert_cmpint(submit(stream, &collector, 8, rgb, NULL), ==, TEACHER_SUBMIT_OK);
  g_usleep(300 * 1000);  /* the request finds the server down, then it comes back */
  server = kserve_double_new_on_port(NULL, NULL, port);
  kserve_double_set(server, &(DoubleBehaviour){.mode = DOUBLE_MASK});
  outcome = collector_wait(&collector);
  g_assert_no_error(outcome->error);
  bands_check(outcome->labels, OUT_W, OUT_H);
  g_test_message("the request sent while the server was down: answered after %.0f ms",
                 outcome->latency_ms);
  outcome_free(outcome);
  teacher_stream_close(stream);
  collector_clear(&collector);
  assert_delivers(client);

  DoubleRecord record;
  kserve_double_record(server, &record);
  g_assert_cmpuint(record.probes, ==, 1);  /* while reconnecting; not again once it answered */
  g_assert_cmpuint(record.infer_requests, ==, 2);
  kserve_double_record_clear(&record);
  TeacherCounters counters;
  teacher_client_get_counters(client, &counters);
  g_assert_cmpuint(counters.replies, ==, 3);
  g_assert_cmpuint(counters.errors[TEACHER_ERROR_CONNECT], ==, 1);
  teacher_client_free(client);
}

static void test_token(void)
{
  const char *token = "s3cret-t0ken";
  g_autofree char *path = g_build_filename(folder, "token", NULL);
  g_assert_true(g_file_set_contents(path, "s3cret-t0ken\n", -1, NULL));
  kserve_double_set(server, &(DoubleBehaviour){.mode = DOUBLE_MASK, .token = token});
  TeacherClientConfig cfg;
  teacher_client_config_init(&cfg);
  cfg.urls = kserve_double_url(server);
  for (int from_env = 0; from_env <= 1; from_env++) {
    cfg.token_file = from_env ? NULL : path;
    if (from_env)
      g_setenv("DISTILL_TEACHER_TOKEN", token, TRUE);
    TeacherClient *client = client_new_checked(&cfg);
    Outcome *outcome = round_trip(client);
    g_assert_no_error(outcome->error);
    outcome_free(outcome);
    DoubleRecord record;
    kserve_double_record(server, &record);
    g_assert_cmpstr(record.authorization, ==, "Bearer s3cret-t0ken");
    kserve_double_record_clear(&record);
    teacher_client_free(client);
    g_unsetenv("DISTILL_TEACHER_TOKEN");
  }
  /* A wrong token: a 401, whose message does not repeat the token sent. */
  g_assert_true(g_file_set_contents(path, "wrong-token-value", -1, NULL));
  cfg.token_file = path;
  TeacherClient *client = client_new_checked(&cfg);
  Outcome *outcome = round_trip(client);
  assert_error(outcome, TEACHER_ERROR_HTTP, "401");
  g_assert_null(strstr(outcome->error->message, "wrong-token-value"));
  outcome_free(outcome);
  teacher_client_free(client);
}

static void test_config_errors(void)
{
  static const struct {
    const char *urls, *token_file, *ca_file, *fragment;
  } cases[] = {
      {NULL, NULL, NULL, "no teacher URL"},
      {" , ", NULL, NULL, "no teacher URL"},
      {"ftp://127.0.0.1", NULL, NULL, "not an http:// or https://"},
      {"127.0.0.1:8000", NULL, NULL, "not an http:// or https://"},
      {"http://user:pw@127.0.0.1", NULL, NULL, "credentials"},
      {"http://127.0.0.1:8000/#frag", NULL, NULL, "valid infer URL"},
      {"http://127.0.0.1", "/nonexistent/token", NULL, "token file"},
      {"https://127.0.0.1", NULL, "/nonexistent/ca.pem", "CA file"},
  };
  for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
    TeacherClientConfig cfg;
    teacher_client_config_init(&cfg);
    cfg.urls = cases[i].urls;
    cfg.token_file = cases[i].token_file;
    cfg.ca_file = cases[i].ca_file;
    g_autoptr(GError) error = NULL;
    g_assert_null(teacher_client_new(&cfg, &error));
    g_assert_error(error, TEACHER_ERROR, TEACHER_ERROR_INVALID);
    g_assert_nonnull(strstr(error->message, cases[i].fragment));
  }
  g_autoptr(GError) error = NULL;
  TeacherClient *client = client_for("http://127.0.0.1:9", 1000, &error);
  TeacherStream *stream = teacher_client_open_stream(client, "cam0", 0);
  Collector collector;
  collector_init(&collector);
  TeacherFrame bad = {.rgb = NULL, .width = 4, .height = 4, .out_width = 2, .out_height = 2};
  g_assert_cmpint(teacher_stream_submit(stream, &bad, collector_on_result, &collector, &error),
                  ==, TEACHER_SUBMIT_INVALID);
  g_assert_error(error, TEACHER_ERROR, TEACHER_ERROR_INVALID);
  teacher_stream_close(stream);
  teacher_client_free(client);
  collector_clear(&collector);
}

static void run_openssl(const char *const *args)
{
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_ptr_array_add(argv, "openssl");
  for (int i = 0; args[i]; i++)
    g_ptr_array_add(argv, (gpointer)args[i]);
  g_ptr_array_add(argv, NULL);
  g_autofree char *err = NULL;
  int status;
  g_autoptr(GError) error = NULL;
  g_assert_true(g_spawn_sync(folder, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                             NULL, &err, &status, &error));
  g_assert_no_error(error);
  if (!g_spawn_check_wait_status(status, NULL))
    g_error("openssl %s failed: %s", args[0], err);
}

/* https:// with a CA made here: trusted with the CA file (by absolute or relative path), refused
 * without it. */
static void test_tls(void)
{
  if (!g_tls_backend_supports_tls(g_tls_backend_get_default())) {
    g_test_skip("no TLS backend: install glib-networking");
    return;
  }
  g_autofree char *ext = g_build_filename(folder, "ext.cnf", NULL);
  g_assert_true(g_file_set_contents(ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n", -1,
                                    NULL));
  const char *ec[] = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"};
  run_openssl((const char *[]){"req", "-x509", ec[0], ec[1], ec[2], ec[3], ec[4], "-keyout",
                               "ca.key", "-out", "ca.pem", "-days", "2", "-subj",
                               "/CN=teacher test CA", NULL});
  run_openssl((const char *[]){"req", ec[0], ec[1], ec[2], ec[3], ec[4], "-keyout", "server.key",
                               "-out", "server.csr", "-subj", "/CN=127.0.0.1", NULL});
  run_openssl((const char *[]){"x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey",
                               "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2",
                               "-extfile", "ext.cnf", NULL});
  g_autofree char *cert = g_build_filename(folder, "server.pem", NULL);
  g_autofree char *key = g_build_filename(folder, "server.key", NULL);
  g_autofree char *ca = g_build_filename(folder, "ca.pem", NULL);
  KserveDouble *tls_server = kserve_double_new(cert, key);
  kserve_double_set(tls_server, &(DoubleBehaviour){.mode = DOUBLE_MASK, .datatype = "INT64"});
  g_assert_true(g_str_has_prefix(kserve_double_url(tls_server), "https://"));

  TeacherClientConfig cfg;
  teacher_client_config_init(&cfg);
  cfg.urls = kserve_double_url(tls_server);
  cfg.ca_file = ca;
  TeacherClient *client = client_new_checked(&cfg);
  Outcome *outcome = round_trip(client);
  g_assert_no_error(outcome->error);
  bands_check(outcome->labels, OUT_W, OUT_H);
  outcome_free(outcome);
  teacher_client_free(client);

  /* A CA file named relative to the working folder, as on a command line. */
  g_autofree char *cwd = g_get_current_dir();
  g_assert_cmpint(g_chdir(folder), ==, 0);
  cfg.ca_file = "ca.pem";
  client = client_new_checked(&cfg);
  g_assert_cmpint(g_chdir(cwd), ==, 0);
  outcome = round_trip(client);
  g_assert_no_error(outcome->error);
  outcome_free(outcome);
  teacher_client_free(client);

  cfg.ca_file = NULL;
  cfg.timeout_ms = 3000;
  client = client_new_checked(&cfg);
  outcome = round_trip(client);
  assert_error(outcome, TEACHER_ERROR_CONNECT, "cannot reach the teacher at https://");
  outcome_free(outcome);
  teacher_client_free(client);
  DoubleRecord record;
  kserve_double_record(tls_server, &record);
  g_assert_cmpuint(record.infer_requests, ==, 2);
  kserve_double_record_clear(&record);
  kserve_double_free(tls_server);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_log_set_debug_enabled(FALSE);  /* GIO's socket debug lines would bury the test's messages */
  g_unsetenv("DISTILL_TEACHER_TOKEN");
  folder = g_dir_make_tmp("teacher-client-XXXXXX", NULL);
  server = kserve_double_new(NULL, NULL);
  g_test_add_func("/teacher-client/mask-forms", test_mask_forms);
  g_test_add_func("/teacher-client/shown-labels", test_shown_labels);
  g_test_add_func("/teacher-client/chunked-reply", test_chunked_reply);
  g_test_add_func("/teacher-client/encodings", test_encodings);
  g_test_add_func("/teacher-client/faults/garbage", test_garbage);
  g_test_add_func("/teacher-client/faults/truncated", test_truncated);
  g_test_add_func("/teacher-client/faults/oversize", test_oversize);
  g_test_add_func("/teacher-client/faults/shapes-datatypes", test_wrong_shapes_and_datatypes);
  g_test_add_func("/teacher-client/faults/http-error", test_http_error);
  g_test_add_func("/teacher-client/retry/retry-after", test_retry_after);
  g_test_add_func("/teacher-client/retry/retry-after-too-late", test_retry_after_too_late);
  g_test_add_func("/teacher-client/retry/server-errors", test_server_errors_retried);
  g_test_add_func("/teacher-client/hang-timeout-busy", test_hang_timeout_and_busy);
  g_test_add_func("/teacher-client/shutdown-while-hanging", test_shutdown_while_hanging);
  g_test_add_func("/teacher-client/streams", test_streams);
  g_test_add_func("/teacher-client/streams-feeding-from-callbacks",
                  test_streams_feeding_from_callbacks);
  g_test_add_func("/teacher-client/failover", test_failover);
  g_test_add_func("/teacher-client/faults/slow", test_slow);
  g_test_add_func("/teacher-client/faults/recovery", test_recovery);
  g_test_add_func("/teacher-client/faults/down-then-up", test_down_then_up);
  g_test_add_func("/teacher-client/token", test_token);
  g_test_add_func("/teacher-client/config-errors", test_config_errors);
  g_test_add_func("/teacher-client/tls", test_tls);
  int status = g_test_run();
  kserve_double_free(server);
  g_autofree char *rm = g_strdup_printf("rm -rf '%s'", folder);
  if (system(rm) != 0)
    g_warning("cannot remove %s", folder);
  g_free(folder);
  return status;
}
