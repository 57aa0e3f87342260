/* block_match.c: block_match.h. The full search goes shift by shift over the whole frame rather
 * than block by block: its inner loop is then a plain absolute difference of two rows into
 * 16-bit sums, which the compiler vectorises for any x86-64. */
#include <stdlib.h>
#include <string.h>

#include "block_match.h"

void block_frame_pad(uint8_t *frame, int h, int w)
{
  const int r = BLOCK_MATCH_RADIUS, stride = block_frame_stride(w);
  uint8_t *origin = block_frame_origin(frame, w);
  for (int y = 0; y < h; y++) {
    uint8_t *row = origin + (size_t)y * stride;
    memset(row - r, row[0], r);
    memset(row + w, row[w - 1], r);
  }
  for (int y = 1; y <= r; y++) {
    memcpy(origin - (size_t)y * stride - r, origin - r, stride);
    memcpy(origin + (size_t)(h - 1 + y) * stride - r, origin + (size_t)(h - 1) * stride - r,
           stride);
  }
}

static int blocks(int n)
{
  return n / BLOCK_MATCH_SIZE;
}

/* The scratch of a full search of an h x w frame: a row of sums and each block's best. */
static size_t full_scratch(int h, int w)
{
  return ((size_t)w + (size_t)blocks(h) * blocks(w)) * sizeof(uint16_t);
}

size_t block_match_scratch(int h, int w)
{
  size_t half = block_frame_bytes(h / 2, w / 2);
  return 2 * half + (size_t)blocks(h / 2) * blocks(w / 2) * sizeof(BlockVector) +
         full_scratch(h / 2, w / 2) + sizeof(BlockVector);
}

static int shift_cost(int dx, int dy)
{
  return BLOCK_MATCH_SHIFT_COST * (abs(dx) + abs(dy));
}

/* Sums over a row of blocks at one shift: acc[x] = sum over the block's rows of |cur - prev|. */
static void row_differences(const uint8_t *cur, const uint8_t *prev, int stride, int w,
                            uint16_t *restrict acc)
{
  memset(acc, 0, (size_t)w * sizeof *acc);
  for (int r = 0; r < BLOCK_MATCH_SIZE; r++) {
    const uint8_t *restrict a = cur + (size_t)r * stride;
    const uint8_t *restrict b = prev + (size_t)r * stride;
    for (int x = 0; x < w; x++) {
      int d = (int)a[x] - (int)b[x];
      acc[x] = (uint16_t)(acc[x] + (d < 0 ? -d : d));
    }
  }
}

/* Every shift within +-radius (<= BLOCK_MATCH_RADIUS), (0, 0) first: another must do strictly
 * better than standing still. */
static void full_search(const uint8_t *cur, const uint8_t *prev, int h, int w, int radius,
                        BlockVector *vectors, uint16_t *scratch)
{
  const int bh = blocks(h), bw = blocks(w), width = bw * BLOCK_MATCH_SIZE;
  const int stride = block_frame_stride(w), n = 2 * radius + 1, centre = n * n / 2;
  const uint8_t *c0 = block_frame_origin((uint8_t *)cur, w);
  const uint8_t *p0 = block_frame_origin((uint8_t *)prev, w);
  uint16_t *acc = scratch, *best = scratch + w;
  memset(vectors, 0, (size_t)bh * bw * sizeof *vectors);
  for (int i = 0; i < bh * bw; i++)
    best[i] = UINT16_MAX;
  for (int k = 0; k < n * n; k++) {
    int at = k == 0 ? centre : (k <= centre ? k - 1 : k);
    int dx = at % n - radius, dy = at / n - radius, cost = shift_cost(dx, dy);
    for (int by = 0; by < bh; by++) {
      size_t row = (size_t)by * BLOCK_MATCH_SIZE * stride;
      row_differences(c0 + row, p0 + row + (ptrdiff_t)dy * stride + dx, stride, width, acc);
      for (int bx = 0; bx < bw; bx++) {
        const uint16_t *a = acc + bx * BLOCK_MATCH_SIZE;
        int sad = cost;
        for (int i = 0; i < BLOCK_MATCH_SIZE; i++)
          sad += a[i];
        uint16_t *b = &best[by * bw + bx];
        if (sad < *b) {
          *b = (uint16_t)sad;
          vectors[by * bw + bx] = (BlockVector){ (int8_t)dx, (int8_t)dy, (uint16_t)(sad - cost) };
        }
      }
    }
  }
}

