/* score-masks: compares a stream's predicted class masks with teacher labels, frame by frame.
 *
 *   score-masks LABELS PRED_DIR [--classes K] [--threshold T] [--csv FILE]
 *
 * LABELS   a video of 8-bit grey label frames (e.g. data/vtest/labels.mkv). With K = 2 (the
 *          default) a value >= T (default 128) is class 1, the rest class 0; with K > 2 the value
 *          is the class index, and 255 (or any value >= K) is ignored.
 * PRED_DIR the predicted masks, one file per frame, values = class indices: binary PGM (P5) of
 *          any size (resized, nearest, to the label size) or raw GRAY8 of the label size; what
 *          `distillseg output=mask ! pnmenc ! multifilesink location=DIR/%05d.pgm` writes. The
 *          frame number is the last run of digits in the file name (0-based); files without
 *          digits are taken in name order.
 *
 * Per frame: the IoU of every class whose union is non-empty, averaged = the frame's mIoU (1 when
 * no class is present in either: kernels/miou.h, the rule every mIoU of the project follows).
 * Prints one JSON line:
 *   {"frames":N,"labels":M,"coverage":N/M,"miou":..,"fg_iou":..,"fg_frames":..,"pred_flip":..,"label_flip":..}
 * frames = predictions read, labels = label frames. miou is the mean frame mIoU over the label
 * frames (a missing or unreadable prediction scores 0); fg_iou the mean IoU of class 1 over the
 * predicted frames whose label holds class 1 (fg_frames of them); pred_flip / label_flip the mean
 * fraction of pixels whose class changes from one frame to the next, over consecutive predictions
 * and over consecutive labels (temporal stability). --csv FILE writes frame,miou,fg_iou per label
 * frame (fg_iou -1 when not counted). The figures are those of ../shared/tools/score-masks. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "miou.h"
#include "score-masks.h"

typedef struct {
  int classes, threshold;
  char *csv;
} ScoreOptions;

/* Sums over the stream. */
typedef struct {
  int labels, scored, fg_frames, pred_pairs, label_pairs;
  double miou_sum, fg_sum, pred_flip_sum, label_flip_sum;
} ScoreTotals;

/* One frame's working set: the label (as classes), the prediction (both at the label size), the
 * previous of each for the flips, and the per-class intersections and unions. */
typedef struct {
  size_t pixels;
  uint8_t *label, *pred, *prev_pred, *prev_label;
  size_t *inter, *uni;
  gboolean have_prev_pred, have_prev_label;
} FrameBuffers;

/* The label frame's values as classes, in place. */
static void label_classes(const ScoreOptions *opt, uint8_t *label, size_t pixels)
{
  if (opt->classes == 2)
    for (size_t i = 0; i < pixels; i++)
      label[i] = label[i] >= opt->threshold;
}

/* The frame's mIoU; *fg_iou = IoU of class 1, or -1 when the label has no class 1. */
static double score_frame(const ScoreOptions *opt, FrameBuffers *fb, double *fg_iou)
{
  double miou = frame_miou_counts(fb->pred, fb->label, fb->pixels, opt->classes, fb->inter,
                                  fb->uni);
  gboolean label_fg = memchr(fb->label, 1, fb->pixels) != NULL;
  *fg_iou = label_fg ? (double)fb->inter[1] / fb->uni[1] : -1;
  return miou;
}

/* Fraction of pixels that differ between a and b. */
static double changed_fraction(const uint8_t *a, const uint8_t *b, size_t pixels)
{
  long changed = 0;
  for (size_t i = 0; i < pixels; i++)
    changed += a[i] != b[i];
  return (double)changed / pixels;
}

static void count_label_flip(FrameBuffers *fb, ScoreTotals *totals)
{
  if (fb->have_prev_label) {
    totals->label_flip_sum += changed_fraction(fb->label, fb->prev_label, fb->pixels);
    totals->label_pairs++;
  }
  memcpy(fb->prev_label, fb->label, fb->pixels);
  fb->have_prev_label = TRUE;
}

/* Scores the prediction of frame (already in fb->pred); returns the frame's mIoU. */
static double count_prediction(const ScoreOptions *opt, FrameBuffers *fb, ScoreTotals *totals,
                               double *fg_iou)
{
  double miou = score_frame(opt, fb, fg_iou);

  totals->scored++;
  if (fb->have_prev_pred) {
    totals->pred_flip_sum += changed_fraction(fb->pred, fb->prev_pred, fb->pixels);
    totals->pred_pairs++;
  }
  memcpy(fb->prev_pred, fb->pred, fb->pixels);
  fb->have_prev_pred = TRUE;
  if (*fg_iou >= 0) {
    totals->fg_sum += *fg_iou;
    totals->fg_frames++;
  }
  return miou;
}

