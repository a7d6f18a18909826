/* The float loops compiled for AVX2 + FMA (selected with the avx2 kernel), with the output transform
 * in intrinsics: row segments are short (a 64-position tile spans several output rows), so an
 * overlapping last vector (or a masked one, for segments under 8) replaces the scalar tail a
 * compiler would generate. */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,bmi2")
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define OB_SUFFIX avx2
#define OB_OWN_SEGMENT_FLOAT
static void segment_float_avx2(const uint16_t* count, int n, int32_t k, float pre, float mult, float bias,
                               const float* res, float* out, const float* t, uint8_t* neg);
#define OB_OWN_MAX_ROWS
static void max_rows_avx2(const float* const* src, int n, int len, float* out);
#define OB_OWN_BINARIZE_ROW4
static void binarize_row4_avx2(const float* x0, const float* x1, const float* x2, const float* x3, float t0,
                               float t1, float t2, float t3, int n, uint8_t* dst);
#define OB_OWN_MAX_POOL_ROW_NHWC
static void max_pool_row_nhwc_avx2(const float* const* rows, int n, int w, int c, int kw, int sw, int pw, int wo,
                                   const float* sign, float* acc, float* out, int64_t plane);
#define OB_SPLIT2 split2_avx2
/* even and odd columns of row[0, w), 16 columns at a time; returns how many columns it split */
static inline int split2_avx2(const float* row, int w, float* even, float* odd) {
    int i = 0;
    for (; i + 16 <= w; i += 16) {
        const __m256 a = _mm256_loadu_ps(row + i), b = _mm256_loadu_ps(row + i + 8);
        /* per 128-bit lane: a0 a2 b0 b2 | a4 a6 b4 b6, then the middle 64-bit quarters swapped */
        const __m256 e = _mm256_shuffle_ps(a, b, 0x88), o = _mm256_shuffle_ps(a, b, 0xDD);
        _mm256_storeu_ps(even + i / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
        _mm256_storeu_ps(odd + i / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8)));
    }
    return i;
}
#include "float_ops.h"

/* nan_max(m, a) = a > m || a != a ? a : m: vmaxps(a, m) is a > m ? a : m, except that it returns m
 * when a is NaN */
static inline __m256 nan_max8(__m256 m, __m256 a) {
    return _mm256_blendv_ps(_mm256_max_ps(a, m), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}

static inline __m256 max_rows8(const float* const* src, int n, int i) {
    __m256 m = _mm256_loadu_ps(src[0] + i);
    for (int k = 1; k < n; k++) m = nan_max8(m, _mm256_loadu_ps(src[k] + i));
    return m;
}

static void max_rows_avx2(const float* const* src, int n, int len, float* out) {
    if (len < 8) {
        for (int i = 0; i < len; i++) {
            float m = src[0][i];
            for (int k = 1; k < n; k++) m = nan_max_avx2(m, src[k][i]);
            out[i] = m;
        }
        return;
    }
    int i = 0;
    for (; i + 8 <= len; i += 8) _mm256_storeu_ps(out + i, max_rows8(src, n, i));
    if (i < len) /* the last 8, overlapping: the same values again */
        _mm256_storeu_ps(out + len - 8, max_rows8(src, n, len - 8));
}

/* 8 positions of 4 channels -> 8 nibbles: bit i of byte p is !(x_i[p] >= t_i) */
static inline uint64_t nibbles8(const float* const* x, const __m256* t, int i) {
    uint64_t bytes = 0;
    for (int c = 0; c < 4; c++) {
        const __m256 lt = _mm256_cmp_ps(_mm256_loadu_ps(x[c] + i), t[c], _CMP_NGE_UQ);
        bytes |= _pdep_u64((unsigned)_mm256_movemask_ps(lt), 0x0101010101010101ull << c);
    }
    return bytes;
}

static void binarize_row4_avx2(const float* x0, const float* x1, const float* x2, const float* x3, float t0,
                               float t1, float t2, float t3, int n, uint8_t* dst) {
    const float* x[4] = {x0, x1, x2, x3};
    const __m256 t[4] = {_mm256_set1_ps(t0), _mm256_set1_ps(t1), _mm256_set1_ps(t2), _mm256_set1_ps(t3)};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const uint64_t bytes = nibbles8(x, t, i);
        memcpy(dst + i, &bytes, 8);
    }
    for (; i < n; i++) dst[i] = nibble1_avx2(x0[i], x1[i], x2[i], x3[i], t0, t1, t2, t3);
}

