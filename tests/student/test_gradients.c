/* test_gradients.c: every gradient of the student against central finite differences: each
 * layer kind alone (convolution of every geometry and activation, depthwise convolution with and
 * without its fusion branch, residual block of every shortcut kind, inverted residual, ghost
 * bottleneck, bilinear resize, concatenation by channel slices), the loss, and the whole network
 * of every architecture. */
#include <string.h>

#include "block.h"
#include "ghost.h"
#include "gradcheck.h"
#include "init.h"
#include "inverted_residual.h"
#include "student.h"

/* Elements checked per tensor (all of a smaller one). */
#define SAMPLES 6

static GRand *rng;

/* From He-normal: every term of the network non-zero (random biases and scales); residual
 * branches at full scale unless damped (their initial gain kept). */
static void randomise_tensor_damped(const StudentTensor *t, float *v, gboolean damped)
{
  for (size_t k = 0; k < t->count; k++)
    if (!t->hwio)
      v[k] = (float)(t->init_gain + g_rand_double_range(rng, -0.2, 0.2));
    else if (t->init_gain > 0.0 && !damped)
      v[k] /= (float)t->init_gain;
}

static void randomise_tensor(const StudentTensor *t, float *v)
{
  randomise_tensor_damped(t, v, FALSE);
}

static float *random_params(const ParamTable *table)
{
  float *params = g_new(float, table->count);
  init_params(table, params, g_rand_int(rng));
  for (int i = 0; i < param_table_size(table); i++) {
    const StudentTensor *t = param_table_get(table, i);
    randomise_tensor(t, params + t->offset);
  }
  return params;
}

static FeatureMap new_map(int h, int w, int c)
{
  return feature_map(g_new(float, (size_t)h * w * c), h, w, c);
}

static FeatureMap random_map(int h, int w, int c)
{
  FeatureMap m = new_map(h, w, c);
  fill_uniform(m.data, (size_t)h * w * c, -1.0f, 1.0f, rng);
  return m;
}

static float *random_weights_for(const FeatureMap *m)
{
  float *r = g_new(float, (size_t)m->h * m->w * m->c);
  fill_uniform(r, (size_t)m->h * m->w * m->c, -1.0f, 1.0f, rng);
  return r;
}

static size_t map_size(const FeatureMap *m)
{
  return (size_t)m->h * m->w * m->c;
}

/* Every tensor of table, SAMPLES elements each. */
static GradcheckResult check_tensors(const char *what, const ParamTable *table,
                                     GradcheckLoss loss, void *ctx, float *params,
                                     const float *grads)
{
  GradcheckResult all = { 0.0, 0.0 };
  for (int i = 0; i < param_table_size(table); i++) {
    const StudentTensor *t = param_table_get(table, i);
    g_autofree char *name = g_strdup_printf("%s %s", what, t->name);
    gradcheck_merge(&all, gradcheck(name, loss, ctx, params + t->offset, grads + t->offset,
                                    t->count, SAMPLES, rng));
  }
  return all;
}

/* A ReLU input within a step of its kink can spoil an element's differences (see gradcheck.h):
 * each tensor's median error must be within the tolerance, every element within LAYER_WORST. */
#define LAYER_WORST 0.1

static void assert_layer_check(GradcheckResult r)
{
  g_assert_cmpfloat(r.median, <=, GRADCHECK_TOLERANCE);
  g_assert_cmpfloat(r.worst, <=, LAYER_WORST);
}

/* ---- one layer or block at a time ------------------------------------------------------------ */

/* A layer or a block under test: made into table by the caller, planned for an h x w input, run
 * forward on x, and backward from its delta; loss = weighted_sum(output, out_weight). */
typedef struct LayerCase LayerCase;
struct LayerCase {
  void (*plan)(LayerCase *c, int h, int w, Arena *arena);
  void (*forward)(LayerCase *c);
  void (*backward)(LayerCase *c, int accumulate);
  FeatureMap *(*output)(LayerCase *c);
  FeatureMap *(*delta)(LayerCase *c);
  ParamTable table;
  float *params, *grads, *arena, *out_weight;
  FeatureMap x, dx;
  union {
    ConvLayer conv;
    DwLayer dw;
    Block block;
    InvertedResidual ir;
    GhostBottleneck ghost;
  } u;
};

