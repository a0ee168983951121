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

/* Decode (one activation row) of 4 Q4_0 rows on 512-bit vectors: one
 * vector holds the 16 bytes of the same block of the 4 rows (128-bit
 * segment r = row r), so a block takes 2 vpdpbusd for the 4 rows. Per
 * group of 4 blocks, the blocks' lanes are summed to exact integers (lane
 * 4r+j = row r, block j) with an unpack tree, the 16 weight scales come
 * from 4 loads and 2 word permutes (a group's 4 scales lie within 64
 * bytes), and the rows' accumulators (lane 4r) take the 4 blocks in order,
 * acc = fma(dw*dy, sum, acc): the arithmetic of the other 32-block kernels
 * (dot4_vnni, the tiled ones), so a row's result is bitwise the same.
 * From memory, 1 thread: 17.4 -> 18.1 GB/s per CPU-second for 2048-wide
 * rows, 13.5 -> 17 for 8192-wide ones (against the one-row kernel). For
 * Q5_0 and Q8_0 the same scheme read slower than dot4_vnni. */

/* 16 int32 lanes summing, per 128-bit segment r, to row r's exact
 * sum((q - 8) * y) over block blk */
AVX512 static inline __m512i q4_0_block4(const uint8_t *blk, size_t ws, const kblock_q8_0 *y)
{
    const __m512i zero = _mm512_setzero_si512(), m4 = _mm512_set1_epi8(0x0F), off = _mm512_set1_epi8(8);
    __m512i ylo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)y->qs));
    __m512i yhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(y->qs + 16)));
    __m512i s = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, off, ylo), off, yhi));
    const uint8_t *q = blk + 2;
    __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)q));
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(q + ws)), 1);
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(q + 2 * ws)), 2);
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(q + 3 * ws)), 3);
    s = _mm512_dpbusd_epi32(s, _mm512_and_si512(z, m4), ylo);
    return _mm512_dpbusd_epi32(s, _mm512_and_si512(_mm512_srli_epi16(z, 4), m4), yhi);
}

