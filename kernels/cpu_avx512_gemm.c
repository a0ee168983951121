/* cpu_avx512_gemm.c: the AVX-512 VNNI tiled matmul for several activation
 * rows (prompts, batched decode), kern_gemm_fn: the 32-element block types
 * (Q4_0, Q5_0, Q8_0) and the K-quants (Q4_K, Q5_K, Q6_K).
 *
 * A tile of 16 weight rows is decoded once into unsigned bytes laid out
 * "lane = row": for block b and 4-byte group g, one 64-byte vector holds
 * bytes 4g..4g+3 of the 16 rows. One vpdpbusd with the activation's 4
 * bytes g broadcast then adds 4 products into each row's int32 lane, so a
 * block costs 8 vpdpbusd per activation row for 16 rows with no horizontal
 * sums. The tile (16 x k bytes plus 16 scales per block) stays in L1/L2
 * while every activation row passes over it, so each weight byte is read
 * from memory once per call.
 *
 * 32-block types: the arithmetic per (row, activation row, block) is that
 * of the 4-row VNNI kernels (cpu_avx512.c): the exact integer sum(q*y) -
 * off*sum(y), then acc += (d_w * d_y) * float(sum), so both give bitwise
 * equal results (batched decode equals single-sequence decode).
 * K-quants: each super-block's exact integer sums (sub-block scales and
 * mins applied in int32) are scaled and added in float once per
 * super-block; the one-row kernels add 8 partial lanes instead, so results
 * differ from them by float rounding only. */
#include "kern_avx2_inl.h"

#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

enum { G_Q4_0, G_Q5_0, G_Q8_0, G_Q4_0_R4 };

/* Runs BODY(nx, i) over n activation rows in groups of 4, then the rest,
 * with nx a constant so BODY's loops over the rows unroll. */
#define X_GROUPS(n, BODY)                                                                                 \
    do {                                                                                                 \
        int i_ = 0;                                                                                      \
        for (; i_ + 4 <= (n); i_ += 4) BODY(4, i_);                                                      \
        switch ((n) - i_) {                                                                              \
        case 1: BODY(1, i_); break;                                                                      \
        case 2: BODY(2, i_); break;                                                                      \
        case 3: BODY(3, i_); break;                                                                      \
        default: break;                                                                                  \
        }                                                                                                \
    } while (0)

/* Defines the kern_gemm_fn `name` calling the always-inline body(kind, ...). */
#define GEMM_INSTANCE(name, body, kind)                                                                   \
    AVX512 void name(int k, const void *w, size_t ws, const kern_gemm_x *x, int n, float *out, size_t os, \
                     void *tile)                                                                         \
    {                                                                                                    \
        body(kind, k, w, ws, x, n, out, os, tile);                                                       \
    }

/* 8 rows of 8 dwords (ymm) -> 8 columns of 8 dwords */
AVX512 static inline __attribute__((always_inline)) void transpose8(__m256i r[8])
{
    __m256i t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2x128_si256(u[c], u[c + 4], 0x20);
        r[c + 4] = _mm256_permute2x128_si256(u[c], u[c + 4], 0x31);
    }
}

/* Stores 16 rows of 32 bytes (ymm each) lane = row: 8 vectors of 64 bytes. */
AVX512 static inline __attribute__((always_inline)) void store_lanes(__m256i v[16], uint8_t *dst)
{
    transpose8(v);
    transpose8(v + 8);
    for (int g = 0; g < 8; g++)
        _mm512_store_si512(dst + 64 * g, _mm512_inserti64x4(_mm512_castsi256_si512(v[g]), v[g + 8], 1));
}

/* Tiles stream from memory when a matrix is bigger than the caches (e.g.
 * the output layer in batched decode): while block (or super-block) b of
 * this tile is decoded, 16 blocks' worth of the next tile (the 16 rows
 * that follow) are prefetched, so the next tile is in cache by the time it
 * is decoded. always_inline: see prefetch_ahead. */