static double layer_case_loss(void *ctx)
{
  LayerCase *c = ctx;
  c->forward(c);
  return weighted_sum(c->output(c), c->out_weight);
}

static void layer_case_backward(LayerCase *c, int accumulate)
{
  layer_case_loss(c);
  set_delta(c->delta(c), c->out_weight);
  c->backward(c, accumulate);
}

/* Checks every parameter and the input gradient of the case made in c->table, then that with
 * accumulate the input gradient is added to what dx held. */
static void check_layer_case(LayerCase *c, const char *what, int h, int w, int cin)
{
  Arena measure = { NULL, 0 };
  c->plan(c, h, w, &measure);
  c->arena = g_new(float, measure.used);
  Arena place = { c->arena, 0 };
  c->plan(c, h, w, &place);
  c->params = random_params(&c->table);
  c->grads = g_new0(float, c->table.count);
  c->x = random_map(h, w, cin);
  c->dx = new_map(h, w, cin);
  fill_nan(c->dx.data, map_size(&c->dx));
  c->out_weight = random_weights_for(c->output(c));
  layer_case_backward(c, 0);

  GradcheckResult r = check_tensors(what, &c->table, layer_case_loss, c, c->params, c->grads);
  gradcheck_merge(&r, gradcheck("input", layer_case_loss, c, c->x.data, c->dx.data,
                                map_size(&c->x), 4 * SAMPLES, rng));
  g_test_message("%s: median relative error %.3g, worst %.3g", what, r.median, r.worst);
  assert_layer_check(r);

  float *first = g_memdup2(c->dx.data, sizeof(float) * map_size(&c->dx));
  for (size_t i = 0; i < map_size(&c->dx); i++)
    c->dx.data[i] = 1.0f;
  layer_case_backward(c, 1);
  for (size_t i = 0; i < map_size(&c->dx); i++)
    g_assert_cmpfloat_with_epsilon(c->dx.data[i], 1.0f + first[i],
                                   1e-5f * (1.0f + fabsf(first[i])));
  g_free(first);

  param_table_clear(&c->table);
  g_free(c->params);
  g_free(c->grads);
  g_free(c->arena);
  g_free(c->out_weight);
  g_free(c->x.data);
  g_free(c->dx.data);
}

/* A planned output and delta of the given channels, at the size the case maps h x w to. */
static void plan_output(Arena *arena, int h, int w, int c, FeatureMap *out, FeatureMap *delta)
{
  *out = arena_feature_map(arena, h, w, c);
  *delta = arena_feature_map(arena, h, w, c);
}

/* ---- convolution layer ------------------------------------------------------------------------ */

static void conv_plan(LayerCase *c, int h, int w, Arena *arena)
{
  plan_conv_layer(&c->u.conv, h, w, arena);
}

static void conv_forward(LayerCase *c)
{
  forward_conv_layer(&c->u.conv, &c->x, NULL, c->params, NULL);
}

static void conv_backward(LayerCase *c, int accumulate)
{
  backward_conv_layer(&c->u.conv, &c->x, c->params, c->grads, &c->dx, accumulate, NULL);
}

static FeatureMap *conv_output(LayerCase *c) { return &c->u.conv.output; }
static FeatureMap *conv_delta(LayerCase *c) { return &c->u.conv.delta; }

static void check_conv_layer(int kh, int kw, int stride, Activation act, int h, int w)
{
  LayerCase c = { .plan = conv_plan, .forward = conv_forward, .backward = conv_backward,
                 .output = conv_output, .delta = conv_delta };
  param_table_init(&c.table);
  make_conv_layer(&c.u.conv, &c.table, "conv", 5, 7, kh, kw, stride, act);
  g_autofree char *what = g_strdup_printf("conv %dx%d/%d %s at %dx%d", kh, kw, stride,
                                          activation_name(act), h, w);
  check_layer_case(&c, what, h, w, 5);
}

