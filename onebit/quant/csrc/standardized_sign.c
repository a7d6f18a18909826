/* RBNN's activation quantizer in one pass per direction, float32, per sample of m values:
 *
 *   forward   out = sign(x - mu)            (sign(0) = +1), mu = mean of the sample
 *   backward  d = x - mu, s = sqrt(sum d^2 / (m - 1)),
 *             g' = grad * k max(0, sqrt2 t - t^2 |d| / s)       (training-aware surrogate of d / s)
 *             dx = d * (-(sum g' d) / (s^3 (m - 1))) - mean(g') / s + g' / s
 *
 * A sample's values are contiguous (NCHW or NHWC: the sums do not depend on the order, the
 * elementwise terms pair x, grad and the result at the same offsets). Samples run in parallel
 * (OpenMP, one sample per task); every sum uses LANES fixed partial sums combined in a fixed
 * order, and -ffp-contract=off keeps multiplies and adds apart, so the result is the same
 * bits whatever the thread count and whichever code path below runs. The code paths are the
 * same C compiled for the baseline ISA, AVX2 and AVX-512F (the compiler vectorises the lane
 * loops), chosen at run time from CPUID.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define ABI_VERSION 1
#define LANES 16
#define SQRT2F 1.41421356237309504880f

typedef void (*forward_fn)(const float *, float *, float *, int64_t);
typedef void (*backward_fn)(const float *, const float *, float, float *, int64_t, float, float);

/* Combine the partial sums pairwise, always in the same order. */
static inline __attribute__((always_inline)) float combine(float *acc) {
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
    return acc[0];
}

static inline __attribute__((always_inline)) void forward_body(const float *x, float *out, float *mean, int64_t m) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= m; i += LANES)
        for (int l = 0; l < LANES; ++l) acc[l] += x[i + l];
    for (int l = 0; i < m; ++i, ++l) acc[l] += x[i];
    const float mu = combine(acc) / (float)m;
    for (i = 0; i < m; ++i) {
        const float d = x[i] - mu;
        out[i] = d != d ? d : d < 0.0f ? -1.0f : 1.0f;  /* NaN stays NaN */
    }
    *mean = mu;
}

static inline __attribute__((always_inline)) void backward_body(const float *grad, const float *x, float mu, float *dx,
                                                                int64_t m, float k, float t) {
    float acc[LANES] = {0}, acc_g[LANES] = {0}, acc_gd[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= m; i += LANES)
        for (int l = 0; l < LANES; ++l) {
            const float d = x[i + l] - mu;
            acc[l] += d * d;
        }
    for (int l = 0; i < m; ++i, ++l) {
        const float d = x[i] - mu;
        acc[l] += d * d;
    }
    const float inv_std = sqrtf((float)(m - 1)) / sqrtf(combine(acc));
    const float slope = inv_std * (-k * t * t), peak = k * SQRT2F * t;
    for (i = 0; i + LANES <= m; i += LANES)
        for (int l = 0; l < LANES; ++l) {
            const float d = x[i + l] - mu;
            const float w = fabsf(d) * slope + peak;
            const float g = grad[i + l] * (w > 0.0f ? w : 0.0f);
            dx[i + l] = g;
            acc_g[l] += g;
            acc_gd[l] += g * d;
        }
    for (int l = 0; i < m; ++i, ++l) {
        const float d = x[i] - mu;
        const float w = fabsf(d) * slope + peak;
        const float g = grad[i] * (w > 0.0f ? w : 0.0f);
        dx[i] = g;
        acc_g[l] += g;
        acc_gd[l] += g * d;
    }
    const float g_mean = combine(acc_g) / (float)m;
    const float d_coef = combine(acc_gd) * (inv_std * inv_std * inv_std) / -(float)(m - 1);
    const float shift = g_mean * inv_std;
    for (i = 0; i < m; ++i) dx[i] = ((x[i] - mu) * d_coef - shift) + dx[i] * inv_std;
}

static void forward_baseline(const float *x, float *out, float *mean, int64_t m) { forward_body(x, out, mean, m); }
static void backward_baseline(const float *grad, const float *x, float mu, float *dx, int64_t m, float k, float t) {
    backward_body(grad, x, mu, dx, m, k, t);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_PATHS 1
__attribute__((target("avx2"))) static void forward_avx2(const float *x, float *out, float *mean, int64_t m) {
    forward_body(x, out, mean, m);
}
__attribute__((target("avx2"))) static void backward_avx2(const float *grad, const float *x, float mu, float *dx,
                                                          int64_t m, float k, float t) {
    backward_body(grad, x, mu, dx, m, k, t);
}
__attribute__((target("avx512f"))) static void forward_avx512(const float *x, float *out, float *mean, int64_t m) {
    forward_body(x, out, mean, m);
}
__attribute__((target("avx512f"))) static void backward_avx512(const float *grad, const float *x, float mu, float *dx,
                                                               int64_t m, float k, float t) {
    backward_body(grad, x, mu, dx, m, k, t);
}
#endif

static const char *const NAMES[] = {"baseline", "avx2", "avx512"};
static const forward_fn FORWARD[] = {
    forward_baseline,
#ifdef HAVE_X86_PATHS
    forward_avx2, forward_avx512,
#endif
};
static const backward_fn BACKWARD[] = {
    backward_baseline,
#ifdef HAVE_X86_PATHS
    backward_avx2, backward_avx512,
#endif
};
static int selected = -1;

static int path_index(const char *name) {
    for (int p = 0; p < (int)(sizeof FORWARD / sizeof FORWARD[0]); ++p)
        if (strcmp(name, NAMES[p]) == 0) return p;
    return -1;
}

int obq_abi_version(void) { return ABI_VERSION; }

/* 1 if this build has the code path and the CPU runs it. */
int obq_path_supported(const char *name) {
    const int p = path_index(name);
    if (p < 0) return 0;
#ifdef HAVE_X86_PATHS
    __builtin_cpu_init();
    if (p == 1) return __builtin_cpu_supports("avx2") != 0;
    if (p == 2) return __builtin_cpu_supports("avx512f") != 0;
#endif
    return 1;
}

/* Select a code path by name (0 on success, -1 if unsupported); NULL selects the best one. */
int obq_set_path(const char *name) {
    if (name == NULL) {
        for (int p = (int)(sizeof FORWARD / sizeof FORWARD[0]) - 1; p >= 0; --p)
            if (obq_path_supported(NAMES[p])) return selected = p, 0;
    }
    if (!obq_path_supported(name)) return -1;
    selected = path_index(name);
    return 0;
}

const char *obq_path_name(void) {
    if (selected < 0) obq_set_path(NULL);
    return NAMES[selected];
}

/* x, out: n samples of m contiguous values; mean: n values. */
void obq_standardized_sign_forward(const float *x, float *out, float *mean, int64_t n, int64_t m, int threads) {
    if (selected < 0) obq_set_path(NULL);
    const forward_fn f = FORWARD[selected];
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && n > 1)
    for (int64_t s = 0; s < n; ++s) f(x + s * m, out + s * m, mean + s, m);
}

/* grad, x, dx: n samples of m contiguous values; mean: the forward's n means. */
void obq_standardized_sign_backward(const float *grad, const float *x, const float *mean, float *dx, int64_t n,
                                    int64_t m, float k, float t, int threads) {
    if (selected < 0) obq_set_path(NULL);
    const backward_fn f = BACKWARD[selected];
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && n > 1)
    for (int64_t s = 0; s < n; ++s) f(grad + s * m, x + s * m, mean[s], dx + s * m, m, k, t);
}
