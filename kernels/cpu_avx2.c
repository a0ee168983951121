/* cpu_avx2.c: the AVX2 + FMA + F16C function table (kern_cpu_avx2). Every
 * function carries a target attribute instead of the file being compiled
 * with -mavx2, so one binary runs on any x86-64; isa.c only hands this
 * table out after __builtin_cpu_supports said yes.
 *
 * Quantized dots work on Q8 activations: 4-bit/5-bit/6-bit weights are
 * unsigned (0..15/31/63) and multiplied with the signed activations by
 * vpmaddubsw (pair sums fit int16: 2*63*127 < 32767), then weighted by the
 * sub-block scales with vpmaddwd. Offsets (Q4_0's 8, Q6_K's 32, K-quant
 * mins) are folded in with the activations' precomputed sums. */
#include "kern_avx2_inl.h"

#include <math.h>

/* ------------------------------------------------------- float weights */
AVX2 static float dot_f32(int k, const void *w, const void *x)
{
    const float *a = w, *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum_ps(_mm256_add_ps(s0, s1));
    for (; i < k; i++) s += a[i] * b[i];
    return s;
}

AVX2 static float dot_f16(int k, const void *w, const void *x)
{
    const uint16_t *a = w;
    const float *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i)));
        __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8)));
        s0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum_ps(_mm256_add_ps(s0, s1));
    for (; i < k; i++) s += f16(a[i]) * b[i];
    return s;
}

AVX2 static inline __m256 load_bf16(const uint16_t *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

AVX2 static float dot_bf16(int k, const void *w, const void *x)
{
    const uint16_t *a = w;
    const float *b = x;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        s0 = _mm256_fmadd_ps(load_bf16(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(load_bf16(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    float s = hsum_ps(_mm256_add_ps(s0, s1));
    for (; i < k; i++) s += kern_bf16_to_f32(a[i]) * b[i];
    return s;
}

/* Float weights against up to 4 activation rows (prompt tiles): each
 * weight vector is loaded and converted once. */
enum { F_F32, F_F16, F_BF16 };

AVX2 static inline __attribute__((always_inline)) __m256 load_w8(int kind, const void *w, int i)
{
    if (kind == F_F32) return _mm256_loadu_ps((const float *)w + i);
    if (kind == F_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    return load_bf16((const uint16_t *)w + i);
}

static inline float load_w1(int kind, const void *w, int i)
{
    if (kind == F_F32) return ((const float *)w)[i];
    if (kind == F_F16) return kern_f16_to_f32(((const uint16_t *)w)[i]);
    return kern_bf16_to_f32(((const uint16_t *)w)[i]);
}

AVX2 static inline __attribute__((always_inline)) void float_dotx(int kind, int nx, int k, const void *w, const void *x,
                                                                  size_t xs, float *out, size_t os)
{
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256 wv = load_w8(kind, w, i);
        for (int xi = 0; xi < nx; xi++)
            acc[xi] = _mm256_fmadd_ps(wv, _mm256_loadu_ps((const float *)((const uint8_t *)x + xi * xs) + i), acc[xi]);
    }
    for (int xi = 0; xi < nx; xi++) {
        const float *xr = (const float *)((const uint8_t *)x + xi * xs);
        float s = hsum_ps(acc[xi]);
        for (int t = i; t < k; t++) s += load_w1(kind, w, t) * xr[t];
        out[xi * os] = s;
    }
}

KERN_DOTX_INSTANCE(AVX2, dotx_f32, float_dotx, F_F32)
KERN_DOTX_INSTANCE(AVX2, dotx_f16, float_dotx, F_F16)
KERN_DOTX_INSTANCE(AVX2, dotx_bf16, float_dotx, F_BF16)

/* ------------------------------------- 32-element blocks: Q4_0 ... Q8_0 */
/* Q4_0/Q5_0 values are used unsigned (0..15 / 0..31) and the offset (8 /
 * 16) times the activations, computed once per block and activation row, is
 * subtracted in int16 (|pair sums| <= 2*31*127: no saturation). Q4_1/Q5_1
 * (x = d*q + m) add m*dy*sum(y). Q8_0 uses the sign trick. */
enum { B_Q4_0, B_Q5_0, B_Q8_0, B_Q4_1, B_Q5_1 };

static inline size_t b32_bytes(int kind)
{
    return kern_type_block_bytes(kind == B_Q4_0   ? KERN_TYPE_Q4_0
                                 : kind == B_Q5_0 ? KERN_TYPE_Q5_0
                                 : kind == B_Q8_0 ? KERN_TYPE_Q8_0
                                 : kind == B_Q4_1 ? KERN_TYPE_Q4_1
                                                  : KERN_TYPE_Q5_1);
}

/* the 32 quantized values of the block at br, as bytes in element order */
AVX2 static inline __attribute__((always_inline)) __m256i b32_decode(int kind, const uint8_t *br)
{
    if (kind == B_Q4_0) return q4_0_bytes(br + 2);
    if (kind == B_Q4_1) return q4_0_bytes(br + 4);
    if (kind == B_Q8_0) return _mm256_loadu_si256((const __m256i *)(br + 2));
    const uint8_t *qhp = br + (kind == B_Q5_0 ? 2 : 4);
    uint32_t qh;
    memcpy(&qh, qhp, 4);
    return _mm256_or_si256(q4_0_bytes(qhp + 4), _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(16)));
}

/* 8 int32 lanes summing to sum(q*y) (offset included); off = the kind's
 * offset products of yv (unused for Q8_0 and the affine kinds) */
AVX2 static inline __attribute__((always_inline)) __m256i b32_dot(int kind, __m256i q, __m256i yv, __m256i off)
{
    const __m256i ones = _mm256_set1_epi16(1);
    if (kind == B_Q8_0) return dot_i8(q, yv);
    if (kind == B_Q4_1 || kind == B_Q5_1) return _mm256_madd_epi16(_mm256_maddubs_epi16(q, yv), ones);
    return _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(q, yv), off), ones);
}

AVX2 static inline __m256i b32_offset(int kind, __m256i yv)
{
    return _mm256_maddubs_epi16(_mm256_set1_epi8(kind == B_Q4_0 ? 8 : 16), yv);
}

/* 8 int32 lanes summing to sum(y) */
AVX2 static inline __m256i ysum8(__m256i yv)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), yv), _mm256_set1_epi16(1));
}

