/* test_map.h: feature maps for kernel tests, each in a buffer of its own.
 *
 * A sliced map is a channel slice 3 floats into pixels 7 floats wider than its channels (ld > c),
 * as a concatenation's inputs are. Every float outside the channels holds TEST_MAP_SENTINEL from
 * the start, so a kernel that writes past its channels shows, and one that reads them goes far
 * off. */
#pragma once

#include <glib.h>

#include "feature_map.h"

#define TEST_MAP_SENTINEL 12345.0f

typedef struct {
  float *buf;
  size_t n;  /* floats in buf */
  int first; /* lane of channel 0 within a pixel */
  FeatureMap map;
} TestMap;

TestMap test_map_new(int h, int w, int c, gboolean sliced);
TestMap test_map_copy(const TestMap *src);
/* A copy with every channel replaced by its magnitude (the sentinels stay). */
TestMap test_map_abs(const TestMap *src);
void test_map_free(TestMap *m);

/* Whether buf[i] is one of the map's channels. */
gboolean test_map_is_channel(const TestMap *m, size_t i);
/* Every channel uniform in [lo, hi), from the test's random numbers. */
void test_map_fill(TestMap *m, float lo, float hi);
void test_map_fill_nan(TestMap *m);
/* An operation's output before it runs: uniform in [-1, 1) where it accumulates, else NaN (so a
 * lane it forgets shows). */
void test_map_fill_output(TestMap *m, int accumulate);

/* Whether got holds want: every float outside the channels bit for bit, every channel within
 * rtol * magnitude + atol, where the magnitude is that float of magnitude (a map of the same
 * layout, e.g. the reference run on absolute values) or, when magnitude is NULL, |want| plus the
 * largest |want| of the map. Fails the test at the first float that differs, naming it after
 * what. */
gboolean test_maps_close(const TestMap *got, const TestMap *want, const TestMap *magnitude,
                         double rtol, double atol, const char *what);
/* Whether got holds want bit for bit, NaN included. */
gboolean test_maps_equal(const TestMap *got, const TestMap *want, const char *what);

/* ---- plain float arrays (weights, biases, per-channel vectors) ---- */

/* n floats uniform in [lo, hi), from the test's random numbers; g_free() them. */
float *test_floats_new(size_t n, float lo, float hi);
/* A copy with every float replaced by its magnitude; NULL stays NULL. g_free() it. */
float *test_floats_abs(const float *p, size_t n);
/* Whether |got - want| <= rtol * |magnitude| + atol for each of the n floats; fails the test at
 * the first that is not, naming it after what. */
gboolean test_floats_close(const float *got, const float *want, const float *magnitude, size_t n,
                           double rtol, double atol, const char *what);
