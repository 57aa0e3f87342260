/* conv2d_ref.c: the plain-C definition of the convolution, forward and backward. */
#include <stdlib.h>
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

/* ---- bfloat16 products ---------------------------------------------------------------------- */

float bf16_round(float f)
{
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7f800000u) == 0)
    u &= 0x80000000u; /* denormals are zero, as in AVX512-BF16 */
  else if ((u & 0x7fffffffu) > 0x7f800000u)
    u = (u | 0x00400000u) & 0xffff0000u; /* NaN stays NaN */
  else
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* A compact copy of m with every value rounded to bfloat16; free() it. */
static FeatureMap rounded_map(const FeatureMap *m)
{
  FeatureMap r = feature_map(malloc(sizeof(float) * ((size_t)m->h * m->w * m->c + 1)), m->h, m->w,
                             m->c);
  for (int y = 0; y < m->h; y++)
    for (int x = 0; x < m->w; x++)
      for (int c = 0; c < m->c; c++)
        feature_map_at(&r, y, x)[c] = bf16_round(feature_map_at(m, y, x)[c]);
  return r;
}

static float *rounded_weights(const ConvGeometry *g, const float *w)
{
  size_t n = (size_t)g->kh * g->kw * g->cin * g->cout;
  float *r = malloc(sizeof(float) * (n + 1));
  for (size_t i = 0; i < n; i++)
    r[i] = bf16_round(w[i]);
  return r;
}

void conv2d_forward_bf16_ref(const ConvGeometry *g, const FeatureMap *x, const float *w,
                             const float *bias, const FeatureMap *residual, int relu,
                             FeatureMap *y)
{
  FeatureMap xr = rounded_map(x);
  float *wr = rounded_weights(g, w);
  conv2d_forward_ref(g, &xr, wr, bias, residual, relu, y);
  free(wr);
  free(xr.data);
}

void conv2d_backward_input_bf16_ref(const ConvGeometry *g, const FeatureMap *dy, const float *w,
                                    FeatureMap *dx, int accumulate)
{
  if (!conv2d_bf16_backward_applies(g)) {
    conv2d_backward_input_ref(g, dy, w, dx, accumulate);
    return;
  }
  FeatureMap dyr = rounded_map(dy);
  float *wr = rounded_weights(g, w);
  conv2d_backward_input_ref(g, &dyr, wr, dx, accumulate);
  free(wr);
  free(dyr.data);
}

void conv2d_backward_weights_bf16_ref(const ConvGeometry *g, const FeatureMap *x,
                                      const FeatureMap *dy, float *dw, float *dbias)
{
  if (!conv2d_bf16_backward_applies(g)) {
    conv2d_backward_weights_ref(g, x, dy, dw, dbias);
    return;
  }
  FeatureMap xr = rounded_map(x), dyr = rounded_map(dy);
  conv2d_backward_weights_ref(g, &xr, &dyr, dw, NULL);
  for (int oy = 0; dbias && oy < dy->h; oy++)
    for (int ox = 0; ox < dy->w; ox++)
      for (int co = 0; co < g->cout; co++)
        dbias[co] += feature_map_at(dy, oy, ox)[co];
  free(dyr.data);
  free(xr.data);
}