/* One row (decode of long rows): two blocks per step into two accumulators
 * (independent FMA chains). */
AVX2 static inline __attribute__((always_inline)) void dot1_block(int kind, const uint8_t *blk, const kblock_q8_0 *y,
                                                                  __m256 *acc)
{
    __m256i yv = _mm256_loadu_si256((const __m256i *)y->qs);
    __m256i off = kind == B_Q4_0 || kind == B_Q5_0 ? b32_offset(kind, yv) : yv;
    __m256i s = b32_dot(kind, b32_decode(kind, blk), yv, off);
    uint16_t dh;
    memcpy(&dh, blk, 2);
    float dy = f16(y->d);
    *acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(dh) * dy), _mm256_cvtepi32_ps(s), *acc);
    if (kind == B_Q4_1 || kind == B_Q5_1) { /* + m*dy*sum(y): the lanes add up in the final sum */
        uint16_t mh;
        memcpy(&mh, blk + 2, 2);
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(mh) * dy), _mm256_cvtepi32_ps(ysum8(yv)), *acc);
    }
}

AVX2 static inline __attribute__((always_inline)) float dot1_blocks(int kind, int k, const void *w, const void *x)
{
    const uint8_t *a = w;
    const kblock_q8_0 *y = x;
    const size_t bb = b32_bytes(kind);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int nb = k / KQK, i = 0;
    for (; i + 2 <= nb; i += 2) {
        dot1_block(kind, a + (size_t)i * bb, &y[i], &acc0);
        dot1_block(kind, a + (size_t)(i + 1) * bb, &y[i + 1], &acc1);
    }
    if (i < nb) dot1_block(kind, a + (size_t)i * bb, &y[i], &acc0);
    return hsum_ps(_mm256_add_ps(acc0, acc1));
}

