/* AVX-512 VPOPCNTDQ channel-word path (compiled for AVX-512 in this file only; selected after a
 * CPUID check, see conv.c).
 *
 * GEMM tile: 8 output channels x 16 positions per pass (two 512-bit vectors of 8 position words),
 * 16 accumulators of 64-bit counts. Per word row: 2 activation loads, 8 weight broadcasts, then
 * per channel and vector vpxorq + vpopcntq + vpaddq (512 binary MACs per 3 instructions). */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vpopcntdq")
#include <immintrin.h>

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

const ob_word_ops ob_word_ops_avx512 = {tile_words_avx512, words_avx512, binarize_row64_avx512};

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
