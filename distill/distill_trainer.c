/* distill_trainer.c: one training round on a teacher frame (the paper's update loop), with the
 * optional replay of recent teacher frames and foreground pixel weights, and the rollback to the
 * last good weights when training collapses (distill.h, DistillConfig). */
#include <math.h>
#include <string.h>

#include "distill_private.h"

/* A step whose loss is above this many times the round's first loss (or ln(classes), if more)
 * is divergence, not learning: a step on one frame lowers that frame's loss. */
#define EXPLODING_LOSS_RATIO 10.0
/* Weight of a good round's lower mIoU in the usual level: about the last four good rounds. */
#define USUAL_MIOU_RATE 0.25

static size_t param_bytes(const DistillTrainer *t)
{
  return student_param_count(t->student) * sizeof(float);
}

void distill_trainer_init(DistillTrainer *t, const DistillConfig *cfg, const Student *initial)
{
  memset(t, 0, sizeof *t);
  t->cfg = cfg;
  t->student = student_copy(initial);
  student_set_bf16(t->student, cfg->train_bf16);
  student_set_bf16_forward(t->student, cfg->forward_bf16);
  t->optimizer = optimizer_new(&cfg->optimizer, student_param_count(t->student));
  t->good_params = g_memdup2(student_params(t->student), param_bytes(t));
  t->usual_miou = -1.0;
  distill_fusion_init(&t->fusion);
}

void distill_trainer_clear(DistillTrainer *t)
{
  student_free(t->student);
  optimizer_free(t->optimizer);
  g_free(t->pred);
  g_free(t->pixel_weight);
  g_free(t->shown_pred);
  if (t->measurer)
    student_free(t->measurer);
  g_free(t->measure_input.data);
  g_free(t->fused.data);
  g_free(t->replay_inputs);
  g_free(t->replay_labels);
  g_free(t->good_params);
  memset(t, 0, sizeof *t);
}

/* The per-pixel buffers of a round whose labels have n pixels, and shown_n at the shown size. */
static void plan_round(DistillTrainer *t, size_t n, size_t shown_n)
{
  if (shown_n > t->shown_capacity) {
    g_free(t->shown_pred);
    t->shown_pred = g_malloc(shown_n);
    t->shown_capacity = shown_n;
  }
  if (n <= t->label_capacity)
    return;
  g_free(t->pred);
  g_free(t->pixel_weight);
  t->pred = g_malloc(n);
  t->pixel_weight = t->cfg->foreground_weight != 1.0 ? g_new(float, n) : NULL;
  t->label_capacity = n;
}

/* The student's mIoU against the round's teacher labels, from its logits: at the size the user
 * sees when the round has labels of that size (the logits resized bilinearly, as the element
 * draws them), else at the logits' size. */
static double round_miou(DistillTrainer *t, const DistillRound *round, const FeatureMap *logits,
                         int num_classes, ThreadPool *pool)
{
  if (round->shown_labels) {
    argmax_bilinear(logits, round->shown_w, round->shown_h, t->shown_pred,
                    (size_t)round->shown_w, pool);
    return frame_miou(t->shown_pred, round->shown_labels,
                      (size_t)round->shown_h * round->shown_w, num_classes);
  }
  int label_h, label_w;
  student_logits_size(t->student, round->input->h, round->input->w, &label_h, &label_w);
  if (logits->h == label_h && logits->w == label_w)
    argmax_channels(logits, t->pred, pool);
  else
    argmax_bilinear(logits, label_w, label_h, t->pred, (size_t)label_w, pool);
  return frame_miou(t->pred, round->labels, (size_t)label_h * label_w, num_classes);
}

/* The student's logits as the stream runs it now: at the measure size when the governor runs
 * it smaller than the round's input, through a copy given the trainer's weights, else the
 * training pass's own (`logits`). */
