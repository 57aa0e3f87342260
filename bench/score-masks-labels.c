/* score-masks: decoding the label video (libavformat + libavcodec). Every decoded frame is one
 * label frame, in decode order (as `ffmpeg -vsync 0` gives them); a frame that is not GRAY8 of the
 * stream's size goes through libswscale (bicubic, as ffmpeg's automatic conversion). */
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
#include <string.h>

#include "score-masks.h"

struct LabelVideo {
  char *path;
  AVFormatContext *format;
  AVCodecContext *decoder;
  struct SwsContext *to_gray;
  AVPacket *packet;
  AVFrame *frame;
  int stream, width, height;
  gboolean draining;
};

static gboolean set_av_error(GError **error, const char *path, const char *what, int code)
{
  char reason[AV_ERROR_MAX_STRING_SIZE];

  av_strerror(code, reason, sizeof reason);
  g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "%s: %s: %s", path, what, reason);
  return FALSE;
}

static gboolean open_decoder(LabelVideo *video, GError **error)
{
  const AVCodecParameters *par = video->format->streams[video->stream]->codecpar;
  const AVCodec *codec = avcodec_find_decoder(par->codec_id);
  int ret;

  if (!codec) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED,
                "%s: no decoder for its codec (%s) in this libavcodec", video->path,
                avcodec_get_name(par->codec_id));
    return FALSE;
  }
  video->decoder = avcodec_alloc_context3(codec);
  if ((ret = avcodec_parameters_to_context(video->decoder, par)) < 0)
    return set_av_error(error, video->path, "reading the stream parameters", ret);
  video->decoder->thread_count = 0; /* as many as libavcodec sees fit */
  if ((ret = avcodec_open2(video->decoder, codec, NULL)) < 0)
    return set_av_error(error, video->path, "opening the decoder", ret);
  video->width = par->width;
  video->height = par->height;
  if (video->width <= 0 || video->height <= 0) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "%s: the video stream has no size",
                video->path);
    return FALSE;
  }
  return TRUE;
}

LabelVideo *label_video_open(const char *path, GError **error)
{
  LabelVideo *video = g_new0(LabelVideo, 1);
  int ret;

  av_log_set_level(AV_LOG_ERROR);
  video->path = g_strdup(path);
  video->packet = av_packet_alloc();
  video->frame = av_frame_alloc();
  if ((ret = avformat_open_input(&video->format, path, NULL, NULL)) < 0) {
    set_av_error(error, path, "cannot open the label video", ret);
    goto fail;
  }
  if ((ret = avformat_find_stream_info(video->format, NULL)) < 0) {
    set_av_error(error, path, "cannot read the label video's streams", ret);
    goto fail;
  }
  video->stream = av_find_best_stream(video->format, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
  if (video->stream < 0) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED,
                "%s: no video stream (labels are a video of grey frames, e.g. labels.mkv)", path);
    goto fail;
  }
  if (!open_decoder(video, error))
    goto fail;
  return video;

fail:
  label_video_close(video);
  return NULL;
}

int label_video_width(const LabelVideo *video) { return video->width; }
int label_video_height(const LabelVideo *video) { return video->height; }

static gboolean frame_to_gray(LabelVideo *video, uint8_t *gray, GError **error)
{
  AVFrame *f = video->frame;

  if (f->format == AV_PIX_FMT_GRAY8 && f->width == video->width && f->height == video->height) {
    for (int y = 0; y < video->height; y++)
      memcpy(gray + (size_t)y * video->width, f->data[0] + (ptrdiff_t)y * f->linesize[0],
             video->width);
    return TRUE;
  }
  video->to_gray = sws_getCachedContext(video->to_gray, f->width, f->height, f->format,
                                        video->width, video->height, AV_PIX_FMT_GRAY8,
                                        SWS_BICUBIC, NULL, NULL, NULL);
  if (!video->to_gray) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED,
                "%s: cannot convert frames of format %s to grey", video->path,
                av_get_pix_fmt_name(f->format));
    return FALSE;
  }
  uint8_t *planes[4] = {gray};
  int strides[4] = {video->width};
  sws_scale(video->to_gray, (const uint8_t *const *)f->data, f->linesize, 0, f->height, planes,
            strides);
  return TRUE;
}

/* Feeds the decoder one packet of the label stream, or the end of the stream. */
static gboolean feed_decoder(LabelVideo *video, GError **error)
{
  int ret;

  for (;;) {
    ret = av_read_frame(video->format, video->packet);
    if (ret == AVERROR_EOF) {
      video->draining = TRUE;
      avcodec_send_packet(video->decoder, NULL);
      return TRUE;
    }
    if (ret < 0)
      return set_av_error(error, video->path, "reading", ret);
    if (video->packet->stream_index == video->stream)
      break;
    av_packet_unref(video->packet);
  }
  ret = avcodec_send_packet(video->decoder, video->packet);
  av_packet_unref(video->packet);
  if (ret < 0 && ret != AVERROR(EAGAIN))
    return set_av_error(error, video->path, "decoding", ret);
  return TRUE;
}

gboolean label_video_next(LabelVideo *video, uint8_t *gray, GError **error)
{
  for (;;) {
    int ret = avcodec_receive_frame(video->decoder, video->frame);
    if (ret == 0) {
      gboolean ok = frame_to_gray(video, gray, error);
      av_frame_unref(video->frame);
      return ok;
    }
    if (ret == AVERROR_EOF)
      return FALSE;
    if (ret != AVERROR(EAGAIN))
      return set_av_error(error, video->path, "decoding", ret);
    if (video->draining || !feed_decoder(video, error))
      return FALSE;
  }
}

void label_video_close(LabelVideo *video)
{
  if (!video)
    return;
  sws_freeContext(video->to_gray);
  avcodec_free_context(&video->decoder);
  avformat_close_input(&video->format);
  av_packet_free(&video->packet);
  av_frame_free(&video->frame);
  g_free(video->path);
  g_free(video);
}
