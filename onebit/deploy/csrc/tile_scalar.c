/* Portable GEMM tile: the same nibble arithmetic as the SIMD kernels, 8 positions per
 * 64-bit word (SWAR). Every byte holds one 4-bit activation nibble; XOR with the weight
 * nibble repeated in every byte, then a 2-step bit count inside each byte (values <= 4),
 * accumulated bytewise for up to OB_CHUNK rows (63 * 4 <= 255) before widening. */
#include <string.h>

#include "onebit_kernels.h"

#define LANES (OB_PB / 8)
/* bit offset, inside a loaded word, of the byte stored at address offset b */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define BYTE_SHIFT(b) (56 - 8 * (b))
#else
#define BYTE_SHIFT(b) (8 * (b))
#endif

static inline uint64_t load64(const uint8_t* p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

void ob_tile_scalar(const uint8_t* a, const int64_t* aoff, int g, const uint8_t* w, int width,
                    uint16_t* counts) {
    const uint64_t ones = 0x0101010101010101ull;
    const int words = width / 8;
    memset(counts, 0, sizeof(uint16_t) * OB_NR * OB_PB);
    for (int g0 = 0; g0 < g; g0 += OB_CHUNK) {
        const int g1 = g0 + OB_CHUNK < g ? g0 + OB_CHUNK : g;
        uint64_t acc[OB_NR][LANES] = {{0}};
        for (int k = g0; k < g1; k++) {
            const uint8_t* row = a + aoff[k];
            const uint8_t* wk = w + (int64_t)k * OB_NR;
            for (int j = 0; j < words; j++) {
                const uint64_t x = load64(row + 8 * j);
                for (int r = 0; r < OB_NR; r++) {
                    uint64_t v = x ^ ((uint64_t)(wk[r] >> 4) * ones);
                    v = v - ((v >> 1) & 0x5555555555555555ull);
                    v = (v & 0x3333333333333333ull) + ((v >> 2) & 0x3333333333333333ull);
                    acc[r][j] += v;
                }
            }
        }
        for (int r = 0; r < OB_NR; r++)
            for (int j = 0; j < words; j++)
                for (int b = 0; b < 8; b++)
                    counts[r * OB_PB + 8 * j + b] += (uint16_t)((acc[r][j] >> BYTE_SHIFT(b)) & 0xff);
    }
}
