/* cuda_mmq.cuh: the quantized matmul for medium batches (cuda_mmq.cu), its
 * tile geometry, launch plan and the phases of one thread block, written as
 * __host__ __device__ functions of the thread index so that a host-only ctest
 * (test_cuda_mmq_host.cu) can run a whole block on the CPU: only the tensor-core
 * multiply itself (nvcuda::wmma) is device-only, and that test replaces it by
 * the scalar product it stands for.
 *
 * y[n][m] = x[n][k] . W[m][k]^T for 8 < n <= KCU_MMQ_MAX_N and quantized W:
 * a block owns KCU_MMQ_BM weight rows and one range of k (split-K when the
 * rows alone give too few blocks) and walks it in stages of KCU_MMQ_BK
 * elements. Per stage:
 *   1. the raw bytes of its rows' k-slice are copied global -> registers ->
 *      shared memory as whole 16-byte granules (coalesced 16-byte loads even
 *      for the 2-byte aligned blocks of Q4_0/Q5_0/Q8_0/Q6_K; the granule that
 *      holds a row slice's first byte is taken from its 16-byte aligned start,
 *      and any granule reaching outside the weight matrix is read byte by byte);
 *      the next stage's granules are loaded while this stage is multiplied;
 *   2. the raw slice is dequantized from shared memory (kcu_deq32 with plain
 *      loads) into a bf16 tile W_s[BM][BK];
 *   3. the k-slice of all n activation rows (already bf16, converted once per
 *      call) is staged in X_s[n_pad][BK]; rows n .. n_pad-1 are zero;
 *   4. warp w multiplies rows 16w..16w+15 of W_s by X_s^T on tensor cores
 *      (bf16 16x16x16, fp32 accumulators, one per 16 activation rows).
 * At the end the accumulators go through shared memory (C_s[n_pad][BM],
 * reusing W_s) so the writes to y[j][row] are coalesced along the rows and
 * nothing outside y[0..n)[0..m) is written. With split-K each split writes
 * its partial sums to a workspace and a second kernel adds them in split
 * order (deterministic, no atomics).
 *
 * Every weight byte is read from global memory once per call; x is re-read
 * (from L2) once per 64 weight rows. */
#ifndef COMMONS_CUDA_MMQ_CUH
#define COMMONS_CUDA_MMQ_CUH

#include <cuda_bf16.h>

#include "cuda_quant.cuh"

#define KCU_MMQ_MAX_N 64    /* activation rows one block multiplies (the X tile's height) */
#define KCU_MMQ_BM 64       /* weight rows per block: 4 warps x 16 */
#define KCU_MMQ_BK 256      /* elements per stage: one K-quant super-block, 8 32-element chunks */
#define KCU_MMQ_THREADS 128 /* 4 warps */
/* Shared-memory row pitches, in elements: a multiple of 8 (wmma's bf16
 * leading dimension, 16-byte aligned rows) whose row stride in 32-bit words is
 * 4 mod 32, so 8 threads storing 16 bytes at the same column of 8
 * consecutive rows, and wmma's 16-row fragment loads, hit distinct banks. */
#define KCU_MMQ_LDW (KCU_MMQ_BK + 8)
#define KCU_MMQ_LDX (KCU_MMQ_BK + 8)
#define KCU_MMQ_LDC (KCU_MMQ_BM + 4) /* floats: wmma needs a multiple of 4 */

static_assert(KCU_MMQ_BM == 16 * (KCU_MMQ_THREADS / 32), "one 16-row slice per warp");
static_assert(KCU_MMQ_BM * (KCU_MMQ_BK / 32) == 4 * KCU_MMQ_THREADS, "4 chunks per thread per stage");
static_assert(KCU_MMQ_MAX_N * KCU_MMQ_LDC * 4 <= KCU_MMQ_BM * KCU_MMQ_LDW * 2, "C_s fits in W_s");

/* Types with a block layout (the only ones this path takes). */
__host__ __device__ constexpr bool kcu_mmq_type(int t)
{
    return t == KERN_TYPE_Q4_0 || t == KERN_TYPE_Q4_1 || t == KERN_TYPE_Q5_0 || t == KERN_TYPE_Q5_1 ||
           t == KERN_TYPE_Q8_0 || t == KERN_TYPE_Q4_K || t == KERN_TYPE_Q5_K || t == KERN_TYPE_Q6_K;
}
/* Granules (16 bytes) a row's stage slice can span: the slice is at most
 * BK/BE blocks and starts up to 15 bytes into its first granule. */