static void test_conv_layers(void)
{
  check_conv_layer(3, 3, 1, ACTIVATION_RELU, 9, 11);
  check_conv_layer(3, 3, 2, ACTIVATION_RELU, 9, 11);
  check_conv_layer(3, 3, 2, ACTIVATION_NONE, 8, 10);
  check_conv_layer(1, 3, 1, ACTIVATION_NONE, 9, 11);
  check_conv_layer(3, 1, 1, ACTIVATION_RELU, 9, 11);
  check_conv_layer(1, 1, 1, ACTIVATION_NONE, 9, 11);
  check_conv_layer(1, 1, 2, ACTIVATION_NONE, 9, 11);
  /* The activations that run as a pass of their own. */
  check_conv_layer(3, 3, 2, ACTIVATION_HSWISH, 9, 11);
  check_conv_layer(1, 1, 1, ACTIVATION_SIGMOID, 9, 11);
}

/* ---- depthwise layer ------------------------------------------------------------------------ */

static void dw_plan(LayerCase *c, int h, int w, Arena *arena)
{
  plan_dw_layer(&c->u.dw, h, w, arena);
}

static void dw_forward(LayerCase *c)
{
  forward_dw_layer(&c->u.dw, &c->x, c->params, NULL);
}

static void dw_backward(LayerCase *c, int accumulate)
{
  backward_dw_layer(&c->u.dw, &c->x, c->params, c->grads, &c->dx, accumulate, NULL);
}

static FeatureMap *dw_output(LayerCase *c) { return &c->u.dw.output; }
static FeatureMap *dw_delta(LayerCase *c) { return &c->u.dw.delta; }

static void check_dw_layer(int stride, Activation act, gboolean fusion, int h, int w)
{
  LayerCase c = { .plan = dw_plan, .forward = dw_forward, .backward = dw_backward,
                 .output = dw_output, .delta = dw_delta };
  param_table_init(&c.table);
  make_dw_layer(&c.u.dw, &c.table, "dw", 6, stride, act, fusion ? "fusion" : NULL);
  g_autofree char *what = g_strdup_printf("dw3x3/%d %s%s at %dx%d", stride, activation_name(act),
                                          fusion ? " with fusion" : "", h, w);
  check_layer_case(&c, what, h, w, 6);
}

static void test_dw_layers(void)
{
  check_dw_layer(1, ACTIVATION_NONE, FALSE, 9, 11);
  check_dw_layer(2, ACTIVATION_RELU, FALSE, 9, 11);
  check_dw_layer(2, ACTIVATION_HSWISH, FALSE, 8, 7);
  check_dw_layer(1, ACTIVATION_RELU, TRUE, 9, 11);
  check_dw_layer(1, ACTIVATION_NONE, TRUE, 1, 5);
}

/* ---- blocks ----------------------------------------------------------------------------------- */

static void block_plan(LayerCase *c, int h, int w, Arena *arena)
{
  int oh, ow;
  FeatureMap out, delta;
  block_output_size(&c->u.block, h, w, &oh, &ow);
  plan_output(arena, oh, ow, c->u.block.conv1.geom.cout, &out, &delta);
  plan_block(&c->u.block, h, w, out, delta, arena);
}

static void block_forward(LayerCase *c)
{
  forward_block(&c->u.block, &c->x, c->params, NULL);
}

static void block_backward(LayerCase *c, int accumulate)
{
  backward_block(&c->u.block, &c->x, c->params, c->grads, &c->dx, accumulate, NULL);
}

static FeatureMap *block_case_output(LayerCase *c) { return block_output(&c->u.block); }
static FeatureMap *block_case_delta(LayerCase *c) { return block_delta(&c->u.block); }

static void check_block(int cin, int cout, int stride, ShortcutKind kind)
{
  LayerCase c = { .plan = block_plan, .forward = block_forward, .backward = block_backward,
                 .output = block_case_output, .delta = block_case_delta };
  param_table_init(&c.table);
  make_block(&c.u.block, &c.table, "block", cin, cout, stride);
  g_assert_cmpint(c.u.block.shortcut_kind, ==, kind);
  g_assert_cmpint(param_table_size(&c.table), ==, kind == SHORTCUT_CONV ? 8 : 6);
  g_autofree char *what = g_strdup_printf("block %d->%d/%d shortcut %d", cin, cout, stride, kind);
  check_layer_case(&c, what, 9, 11, cin);
}

