/* test_block_match.c: block vectors between grey frames (block_match.h). On a smooth texture
 * shifted as a whole, every block away from the edges finds the shift, by the coarse-to-fine
 * search and by the full one; a moving patch over a still background gets its own shift and
 * the background stays still; a flat frame, where every shift matches, stays still. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "block_match.h"

enum { H = 96, W = 128 };

/* A smooth texture: sinusoids of periods 8-40 pixels in several directions, 0-255. */
static int texture(double x, double y)
{
  double v = sin(x * 0.31 + y * 0.07) + sin(y * 0.27 - x * 0.11) + 0.7 * sin((x + y) * 0.16) +
             0.5 * cos(x * 0.05 - y * 0.19) + 0.6 * sin(x * 0.53 - y * 0.41) +
             0.6 * cos(x * 0.23 + y * 0.61);
  return (int)lrint(127.5 + 30.0 * v);
}

/* A padded frame of the texture at (x + ox, y + oy), with a second texture's square patch of
 * side `patch` at (px, py) (patch 0: none). */
static uint8_t *make_frame(int ox, int oy, int patch, int px, int py)
{
  uint8_t *frame = g_malloc(block_frame_bytes(H, W));
  uint8_t *origin = block_frame_origin(frame, W);
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      gboolean in = patch && x >= px && x < px + patch && y >= py && y < py + patch;
      origin[y * block_frame_stride(W) + x] =
          (uint8_t)(in ? 255 - texture(2.1 * (x - px) + 5, 1.7 * (y - py) + 3)
                       : texture(x + ox, y + oy));
    }
  block_frame_pad(frame, H, W);
  return frame;
}

typedef void (*MatchFunc)(const uint8_t *, const uint8_t *, int, int, BlockVector *, uint8_t *);

/* The vectors of cur against prev. */
static BlockVector *match(MatchFunc f, const uint8_t *cur, const uint8_t *prev)
{
  BlockVector *vectors = g_new(BlockVector, (H / BLOCK_MATCH_SIZE) * (W / BLOCK_MATCH_SIZE));
  size_t scratch = MAX(block_match_scratch(H, W), (size_t)(W + H * W) * sizeof(uint16_t));
  uint8_t *s = g_malloc(scratch);
  f(cur, prev, H, W, vectors, s);
  g_free(s);
  return vectors;
}

/* Whole-frame shifts: the current frame at (x, y) is the previous at (x + dx, y + dy), so the
 * right vector matches exactly (a sum of absolute differences of 0). */
static void check_shifts(MatchFunc f, const char *name, int max_wrong)
{
  static const int shifts[][2] = { { 0, 0 }, { 1, 0 }, { 0, -1 }, { 3, -2 }, { -5, 4 },
                                    { 6, 6 }, { -7, 1 }, { 2, 7 } };
  const int bh = H / BLOCK_MATCH_SIZE, bw = W / BLOCK_MATCH_SIZE, edge = 2;
  for (size_t i = 0; i < G_N_ELEMENTS(shifts); i++) {
    int dx = shifts[i][0], dy = shifts[i][1];
    uint8_t *prev = make_frame(0, 0, 0, 0, 0), *cur = make_frame(dx, dy, 0, 0, 0);
    BlockVector *v = match(f, cur, prev);
    int wrong = 0, total = 0;
    for (int by = edge; by < bh - edge; by++)
      for (int bx = edge; bx < bw - edge; bx++, total++)
        wrong += v[by * bw + bx].dx != dx || v[by * bw + bx].dy != dy ||
                 v[by * bw + bx].sad != 0; /* the content is there, exactly */
    g_test_message("%s: shift (%d, %d): %d of %d inner blocks wrong", name, dx, dy, wrong,
                   total);
    g_assert_cmpint(wrong, <=, max_wrong);
    g_free(v);
    g_free(prev);
    g_free(cur);
  }
}

static void test_shifts_coarse_to_fine(void)
{
  /* The halved frames may mislead a block of a smooth texture (one direction along which it
   * hardly changes) beyond the fine search's reach. */
  check_shifts(block_match, "coarse to fine", 560 / 10);
}

static void test_shifts_full(void)
{
  check_shifts(block_match_full, "full", 0);
}

/* A 24-pixel patch moves by (4, -3) over a still background: blocks inside the patch point
 * back to where it was (all those a block away from its edges; at the edges a coarse block
 * that mixes the patch and the background may mislead the fine search), and the background's
 * away from it stay at (0, 0). */
static void test_moving_patch(void)
{
  const int bh = H / BLOCK_MATCH_SIZE, bw = W / BLOCK_MATCH_SIZE, side = 24, b = BLOCK_MATCH_SIZE;
  const int px = 50, py = 40, mx = 4, my = -3, x0 = px + mx, y0 = py + my;
  uint8_t *prev = make_frame(0, 0, side, px, py), *cur = make_frame(0, 0, side, x0, y0);
  BlockVector *v = match(block_match, cur, prev);
  int inner_wrong = 0, inner = 0, edge_wrong = 0, edge = 0, still_wrong = 0, still = 0;
  for (int by = 0; by < bh; by++)
    for (int bx = 0; bx < bw; bx++) {
      int x = bx * b, y = by * b;
      gboolean inside = x >= x0 && x + b <= x0 + side && y >= y0 && y + b <= y0 + side;
      gboolean deep = x >= x0 + b && x + 2 * b <= x0 + side && y >= y0 + b &&
                      y + 2 * b <= y0 + side;
      gboolean far = x + b + 8 < x0 || x > x0 + side + 8 || y + b + 8 < y0 || y > y0 + side + 8;
      int vx = v[by * bw + bx].dx, vy = v[by * bw + bx].dy;
      gboolean moved = vx == -mx && vy == -my;
      if (deep) {
        inner++;
        inner_wrong += !moved;
      } else if (inside) {
        edge++;
        edge_wrong += !moved;
      } else if (far) {
        still++;
        still_wrong += vx != 0 || vy != 0;
      }
    }
  g_test_message("patch: %d of %d inner blocks wrong, %d of %d at its edges; background: %d of "
                 "%d", inner_wrong, inner, edge_wrong, edge, still_wrong, still);
  g_assert_cmpint(inner, >=, 9);
  g_assert_cmpint(inner_wrong, ==, 0);
  g_assert_cmpint(edge_wrong, <=, edge / 3);
  g_assert_cmpint(still_wrong, ==, 0);
  g_free(v);
  g_free(prev);
  g_free(cur);
}

/* A flat frame matches at every shift: the cost of shifting keeps every block still. */
static void test_flat_stays_still(void)
{
  uint8_t *a = g_malloc(block_frame_bytes(H, W)), *b = g_malloc(block_frame_bytes(H, W));
  memset(a, 90, block_frame_bytes(H, W));
  memset(b, 90, block_frame_bytes(H, W));
  BlockVector *v = match(block_match, a, b);
  for (int i = 0; i < (H / BLOCK_MATCH_SIZE) * (W / BLOCK_MATCH_SIZE); i++) {
    g_assert_cmpint(v[i].dx, ==, 0);
    g_assert_cmpint(v[i].dy, ==, 0);
    g_assert_cmpint(v[i].sad, ==, 0);
  }
  g_free(v);
  g_free(a);
  g_free(b);
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/block_match/shifts/coarse_to_fine", test_shifts_coarse_to_fine);
  g_test_add_func("/block_match/shifts/full", test_shifts_full);
  g_test_add_func("/block_match/moving_patch", test_moving_patch);
  g_test_add_func("/block_match/flat_stays_still", test_flat_stays_still);
  return g_test_run();
}
