/* Binary convolution driver: layout, binarization of float input, the tiled GEMM over
 * threads, and the output transform (folded scale/BatchNorm, residual, bit-packed output).
 * See onebit_kernels.h for the data layout. Public functions are prefixed ob_ and return 0
 * on success, a negative number on bad arguments (the Python wrapper checks shapes first). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "onebit_kernels.h"

#define OB_ABI_VERSION 1

/* Same numerics on every path: no a*b+c contraction into fma in one clone and not another. */
#pragma GCC optimize("fp-contract=off")

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("arch=haswell", "default")))
#else
#define MULTIVERSION
#endif

#define POP4(x) (((x) & 1) + (((x) >> 1) & 1) + (((x) >> 2) & 1) + (((x) >> 3) & 1))
#define ROW(b)                                                                               \
    {POP4(0 ^ b), POP4(1 ^ b), POP4(2 ^ b), POP4(3 ^ b), POP4(4 ^ b), POP4(5 ^ b), POP4(6 ^ b), \
     POP4(7 ^ b), POP4(8 ^ b), POP4(9 ^ b), POP4(10 ^ b), POP4(11 ^ b), POP4(12 ^ b),          \
     POP4(13 ^ b), POP4(14 ^ b), POP4(15 ^ b)}
const uint8_t ob_nibble_popcount[16][16] __attribute__((aligned(64))) = {
    ROW(0), ROW(1), ROW(2),  ROW(3),  ROW(4),  ROW(5),  ROW(6),  ROW(7),
    ROW(8), ROW(9), ROW(10), ROW(11), ROW(12), ROW(13), ROW(14), ROW(15)};

/* ---------------------------------------------------------------- kernel selection */

typedef struct {
    const char* name;
    ob_tile_fn tile;
    int (*supported)(void);
} ob_kernel;

static int always(void) { return 1; }
#if defined(__x86_64__)
static int has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
#endif

static const ob_kernel KERNELS[] = {
    {"scalar", ob_tile_scalar, always},
#if defined(__x86_64__)
    {"avx2", ob_tile_avx2, has_avx2},
#endif
};
#define N_KERNELS ((int)(sizeof(KERNELS) / sizeof(KERNELS[0])))

static const ob_kernel* current = NULL;

static const ob_kernel* best_kernel(void) {
    for (int i = N_KERNELS - 1; i >= 0; i--)
        if (KERNELS[i].supported()) return &KERNELS[i];
    return &KERNELS[0];
}

int ob_abi_version(void) { return OB_ABI_VERSION; }

/* 1 if `name` is compiled in and this CPU runs it, 0 if not, -1 if unknown */
int ob_kernel_supported(const char* name) {
    for (int i = 0; i < N_KERNELS; i++)
        if (strcmp(KERNELS[i].name, name) == 0) return KERNELS[i].supported();
    return -1;
}

/* select "auto" (best the CPU runs) or a named kernel; -1 unknown name, -2 unsupported */
int ob_set_kernel(const char* name) {
    if (strcmp(name, "auto") == 0) {
        current = best_kernel();
        return 0;
    }
    for (int i = 0; i < N_KERNELS; i++) {
        if (strcmp(KERNELS[i].name, name) == 0) {
            if (!KERNELS[i].supported()) return -2;
            current = &KERNELS[i];
            return 0;
        }
    }
    return -1;
}

const char* ob_kernel_name(void) {
    if (!current) current = best_kernel();
    return current->name;
}

