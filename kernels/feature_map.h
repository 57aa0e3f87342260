/* feature_map.h: the activation tensor every kernel reads and writes.
 *
 * Batch size 1, NHWC: channel c of pixel (x, y) is data[(y * w + x) * ld + c]. ld ("leading
 * dimension", floats from one pixel to the next) is at least c; a larger ld makes a channel slice
 * of a wider buffer, which is how a concatenation costs nothing: both inputs write into their own
 * slice of one buffer. */
#pragma once

#include <stddef.h>

typedef struct {
  float *data;
  int h, w, c;
  int ld;
} FeatureMap;

static inline FeatureMap feature_map(float *data, int h, int w, int c)
{
  FeatureMap m = { data, h, w, c, c };
  return m;
}

/* Channels [first, first + count) of m, same pixels. */
static inline FeatureMap feature_map_slice(FeatureMap m, int first, int count)
{
  /* A map being measured (no data yet, student/arena.h) stays without: NULL + first is UB. */
  FeatureMap s = { m.data ? m.data + first : NULL, m.h, m.w, count, m.ld };
  return s;
}

static inline float *feature_map_at(const FeatureMap *m, int y, int x)
{
  return m->data + ((size_t)y * m->w + x) * m->ld;
}