void block_match_full(const uint8_t *cur, const uint8_t *prev, int h, int w,
                      BlockVector *vectors, uint8_t *scratch)
{
  full_search(cur, prev, h, w, BLOCK_MATCH_RADIUS, vectors, (uint16_t *)scratch);
}

/* half (a frame buffer of h/2 x w/2) = the means of frame's 2x2 cells. */
static void halve(const uint8_t *frame, int h, int w, uint8_t *half)
{
  const int hh = h / 2, hw = w / 2, stride = block_frame_stride(w);
  const uint8_t *src = block_frame_origin((uint8_t *)frame, w);
  uint8_t *dst = block_frame_origin(half, hw);
  for (int y = 0; y < hh; y++) {
    const uint8_t *a = src + (size_t)(2 * y) * stride, *b = a + stride;
    uint8_t *out = dst + (size_t)y * block_frame_stride(hw);
    for (int x = 0; x < hw; x++)
      out[x] = (uint8_t)((a[2 * x] + a[2 * x + 1] + b[2 * x] + b[2 * x + 1] + 2) >> 2);
  }
  block_frame_pad(half, hh, hw);
}

static int block_sad(const uint8_t *a, const uint8_t *b, int stride)
{
  int sad = 0;
  for (int y = 0; y < BLOCK_MATCH_SIZE; y++, a += stride, b += stride)
    for (int x = 0; x < BLOCK_MATCH_SIZE; x++) {
      int d = (int)a[x] - (int)b[x];
      sad += d < 0 ? -d : d;
    }
  return sad;
}

void block_match(const uint8_t *cur, const uint8_t *prev, int h, int w, BlockVector *vectors,
                 uint8_t *scratch)
{
  const int hh = h / 2, hw = w / 2, cbh = blocks(hh), cbw = blocks(hw);
  const size_t half = block_frame_bytes(hh, hw);
  uint8_t *cur_half = scratch, *prev_half = scratch + half;
  /* The coarse vectors, then the 16-bit sums, aligned past the halved frames. */
  size_t at = (2 * half + sizeof(BlockVector) - 1) / sizeof(BlockVector) * sizeof(BlockVector);
  BlockVector *coarse = (BlockVector *)(scratch + at);
  uint16_t *sum_scratch = (uint16_t *)(coarse + (size_t)cbh * cbw);
  halve(cur, h, w, cur_half);
  halve(prev, h, w, prev_half);
  full_search(cur_half, prev_half, hh, hw, BLOCK_MATCH_COARSE_RADIUS, coarse, sum_scratch);

  const int bh = blocks(h), bw = blocks(w), stride = block_frame_stride(w);
  const uint8_t *c0 = block_frame_origin((uint8_t *)cur, w);
  const uint8_t *p0 = block_frame_origin((uint8_t *)prev, w);
  for (int by = 0; by < bh; by++)
    for (int bx = 0; bx < bw; bx++) {
      int cy = by / 2 < cbh - 1 ? by / 2 : cbh - 1;
      int cx = bx / 2 < cbw - 1 ? bx / 2 : cbw - 1;
      int gx = 2 * coarse[cy * cbw + cx].dx, gy = 2 * coarse[cy * cbw + cx].dy;
      const uint8_t *a = c0 + (size_t)by * BLOCK_MATCH_SIZE * stride + bx * BLOCK_MATCH_SIZE;
      int best = INT32_MAX, best_dx = gx, best_dy = gy, best_sad = 0;
      /* The coarse shift first, as standing still first in the full search. */
      for (int k = 0; k < 9; k++) {
        int at = k == 0 ? 4 : (k <= 4 ? k - 1 : k);
        int dx = gx + at % 3 - 1, dy = gy + at / 3 - 1;
        int sad = block_sad(a, p0 + ((ptrdiff_t)by * BLOCK_MATCH_SIZE + dy) * stride +
                                   bx * BLOCK_MATCH_SIZE + dx, stride);
        if (sad + shift_cost(dx, dy) < best) {
          best = sad + shift_cost(dx, dy);
          best_dx = dx;
          best_dy = dy;
          best_sad = sad;
        }
      }
      vectors[by * bw + bx] = (BlockVector){ (int8_t)best_dx, (int8_t)best_dy, (uint16_t)best_sad };
    }
}
