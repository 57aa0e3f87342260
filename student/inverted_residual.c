/* inverted_residual.c: see inverted_residual.h. */
#include "inverted_residual.h"

void make_inverted_residual(InvertedResidual *b, ParamTable *table, const char *name, int cin,
                            int expansion, int cout, int stride, Activation act)
{
  char *layer = g_strdup_printf("%s.expand", name);
  b->has_expand = expansion != cin;
  if (b->has_expand)
    make_conv_layer(&b->expand, table, layer, cin, expansion, 1, 1, 1, act);
  g_free(layer);
  layer = g_strdup_printf("%s.dw", name);
  make_dw_layer(&b->dw, table, layer, expansion, stride, act, NULL);
  g_free(layer);
  layer = g_strdup_printf("%s.project", name);
  make_conv_layer(&b->project, table, layer, expansion, cout, 1, 1, 1, ACTIVATION_NONE);
  g_free(layer);
  b->residual = stride == 1 && cin == cout;
  /* With the input added, the block starts near its input. */
  if (b->residual)
    param_table_set_init(table, b->project.weight_offset, 0.1);
}

void inverted_residual_output_size(const InvertedResidual *b, int in_h, int in_w, int *out_h,
                                   int *out_w)
{
  dw_layer_output_size(&b->dw, in_h, in_w, out_h, out_w);
}

void plan_inverted_residual(InvertedResidual *b, int in_h, int in_w, Arena *arena)
{
  int h, w;
  inverted_residual_output_size(b, in_h, in_w, &h, &w);
  if (b->has_expand)
    plan_conv_layer(&b->expand, in_h, in_w, arena);
  plan_dw_layer(&b->dw, in_h, in_w, arena);
  plan_conv_layer(&b->project, h, w, arena);
}

double inverted_residual_flops(const InvertedResidual *b, int in_h, int in_w)
{
  int h, w;
  inverted_residual_output_size(b, in_h, in_w, &h, &w);
  return (b->has_expand ? conv_layer_flops(&b->expand, in_h, in_w) : 0.0) +
         dw_layer_flops(&b->dw, h, w) + conv_layer_flops(&b->project, h, w);
}

void inverted_residual_set_bf16(InvertedResidual *b, int backward, int forward)
{
  conv_layer_set_bf16(&b->expand, backward, forward);
  conv_layer_set_bf16(&b->project, backward, forward);
}

void forward_inverted_residual(InvertedResidual *b, const FeatureMap *x, const float *params,
                               ThreadPool *pool)
{
  const FeatureMap *h = x;
  if (b->has_expand) {
    forward_conv_layer(&b->expand, x, NULL, params, pool);
    h = &b->expand.output;
  }
  forward_dw_layer(&b->dw, h, params, pool);
  forward_conv_layer(&b->project, &b->dw.output, b->residual ? x : NULL, params, pool);
}

void backward_inverted_residual(InvertedResidual *b, const FeatureMap *x, const float *params,
                                float *grads, FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  backward_conv_layer(&b->project, &b->dw.output, params, grads, &b->dw.delta, 0, pool);
  /* The sum's gradient reaches the input unchanged. */
  if (b->residual) {
    feature_map_copy(&b->project.delta, dx, accumulate, pool);
    accumulate = 1;
  }
  if (!b->has_expand) {
    backward_dw_layer(&b->dw, x, params, grads, dx, accumulate, pool);
    return;
  }
  backward_dw_layer(&b->dw, &b->expand.output, params, grads, &b->expand.delta, 0, pool);
  backward_conv_layer(&b->expand, x, params, grads, dx, accumulate, pool);
}
