/* outcome.h: what the teacher-client tests share: a collector of the client's callbacks (which
 * run on the client thread) that the test thread waits on, and the banded test frame. */
#pragma once

#include "teacher_client.h"

typedef struct {
  GError *error;           /* NULL: labels delivered */
  guint8 *labels;
  int width, height, num_classes, mask_width, mask_height;
  guint8 *shown_labels;    /* NULL unless asked for */
  int shown_width, shown_height;
  guint64 frame, bytes_sent, bytes_received;
  double latency_ms;
} Outcome;

typedef struct {
  GMutex lock;
  GCond cond;
  GQueue outcomes;
} Collector;

void collector_init(Collector *collector);
void collector_clear(Collector *collector);
/* The TeacherResultFunc; user_data is the Collector. */
void collector_on_result(TeacherResult *result, const GError *error, gpointer user_data);
/* The next outcome (waits up to 60 s, or seconds, then fails the test). */
Outcome *collector_wait(Collector *collector);
Outcome *collector_wait_for(Collector *collector, guint seconds);
/* The next outcome if one is there already, else NULL. */
Outcome *collector_poll(Collector *collector);
void outcome_free(Outcome *outcome);

/* width x height packed RGB: vertical bands of red, blue and green thirds. */
guint8 *bands_new(int width, int height);
/* Checks labels against the bands (red 1, blue 0, green 255), away from the band edges. */
void bands_check(const guint8 *labels, int width, int height);
