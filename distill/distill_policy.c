/* distill_policy.c: the teacher-stride policy of Mullapudi et al. (ICCV 2019) and the accuracy
 * measure it runs on. */
#include "distill.h"

double distill_miou(const uint8_t *pred, const uint8_t *reference, size_t n, int num_classes)
{
  /* Classes are at most 255 (a uint8 class map with 255 = ignore). */
  size_t inter[255] = { 0 }, uni[255] = { 0 };
  for (size_t i = 0; i < n; i++) {
    int r = reference[i], p = pred[i];
    if (r >= num_classes)
      continue;
    if (p == r) {
      inter[r]++;
      uni[r]++;
    } else {
      uni[r]++;
      if (p < num_classes)
        uni[p]++;
    }
  }
  double sum = 0.0;
  int present = 0;
  for (int c = 0; c < num_classes && c < 255; c++)
    if (uni[c]) {
      sum += (double)inter[c] / (double)uni[c];
      present++;
    }
  return present ? sum / present : 1.0;
}

gboolean distill_policy_keep_training(const DistillConfig *cfg, guint updates, double miou)
{
  return cfg->train && updates < cfg->max_updates && miou < cfg->accuracy_threshold;
}

guint distill_policy_next_stride(const DistillConfig *cfg, guint stride, double miou)
{
  guint next = miou >= cfg->accuracy_threshold ? stride * 2 : stride / 2;
  return CLAMP(next, cfg->min_stride, cfg->max_stride);
}

const char *distill_collapse_describe(DistillCollapse collapse)
{
  switch (collapse) {
  case DISTILL_COLLAPSE_NON_FINITE:
    return "the training loss or the weights became NaN or infinite";
  case DISTILL_COLLAPSE_EXPLODING_LOSS:
    return "the training loss exploded";
  case DISTILL_COLLAPSE_AGREEMENT:
    return "the student's agreement with the teacher stayed far below its usual level for many "
           "teacher frames in a row";
  case DISTILL_COLLAPSE_NONE:
    break;
  }
  return "no collapse";
}
