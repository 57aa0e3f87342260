/* dataset.c: the manifest, PNM files, and augmented samples (random zoom, crop, flip, colour). */
#include "dataset.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bilinear.h"
#include "probability_labels.h"

#define DATASET_ERROR (g_quark_from_static_string("dataset-error"))

static void item_free(gpointer p)
{
  DatasetItem *item = p;
  g_free(item->source);
  g_free(item->frame_path);
  g_free(item->label_path);
  g_free(item);
}

static gboolean parse_line(Dataset *set, const char *dir, char *line, const char *manifest,
                           int line_no, GHashTable *per_source, guint held_out_every,
                           const char *const *held_out_sources, GError **error)
{
  char **fields = g_strsplit_set(line, " \t", -1);
  const char *f[3];
  int n = 0;
  for (int j = 0; fields[j]; j++)
    if (*fields[j] && n++ < 3)
      f[n - 1] = fields[j];
  if (n != 3) {
    g_set_error(error, DATASET_ERROR, 0, "%s:%d: expected \"SOURCE FRAME.ppm LABEL.pgm\", got "
                "\"%s\"", manifest, line_no, line);
    g_strfreev(fields);
    return FALSE;
  }
  DatasetItem *item = g_new0(DatasetItem, 1);
  item->source = g_strdup(f[0]);
  item->frame_path = g_build_filename(dir, f[1], NULL);
  item->label_path = g_build_filename(dir, f[2], NULL);
  g_strfreev(fields);
  guint index = GPOINTER_TO_UINT(g_hash_table_lookup(per_source, item->source));
  g_hash_table_replace(per_source, g_strdup(item->source), GUINT_TO_POINTER(index + 1));
  item->held_out = (held_out_every && index % held_out_every == held_out_every - 1) ||
                   (held_out_sources && g_strv_contains(held_out_sources, item->source));
  if (item->held_out)
    set->n_held_out++;
  else
    set->n_train++;
  g_ptr_array_add(set->items, item);
  return TRUE;
}

Dataset *dataset_load(const char *manifest, guint held_out_every,
                      const char *const *held_out_sources, GError **error)
{
  char *text = NULL;
  if (!g_file_get_contents(manifest, &text, NULL, error))
    return NULL;
  char *dir = g_path_get_dirname(manifest);
  Dataset *set = g_new0(Dataset, 1);
  set->items = g_ptr_array_new_with_free_func(item_free);
  GHashTable *per_source = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  char **lines = g_strsplit(text, "\n", -1);
  gboolean ok = TRUE;
  for (int i = 0; lines[i] && ok; i++) {
    char *line = g_strstrip(lines[i]);
    if (*line && *line != '#')
      ok = parse_line(set, dir, line, manifest, i + 1, per_source, held_out_every,
                      held_out_sources, error);
  }
  g_strfreev(lines);
  g_hash_table_unref(per_source);
  g_free(dir);
  g_free(text);
  if (ok && set->n_train == 0) {
    g_set_error(error, DATASET_ERROR, 0, "%s lists no training frame: label some first "
                "(pretrain/label) or hold out fewer", manifest);
    ok = FALSE;
  }
  if (!ok) {
    dataset_free(set);
    return NULL;
  }
  return set;
}

void dataset_free(Dataset *set)
{
  if (!set)
    return;
  g_ptr_array_unref(set->items);
  g_free(set);
}

char *dataset_describe(const Dataset *set)
{
  /* Per source, in order of first appearance: [train, held out]. */
  GHashTable *counts = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  GPtrArray *order = g_ptr_array_new();
  for (guint i = 0; i < set->items->len; i++) {
    const DatasetItem *item = g_ptr_array_index(set->items, i);
    guint *c = g_hash_table_lookup(counts, item->source);
    if (!c) {
      c = g_new0(guint, 2);
      g_hash_table_insert(counts, item->source, c);
      g_ptr_array_add(order, item->source);
    }
    c[item->held_out ? 1 : 0]++;
  }
  GString *out = g_string_new(NULL);
  for (guint i = 0; i < order->len; i++) {
    const guint *c = g_hash_table_lookup(counts, g_ptr_array_index(order, i));
    g_string_append_printf(out, "%s%s:%u+%u", i ? " " : "", (char *)g_ptr_array_index(order, i),
                           c[0], c[1]);
  }
  g_ptr_array_unref(order);
  g_hash_table_unref(counts);
  return g_string_free(out, FALSE);
}

