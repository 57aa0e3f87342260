/* encode.c: the infer request body: the frame downscaled (libswscale) and sent either as a raw
 * UINT8 [1,H,W,3] tensor or as a JPEG (libavcodec's mjpeg) in a BYTES [1] tensor, both in
 * Triton's binary tensor form. */
#include <json-glib/json-glib.h>
#include <libavcodec/avcodec.h>
#include <libavutil/frame.h>
#include <libswscale/swscale.h>
#include <string.h>

#include "teacher_internal.h"

struct TeacherEncoder {
  TeacherEncoding encoding;
  guint max_side;
  int jpeg_qscale;
  struct SwsContext *scaler;
  AVCodecContext *jpeg;
  AVFrame *yuv;
  AVPacket *packet;
};

TeacherEncoder *teacher_encoder_new(TeacherEncoding encoding, guint max_side, int jpeg_qscale)
{
  TeacherEncoder *encoder = g_new0(TeacherEncoder, 1);
  encoder->encoding = encoding;
  encoder->max_side = max_side;
  encoder->jpeg_qscale = jpeg_qscale;
  return encoder;
}

void teacher_encoder_free(TeacherEncoder *encoder)
{
  if (encoder == NULL)
    return;
  sws_freeContext(encoder->scaler);
  avcodec_free_context(&encoder->jpeg);
  av_frame_free(&encoder->yuv);
  av_packet_free(&encoder->packet);
  g_free(encoder);
}

void teacher_sent_size(int width, int height, guint max_side, int *sent_width, int *sent_height)
{
  int long_side = MAX(width, height);
  if (max_side == 0 || (guint)long_side <= max_side) {
    *sent_width = width;
    *sent_height = height;
    return;
  }
  *sent_width = MAX(1, (int)(((gint64)width * max_side * 2 + long_side) / (2 * long_side)));
  *sent_height = MAX(1, (int)(((gint64)height * max_side * 2 + long_side) / (2 * long_side)));
}

/* JSON header of a request with one binary input "image" of data_size bytes. */
static char *request_header(const char *id, const char *datatype, const gint64 *shape, int rank,
                            gsize data_size)
{
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "id");
  json_builder_add_string_value(b, id);
  json_builder_set_member_name(b, "inputs");
  json_builder_begin_array(b);
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "name");
  json_builder_add_string_value(b, "image");
  json_builder_set_member_name(b, "datatype");
  json_builder_add_string_value(b, datatype);
  json_builder_set_member_name(b, "shape");
  json_builder_begin_array(b);
  for (int i = 0; i < rank; i++)
    json_builder_add_int_value(b, shape[i]);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "parameters");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "binary_data_size");
  json_builder_add_int_value(b, (gint64)data_size);
  json_builder_end_object(b);
  json_builder_end_object(b);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "outputs");
  json_builder_begin_array(b);
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "name");
  json_builder_add_string_value(b, "mask");
  json_builder_set_member_name(b, "parameters");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "binary_data");
  json_builder_add_boolean_value(b, TRUE);
  json_builder_end_object(b);
  json_builder_end_object(b);
  json_builder_end_array(b);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return json_to_string(root, FALSE);
}

static gboolean encoder_error(GError **error, const char *what, int code)
{
  char text[AV_ERROR_MAX_STRING_SIZE];
  av_strerror(code, text, sizeof text);
  g_set_error(error, TEACHER_ERROR, TEACHER_ERROR_INVALID, "JPEG encoding: %s failed (%s)", what,
              text);
  return FALSE;
}

/* Opens (or keeps) an mjpeg encoder for width x height full-range 4:2:0. */
static gboolean jpeg_open(TeacherEncoder *encoder, int width, int height, GError **error)
{
  if (encoder->jpeg && encoder->jpeg->width == width && encoder->jpeg->height == height)
    return TRUE;
  avcodec_free_context(&encoder->jpeg);
  av_frame_free(&encoder->yuv);
  const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
  if (codec == NULL) {
    g_set_error(error, TEACHER_ERROR, TEACHER_ERROR_INVALID,
                "JPEG encoding: libavcodec has no mjpeg encoder; use encoding raw");
    return FALSE;
  }
  AVCodecContext *ctx = avcodec_alloc_context3(codec);
  ctx->width = width;
  ctx->height = height;
  ctx->pix_fmt = AV_PIX_FMT_YUV420P;
  ctx->color_range = AVCOL_RANGE_JPEG;  /* JFIF is full range */
  ctx->time_base = (AVRational){1, 25};
  ctx->flags |= AV_CODEC_FLAG_QSCALE;
  ctx->global_quality = FF_QP2LAMBDA * encoder->jpeg_qscale;
  int ret = avcodec_open2(ctx, codec, NULL);
  if (ret < 0) {
    avcodec_free_context(&ctx);
    return encoder_error(error, "opening the mjpeg encoder", ret);
  }
  encoder->jpeg = ctx;
  encoder->yuv = av_frame_alloc();
  encoder->yuv->format = AV_PIX_FMT_YUV420P;
  encoder->yuv->width = width;
  encoder->yuv->height = height;
  encoder->yuv->color_range = AVCOL_RANGE_JPEG;
  ret = av_frame_get_buffer(encoder->yuv, 0);
  if (ret < 0)
    return encoder_error(error, "allocating the frame", ret);
  if (encoder->packet == NULL)
    encoder->packet = av_packet_alloc();
  return TRUE;
}

