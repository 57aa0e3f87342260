/* conv_layer.c: see conv_layer.h. */
#include "conv_layer.h"

void make_conv_layer(ConvLayer *l, ParamTable *table, const char *name, int cin, int cout,
                     int kh, int kw, int stride, Activation act)
{
  *l = (ConvLayer){
    .geom = { .kh = kh, .kw = kw, .stride = stride, .pad_h = kh / 2, .pad_w = kw / 2,
              .cin = cin, .cout = cout },
    .act = act,
  };
  char *weight_name = g_strdup_printf("%s.weight", name);
  char *bias_name = g_strdup_printf("%s.bias", name);
  l->weight_offset = param_table_add(table, weight_name, 4, (int[]){ cout, cin, kh, kw }, TRUE);
  l->bias_offset = param_table_add(table, bias_name, 1, (int[]){ cout }, FALSE);
  g_free(weight_name);
  g_free(bias_name);
}

void conv_layer_output_size(const ConvLayer *l, int in_h, int in_w, int *out_h, int *out_w)
{
  const ConvGeometry *g = &l->geom;
  *out_h = conv_output_size(in_h, g->kh, g->stride, g->pad_h);
  *out_w = conv_output_size(in_w, g->kw, g->stride, g->pad_w);
}

static int separate_activation(const ConvLayer *l)
{
  return l->act != ACTIVATION_NONE && l->act != ACTIVATION_RELU;
}

void plan_conv_layer_into(ConvLayer *l, int in_h, int in_w, FeatureMap output, FeatureMap delta,
                          Arena *arena)
{
  int h, w;
  conv_layer_output_size(l, in_h, in_w, &h, &w);
  l->output = output;
  l->delta = delta;
  l->preact = separate_activation(l) ? arena_feature_map(arena, h, w, l->geom.cout)
                                     : (FeatureMap){ 0 };
}

void plan_conv_layer(ConvLayer *l, int in_h, int in_w, Arena *arena)
{
  int h, w;
  conv_layer_output_size(l, in_h, in_w, &h, &w);
  FeatureMap output = arena_feature_map(arena, h, w, l->geom.cout);
  FeatureMap delta = arena_feature_map(arena, h, w, l->geom.cout);
  plan_conv_layer_into(l, in_h, in_w, output, delta, arena);
}

double conv_layer_flops(const ConvLayer *l, int out_h, int out_w)
{
  const ConvGeometry *g = &l->geom;
  return 2.0 * out_h * out_w * g->cout * g->cin * g->kh * g->kw;
}

void conv_layer_set_bf16(ConvLayer *l, int backward, int forward)
{
  l->bf16 = backward;
  l->bf16_forward = forward;
}

/* Whether the forward pass gains from bfloat16 products: at least 16 input and output channels
 * (the pairs cost more than they save below) and 1024 output pixels (the weights are packed into
 * pairs on every call: on the 20x15 maps of a 640x480 input that costs more than the products
 * save). distill-bench-conv, 640x360: 1.3-1.8x on the wide layers. */
static int bf16_forward_pays(const ConvLayer *l)
{
  return l->geom.cin >= 16 && l->geom.cout >= 16 && l->output.h * l->output.w >= 1024;
}

void forward_conv_layer(ConvLayer *l, const FeatureMap *x, const FeatureMap *residual,
                        const float *params, ThreadPool *pool)
{
  int bf16 = l->bf16_forward && bf16_forward_pays(l);
  FeatureMap *z = separate_activation(l) ? &l->preact : &l->output;
  (bf16 ? conv2d_forward_bf16 : conv2d_forward)(&l->geom, x, params + l->weight_offset,
                                                params + l->bias_offset, residual,
                                                l->act == ACTIVATION_RELU, z, pool);
  if (separate_activation(l))
    activation_forward(l->act, &l->preact, &l->output, pool);
}

void backward_conv_layer(ConvLayer *l, const FeatureMap *x, const float *params, float *grads,
                         FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  if (separate_activation(l))
    activation_backward(l->act, &l->preact, &l->delta, &l->delta, 0, pool);
  (l->bf16 ? conv2d_backward_bf16 : conv2d_backward)(&l->geom, x, params + l->weight_offset,
                                                     l->act == ACTIVATION_RELU ? &l->output
                                                                               : NULL,
                                                     &l->delta, grads + l->weight_offset,
                                                     grads + l->bias_offset, dx, accumulate,
                                                     pool);
}
