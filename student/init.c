/* init.c: see init.h. */
#include "init.h"

#include <math.h>

/* SplitMix64 (Steele, Lea & Flood 2014): tiny, fully specified, the same stream everywhere. */
static guint64 splitmix64_next(guint64 *state)
{
  guint64 z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in (-1, 1), 53 bits. */
static double uniform_signed(guint64 *state)
{
  return (double)(splitmix64_next(state) >> 11) * 0x1.0p-52 - 1.0;
}

/* Marsaglia's polar method; the spare value is dropped to keep the stream simple to follow. */
static double standard_normal(guint64 *state)
{
  double u, v, s;
  do {
    u = uniform_signed(state);
    v = uniform_signed(state);
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  return u * sqrt(-2.0 * log(s) / s);
}

static void init_weight(const StudentTensor *t, float *w, guint64 *state)
{
  int cout = t->shape[0], cin = t->shape[1], kh = t->shape[2], kw = t->shape[3];
  double scale = sqrt(2.0 / (cin * kh * kw)) * t->init_gain;
  for (int o = 0; o < cout; o++)
    for (int i = 0; i < cin; i++)
      for (int y = 0; y < kh; y++)
        for (int x = 0; x < kw; x++)
          w[((size_t)(y * kw + x) * cin + i) * cout + o] = (float)(standard_normal(state) * scale);
}

void init_params(const ParamTable *table, float *params, guint64 seed)
{
  guint64 state = seed;
  for (int i = 0; i < param_table_size(table); i++) {
    const StudentTensor *t = param_table_get(table, i);
    float *values = params + t->offset;
    if (t->hwio)
      init_weight(t, values, &state);
    else
      for (size_t k = 0; k < t->count; k++)
        values[k] = (float)t->init_gain;
  }
}
