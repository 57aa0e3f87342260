/* student.c: what every architecture's network has: its parameter and gradient buffers, its
 * tensor table, one arena of activations planned per input size, the precision switches; the
 * passes themselves are the architecture's (student_private.h). */
#include <string.h>

#include "init.h"
#include "student_private.h"

Student *student_new_zeroed(const StudentConfig *cfg)
{
  Student *s = g_new0(Student, 1);
  s->config = *cfg;
  s->ops = student_arch_ops(cfg->arch);
  param_table_init(&s->table);
  s->ops->make(s);
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

void student_config_inference(const StudentConfig *cfg, StudentConfig *inference)
{
  *inference = *cfg;
  if (student_arch_ops(cfg->arch)->config_inference)
    student_arch_ops(cfg->arch)->config_inference(inference);
}

void student_fuse(const Student *trained, Student *inference)
{
  if (trained->ops->fuse) {
    trained->ops->fuse(trained, inference);
    return;
  }
  g_return_if_fail(inference->table.count == trained->table.count);
  memcpy(inference->params, trained->params, sizeof(float) * trained->table.count);
}

Student *student_fused_copy(const Student *trained)
{
  StudentConfig cfg;
  student_config_inference(&trained->config, &cfg);
  Student *s = student_new_zeroed(&cfg);
  student_fuse(trained, s);
  return s;
}

void student_free(Student *s)
{
  if (!s)
    return;
  g_free(s->net);
  param_table_clear(&s->table);
  g_aligned_free(s->params);
  g_aligned_free(s->grads);
  g_aligned_free(s->arena);
  g_free(s);
}

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

/* ---- precision ------------------------------------------------------------------------------ */

static gboolean set_bf16(Student *s, int *flag, gboolean on)
{
  *flag = on && kernels_have_bf16();
  s->ops->apply_precision(s);
  return *flag;
}

gboolean student_set_bf16(Student *s, gboolean on) { return set_bf16(s, &s->bf16_backward, on); }
gboolean student_get_bf16(const Student *s) { return s->bf16_backward; }

gboolean student_set_bf16_forward(Student *s, gboolean on)
{
  return set_bf16(s, &s->bf16_forward, on);
}

gboolean student_get_bf16_forward(const Student *s) { return s->bf16_forward; }

/* ---- passes --------------------------------------------------------------------------------- */

void student_logits_size(const Student *s, int in_h, int in_w, int *out_h, int *out_w)
{
  s->ops->logits_size(s, in_h, in_w, out_h, out_w);
}

double student_forward_flops(const Student *s, int in_h, int in_w)
{
  return s->ops->forward_flops(s, in_h, in_w);
}

/* Measures, allocates, places: buffers change only when the input size does. */
static void plan_for_input(Student *s, int in_h, int in_w)
{
  if (s->planned_h == in_h && s->planned_w == in_w)
    return;
  Arena measure = { NULL, 0 };
  s->ops->plan(s, in_h, in_w, &measure);
  g_aligned_free(s->arena);
  s->arena = g_aligned_alloc(measure.used, sizeof(float), 64);
  Arena place = { s->arena, 0 };
  s->ops->plan(s, in_h, in_w, &place);
  s->planned_h = in_h;
  s->planned_w = in_w;
}

const FeatureMap *student_forward(Student *s, const FeatureMap *input, ThreadPool *pool)
{
  g_return_val_if_fail(input->c == 3 && input->h > 0 && input->w > 0, NULL);
  plan_for_input(s, input->h, input->w);
  s->input = *input;
  s->logits = s->ops->forward(s, input, pool);
  return s->logits;
}

FeatureMap *student_logits_delta(Student *s)
{
  return s->ops->logits_delta(s);
}

void student_backward_from_logits(Student *s, ThreadPool *pool)
{
  g_return_if_fail(s->planned_h > 0);
  s->ops->backward(s, pool);
}

double student_backward(Student *s, const uint8_t *labels, const float *pixel_weight,
                        ThreadPool *pool)
{
  g_return_val_if_fail(s->planned_h > 0, 0.0);
  double loss = softmax_xent(s->logits, labels, pixel_weight, s->ops->logits_delta(s), pool);
  s->ops->backward(s, pool);
  return loss;
}
