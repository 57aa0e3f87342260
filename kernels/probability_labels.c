/* probability_labels.c: resized probabilities as labels (probability_labels.h). Once per teacher
 * frame, not per video frame: plain C. */
#include "probability_labels.h"

#include "bilinear.h"

void labels_from_probabilities(const float *planes, int classes, int w, int h, double confidence,
                               int out_w, int out_h, uint8_t *labels)
{
  size_t plane = (size_t)w * h;
  float p[255]; /* one resized pixel, a probability per class */
  for (int y = 0; y < out_h; y++) {
    int y0, y1;
    float fy;
    bilinear_tap(y, h, out_h, &y0, &y1, &fy);
    for (int x = 0; x < out_w; x++) {
      int x0, x1;
      float fx;
      bilinear_tap(x, w, out_w, &x0, &x1, &fx);
      for (int c = 0; c < classes; c++) {
        const float *r0 = planes + c * plane + (size_t)y0 * w, *r1 = r0 + (size_t)(y1 - y0) * w;
        p[c] = bilinear_blend(r0[x0], r0[x1], r1[x0], r1[x1], fx, fy);
      }
      labels[(size_t)y * out_w + x] = label_of_probabilities(p, 1, classes, confidence);
    }
  }
}
