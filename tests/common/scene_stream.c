/* scene_stream.c: see scene_stream.h. */
#include "scene_stream.h"

void scene_stream_init(SceneStream *s, const SyntheticSceneConfig *scene_cfg,
                       DistillEngine *engine, int input_w, int input_h)
{
  *s = (SceneStream){ .engine = engine, .scene_w = scene_cfg->width, .scene_h = scene_cfg->height,
                      .num_classes = scene_cfg->num_classes };
  s->scene = synthetic_scene_new(scene_cfg);
  s->input_w = input_w;
  s->input_h = input_h;
  distill_engine_label_size(engine, input_h, input_w, &s->label_h, &s->label_w);
  s->rgb = g_malloc((size_t)s->scene_w * s->scene_h * 3);
  s->truth = g_malloc((size_t)s->label_w * s->label_h);
  s->classes = g_malloc((size_t)s->label_w * s->label_h);
  s->input = feature_map(g_new(float, (size_t)s->input_w * s->input_h * 3), s->input_h,
                         s->input_w, 3);
}

void scene_stream_clear(SceneStream *s)
{
  synthetic_scene_free(s->scene);
  g_free(s->rgb);
  g_free(s->truth);
  g_free(s->classes);
  g_free(s->input.data);
}

void scene_stream_load(SceneStream *s, guint64 frame)
{
  synthetic_scene_render(s->scene, frame, s->rgb);
  distill_input_from_rgb(s->rgb, s->scene_w, s->scene_h, s->scene_w * 3, 3, NULL, &s->input);
  synthetic_scene_labels(s->scene, frame, s->label_w, s->label_h, s->truth);
}

void scene_stream_sync_frame(SceneStream *s, guint64 frame, gboolean score)
{
  scene_stream_load(s, frame);
  DistillQuery *query = distill_engine_wants_teacher(s->engine, &s->input);
  if (query) {
    GError *error = NULL;
    if (!distill_query_answer(query, s->truth, s->label_h, s->label_w, &error))
      g_error("%s", error->message);
  }
  distill_engine_process(s->engine, &s->input, s->classes);
  if (score) {
    s->miou_sum += frame_miou(s->classes, s->truth, (size_t)s->label_w * s->label_h,
                                s->num_classes);
    s->scored++;
  }
}

double scene_stream_miou(const SceneStream *s)
{
  return s->scored ? s->miou_sum / (double)s->scored : 0.0;
}

void scene_rounds_init(SceneRounds *r)
{
  g_mutex_init(&r->lock);
  g_cond_init(&r->changed);
  r->finished = 0;
}

void scene_rounds_clear(SceneRounds *r)
{
  g_mutex_clear(&r->lock);
  g_cond_clear(&r->changed);
}

void scene_rounds_finished(const DistillRound *round, gpointer data)
{
  SceneRounds *r = data;
  g_mutex_lock(&r->lock);
  r->finished++;
  g_cond_broadcast(&r->changed);
  g_mutex_unlock(&r->lock);
}

void scene_stream_run_answered(SceneStream *s, SceneRounds *r, guint64 from, guint64 to,
                               guint64 *answered)
{
  for (guint64 f = from; f < to; f++) {
    scene_stream_load(s, f);
    DistillQuery *query = distill_engine_wants_teacher(s->engine, &s->input);
    if (query && distill_query_answer(query, s->truth, s->label_h, s->label_w, NULL))
      (*answered)++;
    distill_engine_process(s->engine, &s->input, s->classes);
    g_mutex_lock(&r->lock);
    while (r->finished < *answered)
      g_cond_wait(&r->changed, &r->lock);
    g_mutex_unlock(&r->lock);
  }
}
