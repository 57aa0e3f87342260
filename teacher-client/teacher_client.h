/* teacher_client.h: a KServe v2 / Open Inference Protocol client for the remote teacher
 * (DESIGN.md "Teacher protocol"), over libsoup 3.
 *
 * A TeacherClient owns one thread that runs its own GMainContext (pushed as thread-default) and
 * the one SoupSession created there. Callers submit frames from any thread; submission copies
 * what it needs and returns at once — it never waits for the network. Each accepted submission
 * ends in exactly one call of its callback, ON THE CLIENT THREAD: with the teacher's class map, or
 * with an error (TEACHER_ERROR, or G_IO_ERROR_CANCELLED when its stream is closed or the client
 * freed). Callbacks must be quick (copy the labels, signal another thread) and must not call
 * teacher_client_free() or teacher_stream_close() on the client they come from.
 *
 * Several streams (cameras) may share a client; each has its own in-flight budget. A request
 * probes `GET /v2/health/ready` before an URL's first use and while it reconnects, retries
 * failed attempts with exponential back-off and jitter (honouring `Retry-After` of 429 and 503
 * replies), fails over across the comma-separated base URLs, and is dropped once it is older than
 * the timeout rather than retried forever. */
#pragma once

#include <gio/gio.h>
#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

#define TEACHER_ERROR (teacher_error_quark())
GQuark teacher_error_quark(void);

/* Kinds of failure; counted separately in TeacherCounters.errors. */
typedef enum {
  TEACHER_ERROR_CONNECT,   /* no server reached: refused, unresolvable, TLS failure, not ready */
  TEACHER_ERROR_TIMEOUT,   /* no reply within the request's timeout */
  TEACHER_ERROR_HTTP,      /* an error status (4xx, 5xx) from the server */
  TEACHER_ERROR_PROTOCOL,  /* malformed, truncated or oversized reply; wrong shape or datatype */
  TEACHER_ERROR_BUSY,      /* submission refused: the stream's in-flight budget is used up */
  TEACHER_ERROR_INVALID,   /* bad configuration or argument (URL, token file, CA file, frame) */
  TEACHER_ERROR_N_KINDS
} TeacherErrorKind;

typedef enum {
  TEACHER_ENCODING_RAW,    /* UINT8 [1,H,W,3] RGB tensor */
  TEACHER_ENCODING_JPEG,   /* BYTES [1] holding a JPEG (libavcodec mjpeg) */
} TeacherEncoding;

/* The defaults of TeacherClientConfig; the element's property defaults are these. */
#define TEACHER_DEFAULT_MODEL "teacher"
#define TEACHER_DEFAULT_TIMEOUT_MS 10000
#define TEACHER_DEFAULT_ENCODING TEACHER_ENCODING_RAW
#define TEACHER_DEFAULT_INFLIGHT 1
#define TEACHER_DEFAULT_CONFIDENCE 0.6

typedef struct {
  const char *urls;        /* base URLs, comma-separated, tried in order (fail-over) */
  const char *model;       /* model name in /v2/models/{model}/infer; default "teacher" */
  const char *token_file;  /* file holding the bearer token; NULL: env DISTILL_TEACHER_TOKEN */
  const char *ca_file;     /* CA bundle (PEM) for https:// URLs; NULL: the system CAs */
  guint timeout_ms;        /* a request older than this is abandoned; default 10000 */
  TeacherEncoding encoding;  /* default TEACHER_ENCODING_RAW */
  guint max_side;          /* long side of the frame sent at most this; 0 = as is (default) */
  guint inflight;          /* requests outstanding per stream; default 1 */
  double confidence;       /* probabilities below this for the argmax class become 255; 0.6 */
  guint max_retries;       /* further attempts after a failed one (within the timeout); 4 */
  guint backoff_ms;        /* first retry delay, doubled at each retry, jittered; 100 */
  gsize max_reply_bytes;   /* larger replies are errors; default 256 MiB */
  int jpeg_qscale;         /* mjpeg quantiser scale, 2 (best) to 31; default 3 */
} TeacherClientConfig;

/* Fills cfg with the defaults above (urls NULL: set it before teacher_client_new()). */
void teacher_client_config_init(TeacherClientConfig *cfg);

typedef struct TeacherClient TeacherClient;
typedef struct TeacherStream TeacherStream;

/* Starts the client thread and its session. Fails (TEACHER_ERROR_INVALID) on an empty or non-HTTP
 * URL, an unreadable token or CA file, or out-of-range settings; the strings are copied. */
TeacherClient *teacher_client_new(const TeacherClientConfig *cfg, GError **error);
/* Cancels every request in flight (their callbacks run with G_IO_ERROR_CANCELLED before this
 * returns, even when the server hangs), closes the streams left open and joins the thread. */
void teacher_client_free(TeacherClient *client);

/* A stream (camera) named name (used in request ids "<name>:<frame>") with its own budget of
 * inflight requests (0 = the client's). Close it with teacher_stream_close(). */
TeacherStream *teacher_client_open_stream(TeacherClient *client, const char *name, guint inflight);
/* Cancels the stream's requests, waits until their callbacks have run and frees the stream. */
void teacher_stream_close(TeacherStream *stream);

