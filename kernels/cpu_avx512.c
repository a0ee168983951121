/* cpu_avx512.c: the AVX-512 (F, BW, VL, VNNI) function table. It is the
 * AVX2 table with the 32-block kernels (Q4_0, Q5_0, Q8_0) replaced: on
 * 256-bit vectors, vpdpbusd multiplies unsigned by signed bytes and adds
 * groups of 4 into int32 lanes in one instruction (AVX2 needs vpmaddubsw +
 * vpmaddwd), and Q5_0's fifth bits become bytes with one masked move.
 * These dominate decode and prompt time of Q4_0/Q5_0/Q8_0 models. Several
 * activation rows take the tiled kernels (cpu_avx512_gemm.c) as well. */
#include "kern_avx2_inl.h"

#include <pthread.h>

#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

enum { V_Q4_0, V_Q5_0, V_Q8_0 };

/* Same contract as the AVX2 4-row kernels (kern_dot4_fn). Q4_0/Q5_0: the
 * accumulator of each block starts at -off*sum(y) (one vpdpbusd per
 * activation row), then one vpdpbusd per weight row adds sum(q*y) with q
 * unsigned. Q8_0: |w| times y with w's sign. */
AVX512 static inline __attribute__((always_inline)) void dot4_vnni(int kind, int nx, int k, const void *w, size_t ws,
                                                                   const void *x, size_t xs, float *out, size_t os)
{
    const uint8_t *w0 = w;
    const size_t bb = kind == V_Q4_0 ? sizeof(kblock_q4_0) : kind == V_Q5_0 ? sizeof(kblock_q5_0) : sizeof(kblock_q8_0);
    const __m256i offv = _mm256_set1_epi8(kind == V_Q4_0 ? 8 : 16), zero = _mm256_setzero_si256();
    __m128 acc[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    for (int i = 0; i < k / KQK; i++) {
        prefetch_ahead(w0, ws, i, bb);
        const uint8_t *blk = w0 + (size_t)i * bb;
        __m256i q[4];
        for (int r = 0; r < 4; r++) {
            const uint8_t *br = blk + r * ws;
            if (kind == V_Q4_0) {
                q[r] = q4_0_bytes(br + 2);
            } else if (kind == V_Q5_0) {
                uint32_t qh;
                memcpy(&qh, br + 2, 4);
                q[r] = _mm256_or_si256(q4_0_bytes(br + 6), _mm256_maskz_mov_epi8((__mmask32)qh, offv));
            } else {
                q[r] = _mm256_loadu_si256((const __m256i *)(br + 2));
            }
        }
        __m128 sw = scales4(blk, ws, 1.0f);
        for (int xi = 0; xi < nx; xi++) {
            const kblock_q8_0 *y = (const kblock_q8_0 *)((const uint8_t *)x + xi * xs) + i;
            __m256i yv = _mm256_loadu_si256((const __m256i *)y->qs), s[4];
            if (kind == V_Q8_0) {
                for (int r = 0; r < 4; r++)
                    s[r] = _mm256_dpbusd_epi32(zero, _mm256_abs_epi8(q[r]), _mm256_sign_epi8(yv, q[r]));
            } else {
                __m256i init = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, offv, yv));
                for (int r = 0; r < 4; r++) s[r] = _mm256_dpbusd_epi32(init, q[r], yv);
            }
            __m128 sc = _mm_mul_ps(sw, _mm_set1_ps(f16(y->d)));
            acc[xi] = _mm_fmadd_ps(sc, _mm_cvtepi32_ps(reduce4(s[0], s[1], s[2], s[3])), acc[xi]);
        }
    }
    for (int xi = 0; xi < nx; xi++) _mm_storeu_ps(out + xi * os, acc[xi]);
}

/* Decode (one activation row) of 4 weight rows on 512-bit vectors: one
 * vector holds 16 bytes of the same block of the 4 rows (128-bit segment r
 * = row r), so a block takes 2 vpdpbusd for the 4 rows. Per group of 4
 * blocks, the 4 blocks' lanes are summed to exact integers (lane 4r+j =
 * row r, block j) with an unpack tree, the 16 weight scales come from one
 * gather, and the rows' accumulators (lane 4r) take the 4 blocks in order,
 * acc = fma(dw*dy, sum, acc): the arithmetic of the other 32-block kernels
 * (dot4_vnni, the tiled ones), so a row's result is bitwise the same. */

/* 16 bytes of block b of the 4 rows: the low (hi = 0) or high elements;
 * Q5_0: fifth bits in m5 (bit 16r+i = element i of the half in row r) */
AVX512 static inline __attribute__((always_inline)) __m512i rows4(int kind, const uint8_t *blk, size_t ws, int hi,
                                                                  uint64_t m5)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    if (kind == V_Q8_0) { /* signed -> unsigned: q + 128 */
        const uint8_t *q = blk + 2 + 16 * hi;
        __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)q));
        z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(q + ws)), 1);
        z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(q + 2 * ws)), 2);
        z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(q + 3 * ws)), 3);
        return _mm512_xor_si512(z, _mm512_set1_epi8((char)0x80));
    }
    const uint8_t *q = blk + (kind == V_Q5_0 ? 6 : 2);
    __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)q));
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(q + ws)), 1);
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(q + 2 * ws)), 2);
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(q + 3 * ws)), 3);
    z = _mm512_and_si512(hi ? _mm512_srli_epi16(z, 4) : z, m4);
    if (kind == V_Q5_0) z = _mm512_or_si512(z, _mm512_maskz_mov_epi8((__mmask64)m5, _mm512_set1_epi8(16)));
    return z;
}

