/* block_match.h: the motion between two grey frames, block by block.
 *
 * For each BLOCK_MATCH_SIZE x BLOCK_MATCH_SIZE block of the current frame, the shift (dx, dy),
 * both within +-BLOCK_MATCH_RADIUS, such that the previous frame at (x + dx, y + dy) looks most
 * like the current one at (x, y): the sum of absolute differences, plus a small cost per pixel
 * of shift so that flat and still blocks keep (0, 0). Coarse to fine: every shift within
 * +-BLOCK_MATCH_COARSE_RADIUS on the frames halved, then the shifts within one pixel of the
 * coarse block's, doubled: a tenth of the differences of a full search, and as good on vtest. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define BLOCK_MATCH_SIZE 4
#define BLOCK_MATCH_COARSE_RADIUS 3
#define BLOCK_MATCH_RADIUS (2 * BLOCK_MATCH_COARSE_RADIUS + 1)
/* Added to a block's sum of absolute differences per pixel of |dx| + |dy|. */
#define BLOCK_MATCH_SHIFT_COST 2

/* A grey frame as block_match reads it: h x w pixels inside a border of BLOCK_MATCH_RADIUS
 * pixels on every side that repeats the edge, rows of block_frame_stride(w) bytes. */
static inline int block_frame_stride(int w)
{
  return w + 2 * BLOCK_MATCH_RADIUS;
}

static inline size_t block_frame_bytes(int h, int w)
{
  return (size_t)(h + 2 * BLOCK_MATCH_RADIUS) * block_frame_stride(w);
}

/* Pixel (0, 0) of a frame buffer of block_frame_bytes(h, w). */
static inline uint8_t *block_frame_origin(uint8_t *frame, int w)
{
  return frame + (size_t)BLOCK_MATCH_RADIUS * block_frame_stride(w) + BLOCK_MATCH_RADIUS;
}

/* Fills the border of a frame whose h x w pixels are set, from its edge pixels. */
void block_frame_pad(uint8_t *frame, int h, int w);

typedef struct {
  int8_t dx, dy;
  uint16_t sad; /* the block's sum of absolute differences at (dx, dy): how well it matched */
} BlockVector;

/* vectors[by * (w / SIZE) + bx] = block (bx, by)'s, for the (h / SIZE) x (w / SIZE) whole
 * blocks; cur and prev are frame buffers of h x w (padded), h and w at least 2 * SIZE.
 * scratch: block_match_scratch(h, w) bytes. */
size_t block_match_scratch(int h, int w);
void block_match(const uint8_t *cur, const uint8_t *prev, int h, int w, BlockVector *vectors,
                 uint8_t *scratch);

/* The same by trying every shift within +-BLOCK_MATCH_RADIUS at full size: the reference the
 * coarse-to-fine search is measured against. */
void block_match_full(const uint8_t *cur, const uint8_t *prev, int h, int w,
                      BlockVector *vectors, uint8_t *scratch);
