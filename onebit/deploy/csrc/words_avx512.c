/* AVX-512 VPOPCNTDQ channel-word path (compiled for AVX-512 in this file only; selected after a
 * CPUID check, see conv.c).
 *
 * GEMM tile: 8 output channels x 16 positions per pass (two 512-bit vectors of 8 position words),
 * 16 accumulators of 64-bit counts. Per word row: 2 activation loads, 8 weight broadcasts, then
 * per channel and vector vpxorq + vpopcntq + vpaddq (512 binary MACs per 3 instructions). */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vpopcntdq")
#include <immintrin.h>

#include <string.h>

#include "onebit_kernels.h"

static void tile_words_avx512(const uint8_t* a, const int64_t* aoff, int g, const uint8_t* w8, int width,
                              uint16_t* counts) {
    const uint64_t* w = (const uint64_t*)w8;
    for (int p0 = 0; p0 < width; p0 += 16) {
        __m512i acc[OB_NR_WORDS][2];
        for (int r = 0; r < OB_NR_WORDS; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
        for (int k = 0; k < g; k++) {
            const uint8_t* row = a + aoff[k] + 8 * p0;
            const __m512i x0 = _mm512_loadu_si512(row), x1 = _mm512_loadu_si512(row + 64);
            const uint64_t* wk = w + (int64_t)k * OB_NR_WORDS;
            for (int r = 0; r < OB_NR_WORDS; r++) {
                const __m512i b = _mm512_set1_epi64((long long)wk[r]);
                acc[r][0] = _mm512_add_epi64(acc[r][0], _mm512_popcnt_epi64(_mm512_xor_si512(x0, b)));
                acc[r][1] = _mm512_add_epi64(acc[r][1], _mm512_popcnt_epi64(_mm512_xor_si512(x1, b)));
            }
        }
        for (int r = 0; r < OB_NR_WORDS; r++)
            for (int m = 0; m < 2; m++)
                _mm_storeu_si128((__m128i*)(counts + r * OB_PB + p0 + 8 * m), _mm512_cvtepi64_epi16(acc[r][m]));
    }
}

/* channel r's sign bytes -> a 64-bit mask over positions, OR-ed as bit r into 8 vectors of position words */
static void words_avx512(const uint8_t (*neg)[OB_PB], int nch, int width, uint64_t* out) {
    __m512i acc[OB_PB / 8];
    for (int v = 0; v < OB_PB / 8; v++) acc[v] = _mm512_setzero_si512();
    for (int r = 0; r < nch; r++) {
        const __m512i bytes = _mm512_loadu_si512(neg[r]);
        const __mmask64 m = _mm512_test_epi8_mask(bytes, bytes);
        const __m512i bit = _mm512_set1_epi64((long long)(1ull << r));
        for (int v = 0; v < OB_PB / 8; v++) acc[v] = _mm512_mask_or_epi64(acc[v], (__mmask8)(m >> (8 * v)), acc[v], bit);
    }
    for (int v = 0; v < width / 8; v++) _mm512_storeu_si512(out + 8 * v, acc[v]);
}

static void binarize_row64_avx512(const float* const* x, const float* t, int cnt, int n, uint64_t* dst) {
    for (int i = 0; i < n; i += 16) {
        const __mmask16 lanes = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
        for (int c = 0; c < cnt; c++) {
            const __m512 v = _mm512_maskz_loadu_ps(lanes, x[c] + i);
            const __mmask16 m = _mm512_mask_cmp_ps_mask(lanes, v, _mm512_set1_ps(t[c]), _CMP_NGE_UQ);
            const __m512i bit = _mm512_set1_epi64((long long)(1ull << c));
            lo = _mm512_mask_or_epi64(lo, (__mmask8)m, lo, bit);
            hi = _mm512_mask_or_epi64(hi, (__mmask8)(m >> 8), hi, bit);
        }
        _mm512_mask_storeu_epi64(dst + i, (__mmask8)lanes, lo);
        _mm512_mask_storeu_epi64(dst + i + 8, (__mmask8)(lanes >> 8), hi);
    }
}

/* The 64 x 64 bit matrix of 8 vectors (row i: 64-bit lane i % 8 of x[i / 8]) transposed in place: bit c
 * of row r goes to bit r of row c. Blocks of j = 32, 16, ..., 1 rows and columns swapped across the
 * diagonal: rows i and i + j (i & j == 0) exchange the high j bits of row i's 2j-bit groups with the low
 * j bits of row i + j's; rows 8 apart are whole vectors, nearer ones lanes of one vector. */
static void transpose64(__m512i x[8]) {
    static const uint64_t low[6] = {0x5555555555555555ull, 0x3333333333333333ull, 0x0f0f0f0f0f0f0f0full,
                                    0x00ff00ff00ff00ffull, 0x0000ffff0000ffffull, 0x00000000ffffffffull};
    for (int b = 5; b >= 3; b--) { /* j = 32, 16, 8: vectors v and v + j / 8 */
        const int j = 1 << b, step = j / 8;
        const __m512i m = _mm512_set1_epi64((long long)low[b]);
        for (int v = 0; v < 8; v++) {
            if (v & step) continue;
            const __m512i t = _mm512_and_si512(_mm512_xor_si512(_mm512_srli_epi64(x[v], j), x[v + step]), m);
            x[v] = _mm512_xor_si512(x[v], _mm512_slli_epi64(t, j));
            x[v + step] = _mm512_xor_si512(x[v + step], t);
        }
    }
    for (int b = 2; b >= 0; b--) { /* j = 4, 2, 1: lanes i and i ^ j of each vector */
        const int j = 1 << b;
        const __m512i partner = _mm512_set_epi64(7 ^ j, 6 ^ j, 5 ^ j, 4 ^ j, 3 ^ j, 2 ^ j, 1 ^ j, 0 ^ j);
        __mmask8 high = 0; /* lanes i with i & j: they take their partner's high bits into their low ones */
        for (int i = 0; i < 8; i++) high |= (__mmask8)((i & j ? 1 : 0) << i);
        const __m512i keep_lo = _mm512_set1_epi64((long long)(low[b] << j)), keep_hi = _mm512_set1_epi64((long long)low[b]);
        const __m512i take = _mm512_mask_blend_epi64(high, keep_lo, keep_hi); /* the bits a lane replaces */
        for (int v = 0; v < 8; v++) {
            const __m512i y = _mm512_permutexvar_epi64(partner, x[v]);
            const __m512i moved = _mm512_mask_srli_epi64(_mm512_slli_epi64(y, j), high, y, j);
            x[v] = _mm512_ternarylogic_epi64(take, moved, x[v], 0xca); /* take ? moved : x */
        }
    }
}

/* One task of the output transform (transform_avx512): where its 16-lane vectors of positions go. */
typedef struct {
    const ob_conv* s;
    const ob_output* out;
    const ob_padding* fix;
    int64_t o0, plane0; /* first channel, offset of its output plane */
    int nch;
    const uint16_t* counts;
    /* per vector: its pieces (the lanes of one output row segment, lane i at plane offset base + i) */
    __mmask16 mask[OB_PB / 16][16];
    int64_t base[OB_PB / 16][16];
    int npieces[OB_PB / 16];
    int32_t cls[OB_PB] __attribute__((aligned(64))); /* zero-padding class of each position (0: none) */
    uint16_t neg[OB_SPAN][OB_PB / 16] __attribute__((aligned(64))); /* sign bits: channel r, vector v */
} ob_task;

/* Vector v of every channel of task k (v outer, channels inner: the vector's pieces stay in registers).
 * whole: one piece of 16 lanes; edge: some lane reads the zero padding; res, thr: a residual, sign bits
 * from the float output (else from the integer thresholds, if the next layer takes bits). Constant
 * arguments: the compiler makes one loop of each combination. */
static inline __attribute__((always_inline)) void vector_channels(ob_task* k, int v, const int whole, const int edge,
                                                                  const int res, const int thr) {
    const ob_output* out = k->out;
    const int64_t hw = (int64_t)k->s->ho * k->s->wo, o0 = k->o0;
    const int flags = out->next_planes && !thr, nch = k->nch;
    const __m512i k_bits = _mm512_set1_epi32(k->s->k_bits);
    const __m512 k_float = _mm512_set1_ps((float)k->s->k_bits), two = _mm512_set1_ps(2.0f);
    const __m512i cls = _mm512_load_si512(k->cls + 16 * v);
    const int ncls = edge ? k->fix->n_rows * k->fix->n_cols : 0;
    const __mmask16 classes = (__mmask16)((1u << ncls) - 1);
    const int32_t* corr = edge ? k->fix->value + o0 * ncls : NULL;
    const int np = k->npieces[v];
    const __mmask16 m0 = k->mask[v][0], m1 = np > 1 ? k->mask[v][1] : 0;
    const int64_t off1 = np > 1 ? k->base[v][1] - k->base[v][0] : 0; /* piece 1 from piece 0 */
    const float *pre = out->pre ? out->pre + o0 : NULL, *mult = out->mult + o0, *bias = out->bias + o0;
    const float* t = thr ? out->float_thresh + o0 : NULL;
    const float* rp = res ? out->residual + k->plane0 + k->base[v][0] : NULL; /* lane 0 of piece 0 */
    float* dst = out->out ? out->out + k->plane0 + k->base[v][0] : NULL;
    const uint16_t* count = k->counts + 16 * v;
    uint16_t* neg = &k->neg[0][v];
    for (int r = 0; r < nch; r++, count += OB_PB, neg += OB_PB / 16) {
        const __m512i c = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)count));
        __m512i d = _mm512_setzero_si512(), kc = k_bits;
        if (edge) kc = _mm512_sub_epi32(k_bits, _mm512_permutexvar_epi32(cls, _mm512_maskz_loadu_epi32(classes, corr + r * ncls)));
        if (flags) d = _mm512_sub_epi32(kc, _mm512_add_epi32(c, c));
        __mmask16 lt = 0;
        if (dst) { /* d = kc - 2 c in float: integers below 2^24, exact */
            __m512 y = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(c), two, edge ? _mm512_cvtepi32_ps(kc) : k_float);
            if (pre) y = _mm512_mul_ps(y, _mm512_set1_ps(pre[r]));
            y = _mm512_fmadd_ps(y, _mm512_set1_ps(mult[r]), _mm512_set1_ps(bias[r]));
            if (whole) {
                if (res) y = _mm512_add_ps(y, _mm512_loadu_ps(rp));
                _mm512_storeu_ps(dst, y);
            } else { /* pieces 0 and 1 (mask 0 if none) from registers, more (rows under 16 positions) in a loop */
                if (res) {
                    __m512 rv = _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(m0, rp), m1, rp + off1);
                    for (int i = 2; i < np; i++) rv = _mm512_mask_loadu_ps(rv, k->mask[v][i], rp + k->base[v][i] - k->base[v][0]);
                    y = _mm512_add_ps(y, rv);
                }
                _mm512_mask_storeu_ps(dst, m0, y);
                _mm512_mask_storeu_ps(dst + off1, m1, y);
                for (int i = 2; i < np; i++) _mm512_mask_storeu_ps(dst + k->base[v][i] - k->base[v][0], k->mask[v][i], y);
            }
            if (thr) lt = _mm512_cmp_ps_mask(y, _mm512_set1_ps(t[r]), _CMP_NGE_UQ);
        }
        if (flags) lt = _mm512_cmplt_epi32_mask(d, _mm512_set1_epi32(out->thresh[o0 + r])) ^ (out->flip[o0 + r] ? 0xffff : 0);
        *neg = lt;
        /* the planes are 64 streams that no hardware prefetcher follows: the lines of the next tile (the next
         * task's, 64 positions on) are asked for now, and arrive during its GEMM */
        if (dst) _mm_prefetch((const char*)(dst + OB_PB), _MM_HINT_T0);
        if (rp && (const float*)dst != rp) _mm_prefetch((const char*)(rp + OB_PB), _MM_HINT_T0);
        if (rp) rp += hw;
        if (dst) dst += hw;
    }
}