/* ---------------------------------------------------------------- layout */

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int ob_conv_init(ob_conv* s) {
    if (s->n < 1 || s->c < 1 || s->h < 1 || s->w < 1 || s->cout < 1 || s->groups < 1) return -1;
    if (s->c % s->groups || s->cout % s->groups) return -1;
    if (s->kh < 1 || s->kw < 1 || s->kh > 63 || s->kw > 63) return -1;
    if (s->sh < 1 || s->sw < 1 || s->ph < 0 || s->pw < 0) return -1;
    if (s->h + 2 * s->ph < s->kh || s->w + 2 * s->pw < s->kw) return -1;
    s->ho = (s->h + 2 * s->ph - s->kh) / s->sh + 1;
    s->wo = (s->w + 2 * s->pw - s->kw) / s->sw + 1;
    s->cg = s->c / s->groups;
    s->cog = s->cout / s->groups;
    s->q = (int32_t)ceil_div(s->cg, 4);
    s->g = s->kh * s->kw * s->q;
    s->k_bits = s->kh * s->kw * s->cg;
    if (s->k_bits > 65535) return -1; /* counts are 16-bit */
    if (s->sh == 1 && s->sw == 1) {   /* shared left/right padding columns */
        s->wq = s->w + s->pw;
        s->hq = s->h + 2 * s->ph + 1;
    } else {
        s->wq = (int32_t)ceil_div(s->w + 2 * s->pw, s->sw);
        s->hq = (int32_t)ceil_div(s->h + 2 * s->ph, s->sh) + 1;
    }
    s->ob = (int32_t)ceil_div(s->cog, OB_NR);
    s->positions = (int64_t)s->ho * s->wq;
    s->pblocks = (int32_t)ceil_div(s->positions, OB_PB);
    s->phase_bytes = (int64_t)s->hq * s->wq;
    s->plane_bytes = (int64_t)s->sh * s->sw * s->phase_bytes;
    s->image_bytes = (int64_t)s->groups * s->q * s->plane_bytes;
    s->input_bytes = s->n * s->image_bytes + 2 * OB_PB + s->kw + s->wq;
    return 0;
}

/* offset, inside one nibble plane of layout s, of input pixel (iy, ix) */
static inline int64_t pixel_offset(const ob_conv* s, int64_t iy, int64_t ix) {
    const int64_t y = iy + s->ph, x = ix + s->pw;
    if (s->sh == 1 && s->sw == 1) return y * s->wq + x;
    return ((y % s->sh) * s->sw + x % s->sw) * s->phase_bytes + (y / s->sh) * s->wq + x / s->sw;
}

/* ---------------------------------------------------------------- binarize */

/* one input row of 4 (or fewer) channels -> nibbles; bit set when !(x >= t), which is
 * sign(x - t) = -1 of onebit.quant.functional.sign (NaN included) */
MULTIVERSION
static void binarize_row4(const float* x0, const float* x1, const float* x2, const float* x3,
                          float t0, float t1, float t2, float t3, int n, uint8_t* dst) {
    for (int i = 0; i < n; i++)
        dst[i] = (uint8_t)((!(x0[i] >= t0)) | ((!(x1[i] >= t1)) << 1) | ((!(x2[i] >= t2)) << 2) |
                           ((!(x3[i] >= t3)) << 3));
}

int ob_binarize(const ob_conv* s, const float* x, const float* thr, int64_t thr_stride_n,
                uint8_t* planes, int threads) {
    const int64_t hw = (int64_t)s->h * s->w;
    const int64_t jobs = (int64_t)s->n * s->groups * s->q;
    const int strided = s->sh != 1 || s->sw != 1;
    int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t job = 0; job < jobs; job++) {
        const int64_t n = job / ((int64_t)s->groups * s->q);
        const int64_t gq = job % ((int64_t)s->groups * s->q);
        const int64_t grp = gq / s->q, qi = gq % s->q;
        const int64_t c0 = grp * s->cg + 4 * qi;
        const int cnt = (int)(s->cg - 4 * qi < 4 ? s->cg - 4 * qi : 4);
        const float zero = 0.0f, big = 1.0f; /* missing channels read 1 >= 0: bit 0 */
        const float* src[4];
        float t[4];
        for (int i = 0; i < 4; i++) {
            src[i] = i < cnt ? x + (n * s->c + c0 + i) * hw : NULL;
            t[i] = i < cnt && thr ? thr[n * thr_stride_n + c0 + i] : zero;
        }
        uint8_t* plane = planes + n * s->image_bytes + gq * s->plane_bytes;
        float* ones = NULL;
        if (cnt < 4) {
            ones = (float*)malloc(sizeof(float) * s->w);
            if (!ones) {
                failed = 1;
                continue;
            }
            for (int i = 0; i < s->w; i++) ones[i] = big;
        }
        uint8_t* row = strided ? (uint8_t*)malloc(s->w) : NULL;
        for (int64_t iy = 0; iy < s->h; iy++) {
            const float* r[4];
            for (int i = 0; i < 4; i++) r[i] = i < cnt ? src[i] + iy * s->w : ones;
            uint8_t* dst = strided ? row : plane + pixel_offset(s, iy, 0);
            if (!dst) {
                failed = 1;
                break;
            }
            binarize_row4(r[0], r[1], r[2], r[3], t[0], t[1], t[2], t[3], s->w, dst);
            if (strided)
                for (int64_t ix = 0; ix < s->w; ix++) plane[pixel_offset(s, iy, ix)] = row[ix];
        }
        free(row);
        free(ones);
    }
    return failed ? -3 : 0;
}