AVX512 static inline __attribute__((always_inline)) void prefetch_next_tile(const uint8_t *w, size_t ws, int b, size_t bb)
{
    const uint8_t *p = w + KERN_GEMM_ROWS * ws + (size_t)b * KERN_GEMM_ROWS * bb;
    for (size_t off = 0; off < KERN_GEMM_ROWS * bb; off += 64) _mm_prefetch((const char *)(p + off), _MM_HINT_T0);
}

/* Decodes 16 rows (stride ws) of a 32-block type into tile: nb blocks of
 * 512 bytes, then nb x 16 float scales. G_Q4_0_R4: the 16 rows are 4 groups
 * of KERN_TYPE_Q4_0_R4 (kernels.h), the same bytes found elsewhere, so the
 * tile is the one their Q4_0 rows give. */
AVX512 static inline __attribute__((always_inline)) void decode32(int kind, int nb, const uint8_t *w, size_t ws,
                                                                  uint8_t *tile)
{
    const size_t bb = kind == G_Q4_0 || kind == G_Q4_0_R4 ? sizeof(kblock_q4_0)
                      : kind == G_Q5_0                    ? sizeof(kblock_q5_0)
                                                          : sizeof(kblock_q8_0);
    const __m256i b16 = _mm256_set1_epi8(16), b128 = _mm256_set1_epi8((char)0x80);
    float *sc = (float *)(tile + (size_t)nb * 512);
    for (int b = 0; b < nb; b++) {
        prefetch_next_tile(w, ws, b, bb);
        __m256i v[16];
        for (int r = 0; r < KERN_GEMM_ROWS; r++) {
            const uint8_t *br = w + r * ws + b * bb;
            if (kind == G_Q4_0_R4) {
                const uint8_t *piece = w + (size_t)(r / 4) * 4 * ws + (size_t)(b / 8) * KERN_R4_PIECE;
                v[r] = q4_0_bytes(piece + 64 + 64 * (b % 8) + 16 * (r % 4));
                br = piece + 2 * (16 * (b % 8 / 4) + 4 * (r % 4) + b % 4); /* its scale */
            } else if (kind == G_Q4_0) {
                v[r] = q4_0_bytes(br + 2);
            } else if (kind == G_Q5_0) {
                uint32_t qh;
                memcpy(&qh, br + 2, 4);
                v[r] = _mm256_or_si256(q4_0_bytes(br + 6), _mm256_maskz_mov_epi8((__mmask32)qh, b16));
            } else { /* signed -> unsigned: q + 128 */
                v[r] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(br + 2)), b128);
            }
            uint16_t d;
            memcpy(&d, br, 2);
            sc[b * KERN_GEMM_ROWS + r] = f16(d);
        }
        store_lanes(v, tile + (size_t)b * 512);
    }
}

/* nx (1..4) activation rows against the decoded tile: out[xi*os + r]. */
AVX512 static inline __attribute__((always_inline)) void tile32(int shift, int nx, int nb, const uint8_t *tile,
                                                                const kern_gemm_x *x, int x0, float *out, size_t os)
{
    const float *sc = (const float *)(tile + (size_t)nb * 512);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const uint8_t *xr[4];
    const float *dx[4];
    const int32_t *sy[4];
    for (int xi = 0; xi < nx; xi++) {
        xr[xi] = x->q + (size_t)(x0 + xi) * x->qs + 2; /* quants of block 0 */
        dx[xi] = x->d + (size_t)(x0 + xi) * nb;
        sy[xi] = x->s + (size_t)(x0 + xi) * nb;
    }
    for (int b = 0; b < nb; b++) {
        const __m512i *wv = (const __m512i *)(tile + (size_t)b * 512);
        __m512 dw = _mm512_load_ps(sc + b * KERN_GEMM_ROWS);
        for (int xi = 0; xi < nx; xi++) {
            const uint8_t *y = xr[xi] + (size_t)b * sizeof(kblock_q8_0);
            int32_t yg[8];
            memcpy(yg, y, 32);
            __m512i s0 = _mm512_set1_epi32(-sy[xi][b] * (1 << shift)), s1 = _mm512_setzero_si512();
            for (int g = 0; g < 8; g += 2) {
                s0 = _mm512_dpbusd_epi32(s0, _mm512_load_si512(wv + g), _mm512_set1_epi32(yg[g]));
                s1 = _mm512_dpbusd_epi32(s1, _mm512_load_si512(wv + g + 1), _mm512_set1_epi32(yg[g + 1]));
            }
            __m512 scl = _mm512_mul_ps(dw, _mm512_set1_ps(dx[xi][b]));
            acc[xi] = _mm512_fmadd_ps(scl, _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc[xi]);
        }
    }
    for (int xi = 0; xi < nx; xi++) _mm512_storeu_ps(out + (size_t)xi * os, acc[xi]);
}

