/* render.h: drawing a class map onto video frames. */
#pragma once

#include <gst/video/video.h>
#include <stdint.h>

/* Blends a colour per class over the frame (class 0, background, is left as is), in the frame's
 * own format: packed RGB variants in RGB, I420 and NV12 in BT.601 YUV. Each frame sample takes
 * the class of the nearest class-map pixel. */
void render_overlay(GstVideoFrame *frame, const uint8_t *classes, int map_w, int map_h);
