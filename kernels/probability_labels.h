/* probability_labels.h: a teacher's class probabilities as training labels.
 *
 * One rule for every pixel, wherever the probabilities come from (the FP32 reply of a teacher, a
 * pretraining label image): the most likely class, or LABEL_IGNORE when the teacher gives that
 * class less than `confidence`. With a confidence below 0.5, a foreground probability of 0.4
 * is class 0 (its 0.6 wins), never class 1. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/* A foreground probability p, class 1 against class 0: class 1 when p >= 0.5. */
static inline uint8_t label_of_foreground(float p, double confidence)
{
  int foreground = p >= 0.5f;
  float best = foreground ? p : 1.0f - p;
  return best < confidence ? LABEL_IGNORE : (uint8_t)foreground;
}

/* The probabilities p[0], p[step], ... of `classes` classes, 2 to 255: the lowest class of the
 * largest probability. One class: p[0] is the foreground's (label_of_foreground). */
static inline uint8_t label_of_probabilities(const float *p, size_t step, int classes,
                                             double confidence)
{
  if (classes == 1)
    return label_of_foreground(p[0], confidence);
  int best = 0;
  for (int c = 1; c < classes; c++)
    if (p[c * step] > p[best * step])
      best = c;
  return p[best * step] < confidence ? LABEL_IGNORE : (uint8_t)best;
}

/* labels[y * out_w + x], out_w x out_h, from `classes` planes of w x h probabilities (planar, as
 * an FP32 [1, C, h, w] tensor; one plane: the foreground's) resized bilinearly (bilinear.h),
 * each pixel by label_of_probabilities. */
void labels_from_probabilities(const float *planes, int classes, int w, int h, double confidence,
                               int out_w, int out_h, uint8_t *labels);