AVX512 static inline __attribute__((always_inline)) void gemm32(int kind, int k, const void *w, size_t ws,
                                                                const kern_gemm_x *x, int n, float *out, size_t os,
                                                                void *tile)
{
    const int nb = k / KQK, shift = kind == G_Q4_0 || kind == G_Q4_0_R4 ? 3 : kind == G_Q5_0 ? 4 : 7; /* offsets 8, 16, 128 */
    uint8_t *t = tile;
    decode32(kind, nb, w, ws, t);
#define T32(nx, i) tile32(shift, nx, nb, t, x, i, out + (size_t)(i) * os, os)
    X_GROUPS(n, T32);
#undef T32
}

GEMM_INSTANCE(kern_gemm_q4_0_avx512, gemm32, G_Q4_0)
GEMM_INSTANCE(kern_gemm_q5_0_avx512, gemm32, G_Q5_0)
GEMM_INSTANCE(kern_gemm_q8_0_avx512, gemm32, G_Q8_0)
GEMM_INSTANCE(kern_gemm_q4_0_r4_avx512, gemm32, G_Q4_0_R4)

/* ---------------------------------------------------------- K-quants */
/* Tile per super-block (KT_BYTES): 8 chunks of 32 elements decoded lane =
 * row (4096 bytes), then 16-lane int32 vectors: Q4_K/Q5_K the 8 sub-block
 * scales and 8 mins (each min in both halves of its lanes, for vpdpwssd
 * with two 16-element activation sums), then d and dmin as floats; Q6_K
 * the 16 scales, 8 pairs of scales (int16 halves, for the -32 offset with
 * the activation sums) and d. */
#define KT_BYTES 6144
KERN_STATIC_ASSERT(KT_BYTES <= 24 * KQK_K, "tile bound of kern_gemm_tile_bytes");

AVX512 static inline void store_i32(uint8_t *v, int r, int32_t x) { memcpy(v + 4 * r, &x, 4); }
AVX512 static inline void store_f32(uint8_t *v, int r, float x) { memcpy(v + 4 * r, &x, 4); }

AVX512 static inline __attribute__((always_inline)) void decode_k45(int q5, int nsb, const uint8_t *w, size_t ws,
                                                                    uint8_t *tile)
{
    const size_t bb = q5 ? sizeof(kblock_q5_K) : sizeof(kblock_q4_K);
    const __m256i m4 = _mm256_set1_epi8(0x0F), b16 = _mm256_set1_epi8(16);
    for (int i = 0; i < nsb; i++) {
        prefetch_next_tile(w, ws, i, bb);
        uint8_t *t = tile + (size_t)i * KT_BYTES, *sc = t + 4096, *mn = sc + 512, *dv = mn + 512, *mv = dv + 64;
        for (int r = 0; r < KERN_GEMM_ROWS; r++) {
            const uint8_t *blk = w + r * ws + i * bb;
            uint16_t dh, mh;
            memcpy(&dh, blk, 2);
            memcpy(&mh, blk + 2, 2);
            store_f32(dv, r, f16(dh));
            store_f32(mv, r, f16(mh));
            for (int j = 0; j < 8; j++) {
                uint8_t s, m;
                kern_k4_scale_min(j, blk + 4, &s, &m);
                store_i32(sc + 64 * j, r, s);
                store_i32(mn + 64 * j, r, (int32_t)((uint32_t)m * 0x10001u));
            }
        }
        for (int j = 0; j < 8; j++) {
            __m256i v[16];
            for (int r = 0; r < KERN_GEMM_ROWS; r++) {
                const uint8_t *blk = w + r * ws + i * bb, *qs = blk + (q5 ? 48 : 16);
                __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * (j / 2)));
                v[r] = _mm256_and_si256(j & 1 ? _mm256_srli_epi16(q, 4) : q, m4);
                if (q5) {
                    __mmask32 hb = _mm256_test_epi8_mask(_mm256_loadu_si256((const __m256i *)(blk + 16)),
                                                         _mm256_set1_epi8((char)(1 << j)));
                    v[r] = _mm256_or_si256(v[r], _mm256_maskz_mov_epi8(hb, b16));
                }
            }
            store_lanes(v, t + 512 * j);
        }
    }
}