AVX512 static void dot4x1_q4_0(int k, const uint8_t *w0, size_t ws, const kblock_q8_0 *y, float *out)
{
    const size_t bb = sizeof(kblock_q4_0);
    const int nb = k / KQK;
    /* word indices of the f16 scales of 4 blocks in 64 bytes loaded at the
     * first (rows r and r+1: words 0-3 and 4-7); activations: 34-byte
     * blocks, two loads 68 bytes apart */
    const __m512i wsel = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                          32 + 27, 32 + 18, 32 + 9, 32, 27, 18, 9, 0),
                  ysel = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                          0, 0, 0, 0, 32 + 17, 32, 17, 0);
    __m512 acc = _mm512_setzero_ps();
    for (int b = 0; b < nb; b += 4) {
        const int nj = nb - b < 4 ? nb - b : 4;
        const uint8_t *blk = w0 + (size_t)b * bb;
        for (int j = 0; j < 4; j++) prefetch_ahead(w0, ws, b + j, bb);
        __m512i s[4];
        for (int j = 0; j < 4; j++) s[j] = j < nj ? q4_0_block4(blk + j * bb, ws, y + b + j) : _mm512_setzero_si512();
        /* per segment, lanes a b c d of s[0..3]: u = a0+a2 b0+b2 a1+a3 b1+b3,
         * v the same of c, d; t = a b c d totals (lane 4r+j = block j) */
        __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi32(s[0], s[1]), _mm512_unpackhi_epi32(s[0], s[1]));
        __m512i v = _mm512_add_epi32(_mm512_unpacklo_epi32(s[2], s[3]), _mm512_unpackhi_epi32(s[2], s[3]));
        __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi64(u, v), _mm512_unpackhi_epi64(u, v));
        /* scales; bytes past the group's last block are masked off (they
         * may lie past the end of the matrix) */
        const __mmask64 lw = nj == 4 ? ~(__mmask64)0 : ((__mmask64)1 << (nj * bb)) - 1;
        __m512i a[4];
        for (int r = 0; r < 4; r++) a[r] = _mm512_maskz_loadu_epi8(lw, blk + r * ws);
        __m256i dh = _mm256_inserti128_si256(_mm512_castsi512_si256(_mm512_permutex2var_epi16(a[0], wsel, a[1])),
                                             _mm512_castsi512_si128(_mm512_permutex2var_epi16(a[2], wsel, a[3])), 1);
        const uint8_t *yb = (const uint8_t *)(y + b);
        const __mmask64 ly0 = nj >= 2 ? ~(__mmask64)0 : ((__mmask64)1 << 34) - 1,
                        ly1 = nj == 4 ? ~(__mmask64)0 : nj == 3 ? ((__mmask64)1 << 34) - 1 : 0;
        __m512i yv = _mm512_permutex2var_epi16(_mm512_maskz_loadu_epi8(ly0, yb), ysel,
                                               _mm512_maskz_loadu_epi8(ly1, yb + 68));
        __m512 sc = _mm512_mul_ps(_mm512_cvtph_ps(dh), _mm512_broadcast_f32x4(_mm_cvtph_ps(_mm512_castsi512_si128(yv))));
        __m512 fi = _mm512_cvtepi32_ps(t);
        for (int j = 0; j < nj; j++) {
            acc = _mm512_mask3_fmadd_ps(sc, fi, acc, 0x1111);
            sc = _mm512_castsi512_ps(_mm512_bsrli_epi128(_mm512_castps_si512(sc), 4));
            fi = _mm512_castsi512_ps(_mm512_bsrli_epi128(_mm512_castps_si512(fi), 4));
        }
    }
    /* lane 4r holds row r */
    __m512i pick = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
    _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(pick, acc)));
}

/* Decode of one 4-row group of KERN_TYPE_Q4_0_R4 (Q4_0 repacked at load,
 * layout in kernels.h): dot4x1_q4_0 with the 4 rows' bytes of a block in
 * one aligned 64-byte load and the scales of 4 blocks already in lane
 * order 4r + j, so no inserts, masked loads or permutes, and the group is
 * one contiguous stream. Same integer sums and fma order as dot4x1_q4_0:
 * bitwise the same results. */
AVX512 static void dot4_q4_0_r4(int k, const void *w, size_t ws, const void *x, size_t xs, int nx, float *out,
                                size_t os)
{
    (void)ws, (void)xs, (void)nx, (void)os;
    const int nb = k / KQK; /* a multiple of 8 */
    const kblock_q8_0 *y = x;
    const __m512i zero = _mm512_setzero_si512(), m4 = _mm512_set1_epi8(0x0F), off = _mm512_set1_epi8(8);
    const __m512i ysel = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                          0, 0, 0, 0, 32 + 17, 32, 17, 0);
    __m512 acc = _mm512_setzero_ps();
    for (int b = 0; b < nb; b += 8) {
        const uint8_t *p = (const uint8_t *)w + (size_t)(b / 8) * KERN_R4_PIECE;
        const __m512i dh2 = _mm512_load_si512(p);
        for (int h = 0; h < 2; h++) {
            const kblock_q8_0 *yb = y + b + 4 * h;
            __m512i s[4];
            for (int j = 0; j < 4; j++) {
                __m512i ylo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)yb[j].qs));
                __m512i yhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(yb[j].qs + 16)));
                __m512i t = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, off, ylo), off, yhi));
                __m512i z = _mm512_load_si512(p + 64 + 256 * h + 64 * j);
                t = _mm512_dpbusd_epi32(t, _mm512_and_si512(z, m4), ylo);
                s[j] = _mm512_dpbusd_epi32(t, _mm512_and_si512(_mm512_srli_epi16(z, 4), m4), yhi);
            }
            __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi32(s[0], s[1]), _mm512_unpackhi_epi32(s[0], s[1]));
            __m512i v = _mm512_add_epi32(_mm512_unpacklo_epi32(s[2], s[3]), _mm512_unpackhi_epi32(s[2], s[3]));
            __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi64(u, v), _mm512_unpackhi_epi64(u, v));
            __m256i dh = h ? _mm512_extracti64x4_epi64(dh2, 1) : _mm512_castsi512_si256(dh2);
            const uint8_t *yp = (const uint8_t *)yb;
            __m512i yv = _mm512_permutex2var_epi16(_mm512_loadu_si512(yp), ysel, _mm512_loadu_si512(yp + 68));
            __m512 sc = _mm512_mul_ps(_mm512_cvtph_ps(dh), _mm512_broadcast_f32x4(_mm_cvtph_ps(_mm512_castsi512_si128(yv))));
            __m512 fi = _mm512_cvtepi32_ps(t);
            for (int j = 0; j < 4; j++) {
                acc = _mm512_mask3_fmadd_ps(sc, fi, acc, 0x1111);
                sc = _mm512_castsi512_ps(_mm512_bsrli_epi128(_mm512_castps_si512(sc), 4));
                fi = _mm512_castsi512_ps(_mm512_bsrli_epi128(_mm512_castps_si512(fi), 4));
            }
        }
    }
    __m512i pick = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
    _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(pick, acc)));
}

