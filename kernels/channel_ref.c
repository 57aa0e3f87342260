/* channel_ref.c: plain-C definitions of global average pooling and per-channel scaling. */
#include "kernels.h"

/* Sums in double: the definition, not a rounding of its own. */
void global_avg_pool_forward_ref(const FeatureMap *x, float *y)
{
  double n = (double)x->h * x->w;
  for (int c = 0; c < x->c; c++) {
    double sum = 0.0;
    for (int py = 0; py < x->h; py++)
      for (int px = 0; px < x->w; px++)
        sum += feature_map_at(x, py, px)[c];
    y[c] = (float)(sum / n);
  }
}

void global_avg_pool_backward_ref(const float *dy, FeatureMap *dx, int accumulate)
{
  float n = (float)dx->h * (float)dx->w;
  for (int py = 0; py < dx->h; py++)
    for (int px = 0; px < dx->w; px++) {
      float *d = feature_map_at(dx, py, px);
      for (int c = 0; c < dx->c; c++)
        d[c] = accumulate ? d[c] + dy[c] / n : dy[c] / n;
    }
}

void channel_scale_forward_ref(const FeatureMap *x, const float *s, FeatureMap *y)
{
  for (int py = 0; py < x->h; py++)
    for (int px = 0; px < x->w; px++) {
      const float *in = feature_map_at(x, py, px);
      float *out = feature_map_at(y, py, px);
      for (int c = 0; c < x->c; c++)
        out[c] = in[c] * s[c];
    }
}

void channel_scale_backward_ref(const FeatureMap *x, const float *s, const FeatureMap *dy,
                                FeatureMap *dx, float *ds, int accumulate)
{
  for (int py = 0; py < x->h; py++)
    for (int px = 0; px < x->w; px++) {
      const float *in = feature_map_at(x, py, px), *grad = feature_map_at(dy, py, px);
      float *d = dx ? feature_map_at(dx, py, px) : NULL;
      for (int c = 0; c < x->c; c++) {
        if (ds)
          ds[c] += grad[c] * in[c];
        if (d)
          d[c] = accumulate ? d[c] + grad[c] * s[c] : grad[c] * s[c];
      }
    }
}
