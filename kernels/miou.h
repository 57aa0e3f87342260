/* miou.h: the mean IoU of one frame's class map against its labels.
 *
 * The rule of the project's scorer (bench/score-masks, whose figures agree with
 * ../shared/tools/score-masks): every mIoU the project reports or acts on is this one. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The mean, over the classes present in the label or the prediction (a non-empty union), of
 * intersection / union, over the n pixels of pred and label. Label pixels of LABEL_IGNORE or
 * >= num_classes are left out; a predicted value >= num_classes counts in the union of the
 * pixel's label class only. 1 when no class is present (nothing to get wrong). num_classes is
 * 1 to 255. */
double frame_miou(const uint8_t *pred, const uint8_t *label, size_t n, int num_classes);

/* The same, and the counts it is made of: intersection[c] and union_[c] for c < num_classes
 * (either may be NULL). */
double frame_miou_counts(const uint8_t *pred, const uint8_t *label, size_t n, int num_classes,
                         size_t *intersection, size_t *union_);
