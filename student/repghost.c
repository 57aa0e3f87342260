/* repghost.c: the architecture "repghost" (student/README.md): a U-Net of RepGhost bottlenecks;
 * its layers, the buffers of an input size, forward and backward, and its configuration. The
 * trainable form keeps each module's identity branch apart (its ".fusion" scale); the fused form
 * (configuration "fused") has it in the depthwise weights, and repghost_fuse writes the one's
 * weights from the other's. */
#include <stddef.h>
#include <string.h>

#include "ghost.h"
#include "student_private.h"

#define ENCODER_STAGES 4
#define DECODER_STAGES 3

typedef struct {
  ConvLayer stem;
  GhostBottleneck encoder[ENCODER_STAGES], decoder[DECODER_STAGES];
  GhostModule head;
  ConvLayer classifier;
  /* Inputs of decoder.0-2 and of the head (concatenations: the skip first, then the upsampled
   * coarser map) and their gradients; up: the upsampled part. */
  FeatureMap concat[DECODER_STAGES + 1], concat_delta[DECODER_STAGES + 1];
  FeatureMap up[DECODER_STAGES + 1], up_delta[DECODER_STAGES + 1];
} Repghost;

static Repghost *net(const Student *s)
{
  return s->net;
}

/* The skip of decoder stage i (head = DECODER_STAGES): e2, e1, e0, then s0; its width. */
static int skip_width(const RepghostConfig *c, int i)
{
  return i < DECODER_STAGES ? c->encoder[ENCODER_STAGES - 2 - i] : c->stem[0];
}

/* The coarser map that stage i upsamples: e3, d0, d1, d2; its width. */
static int up_width(const RepghostConfig *c, int i)
{
  return i == 0 ? c->encoder[ENCODER_STAGES - 1] : c->decoder[i - 1];
}

static void repghost_make(Student *s)
{
  const RepghostConfig *c = &s->config.repghost;
  ParamTable *t = &s->table;
  Repghost *n = s->net = g_new0(Repghost, 1);
  make_conv_layer(&n->stem, t, "stem", 3, c->stem[0], 3, 3, 2, ACTIVATION_RELU);
  for (int i = 0; i < ENCODER_STAGES; i++) {
    char *name = g_strdup_printf("encoder.%d", i);
    make_ghost_bottleneck(&n->encoder[i], t, name, i ? c->encoder[i - 1] : c->stem[0],
                          c->encoder_mid[i], c->encoder[i], 2, c->fused);
    g_free(name);
  }
  for (int i = 0; i < DECODER_STAGES; i++) {
    char *name = g_strdup_printf("decoder.%d", i);
    make_ghost_bottleneck(&n->decoder[i], t, name, skip_width(c, i) + up_width(c, i),
                          c->decoder_mid[i], c->decoder[i], 1, c->fused);
    g_free(name);
  }
  make_ghost_module(&n->head, t, "head", skip_width(c, DECODER_STAGES) +
                    up_width(c, DECODER_STAGES), c->head[0], ACTIVATION_RELU, c->fused);
  make_conv_layer(&n->classifier, t, "classifier", c->head[0], s->config.num_classes, 1, 1, 1,
                  ACTIVATION_NONE);
}

static void repghost_apply_precision(Student *s)
{
  Repghost *n = net(s);
  ConvLayer *convs[] = { &n->stem, &n->head.conv, &n->classifier };
  for (guint i = 0; i < G_N_ELEMENTS(convs); i++)
    conv_layer_set_bf16(convs[i], s->bf16_backward, s->bf16_forward);
  for (int i = 0; i < ENCODER_STAGES; i++)
    ghost_bottleneck_set_bf16(&n->encoder[i], s->bf16_backward, s->bf16_forward);
  for (int i = 0; i < DECODER_STAGES; i++)
    ghost_bottleneck_set_bf16(&n->decoder[i], s->bf16_backward, s->bf16_forward);
}

