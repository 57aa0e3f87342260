/* distill_trainer.c: one training round on a teacher frame (the paper's update loop), with the
 * optional replay of recent teacher frames and foreground pixel weights. */
#include <string.h>

#include "distill_private.h"

void distill_trainer_init(DistillTrainer *t, const DistillConfig *cfg, const Student *initial)
{
  memset(t, 0, sizeof *t);
  t->cfg = cfg;
  t->student = student_new(student_get_config(initial), 0);
  memcpy(student_params(t->student), student_params((Student *)initial),
         student_param_count(t->student) * sizeof(float));
  t->optimizer = optimizer_new(&cfg->optimizer, student_param_count(t->student));
  t->input_h = cfg->input_height;
  t->input_w = cfg->input_width;
  student_logits_size(t->student, t->input_h, t->input_w, &t->label_h, &t->label_w);
  size_t labels = (size_t)t->label_h * t->label_w;
  t->pred = g_malloc(labels);
  if (cfg->foreground_weight != 1.0)
    t->pixel_weight = g_new(float, labels);
  if (cfg->replay_frames) {
    t->replay_inputs = g_new(float, (size_t)cfg->replay_frames * t->input_h * t->input_w * 3);
    t->replay_labels = g_malloc((size_t)cfg->replay_frames * labels);
  }
}

void distill_trainer_clear(DistillTrainer *t)
{
  student_free(t->student);
  optimizer_free(t->optimizer);
  g_free(t->pred);
  g_free(t->pixel_weight);
  g_free(t->replay_inputs);
  g_free(t->replay_labels);
  memset(t, 0, sizeof *t);
}

static const float *pixel_weights(DistillTrainer *t, const uint8_t *labels)
{
  if (!t->pixel_weight)
    return NULL;
  size_t n = (size_t)t->label_h * t->label_w;
  float fg = (float)t->cfg->foreground_weight;
  for (size_t i = 0; i < n; i++)
    t->pixel_weight[i] = labels[i] != 0 && labels[i] != LABEL_IGNORE ? fg : 1.0f;
  return t->pixel_weight;
}

static FeatureMap replay_input(DistillTrainer *t, guint index)
{
  size_t floats = (size_t)t->input_h * t->input_w * 3;
  return feature_map(t->replay_inputs + index * floats, t->input_h, t->input_w, 3);
}

static const uint8_t *replay_labels(DistillTrainer *t, guint index)
{
  return t->replay_labels + (size_t)index * t->label_h * t->label_w;
}

/* Adds the gradient of one kept frame (in turn) to the step's. */
static void add_replay_gradient(DistillTrainer *t, ThreadPool *pool)
{
  if (!t->replay_count)
    return;
  guint index = t->replay_cursor++ % t->replay_count;
  FeatureMap input = replay_input(t, index);
  const uint8_t *labels = replay_labels(t, index);
  student_forward(t->student, &input, pool);
  student_backward(t->student, labels, pixel_weights(t, labels), pool);
}

static void keep_for_replay(DistillTrainer *t, const FeatureMap *input, const uint8_t *labels)
{
  if (!t->cfg->replay_frames)
    return;
  guint index = t->replay_next;
  t->replay_next = (t->replay_next + 1) % t->cfg->replay_frames;
  if (t->replay_count < t->cfg->replay_frames)
    t->replay_count++;
  FeatureMap kept = replay_input(t, index);
  for (int y = 0; y < input->h; y++)
    memcpy(feature_map_at(&kept, y, 0), feature_map_at(input, y, 0),
           (size_t)input->w * 3 * sizeof(float));
  memcpy((uint8_t *)replay_labels(t, index), labels, (size_t)t->label_h * t->label_w);
}

void distill_trainer_round(DistillTrainer *t, DistillRound *round, ThreadPool *pool)
{
  const DistillConfig *cfg = t->cfg;
  size_t n = (size_t)t->label_h * t->label_w;
  int num_classes = student_get_config(t->student)->num_classes;
  guint updates = 0;
  double miou;
  /* Every pass measures first: the last forward also tells whether the threshold was met. */
  for (;;) {
    const FeatureMap *logits = student_forward(t->student, round->input, pool);
    argmax_channels(logits, t->pred, pool);
    miou = distill_miou(t->pred, round->labels, n, num_classes);
    if (updates == 0)
      round->miou_before = miou;
    if (!distill_policy_keep_training(cfg, updates, miou))
      break;
    student_zero_grads(t->student);
    student_backward(t->student, round->labels, pixel_weights(t, round->labels), pool);
    add_replay_gradient(t, pool);
    optimizer_step(t->optimizer, student_params(t->student), student_grads(t->student));
    updates++;
  }
  round->miou_after = miou;
  round->updates = updates;
  keep_for_replay(t, round->input, round->labels);
}
