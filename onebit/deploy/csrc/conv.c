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

#define OB_ABI_VERSION 9 /* bump when a struct of onebit_kernels.h or an ob_ signature changes */

#define POP4(x) (((x) & 1) + (((x) >> 1) & 1) + (((x) >> 2) & 1) + (((x) >> 3) & 1))
#define ROW(b)                                                                               \
    {POP4(0 ^ b), POP4(1 ^ b), POP4(2 ^ b), POP4(3 ^ b), POP4(4 ^ b), POP4(5 ^ b), POP4(6 ^ b), \
     POP4(7 ^ b), POP4(8 ^ b), POP4(9 ^ b), POP4(10 ^ b), POP4(11 ^ b), POP4(12 ^ b),          \
     POP4(13 ^ b), POP4(14 ^ b), POP4(15 ^ b)}
const uint8_t ob_nibble_popcount[16][16] __attribute__((aligned(64))) = {
    ROW(0), ROW(1), ROW(2),  ROW(3),  ROW(4),  ROW(5),  ROW(6),  ROW(7),
    ROW(8), ROW(9), ROW(10), ROW(11), ROW(12), ROW(13), ROW(14), ROW(15)};

/* ---------------------------------------------------------------- kernel selection */

/* A code path: its nibble tile and float loops, its channel-word layout (NULL: none) and its AMX GEMM of
 * channel words (NULL: none). */
typedef struct {
    const char* name;
    ob_tile_fn tile;
    const ob_float_ops* ops;
    const ob_word_ops* words;
    ob_fconv_row_fn fconv_row;
    int (*supported)(void);
    const ob_amx_ops* amx;
} ob_kernel;

static int always(void) { return 1; }
#if defined(__x86_64__)
static int has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
}
/* the avx512 path runs AVX2 code too (its nibble tile and float loops) */
static int has_avx512(void) {
    return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq");
}
#endif
#ifdef OB_HAVE_AMX
/* the amx path is the avx512 path with AMX int8 (CPUID, and the OS lets this process use the tile data) */
static int has_amx(void) {
    return has_avx512() && ob_amx_usable();
}
#endif

static const ob_kernel KERNELS[] = {
    {"scalar", ob_tile_scalar, &ob_float_ops_scalar, &ob_word_ops_scalar, NULL, always, NULL},
#if defined(__x86_64__)
    {"avx2", ob_tile_avx2, &ob_float_ops_avx2, NULL, NULL, has_avx2, NULL},
    {"avx512", ob_tile_avx2, &ob_float_ops_avx2, &ob_word_ops_avx512, ob_fconv_row_avx512, has_avx512, NULL},
#endif
#ifdef OB_HAVE_AMX
    {"amx", ob_tile_avx2, &ob_float_ops_avx2, &ob_word_ops_avx512, ob_fconv_row_avx512, has_amx, &ob_amx_ops_int8},
#endif
};
#define N_KERNELS ((int)(sizeof(KERNELS) / sizeof(KERNELS[0])))

static const ob_kernel* current = NULL;

/* "auto": the last path the CPU runs, except amx (opt-in: on Bi-Real-18 it measured no faster than avx512,
 * see words_amx.c) */
static const ob_kernel* best_kernel(void) {
    for (int i = N_KERNELS - 1; i >= 0; i--)
        if (!KERNELS[i].amx && KERNELS[i].supported()) return &KERNELS[i];
    return &KERNELS[0];
}

int ob_abi_version(void) { return OB_ABI_VERSION; }

/* The layout constants and limits the Python side needs, by name (-1 for an unknown name). */
int ob_constant(const char *name) {
    static const struct { const char *name; int value; } constants[] = {
        {"nr", OB_NR}, {"nr_words", OB_NR_WORDS},
        {"max_kernel_side", OB_MAX_KERNEL_SIDE}, {"max_dot_length", OB_MAX_DOT_LENGTH},
    };
    for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++)
        if (!strcmp(name, constants[i].name)) return constants[i].value;
    return -1;
}

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

static const ob_kernel* kernel(void) {
    if (!current) current = best_kernel();
    return current;
}

