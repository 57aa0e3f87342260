/* kserve_double.c: the KServe v2 test double (kserve_double.h). */
#include <json-glib/json-glib.h>
#include <libavcodec/avcodec.h>
#include <libswscale/swscale.h>
#include <string.h>

#include "kserve_double.h"

struct KserveDouble {
  GThread *thread;
  GMainContext *context;
  GMainLoop *loop;
  SoupServer *server;
  char *url;
  guint port;
  char *cert_file, *key_file;
  GMutex lock;
  GCond cond;
  gboolean started;
  DoubleBehaviour behaviour;
  DoubleRecord record;
  guint failures_sent;
};

typedef struct {
  int width, height;
  guint8 *rgb;
} Image;

/* ---- request decoding ---- */

static gboolean decode_jpeg(const guint8 *data, gsize size, Image *image)
{
  const AVCodec *codec = avcodec_find_decoder(AV_CODEC_ID_MJPEG);
  AVCodecContext *ctx = avcodec_alloc_context3(codec);
  AVPacket *packet = av_packet_alloc();
  AVFrame *frame = av_frame_alloc();
  gboolean ok = FALSE;
  if (avcodec_open2(ctx, codec, NULL) < 0)
    goto out;
  packet->data = (guint8 *)data;
  packet->size = (int)size;
  if (avcodec_send_packet(ctx, packet) < 0 || avcodec_receive_frame(ctx, frame) < 0)
    goto out;
  image->width = frame->width;
  image->height = frame->height;
  image->rgb = g_malloc((gsize)frame->width * frame->height * 3);
  /* mjpeg decodes to the deprecated full-range YUVJ420P: name it YUV420P, full range. */
  enum AVPixelFormat format = frame->format == AV_PIX_FMT_YUVJ420P ? AV_PIX_FMT_YUV420P
                                                                    : (enum AVPixelFormat)frame->format;
  struct SwsContext *sws = sws_getContext(frame->width, frame->height, format, frame->width,
                                          frame->height, AV_PIX_FMT_RGB24, SWS_POINT, NULL, NULL,
                                          NULL);
  const int *coefficients = sws_getCoefficients(SWS_CS_ITU601);
  sws_setColorspaceDetails(sws, coefficients, 1, coefficients, 1, 0, 1 << 16, 1 << 16);
  guint8 *dst[4] = {image->rgb};
  int dst_stride[4] = {frame->width * 3};
  sws_scale(sws, (const guint8 *const *)frame->data, frame->linesize, 0, frame->height, dst,
            dst_stride);
  sws_freeContext(sws);
  ok = TRUE;
out:
  av_frame_free(&frame);
  av_packet_free(&packet);
  avcodec_free_context(&ctx);
  return ok;
}

/* The image of an infer request, or an error message for a 400. */
static char *decode_request(SoupServerMessage *msg, KserveDouble *server, char **id, Image *image)
{
  SoupMessageBody *body = soup_server_message_get_request_body(msg);
  SoupMessageHeaders *headers = soup_server_message_get_request_headers(msg);
  const char *length_header = soup_message_headers_get_one(headers,
                                                           "Inference-Header-Content-Length");
  guint64 json_length = length_header ? g_ascii_strtoull(length_header, NULL, 10) : 0;
  if (json_length == 0 || json_length > (guint64)body->length)
    return g_strdup("missing or bad Inference-Header-Content-Length");
  g_autoptr(JsonParser) parser = json_parser_new();
  if (!json_parser_load_from_data(parser, body->data, (gssize)json_length, NULL))
    return g_strdup("request header is not JSON");
  JsonObject *header = json_node_get_object(json_parser_get_root(parser));
  *id = g_strdup(json_object_get_string_member_with_default(header, "id", ""));
  JsonObject *input = json_array_get_object_element(
      json_object_get_array_member(header, "inputs"), 0);
  const char *datatype = json_object_get_string_member(input, "datatype");
  JsonArray *shape = json_object_get_array_member(input, "shape");
  gint64 size = json_object_get_int_member(json_object_get_object_member(input, "parameters"),
                                           "binary_data_size");
  const guint8 *data = (const guint8 *)body->data + json_length;
  if ((guint64)size != body->length - json_length)
    return g_strdup("binary_data_size does not match the body");
  g_mutex_lock(&server->lock);
  g_free(server->record.input_datatype);
  server->record.input_datatype = g_strdup(datatype);
  g_mutex_unlock(&server->lock);
  if (strcmp(datatype, "UINT8") == 0) {
    image->height = (int)json_array_get_int_element(shape, 1);
    image->width = (int)json_array_get_int_element(shape, 2);
    if ((gint64)image->width * image->height * 3 != size)
      return g_strdup("UINT8 image shape does not match its size");
    image->rgb = g_memdup2(data, (gsize)size);
    return NULL;
  }
  guint32 jpeg_size;
  memcpy(&jpeg_size, data, 4);
  jpeg_size = GUINT32_FROM_LE(jpeg_size);
  if (strcmp(datatype, "BYTES") != 0 || (gint64)jpeg_size + 4 != size ||
      !decode_jpeg(data + 4, jpeg_size, image))
    return g_strdup("BYTES input is not one length-prefixed JPEG");
  return NULL;
}