/* 16 int32 lanes summing, per 128-bit segment r, to row r's exact
 * sum((q - off) * y) over block blk */
AVX512 static inline __attribute__((always_inline)) __m512i block4(int kind, const uint8_t *blk, size_t ws,
                                                                   const kblock_q8_0 *y)
{
    const __m512i zero = _mm512_setzero_si512();
    __m512i ylo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)y->qs));
    __m512i yhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(y->qs + 16)));
    const __m512i offv = _mm512_set1_epi8(kind == V_Q4_0 ? 8 : kind == V_Q5_0 ? 16 : (char)0x80);
    __m512i o = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, offv, ylo), offv, yhi);
    __m512i s = _mm512_sub_epi32(zero, o);
    uint64_t m5lo = 0, m5hi = 0;
    if (kind == V_Q5_0) { /* the 4 rows' 32-bit qh: low halves, high halves */
        int32_t q1, q2, q3;
        memcpy(&q1, blk + ws + 2, 4);
        memcpy(&q2, blk + 2 * ws + 2, 4);
        memcpy(&q3, blk + 3 * ws + 2, 4);
        __m128i v = _mm_insert_epi32(_mm_insert_epi32(_mm_insert_epi32(_mm_loadu_si32(blk + 2), q1, 1), q2, 2), q3, 3);
        m5lo = (uint64_t)_mm_cvtsi128_si64(_mm_cvtepi32_epi16(v));
        m5hi = (uint64_t)_mm_cvtsi128_si64(_mm_cvtepi32_epi16(_mm_srli_epi32(v, 16)));
    }
    s = _mm512_dpbusd_epi32(s, rows4(kind, blk, ws, 0, m5lo), ylo);
    return _mm512_dpbusd_epi32(s, rows4(kind, blk, ws, 1, m5hi), yhi);
}

AVX512 static inline __attribute__((always_inline)) void dot4x1_vnni(int kind, int k, const void *w, size_t ws,
                                                                     const void *x, float *out)
{
    const uint8_t *w0 = w;
    const kblock_q8_0 *y = x;
    const size_t bb = kind == V_Q4_0 ? sizeof(kblock_q4_0) : kind == V_Q5_0 ? sizeof(kblock_q5_0) : sizeof(kblock_q8_0);
    const int nb = k / KQK;
    /* word indices of f16 scales in 64-byte loads: Q4_0 (18-byte blocks)
     * has the 4 blocks' scales in one load at the first block; the others
     * take two loads, at blocks 0 and 2 (scales at bytes 0 and bb) */
    const int h = (int)bb / 2, one = kind == V_Q4_0;
    const __m512i wsel2 = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                           32 + 3 * h, 32 + 2 * h, 32 + h, 32, 3 * h, 2 * h, h, 0),
                  wsel1 = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                           0, 0, 32 + h, 32, h, 0),
                  ysel = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                          0, 0, 0, 0, 32 + 17, 32, 17, 0);
    __m512 acc = _mm512_setzero_ps();
    for (int b = 0; b < nb; b += 4) {
        const int nj = nb - b < 4 ? nb - b : 4;
        const uint8_t *blk = w0 + (size_t)b * bb;
        prefetch_ahead(w0, ws, b, bb);
        prefetch_ahead(w0, ws, b + 1, bb);
        prefetch_ahead(w0, ws, b + 2, bb);
        prefetch_ahead(w0, ws, b + 3, bb);
        __m512i s[4];
        for (int j = 0; j < 4; j++) s[j] = j < nj ? block4(kind, blk + j * bb, ws, y + b + j) : _mm512_setzero_si512();
        /* per segment, lanes a b c d of s[0..3]: u = a0+a2 b0+b2 a1+a3 b1+b3,
         * v the same of c, d; t = a b c d totals (lane 4r+j = block j) */
        __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi32(s[0], s[1]), _mm512_unpackhi_epi32(s[0], s[1]));
        __m512i v = _mm512_add_epi32(_mm512_unpacklo_epi32(s[2], s[3]), _mm512_unpackhi_epi32(s[2], s[3]));
        __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi64(u, v), _mm512_unpackhi_epi64(u, v));
        /* the 16 weight scales (word 4r+j = row r, block j) and the 4
         * activation scales; bytes past the group's last block are masked
         * off (they may lie past the end of the matrix) */
        __m256i dh;
        if (one) {
            const __mmask64 l = nj * bb >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (nj * bb)) - 1;
            __m512i a[4];
            for (int r = 0; r < 4; r++) a[r] = _mm512_maskz_loadu_epi8(l, blk + r * ws);
            dh = _mm256_inserti128_si256(_mm512_castsi512_si256(_mm512_permutex2var_epi16(a[0], wsel2, a[1])),
                                         _mm512_castsi512_si128(_mm512_permutex2var_epi16(a[2], wsel2, a[3])), 1);
        } else {
            const size_t n0 = nj * bb < 64 ? nj * bb : 64, n1 = nj <= 2 ? 0 : (nj - 2) * bb < 64 ? (nj - 2) * bb : 64;
            const __mmask64 l0 = n0 == 64 ? ~(__mmask64)0 : ((__mmask64)1 << n0) - 1,
                            l1 = n1 == 64 ? ~(__mmask64)0 : ((__mmask64)1 << n1) - 1;
            __m128i d4[4];
            for (int r = 0; r < 4; r++)
                d4[r] = _mm512_castsi512_si128(_mm512_permutex2var_epi16(_mm512_maskz_loadu_epi8(l0, blk + r * ws), wsel1,
                                                                         _mm512_maskz_loadu_epi8(l1, blk + r * ws + 2 * bb)));
            dh = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi64(d4[0], d4[1])),
                                         _mm_unpacklo_epi64(d4[2], d4[3]), 1);
        }
        __m512 dw = _mm512_cvtph_ps(dh);
        const uint8_t *yb = (const uint8_t *)(y + b);
        const __mmask64 ly0 = nj >= 2 ? ~(__mmask64)0 : ((__mmask64)1 << 34) - 1,
                        ly1 = nj == 4 ? ~(__mmask64)0 : nj == 3 ? ((__mmask64)1 << 34) - 1 : 0;
        __m512i yv = _mm512_permutex2var_epi16(_mm512_maskz_loadu_epi8(ly0, yb), ysel,
                                               _mm512_maskz_loadu_epi8(ly1, yb + 68));
        __m512 sc = _mm512_mul_ps(dw, _mm512_broadcast_f32x4(_mm_cvtph_ps(_mm512_castsi512_si128(yv))));
        __m512 fi = _mm512_cvtepi32_ps(t);
        for (int j = 0; j < 4; j++) {
            if (j == nj) break;
            acc = _mm512_mask3_fmadd_ps(sc, fi, acc, 0x1111);
            sc = _mm512_castsi512_ps(_mm512_bsrli_epi128(_mm512_castps_si512(sc), 4));
            fi = _mm512_castsi512_ps(_mm512_bsrli_epi128(_mm512_castps_si512(fi), 4));
        }
    }
    /* lane 4r holds row r */
    __m512i pick = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
    _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(pick, acc)));
}

