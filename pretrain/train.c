/* train.c: Adam on augmented crops with gradient accumulation, a cosine learning-rate schedule,
 * periodic held-out mIoU and atomic checkpoints. */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "miou.h"
#include "optimizer.h"

volatile int train_stop_requested;

void train_config_default(TrainConfig *cfg)
{
  *cfg = (TrainConfig){
    .crop_width = 320, .crop_height = 240, .batch = 4, .steps = 2000, .start_step = 0,
    .learning_rate = 2e-3, .final_fraction = 0.05, .weight_decay = 0.0,
    .foreground_weight = 1.0, .log_every = 50, .eval_every = 500, .save_every = 250,
    .checkpoint_out = NULL, .seed = 1,
  };
  augment_config_default(&cfg->augment);
}

static double schedule(const TrainConfig *cfg, int step)
{
  double t = cfg->steps > 1 ? (double)step / (cfg->steps - 1) : 1.0;
  double f = cfg->final_fraction + (1 - cfg->final_fraction) * 0.5 * (1 + cos(G_PI * MIN(t, 1.0)));
  return cfg->learning_rate * f;
}

static gboolean load_item(const DatasetItem *item, PnmImage *frame, PnmImage *prob,
                          GError **error)
{
  if (!pnm_read(item->frame_path, frame, error))
    return FALSE;
  if (!pnm_read(item->label_path, prob, error)) {
    pnm_clear(frame);
    return FALSE;
  }
  if (frame->channels != 3 || prob->channels != 1 || frame->width != prob->width ||
      frame->height != prob->height) {
    g_set_error(error, STUDENT_ERROR, STUDENT_ERROR_FORMAT, "%s and %s: expected an RGB frame "
                "and a grey label of the same size; relabel with pretrain/label",
                item->frame_path, item->label_path);
    pnm_clear(frame);
    pnm_clear(prob);
    return FALSE;
  }
  return TRUE;
}

gboolean train_evaluate(Student *student, const Dataset *set, double confidence,
                        ThreadPool *pool, double *miou, GError **error)
{
  double sum = 0;
  int held = 0;
  for (guint i = 0; i < set->items->len; i++) {
    const DatasetItem *item = g_ptr_array_index(set->items, i);
    if (!item->held_out)
      continue;
    held++;
    PnmImage frame, prob;
    if (!load_item(item, &frame, &prob, error))
      return FALSE;
    size_t pixels = (size_t)frame.width * frame.height;
    float *input = g_new(float, pixels * 3);
    for (size_t p = 0; p < pixels * 3; p++)
      input[p] = frame.data[p] / 255.0f - 0.5f;
    FeatureMap in = feature_map(input, frame.height, frame.width, 3);
    const FeatureMap *logits = student_forward(student, &in, pool);
    size_t n = (size_t)logits->h * logits->w;
    uint8_t *pred = g_malloc(n), *labels = g_malloc(n);
    argmax_channels(logits, pred, pool);
    labels_from_probability(&prob, confidence, logits->w, logits->h, labels);
    sum += frame_miou(pred, labels, n, student_get_config(student)->num_classes);
    g_free(pred);
    g_free(labels);
    g_free(input);
    pnm_clear(&frame);
    pnm_clear(&prob);
  }
  *miou = held ? sum / held : -1.0;
  return TRUE;
}

typedef struct {
  int label_w, label_h;
  float *input;
  uint8_t *labels;
  float *weights;
  GPtrArray *train_items;
} Batch;

static double accumulate_step(Student *student, const TrainConfig *cfg, Batch *b, GRand *rng,
                              ThreadPool *pool, GError **error)
{
  double loss = 0;
  for (int k = 0; k < cfg->batch; k++) {
    const DatasetItem *item =
      g_ptr_array_index(b->train_items, g_rand_int_range(rng, 0, b->train_items->len));
    PnmImage frame, prob;
    if (!load_item(item, &frame, &prob, error))
      return -1;
    augment_sample(&frame, &prob, &cfg->augment, rng, cfg->crop_width, cfg->crop_height,
                   b->input, b->label_w, b->label_h, b->labels);
    pnm_clear(&frame);
    pnm_clear(&prob);
    size_t n = (size_t)b->label_w * b->label_h;
    for (size_t i = 0; b->weights && i < n; i++)
      b->weights[i] = b->labels[i] == 1 ? (float)cfg->foreground_weight : 1.0f;
    FeatureMap in = feature_map(b->input, cfg->crop_height, cfg->crop_width, 3);
    student_forward(student, &in, pool);
    loss += student_backward(student, b->labels, b->weights, pool);
  }
  return loss / cfg->batch;
}