/* The output transform of one task with positions on 16 lanes: per channel, d = k_bits - fix[class] -
 * 2 count (class: the position's zero-padding class, by a lane permute of the channel's corrections),
 * v = fma(d * pre, mult, bias) (+ residual), stored by masked stores per output row segment (a vector
 * that spans the end of a row is stored in pieces, the columns between rows skipped), and the next
 * layer's sign bits as a compare mask per vector; the task's 64 x 64 (channel x position) bits are then
 * transposed into words. Needs at most 16 padding classes (class 0, no padding, corrects by 0) and a
 * next layer (if any) in words; not used for float output alone on rows under 16 positions. */
static int transform_avx512(const ob_conv* s, const ob_output* out, const ob_padding* fix, const ob_segment* seg,
                            int nseg, int64_t n, int64_t o0, int nch, const uint16_t* counts, int width,
                            uint64_t* words) {
    if (out->next_planes && !out->next->words) return 0;
    if (fix && fix->n_rows * fix->n_cols > 16) return 0;
    /* rows narrower than a vector, float output only: every vector is stored in 2-3 pieces and a task has 16
     * channels; the per-channel loops (one masked 8-lane vector per row) measured 12-17% faster at 7x7 */
    if (!out->next_planes && s->wo < 16) return 0;
    ob_task k;
    k.s = s, k.out = out, k.fix = fix, k.o0 = o0, k.plane0 = (n * s->cout + o0) * (int64_t)s->ho * s->wo;
    k.nch = nch, k.counts = counts;
    const int nvec = width / 16;
    __m512i cls[OB_PB / 16];
    for (int v = 0; v < nvec; v++) k.npieces[v] = 0, k.mask[v][0] = 0, k.base[v][0] = 0, cls[v] = _mm512_setzero_si512();
    for (int i = 0; i < nseg; i++) {
        const ob_segment* g = &seg[i];
        const int p0 = (int)g->p, p1 = (int)(g->p + g->x1 - g->x0);
        for (int v = p0 / 16; v * 16 < p1; v++) {
            const int lo = p0 > 16 * v ? p0 - 16 * v : 0, hi = p1 < 16 * v + 16 ? p1 - 16 * v : 16;
            const __mmask16 m = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
            k.mask[v][k.npieces[v]] = m;
            k.base[v][k.npieces[v]++] = g->at - g->p + 16 * v;
            if (fix) { /* lane i: row class * n_cols + column class of column x0 - p + 16 v + i */
                const __m512i col = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, fix->col_class + g->x0 - g->p + 16 * v));
                cls[v] = _mm512_mask_add_epi32(cls[v], m, col, _mm512_set1_epi32(fix->row_class[g->y] * fix->n_cols));
            }
        }
    }
    const int res = out->residual != NULL, thr = out->next_planes && out->float_thresh;
    for (int v = 0; v < nvec; v++) {
        const int whole = k.npieces[v] == 1 && k.mask[v][0] == 0xffff;
        const int edge = _mm512_test_epi32_mask(cls[v], cls[v]) != 0;
        _mm512_store_si512(k.cls + 16 * v, cls[v]);
        /* the common combinations, specialised */
        if (whole && !edge && res && thr) vector_channels(&k, v, 1, 0, 1, 1);
        else if (whole && !edge && !res && !thr) vector_channels(&k, v, 1, 0, 0, 0);
        else if (whole && edge && res && thr) vector_channels(&k, v, 1, 1, 1, 1);
        else if (whole && edge && !res && !thr) vector_channels(&k, v, 1, 1, 0, 0);
        else if (!whole && res && thr) vector_channels(&k, v, 0, edge, 1, 1);
        else if (!whole && !res && !thr) vector_channels(&k, v, 0, edge, 0, 0);
        else vector_channels(&k, v, whole, edge, res, thr);
    }
    if (!out->next_planes) return 1;
    __m512i bits[8]; /* channels past nch: bit 0 (positions past width are not stored) */
    for (int r = nch; r < OB_SPAN; r++) memset(k.neg[r], 0, sizeof(k.neg[r]));
    for (int v = 0; v < 8; v++) bits[v] = _mm512_load_si512(k.neg[8 * v]);
    transpose64(bits);
    for (int v = 0; v < nvec * 2; v++) _mm512_storeu_si512(words + 8 * v, bits[v]);
    return 1;
}

