/* kernels.h: CPU compute of the student, forward and backward.
 *
 * Every operation has a plain-C reference (the *_ref functions: the definition of what the
 * operation computes, and the fallback when the CPU has neither AVX2 nor AVX-512) and fast paths
 * chosen once per process from the CPU's flags (kernels_isa). The public entry points split the
 * work over a ThreadPool (NULL = the caller's thread alone).
 *
 * Layouts: activations are FeatureMaps (NHWC, see feature_map.h). Convolution weights are HWIO,
 * w[((kh * KW + kw) * cin + ci) * cout + co], contiguous; biases have cout floats. */
#pragma once

#include <stdint.h>

#include "feature_map.h"
#include "threadpool.h"

typedef enum {
  KERNELS_ISA_SCALAR = 0,
  KERNELS_ISA_AVX2 = 1,   /* AVX2 + FMA */
  KERNELS_ISA_AVX512 = 2, /* AVX-512 F, BW, DQ, VL */
} KernelsIsa;

/* The ISA in use: the best the CPU has, lowered (never raised) by the environment variable
 * DISTILL_ISA=scalar|avx2|avx512. */
KernelsIsa kernels_isa(void);
const char *kernels_isa_name(KernelsIsa isa);
/* Tests and benchmarks: force an ISA (clamped to what the CPU has); returns the one now in use. */
KernelsIsa kernels_set_isa(KernelsIsa isa);

/* ---- 2-D convolution ------------------------------------------------------------------------ */

typedef struct {
  int kh, kw;       /* kernel size */
  int stride;       /* same on both axes */
  int pad_h, pad_w; /* zero padding, the same on both sides of an axis */
  int cin, cout;
} ConvGeometry;

static inline int conv_output_size(int in, int k, int stride, int pad)
{
  return (in + 2 * pad - k) / stride + 1;
}

/* y = act(conv(x, w) + bias + residual). residual may be NULL; relu 0 or 1. y must have the
 * output size; x, residual and y may be slices (ld > c) and must not overlap. */
void conv2d_forward(const ConvGeometry *g, const FeatureMap *x, const float *w, const float *bias,
                    const FeatureMap *residual, int relu, FeatureMap *y, ThreadPool *pool);

/* dx (=, or += when accumulate) the gradient of the loss with respect to x, given dy for y
 * before the activation (the caller applies relu_backward first). */
void conv2d_backward_input(const ConvGeometry *g, const FeatureMap *dy, const float *w,
                           FeatureMap *dx, int accumulate, ThreadPool *pool);

/* dw += the weight gradient (HWIO), dbias += sum of dy over pixels (dbias may be NULL). */
void conv2d_backward_weights(const ConvGeometry *g, const FeatureMap *x, const FeatureMap *dy,
                             float *dw, float *dbias, ThreadPool *pool);

/* The whole backward pass of y = act(conv(x, w) + bias + ...) in one call: with relu_y (the
 * forward's output y, after its ReLU) not NULL, first dy *= (relu_y > 0) in place, so that dy
 * holds the pre-activation gradient afterwards; then dw += the weight gradient, dbias += the
 * bias gradient (dbias may be NULL) and, when dx is not NULL, dx (=, or += when accumulate) the
 * input gradient. Faster than the three calls apart: the ReLU and bias work rides on the weight
 * gradient's rows, and the passes share two runs of the pool. */
void conv2d_backward(const ConvGeometry *g, const FeatureMap *x, const float *w,
                     const FeatureMap *relu_y, FeatureMap *dy, float *dw, float *dbias,
                     FeatureMap *dx, int accumulate, ThreadPool *pool);

void conv2d_forward_ref(const ConvGeometry *g, const FeatureMap *x, const float *w,
                        const float *bias, const FeatureMap *residual, int relu, FeatureMap *y);
void conv2d_backward_input_ref(const ConvGeometry *g, const FeatureMap *dy, const float *w,
                               FeatureMap *dx, int accumulate);
void conv2d_backward_weights_ref(const ConvGeometry *g, const FeatureMap *x, const FeatureMap *dy,
                                 float *dw, float *dbias);

/* ---- pointwise convolution: direct kernels or OpenBLAS ------------------------------------ */

/* A pointwise convolution (1x1, stride 1, no padding) is one GEMM per pass. conv2d_forward,
 * conv2d_backward_input, conv2d_backward_weights and conv2d_backward run each pass of one either
 * with the direct kernels or as OpenBLAS sgemm calls, whichever measured faster for its shape:
 * conv2d_pointwise_uses_gemm, a fixed table of thresholds from distill-bench-blocks
 * (bench/README.md, "Pointwise convolution") rather than a measurement at run time: a pure
 * function of the pass, the shape, the ISA in use and the pool's threads, so a layer's choice,
 * and the rounding it brings, is the same on every call and every run. Other convolutions, and
 * the bfloat16 passes, always run the direct kernels. */
