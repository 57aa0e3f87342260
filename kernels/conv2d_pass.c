/* conv2d_pass.c: where a convolution pass reads its input rows (conv2d_pass.h). */
#include <string.h>

#include "conv2d_pass.h"

/* Wide rows copy only their edges: copying the whole row once per tap row costs a few percent of
 * a layer; an edge range of EDGE_PIXELS keeps the kernel's tiles wide enough to be efficient. */
#define EDGE_PIXELS 8
#define EDGE_MIN_PIXELS 24

void conv_pass_forward_taps(ConvPass *ps, const ConvGeometry *g, const FeatureMap *x, int out_h,
                              int out_w)
{
  memset(ps, 0, sizeof *ps);
  ps->in = x;
  ps->in_mul = g->stride;
  ps->out_h = out_h;
  ps->out_w = out_w;
  for (int ky = 0; ky < g->kh; ky++)
    for (int kx = 0; kx < g->kw; kx++)
      ps->taps[ps->n_taps++] = (ConvTap){ ky - g->pad_h, kx - g->pad_w, ky * g->kw + kx };
}

void conv_pass_finish(ConvPass *ps, int compact)
{
  if (ps->n_taps == 0)
    return;
  int dr_lo = ps->taps[0].dr, dr_hi = dr_lo, dc_lo = ps->taps[0].dc, dc_hi = dc_lo;
  for (int t = 1; t < ps->n_taps; t++) {
    const ConvTap *tap = &ps->taps[t];
    dr_lo = tap->dr < dr_lo ? tap->dr : dr_lo;
    dr_hi = tap->dr > dr_hi ? tap->dr : dr_hi;
    dc_lo = tap->dc < dc_lo ? tap->dc : dc_lo;
    dc_hi = tap->dc > dc_hi ? tap->dc : dc_hi;
  }
  ps->dr_lo = dr_lo;
  ps->n_slots = dr_hi - dr_lo + 1;
  ps->dc_lo = dc_lo;
  ps->dc_hi = dc_hi;
  /* Pixels [inner_lo, inner_hi) read only columns inside the map. */
  int m = ps->in_mul, last = ps->in->w - 1 - dc_hi;
  int inner_lo = dc_lo < 0 ? (-dc_lo + m - 1) / m : 0;
  int inner_hi = last < 0 ? 0 : last / m + 1;
  inner_hi = inner_hi < ps->out_w ? inner_hi : ps->out_w;
  ps->left = inner_lo > EDGE_PIXELS ? inner_lo : inner_lo ? EDGE_PIXELS : 0;
  ps->right = inner_hi >= ps->out_w ? ps->out_w
              : inner_hi < ps->out_w - EDGE_PIXELS ? inner_hi : ps->out_w - EDGE_PIXELS;
  if (compact && ps->in->ld != ps->in->c)
    ps->source = ROWS_COPIED;
  else if (inner_lo == 0 && inner_hi == ps->out_w)
    ps->source = ROWS_IN_PLACE;
  else if (ps->out_w >= EDGE_MIN_PIXELS && ps->left < ps->right)
    ps->source = ROWS_EDGES;
  else
    ps->source = ROWS_COPIED;
}

/* Input columns read by pixels [p0, p1). */
static int pass_columns(const ConvPass *ps, int p0, int p1)
{
  return (p1 - 1 - p0) * ps->in_mul + ps->dc_hi - ps->dc_lo + 1;
}

size_t conv_pass_scratch_floats(const ConvPass *ps)
{
  int cols = 0;
  if (ps->source == ROWS_COPIED) {
    cols = pass_columns(ps, 0, ps->out_w);
  } else if (ps->source == ROWS_EDGES) {
    int left = ps->left ? pass_columns(ps, 0, ps->left) : 0;
    int right = ps->right < ps->out_w ? pass_columns(ps, ps->right, ps->out_w) : 0;
    cols = left > right ? left : right;
  }
  return (size_t)ps->n_slots * cols * ps->in->c;
}

int conv_pass_ranges(const ConvPass *ps, PixelRange ranges[3])
{
  int n = 0;
  switch (ps->source) {
  case ROWS_IN_PLACE:
  case ROWS_COPIED:
    ranges[n++] = (PixelRange){ 0, ps->out_w, ps->source == ROWS_COPIED };
    break;
  case ROWS_EDGES:
    if (ps->left > 0)
      ranges[n++] = (PixelRange){ 0, ps->left, 1 };
    ranges[n++] = (PixelRange){ ps->left, ps->right, 0 };
    if (ps->right < ps->out_w)
      ranges[n++] = (PixelRange){ ps->right, ps->out_w, 1 };
    break;
  }
  return n;
}

/* Input columns [col_lo, col_lo + n) of row y, zero outside the map, channels packed. */
static void copy_padded_row(const FeatureMap *in, int y, int col_lo, int n, float *dst)
{
  int c = in->c;
  int first = col_lo < 0 ? -col_lo : 0;
  int end = in->w - col_lo < n ? in->w - col_lo : n;
  first = first < n ? first : n;
  end = end > first ? end : first;
  memset(dst, 0, sizeof(float) * first * c);
  if (in->ld == c)
    memcpy(dst + (size_t)first * c, feature_map_at(in, y, col_lo + first),
           sizeof(float) * (end - first) * c);
  else
    for (int i = first; i < end; i++)
      memcpy(dst + (size_t)i * c, feature_map_at(in, y, col_lo + i), sizeof(float) * c);
  memset(dst + (size_t)end * c, 0, sizeof(float) * (n - end) * c);
}

void conv_pass_rows(const ConvPass *ps, int r, const PixelRange *range, float *scratch,
                      PassRows *pr)
{
  const FeatureMap *in = ps->in;
  int col_lo = range->p0 * ps->in_mul + ps->dc_lo;
  int n = pass_columns(ps, range->p0, range->p1);
  for (int s = 0; s < ps->n_slots; s++) {
    int y = r * ps->in_mul + ps->dr_lo + s;
    if (y < 0 || y >= in->h) {
      pr->rows[s] = NULL;
    } else if (range->copy) {
      float *dst = scratch + (size_t)s * n * in->c;
      copy_padded_row(in, y, col_lo, n, dst);
      pr->rows[s] = dst;
    } else {
      pr->rows[s] = feature_map_at(in, y, 0);
    }
  }
  pr->ld = range->copy ? in->c : in->ld;
  pr->col0 = range->copy ? col_lo : 0;
}
