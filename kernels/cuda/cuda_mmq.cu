/* cuda_mmq.cu: y[n][m] = x[n][k] . W[m][k]^T for quantized W and medium n
 * (8 < n <= KCU_MMQ_MAX_N: batched decode steps), dequantizing each weight
 * block once per call into shared memory and multiplying on tensor cores.
 * The design, tile geometry and the block's phases are in cuda_mmq.cuh;
 * this file has the device-only parts (the wmma multiply, the stage loop),
 * the split-K reduction and the launch.
 *
 * Why a bound of 64: the old path for these n (weights dequantized to bf16 in
 * global memory, then cublasGemmEx) moves ~2 + 2 bytes per weight on top of
 * reading the quantized weight, which at n = 32 is 3-5x the weight bytes a
 * step needs. Beyond 64 rows the X tile would have to be looped over inside
 * the block, and prompt-sized n amortizes the dequantization over many rows
 * while cuBLAS's tuned GEMM pipelines win on the arithmetic, so n > 64 keeps
 * the cuBLAS path. */
#include <mma.h>

#include <atomic>

#include "cuda_mmq.cuh"

using namespace nvcuda;

/* One block: KCU_MMQ_BM rows of W from row blockIdx.x * BM, stages
 * [blockIdx.y * sps, min(ns, (blockIdx.y + 1) * sps)); out = y when there is
 * one split, else the partial sums ws + blockIdx.y * n * m.
 * Invariants: k % 32 == 0; 8 < n <= 64 (n_pad = n rounded up to 16); xs is
 * bf16 [n][k], 16-byte aligned; w at T's natural alignment with rb a
 * multiple of it (A = that alignment); dynamic shared memory
 * kcu_mmq_smem(T, n_pad) bytes. */
template <int T, int A>
__global__ void __launch_bounds__(KCU_MMQ_THREADS)
k_mmq(const uint8_t *__restrict__ w, size_t rb, const __nv_bfloat16 *__restrict__ xs, int n, int m, int k, int sps,
      float *__restrict__ y, float *__restrict__ ws)
{
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800 /* bf16 wmma: sm_80+ (older: empty, never launched) */
    extern __shared__ __align__(128) uint8_t smem[];
    __nv_bfloat16 *wt = (__nv_bfloat16 *)smem;
    uint8_t *raw = smem + kcu_mmq_raw_off();
    __nv_bfloat16 *xt = (__nv_bfloat16 *)(smem + kcu_mmq_x_off(T));
    float *ct = (float *)smem; /* C_s reuses W_s after the last stage */
    const int tid = threadIdx.x, warp = tid >> 5, n_pad = (n + 15) & ~15, nf = n_pad >> 4;
    const int row0 = blockIdx.x * KCU_MMQ_BM, ns = (k + KCU_MMQ_BK - 1) / KCU_MMQ_BK;
    const int s0 = blockIdx.y * sps, s1 = min(ns, s0 + sps);

    kcu_mmq_zero_pads(wt, xt, n, n_pad, m, row0, tid);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[KCU_MMQ_MAX_N / 16];
#pragma unroll
    for (int f = 0; f < KCU_MMQ_MAX_N / 16; f++) wmma::fill_fragment(acc[f], 0.0f);

    uint4 buf[kcu_mmq_ng(T)];
    if (s0 < s1) kcu_mmq_load_raw<T>(buf, w, rb, m, row0, s0 * KCU_MMQ_BK, min(KCU_MMQ_BK, k - s0 * KCU_MMQ_BK), tid);
    for (int s = s0; s < s1; s++) {
        const int k0 = s * KCU_MMQ_BK, kl = min(KCU_MMQ_BK, k - k0); /* kl: a multiple of 32 */
        kcu_mmq_store_raw<T>(raw, buf, tid);
        kcu_mmq_stage_x(xt, xs, n, k, k0, kl, tid);
        __syncthreads(); /* (a) raw and X_s of stage s (and the zero pads) visible */
        if (s + 1 < s1) /* the next stage's bytes are in flight during this one's work */
            kcu_mmq_load_raw<T>(buf, w, rb, m, row0, k0 + KCU_MMQ_BK, min(KCU_MMQ_BK, k - k0 - KCU_MMQ_BK), tid);
        kcu_mmq_dequant<T, A>(wt, raw, w, rb, m, row0, k0, kl, tid);
        __syncthreads(); /* (b) W_s of stage s visible */
        /* rows 16*warp .. +15 of W_s (row-major, ld LDW) times X_s^T: X_s is
         * [n_pad][LDX] row-major, i.e. the k x n matrix B column-major */
        for (int kk = 0; kk < kl; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
            wmma::load_matrix_sync(a, wt + (size_t)16 * warp * KCU_MMQ_LDW + kk, KCU_MMQ_LDW);
#pragma unroll
            for (int f = 0; f < KCU_MMQ_MAX_N / 16; f++) {
                if (f < nf) {
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
                    wmma::load_matrix_sync(b, xt + (size_t)16 * f * KCU_MMQ_LDX + kk, KCU_MMQ_LDX);
                    wmma::mma_sync(acc[f], a, b, acc[f]);
                }
            }
        }
        __syncthreads(); /* (c) W_s, X_s and raw free for the next stage (and for C_s) */
    }
    /* C_s[j][i] (column-major 64 x n_pad, ld LDC): fragment f of warp w at
     * activation rows 16f.., weight rows 16w.. */
#pragma unroll
    for (int f = 0; f < KCU_MMQ_MAX_N / 16; f++)
        if (f < nf) wmma::store_matrix_sync(ct + (size_t)16 * f * KCU_MMQ_LDC + 16 * warp, acc[f], KCU_MMQ_LDC,
                                            wmma::mem_col_major);
    __syncthreads();
    kcu_mmq_write(gridDim.y == 1 ? y : ws + (size_t)blockIdx.y * n * m, ct, n, m, row0, tid);
#endif
}

