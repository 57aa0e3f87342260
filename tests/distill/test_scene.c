/* test_scene.c: the synthetic scene is deterministic, random-access, shows every class, moves,
 * and its labels agree with what it draws. */
#include <string.h>

#include "synthetic_scene.h"

enum { W = 160, H = 96 };

static void test_deterministic(void)
{
  SyntheticSceneConfig cfg;
  synthetic_scene_config_default(&cfg, W, H, 42);
  SyntheticScene *a = synthetic_scene_new(&cfg), *b = synthetic_scene_new(&cfg);
  static uint8_t fa[W * H * 3], fb[W * H * 3], f0[W * H * 3];
  synthetic_scene_render(a, 0, f0);
  synthetic_scene_render(a, 37, fa);
  synthetic_scene_render(b, 37, fb); /* another scene object, straight to frame 37 */
  g_assert_cmpmem(fa, sizeof fa, fb, sizeof fb);
  g_assert_true(memcmp(fa, f0, sizeof fa) != 0);
  cfg.seed = 43;
  SyntheticScene *c = synthetic_scene_new(&cfg);
  synthetic_scene_render(c, 37, fb);
  g_assert_true(memcmp(fa, fb, sizeof fa) != 0);
  synthetic_scene_free(a);
  synthetic_scene_free(b);
  synthetic_scene_free(c);
}

/* Over a stretch of frames every class shows, objects move, and the labelled pixels have the
 * colours of their class: warm (red above blue) for class 1, cool (blue above red) for class 2. */
static void test_labels_match_pixels(void)
{
  SyntheticSceneConfig cfg;
  synthetic_scene_config_default(&cfg, W, H, 7);
  SyntheticScene *s = synthetic_scene_new(&cfg);
  static uint8_t rgb[W * H * 3], labels[W * H], previous[W * H];
  guint64 count[3] = { 0 }, agree[3] = { 0 };
  gboolean moved = FALSE;
  for (guint64 f = 0; f < 100; f += 10) {
    synthetic_scene_render(s, f, rgb);
    synthetic_scene_labels(s, f, W, H, labels);
    if (f && memcmp(labels, previous, sizeof labels))
      moved = TRUE;
    memcpy(previous, labels, sizeof labels);
    for (int i = 0; i < W * H; i++) {
      int r = rgb[i * 3], b = rgb[i * 3 + 2], cls = labels[i];
      g_assert_cmpint(cls, <, 3);
      count[cls]++;
      agree[cls] += cls == 1 ? r > b : cls == 2 ? b > r : TRUE;
    }
  }
  g_assert_true(moved);
  for (int c = 0; c < 3; c++)
    g_assert_cmpuint(count[c], >, W * H / 50);
  g_assert_cmpfloat((double)agree[1] / count[1], >, 0.95);
  g_assert_cmpfloat((double)agree[2] / count[2], >, 0.95);

  /* Labels at half resolution are the full-resolution ones at the centres of 2x2 blocks, up to
   * the pixels an edge passes between. */
  static uint8_t half[(W / 2) * (H / 2)];
  synthetic_scene_labels(s, 50, W / 2, H / 2, half);
  synthetic_scene_labels(s, 50, W, H, labels);
  int differ = 0;
  for (int y = 0; y < H / 2; y++)
    for (int x = 0; x < W / 2; x++)
      differ += half[y * (W / 2) + x] != labels[(2 * y + 1) * W + 2 * x + 1];
  g_assert_cmpint(differ, <, W * H / 4 / 20);
  synthetic_scene_free(s);
}

static void test_cut_and_absence(void)
{
  SyntheticSceneConfig cfg;
  synthetic_scene_config_default(&cfg, W, H, 3);
  cfg.cut_frame = 50;
  cfg.absent_from = 10;
  cfg.absent_to = 20;
  SyntheticScene *s = synthetic_scene_new(&cfg);
  static uint8_t before[W * H * 3], after[W * H * 3], labels[W * H];
  synthetic_scene_render(s, 49, before);
  synthetic_scene_render(s, 50, after);
  long diff = 0;
  for (int i = 0; i < W * H * 3; i++)
    diff += ABS(before[i] - after[i]);
  g_assert_cmpfloat((double)diff / (W * H * 3), >, 20.0); /* a cut, not a step of motion */
  synthetic_scene_labels(s, 15, W, H, labels);
  for (int i = 0; i < W * H; i++)
    g_assert_cmpint(labels[i], !=, 2);
  synthetic_scene_free(s);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/distill/scene/deterministic", test_deterministic);
  g_test_add_func("/distill/scene/labels-match-pixels", test_labels_match_pixels);
  g_test_add_func("/distill/scene/cut-and-absence", test_cut_and_absence);
  return g_test_run();
}
