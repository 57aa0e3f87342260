/* loss.c: public loss and argmax entry points. */
#include "kernels.h"

double softmax_xent(const FeatureMap *logits, const uint8_t *labels, const float *pixel_weight,
                    FeatureMap *dlogits, ThreadPool *pool)
{
  return softmax_xent_ref(logits, labels, pixel_weight, dlogits);
}

void argmax_channels(const FeatureMap *logits, uint8_t *classes, ThreadPool *pool)
{
  argmax_channels_ref(logits, classes);
}
