/* render.c: the overlay (render.h).
 *
 * One loop serves every format: it walks each colour component at its own subsampled size,
 * through the component's plane, stride, pixel stride and offset, so packed RGB orders, planar
 * I420 and semi-planar NV12 need no code of their own. */
#include "render.h"

#define OVERLAY_ALPHA 112 /* of 256: the video stays readable under the colour */

/* A distinct, saturated colour per class; class 0 draws nothing. */
static void class_rgb(int cls, int rgb[3])
{
  static const int base[][3] = {
      {0, 0, 0}, {255, 48, 48}, {48, 220, 48}, {64, 96, 255}, {255, 210, 0}, {255, 0, 255},
      {0, 230, 230}, {255, 128, 0},
  };
  int n = G_N_ELEMENTS(base);
  for (int i = 0; i < 3; i++)
    rgb[i] = base[cls % n][i] ^ ((cls / n) * 0x55 & 0xff);
}

/* The class colour as the value of the component comp in the frame's colour space. */
static int class_component(const GstVideoFormatInfo *finfo, int cls, int comp)
{
  int rgb[3];

  class_rgb(cls, rgb);
  if (GST_VIDEO_FORMAT_INFO_IS_RGB(finfo))
    return rgb[comp];
  /* BT.601 limited range, as libav's and GStreamer's defaults for SD video. */
  double r = rgb[0], g = rgb[1], b = rgb[2];
  double v = comp == 0   ? 16 + 0.257 * r + 0.504 * g + 0.098 * b
             : comp == 1 ? 128 - 0.148 * r - 0.291 * g + 0.439 * b
                         : 128 + 0.439 * r - 0.368 * g - 0.071 * b;
  return (int)(v + 0.5);
}

/* The class-map index of sample i of n (nearest, pixel centres aligned). */
static inline int map_coord(int i, int n, int map_n)
{
  int m = (int)(((2 * i + 1) * (int64_t)map_n) / (2 * n));
  return m < map_n ? m : map_n - 1;
}

static void map_columns(int *columns, int n, int map_n)
{
  for (int x = 0; x < n; x++)
    columns[x] = map_coord(x, n, map_n);
}

/* Every class's colour in RGB and in YUV, worked out once for the process, not per frame. */
typedef int ClassColours[256][3];

static gpointer make_class_colours(gpointer data)
{
  static ClassColours colours[2];
  const GstVideoFormatInfo *formats[2] = {gst_video_format_get_info(GST_VIDEO_FORMAT_RGB),
                                          gst_video_format_get_info(GST_VIDEO_FORMAT_I420)};

  for (int f = 0; f < 2; f++)
    for (int cls = 1; cls < 256; cls++)
      for (int comp = 0; comp < 3; comp++)
        colours[f][cls][comp] = class_component(formats[f], cls, comp);
  return colours;
}

void render_overlay(GstVideoFrame *frame, const uint8_t *classes, int map_w, int map_h)
{
  static GOnce once = G_ONCE_INIT;
  const ClassColours *colours = g_once(&once, make_class_colours, NULL);
  const int(*colour)[3] = colours[GST_VIDEO_FORMAT_INFO_IS_RGB(frame->info.finfo) ? 0 : 1];

  for (int comp = 0; comp < 3; comp++) {
    int w = GST_VIDEO_FRAME_COMP_WIDTH(frame, comp), h = GST_VIDEO_FRAME_COMP_HEIGHT(frame, comp);
    int stride = GST_VIDEO_FRAME_COMP_STRIDE(frame, comp);
    int pstride = GST_VIDEO_FRAME_COMP_PSTRIDE(frame, comp);
    uint8_t *data = GST_VIDEO_FRAME_COMP_DATA(frame, comp);
    int columns[w];
    map_columns(columns, w, map_w);
    for (int y = 0; y < h; y++) {
      const uint8_t *map_row = classes + (size_t)map_coord(y, h, map_h) * map_w;
      uint8_t *row = data + (size_t)y * stride;
      for (int x = 0; x < w; x++) {
        int cls = map_row[columns[x]];
        if (cls == 0)
          continue;
        uint8_t *p = row + (size_t)x * pstride;
        *p = (uint8_t)((*p * (256 - OVERLAY_ALPHA) + colour[cls][comp] * OVERLAY_ALPHA) >> 8);
      }
    }
  }
}
