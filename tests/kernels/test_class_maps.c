/* test_class_maps.c: the rules by which class maps are made and scored: a teacher's
 * probabilities as labels (probability_labels.h), a frame's mIoU (miou.h). */
#include <glib.h>
#include <string.h>

#include "kernels.h"
#include "miou.h"
#include "probability_labels.h"
#include "test_map.h"

/* ---- probabilities as labels ---------------------------------------------------------------- */

static void test_label_of_foreground(void)
{
  static const struct {
    float p;
    double confidence;
    int label;
  } cases[] = {
    { 1.0f, 0.6, 1 },   { 0.7f, 0.6, 1 },   { 0.6f, 0.6, 1 },     { 0.55f, 0.6, 255 },
    { 0.5f, 0.6, 255 }, { 0.5f, 0.5, 1 },   { 0.45f, 0.6, 255 },  { 0.35f, 0.6, 0 },
    { 0.0f, 0.6, 0 },   { 0.0f, 1.0, 0 },   { 0.99f, 1.0, 255 },
    /* below 0.5 the likelier class wins, whatever the confidence */
    { 0.4f, 0.3, 0 },   { 0.6f, 0.3, 1 },   { 0.45f, 0.0, 0 },
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    int got = label_of_foreground(cases[i].p, cases[i].confidence);
    if (got != cases[i].label)
      g_test_fail_printf("label_of_foreground(%g, %g) = %d, expected %d", cases[i].p,
                         cases[i].confidence, got, cases[i].label);
  }
}

static void test_label_of_probabilities(void)
{
  /* classes interleaved with another value (step 2), the lowest class on ties */
  const float flat[] = { 0.4f, -1, 0.35f, -1, 0.25f, -1 };
  const float sure[] = { 0.1f, -1, 0.2f, -1, 0.7f, -1 };
  const float tie[] = { 0.1f, -1, 0.45f, -1, 0.45f, -1 };
  g_assert_cmpint(label_of_probabilities(flat, 2, 3, 0.6), ==, LABEL_IGNORE);
  g_assert_cmpint(label_of_probabilities(flat, 2, 3, 0.4), ==, 0);
  g_assert_cmpint(label_of_probabilities(sure, 2, 3, 0.6), ==, 2);
  g_assert_cmpint(label_of_probabilities(tie, 2, 3, 0.4), ==, 1);
  g_assert_cmpint(label_of_probabilities(tie, 2, 2, 0.4), ==, 1);
  /* one plane: the foreground's */
  g_assert_cmpint(label_of_probabilities(sure, 2, 1, 0.6), ==, 0);
  g_assert_cmpint(label_of_probabilities(sure + 4, 2, 1, 0.6), ==, 1);
}

/* A foreground of 1 on the left column of a 2x2 map, 0 on the right, at 4x4: the bilinear ramp
 * 1, 0.75, 0.25, 0 on every row. */
static void test_labels_ramp(void)
{
  const float p[4] = { 1, 0, 1, 0 };
  uint8_t labels[16];
  labels_from_probabilities(p, 1, 2, 2, 0.6, 4, 4, labels);
  for (int y = 0; y < 4; y++)
    g_assert_cmpmem(labels + 4 * y, 4, ((uint8_t[]){ 1, 1, 0, 0 }), 4);
  labels_from_probabilities(p, 1, 2, 2, 0.8, 4, 4, labels);
  for (int y = 0; y < 4; y++)
    g_assert_cmpmem(labels + 4 * y, 4, ((uint8_t[]){ 1, 255, 255, 0 }), 4);
}

/* Random planes at several sizes: the labels are the rule applied to resize_bilinear_forward_ref
 * of the same probabilities (the same taps and arithmetic), pixel for pixel. */