static void repghost_logits_size(const Student *s, int in_h, int in_w, int *h, int *w)
{
  conv_layer_output_size(&net(s)->stem, in_h, in_w, h, w);
}

/* Spatial sizes of s0 (index 0) and e0-e3 (1 + i). */
typedef struct {
  int h[ENCODER_STAGES + 1], w[ENCODER_STAGES + 1];
} StageSizes;

static StageSizes stage_sizes(const Repghost *n, int in_h, int in_w)
{
  StageSizes z;
  conv_layer_output_size(&n->stem, in_h, in_w, &z.h[0], &z.w[0]);
  for (int i = 0; i < ENCODER_STAGES; i++)
    ghost_bottleneck_output_size(&n->encoder[i], z.h[i], z.w[i], &z.h[i + 1], &z.w[i + 1]);
  return z;
}

/* Decoder stage i (head = DECODER_STAGES) runs at the size of its skip: e2, e1, e0, s0. */
static int stage_size_index(int i)
{
  return ENCODER_STAGES - 1 - i;
}

static double repghost_forward_flops(const Student *s, int in_h, int in_w)
{
  const Repghost *n = net(s);
  StageSizes z = stage_sizes(n, in_h, in_w);
  double flops = conv_layer_flops(&n->stem, z.h[0], z.w[0]);
  for (int i = 0; i < ENCODER_STAGES; i++)
    flops += ghost_bottleneck_flops(&n->encoder[i], z.h[i], z.w[i]);
  for (int i = 0; i < DECODER_STAGES; i++) {
    int k = stage_size_index(i);
    flops += ghost_bottleneck_flops(&n->decoder[i], z.h[k], z.w[k]);
  }
  return flops + ghost_module_flops(&n->head, z.h[0], z.w[0]) +
         conv_layer_flops(&n->classifier, z.h[0], z.w[0]);
}

/* The skip's slice of concatenation i. */
static FeatureMap skip_slice(const FeatureMap *concat, int width)
{
  return feature_map_slice(*concat, 0, width);
}

static void repghost_plan(Student *s, int in_h, int in_w, Arena *arena)
{
  const RepghostConfig *c = &s->config.repghost;
  Repghost *n = net(s);
  StageSizes z = stage_sizes(n, in_h, in_w);
  for (int i = 0; i <= DECODER_STAGES; i++) {
    int k = stage_size_index(i), skip = skip_width(c, i), up = up_width(c, i);
    arena_pair(arena, z.h[k], z.w[k], skip + up, &n->concat[i], &n->concat_delta[i]);
    n->up[i] = feature_map_slice(n->concat[i], skip, up);
    n->up_delta[i] = feature_map_slice(n->concat_delta[i], skip, up);
  }
  /* Skips are written straight into their concatenation: s0 into the head's, e0-e2 into the
   * decoder's; e3 has its own. */
  plan_conv_layer_into(&n->stem, in_h, in_w, skip_slice(&n->concat[DECODER_STAGES], c->stem[0]),
                       skip_slice(&n->concat_delta[DECODER_STAGES], c->stem[0]), arena);
  for (int i = 0; i < ENCODER_STAGES; i++) {
    FeatureMap out, delta;
    int stage = ENCODER_STAGES - 2 - i; /* the decoder stage e_i is the skip of, if any */
    if (stage >= 0) {
      out = skip_slice(&n->concat[stage], c->encoder[i]);
      delta = skip_slice(&n->concat_delta[stage], c->encoder[i]);
    } else {
      arena_pair(arena, z.h[i + 1], z.w[i + 1], c->encoder[i], &out, &delta);
    }
    plan_ghost_bottleneck(&n->encoder[i], z.h[i], z.w[i], out, delta, arena);
  }
  for (int i = 0; i < DECODER_STAGES; i++) {
    int k = stage_size_index(i);
    FeatureMap out, delta;
    arena_pair(arena, z.h[k], z.w[k], c->decoder[i], &out, &delta);
    plan_ghost_bottleneck(&n->decoder[i], z.h[k], z.w[k], out, delta, arena);
  }
  FeatureMap out, delta;
  arena_pair(arena, z.h[0], z.w[0], c->head[0], &out, &delta);
  plan_ghost_module(&n->head, z.h[0], z.w[0], out, delta, arena);
  plan_conv_layer(&n->classifier, z.h[0], z.w[0], arena);
}

