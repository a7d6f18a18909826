/* The float loops compiled for AVX2 + FMA (selected with the avx2 kernel), with the tile output
 * transform in intrinsics: row segments are short (a 64-position tile spans several output rows),
 * so masked loads and stores replace the scalar tails a compiler would generate. */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,bmi2")
#include <immintrin.h>

#define OB_SUFFIX avx2
#define OB_OWN_TILE_FLOAT
#include "float_ops.h"

/* 8 outputs (and sign bytes) at segment index i */
static inline void outputs8(const int32_t* d, __m256 m, __m256 b, const float* res, float* out, __m256 t, uint8_t* f) {
    __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i*)d)), m, b);
    if (res) v = _mm256_add_ps(v, _mm256_loadu_ps(res));
    _mm256_storeu_ps(out, v);
    if (f) { /* !(v >= t) per lane -> one byte per lane */
        const uint64_t bytes = _pdep_u64((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, t, _CMP_NGE_UQ)),
                                         0x0101010101010101ull);
        memcpy(f, &bytes, 8);
    }
}

static void tile_float_avx2(const int32_t (*d)[OB_PB], int nch, const float* mult, const float* bias,
                            const float* res, float* out, int64_t hw, int64_t wo, const ob_segment* seg, int nseg,
                            const float* t, uint8_t (*neg)[OB_PB]) {
    for (int r = 0; r < nch; r++) {
        const __m256 m = _mm256_set1_ps(mult[r]), b = _mm256_set1_ps(bias[r]);
        const __m256 tr = _mm256_set1_ps(t ? t[r] : 0.0f);
        for (int g = 0; g < nseg; g++) {
            const int64_t at = r * hw + seg[g].y * wo + seg[g].x0;
            const int n = (int)(seg[g].x1 - seg[g].x0);
            const int32_t* dr = d[r] + seg[g].p;
            const float* q = res ? res + at : NULL;
            float* o = out + at;
            uint8_t* f = t ? neg[r] + seg[g].p : NULL;
            if (n < 8) { /* short segment */
                for (int i = 0; i < n; i++) {
                    o[i] = fmaf((float)dr[i], mult[r], bias[r]) + (q ? q[i] : 0.0f);
                    if (f) f[i] = (uint8_t)!(o[i] >= t[r]);
                }
                continue;
            }
            int i = 0;
            for (; i + 8 <= n; i += 8) outputs8(dr + i, m, b, q ? q + i : NULL, o + i, tr, f ? f + i : NULL);
            if (i < n) /* the last 8, overlapping: the same values are written twice */
                outputs8(dr + n - 8, m, b, q ? q + n - 8 : NULL, o + n - 8, tr, f ? f + n - 8 : NULL);
        }
    }
}

const ob_float_ops ob_float_ops_avx2 = {tile_float_avx2, dots_avx2,          int_flags_avx2,
                                        nibbles_avx2,    binarize_row4_avx2, max_pool_plane_avx2};
#endif
