/* conv2d_ref.c: the plain-C definition of the convolution, forward and backward. */
#include <string.h>

#include "kernels.h"

void conv2d_forward_ref(const ConvGeometry *g, const FeatureMap *x, const float *w,
                        const float *bias, const FeatureMap *residual, int relu, FeatureMap *y)
{
  for (int oy = 0; oy < y->h; oy++)
    for (int ox = 0; ox < y->w; ox++) {
      float *out = feature_map_at(y, oy, ox);
      for (int co = 0; co < g->cout; co++) {
        float acc = bias ? bias[co] : 0.0f;
        for (int ky = 0; ky < g->kh; ky++) {
          int iy = oy * g->stride + ky - g->pad_h;
          if (iy < 0 || iy >= x->h)
            continue;
          for (int kx = 0; kx < g->kw; kx++) {
            int ix = ox * g->stride + kx - g->pad_w;
            if (ix < 0 || ix >= x->w)
              continue;
            const float *in = feature_map_at(x, iy, ix);
            const float *wk = w + (size_t)(ky * g->kw + kx) * g->cin * g->cout + co;
            for (int ci = 0; ci < g->cin; ci++)
              acc += in[ci] * wk[(size_t)ci * g->cout];
          }
        }
        if (residual)
          acc += feature_map_at(residual, oy, ox)[co];
        out[co] = relu && acc < 0.0f ? 0.0f : acc;
      }
    }
}

void conv2d_backward_input_ref(const ConvGeometry *g, const FeatureMap *dy, const float *w,
                               FeatureMap *dx, int accumulate)
{
  if (!accumulate)
    for (int iy = 0; iy < dx->h; iy++)
      for (int ix = 0; ix < dx->w; ix++)
        memset(feature_map_at(dx, iy, ix), 0, sizeof(float) * g->cin);
  for (int oy = 0; oy < dy->h; oy++)
    for (int ox = 0; ox < dy->w; ox++) {
      const float *grad = feature_map_at(dy, oy, ox);
      for (int ky = 0; ky < g->kh; ky++) {
        int iy = oy * g->stride + ky - g->pad_h;
        if (iy < 0 || iy >= dx->h)
          continue;
        for (int kx = 0; kx < g->kw; kx++) {
          int ix = ox * g->stride + kx - g->pad_w;
          if (ix < 0 || ix >= dx->w)
            continue;
          float *in_grad = feature_map_at(dx, iy, ix);
          const float *wk = w + (size_t)(ky * g->kw + kx) * g->cin * g->cout;
          for (int ci = 0; ci < g->cin; ci++) {
            float acc = 0.0f;
            for (int co = 0; co < g->cout; co++)
              acc += wk[(size_t)ci * g->cout + co] * grad[co];
            in_grad[ci] += acc;
          }
        }
      }
    }
}

void conv2d_backward_weights_ref(const ConvGeometry *g, const FeatureMap *x, const FeatureMap *dy,
                                 float *dw, float *dbias)
{
  for (int oy = 0; oy < dy->h; oy++)
    for (int ox = 0; ox < dy->w; ox++) {
      const float *grad = feature_map_at(dy, oy, ox);
      if (dbias)
        for (int co = 0; co < g->cout; co++)
          dbias[co] += grad[co];
      for (int ky = 0; ky < g->kh; ky++) {
        int iy = oy * g->stride + ky - g->pad_h;
        if (iy < 0 || iy >= x->h)
          continue;
        for (int kx = 0; kx < g->kw; kx++) {
          int ix = ox * g->stride + kx - g->pad_w;
          if (ix < 0 || ix >= x->w)
            continue;
          const float *in = feature_map_at(x, iy, ix);
          float *wk = dw + (size_t)(ky * g->kw + kx) * g->cin * g->cout;
          for (int ci = 0; ci < g->cin; ci++)
            for (int co = 0; co < g->cout; co++)
              wk[(size_t)ci * g->cout + co] += in[ci] * grad[co];
        }
      }
    }
}
