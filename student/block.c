/* block.c: see block.h. */
#include "block.h"

#include <string.h>

void make_block(Block *b, ParamTable *table, const char *name, int cin, int cout, int stride)
{
  char *conv_name = g_strdup_printf("%s.conv1", name);
  make_conv_layer(&b->conv1, table, conv_name, cin, cout, 3, 3, stride, ACTIVATION_RELU);
  conv_name[strlen(conv_name) - 1] = '2';
  make_conv_layer(&b->conv2, table, conv_name, cout, cout, 1, 3, 1, ACTIVATION_NONE);
  conv_name[strlen(conv_name) - 1] = '3';
  /* The ReLU after the residual sum belongs to conv3: its output is the block's. The branch
   * starts near zero, the block near its shortcut. */
  make_conv_layer(&b->conv3, table, conv_name, cout, cout, 3, 1, 1, ACTIVATION_RELU);
  param_table_set_init(table, b->conv3.weight_offset, 0.1);
  g_free(conv_name);

  if (cin == cout) {
    b->shortcut_kind = stride == 1 ? SHORTCUT_IDENTITY : SHORTCUT_SUBSAMPLE;
  } else {
    b->shortcut_kind = SHORTCUT_CONV;
    char *shortcut_name = g_strdup_printf("%s.shortcut", name);
    make_conv_layer(&b->shortcut, table, shortcut_name, cin, cout, 1, 1, stride,
                    ACTIVATION_NONE);
    g_free(shortcut_name);
  }
}

void block_output_size(const Block *b, int in_h, int in_w, int *out_h, int *out_w)
{
  conv_layer_output_size(&b->conv1, in_h, in_w, out_h, out_w);
}

void plan_block(Block *b, int in_h, int in_w, FeatureMap output, FeatureMap delta,
                Arena *arena)
{
  int h, w;
  block_output_size(b, in_h, in_w, &h, &w);
  plan_conv_layer(&b->conv1, in_h, in_w, arena);
  plan_conv_layer(&b->conv2, h, w, arena);
  b->conv3.output = output;
  b->conv3.delta = delta;
  if (b->shortcut_kind == SHORTCUT_CONV) {
    b->shortcut.output = arena_feature_map(arena, h, w, b->shortcut.geom.cout);
    b->shortcut.delta = delta;
  } else if (b->shortcut_kind == SHORTCUT_SUBSAMPLE) {
    b->subsampled = arena_feature_map(arena, h, w, b->conv3.geom.cout);
  }
}

double block_flops(const Block *b, int in_h, int in_w)
{
  int h, w;
  block_output_size(b, in_h, in_w, &h, &w);
  double flops = conv_layer_flops(&b->conv1, h, w) + conv_layer_flops(&b->conv2, h, w) +
                 conv_layer_flops(&b->conv3, h, w);
  if (b->shortcut_kind == SHORTCUT_CONV)
    flops += conv_layer_flops(&b->shortcut, h, w);
  return flops;
}

static const FeatureMap *forward_shortcut(Block *b, const FeatureMap *x, const float *params,
                                          ThreadPool *pool)
{
  switch (b->shortcut_kind) {
  case SHORTCUT_IDENTITY:
    return x;
  case SHORTCUT_SUBSAMPLE:
    subsample2_forward(x, &b->subsampled, pool);
    return &b->subsampled;
  case SHORTCUT_CONV:
    forward_conv_layer(&b->shortcut, x, NULL, params, pool);
    return &b->shortcut.output;
  }
  g_return_val_if_reached(x);
}

/* The shortcut's gradient is the block's pre-activation gradient, conv3's delta after its ReLU. */
static void backward_shortcut(Block *b, const FeatureMap *x, const float *params, float *grads,
                              FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  switch (b->shortcut_kind) {
  case SHORTCUT_IDENTITY:
    feature_map_copy(&b->conv3.delta, dx, accumulate, pool);
    break;
  case SHORTCUT_SUBSAMPLE:
    subsample2_backward(&b->conv3.delta, dx, accumulate, pool);
    break;
  case SHORTCUT_CONV:
    backward_conv_layer(&b->shortcut, x, params, grads, dx, accumulate, pool);
    break;
  }
}

void forward_block(Block *b, const FeatureMap *x, const float *params, ThreadPool *pool)
{
  const FeatureMap *sc = forward_shortcut(b, x, params, pool);
  forward_conv_layer(&b->conv1, x, NULL, params, pool);
  forward_conv_layer(&b->conv2, &b->conv1.output, NULL, params, pool);
  forward_conv_layer(&b->conv3, &b->conv2.output, sc, params, pool);
}

void backward_block(Block *b, const FeatureMap *x, const float *params, float *grads,
                    FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  backward_conv_layer(&b->conv3, &b->conv2.output, params, grads, &b->conv2.delta, 0, pool);
  backward_conv_layer(&b->conv2, &b->conv1.output, params, grads, &b->conv1.delta, 0, pool);
  backward_conv_layer(&b->conv1, x, params, grads, dx, accumulate, pool);
  backward_shortcut(b, x, params, grads, dx, 1, pool);
}

void block_set_bf16(Block *b, int backward, int forward)
{
  ConvLayer *layers[] = { &b->conv1, &b->conv2, &b->conv3, &b->shortcut };
  for (guint i = 0; i < G_N_ELEMENTS(layers); i++)
    conv_layer_set_bf16(layers[i], backward, forward);
}