AVX2 static float dot_q4_0(int k, const void *w, const void *x) { return dot1_blocks(B_Q4_0, k, w, x); }
AVX2 static float dot_q5_0(int k, const void *w, const void *x) { return dot1_blocks(B_Q5_0, k, w, x); }
AVX2 static float dot_q8_0(int k, const void *w, const void *x) { return dot1_blocks(B_Q8_0, k, w, x); }
AVX2 static float dot_q4_1(int k, const void *w, const void *x) { return dot1_blocks(B_Q4_1, k, w, x); }
AVX2 static float dot_q5_1(int k, const void *w, const void *x) { return dot1_blocks(B_Q5_1, k, w, x); }

/* 4 weight rows x nx (1..4) activation rows. Each weight block is decoded
 * once and used for all nx activation rows (prompt tiles); decode of short
 * rows uses nx = 1. */
AVX2 static inline __attribute__((always_inline)) void dot4_blocks(int kind, int nx, int k, const void *w, size_t ws,
                                                                   const void *x, size_t xs, float *out, size_t os)
{
    const uint8_t *w0 = w;
    const size_t bb = b32_bytes(kind);
    const int affine = kind == B_Q4_1 || kind == B_Q5_1;
    __m128 acc[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    for (int i = 0; i < k / KQK; i++) {
        prefetch_ahead(w0, ws, i, bb);
        const uint8_t *blk = w0 + (size_t)i * bb;
        __m256i q[4];
        for (int r = 0; r < 4; r++) q[r] = b32_decode(kind, blk + r * ws);
        __m128 sw = scales4(blk, ws, 1.0f), mw = affine ? scales4(blk + 2, ws, 1.0f) : sw;
        for (int xi = 0; xi < nx; xi++) {
            const kblock_q8_0 *y = (const kblock_q8_0 *)((const uint8_t *)x + xi * xs) + i;
            __m256i yv = _mm256_loadu_si256((const __m256i *)y->qs), s[4];
            __m256i off = kind == B_Q4_0 || kind == B_Q5_0 ? b32_offset(kind, yv) : yv;
            for (int r = 0; r < 4; r++) s[r] = b32_dot(kind, q[r], yv, off);
            if (affine) { /* + m * dy * sum(y), for the 4 rows' m */
                __m256i ys = ysum8(yv);
                __m128i y4 = _mm_add_epi32(_mm256_castsi256_si128(ys), _mm256_extracti128_si256(ys, 1));
                y4 = _mm_hadd_epi32(y4, y4);
                y4 = _mm_hadd_epi32(y4, y4); /* sum(y) in every lane */
                acc[xi] = _mm_fmadd_ps(_mm_mul_ps(mw, _mm_set1_ps(f16(y->d))), _mm_cvtepi32_ps(y4), acc[xi]);
            }
            __m128 sc = _mm_mul_ps(sw, _mm_set1_ps(f16(y->d)));
            acc[xi] = _mm_fmadd_ps(sc, _mm_cvtepi32_ps(reduce4(s[0], s[1], s[2], s[3])), acc[xi]);
        }
    }
    for (int xi = 0; xi < nx; xi++) _mm_storeu_ps(out + xi * os, acc[xi]);
}

KERN_DOT4_INSTANCE(AVX2, dot4_q4_0, dot4_blocks, B_Q4_0)
KERN_DOT4_INSTANCE(AVX2, dot4_q5_0, dot4_blocks, B_Q5_0)
KERN_DOT4_INSTANCE(AVX2, dot4_q8_0, dot4_blocks, B_Q8_0)
KERN_DOT4_INSTANCE(AVX2, dot4_q4_1, dot4_blocks, B_Q4_1)
KERN_DOT4_INSTANCE(AVX2, dot4_q5_1, dot4_blocks, B_Q5_1)

/* ------------------------------------------------------ Q4_K and Q5_K */
/* Unpacks the 12 bytes of 6-bit scales and mins into 8 scale bytes
 * (out[0..7]) and 8 min bytes (out[8..15]) with word operations: bytes 0-3
 * hold scales 0-3 and the top 2 bits of scales 4-7, bytes 4-7 mins 0-3 and
 * the top bits of mins 4-7, bytes 8-11 the low nibbles of scales 4-7 (low)
 * and mins 4-7 (high). */
static inline void k4_unpack(const uint8_t *packed, uint32_t out[4])
{
    const uint32_t m6 = 0x3f3f3f3f, m4 = 0x0f0f0f0f, m2 = 0x03030303;
    uint32_t a, b, c;
    memcpy(&a, packed, 4);
    memcpy(&b, packed + 4, 4);
    memcpy(&c, packed + 8, 4);
    out[0] = a & m6;
    out[1] = (c & m4) | ((a >> 6) & m2) << 4;
    out[2] = b & m6;
    out[3] = ((c >> 4) & m4) | ((b >> 6) & m2) << 4;
}

/* shuffle controls: word j of an 8 x i16 vector in every i16 of a ymm */
AVX2 static inline __m256i word_bcast(__m256i v, int j)
{
    return _mm256_shuffle_epi8(v, _mm256_set1_epi16((short)(0x0100 * (2 * j + 1) + 2 * j)));
}

/* The K-quant kernels take one weight row and nx (1..4) activation rows
 * (stride xs bytes), writing out[xi*os]: each weight super-block is
 * decoded once (nibbles, fifth bits, scales) for all activation rows of a
 * prompt tile; decode uses nx = 1. Each super-block's integer sum is exact
 * and is added in float as acc = fma(d*dy, sum, acc) (then the mins term),
 * the arithmetic of the tiled AVX-512 kernels (cpu_avx512_gemm.c), so a
 * row gives bitwise the same result batched or alone. */

/* sum over the 8 sub-blocks of min_j * (sum of y over sub-block j) */
AVX2 static inline int k45_minsum(__m128i mins16, const kblock_q8_K *y)
{
    __m128i bs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)y->bsums), _mm_loadu_si128((const __m128i *)(y->bsums + 8)));
    __m128i m = _mm_madd_epi16(mins16, bs);
    m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0x4e));
    m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0xb1));
    return _mm_cvtsi128_si32(m);
}