/* ---- the mask ---- */

typedef enum { PIXEL_BLUE, PIXEL_RED, PIXEL_GREEN } PixelKind;

static PixelKind pixel_kind(const guint8 *p)
{
  if (p[0] >= p[1] && p[0] >= p[2])
    return PIXEL_RED;
  return p[2] >= p[1] ? PIXEL_BLUE : PIXEL_GREEN;
}

static double probability(PixelKind kind, int channel, int channels)
{
  if (channels == 1)
    return kind == PIXEL_RED ? 0.9 : kind == PIXEL_BLUE ? 0.1 : 0.55;
  int top = kind == PIXEL_BLUE ? 0 : 1;
  double p_top = kind == PIXEL_GREEN ? 0.55 : 0.9;
  return channel == top ? p_top : (1.0 - p_top) / (channels - 1);
}

static gint64 label(PixelKind kind, const char *datatype)
{
  if (kind == PIXEL_GREEN)
    return strcmp(datatype, "INT32") == 0 ? -1 : 255;  /* both mean "ignore" */
  return kind == PIXEL_RED;
}

/* Header and binary tensor data of the mask for image. */
static void build_mask(const DoubleBehaviour *b, const Image *image, const char *id,
                       GString *header, GByteArray *data)
{
  const char *datatype = b->datatype ? b->datatype : "UINT8";
  gboolean fp32 = strcmp(datatype, "FP32") == 0;
  int channels = fp32 ? MAX(b->channels, 1) : 1;
  int w = b->mask_width ? b->mask_width : image->width;
  int h = b->mask_height ? b->mask_height : image->height;
  int size = strcmp(datatype, "INT64") == 0 ? 8 : strcmp(datatype, "UINT8") == 0 ? 1 : 4;
  g_autoptr(GString) json_values = g_string_new(NULL);
  for (int c = 0; c < channels; c++)
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++) {
        int sx = (int)(((gint64)x * 2 + 1) * image->width / (2 * w));
        int sy = (int)(((gint64)y * 2 + 1) * image->height / (2 * h));
        PixelKind kind = pixel_kind(image->rgb + ((gsize)sy * image->width + sx) * 3);
        guint8 bytes[8] = {0};
        if (fp32) {
          float v = (float)probability(kind, c, channels);
          memcpy(bytes, &v, 4);
          if (b->json_data)  /* printing every value is slow, and slower still under valgrind */
            g_string_append_printf(json_values, "%s%.3f", json_values->len ? "," : "", v);
        } else {
          gint64 v = label(kind, datatype);
          memcpy(bytes, &v, (gsize)size);  /* little-endian host */
          if (b->json_data)
            g_string_append_printf(json_values, "%s%" G_GINT64_FORMAT,
                                   json_values->len ? "," : "", v);
        }
        g_byte_array_append(data, bytes, (guint)size);
      }
  g_autofree char *shape = fp32 ? g_strdup_printf("[1,%d,%d,%d]", channels, h, w)
                                : g_strdup_printf("[1,%d,%d]", h, w);
  g_string_append_printf(header,
                         "{\"model_name\":\"teacher\",\"id\":\"%s\",\"outputs\":[{\"name\":\"mask\","
                         "\"datatype\":\"%s\",\"shape\":%s,",
                         id, datatype, b->shape ? b->shape : shape);
  if (b->json_data) {
    g_string_append_printf(header, "\"data\":[%s]}]}", json_values->str);
    g_byte_array_set_size(data, 0);
  } else {
    g_string_append_printf(header, "\"parameters\":{\"binary_data_size\":%u}}]}", data->len);
  }
}

