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
#define OB_MASK(v) ((v) == 0 ? m0 : (v) == 1 ? m1 : (v) == 2 ? m2 : m3)

/* J output channels from o0 by V vectors of 16 positions from p0 (lanes past `count` masked); the input channels in
 * reduce blocks of kb, each a chain of fma from 0 added to the sum of the blocks before it (kept in out) */
#define OB_FCONV1X1_BLOCK(J, V)                                                                               \
    do {                                                                                                      \
        for (int k0 = 0; k0 < c; k0 += kb) {                                                                  \
            const int k1 = k0 + kb < c ? k0 + kb : c;                                                         \
            __m512 acc[J][V];                                                                                 \
            for (int j = 0; j < J; j++)                                                                       \
                for (int v = 0; v < V; v++) acc[j][v] = _mm512_setzero_ps();                                  \
            const float* xs = x + p0 + (int64_t)k0 * plane_in;                                                \
            const float* wk = wt + (int64_t)o0 * c + k0;                                                      \
            for (int ci = k0; ci < k1; ci++, xs += plane_in, wk++) {                                          \
                __m512 xv[V];                                                                                 \
                for (int v = 0; v < V; v++) xv[v] = _mm512_maskz_loadu_ps(OB_MASK(v), xs + 16 * v);           \
                for (int j = 0; j < J; j++) {                                                                 \
                    const __m512 wv = _mm512_set1_ps(wk[(int64_t)j * c]);                                     \
                    for (int v = 0; v < V; v++) acc[j][v] = _mm512_fmadd_ps(xv[v], wv, acc[j][v]);            \
                }                                                                                             \
            }                                                                                                 \
            for (int j = 0; j < J; j++) {                                                                     \
                float* o = out + (int64_t)(o0 + j) * plane_out + p0;                                          \
                const __m512 a = _mm512_set1_ps(affine ? affine[o0 + j] : 1.0f);                              \
                const __m512 b = _mm512_set1_ps(affine ? affine[cout + o0 + j] : 0.0f);                       \
                for (int v = 0; v < V; v++) {                                                                 \
                    __m512 sum = acc[j][v];                                                                   \
                    if (k0) sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(OB_MASK(v), o + 16 * v));          \
                    if (affine && k1 == c) sum = _mm512_fmadd_ps(sum, a, b);                                  \
                    _mm512_mask_storeu_ps(o + 16 * v, OB_MASK(v), sum);                                       \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
    } while (0)

#define OB_FCONV1X1_CHANNELS(V)                                        \
    do {                                                               \
        int o0 = o_first;                                              \
        for (; o0 + 6 <= o_last; o0 += 6) OB_FCONV1X1_BLOCK(6, V);     \
        for (; o0 < o_last; o0++) OB_FCONV1X1_BLOCK(1, V);             \
    } while (0)

/* A 1x1 convolution (stride 1, no padding) of one image on positions [p0, p0 + count), count <= 64, output
 * channels [o_first, o_last): x [c][plane_in] -> out [cout][plane_out] (NCHW planes), weights [cout][c]; each
 * output the sum, in order, of chains of fma over reduce blocks of kb >= 1 input channels (one chain if kb >= c),
 * then fma(v, alpha, beta) with affine [2][cout] if given. */
void ob_fconv1x1_avx512(const float* x, int64_t plane_in, int c, int kb, const float* wt, int cout, const float* affine,
                        int64_t p0, int count, int o_first, int o_last, float* out, int64_t plane_out) {
#define OB_LANES(left) ((left) >= 16 ? (__mmask16)0xffff : (left) > 0 ? (__mmask16)((1u << (left)) - 1) : (__mmask16)0)
    const __mmask16 m0 = OB_LANES(count), m1 = OB_LANES(count - 16), m2 = OB_LANES(count - 32), m3 = OB_LANES(count - 48);
    switch ((count + 15) / 16) {
        case 1: OB_FCONV1X1_CHANNELS(1); break;
        case 2: OB_FCONV1X1_CHANNELS(2); break;
        case 3: OB_FCONV1X1_CHANNELS(3); break;
        default: OB_FCONV1X1_CHANNELS(4); break;
    }
}
#endif