static void test_blocks(void)
{
  check_block(6, 6, 1, SHORTCUT_IDENTITY);
  check_block(6, 6, 2, SHORTCUT_SUBSAMPLE);
  check_block(5, 7, 1, SHORTCUT_CONV);
  check_block(5, 7, 2, SHORTCUT_CONV);
}

static void ir_plan(LayerCase *c, int h, int w, Arena *arena)
{
  plan_inverted_residual(&c->u.ir, h, w, arena);
}

static void ir_forward(LayerCase *c)
{
  forward_inverted_residual(&c->u.ir, &c->x, c->params, NULL);
}

static void ir_backward(LayerCase *c, int accumulate)
{
  backward_inverted_residual(&c->u.ir, &c->x, c->params, c->grads, &c->dx, accumulate, NULL);
}

static FeatureMap *ir_output(LayerCase *c) { return &c->u.ir.project.output; }
static FeatureMap *ir_delta(LayerCase *c) { return &c->u.ir.project.delta; }

static void check_inverted_residual(int cin, int expansion, int cout, int stride, Activation act)
{
  LayerCase c = { .plan = ir_plan, .forward = ir_forward, .backward = ir_backward,
                 .output = ir_output, .delta = ir_delta };
  param_table_init(&c.table);
  make_inverted_residual(&c.u.ir, &c.table, "ir", cin, expansion, cout, stride, act);
  g_autofree char *what = g_strdup_printf("inverted residual %d->%d->%d/%d %s", cin, expansion,
                                          cout, stride, activation_name(act));
  check_layer_case(&c, what, 9, 11, cin);
}

static void test_inverted_residuals(void)
{
  check_inverted_residual(6, 6, 6, 2, ACTIVATION_RELU);     /* no expansion */
  check_inverted_residual(5, 12, 7, 2, ACTIVATION_RELU);
  check_inverted_residual(6, 12, 6, 1, ACTIVATION_HSWISH);  /* the input added */
  check_inverted_residual(6, 12, 8, 1, ACTIVATION_HSWISH);
}

static void ghost_plan(LayerCase *c, int h, int w, Arena *arena)
{
  int oh, ow;
  FeatureMap out, delta;
  ghost_bottleneck_output_size(&c->u.ghost, h, w, &oh, &ow);
  plan_output(arena, oh, ow, c->u.ghost.ghost2.cheap.channels, &out, &delta);
  plan_ghost_bottleneck(&c->u.ghost, h, w, out, delta, arena);
}

static void ghost_forward(LayerCase *c)
{
  forward_ghost_bottleneck(&c->u.ghost, &c->x, c->params, NULL);
}

static void ghost_backward(LayerCase *c, int accumulate)
{
  backward_ghost_bottleneck(&c->u.ghost, &c->x, c->params, c->grads, &c->dx, accumulate, NULL);
}

static FeatureMap *ghost_output(LayerCase *c) { return ghost_bottleneck_output(&c->u.ghost); }
static FeatureMap *ghost_delta(LayerCase *c) { return ghost_bottleneck_delta(&c->u.ghost); }

static void check_ghost_bottleneck(int cin, int mid, int cout, int stride, gboolean fused)
{
  LayerCase c = { .plan = ghost_plan, .forward = ghost_forward, .backward = ghost_backward,
                 .output = ghost_output, .delta = ghost_delta };
  param_table_init(&c.table);
  make_ghost_bottleneck(&c.u.ghost, &c.table, "ghost", cin, mid, cout, stride, fused);
  g_autofree char *what = g_strdup_printf("ghost bottleneck %d->%d->%d/%d%s", cin, mid, cout,
                                          stride, fused ? " fused" : "");
  check_layer_case(&c, what, 9, 11, cin);
}

static void test_ghost_bottlenecks(void)
{
  check_ghost_bottleneck(6, 10, 6, 1, FALSE); /* the input added */
  check_ghost_bottleneck(5, 10, 7, 2, FALSE); /* the depthwise-pointwise shortcut, downsampling */
  check_ghost_bottleneck(9, 8, 6, 1, FALSE);
  check_ghost_bottleneck(5, 10, 7, 2, TRUE);
}

/* ---- bilinear resize -------------------------------------------------------------------------- */

