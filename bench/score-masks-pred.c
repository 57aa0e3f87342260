/* score-masks: the predicted masks, one file per frame: binary PGM (what `pnmenc ! multifilesink`
 * writes) of any size, or raw GRAY8 of the label size. */
#include <stdio.h>
#include <string.h>

#include "score-masks.h"

struct PredictionDir {
  char *path;
  GHashTable *by_frame; /* frame number -> file name */
};

/* The last run of digits in name, or -1. Absurdly long runs saturate instead of overflowing. */
static long frame_of(const char *name)
{
  long value = -1;

  for (const char *p = name; *p;) {
    if (!g_ascii_isdigit(*p)) {
      p++;
      continue;
    }
    for (value = 0; g_ascii_isdigit(*p); p++)
      value = value < G_MAXLONG / 20 ? value * 10 + (*p - '0') : G_MAXLONG / 2;
  }
  return value;
}

static gint compare_names(gconstpointer a, gconstpointer b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

PredictionDir *prediction_dir_open(const char *path, GError **error)
{
  GDir *gdir = g_dir_open(path, 0, error);
  GPtrArray *names = g_ptr_array_new();
  const char *name;

  if (!gdir) {
    g_ptr_array_free(names, TRUE);
    return NULL;
  }
  while ((name = g_dir_read_name(gdir)))
    if (name[0] != '.')
      g_ptr_array_add(names, g_strdup(name));
  g_dir_close(gdir);
  g_ptr_array_sort(names, compare_names);

  PredictionDir *dir = g_new0(PredictionDir, 1);
  dir->path = g_strdup(path);
  dir->by_frame = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
  /* In name order, so that of two files naming the same frame the later name wins. */
  for (guint i = 0; i < names->len; i++) {
    long frame = frame_of(names->pdata[i]);
    gint64 *key = g_new(gint64, 1);
    *key = frame >= 0 ? frame : (long)i;
    g_hash_table_replace(dir->by_frame, key, names->pdata[i]);
  }
  g_free(g_ptr_array_free(names, FALSE)); /* the names now belong to the table */
  return dir;
}

/* Skips whitespace and '#' comments, then reads a decimal number; -1 if there is none. */
static long pgm_number(const uint8_t *data, size_t size, size_t *at)
{
  long value = 0;

  while (*at < size && (g_ascii_isspace(data[*at]) || data[*at] == '#')) {
    if (data[*at] == '#')
      while (*at < size && data[*at] != '\n')
        (*at)++;
    else
      (*at)++;
  }
  if (*at >= size || !g_ascii_isdigit(data[*at]))
    return -1;
  while (*at < size && g_ascii_isdigit(data[*at]) && value < G_MAXINT)
    value = value * 10 + (data[(*at)++] - '0');
  return value;
}

/* Nearest-neighbour resize of a w x h PGM's pixels to the label size. */
static void resize_nearest(const uint8_t *pixels, long w, long h, long label_w, long label_h,
                           uint8_t *mask)
{
  for (long y = 0; y < label_h; y++) {
    const uint8_t *row = pixels + (y * h / label_h) * w;
    for (long x = 0; x < label_w; x++)
      mask[y * label_w + x] = row[x * w / label_w];
  }
}

static gboolean read_pgm(const uint8_t *data, size_t size, int label_w, int label_h,
                         uint8_t *mask)
{
  size_t at = 2;
  long w = pgm_number(data, size, &at), h = pgm_number(data, size, &at);
  long maxval = pgm_number(data, size, &at);

  if (w <= 0 || h <= 0 || maxval < 1 || maxval > 255)
    return FALSE;
  at++; /* the single whitespace byte that ends the header */
  if (at > size || size - at < (size_t)w * h)
    return FALSE;
  resize_nearest(data + at, w, h, label_w, label_h, mask);
  return TRUE;
}

gboolean prediction_dir_read(const PredictionDir *dir, long frame, int label_w, int label_h,
                             uint8_t *mask)
{
  gint64 key = frame;
  const char *name = g_hash_table_lookup(dir->by_frame, &key);
  g_autofree char *path = NULL;
  g_autofree uint8_t *data = NULL;
  gsize size;
  size_t label_size = (size_t)label_w * label_h;

  if (!name)
    return FALSE;
  path = g_build_filename(dir->path, name, NULL);
  if (!g_file_test(path, G_FILE_TEST_IS_REGULAR) ||
      !g_file_get_contents(path, (char **)&data, &size, NULL))
    return FALSE;
  if (size > 2 && data[0] == 'P' && data[1] == '5')
    return read_pgm(data, size, label_w, label_h, mask);
  if (size != label_size)
    return FALSE;
  memcpy(mask, data, label_size);
  return TRUE;
}

void prediction_dir_free(PredictionDir *dir)
{
  if (!dir)
    return;
  g_hash_table_destroy(dir->by_frame);
  g_free(dir->path);
  g_free(dir);
}