const ob_float_ops* ob_current_float_ops(void) { return kernel()->ops; }

ob_fconv_row_fn ob_current_fconv_row(void) { return kernel()->fconv_row; }

const char* ob_kernel_name(void) { return kernel()->name; }

/* 1 if the selected code path has the channel-word layout */
int ob_kernel_words(void) { return kernel()->words != NULL; }

/* 1 if the selected code path runs convolution s on its AMX GEMM (its weights in the AMX layout, see ob_conv_run) */
int ob_conv_amx(const ob_conv* s) { return s->words && kernel()->amx && kernel()->amx->pays(s); }

/* ---------------------------------------------------------------- layout */

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int ob_conv_init(ob_conv* s) {
    if (s->n < 1 || s->c < 1 || s->h < 1 || s->w < 1 || s->cout < 1 || s->groups < 1) return -1;
    if (s->c % s->groups || s->cout % s->groups) return -1;
    if (s->kh < 1 || s->kw < 1 || s->kh > OB_MAX_KERNEL_SIDE || s->kw > OB_MAX_KERNEL_SIDE) return -1;
    if (s->sh < 1 || s->sw < 1 || s->ph < 0 || s->pw < 0) return -1;
    if (s->words != 0 && s->words != 1) return -1;
    if (s->h + 2 * s->ph < s->kh || s->w + 2 * s->pw < s->kw) return -1;
    s->ho = (s->h + 2 * s->ph - s->kh) / s->sh + 1;
    s->wo = (s->w + 2 * s->pw - s->kw) / s->sw + 1;
    s->cg = s->c / s->groups;
    s->cog = s->cout / s->groups;
    s->q = (int32_t)ceil_div(s->cg, s->words ? 64 : 4);
    s->unit = s->words ? 8 : 1;
    s->nr = s->words ? OB_NR_WORDS : OB_NR;
    s->g = s->kh * s->kw * s->q;
    s->k_bits = s->kh * s->kw * s->cg;
    if (s->k_bits > OB_MAX_DOT_LENGTH) return -1;
    if (s->sh == 1 && s->sw == 1) { /* rows share their padding columns unless pw >= kw */
        s->wq = s->pw < s->kw ? s->w + s->pw : s->w + 2 * s->pw;
        s->hq = s->h + 2 * s->ph + 1;
    } else {
        s->wq = (int32_t)ceil_div(s->w + 2 * s->pw, s->sw);
        s->hq = (int32_t)ceil_div(s->h + 2 * s->ph, s->sh) + 1;
    }
    s->ob = (int32_t)ceil_div(s->cog, s->nr);
    s->positions = (int64_t)s->ho * s->wq;
    s->pblocks = (int32_t)ceil_div(s->positions, OB_PB);
    s->phase_bytes = (int64_t)s->hq * s->wq * s->unit;
    s->plane_bytes = (int64_t)s->sh * s->sw * s->phase_bytes;
    s->image_bytes = (int64_t)s->groups * s->q * s->plane_bytes;
    s->input_bytes = s->n * s->image_bytes + (2 * OB_PB + s->kw + s->wq) * (int64_t)s->unit;
    return 0;
}

/* offset in units (nibble bytes or words), inside one plane of layout s, of input pixel (iy, ix) */
static inline int64_t pixel_offset(const ob_conv* s, int64_t iy, int64_t ix) {
    const int64_t y = iy + s->ph, x = ix + s->pw;
    if (s->sh == 1 && s->sw == 1) return y * s->wq + x;
    return ((y % s->sh) * s->sw + x % s->sw) * (s->phase_bytes / s->unit) + (y / s->sh) * s->wq + x / s->sw;
}

/* write the units (T: nibble bytes or words) of a row segment of input pixels (row y, columns x0...) into a
 * plane of layout nx */
