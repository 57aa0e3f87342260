/* miou.c: the mean IoU of one frame (miou.h). */
#include "miou.h"

#include <string.h>

double frame_miou_counts(const uint8_t *pred, const uint8_t *label, size_t n, int num_classes,
                         size_t *intersection, size_t *union_)
{
  size_t inter[255] = { 0 }, uni[255] = { 0 };
  int classes = num_classes < 255 ? num_classes : 255; /* 255 is LABEL_IGNORE */
  for (size_t i = 0; i < n; i++) {
    int truth = label[i], guess = pred[i];
    if (truth >= classes)
      continue;
    uni[truth]++;
    if (guess == truth)
      inter[truth]++;
    else if (guess < classes)
      uni[guess]++;
  }
  double sum = 0.0;
  int present = 0;
  for (int c = 0; c < classes; c++)
    if (uni[c]) {
      sum += (double)inter[c] / (double)uni[c];
      present++;
    }
  if (intersection)
    memcpy(intersection, inter, sizeof(size_t) * classes);
  if (union_)
    memcpy(union_, uni, sizeof(size_t) * classes);
  return present ? sum / present : 1.0;
}

double frame_miou(const uint8_t *pred, const uint8_t *label, size_t n, int num_classes)
{
  return frame_miou_counts(pred, label, n, num_classes, NULL, NULL);
}
