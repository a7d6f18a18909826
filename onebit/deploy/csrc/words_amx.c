/* AMX int8 GEMM of the channel-word layout (compiled for AMX and AVX-512 in this file only; selected after
 * a CPUID check and the Linux permission to use the tile registers, see conv.c).
 *
 * Bits as signs: bit b -> byte 1 - 2b (+1 / -1). A 64-bit word of 64 channels becomes 64 bytes; over the
 * padded dot product of K = 64 g bytes (tail channels are bit 0 on both sides: +1 * +1),
 * dot = K - 2 popcount(a ^ w), so count = (K - dot) / 2 is exactly the popcount the output transform takes.
 * TDPBSSD: C[16][16] int32 += A[16][64] int8 . B[64][16] int8, B in VNNI order (4 consecutive K bytes of one
 * column per dword): 16384 MACs per instruction, 2.7-2.8x the binary MACs per cycle of vpopcntq (measured).
 *
 * A = the input positions: the input planes expanded once per call to bytes (64 per word, so a word row
 * k of 16 consecutive positions is 16 aligned rows of 64 bytes at 8 * aoff[k] + 64 p, one tile load).
 * B = the weights, expanded once per layer by the caller (bitconv.amx_weights): [groups][ceil(cog / 16)][g]
 * tiles of [16 rows (channels 4 kk .. 4 kk + 3 of the word)][16 output channels][4].
 * The tiles give C[position][channel]; the span's counts are transposed to [channel][position] at the end.
 * Tiles: A0, A1 (32 positions), B0, B1 (32 channels), C 2x2 (positions x channels). */
#include "onebit_kernels.h"

#ifdef OB_HAVE_AMX
#pragma GCC target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl")
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define TILE_BYTES 1024 /* 16 rows x 64 bytes */
/* word rows per pass over a pair of channel tiles: the pair's weights of a pass (2 x 9 KB) stay in L1 for
 * its second pair of position tiles (C is kept in memory between passes) */
#define K_PASS 9

/* CPUID has AMX-TILE and AMX-INT8 (leaf 7: EDX bits 24, 25) and Linux lets this process use the tile data (asked
 * once per process; harmless if given before) */
int ob_amx_usable(void) {
    static int usable = -1;
    if (usable < 0) {
        unsigned int a, b, c, d;
        const int cpu = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1) && (d >> 25 & 1);
        usable = cpu && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    }
    return usable;
}

/* The measured rule (Bi-Real-18 at 224 x 224, 1 thread, each binary conv timed inside the network against the
 * avx512 path; BENCHMARKS.md, "Fourth round"): the AMX GEMM needs a long enough K for its fixed costs (the planes
 * expanded 64x per call, the counts transposed per tile) and weights (64 bytes a word) that stream from L2:
 * stride 1 (a strided convolution expands 4x the input it reads: 1.08-1.23x the avx512 time), 18+ word rows
 * (56 x 56 x 64, 9 rows: 1.0-1.13x; 28 x 28 x 128 and 14 x 14 x 256: 0.89-1.06x) and weights up to 1 MB as bytes
 * (7 x 7 x 512: 2.4 MB, each weight read for 56 positions only). */
static int amx_pays(const ob_conv* s) {
    return s->sh == 1 && s->sw == 1 && s->g >= 18 && (int64_t)s->cout * s->g * 64 <= (1 << 20);
}

static void expand_amx(const uint8_t* words, int64_t count, int8_t* out) {
    const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1);
    const uint64_t* w = (const uint64_t*)words;
    for (int64_t i = 0; i < count; i++)
        _mm512_store_si512(out + 64 * i, _mm512_mask_blend_epi8(_cvtu64_mask64(w[i]), plus, minus));
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* palette 1, tiles 0-7 of 16 rows x 64 bytes (a static object: gcc 12 drops stores to a local one that only
 * ldtilecfg reads) */
static const tile_config config = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

