/* conv2d_bf16.c: the bfloat16 rows of the convolution (AVX512-BF16), forward-style and weight
 * gradient, and the conversions of fp32 rows to the bfloat16 pairs they read (see conv2d_impl.h,
 * ConvBf16Kernels).
 *
 * vdpbf16ps multiplies 16 pairs of bfloat16 and adds both products to 16 fp32 sums: one
 * instruction does the work of two FMAs, and on current cores issues about as often, so the
 * products of a convolution cost half as much. Input channels come in pairs: a 32-bit word of
 * the input holds channels 2j (low half) and 2j + 1, a 32-bit lane of the packed weights the
 * same two channels of one output channel. The row is then conv2d_tiles.h's forward row over
 * ceil(cin / 2) "channels" of 32-bit words, with the FMA swapped for the pair dot product; the
 * sums, bias, residual and ReLU stay fp32. The weight gradient sums over pixels, so there the
 * pairs are two neighbouring pixels: a word holds the same channel of pixels 2q and 2q + 1, and
 * the row is conv2d_tiles.h's weight-gradient row over ceil(pixels / 2) "pixels". */
#include <immintrin.h>

#include "conv2d_impl.h"

#define CONV_VARIANT bf16
#define CONV_TILES_NO_BIAS
#include "conv2d_zmm.h"
#define vec_fma(a, b, c) _mm512_dpbf16_ps(c, (__m512bh)(a), (__m512bh)(b))
#include "conv2d_tiles.h"

/* Round to nearest even, as the reference (conv2d_ref.c) does; 32 floats at a time. */
static void to_bf16_pairs_row(const float *src, ptrdiff_t src_step, int pixels, int channels,
                              uint32_t *dst)
{
  int words = (channels + 1) / 2;
  for (int p = 0; p < pixels; p++, src += src_step, dst += words) {
    int c = 0;
    for (; c + 32 <= channels; c += 32) {
      __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + c + 16), _mm512_loadu_ps(src + c));
      _mm512_storeu_si512(dst + c / 2, (__m512i)v);
    }
    if (c < channels) {
      int rest = channels - c;
      __mmask16 lo = rest >= 16 ? 0xffff : (__mmask16)((1u << rest) - 1);
      __mmask16 hi = rest > 16 ? (__mmask16)((1u << (rest - 16)) - 1) : 0;
      __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + c + 16),
                                       _mm512_maskz_loadu_ps(lo, src + c));
      _mm512_mask_storeu_epi32(dst + c / 2, (__mmask16)((1u << ((rest + 1) / 2)) - 1),
                               (__m512i)v);
    }
  }
}

/* dst[i] = bfloat16 of a[i] (low half) and b[i], i < n; a or b NULL reads zeros. */
static void pair_pixels(const float *a, const float *b, int n, uint32_t *dst)
{
  /* vcvtne2ps2bf16 puts a's 16 values below b's; this interleaves them. */
  const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                         24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                         16, 0);
  for (int i = 0; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
    __m512 va = a ? _mm512_maskz_loadu_ps(m, a + i) : _mm512_setzero_ps();
    __m512 vb = b ? _mm512_maskz_loadu_ps(m, b + i) : _mm512_setzero_ps();
    __m512i v = _mm512_permutexvar_epi16(order, (__m512i)_mm512_cvtne2ps_pbh(vb, va));
    _mm512_mask_storeu_epi32(dst + i, m, v);
  }
}

const ConvBf16Kernels conv_kernels_bf16 = {
  .forward_row = forward_row__bf16,
  .weights_row = weights_row__bf16,
  .to_pairs_row = to_bf16_pairs_row,
  .pair_pixels = pair_pixels,
};
