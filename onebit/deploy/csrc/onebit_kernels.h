/* Bit-packed binary convolution kernels of onebit (C ABI, loaded with ctypes).
 *
 * Data layout ("nibble planes"). A binarized activation tensor is stored as bytes holding
 * 4 channels each: bit i of a byte is 1 when channel 4q+i is negative (sign = -1) and 0
 * when it is +1, as in the Larq Compute Engine (bit 1 = -1). Channels are grouped per
 * convolution group (ceil(Cg/4) planes per group, tail bits 0). Each plane is stored
 * already padded for the convolution that reads it (pad bits 0 = +1, so "one" padding is
 * native and zero padding is corrected at the border afterwards):
 *   stride 1: pitch Wq = W + pw; the right padding of row Y is the left padding of row
 *             Y+1, so a tap (ky, kx) of output position p = y*Wq + x reads byte
 *             p + ky*Wq + kx. Only kw - 1 - pw "garbage" output columns per row are computed.
 *             (Wq = W + 2 pw without sharing when pw >= kw.)
 *   stride s: the padded input is split into s*s phase planes (rows Y % s, columns X % s),
 *             each of pitch Wq = ceil((W + 2pw) / s); tap (ky, kx) reads phase
 *             (ky % s, kx % s) at p + (ky / s) * Wq + kx / s.
 * A convolution is then a GEMM over G = kh*kw*ceil(Cg/4) nibble rows without im2col.
 *
 * The GEMM counts popcount(a XOR w) per 4-bit nibble with a 16-entry table lookup (vpshufb
 * on AVX2): table T_w[a] = popcount(a ^ w) is selected by the weight nibble w and indexed by
 * 32 activation bytes at once, so one shuffle + one byte add do 32 positions x 4 bits.
 * The dot product of K = kh*kw*Cg signs is K - 2*count (xnor-popcount).
 *
 * Data layout ("channel words", oneDNN's blocked nChw64c). The same planes with 64 channels
 * per position in one 64-bit word (bit i = channel 64q+i) instead of 4 in a nibble:
 * ceil(Cg/64) word planes per group, the same padding, pitch and phases, offsets in words.
 * The GEMM runs over G = kh*kw*ceil(Cg/64) word rows with xor + 64-bit popcount (vpopcntq on
 * AVX-512 VPOPCNTDQ: 8 positions x 64 channels per instruction). A code path that has a word
 * tile uses this layout; the caller picks the layout per convolution (ob_conv.words).
 */
#ifndef ONEBIT_KERNELS_H
#define ONEBIT_KERNELS_H

#include <stdint.h>

#define OB_NR 6        /* output channels per weight block of the nibble tile */
#define OB_NR_WORDS 8  /* output channels per weight block of the word tile */
#define OB_SPAN 64     /* most output channels of one task (a whole word of the next layer's planes) */
#define OB_PB 64       /* output positions per tile */
#define OB_CHUNK 63    /* nibble rows per byte-accumulator chunk: 63 * 4 <= 255 */
#define OB_MAX_KERNEL_SIDE 63     /* largest kernel height or width ob_conv_init accepts */
#define OB_MAX_DOT_LENGTH 65535   /* largest dot product kh * kw * cg: counts are 16-bit */

/* Shape and derived layout of one binary convolution (filled by ob_conv_init). */
typedef struct {
    /* set by the caller */
    int32_t n, c, h, w;            /* input batch, channels, height, width */
    int32_t cout, groups;
    int32_t kh, kw, sh, sw, ph, pw;
    int32_t words;                 /* 1: channel-word layout, 0: nibble planes */
    /* derived */
    int32_t ho, wo;                /* output height and width */
    int32_t cg, cog;               /* input / output channels per group */
    int32_t q;                     /* planes per group: ceil(cg / 4) nibble or ceil(cg / 64) word planes */
    int32_t g;                     /* GEMM depth in nibble or word rows: kh * kw * q */
    int32_t unit;                  /* bytes per position of a plane: 1 (nibbles) or 8 (words) */
    int32_t nr;                    /* output channels per weight block: OB_NR or OB_NR_WORDS */
    int32_t k_bits;                /* true dot-product length: kh * kw * cg */
    int32_t hq, wq;                /* rows and pitch of one (phase) plane */
    int32_t ob;                    /* weight blocks per group: ceil(cog / nr) */
    int32_t pblocks;               /* tiles of OB_PB positions per image */
    int64_t positions;             /* computed positions per image: ho * wq */
    int64_t phase_bytes;           /* hq * wq * unit */
    int64_t plane_bytes;           /* sh * sw * phase_bytes */
    int64_t image_bytes;           /* groups * q * plane_bytes */
    int64_t input_bytes;           /* n * image_bytes + read slack */
} ob_conv;

