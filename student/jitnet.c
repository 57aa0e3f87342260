/* jitnet.c: the architecture "jitnet" (student/README.md): its layers, the buffers of an input
 * size, forward and backward, and its configuration.
 *
 * Every activation has a paired gradient buffer of the same shape, all in one arena planned per
 * input size. Concatenations are channel slices: e1 and e0 are written straight into the first
 * channels of decoder.1's and decoder.2's inputs, the upsampled tensors into the rest, and their
 * gradients come back the same way. */
#include <stddef.h>

#include "block.h"
#include "student_private.h"

typedef struct {
  ConvLayer stem[2];
  Block encoder[3], decoder[3];
  ConvLayer head[2], classifier;
  /* Inputs of decoder.1, decoder.2 and head.0 (concatenations) and their gradients. */
  FeatureMap concat[3], concat_delta[3];
  /* The upsampled d0, d1, d2: slices of concat[0..2]. */
  FeatureMap up[3], up_delta[3];
} Jitnet;

static Jitnet *net(const Student *s)
{
  return s->net;
}

static void jitnet_make(Student *s)
{
  const JitnetConfig *c = &s->config.jitnet;
  ParamTable *t = &s->table;
  Jitnet *n = s->net = g_new0(Jitnet, 1);
  make_conv_layer(&n->stem[0], t, "stem.0", 3, c->stem[0], 3, 3, 2,
                  ACTIVATION_RELU);
  make_conv_layer(&n->stem[1], t, "stem.1", c->stem[0], c->stem[1], 3, 3, 2,
                  ACTIVATION_RELU);
  make_block(&n->encoder[0], t, "encoder.0", c->stem[1], c->encoder[0], 2);
  make_block(&n->encoder[1], t, "encoder.1", c->encoder[0], c->encoder[1], 2);
  make_block(&n->encoder[2], t, "encoder.2", c->encoder[1], c->encoder[2], 2);
  make_block(&n->decoder[0], t, "decoder.0", c->encoder[2], c->decoder[0], 1);
  make_block(&n->decoder[1], t, "decoder.1", c->encoder[1] + c->decoder[0], c->decoder[1], 1);
  make_block(&n->decoder[2], t, "decoder.2", c->encoder[0] + c->decoder[1], c->decoder[2], 1);
  int head_in = c->decoder[2] + (c->head_skip ? c->stem[0] : 0);
  make_conv_layer(&n->head[0], t, "head.0", head_in, c->head[0], 3, 3, 1,
                  ACTIVATION_RELU);
  make_conv_layer(&n->head[1], t, "head.1", c->head[0], c->head[1], 3, 3, 1,
                  ACTIVATION_RELU);
  make_conv_layer(&n->classifier, t, "classifier", c->head[1], s->config.num_classes, 1, 1, 1,
                  ACTIVATION_NONE);
}

static void jitnet_apply_precision(Student *s)
{
  Jitnet *n = net(s);
  conv_layer_set_bf16(&n->stem[0], s->bf16_backward, s->bf16_forward);
  conv_layer_set_bf16(&n->stem[1], s->bf16_backward, s->bf16_forward);
  for (int i = 0; i < 3; i++) {
    block_set_bf16(&n->encoder[i], s->bf16_backward, s->bf16_forward);
    block_set_bf16(&n->decoder[i], s->bf16_backward, s->bf16_forward);
  }
  conv_layer_set_bf16(&n->head[0], s->bf16_backward, s->bf16_forward);
  conv_layer_set_bf16(&n->head[1], s->bf16_backward, s->bf16_forward);
  conv_layer_set_bf16(&n->classifier, s->bf16_backward, s->bf16_forward);
}

static void jitnet_logits_size(const Student *s, int in_h, int in_w, int *out_h, int *out_w)
{
  conv_layer_output_size(&net(s)->stem[0], in_h, in_w, out_h, out_w);
}

/* Spatial sizes of s0, s1, e0, e1, e2 for an input size. */
typedef struct {
  int h[5], w[5];
} StageSizes;

static StageSizes stage_sizes(const Jitnet *n, int in_h, int in_w)
{
  StageSizes z;
  conv_layer_output_size(&n->stem[0], in_h, in_w, &z.h[0], &z.w[0]);
  conv_layer_output_size(&n->stem[1], z.h[0], z.w[0], &z.h[1], &z.w[1]);
  for (int i = 0; i < 3; i++)
    block_output_size(&n->encoder[i], z.h[i + 1], z.w[i + 1], &z.h[i + 2], &z.w[i + 2]);
  return z;
}

