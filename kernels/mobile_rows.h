/* mobile_rows.h: the row kernels of mobile_impl.h, written once against a small vector layer and
 * included by each ISA's file, which defines before including:
 *
 *   MOBILE_VARIANT           suffix of the functions made here (avx2, avx512)
 *   MOBILE_TABLE             the name of the MobileKernels table made here
 *   VEC, VEC_LANES           the vector type and its floats
 *   VEC_MASK, vec_mask(n)    a mask of the first n lanes (0 < n <= VEC_LANES)
 *   vec_load(p), vec_store(p, v), vec_loadm(p, m) (zero elsewhere), vec_storem(p, v, m)
 *   vec_set1(f), vec_zero(), vec_add, vec_sub, vec_mul, vec_div, vec_min, vec_max, vec_abs
 *   vec_fma(a, b, c)         a * b + c
 *   VEC_CMP, vec_lt(a, b), vec_le(a, b), vec_gt(a, b), vec_both(p, q)   lane predicates
 *   vec_select(p, a, b)      p ? a : b, lane by lane; vec_keep(p, v): p ? v : 0
 *   vec_round(x)             to the nearest integer; vec_pow2(n): 2^n for integral n in range
 *   DW_TILE                  output pixels per depthwise tile (its accumulators, the 9 weights
 *                            and an input fit in the registers)
 *
 * The depthwise rows work on one vector of channels at a time, its 9 tap weights held in
 * registers for the whole row. A tile of T output pixels reads each of the (T - 1) * stride + 3
 * input columns of a tap row once and feeds every accumulator that column reaches, so at stride 1
 * a column load serves three FMAs. Pixels whose taps reach past the left or right edge (the first,
 * and the last one or two) go through a per-pixel path that skips those taps. Full channel vectors
 * use plain loads, the last partial one masked loads (the instances are separate). */

#define MOBILE_CAT_(a, b) a##__##b
#define MOBILE_CAT(a, b) MOBILE_CAT_(a, b)
#define MOBILE_FN(name) MOBILE_CAT(name, MOBILE_VARIANT)
#define MOBILE_INLINE static inline __attribute__((always_inline))

MOBILE_INLINE VEC load_lanes(const float *p, VEC_MASK m, const int full)
{
  return full ? vec_load(p) : vec_loadm(p, m);
}

MOBILE_INLINE void store_lanes(float *p, VEC v, VEC_MASK m, const int full)
{
  if (full)
    vec_store(p, v);
  else
    vec_storem(p, v, m);
}

/* ---- activations ---------------------------------------------------------------------------- */

/* exp(x) for x <= 0 (clamped at -87): Cody-Waite reduction, the Cephes polynomial, 2^n built in
 * the exponent field. */
MOBILE_INLINE VEC exp_nonpositive(VEC x)
{
  x = vec_max(x, vec_set1(-87.0f));
  VEC n = vec_round(vec_mul(x, vec_set1(1.44269504088896341f)));
  VEC r = vec_fma(n, vec_set1(-0.693359375f), x);
  r = vec_fma(n, vec_set1(2.12194440e-4f), r);
  VEC p = vec_set1(1.9875691500e-4f);
  p = vec_fma(p, r, vec_set1(1.3981999507e-3f));
  p = vec_fma(p, r, vec_set1(8.3334519073e-3f));
  p = vec_fma(p, r, vec_set1(4.1665795894e-2f));
  p = vec_fma(p, r, vec_set1(1.6666665459e-1f));
  p = vec_fma(p, r, vec_set1(5.0000001201e-1f));
  p = vec_fma(p, vec_mul(r, r), vec_add(r, vec_set1(1.0f)));
  return vec_mul(p, vec_pow2(n));
}

MOBILE_INLINE VEC relu6_lanes(VEC z)
{
  return vec_min(vec_max(z, vec_zero()), vec_set1(6.0f));
}

/* f(z), as activation_ref; f is a constant wherever the kernels call this. */
MOBILE_INLINE VEC act_forward(const Activation f, VEC z)
{
  switch (f) {
  case ACTIVATION_RELU:
    return vec_max(z, vec_zero());
  case ACTIVATION_RELU6:
    return relu6_lanes(z);
  case ACTIVATION_HSIGMOID:
    return vec_mul(relu6_lanes(vec_add(z, vec_set1(3.0f))), vec_set1(1.0f / 6.0f));
  case ACTIVATION_HSWISH:
    return vec_mul(vec_mul(z, relu6_lanes(vec_add(z, vec_set1(3.0f)))), vec_set1(1.0f / 6.0f));
  case ACTIVATION_SIGMOID: {
    /* e = exp(-|z|) never overflows: 1 / (1 + e) for z >= 0, e / (1 + e) below. */
    VEC e = exp_nonpositive(vec_sub(vec_zero(), vec_abs(z)));
    VEC r = vec_div(vec_set1(1.0f), vec_add(vec_set1(1.0f), e));
    return vec_select(vec_lt(z, vec_zero()), vec_mul(e, r), r);
  }
  default:
    return z;
  }
}