AVX512 static inline __attribute__((always_inline)) void decode_q6k(int nsb, const uint8_t *w, size_t ws, uint8_t *tile)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x03);
    for (int i = 0; i < nsb; i++) {
        prefetch_next_tile(w, ws, i, sizeof(kblock_q6_K));
        uint8_t *t = tile + (size_t)i * KT_BYTES, *sc = t + 4096, *sp = sc + 1024, *dv = sp + 512;
        for (int r = 0; r < KERN_GEMM_ROWS; r++) {
            const kblock_q6_K *b = (const kblock_q6_K *)(w + r * ws) + i;
            store_f32(dv, r, f16(b->d));
            for (int s = 0; s < 16; s++) store_i32(sc + 64 * s, r, b->scales[s]);
            for (int p = 0; p < 8; p++)
                store_i32(sp + 64 * p, r,
                          (int32_t)((uint32_t)(uint16_t)b->scales[2 * p] | (uint32_t)(uint16_t)b->scales[2 * p + 1] << 16));
        }
        /* chunk c = 4h + s: elements 128h + 32s.., low/high nibbles of
         * ql[64h + 32(s&1)..], 2-bit pair s of qh[32h..] */
        for (int c = 0; c < 8; c++) {
            int h = c / 4, s = c % 4;
            __m256i v[16];
            for (int r = 0; r < KERN_GEMM_ROWS; r++) {
                const kblock_q6_K *b = (const kblock_q6_K *)(w + r * ws) + i;
                __m256i l = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (s & 1)));
                __m256i hq = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
                __m256i lo = _mm256_and_si256(s >= 2 ? _mm256_srli_epi16(l, 4) : l, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hq, 2 * s), m3);
                v[r] = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
            }
            store_lanes(v, t + 512 * c);
        }
    }
}

/* sum over 8 groups of 4 bytes: W[g] (16 rows) times y's bytes 4g.. broadcast */
AVX512 static inline __attribute__((always_inline)) __m512i dot32(const __m512i *wv, const int8_t *y, int g0, int ng)
{
    int32_t yg[8];
    memcpy(yg, y, 32);
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int g = g0; g < g0 + ng; g += 2) {
        s0 = _mm512_dpbusd_epi32(s0, _mm512_load_si512(wv + g), _mm512_set1_epi32(yg[g]));
        s1 = _mm512_dpbusd_epi32(s1, _mm512_load_si512(wv + g + 1), _mm512_set1_epi32(yg[g + 1]));
    }
    return _mm512_add_epi32(s0, s1);
}

