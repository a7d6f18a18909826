/* The float loops around the binary GEMM (output transform, binarization, max and average pooling), written
 * once and compiled per instruction set: float_ops_scalar.c (baseline) and float_ops_avx2.c
 * (AVX2 + FMA). Both give identical results: fmaf is correctly rounded everywhere and nothing
 * else is contracted (-ffp-contract=off). Define OB_SUFFIX before including. */
#include <math.h>
#include <string.h>

#include "onebit_kernels.h"

#define OB_CAT2(a, b) a##_##b
#define OB_CAT(a, b) OB_CAT2(a, b)
#define OB_NAME(f) OB_CAT(f, OB_SUFFIX)

/* The output of one row segment of one output channel, straight from the GEMM's counts: the dot
 * product d = k - 2 * count[i] (k: the dot product length, minus the row's zero-padding
 * correction), out[i] = fma(d * pre, mult, bias) (+ res[i]), d * pre rounded to float (exact for pre = 1);
 * with t, also neg[i] = !(out[i] >= *t)
 * (the next layer's sign bits, while the value is in a register). out may be res (in place).
 * An instruction set may provide its own (OB_OWN_SEGMENT_FLOAT), e.g. with overlapping tails. */
static inline float OB_NAME(output1)(int32_t d, float pre, float mult, float bias, const float* res) {
    const float v = fmaf((float)d * pre, mult, bias);
    return res ? v + *res : v;
}

#ifndef OB_OWN_SEGMENT_FLOAT
static void OB_NAME(segment_float)(const uint16_t* count, int n, int32_t k, float pre, float mult, float bias,
                                   const float* res, float* out, const float* t, uint8_t* neg) {
    for (int i = 0; i < n; i++) out[i] = OB_NAME(output1)(k - 2 * (int32_t)count[i], pre, mult, bias, res ? res + i : NULL);
    if (t)
        for (int i = 0; i < n; i++) neg[i] = (uint8_t)!(out[i] >= *t);
}
#endif

/* The float output of one channel of a tile (count: its counts, res / out: its planes, out may be
 * res itself; fix: its zero-padding corrections, NULL for +1 padding): the segments with their
 * row's interior correction, and the edge positions with their own (computed first, while res
 * still holds the residual, and written last). */
static void OB_NAME(channel_float)(const ob_tile_rows* rows, const uint16_t* count, const int32_t* fix, float pre,
                                   float mult, float bias, const float* res, float* out, const float* t, uint8_t* neg) {
    float edge[OB_PB];
    for (int e = 0; e < rows->nedge; e++) {
        const ob_edge* g = &rows->edge[e];
        edge[e] = OB_NAME(output1)(rows->k_bits - 2 * (int32_t)count[g->p] - fix[g->fix], pre, mult, bias,
                                   res ? res + g->at : NULL);
    }
    for (int k = 0; k < rows->nseg; k++) {
        const ob_segment* g = &rows->seg[k];
        OB_NAME(segment_float)(count + g->p, (int)(g->x1 - g->x0), rows->k_bits - (fix ? fix[g->fix] : 0), pre, mult,
                               bias, res ? res + g->at : NULL, out + g->at, t, neg + g->p);
    }
    for (int e = 0; e < rows->nedge; e++) {
        out[rows->edge[e].at] = edge[e];
        if (t) neg[rows->edge[e].p] = (uint8_t)!(edge[e] >= *t);
    }
}

/* the next layer's sign bits of one channel of a tile from the integer dot products d:
 * neg = (d < t) != flip */
static void OB_NAME(channel_flags)(const ob_tile_rows* rows, const uint16_t* count, const int32_t* fix, int32_t t,
                                   uint8_t flip, uint8_t* neg) {
    for (int k = 0; k < rows->nseg; k++) {
        const ob_segment* g = &rows->seg[k];
        const int32_t kk = rows->k_bits - (fix ? fix[g->fix] : 0);
        for (int64_t i = g->p; i < g->p + g->x1 - g->x0; i++) neg[i] = (uint8_t)((kk - 2 * (int32_t)count[i] < t) ^ flip);
    }
    for (int e = 0; e < rows->nedge; e++) {
        const ob_edge* g = &rows->edge[e];
        neg[g->p] = (uint8_t)((rows->k_bits - 2 * (int32_t)count[g->p] - fix[g->fix] < t) ^ flip);
    }
}