/* ---- PNM ----------------------------------------------------------------------------------- */

static gboolean read_header_number(const uint8_t *data, size_t size, size_t *pos, int *value)
{
  for (;;) {
    while (*pos < size && g_ascii_isspace(data[*pos]))
      (*pos)++;
    if (*pos < size && data[*pos] == '#') {
      while (*pos < size && data[*pos] != '\n')
        (*pos)++;
      continue;
    }
    break;
  }
  long v = 0;
  size_t start = *pos;
  while (*pos < size && g_ascii_isdigit(data[*pos]) && v < 1000000)
    v = v * 10 + (data[(*pos)++] - '0');
  *value = (int)v;
  return *pos > start && v > 0 && v < 1000000;
}

gboolean pnm_read(const char *path, PnmImage *image, GError **error)
{
  memset(image, 0, sizeof *image);
  char *contents = NULL;
  gsize size = 0;
  if (!g_file_get_contents(path, &contents, &size, error))
    return FALSE;
  const uint8_t *data = (const uint8_t *)contents;
  size_t pos = 2;
  int w = 0, h = 0, maxval = 0;
  int channels = size >= 2 && data[0] == 'P' ? (data[1] == '6' ? 3 : data[1] == '5' ? 1 : 0) : 0;
  if (!channels || !read_header_number(data, size, &pos, &w) ||
      !read_header_number(data, size, &pos, &h) ||
      !read_header_number(data, size, &pos, &maxval) || maxval != 255 || pos >= size ||
      !g_ascii_isspace(data[pos]) || size - pos - 1 < (size_t)w * h * channels) {
    g_set_error(error, DATASET_ERROR, 0, "%s: not a complete 8-bit binary PNM (P5 or P6, maxval "
                "255); relabel it with pretrain/label", path);
    g_free(contents);
    return FALSE;
  }
  image->width = w;
  image->height = h;
  image->channels = channels;
  image->data = g_memdup2(data + pos + 1, (size_t)w * h * channels);
  g_free(contents);
  return TRUE;
}

gboolean pnm_write(const char *path, const PnmImage *image, GError **error)
{
  char *header = g_strdup_printf("P%c\n%d %d\n255\n", image->channels == 3 ? '6' : '5',
                                 image->width, image->height);
  size_t hlen = strlen(header), n = (size_t)image->width * image->height * image->channels;
  char *buf = g_malloc(hlen + n);
  memcpy(buf, header, hlen);
  memcpy(buf + hlen, image->data, n);
  gboolean ok = g_file_set_contents(path, buf, hlen + n, error);
  g_free(buf);
  g_free(header);
  return ok;
}

void pnm_clear(PnmImage *image)
{
  g_free(image->data);
  memset(image, 0, sizeof *image);
}

/* ---- samples ------------------------------------------------------------------------------- */

void augment_config_default(AugmentConfig *cfg)
{
  *cfg = (AugmentConfig){
    .min_zoom = 0.6, .max_zoom = 1.8, .flip = TRUE,
    .brightness = 0.15, .contrast = 0.3, .colour = 0.1, .confidence = 0.6,
  };
}

/* Bilinear sample of channel c at (x, y), pixel centres at integers, edges clamped. */
static float sample_bilinear(const PnmImage *im, int c, double x, double y)
{
  x = CLAMP(x, 0.0, im->width - 1.0);
  y = CLAMP(y, 0.0, im->height - 1.0);
  int x0 = (int)x, y0 = (int)y;
  int x1 = MIN(x0 + 1, im->width - 1), y1 = MIN(y0 + 1, im->height - 1);
  float fx = (float)(x - x0), fy = (float)(y - y0);
  int ch = im->channels;
  const uint8_t *r0 = im->data + (size_t)y0 * im->width * ch;
  const uint8_t *r1 = im->data + (size_t)y1 * im->width * ch;
  return bilinear_blend(r0[x0 * ch + c], r0[x1 * ch + c], r1[x0 * ch + c], r1[x1 * ch + c], fx,
                        fy);
}