static void test_labels_resized(void)
{
  static const int sizes[][4] = { { 1, 1, 3, 4 }, { 5, 7, 2, 3 },    { 7, 5, 7, 5 },
                                  { 3, 9, 11, 2 }, { 12, 20, 23, 40 }, { 45, 80, 18, 32 } };
  static const int class_counts[] = { 1, 2, 3, 7 };
  for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++)
    for (size_t ci = 0; ci < G_N_ELEMENTS(class_counts); ci++) {
      int h = sizes[s][0], w = sizes[s][1], oh = sizes[s][2], ow = sizes[s][3];
      int classes = class_counts[ci];
      double confidence = g_test_rand_double_range(0.3, 0.9);
      float *planes = g_new(float, (size_t)classes * h * w);
      TestMap map = test_map_new(h, w, classes, FALSE);
      for (int c = 0; c < classes; c++)
        for (int i = 0; i < h * w; i++)
          planes[(size_t)c * h * w + i] = map.map.data[(size_t)i * classes + c] =
            (float)g_test_rand_double_range(0.0, 1.0);
      TestMap resized = test_map_new(oh, ow, classes, FALSE);
      resize_bilinear_forward_ref(&map.map, &resized.map);
      uint8_t *labels = g_malloc((size_t)oh * ow + 1);
      labels[(size_t)oh * ow] = 0xee;
      labels_from_probabilities(planes, classes, w, h, confidence, ow, oh, labels);
      for (int i = 0; i < oh * ow; i++) {
        int want = label_of_probabilities(resized.map.data + (size_t)i * classes, 1, classes,
                                          confidence);
        if (labels[i] != want) {
          g_test_fail_printf("%dx%d, %d classes -> %dx%d: pixel %d is %d, expected %d", h, w,
                             classes, oh, ow, i, labels[i], want);
          break;
        }
      }
      g_assert_cmpint(labels[(size_t)oh * ow], ==, 0xee);
      g_free(labels);
      g_free(planes);
      test_map_free(&map);
      test_map_free(&resized);
    }
}

/* ---- a frame's mIoU ------------------------------------------------------------------------ */

static void assert_miou(const uint8_t *pred, const uint8_t *label, size_t n, int classes,
                        double want, const size_t *want_inter, const size_t *want_union)
{
  size_t inter[255], uni[255];
  double got = frame_miou_counts(pred, label, n, classes, inter, uni);
  g_assert_cmpfloat_with_epsilon(got, want, 1e-12);
  g_assert_cmpfloat(frame_miou(pred, label, n, classes), ==, got);
  g_assert_cmpmem(inter, sizeof(size_t) * classes, want_inter, sizeof(size_t) * classes);
  g_assert_cmpmem(uni, sizeof(size_t) * classes, want_union, sizeof(size_t) * classes);
}