/* 4 channels' sign bits -> nibbles */
static void OB_NAME(nibbles)(const uint8_t* f0, const uint8_t* f1, const uint8_t* f2, const uint8_t* f3, int n,
                             uint8_t* out) {
    for (int i = 0; i < n; i++) out[i] = (uint8_t)(f0[i] | f1[i] << 1 | f2[i] << 2 | f3[i] << 3);
}

/* one input row of 4 channels -> nibbles; bit set when !(x >= t): sign(x - t) = -1 as in
 * onebit.quant.functional.sign (the comparison is exact: x - t < 0 iff x < t) */
static inline uint8_t OB_NAME(nibble1)(float x0, float x1, float x2, float x3, float t0, float t1, float t2,
                                       float t3) {
    return (uint8_t)((!(x0 >= t0)) | ((!(x1 >= t1)) << 1) | ((!(x2 >= t2)) << 2) | ((!(x3 >= t3)) << 3));
}

#ifndef OB_OWN_BINARIZE_ROW4
static void OB_NAME(binarize_row4)(const float* x0, const float* x1, const float* x2, const float* x3,
                                   float t0, float t1, float t2, float t3, int n, uint8_t* dst) {
    for (int i = 0; i < n; i++) dst[i] = OB_NAME(nibble1)(x0[i], x1[i], x2[i], x3[i], t0, t1, t2, t3);
}
#endif

/* max as PyTorch's max pooling takes it: NaN propagates */
static inline float OB_NAME(nan_max)(float m, float a) {
    const int take = (a > m) | (a != a); /* no short-circuit: a select, not a branch on random data */
    return take ? a : m;
}

/* out[i] = nan_max(... nan_max(src[0][i], src[1][i]) ..., src[n - 1][i]), i < len (out is none of src) */
#ifndef OB_OWN_MAX_ROWS
static void OB_NAME(max_rows)(const float* const* src, int n, int len, float* out) {
    memcpy(out, src[0], sizeof(float) * len);
    for (int k = 1; k < n; k++)
        for (int i = 0; i < len; i++) out[i] = OB_NAME(nan_max)(out[i], src[k][i]);
}
#endif

/* phase k of row[w] (columns k, k + sw, ...) -> phase + k * plen */
static void OB_NAME(split_phases)(const float* row, int w, int sw, float* phase, int plen) {
    int done = 0; /* columns split by vector code */
#ifdef OB_SPLIT2
    if (sw == 2) done = OB_SPLIT2(row, w, phase, phase + plen);
#endif
    for (int k = 0; k < sw; k++)
        for (int i = (done + sw - 1 - k) / sw; k + i * sw < w; i++) phase[k * plen + i] = row[k + i * sw];
}

/* where kernel column kx of output column 0 lies in the phases of a row split by split_phases:
 * input column ox * sw - pw + kx = (ox + q) * sw + rem, i.e. phase rem at offset ox + q */
static inline const float* OB_NAME(phase_column)(const float* phase, int plen, int kx, int pw, int sw) {
    const int shift = kx - pw, q = shift >= 0 ? shift / sw : -((-shift + sw - 1) / sw);
    return phase + (shift - q * sw) * plen + q;
}

/* max pooling of one plane (dilation 1, floor mode). Per output row: the vertical max of the
 * kernel's rows into acc[w], split into sw column phases (phase k holds columns k, k + sw, ...),
 * so that each kernel column is a contiguous, shifted phase row: the interior then reduces with
 * elementwise (vectorised) maxima, and only the border columns check bounds (reading the input:
 * scalar loads of just-written vectors stall on store forwarding).
 * buf: w + sw * (w / sw + 1) floats. */
