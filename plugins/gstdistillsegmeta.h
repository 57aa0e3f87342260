/* gstdistillsegmeta.h: the segmentation carried by every buffer distillseg outputs.
 *
 * The fields mirror GStreamer 1.26's GstAnalyticsSegmentationMtd (a GRAY8 mask buffer with a
 * GstVideoMeta, the segmentation type, the region ids a mask value may take, and where the mask
 * lies on the frame), so that moving to the analytics library is mechanical once it is available;
 * Debian 12's GStreamer 1.22 lacks it. */
#pragma once

#include <gst/gst.h>
#include <gst/video/video.h>

G_BEGIN_DECLS

typedef enum {
  GST_DISTILL_SEGMENTATION_TYPE_SEMANTIC, /* GST_SEGMENTATION_TYPE_SEMANTIC */
  GST_DISTILL_SEGMENTATION_TYPE_INSTANCE, /* GST_SEGMENTATION_TYPE_INSTANCE */
} GstDistillSegmentationType;

typedef struct {
  GstMeta meta;

  GstBuffer *masks;                   /* GRAY8, GstVideoMeta attached; pixel = region id */
  GstDistillSegmentationType type;    /* always semantic: a pixel value is a class index */
  gsize region_count;                 /* the classes of the student, 0 = background */
  guint *region_ids;                  /* 0 .. region_count - 1 */
  gint masks_loc_x, masks_loc_y;      /* the frame area the mask covers, in frame pixels */
  guint masks_loc_w, masks_loc_h;
} GstDistillSegMeta;

GType gst_distill_seg_meta_api_get_type(void);
const GstMetaInfo *gst_distill_seg_meta_get_info(void);
#define GST_DISTILL_SEG_META_API_TYPE (gst_distill_seg_meta_api_get_type())
#define GST_DISTILL_SEG_META_INFO (gst_distill_seg_meta_get_info())

/* Attaches a semantic segmentation of num_classes classes; takes ownership of masks, which must
 * carry a GstVideoMeta (GRAY8). The mask covers the whole frame_width x frame_height frame. */
GstDistillSegMeta *gst_buffer_add_distill_seg_meta(GstBuffer *buffer, GstBuffer *masks,
                                                   guint num_classes, guint frame_width,
                                                   guint frame_height);
#define gst_buffer_get_distill_seg_meta(b) \
  ((GstDistillSegMeta *)gst_buffer_get_meta((b), GST_DISTILL_SEG_META_API_TYPE))

G_END_DECLS