/* What the convolution writes. The dot product d (an integer) becomes
 *   float:  v = out[n][o][y][x] = fma(d * pre[o], mult[o], bias[o]) (+ residual[n][o][y][x]), d * pre[o]
 *           rounded to float (a per-channel scale before a BatchNorm, as PyTorch rounds it; exact for 1)
 *   bits:   the input planes of the next binary convolution (layout `next`), negative bit
 *           = (d < thresh[o]) != flip[o] (LCE's bitpacked output, no float written), or, with
 *           float output, negative bit = !(v >= float_thresh[o]) (the next layer's sign of v,
 *           written while v is in cache). */
typedef struct {
    const float* pre;           /* NULL: 1 */
    const float* mult;
    const float* bias;
    const float* residual;      /* may be NULL */
    float* out;                 /* NULL when only bits are written */
    const int32_t* thresh;      /* bits from the integer dot product */
    const uint8_t* flip;
    const float* float_thresh;  /* bits from the float output */
    const ob_conv* next;
    uint8_t* next_planes;       /* NULL: no bits */
} ob_output;

/* Zero-padding correction. With zero padding the padded taps contribute 0, not the +1 * w
 * the bits computed: the dot product loses the sum of the +-1 weights of the padded taps.
 * Output rows (columns) fall into a few classes by which kernel rows (columns) they pad;
 * class 0 pads nothing. value[o][row class][column class] is the amount to subtract. */
typedef struct {
    int32_t n_rows, n_cols;
    const uint8_t* row_class;  /* [ho] */
    const uint8_t* col_class;  /* [wo] */
    const int32_t* value;      /* [cout][n_rows][n_cols] */
} ob_padding;

/* The output positions of a tile on one output row: row y, columns [x0, x1); p is the tile
 * index of column x0. */
typedef struct {
    int64_t y, x0, x1, p;
    int64_t at;   /* offset of (y, x0) in an output plane: y * wo + x0 */
    int32_t fix;  /* offset of the row's interior correction in ob_padding.value[o]: row class * n_cols */
} ob_segment;

/* A tile position whose column reads the left or right padding (zero padding only). */
typedef struct {
    int32_t p;    /* tile index */
    int32_t fix;  /* offset of its correction in ob_padding.value[o]: row class * n_cols + column class */
    int64_t at;   /* offset in an output plane */
} ob_edge;

/* Where the outputs of one tile go: its row segments, and its edge positions (zero padding). */
typedef struct {
    const ob_segment* seg;
    int nseg;
    const ob_edge* edge;
    int nedge;
    int32_t k_bits;  /* the dot product length */
} ob_tile_rows;

/* The float loops of a code path (float_ops.h). */
typedef struct {
    void (*channel_float)(const ob_tile_rows* rows, const uint16_t* count, const int32_t* fix, float pre, float mult,
                          float bias, const float* res, float* out, const float* t, uint8_t* neg);
    void (*channel_flags)(const ob_tile_rows* rows, const uint16_t* count, const int32_t* fix, int32_t t,
                          uint8_t flip, uint8_t* neg);
    void (*nibbles)(const uint8_t* f0, const uint8_t* f1, const uint8_t* f2, const uint8_t* f3, int n,
                    uint8_t* out);
    void (*binarize_row4)(const float* x0, const float* x1, const float* x2, const float* x3, float t0,
                          float t1, float t2, float t3, int n, uint8_t* dst);
    void (*max_pool_plane)(const float* x, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw,
                           int ho, int wo, float* buf, float* out);
    void (*max_pool_row_nhwc)(const float* const* rows, int n, int w, int c, int kw, int sw, int pw, int wo,
                              const float* sign, float* acc, float* out, int64_t plane);
    void (*avg_pool_plane)(const float* x, int h, int w, int kh, int kw, int sh, int sw, int ph, int pw,
                           int ho, int wo, int count_include_pad, int divisor_override, float* buf, float* out);
} ob_float_ops;

/* The output transform of one task in one piece: the channels [o0, o0 + nch) of image n on the tile of
 * `width` positions whose row segments are seg[0, nseg), from their counts ([nch][OB_PB]), written as
 * ob_output describes; the next layer's bits (if any) as words[p] (bit r: channel o0 + r; the caller
 * stores them). Returns 0, having written nothing, where it does not apply (then the per-channel
 * loops of ob_float_ops run). */
typedef int (*ob_transform_fn)(const ob_conv* s, const ob_output* out, const ob_padding* fix, const ob_segment* seg,
                               int nseg, int64_t n, int64_t o0, int nch, const uint16_t* counts, int width,
                               uint64_t* words);

/* The channel-word layout of a code path. tile: as ob_tile_fn with OB_NR_WORDS channels, a in
 * bytes, w: [g][OB_NR_WORDS] uint64 weight words. words: out[p] = sum over r < nch of
 * neg[r][p] << r, p < width (neg rows of OB_PB bytes). binarize_row64: one input row of
 * cnt <= 64 channels -> dst[i] bit c = !(x[c][i] >= t[c]) (bits >= cnt are 0). transform: the
 * output transform of a whole task, or NULL. */
