/* Float pooling on NCHW tensors, with PyTorch's exact results. This PyTorch build's NCHW
 * pooling kernels are 10-20x slower than its channels-last ones (max 3x3/2 on 64 x 112 x 112:
 * 6.7 ms against 0.4 ms, average 2x2 on 64 x 56 x 56: 0.45 ms against 0.04 ms), and the 1-bit
 * runtime keeps NCHW. */
#include <math.h>
#include <stdlib.h>

#include "onebit_kernels.h"

/* max_pool2d: dilation 1, floor mode, pad <= kernel / 2 (as PyTorch requires), NaN propagates.
 * negate (NULL: none): per channel (plane p is channel p % channels), pool -x and negate the result,
 * i.e. the window minimum (a negative BatchNorm scale applied after the pool). */
int ob_max_pool2d(const float* x, int64_t planes, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw,
                  int ho, int wo, const uint8_t* negate, int channels, float* out, int threads) {
    const ob_float_ops* ops = ob_current_float_ops();
    const int64_t hw = (int64_t)h * w;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        /* one per thread: the pool's row buffer, and a negated plane */
        float* buf = (float*)malloc(sizeof(float) * (w + sw * (w / sw + 1) + (negate ? hw : 0)));
        if (!buf) failed = 1;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < planes; p++) {
            if (!buf) continue;
            float* o = out + p * ho * wo;
            if (negate && negate[p % channels]) {
                float* neg = buf + w + sw * (w / sw + 1);
                for (int64_t i = 0; i < hw; i++) neg[i] = -x[p * hw + i];
                ops->max_pool_plane(neg, h, w, kh, kw, sh, sw, ph, pw, ho, wo, buf, o);
                for (int64_t i = 0; i < (int64_t)ho * wo; i++) o[i] = -o[i];
            } else {
                ops->max_pool_plane(x + p * hw, h, w, kh, kw, sh, sw, ph, pw, ho, wo, buf, o);
            }
        }
        free(buf);
    }
    return failed ? -3 : 0;
}

/* max_pool2d of a channels-last (NHWC) input into a contiguous NCHW output, with the rules and negate of
 * ob_max_pool2d (negate per channel). One job per output row of an image. */
int ob_max_pool2d_nhwc(const float* x, int n, int c, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw,
                       int ho, int wo, const uint8_t* negate, float* out, int threads) {
    const ob_float_ops* ops = ob_current_float_ops();
    const int64_t jobs = (int64_t)n * ho, plane = (int64_t)ho * wo;
    float* sign = (float*)malloc(sizeof(float) * c);
    if (!sign) return -3;
    for (int ch = 0; ch < c; ch++) sign[ch] = negate && negate[ch] ? -1.0f : 1.0f;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1 && jobs > 1)
    {
        float* acc = (float*)malloc(sizeof(float) * wo * c); /* one per thread */
        if (!acc) failed = 1;
#pragma omp for schedule(static)
        for (int64_t job = 0; job < jobs; job++) {
            if (!acc) continue;
            const int64_t b = job / ho;
            const int oy = (int)(job % ho);
            const float* rows[kh];
            int nr = 0;
            for (int ky = 0; ky < kh; ky++) {
                const int iy = oy * sh - ph + ky;
                if (iy >= 0 && iy < h) rows[nr++] = x + ((b * h + iy) * w) * (int64_t)c;
            }
            ops->max_pool_row_nhwc(rows, nr, w, c, kw, sw, pw, wo, sign, acc, out + b * c * plane + (int64_t)oy * wo,
                                   plane);
        }
        free(acc);
    }
    free(sign);
    return failed ? -3 : 0;
}

/* avg_pool2d with PyTorch's window rules (ceil mode, padding counted or not, divisor override) */
int ob_avg_pool2d(const float* x, int64_t planes, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw,
                  int ho, int wo, int count_include_pad, int divisor_override, float* out, int threads) {
    const ob_float_ops* ops = ob_current_float_ops();
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float* buf = (float*)malloc(sizeof(float) * (sw * (w / sw + 1) + wo)); /* one per thread */
        if (!buf) failed = 1;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < planes; p++)
            if (buf)
                ops->avg_pool_plane(x + p * h * w, h, w, kh, kw, sh, sw, ph, pw, ho, wo, count_include_pad,
                                    divisor_override, buf, out + p * ho * wo);
        free(buf);
    }
    return failed ? -3 : 0;
}