#define STORE_UNITS(name, T)                                                                          \
    static void name(const ob_conv* nx, uint8_t* plane_bytes, int64_t y, int64_t x0, const T* units,  \
                     int64_t len) {                                                                   \
        T* plane = (T*)plane_bytes;                                                                   \
        if (nx->sh == 1 && nx->sw == 1) { /* contiguous */                                            \
            memcpy(plane + pixel_offset(nx, y, x0), units, sizeof(T) * len);                          \
            return;                                                                                   \
        }                                                                                             \
        if (nx->sw == 2 && len > 1) { /* the common stride: a constant step the compiler vectorises */ \
            T *even = plane + pixel_offset(nx, y, x0), *odd = plane + pixel_offset(nx, y, x0 + 1);    \
            for (int64_t j = 0; j < len / 2; j++) {                                                   \
                even[j] = units[2 * j];                                                               \
                odd[j] = units[2 * j + 1];                                                            \
            }                                                                                         \
            if (len % 2) even[len / 2] = units[len - 1];                                              \
            return;                                                                                   \
        }                                                                                             \
        for (int k = 0; k < nx->sw && k < len; k++) { /* every sw-th column to one phase */           \
            T* dst = plane + pixel_offset(nx, y, x0 + k);                                             \
            for (int64_t i = k, j = 0; i < len; i += nx->sw, j++) dst[j] = units[i];                  \
        }                                                                                             \
    }
STORE_UNITS(store_nibbles, uint8_t)
STORE_UNITS(store_words, uint64_t)

/* ---------------------------------------------------------------- binarize */

/* ob_binarize into channel words: one job per input row of one word plane */
static int binarize_words(const ob_conv* s, const float* x, const float* thr, int64_t thr_stride_n, uint8_t* planes,
                          int threads) {
    const int64_t hw = (int64_t)s->h * s->w;
    const int64_t jobs = (int64_t)s->n * s->groups * s->q * s->h;
    const ob_word_ops* ops = kernel()->words;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1 && jobs > 1)
    {
        uint64_t* row = (uint64_t*)malloc(sizeof(uint64_t) * s->w); /* one per thread */
        if (!row) failed = 1;
#pragma omp for schedule(static)
        for (int64_t job = 0; job < jobs; job++) {
            if (!row) continue;
            const int64_t iy = job % s->h, plane_index = job / s->h; /* (n, group, word) */
            const int64_t n = plane_index / ((int64_t)s->groups * s->q), gq = plane_index % ((int64_t)s->groups * s->q);
            const int64_t c0 = (gq / s->q) * s->cg + 64 * (gq % s->q);
            const int cnt = (int)(s->cg - 64 * (gq % s->q) < 64 ? s->cg - 64 * (gq % s->q) : 64);
            const float* src[64];
            float t[64];
            for (int i = 0; i < cnt; i++) {
                src[i] = x + (n * s->c + c0 + i) * hw + iy * s->w;
                t[i] = thr ? thr[n * thr_stride_n + c0 + i] : 0.0f;
            }
            ops->binarize_row64(src, t, cnt, s->w, row);
            store_words(s, planes + n * s->image_bytes + gq * s->plane_bytes, iy, 0, row, s->w);
        }
        free(row);
    }
    return failed ? -3 : 0;
}

