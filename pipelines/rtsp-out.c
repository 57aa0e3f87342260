/* rtsp-out.c: an encoded stream served as a shared RTSP media. */
#include <gst/video/video.h>

#include "rtsp-out.h"

#define H264_CAPS "video/x-h264,stream-format=byte-stream,alignment=au"

/* Access units are stamped with the media's running time as they arrive: its clock stays
 * monotonic whatever the encoder's timestamps do (a looping file, a camera reconnected). Units
 * arriving together (a burst after a stall) are spread 1 ms apart, so that no two share a
 * decoding time. Before the media has a clock, the appsrc stamps them (do-timestamp). */
static GstClockTime arrival_time(RtspOut *out, GstAppSrc *viewers)
{
  GstClock *clock = gst_element_get_clock(GST_ELEMENT(viewers));
  GstClockTime now;

  if (!clock)
    return GST_CLOCK_TIME_NONE;
  now = gst_clock_get_time(clock) - gst_element_get_base_time(GST_ELEMENT(viewers));
  gst_object_unref(clock);
  g_mutex_lock(&out->lock);
  if (out->viewers == viewers && GST_CLOCK_TIME_IS_VALID(out->last_time) &&
      now <= out->last_time)
    now = out->last_time + GST_MSECOND;
  out->last_time = now;
  g_mutex_unlock(&out->lock);
  return now;
}

static GstFlowReturn on_encoded(GstAppSink *sink, gpointer data)
{
  RtspOut *out = data;
  GstSample *sample = gst_app_sink_pull_sample(sink);

  if (!sample)
    return GST_FLOW_EOS;
  g_mutex_lock(&out->lock);
  GstAppSrc *viewers = out->viewers ? g_object_ref(out->viewers) : NULL;
  g_mutex_unlock(&out->lock);
  if (viewers) {
    GstBuffer *au = gst_buffer_copy(gst_sample_get_buffer(sample));
    GST_BUFFER_PTS(au) = GST_BUFFER_DTS(au) = arrival_time(out, viewers);
    gst_app_src_push_buffer(viewers, au);
    gst_object_unref(viewers);
  }
  gst_sample_unref(sample);
  return GST_FLOW_OK;
}

static GstPadProbeReturn on_encoder_caps(GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
  GstEvent *event = GST_PAD_PROBE_INFO_EVENT(info);
  GstCaps *caps;
  gint num, den;

  if (GST_EVENT_TYPE(event) != GST_EVENT_CAPS)
    return GST_PAD_PROBE_OK;
  gst_event_parse_caps(event, &caps);
  if (gst_structure_get_fraction(gst_caps_get_structure(caps, 0), "framerate", &num, &den) &&
      num > 0 && den > 0)
    g_object_set(data, "key-int-max", (guint)MAX(1, (num + den / 2) / den), NULL);
  return GST_PAD_PROBE_OK;
}

static void keyframe_now(GstElement *encoder)
{
  GstPad *pad = gst_element_get_static_pad(encoder, "sink");

  gst_pad_send_event(pad, gst_video_event_new_downstream_force_key_unit(
                              GST_CLOCK_TIME_NONE, GST_CLOCK_TIME_NONE, GST_CLOCK_TIME_NONE, TRUE,
                              0));
  gst_object_unref(pad);
}

void rtsp_out_init(RtspOut *out, GstElement *encoder, GstElement *gate, GstElement *encoded)
{
  GstAppSinkCallbacks callbacks = {.new_sample = on_encoded};
  GstPad *pad = gst_element_get_static_pad(encoder, "sink");

  out->encoder = gst_object_ref(encoder);
  out->gate = gate ? gst_object_ref(gate) : NULL;
  g_mutex_init(&out->lock);
  out->viewers = NULL;
  /* Without a framerate (variable-rate sources) the interval stays at 30 frames. */
  g_object_set(encoder, "key-int-max", 30u, NULL);
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, on_encoder_caps, encoder, NULL);
  gst_object_unref(pad);
  gst_app_sink_set_callbacks(GST_APP_SINK(encoded), &callbacks, out, NULL);
}

void rtsp_out_clear(RtspOut *out)
{
  g_mutex_lock(&out->lock);
  g_clear_object(&out->viewers);
  g_mutex_unlock(&out->lock);
  g_mutex_clear(&out->lock);
  gst_clear_object(&out->encoder);
  gst_clear_object(&out->gate);
}

static void on_media_unprepared(GstRTSPMedia *media, gpointer data)
{
  RtspOut *out = data;

  g_mutex_lock(&out->lock);
  g_clear_object(&out->viewers);
  g_mutex_unlock(&out->lock);
  if (out->gate)
    g_object_set(out->gate, "drop", TRUE, NULL);
}

/* The first viewer of the shared media: the encoder starts (again), with a key frame. */
static void on_media_configure(GstRTSPMediaFactory *factory, GstRTSPMedia *media, gpointer data)
{
  RtspOut *out = data;
  GstElement *bin = gst_rtsp_media_get_element(media);
  GstElement *src = gst_bin_get_by_name(GST_BIN(bin), "src");
  GstCaps *caps = gst_caps_from_string(H264_CAPS);

  g_object_set(src, "caps", caps, NULL);
  gst_caps_unref(caps);
  g_mutex_lock(&out->lock);
  g_clear_object(&out->viewers);
  out->viewers = GST_APP_SRC(src);
  out->last_time = GST_CLOCK_TIME_NONE;
  g_mutex_unlock(&out->lock);
  g_signal_connect(media, "unprepared", G_CALLBACK(on_media_unprepared), out);
  if (out->gate)
    g_object_set(out->gate, "drop", FALSE, NULL);
  keyframe_now(out->encoder);
  gst_object_unref(bin);
}

GstRTSPMediaFactory *rtsp_out_factory(RtspOut *out)
{
  GstRTSPMediaFactory *factory = gst_rtsp_media_factory_new();

  gst_rtsp_media_factory_set_launch(
      factory, "( appsrc name=src is-live=true do-timestamp=true format=time ! h264parse ! "
               "rtph264pay name=pay0 pt=96 config-interval=-1 )");
  gst_rtsp_media_factory_set_shared(factory, TRUE);
  g_signal_connect(factory, "media-configure", G_CALLBACK(on_media_configure), out);
  return factory;
}

void rtsp_out_bind_udp(GstRTSPMediaFactory *factory, const char *address)
{
  g_autoptr(GInetAddress) inet = g_inet_address_new_from_string(address);

  if (!inet || g_inet_address_get_is_any(inet))
    return;
  /* Without a pool of its own, the media binds the UDP ports of viewers that ask for RTP over
   * UDP to every interface, whatever address the RTSP server listens on. */
  GstRTSPAddressPool *pool = gst_rtsp_address_pool_new();
  gst_rtsp_address_pool_add_range(pool, address, address, 49152, 65535, 0);
  gst_rtsp_media_factory_set_address_pool(factory, pool);
  g_object_unref(pool);
}

void rtsp_out_end(RtspOut *out)
{
  g_mutex_lock(&out->lock);
  if (out->viewers)
    gst_app_src_end_of_stream(out->viewers);
  g_mutex_unlock(&out->lock);
}