/* The coarser map stage i upsamples (e3, d0, d1, d2) and its gradient. */
static FeatureMap *coarser(Repghost *n, int i)
{
  return i == 0 ? ghost_bottleneck_output(&n->encoder[ENCODER_STAGES - 1])
                : ghost_bottleneck_output(&n->decoder[i - 1]);
}

static FeatureMap *coarser_delta(Repghost *n, int i)
{
  return i == 0 ? ghost_bottleneck_delta(&n->encoder[ENCODER_STAGES - 1])
                : ghost_bottleneck_delta(&n->decoder[i - 1]);
}

static const FeatureMap *repghost_forward(Student *s, const FeatureMap *input, ThreadPool *pool)
{
  Repghost *n = net(s);
  const float *p = s->params;
  forward_conv_layer(&n->stem, input, NULL, p, pool);
  for (int i = 0; i < ENCODER_STAGES; i++)
    forward_ghost_bottleneck(&n->encoder[i],
                             i ? ghost_bottleneck_output(&n->encoder[i - 1]) : &n->stem.output, p,
                             pool);
  for (int i = 0; i < DECODER_STAGES; i++) {
    resize_bilinear_forward(coarser(n, i), &n->up[i], pool);
    forward_ghost_bottleneck(&n->decoder[i], &n->concat[i], p, pool);
  }
  resize_bilinear_forward(coarser(n, DECODER_STAGES), &n->up[DECODER_STAGES], pool);
  forward_ghost_module(&n->head, &n->concat[DECODER_STAGES], p, pool);
  forward_conv_layer(&n->classifier, &n->head.cheap.output, NULL, p, pool);
  return &n->classifier.output;
}

static FeatureMap *repghost_logits_delta(Student *s)
{
  return &net(s)->classifier.delta;
}

/* The forward in reverse. e0-e2 and s0 feed their concatenation and the next stage: the
 * concatenation's gradient (their slice of it) arrives first, the next stage's is added. */
static void repghost_backward(Student *s, ThreadPool *pool)
{
  Repghost *n = net(s);
  const float *p = s->params;
  float *g = s->grads;
  backward_conv_layer(&n->classifier, &n->head.cheap.output, p, g, &n->head.cheap.delta, 0,
                      pool);
  backward_ghost_module(&n->head, &n->concat[DECODER_STAGES], p, g,
                        &n->concat_delta[DECODER_STAGES], 0, pool);
  resize_bilinear_backward(&n->up_delta[DECODER_STAGES], coarser_delta(n, DECODER_STAGES), 0,
                           pool);
  for (int i = DECODER_STAGES - 1; i >= 0; i--) {
    backward_ghost_bottleneck(&n->decoder[i], &n->concat[i], p, g, &n->concat_delta[i], 0, pool);
    resize_bilinear_backward(&n->up_delta[i], coarser_delta(n, i), 0, pool);
  }
  for (int i = ENCODER_STAGES - 1; i >= 0; i--) {
    FeatureMap *x = i ? ghost_bottleneck_output(&n->encoder[i - 1]) : &n->stem.output;
    FeatureMap *dx = i ? ghost_bottleneck_delta(&n->encoder[i - 1]) : &n->stem.delta;
    /* Every encoder input is also a skip (s0, e0-e2), its gradient already there. */
    backward_ghost_bottleneck(&n->encoder[i], x, p, g, dx, 1, pool);
  }
  /* Nobody needs the gradient of the image. */
  backward_conv_layer(&n->stem, &s->input, p, g, NULL, 0, pool);
}

/* ---- the fused form ------------------------------------------------------------------------- */

