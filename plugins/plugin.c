/* plugin.c: the plugin "distill" (libgstdistill.so). */
#include "gstdistillseg.h"

static gboolean plugin_init(GstPlugin *plugin)
{
  return GST_ELEMENT_REGISTER(distillseg, plugin);
}

GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, distill,
                  "Segmentation by a student network kept accurate by online distillation",
                  plugin_init, PACKAGE_VERSION, "LGPL", "gst-distill",
                  "https://github.com/gst-distill/gst-distill")