/* The optimiser's rate is fixed: the schedule scales the step it takes. */
static void scheduled_step(Optimizer *opt, Student *student, float *before, double scale,
                           int batch)
{
  float *params = student_params(student), *grads = student_grads(student);
  size_t n = student_param_count(student);
  for (size_t i = 0; i < n; i++)
    grads[i] /= batch;
  memcpy(before, params, n * sizeof(float));
  optimizer_step(opt, params, grads);
  for (size_t i = 0; i < n; i++)
    params[i] = before[i] + (float)scale * (params[i] - before[i]);
}

static gboolean checkpoint(Student *student, const TrainConfig *cfg, int step, GError **error)
{
  if (!cfg->checkpoint_out)
    return TRUE;
  if (!student_save(student, cfg->checkpoint_out, error))
    return FALSE;
  fprintf(stderr, "saved %s at step %d\n", cfg->checkpoint_out, step);
  return TRUE;
}

gboolean train_run(Student *student, const Dataset *set, const TrainConfig *cfg,
                   ThreadPool *pool, TrainResult *result, GError **error)
{
  memset(result, 0, sizeof *result);
  result->held_out_miou = -1;
  Batch b = { .train_items = g_ptr_array_new() };
  for (guint i = 0; i < set->items->len; i++) {
    DatasetItem *item = g_ptr_array_index(set->items, i);
    if (!item->held_out)
      g_ptr_array_add(b.train_items, item);
  }
  student_logits_size(student, cfg->crop_height, cfg->crop_width, &b.label_h, &b.label_w);
  b.input = g_new(float, (size_t)cfg->crop_width * cfg->crop_height * 3);
  b.labels = g_malloc((size_t)b.label_w * b.label_h);
  if (cfg->foreground_weight != 1.0)
    b.weights = g_new(float, (size_t)b.label_w * b.label_h);
  OptimizerConfig ocfg;
  optimizer_config_default(&ocfg, OPTIMIZER_ADAM);
  ocfg.learning_rate = (float)cfg->learning_rate;
  ocfg.weight_decay = (float)cfg->weight_decay;
  Optimizer *opt = optimizer_new(&ocfg, student_param_count(student));
  float *before = g_new(float, student_param_count(student));
  GRand *rng = g_rand_new_with_seed((guint32)(cfg->seed * 1000003u + cfg->start_step));
  gint64 t0 = g_get_monotonic_time();
  double window = 0;
  int in_window = 0;
  gboolean ok = TRUE;
  int step = cfg->start_step, saved_step = -1;

  for (; step < cfg->steps && ok && !train_stop_requested; step++) {
    student_zero_grads(student);
    double loss = accumulate_step(student, cfg, &b, rng, pool, error);
    if (loss < 0) {
      ok = FALSE;
      break;
    }
    double scale = schedule(cfg, step) / cfg->learning_rate;
    scheduled_step(opt, student, before, scale, cfg->batch);
    window += loss;
    in_window++;
    result->steps_done++;
    int log_every = cfg->log_every > 0 ? cfg->log_every : 50;
    if (in_window == log_every || step + 1 == cfg->steps) {
      double mean = window / in_window;
      if (result->steps_done <= log_every)
        result->first_loss = mean;
      result->last_loss = mean;
      if (cfg->log_every > 0)
        fprintf(stderr, "step %d loss %.4f lr %.2e %.2f s/step\n", step + 1, mean,
               schedule(cfg, step), (g_get_monotonic_time() - t0) / 1e6 / result->steps_done);
      fflush(stdout);
      window = 0;
      in_window = 0;
    }
    if (cfg->eval_every > 0 && (step + 1) % cfg->eval_every == 0 && step + 1 < cfg->steps) {
      double miou;
      ok = train_evaluate(student, set, cfg->augment.confidence, pool, &miou, error);
      if (ok && miou >= 0)
        fprintf(stderr, "step %d held-out miou %.4f\n", step + 1, miou);
    }
    if (ok && cfg->save_every > 0 && (step + 1) % cfg->save_every == 0) {
      ok = checkpoint(student, cfg, step + 1, error);
      saved_step = step + 1;
    }
  }
  if (ok && in_window) {
    result->last_loss = window / in_window;
    if (result->steps_done <= (cfg->log_every > 0 ? cfg->log_every : 50))
      result->first_loss = result->last_loss;
  }
  if (ok)
    ok = train_evaluate(student, set, cfg->augment.confidence, pool, &result->held_out_miou,
                        error);
  if (ok && saved_step != step)
    ok = checkpoint(student, cfg, step, error);
  result->seconds = (g_get_monotonic_time() - t0) / 1e6;
  if (ok && result->held_out_miou >= 0)
    fprintf(stderr, "step %d held-out miou %.4f\n", step, result->held_out_miou);

  g_rand_free(rng);
  g_free(before);
  optimizer_free(opt);
  g_free(b.input);
  g_free(b.labels);
  g_free(b.weights);
  g_ptr_array_unref(b.train_items);
  return ok;
}