/* dy * f'(z), as activation_grad_ref (PyTorch's kinks). */
MOBILE_INLINE VEC act_backward(const Activation f, VEC z, VEC dy)
{
  switch (f) {
  case ACTIVATION_RELU:
    return vec_keep(vec_gt(z, vec_zero()), dy);
  case ACTIVATION_RELU6:
    return vec_keep(vec_both(vec_gt(z, vec_zero()), vec_lt(z, vec_set1(6.0f))), dy);
  case ACTIVATION_HSIGMOID:
    return vec_keep(vec_both(vec_gt(z, vec_set1(-3.0f)), vec_lt(z, vec_set1(3.0f))),
                    vec_mul(dy, vec_set1(1.0f / 6.0f)));
  case ACTIVATION_HSWISH: {
    VEC middle = vec_mul(dy, vec_fma(z, vec_set1(1.0f / 3.0f), vec_set1(0.5f)));
    VEC g = vec_select(vec_le(z, vec_set1(3.0f)), middle, dy);
    return vec_select(vec_lt(z, vec_set1(-3.0f)), vec_zero(), g);
  }
  case ACTIVATION_SIGMOID: {
    VEC s = act_forward(ACTIVATION_SIGMOID, z);
    return vec_mul(vec_mul(dy, vec_sub(vec_set1(1.0f), s)), s);
  }
  default:
    return dy;
  }
}

MOBILE_INLINE void activation_span(const Activation f, const float *z, float *y, size_t n)
{
  size_t i = 0;
  for (; i + VEC_LANES <= n; i += VEC_LANES)
    vec_store(y + i, act_forward(f, vec_load(z + i)));
  if (i < n) {
    VEC_MASK m = vec_mask(n - i);
    vec_storem(y + i, act_forward(f, vec_loadm(z + i, m)), m);
  }
}

MOBILE_INLINE void activation_backward_span(const Activation f, const float *z, const float *dy,
                                            float *dz, size_t n, const int accumulate)
{
  size_t i = 0;
  for (; i + VEC_LANES <= n; i += VEC_LANES) {
    VEC g = act_backward(f, vec_load(z + i), vec_load(dy + i));
    vec_store(dz + i, accumulate ? vec_add(vec_load(dz + i), g) : g);
  }
  if (i < n) {
    VEC_MASK m = vec_mask(n - i);
    VEC g = act_backward(f, vec_loadm(z + i, m), vec_loadm(dy + i, m));
    vec_storem(dz + i, accumulate ? vec_add(vec_loadm(dz + i, m), g) : g, m);
  }
}

/* One instance per activation, so that each loop has its formula inline. */
#define MOBILE_ACTIVATION_CASES(CALL)                                                             \
  switch (f) {                                                                                    \
  case ACTIVATION_RELU:                                                                           \
    CALL(ACTIVATION_RELU);                                                                        \
    break;                                                                                        \
  case ACTIVATION_RELU6:                                                                          \
    CALL(ACTIVATION_RELU6);                                                                       \
    break;                                                                                        \
  case ACTIVATION_HSIGMOID:                                                                       \
    CALL(ACTIVATION_HSIGMOID);                                                                    \
    break;                                                                                        \
  case ACTIVATION_HSWISH:                                                                         \
    CALL(ACTIVATION_HSWISH);                                                                      \
    break;                                                                                        \
  case ACTIVATION_SIGMOID:                                                                        \
    CALL(ACTIVATION_SIGMOID);                                                                     \
    break;                                                                                        \
  default:                                                                                        \
    CALL(ACTIVATION_NONE);                                                                        \
  }

static void MOBILE_FN(activation)(Activation f, const float *z, float *y, size_t n)
{
#define ACTIVATION_CALL(F) activation_span(F, z, y, n)
  MOBILE_ACTIVATION_CASES(ACTIVATION_CALL)
#undef ACTIVATION_CALL
}