/* Scales rgb (w x h) into dst planes of the scaler's output size and format. */
static void scale(TeacherEncoder *encoder, const uint8_t *rgb, int w, int h, int out_w, int out_h,
                  enum AVPixelFormat format, uint8_t *const dst[], const int dst_stride[])
{
  /* Area averaging when shrinking: what a teacher sees of fine detail should not alias. */
  encoder->scaler = sws_getCachedContext(encoder->scaler, w, h, AV_PIX_FMT_RGB24, out_w, out_h,
                                         format, SWS_AREA, NULL, NULL, NULL);
  if (format == AV_PIX_FMT_YUV420P) {
    const int *coefficients = sws_getCoefficients(SWS_CS_ITU601);
    sws_setColorspaceDetails(encoder->scaler, coefficients, 1, coefficients, 1, 0, 1 << 16,
                             1 << 16);
  }
  const uint8_t *src[4] = {rgb};
  const int src_stride[4] = {w * 3};
  sws_scale(encoder->scaler, src, src_stride, 0, h, dst, dst_stride);
}

static GBytes *request_bytes(const char *header, gsize *json_length, const uint8_t *prefix,
                             gsize prefix_size, const uint8_t *data, gsize size)
{
  gsize header_size = strlen(header);
  guint8 *body = g_malloc(header_size + prefix_size + size);
  memcpy(body, header, header_size);
  if (prefix_size)
    memcpy(body + header_size, prefix, prefix_size);
  memcpy(body + header_size + prefix_size, data, size);
  *json_length = header_size;
  return g_bytes_new_take(body, header_size + prefix_size + size);
}

static GBytes *raw_request(TeacherEncoder *encoder, const char *id, const uint8_t *rgb, int w,
                           int h, int out_w, int out_h, gsize *json_length)
{
  gsize size = (gsize)out_w * out_h * 3;
  g_autofree uint8_t *scaled = NULL;
  if (out_w != w || out_h != h) {
    scaled = g_malloc(size);
    uint8_t *dst[4] = {scaled};
    int dst_stride[4] = {out_w * 3};
    scale(encoder, rgb, w, h, out_w, out_h, AV_PIX_FMT_RGB24, dst, dst_stride);
  }
  gint64 shape[] = {1, out_h, out_w, 3};
  g_autofree char *header = request_header(id, "UINT8", shape, 4, size);
  return request_bytes(header, json_length, NULL, 0, scaled ? scaled : rgb, size);
}

static GBytes *jpeg_request(TeacherEncoder *encoder, const char *id, const uint8_t *rgb, int w,
                            int h, int out_w, int out_h, gsize *json_length, GError **error)
{
  if (!jpeg_open(encoder, out_w, out_h, error))
    return NULL;
  int ret = av_frame_make_writable(encoder->yuv);
  if (ret < 0) {
    encoder_error(error, "preparing the frame", ret);
    return NULL;
  }
  scale(encoder, rgb, w, h, out_w, out_h, AV_PIX_FMT_YUV420P, encoder->yuv->data,
        encoder->yuv->linesize);
  encoder->yuv->quality = encoder->jpeg->global_quality;
  encoder->yuv->pts++;
  ret = avcodec_send_frame(encoder->jpeg, encoder->yuv);
  if (ret >= 0)
    ret = avcodec_receive_packet(encoder->jpeg, encoder->packet);
  if (ret < 0) {
    encoder_error(error, "encoding the frame", ret);
    return NULL;
  }
  /* Triton's binary BYTES element: 4-byte little-endian length, then the bytes. */
  guint32 length = GUINT32_TO_LE((guint32)encoder->packet->size);
  gint64 shape[] = {1};
  g_autofree char *header =
      request_header(id, "BYTES", shape, 1, 4 + (gsize)encoder->packet->size);
  GBytes *body = request_bytes(header, json_length, (const uint8_t *)&length, 4,
                               encoder->packet->data, (gsize)encoder->packet->size);
  av_packet_unref(encoder->packet);
  return body;
}

GBytes *teacher_encoder_request(TeacherEncoder *encoder, const char *id, const uint8_t *rgb,
                                int width, int height, gsize *json_length, GError **error)
{
  int out_w, out_h;
  teacher_sent_size(width, height, encoder->max_side, &out_w, &out_h);
  if (encoder->encoding == TEACHER_ENCODING_JPEG)
    return jpeg_request(encoder, id, rgb, width, height, out_w, out_h, json_length, error);
  return raw_request(encoder, id, rgb, width, height, out_w, out_h, json_length);
}
