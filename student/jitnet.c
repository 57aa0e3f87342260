/* jitnet.c: the student graph (student/README.md): making the layers, planning the buffers of
 * an input size, forward and backward.
 *
 * Every activation has a paired gradient buffer of the same shape, all in one arena planned per
 * input size. Concatenations are channel slices: e1 and e0 are written straight into the first
 * channels of decoder.1's and decoder.2's inputs, the upsampled tensors into the rest, and their
 * gradients come back the same way. */
#include <string.h>

#include "block.h"
#include "init.h"

struct Student {
  StudentConfig config;
  ParamTable table;
  float *params, *grads;

  ConvLayer stem[2];
  Block encoder[3], decoder[3];
  ConvLayer head[2], classifier;

  /* Planned for an input of planned_h x planned_w (0 = not yet). */
  int planned_h, planned_w;
  float *arena;
  /* Inputs of decoder.1, decoder.2 and head.0 (concatenations) and their gradients. */
  FeatureMap concat[3], concat_delta[3];
  /* The upsampled d0, d1, d2: slices of concat[0..2]. */
  FeatureMap up[3], up_delta[3];
  FeatureMap input; /* of the last forward, read again by backward */
  int bf16_backward, bf16_forward; /* student_set_bf16, student_set_bf16_forward */
};

static void make_layers(Student *s)
{
  const StudentConfig *c = &s->config;
  ParamTable *t = &s->table;
  make_conv_layer(&s->stem[0], t, "stem.0", 3, c->stem[0], 3, 3, 2, 1);
  make_conv_layer(&s->stem[1], t, "stem.1", c->stem[0], c->stem[1], 3, 3, 2, 1);
  make_block(&s->encoder[0], t, "encoder.0", c->stem[1], c->encoder[0], 2);
  make_block(&s->encoder[1], t, "encoder.1", c->encoder[0], c->encoder[1], 2);
  make_block(&s->encoder[2], t, "encoder.2", c->encoder[1], c->encoder[2], 2);
  make_block(&s->decoder[0], t, "decoder.0", c->encoder[2], c->decoder[0], 1);
  make_block(&s->decoder[1], t, "decoder.1", c->encoder[1] + c->decoder[0], c->decoder[1], 1);
  make_block(&s->decoder[2], t, "decoder.2", c->encoder[0] + c->decoder[1], c->decoder[2], 1);
  int head_in = c->decoder[2] + (c->head_skip ? c->stem[0] : 0);
  make_conv_layer(&s->head[0], t, "head.0", head_in, c->head[0], 3, 3, 1, 1);
  make_conv_layer(&s->head[1], t, "head.1", c->head[0], c->head[1], 3, 3, 1, 1);
  make_conv_layer(&s->classifier, t, "classifier", c->head[1], c->num_classes, 1, 1, 1, 0);
}

Student *student_new_zeroed(const StudentConfig *cfg)
{
  Student *s = g_new0(Student, 1);
  s->config = *cfg;
  param_table_init(&s->table);
  make_layers(s);
  s->params = g_aligned_alloc0(s->table.count, sizeof(float), 64);
  s->grads = g_aligned_alloc0(s->table.count, sizeof(float), 64);
  return s;
}

Student *student_new(const StudentConfig *cfg, guint64 seed)
{
  Student *s = student_new_zeroed(cfg);
  init_params(&s->table, s->params, seed);
  return s;
}

Student *student_copy(const Student *src)
{
  Student *s = student_new_zeroed(&src->config);
  memcpy(s->params, src->params, s->table.count * sizeof(float));
  return s;
}

void student_free(Student *s)
{
  if (!s)
    return;
  param_table_clear(&s->table);
  g_aligned_free(s->params);
  g_aligned_free(s->grads);
  g_aligned_free(s->arena);
  g_free(s);
}

static void set_layer_precision(ConvLayer *l, const Student *s)
{
  l->bf16 = s->bf16_backward;
  l->bf16_forward = s->bf16_forward;
}

static void apply_precision(Student *s)
{
  set_layer_precision(&s->stem[0], s);
  set_layer_precision(&s->stem[1], s);
  for (int i = 0; i < 3; i++) {
    block_set_bf16(&s->encoder[i], s->bf16_backward, s->bf16_forward);
    block_set_bf16(&s->decoder[i], s->bf16_backward, s->bf16_forward);
  }
  set_layer_precision(&s->head[0], s);
  set_layer_precision(&s->head[1], s);
  set_layer_precision(&s->classifier, s);
}

static gboolean set_bf16(Student *s, int *flag, gboolean on)
{
  *flag = on && kernels_have_bf16();
  apply_precision(s);
  return *flag;
}

gboolean student_set_bf16(Student *s, gboolean on) { return set_bf16(s, &s->bf16_backward, on); }
gboolean student_get_bf16(const Student *s) { return s->bf16_backward; }

gboolean student_set_bf16_forward(Student *s, gboolean on)
{
  return set_bf16(s, &s->bf16_forward, on);
}

gboolean student_get_bf16_forward(const Student *s) { return s->bf16_forward; }