__host__ __device__ constexpr int kcu_mmq_gpr(int t)
{
    return ((KCU_MMQ_BK / kcu_block_elems(t)) * kcu_block_bytes(t) + 15 + 15) / 16;
}
/* raw row pitch in bytes: an odd number of granules (bank spread, see LDW) */
__host__ __device__ constexpr int kcu_mmq_rawp(int t) { return 16 * (kcu_mmq_gpr(t) | 1); }
/* granules each thread loads per stage */
__host__ __device__ constexpr int kcu_mmq_ng(int t)
{
    return (KCU_MMQ_BM * kcu_mmq_gpr(t) + KCU_MMQ_THREADS - 1) / KCU_MMQ_THREADS;
}

/* Shared memory of one block: W_s (also C_s at the end), raw, X_s; every
 * part starts at a multiple of 128 bytes. */
#define KCU_MMQ_W_BYTES (KCU_MMQ_BM * KCU_MMQ_LDW * 2)
__host__ __device__ constexpr size_t kcu_mmq_raw_off() { return KCU_MMQ_W_BYTES; }
__host__ __device__ constexpr size_t kcu_mmq_x_off(int t) { return KCU_MMQ_W_BYTES + (size_t)KCU_MMQ_BM * kcu_mmq_rawp(t); }
__host__ __device__ constexpr size_t kcu_mmq_smem(int t, int n_pad)
{
    return kcu_mmq_x_off(t) + (size_t)n_pad * KCU_MMQ_LDX * 2;
}
static_assert(KCU_MMQ_W_BYTES % 128 == 0, "aligned parts");

/* Launch plan: grid (nb, splits); split s covers stages [s*sps, min(ns, (s+1)*sps)),
 * stage t being elements [t*BK, min(k, (t+1)*BK)). Never an empty split. */
typedef struct kcu_mmq_plan {
    int nb;     /* row blocks: ceil(m / BM) */
    int ns;     /* stages: ceil(k / BK) */
    int sps;    /* stages per split */
    int splits; /* grid.y */
    int n_pad;  /* n rounded up to 16 */
} kcu_mmq_plan;

/* Enough blocks to fill the GPU once (slots: blocks resident at once, i.e.
 * multiprocessors x blocks per multiprocessor): rows alone when m is large,
 * else k is split too (each split at least 1 stage). */
__host__ __device__ inline kcu_mmq_plan kcu_mmq_plan_for(int n, int m, int k, int slots)
{
    kcu_mmq_plan p;
    p.nb = (m + KCU_MMQ_BM - 1) / KCU_MMQ_BM;
    p.ns = (k + KCU_MMQ_BK - 1) / KCU_MMQ_BK;
    int want = slots > 0 ? slots : 1;
    int splits = p.nb >= want ? 1 : (want + p.nb - 1) / p.nb;
    if (splits > p.ns) splits = p.ns;
    p.sps = (p.ns + splits - 1) / splits;
    p.splits = (p.ns + p.sps - 1) / p.sps; /* drops splits that would be empty */
    p.n_pad = (n + 15) & ~15;
    return p;
}

/* ---- the phases of one block; tid = threadIdx.x in [0, KCU_MMQ_THREADS) ---- */

/* One 16-byte granule at address a, of which only bytes inside [lo, hi) (the
 * weight matrix) may be read: a plain 16-byte load when it lies inside,
 * else bytes, the outside ones as 0 (at most the first and last granule of the matrix). */
static __host__ __device__ __noinline__ uint4 kcu_mmq_granule_edge(uintptr_t a, uintptr_t lo, uintptr_t hi)
{
    uint32_t v[4] = {0, 0, 0, 0};
#pragma unroll
    for (int b = 0; b < 16; b++)
        if (a + b >= lo && a + b < hi) v[b >> 2] |= (uint32_t)*(const uint8_t *)(a + b) << (8 * (b & 3));
    return make_uint4(v[0], v[1], v[2], v[3]);
}
__host__ __device__ __forceinline__ uint4 kcu_mmq_granule(uintptr_t a, uintptr_t lo, uintptr_t hi)
{
    if (a >= lo && a + 16 <= hi) return kcu_ldg((const uint4 *)a);
    return kcu_mmq_granule_edge(a, lo, hi); /* out of line: keeps the stage loop small */
}