static void MOBILE_FN(activation_backward)(Activation f, const float *z, const float *dy,
                                           float *dz, size_t n, int accumulate)
{
#define ACTIVATION_CALL(F)                                                                        \
  (accumulate ? activation_backward_span(F, z, dy, dz, n, 1)                                      \
              : activation_backward_span(F, z, dy, dz, n, 0))
  MOBILE_ACTIVATION_CASES(ACTIVATION_CALL)
#undef ACTIVATION_CALL
}

/* ---- per-channel spans ---------------------------------------------------------------------- */

static void MOBILE_FN(mul)(const float *x, const float *s, float *y, size_t n)
{
  for (size_t i = 0; i < n; i += VEC_LANES) {
    VEC_MASK m = vec_mask(n - i < VEC_LANES ? n - i : VEC_LANES);
    vec_storem(y + i, vec_mul(vec_loadm(x + i, m), vec_loadm(s + i, m)), m);
  }
}

static void MOBILE_FN(dot_add)(const float *x, const float *y, float *sums, size_t n)
{
  for (size_t i = 0; i < n; i += VEC_LANES) {
    VEC_MASK m = vec_mask(n - i < VEC_LANES ? n - i : VEC_LANES);
    VEC acc = vec_fma(vec_loadm(x + i, m), vec_loadm(y + i, m), vec_loadm(sums + i, m));
    vec_storem(sums + i, acc, m);
  }
}

static void MOBILE_FN(mul_into)(const float *dy, const float *s, float *dx, size_t n,
                                int accumulate)
{
  for (size_t i = 0; i < n; i += VEC_LANES) {
    VEC_MASK m = vec_mask(n - i < VEC_LANES ? n - i : VEC_LANES);
    VEC v = vec_mul(vec_loadm(dy + i, m), vec_loadm(s + i, m));
    vec_storem(dx + i, accumulate ? vec_add(vec_loadm(dx + i, m), v) : v, m);
  }
}

/* ---- depthwise 3x3: forward rows (and the stride-1 input gradient) -------------------------- */

/* A row kernel: fn(job, ch, mask, full, K) on every vector of the row's channels, the full ones
 * with plain loads, and K the constant k1 where first_form holds, else k2. */
#define DW_ROW_KERNEL(name, Job, fn, channels, first_form, k1, k2)                                \
  static void MOBILE_FN(name)(const Job *job)                                                     \
  {                                                                                               \
    const int c = channels;                                                                       \
    const VEC_MASK all = vec_mask(VEC_LANES);                                                     \
    int ch = 0;                                                                                   \
    for (; ch + VEC_LANES <= c; ch += VEC_LANES)                                                  \
      if (first_form)                                                                             \
        fn(job, ch, all, 1, k1);                                                                  \
      else                                                                                        \
        fn(job, ch, all, 1, k2);                                                                  \
    if (ch < c) {                                                                                 \
      VEC_MASK m = vec_mask(c - ch);                                                              \
      if (first_form)                                                                             \
        fn(job, ch, m, 0, k1);                                                                    \
      else                                                                                        \
        fn(job, ch, m, 0, k2);                                                                    \
    }                                                                                             \
  }

/* Output pixels [first, end) whose taps all lie inside the row: p >= 1 and p * S + 1 < in_w. */
MOBILE_INLINE int interior_end(const DwRows *r, const int S)
{
  int end = r->in_w >= 2 ? (r->in_w - 2) / S + 1 : 1;
  end = end < r->pixels ? end : r->pixels;
  return end > 1 ? end : 1;
}

MOBILE_INLINE void dw_store(const DwForwardJob *job, int ch, int p, VEC v, VEC_MASK m,
                            const int full)
{
  float *out = job->out + p * job->out_step + ch;
  if (job->z)
    store_lanes(job->z + p * job->z_step + ch, v, m, full);
  if (job->accumulate)
    v = vec_add(load_lanes(out, m, full), v);
  else
    v = act_forward(job->f, v);
  store_lanes(out, v, m, full);
}

/* The multiply-adds of pixels [p0, p0 + T), all inside the row: column j of a tap row reaches
 * pixel t at kx = j - t * S, so each column is loaded once for every pixel it reaches. Forward
 * (weights 0): vacc[t] += in * v[tap], v the weights; weight gradient (weights 1):
 * vacc[tap] += in * v[t], v the pixels' gradients. */
