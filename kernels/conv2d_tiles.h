/* conv2d_tiles.h: the register-tiled row kernels of conv2d_impl.h, written once against a small
 * vector layer and included by each ISA's file, which defines before including:
 *
 *   CONV_VARIANT            suffix of the functions made here (zmm, ymm, ...)
 *   VEC, VEC_LANES          the vector type and its floats
 *   VEC_MASK, vec_mask(n)   a mask of the first n lanes (0 < n <= VEC_LANES)
 *   vec_load(p)             aligned-or-not full load (packed weights, dw)
 *   vec_loadm(p, m), vec_storem(p, v, m)   masked load (zero elsewhere) / store
 *   vec_zero(), vec_store(p, v), vec_bcast(p), vec_fma(a, b, c) = a * b + c, vec_add(a, b), vec_relu(a)
 *   vec_relu_grad(d, y)     d where y > 0, else 0 (NaN y gives 0)
 *   TILE_NV1, TILE_NV2      output pixels per tile with 1 and 2 vectors of channels
 *   CASES_NV1, CASES_NV2    CONV_CASES_<TILE> lists of those tile sizes
 *   ROWS_NV1, ROWS_NV2, ROW_CASES_NV1, ROW_CASES_NV2   the same for the weight gradient
 *   CONV_TILES_NO_BIAS      (optional) no bias_row: the forward and weight-gradient rows only,
 *                           whose vec_fma may then be another multiply-add, such as a bfloat16
 *                           pair dot product
 *
 * Forward tile: T output pixels x NV vectors of output channels held in T * NV accumulators; per
 * input channel of a tap, NV weight loads and T broadcasts feed T * NV FMAs. Weight-gradient tile:
 * R rows (input channel of a tap) x NV vectors, accumulated over the pixels of a row. Every tile
 * size is its own unrolled instance; a row is cut into tiles of balanced sizes. */

#ifndef CONV_CASES_6
#define CONV_CASES_6(F) F(1) F(2) F(3) F(4) F(5) F(6)
#define CONV_CASES_12(F) CONV_CASES_6(F) F(7) F(8) F(9) F(10) F(11) F(12)
#define CONV_CASES_24(F)                                                                          \
  CONV_CASES_12(F) F(13) F(14) F(15) F(16) F(17) F(18) F(19) F(20) F(21) F(22) F(23) F(24)
#define CONV_CAT_(a, b) a##__##b
#define CONV_CAT(a, b) CONV_CAT_(a, b)
#define CONV_INLINE static inline __attribute__((always_inline))
#endif

#define CONV_FN(name) CONV_CAT(name, CONV_VARIANT)

CONV_INLINE void CONV_FN(forward_tile)(const ConvRowJob *job, int p0, const int T, const int NV,
                                       VEC_MASK tail)
{
  const ptrdiff_t step = job->in_step;
  VEC vacc[24][2];

#pragma GCC unroll 24
  for (int t = 0; t < T; t++)
    for (int v = 0; v < NV; v++)
      vacc[t][v] = vec_load(job->bias + v * VEC_LANES);

  for (int k = 0; k < job->n_taps; k++) {
    const float *in = job->in[k] + p0 * step;
    const float *w = job->w[k];
    for (int ci = 0; ci < job->cin; ci++, in++, w += job->w_step) {
      VEC vw0 = vec_load(w);
      VEC vw1 = NV == 2 ? vec_load(w + VEC_LANES) : vw0;
#pragma GCC unroll 24
      for (int t = 0; t < T; t++) {
        VEC vi = vec_bcast(in + t * step);
        vacc[t][0] = vec_fma(vi, vw0, vacc[t][0]);
        if (NV == 2)
          vacc[t][1] = vec_fma(vi, vw1, vacc[t][1]);
      }
    }
  }

  const VEC_MASK full = vec_mask(VEC_LANES);
#pragma GCC unroll 24
  for (int t = 0; t < T; t++) {
    float *out = job->out + (p0 + t) * job->out_step;
    for (int v = 0; v < NV; v++) {
      VEC_MASK m = v == NV - 1 ? tail : full;
      VEC va = vacc[t][v];
      if (job->residual)
        va = vec_add(va, vec_loadm(job->residual + (p0 + t) * job->residual_step + v * VEC_LANES,
                                   m));
      if (job->relu)
        va = vec_relu(va);
      vec_storem(out + v * VEC_LANES, va, m);
    }
  }
}

