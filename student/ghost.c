/* ghost.c: see ghost.h. */
#include "ghost.h"

static char *layer_name(const char *name, const char *part)
{
  return g_strdup_printf("%s.%s", name, part);
}

/* ---- module --------------------------------------------------------------------------------- */

void make_ghost_module(GhostModule *m, ParamTable *table, const char *name, int cin, int cout,
                       Activation act, gboolean fused)
{
  char *conv = layer_name(name, "conv"), *cheap = layer_name(name, "cheap");
  char *fusion = fused ? NULL : layer_name(name, "fusion");
  make_conv_layer(&m->conv, table, conv, cin, cout, 1, 1, 1, act);
  make_dw_layer(&m->cheap, table, cheap, cout, 1, act, fusion);
  g_free(conv);
  g_free(cheap);
  g_free(fusion);
}

void plan_ghost_module(GhostModule *m, int h, int w, FeatureMap output, FeatureMap delta,
                       Arena *arena)
{
  plan_conv_layer(&m->conv, h, w, arena);
  plan_dw_layer_into(&m->cheap, h, w, output, delta, arena);
}

double ghost_module_flops(const GhostModule *m, int h, int w)
{
  /* With the fusion apart, a multiply-add more a pixel and channel: counted fused. */
  return conv_layer_flops(&m->conv, h, w) + dw_layer_flops(&m->cheap, h, w);
}

void forward_ghost_module(GhostModule *m, const FeatureMap *x, const float *params,
                          ThreadPool *pool)
{
  forward_conv_layer(&m->conv, x, NULL, params, pool);
  forward_dw_layer(&m->cheap, &m->conv.output, params, pool);
}

void backward_ghost_module(GhostModule *m, const FeatureMap *x, const float *params,
                           float *grads, FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  backward_dw_layer(&m->cheap, &m->conv.output, params, grads, &m->conv.delta, 0, pool);
  backward_conv_layer(&m->conv, x, params, grads, dx, accumulate, pool);
}

/* ---- bottleneck ----------------------------------------------------------------------------- */

void make_ghost_bottleneck(GhostBottleneck *b, ParamTable *table, const char *name, int cin,
                           int mid, int cout, int stride, gboolean fused)
{
  char *part = layer_name(name, "ghost1");
  make_ghost_module(&b->ghost1, table, part, cin, mid, ACTIVATION_RELU, fused);
  g_free(part);
  b->has_down = stride == 2;
  if (b->has_down) {
    part = layer_name(name, "down");
    make_dw_layer(&b->down, table, part, mid, 2, ACTIVATION_NONE, NULL);
    g_free(part);
  }
  part = layer_name(name, "ghost2");
  make_ghost_module(&b->ghost2, table, part, mid, cout, ACTIVATION_NONE, fused);
  g_free(part);
  /* The branch starts near zero, the bottleneck near its shortcut. */
  param_table_set_init(table, b->ghost2.conv.weight_offset, 0.1);
  b->identity = stride == 1 && cin == cout;
  if (b->identity)
    return;
  part = layer_name(name, "shortcut_dw");
  make_dw_layer(&b->shortcut_dw, table, part, cin, stride, ACTIVATION_NONE, NULL);
  g_free(part);
  part = layer_name(name, "shortcut_pw");
  make_conv_layer(&b->shortcut_pw, table, part, cin, cout, 1, 1, 1, ACTIVATION_NONE);
  g_free(part);
}

void ghost_bottleneck_output_size(const GhostBottleneck *b, int in_h, int in_w, int *out_h,
                                  int *out_w)
{
  if (b->has_down)
    dw_layer_output_size(&b->down, in_h, in_w, out_h, out_w);
  else
    *out_h = in_h, *out_w = in_w;
}

