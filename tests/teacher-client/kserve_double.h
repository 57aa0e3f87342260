/* kserve_double.h: a small KServe v2 server (libsoup's SoupServer, on loopback, on its own thread)
 * for the faults a real teacher does not produce on demand. It speaks the real protocol: it
 * decodes the request (raw UINT8 or JPEG BYTES, binary tensors) and answers with a mask computed
 * from the pixels it received, in the shape, datatype and form the test asks for.
 *
 * The mask: red pixels are class 1, blue pixels class 0, green pixels "uncertain" (label 255, or
 * a top probability of 0.55); so after the client's resizing and confidence threshold, a frame of
 * red, blue and green bands comes back as 1, 0 and 255 whatever the mask's form. */
#pragma once

#include <libsoup/soup.h>

typedef enum {
  DOUBLE_MASK,         /* a valid reply */
  DOUBLE_GARBAGE,      /* 200 with a body that is not KServe JSON */
  DOUBLE_TRUNCATED,    /* 200 whose body stops before its Content-Length */
  DOUBLE_STATUS,       /* `status` (with `retry_after` if set, and a JSON error) `fail_count`
                        * times, then valid replies */
  DOUBLE_HANG,         /* never answers */
  DOUBLE_CHUNKED,      /* a valid reply in chunked encoding (no Content-Length) */
} DoubleMode;

typedef struct {
  DoubleMode mode;
  const char *datatype;    /* of the mask: UINT8 (default), INT32, INT64, FP32, or anything */
  int channels;            /* FP32: C (1 = foreground probability) */
  gboolean json_data;      /* mask as JSON "data" instead of binary */
  int mask_width, mask_height;  /* 0 = the size of the image received */
  const char *shape;       /* overrides the reply's shape, e.g. "[1,2,4,4]" */
  guint status;
  const char *retry_after;
  guint fail_count;
  gboolean not_ready;      /* /v2/health/ready answers 503 */
  const char *token;       /* required as "Authorization: Bearer <token>" (401 otherwise) */
  guint latency_ms;        /* DOUBLE_MASK, DOUBLE_CHUNKED: the reply is sent this much later */
} DoubleBehaviour;

typedef struct {
  guint infer_requests, probes;
  gint64 infer_times[16];  /* monotonic µs of the first infer requests */
  char *id;                /* of the last infer request */
  char *content_type, *header_length, *authorization;
  char *input_datatype;    /* "UINT8" or "BYTES" */
  int image_width, image_height;  /* as received (decoded) */
  guint64 body_bytes;
} DoubleRecord;

typedef struct KserveDouble KserveDouble;

/* Listens on a free loopback port (https with cert_file/key_file when given). */
KserveDouble *kserve_double_new(const char *cert_file, const char *key_file);
/* Listens on that loopback port: a server that comes back where an earlier one was. */
KserveDouble *kserve_double_new_on_port(const char *cert_file, const char *key_file, guint port);
guint kserve_double_port(KserveDouble *server);
void kserve_double_free(KserveDouble *server);
/* "http://127.0.0.1:PORT" (or https); owned by the server. */
const char *kserve_double_url(KserveDouble *server);
void kserve_double_set(KserveDouble *server, const DoubleBehaviour *behaviour);
/* A copy of what was received; kserve_double_record_clear() it. */
void kserve_double_record(KserveDouble *server, DoubleRecord *record);
void kserve_double_record_clear(DoubleRecord *record);
/* Waits until the server has received n infer requests (fails the test after 60 s). */
void kserve_double_wait_infers(KserveDouble *server, guint n);