static void CONV_FN(forward_row)(const ConvRowJob *job)
{
  const int nv = job->block_width / VEC_LANES;
  const int tile = nv == 2 ? TILE_NV2 : TILE_NV1;
  const VEC_MASK tail = vec_mask(job->channels - (nv - 1) * VEC_LANES);
  const int n_tiles = (job->pixels + tile - 1) / tile;
  int p = 0;
  for (int i = 0; i < n_tiles; i++) {
    int left = n_tiles - i;
    int t = (job->pixels - p + left - 1) / left;
#define FORWARD_NV1(T)                                                                            \
  case T:                                                                                         \
    CONV_FN(forward_tile)(job, p, T, 1, tail);                                                    \
    break;
#define FORWARD_NV2(T)                                                                            \
  case T:                                                                                         \
    CONV_FN(forward_tile)(job, p, T, 2, tail);                                                    \
    break;
    if (nv == 2)
      switch (t) { CASES_NV2(FORWARD_NV2) }
    else
      switch (t) { CASES_NV1(FORWARD_NV1) }
#undef FORWARD_NV1
#undef FORWARD_NV2
    p += t;
  }
}

/* Few accumulators would leave the FMA latency exposed: such tiles keep a second set for odd
 * pixels. */
CONV_INLINE void CONV_FN(weights_tile)(const ConvWeightsJob *job, int k0, const int R,
                                       const int NV, VEC_MASK tail)
{
  const int bw = NV * VEC_LANES;
  const int split = R * NV <= 4;
  const VEC_MASK full = vec_mask(VEC_LANES);
  const VEC_MASK m0 = NV == 1 ? tail : full;
  const float *in = job->in + k0;
  const float *dy = job->dy;
  float *dw = job->dw + k0 * bw;
  VEC vacc[24][2], vodd[24][2];

#pragma GCC unroll 24
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) {
      vacc[r][v] = vec_load(dw + r * bw + v * VEC_LANES);
      if (split)
        vodd[r][v] = vec_zero();
    }

  int p = 0;
  if (split)
    for (; p + 1 < job->pixels; p += 2, in += 2 * job->in_step, dy += 2 * job->dy_step) {
      VEC vd0 = vec_loadm(dy, m0), vd1 = NV == 2 ? vec_loadm(dy + VEC_LANES, tail) : vd0;
      VEC ve0 = vec_loadm(dy + job->dy_step, m0);
      VEC ve1 = NV == 2 ? vec_loadm(dy + job->dy_step + VEC_LANES, tail) : ve0;
#pragma GCC unroll 4
      for (int r = 0; r < R; r++) {
        VEC vi = vec_bcast(in + r), vj = vec_bcast(in + job->in_step + r);
        vacc[r][0] = vec_fma(vi, vd0, vacc[r][0]);
        vodd[r][0] = vec_fma(vj, ve0, vodd[r][0]);
        if (NV == 2) {
          vacc[r][1] = vec_fma(vi, vd1, vacc[r][1]);
          vodd[r][1] = vec_fma(vj, ve1, vodd[r][1]);
        }
      }
    }
  for (; p < job->pixels; p++, in += job->in_step, dy += job->dy_step) {
    VEC vd0 = vec_loadm(dy, m0), vd1 = NV == 2 ? vec_loadm(dy + VEC_LANES, tail) : vd0;
#pragma GCC unroll 24
    for (int r = 0; r < R; r++) {
      VEC vi = vec_bcast(in + r);
      vacc[r][0] = vec_fma(vi, vd0, vacc[r][0]);
      if (NV == 2)
        vacc[r][1] = vec_fma(vi, vd1, vacc[r][1]);
    }
  }