/* ---- replies ---- */

static void reply_json_error(SoupServerMessage *msg, guint status, const char *message)
{
  g_autofree char *body = g_strdup_printf("{\"error\":\"%s\"}", message);
  soup_server_message_set_status(msg, status, NULL);
  soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_COPY, body, strlen(body));
}

/* Writes a raw HTTP reply that announces more body than it sends, then closes. */
static void reply_truncated(SoupServerMessage *msg, const GString *header, const GByteArray *data)
{
  GIOStream *io = soup_server_message_steal_connection(msg);
  g_autofree char *head = g_strdup_printf(
      "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
      "Inference-Header-Content-Length: %zu\r\nContent-Length: %zu\r\n\r\n",
      header->len, header->len + data->len);
  GOutputStream *out = g_io_stream_get_output_stream(io);
  g_output_stream_write_all(out, head, strlen(head), NULL, NULL, NULL);
  g_output_stream_write_all(out, header->str, header->len, NULL, NULL, NULL);
  g_output_stream_write_all(out, data->data, data->len / 2, NULL, NULL, NULL);
  g_io_stream_close(io, NULL, NULL);
  g_object_unref(io);
}

static void reply_mask(SoupServerMessage *msg, const DoubleBehaviour *b, const Image *image,
                       const char *id)
{
  g_autoptr(GString) header = g_string_new(NULL);
  g_autoptr(GByteArray) data = g_byte_array_new();
  build_mask(b, image, id, header, data);
  if (b->mode == DOUBLE_TRUNCATED) {
    reply_truncated(msg, header, data);
    return;
  }
  SoupMessageHeaders *headers = soup_server_message_get_response_headers(msg);
  char length[32];
  g_snprintf(length, sizeof length, "%zu", header->len);
  if (!b->json_data)
    soup_message_headers_replace(headers, "Inference-Header-Content-Length", length);
  soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
  if (b->mode == DOUBLE_CHUNKED) {
    soup_message_headers_set_encoding(headers, SOUP_ENCODING_CHUNKED);
    SoupMessageBody *body = soup_server_message_get_response_body(msg);
    soup_message_body_append(body, SOUP_MEMORY_COPY, header->str, header->len);
    soup_message_body_append(body, SOUP_MEMORY_COPY, data->data, data->len);
    soup_message_body_complete(body);
    return;
  }
  g_byte_array_prepend(data, (const guint8 *)header->str, (guint)header->len);
  soup_server_message_set_response(msg, "application/octet-stream", SOUP_MEMORY_COPY,
                                   (const char *)data->data, data->len);
}

static gboolean on_delay_done(gpointer data)
{
  soup_server_message_unpause(data);
  return G_SOURCE_REMOVE;
}

/* Holds the reply already set on msg back for latency_ms: a slow teacher. */
static void delay_reply(KserveDouble *server, SoupServerMessage *msg, guint latency_ms)
{
  soup_server_message_pause(msg);
  GSource *source = g_timeout_source_new(latency_ms);
  g_source_set_callback(source, on_delay_done, g_object_ref(msg), g_object_unref);
  g_source_attach(source, server->context);
  g_source_unref(source);
}