/* kern_dot4_fn: one activation row (decode) takes dot4x1_vnni, prompt
 * tiles (what the tiled kernels leave) dot4_vnni. */
#define DOT4_VNNI_INSTANCE(name, kind)                                                                   \
    AVX512 static void name(int k, const void *w, size_t ws, const void *x, size_t xs, int nx, float *out,  \
                            size_t os)                                                                   \
    {                                                                                                    \
        switch (nx) {                                                                                    \
        case 1: dot4x1_vnni(kind, k, w, ws, x, out); break;                                              \
        case 2: dot4_vnni(kind, 2, k, w, ws, x, xs, out, os); break;                                     \
        case 3: dot4_vnni(kind, 3, k, w, ws, x, xs, out, os); break;                                     \
        default: dot4_vnni(kind, 4, k, w, ws, x, xs, out, os); break;                                    \
        }                                                                                                \
    }

DOT4_VNNI_INSTANCE(dot4_q4_0, V_Q4_0)
DOT4_VNNI_INSTANCE(dot4_q5_0, V_Q5_0)
DOT4_VNNI_INSTANCE(dot4_q8_0, V_Q8_0)

static kern_cpu_fns table;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void build(void)
{
    table = kern_cpu_avx2;
    table.dot4[KERN_TYPE_Q4_0] = dot4_q4_0;
    table.dot4[KERN_TYPE_Q5_0] = dot4_q5_0;
    table.dot4[KERN_TYPE_Q8_0] = dot4_q8_0;
    /* 1-thread decode from memory, 4096/8192-wide rows: Q4_0 13.5 -> 17,
     * Q5_0 12 -> 15 GB/s per CPU-second; Q8_0's one-row kernel stays
     * faster there (26 vs 16) */
    table.dot4_long[KERN_TYPE_Q4_0] = 1;
    table.dot4_long[KERN_TYPE_Q5_0] = 1;
    table.gemm[KERN_TYPE_Q4_0] = kern_gemm_q4_0_avx512;
    table.gemm[KERN_TYPE_Q5_0] = kern_gemm_q5_0_avx512;
    table.gemm[KERN_TYPE_Q8_0] = kern_gemm_q8_0_avx512;
    table.gemm[KERN_TYPE_Q4_K] = kern_gemm_q4_K_avx512;
    table.gemm[KERN_TYPE_Q5_K] = kern_gemm_q5_K_avx512;
    table.gemm[KERN_TYPE_Q6_K] = kern_gemm_q6_K_avx512;
}

const kern_cpu_fns *kern_cpu_avx512(void)
{
    pthread_once(&once, build);
    return &table;
}
