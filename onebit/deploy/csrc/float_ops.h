/* The float loops around the binary GEMM (output transform, binarization, max pooling), written
 * once and compiled per instruction set: float_ops_scalar.c (baseline) and float_ops_avx2.c
 * (AVX2 + FMA). Both give identical results: fmaf is correctly rounded everywhere and nothing
 * else is contracted (-ffp-contract=off). Define OB_SUFFIX before including. */
#include <math.h>
#include <string.h>

#include "onebit_kernels.h"

#define OB_CAT2(a, b) a##_##b
#define OB_CAT(a, b) OB_CAT2(a, b)
#define OB_NAME(f) OB_CAT(f, OB_SUFFIX)

/* dot products from xor-popcounts: d = k - 2 * count */
static void OB_NAME(dots)(const uint16_t* count, int32_t k, int n, int32_t* d) {
    for (int i = 0; i < n; i++) d[i] = k - 2 * (int32_t)count[i];
}

/* The float output of a tile: for each of nch channels (dots d[r][p]) and each row segment,
 * out = fma(d, mult, bias) (+ res) at NCHW offsets (channel r at r * hw, row y at y * wo) from
 * `out` / `res`; with t, also neg[r][p] = !(out >= t[r]) (the next layer's sign bits).
 * An instruction set may provide its own (OB_OWN_TILE_FLOAT), e.g. with masked tails. */
#ifndef OB_OWN_TILE_FLOAT
static void OB_NAME(tile_float)(const int32_t (*d)[OB_PB], int nch, const float* mult, const float* bias,
                                const float* res, float* out, int64_t hw, int64_t wo, const ob_segment* seg,
                                int nseg, const float* t, uint8_t (*neg)[OB_PB]) {
    for (int r = 0; r < nch; r++) {
        const float m = mult[r], b = bias[r];
        for (int g = 0; g < nseg; g++) {
            const int64_t at = r * hw + seg[g].y * wo + seg[g].x0;
            const int n = (int)(seg[g].x1 - seg[g].x0);
            const int32_t* dr = d[r] + seg[g].p;
            float* o = out + at;
            if (res) {
                const float* q = res + at;
                for (int i = 0; i < n; i++) o[i] = fmaf((float)dr[i], m, b) + q[i];
            } else {
                for (int i = 0; i < n; i++) o[i] = fmaf((float)dr[i], m, b);
            }
            if (t) {
                uint8_t* f = neg[r] + seg[g].p;
                const float tr = t[r];
                for (int i = 0; i < n; i++) f[i] = (uint8_t)!(o[i] >= tr);
            }
        }
    }
}
#endif

/* the next layer's sign bits from the integer dot product: neg = (d < t) != flip */
static void OB_NAME(int_flags)(const int32_t* d, int32_t t, uint8_t flip, int n, uint8_t* neg) {
    for (int i = 0; i < n; i++) neg[i] = (uint8_t)((d[i] < t) ^ flip);
}

/* 4 channels' sign bits -> nibbles */
static void OB_NAME(nibbles)(const uint8_t* f0, const uint8_t* f1, const uint8_t* f2, const uint8_t* f3, int n,
                             uint8_t* out) {
    for (int i = 0; i < n; i++) out[i] = (uint8_t)(f0[i] | f1[i] << 1 | f2[i] << 2 | f3[i] << 3);
}

/* one input row of 4 channels -> nibbles; bit set when !(x >= t): sign(x - t) = -1 as in
 * onebit.quant.functional.sign (the comparison is exact: x - t < 0 iff x < t) */
static void OB_NAME(binarize_row4)(const float* x0, const float* x1, const float* x2, const float* x3,
                                   float t0, float t1, float t2, float t3, int n, uint8_t* dst) {
    for (int i = 0; i < n; i++)
        dst[i] = (uint8_t)((!(x0[i] >= t0)) | ((!(x1[i] >= t1)) << 1) | ((!(x2[i] >= t2)) << 2) |
                           ((!(x3[i] >= t3)) << 3));
}

/* max as PyTorch's max pooling takes it: NaN propagates */
static inline float OB_NAME(nan_max)(float m, float a) { return (a > m || a != a) ? a : m; }

/* max pooling of one plane (dilation 1, floor mode). Per output row: the vertical max of the
 * kernel's rows into acc[w], split into sw column phases (phase k holds columns k, k + sw, ...),
 * so that each kernel column is a contiguous, shifted phase row: the interior then reduces with
 * elementwise (vectorised) maxima, and only the border columns check bounds.
 * buf: w + sw * (w / sw + 1) floats. */
static void OB_NAME(max_pool_plane)(const float* x, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw,
                                    int ho, int wo, float* buf, float* out) {
    float* acc = buf;
    const int plen = w / sw + 1;
    float* phase = buf + w;                                     /* phase k at phase + k * plen */
    const int x_lo = (pw + sw - 1) / sw;                       /* first column without left padding */
    const int x_hi = w + pw - kw >= 0 ? (w + pw - kw) / sw + 1 : 0; /* first with right padding */
    for (int oy = 0; oy < ho; oy++) {
        int first = 1;
        for (int ky = 0; ky < kh; ky++) {
            const int iy = oy * sh - ph + ky;
            if (iy < 0 || iy >= h) continue;
            const float* r = x + (int64_t)iy * w;
            if (first)
                memcpy(acc, r, sizeof(float) * w);
            else
                for (int i = 0; i < w; i++) acc[i] = OB_NAME(nan_max)(acc[i], r[i]);
            first = 0;
        }
        for (int k = 0; k < sw; k++)
            for (int i = 0; k + i * sw < w; i++) phase[k * plen + i] = acc[k + i * sw];
        float* o = out + (int64_t)oy * wo;
        if (x_lo < x_hi) {
            for (int kx = 0; kx < kw; kx++) { /* column ox * sw - pw + kx = (ox + q) * sw + rem */
                const int shift = kx - pw, q = shift >= 0 ? shift / sw : -((-shift + sw - 1) / sw);
                const float* src = phase + (shift - q * sw) * plen + q;
                if (kx == 0)
                    for (int ox = x_lo; ox < x_hi; ox++) o[ox] = src[ox];
                else
                    for (int ox = x_lo; ox < x_hi; ox++) o[ox] = OB_NAME(nan_max)(o[ox], src[ox]);
            }
        }
        for (int ox = 0; ox < wo; ox++) {
            if (ox == x_lo && x_lo < x_hi) ox = x_hi; /* the interior is done */
            if (ox >= wo) break;
            float m = -INFINITY;
            for (int kx = 0; kx < kw; kx++) {
                const int ix = ox * sw - pw + kx;
                if (ix >= 0 && ix < w) m = OB_NAME(nan_max)(m, acc[ix]);
            }
            o[ox] = m;
        }
    }
}

#ifndef OB_OWN_TILE_FLOAT
const ob_float_ops OB_NAME(ob_float_ops) = {OB_NAME(tile_float), OB_NAME(dots),          OB_NAME(int_flags),
                                             OB_NAME(nibbles),    OB_NAME(binarize_row4), OB_NAME(max_pool_plane)};
#endif
