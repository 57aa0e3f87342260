/* activation_ref.c: plain-C definitions of the activations and their gradients. */
#include <math.h>

#include "kernels.h"

const char *activation_name(Activation f)
{
  static const char *const names[N_ACTIVATIONS] = { "none",     "relu",    "relu6",
                                                    "hsigmoid", "hswish", "sigmoid" };
  return f >= 0 && f < N_ACTIVATIONS ? names[f] : "?";
}

static float relu6(float z)
{
  return fminf(fmaxf(z, 0.0f), 6.0f);
}

float activation_ref(Activation f, float z)
{
  switch (f) {
  case ACTIVATION_RELU:
    return z > 0.0f ? z : 0.0f;
  case ACTIVATION_RELU6:
    return relu6(z);
  case ACTIVATION_HSIGMOID:
    return relu6(z + 3.0f) / 6.0f;
  case ACTIVATION_HSWISH:
    return z * relu6(z + 3.0f) / 6.0f;
  case ACTIVATION_SIGMOID:
    return 1.0f / (1.0f + expf(-z));
  default:
    return z;
  }
}

/* PyTorch's backward kernels (aten/src/ATen/native/cpu/Activation.cpp), kinks included. */
float activation_grad_ref(Activation f, float z, float dy)
{
  switch (f) {
  case ACTIVATION_RELU:
    return z > 0.0f ? dy : 0.0f;
  case ACTIVATION_RELU6:
    return z > 0.0f && z < 6.0f ? dy : 0.0f;
  case ACTIVATION_HSIGMOID:
    return z > -3.0f && z < 3.0f ? dy * (1.0f / 6.0f) : 0.0f;
  case ACTIVATION_HSWISH:
    return z < -3.0f ? 0.0f : z <= 3.0f ? dy * (z / 3.0f + 0.5f) : dy;
  case ACTIVATION_SIGMOID: {
    float s = activation_ref(ACTIVATION_SIGMOID, z);
    return dy * (1.0f - s) * s;
  }
  default:
    return dy;
  }
}

void activation_forward_ref(Activation f, const FeatureMap *z, FeatureMap *y)
{
  for (int py = 0; py < z->h; py++)
    for (int px = 0; px < z->w; px++) {
      const float *in = feature_map_at(z, py, px);
      float *out = feature_map_at(y, py, px);
      for (int c = 0; c < z->c; c++)
        out[c] = activation_ref(f, in[c]);
    }
}

void activation_backward_ref(Activation f, const FeatureMap *z, const FeatureMap *dy,
                             FeatureMap *dz, int accumulate)
{
  for (int py = 0; py < z->h; py++)
    for (int px = 0; px < z->w; px++) {
      const float *in = feature_map_at(z, py, px), *grad = feature_map_at(dy, py, px);
      float *out = feature_map_at(dz, py, px);
      for (int c = 0; c < z->c; c++) {
        float g = activation_grad_ref(f, in[c], grad[c]);
        out[c] = accumulate ? out[c] + g : g;
      }
    }
}
