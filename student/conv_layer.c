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

/* Multiply-adds of a pointwise convolution's pass from which bfloat16 pays on more than one thread:
 * each of its extra runs of the pool (the weights packed into pairs, the input or dy converted)
 * wakes the other cores, and on the narrow layers of mobilenet and repghost that cost more than
 * the products saved. distill-bench-blocks (bench/README.md, "bfloat16"), 2 threads: 0.85-0.97x
 * the fp32 time from these sizes on, mostly 1.0-2.9x below. */
#define BF16_POINTWISE_FORWARD_MIN_MACS 19e6
#define BF16_POINTWISE_BACKWARD_MIN_MACS 14e6

static double pointwise_macs(const ConvLayer *l)
{
  return (double)l->output.h * l->output.w * l->geom.cin * l->geom.cout;
}

static int min_channels(const ConvLayer *l)
{
  return l->geom.cin < l->geom.cout ? l->geom.cin : l->geom.cout;
}

/* Whether the forward pass gains from bfloat16 products: at least 16 input and output channels
 * (the pairs cost more than they save below) and 1024 output pixels (the weights are packed into
 * pairs on every call: on the 20x15 maps of a 640x480 input that costs more than the products
 * save). distill-bench-conv, 640x360: 1.3-1.8x on the wide layers. A pointwise convolution has
 * fewer products for the same packing and conversion: 24 channels on one thread (with 16 on a
 * side, 0.9-1.3x the fp32 time), on more 32 and BF16_POINTWISE_FORWARD_MIN_MACS. */
static int bf16_forward_pays(const ConvLayer *l, int threads)
{
  if (l->output.h * l->output.w < 1024)
    return 0;
  if (!conv2d_is_pointwise(&l->geom))
    return min_channels(l) >= 16;
  if (threads > 1)
    return min_channels(l) >= 32 && pointwise_macs(l) >= BF16_POINTWISE_FORWARD_MIN_MACS;
  return min_channels(l) >= 24;
}

/* Whether the backward pass gains from bfloat16 products (conv2d_backward_bf16 itself keeps
 * layers under 16 channels in fp32): a pointwise convolution needs 32 channels (with 16 or 24 on
 * a side its pixel pairs cost about what the products save) and on more than one thread
 * BF16_POINTWISE_BACKWARD_MIN_MACS. */
static int bf16_backward_pays(const ConvLayer *l, int threads)
{
  if (!conv2d_is_pointwise(&l->geom))
    return 1;
  return min_channels(l) >= 32 &&
         (threads == 1 || pointwise_macs(l) >= BF16_POINTWISE_BACKWARD_MIN_MACS);
}

void forward_conv_layer(ConvLayer *l, const FeatureMap *x, const FeatureMap *residual,
                        const float *params, ThreadPool *pool)
{
  int bf16 = l->bf16_forward && bf16_forward_pays(l, thread_pool_threads(pool));
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
  int bf16 = l->bf16 && bf16_backward_pays(l, thread_pool_threads(pool));
  (bf16 ? conv2d_backward_bf16 : conv2d_backward)(&l->geom, x, params + l->weight_offset,
                                                   l->act == ACTIVATION_RELU ? &l->output : NULL,
                                                   &l->delta, grads + l->weight_offset,
                                                   grads + l->bias_offset, dx, accumulate, pool);
}
