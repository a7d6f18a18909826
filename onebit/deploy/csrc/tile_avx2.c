/* AVX2 GEMM tile: 64 positions x 6 output channels held in 12 ymm byte accumulators.
 *
 * Per nibble row k: load 2 x 32 activation bytes; for each of the 6 channels broadcast the
 * 16-byte table T_w (w = weight nibble) and add vpshufb(T_w, a) to the accumulators.
 * The loop is inline assembly because GCC 12 spills 12 intrinsic accumulators and adds
 * register copies, which costs ~45% of the throughput here (measured on Zen 3).
 * Registers: ymm0-11 accumulators, ymm12-13 activations, ymm14 table, ymm15 lookup.
 */
#if defined(__x86_64__)
#pragma GCC target("avx2")
#include <immintrin.h>

#include "onebit_kernels.h"

#define STR(x) #x
#define XSTR(x) STR(x)

/* one weight channel r: table load, then 1 or 2 lookups + byte adds */
#define LOOKUP_2(r, acc0, acc1)                                  \
    "movzbl " STR(r) "(%[w]), %%edx\n\t"                        \
    "vbroadcasti128 (%[lut],%%rdx), %%ymm14\n\t"                 \
    "vpshufb %%ymm12, %%ymm14, %%ymm15\n\t"                      \
    "vpaddb %%ymm15, %%ymm" STR(acc0) ", %%ymm" STR(acc0) "\n\t" \
    "vpshufb %%ymm13, %%ymm14, %%ymm15\n\t"                      \
    "vpaddb %%ymm15, %%ymm" STR(acc1) ", %%ymm" STR(acc1) "\n\t"
#define LOOKUP_1(r, acc0)                                        \
    "movzbl " STR(r) "(%[w]), %%edx\n\t"                        \
    "vbroadcasti128 (%[lut],%%rdx), %%ymm14\n\t"                 \
    "vpshufb %%ymm12, %%ymm14, %%ymm15\n\t"                      \
    "vpaddb %%ymm15, %%ymm" STR(acc0) ", %%ymm" STR(acc0) "\n\t"
#define ZERO(r) "vpxor %%xmm" STR(r) ", %%xmm" STR(r) ", %%xmm" STR(r) "\n\t"
#define STORE(r) "vmovdqu %%ymm" STR(r) ", " STR(r) "*32(%[out])\n\t"
#define CLOBBERS                                                                                 \
    "rax", "rdx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", \
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc"

/* rows [0, n) of a chunk, 64 positions: bytes[2r + m] = accumulator of channel r, half m */
static void chunk64(const uint8_t* a, const int64_t* aoff_end, int64_t n, const uint8_t* w,
                    uint8_t* bytes) {
    int64_t i = -n;
    __asm__ volatile(
        ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5) ZERO(6) ZERO(7) ZERO(8) ZERO(9) ZERO(10)
        ZERO(11)
        ".p2align 4\n"
        "1:\n\t"
        "movq (%[aoff],%[i],8), %%rax\n\t"
        "vmovdqu (%[a],%%rax), %%ymm12\n\t"
        "vmovdqu 32(%[a],%%rax), %%ymm13\n\t"
        LOOKUP_2(0, 0, 1) LOOKUP_2(1, 2, 3) LOOKUP_2(2, 4, 5) LOOKUP_2(3, 6, 7)
        LOOKUP_2(4, 8, 9) LOOKUP_2(5, 10, 11)
        "addq $" XSTR(OB_NR) ", %[w]\n\t"
        "incq %[i]\n\t"
        "jnz 1b\n\t"
        STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7) STORE(8)
        STORE(9) STORE(10) STORE(11)
        : [w] "+r"(w), [i] "+r"(i)
        : [a] "r"(a), [lut] "r"(ob_nibble_popcount), [aoff] "r"(aoff_end), [out] "r"(bytes)
        : CLOBBERS);
}

/* the same for 32 positions: bytes[2r] = accumulator of channel r */
static void chunk32(const uint8_t* a, const int64_t* aoff_end, int64_t n, const uint8_t* w,
                    uint8_t* bytes) {
    int64_t i = -n;
    __asm__ volatile(
        ZERO(0) ZERO(2) ZERO(4) ZERO(6) ZERO(8) ZERO(10)
        ".p2align 4\n"
        "1:\n\t"
        "movq (%[aoff],%[i],8), %%rax\n\t"
        "vmovdqu (%[a],%%rax), %%ymm12\n\t"
        LOOKUP_1(0, 0) LOOKUP_1(1, 2) LOOKUP_1(2, 4) LOOKUP_1(3, 6) LOOKUP_1(4, 8) LOOKUP_1(5, 10)
        "addq $" XSTR(OB_NR) ", %[w]\n\t"
        "incq %[i]\n\t"
        "jnz 1b\n\t"
        STORE(0) STORE(2) STORE(4) STORE(6) STORE(8) STORE(10)
        : [w] "+r"(w), [i] "+r"(i)
        : [a] "r"(a), [lut] "r"(ob_nibble_popcount), [aoff] "r"(aoff_end), [out] "r"(bytes)
        : CLOBBERS);
}

/* counts[r][32m .. 32m+31] (+)= widened bytes of accumulator (r, m): the first chunk stores */
static inline void widen(const uint8_t* bytes, uint16_t* counts, int add) {
    const __m256i v = _mm256_loadu_si256((const __m256i*)bytes);
    __m256i lo = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v));
    __m256i hi = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(v, 1));
    __m256i* c = (__m256i*)counts;
    if (add) {
        lo = _mm256_add_epi16(lo, _mm256_loadu_si256(c));
        hi = _mm256_add_epi16(hi, _mm256_loadu_si256(c + 1));
    }
    _mm256_storeu_si256(c, lo);
    _mm256_storeu_si256(c + 1, hi);
}

void ob_tile_avx2(const uint8_t* a, const int64_t* aoff, int g, const uint8_t* w, int width,
                  uint16_t* counts) {
    uint8_t bytes[2 * OB_NR * 32];
    for (int g0 = 0; g0 < g; g0 += OB_CHUNK) {
        const int64_t n = g0 + OB_CHUNK < g ? OB_CHUNK : g - g0;
        if (width > 32)
            chunk64(a, aoff + g0 + n, n, w + (int64_t)g0 * OB_NR, bytes);
        else
            chunk32(a, aoff + g0 + n, n, w + (int64_t)g0 * OB_NR, bytes);
        for (int r = 0; r < OB_NR; r++)
            for (int m = 0; m < (width > 32 ? 2 : 1); m++)
                widen(bytes + 32 * (2 * r + m), counts + r * OB_PB + 32 * m, g0 > 0);
    }
}
#endif
