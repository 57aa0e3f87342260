/* teacher_internal.h: what the parts of teacher-client/ share and do not export. */
#pragma once

#include "teacher_client.h"

typedef struct TeacherEncoder TeacherEncoder;

/* Scaler and JPEG encoder state, reused while the frame size stays the same; one thread only. */
TeacherEncoder *teacher_encoder_new(TeacherEncoding encoding, guint max_side, int jpeg_qscale);
void teacher_encoder_free(TeacherEncoder *encoder);

/* The size of the frame sent for a width x height frame under max_side (0 = as is). */
void teacher_sent_size(int width, int height, guint max_side, int *sent_width, int *sent_height);

/* Bytes readable past the end of a frame given to teacher_encoder_request(): swscale's SIMD
 * input readers load 16 bytes at a time and run past the last pixel of a row. */
#define TEACHER_FRAME_PADDING 64

/* The body of an infer request for the packed RGB frame (width * 3 bytes a row, followed by
 * TEACHER_FRAME_PADDING readable bytes): the JSON header (its length in *json_length) followed by
 * the binary input tensor. */
GBytes *teacher_encoder_request(TeacherEncoder *encoder, const char *id, const uint8_t *rgb,
                                int width, int height, gsize *json_length, GError **error);

/* ---- client.c and request.c ---- */

#include <libsoup/soup.h>

typedef struct {
  char *base;              /* base URL without its trailing slash (never logged with a token) */
  char *infer_uri, *ready_uri;
  gboolean ready;          /* the last probe or request succeeded */
  gboolean probing;
  GCancellable *probe_cancellable;
  GQueue probe_waiters;    /* requests waiting for this endpoint's probe */
  gint64 not_before;       /* monotonic µs: back-off after failures, or Retry-After */
  guint failures;          /* consecutive, for the back-off */
  GError *last_error;      /* of the last failure */
} Endpoint;

struct TeacherStream {
  TeacherClient *client;
  char *name;
  guint inflight_max;
  /* Under client->lock: */
  guint inflight;          /* accepted, callback not called yet */
  guint active;            /* accepted, callback not returned yet */
  gboolean closing;
  TeacherCounters counters;
  double latency_sum;
  uint8_t *spare_frame;    /* a frame copy's buffer, kept for the next submission: a fresh one
                            * of a megabyte or more costs page faults on the caller's thread */
  gsize spare_size;
};

struct TeacherClient {
  TeacherClientConfig cfg; /* strings owned: urls, model (token_file, ca_file not kept) */
  char *authorization;     /* "Bearer …" or NULL; never printed */
  GTlsDatabase *tls_database;
  Endpoint *endpoints;
  guint n_endpoints, preferred;

  GThread *thread;
  GMainContext *context;
  GMainLoop *loop;
  /* Client thread only: */
  SoupSession *session;
  TeacherEncoder *encoder;
  GRand *rand;
  guint io_pending;        /* libsoup operations whose callback has not run */

  GMutex lock;
  GCond cond;
  gboolean started, closing;
  GPtrArray *streams;
  GPtrArray *requests;     /* accepted and not finished */
  TeacherCounters counters;
  double latency_sum;
};

typedef struct Request Request;

/* request.c: a submission's life on the client thread. */
Request *request_new(TeacherStream *stream, const TeacherFrame *frame, TeacherResultFunc callback,
                     gpointer user_data);
void request_unref(Request *req);
TeacherStream *request_stream(Request *req);
/* Starts the request (ref taken by the caller is given away); client thread. */
gboolean request_start(gpointer req);
/* Ends the request now with G_IO_ERROR_CANCELLED; client thread. */
void request_cancel(Request *req);
void endpoint_clear(Endpoint *ep);
/* Cancels the endpoint's probe, if any (shutdown); client thread. */
void endpoint_cancel_probe(Endpoint *ep);

/* client.c: bookkeeping under client->lock. */
void client_count_bytes(TeacherClient *client, TeacherStream *stream, guint64 sent,
                        guint64 received, gboolean probe, gboolean retry);
void client_request_done(TeacherClient *client, Request *req, const GError *error,
                         double latency_ms);
void client_request_returned(TeacherClient *client, TeacherStream *stream);