void labels_from_probability(const PnmImage *prob, double confidence, int w, int h,
                             uint8_t *labels)
{
  size_t n = (size_t)prob->width * prob->height;
  float *p = g_new(float, n);
  for (size_t i = 0; i < n; i++)
    p[i] = prob->data[i * prob->channels] / 255.0f;
  labels_from_probabilities(p, 1, prob->width, prob->height, confidence, w, h, labels);
  g_free(p);
}

/* The view: output pixel (x, y) of an out_w-wide grid over the crop reads the frame at
 * (x0 + (x + 0.5) * in_w / out_w) / zoom - 0.5, mirrored when flipped. */
typedef struct {
  double zoom, x0, y0;
  gboolean flip;
  int in_w, in_h;
} View;

static void view_source(const View *v, int out_w, int out_h, int x, int y, double *sx, double *sy)
{
  double cx = (x + 0.5) * v->in_w / out_w, cy = (y + 0.5) * v->in_h / out_h;
  if (v->flip)
    cx = v->in_w - cx;
  *sx = (v->x0 + cx) / v->zoom - 0.5;
  *sy = (v->y0 + cy) / v->zoom - 0.5;
}

static double uniform(GRand *rng, double lo, double hi)
{
  return lo >= hi ? lo : g_rand_double_range(rng, lo, hi);
}

void augment_sample(const PnmImage *frame, const PnmImage *prob, const AugmentConfig *cfg,
                    GRand *rng, int in_w, int in_h, float *input, int label_w, int label_h,
                    uint8_t *labels)
{
  View v = { .in_w = in_w, .in_h = in_h };
  double fit = MAX((double)in_w / frame->width, (double)in_h / frame->height);
  v.zoom = fit * exp(uniform(rng, log(cfg->min_zoom), log(cfg->max_zoom)));
  /* The zoomed frame is placed anywhere that keeps the crop inside it, or, when it is smaller
   * than the crop, anywhere inside the crop. */
  double zw = frame->width * v.zoom, zh = frame->height * v.zoom;
  v.x0 = uniform(rng, MIN(0.0, zw - in_w), MAX(0.0, zw - in_w));
  v.y0 = uniform(rng, MIN(0.0, zh - in_h), MAX(0.0, zh - in_h));
  v.flip = cfg->flip && g_rand_boolean(rng);
  float contrast = (float)uniform(rng, 1 - cfg->contrast, 1 + cfg->contrast);
  float brightness = (float)uniform(rng, -cfg->brightness, cfg->brightness);
  float gain[3];
  for (int c = 0; c < 3; c++)
    gain[c] = (float)uniform(rng, 1 - cfg->colour, 1 + cfg->colour);

  for (int y = 0; y < in_h; y++)
    for (int x = 0; x < in_w; x++) {
      double sx, sy;
      view_source(&v, in_w, in_h, x, y, &sx, &sy);
      float *px = input + ((size_t)y * in_w + x) * 3;
      for (int c = 0; c < 3; c++) {
        float value = sample_bilinear(frame, c, sx, sy) / 255.0f * gain[c] - 0.5f;
        px[c] = CLAMP(value * contrast + brightness, -0.5f, 0.5f);
      }
    }
  for (int y = 0; y < label_h; y++)
    for (int x = 0; x < label_w; x++) {
      double sx, sy;
      view_source(&v, label_w, label_h, x, y, &sx, &sy);
      gboolean inside = sx >= -0.5 && sy >= -0.5 && sx <= prob->width - 0.5 &&
                        sy <= prob->height - 0.5;
      labels[y * label_w + x] =
        inside ? label_of_foreground(sample_bilinear(prob, 0, sx, sy) / 255.0f, cfg->confidence)
               : LABEL_IGNORE;
    }
}