/* Q4_K (q5 = 0) and Q5_K (q5 = 1): for Q5_K bit j of qh[l] is the fifth bit
 * of element 32j+l. */
AVX2 static inline __attribute__((always_inline)) void k45_dot(int q5, int nx, int k, const void *w, const void *x,
                                                               size_t xs, float *out, size_t os)
{
    const size_t bb = q5 ? sizeof(kblock_q5_K) : sizeof(kblock_q4_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F), b4 = _mm256_set1_epi8(0x10);
    float acc[4] = {0, 0, 0, 0};
    for (int i = 0; i < k / KQK_K; i++) {
        const uint8_t *blk = (const uint8_t *)w + (size_t)i * bb;
        /* both layouts start {f16 d, dmin; u8 scales[12]}; Q5_K then has qh[32] */
        const uint8_t *qh = blk + 16, *qs = blk + (q5 ? 48 : 16);
        uint16_t dh, mh;
        memcpy(&dh, blk, 2);
        memcpy(&mh, blk + 2, 2);
        uint32_t u[4];
        k4_unpack(blk + 4, u);
        __m128i sm = _mm_loadu_si128((const __m128i *)u);
        const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm)); /* 8 scales, both lanes */
        const __m128i mins16 = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
        __m256i hb = q5 ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
        __m256i sumi[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (q5) {
                __m256i bl = _mm256_set1_epi8((char)(1 << (2 * c))), bh = _mm256_set1_epi8((char)(2 << (2 * c)));
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, bl), bl), b4));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, bh), bh), b4));
            }
            __m256i s0 = word_bcast(sc16, 2 * c), s1 = word_bcast(sc16, 2 * c + 1);
            for (int xi = 0; xi < nx; xi++) {
                const int8_t *y = ((const kblock_q8_K *)((const uint8_t *)x + xi * xs) + i)->qs + 64 * c;
                __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)y)), s0);
                __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(y + 32))), s1);
                sumi[xi] = _mm256_add_epi32(sumi[xi], _mm256_add_epi32(p0, p1));
            }
        }
        for (int xi = 0; xi < nx; xi++) {
            const kblock_q8_K *y = (const kblock_q8_K *)((const uint8_t *)x + xi * xs) + i;
            acc[xi] = fmaf(f16(dh) * y->d, (float)hsum_epi32(sumi[xi]), acc[xi]);
            acc[xi] = fmaf(-(f16(mh) * y->d), (float)k45_minsum(mins16, y), acc[xi]);
        }
    }
    for (int xi = 0; xi < nx; xi++) out[xi * os] = acc[xi];
}