const StudentConfig *student_get_config(const Student *s) { return &s->config; }
float *student_params(Student *s) { return s->params; }
float *student_grads(Student *s) { return s->grads; }
size_t student_param_count(const Student *s) { return s->table.count; }
int student_tensor_count(const Student *s) { return param_table_size(&s->table); }

const StudentTensor *student_tensor(const Student *s, int index)
{
  g_return_val_if_fail(index >= 0 && index < param_table_size(&s->table), NULL);
  return param_table_get(&s->table, index);
}

const StudentTensor *student_find_tensor(const Student *s, const char *name)
{
  for (int i = 0; i < param_table_size(&s->table); i++)
    if (g_str_equal(param_table_get(&s->table, i)->name, name))
      return param_table_get(&s->table, i);
  return NULL;
}

void student_zero_grads(Student *s)
{
  memset(s->grads, 0, sizeof(float) * s->table.count);
}

void student_logits_size(const Student *s, int in_h, int in_w, int *out_h, int *out_w)
{
  conv_layer_output_size(&s->stem[0], in_h, in_w, out_h, out_w);
}

/* Spatial sizes of s0, s1, e0, e1, e2 for an input size. */
typedef struct {
  int h[5], w[5];
} StageSizes;

static StageSizes stage_sizes(const Student *s, int in_h, int in_w)
{
  StageSizes z;
  conv_layer_output_size(&s->stem[0], in_h, in_w, &z.h[0], &z.w[0]);
  conv_layer_output_size(&s->stem[1], z.h[0], z.w[0], &z.h[1], &z.w[1]);
  for (int i = 0; i < 3; i++)
    block_output_size(&s->encoder[i], z.h[i + 1], z.w[i + 1], &z.h[i + 2], &z.w[i + 2]);
  return z;
}

double student_forward_flops(const Student *s, int in_h, int in_w)
{
  StageSizes z = stage_sizes(s, in_h, in_w);
  double flops = conv_layer_flops(&s->stem[0], z.h[0], z.w[0]) +
                 conv_layer_flops(&s->stem[1], z.h[1], z.w[1]);
  for (int i = 0; i < 3; i++)
    flops += block_flops(&s->encoder[i], z.h[i + 1], z.w[i + 1]);
  for (int i = 0; i < 3; i++)
    flops += block_flops(&s->decoder[i], z.h[4 - i], z.w[4 - i]);
  for (int i = 0; i < 2; i++)
    flops += conv_layer_flops(&s->head[i], z.h[0], z.w[0]);
  return flops + conv_layer_flops(&s->classifier, z.h[0], z.w[0]);
}

static void plan_pair(Arena *arena, int h, int w, int c, FeatureMap *map, FeatureMap *delta)
{
  *map = arena_feature_map(arena, h, w, c);
  *delta = arena_feature_map(arena, h, w, c);
}

/* concat[i] = (skip, up[i]) of the given widths; skip_width 0 = no skip. */
static void plan_concat(Student *s, int i, int h, int w, int skip_width, int up_width,
                        Arena *arena)
{
  plan_pair(arena, h, w, skip_width + up_width, &s->concat[i], &s->concat_delta[i]);
  s->up[i] = feature_map_slice(s->concat[i], skip_width, up_width);
  s->up_delta[i] = feature_map_slice(s->concat_delta[i], skip_width, up_width);
}

static void plan_buffers(Student *s, int in_h, int in_w, Arena *arena)
{
  const StudentConfig *c = &s->config;
  StageSizes z = stage_sizes(s, in_h, in_w);
  plan_concat(s, 0, z.h[3], z.w[3], c->encoder[1], c->decoder[0], arena);
  plan_concat(s, 1, z.h[2], z.w[2], c->encoder[0], c->decoder[1], arena);
  plan_concat(s, 2, z.h[0], z.w[0], c->head_skip ? c->stem[0] : 0, c->decoder[2], arena);

  if (c->head_skip) {
    s->stem[0].output = feature_map_slice(s->concat[2], 0, c->stem[0]);
    s->stem[0].delta = feature_map_slice(s->concat_delta[2], 0, c->stem[0]);
  } else {
    plan_conv_layer(&s->stem[0], in_h, in_w, arena);
  }
  plan_conv_layer(&s->stem[1], z.h[0], z.w[0], arena);

  plan_block(&s->encoder[0], z.h[1], z.w[1], feature_map_slice(s->concat[1], 0, c->encoder[0]),
             feature_map_slice(s->concat_delta[1], 0, c->encoder[0]), arena);
  plan_block(&s->encoder[1], z.h[2], z.w[2], feature_map_slice(s->concat[0], 0, c->encoder[1]),
             feature_map_slice(s->concat_delta[0], 0, c->encoder[1]), arena);
  FeatureMap out, delta;
  plan_pair(arena, z.h[4], z.w[4], c->encoder[2], &out, &delta);
  plan_block(&s->encoder[2], z.h[3], z.w[3], out, delta, arena);

  /* decoder.i runs at the size of e(2-i) and feeds up[i]. */
  for (int i = 0; i < 3; i++) {
    int h = z.h[4 - i], w = z.w[4 - i];
    plan_pair(arena, h, w, c->decoder[i], &out, &delta);
    plan_block(&s->decoder[i], h, w, out, delta, arena);
  }

  plan_conv_layer(&s->head[0], z.h[0], z.w[0], arena);
  plan_conv_layer(&s->head[1], z.h[0], z.w[0], arena);
  plan_conv_layer(&s->classifier, z.h[0], z.w[0], arena);
}