static void fuse_module(const GhostModule *trained, const float *params, const GhostModule *fused,
                        float *fused_params)
{
  dw_layer_fuse(&trained->cheap, params, fused_params + fused->cheap.weight_offset);
}

/* fused's parameters from trained's: every tensor of the fused network is the trained one's of
 * the same name, but the depthwise weights of the modules, which take in their fusion. */
static void repghost_fuse(const Student *trained, Student *fused)
{
  const float *params = trained->params;
  for (int i = 0; i < param_table_size(&fused->table); i++) {
    const StudentTensor *t = param_table_get(&fused->table, i);
    const StudentTensor *from = student_find_tensor(trained, t->name);
    memcpy(fused->params + t->offset, params + from->offset, sizeof(float) * t->count);
  }
  const Repghost *a = net(trained), *b = net(fused);
  for (int i = 0; i < ENCODER_STAGES; i++) {
    fuse_module(&a->encoder[i].ghost1, params, &b->encoder[i].ghost1, fused->params);
    fuse_module(&a->encoder[i].ghost2, params, &b->encoder[i].ghost2, fused->params);
  }
  for (int i = 0; i < DECODER_STAGES; i++) {
    fuse_module(&a->decoder[i].ghost1, params, &b->decoder[i].ghost1, fused->params);
    fuse_module(&a->decoder[i].ghost2, params, &b->decoder[i].ghost2, fused->params);
  }
  fuse_module(&a->head, params, &b->head, fused->params);
}

/* ---- configuration -------------------------------------------------------------------------- */

static void repghost_config_inference(StudentConfig *cfg)
{
  cfg->repghost.fused = TRUE;
}

static void repghost_config_default(StudentConfig *cfg)
{
  cfg->repghost = (RepghostConfig){
    .stem = { 16 },
    .encoder = { 24, 40, 64, 96 },
    .encoder_mid = { 48, 72, 120, 192 },
    .decoder = { 64, 40, 24 },
    .decoder_mid = { 96, 72, 48 },
    .head = { 16 },
    .fused = FALSE,
  };
}

#define REPGHOST_KEY(name, count) \
  { #name, count, offsetof(StudentConfig, repghost) + offsetof(RepghostConfig, name) }

static const StudentConfigKey repghost_keys[] = {
  REPGHOST_KEY(stem, 1),    REPGHOST_KEY(encoder, ENCODER_STAGES),
  REPGHOST_KEY(encoder_mid, ENCODER_STAGES), REPGHOST_KEY(decoder, DECODER_STAGES),
  REPGHOST_KEY(decoder_mid, DECODER_STAGES), REPGHOST_KEY(head, 1),
  REPGHOST_KEY(fused, 0),
};

/* The weights of the modules' 1x1 convolutions. */
static double repghost_min_param_count(const StudentConfig *cfg)
{
  const RepghostConfig *c = &cfg->repghost;
  double count = 27.0 * c->stem[0];
  for (int i = 0; i < ENCODER_STAGES; i++)
    count += (double)c->encoder_mid[i] * (c->encoder[i] + (i ? c->encoder[i - 1] : c->stem[0]));
  for (int i = 0; i < DECODER_STAGES; i++)
    count += (double)c->decoder_mid[i] * c->decoder[i];
  return count;
}

const StudentArchOps repghost_ops = {
  .name = "repghost",
  .config_default = repghost_config_default,
  .keys = repghost_keys,
  .n_keys = G_N_ELEMENTS(repghost_keys),
  .min_param_count = repghost_min_param_count,
  .make = repghost_make,
  .logits_size = repghost_logits_size,
  .forward_flops = repghost_forward_flops,
  .plan = repghost_plan,
  .forward = repghost_forward,
  .logits_delta = repghost_logits_delta,
  .backward = repghost_backward,
  .apply_precision = repghost_apply_precision,
  .config_inference = repghost_config_inference,
  .fuse = repghost_fuse,
};