typedef struct {
  FeatureMap x, y, dx;
  float *out_weight;
} ResizeCase;

static double resize_case_loss(void *ctx)
{
  ResizeCase *c = ctx;
  resize_bilinear_forward(&c->x, &c->y, NULL);
  return weighted_sum(&c->y, c->out_weight);
}

static void check_resize(int in_h, int in_w, int out_h, int out_w)
{
  ResizeCase c = { .x = random_map(in_h, in_w, 3), .y = new_map(out_h, out_w, 3),
                   .dx = new_map(in_h, in_w, 3) };
  c.out_weight = random_weights_for(&c.y);
  FeatureMap dy = feature_map(c.out_weight, out_h, out_w, 3);
  fill_nan(c.dx.data, map_size(&c.dx));
  resize_bilinear_backward(&dy, &c.dx, 0, NULL);
  GradcheckResult r = gradcheck("resize input", resize_case_loss, &c, c.x.data, c.dx.data,
                           map_size(&c.x), 1000, rng);
  g_test_message("resize %dx%d -> %dx%d: worst relative error %.3g", in_h, in_w, out_h, out_w,
                 r.worst);
  /* Linear: no kinks, every element counts. */
  g_assert_cmpfloat(r.worst, <=, GRADCHECK_TOLERANCE);
  g_free(c.x.data);
  g_free(c.y.data);
  g_free(c.dx.data);
  g_free(c.out_weight);
}

static void test_resize(void)
{
  check_resize(3, 4, 9, 11); /* the decoder's upsampling, odd sizes */
  check_resize(5, 6, 9, 11);
  check_resize(9, 11, 4, 5); /* and downsampling */
}

/* ---- concatenation by channel slices ------------------------------------------------------------ */

/* cat = (conv_a(x), up(y)) in one buffer, read by conv_b: the decoder's pattern. */
typedef struct {
  ParamTable table;
  ConvLayer conv_a, conv_b;
  float *params, *grads, *out_weight, *buffers;
  FeatureMap x, dx, y, dy, cat, dcat;
} ConcatCase;

static double concat_case_loss(void *ctx)
{
  ConcatCase *c = ctx;
  FeatureMap up = feature_map_slice(c->cat, 4, 5);
  forward_conv_layer(&c->conv_a, &c->x, NULL, c->params, NULL);
  resize_bilinear_forward(&c->y, &up, NULL);
  forward_conv_layer(&c->conv_b, &c->cat, NULL, c->params, NULL);
  return weighted_sum(&c->conv_b.output, c->out_weight);
}

static void test_concat(void)
{
  const int h = 9, w = 11;
  ConcatCase c = { 0 };
  param_table_init(&c.table);
  make_conv_layer(&c.conv_a, &c.table, "a", 3, 4, 3, 3, 1, ACTIVATION_RELU);
  make_conv_layer(&c.conv_b, &c.table, "b", 9, 6, 3, 3, 1, ACTIVATION_NONE);
  c.buffers = g_new(float, 4 * h * w * 9);
  c.cat = feature_map(c.buffers, h, w, 9);
  c.dcat = feature_map(c.buffers + h * w * 9, h, w, 9);
  c.conv_a.output = feature_map_slice(c.cat, 0, 4);
  c.conv_a.delta = feature_map_slice(c.dcat, 0, 4);
  c.conv_b.output = feature_map(c.buffers + 2 * h * w * 9, h, w, 6);
  c.conv_b.delta = feature_map(c.buffers + 3 * h * w * 9, h, w, 6);
  c.params = random_params(&c.table);
  c.grads = g_new0(float, c.table.count);
  c.x = random_map(h, w, 3);
  c.dx = new_map(h, w, 3);
  c.y = random_map(4, 6, 5);
  c.dy = new_map(4, 6, 5);
  c.out_weight = random_weights_for(&c.conv_b.output);

  concat_case_loss(&c);
  set_delta(&c.conv_b.delta, c.out_weight);
  backward_conv_layer(&c.conv_b, &c.cat, c.params, c.grads, &c.dcat, 0, NULL);
  FeatureMap dup = feature_map_slice(c.dcat, 4, 5);
  resize_bilinear_backward(&dup, &c.dy, 0, NULL);
  backward_conv_layer(&c.conv_a, &c.x, c.params, c.grads, &c.dx, 0, NULL);

  GradcheckResult r = check_tensors("concat", &c.table, concat_case_loss, &c, c.params, c.grads);
  gradcheck_merge(&r, gradcheck("concat x", concat_case_loss, &c, c.x.data, c.dx.data,
                                map_size(&c.x), 4 * SAMPLES, rng));
  gradcheck_merge(&r, gradcheck("concat y", concat_case_loss, &c, c.y.data, c.dy.data,
                                map_size(&c.y), 4 * SAMPLES, rng));
  g_test_message("concat: median relative error %.3g, worst %.3g", r.median, r.worst);
  assert_layer_check(r);

  param_table_clear(&c.table);
  g_free(c.params);
  g_free(c.grads);
  g_free(c.out_weight);
  g_free(c.buffers);
  g_free(c.x.data);
  g_free(c.dx.data);
  g_free(c.y.data);
  g_free(c.dy.data);
}