/* Address of the stage slice of tile row i: the first byte of block k0/BE of row row0+i. */
template <int T>
__host__ __device__ __forceinline__ uintptr_t kcu_mmq_slice(const uint8_t *w, size_t rb, int64_t row, int k0)
{
    return (uintptr_t)(w + (size_t)row * rb + (size_t)(k0 / kcu_block_elems(T)) * kcu_block_bytes(T));
}

/* Phase 1a: the stage's granules into buf (granule g = tid + THREADS*p is
 * granule g % GPR of tile row g / GPR); granules past a row's slice, and rows
 * past m, are left 0 and never dequantized. */
template <int T>
__host__ __device__ __forceinline__ void kcu_mmq_load_raw(uint4 *buf, const uint8_t *w, size_t rb, int m, int row0,
                                                          int k0, int kl, int tid)
{
    constexpr int G = kcu_mmq_gpr(T);
    uintptr_t lo = (uintptr_t)w, hi = (uintptr_t)(w + (size_t)m * rb);
    size_t len = (size_t)(kl / kcu_block_elems(T)) * kcu_block_bytes(T);
#pragma unroll
    for (int p = 0; p < kcu_mmq_ng(T); p++) {
        int g = tid + KCU_MMQ_THREADS * p, i = g / G, j = g % G;
        buf[p] = make_uint4(0, 0, 0, 0);
        if (i < KCU_MMQ_BM && row0 + i < m) {
            uintptr_t s = kcu_mmq_slice<T>(w, rb, row0 + i, k0), a = (s & ~(uintptr_t)15) + 16 * (uintptr_t)j;
            if (a < s + len) buf[p] = kcu_mmq_granule(a, lo, hi);
        }
    }
}

/* Phase 1b: buf into raw: tile row i's granule j at raw + i*RAWP + 16j, so
 * its slice starts at raw + i*RAWP + (slice address % 16), with the same
 * alignment modulo 16 as in global memory. */
template <int T>
__host__ __device__ __forceinline__ void kcu_mmq_store_raw(uint8_t *raw, const uint4 *buf, int tid)
{
    constexpr int G = kcu_mmq_gpr(T);
#pragma unroll
    for (int p = 0; p < kcu_mmq_ng(T); p++) {
        int g = tid + KCU_MMQ_THREADS * p, i = g / G, j = g % G;
        if (i < KCU_MMQ_BM) *(uint4 *)(raw + (size_t)i * kcu_mmq_rawp(T) + 16 * j) = buf[p];
    }
}

/* v[0], v[1] rounded to bf16, packed (one cvt.rn.bf16x2.f32; a union: gcc and nvcc define it) */
__host__ __device__ __forceinline__ uint32_t kcu_mmq_bf2(const float *v)
{
    union { __nv_bfloat162 b; uint32_t u; } cv;
    cv.b = __floats2bfloat162_rn(v[0], v[1]);
    return cv.u;
}

/* Phase 2: raw -> W_s (bf16). Unit u (0..15) of 8 rows x 4 chunks per warp
 * instruction: lane -> row 8*(u/2) + lane%8, chunk 4*(u%2) + lane/8, so each
 * 8-lane phase of the 16-byte stores writes 8 consecutive rows (distinct
 * banks, see LDW). A: the weights' alignment (kept in raw, see phase 1b). */
template <int T, int A>
__host__ __device__ __forceinline__ void kcu_mmq_dequant(__nv_bfloat16 *ws, const uint8_t *raw, const uint8_t *w,
                                                         size_t rb, int m, int row0, int k0, int kl, int tid)
{
    int warp = tid >> 5, lane = tid & 31, nc = kl / 32;
#pragma unroll 1
    for (int q = 0; q < 4; q++) {
        int u = 4 * q + warp, i = 8 * (u >> 1) + (lane & 7), c = 4 * (u & 1) + (lane >> 3);
        if (row0 + i >= m || c >= nc) continue;
        uintptr_t s = kcu_mmq_slice<T>(w, rb, row0 + i, k0);
        const uint8_t *src = raw + (size_t)i * kcu_mmq_rawp(T) + (s & 15);
        float v[32];
        kcu_deq32<T, A, false>(src, c, v);
        uint4 *d = (uint4 *)(ws + (size_t)i * KCU_MMQ_LDW + 32 * c);
#pragma unroll
        for (int e = 0; e < 4; e++)
            d[e] = make_uint4(kcu_mmq_bf2(v + 8 * e), kcu_mmq_bf2(v + 8 * e + 2), kcu_mmq_bf2(v + 8 * e + 4),
                              kcu_mmq_bf2(v + 8 * e + 6));
    }
}