int ob_binarize(const ob_conv* s, const float* x, const float* thr, int64_t thr_stride_n,
                uint8_t* planes, int threads) {
    if (s->words) {
        if (!kernel()->words) return -2;
        return binarize_words(s, x, thr, thr_stride_n, planes, threads);
    }
    const int64_t hw = (int64_t)s->h * s->w;
    const int64_t jobs = (int64_t)s->n * s->groups * s->q;
    const int strided = s->sh != 1 || s->sw != 1;
    const ob_float_ops* ops = kernel()->ops;
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
            ops->binarize_row4(r[0], r[1], r[2], r[3], t[0], t[1], t[2], t[3], s->w, dst);
            if (strided) store_nibbles(s, plane, iy, 0, row, s->w);
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

static int tile_segments(const ob_conv* s, int64_t pos0, int width, ob_segment* seg) {
    int k = 0;
    for (int64_t y = pos0 / s->wq; y < s->ho && y * s->wq < pos0 + width; y++) {
        int64_t x0 = pos0 - y * s->wq, x1 = pos0 + width - y * s->wq;
        if (x0 < 0) x0 = 0;
        if (x1 > s->wo) x1 = s->wo;
        if (x0 < x1) seg[k++] = (ob_segment){y, x0, x1, y * s->wq + x0 - pos0, y * s->wo + x0, 0};
    }
    return k;
}

static int task_transform = 1; /* 0: the per-channel loops even where the path has a task transform */

/* use (1) or not (0) the code path's whole-task output transform (same results: for before/after timing in
 * one process); returns the previous setting */
int ob_task_transform(int on) {
    const int was = task_transform;
    task_transform = on != 0;
    return was;
}

/* the words of one tile (channels from o0: one whole word, checked by ob_conv_run) into the next layer's planes */
static void store_word_segments(const ob_output* out, int64_t n, int64_t o0, const ob_segment* seg,
                                int nseg, const uint64_t* words) {
    const ob_conv* nx = out->next;
    const int64_t j = o0 % nx->cg;
    uint8_t* plane = out->next_planes + n * nx->image_bytes + ((o0 / nx->cg) * nx->q + j / 64) * nx->plane_bytes;
    for (int k = 0; k < nseg; k++) store_words(nx, plane, seg[k].y, seg[k].x0, words + seg[k].p, seg[k].x1 - seg[k].x0);
}

/* The transform of the channels [o0, o0 + nch) of one tile of image n, per row segment, straight
 * from the counts. With zero padding, the padded taps contribute 0, not the +1 * w the bits
 * computed: fix->value[o][row class][column class] is subtracted from the dot product. A
 * segment's interior correction (column class 0) is a constant of the vector loop; the few
 * columns that read the left or right padding ("edges") get their own (channel_float). */
static void transform_tile(const ob_conv* s, const ob_output* out, const ob_padding* fix, int64_t n, int64_t o0,
                           int nch, const uint16_t* counts, int64_t pos0, int width) {
    const ob_float_ops* ops = kernel()->ops;
    ob_segment seg[OB_PB + 1];
    ob_edge edge[OB_PB];
    ob_tile_rows rows = {seg, tile_segments(s, pos0, width, seg), edge, 0, s->k_bits};
    const ob_word_ops* wops = kernel()->words;
    uint64_t words[OB_PB];
    if (task_transform && wops && wops->transform &&
        wops->transform(s, out, fix, seg, rows.nseg, n, o0, nch, counts, width, words)) {
        if (out->next_planes) store_word_segments(out, n, o0, seg, rows.nseg, words);
        return;
    }
    if (fix) {
        const int64_t left = ceil_div(s->pw, s->sw); /* columns [0, left) and [right, wo) read padding */
        const int64_t right = s->w + s->pw >= s->kw ? (s->w + s->pw - s->kw) / s->sw + 1 : 0;
        for (int k = 0; k < rows.nseg; k++) {
            ob_segment* g = &seg[k];
            g->fix = fix->row_class[g->y] * fix->n_cols;
            for (int64_t x = g->x0; x < g->x1; x++) {
                if (x >= left && x < right) x = right; /* skip the interior */
                if (x >= g->x1) break;
                edge[rows.nedge++] = (ob_edge){(int32_t)(g->p + x - g->x0), g->fix + fix->col_class[x], g->y * s->wo + x};
            }
        }
    }
    /* sign bits for the next layer, per channel; 3 zero rows (which also take the 8-byte writes of
     * a segment's last vector past the last channel's row) */
    uint8_t neg[OB_SPAN + 3][OB_PB];
    const int64_t hw = (int64_t)s->ho * s->wo;
    const float* t = out->next_planes ? out->float_thresh : NULL;
    for (int r = 0; r < nch; r++) {
        const int64_t o = o0 + r, plane = (n * s->cout + o) * hw;
        const int32_t* v = fix ? fix->value + o * fix->n_rows * fix->n_cols : NULL;
        if (out->out)
            ops->channel_float(&rows, counts + r * OB_PB, v, out->pre ? out->pre[o] : 1.0f, out->mult[o], out->bias[o],
                               out->residual ? out->residual + plane : NULL, out->out + plane, t ? t + o : NULL, neg[r]);
        if (out->next_planes && !t) ops->channel_flags(&rows, counts + r * OB_PB, v, out->thresh[o], out->flip[o], neg[r]);
    }
    if (!out->next_planes) return;
    const ob_conv* nx = out->next;
    if (nx->words) {
        wops->words((const uint8_t(*)[OB_PB])neg, nch, width, words);
        store_word_segments(out, n, o0, seg, rows.nseg, words);
        return;
    }
    memset(neg[nch], 0, sizeof(neg[0]) * 3); /* channels past the last one: bit 0 */
    for (int r0 = 0; r0 < nch; r0 += 4) { /* whole nibbles of the next layer's planes */
        const int64_t c = o0 + r0, j = c % nx->cg;
        uint8_t* plane = out->next_planes + n * nx->image_bytes + ((c / nx->cg) * nx->q + j / 4) * nx->plane_bytes;
        const int last = nch - 1;
        uint8_t bytes[OB_PB];
        ops->nibbles(neg[r0], neg[r0 + 1 <= last ? r0 + 1 : nch], neg[r0 + 2 <= last ? r0 + 2 : nch + 1],
                     neg[r0 + 3 <= last ? r0 + 3 : nch + 2], width, bytes);
        for (int k = 0; k < rows.nseg; k++)
            store_nibbles(nx, plane, seg[k].y, seg[k].x0, bytes + seg[k].p, seg[k].x1 - seg[k].x0);
    }
}

/* ---------------------------------------------------------------- convolution */

/* Run the convolution on planes laid out for s. w: [groups][ob][g][nr] weight nibbles << 4 (uint8) or
 * weight words (uint64), g = (plane, ky, kx), or when ob_conv_amx(s): [groups][ceil(cog / 16)] tiles of the
 * AMX layout (ob_amx_ops); fix: the zero-padding correction (NULL for +1 padding).
 * A task is a span of output channels (2 weight blocks, or one whole word of the next layer's planes
 * when they are channel words) on one tile of OB_PB positions. Bits output requires whole output
 * nibbles per task: groups == 1 or cog % 4 == 0, and the next layer's groups == 1 or cg % 4 == 0
 * (checked by the caller); whole words: s in words, and 64 | cog and 64 | the next layer's cg unless
 * their groups are 1 (checked here: -1). Only the images [n0, n1) of the batch are computed (the
 * pointers stay those of the whole batch): a caller may run a chain of layers image by image, so
 * that one image's activations stay in the caches. */
int ob_conv_run(const ob_conv* s, const uint8_t* planes, const uint8_t* w, const ob_padding* fix,
                const ob_output* out, int64_t n0, int64_t n1, int threads) {
    if (n0 < 0 || n1 > s->n || n0 >= n1) return -4;
    const ob_kernel* kern = kernel();
    const int next_words = out->next_planes && out->next->words;
    if ((s->words || next_words) && !kern->words) return -2;
    if (next_words && (!s->words || !(s->groups == 1 || s->cog % 64 == 0) ||
                       !(out->next->groups == 1 || out->next->cg % 64 == 0)))
        return -1;
    const ob_tile_fn tile = s->words ? kern->words->tile : kern->tile;
    const ob_amx_ops* amx = ob_conv_amx(s) ? kern->amx : NULL;
    int64_t* aoff = (int64_t*)malloc(sizeof(int64_t) * s->g);
    if (!aoff) return -3;
    for (int64_t qi = 0, i = 0; qi < s->q; qi++)
        for (int ky = 0; ky < s->kh; ky++)
            for (int kx = 0; kx < s->kw; kx++, i++)
                aoff[i] = qi * s->plane_bytes + ((ky % s->sh) * s->sw + kx % s->sw) * s->phase_bytes +
                          ((ky / s->sh) * s->wq + kx / s->sw) * (int64_t)s->unit;
    const int writes = out->out || out->next_planes;
    const int span = next_words ? OB_SPAN : 2 * s->nr;
    const int64_t spans = ceil_div(s->cog, span);
    const int64_t tasks = (n1 - n0) * s->groups * s->pblocks * spans;
    int8_t* bytes = NULL; /* AMX: the planes of images [n0, n1) and the read slack after them, 64 bytes per word */
    if (amx) {
        const int64_t first = n0 * s->image_bytes / 8;
        const int64_t count = ((n1 - n0) * s->image_bytes + s->input_bytes - s->n * s->image_bytes) / 8;
        const int64_t chunk = 4096;
        bytes = (int8_t*)aligned_alloc(64, 64 * count);
        if (!bytes) {
            free(aoff);
            return -3;
        }
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && count > chunk)
        for (int64_t i = 0; i < count; i += chunk)
            amx->expand(planes + 8 * (first + i), count - i < chunk ? count - i : chunk, bytes + 64 * i);
    }
    /* one thread: a plain loop (no scheduling calls per task); several: one contiguous run of tasks per
     * thread. Neighbouring tiles share cache lines of every output plane (NCHW) and of the next layer's
     * planes: handed out in turn (dynamic), two cores write the same lines at once and the second core
     * gains nothing; and a thread reads in the next layer the positions it wrote (its own L2). */
#pragma omp parallel num_threads(threads) if (threads > 1 && tasks > 1)
    {
        if (amx) amx->begin();
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; t++) {
            const int64_t pb = t % s->pblocks, sp = (t / s->pblocks) % spans;
            const int64_t grp = (t / s->pblocks / spans) % s->groups, n = n0 + t / s->pblocks / spans / s->groups;
            const int64_t pos0 = pb * OB_PB;
            const int width = s->positions - pos0 > OB_PB / 2 ? OB_PB : OB_PB / 2;
            const uint8_t* a = planes + n * s->image_bytes + grp * s->q * s->plane_bytes + pos0 * s->unit;
            uint16_t counts[OB_SPAN * OB_PB + 8]; /* + 8: the output transform loads 8 counts at a time */
            const int64_t c0 = sp * span, c1 = c0 + span < s->cog ? c0 + span : s->cog;
            if (amx)
                amx->span(bytes + 8 * ((n - n0) * s->image_bytes + grp * s->q * s->plane_bytes + pos0 * s->unit),
                          aoff, s->g, (const int8_t*)w + (grp * ceil_div(s->cog, 16) + c0 / 16) * s->g * 1024,
                          (int)(c1 - c0), width, counts);
            else
                for (int64_t blk = c0 / s->nr; blk * s->nr < c1; blk++)
                    tile(a, aoff, s->g, w + (grp * s->ob + blk) * s->g * s->nr * s->unit, width,
                         counts + (blk - c0 / s->nr) * s->nr * OB_PB);
            if (writes) transform_tile(s, out, fix, n, grp * s->cog + c0, (int)(c1 - c0), counts, pos0, width);
        }
        if (amx) amx->end();
    }
    free(bytes);
    free(aoff);
    return 0;
}