/* 8 outputs (and sign bytes) at segment index i, plus the residual r if has_res; lanes >= n are not
 * written to out (their counts and sign bytes are: the callers' buffers have room) */
static inline void outputs8(const uint16_t* count, __m256i k, __m256 p, __m256 m, __m256 b, int has_res, __m256 r,
                            float* out, const float* t, uint8_t* neg, __m256i lanes, int n) {
    const __m256i c = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)count));
    const __m256i d = _mm256_sub_epi32(k, _mm256_add_epi32(c, c));
    __m256 v = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d), p), m, b);
    if (has_res) v = _mm256_add_ps(v, r);
    if (n >= 8)
        _mm256_storeu_ps(out, v);
    else
        _mm256_maskstore_ps(out, lanes, v);
    if (t) { /* !(v >= t) per lane -> one byte per lane */
        const __m256 lt = _mm256_cmp_ps(v, _mm256_set1_ps(*t), _CMP_NGE_UQ);
        const uint64_t bytes = _pdep_u64((unsigned)_mm256_movemask_ps(lt), 0x0101010101010101ull);
        memcpy(neg, &bytes, 8);
    }
}

static void segment_float_avx2(const uint16_t* count, int n, int32_t k, float pre, float mult, float bias,
                               const float* res, float* out, const float* t, uint8_t* neg) {
    const __m256i kv = _mm256_set1_epi32(k);
    const __m256 p = _mm256_set1_ps(pre), m = _mm256_set1_ps(mult), b = _mm256_set1_ps(bias), zero = _mm256_setzero_ps();
    const int has_res = res != NULL;
    if (n < 8) { /* short segment: masked */
        const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        outputs8(count, kv, p, m, b, has_res, has_res ? _mm256_maskload_ps(res, lanes) : zero, out, t, neg, lanes, n);
        return;
    }
    const __m256i all = _mm256_set1_epi32(-1);
    /* the last 8 overlap the loop's last vector: their residual is read before out (maybe res) is written */
    const __m256 last = has_res ? _mm256_loadu_ps(res + n - 8) : zero;
    int i = 0;
    for (; i + 8 <= n; i += 8)
        outputs8(count + i, kv, p, m, b, has_res, has_res ? _mm256_loadu_ps(res + i) : zero, out + i, t, neg + i, all, 8);
    if (i < n) /* the last 8, overlapping: the same values are written twice */
        outputs8(count + n - 8, kv, p, m, b, has_res, last, out + n - 8, t, neg + n - 8, all, 8);
}
/* the window maxima of NV vectors of 8 channels from channel ch, in registers (max_pool_row_nhwc's order) */
#define OB_WINDOW_MAX(NV)                                                                          \
    do {                                                                                           \
        __m256 m[NV], sg[NV];                                                                      \
        for (int v = 0; v < NV; v++) {                                                             \
            sg[v] = _mm256_loadu_ps(sign + ch + 8 * v);                                            \
            m[v] = _mm256_mul_ps(_mm256_loadu_ps(rows[0] + (int64_t)x0 * c + ch + 8 * v), sg[v]); \
        }                                                                                          \
        for (int k = 0; k < n; k++)                                                                \
            for (int ix = k ? x0 : x0 + 1; ix < x1; ix++) {                                        \
                const float* r = rows[k] + (int64_t)ix * c + ch;                                   \
                for (int v = 0; v < NV; v++)                                                       \
                    m[v] = nan_max8(m[v], _mm256_mul_ps(_mm256_loadu_ps(r + 8 * v), sg[v]));       \
            }                                                                                      \
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(mo + ch + 8 * v, m[v]);                      \
    } while (0)

static void max_pool_row_nhwc_avx2(const float* const* rows, int n, int w, int c, int kw, int sw, int pw, int wo,
                                   const float* sign, float* acc, float* out, int64_t plane) {
    if (c % 8) {
        max_pool_row_nhwc_any_avx2(rows, n, w, c, kw, sw, pw, wo, sign, acc, out, plane);
        return;
    }
    for (int ox = 0; ox < wo; ox++) {
        const int x0 = ox * sw - pw > 0 ? ox * sw - pw : 0, x1 = ox * sw - pw + kw < w ? ox * sw - pw + kw : w;
        float* mo = acc + (int64_t)ox * c;
        int ch = 0;
        for (; ch + 64 <= c; ch += 64) OB_WINDOW_MAX(8);
        for (; ch < c; ch += 8) OB_WINDOW_MAX(1);
    }
    nhwc_row_to_nchw_avx2(acc, c, wo, sign, out, plane);
}
#endif