typedef enum {
  CONV_PASS_FORWARD,
  CONV_PASS_BACKWARD_INPUT,
  CONV_PASS_BACKWARD_WEIGHTS,
} ConvPassKind;

static inline int conv2d_is_pointwise(const ConvGeometry *g)
{
  return g->kh == 1 && g->kw == 1 && g->stride == 1 && g->pad_h == 0 && g->pad_w == 0;
}

/* 1: conv2d_* run this pass of a pointwise convolution over `pixels` output pixels as sgemm
 * calls; 0: with the direct kernels. */
int conv2d_pointwise_uses_gemm(ConvPassKind pass, int pixels, int cin, int cout, int threads);

/* Tests and benchmarks: the passes (bits 1 << ConvPassKind) that run as sgemm calls in every
 * pointwise convolution, whatever the shape, or POINTWISE_BY_RULE (the default); returns the
 * setting before. */
#define POINTWISE_BY_RULE (-1)
int conv2d_set_pointwise_gemm(int passes);

/* The passes of a pointwise convolution (g must be one) as sgemm calls, whatever the rule says:
 * the same arguments and results as conv2d_forward, conv2d_backward_input and conv2d_backward,
 * up to rounding (the bias and residual are added after the products). The pool splits the
 * pixels; OpenBLAS runs single-threaded inside each task. */
void conv1x1_gemm_forward(const ConvGeometry *g, const FeatureMap *x, const float *w,
                          const float *bias, const FeatureMap *residual, int relu, FeatureMap *y,
                          ThreadPool *pool);
void conv1x1_gemm_backward_input(const ConvGeometry *g, const FeatureMap *dy, const float *w,
                                 FeatureMap *dx, int accumulate, ThreadPool *pool);
void conv1x1_gemm_backward(const ConvGeometry *g, const FeatureMap *x, const float *w,
                           const FeatureMap *relu_y, FeatureMap *dy, float *dw, float *dbias,
                           FeatureMap *dx, int accumulate, ThreadPool *pool);

/* ---- convolution with bfloat16 products (training) ------------------------------------------
 *
 * Mixed precision as in bfloat16 training: each product's operands (x or dy, and w) are rounded
 * to bfloat16 (nearest even, denormals to zero), the sums stay fp32, as do bias, residual, ReLU
 * and the outputs. On CPUs with AVX512-BF16 (kernels_have_bf16) the products cost half as much;
 * elsewhere these run the references. Same arguments as the fp32 functions above. */
int kernels_have_bf16(void);
float bf16_round(float f);

/* bfloat16 works on pairs of channels (input gradient) and pairs of pixels (weight gradient) in
 * vectors of 16 channels: below 16 input or output channels the pairs cost more than they save,
 * and those layers' backward passes stay fp32. */
static inline int conv2d_bf16_backward_applies(const ConvGeometry *g)
{
  return g->cin >= 16 && g->cout >= 16;
}

void conv2d_forward_bf16(const ConvGeometry *g, const FeatureMap *x, const float *w,
                         const float *bias, const FeatureMap *residual, int relu, FeatureMap *y,
                         ThreadPool *pool);
/* conv2d_backward with the products of the input and weight gradients in bfloat16 where
 * conv2d_bf16_backward_applies, else exactly conv2d_backward (the bias gradient sums dy in fp32
 * either way). */
void conv2d_backward_bf16(const ConvGeometry *g, const FeatureMap *x, const float *w,
                          const FeatureMap *relu_y, FeatureMap *dy, float *dw, float *dbias,
                          FeatureMap *dx, int accumulate, ThreadPool *pool);

void conv2d_forward_bf16_ref(const ConvGeometry *g, const FeatureMap *x, const float *w,
                             const float *bias, const FeatureMap *residual, int relu,
                             FeatureMap *y);
void conv2d_backward_input_bf16_ref(const ConvGeometry *g, const FeatureMap *dy, const float *w,
                                    FeatureMap *dx, int accumulate);
void conv2d_backward_weights_bf16_ref(const ConvGeometry *g, const FeatureMap *x,
                                      const FeatureMap *dy, float *dw, float *dbias);

/* ---- element-wise --------------------------------------------------------------------------- */

/* dy *= (y > 0), in place: the gradient through a ReLU whose output was y. */
void relu_backward(const FeatureMap *y, FeatureMap *dy, ThreadPool *pool);
void relu_backward_ref(const FeatureMap *y, FeatureMap *dy);

/* dst (=, or += when accumulate) src. Same size and channels; used where gradients meet. */
void feature_map_copy(const FeatureMap *src, FeatureMap *dst, int accumulate, ThreadPool *pool);
void feature_map_copy_ref(const FeatureMap *src, FeatureMap *dst, int accumulate);