/* ---------------------------------------------------------------- benchmarking aid */

#if defined(__x86_64__)
int64_t ob_popcount_loop_avx512(int64_t n);
#endif

/* the avx512 word tile's instruction mix in registers, n rounds of 16 x 512 binary MACs (-1: this CPU
 * has no AVX-512 VPOPCNTDQ, or not x86-64) */
int64_t ob_popcount_loop(int64_t n) {
#if defined(__x86_64__)
    if (has_avx512()) return ob_popcount_loop_avx512(n);
#endif
    (void)n;
    return -1;
}

/* n rounds of 4 AMX TDPBSSD (16384 int8 MACs each) on tiles in registers (-1: this CPU or OS has no AMX-INT8) */
int64_t ob_amx_loop(int64_t n) {
#ifdef OB_HAVE_AMX
    if (has_amx()) return ob_amx_loop_int8(n);
#endif
    (void)n;
    return -1;
}

/* n (rounded up to 4) dependent integer additions: about n cycles, to estimate the clock from Python.
 * Register + register adds: recent Intel cores fold chains of add-immediate at rename (0 cycles). */
int64_t ob_dependent_adds(int64_t n) {
    int64_t v = 1;
    for (int64_t i = 0; i < n; i += 4)
        __asm__ volatile("add %0, %0\n\tadd %0, %0\n\tadd %0, %0\n\tadd %0, %0" : "+r"(v));
    return v;
}