/* ---- loss ------------------------------------------------------------------------------------ */

typedef struct {
  FeatureMap logits;
  uint8_t *labels;
  float *pixel_weight;
} LossCase;

static double loss_case_loss(void *ctx)
{
  LossCase *c = ctx;
  return softmax_xent(&c->logits, c->labels, c->pixel_weight, NULL, NULL);
}

/* Labels with ignored pixels (255, and a class beyond the last), pixel weights with zeros. */
static void random_targets(int h, int w, int classes, uint8_t **labels, float **pixel_weight)
{
  *labels = g_new(uint8_t, (size_t)h * w);
  *pixel_weight = g_new(float, (size_t)h * w);
  for (int i = 0; i < h * w; i++) {
    double u = g_rand_double(rng);
    (*labels)[i] = u < 0.15 ? LABEL_IGNORE : u < 0.2 ? classes : g_rand_int_range(rng, 0, classes);
    (*pixel_weight)[i] = g_rand_double(rng) < 0.1 ? 0.0f : (float)g_rand_double_range(rng, 0.5, 2);
  }
}

static void test_loss(void)
{
  LossCase c = { .logits = random_map(7, 9, 3) };
  for (size_t i = 0; i < map_size(&c.logits); i++)
    c.logits.data[i] *= 3.0f;
  random_targets(7, 9, 3, &c.labels, &c.pixel_weight);
  FeatureMap dlogits = new_map(7, 9, 3);
  fill_nan(dlogits.data, map_size(&dlogits));
  softmax_xent(&c.logits, c.labels, c.pixel_weight, &dlogits, NULL);
  GradcheckResult r = gradcheck("logits", loss_case_loss, &c, c.logits.data, dlogits.data,
                           map_size(&c.logits), 1000, rng);
  g_test_message("softmax cross-entropy: worst relative error %.3g", r.worst);
  /* Smooth: every element counts. */
  g_assert_cmpfloat(r.worst, <=, GRADCHECK_TOLERANCE);
  g_free(c.logits.data);
  g_free(dlogits.data);
  g_free(c.labels);
  g_free(c.pixel_weight);
}

/* ---- the whole network ---------------------------------------------------------------------- */

/* The loss is softmax_xent against labels, or, with out_weight, a weighted sum of the logits. */
typedef struct {
  Student *student;
  FeatureMap input;
  uint8_t *labels;
  float *pixel_weight;
  float *out_weight;
} NetCase;

static double net_case_loss(void *ctx)
{
  NetCase *c = ctx;
  const FeatureMap *logits = student_forward(c->student, &c->input, NULL);
  if (c->out_weight)
    return weighted_sum(logits, c->out_weight);
  return softmax_xent(logits, c->labels, c->pixel_weight, NULL, NULL);
}

static double net_case_backward(NetCase *c)
{
  student_forward(c->student, &c->input, NULL);
  if (!c->out_weight)
    return student_backward(c->student, c->labels, c->pixel_weight, NULL);
  set_delta(student_logits_delta(c->student), c->out_weight);
  student_backward_from_logits(c->student, NULL);
  return 0.0;
}

