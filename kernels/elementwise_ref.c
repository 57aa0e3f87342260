/* elementwise_ref.c: plain-C definitions of ReLU backward, copy/accumulate and 2x subsampling. */
#include <string.h>

#include "kernels.h"

void relu_backward_ref(const FeatureMap *y, FeatureMap *dy)
{
  for (int py = 0; py < y->h; py++)
    for (int px = 0; px < y->w; px++) {
      const float *out = feature_map_at(y, py, px);
      float *grad = feature_map_at(dy, py, px);
      for (int c = 0; c < y->c; c++)
        if (!(out[c] > 0.0f))
          grad[c] = 0.0f;
    }
}

void feature_map_copy_ref(const FeatureMap *src, FeatureMap *dst, int accumulate)
{
  for (int py = 0; py < src->h; py++)
    for (int px = 0; px < src->w; px++) {
      const float *s = feature_map_at(src, py, px);
      float *d = feature_map_at(dst, py, px);
      for (int c = 0; c < src->c; c++)
        d[c] = accumulate ? d[c] + s[c] : s[c];
    }
}

void subsample2_forward_ref(const FeatureMap *x, FeatureMap *y)
{
  for (int py = 0; py < y->h; py++)
    for (int px = 0; px < y->w; px++)
      memcpy(feature_map_at(y, py, px), feature_map_at(x, 2 * py, 2 * px), sizeof(float) * x->c);
}

void subsample2_backward_ref(const FeatureMap *dy, FeatureMap *dx, int accumulate)
{
  for (int py = 0; py < dx->h; py++)
    for (int px = 0; px < dx->w; px++) {
      float *d = feature_map_at(dx, py, px);
      int hit = py % 2 == 0 && px % 2 == 0;
      const float *s = hit ? feature_map_at(dy, py / 2, px / 2) : NULL;
      for (int c = 0; c < dx->c; c++) {
        float v = s ? s[c] : 0.0f;
        d[c] = accumulate ? d[c] + v : v;
      }
    }
}