/* Measures, allocates, places: buffers change only when the input size does. */
static void plan_for_input(Student *s, int in_h, int in_w)
{
  if (s->planned_h == in_h && s->planned_w == in_w)
    return;
  Arena measure = { NULL, 0 };
  plan_buffers(s, in_h, in_w, &measure);
  g_aligned_free(s->arena);
  s->arena = g_aligned_alloc(measure.used, sizeof(float), 64);
  Arena place = { s->arena, 0 };
  plan_buffers(s, in_h, in_w, &place);
  s->planned_h = in_h;
  s->planned_w = in_w;
}

const FeatureMap *student_forward(Student *s, const FeatureMap *input, ThreadPool *pool)
{
  g_return_val_if_fail(input->c == 3 && input->h > 0 && input->w > 0, NULL);
  plan_for_input(s, input->h, input->w);
  s->input = *input;
  const float *p = s->params;

  forward_conv_layer(&s->stem[0], input, NULL, p, pool);
  forward_conv_layer(&s->stem[1], &s->stem[0].output, NULL, p, pool);
  forward_block(&s->encoder[0], &s->stem[1].output, p, pool);
  forward_block(&s->encoder[1], block_output(&s->encoder[0]), p, pool);
  forward_block(&s->encoder[2], block_output(&s->encoder[1]), p, pool);

  forward_block(&s->decoder[0], block_output(&s->encoder[2]), p, pool);
  resize_bilinear_forward(block_output(&s->decoder[0]), &s->up[0], pool);
  forward_block(&s->decoder[1], &s->concat[0], p, pool);
  resize_bilinear_forward(block_output(&s->decoder[1]), &s->up[1], pool);
  forward_block(&s->decoder[2], &s->concat[1], p, pool);
  resize_bilinear_forward(block_output(&s->decoder[2]), &s->up[2], pool);

  forward_conv_layer(&s->head[0], &s->concat[2], NULL, p, pool);
  forward_conv_layer(&s->head[1], &s->head[0].output, NULL, p, pool);
  forward_conv_layer(&s->classifier, &s->head[1].output, NULL, p, pool);
  return &s->classifier.output;
}

FeatureMap *student_logits_delta(Student *s)
{
  return &s->classifier.delta;
}

/* The forward in reverse. Where a tensor feeds two consumers (e0, e1, and s0 with head_skip),
 * the second gradient to arrive is added to the first. */
void student_backward_from_logits(Student *s, ThreadPool *pool)
{
  g_return_if_fail(s->planned_h > 0);
  const float *p = s->params;
  float *g = s->grads;
  backward_conv_layer(&s->classifier, &s->head[1].output, p, g, &s->head[1].delta, 0, pool);
  backward_conv_layer(&s->head[1], &s->head[0].output, p, g, &s->head[0].delta, 0, pool);
  backward_conv_layer(&s->head[0], &s->concat[2], p, g, &s->concat_delta[2], 0, pool);

  resize_bilinear_backward(&s->up_delta[2], block_delta(&s->decoder[2]), 0, pool);
  backward_block(&s->decoder[2], &s->concat[1], p, g, &s->concat_delta[1], 0, pool);
  resize_bilinear_backward(&s->up_delta[1], block_delta(&s->decoder[1]), 0, pool);
  backward_block(&s->decoder[1], &s->concat[0], p, g, &s->concat_delta[0], 0, pool);
  resize_bilinear_backward(&s->up_delta[0], block_delta(&s->decoder[0]), 0, pool);
  backward_block(&s->decoder[0], block_output(&s->encoder[2]), p, g,
                 block_delta(&s->encoder[2]), 0, pool);

  backward_block(&s->encoder[2], block_output(&s->encoder[1]), p, g,
                 block_delta(&s->encoder[1]), 1, pool);
  backward_block(&s->encoder[1], block_output(&s->encoder[0]), p, g,
                 block_delta(&s->encoder[0]), 1, pool);
  backward_block(&s->encoder[0], &s->stem[1].output, p, g, &s->stem[1].delta, 0, pool);
  backward_conv_layer(&s->stem[1], &s->stem[0].output, p, g, &s->stem[0].delta,
                      s->config.head_skip, pool);
  /* Nobody needs the gradient of the image. */
  backward_conv_layer(&s->stem[0], &s->input, p, g, NULL, 0, pool);
}

double student_backward(Student *s, const uint8_t *labels, const float *pixel_weight,
                        ThreadPool *pool)
{
  g_return_val_if_fail(s->planned_h > 0, 0.0);
  double loss = softmax_xent(&s->classifier.output, labels, pixel_weight, &s->classifier.delta,
                             pool);
  student_backward_from_logits(s, pool);
  return loss;
}