static const FeatureMap *stream_logits(DistillTrainer *t, const DistillRound *round,
                                       const FeatureMap *logits, ThreadPool *pool)
{
  int h = round->measure_h, w = round->measure_w;
  if (h <= 0 || w <= 0 || (h == round->input->h && w == round->input->w))
    return logits;
  if (!t->measurer) {
    t->measurer = student_copy(t->student);
    student_set_bf16_forward(t->measurer, t->cfg->forward_bf16);
  }
  memcpy(student_params(t->measurer), student_params(t->student), param_bytes(t));
  distill_input_reserve(&t->measure_input, &t->measure_capacity, h, w);
  resize_bilinear_forward(round->input, &t->measure_input, pool);
  return student_forward(t->measurer, &t->measure_input, pool);
}

/* The policy's measure of the student as the stream runs it (`stream`, from stream_logits):
 * the training pass's own `miou` when that is the stream's. */
static double policy_miou(DistillTrainer *t, const DistillRound *round, const FeatureMap *stream,
                          const FeatureMap *logits, double miou, int num_classes,
                          ThreadPool *pool)
{
  return stream == logits ? miou : round_miou(t, round, stream, num_classes, pool);
}

/* The fusion's fit on the round's frame, before any step: the student's logits, the answer
 * held then, the new answer. Then the measures of the held answer (at the logits' size) and of
 * the fused map as the stream showed it (the student at the size in use, the weight before this
 * fit), measured as miou_before is. */
static void fit_fusion(DistillTrainer *t, DistillRound *round, const FeatureMap *logits,
                       const FeatureMap *stream, int num_classes, ThreadPool *pool)
{
  size_t n = (size_t)logits->h * logits->w;
  double weight = t->fusion.held;
  round->held_miou = frame_miou(round->held, round->labels, n, logits->c);
  double fused = distill_fusion_fit(&t->fusion, logits, round->held, round->labels, t->pred);
  if (stream == logits && !round->shown_labels) {
    round->fused_miou = fused; /* the fit measured it so */
    return;
  }
  distill_map_reserve(&t->fused, &t->fused_capacity, stream->h, stream->w, stream->c);
  distill_fusion_apply(weight, stream, round->held, logits->h, logits->w, &t->fused);
  round->fused_miou = round_miou(t, round, &t->fused, num_classes, pool);
}

static const float *pixel_weights(DistillTrainer *t, const uint8_t *labels, size_t n)
{
  if (!t->pixel_weight)
    return NULL;
  float fg = (float)t->cfg->foreground_weight;
  for (size_t i = 0; i < n; i++)
    t->pixel_weight[i] = labels[i] != 0 && labels[i] != LABEL_IGNORE ? fg : 1.0f;
  return t->pixel_weight;
}

static FeatureMap replay_input(DistillTrainer *t, guint index)
{
  size_t floats = (size_t)t->replay_h * t->replay_w * 3;
  return feature_map(t->replay_inputs + index * floats, t->replay_h, t->replay_w, 3);
}

static uint8_t *replay_labels(DistillTrainer *t, guint index)
{
  return t->replay_labels + (size_t)index * t->replay_label_h * t->replay_label_w;
}

/* Adds the gradient of one kept frame (in turn) to the step's; returns its loss (0: none). Kept
 * frames of another size than the round's (a size change while it runs) wait for the next
 * round: alternating sizes would plan the network's buffers again at every step. */
static double add_replay_gradient(DistillTrainer *t, const FeatureMap *round_input,
                                  ThreadPool *pool)
{
  if (!t->replay_count || t->replay_h != round_input->h || t->replay_w != round_input->w)
    return 0.0;
  guint index = t->replay_cursor++ % t->replay_count;
  FeatureMap input = replay_input(t, index);
  const uint8_t *labels = replay_labels(t, index);
  student_forward(t->student, &input, pool);
  return student_backward(t->student, labels,
                          pixel_weights(t, labels, (size_t)t->replay_label_h * t->replay_label_w),
                          pool);
}

