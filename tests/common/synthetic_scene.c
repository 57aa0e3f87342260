/* synthetic_scene.c: see synthetic_scene.h. Coordinates are in frame heights, so objects keep
 * their shape at any aspect ratio; a pixel is sampled at its centre. */
#include "synthetic_scene.h"

#include <math.h>

#define MAX_OBJECTS 16

typedef struct {
  int cls;
  double x0, y0, vx, vy; /* start and velocity (frame heights, per frame) */
  double radius;         /* half-size */
  double phase, period;  /* texture */
  float color_a[3], color_b[3];
} SceneObject;

/* One side of the cut: background and objects. */
typedef struct {
  guint64 noise_seed;
  float bg_a[3], bg_b[3];
  SceneObject objects[MAX_OBJECTS];
  int n_objects;
} SceneAct;

struct SyntheticScene {
  SyntheticSceneConfig cfg;
  double aspect; /* width / height */
  SceneAct acts[2];
};

void synthetic_scene_config_default(SyntheticSceneConfig *cfg, int width, int height,
                                    guint64 seed)
{
  *cfg = (SyntheticSceneConfig){ .width = width, .height = height, .seed = seed,
                                 .num_classes = 3, .objects_per_class = 2 };
}

static guint32 hash3(guint64 seed, guint32 a, guint32 b)
{
  guint64 h = seed * 0x9E3779B97F4A7C15ull ^ ((guint64)a << 32 | b);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return (guint32)h;
}

static double unit(guint32 h) { return (double)h / 4294967296.0; }

/* Smooth value noise in [0, 1] at (x, y), lattice spacing 1. */
static double value_noise(guint64 seed, double x, double y)
{
  double fx = floor(x), fy = floor(y);
  guint32 ix = (guint32)(gint32)fx, iy = (guint32)(gint32)fy;
  double tx = x - fx, ty = y - fy;
  tx = tx * tx * (3 - 2 * tx);
  ty = ty * ty * (3 - 2 * ty);
  double v00 = unit(hash3(seed, ix, iy)), v10 = unit(hash3(seed, ix + 1, iy));
  double v01 = unit(hash3(seed, ix, iy + 1)), v11 = unit(hash3(seed, ix + 1, iy + 1));
  double top = v00 + tx * (v10 - v00), bottom = v01 + tx * (v11 - v01);
  return top + ty * (bottom - top);
}

static void random_color(GRand *rng, const float lo[3], const float hi[3], float out[3])
{
  for (int c = 0; c < 3; c++)
    out[c] = (float)g_rand_double_range(rng, lo[c], hi[c]);
}

static void make_act(SyntheticScene *s, SceneAct *act, guint64 seed)
{
  GRand *rng = g_rand_new_with_seed((guint32)(seed ^ (seed >> 32)));
  act->noise_seed = seed * 31 + 7;
  static const float earth_lo[3] = { 60, 70, 40 }, earth_hi[3] = { 150, 150, 110 };
  random_color(rng, earth_lo, earth_hi, act->bg_a);
  random_color(rng, earth_lo, earth_hi, act->bg_b);
  /* Warm stripes for class 1, cool checks for class 2. */
  static const float warm_lo[3] = { 170, 40, 20 }, warm_hi[3] = { 250, 140, 70 };
  static const float pale_lo[3] = { 200, 180, 90 }, pale_hi[3] = { 255, 240, 160 };
  static const float cool_lo[3] = { 20, 50, 140 }, cool_hi[3] = { 80, 120, 230 };
  static const float light_lo[3] = { 190, 200, 210 }, light_hi[3] = { 240, 245, 255 };
  act->n_objects = 0;
  for (int cls = 1; cls < s->cfg.num_classes; cls++)
    for (int i = 0; i < s->cfg.objects_per_class && act->n_objects < MAX_OBJECTS; i++) {
      SceneObject *o = &act->objects[act->n_objects++];
      o->cls = cls;
      o->radius = g_rand_double_range(rng, 0.09, 0.16);
      o->x0 = g_rand_double_range(rng, 0, s->aspect);
      o->y0 = g_rand_double_range(rng, 0, 1);
      double speed = g_rand_double_range(rng, 0.004, 0.012), angle = g_rand_double_range(rng, 0, 2 * G_PI);
      o->vx = speed * cos(angle);
      o->vy = speed * sin(angle);
      o->phase = g_rand_double_range(rng, 0, 1);
      o->period = g_rand_double_range(rng, 0.03, 0.05);
      random_color(rng, cls == 1 ? warm_lo : cool_lo, cls == 1 ? warm_hi : cool_hi, o->color_a);
      random_color(rng, cls == 1 ? pale_lo : light_lo, cls == 1 ? pale_hi : light_hi, o->color_b);
    }
  g_rand_free(rng);
}

SyntheticScene *synthetic_scene_new(const SyntheticSceneConfig *cfg)
{
  g_return_val_if_fail(cfg->num_classes == 2 || cfg->num_classes == 3, NULL);
  SyntheticScene *s = g_new0(SyntheticScene, 1);
  s->cfg = *cfg;
  s->aspect = (double)cfg->width / cfg->height;
  make_act(s, &s->acts[0], cfg->seed);
  make_act(s, &s->acts[1], cfg->seed + 0x5EED);
  return s;
}