const ob_word_ops ob_word_ops_avx512 = {tile_words_avx512, words_avx512, binarize_row64_avx512, transform_avx512};

/* The tile's instruction mix in registers only (no loads; 16 independent sums, 26 registers):
 * n rounds of 16 x (vpxorq + vpopcntq + vpaddq) = 16 x 512 binary MACs, for the benchmark's ceiling. */
int64_t ob_popcount_loop_avx512(int64_t n) {
    __m512i acc[16], x[8];
    for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_si512();
    for (int i = 0; i < 8; i++) x[i] = _mm512_set1_epi64(0x0123456789abcdefll * (i + 1));
    const __m512i w0 = _mm512_set1_epi64(0x5555555555555555ll), w1 = _mm512_set1_epi64(0x3333333333333333ll);
    for (int64_t k = 0; k < n; k++) {
        for (int i = 0; i < 8; i++) {
            acc[i] = _mm512_add_epi64(acc[i], _mm512_popcnt_epi64(_mm512_xor_si512(x[i], w0)));
            acc[8 + i] = _mm512_add_epi64(acc[8 + i], _mm512_popcnt_epi64(_mm512_xor_si512(x[i], w1)));
        }
        /* the inputs "change" every round: nothing is hoisted out of the loop */
        __asm__ volatile("" : "+v"(x[0]), "+v"(x[1]), "+v"(x[2]), "+v"(x[3]), "+v"(x[4]), "+v"(x[5]), "+v"(x[6]), "+v"(x[7]));
    }
    __m512i s = acc[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_epi64(s, acc[i]);
    return _mm512_reduce_add_epi64(s);
}
#endif
