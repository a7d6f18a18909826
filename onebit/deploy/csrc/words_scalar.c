/* Portable channel-word path: xor + 64-bit popcount per word row, the reference of the SIMD
 * word tiles. The popcount is the SWAR bit count (no POPCNT instruction assumed). */
#include <string.h>

#include "onebit_kernels.h"

static inline uint64_t load64(const uint8_t* p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline int popcount64(uint64_t v) {
    v = v - ((v >> 1) & 0x5555555555555555ull);
    v = (v & 0x3333333333333333ull) + ((v >> 2) & 0x3333333333333333ull);
    v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (int)((v * 0x0101010101010101ull) >> 56);
}

static void tile_words_scalar(const uint8_t* a, const int64_t* aoff, int g, const uint8_t* w, int width,
                              uint16_t* counts) {
    uint32_t acc[OB_NR_WORDS][OB_PB] = {{0}};
    for (int k = 0; k < g; k++) {
        const uint8_t* row = a + aoff[k];
        uint64_t wk[OB_NR_WORDS];
        memcpy(wk, w + (int64_t)k * OB_NR_WORDS * 8, sizeof(wk));
        for (int p = 0; p < width; p++) {
            const uint64_t x = load64(row + 8 * p);
            for (int r = 0; r < OB_NR_WORDS; r++) acc[r][p] += (uint32_t)popcount64(x ^ wk[r]);
        }
    }
    for (int r = 0; r < OB_NR_WORDS; r++)
        for (int p = 0; p < width; p++) counts[r * OB_PB + p] = (uint16_t)acc[r][p];
}

static void words_scalar(const uint8_t (*neg)[OB_PB], int nch, int width, uint64_t* out) {
    memset(out, 0, sizeof(uint64_t) * width);
    for (int r = 0; r < nch; r++)
        for (int p = 0; p < width; p++) out[p] |= (uint64_t)neg[r][p] << r;
}

static void binarize_row64_scalar(const float* const* x, const float* t, int cnt, int n, uint64_t* dst) {
    memset(dst, 0, sizeof(uint64_t) * n);
    for (int c = 0; c < cnt; c++)
        for (int i = 0; i < n; i++) dst[i] |= (uint64_t)!(x[c][i] >= t[c]) << c;
}

const ob_word_ops ob_word_ops_scalar = {tile_words_scalar, words_scalar, binarize_row64_scalar, NULL};