/* ---------------------------------------------------------------- output transform */

/* taps of output row y (bit ky) / column x (bit kx) that read the padding */
static inline uint64_t padded_taps(int64_t o, int stride, int pad, int k, int size) {
    uint64_t mask = 0;
    const int64_t first = o * stride - pad;
    for (int t = 0; t < k; t++)
        if (first + t < 0 || first + t >= size) mask |= 1ull << t;
    return mask;
}

/* fma(d, m, b), as PyTorch's eval BatchNorm computes x * alpha + beta on this CPU, so that an
 * integer conv output followed by BN gives bit-identical floats; the residual is added after */
MULTIVERSION
static void write_float_row(const int32_t* d, float m, float b, const float* res, float* out,
                            int n) {
    if (res)
        for (int i = 0; i < n; i++) out[i] = fmaf((float)d[i], m, b) + res[i];
    else
        for (int i = 0; i < n; i++) out[i] = fmaf((float)d[i], m, b);
}

/* the output segments of a tile: row y, columns [x0, x1), tile index p of column x0 */
typedef struct {
    int64_t y, x0, x1, p;
} segment;

static int tile_segments(const ob_conv* s, int64_t pos0, int width, segment* seg) {
    int k = 0;
    for (int64_t y = pos0 / s->wq; y < s->ho && y * s->wq < pos0 + width; y++) {
        int64_t x0 = pos0 - y * s->wq, x1 = pos0 + width - y * s->wq;
        if (x0 < 0) x0 = 0;
        if (x1 > s->wo) x1 = s->wo;
        if (x0 < x1) seg[k++] = (segment){y, x0, x1, y * s->wq + x0 - pos0};
    }
    return k;
}

/* dot products of channel o over a tile, zero-padding corrected */
static void channel_dots(const ob_conv* s, const uint16_t* counts, const ob_padding* fix, int64_t o,
                         const segment* seg, int nseg, int32_t* d) {
    /* columns [0, left) and [right, wo) have taps in the left / right padding */
    const int64_t left = ceil_div(s->pw, s->sw);
    const int64_t right = s->w + s->pw >= s->kw ? (s->w + s->pw - s->kw) / s->sw + 1 : 0;
    for (int k = 0; k < nseg; k++) {
        const segment* g = &seg[k];
        int32_t* dk = d + g->p - g->x0; /* dk[x] is column x of row g->y */
        const uint16_t* ck = counts + g->p - g->x0;
        for (int64_t x = g->x0; x < g->x1; x++) dk[x] = s->k_bits - 2 * (int32_t)ck[x];
        if (!fix) continue;
        const int rc = fix->row_class[g->y];
        const int32_t* v = fix->value + (o * fix->n_rows + rc) * fix->n_cols;
        for (int64_t x = g->x0; x < g->x1; x++) {
            if (!rc && x >= left && x < right) x = right; /* skip the interior columns */
            if (x >= g->x1) break;
            dk[x] -= v[fix->col_class[x]];
        }
    }
}

/* nibbles of up to 4 channels (planes `stride` floats apart) of one output row segment:
 * bit i set when !(v >= t[i]), the next layer's sign(v - t) = -1 */