static void begin_amx(void) { _tile_loadconfig(&config); }

static void end_amx(void) { _tile_release(); }

/* C[32 positions][16 (two = 0) or 32 channels] += the word rows [k0, k1) of positions a (expanded, at the
 * pair's first position) and channel tiles b0, b1 (at word row 0), kept in c[p][ch] (ld OB_SPAN int32) */
static inline __attribute__((always_inline)) void pass(const int8_t* a, const int64_t* aoff, int k0, int k1,
                                                       const int8_t* b0, const int8_t* b1, int32_t* c, const int two) {
    if (k0 == 0) {
        _tile_zero(4);
        _tile_zero(6);
        if (two) {
            _tile_zero(5);
            _tile_zero(7);
        }
    } else {
        _tile_loadd(4, c, 4 * OB_SPAN);
        _tile_loadd(6, c + 16 * OB_SPAN, 4 * OB_SPAN);
        if (two) {
            _tile_loadd(5, c + 16, 4 * OB_SPAN);
            _tile_loadd(7, c + 16 * OB_SPAN + 16, 4 * OB_SPAN);
        }
    }
    for (int k = k0; k < k1; k++) {
        const int8_t* ak = a + 8 * aoff[k];
        _tile_loadd(0, ak, 64);
        _tile_loadd(1, ak + TILE_BYTES, 64);
        _tile_loadd(2, b0 + (int64_t)k * TILE_BYTES, 64);
        _tile_dpbssd(4, 0, 2);
        _tile_dpbssd(6, 1, 2);
        if (two) {
            _tile_loadd(3, b1 + (int64_t)k * TILE_BYTES, 64);
            _tile_dpbssd(5, 0, 3);
            _tile_dpbssd(7, 1, 3);
        }
    }
    _tile_stored(4, c, 4 * OB_SPAN);
    _tile_stored(6, c + 16 * OB_SPAN, 4 * OB_SPAN);
    if (two) {
        _tile_stored(5, c + 16, 4 * OB_SPAN);
        _tile_stored(7, c + 16 * OB_SPAN + 16, 4 * OB_SPAN);
    }
}

/* counts[ch][p] = (kp - dot[p][ch]) / 2 for a block of 16 positions x 16 channels (dot: ld OB_SPAN, counts:
 * ld OB_PB): pack to 16 bits, then a 16 x 16 transpose in three rounds of vpermt2w. */