void plan_ghost_bottleneck(GhostBottleneck *b, int in_h, int in_w, FeatureMap output,
                           FeatureMap delta, Arena *arena)
{
  int h, w;
  ghost_bottleneck_output_size(b, in_h, in_w, &h, &w);
  FeatureMap out1 = arena_feature_map(arena, in_h, in_w, b->ghost1.cheap.channels);
  FeatureMap delta1 = arena_feature_map(arena, in_h, in_w, b->ghost1.cheap.channels);
  plan_ghost_module(&b->ghost1, in_h, in_w, out1, delta1, arena);
  if (b->has_down)
    plan_dw_layer(&b->down, in_h, in_w, arena);
  b->output = output;
  b->delta = delta;
  if (b->identity) {
    plan_ghost_module(&b->ghost2, h, w, output, delta, arena);
    return;
  }
  /* The sum's gradient is each branch's: ghost2 reads the bottleneck's delta as its own. */
  plan_ghost_module(&b->ghost2, h, w, arena_feature_map(arena, h, w, output.c), delta, arena);
  plan_dw_layer(&b->shortcut_dw, in_h, in_w, arena);
  plan_conv_layer_into(&b->shortcut_pw, h, w, output, delta, arena);
}

double ghost_bottleneck_flops(const GhostBottleneck *b, int in_h, int in_w)
{
  int h, w;
  ghost_bottleneck_output_size(b, in_h, in_w, &h, &w);
  double flops = ghost_module_flops(&b->ghost1, in_h, in_w) +
                 ghost_module_flops(&b->ghost2, h, w);
  if (b->has_down)
    flops += dw_layer_flops(&b->down, h, w);
  if (!b->identity)
    flops += dw_layer_flops(&b->shortcut_dw, h, w) + conv_layer_flops(&b->shortcut_pw, h, w);
  return flops;
}

void ghost_bottleneck_set_bf16(GhostBottleneck *b, int backward, int forward)
{
  conv_layer_set_bf16(&b->ghost1.conv, backward, forward);
  conv_layer_set_bf16(&b->ghost2.conv, backward, forward);
  conv_layer_set_bf16(&b->shortcut_pw, backward, forward);
}

static const FeatureMap *middle(GhostBottleneck *b)
{
  return b->has_down ? &b->down.output : &b->ghost1.cheap.output;
}

void forward_ghost_bottleneck(GhostBottleneck *b, const FeatureMap *x, const float *params,
                              ThreadPool *pool)
{
  forward_ghost_module(&b->ghost1, x, params, pool);
  if (b->has_down)
    forward_dw_layer(&b->down, &b->ghost1.cheap.output, params, pool);
  forward_ghost_module(&b->ghost2, middle(b), params, pool);
  if (b->identity) {
    feature_map_copy(x, ghost_bottleneck_output(b), 1, pool);
    return;
  }
  forward_dw_layer(&b->shortcut_dw, x, params, pool);
  forward_conv_layer(&b->shortcut_pw, &b->shortcut_dw.output, &b->ghost2.cheap.output, params,
                     pool);
}

void backward_ghost_bottleneck(GhostBottleneck *b, const FeatureMap *x, const float *params,
                               float *grads, FeatureMap *dx, int accumulate, ThreadPool *pool)
{
  FeatureMap *dmid = b->has_down ? &b->down.delta : &b->ghost1.cheap.delta;
  backward_ghost_module(&b->ghost2, middle(b), params, grads, dmid, 0, pool);
  if (b->has_down)
    backward_dw_layer(&b->down, &b->ghost1.cheap.output, params, grads, &b->ghost1.cheap.delta, 0,
                      pool);
  backward_ghost_module(&b->ghost1, x, params, grads, dx, accumulate, pool);
  if (b->identity) {
    feature_map_copy(ghost_bottleneck_delta(b), dx, 1, pool);
    return;
  }
  backward_conv_layer(&b->shortcut_pw, &b->shortcut_dw.output, params, grads,
                      &b->shortcut_dw.delta, 0, pool);
  backward_dw_layer(&b->shortcut_dw, x, params, grads, dx, 1, pool);
}