typedef struct {
  const uint8_t *rgb;      /* packed RGB, 3 bytes a pixel; copied at submission */
  int width, height;
  int stride;              /* bytes from one row to the next; 0 = width * 3 */
  guint64 frame;           /* frame number, for the request id and the result */
  int out_width, out_height;  /* size of the class map wanted (the student's logits) */
  int shown_width, shown_height; /* a second class map, at the size the user sees the student's
                                  * (the frame's), to measure it by; 0 = none */
} TeacherFrame;

typedef struct {
  const char *stream;      /* the stream's name */
  guint64 frame;
  uint8_t *labels;         /* out_height x out_width class indices, 255 = ignore; freed after the
                            * callback returns unless it takes them (g_steal_pointer, g_free) */
  int width, height;       /* out_width, out_height of the submission */
  uint8_t *shown_labels;   /* shown_height x shown_width, when asked for (else NULL); freed as
                            * labels */
  int shown_width, shown_height;
  int num_classes;         /* classes the teacher knows: C of an FP32 [1,C,h,w] mask, 2 for a
                            * foreground probability, 1 + the largest index of a label mask */
  int mask_width, mask_height;  /* size of the teacher's mask before resizing */
  double latency_ms;       /* submission to parsed reply, retries included */
  guint64 bytes_sent, bytes_received;  /* on the wire (headers and bodies) for this request */
} TeacherResult;

/* Called once per accepted submission, on the client thread: result on success, else error. */
typedef void (*TeacherResultFunc)(TeacherResult *result, const GError *error, gpointer user_data);

typedef enum {
  TEACHER_SUBMIT_OK,       /* accepted: callback will be called */
  TEACHER_SUBMIT_BUSY,     /* refused: the stream already has its in-flight budget outstanding */
  TEACHER_SUBMIT_INVALID,  /* refused: bad frame (sizes, NULL pixels) */
  TEACHER_SUBMIT_CLOSED,   /* refused: the stream or client is shutting down */
} TeacherSubmitStatus;

/* Queues frame for the teacher without waiting. Anything but TEACHER_SUBMIT_OK means the callback
 * will not be called; error (may be NULL) then says why. */
TeacherSubmitStatus teacher_stream_submit(TeacherStream *stream, const TeacherFrame *frame,
                                          TeacherResultFunc callback, gpointer user_data,
                                          GError **error);
/* Requests of this stream submitted and not yet completed. */
guint teacher_stream_inflight(TeacherStream *stream);

typedef struct {
  guint64 queries;         /* submissions accepted */
  guint64 replies;         /* class maps delivered */
  guint64 errors[TEACHER_ERROR_N_KINDS];  /* failed requests by kind; BUSY = refused submissions */
  guint64 cancelled;
  guint64 retries;         /* attempts after the first one */
  guint64 health_probes;
  double last_latency_ms, mean_latency_ms;  /* over delivered replies */
  guint64 bytes_sent, bytes_received;  /* on the wire, all attempts and probes */
} TeacherCounters;

/* A consistent snapshot of the counters of the whole client, or of one stream; any thread. */
void teacher_client_get_counters(TeacherClient *client, TeacherCounters *counters);
void teacher_stream_get_counters(TeacherStream *stream, TeacherCounters *counters);

/* ---- The reply, as pure functions (no I/O; a fuzz target calls these) ---- */

typedef enum {
  TEACHER_DATATYPE_UINT8,
  TEACHER_DATATYPE_INT32,
  TEACHER_DATATYPE_INT64,
  TEACHER_DATATYPE_FP32,
} TeacherDatatype;

typedef struct {
  TeacherDatatype datatype;
  int channels;            /* 0 for class indices [1,h,w]; C (1 = foreground) for FP32 [1,C,h,w] */
  int height, width;
  GBytes *data;            /* little-endian elements, row-major; teacher_mask_clear() frees it */
} TeacherMask;

/* Parses an infer reply body: the JSON header (the first inference_header_length bytes — the
 * header's value, NULL when absent: the whole body is JSON) then the binary tensors. Finds output
 * "mask" and checks its datatype, shape and size against DESIGN.md; the reply is expected to
 * answer request id (NULL: not checked). Errors are TEACHER_ERROR_PROTOCOL. */
gboolean teacher_reply_parse(GBytes *body, const char *inference_header_length,
                             const char *id, gsize max_elements, TeacherMask *mask,
                             GError **error);
void teacher_mask_clear(TeacherMask *mask);

/* Resizes mask to out_width x out_height and turns it into class indices (nearest for labels,
 * bilinear for probabilities, then argmax; probabilities below confidence for the argmax class
 * and labels 255 or negative become 255). Returns the number of classes (TeacherResult) or -1
 * with TEACHER_ERROR_PROTOCOL (a label above 254 or a non-finite probability). */
int teacher_mask_to_labels(const TeacherMask *mask, double confidence, int out_width,
                           int out_height, uint8_t *labels, GError **error);

/* The message of a JSON error reply ({"error": "…"}), shortened and without control characters,
 * or NULL when body is not one. */
char *teacher_error_reply_message(GBytes *body);

G_END_DECLS
