/* arena.h: one allocation for all activation and gradient buffers of an input size.
 *
 * Planning runs twice: once with base NULL to measure, then over the allocated block, so the
 * same code decides sizes and places buffers. Buffers start on 64-byte boundaries. */
#pragma once

#include <stddef.h>

#include "feature_map.h"

typedef struct {
  float *base; /* NULL while measuring */
  size_t used; /* floats */
} Arena;

static inline FeatureMap arena_feature_map(Arena *arena, int h, int w, int c)
{
  size_t floats = (size_t)h * w * c;
  FeatureMap m = feature_map(arena->base ? arena->base + arena->used : NULL, h, w, c);
  arena->used += (floats + 15) & ~(size_t)15;
  return m;
}

/* An activation and its gradient, of the same shape. */
static inline void arena_pair(Arena *arena, int h, int w, int c, FeatureMap *map,
                              FeatureMap *delta)
{
  *map = arena_feature_map(arena, h, w, c);
  *delta = arena_feature_map(arena, h, w, c);
}