/* nx (1..4) Q8_K activation rows against a decoded K-quant tile */
AVX512 static inline __attribute__((always_inline)) void tile_k(int q6, int nx, int nsb, const uint8_t *tile,
                                                                const kern_gemm_x *x, int x0, float *out, size_t os)
{
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const kblock_q8_K *xr[4];
    for (int xi = 0; xi < nx; xi++) xr[xi] = (const kblock_q8_K *)(x->q + (size_t)(x0 + xi) * x->qs);
    for (int i = 0; i < nsb; i++) {
        const uint8_t *t = tile + (size_t)i * KT_BYTES;
        const __m512i *sc = (const __m512i *)(t + 4096);
        __m512i sumi[4];
        for (int xi = 0; xi < nx; xi++) sumi[xi] = _mm512_setzero_si512();
        for (int c = 0; c < 8; c++) {
            const __m512i *wv = (const __m512i *)(t + 512 * c);
            for (int xi = 0; xi < nx; xi++) {
                const int8_t *y = xr[xi][i].qs + 32 * c;
                if (q6) { /* two 16-element sub-blocks per chunk */
                    __m512i p0 = _mm512_mullo_epi32(dot32(wv, y, 0, 4), _mm512_load_si512(sc + 2 * c));
                    __m512i p1 = _mm512_mullo_epi32(dot32(wv, y, 4, 4), _mm512_load_si512(sc + 2 * c + 1));
                    sumi[xi] = _mm512_add_epi32(sumi[xi], _mm512_add_epi32(p0, p1));
                } else {
                    sumi[xi] = _mm512_add_epi32(sumi[xi], _mm512_mullo_epi32(dot32(wv, y, 0, 8), _mm512_load_si512(sc + c)));
                }
            }
        }
        for (int xi = 0; xi < nx; xi++) {
            const kblock_q8_K *y = &xr[xi][i];
            int32_t bs[8];
            memcpy(bs, y->bsums, 32); /* pairs of 16-element sums */
            __m512i o = _mm512_setzero_si512();
            const __m512i *pv = sc + (q6 ? 16 : 8); /* Q6_K scale pairs / Q4_K-Q5_K mins */
            for (int p = 0; p < 8; p++) o = _mm512_dpwssd_epi32(o, _mm512_load_si512(pv + p), _mm512_set1_epi32(bs[p]));
            __m512 dy = _mm512_set1_ps(y->d);
            if (q6) {
                __m512 d = _mm512_load_ps(t + 4096 + 1024 + 512);
                __m512i si = _mm512_sub_epi32(sumi[xi], _mm512_slli_epi32(o, 5));
                acc[xi] = _mm512_fmadd_ps(_mm512_mul_ps(d, dy), _mm512_cvtepi32_ps(si), acc[xi]);
            } else {
                __m512 d = _mm512_load_ps(t + 4096 + 1024), dm = _mm512_load_ps(t + 4096 + 1024 + 64);
                acc[xi] = _mm512_fmadd_ps(_mm512_mul_ps(d, dy), _mm512_cvtepi32_ps(sumi[xi]), acc[xi]);
                acc[xi] = _mm512_fnmadd_ps(_mm512_mul_ps(dm, dy), _mm512_cvtepi32_ps(o), acc[xi]);
            }
        }
    }
    for (int xi = 0; xi < nx; xi++) _mm512_storeu_ps(out + (size_t)xi * os, acc[xi]);
}

AVX512 static inline __attribute__((always_inline)) void gemm_k(int kind, int k, const void *w, size_t ws,
                                                                const kern_gemm_x *x, int n, float *out, size_t os,
                                                                void *tile)
{
    const int nsb = k / KQK_K, q6 = kind == KERN_TYPE_Q6_K;
    uint8_t *t = tile;
    if (q6)
        decode_q6k(nsb, w, ws, t);
    else
        decode_k45(kind == KERN_TYPE_Q5_K, nsb, w, ws, t);
#define TK(nx, i) tile_k(q6, nx, nsb, t, x, i, out + (size_t)(i) * os, os)
    X_GROUPS(n, TK);
#undef TK
}

GEMM_INSTANCE(kern_gemm_q4_K_avx512, gemm_k, KERN_TYPE_Q4_K)
GEMM_INSTANCE(kern_gemm_q5_K_avx512, gemm_k, KERN_TYPE_Q5_K)
GEMM_INSTANCE(kern_gemm_q6_K_avx512, gemm_k, KERN_TYPE_Q6_K)