/* y = x[::2, ::2] (y has size ceil(h/2) x ceil(w/2)); backward: dx (=, or +=) scatter of dy,
 * zero elsewhere when not accumulating. */
void subsample2_forward(const FeatureMap *x, FeatureMap *y, ThreadPool *pool);
void subsample2_backward(const FeatureMap *dy, FeatureMap *dx, int accumulate, ThreadPool *pool);
void subsample2_forward_ref(const FeatureMap *x, FeatureMap *y);
void subsample2_backward_ref(const FeatureMap *dy, FeatureMap *dx, int accumulate);

/* ---- activations ---------------------------------------------------------------------------- */

/* The activations of efficient blocks (MobileNetV3, GhostNet), as PyTorch defines them. Where a
 * gradient has a kink it takes PyTorch's value: ReLU 0 at z = 0; ReLU6 0 at z = 0 and z = 6;
 * hard-sigmoid 0 at z = -3 and z = 3; hard-swish z / 3 + 1/2 on [-3, 3], ends included, so -1/2
 * at z = -3 and 3/2 at z = 3 (torch.nn.functional.hardswish's backward). Where f' is 0 the
 * gradient is 0 whatever dy holds. */
typedef enum {
  ACTIVATION_NONE = 0, /* z */
  ACTIVATION_RELU,     /* max(z, 0) */
  ACTIVATION_RELU6,    /* min(max(z, 0), 6) */
  ACTIVATION_HSIGMOID, /* relu6(z + 3) / 6 */
  ACTIVATION_HSWISH,   /* z * relu6(z + 3) / 6 */
  ACTIVATION_SIGMOID,  /* 1 / (1 + exp(-z)) */
  N_ACTIVATIONS
} Activation;

const char *activation_name(Activation f);
/* f(z), and dy * f'(z) with the kinks above: the definitions every activation kernel follows. */
float activation_ref(Activation f, float z);
float activation_grad_ref(Activation f, float z, float dy);

/* y = f(z). y may be z (in place). */
void activation_forward(Activation f, const FeatureMap *z, FeatureMap *y, ThreadPool *pool);
/* dz (=, or += when accumulate) dy * f'(z). dz may be dy (in place) when not accumulating. */
void activation_backward(Activation f, const FeatureMap *z, const FeatureMap *dy, FeatureMap *dz,
                         int accumulate, ThreadPool *pool);
void activation_forward_ref(Activation f, const FeatureMap *z, FeatureMap *y);
void activation_backward_ref(Activation f, const FeatureMap *z, const FeatureMap *dy,
                             FeatureMap *dz, int accumulate);

/* ---- depthwise 3x3 convolution ------------------------------------------------------------- */

/* Channel multiplier 1, padding 1 on every side, stride 1 or 2: output (n - 1) / stride + 1 on
 * each axis. Weights are tap-major so that a vector of channels shares a tap:
 * w[(ky * 3 + kx) * c + ch] (PyTorch's [c, 1, 3, 3] weight is w_pt[ch * 9 + ky * 3 + kx]); bias has
 * c floats. */
static inline int dwconv3x3_output_size(int in, int stride)
{
  return (in - 1) / stride + 1;
}

/* z = dwconv(x, w) + bias (bias may be NULL: 0), y = f(z) for any activation f (blocks use NONE,
 * RELU and HSWISH). z may be NULL; when not, the pre-activation is stored there as well, for the
 * backward pass of an activation whose gradient needs it. x, z and y may be slices (ld > c) and
 * must not overlap. */
void dwconv3x3_forward(const FeatureMap *x, const float *w, const float *bias, int stride,
                       Activation f, FeatureMap *z, FeatureMap *y, ThreadPool *pool);

/* The backward pass of dwconv3x3_forward in one call: first dy *= f'(act_input) in place, so that
 * dy holds the pre-activation gradient afterwards (act_input: the forward's z; with RELU its y
 * serves as well, the mask being the same; ignored, and may be NULL, with NONE); then dw += the
 * weight gradient (tap-major like w), dbias += the sum of dy over pixels (dbias may be NULL) and,
 * when dx is not NULL, dx (=, or += when accumulate) the input gradient. The rows of dy are
 * streamed once for the activation, bias and weight gradients, in row bands whose partial sums
 * are added in band order (the result does not depend on timing); the input gradient is a
 * second pass. */
void dwconv3x3_backward(const FeatureMap *x, const float *w, int stride, Activation f,
                        const FeatureMap *act_input, FeatureMap *dy, float *dw, float *dbias,
                        FeatureMap *dx, int accumulate, ThreadPool *pool);

void dwconv3x3_forward_ref(const FeatureMap *x, const float *w, const float *bias, int stride,
                           Activation f, FeatureMap *z, FeatureMap *y);