static void on_infer(KserveDouble *server, SoupServerMessage *msg, const DoubleBehaviour *b)
{
  if (b->mode == DOUBLE_HANG) {
    soup_server_message_pause(msg);  /* the connection closes with the server */
    return;
  }
  if (b->mode == DOUBLE_GARBAGE) {
    const char *garbage = "<html>502 proxy says hello</html>\x01\x02";
    soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
    soup_server_message_set_response(msg, "text/html", SOUP_MEMORY_STATIC, garbage,
                                     strlen(garbage));
    return;
  }
  if (b->mode == DOUBLE_STATUS) {
    g_mutex_lock(&server->lock);
    gboolean failing = server->failures_sent < b->fail_count;
    server->failures_sent += failing;
    g_mutex_unlock(&server->lock);
    if (failing) {
      if (b->retry_after)
        soup_message_headers_replace(soup_server_message_get_response_headers(msg),
                                     "Retry-After", b->retry_after);
      reply_json_error(msg, b->status, "model overloaded\nretry later");
      return;
    }
  }
  Image image = {0};
  g_autofree char *id = NULL;
  g_autofree char *problem = decode_request(msg, server, &id, &image);
  if (problem) {
    reply_json_error(msg, SOUP_STATUS_BAD_REQUEST, problem);
    return;
  }
  g_mutex_lock(&server->lock);
  server->record.image_width = image.width;
  server->record.image_height = image.height;
  g_free(server->record.id);
  server->record.id = g_strdup(id);
  g_mutex_unlock(&server->lock);
  reply_mask(msg, b, &image, id);
  g_free(image.rgb);
  if (b->latency_ms && b->mode != DOUBLE_TRUNCATED)
    delay_reply(server, msg, b->latency_ms);
}

static void record_request(KserveDouble *server, SoupServerMessage *msg, gboolean infer)
{
  SoupMessageHeaders *headers = soup_server_message_get_request_headers(msg);
  DoubleRecord *r = &server->record;
  g_free(r->authorization);
  r->authorization = g_strdup(soup_message_headers_get_one(headers, "Authorization"));
  if (!infer) {
    r->probes++;
    return;
  }
  if (r->infer_requests < G_N_ELEMENTS(r->infer_times))
    r->infer_times[r->infer_requests] = g_get_monotonic_time();
  r->infer_requests++;
  g_free(r->content_type);
  r->content_type = g_strdup(soup_message_headers_get_one(headers, "Content-Type"));
  g_free(r->header_length);
  r->header_length = g_strdup(soup_message_headers_get_one(headers,
                                                           "Inference-Header-Content-Length"));
  r->body_bytes += (guint64)soup_server_message_get_request_body(msg)->length;
  g_cond_broadcast(&server->cond);
}

static void on_request(SoupServer *soup_server, SoupServerMessage *msg, const char *path,
                       GHashTable *query, gpointer data)
{
  KserveDouble *server = data;
  gboolean infer = g_str_has_suffix(path, "/infer");
  g_mutex_lock(&server->lock);
  DoubleBehaviour b = server->behaviour;
  record_request(server, msg, infer);
  g_mutex_unlock(&server->lock);

  const char *auth = soup_message_headers_get_one(soup_server_message_get_request_headers(msg),
                                                  "Authorization");
  g_autofree char *expected = b.token ? g_strconcat("Bearer ", b.token, NULL) : NULL;
  if (expected && g_strcmp0(auth, expected) != 0) {
    reply_json_error(msg, SOUP_STATUS_UNAUTHORIZED, "missing or wrong bearer token");
  } else if (strcmp(path, "/v2/health/ready") == 0) {
    soup_server_message_set_status(msg, b.not_ready ? 503 : SOUP_STATUS_OK, NULL);
  } else if (strcmp(path, "/v2/models/teacher/infer") == 0 &&
             soup_server_message_get_method(msg) == SOUP_METHOD_POST) {
    on_infer(server, msg, &b);
  } else {
    reply_json_error(msg, SOUP_STATUS_NOT_FOUND, "no such model or route");
  }
}

