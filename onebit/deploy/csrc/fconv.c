/* Float convolutions with the rounding of PyTorch's x86 CPU convolution (oneDNN): each output is one chain of
 * fma over its taps in (ky, kx, c) order, from 0 (padded taps add fma(w, 0, acc) = acc), or for a 1x1
 * convolution the sum, in order, of such chains over reduce blocks of the input channels (oneDNN's 1x1 kernel
 * adds each block's chain to the sum so far; it picks the block size by shape and thread count); then,
 * optionally, an eval BatchNorm as fma(v, alpha, beta) (PyTorch's CPU batch norm with mean 0, variance 1, eps 0)
 * and a max pool. A 1x1 convolution may read the 2x2/2 average pool of its input (a downsampling shortcut). The
 * runtime checks once per shape and thread count that the results equal PyTorch's before it uses them. Only the
 * avx512 code path has these kernels (fconv_avx512.c). */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "onebit_kernels.h"

/* output row y of image `src` (padded, row pitch wp) -> a row buffer [wo][o_last - o_first] */
static void conv_row(const ob_fconv_row* r, ob_fconv_row_fn fn, const float* src, int y, int sh, int wp, int o_first,
                     int o_last, float* dst) {
    fn(r, src + (int64_t)y * sh * wp, o_first, o_last, dst, o_last - o_first);
}

/* x NCHW [n][c][h][w]; wt [kh][kw][c][cout]; affine [2][cout] or NULL; pk > 0: then max pool (kernel pk, stride
 * ps, padding pp, floor mode, 2 pp <= pk). out NCHW. -1: a shape this code does not cover (cout % 16),
 * -2: the code path in use has no float convolution, -3: out of memory. */
int ob_float_conv2d(const float* x, int n, int c, int h, int w, const float* wt, int cout, int kh, int kw, int sh,
                    int sw, int ph, int pw, const float* affine, int pk, int ps, int pp, float* out, int threads) {
    const ob_fconv_row_fn fn = ob_current_fconv_row();
    if (!fn) return -2;
    if (cout % 16 || n < 1 || c < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0) return -1;
    const int hp = h + 2 * ph, wp = w + 2 * pw;
    if (hp < kh || wp < kw) return -1;
    const int ho = (hp - kh) / sh + 1, wo = (wp - kw) / sw + 1;
    int pho = 0, pwo = 0;
    if (pk) {
        if (ps < 1 || pp < 0 || 2 * pp > pk || ho + 2 * pp < pk || wo + 2 * pp < pk) return -1;
        pho = (ho + 2 * pp - pk) / ps + 1;
        pwo = (wo + 2 * pp - pk) / ps + 1;
    }
    const int padded = ph || pw;
    const int64_t cstride = (int64_t)hp * wp;
    float* xp = padded ? (float*)malloc(sizeof(float) * c * cstride) : NULL;
    int64_t* off = (int64_t*)malloc(sizeof(int64_t) * kh * kw * c);
    if ((padded && !xp) || !off) {
        free(xp);
        free(off);
        return -3;
    }
    for (int ky = 0, t = 0; ky < kh; ky++)
        for (int kx = 0; kx < kw; kx++)
            for (int ci = 0; ci < c; ci++, t++) off[t] = (int64_t)ky * wp + kx + ci * cstride;
    const ob_fconv_row r = {wt, affine, off, kh * kw * c, cout, sw, wo};
    const int blocks = (cout + 63) / 64;
    int failed = 0;
    for (int b = 0; b < n && !failed; b++) {
        const float* src = x + (int64_t)b * c * h * w;
#pragma omp parallel num_threads(threads) if (threads > 1)
        {
            if (padded) { /* by padded rows (an image has few channels: a ResNet stem's 3 over 2 threads) */
#pragma omp for schedule(static)
                for (int64_t job = 0; job < (int64_t)c * hp; job++) {
                    const int64_t ci = job / hp, iy = job % hp - ph;
                    float* row = xp + ci * cstride + (iy + ph) * wp;
                    if (iy < 0 || iy >= h) {
                        memset(row, 0, sizeof(float) * wp);
                        continue;
                    }
                    memset(row, 0, sizeof(float) * pw);
                    memcpy(row + pw, src + (ci * h + iy) * w, sizeof(float) * w);
                    memset(row + pw + w, 0, sizeof(float) * pw);
                }
            }
            const float* in = padded ? xp : src;
            if (!pk) { /* one job per output row and 64 output channels; the row buffer transposed to NCHW */
                float* buf = (float*)malloc(sizeof(float) * wo * 64);
                if (!buf) failed = 1;
                const int64_t plane = (int64_t)ho * wo;
#pragma omp for schedule(static)
                for (int job = 0; job < ho * blocks; job++) {
                    if (!buf) continue;
                    const int y = job / blocks, o0 = 64 * (job % blocks), o1 = o0 + 64 < cout ? o0 + 64 : cout;
                    conv_row(&r, fn, in, y, sh, wp, o0, o1, buf);
                    float* o = out + ((int64_t)b * cout + o0) * plane + (int64_t)y * wo;
                    for (int ch = 0; ch < o1 - o0; ch++)
                        for (int ox = 0; ox < wo; ox++) o[ch * plane + ox] = buf[ox * (o1 - o0) + ch];
                }
                free(buf);
            } else { /* one job per pooled row; the conv rows it reads kept in a ring of pk rows per thread */
                float* ring = (float*)malloc(sizeof(float) * ((int64_t)pk * wo * cout + (int64_t)pwo * cout));
                int* tag = (int*)malloc(sizeof(int) * pk);
                if (!ring || !tag) failed = 1;
                for (int k = 0; tag && k < pk; k++) tag[k] = -1;
                const int64_t plane = (int64_t)pho * pwo;
#pragma omp for schedule(static)
                for (int py = 0; py < pho; py++) {
                    if (!ring || !tag) continue;
                    const float* rows[pk];
                    int nr = 0;
                    for (int k = 0; k < pk; k++) {
                        const int cy = py * ps - pp + k;
                        if (cy < 0 || cy >= ho) continue;
                        float* slot = ring + (int64_t)(cy % pk) * wo * cout;
                        if (tag[cy % pk] != cy) {
                            conv_row(&r, fn, in, cy, sh, wp, 0, cout, slot);
                            tag[cy % pk] = cy;
                        }
                        rows[nr++] = slot;
                    }
#if defined(__x86_64__) /* (fn exists on the avx512 path only) */
                    ob_max_pool_row_nhwc_avx512(rows, nr, wo, cout, pk, ps, pp, pwo, ring + (int64_t)pk * wo * cout,
                                                out + (int64_t)b * cout * plane + (int64_t)py * pwo, plane);
#endif
                }
                free(ring);
                free(tag);
            }
        }
    }
    free(xp);
    free(off);
    return failed ? -3 : 0;
}

