/* test_map.c: feature maps for kernel tests (test_map.h). */
#include "test_map.h"

#include <math.h>
#include <string.h>

TestMap test_map_new(int h, int w, int c, gboolean sliced)
{
  TestMap m;
  int ld = sliced ? c + 7 : c;
  m.first = sliced ? 3 : 0;
  m.n = (size_t)h * w * ld;
  m.buf = g_new(float, m.n > 0 ? m.n : 1);
  for (size_t i = 0; i < m.n; i++)
    m.buf[i] = TEST_MAP_SENTINEL;
  m.map = (FeatureMap){ m.buf + m.first, h, w, c, ld };
  return m;
}

TestMap test_map_copy(const TestMap *src)
{
  TestMap m = *src;
  m.buf = g_memdup2(src->buf, (m.n > 0 ? m.n : 1) * sizeof(float));
  m.map.data = m.buf + m.first;
  return m;
}

TestMap test_map_abs(const TestMap *src)
{
  TestMap m = test_map_copy(src);
  for (size_t i = 0; i < m.n; i++)
    if (test_map_is_channel(&m, i))
      m.buf[i] = fabsf(m.buf[i]);
  return m;
}

void test_map_free(TestMap *m)
{
  g_free(m->buf);
}

gboolean test_map_is_channel(const TestMap *m, size_t i)
{
  int lane = (int)(i % (size_t)m->map.ld);
  return lane >= m->first && lane < m->first + m->map.c;
}

void test_map_fill(TestMap *m, float lo, float hi)
{
  for (size_t i = 0; i < m->n; i++)
    if (test_map_is_channel(m, i))
      m->buf[i] = (float)g_test_rand_double_range(lo, hi);
}

void test_map_fill_nan(TestMap *m)
{
  for (size_t i = 0; i < m->n; i++)
    if (test_map_is_channel(m, i))
      m->buf[i] = NAN;
}

void test_map_fill_output(TestMap *m, int accumulate)
{
  if (accumulate)
    test_map_fill(m, -1.0f, 1.0f);
  else
    test_map_fill_nan(m);
}

gboolean test_maps_close(const TestMap *got, const TestMap *want, const TestMap *magnitude,
                         double rtol, double atol, const char *what)
{
  double largest = 0.0;
  for (size_t i = 0; !magnitude && i < want->n; i++)
    if (test_map_is_channel(want, i))
      largest = fmax(largest, fabs(want->buf[i]));
  for (size_t i = 0; i < want->n; i++) {
    double a = got->buf[i], b = want->buf[i];
    gboolean ok;
    if (!test_map_is_channel(want, i)) {
      ok = memcmp(&got->buf[i], &want->buf[i], sizeof(float)) == 0;
    } else {
      double scale = magnitude ? fabs(magnitude->buf[i]) : fabs(b) + largest;
      ok = fabs(a - b) <= rtol * scale + atol;
    }
    if (!ok) {
      g_test_fail_printf("%s: float %zu (pixel %zu, lane %zu) is %.9g, expected %.9g", what, i,
                         i / want->map.ld, i % want->map.ld, a, b);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean test_maps_equal(const TestMap *got, const TestMap *want, const char *what)
{
  for (size_t i = 0; i < want->n; i++)
    if (memcmp(&got->buf[i], &want->buf[i], sizeof(float)) != 0) {
      g_test_fail_printf("%s: float %zu (pixel %zu, lane %zu) is %.9g, expected %.9g", what, i,
                         i / want->map.ld, i % want->map.ld, got->buf[i], want->buf[i]);
      return FALSE;
    }
  return TRUE;
}

float *test_floats_new(size_t n, float lo, float hi)
{
  float *p = g_new(float, n > 0 ? n : 1);
  for (size_t i = 0; i < n; i++)
    p[i] = (float)g_test_rand_double_range(lo, hi);
  return p;
}

float *test_floats_abs(const float *p, size_t n)
{
  if (!p)
    return NULL;
  float *a = g_new(float, n > 0 ? n : 1);
  for (size_t i = 0; i < n; i++)
    a[i] = fabsf(p[i]);
  return a;
}

gboolean test_floats_close(const float *got, const float *want, const float *magnitude, size_t n,
                           double rtol, double atol, const char *what)
{
  for (size_t i = 0; i < n; i++) {
    double tol = rtol * fabs(magnitude[i]) + atol;
    if (!(fabs((double)got[i] - want[i]) <= tol)) {
      g_test_fail_printf("%s: float %zu is %.9g, reference %.9g (tolerance %.3g)", what, i,
                         got[i], want[i], tol);
      return FALSE;
    }
  }
  return TRUE;
}