static void transpose_counts(const int32_t* dot, int kp, uint16_t* counts) {
    /* index vectors of vpermt2w: round 1 (columns 0-7 of its two sources), and the interleave of the first
     * halves of two sources (rounds 2 and 3); + 16: the other columns / halves */
    static const uint16_t first[32] = {0, 32, 4, 36, 1, 33, 5, 37, 2,  34, 6,  38, 3,  35, 7,  39,
                                       8, 40, 12, 44, 9, 41, 13, 45, 10, 42, 14, 46, 11, 43, 15, 47};
    static const uint16_t pair[32] = {0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
                                      8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    const __m512i half = _mm512_set1_epi16(16);
    const __m512i f_lo = _mm512_loadu_si512(first), f_hi = _mm512_add_epi16(f_lo, half);
    const __m512i p_lo = _mm512_loadu_si512(pair), p_hi = _mm512_add_epi16(p_lo, half);
    const __m512i k = _mm512_set1_epi32(kp);
    __m512i v[16], x[8], y[8];
    for (int i = 0; i < 16; i++) v[i] = _mm512_srai_epi32(_mm512_sub_epi32(k, _mm512_loadu_si512(dot + i * OB_SPAN)), 1);
    for (int m = 0; m < 8; m++) x[m] = _mm512_packus_epi32(v[m], v[m + 8]); /* lane L: rows m, m + 8 of columns 4L.. */
    for (int m = 0; m < 4; m++) { /* columns 0-7 and 8-15 of rows {m, m + 4, m + 8, m + 12} */
        y[m] = _mm512_permutex2var_epi16(x[m], f_lo, x[m + 4]);
        y[m + 4] = _mm512_permutex2var_epi16(x[m], f_hi, x[m + 4]);
    }
    static const int round2[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
    for (int j = 0; j < 4; j++) {
        const int a = round2[j][0], b = round2[j][1];
        x[a] = _mm512_permutex2var_epi16(y[a], p_lo, y[b]);
        x[b] = _mm512_permutex2var_epi16(y[a], p_hi, y[b]);
    }
    for (int j = 0; j < 8; j += 2) { /* y[t]: columns 2t, 2t + 1, rows 0..15 each */
        y[j] = _mm512_permutex2var_epi16(x[j], p_lo, x[j + 1]);
        y[j + 1] = _mm512_permutex2var_epi16(x[j], p_hi, x[j + 1]);
    }
    for (int t = 0; t < 8; t++) {
        _mm256_storeu_si256((__m256i*)(counts + 2 * t * OB_PB), _mm512_castsi512_si256(y[t]));
        _mm256_storeu_si256((__m256i*)(counts + (2 * t + 1) * OB_PB), _mm512_extracti64x4_epi64(y[t], 1));
    }
}

/* counts[r][p] for r < nch (rounded up to 16), p < width (32 or 64) */
static void span_amx(const int8_t* a, const int64_t* aoff, int g, const int8_t* w, int nch, int width,
                     uint16_t* counts) {
    int32_t dot[OB_PB * OB_SPAN] __attribute__((aligned(64))); /* [position][channel] */
    const int tiles = (nch + 15) / 16;
    for (int ci = 0; ci < tiles; ci += 2) {
        const int8_t* b0 = w + (int64_t)ci * g * TILE_BYTES;
        const int8_t* b1 = b0 + (int64_t)g * TILE_BYTES;
        for (int k0 = 0; k0 < g; k0 += K_PASS) {
            const int k1 = k0 + K_PASS < g ? k0 + K_PASS : g;
            for (int p0 = 0; p0 < width; p0 += 32) {
                if (ci + 1 < tiles)
                    pass(a + 64 * p0, aoff, k0, k1, b0, b1, dot + p0 * OB_SPAN + 16 * ci, 1);
                else
                    pass(a + 64 * p0, aoff, k0, k1, b0, b1, dot + p0 * OB_SPAN + 16 * ci, 0);
            }
        }
    }
    for (int p0 = 0; p0 < width; p0 += 16)
        for (int ci = 0; ci < tiles; ci++)
            transpose_counts(dot + p0 * OB_SPAN + 16 * ci, 64 * g, counts + 16 * ci * OB_PB + p0);
}

const ob_amx_ops ob_amx_ops_int8 = {amx_pays, expand_amx, begin_amx, end_amx, span_amx};

/* n rounds of 4 TDPBSSD on 4 accumulators from tiles in registers (16384 MACs each, no loads in the loop), for the
 * benchmark's ceiling; returns an element of the sums */
int64_t ob_amx_loop_int8(int64_t n) {
    static const int8_t ones[TILE_BYTES] __attribute__((aligned(64))) = {1};
    int32_t c[256] __attribute__((aligned(64)));
    begin_amx();
    _tile_zero(4);
    _tile_zero(5);
    _tile_zero(6);
    _tile_zero(7);
    _tile_loadd(0, ones, 64);
    _tile_loadd(1, ones, 64);
    _tile_loadd(2, ones, 64);
    _tile_loadd(3, ones, 64);
    for (int64_t k = 0; k < n; k++) {
        _tile_dpbssd(4, 0, 2);
        _tile_dpbssd(5, 0, 3);
        _tile_dpbssd(6, 1, 2);
        _tile_dpbssd(7, 1, 3);
    }
    _tile_stored(4, c, 64);
    end_amx();
    return c[0];
}
#endif