/* [scale 2s (8 times) | scale 2s+1 (8 times)] from 8 i16 scales in both lanes */
AVX2 static inline __m256i scale_pair(__m256i sc16, int s)
{
    const short lo = (short)(0x0100 * (4 * s + 1) + 4 * s), hi = (short)(0x0100 * (4 * s + 3) + 4 * s + 2);
    return _mm256_shuffle_epi8(sc16, _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo)));
}

/* Q6_K: values used unsigned (0..63); the -32 offset is subtracted as
 * 32 * sum_g sc_g * bsum_g. (The unused first argument keeps the shape of
 * the instance macro.) */
AVX2 static inline __attribute__((always_inline)) void q6k_dot(int unused, int nx, int k, const void *w, const void *x,
                                                               size_t xs, float *out, size_t os)
{
    (void)unused;
    const kblock_q6_K *a = w;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m03 = _mm256_set1_epi8(0x03), m0c = _mm256_set1_epi8(0x0C),
                  m30 = _mm256_set1_epi8(0x30), mc0 = _mm256_set1_epi8((char)0xC0);
    float acc[4] = {0, 0, 0, 0};
    for (int i = 0; i < k / KQK_K; i++) {
        __m256i sumi[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
        __m128i sc8 = _mm_loadu_si128((const __m128i *)a[i].scales);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = a[i].ql + 64 * h;
            __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i hq = _mm256_loadu_si256((const __m256i *)(a[i].qh + 32 * h));
            /* 6-bit unsigned values of the four 32-element quarters */
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hq, m03), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(hq, m0c), 2));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hq, m30));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                   _mm256_srli_epi16(_mm256_and_si256(hq, mc0), 2));
            for (int xi = 0; xi < nx; xi++) {
                const int8_t *y = ((const kblock_q8_K *)((const uint8_t *)x + xi * xs) + i)->qs + 128 * h;
                for (int s = 0; s < 4; s++) {
                    __m256i p = _mm256_maddubs_epi16(q[s], _mm256_loadu_si256((const __m256i *)(y + 32 * s)));
                    sumi[xi] = _mm256_add_epi32(sumi[xi], _mm256_madd_epi16(p, scale_pair(sc16, s)));
                }
            }
        }
        __m256i sc16all = _mm256_cvtepi8_epi16(sc8);
        for (int xi = 0; xi < nx; xi++) {
            const kblock_q8_K *y = (const kblock_q8_K *)((const uint8_t *)x + xi * xs) + i;
            __m256i off = _mm256_madd_epi16(sc16all, _mm256_loadu_si256((const __m256i *)y->bsums));
            __m256i si = _mm256_sub_epi32(sumi[xi], _mm256_slli_epi32(off, 5));
            acc[xi] = fmaf(f16(a[i].d) * y->d, (float)hsum_epi32(si), acc[xi]);
        }
    }
    for (int xi = 0; xi < nx; xi++) out[xi * os] = acc[xi];
}

KERN_DOTX_INSTANCE(AVX2, dotx_q4_K, k45_dot, 0)
KERN_DOTX_INSTANCE(AVX2, dotx_q5_K, k45_dot, 1)
KERN_DOTX_INSTANCE(AVX2, dotx_q6_K, q6k_dot, 0)

AVX2 static float dot_q4_K(int k, const void *w, const void *x)
{
    float r;
    k45_dot(0, 1, k, w, x, 0, &r, 0);
    return r;
}

AVX2 static float dot_q5_K(int k, const void *w, const void *x)
{
    float r;
    k45_dot(1, 1, k, w, x, 0, &r, 0);
    return r;
}

AVX2 static float dot_q6_K(int k, const void *w, const void *x)
{
    float r;
    q6k_dot(0, 1, k, w, x, 0, &r, 0);
    return r;
}

/* ------------------------------------------------ activation quantizers */
/* 32 floats * id, rounded to nearest even, packed to int8 in order */
AVX2 static inline __m256i round_pack(const float *x, __m256 id)
{
    const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x), id), rnd));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8), id), rnd));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 16), id), rnd));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 24), id), rnd));
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    /* the packs work per 128-bit lane; restore element order */
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