/* The ring for frames of input's size. The frames kept at another size (the training size
 * changed, DistillGrowth) are resized to it, the inputs bilinearly and the labels to the nearest
 * pixel, so that a change of size does not forget the scene. */
static void plan_replay(DistillTrainer *t, const FeatureMap *input, ThreadPool *pool)
{
  if (input->h == t->replay_h && input->w == t->replay_w)
    return;
  guint frames = t->cfg->replay_frames;
  DistillTrainer old = *t;
  t->replay_h = input->h;
  t->replay_w = input->w;
  student_logits_size(t->student, input->h, input->w, &t->replay_label_h, &t->replay_label_w);
  t->replay_inputs = g_new(float, (size_t)frames * input->h * input->w * 3);
  t->replay_labels = g_malloc((size_t)frames * t->replay_label_h * t->replay_label_w);
  for (guint i = 0; i < old.replay_count; i++) {
    FeatureMap from = replay_input(&old, i), to = replay_input(t, i);
    resize_bilinear_forward(&from, &to, pool);
    const uint8_t *from_labels = replay_labels(&old, i);
    uint8_t *to_labels = replay_labels(t, i);
    for (int y = 0; y < t->replay_label_h; y++) {
      int oy = (2 * y + 1) * old.replay_label_h / (2 * t->replay_label_h);
      for (int x = 0; x < t->replay_label_w; x++) {
        int ox = (2 * x + 1) * old.replay_label_w / (2 * t->replay_label_w);
        to_labels[y * t->replay_label_w + x] = from_labels[oy * old.replay_label_w + ox];
      }
    }
  }
  g_free(old.replay_inputs);
  g_free(old.replay_labels);
}

void distill_trainer_keep(DistillTrainer *t, const FeatureMap *input, const uint8_t *labels,
                          ThreadPool *pool)
{
  if (!t->cfg->replay_frames)
    return;
  plan_replay(t, input, pool);
  guint index = t->replay_next;
  t->replay_next = (t->replay_next + 1) % t->cfg->replay_frames;
  if (t->replay_count < t->cfg->replay_frames)
    t->replay_count++;
  FeatureMap kept = replay_input(t, index);
  for (int y = 0; y < input->h; y++)
    memcpy(feature_map_at(&kept, y, 0), feature_map_at(input, y, 0),
           (size_t)input->w * 3 * sizeof(float));
  memcpy(replay_labels(t, index), labels, (size_t)t->replay_label_h * t->replay_label_w);
}

/* ---- rollback ------------------------------------------------------------------------------ */

/* The weights entering a round, judged by their mIoU on the round's fresh teacher frame: at the
 * usual level (or above), they become the last good weights. */
static DistillVerdict judge_entry(DistillTrainer *t, double miou)
{
  if (t->usual_miou >= 0.0 && miou < t->usual_miou - t->cfg->rollback_drop) {
    t->rounds_below++;
    return DISTILL_ROUND_BELOW;
  }
  t->rounds_below = 0;
  /* Up at once (a student learning from scratch climbs fast), down slowly. */
  if (miou > t->usual_miou)
    t->usual_miou = miou;
  else
    t->usual_miou += USUAL_MIOU_RATE * (miou - t->usual_miou);
  memcpy(t->good_params, student_params(t->student), param_bytes(t));
  return DISTILL_ROUND_GOOD;
}

static gboolean params_finite(DistillTrainer *t)
{
  const float *p = student_params(t->student);
  size_t n = student_param_count(t->student);
  for (size_t i = 0; i < n; i++)
    if (!isfinite(p[i]))
      return FALSE;
  return TRUE;
}

/* Back to the last good weights. The optimiser's moments and the replay frames come from the
 * stretch that went wrong, so they go too. */