typedef struct {
    void (*tile)(const uint8_t* a, const int64_t* aoff, int g, const uint8_t* w, int width, uint16_t* counts);
    void (*words)(const uint8_t (*neg)[OB_PB], int nch, int width, uint64_t* out);
    void (*binarize_row64)(const float* const* x, const float* t, int cnt, int n, uint64_t* dst);
    ob_transform_fn transform;
} ob_word_ops;

/* The AMX int8 GEMM of the channel-word layout (words_amx.c). pays: does convolution s run on it (else on the
 * word tile). expand: count words -> 64 bytes each (+1 for bit 0, -1 for bit 1), out 64-byte aligned. begin / end:
 * configure / release the tile registers (each thread, around its tasks). span: counts[r][p] (r < nch rounded up
 * to 16, p < width) of the positions a (expanded planes at the task's first position; word row k at 8 * aoff[k])
 * and the weights w: ceil(nch / 16) tiles of 16 channels, [tile][g][16][16 channels][4] bytes (+1 / -1), word k's
 * channels 4 i .. 4 i + 3 in row i. */
typedef struct {
    int (*pays)(const ob_conv* s);
    void (*expand)(const uint8_t* words, int64_t count, int8_t* out);
    void (*begin)(void);
    void (*end)(void);
    void (*span)(const int8_t* a, const int64_t* aoff, int g, const int8_t* w, int nch, int width, uint16_t* counts);
} ob_amx_ops;

/* the amx path is compiled where Linux grants the tile registers and the compiler knows AMX (gcc 11, clang 12) */
#if defined(__x86_64__) && defined(__linux__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#define OB_HAVE_AMX 1
#endif

extern const ob_word_ops ob_word_ops_scalar;
#if defined(__x86_64__)
extern const ob_word_ops ob_word_ops_avx512;
#endif
#ifdef OB_HAVE_AMX
extern const ob_amx_ops ob_amx_ops_int8;
int ob_amx_usable(void);
int64_t ob_amx_loop_int8(int64_t n);
#endif

extern const ob_float_ops ob_float_ops_scalar;
#if defined(__x86_64__)
extern const ob_float_ops ob_float_ops_avx2;
#endif

#define OB_1X1_POSITIONS 32 /* positions of a tile of the float 1x1 convolution */

/* One output row of a float convolution (fconv.c): its weights [taps][cout] (taps in (ky, kx, c) order), the
 * optional batch norm [2][cout] (alpha, beta), and where each tap reads its input (off[t] floats from the
 * window's first input, column 0: ky * row pitch + kx + c * channel pitch of the padded input). */
typedef struct {
    const float* wt;
    const float* affine;
    const int64_t* off;
    int32_t taps, cout, sw, wo;
} ob_fconv_row;

/* The output channels [o_first, o_last) (whole vectors of 16) of the output row whose window starts at input
 * row `in` (column 0): dst[x * ld + o - o_first], x < wo. */
typedef void (*ob_fconv_row_fn)(const ob_fconv_row* r, const float* in, int o_first, int o_last, float* dst, int ld);
#if defined(__x86_64__)
void ob_fconv_row_avx512(const ob_fconv_row* r, const float* in, int o_first, int o_last, float* dst, int ld);
void ob_max_pool_row_nhwc_avx512(const float* const* rows, int n, int w, int c, int kw, int sw, int pw, int wo,
                                 float* acc, float* out, int64_t plane);
void ob_fconv1x1_tile_avx512(const float* x, int c, int h, int w, int avg, int64_t p0, int count, float* tile);
void ob_fconv1x1_avx512(const float* tile, int c, int kb, const float* wt, int cout, const float* affine, int count,
                        int o_first, int o_last, float* out, int64_t plane_out);
#endif

/* the float convolution row of the selected code path (NULL: it has none) */
ob_fconv_row_fn ob_current_fconv_row(void);

/* the float loops of the selected code path */
const ob_float_ops* ob_current_float_ops(void);

/* One GEMM tile: counts[r][p] = sum over g of popcount(A[aoff[g] + p] ^ w[g][r]) for
 * r < OB_NR, p < width (width = OB_PB or OB_PB / 2). w holds weight nibbles << 4. */
typedef void (*ob_tile_fn)(const uint8_t* a, const int64_t* aoff, int g, const uint8_t* w,
                           int width, uint16_t* counts);

void ob_tile_scalar(const uint8_t* a, const int64_t* aoff, int g, const uint8_t* w, int width,
                    uint16_t* counts);
#if defined(__x86_64__)
void ob_tile_avx2(const uint8_t* a, const int64_t* aoff, int g, const uint8_t* w, int width,
                  uint16_t* counts);
#endif

/* popcount(a ^ b) for 4-bit a, b: the lookup table shared by all kernels (row b, column a). */
extern const uint8_t ob_nibble_popcount[16][16];

#endif
