/* cuda_quant.cuh: dequantization of one 32-element chunk of a weight row, in
 * registers, for every ggml type the kernels support. Chunk c of a row is
 * elements 32c .. 32c+31 (a whole Q4_0/Q5_0/Q8_0 block, one Q4_K/Q5_K
 * sub-block, two Q6_K 16-element groups). Template parameter A is the byte
 * alignment loads may assume: NAT(T) when the row pointer and row size are
 * multiples of it (16-byte loads for floats and Q4_K/Q5_K quants), else 1.
 * Template parameter G: true (default) for rows in global memory (read-only
 * cached loads, __ldg), false for rows already copied to shared memory (plain
 * loads: __ldg must not be given a shared-memory address; cuda_mmq.cu). */
#ifndef COMMONS_CUDA_QUANT_CUH
#define COMMONS_CUDA_QUANT_CUH

#include "cuda_internal.h"

/* Elements and bytes of one block of a block type (Q4_0 .. Q8_0, Q4_K, Q5_K, Q6_K). */
__host__ __device__ constexpr int kcu_block_elems(int t)
{
    return t == KERN_TYPE_Q4_K || t == KERN_TYPE_Q5_K || t == KERN_TYPE_Q6_K ? 256 : 32;
}
__host__ __device__ constexpr int kcu_block_bytes(int t)
{
    return t == KERN_TYPE_Q4_0 ? 18 : t == KERN_TYPE_Q4_1 ? 20 : t == KERN_TYPE_Q5_0 ? 22 : t == KERN_TYPE_Q5_1 ? 24
         : t == KERN_TYPE_Q8_0 ? 34 : t == KERN_TYPE_Q4_K ? 144 : t == KERN_TYPE_Q5_K ? 176 : 210;
}

/* Natural load alignment of a type's chunk data (see above). */
__host__ __device__ constexpr int kcu_nat_align(int t)
{
    return (t == KERN_TYPE_F32 || t == KERN_TYPE_F16 || t == KERN_TYPE_BF16 || t == KERN_TYPE_Q4_K ||
            t == KERN_TYPE_Q5_K) ? 16
           : (t == KERN_TYPE_Q4_1 || t == KERN_TYPE_Q5_1) ? 4
                                                           : 2;
}

/* One load: __ldg for global memory (G), a plain load otherwise. */
template <bool G, class V>
__host__ __device__ __forceinline__ V kcu_load(const V *p)
{
    if constexpr (G) return kcu_ldg(p);
    else return *p;
}

/* NB bytes at src (aligned to A) into words dst[NB/4] (little-endian). */
template <int A, int NB, bool G = true>
__host__ __device__ __forceinline__ void kcu_ld(uint32_t *dst, const uint8_t *src)
{
    static_assert(NB % 4 == 0, "whole words");
    if constexpr (A >= 16 && NB % 16 == 0) {
#pragma unroll
        for (int i = 0; i < NB / 16; i++) {
            uint4 v = kcu_load<G>((const uint4 *)src + i);
            dst[4 * i] = v.x, dst[4 * i + 1] = v.y, dst[4 * i + 2] = v.z, dst[4 * i + 3] = v.w;
        }
    } else if constexpr (A >= 4) {
#pragma unroll
        for (int i = 0; i < NB / 4; i++) dst[i] = kcu_load<G>((const uint32_t *)src + i);
    } else if constexpr (A >= 2) {
#pragma unroll
        for (int i = 0; i < NB / 4; i++)
            dst[i] = (uint32_t)kcu_load<G>((const uint16_t *)src + 2 * i) |
                     (uint32_t)kcu_load<G>((const uint16_t *)src + 2 * i + 1) << 16;
    } else {
#pragma unroll
        for (int i = 0; i < NB / 4; i++)
            dst[i] = (uint32_t)src[4 * i] | (uint32_t)src[4 * i + 1] << 8 | (uint32_t)src[4 * i + 2] << 16 |
                     (uint32_t)src[4 * i + 3] << 24;
    }
}

template <int A, bool G = true>
__host__ __device__ __forceinline__ uint16_t kcu_ld16(const uint8_t *p)
{
    if constexpr (A >= 2) return kcu_load<G>((const uint16_t *)p);
    else return (uint16_t)(p[0] | p[1] << 8);
}

__host__ __device__ __forceinline__ int kcu_byte(const uint32_t *w, int j) { return (w[j >> 2] >> (8 * (j & 3))) & 0xFF; }