static void OB_NAME(max_pool_plane)(const float* x, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw,
                                    int ho, int wo, float* buf, float* out) {
    float* acc = buf;
    const int plen = w / sw + 1;
    float* phase = buf + w;                                     /* phase k at phase + k * plen */
    const int x_lo = (pw + sw - 1) / sw;                       /* first column without left padding */
    const int x_hi = w + pw - kw >= 0 ? (w + pw - kw) / sw + 1 : 0; /* first with right padding */
    const float* rows[kh];
    const float* cols[kw];
    for (int kx = 0; kx < kw; kx++) cols[kx] = OB_NAME(phase_column)(phase, plen, kx, pw, sw) + x_lo;
    for (int oy = 0; oy < ho; oy++) {
        int n = 0;
        for (int ky = 0; ky < kh; ky++) {
            const int iy = oy * sh - ph + ky;
            if (iy >= 0 && iy < h) rows[n++] = x + (int64_t)iy * w;
        }
        float* o = out + (int64_t)oy * wo;
        if (x_lo < x_hi) {
            OB_NAME(max_rows)(rows, n, w, acc);
            OB_NAME(split_phases)(acc, w, sw, phase, plen);
            OB_NAME(max_rows)(cols, kw, x_hi - x_lo, o + x_lo);
        }
        for (int ox = 0; ox < wo; ox++) {
            if (ox == x_lo && x_lo < x_hi) ox = x_hi; /* the interior is done */
            if (ox >= wo) break;
            float m = -INFINITY;
            for (int kx = 0; kx < kw; kx++) {
                const int ix = ox * sw - pw + kx;
                if (ix < 0 || ix >= w) continue;
                float c = rows[0][ix];
                for (int k = 1; k < n; k++) c = OB_NAME(nan_max)(c, rows[k][ix]);
                m = OB_NAME(nan_max)(m, c);
            }
            o[ox] = m;
        }
    }
}

/* out[ch * plane + ox] = acc[ox * c + ch] * sign[ch]: a row of channels-last maxima to NCHW */
static void OB_NAME(nhwc_row_to_nchw)(const float* acc, int c, int wo, const float* sign, float* out, int64_t plane) {
    for (int ch = 0; ch < c; ch++)
        for (int ox = 0; ox < wo; ox++) out[ch * plane + ox] = acc[(int64_t)ox * c + ch] * sign[ch];
}

/* max pooling of one output row of a channels-last (NHWC) image, written to NCHW: rows[0..n) are the
 * input rows the window's rows cover (w positions x c channels each), sign[ch] = +-1.0f (-1: pool -x
 * and negate, the window minimum); out[ch * plane + ox], ox < wo. Each window in PyTorch's order (row
 * by row), vectorised over the channels. acc: wo * c floats. An instruction set may provide its own
 * (OB_OWN_MAX_POOL_ROW_NHWC; this one is then its fallback, max_pool_row_nhwc_any). */
#ifdef OB_OWN_MAX_POOL_ROW_NHWC
#define OB_MAX_POOL_ROW_NHWC OB_NAME(max_pool_row_nhwc_any)
#else
#define OB_MAX_POOL_ROW_NHWC OB_NAME(max_pool_row_nhwc)
#endif
static void OB_MAX_POOL_ROW_NHWC(const float* const* rows, int n, int w, int c, int kw, int sw, int pw, int wo,
                                 const float* sign, float* acc, float* out, int64_t plane) {
    for (int ox = 0; ox < wo; ox++) {
        const int x0 = ox * sw - pw > 0 ? ox * sw - pw : 0, x1 = ox * sw - pw + kw < w ? ox * sw - pw + kw : w;
        float* m = acc + (int64_t)ox * c;
        const float* first = rows[0] + (int64_t)x0 * c;
        for (int ch = 0; ch < c; ch++) m[ch] = first[ch] * sign[ch];
        for (int k = 0; k < n; k++)
            for (int ix = k ? x0 : x0 + 1; ix < x1; ix++) {
                const float* r = rows[k] + (int64_t)ix * c;
                for (int ch = 0; ch < c; ch++) m[ch] = OB_NAME(nan_max)(m[ch], r[ch] * sign[ch]);
            }
    }
    OB_NAME(nhwc_row_to_nchw)(acc, c, wo, sign, out, plane);
}

