/* kern_avx2_inl.h: small AVX2 helpers shared by the AVX2 and AVX-512
 * function tables (cpu_avx2.c, cpu_avx512.c). Each carries the AVX2 target
 * attribute, so it inlines into functions whose target includes AVX2. */
#ifndef COMMONS_KERN_AVX2_INL_H
#define COMMONS_KERN_AVX2_INL_H

#include "kern_internal.h"

#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* exact sum of 8 int32 lanes (wrapping like the lanes themselves) */
AVX2 static inline int32_t hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* sum of products of signed bytes, as 8 int32 (pairs via |x| * sign(y,x)) */
AVX2 static inline __m256i dot_i8(__m256i x, __m256i y)
{
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

AVX2 static inline float f16(uint16_t h) { return _cvtsh_ss(h); }

/* 32 nibbles of a Q4_0 block as bytes 0..15, in element order */
AVX2 static inline __m256i q4_0_bytes(const uint8_t *qs)
{
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* 0xFF in byte j where bit j of the 32-bit mask is set */
AVX2 static inline __m256i bits_to_bytes(uint32_t m)
{
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m),
                                    _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL,
                                                       0x0303030303030303LL));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* 4 rows' 8-lane int32 partial sums -> the 4 totals */
AVX2 static inline __m128i reduce4(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* The 4-row kernels read 4 short streams at once (one per row); hardware
 * prefetchers do not train on streams that short, so prefetch the weights
 * linearly ahead: while block i of this group is used, 4*bb bytes at
 * distance i*4*bb + D from the group's start are requested, D = two groups
 * but at most 16 KiB (half an L1d, so lines are not evicted before use). */
/* always_inline: GCC considers a function that only prefetches pure and
 * drops calls to it whose result is unused, when it is not inlined first. */
AVX2 static inline __attribute__((always_inline)) void prefetch_ahead(const uint8_t *w0, size_t ws, int i, size_t bb)
{
    const uint8_t *p = w0 + (8 * ws < 16384 ? 8 * ws : 16384) + (size_t)i * 4 * bb;
    for (size_t off = 0; off < 4 * bb; off += 64) _mm_prefetch((const char *)(p + off), _MM_HINT_T0);
}

/* f16 scale of block i in 4 rows (stride ws) times the activation scale */
AVX2 static inline __m128 scales4(const uint8_t *blk, size_t ws, float dy)
{
    uint16_t h[4];
    for (int r = 0; r < 4; r++) memcpy(&h[r], blk + r * ws, 2);
    __m128i v = _mm_setr_epi16((short)h[0], (short)h[1], (short)h[2], (short)h[3], 0, 0, 0, 0);
    return _mm_mul_ps(_mm_cvtph_ps(v), _mm_set1_ps(dy));
}

/* Defines kern_dot4_fn `name` (attributes ATTR) calling the always-inline
 * body(kind, nx, ...) with a constant nx = 1..4, so its loops over the
 * activation rows unroll. */
#define KERN_DOT4_INSTANCE(ATTR, name, body, kind)                                                       \
    ATTR static void name(int k, const void *w, size_t ws, const void *x, size_t xs, int nx, float *out,   \
                          size_t os)                                                                     \
    {                                                                                                    \
        switch (nx) {                                                                                    \
        case 1: body(kind, 1, k, w, ws, x, xs, out, os); break;                                         \
        case 2: body(kind, 2, k, w, ws, x, xs, out, os); break;                                         \
        case 3: body(kind, 3, k, w, ws, x, xs, out, os); break;                                         \
        default: body(kind, 4, k, w, ws, x, xs, out, os); break;                                        \
        }                                                                                                \
    }

/* The same for kern_dotx_fn (one weight row, nx activation rows). */
#define KERN_DOTX_INSTANCE(ATTR, name, body, kind)                                                       \
    ATTR static void name(int k, const void *w, const void *x, size_t xs, int nx, float *out, size_t os) \
    {                                                                                                    \
        switch (nx) {                                                                                    \
        case 1: body(kind, 1, k, w, x, xs, out, os); break;                                             \
        case 2: body(kind, 2, k, w, x, xs, out, os); break;                                             \
        case 3: body(kind, 3, k, w, x, xs, out, os); break;                                             \
        default: body(kind, 4, k, w, x, xs, out, os); break;                                            \
        }                                                                                                \
    }

#endif
