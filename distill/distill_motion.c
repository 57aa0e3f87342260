/* distill_motion.c: the scene's motion from frame to frame, and the teacher's last answer carried
 * along it (distill.h, DistillMotion).
 *
 * An answer comes some frames after the frame it is of, and is held for the stride after: on a
 * busy scene it is soon out of place (people walk a body's width in a second). Block vectors
 * between consecutive grey frames, composed from the answer's frame to the newest one, move
 * each pixel of the answer to where its content went, at about 1 ms a frame. A frame held back
 * until a later answer came takes that one, carried back along vectors matched the other way. */
#include <math.h>
#include <string.h>

#include "block_match.h"
#include "distill_private.h"

void distill_motion_init(DistillMotion *m)
{
  memset(m, 0, sizeof *m);
}

void distill_motion_clear(DistillMotion *m)
{
  g_free(m->grey[0]);
  g_free(m->grey[1]);
  g_free(m->vectors);
  g_free(m->scratch);
  g_free(m->map);
  g_free(m->next);
  distill_motion_init(m);
}

/* grey = the mean of R, G and B over factor x factor cells of the input, 0-255. */
static void grey_frame(const FeatureMap *input, int factor, uint8_t *frame, int h, int w)
{
  uint8_t *origin = block_frame_origin(frame, w);
  const float scale = 255.0f / (float)(3 * factor * factor);
  const int cell = factor * input->ld;
  for (int y = 0; y < h; y++) {
    uint8_t *row = origin + (size_t)y * block_frame_stride(w);
    for (int x = 0; x < w; x++) {
      float sum = 0.0f;
      for (int j = 0; j < factor; j++) {
        const float *p = feature_map_at(input, y * factor + j, x * factor);
        for (int i = 0; i < cell; i += input->ld)
          sum += p[i] + p[i + 1] + p[i + 2];
      }
      /* The input is RGB / 255 - 0.5. */
      float v = sum * scale + 128.0f;
      row[x] = (uint8_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
    }
  }
  block_frame_pad(frame, h, w);
}

static BlockVector *vectors_of(DistillMotion *m, guint64 frame)
{
  return m->vectors + (frame % DISTILL_MOTION_HISTORY) * m->vectors_capacity;
}

/* The other way: where each block of frame - 1 went in frame `frame`. */
static BlockVector *back_vectors_of(DistillMotion *m, guint64 frame)
{
  return m->vectors + (DISTILL_MOTION_HISTORY + frame % DISTILL_MOTION_HISTORY) *
                          m->vectors_capacity;
}

void distill_motion_add(DistillMotion *m, const FeatureMap *input, guint64 frame)
{
  int long_side = MAX(input->w, input->h);
  int factor = MAX(1, (long_side + DISTILL_MOTION_LONG_SIDE - 1) / DISTILL_MOTION_LONG_SIDE);
  int h = input->h / factor, w = input->w / factor;
  if (h < 2 * BLOCK_MATCH_SIZE || w < 2 * BLOCK_MATCH_SIZE)
    return; /* too small to tell motion: the held answer stays where it is */
  if (h != m->h || w != m->w) {
    size_t grey = block_frame_bytes(h, w);
    size_t vectors = (size_t)(h / BLOCK_MATCH_SIZE) * (w / BLOCK_MATCH_SIZE);
    if (grey > m->grey_capacity) {
      g_free(m->grey[0]);
      g_free(m->grey[1]);
      m->grey[0] = g_malloc(grey);
      m->grey[1] = g_malloc(grey);
      m->grey_capacity = grey;
    }
    if (vectors > m->vectors_capacity) {
      g_free(m->vectors);
      m->vectors = g_new(BlockVector, vectors * DISTILL_MOTION_HISTORY * 2);
      m->vectors_capacity = vectors;
    }
    if (block_match_scratch(h, w) > m->scratch_capacity) {
      g_free(m->scratch);
      m->scratch_capacity = block_match_scratch(h, w);
      m->scratch = g_malloc(m->scratch_capacity);
    }
    memset(m->vectors_of, 0, sizeof m->vectors_of);
    m->h = h;
    m->w = w;
    m->frame_of = 0;
  }
  int cur = m->frame_of ? 1 - m->newest : m->newest;
  grey_frame(input, factor, m->grey[cur], h, w);
  if (m->frame_of && m->frame_of == frame) { /* the previous frame, at this size */
    block_match(m->grey[cur], m->grey[m->newest], h, w, vectors_of(m, frame), m->scratch);
    if (!m->one_way)
      block_match(m->grey[m->newest], m->grey[cur], h, w, back_vectors_of(m, frame),
                  m->scratch);
    m->vectors_of[frame % DISTILL_MOTION_HISTORY] = frame + 1;
  } else {
    m->vectors_of[frame % DISTILL_MOTION_HISTORY] = 0;
  }
  m->newest = cur;
  m->frame_of = frame + 1;
}

/* Position v in [0, n - 1], as the index below it and the fraction past it. */
static int clamp_split(float v, int n, float *frac)
{
  v = v < 0.0f ? 0.0f : v > (float)(n - 1) ? (float)(n - 1) : v;
  int i = (int)v;
  *frac = v - (float)i;
  return i;
}

/* A block of the map: how far its content was in the anchor (grey pixels), and the worst match
 * along the way (a block's sum of absolute differences). */
enum { MAP_DX, MAP_DY, MAP_SAD, MAP_CHANNELS };

/* A bilinear sample of the map (h x w blocks) at (x, y), clamped to its edges. */
static void sample_map(const float *map, int h, int w, float x, float y, float *out)
{
  float fx, fy;
  int x0 = clamp_split(x, w, &fx), y0 = clamp_split(y, h, &fy);
  int x1 = x0 + 1 < w ? x0 + 1 : x0, y1 = y0 + 1 < h ? y0 + 1 : y0;
  const size_t n = MAP_CHANNELS;
  for (size_t c = 0; c < n; c++) {
    float a = map[((size_t)y0 * w + x0) * n + c], b = map[((size_t)y0 * w + x1) * n + c];
    float d = map[((size_t)y1 * w + x0) * n + c], e = map[((size_t)y1 * w + x1) * n + c];
    out[c] = (a + (b - a) * fx) * (1.0f - fy) + (d + (e - d) * fx) * fy;
  }
}

/* The map is kept at the blocks' centres, in grey pixels: a grey position in block units. */
static float block_units(float grey)
{
  return (grey - 0.5f * (float)(BLOCK_MATCH_SIZE - 1)) / (float)BLOCK_MATCH_SIZE;
}

static float block_centre(int block)
{
  return (float)(block * BLOCK_MATCH_SIZE) + 0.5f * (float)(BLOCK_MATCH_SIZE - 1);
}

/* map (of frame - 1) -> next (of frame): a block of the frame came from where its vector points
 * in the frame before, and that point from where the map says; its worst match is the worse of
 * this frame's and that point's. Back, from the vectors the other way: map (of frame) -> next
 * (of frame - 1). */
static void carry_one(DistillMotion *m, const BlockVector *vectors)
{
  const int bh = m->map_h, bw = m->map_w;
  for (int by = 0; by < bh; by++)
    for (int bx = 0; bx < bw; bx++) {
      const BlockVector *v = &vectors[(size_t)by * bw + bx];
      float *out = m->next + ((size_t)by * bw + bx) * MAP_CHANNELS;
      sample_map(m->map, bh, bw, block_units(block_centre(bx) + (float)v->dx),
                 block_units(block_centre(by) + (float)v->dy), out);
      out[MAP_DX] += (float)v->dx;
      out[MAP_DY] += (float)v->dy;
      out[MAP_SAD] = MAX(out[MAP_SAD], (float)v->sad);
    }
  float *t = m->map;
  m->map = m->next;
  m->next = t;
}

const float *distill_motion_carry(DistillMotion *m, guint64 anchor, guint64 frame)
{
  const int bh = m->h / BLOCK_MATCH_SIZE, bw = m->w / BLOCK_MATCH_SIZE;
  size_t floats = (size_t)bh * bw * MAP_CHANNELS;
  if (!floats)
    return NULL;
  if (floats > m->map_capacity) {
    g_free(m->map);
    g_free(m->next);
    m->map = g_new(float, floats);
    m->next = g_new(float, floats);
    m->map_capacity = floats;
    m->anchor = 0;
  }
  if (anchor > frame) { /* back from a later answer, anew each time: a few frames at most */
    memset(m->map, 0, floats * sizeof(float));
    m->map_h = bh;
    m->map_w = bw;
    m->anchor = 0; /* the next carry forward starts again too */
    for (guint64 f = anchor; f > frame && !m->one_way; f--)
      if (m->vectors_of[f % DISTILL_MOTION_HISTORY] == f + 1)
        carry_one(m, back_vectors_of(m, f));
    return m->map;
  }
  guint64 to = MIN(frame + 1, m->frame_of); /* the map is of frame `to - 1` once carried */
  /* A frame before the one the map was carried to (a frame held back and shown late) starts
   * again from the anchor. */
  if (m->anchor != anchor + 1 || m->map_h != bh || m->map_w != bw || m->map_of > to) {
    memset(m->map, 0, floats * sizeof(float));
    m->map_h = bh;
    m->map_w = bw;
    m->anchor = anchor + 1;
    m->map_of = anchor + 1;
  }
  /* Frames past the history's reach stay still: their motion is gone. */
  if (m->frame_of > m->map_of + DISTILL_MOTION_HISTORY)
    m->map_of = m->frame_of - DISTILL_MOTION_HISTORY;
  for (guint64 f = m->map_of; f < to; f++) /* frame f (0-based) = map_of's next */
    if (m->vectors_of[f % DISTILL_MOTION_HISTORY] == f + 1)
      carry_one(m, vectors_of(m, f));
  if (to > m->map_of)
    m->map_of = to;
  return m->map;
}

void distill_motion_sample(DistillMotion *m, const uint8_t *held, int h, int w, uint8_t *out)
{
  const int bh = m->map_h, bw = m->map_w;
  const float to_grey_x = (float)m->w / (float)w, to_grey_y = (float)m->h / (float)h;
  const float to_held_x = (float)w / (float)m->w, to_held_y = (float)h / (float)m->h;
  float *row = m->next; /* the map between two rows of blocks, at a row of held */
  for (int y = 0; y < h; y++) {
    float fy;
    int y0 = clamp_split(block_units(((float)y + 0.5f) * to_grey_y - 0.5f), bh, &fy);
    const float *a = m->map + (size_t)y0 * bw * MAP_CHANNELS;
    const float *b = y0 + 1 < bh ? a + (size_t)bw * MAP_CHANNELS : a;
    for (int i = 0; i < bw * MAP_CHANNELS; i++)
      row[i] = a[i] + (b[i] - a[i]) * fy;
    float gy0 = ((float)y + 0.5f) * to_grey_y - 0.5f;
    for (int x = 0; x < w; x++) {
      float fx, gx0 = ((float)x + 0.5f) * to_grey_x - 0.5f;
      int x0 = clamp_split(block_units(gx0), bw, &fx);
      int x1 = x0 + 1 < bw ? x0 + 1 : x0;
      const float *l = row + x0 * MAP_CHANNELS, *r = row + x1 * MAP_CHANNELS;
      if (l[MAP_SAD] + (r[MAP_SAD] - l[MAP_SAD]) * fx > DISTILL_MOTION_UNSURE_SAD) {
        out[(size_t)y * w + x] = DISTILL_MOTION_UNSURE;
        continue;
      }
      float gx = gx0 + l[MAP_DX] + (r[MAP_DX] - l[MAP_DX]) * fx;
      float gy = gy0 + l[MAP_DY] + (r[MAP_DY] - l[MAP_DY]) * fx;
      /* The held pixel whose cell holds that grey position. */
      int sx = (int)((gx + 0.5f) * to_held_x), sy = (int)((gy + 0.5f) * to_held_y);
      sx = sx < 0 ? 0 : sx >= w ? w - 1 : sx;
      sy = sy < 0 ? 0 : sy >= h ? h - 1 : sy;
      out[(size_t)y * w + x] = held[(size_t)sy * w + sx];
    }
  }
}