void dwconv3x3_backward_ref(const FeatureMap *x, const float *w, int stride, Activation f,
                            const FeatureMap *act_input, FeatureMap *dy, float *dw, float *dbias,
                            FeatureMap *dx, int accumulate);

/* ---- per-channel pooling and scaling (squeeze-and-excitation, LR-ASPP) --------------------- */

/* y[ch] = the mean of channel ch of x over its h x w pixels (c floats). Row bands sum into
 * partials added in band order. */
void global_avg_pool_forward(const FeatureMap *x, float *y, ThreadPool *pool);
/* dx (=, or += when accumulate) dy[ch] / (h * w) at every pixel. */
void global_avg_pool_backward(const float *dy, FeatureMap *dx, int accumulate, ThreadPool *pool);
void global_avg_pool_forward_ref(const FeatureMap *x, float *y);
void global_avg_pool_backward_ref(const float *dy, FeatureMap *dx, int accumulate);

/* y = x * s[ch] at every pixel (s has c floats). y may be x (in place). */
void channel_scale_forward(const FeatureMap *x, const float *s, FeatureMap *y, ThreadPool *pool);
/* ds[ch] += the sum over pixels of dy * x (ds may be NULL) and, when dx is not NULL, dx (=, or +=
 * when accumulate) dy * s[ch]. dx must not overlap x or dy. */
void channel_scale_backward(const FeatureMap *x, const float *s, const FeatureMap *dy,
                            FeatureMap *dx, float *ds, int accumulate, ThreadPool *pool);
void channel_scale_forward_ref(const FeatureMap *x, const float *s, FeatureMap *y);
void channel_scale_backward_ref(const FeatureMap *x, const float *s, const FeatureMap *dy,
                                FeatureMap *dx, float *ds, int accumulate);

/* ---- bilinear resizing (half-pixel centres, PyTorch align_corners=False) -------------------- */

/* The taps of every bilinear resampling of the project are bilinear.h's. */

/* y = resize(x) to y's size. */
void resize_bilinear_forward(const FeatureMap *x, FeatureMap *y, ThreadPool *pool);
/* dx (=, or += when accumulate) the gradient of the resize, given dy. */
void resize_bilinear_backward(const FeatureMap *dy, FeatureMap *dx, int accumulate,
                              ThreadPool *pool);
void resize_bilinear_forward_ref(const FeatureMap *x, FeatureMap *y);
void resize_bilinear_backward_ref(const FeatureMap *dy, FeatureMap *dx, int accumulate);

/* ---- loss ----------------------------------------------------------------------------------- */

#define LABEL_IGNORE 255

/* Softmax cross-entropy per pixel of logits (h x w x C) against labels (h*w class indices, row-
 * major; LABEL_IGNORE = pixel does not count), each pixel weighted by pixel_weight (h*w, NULL =
 * all 1). Returns sum(weight * loss) / sum(weight) over the pixels that count (0 when none
 * count) and, when dlogits is not NULL, writes its gradient (0 at pixels that do not count).
 * Labels >= C other than LABEL_IGNORE are ignored too. */
double softmax_xent(const FeatureMap *logits, const uint8_t *labels, const float *pixel_weight,
                    FeatureMap *dlogits, ThreadPool *pool);
double softmax_xent_ref(const FeatureMap *logits, const uint8_t *labels,
                        const float *pixel_weight, FeatureMap *dlogits);

/* classes[y * w + x] = argmax over channels of logits (lowest index on ties). */
void argmax_channels(const FeatureMap *logits, uint8_t *classes, ThreadPool *pool);
void argmax_channels_ref(const FeatureMap *logits, uint8_t *classes);

/* ---- class maps at another size -------------------------------------------------------------- */

/* The class of every pixel of a width x height image, from logits of another size (one channel
 * per class): the logits resized bilinearly (bilinear.h), then the most likely class, the lowest
 * on ties; with two classes, whether the resized difference logits[1] - logits[0] is > 0. Writes
 * classes[y * row_stride + x] for x < width, so that rows may go straight into a video frame; the
 * bytes between rows are left alone. Sharper than resizing a class map, and no image-sized map
 * of floats: the rows are resized in the pool's scratch. Without AVX2 it runs the same row passes
 * in plain C, not the reference, which works pixel by pixel. */
void argmax_bilinear(const FeatureMap *logits, int width, int height, uint8_t *classes,
                     size_t row_stride, ThreadPool *pool);
void argmax_bilinear_ref(const FeatureMap *logits, int width, int height, uint8_t *classes,
                         size_t row_stride);

/* ---- machine ------------------------------------------------------------------------------- */

/* Measures the fp32 FMA throughput of this machine with the ISA in use, on `threads` threads
 * at once (independent FMA chains in registers, no memory traffic), in GFLOP/s (2 per FMA). */
double kernels_measure_fma_peak(int threads, double seconds);
