/* test_steady_state.c: once the buffers of the input size are planned, frames (with teacher
 * queries, training rounds, replay, foreground weights and the scene-change statistic going on)
 * allocate nothing: the malloc heap in use, on every thread, is the same before and after. The
 * same after the input size changes, once the new size is planned. */
#include <malloc.h>

#include "scene_stream.h"

enum { W = 96, H = 64, SMALL_W = 64, SMALL_H = 42, WARM_UP = 48, MEASURED = 64 };

static size_t heap_in_use(void)
{
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

/* Warms up from frame `first`, then measures: the heap in use must not change. */
static void measure(SceneStream *s, SceneRounds *r, guint64 first, guint64 *answered,
                    const char *what)
{
  scene_stream_run_answered(s, r, first, first + WARM_UP, answered);
  size_t before = heap_in_use();
  guint64 rounds_before = r->finished;
  scene_stream_run_answered(s, r, first + WARM_UP, first + WARM_UP + MEASURED, answered);
  size_t after = heap_in_use();
  g_test_message("%s: heap in use %zu -> %zu bytes over %d frames with %" G_GUINT64_FORMAT
                 " training rounds", what, before, after, MEASURED, r->finished - rounds_before);
  g_assert_cmpuint(r->finished - rounds_before, >=, MEASURED / 8);
  g_assert_cmpuint(after, ==, before);
}

static void run_steady_state(gboolean sync)
{
  SyntheticSceneConfig scene_cfg;
  synthetic_scene_config_default(&scene_cfg, W, H, 4);
  scene_cfg.cut_frame = WARM_UP + MEASURED / 2;
  StudentConfig scfg;
  student_config_default(&scfg, 3);
  Student *initial = student_new(&scfg, 2);
  SceneRounds r;
  scene_rounds_init(&r);
  DistillConfig cfg;
  distill_config_default(&cfg);
  cfg.sync = sync;
  cfg.min_stride = 4;
  cfg.max_stride = 8;
  cfg.max_updates = 2;
  cfg.accuracy_threshold = 1.0;
  cfg.replay_frames = 3;
  cfg.foreground_weight = 2.0;
  cfg.scene_change_threshold = 0.02;
  cfg.round_finished = scene_rounds_finished;
  cfg.round_user_data = &r;
  DistillEngine *engine = distill_engine_new(initial, &cfg, NULL);
  SceneStream s, small;
  scene_stream_init(&s, &scene_cfg, engine, W, H);
  scene_stream_init(&small, &scene_cfg, engine, SMALL_W, SMALL_H);
  guint64 answered = 0;

  measure(&s, &r, 0, &answered, sync ? "sync" : "async");
  /* The same scene at another input size, the engine going on. */
  measure(&small, &r, WARM_UP + MEASURED, &answered,
          sync ? "sync, smaller input" : "async, smaller input");
  DistillStats st;
  distill_engine_get_stats(engine, &st);
  g_assert_cmpuint(st.updates, >, 0);
  g_assert_cmpuint(st.frames, ==, 2 * (WARM_UP + MEASURED));

  scene_stream_clear(&s);
  scene_stream_clear(&small);
  distill_engine_free(engine);
  student_free(initial);
  scene_rounds_clear(&r);
}

static void test_async(void) { run_steady_state(FALSE); }
static void test_sync(void) { run_steady_state(TRUE); }

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/distill/steady-state/async", test_async);
  g_test_add_func("/distill/steady-state/sync", test_sync);
  return g_test_run();
}
