/* outcome.c: the callback collector and the banded frame (outcome.h). */
#include <math.h>
#include <string.h>

#include "outcome.h"

void collector_init(Collector *collector)
{
  g_mutex_init(&collector->lock);
  g_cond_init(&collector->cond);
  g_queue_init(&collector->outcomes);
}

void collector_clear(Collector *collector)
{
  g_queue_clear_full(&collector->outcomes, (GDestroyNotify)outcome_free);
  g_mutex_clear(&collector->lock);
  g_cond_clear(&collector->cond);
}

void collector_on_result(TeacherResult *result, const GError *error, gpointer user_data)
{
  Collector *collector = user_data;
  Outcome *outcome = g_new0(Outcome, 1);
  if (error) {
    outcome->error = g_error_copy(error);
  } else {
    outcome->labels = g_steal_pointer(&result->labels);
    outcome->shown_labels = g_steal_pointer(&result->shown_labels);
    outcome->shown_width = result->shown_width;
    outcome->shown_height = result->shown_height;
    outcome->width = result->width;
    outcome->height = result->height;
    outcome->num_classes = result->num_classes;
    outcome->mask_width = result->mask_width;
    outcome->mask_height = result->mask_height;
    outcome->frame = result->frame;
    outcome->bytes_sent = result->bytes_sent;
    outcome->bytes_received = result->bytes_received;
    outcome->latency_ms = result->latency_ms;
  }
  g_mutex_lock(&collector->lock);
  g_queue_push_tail(&collector->outcomes, outcome);
  g_cond_broadcast(&collector->cond);
  g_mutex_unlock(&collector->lock);
}

Outcome *collector_wait(Collector *collector)
{
  return collector_wait_for(collector, 60);
}

Outcome *collector_wait_for(Collector *collector, guint seconds)
{
  gint64 end = g_get_monotonic_time() + (gint64)seconds * G_USEC_PER_SEC;
  g_mutex_lock(&collector->lock);
  while (g_queue_is_empty(&collector->outcomes))
    if (!g_cond_wait_until(&collector->cond, &collector->lock, end))
      break;
  Outcome *outcome = g_queue_pop_head(&collector->outcomes);
  g_mutex_unlock(&collector->lock);
  g_assert_nonnull(outcome);
  return outcome;
}

Outcome *collector_poll(Collector *collector)
{
  g_mutex_lock(&collector->lock);
  Outcome *outcome = g_queue_pop_head(&collector->outcomes);
  g_mutex_unlock(&collector->lock);
  return outcome;
}

void outcome_free(Outcome *outcome)
{
  g_clear_error(&outcome->error);
  g_free(outcome->labels);
  g_free(outcome->shown_labels);
  g_free(outcome);
}

static const guint8 band_colours[3][3] = {{230, 20, 20}, {20, 20, 230}, {20, 230, 20}};
static const int band_labels[3] = {1, 0, 255};

guint8 *bands_new(int width, int height)
{
  guint8 *rgb = g_malloc((gsize)width * height * 3);
  for (int y = 0; y < height; y++)
    for (int x = 0; x < width; x++)
      memcpy(rgb + ((gsize)y * width + x) * 3, band_colours[MIN(2, 3 * x / width)], 3);
  return rgb;
}

void bands_check(const guint8 *labels, int width, int height)
{
  g_assert_nonnull(labels);
  guint checked = 0;
  for (int x = 0; x < width; x++) {
    double u = (x + 0.5) / width;
    /* Resizing (the frame sent, the mask, the class map) blurs about a pixel of each edge. */
    if (fabs(u - 1.0 / 3) < 0.08 || fabs(u - 2.0 / 3) < 0.08)
      continue;
    int expected = band_labels[u < 1.0 / 3 ? 0 : u < 2.0 / 3 ? 1 : 2];
    for (int y = 0; y < height; y++) {
      if (labels[(gsize)y * width + x] != expected)
        g_error("class map pixel (%d,%d) is %d, expected %d", x, y, labels[(gsize)y * width + x],
                expected);
      checked++;
    }
  }
  g_assert_cmpuint(checked, >, (guint)(width * height) / 2);
}
