/* resize.c: public bilinear resizing entry points. */
#include "kernels.h"

void resize_bilinear_forward(const FeatureMap *x, FeatureMap *y, ThreadPool *pool)
{
  resize_bilinear_forward_ref(x, y);
}

void resize_bilinear_backward(const FeatureMap *dy, FeatureMap *dx, int accumulate,
                              ThreadPool *pool)
{
  resize_bilinear_backward_ref(dy, dx, accumulate);
}