AVX2 static inline float absmax(const float *x, int n)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Same arithmetic as the portable quantizers (d = amax/127, q = rint(x/d)
 * via x * (1/d)), so both ISAs produce the same activation bytes. */
AVX2 static void quant_q8_0(const float *x, void *y, int k)
{
    kblock_q8_0 *b = y;
    for (int i = 0; i < k / KQK; i++, x += KQK) {
        float d = absmax(x, KQK) / 127.0f, id = d != 0 ? 1.0f / d : 0;
        b[i].d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)b[i].qs, round_pack(x, _mm256_set1_ps(id)));
    }
}

AVX2 static void quant_q8_K(const float *x, void *y, int k)
{
    kblock_q8_K *b = y;
    for (int i = 0; i < k / KQK_K; i++, x += KQK_K) {
        float amax = absmax(x, KQK_K), id = amax > 0 ? 127.0f / amax : 0;
        b[i].d = amax / 127.0f;
        for (int j = 0; j < KQK_K; j += 32) {
            __m256i q = round_pack(x + j, _mm256_set1_ps(id));
            _mm256_storeu_si256((__m256i *)(b[i].qs + j), q);
            /* sums of each 16 values */
            __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
            /* s: lanes 0-3 sum elements 0-15, lanes 4-7 elements 16-31 */
            __m128i lo = _mm256_castsi256_si128(s), hi = _mm256_extracti128_si256(s, 1);
            __m128i t = _mm_hadd_epi32(lo, hi);
            t = _mm_hadd_epi32(t, t);
            b[i].bsums[j / 16] = (int16_t)_mm_extract_epi32(t, 0);
            b[i].bsums[j / 16 + 1] = (int16_t)_mm_extract_epi32(t, 1);
        }
    }
}

/* ------------------------------------------------ conversions, helpers */
AVX2 static void f16_to_f32(float *dst, const uint16_t *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = kern_f16_to_f32(src[i]);
}

AVX2 static void f32_to_f16(uint16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = kern_f32_to_f16(src[i]);
}

AVX2 static void axpy_f32(float *y, float a, const float *x, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

AVX2 static void axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, xv, _mm256_loadu_ps(y + i)));
    }
    for (; i < n; i++) y[i] += a * kern_f16_to_f32(x[i]);
}

AVX2 static void scale_f32(float *y, float a, int n)
{
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(av, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] *= a;
}

const kern_cpu_fns kern_cpu_avx2 = {
    .dot = {[KERN_TYPE_F32] = dot_f32, [KERN_TYPE_F16] = dot_f16, [KERN_TYPE_BF16] = dot_bf16,
            [KERN_TYPE_Q4_0] = dot_q4_0, [KERN_TYPE_Q4_1] = dot_q4_1, [KERN_TYPE_Q5_0] = dot_q5_0,
            [KERN_TYPE_Q5_1] = dot_q5_1, [KERN_TYPE_Q8_0] = dot_q8_0, [KERN_TYPE_Q4_K] = dot_q4_K,
            [KERN_TYPE_Q5_K] = dot_q5_K, [KERN_TYPE_Q6_K] = dot_q6_K},
    .dot4 = {[KERN_TYPE_Q4_0] = dot4_q4_0, [KERN_TYPE_Q5_0] = dot4_q5_0, [KERN_TYPE_Q8_0] = dot4_q8_0,
             [KERN_TYPE_Q4_1] = dot4_q4_1, [KERN_TYPE_Q5_1] = dot4_q5_1},
    .dotx = {[KERN_TYPE_F32] = dotx_f32, [KERN_TYPE_F16] = dotx_f16, [KERN_TYPE_BF16] = dotx_bf16,
             [KERN_TYPE_Q4_K] = dotx_q4_K, [KERN_TYPE_Q5_K] = dotx_q5_K, [KERN_TYPE_Q6_K] = dotx_q6_K},
    .quant_q8_0 = quant_q8_0,
    .quant_q8_K = quant_q8_K,
    .f16_to_f32 = f16_to_f32,
    .f32_to_f16 = f32_to_f16,
    .axpy_f32 = axpy_f32,
    .axpy_f16 = axpy_f16,
    .scale_f32 = scale_f32,
};