MULTIVERSION
static void bits_from_floats(const float* v, int64_t stride, const float* t, int cnt, int64_t len,
                             uint8_t* bytes) {
    memset(bytes, 0, len);
    for (int i = 0; i < cnt; i++)
        for (int64_t x = 0; x < len; x++) bytes[x] |= (uint8_t)((!(v[i * stride + x] >= t[i])) << i);
}

/* the transform of the channels [o0, o0 + nch) of one tile of image n */
static void transform_tile(const ob_conv* s, const ob_output* out, const ob_padding* fix,
                           int64_t n, int64_t o0, int nch, const uint16_t* counts,
                           int64_t pos0, int width) {
    segment seg[OB_PB + 1];
    const int nseg = tile_segments(s, pos0, width, seg);
    int32_t d[2 * OB_NR][OB_PB];
    const int64_t hw = (int64_t)s->ho * s->wo;
    for (int r = 0; r < nch; r++) {
        const int64_t o = o0 + r;
        channel_dots(s, counts + (int64_t)r * OB_PB, fix, o, seg, nseg, d[r]);
        if (!out->out) continue;
        for (int k = 0; k < nseg; k++) {
            const int64_t at = (n * s->cout + o) * hw + seg[k].y * s->wo + seg[k].x0;
            write_float_row(d[r] + seg[k].p, out->mult[o], out->bias[o],
                            out->residual ? out->residual + at : NULL, out->out + at,
                            (int)(seg[k].x1 - seg[k].x0));
        }
    }
    if (!out->next_planes) return;
    const ob_conv* nx = out->next;
    for (int r0 = 0; r0 < nch; r0 += 4) { /* whole nibbles of the next layer's planes */
        const int64_t c = o0 + r0, j = c % nx->cg;
        uint8_t* plane = out->next_planes + n * nx->image_bytes +
                         ((c / nx->cg) * nx->q + j / 4) * nx->plane_bytes;
        const int cnt = nch - r0 < 4 ? nch - r0 : 4;
        for (int k = 0; k < nseg; k++) {
            const segment* g = &seg[k];
            const int64_t len = g->x1 - g->x0;
            uint8_t bytes[OB_PB];
            if (out->float_thresh) {
                const float* v = out->out + (n * s->cout + c) * hw + g->y * s->wo + g->x0;
                bits_from_floats(v, hw, out->float_thresh + c, cnt, len, bytes);
            } else {
                for (int64_t x = 0; x < len; x++) {
                    uint8_t byte = 0;
                    for (int i = 0; i < cnt; i++)
                        byte |= (uint8_t)(((d[r0 + i][g->p + x] < out->thresh[c + i]) != out->flip[c + i]) << i);
                    bytes[x] = byte;
                }
            }
            if (nx->sh == 1 && nx->sw == 1) /* the row segment is contiguous in the next planes */
                memcpy(plane + pixel_offset(nx, g->y, g->x0), bytes, len);
            else
                for (int64_t x = 0; x < len; x++) plane[pixel_offset(nx, g->y, g->x0 + x)] = bytes[x];
        }
    }
}

/* ---------------------------------------------------------------- convolution */

/* Run the convolution on planes laid out for s. wnib: [groups][ob][g][OB_NR] weight nibbles
 * << 4 (g = (q, ky, kx)); fix: the zero-padding correction (NULL for +1 padding).
 * Bits output requires whole output nibbles per task: groups == 1 or cog % 4 == 0, and the
 * next layer's groups == 1 or cg % 4 == 0 (checked by the caller). */