/* x NCHW [n][c][h][w]; avg: convolve the 2x2/2 average pool of x (h / 2 x w / 2, floor) instead of x; wt [cout][c];
 * affine [2][cout] or NULL; kb: input channels per reduce block, 0 for one chain. out NCHW. -1: a bad shape, -2: the
 * code path in use has no float convolution, -3: out of memory. */
int ob_float_conv1x1(const float* x, int n, int c, int h, int w, int avg, const float* wt, int cout,
                     const float* affine, int kb, float* out, int threads) {
    if (!ob_current_fconv_row()) return -2;
    if (n < 1 || c < 1 || cout < 1 || kb < 0 || (avg != 0 && avg != 1) || h < 1 + avg || w < 1 + avg) return -1;
    int failed = 0;
#if defined(__x86_64__)
    const int64_t plane = (int64_t)(h >> avg) * (w >> avg), vectors = (plane + 15) / 16;
    /* Work units: 16 positions of an image with all output channels, each thread a contiguous run of them (the
     * positions a thread wrote in the layer before, on a split by positions); where there are too few positions
     * to give each thread two units, the output channels are split in one part per thread too. */
    const int64_t parts = (int64_t)n * vectors >= 2 * threads ? 1 : threads;
    const int64_t units = n * parts * vectors;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#ifdef _OPENMP
        const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int64_t t = 0, nt = 1;
#endif
        float* tile = (float*)aligned_alloc(64, sizeof(float) * OB_1X1_POSITIONS * c);
        if (!tile) failed = 1;
        for (int64_t u = units * t / nt, end = units * (t + 1) / nt; tile && u < end;) {
            const int64_t b = u / (parts * vectors), part = u / vectors % parts, vec = u % vectors;
            int64_t take = OB_1X1_POSITIONS / 16; /* vectors of this tile: in one image and part */
            if (take > end - u) take = end - u;
            if (take > vectors - vec) take = vectors - vec;
            const int64_t p0 = 16 * vec;
            const int count = (int)(16 * take < plane - p0 ? 16 * take : plane - p0);
            ob_fconv1x1_tile_avx512(x + b * c * (int64_t)h * w, c, h, w, avg, p0, count, tile);
            ob_fconv1x1_avx512(tile, c, kb ? kb : c, wt, cout, affine, count, (int)(cout * part / parts / 4 * 4),
                               (int)(part + 1 == parts ? cout : cout * (part + 1) / parts / 4 * 4),
                               out + b * cout * plane + p0, plane);
            u += take;
        }
        free(tile);
    }
#else
    (void)x, (void)wt, (void)affine, (void)out, (void)threads;
#endif
    return failed ? -3 : 0;
}
