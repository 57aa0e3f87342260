/* mobilenet.c: the architecture "mobilenet" (student/README.md): MobileNetV3-style inverted
 * residuals and a Lite R-ASPP head whose low-level classifiers reach half resolution; its
 * layers, the buffers of an input size, forward and backward, and its configuration. */
#include <stddef.h>

#include "inverted_residual.h"
#include "student_private.h"

static const int block_stride[MOBILENET_BLOCKS] = { 2, 2, 1, 2, 1, 1, 1 };
/* Blocks from this one on (and the stem) use hard-swish when the configuration says so. */
#define FIRST_HSWISH_BLOCK 3
/* The low-level features of the classifiers at H/8 and H/4. */
#define LOW8_BLOCK 2
#define LOW4_BLOCK 0

typedef struct {
  ConvLayer stem;
  InvertedResidual blocks[MOBILENET_BLOCKS];
  /* Lite R-ASPP: a = relu(conv1x1(b6)) * sigmoid(conv1x1(avgpool(b6))). */
  ConvLayer aspp_conv, aspp_gate;
  FeatureMap pooled, pooled_delta;     /* avgpool(b6): 1 x 1 x out[6] */
  FeatureMap attended, attended_delta; /* a */
  /* Classifiers: high on a; low8, low4, low2 on b2, b0, s0, each adding the coarser logits
   * resized to its size (up8, up4, up2); low2's output is the logits. */
  ConvLayer high, low8, low4, low2;
  FeatureMap up8, up8_delta, up4, up4_delta, up2, up2_delta;
} Mobilenet;

static Mobilenet *net(const Student *s)
{
  return s->net;
}

static Activation block_activation(const MobilenetConfig *c, int i)
{
  return c->hswish && i >= FIRST_HSWISH_BLOCK ? ACTIVATION_HSWISH : ACTIVATION_RELU;
}

static void mobilenet_make(Student *s)
{
  const MobilenetConfig *c = &s->config.mobilenet;
  int classes = s->config.num_classes, last = c->out[MOBILENET_BLOCKS - 1];
  ParamTable *t = &s->table;
  Mobilenet *n = s->net = g_new0(Mobilenet, 1);
  make_conv_layer(&n->stem, t, "stem", 3, c->stem[0], 3, 3, 2,
                  c->hswish ? ACTIVATION_HSWISH : ACTIVATION_RELU);
  for (int i = 0; i < MOBILENET_BLOCKS; i++) {
    char *name = g_strdup_printf("blocks.%d", i);
    make_inverted_residual(&n->blocks[i], t, name, i ? c->out[i - 1] : c->stem[0], c->expand[i],
                           c->out[i], block_stride[i], block_activation(c, i));
    g_free(name);
  }
  make_conv_layer(&n->aspp_conv, t, "aspp.conv", last, c->aspp[0], 1, 1, 1, ACTIVATION_RELU);
  make_conv_layer(&n->aspp_gate, t, "aspp.gate", last, c->aspp[0], 1, 1, 1,
                  ACTIVATION_SIGMOID);
  make_conv_layer(&n->high, t, "classifier.high", c->aspp[0], classes, 1, 1, 1,
                  ACTIVATION_NONE);
  make_conv_layer(&n->low8, t, "classifier.low8", c->out[LOW8_BLOCK], classes, 1, 1, 1,
                  ACTIVATION_NONE);
  make_conv_layer(&n->low4, t, "classifier.low4", c->out[LOW4_BLOCK], classes, 1, 1, 1,
                  ACTIVATION_NONE);
  make_conv_layer(&n->low2, t, "classifier.low2", c->stem[0], classes, 1, 1, 1,
                  ACTIVATION_NONE);
}

static void mobilenet_apply_precision(Student *s)
{
  Mobilenet *n = net(s);
  conv_layer_set_bf16(&n->stem, s->bf16_backward, s->bf16_forward);
  for (int i = 0; i < MOBILENET_BLOCKS; i++)
    inverted_residual_set_bf16(&n->blocks[i], s->bf16_backward, s->bf16_forward);
  ConvLayer *heads[] = { &n->aspp_conv, &n->aspp_gate, &n->high, &n->low8, &n->low4, &n->low2 };
  for (guint i = 0; i < G_N_ELEMENTS(heads); i++)
    conv_layer_set_bf16(heads[i], s->bf16_backward, s->bf16_forward);
}

static void mobilenet_logits_size(const Student *s, int in_h, int in_w, int *h, int *w)
{
  conv_layer_output_size(&net(s)->stem, in_h, in_w, h, w);
}

/* Spatial sizes of s0 (index 0) and of every block's output (1 + i). */
typedef struct {
  int h[MOBILENET_BLOCKS + 1], w[MOBILENET_BLOCKS + 1];
} StageSizes;