/* A deep ReLU network in float always has some elements whose differences are spoilt (see
 * gradcheck.h; a ReLU input can even sit exactly at its kink), so each tensor is judged by the
 * median of its elements' errors, which a wrong gradient moves and a few spoilt elements do not.
 * The worst element is reported, not asserted. (tests/parity compares every gradient of the
 * full-width network with PyTorch's autograd to 1e-3.) */
#define NETWORK_SAMPLES 25

/* With the softmax loss (a mean over pixels) the gradients of the early layers are small next
 * to the float rounding of the loss, so there the check covers the layers next to the loss: it
 * is the loss's path that it checks; the weighted sum of logits checks all the rest. */
static gboolean checked_with_softmax(const StudentTensor *t)
{
  return g_str_has_prefix(t->name, "classifier") || g_str_has_prefix(t->name, "head.");
}

static GradcheckResult check_network_tensors(NetCase *c, const float *grads, int *checked)
{
  Student *s = c->student;
  GradcheckResult all = { 0.0, 0.0 };
  *checked = 0;
  for (int i = 0; i < student_tensor_count(s); i++) {
    const StudentTensor *t = student_tensor(s, i);
    if (!c->out_weight && !checked_with_softmax(t))
      continue;
    ++*checked;
    gradcheck_merge(&all, gradcheck(t->name, net_case_loss, c, student_params(s) + t->offset,
                                    grads + t->offset, t->count, NETWORK_SAMPLES, rng));
  }
  return all;
}

static void check_network_damped(const StudentConfig *cfg, int h, int w, gboolean softmax,
                                 gboolean damped)
{
  NetCase c = { .student = student_new(cfg, g_rand_int(rng)), .input = random_map(h, w, 3) };
  Student *s = c.student;
  for (int i = 0; i < student_tensor_count(s); i++)
    randomise_tensor_damped(student_tensor(s, i), student_params(s) + student_tensor(s, i)->offset,
                            damped);
  int lh, lw;
  student_logits_size(s, h, w, &lh, &lw);
  random_targets(lh, lw, cfg->num_classes, &c.labels, &c.pixel_weight);
  FeatureMap logits_shape = { NULL, lh, lw, cfg->num_classes, cfg->num_classes };
  if (!softmax)
    c.out_weight = random_weights_for(&logits_shape);

  const FeatureMap *logits = student_forward(s, &c.input, NULL);
  g_assert_cmpint(logits->h, ==, lh);
  g_assert_cmpint(logits->w, ==, lw);
  g_assert_cmpint(logits->c, ==, cfg->num_classes);
  student_zero_grads(s);
  double loss = net_case_backward(&c);
  if (softmax)
    g_assert_cmpfloat_with_epsilon(loss, net_case_loss(&c), 1e-6 * fabs(loss));

  size_t n = student_param_count(s);
  float *grads = g_memdup2(student_grads(s), sizeof(float) * n);
  int checked;
  GradcheckResult r = check_network_tensors(&c, grads, &checked);
  g_test_message("%s %dx%d, %d classes%s, %s, %d tensors: largest median relative error "
                 "of a tensor %.3g, worst element %.3g", student_arch_name(cfg->arch), w, h,
                 cfg->num_classes, cfg->jitnet.head_skip ? ", head_skip" : "",
                 softmax ? "softmax cross-entropy" : "weighted sum of logits",
                 checked, r.median, r.worst);
  g_assert_cmpfloat(r.median, <=, GRADCHECK_TOLERANCE);

  /* backward adds to the gradients it finds. A kernel may add its terms into the buffer one by
   * one, so the rounding is relative to the terms, not to their sum: the tolerance has a floor
   * at the gradient's root mean square. */
  net_case_backward(&c);
  float floor = 1e-5f * (float)gradcheck_rms(grads, n) + 1e-12f;
  for (size_t k = 0; k < n; k++)
    g_assert_cmpfloat_with_epsilon(student_grads(s)[k], 2.0f * grads[k],
                                   1e-5f * fabsf(grads[k]) + floor);

  g_free(grads);
  g_free(c.input.data);
  g_free(c.labels);
  g_free(c.pixel_weight);
  g_free(c.out_weight);
  student_free(s);
}