/* average pooling of one plane with PyTorch's window rules (ceil mode, padding counted or not,
 * divisor override): each window's elements summed in float from 0, row by row, then divided.
 * Rows are split into column phases as in max_pool_plane, so that the interior (windows inside
 * the input) sums shifted phase rows elementwise; windows that are clipped (and all windows of
 * narrow rows) are summed alone.
 * buf: sw * (w / sw + 1) + wo floats. */
static void OB_NAME(avg_pool_plane)(const float* x, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw,
                                    int ho, int wo, int count_include_pad, int divisor_override, float* buf,
                                    float* out) {
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && ho == h / 2 && wo == w / 2) {
        /* 2x2/2 windows, all inside (downsample shortcuts): the same sums, straight from the two rows */
        const float divide = (float)(divisor_override ? divisor_override : 4);
        for (int oy = 0; oy < ho; oy++) {
            const float *r0 = x + (int64_t)(2 * oy) * w, *r1 = r0 + w;
            float* o = out + (int64_t)oy * wo;
            for (int ox = 0; ox < wo; ox++) {
                float s = 0.0f + r0[2 * ox];
                s += r0[2 * ox + 1];
                s += r1[2 * ox];
                s += r1[2 * ox + 1];
                o[ox] = s / divide;
            }
        }
        return;
    }
    const int plen = w / sw + 1;
    float* phase = buf;        /* phase k at phase + k * plen */
    float* sum = buf + sw * plen;
    const int x_lo = (pw + sw - 1) / sw; /* first window without left padding */
    int x_hi = w + pw - kw >= 0 ? (w + pw - kw) / sw + 1 : 0; /* first window past the input's right side */
    if (x_hi > wo) x_hi = wo;
    if (x_hi - x_lo < 4) x_hi = x_lo; /* narrow rows: the split does not pay, every window alone */
    for (int oy = 0; oy < ho; oy++) {
        int y0 = oy * sh - ph, y1 = y0 + kh < h + ph ? y0 + kh : h + ph;
        const int rows_with_pad = y1 - y0;
        y0 = y0 > 0 ? y0 : 0;
        y1 = y1 < h ? y1 : h;
        float* o = out + (int64_t)oy * wo;
        if (x_lo < x_hi) {
            for (int ox = x_lo; ox < x_hi; ox++) sum[ox] = 0.0f;
            for (int iy = y0; iy < y1; iy++) {
                OB_NAME(split_phases)(x + (int64_t)iy * w, w, sw, phase, plen);
                for (int kx = 0; kx < kw; kx++) {
                    const float* src = OB_NAME(phase_column)(phase, plen, kx, pw, sw);
                    for (int ox = x_lo; ox < x_hi; ox++) sum[ox] += src[ox];
                }
            }
            const float divide = (float)(divisor_override ? divisor_override
                                                          : (count_include_pad ? rows_with_pad * kw : (y1 - y0) * kw));
            for (int ox = x_lo; ox < x_hi; ox++) o[ox] = sum[ox] / divide;
        }
        for (int ox = 0; ox < wo; ox++) {
            if (ox == x_lo && x_lo < x_hi) ox = x_hi; /* the interior is done */
            if (ox >= wo) break;
            int x0 = ox * sw - pw, x1 = x0 + kw < w + pw ? x0 + kw : w + pw;
            const int pool = rows_with_pad * (x1 - x0);
            x0 = x0 > 0 ? x0 : 0;
            x1 = x1 < w ? x1 : w;
            float s = 0.0f;
            for (int iy = y0; iy < y1; iy++)
                for (int ix = x0; ix < x1; ix++) s += x[(int64_t)iy * w + ix];
            const int divide = divisor_override ? divisor_override : (count_include_pad ? pool : (y1 - y0) * (x1 - x0));
            o[ox] = s / (float)divide;
        }
    }
}

const ob_float_ops OB_NAME(ob_float_ops) = {OB_NAME(channel_float), OB_NAME(channel_flags), OB_NAME(nibbles),
                                             OB_NAME(binarize_row4), OB_NAME(max_pool_plane),
                                             OB_NAME(max_pool_row_nhwc), OB_NAME(avg_pool_plane)};
