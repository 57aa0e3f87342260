/* dwconv_ref.c: the plain-C definition of the depthwise 3x3 convolution, forward and backward. */
#include <string.h>

#include "kernels.h"

/* Input (row or column) of output o at tap k: o * stride + k - 1 (padding 1). */
static int tap_input(int o, int k, int stride)
{
  return o * stride + k - 1;
}

void dwconv3x3_forward_ref(const FeatureMap *x, const float *w, const float *bias, int stride,
                           Activation f, FeatureMap *z, FeatureMap *y)
{
  for (int oy = 0; oy < y->h; oy++)
    for (int ox = 0; ox < y->w; ox++)
      for (int c = 0; c < x->c; c++) {
        float acc = bias ? bias[c] : 0.0f;
        for (int ky = 0; ky < 3; ky++) {
          int iy = tap_input(oy, ky, stride);
          for (int kx = 0; kx < 3 && iy >= 0 && iy < x->h; kx++) {
            int ix = tap_input(ox, kx, stride);
            if (ix >= 0 && ix < x->w)
              acc += feature_map_at(x, iy, ix)[c] * w[(ky * 3 + kx) * x->c + c];
          }
        }
        if (z)
          feature_map_at(z, oy, ox)[c] = acc;
        feature_map_at(y, oy, ox)[c] = activation_ref(f, acc);
      }
}

void dwconv3x3_backward_ref(const FeatureMap *x, const float *w, int stride, Activation f,
                            const FeatureMap *act_input, FeatureMap *dy, float *dw, float *dbias,
                            FeatureMap *dx, int accumulate)
{
  int c = x->c;
  if (f != ACTIVATION_NONE)
    activation_backward_ref(f, act_input, dy, dy, 0);
  if (dx && !accumulate)
    for (int iy = 0; iy < dx->h; iy++)
      for (int ix = 0; ix < dx->w; ix++)
        memset(feature_map_at(dx, iy, ix), 0, sizeof(float) * c);
  for (int oy = 0; oy < dy->h; oy++)
    for (int ox = 0; ox < dy->w; ox++) {
      const float *grad = feature_map_at(dy, oy, ox);
      for (int ch = 0; dbias && ch < c; ch++)
        dbias[ch] += grad[ch];
      for (int ky = 0; ky < 3; ky++) {
        int iy = tap_input(oy, ky, stride);
        for (int kx = 0; kx < 3 && iy >= 0 && iy < x->h; kx++) {
          int ix = tap_input(ox, kx, stride);
          if (ix < 0 || ix >= x->w)
            continue;
          const float *in = feature_map_at(x, iy, ix);
          float *in_grad = dx ? feature_map_at(dx, iy, ix) : NULL;
          for (int ch = 0; ch < c; ch++) {
            dw[(ky * 3 + kx) * c + ch] += grad[ch] * in[ch];
            if (in_grad)
              in_grad[ch] += grad[ch] * w[(ky * 3 + kx) * c + ch];
          }
        }
      }
    }
}