MOBILE_INLINE void dw_tile_taps(const DwRows *rows, int ch, int p0, const int T, const int S,
                                const int weights, const VEC *v, VEC *vacc, VEC_MASK m,
                                const int full)
{
#pragma GCC unroll 3
  for (int ky = 0; ky < 3; ky++) {
    const ptrdiff_t step = rows->in_step[ky];
    const float *in = rows->in[ky] + (p0 * S - 1) * step + ch;
#pragma GCC unroll 40
    for (int j = 0; j < (T - 1) * S + 3; j++) {
      VEC vi = load_lanes(in + j * step, m, full);
#pragma GCC unroll 16
      for (int t = 0; t < T; t++) {
        const int kx = j - t * S;
        if (kx < 0 || kx >= 3)
          continue;
        if (weights)
          vacc[ky * 3 + kx] = vec_fma(v[t], vi, vacc[ky * 3 + kx]);
        else
          vacc[t] = vec_fma(vi, v[ky * 3 + kx], vacc[t]);
      }
    }
  }
}

MOBILE_INLINE void dw_forward_tile(const DwForwardJob *job, int ch, int p0, const int T,
                                   const int S, const VEC *vw, VEC vb, VEC_MASK m, const int full)
{
  VEC vacc[DW_TILE];
#pragma GCC unroll 16
  for (int t = 0; t < T; t++)
    vacc[t] = vb;
  dw_tile_taps(&job->rows, ch, p0, T, S, 0, vw, vacc, m, full);
#pragma GCC unroll 16
  for (int t = 0; t < T; t++)
    dw_store(job, ch, p0 + t, vacc[t], m, full);
}

/* A pixel at the left or right edge: the taps outside the row are skipped. */
MOBILE_INLINE void dw_forward_edge(const DwForwardJob *job, int ch, int p, const int S,
                                   const VEC *vw, VEC vb, VEC_MASK m, const int full)
{
  VEC acc = vb;
  for (int ky = 0; ky < 3; ky++)
    for (int kx = 0; kx < 3; kx++) {
      int col = p * S - 1 + kx;
      if (col >= 0 && col < job->rows.in_w)
        acc = vec_fma(load_lanes(job->rows.in[ky] + col * job->rows.in_step[ky] + ch, m, full),
                      vw[ky * 3 + kx], acc);
    }
  dw_store(job, ch, p, acc, m, full);
}

MOBILE_INLINE void dw_forward_channels(const DwForwardJob *job, int ch, VEC_MASK m,
                                       const int full, const int S)
{
  const int c = job->rows.channels;
  VEC vw[9];
#pragma GCC unroll 9
  for (int k = 0; k < 9; k++)
    vw[k] = load_lanes(job->w + k * c + ch, m, full);
  VEC vb = job->bias ? load_lanes(job->bias + ch, m, full) : vec_zero();
  int end = interior_end(&job->rows, S), p = 1;
  dw_forward_edge(job, ch, 0, S, vw, vb, m, full);
  for (; p + DW_TILE <= end; p += DW_TILE)
    dw_forward_tile(job, ch, p, DW_TILE, S, vw, vb, m, full);
  for (; p < end; p++)
    dw_forward_tile(job, ch, p, 1, S, vw, vb, m, full);
  for (; p < job->rows.pixels; p++)
    dw_forward_edge(job, ch, p, S, vw, vb, m, full);
}

DW_ROW_KERNEL(dw_forward_row, DwForwardJob, dw_forward_channels, job->rows.channels,
              job->rows.stride == 1, 1, 2)

/* ---- depthwise 3x3: activation, bias and weight gradients of a row -------------------------- */

/* The pre-activation gradient of pixel p, written back to dy and added to the bias sum. */
MOBILE_INLINE VEC dw_gradient(const DwWeightsJob *job, int ch, int p, VEC *vsum, VEC_MASK m,
                              const int full)
{
  float *dy = job->dy + p * job->dy_step + ch;
  VEC g = load_lanes(dy, m, full);
  if (job->f != ACTIVATION_NONE) {
    g = act_backward(job->f, load_lanes(job->act + p * job->act_step + ch, m, full), g);
    store_lanes(dy, g, m, full);
  }
  *vsum = vec_add(*vsum, g);
  return g;
}

MOBILE_INLINE void dw_weights_tile(const DwWeightsJob *job, int ch, int p0, const int T,
                                   const int S, VEC *vacc, VEC_MASK m, const int full)
{
  VEC vg[DW_TILE];
#pragma GCC unroll 16
  for (int t = 0; t < T; t++)
    vg[t] = dw_gradient(job, ch, p0 + t, &vacc[9], m, full);
  dw_tile_taps(&job->rows, ch, p0, T, S, 1, vg, vacc, m, full);
}

