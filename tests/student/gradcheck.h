/* gradcheck.h: finite differences against analytic gradients.
 *
 * The loss is a double computed from float activations. Two things spoil a difference quotient:
 * float rounding, which grows as the step shrinks, and ReLUs whose input crosses zero within the
 * step, which grow with it (in a deep network, some always do at eps = 1e-2). So each element is
 * measured at steps of 1e-2, 1e-3 and 1e-4, forward, backward and central (seven losses), and
 * the quotient closest to the analytic value counts: a wrong gradient is off in all of them, a
 * kink or rounding spoils only some. Each checked element must agree to GRADCHECK_TOLERANCE
 * relative to the larger of the two values, or to a floor of GRADCHECK_FLOOR times the root
 * mean square of the whole analytic gradient (elements whose gradient is tiny next to their
 * neighbours'). */
#pragma once

#include <glib.h>
#include <math.h>
#include <stdlib.h>

#define GRADCHECK_EPS 1e-2
#define GRADCHECK_TOLERANCE 1e-2
#define GRADCHECK_FLOOR 1e-2

typedef double (*GradcheckLoss)(void *ctx);

static inline double gradcheck_rms(const float *g, size_t n)
{
  double sum = 0.0;
  for (size_t i = 0; i < n; i++)
    sum += (double)g[i] * g[i];
  return n ? sqrt(sum / n) : 0.0;
}

/* The difference quotient closest to analytic. */
static inline double closest_difference(GradcheckLoss loss, void *ctx, float *value,
                                        double analytic)
{
  float v = *value;
  double loss_at = loss(ctx), best = NAN;
  for (double step = GRADCHECK_EPS; step > GRADCHECK_EPS / 200; step /= 10) {
    float up = v + (float)step, down = v - (float)step;
    *value = up;
    double loss_up = loss(ctx);
    *value = down;
    double loss_down = loss(ctx);
    *value = v;
    double candidates[3] = { (loss_up - loss_at) / ((double)up - v),
                             (loss_at - loss_down) / ((double)v - down),
                             (loss_up - loss_down) / ((double)up - down) };
    for (int i = 0; i < 3; i++)
      if (isnan(best) || fabs(candidates[i] - analytic) < fabs(best - analytic))
        best = candidates[i];
  }
  return best;
}

typedef struct {
  double worst, median; /* relative errors over the checked elements (lower median) */
} GradcheckResult;

static inline int compare_doubles(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Checks `samples` random elements of values (n floats, the loss depends on them) against
 * analytic; all of them when samples >= n. */
static inline GradcheckResult gradcheck(const char *what, GradcheckLoss loss, void *ctx,
                                        float *values, const float *analytic, size_t n,
                                        int samples, GRand *rng)
{
  double floor = GRADCHECK_FLOOR * gradcheck_rms(analytic, n);
  int checked = (size_t)samples >= n ? (int)n : samples;
  double *errors = g_new(double, checked);
  for (int s = 0; s < checked; s++) {
    size_t k = checked == (int)n ? (size_t)s : (size_t)g_rand_int_range(rng, 0, (gint32)n);
    double numeric = closest_difference(loss, ctx, values + k, analytic[k]);
    double scale = fmax(fmax(fabs(numeric), fabs(analytic[k])), floor);
    errors[s] = scale > 0.0 ? fabs(numeric - analytic[k]) / scale : 0.0;
    if (errors[s] > GRADCHECK_TOLERANCE)
      g_test_message("%s[%zu]: analytic %.6g, numeric %.6g, relative error %.3g", what, k,
                     analytic[k], numeric, errors[s]);
  }
  qsort(errors, checked, sizeof(double), compare_doubles);
  GradcheckResult r = { checked ? errors[checked - 1] : 0.0,
                        checked ? errors[(checked - 1) / 2] : 0.0 };
  g_free(errors);
  return r;
}

/* The larger of each figure: the result of a check made of several. */
static inline void gradcheck_merge(GradcheckResult *all, GradcheckResult r)
{
  all->worst = fmax(all->worst, r.worst);
  all->median = fmax(all->median, r.median);
}

static inline void fill_uniform(float *x, size_t n, float lo, float hi, GRand *rng)
{
  for (size_t i = 0; i < n; i++)
    x[i] = (float)g_rand_double_range(rng, lo, hi);
}

static inline void fill_nan(float *x, size_t n)
{
  for (size_t i = 0; i < n; i++)
    x[i] = NAN;
}

/* sum of weight[i] * m[i] over the map's elements, in double. */
static inline double weighted_sum(const FeatureMap *m, const float *weight)
{
  double sum = 0.0;
  size_t i = 0;
  for (int y = 0; y < m->h; y++)
    for (int x = 0; x < m->w; x++)
      for (int c = 0; c < m->c; c++)
        sum += (double)weight[i++] * feature_map_at(m, y, x)[c];
  return sum;
}

/* m = weight: the gradient of weighted_sum, to start a backward pass with. */
static inline void set_delta(FeatureMap *m, const float *weight)
{
  size_t i = 0;
  for (int y = 0; y < m->h; y++)
    for (int x = 0; x < m->w; x++)
      for (int c = 0; c < m->c; c++)
        feature_map_at(m, y, x)[c] = weight[i++];
}
