/* render.h: drawing a class map (the student's output, at its own size) onto video frames. */
#pragma once

#include <gst/video/video.h>
#include <stdint.h>

#include "feature_map.h"

/* The class of every pixel of a width x height frame: the logits (a smaller map, one channel per
 * class) resized bilinearly with half-pixel centres, then the most likely class. Sharper than
 * resizing the class map itself; scratch holds logits->h * logits->w floats. */
void render_classes_from_logits(const FeatureMap *logits, int width, int height, float *scratch,
                                uint8_t *classes);

/* Blends a colour per class over the frame (class 0, background, is left as is), in the frame's
 * own format: packed RGB variants in RGB, I420 and NV12 in BT.601 YUV. Each frame sample takes
 * the class of the nearest class-map pixel. */
void render_overlay(GstVideoFrame *frame, const uint8_t *classes, int map_w, int map_h);

/* Writes the class index of every pixel into a GRAY8 frame. */
void render_mask(GstVideoFrame *frame, const uint8_t *classes, int map_w, int map_h);