MOBILE_INLINE void dw_weights_edge(const DwWeightsJob *job, int ch, int p, const int S,
                                   VEC *vacc, VEC_MASK m, const int full)
{
  VEC g = dw_gradient(job, ch, p, &vacc[9], m, full);
  for (int ky = 0; ky < 3; ky++)
    for (int kx = 0; kx < 3; kx++) {
      int col = p * S - 1 + kx;
      if (col >= 0 && col < job->rows.in_w)
        vacc[ky * 3 + kx] =
          vec_fma(g, load_lanes(job->rows.in[ky] + col * job->rows.in_step[ky] + ch, m, full),
                  vacc[ky * 3 + kx]);
    }
}

MOBILE_INLINE void dw_weights_channels(const DwWeightsJob *job, int ch, VEC_MASK m,
                                       const int full, const int S)
{
  const int c = job->rows.channels;
  VEC vacc[10];
#pragma GCC unroll 10
  for (int k = 0; k < 10; k++)
    vacc[k] = vec_zero();
  int end = interior_end(&job->rows, S), p = 1;
  dw_weights_edge(job, ch, 0, S, vacc, m, full);
  for (; p + DW_TILE <= end; p += DW_TILE)
    dw_weights_tile(job, ch, p, DW_TILE, S, vacc, m, full);
  for (; p < end; p++)
    dw_weights_tile(job, ch, p, 1, S, vacc, m, full);
  for (; p < job->rows.pixels; p++)
    dw_weights_edge(job, ch, p, S, vacc, m, full);
#pragma GCC unroll 10
  for (int k = 0; k < 10; k++) {
    float *partial = job->partial + k * c + ch;
    store_lanes(partial, vec_add(load_lanes(partial, m, full), vacc[k]), m, full);
  }
}

DW_ROW_KERNEL(dw_weights_row, DwWeightsJob, dw_weights_channels, job->rows.channels,
              job->rows.stride == 1, 1, 2)

/* ---- depthwise 3x3: a row of the stride-2 input gradient ------------------------------------ */

MOBILE_INLINE void dx_store(float *dx, VEC v, VEC_MASK m, const int full, int accumulate)
{
  store_lanes(dx, accumulate ? vec_add(load_lanes(dx, m, full), v) : v, m, full);
}

MOBILE_INLINE void dw_input_channels_s2(const DwInputJob *job, int ch, VEC_MASK m,
                                        const int full, const int NR)
{
  const int c = job->channels;
  VEC vw[2][3], cur[2];
  for (int r = 0; r < NR; r++) {
    for (int kx = 0; kx < 3; kx++)
      vw[r][kx] = load_lanes(job->w + (job->ky[r] * 3 + kx) * c + ch, m, full);
    cur[r] = load_lanes(job->dy[r] + ch, m, full);
  }
  for (int j = 0; j < job->dy_w; j++) {
    VEC even = vec_mul(cur[0], vw[0][1]);
    if (NR == 2)
      even = vec_fma(cur[1], vw[1][1], even);
    dx_store(job->dx + 2 * j * job->dx_step + ch, even, m, full, job->accumulate);
    if (2 * j + 1 >= job->dx_w)
      break;
    VEC odd = vec_mul(cur[0], vw[0][2]);
    if (NR == 2)
      odd = vec_fma(cur[1], vw[1][2], odd);
    if (j + 1 < job->dy_w)
      for (int r = 0; r < NR; r++) {
        cur[r] = load_lanes(job->dy[r] + (j + 1) * job->dy_step + ch, m, full);
        odd = vec_fma(cur[r], vw[r][0], odd);
      }
    dx_store(job->dx + (2 * j + 1) * job->dx_step + ch, odd, m, full, job->accumulate);
  }
}

DW_ROW_KERNEL(dw_input_row_s2, DwInputJob, dw_input_channels_s2, job->channels,
              job->n_rows == 1, 1, 2)

const MobileKernels MOBILE_TABLE = {
  .dw_forward_row = MOBILE_FN(dw_forward_row),
  .dw_weights_row = MOBILE_FN(dw_weights_row),
  .dw_input_row_s2 = MOBILE_FN(dw_input_row_s2),
  .activation = MOBILE_FN(activation),
  .activation_backward = MOBILE_FN(activation_backward),
  .mul = MOBILE_FN(mul),
  .dot_add = MOBILE_FN(dot_add),
  .mul_into = MOBILE_FN(mul_into),
};