static gpointer server_thread(gpointer data)
{
  KserveDouble *server = data;
  g_main_context_push_thread_default(server->context);
  SoupServerListenOptions options = SOUP_SERVER_LISTEN_IPV4_ONLY;
  if (server->cert_file) {
    g_autoptr(GError) error = NULL;
    g_autoptr(GTlsCertificate) cert =
        g_tls_certificate_new_from_files(server->cert_file, server->key_file, &error);
    g_assert_no_error(error);
    server->server = soup_server_new("tls-certificate", cert, NULL);
    options |= SOUP_SERVER_LISTEN_HTTPS;
  } else {
    server->server = soup_server_new(NULL, NULL);
  }
  soup_server_add_handler(server->server, NULL, on_request, server, NULL);
  g_autoptr(GError) error = NULL;
  g_assert_true(soup_server_listen_local(server->server, server->port, options, &error));
  GSList *uris = soup_server_get_uris(server->server);
  GUri *uri = uris->data;
  server->port = (guint)g_uri_get_port(uri);
  server->url = g_strdup_printf("%s://127.0.0.1:%u", g_uri_get_scheme(uri), server->port);
  g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
  g_mutex_lock(&server->lock);
  server->started = TRUE;
  g_cond_broadcast(&server->cond);
  g_mutex_unlock(&server->lock);
  g_main_loop_run(server->loop);
  soup_server_disconnect(server->server);
  g_clear_object(&server->server);
  while (g_main_context_iteration(server->context, FALSE))
    ;
  g_main_context_pop_thread_default(server->context);
  return NULL;
}

KserveDouble *kserve_double_new(const char *cert_file, const char *key_file)
{
  return kserve_double_new_on_port(cert_file, key_file, 0);
}

KserveDouble *kserve_double_new_on_port(const char *cert_file, const char *key_file, guint port)
{
  KserveDouble *server = g_new0(KserveDouble, 1);
  server->port = port;
  g_mutex_init(&server->lock);
  g_cond_init(&server->cond);
  server->cert_file = g_strdup(cert_file);
  server->key_file = g_strdup(key_file);
  server->context = g_main_context_new();
  server->loop = g_main_loop_new(server->context, FALSE);
  server->thread = g_thread_new("kserve-double", server_thread, server);
  g_mutex_lock(&server->lock);
  while (!server->started)
    g_cond_wait(&server->cond, &server->lock);
  g_mutex_unlock(&server->lock);
  return server;
}

static gboolean on_quit(gpointer data)
{
  g_main_loop_quit(data);
  return G_SOURCE_REMOVE;
}

void kserve_double_free(KserveDouble *server)
{
  GSource *source = g_idle_source_new();
  g_source_set_callback(source, on_quit, server->loop, NULL);
  g_source_attach(source, server->context);
  g_source_unref(source);
  g_thread_join(server->thread);
  g_main_loop_unref(server->loop);
  g_main_context_unref(server->context);
  kserve_double_record_clear(&server->record);
  g_free(server->url);
  g_free(server->cert_file);
  g_free(server->key_file);
  g_mutex_clear(&server->lock);
  g_cond_clear(&server->cond);
  g_free(server);
}

const char *kserve_double_url(KserveDouble *server)
{
  return server->url;
}

guint kserve_double_port(KserveDouble *server)
{
  return server->port;
}

void kserve_double_set(KserveDouble *server, const DoubleBehaviour *behaviour)
{
  g_mutex_lock(&server->lock);
  server->behaviour = *behaviour;
  server->failures_sent = 0;
  g_mutex_unlock(&server->lock);
}

void kserve_double_record(KserveDouble *server, DoubleRecord *record)
{
  g_mutex_lock(&server->lock);
  *record = server->record;
  record->id = g_strdup(server->record.id);
  record->content_type = g_strdup(server->record.content_type);
  record->header_length = g_strdup(server->record.header_length);
  record->authorization = g_strdup(server->record.authorization);
  record->input_datatype = g_strdup(server->record.input_datatype);
  g_mutex_unlock(&server->lock);
}

void kserve_double_record_clear(DoubleRecord *record)
{
  g_free(record->id);
  g_free(record->content_type);
  g_free(record->header_length);
  g_free(record->authorization);
  g_free(record->input_datatype);
  memset(record, 0, sizeof *record);
}

void kserve_double_wait_infers(KserveDouble *server, guint n)
{
  gint64 end = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
  g_mutex_lock(&server->lock);
  while (server->record.infer_requests < n)
    if (!g_cond_wait_until(&server->cond, &server->lock, end))
      g_error("the test server got %u infer requests in 60 s, expected %u",
              server->record.infer_requests, n);
  g_mutex_unlock(&server->lock);
}