static StageSizes stage_sizes(const Mobilenet *n, int in_h, int in_w)
{
  StageSizes z;
  conv_layer_output_size(&n->stem, in_h, in_w, &z.h[0], &z.w[0]);
  for (int i = 0; i < MOBILENET_BLOCKS; i++)
    inverted_residual_output_size(&n->blocks[i], z.h[i], z.w[i], &z.h[i + 1], &z.w[i + 1]);
  return z;
}

static double mobilenet_forward_flops(const Student *s, int in_h, int in_w)
{
  const Mobilenet *n = net(s);
  StageSizes z = stage_sizes(n, in_h, in_w);
  int last = MOBILENET_BLOCKS;
  double flops = conv_layer_flops(&n->stem, z.h[0], z.w[0]);
  for (int i = 0; i < MOBILENET_BLOCKS; i++)
    flops += inverted_residual_flops(&n->blocks[i], z.h[i], z.w[i]);
  return flops + conv_layer_flops(&n->aspp_conv, z.h[last], z.w[last]) +
         conv_layer_flops(&n->high, z.h[last], z.w[last]) +
         conv_layer_flops(&n->low8, z.h[1 + LOW8_BLOCK], z.w[1 + LOW8_BLOCK]) +
         conv_layer_flops(&n->low4, z.h[1 + LOW4_BLOCK], z.w[1 + LOW4_BLOCK]) +
         conv_layer_flops(&n->low2, z.h[0], z.w[0]);
}

static void mobilenet_plan(Student *s, int in_h, int in_w, Arena *arena)
{
  const MobilenetConfig *c = &s->config.mobilenet;
  int classes = s->config.num_classes, last = MOBILENET_BLOCKS;
  Mobilenet *n = net(s);
  StageSizes z = stage_sizes(n, in_h, in_w);
  plan_conv_layer(&n->stem, in_h, in_w, arena);
  for (int i = 0; i < MOBILENET_BLOCKS; i++)
    plan_inverted_residual(&n->blocks[i], z.h[i], z.w[i], arena);

  plan_conv_layer(&n->aspp_conv, z.h[last], z.w[last], arena);
  arena_pair(arena, 1, 1, c->out[MOBILENET_BLOCKS - 1], &n->pooled, &n->pooled_delta);
  plan_conv_layer(&n->aspp_gate, 1, 1, arena);
  arena_pair(arena, z.h[last], z.w[last], c->aspp[0], &n->attended, &n->attended_delta);
  plan_conv_layer(&n->high, z.h[last], z.w[last], arena);

  int h8 = z.h[1 + LOW8_BLOCK], w8 = z.w[1 + LOW8_BLOCK];
  int h4 = z.h[1 + LOW4_BLOCK], w4 = z.w[1 + LOW4_BLOCK];
  arena_pair(arena, h8, w8, classes, &n->up8, &n->up8_delta);
  plan_conv_layer(&n->low8, h8, w8, arena);
  arena_pair(arena, h4, w4, classes, &n->up4, &n->up4_delta);
  plan_conv_layer(&n->low4, h4, w4, arena);
  arena_pair(arena, z.h[0], z.w[0], classes, &n->up2, &n->up2_delta);
  plan_conv_layer(&n->low2, z.h[0], z.w[0], arena);
}

static const FeatureMap *block_output(Mobilenet *n, int i)
{
  return i < 0 ? &n->stem.output : &n->blocks[i].project.output;
}

static FeatureMap *block_delta(Mobilenet *n, int i)
{
  return i < 0 ? &n->stem.delta : &n->blocks[i].project.delta;
}

static const FeatureMap *mobilenet_forward(Student *s, const FeatureMap *input, ThreadPool *pool)
{
  Mobilenet *n = net(s);
  const float *p = s->params;
  const FeatureMap *b6 = block_output(n, MOBILENET_BLOCKS - 1);

  forward_conv_layer(&n->stem, input, NULL, p, pool);
  for (int i = 0; i < MOBILENET_BLOCKS; i++)
    forward_inverted_residual(&n->blocks[i], block_output(n, i - 1), p, pool);

  forward_conv_layer(&n->aspp_conv, b6, NULL, p, pool);
  global_avg_pool_forward(b6, n->pooled.data, pool);
  forward_conv_layer(&n->aspp_gate, &n->pooled, NULL, p, pool);
  channel_scale_forward(&n->aspp_conv.output, n->aspp_gate.output.data, &n->attended, pool);

  forward_conv_layer(&n->high, &n->attended, NULL, p, pool);
  resize_bilinear_forward(&n->high.output, &n->up8, pool);
  forward_conv_layer(&n->low8, block_output(n, LOW8_BLOCK), &n->up8, p, pool);
  resize_bilinear_forward(&n->low8.output, &n->up4, pool);
  forward_conv_layer(&n->low4, block_output(n, LOW4_BLOCK), &n->up4, p, pool);
  resize_bilinear_forward(&n->low4.output, &n->up2, pool);
  forward_conv_layer(&n->low2, &n->stem.output, &n->up2, p, pool);
  return &n->low2.output;
}