static gboolean score_stream(const ScoreOptions *opt, LabelVideo *labels,
                             const PredictionDir *preds, FILE *csv, ScoreTotals *totals,
                             GError **error)
{
  int w = label_video_width(labels), h = label_video_height(labels);
  FrameBuffers fb = {.pixels = (size_t)w * h};

  fb.label = g_malloc(fb.pixels);
  fb.pred = g_malloc(fb.pixels);
  fb.prev_pred = g_malloc(fb.pixels);
  fb.prev_label = g_malloc(fb.pixels);
  fb.inter = g_new(size_t, opt->classes);
  fb.uni = g_new(size_t, opt->classes);
  while (label_video_next(labels, fb.label, error)) {
    double miou = 0, fg_iou = -1;
    label_classes(opt, fb.label, fb.pixels);
    if (prediction_dir_read(preds, totals->labels, w, h, fb.pred))
      miou = count_prediction(opt, &fb, totals, &fg_iou);
    count_label_flip(&fb, totals);
    if (csv)
      fprintf(csv, "%d,%.4f,%.4f\n", totals->labels, miou, fg_iou);
    totals->miou_sum += miou;
    totals->labels++;
  }
  g_free(fb.label);
  g_free(fb.pred);
  g_free(fb.prev_pred);
  g_free(fb.prev_label);
  g_free(fb.inter);
  g_free(fb.uni);
  return *error == NULL;
}

static void print_totals(const ScoreTotals *t)
{
  printf("{\"frames\":%d,\"labels\":%d,\"coverage\":%.4f,\"miou\":%.4f,\"fg_iou\":%.4f,"
         "\"fg_frames\":%d,\"pred_flip\":%.5f,\"label_flip\":%.5f}\n",
         t->scored, t->labels, t->labels ? (double)t->scored / t->labels : 0,
         t->labels ? t->miou_sum / t->labels : 0, t->fg_frames ? t->fg_sum / t->fg_frames : 0,
         t->fg_frames, t->pred_pairs ? t->pred_flip_sum / t->pred_pairs : 0,
         t->label_pairs ? t->label_flip_sum / t->label_pairs : 0);
}

static gboolean parse_options(int *argc, char ***argv, ScoreOptions *opt, GError **error)
{
  GOptionEntry entries[] = {
      {"classes", 0, 0, G_OPTION_ARG_INT, &opt->classes,
       "Classes K (default 2: labels are thresholded; K > 2: label value = class)", "K"},
      {"threshold", 0, 0, G_OPTION_ARG_INT, &opt->threshold,
       "With K = 2, label values >= T are class 1 (default 128)", "T"},
      {"csv", 0, 0, G_OPTION_ARG_FILENAME, &opt->csv, "Write frame,miou,fg_iou per frame", "FILE"},
      {NULL}};
  g_autoptr(GOptionContext) context = g_option_context_new("LABELS PRED_DIR");

  g_option_context_set_summary(context, "Scores predicted class masks against label frames; "
                                        "prints one JSON line.");
  g_option_context_add_main_entries(context, entries, NULL);
  if (!g_option_context_parse(context, argc, argv, error))
    return FALSE;
  if (*argc != 3) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                "expected LABELS PRED_DIR, e.g. score-masks data/vtest/labels.mkv out");
    return FALSE;
  }
  if (opt->classes < 2 || opt->classes > 255) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--classes %d: give 2 to 255 classes (255 is the ignore label)", opt->classes);
    return FALSE;
  }
  if (opt->threshold < 1 || opt->threshold > 255) {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--threshold %d: give a grey level from 1 to 255", opt->threshold);
    return FALSE;
  }
  return TRUE;
}

int main(int argc, char **argv)
{
  ScoreOptions opt = {.classes = 2, .threshold = 128};
  ScoreTotals totals = {0};
  g_autoptr(GError) error = NULL;
  LabelVideo *labels = NULL;
  PredictionDir *preds = NULL;
  FILE *csv = NULL;
  int status = 2;

  if (!parse_options(&argc, &argv, &opt, &error))
    goto out;
  if (!(labels = label_video_open(argv[1], &error)))
    goto out;
  if (!(preds = prediction_dir_open(argv[2], &error)))
    goto out;
  if (opt.csv && !(csv = fopen(opt.csv, "w"))) {
    g_set_error(&error, G_FILE_ERROR, g_file_error_from_errno(errno), "cannot write %s: %s",
                opt.csv, g_strerror(errno));
    goto out;
  }
  if (csv)
    fprintf(csv, "frame,miou,fg_iou\n");
  if (score_stream(&opt, labels, preds, csv, &totals, &error)) {
    print_totals(&totals);
    status = 0;
  }

out:
  if (csv && fclose(csv) != 0 && status == 0) {
    g_set_error(&error, G_FILE_ERROR, G_FILE_ERROR_IO, "cannot write %s", opt.csv);
    status = 2;
  }
  if (status)
    fprintf(stderr, "score-masks: %s\n", error->message);
  prediction_dir_free(preds);
  label_video_close(labels);
  g_free(opt.csv);
  return status;
}
