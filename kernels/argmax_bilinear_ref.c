/* argmax_bilinear_ref.c: plain-C class map of logits resized bilinearly. */
#include "bilinear.h"
#include "kernels.h"

/* The class of one destination pixel from the four source pixels around it. */
static uint8_t class_between(const float *a, const float *b, const float *c, const float *d,
                             int classes, float fx, float fy)
{
  if (classes == 2)
    return bilinear_blend(a[1] - a[0], b[1] - b[0], c[1] - c[0], d[1] - d[0], fx, fy) > 0.0f;
  int best = 0;
  float best_score = bilinear_blend(a[0], b[0], c[0], d[0], fx, fy);
  for (int ch = 1; ch < classes; ch++) {
    float score = bilinear_blend(a[ch], b[ch], c[ch], d[ch], fx, fy);
    if (score > best_score) {
      best = ch;
      best_score = score;
    }
  }
  return (uint8_t)best;
}

void argmax_bilinear_ref(const FeatureMap *logits, int width, int height, uint8_t *classes,
                         size_t row_stride)
{
  for (int y = 0; y < height; y++) {
    int y0, y1;
    float fy;
    bilinear_tap(y, logits->h, height, &y0, &y1, &fy);
    for (int x = 0; x < width; x++) {
      int x0, x1;
      float fx;
      bilinear_tap(x, logits->w, width, &x0, &x1, &fx);
      classes[(size_t)y * row_stride + x] =
        class_between(feature_map_at(logits, y0, x0), feature_map_at(logits, y0, x1),
                      feature_map_at(logits, y1, x0), feature_map_at(logits, y1, x1), logits->c,
                      fx, fy);
    }
  }
}
