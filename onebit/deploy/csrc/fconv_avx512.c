/* A float convolution's output row on AVX-512 F (selected with the avx512 kernel, see fconv.c): 6 positions x
 * 64 output channels per pass in 24 accumulators, a chain of fma per output over the taps in (ky, kx, c) order
 * (r->off). */
#if defined(__x86_64__)
#pragma GCC target("avx512f")
#include <immintrin.h>

#include "onebit_kernels.h"

/* P positions from x0 by NV vectors of 16 channels from o0 */
#define OB_FCONV_BLOCK(P, NV)                                                                                  \
    do {                                                                                                       \
        __m512 acc[P][NV];                                                                                     \
        for (int p = 0; p < P; p++)                                                                            \
            for (int v = 0; v < NV; v++) acc[p][v] = _mm512_setzero_ps();                                      \
        const float* wk = r->wt + o0;                                                                          \
        const float* xs = in + (int64_t)x0 * r->sw;                                                            \
        for (int t = 0; t < r->taps; t++, wk += r->cout) {                                                     \
            const float* xk = xs + r->off[t];                                                                  \
            __m512 wv[NV];                                                                                     \
            for (int v = 0; v < NV; v++) wv[v] = _mm512_loadu_ps(wk + 16 * v);                                 \
            for (int p = 0; p < P; p++) {                                                                      \
                const __m512 xv = _mm512_set1_ps(xk[p * r->sw]);                                               \
                for (int v = 0; v < NV; v++) acc[p][v] = _mm512_fmadd_ps(xv, wv[v], acc[p][v]);                \
            }                                                                                                  \
        }                                                                                                      \
        for (int v = 0; v < NV; v++) {                                                                         \
            const __m512 a = r->affine ? _mm512_loadu_ps(r->affine + o0 + 16 * v) : _mm512_setzero_ps();       \
            const __m512 b = r->affine ? _mm512_loadu_ps(r->affine + r->cout + o0 + 16 * v) : a;               \
            for (int p = 0; p < P; p++)                                                                        \
                _mm512_storeu_ps(dst + (int64_t)(x0 + p) * ld + o0 - o_first + 16 * v,                         \
                                 r->affine ? _mm512_fmadd_ps(acc[p][v], a, b) : acc[p][v]);                    \
        }                                                                                                      \
    } while (0)

/* P positions from x0, then fewer */
#define OB_FCONV_ROW(NV)                                                          \
    do {                                                                          \
        int x0 = 0;                                                               \
        for (; x0 + 6 <= r->wo; x0 += 6) OB_FCONV_BLOCK(6, NV);                   \
        if (x0 + 3 <= r->wo) { OB_FCONV_BLOCK(3, NV); x0 += 3; }                  \
        for (; x0 < r->wo; x0++) OB_FCONV_BLOCK(1, NV);                           \
    } while (0)

void ob_fconv_row_avx512(const ob_fconv_row* r, const float* in, int o_first, int o_last, float* dst, int ld) {
    for (int o0 = o_first; o0 < o_last;) {
        if (o_last - o0 >= 64) {
            OB_FCONV_ROW(4);
            o0 += 64;
        } else {
            OB_FCONV_ROW(1);
            o0 += 16;
        }
    }
}
#endif

#if defined(__x86_64__)
#define OB_LANES(left) ((left) >= 16 ? (__mmask16)0xffff : (left) > 0 ? (__mmask16)((1u << (left)) - 1) : (__mmask16)0)

/* The input of a 1x1 convolution at `count` <= OB_1X1_POSITIONS positions from p0 of one image x [c][h][w], as a tile
 * [c][OB_1X1_POSITIONS] (64-byte aligned, lanes past count 0); with avg, of the 2x2/2 average pool of x (positions of
 * the h/2 x w/2 pooled plane), each value as PyTorch sums it: ((((0 + x00) + x01) + x10) + x11) / 4. */
