/* conv2d.c: public convolution entry points (dispatch and threading come with the fast paths). */
#include "kernels.h"

void conv2d_forward(const ConvGeometry *g, const FeatureMap *x, const float *w, const float *bias,
                    const FeatureMap *residual, int relu, FeatureMap *y, ThreadPool *pool)
{
  conv2d_forward_ref(g, x, w, bias, residual, relu, y);
}

void conv2d_backward_input(const ConvGeometry *g, const FeatureMap *dy, const float *w,
                           FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  conv2d_backward_input_ref(g, dy, w, dx, accumulate);
}

void conv2d_backward_weights(const ConvGeometry *g, const FeatureMap *x, const FeatureMap *dy,
                             float *dw, float *dbias, ThreadPool *pool)
{
  conv2d_backward_weights_ref(g, x, dy, dw, dbias);
}