/* kern_dot4_fn for Q4_0: decode takes dot4x1_q4_0, prompt tiles (rows the
 * tiled kernel leaves) dot4_vnni. */
AVX512 static void dot4_q4_0(int k, const void *w, size_t ws, const void *x, size_t xs, int nx, float *out, size_t os)
{
    switch (nx) {
    case 1: dot4x1_q4_0(k, w, ws, x, out); break;
    case 2: dot4_vnni(V_Q4_0, 2, k, w, ws, x, xs, out, os); break;
    case 3: dot4_vnni(V_Q4_0, 3, k, w, ws, x, xs, out, os); break;
    default: dot4_vnni(V_Q4_0, 4, k, w, ws, x, xs, out, os); break;
    }
}

KERN_DOT4_INSTANCE(AVX512, dot4_q5_0, dot4_vnni, V_Q5_0)
KERN_DOT4_INSTANCE(AVX512, dot4_q8_0, dot4_vnni, V_Q8_0)

static kern_cpu_fns table;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void build(void)
{
    table = kern_cpu_avx2;
    table.dot4[KERN_TYPE_Q4_0] = dot4_q4_0;
    table.dot4[KERN_TYPE_Q5_0] = dot4_q5_0;
    table.dot4[KERN_TYPE_Q8_0] = dot4_q8_0;
    /* 1-thread decode from memory, 8192-wide rows: 13.5 -> 17 GB/s per
     * CPU-second; Q8_0's one-row kernel stays faster there (26 vs 16) */
    table.dot4_long[KERN_TYPE_Q4_0] = 1;
    table.dot4_r4 = dot4_q4_0_r4;
    table.gemm[KERN_TYPE_Q4_0] = kern_gemm_q4_0_avx512;
    table.gemm[KERN_TYPE_Q5_0] = kern_gemm_q5_0_avx512;
    table.gemm[KERN_TYPE_Q8_0] = kern_gemm_q8_0_avx512;
    table.gemm_r4 = kern_gemm_q4_0_r4_avx512;
    table.gemm[KERN_TYPE_Q4_K] = kern_gemm_q4_K_avx512;
    table.gemm[KERN_TYPE_Q5_K] = kern_gemm_q5_K_avx512;
    table.gemm[KERN_TYPE_Q6_K] = kern_gemm_q6_K_avx512;
}

const kern_cpu_fns *kern_cpu_avx512(void)
{
    pthread_once(&once, build);
    return &table;
}
