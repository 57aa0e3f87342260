/* distill_governor.c: the compute governor of distill.h, pure functions of measured times.
 *
 * The cost of a forward pass grows with the input's area, so a size that fits the budget is
 * predicted from the time measured at the size in use, scaled by the ratio of the areas. The
 * prediction overestimates a larger size (part of the cost does not scale), so raising is
 * cautious; lowering aims under the budget and raising needs more room than that, so that a size
 * reached either way is kept. */
#include <math.h>

#include "distill.h"
#include "kernels.h"

/* Frames measured at a size before it is judged: enough for the mean to settle, few enough that
 * an overloaded camera is relieved within a second. Raising waits longer: a size too large costs
 * the trainer its time, one too small costs a little accuracy. */
#define LOWER_AFTER_FRAMES 8
#define RAISE_AFTER_FRAMES 32
/* The mean inference time: of the last this many frames, about. */
#define MEAN_WINDOW 16
/* Lowering aims at this share of the budget, raising needs the size to fit in the smaller one. */
#define LOWER_TO 0.85
#define RAISE_WITHIN 0.75

void distill_governor_init(DistillGovernor *g, int nominal_long_side)
{
  g->nominal = nominal_long_side;
  g->floor = MIN(nominal_long_side, DISTILL_GOVERNOR_FLOOR);
  g->long_side = nominal_long_side;
  g->ms = 0.0;
  g->frames = 0;
  g->settling = 0;
}

/* The largest long side in [g->floor, g->nominal], on the step grid (or the nominal size itself),
 * at which the predicted load fits `target`. */
static int largest_fitting(const DistillGovernor *g, double load, double target)
{
  if (load * ((double)g->nominal / g->long_side) * ((double)g->nominal / g->long_side) <= target)
    return g->nominal;
  double fit = target > 0.0 ? g->long_side * sqrt(target / load) : 0.0;
  int side = (int)(fit / DISTILL_GOVERNOR_STEP) * DISTILL_GOVERNOR_STEP;
  return CLAMP(side, g->floor, g->nominal);
}

DistillResizeReason distill_governor_update(DistillGovernor *g, double budget, double ms,
                                            double interval_ms, double others_load)
{
  if (g->settling) { /* the first frame at a new size plans its buffers: not the size's cost */
    g->settling--;
    return DISTILL_RESIZE_NONE;
  }
  g->frames++;
  g->ms += (ms - g->ms) / MIN(g->frames, MEAN_WINDOW);
  if (budget <= 0.0 || interval_ms <= 0.0)
    return DISTILL_RESIZE_NONE;

  double load = g->ms / interval_ms;
  int side = g->long_side;
  DistillResizeReason reason = DISTILL_RESIZE_NONE;
  if (g->frames >= LOWER_AFTER_FRAMES && load + others_load > budget && side > g->floor) {
    side = MIN(largest_fitting(g, load, LOWER_TO * budget - others_load), side - 1);
    side = MAX(side, g->floor);
    reason = DISTILL_RESIZE_OVER_BUDGET;
  } else if (g->frames >= RAISE_AFTER_FRAMES && side < g->nominal) {
    int larger = largest_fitting(g, load, RAISE_WITHIN * budget - others_load);
    if (larger > side) {
      side = larger;
      reason = DISTILL_RESIZE_ROOM;
    }
  }
  if (reason != DISTILL_RESIZE_NONE) {
    /* The new size's first frames are measured afresh; until then, the prediction stands. */
    g->ms *= ((double)side / g->long_side) * ((double)side / g->long_side);
    g->long_side = side;
    g->frames = 0;
    g->settling = 1;
  }
  return reason;
}

void distill_governor_size(const DistillGovernor *g, int nominal_h, int nominal_w, int *h, int *w)
{
  if (g->long_side >= g->nominal) {
    *h = nominal_h;
    *w = nominal_w;
    return;
  }
  double scale = (double)g->long_side / g->nominal;
  *h = MAX((int)lround(nominal_h * scale / 2) * 2, 2);
  *w = MAX((int)lround(nominal_w * scale / 2) * 2, 2);
}

double distill_frame_interval(double mean_ms, double delta_ms)
{
  /* A gap (a dropped frame, a paused source) or a step backwards is not the camera's rate. */
  if (delta_ms <= 0.0 || (mean_ms > 0.0 && delta_ms > 4.0 * mean_ms) || delta_ms > 10000.0)
    return mean_ms;
  return mean_ms > 0.0 ? mean_ms + (delta_ms - mean_ms) / MEAN_WINDOW : delta_ms;
}

const char *distill_resize_describe(DistillResizeReason reason)
{
  switch (reason) {
  case DISTILL_RESIZE_OVER_BUDGET:
    return "inference took more than its budget of the frame interval";
  case DISTILL_RESIZE_ROOM:
    return "a larger input fits the budget";
  case DISTILL_RESIZE_HIBERNATING:
    return "training hibernates: inference gets its share";
  case DISTILL_RESIZE_FINER:
    return "a finer class map would resolve thin things and the trainer has time to spare";
  case DISTILL_RESIZE_TRAINER_BEHIND:
    return "the trainer cannot keep up at this size";
  case DISTILL_RESIZE_NONE:
    break;
  }
  return "no change";
}