static FeatureMap *mobilenet_logits_delta(Student *s)
{
  return &net(s)->low2.delta;
}

/* The forward in reverse. s0, b0 and b2 feed a classifier and the next block: the classifier's
 * gradient arrives first and the block's is added to it. A classifier's output gradient is also
 * that of the coarser logits added to it (up2, up4, up8), resized back. */
static void mobilenet_backward(Student *s, ThreadPool *pool)
{
  Mobilenet *n = net(s);
  const float *p = s->params;
  float *g = s->grads;
  const FeatureMap *b6 = block_output(n, MOBILENET_BLOCKS - 1);

  backward_conv_layer(&n->low2, &n->stem.output, p, g, &n->stem.delta, 0, pool);
  resize_bilinear_backward(&n->low2.delta, &n->low4.delta, 0, pool);
  backward_conv_layer(&n->low4, block_output(n, LOW4_BLOCK), p, g, block_delta(n, LOW4_BLOCK), 0,
                      pool);
  resize_bilinear_backward(&n->low4.delta, &n->low8.delta, 0, pool);
  backward_conv_layer(&n->low8, block_output(n, LOW8_BLOCK), p, g, block_delta(n, LOW8_BLOCK), 0,
                      pool);
  resize_bilinear_backward(&n->low8.delta, &n->high.delta, 0, pool);
  backward_conv_layer(&n->high, &n->attended, p, g, &n->attended_delta, 0, pool);

  /* d(a) into the gate's output gradient (summed over pixels) and the branch's. */
  float *dgate = n->aspp_gate.delta.data;
  for (int ch = 0; ch < n->aspp_gate.delta.c; ch++)
    dgate[ch] = 0.0f;
  channel_scale_backward(&n->aspp_conv.output, n->aspp_gate.output.data, &n->attended_delta,
                         &n->aspp_conv.delta, dgate, 0, pool);
  backward_conv_layer(&n->aspp_gate, &n->pooled, p, g, &n->pooled_delta, 0, pool);
  global_avg_pool_backward(n->pooled_delta.data, block_delta(n, MOBILENET_BLOCKS - 1), 0, pool);
  backward_conv_layer(&n->aspp_conv, b6, p, g, block_delta(n, MOBILENET_BLOCKS - 1), 1, pool);

  for (int i = MOBILENET_BLOCKS - 1; i >= 0; i--) {
    int feeds_a_classifier = i - 1 == LOW8_BLOCK || i - 1 == LOW4_BLOCK || i == 0;
    backward_inverted_residual(&n->blocks[i], block_output(n, i - 1), p, g, block_delta(n, i - 1),
                               feeds_a_classifier, pool);
  }
  /* Nobody needs the gradient of the image. */
  backward_conv_layer(&n->stem, &s->input, p, g, NULL, 0, pool);
}

/* ---- configuration -------------------------------------------------------------------------- */

static void mobilenet_config_default(StudentConfig *cfg)
{
  cfg->mobilenet = (MobilenetConfig){
    .stem = { 16 },
    .expand = { 16, 64, 72, 96, 120, 120, 144 },
    .out = { 16, 24, 24, 40, 40, 40, 48 },
    .aspp = { 64 },
    .hswish = TRUE,
  };
}

#define MOBILENET_KEY(name, count) \
  { #name, count, offsetof(StudentConfig, mobilenet) + offsetof(MobilenetConfig, name) }

static const StudentConfigKey mobilenet_keys[] = {
  MOBILENET_KEY(stem, 1), MOBILENET_KEY(expand, MOBILENET_BLOCKS),
  MOBILENET_KEY(out, MOBILENET_BLOCKS), MOBILENET_KEY(aspp, 1), MOBILENET_KEY(hswish, 0),
};

/* The weights of the 1x1 convolutions. */
static double mobilenet_min_param_count(const StudentConfig *cfg)
{
  const MobilenetConfig *c = &cfg->mobilenet;
  double count = 27.0 * c->stem[0];
  for (int i = 0; i < MOBILENET_BLOCKS; i++)
    count += (double)c->expand[i] * c->out[i];
  return count + 2.0 * c->out[MOBILENET_BLOCKS - 1] * c->aspp[0];
}

const StudentArchOps mobilenet_ops = {
  .name = "mobilenet",
  .config_default = mobilenet_config_default,
  .keys = mobilenet_keys,
  .n_keys = G_N_ELEMENTS(mobilenet_keys),
  .min_param_count = mobilenet_min_param_count,
  .make = mobilenet_make,
  .logits_size = mobilenet_logits_size,
  .forward_flops = mobilenet_forward_flops,
  .plan = mobilenet_plan,
  .forward = mobilenet_forward,
  .logits_delta = mobilenet_logits_delta,
  .backward = mobilenet_backward,
  .apply_precision = mobilenet_apply_precision,
};