static void roll_back(DistillTrainer *t, DistillCollapse collapse)
{
  memcpy(student_params(t->student), t->good_params, param_bytes(t));
  optimizer_reset(t->optimizer);
  t->replay_count = t->replay_next = t->replay_cursor = 0;
  t->rounds_below = 0;
  if (collapse == DISTILL_COLLAPSE_AGREEMENT)
    t->usual_miou = MAX(t->usual_miou - t->cfg->rollback_drop / 2, 0.0);
}

/* Whether a step's losses (the frame's and the replayed frame's) show a collapse: not finite,
 * or the frame's far above its first. */
static DistillCollapse judge_loss(double loss, double replay_loss, double first_loss,
                                  int num_classes)
{
  if (!isfinite(loss) || !isfinite(replay_loss))
    return DISTILL_COLLAPSE_NON_FINITE;
  if (loss > EXPLODING_LOSS_RATIO * MAX(first_loss, log((double)num_classes)))
    return DISTILL_COLLAPSE_EXPLODING_LOSS;
  return DISTILL_COLLAPSE_NONE;
}

/* ---- the round ------------------------------------------------------------------------------ */

void distill_trainer_round(DistillTrainer *t, DistillRound *round, ThreadPool *pool,
                           const gint *stop)
{
  const DistillConfig *cfg = t->cfg;
  int label_h, label_w;
  student_logits_size(t->student, round->input->h, round->input->w, &label_h, &label_w);
  size_t n = (size_t)label_h * label_w;
  plan_round(t, n, round->shown_labels ? (size_t)round->shown_h * round->shown_w : 0);
  int num_classes = student_get_config(t->student)->num_classes;
  guint updates = 0;
  double miou, first_loss = 0.0;
  DistillCollapse collapse = DISTILL_COLLAPSE_NONE;
  /* Every pass measures first: the last forward also tells whether the threshold was met. */
  const FeatureMap *logits;
  for (;;) {
    logits = student_forward(t->student, round->input, pool);
    miou = round_miou(t, round, logits, num_classes, pool);
    if (updates == 0) {
      const FeatureMap *stream = stream_logits(t, round, logits, pool);
      round->miou_before = policy_miou(t, round, stream, logits, miou, num_classes, pool);
      if (cfg->fuse_teacher && round->held && logits->h == label_h && logits->w == label_w)
        fit_fusion(t, round, logits, stream, num_classes, pool);
      round->verdict = cfg->train ? judge_entry(t, round->miou_before) : DISTILL_ROUND_UNCHECKED;
    }
    if (!distill_policy_keep_training(cfg, updates, miou) || (stop && g_atomic_int_get(stop)))
      break;
    student_zero_grads(t->student);
    double loss = student_backward(t->student, round->labels,
                                   pixel_weights(t, round->labels, n), pool);
    if (updates == 0)
      first_loss = loss;
    double replay_loss = add_replay_gradient(t, round->input, pool);
    collapse = judge_loss(loss, replay_loss, first_loss, num_classes);
    if (collapse)
      break;
    optimizer_step(t->optimizer, student_params(t->student), student_grads(t->student));
    updates++;
    if (t->stepped && params_finite(t))
      t->stepped(t->stepped_user_data);
  }
  if (!collapse && updates && !params_finite(t))
    collapse = DISTILL_COLLAPSE_NON_FINITE;
  if (!collapse && cfg->train && cfg->rollback_rounds && t->rounds_below >= cfg->rollback_rounds)
    collapse = DISTILL_COLLAPSE_AGREEMENT;
  round->miou_after = updates ? policy_miou(t, round, stream_logits(t, round, logits, pool), logits,
                                            miou, num_classes, pool)
                               : round->miou_before;
  round->updates = updates;
  round->collapse = collapse;
  round->fusion_weight = t->fusion.held;
  if (collapse) {
    roll_back(t, collapse);
    round->verdict = DISTILL_ROUND_ROLLED_BACK;
  } else {
    distill_trainer_keep(t, round->input, round->labels, pool);
  }
}