/* (float)(v - OFF) for 0 <= v < 2^23, exactly, without an int-to-float
 * conversion (a quarter- or eighth-rate instruction on the GPU; this is a
 * bitwise OR and one float add): 0x4B000000 | v is the float 2^23 + v. */
template <int OFF>
__host__ __device__ __forceinline__ float kcu_u2f(uint32_t v)
{
    return kcu_bits_f(0x4B000000u | v) - (float)(8388608 + OFF);
}

/* byte j (run-time) of 3 words, by selects: indexing the array with a
 * run-time j would put it in local memory */
__host__ __device__ __forceinline__ int kcu_byte3(const uint32_t *w, int j)
{
    uint32_t v = j < 4 ? w[0] : j < 8 ? w[1] : w[2];
    return (v >> (8 * (j & 3))) & 0xFF;
}

/* 6-bit scale and min of sub-block j (Q4_K/Q5_K), scales as 3 words. */
__host__ __device__ __forceinline__ void kcu_k4_scale_min(int j, const uint32_t *s, float *sc, float *m)
{
    if (j < 4) {
        *sc = (float)(kcu_byte3(s, j) & 63);
        *m = (float)(kcu_byte3(s, j + 4) & 63);
    } else {
        *sc = (float)((kcu_byte3(s, j + 4) & 0xF) | ((kcu_byte3(s, j - 4) >> 6) << 4));
        *m = (float)((kcu_byte3(s, j + 4) >> 4) | ((kcu_byte3(s, j) >> 6) << 4));
    }
}

template <int T, int A, bool G = true>
__host__ __device__ __forceinline__ void kcu_deq32(const uint8_t *row, int c, float *w)
{
    if constexpr (T == KERN_TYPE_F32) {
        uint32_t v[32];
        kcu_ld<A, 128, G>(v, row + 128 * (size_t)c);
#pragma unroll
        for (int i = 0; i < 32; i++) w[i] = kcu_bits_f(v[i]);
    } else if constexpr (T == KERN_TYPE_F16 || T == KERN_TYPE_BF16) {
        uint32_t v[16];
        kcu_ld<A, 64, G>(v, row + 64 * (size_t)c);
#pragma unroll
        for (int i = 0; i < 16; i++) {
            uint16_t lo = (uint16_t)(v[i] & 0xFFFF), hi = (uint16_t)(v[i] >> 16);
            w[2 * i] = T == KERN_TYPE_F16 ? kcu_h2f(lo) : kcu_b2f(lo);
            w[2 * i + 1] = T == KERN_TYPE_F16 ? kcu_h2f(hi) : kcu_b2f(hi);
        }
    } else if constexpr (T == KERN_TYPE_Q8_0) {
        const uint8_t *b = row + kcu_block_bytes(T) * (size_t)c;
        float d = kcu_h2f(kcu_ld16<A, G>(b));
        uint32_t q[8];
        kcu_ld<A, 32, G>(q, b + 2);
#pragma unroll
        for (int i = 0; i < 32; i++) w[i] = d * kcu_u2f<128>((uint32_t)kcu_byte(q, i) ^ 0x80u); /* int8 */
    } else if constexpr (T == KERN_TYPE_Q4_0 || T == KERN_TYPE_Q4_1 || T == KERN_TYPE_Q5_0 || T == KERN_TYPE_Q5_1) {
        constexpr bool affine = T == KERN_TYPE_Q4_1 || T == KERN_TYPE_Q5_1;
        constexpr bool five = T == KERN_TYPE_Q5_0 || T == KERN_TYPE_Q5_1;
        constexpr int bb = kcu_block_bytes(T);
        constexpr int qs_off = (affine ? 4 : 2) + (five ? 4 : 0);
        const uint8_t *b = row + bb * (size_t)c;
        float d = kcu_h2f(kcu_ld16<A, G>(b));
        float m = affine ? kcu_h2f(kcu_ld16<A, G>(b + 2)) : 0.0f;
        uint32_t qh = 0;
        if constexpr (five) kcu_ld<A, 4, G>(&qh, b + (affine ? 4 : 2));
        uint32_t q[4];
        kcu_ld<A, 16, G>(q, b + qs_off);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            int lo = kcu_byte(q, j) & 0xF, hi = kcu_byte(q, j) >> 4;
            if constexpr (five) {
                lo |= (int)((qh >> j) & 1) << 4;
                hi |= (int)((qh >> (j + 16)) & 1) << 4;
            }
            if constexpr (affine) {
                w[j] = d * kcu_u2f<0>((uint32_t)lo) + m;
                w[j + 16] = d * kcu_u2f<0>((uint32_t)hi) + m;
            } else {
                constexpr int off = five ? 16 : 8;
                w[j] = d * kcu_u2f<off>((uint32_t)lo);
                w[j + 16] = d * kcu_u2f<off>((uint32_t)hi);
            }
        }
    } else if constexpr (T == KERN_TYPE_Q4_K || T == KERN_TYPE_Q5_K) {
        constexpr bool five = T == KERN_TYPE_Q5_K;
        const uint8_t *b = row + kcu_block_bytes(T) * (size_t)(c >> 3);
        int j = c & 7;
        uint32_t hd[4]; /* d, dmin, scales[12] */
        kcu_ld<A, 16, G>(hd, b);
        float d = kcu_h2f((uint16_t)(hd[0] & 0xFFFF)), dmin = kcu_h2f((uint16_t)(hd[0] >> 16));
        float sc, mn;
        kcu_k4_scale_min(j, hd + 1, &sc, &mn);
        float dd = d * sc, mm = dmin * mn;
        uint32_t q[8];
        kcu_ld<A, 32, G>(q, b + (five ? 48 : 16) + 32 * (j >> 1));
        uint32_t h[8];
        if constexpr (five) kcu_ld<A, 32, G>(h, b + 16);
        int shift = (j & 1) * 4;
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int v = (kcu_byte(q, l) >> shift) & 0xF;
            if constexpr (five) v |= ((kcu_byte(h, l) >> j) & 1) << 4;
            w[l] = dd * kcu_u2f<0>((uint32_t)v) - mm;
        }
    } else if constexpr (T == KERN_TYPE_Q6_K) {
        const uint8_t *b = row + kcu_block_bytes(T) * (size_t)(c >> 3);
        int j = c & 7, hf = j >> 2, s = j & 3;
        uint32_t ql[8], qh[8];
        kcu_ld<A, 32, G>(ql, b + 64 * hf + 32 * (s & 1));
        kcu_ld<A, 32, G>(qh, b + 128 + 32 * hf);
        uint16_t scw = kcu_ld16<A, G>(b + 192 + 8 * hf + 2 * s);
        float d = kcu_h2f(kcu_ld16<A, G>(b + 208));
        float d0 = d * (float)(int8_t)(scw & 0xFF), d1 = d * (float)(int8_t)(scw >> 8);
        int lshift = s >= 2 ? 4 : 0, hshift = 2 * s;
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int v = ((kcu_byte(ql, l) >> lshift) & 0xF) | (((kcu_byte(qh, l) >> hshift) & 3) << 4);
            w[l] = (l < 16 ? d0 : d1) * kcu_u2f<32>((uint32_t)v);
        }
    }
}