/* ---- the training size ------------------------------------------------------------------- */

/* Rounds measured at a size before it is judged: the student has adapted at it, and the means
 * have settled. The trainer's share after a step up is predicted from the share before, scaled
 * by the areas (an update costs about the input's area); it must leave the trainer some time
 * to spare, as a burst of teacher frames (a scene change) lengthens its rounds. Stepping down
 * waits until the trainer was in rounds nearly all the time. */
#define GROWTH_AFTER_ROUNDS 4
#define GROWTH_MEAN_WINDOW 8
#define GROW_WHILE_BUSY_UNDER 0.9
#define SHRINK_WHEN_BUSY_OVER 0.95
/* Rounds before a size stepped back from is tried again (some 30 s at vtest's stride). */
#define RETRY_TOO_LARGE_AFTER_ROUNDS 40

/* The largest size on the step grid from g->base below side. */
static int step_below(const DistillGrowth *g, int side)
{
  return g->base + (side - g->base - 1) / DISTILL_GROWTH_STEP * DISTILL_GROWTH_STEP;
}

void distill_growth_init(DistillGrowth *g, int base, int largest)
{
  g->base = base;
  g->largest = largest;
  g->long_side = base;
  g->coarse_miou = 1.0;
  g->busy = 0.0;
  g->rounds = 0;
  g->too_large = 0;
  g->since_too_large = 0;
}

DistillResizeReason distill_growth_update(DistillGrowth *g, double coarse_miou, double busy,
                                          double inference_load, double inference_room,
                                          gboolean stream_lowered)
{
  g->rounds++;
  if (g->too_large && ++g->since_too_large >= RETRY_TOO_LARGE_AFTER_ROUNDS)
    g->too_large = 0;
  double weight = 1.0 / MIN(g->rounds, GROWTH_MEAN_WINDOW);
  g->coarse_miou += (coarse_miou - g->coarse_miou) * weight;
  g->busy += (busy - g->busy) * weight;
  if (g->rounds < GROWTH_AFTER_ROUNDS)
    return DISTILL_RESIZE_NONE;

  int side = g->long_side;
  DistillResizeReason reason = DISTILL_RESIZE_NONE;
  if ((stream_lowered || g->busy > SHRINK_WHEN_BUSY_OVER) && side > g->base) {
    g->too_large = side;
    g->since_too_large = 0;
    side = MAX(side - DISTILL_GROWTH_STEP, g->base);
    reason = stream_lowered ? DISTILL_RESIZE_OVER_BUDGET : DISTILL_RESIZE_TRAINER_BEHIND;
  } else if (g->coarse_miou < DISTILL_GROWTH_COARSE_MIOU && side < g->largest) {
    /* The largest size on the step grid (or the largest itself) that fits both, below one
     * stepped back from lately; the stream's inference as the governor raises its size. */
    int limit = g->too_large ? step_below(g, g->too_large) : g->largest;
    for (int larger = limit; larger > side; larger = step_below(g, larger)) {
      double area = ((double)larger / side) * ((double)larger / side);
      if (g->busy * area <= GROW_WHILE_BUSY_UNDER &&
          inference_load * area <= RAISE_WITHIN * inference_room) {
        side = larger;
        reason = DISTILL_RESIZE_FINER;
        break;
      }
    }
  }
  if (reason != DISTILL_RESIZE_NONE) {
    g->long_side = side;
    g->rounds = 0;
  }
  return reason;
}

double distill_resolution_miou(const uint8_t *labels, int h, int w, int num_classes,
                               float *scratch, uint8_t *coarse, ThreadPool *pool)
{
  FeatureMap shares = feature_map(scratch, (h + 1) / 2, (w + 1) / 2, num_classes);
  for (int y = 0; y < shares.h; y++)
    for (int x = 0; x < shares.w; x++) {
      float *share = feature_map_at(&shares, y, x);
      int counted = 0;
      for (int c = 0; c < num_classes; c++)
        share[c] = 0.0f;
      for (int dy = 0; dy < 2 && 2 * y + dy < h; dy++)
        for (int dx = 0; dx < 2 && 2 * x + dx < w; dx++) {
          uint8_t k = labels[(size_t)(2 * y + dy) * w + 2 * x + dx];
          if (k < num_classes) {
            share[k] += 1.0f;
            counted++;
          }
        }
      for (int c = 0; c < num_classes && counted; c++)
        share[c] /= (float)counted;
    }
  argmax_bilinear(&shares, w, h, coarse, (size_t)w, pool);
  return frame_miou(coarse, labels, (size_t)h * w, num_classes);
}