void ob_fconv1x1_tile_avx512(const float* x, int c, int h, int w, int avg, int64_t p0, int count, float* tile) {
    const int64_t plane = (int64_t)h * w;
    if (!avg) {
        for (int ci = 0; ci < c; ci++)
            for (int v = 0; v < OB_1X1_POSITIONS / 16; v++)
                _mm512_store_ps(tile + ci * OB_1X1_POSITIONS + 16 * v,
                                _mm512_maskz_loadu_ps(OB_LANES(count - 16 * v), x + ci * plane + p0 + 16 * v));
        return;
    }
    for (int ci = 0; ci < c; ci++)
        for (int v = 0; v < OB_1X1_POSITIONS / 16; v++) _mm512_store_ps(tile + ci * OB_1X1_POSITIONS + 16 * v, _mm512_setzero_ps());
    const int wo = w / 2;
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512 zero = _mm512_setzero_ps(), four = _mm512_set1_ps(4.0f);
    for (int64_t p = p0; p < p0 + count;) { /* a run of pooled row oy, 16 outputs at a time */
        const int64_t oy = p / wo, ox = p % wo;
        const int len = (int)(wo - ox < p0 + count - p ? wo - ox : p0 + count - p);
        for (int k = 0; k < len; k += 16) {
            const int left = len - k;
            const __mmask16 lo = OB_LANES(2 * left), hi = OB_LANES(2 * left - 16), m = OB_LANES(left);
            const float* r0 = x + 2 * oy * w + 2 * (ox + k);
            float* dst = tile + (p - p0) + k;
            for (int ci = 0; ci < c; ci++, r0 += plane, dst += OB_1X1_POSITIONS) {
                const __m512 a0 = _mm512_maskz_loadu_ps(lo, r0), a1 = _mm512_maskz_loadu_ps(hi, r0 + 16);
                const __m512 b0 = _mm512_maskz_loadu_ps(lo, r0 + w), b1 = _mm512_maskz_loadu_ps(hi, r0 + w + 16);
                __m512 sum = _mm512_add_ps(zero, _mm512_permutex2var_ps(a0, even, a1));
                sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(a0, odd, a1));
                sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(b0, even, b1));
                sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(b0, odd, b1));
                _mm512_mask_storeu_ps(dst, m, _mm512_div_ps(sum, four));
            }
        }
        p += len;
    }
}

/* J output channels from o0 by V vectors of positions of the tile; the input channels in reduce blocks of kb, each
 * a chain of fma from 0 added to the sum of the blocks before it (kept in out) */
#define OB_FCONV1X1_BLOCK(J, V)                                                                                   \
    do {                                                                                                          \
        for (int k0 = 0; k0 < c; k0 += kb) {                                                                      \
            const int k1 = k0 + kb < c ? k0 + kb : c;                                                             \
            __m512 acc[J][V];                                                                                     \
            for (int j = 0; j < J; j++)                                                                           \
                for (int v = 0; v < V; v++) acc[j][v] = _mm512_setzero_ps();                                      \
            const float* xs = tile + k0 * OB_1X1_POSITIONS;                                                       \
            const float* wk = wt + (int64_t)o0 * c + k0;                                                          \
            for (int ci = k0; ci < k1; ci++, xs += OB_1X1_POSITIONS, wk++) {                                      \
                __m512 xv[V];                                                                                     \
                for (int v = 0; v < V; v++) xv[v] = _mm512_load_ps(xs + 16 * v);                                  \
                for (int j = 0; j < J; j++) {                                                                     \
                    const __m512 wv = _mm512_set1_ps(wk[(int64_t)j * c]);                                         \
                    for (int v = 0; v < V; v++) acc[j][v] = _mm512_fmadd_ps(xv[v], wv, acc[j][v]);                \
                }                                                                                                 \
            }                                                                                                     \
            for (int j = 0; j < J; j++) {                                                                         \
                float* o = out + (int64_t)(o0 + j) * plane_out;                                                   \
                const __m512 a = _mm512_set1_ps(affine ? affine[o0 + j] : 1.0f);                                  \
                const __m512 b = _mm512_set1_ps(affine ? affine[cout + o0 + j] : 0.0f);                           \
                for (int v = 0; v < V; v++) {                                                                     \
                    const __mmask16 m = OB_LANES(count - 16 * v);                                                 \
                    __m512 sum = acc[j][v];                                                                       \
                    if (k0) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(m, o + 16 * v));                       \
                    if (affine && k1 == c) sum = _mm512_fmadd_ps(sum, a, b);                                      \
                    _mm512_mask_storeu_ps(o + 16 * v, m, sum);                                                    \
                }                                                                                                 \
            }                                                                                                     \
        }                                                                                                         \
    } while (0)

