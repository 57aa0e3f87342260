/* distill_policy.c: the teacher-stride policy of Mullapudi et al. (ICCV 2019). */
#include "distill.h"

gboolean distill_policy_keep_training(const DistillConfig *cfg, guint updates, double miou)
{
  return cfg->train && updates < cfg->max_updates && miou < cfg->accuracy_threshold;
}

guint distill_policy_next_stride(const DistillConfig *cfg, guint stride, double miou)
{
  guint next = miou >= cfg->accuracy_threshold ? stride * 2 : stride / 2;
  return CLAMP(next, cfg->min_stride, cfg->max_stride);
}

/* Between answers the user sees the fused map, not the student's: when the student fits the
 * frame but the scene's next frames will not follow (a teacher that flickers between two
 * readings of a scene), the fused map on the new frame, before its answer, tells; the student's
 * measure after its steps only says that it fitted this frame. */
double distill_policy_stride_miou(const DistillRound *round)
{
  return round->fused_miou >= 0.0 ? round->fused_miou : round->miou_after;
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