static void test_miou_hand(void)
{
  /* Two classes, one background pixel predicted as foreground (the scorer's test, ONE_OFF):
   * class 0: 11 / 12, class 1: 4 / 5. */
  const uint8_t label[16] = { 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0 };
  const uint8_t pred[16] = { 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0 };
  assert_miou(pred, label, 16, 2, (11.0 / 12 + 4.0 / 5) / 2, (size_t[]){ 11, 4 },
              (size_t[]){ 12, 5 });
  /* The same frame perfect: 1. */
  assert_miou(label, label, 16, 2, 1.0, (size_t[]){ 12, 4 }, (size_t[]){ 12, 4 });

  /* Nothing labelled (all ignored): no class present, 1, whatever the prediction. */
  const uint8_t ignored[4] = { 255, 255, 255, 255 }, any[4] = { 0, 1, 1, 0 };
  assert_miou(any, ignored, 4, 2, 1.0, (size_t[]){ 0, 0 }, (size_t[]){ 0, 0 });
  assert_miou(any, any, 0, 2, 1.0, (size_t[]){ 0, 0 }, (size_t[]){ 0, 0 });

  /* Ignored pixels and labels >= classes count nowhere, whatever is predicted there: class 0
   * 1 / 2, class 1 (predicted on one labelled pixel) 0 / 1. */
  const uint8_t label_i[6] = { 0, 0, 255, 255, 7, 2 };
  const uint8_t pred_i[6] = { 0, 1, 1, 0, 1, 1 };
  assert_miou(pred_i, label_i, 6, 2, (0.5 + 0.0) / 2, (size_t[]){ 1, 0 }, (size_t[]){ 2, 1 });

  /* A prediction >= classes counts in its pixel's label class's union only: class 0 1/2,
   * class 1 1/2. */
  const uint8_t label_o[4] = { 0, 0, 1, 1 }, pred_o[4] = { 0, 9, 1, 255 };
  assert_miou(pred_o, label_o, 4, 2, 0.5, (size_t[]){ 1, 1 }, (size_t[]){ 2, 2 });

  /* Three classes: class 0 2 / 5, class 1 1 / 3, class 2 0 / 1. */
  const uint8_t label3[7] = { 0, 0, 0, 1, 1, 2, 255 };
  const uint8_t pred3[7] = { 0, 0, 1, 1, 0, 0, 2 };
  assert_miou(pred3, label3, 7, 3, (2.0 / 5 + 1.0 / 3 + 0.0) / 3, (size_t[]){ 2, 1, 0 },
              (size_t[]){ 5, 3, 1 });
  /* A class only predicted is present (its IoU 0); one in neither is not. */
  const uint8_t label4[4] = { 0, 0, 0, 0 }, pred4[4] = { 0, 0, 0, 2 };
  assert_miou(pred4, label4, 4, 4, (3.0 / 4 + 0.0) / 2, (size_t[]){ 3, 0, 0, 0 },
              (size_t[]){ 4, 0, 1, 0 });
}

/* Random maps against a recount from the definition: per class, the intersection and union of
 * the sets "labelled c" and "predicted c" over the pixels whose label is a class. */
static void test_miou_random(void)
{
  static const int class_counts[] = { 1, 2, 3, 5, 254, 255 };
  for (size_t ci = 0; ci < G_N_ELEMENTS(class_counts); ci++)
    for (int round = 0; round < 20; round++) {
      int classes = class_counts[ci];
      size_t n = (size_t)g_test_rand_int_range(0, 3000);
      uint8_t *pred = g_malloc(n + 1), *label = g_malloc(n + 1);
      int spread = MIN(classes + 3, 256);
      for (size_t i = 0; i < n; i++) {
        pred[i] = (uint8_t)g_test_rand_int_range(0, spread);
        int r = g_test_rand_int_range(0, 12);
        label[i] = r == 0   ? LABEL_IGNORE
                   : r < 4 ? pred[i]
                           : (uint8_t)g_test_rand_int_range(0, spread);
      }
      size_t want_inter[255] = { 0 }, want_union[255] = { 0 };
      double sum = 0.0;
      int present = 0;
      for (int c = 0; c < classes && c < 255; c++) {
        for (size_t i = 0; i < n; i++) {
          if (label[i] >= classes || label[i] == LABEL_IGNORE)
            continue;
          want_inter[c] += label[i] == c && pred[i] == c;
          want_union[c] += label[i] == c || pred[i] == c;
        }
        if (want_union[c]) {
          sum += (double)want_inter[c] / want_union[c];
          present++;
        }
      }
      assert_miou(pred, label, n, classes, present ? sum / present : 1.0, want_inter,
                  want_union);
      g_free(pred);
      g_free(label);
    }
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/class-maps/label-of-foreground", test_label_of_foreground);
  g_test_add_func("/class-maps/label-of-probabilities", test_label_of_probabilities);
  g_test_add_func("/class-maps/labels-ramp", test_labels_ramp);
  g_test_add_func("/class-maps/labels-resized", test_labels_resized);
  g_test_add_func("/class-maps/miou-hand", test_miou_hand);
  g_test_add_func("/class-maps/miou-random", test_miou_random);
  return g_test_run();
}
