/* loss_ref.c: plain-C softmax cross-entropy and argmax over channels. */
#include <math.h>

#include "kernels.h"

double softmax_xent_ref(const FeatureMap *logits, const uint8_t *labels,
                        const float *pixel_weight, FeatureMap *dlogits)
{
  int classes = logits->c;
  double loss = 0.0, weight_sum = 0.0;
  for (int py = 0; py < logits->h; py++)
    for (int px = 0; px < logits->w; px++) {
      size_t i = (size_t)py * logits->w + px;
      const float *z = feature_map_at(logits, py, px);
      int label = labels[i];
      float weight = pixel_weight ? pixel_weight[i] : 1.0f;
      if (label >= classes)
        weight = 0.0f;
      if (weight != 0.0f) {
        float max = z[0];
        for (int c = 1; c < classes; c++)
          max = z[c] > max ? z[c] : max;
        double sum = 0.0;
        for (int c = 0; c < classes; c++)
          sum += exp((double)z[c] - max);
        loss += weight * (log(sum) + max - z[label]);
        weight_sum += weight;
      }
    }
  double scale = weight_sum > 0.0 ? 1.0 / weight_sum : 0.0;
  if (dlogits)
    for (int py = 0; py < logits->h; py++)
      for (int px = 0; px < logits->w; px++) {
        size_t i = (size_t)py * logits->w + px;
        const float *z = feature_map_at(logits, py, px);
        float *dz = feature_map_at(dlogits, py, px);
        int label = labels[i];
        float weight = pixel_weight ? pixel_weight[i] : 1.0f;
        if (label >= classes || weight == 0.0f) {
          for (int c = 0; c < classes; c++)
            dz[c] = 0.0f;
          continue;
        }
        float max = z[0];
        for (int c = 1; c < classes; c++)
          max = z[c] > max ? z[c] : max;
        double sum = 0.0;
        for (int c = 0; c < classes; c++)
          sum += exp((double)z[c] - max);
        for (int c = 0; c < classes; c++) {
          double p = exp((double)z[c] - max) / sum;
          dz[c] = (float)(weight * scale * (p - (c == label ? 1.0 : 0.0)));
        }
      }
  return loss * scale;
}

void argmax_channels_ref(const FeatureMap *logits, uint8_t *classes)
{
  for (int py = 0; py < logits->h; py++)
    for (int px = 0; px < logits->w; px++) {
      const float *z = feature_map_at(logits, py, px);
      int best = 0;
      for (int c = 1; c < logits->c; c++)
        if (z[c] > z[best])
          best = c;
      classes[(size_t)py * logits->w + px] = (uint8_t)best;
    }
}