static void check_network(const StudentConfig *cfg, int h, int w, gboolean softmax)
{
  check_network_damped(cfg, h, w, softmax, FALSE);
}

/* Narrow widths with the default's shortcut kinds (conv, subsample, conv, identity, conv, conv):
 * the graph is the same, and fewer ReLUs lie within a step of their kink, which keeps the finite
 * differences of the whole network clean at a meaningful tolerance. */
static void narrow_config(StudentConfig *cfg, int num_classes)
{
  student_config_default_arch(cfg, STUDENT_ARCH_JITNET, num_classes);
  cfg->jitnet = (JitnetConfig){ .stem = { 4, 6 }, .encoder = { 8, 8, 10 },
                                .decoder = { 10, 8, 6 }, .head = { 6, 4 } };
}

static void test_network_default(void)
{
  StudentConfig cfg;
  narrow_config(&cfg, 2);
  check_network(&cfg, 45, 37, FALSE);
  check_network(&cfg, 45, 37, TRUE);
}

static void test_network_head_skip(void)
{
  StudentConfig cfg;
  narrow_config(&cfg, 3);
  cfg.jitnet.head_skip = TRUE;
  check_network(&cfg, 33, 64, FALSE);
  check_network(&cfg, 33, 64, TRUE);
}

/* mobilenet with narrow widths and the default's shortcut kinds (identity in blocks 2, 4, 5). */
static void test_network_mobilenet(void)
{
  StudentConfig cfg;
  student_config_default_arch(&cfg, STUDENT_ARCH_MOBILENET, 2);
  cfg.mobilenet = (MobilenetConfig){ .stem = { 4 }, .expand = { 4, 10, 12, 12, 14, 14, 14 },
                                     .out = { 4, 6, 6, 8, 8, 8, 10 }, .aspp = { 6 },
                                     .hswish = TRUE };
  check_network(&cfg, 45, 37, FALSE);
  check_network(&cfg, 45, 37, TRUE);
}

/* repghost with narrow widths, in its trainable form (the fused form is the same function:
 * tests/student/test_architectures). Its decoder's biases sum the gradient of every pixel below
 * eight bottlenecks: with the branches at full scale the activations reach thousands, and the
 * float rounding of the loss alone moved their difference quotients by several percent (the
 * median of a tensor ranged from 0.005 to 0.1 over seeds and ISAs). With the branches at their
 * initial gain and a smaller odd frame, the medians stay within 0.009 over 12 seeds on every
 * ISA; every gradient at 45x37 is compared with PyTorch's autograd in tests/parity. */
static void test_network_repghost(void)
{
  StudentConfig cfg;
  student_config_default_arch(&cfg, STUDENT_ARCH_REPGHOST, 3);
  cfg.repghost = (RepghostConfig){ .stem = { 4 }, .encoder = { 6, 6, 8, 10 },
                                   .encoder_mid = { 8, 8, 10, 12 }, .decoder = { 8, 6, 6 },
                                   .decoder_mid = { 10, 8, 8 }, .head = { 6 } };
  check_network_damped(&cfg, 21, 17, FALSE, TRUE);
  check_network_damped(&cfg, 21, 17, TRUE, TRUE);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  rng = g_rand_new_with_seed(20241122);
  g_test_add_func("/student/gradients/conv-layers", test_conv_layers);
  g_test_add_func("/student/gradients/dw-layers", test_dw_layers);
  g_test_add_func("/student/gradients/blocks", test_blocks);
  g_test_add_func("/student/gradients/inverted-residuals", test_inverted_residuals);
  g_test_add_func("/student/gradients/ghost-bottlenecks", test_ghost_bottlenecks);
  g_test_add_func("/student/gradients/resize", test_resize);
  g_test_add_func("/student/gradients/concat", test_concat);
  g_test_add_func("/student/gradients/loss", test_loss);
  g_test_add_func("/student/gradients/network-default", test_network_default);
  g_test_add_func("/student/gradients/network-head-skip", test_network_head_skip);
  g_test_add_func("/student/gradients/network-mobilenet", test_network_mobilenet);
  g_test_add_func("/student/gradients/network-repghost", test_network_repghost);
  int status = g_test_run();
  g_rand_free(rng);
  return status;
}