int ob_conv_run(const ob_conv* s, const uint8_t* planes, const uint8_t* wnib,
                const ob_padding* fix, const ob_output* out, int threads) {
    if (!current) current = best_kernel();
    const ob_tile_fn tile = current->tile;
    int64_t* aoff = (int64_t*)malloc(sizeof(int64_t) * s->g);
    if (!aoff) return -3;
    for (int64_t qi = 0, k = 0; qi < s->q; qi++)
        for (int ky = 0; ky < s->kh; ky++)
            for (int kx = 0; kx < s->kw; kx++, k++)
                aoff[k] = qi * s->plane_bytes +
                          ((ky % s->sh) * s->sw + kx % s->sw) * s->phase_bytes +
                          (ky / s->sh) * s->wq + kx / s->sw;
    const int64_t pairs = ceil_div(s->ob, 2); /* a task covers 2 weight blocks: 12 channels */
    const int64_t tasks = (int64_t)s->n * s->groups * s->pblocks * pairs;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t pair = t % pairs, pb = (t / pairs) % s->pblocks;
        const int64_t grp = (t / pairs / s->pblocks) % s->groups;
        const int64_t n = t / pairs / s->pblocks / s->groups;
        const int64_t pos0 = pb * OB_PB;
        const int width = s->positions - pos0 > OB_PB / 2 ? OB_PB : OB_PB / 2;
        const uint8_t* a = planes + n * s->image_bytes + grp * s->q * s->plane_bytes + pos0;
        uint16_t counts[2 * OB_NR * OB_PB];
        int nch = 0;
        for (int64_t blk = 2 * pair; blk < 2 * pair + 2 && blk < s->ob; blk++) {
            const uint8_t* w = wnib + ((grp * s->ob + blk) * s->g) * OB_NR;
            tile(a, aoff, s->g, w, width, counts + (blk - 2 * pair) * OB_NR * OB_PB);
            const int64_t left = s->cog - blk * OB_NR;
            nch += (int)(left < OB_NR ? left : OB_NR);
        }
        transform_tile(s, out, fix, n, grp * s->cog + 2 * pair * OB_NR, nch, counts, pos0, width);
    }
    free(aoff);
    return 0;
}

/* ---------------------------------------------------------------- float max pooling */

/* PyTorch's max_pool2d (NCHW, dilation 1, floor mode, NaN propagates), which in this PyTorch
 * build is ~20x slower on NCHW than on channels-last tensors: a vertical max of the kernel's
 * rows into a row buffer (vectorised), then the horizontal max. */
MULTIVERSION
static void max_rows(const float* r, int64_t w, float* acc) {
    for (int64_t x = 0; x < w; x++) acc[x] = (r[x] > acc[x] || r[x] != r[x]) ? r[x] : acc[x];
}

int ob_max_pool2d(const float* x, int64_t planes, int h, int w, int kh, int kw, int sh, int sw, int ph,
                  int pw, int ho, int wo, float* out, int threads) {
    int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        float* acc = (float*)malloc(sizeof(float) * w);
        if (!acc) {
            failed = 1;
            continue;
        }
        for (int64_t oy = 0; oy < ho; oy++) {
            for (int64_t i = 0; i < w; i++) acc[i] = -INFINITY;
            for (int ky = 0; ky < kh; ky++) {
                const int64_t iy = oy * sh - ph + ky;
                if (iy >= 0 && iy < h) max_rows(x + (p * h + iy) * w, w, acc);
            }
            float* o = out + (p * ho + oy) * wo;
            for (int64_t ox = 0; ox < wo; ox++) {
                float m = -INFINITY;
                for (int kx = 0; kx < kw; kx++) {
                    const int64_t ix = ox * sw - pw + kx;
                    if (ix >= 0 && ix < w && (acc[ix] > m || acc[ix] != acc[ix])) m = acc[ix];
                }
                o[ox] = m;
            }
        }
        free(acc);
    }
    return failed ? -3 : 0;
}

/* ---------------------------------------------------------------- benchmarking aid */

/* n (rounded up to 4) dependent integer additions: about n cycles, to estimate the clock from Python */
int64_t ob_dependent_adds(int64_t n) {
    int64_t v = 0;
    for (int64_t i = 0; i < n; i += 4) { /* the empty asm keeps the chain of +1 from folding */
        v++;
        __asm__ volatile("" : "+r"(v));
        v++;
        __asm__ volatile("" : "+r"(v));
        v++;
        __asm__ volatile("" : "+r"(v));
        v++;
        __asm__ volatile("" : "+r"(v));
    }
    return v;
}