#define OB_FCONV1X1_CHANNELS(V)                                        \
    do {                                                               \
        int o0 = o_first;                                              \
        for (; o0 + 12 <= o_last; o0 += 12) OB_FCONV1X1_BLOCK(12, V);  \
        for (; o0 + 4 <= o_last; o0 += 4) OB_FCONV1X1_BLOCK(4, V);     \
        for (; o0 < o_last; o0++) OB_FCONV1X1_BLOCK(1, V);             \
    } while (0)

/* The output channels [o_first, o_last) of a 1x1 convolution at the `count` <= OB_1X1_POSITIONS positions of a tile
 * (ob_fconv1x1_tile_avx512): out [cout][plane_out] (NCHW planes, at the tile's first position), weights [cout][c];
 * each output the sum, in order, of chains of fma over reduce blocks of kb >= 1 input channels (one chain if
 * kb >= c), then fma(v, alpha, beta) with affine [2][cout] if given. */
void ob_fconv1x1_avx512(const float* tile, int c, int kb, const float* wt, int cout, const float* affine, int count,
                        int o_first, int o_last, float* out, int64_t plane_out) {
    if (count > 16)
        OB_FCONV1X1_CHANNELS(2);
    else
        OB_FCONV1X1_CHANNELS(1);
}
#endif

#if defined(__x86_64__)
/* Max pooling of one output row of a float convolution's NHWC rows into NCHW, as float_ops.h's
 * max_pool_row_nhwc with every sign +1: rows[0..n) the window's input rows (w positions x c channels, c % 16 == 0),
 * each window's maximum in PyTorch's order (row by row, NaN propagating), acc: wo * c floats;
 * out[ch * plane + ox], ox < wo. */
void ob_max_pool_row_nhwc_avx512(const float* const* rows, int n, int w, int c, int kw, int sw, int pw, int wo,
                                 float* acc, float* out, int64_t plane) {
    for (int ox = 0; ox < wo; ox++) {
        const int x0 = ox * sw - pw > 0 ? ox * sw - pw : 0, x1 = ox * sw - pw + kw < w ? ox * sw - pw + kw : w;
        for (int ch = 0; ch < c; ch += 16) {
            __m512 m = _mm512_loadu_ps(rows[0] + (int64_t)x0 * c + ch);
            for (int k = 0; k < n; k++)
                for (int ix = k ? x0 : x0 + 1; ix < x1; ix++) {
                    const __m512 a = _mm512_loadu_ps(rows[k] + (int64_t)ix * c + ch);
                    /* a > m || a != a ? a : m (vmaxps(a, m) gives m where a is NaN) */
                    m = _mm512_mask_mov_ps(_mm512_max_ps(a, m), _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), a);
                }
            _mm512_storeu_ps(acc + (int64_t)ox * c + ch, m);
        }
    }
    const __m512i column = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                              _mm512_set1_epi32(c));
    for (int ox = 0; ox < wo; ox += 16) { /* the transposition, 16 positions of one channel per gather */
        const __mmask16 m = OB_LANES(wo - ox);
        for (int ch = 0; ch < c; ch++)
            _mm512_mask_storeu_ps(out + ch * plane + ox, m,
                                  _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, column, acc + (int64_t)ox * c + ch, 4));
    }
}
#endif
