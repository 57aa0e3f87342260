/* distill_fusion.c: the student's logits fused with the teacher's last mask (distill.h,
 * DistillFusion).
 *
 * Between teacher frames the user sees either what the student predicts or, in effect, what
 * the teacher said some frames ago; which is closer to the truth depends on the scene (a still
 * one favours the held mask, a busy one the student) and on how far the student has come. Each
 * teacher frame answers that question for the frames before it: the previous answer, held, and
 * the student's logits on the new frame, against the new answer. The fused class is
 * argmax_c l_c + held [k == c]: the held answer's class k wins unless the student prefers
 * another by more than `held`. The weight is chosen on a grid by the mIoU it would have given,
 * the scorer's measure, averaged over the recent teacher frames; a likelihood fit would favour
 * the many background pixels over the few the mIoU turns on. */
#include "distill_private.h"

/* From the student's own map (0) to the held answer's. */
static const double held_grid[DISTILL_FUSION_GRID] = {
  0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, DISTILL_FUSION_ALONE,
};
/* Weight of a teacher frame's scores in the running ones: the balance moves as the student
 * learns and the scene changes, so the last few frames count. */
#define FUSION_RATE 0.5

void distill_fusion_init(DistillFusion *f)
{
  /* Until a first fit has measured the student, the held answer alone: the teacher's answer is
   * the better of the two before the student has learnt from it (what distilling assumes). */
  *f = (DistillFusion){ .held = held_grid[DISTILL_FUSION_GRID - 1], .rounds = 0 };
}

/* The fused class of a pixel: the student's best, unless the held class is within `held`. */
static int fused_class(const float *l, int classes, int k, float held)
{
  int best = 0;
  float top = l[0] + (k == 0 ? held : 0.0f);
  for (int c = 1; c < classes; c++) {
    float z = l[c] + (c == k ? held : 0.0f);
    if (z > top) {
      top = z;
      best = c;
    }
  }
  return best;
}

double distill_fusion_fit(DistillFusion *f, const FeatureMap *logits, const uint8_t *held,
                          const uint8_t *labels, uint8_t *scratch)
{
  size_t n = (size_t)logits->h * logits->w;
  double rate = f->rounds ? FUSION_RATE : 1.0, shown = 0.0;
  int best = 0;
  for (int j = 0; j < DISTILL_FUSION_GRID; j++) {
    for (int y = 0; y < logits->h; y++)
      for (int x = 0; x < logits->w; x++) {
        size_t i = (size_t)y * logits->w + x;
        scratch[i] = (uint8_t)fused_class(feature_map_at(logits, y, x), logits->c, held[i],
                                          (float)held_grid[j]);
      }
    double miou = frame_miou(scratch, labels, n, logits->c);
    if (held_grid[j] == f->held)
      shown = miou; /* the weight in use: what the stream showed */
    f->score[j] += rate * (miou - f->score[j]);
    if (f->score[j] > f->score[best])
      best = j;
  }
  f->held = held_grid[best];
  f->rounds++;
  return shown;
}

void distill_fusion_apply(double weight, const FeatureMap *logits, const uint8_t *held,
                          int held_h, int held_w, FeatureMap *out)
{
  float w = (float)weight;
  for (int y = 0; y < logits->h; y++) {
    /* The held mask at its own size, nearest pixel: the governor may run the stream smaller. */
    const uint8_t *row = held + (size_t)(y * held_h / logits->h) * held_w;
    for (int x = 0; x < logits->w; x++) {
      const float *l = feature_map_at(logits, y, x);
      float *o = feature_map_at(out, y, x);
      int k = row[x * held_w / logits->w];
      for (int c = 0; c < logits->c; c++)
        o[c] = l[c] + (c == k ? w : 0.0f);
    }
  }
}

double distill_fusion_weight_at(double fitted, guint fitted_age, guint age)
{
  if (age == 0)
    return DISTILL_FUSION_ALONE;
  if (!fitted_age || age >= fitted_age)
    return fitted;
  return fitted + (DISTILL_FUSION_ALONE - fitted) * (1.0 - (double)age / (double)fitted_age);
}
