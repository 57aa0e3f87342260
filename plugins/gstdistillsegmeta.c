/* gstdistillsegmeta.c: the segmentation meta (gstdistillsegmeta.h). */
#include "gstdistillsegmeta.h"

GType gst_distill_seg_meta_api_get_type(void)
{
  static GType type;
  static const gchar *tags[] = {GST_META_TAG_VIDEO_STR, GST_META_TAG_VIDEO_SIZE_STR, NULL};

  if (g_once_init_enter(&type)) {
    GType t = gst_meta_api_type_register("GstDistillSegMetaAPI", tags);
    g_once_init_leave(&type, t);
  }
  return type;
}

static gboolean gst_distill_seg_meta_init(GstMeta *meta, gpointer params, GstBuffer *buffer)
{
  GstDistillSegMeta *seg = (GstDistillSegMeta *)meta;

  seg->masks = NULL;
  seg->type = GST_DISTILL_SEGMENTATION_TYPE_SEMANTIC;
  seg->region_count = 0;
  seg->region_ids = NULL;
  seg->masks_loc_x = seg->masks_loc_y = 0;
  seg->masks_loc_w = seg->masks_loc_h = 0;
  return TRUE;
}

static void gst_distill_seg_meta_free(GstMeta *meta, GstBuffer *buffer)
{
  GstDistillSegMeta *seg = (GstDistillSegMeta *)meta;

  gst_clear_buffer(&seg->masks);
  g_clear_pointer(&seg->region_ids, g_free);
}

/* Copies keep the mask (shared, read-only); a scaled frame keeps it too, with the covered area
 * scaled, since the mask is defined relative to that area. */
static gboolean gst_distill_seg_meta_transform(GstBuffer *dest, GstMeta *meta, GstBuffer *buffer,
                                               GQuark type, gpointer data)
{
  GstDistillSegMeta *src = (GstDistillSegMeta *)meta, *dst;
  guint w = src->masks_loc_w, h = src->masks_loc_h;
  gint x = src->masks_loc_x, y = src->masks_loc_y;

  if (GST_META_TRANSFORM_IS_COPY(type)) {
    GstMetaTransformCopy *copy = data;
    if (copy->region)
      return FALSE;
  } else if (GST_VIDEO_META_TRANSFORM_IS_SCALE(type)) {
    GstVideoMetaTransform *scale = data;
    gint iw = GST_VIDEO_INFO_WIDTH(scale->in_info), ih = GST_VIDEO_INFO_HEIGHT(scale->in_info);
    gint ow = GST_VIDEO_INFO_WIDTH(scale->out_info), oh = GST_VIDEO_INFO_HEIGHT(scale->out_info);
    if (iw <= 0 || ih <= 0)
      return FALSE;
    x = (gint)gst_util_uint64_scale_int(x, ow, iw);
    y = (gint)gst_util_uint64_scale_int(y, oh, ih);
    w = (guint)gst_util_uint64_scale_int(w, ow, iw);
    h = (guint)gst_util_uint64_scale_int(h, oh, ih);
  } else {
    return FALSE;
  }

  dst = (GstDistillSegMeta *)gst_buffer_add_meta(dest, GST_DISTILL_SEG_META_INFO, NULL);
  if (!dst)
    return FALSE;
  dst->masks = gst_buffer_ref(src->masks);
  dst->type = src->type;
  dst->region_count = src->region_count;
  dst->region_ids = g_memdup2(src->region_ids, src->region_count * sizeof(guint));
  dst->masks_loc_x = x;
  dst->masks_loc_y = y;
  dst->masks_loc_w = w;
  dst->masks_loc_h = h;
  return TRUE;
}

const GstMetaInfo *gst_distill_seg_meta_get_info(void)
{
  static const GstMetaInfo *info;

  if (g_once_init_enter((GstMetaInfo **)&info)) {
    const GstMetaInfo *i = gst_meta_register(
        GST_DISTILL_SEG_META_API_TYPE, "GstDistillSegMeta", sizeof(GstDistillSegMeta),
        gst_distill_seg_meta_init, gst_distill_seg_meta_free, gst_distill_seg_meta_transform);
    g_once_init_leave((GstMetaInfo **)&info, (GstMetaInfo *)i);
  }
  return info;
}

GstDistillSegMeta *gst_buffer_add_distill_seg_meta(GstBuffer *buffer, GstBuffer *masks,
                                                   guint num_classes, guint frame_width,
                                                   guint frame_height)
{
  GstDistillSegMeta *seg;

  g_return_val_if_fail(gst_buffer_get_video_meta(masks) != NULL, NULL);
  seg = (GstDistillSegMeta *)gst_buffer_add_meta(buffer, GST_DISTILL_SEG_META_INFO, NULL);
  if (!seg) {
    gst_buffer_unref(masks);
    return NULL;
  }
  seg->masks = masks;
  seg->region_count = num_classes;
  seg->region_ids = g_new(guint, num_classes);
  for (guint i = 0; i < num_classes; i++)
    seg->region_ids[i] = i;
  seg->masks_loc_w = frame_width;
  seg->masks_loc_h = frame_height;
  return seg;
}