#pragma GCC unroll 24
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++)
      vec_store(dw + r * bw + v * VEC_LANES,
                split ? vec_add(vacc[r][v], vodd[r][v]) : vacc[r][v]);
}

static void CONV_FN(weights_row)(const ConvWeightsJob *job)
{
  const int nv = job->block_width / VEC_LANES;
  const int tile = nv == 2 ? ROWS_NV2 : ROWS_NV1;
  const VEC_MASK tail = vec_mask(job->channels - (nv - 1) * VEC_LANES);
  const int n_tiles = (job->rows + tile - 1) / tile;
  int k = 0;
  for (int i = 0; i < n_tiles; i++) {
    int left = n_tiles - i;
    int r = (job->rows - k + left - 1) / left;
#define WEIGHTS_NV1(R)                                                                            \
  case R:                                                                                         \
    CONV_FN(weights_tile)(job, k, R, 1, tail);                                                    \
    break;
#define WEIGHTS_NV2(R)                                                                            \
  case R:                                                                                         \
    CONV_FN(weights_tile)(job, k, R, 2, tail);                                                    \
    break;
    if (nv == 2)
      switch (r) { ROW_CASES_NV2(WEIGHTS_NV2) }
    else
      switch (r) { ROW_CASES_NV1(WEIGHTS_NV1) }
#undef WEIGHTS_NV1
#undef WEIGHTS_NV2
    k += r;
  }
}

#ifndef CONV_TILES_NO_BIAS
/* Channels c0 onwards, NV vectors of them (the last one masked by tail), summed over the pixels
 * in registers. */
CONV_INLINE void CONV_FN(bias_chunk)(const ConvBiasJob *job, int c0, const int NV, VEC_MASK tail)
{
  const VEC_MASK full = vec_mask(VEC_LANES);
  VEC vsum[4];
#pragma GCC unroll 4
  for (int v = 0; v < NV; v++)
    vsum[v] = vec_zero();
  for (int p = 0; p < job->pixels; p++) {
    float *dy = job->dy + p * job->dy_step + c0;
    const float *y = job->y ? job->y + p * job->y_step + c0 : NULL;
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
      VEC_MASK m = v == NV - 1 ? tail : full;
      VEC vd = vec_loadm(dy + v * VEC_LANES, m);
      if (y) {
        vd = vec_relu_grad(vd, vec_loadm(y + v * VEC_LANES, m));
        vec_storem(dy + v * VEC_LANES, vd, m);
      }
      vsum[v] = vec_add(vsum[v], vd);
    }
  }
  if (!job->sums)
    return;
#pragma GCC unroll 4
  for (int v = 0; v < NV; v++) {
    VEC_MASK m = v == NV - 1 ? tail : full;
    float *sums = job->sums + c0 + v * VEC_LANES;
    vec_storem(sums, vec_add(vec_loadm(sums, m), vsum[v]), m);
  }
}

static void CONV_FN(bias_row)(const ConvBiasJob *job)
{
  for (int c0 = 0; c0 < job->channels; c0 += 4 * VEC_LANES) {
    int left = job->channels - c0;
    int nv = left >= 4 * VEC_LANES ? 4 : (left + VEC_LANES - 1) / VEC_LANES;
    VEC_MASK tail = vec_mask(left - (nv - 1) * VEC_LANES < VEC_LANES ? left - (nv - 1) * VEC_LANES
                                                                      : VEC_LANES);
    switch (nv) {
    case 1:
      CONV_FN(bias_chunk)(job, c0, 1, tail);
      break;
    case 2:
      CONV_FN(bias_chunk)(job, c0, 2, tail);
      break;
    case 3:
      CONV_FN(bias_chunk)(job, c0, 3, tail);
      break;
    default:
      CONV_FN(bias_chunk)(job, c0, 4, tail);
    }
  }
}

#endif /* CONV_TILES_NO_BIAS */

#undef CONV_FN