static double jitnet_forward_flops(const Student *s, int in_h, int in_w)
{
  const Jitnet *n = net(s);
  StageSizes z = stage_sizes(n, in_h, in_w);
  double flops = conv_layer_flops(&n->stem[0], z.h[0], z.w[0]) +
                 conv_layer_flops(&n->stem[1], z.h[1], z.w[1]);
  for (int i = 0; i < 3; i++)
    flops += block_flops(&n->encoder[i], z.h[i + 1], z.w[i + 1]);
  for (int i = 0; i < 3; i++)
    flops += block_flops(&n->decoder[i], z.h[4 - i], z.w[4 - i]);
  for (int i = 0; i < 2; i++)
    flops += conv_layer_flops(&n->head[i], z.h[0], z.w[0]);
  return flops + conv_layer_flops(&n->classifier, z.h[0], z.w[0]);
}

/* concat[i] = (skip, up[i]) of the given widths; skip_width 0 = no skip. */
static void plan_concat(Jitnet *n, int i, int h, int w, int skip_width, int up_width,
                        Arena *arena)
{
  arena_pair(arena, h, w, skip_width + up_width, &n->concat[i], &n->concat_delta[i]);
  n->up[i] = feature_map_slice(n->concat[i], skip_width, up_width);
  n->up_delta[i] = feature_map_slice(n->concat_delta[i], skip_width, up_width);
}

static void jitnet_plan(Student *s, int in_h, int in_w, Arena *arena)
{
  const JitnetConfig *c = &s->config.jitnet;
  Jitnet *n = net(s);
  StageSizes z = stage_sizes(n, in_h, in_w);
  plan_concat(n, 0, z.h[3], z.w[3], c->encoder[1], c->decoder[0], arena);
  plan_concat(n, 1, z.h[2], z.w[2], c->encoder[0], c->decoder[1], arena);
  plan_concat(n, 2, z.h[0], z.w[0], c->head_skip ? c->stem[0] : 0, c->decoder[2], arena);

  if (c->head_skip) {
    n->stem[0].output = feature_map_slice(n->concat[2], 0, c->stem[0]);
    n->stem[0].delta = feature_map_slice(n->concat_delta[2], 0, c->stem[0]);
  } else {
    plan_conv_layer(&n->stem[0], in_h, in_w, arena);
  }
  plan_conv_layer(&n->stem[1], z.h[0], z.w[0], arena);

  plan_block(&n->encoder[0], z.h[1], z.w[1], feature_map_slice(n->concat[1], 0, c->encoder[0]),
             feature_map_slice(n->concat_delta[1], 0, c->encoder[0]), arena);
  plan_block(&n->encoder[1], z.h[2], z.w[2], feature_map_slice(n->concat[0], 0, c->encoder[1]),
             feature_map_slice(n->concat_delta[0], 0, c->encoder[1]), arena);
  FeatureMap out, delta;
  arena_pair(arena, z.h[4], z.w[4], c->encoder[2], &out, &delta);
  plan_block(&n->encoder[2], z.h[3], z.w[3], out, delta, arena);

  /* decoder.i runs at the size of e(2-i) and feeds up[i]. */
  for (int i = 0; i < 3; i++) {
    int h = z.h[4 - i], w = z.w[4 - i];
    arena_pair(arena, h, w, c->decoder[i], &out, &delta);
    plan_block(&n->decoder[i], h, w, out, delta, arena);
  }

  plan_conv_layer(&n->head[0], z.h[0], z.w[0], arena);
  plan_conv_layer(&n->head[1], z.h[0], z.w[0], arena);
  plan_conv_layer(&n->classifier, z.h[0], z.w[0], arena);
}

static const FeatureMap *jitnet_forward(Student *s, const FeatureMap *input, ThreadPool *pool)
{
  Jitnet *n = net(s);
  const float *p = s->params;

  forward_conv_layer(&n->stem[0], input, NULL, p, pool);
  forward_conv_layer(&n->stem[1], &n->stem[0].output, NULL, p, pool);
  forward_block(&n->encoder[0], &n->stem[1].output, p, pool);
  forward_block(&n->encoder[1], block_output(&n->encoder[0]), p, pool);
  forward_block(&n->encoder[2], block_output(&n->encoder[1]), p, pool);

  forward_block(&n->decoder[0], block_output(&n->encoder[2]), p, pool);
  resize_bilinear_forward(block_output(&n->decoder[0]), &n->up[0], pool);
  forward_block(&n->decoder[1], &n->concat[0], p, pool);
  resize_bilinear_forward(block_output(&n->decoder[1]), &n->up[1], pool);
  forward_block(&n->decoder[2], &n->concat[1], p, pool);
  resize_bilinear_forward(block_output(&n->decoder[2]), &n->up[2], pool);

  forward_conv_layer(&n->head[0], &n->concat[2], NULL, p, pool);
  forward_conv_layer(&n->head[1], &n->head[0].output, NULL, p, pool);
  forward_conv_layer(&n->classifier, &n->head[1].output, NULL, p, pool);
  return &n->classifier.output;
}

