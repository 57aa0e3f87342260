/* dw_layer.c: see dw_layer.h. */
#include "dw_layer.h"

#include <string.h>

#define CENTRE_TAP 4 /* (ky, kx) = (1, 1) in the tap-major weights of kernels.h */

void make_dw_layer(DwLayer *l, ParamTable *table, const char *name, int channels, int stride,
                   Activation act, const char *fusion_name)
{
  *l = (DwLayer){ .channels = channels, .stride = stride, .act = act,
                  .fusion_offset = DW_NO_FUSION };
  char *weight_name = g_strdup_printf("%s.weight", name);
  char *bias_name = g_strdup_printf("%s.bias", name);
  /* [C, 1, 3, 3] as a convolution weight of one input channel: in memory HWIO with cin 1 is
   * exactly the depthwise kernels' tap-major w[tap * C + c]. */
  l->weight_offset = param_table_add(table, weight_name, 4, (int[]){ channels, 1, 3, 3 }, TRUE);
  l->bias_offset = param_table_add(table, bias_name, 1, (int[]){ channels }, FALSE);
  if (fusion_name) {
    l->fusion_offset = param_table_add(table, fusion_name, 1, (int[]){ channels }, FALSE);
    param_table_set_init(table, l->fusion_offset, 1.0);
  }
  g_free(weight_name);
  g_free(bias_name);
}

void dw_layer_output_size(const DwLayer *l, int in_h, int in_w, int *out_h, int *out_w)
{
  *out_h = dwconv3x3_output_size(in_h, l->stride);
  *out_w = dwconv3x3_output_size(in_w, l->stride);
}

static int separate_preact(const DwLayer *l)
{
  return l->act != ACTIVATION_NONE && l->act != ACTIVATION_RELU;
}

void plan_dw_layer_into(DwLayer *l, int in_h, int in_w, FeatureMap output, FeatureMap delta,
                        Arena *arena)
{
  int h, w;
  dw_layer_output_size(l, in_h, in_w, &h, &w);
  l->output = output;
  l->delta = delta;
  l->preact = separate_preact(l) ? arena_feature_map(arena, h, w, l->channels)
                                 : (FeatureMap){ 0 };
  if (l->fusion_offset != DW_NO_FUSION) {
    l->fused_weights = arena_feature_map(arena, 1, 9, l->channels).data;
    l->fused_grads = arena_feature_map(arena, 1, 9, l->channels).data;
  }
}

void plan_dw_layer(DwLayer *l, int in_h, int in_w, Arena *arena)
{
  int h, w;
  dw_layer_output_size(l, in_h, in_w, &h, &w);
  FeatureMap output = arena_feature_map(arena, h, w, l->channels);
  FeatureMap delta = arena_feature_map(arena, h, w, l->channels);
  plan_dw_layer_into(l, in_h, in_w, output, delta, arena);
}

double dw_layer_flops(const DwLayer *l, int out_h, int out_w)
{
  return 2.0 * 9 * out_h * out_w * l->channels;
}

void dw_layer_fuse(const DwLayer *l, const float *params, float *fused_weights)
{
  memcpy(fused_weights, params + l->weight_offset, sizeof(float) * 9 * l->channels);
  const float *fusion = params + l->fusion_offset;
  for (int c = 0; c < l->channels; c++)
    fused_weights[CENTRE_TAP * l->channels + c] += fusion[c];
}

/* The weights the kernels run with. */
static const float *weights(DwLayer *l, const float *params)
{
  if (l->fusion_offset == DW_NO_FUSION)
    return params + l->weight_offset;
  dw_layer_fuse(l, params, l->fused_weights);
  return l->fused_weights;
}

void forward_dw_layer(DwLayer *l, const FeatureMap *x, const float *params, ThreadPool *pool)
{
  dwconv3x3_forward(x, weights(l, params), params + l->bias_offset, l->stride, l->act,
                    separate_preact(l) ? &l->preact : NULL, &l->output, pool);
}

void backward_dw_layer(DwLayer *l, const FeatureMap *x, const float *params, float *grads,
                       FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  const FeatureMap *act_input = separate_preact(l) ? &l->preact : &l->output;
  if (l->fusion_offset == DW_NO_FUSION) {
    dwconv3x3_backward(x, params + l->weight_offset, l->stride, l->act, act_input, &l->delta,
                       grads + l->weight_offset, grads + l->bias_offset, dx, accumulate, pool);
    return;
  }
  /* The fused weights' gradient is the weight's, and its centre taps the fusion's. */
  size_t n = (size_t)9 * l->channels;
  memset(l->fused_grads, 0, sizeof(float) * n);
  dwconv3x3_backward(x, weights(l, params), l->stride, l->act, act_input, &l->delta,
                     l->fused_grads, grads + l->bias_offset, dx, accumulate, pool);
  float *dw = grads + l->weight_offset, *dfusion = grads + l->fusion_offset;
  for (size_t i = 0; i < n; i++)
    dw[i] += l->fused_grads[i];
  for (int c = 0; c < l->channels; c++)
    dfusion[c] += l->fused_grads[CENTRE_TAP * l->channels + c];
}