/* Phase 3: rows j < n of the stage's k-slice of xs (bf16 [n][k], 16-byte
 * aligned, k a multiple of 32) into X_s: a warp per row, lane q copying
 * elements 8q .. 8q+7 (one 16-byte load; kl <= 256 = 32 lanes x 8). */
static_assert(KCU_MMQ_BK == 32 * 8, "a warp's 16-byte loads cover a stage's row");
__host__ __device__ __forceinline__ void kcu_mmq_stage_x(__nv_bfloat16 *xt, const __nv_bfloat16 *xs, int n, int k,
                                                         int k0, int kl, int tid)
{
    int q = tid & 31;
    if (8 * q >= kl) return;
    for (int j = tid >> 5; j < n; j += KCU_MMQ_THREADS / 32)
        *(uint4 *)(xt + (size_t)j * KCU_MMQ_LDX + 8 * q) = kcu_ldg((const uint4 *)(xs + (size_t)j * k + k0 + 8 * q));
}

/* Zero fill before the first stage: X_s rows n .. n_pad-1 and W_s rows past
 * m (never written by the stages, read by the multiply). */
__host__ __device__ __forceinline__ void kcu_mmq_zero_pads(__nv_bfloat16 *ws, __nv_bfloat16 *xt, int n, int n_pad,
                                                           int m, int row0, int tid)
{
    int wr0 = m - row0 < KCU_MMQ_BM ? m - row0 : KCU_MMQ_BM;
    size_t nw = (size_t)(KCU_MMQ_BM - wr0) * KCU_MMQ_LDW, nx = (size_t)(n_pad - n) * KCU_MMQ_LDX;
    __nv_bfloat16 z = __float2bfloat16_rn(0.0f);
    for (size_t e = tid; e < nw; e += KCU_MMQ_THREADS) ws[(size_t)wr0 * KCU_MMQ_LDW + e] = z;
    for (size_t e = tid; e < nx; e += KCU_MMQ_THREADS) xt[(size_t)n * KCU_MMQ_LDX + e] = z;
}

/* Epilogue: C_s (column-major: element (row i, activation j) at ct[j*LDC + i])
 * -> out[j][row0 + i] for j < n and row0 + i < m; out is y (one split) or the
 * split's partial sums [n][m]. Consecutive threads, consecutive rows. */
__host__ __device__ __forceinline__ void kcu_mmq_write(float *out, const float *ct, int n, int m, int row0, int tid)
{
    for (int e = tid; e < n * KCU_MMQ_BM; e += KCU_MMQ_THREADS) {
        int j = e / KCU_MMQ_BM, i = e % KCU_MMQ_BM;
        if (row0 + i < m) out[(size_t)j * m + row0 + i] = ct[j * KCU_MMQ_LDC + i];
    }
}

/* The quantized matmul of cuda_mmq.cu for one weight: 1 if it takes (n, k,
 * type, weight address) — 8 < n <= KCU_MMQ_MAX_N, a block type, k a
 * multiple of 32 (of the block size), weights at the type's natural alignment
 * with rows a multiple of it. Else the caller keeps the cuBLAS path. */
bool kcu_mmq_takes(int wt, int n, int k, const void *w);
/* At context creation: asks the CUDA API what launches will need (shared memory
 * beyond 48 KB allowed, blocks per multiprocessor for every type and padded n), so
 * nothing of it happens inside a graph capture; sets the context's mmq_ok. */
void kcu_mmq_prepare(kern_ctx *ctx);
/* 1 if ctx's device can run it (compute capability 8.0+: bf16 tensor cores) and
 * kcu_mmq_prepare succeeded. */
bool kcu_mmq_device_ok(kern_ctx *ctx);
/* y = x . W^T for one weight, xs = x as bf16 [n][k] (16-byte aligned); status. */
int kcu_mmq(kern_ctx *ctx, const __nv_bfloat16 *xs, int n, int k, const kern_matmul_op *op);

#endif
