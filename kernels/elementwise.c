/* elementwise.c: public element-wise entry points. */
#include "kernels.h"

void relu_backward(const FeatureMap *y, FeatureMap *dy, ThreadPool *pool)
{
  relu_backward_ref(y, dy);
}

void feature_map_copy(const FeatureMap *src, FeatureMap *dst, int accumulate, ThreadPool *pool)
{
  feature_map_copy_ref(src, dst, accumulate);
}

void subsample2_forward(const FeatureMap *x, FeatureMap *y, ThreadPool *pool)
{
  subsample2_forward_ref(x, y);
}

void subsample2_backward(const FeatureMap *dy, FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  subsample2_backward_ref(dy, dx, accumulate);
}