static FeatureMap *jitnet_logits_delta(Student *s)
{
  return &net(s)->classifier.delta;
}

/* The forward in reverse. Where a tensor feeds two consumers (e0, e1, and s0 with head_skip),
 * the second gradient to arrive is added to the first. */
static void jitnet_backward(Student *s, ThreadPool *pool)
{
  Jitnet *n = net(s);
  const float *p = s->params;
  float *g = s->grads;
  backward_conv_layer(&n->classifier, &n->head[1].output, p, g, &n->head[1].delta, 0, pool);
  backward_conv_layer(&n->head[1], &n->head[0].output, p, g, &n->head[0].delta, 0, pool);
  backward_conv_layer(&n->head[0], &n->concat[2], p, g, &n->concat_delta[2], 0, pool);

  resize_bilinear_backward(&n->up_delta[2], block_delta(&n->decoder[2]), 0, pool);
  backward_block(&n->decoder[2], &n->concat[1], p, g, &n->concat_delta[1], 0, pool);
  resize_bilinear_backward(&n->up_delta[1], block_delta(&n->decoder[1]), 0, pool);
  backward_block(&n->decoder[1], &n->concat[0], p, g, &n->concat_delta[0], 0, pool);
  resize_bilinear_backward(&n->up_delta[0], block_delta(&n->decoder[0]), 0, pool);
  backward_block(&n->decoder[0], block_output(&n->encoder[2]), p, g,
                 block_delta(&n->encoder[2]), 0, pool);

  backward_block(&n->encoder[2], block_output(&n->encoder[1]), p, g,
                 block_delta(&n->encoder[1]), 1, pool);
  backward_block(&n->encoder[1], block_output(&n->encoder[0]), p, g,
                 block_delta(&n->encoder[0]), 1, pool);
  backward_block(&n->encoder[0], &n->stem[1].output, p, g, &n->stem[1].delta, 0, pool);
  backward_conv_layer(&n->stem[1], &n->stem[0].output, p, g, &n->stem[0].delta,
                      s->config.jitnet.head_skip, pool);
  /* Nobody needs the gradient of the image. */
  backward_conv_layer(&n->stem[0], &s->input, p, g, NULL, 0, pool);
}

/* ---- configuration -------------------------------------------------------------------------- */

/* JITNet at width multiplier 0.25 (the first stem convolution kept at 8), with a head of 16
 * channels: as accurate as width 0.5 online at less than half its cost (student/README.md). */
static void jitnet_config_default(StudentConfig *cfg)
{
  cfg->jitnet = (JitnetConfig){
    .stem = { 8, 16 },
    .encoder = { 32, 32, 64 },
    .decoder = { 64, 32, 16 },
    .head = { 16, 8 },
    .head_skip = FALSE,
  };
}

#define JITNET_KEY(name, count) \
  { #name, count, offsetof(StudentConfig, jitnet) + offsetof(JitnetConfig, name) }

static const StudentConfigKey jitnet_keys[] = {
  JITNET_KEY(stem, 2), JITNET_KEY(encoder, 3), JITNET_KEY(decoder, 3), JITNET_KEY(head, 2),
  JITNET_KEY(head_skip, 0),
};

/* The weights of each layer's connections at a 1x1 kernel. */
static double jitnet_min_param_count(const StudentConfig *cfg)
{
  const JitnetConfig *c = &cfg->jitnet;
  const int *e = c->encoder, *d = c->decoder;
  int head_in = d[2] + (c->head_skip ? c->stem[0] : 0);
  double edges[][2] = {
    { 3, c->stem[0] }, { c->stem[0], c->stem[1] }, { c->stem[1], e[0] }, { e[0], e[1] },
    { e[1], e[2] }, { e[2], d[0] }, { e[1] + d[0], d[1] }, { e[0] + d[1], d[2] },
    { head_in, c->head[0] }, { c->head[0], c->head[1] }, { c->head[1], cfg->num_classes },
  };
  double count = 0;
  for (guint i = 0; i < G_N_ELEMENTS(edges); i++)
    count += edges[i][0] * edges[i][1];
  return count;
}

const StudentArchOps jitnet_ops = {
  .name = "jitnet",
  .config_default = jitnet_config_default,
  .keys = jitnet_keys,
  .n_keys = G_N_ELEMENTS(jitnet_keys),
  .min_param_count = jitnet_min_param_count,
  .make = jitnet_make,
  .logits_size = jitnet_logits_size,
  .forward_flops = jitnet_forward_flops,
  .plan = jitnet_plan,
  .forward = jitnet_forward,
  .logits_delta = jitnet_logits_delta,
  .backward = jitnet_backward,
  .apply_precision = jitnet_apply_precision,
};