void synthetic_scene_free(SyntheticScene *s) { g_free(s); }

static const SceneAct *act_of(const SyntheticScene *s, guint64 frame)
{
  return &s->acts[s->cfg.cut_frame && frame >= s->cfg.cut_frame];
}

/* Bounces p moving from p0 at v inside [lo, hi]. */
static double bounce(double p0, double v, double t, double lo, double hi)
{
  double span = hi - lo, p = fmod(p0 - lo + v * t, 2 * span);
  if (p < 0)
    p += 2 * span;
  return lo + (p < span ? p : 2 * span - p);
}

typedef struct {
  const SceneObject *o;
  double cx, cy;
} Placed;

static int place_objects(const SyntheticScene *s, guint64 frame, Placed *placed)
{
  const SceneAct *act = act_of(s, frame);
  double t = (double)frame;
  gboolean absent = frame >= s->cfg.absent_from && frame < s->cfg.absent_to;
  int n = 0;
  for (int i = 0; i < act->n_objects; i++) {
    const SceneObject *o = &act->objects[i];
    if (absent && o->cls == 2)
      continue;
    placed[n].o = o;
    placed[n].cx = bounce(o->x0, o->vx, t, o->radius * 0.5, s->aspect - o->radius * 0.5);
    placed[n].cy = bounce(o->y0, o->vy, t, o->radius * 0.5, 1 - o->radius * 0.5);
    n++;
  }
  return n;
}

/* The topmost object covering (x, y), or NULL; its local coordinates in u, v. */
static const SceneObject *hit(const Placed *placed, int n, double x, double y, double *u,
                              double *v)
{
  for (int i = n - 1; i >= 0; i--) {
    const SceneObject *o = placed[i].o;
    double dx = x - placed[i].cx, dy = y - placed[i].cy;
    gboolean inside = o->cls == 1 ? dx * dx + dy * dy < o->radius * o->radius
                                  : fabs(dx) < o->radius && fabs(dy) < o->radius;
    if (inside) {
      *u = dx;
      *v = dy;
      return o;
    }
  }
  return NULL;
}

static void object_color(const SceneObject *o, double u, double v, float out[3])
{
  gboolean a;
  if (o->cls == 1) {
    a = fmod((u + v) / o->period + o->phase + 1000.0, 1.0) < 0.5;
  } else {
    int i = (int)floor(u / o->period + 1000.0), j = (int)floor(v / o->period + 1000.0);
    a = ((i + j) & 1) == 0;
  }
  for (int c = 0; c < 3; c++)
    out[c] = a ? o->color_a[c] : o->color_b[c];
}

static void background_color(const SyntheticScene *s, const SceneAct *act, guint64 frame,
                             double x, double y, float out[3])
{
  double xs = x + s->cfg.pan * s->aspect * (double)frame / 100.0;
  double n = 0.65 * value_noise(act->noise_seed, xs * 6, y * 6) +
             0.35 * value_noise(act->noise_seed + 1, xs * 20, y * 20);
  for (int c = 0; c < 3; c++)
    out[c] = (float)(act->bg_a[c] + n * (act->bg_b[c] - act->bg_a[c]));
}

void synthetic_scene_render(const SyntheticScene *s, guint64 frame, uint8_t *rgb)
{
  Placed placed[MAX_OBJECTS];
  int n = place_objects(s, frame, placed);
  const SceneAct *act = act_of(s, frame);
  int w = s->cfg.width, h = s->cfg.height;
  for (int py = 0; py < h; py++)
    for (int px = 0; px < w; px++) {
      double x = (px + 0.5) / h, y = (py + 0.5) / h, u, v;
      float color[3];
      const SceneObject *o = hit(placed, n, x, y, &u, &v);
      if (o)
        object_color(o, u, v, color);
      else
        background_color(s, act, frame, x, y, color);
      guint32 noise = hash3(s->cfg.seed ^ frame, (guint32)px, (guint32)py);
      uint8_t *out = rgb + ((size_t)py * w + px) * 3;
      for (int c = 0; c < 3; c++) {
        float value = color[c] + (float)((noise >> (8 * c)) & 15) - 7.5f;
        out[c] = (uint8_t)CLAMP(value + 0.5f, 0.0f, 255.0f);
      }
    }
}

void synthetic_scene_labels(const SyntheticScene *s, guint64 frame, int width, int height,
                            uint8_t *labels)
{
  Placed placed[MAX_OBJECTS];
  int n = place_objects(s, frame, placed);
  for (int py = 0; py < height; py++)
    for (int px = 0; px < width; px++) {
      double x = (px + 0.5) / width * s->aspect, y = (py + 0.5) / height, u, v;
      const SceneObject *o = hit(placed, n, x, y, &u, &v);
      labels[(size_t)py * width + px] = o ? (uint8_t)o->cls : 0;
    }
}