/* y[i] = sum over splits s (in order) of ws[s][i], i < nm. */
__global__ void k_mmq_reduce(const float *__restrict__ ws, float *__restrict__ y, size_t nm, int splits)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < nm; i += (size_t)gridDim.x * blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < splits; s++) v += ws[(size_t)s * nm + i];
        y[i] = v;
    }
}

bool kcu_mmq_takes(int wt, int n, int k, const void *w)
{
    if (!kcu_mmq_type(wt) || n <= 8 || n > KCU_MMQ_MAX_N || k <= 0 || k % 32) return false;
    size_t rb = kern_row_bytes(wt, k);
    int nat = kcu_nat_align(wt);
    if (!rb || (uintptr_t)w % nat || rb % nat) return false;
    /* "0": the cuBLAS path (A/B timing; tests toggle it, so read per call, but only
     * for the calls it can change: not every prompt-sized or float matmul) */
    const char *e = getenv("COMMONS_CUDA_MMQ");
    return !(e && !strcmp(e, "0"));
}

bool kcu_mmq_device_ok(kern_ctx *ctx)
{
    return kcu(ctx)->mmq_ok;
}

/* Dynamic shared memory beyond 48 KB must be allowed per kernel and device. */
template <int T>
static cudaError_t allow_smem()
{
    return cudaFuncSetAttribute(k_mmq<T, kcu_nat_align(T)>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)kcu_mmq_smem(T, KCU_MMQ_MAX_N));
}

/* Blocks of k_mmq<T> resident per multiprocessor for n_pad activation rows
 * (shared memory and registers decide: 2 or 3 on sm_90), asked once per
 * (type, n_pad) so that a shape always gets the same plan (graph capture). */
template <int T>
static int blocks_per_sm(int n_pad)
{
    static std::atomic<int> known[KCU_MMQ_MAX_N / 16];
    int i = n_pad / 16 - 1, b = known[i].load(std::memory_order_relaxed);
    if (!b) {
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, k_mmq<T, kcu_nat_align(T)>, KCU_MMQ_THREADS,
                                                          kcu_mmq_smem(T, n_pad)) != cudaSuccess || b < 1) {
            (void)cudaGetLastError();
            b = 2; /* a guess; the plan is only about speed */
        }
        known[i].store(b, std::memory_order_relaxed);
    }
    return b;
}

