/* rtsp-out.h: an encoded H.264 stream served as one shared RTSP media, used by distill-camera and
 * distill-rtsp. The encoder's access units (an appsink) go to the media's appsrc while someone
 * watches: every viewer costs the one encode. */
#pragma once

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <gst/rtsp-server/rtsp-server.h>

typedef struct {
  GstElement *encoder;       /* x264enc: key frames on demand */
  GstElement *gate;          /* a valve before it, shut while nobody watches; may be NULL */
  GMutex lock;
  GstAppSrc *viewers;        /* the media's source while someone watches */
  GstClockTime last_time;    /* of the last access unit sent to it */
} RtspOut;

/* encoded: the appsink after the encoder (H.264 byte-stream, access units). Sets the encoder's
 * key-frame interval to about one second of its input, so that late joiners start fast. */
void rtsp_out_init(RtspOut *out, GstElement *encoder, GstElement *gate, GstElement *encoded);
void rtsp_out_clear(RtspOut *out);
/* A shared media factory fed by out. */
GstRTSPMediaFactory *rtsp_out_factory(RtspOut *out);
/* The media's UDP ports (RTP and RTCP of viewers over UDP) on address, as the server's: none on
 * other interfaces unless address is 0.0.0.0 or ::. */
void rtsp_out_bind_udp(GstRTSPMediaFactory *factory, const char *address);
/* The viewers are told the stream ends. */
void rtsp_out_end(RtspOut *out);
