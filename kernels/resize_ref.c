/* resize_ref.c: plain-C bilinear resizing with half-pixel centres (align_corners=False). */
#include <string.h>

#include "bilinear.h"
#include "kernels.h"

void resize_bilinear_forward_ref(const FeatureMap *x, FeatureMap *y)
{
  for (int oy = 0; oy < y->h; oy++) {
    int y0, y1;
    float fy;
    bilinear_tap(oy, x->h, y->h, &y0, &y1, &fy);
    for (int ox = 0; ox < y->w; ox++) {
      int x0, x1;
      float fx;
      bilinear_tap(ox, x->w, y->w, &x0, &x1, &fx);
      const float *a = feature_map_at(x, y0, x0), *b = feature_map_at(x, y0, x1);
      const float *c = feature_map_at(x, y1, x0), *d = feature_map_at(x, y1, x1);
      float *out = feature_map_at(y, oy, ox);
      for (int ch = 0; ch < x->c; ch++)
        out[ch] = bilinear_blend(a[ch], b[ch], c[ch], d[ch], fx, fy);
    }
  }
}

void resize_bilinear_backward_ref(const FeatureMap *dy, FeatureMap *dx, int accumulate)
{
  if (!accumulate)
    for (int iy = 0; iy < dx->h; iy++)
      for (int ix = 0; ix < dx->w; ix++)
        memset(feature_map_at(dx, iy, ix), 0, sizeof(float) * dx->c);
  for (int oy = 0; oy < dy->h; oy++) {
    int y0, y1;
    float fy;
    bilinear_tap(oy, dx->h, dy->h, &y0, &y1, &fy);
    for (int ox = 0; ox < dy->w; ox++) {
      int x0, x1;
      float fx;
      bilinear_tap(ox, dx->w, dy->w, &x0, &x1, &fx);
      const float *g = feature_map_at(dy, oy, ox);
      float *a = feature_map_at(dx, y0, x0), *b = feature_map_at(dx, y0, x1);
      float *c = feature_map_at(dx, y1, x0), *d = feature_map_at(dx, y1, x1);
      for (int ch = 0; ch < dx->c; ch++) {
        a[ch] += g[ch] * (1.0f - fx) * (1.0f - fy);
        b[ch] += g[ch] * fx * (1.0f - fy);
        c[ch] += g[ch] * (1.0f - fx) * fy;
        d[ch] += g[ch] * fx * fy;
      }
    }
  }
}