template <int T>
static int launch(kern_ctx *ctx, const __nv_bfloat16 *xs, int n, int k, const kern_matmul_op *op)
{
    kern_cuda *c = kcu(ctx);
    int rc, n_pad = (n + 15) & ~15;
    kcu_mmq_plan p = kcu_mmq_plan_for(n, op->m, k, c->n_sm * blocks_per_sm<T>(n_pad));
    float *ws = NULL;
    if (p.splits > 1) { /* partial sums in the dequantization tile buffer (unused on this path) */
        rc = kcu_grow(ctx, &c->tile, &c->tile_bytes, (size_t)p.splits * n * op->m * sizeof(float));
        if (rc) return rc;
        ws = (float *)c->tile;
    }
    dim3 grid((unsigned)p.nb, (unsigned)p.splits);
    k_mmq<T, kcu_nat_align(T)><<<grid, KCU_MMQ_THREADS, kcu_mmq_smem(T, p.n_pad), c->stream>>>(
        (const uint8_t *)op->w, kern_row_bytes(T, k), xs, n, op->m, k, p.sps, op->y, ws);
    KCU_LAUNCHED();
    if (p.splits > 1) {
        size_t nm = (size_t)n * op->m, g = (nm + 255) / 256;
        k_mmq_reduce<<<(unsigned)(g < 4096 ? g : 4096), 256, 0, c->stream>>>(ws, op->y, nm, p.splits);
        KCU_LAUNCHED();
    }
    return KERN_OK;
}

/* Everything launch needs from the CUDA API beyond the launch itself, for one type:
 * asked here, at context creation, so that no first use can fall inside a graph
 * capture (where such calls may be refused) and a shape always gets the same plan. */
template <int T>
static bool prepare_type()
{
    if (allow_smem<T>() != cudaSuccess) /* before the occupancy query, which depends on it */
        return false;
    for (int n_pad = 16; n_pad <= KCU_MMQ_MAX_N; n_pad += 16)
        blocks_per_sm<T>(n_pad);
    return true;
}

void kcu_mmq_prepare(kern_ctx *ctx)
{
    kern_cuda *c = kcu(ctx);
    int major = 0;
    c->mmq_ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device) == cudaSuccess &&
                major >= 8 && prepare_type<KERN_TYPE_Q4_0>() && prepare_type<KERN_TYPE_Q4_1>() &&
                prepare_type<KERN_TYPE_Q5_0>() && prepare_type<KERN_TYPE_Q5_1>() &&
                prepare_type<KERN_TYPE_Q8_0>() && prepare_type<KERN_TYPE_Q4_K>() &&
                prepare_type<KERN_TYPE_Q5_K>() && prepare_type<KERN_TYPE_Q6_K>();
    (void)cudaGetLastError(); /* a refusal is not sticky: the context keeps the cuBLAS path */
}

int kcu_mmq(kern_ctx *ctx, const __nv_bfloat16 *xs, int n, int k, const kern_matmul_op *op)
{
    switch (op->wt) {
    case KERN_TYPE_Q4_0: return launch<KERN_TYPE_Q4_0>(ctx, xs, n, k, op);
    case KERN_TYPE_Q4_1: return launch<KERN_TYPE_Q4_1>(ctx, xs, n, k, op);
    case KERN_TYPE_Q5_0: return launch<KERN_TYPE_Q5_0>(ctx, xs, n, k, op);
    case KERN_TYPE_Q5_1: return launch<KERN_TYPE_Q5_1>(ctx, xs, n, k, op);
    case KERN_TYPE_Q8_0: return launch<KERN_TYPE_Q8_0>(ctx, xs, n, k, op);
    case KERN_TYPE_Q4_K: return launch<KERN_TYPE_Q4_K>(ctx, xs, n, k, op);
    case KERN_TYPE_Q5_K: return launch<KERN_TYPE_Q5_K>(ctx, xs, n, k, op);
    case KERN_TYPE_Q6_K: return launch<KERN_TYPE_Q6_K>(ctx, xs, n, k, op);
    default: return kern_fail(ctx, KERN_ENOTSUP, "CUDA quantized matmul: type %d not supported", op->wt);
    }
}