/* Calls F<T>() with T the run-time type t (one of the supported types). */
#define KCU_TYPE_SWITCH(t, CALL)                          \
    switch (t) {                                          \
    case KERN_TYPE_F32: CALL(KERN_TYPE_F32); break;       \
    case KERN_TYPE_F16: CALL(KERN_TYPE_F16); break;       \
    case KERN_TYPE_BF16: CALL(KERN_TYPE_BF16); break;     \
    case KERN_TYPE_Q4_0: CALL(KERN_TYPE_Q4_0); break;     \
    case KERN_TYPE_Q4_1: CALL(KERN_TYPE_Q4_1); break;     \
    case KERN_TYPE_Q5_0: CALL(KERN_TYPE_Q5_0); break;     \
    case KERN_TYPE_Q5_1: CALL(KERN_TYPE_Q5_1); break;     \
    case KERN_TYPE_Q8_0: CALL(KERN_TYPE_Q8_0); break;     \
    case KERN_TYPE_Q4_K: CALL(KERN_TYPE_Q4_K); break;     \
    case KERN_TYPE_Q5_K: CALL(KERN_TYPE_Q5_K); break;     \
    case KERN_TYPE_Q6_K: CALL(KERN_TYPE_Q6_K); break;     \
    default: return kern_fail(ctx, KERN_ENOTSUP, "CUDA backend: type %d not supported", t); \
    }

/* One element i of a float-type row (tails of rows whose length is not a
 * multiple of 32). */
__host__ __device__ __forceinline__ float kcu_float_elem(int t, const uint8_t *row, int64_t i)
{
    /* byte loads: the row may sit at any address */
    if (t == KERN_TYPE_F32) {
        const uint8_t *p = row + 4 * i;
        return kcu_bits_f((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    }
    uint16_t h = (uint16_t)(row[2 * i] | row[2 * i + 1] << 8);
    return t == KERN_TYPE_F16 ? kcu_h2f(h) : kcu_b2f(h);
}

#endif
