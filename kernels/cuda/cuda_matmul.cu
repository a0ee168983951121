/* cuda_matmul.cu: y[n][m] = x[n][k] . W[m][k]^T on the GPU.
 *
 * Decode (n <= KCU_MATVEC_MAX_N): one warp per weight row; each lane takes
 * 32-element chunks of the row, dequantizes them in registers (16-byte
 * loads where the layout allows, see cuda_quant.cuh), and multiplies them
 * with all n activation rows, so every weight byte is read once per call;
 * fp32 accumulation, one warp reduction per output. Memory-bound: 8 rows
 * per 256-thread block, lanes of a warp read consecutive chunks.
 *
 * Batched decode (KCU_MATVEC_MAX_N < n <= KCU_MMQ_MAX_N) with quantized
 * weights at their natural alignment: cuda_mmq.cu (each weight block
 * dequantized once per call into shared memory, tensor cores).
 *
 * Prompts (larger n), unaligned operands, float rows not a multiple of 32:
 * cuBLAS. 16-byte aligned F32 weights: SGEMM (fp32). Aligned BF16 weights:
 * x is rounded to bf16 and cublasGemmEx runs bf16 x bf16 -> fp32. Others: the weights
 * are dequantized to bf16 a tile of rows at a time (at most KCU_TILE_ELEMS
 * elements) and go through the same GemmEx. bf16 (not f16) keeps f32's
 * range: large activations (Gemma's FFN) cannot overflow. The CPU backend
 * instead quantizes x to 8 bits; both stay within the per-type bounds the
 * GPU check (tests/gpu) asserts. */
#include <cuda_bf16.h>

#include "cuda_mmq.cuh"

#define KCU_MATVEC_MAX_N 8
#define KCU_MATVEC_WARPS 8
#define KCU_TILE_ELEMS ((size_t)16 << 20)

template <int T, int A>
__global__ void __launch_bounds__(KCU_MATVEC_WARPS * 32)
k_matvec(const uint8_t *__restrict__ w, size_t rb, const float *__restrict__ x, int k, int n,
         float *__restrict__ y, int m)
{
    int lane = threadIdx.x & 31, row = blockIdx.x * KCU_MATVEC_WARPS + (threadIdx.x >> 5);
    if (row >= m) return;
    const uint8_t *wr = w + (size_t)row * rb;
    float acc[KCU_MATVEC_MAX_N];
#pragma unroll
    for (int r = 0; r < KCU_MATVEC_MAX_N; r++) acc[r] = 0.0f;
    int nc = k >> 5;
    /* unrolled twice: two chunks' loads in flight per lane before the math */
#pragma unroll 2
    for (int c = lane; c < nc; c += 32) {
        float wv[32];
        kcu_deq32<T, A>(wr, c, wv);
#pragma unroll
        for (int r = 0; r < KCU_MATVEC_MAX_N; r++) {
            if (r < n) {
                const float4 *xr = (const float4 *)(x + (size_t)r * k + 32 * (size_t)c);
                float s = 0.0f;
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    float4 v = __ldg(xr + i);
                    s += wv[4 * i] * v.x + wv[4 * i + 1] * v.y + wv[4 * i + 2] * v.z + wv[4 * i + 3] * v.w;
                }
                acc[r] += s;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < KCU_MATVEC_MAX_N; r++) {
        if (r < n) {
            float v = kcu_warp_sum(acc[r]);
            if (lane == 0) y[(size_t)r * m + row] = v;
        }
    }
}

/* rows r0 .. r0+rows-1 of W -> bf16 dst[rows][k]; one thread per chunk
 * (the last chunk of a float row may be partial). */
template <int T, int A>
__global__ void k_dequant_bf16(const uint8_t *__restrict__ w, size_t rb, int k, int64_t r0, int rows,
                               __nv_bfloat16 *__restrict__ dst)
{
    int ncr = (k + 31) >> 5;
    int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (int64_t)rows * ncr) return;
    int64_t r = id / ncr;
    int c = (int)(id % ncr);
    const uint8_t *wr = w + (size_t)(r0 + r) * rb;
    __nv_bfloat16 *d = dst + (size_t)r * k + 32 * (size_t)c;
    if (32 * c + 32 <= k) {
        float wv[32];
        kcu_deq32<T, A>(wr, c, wv);
#pragma unroll
        for (int i = 0; i < 32; i++) d[i] = __float2bfloat16_rn(wv[i]);
    } else {
        for (int i = 32 * c; i < k; i++) dst[(size_t)r * k + i] = __float2bfloat16_rn(kcu_float_elem(T, wr, i));
    }
}

__global__ void k_f32_to_bf16(const float *__restrict__ x, __nv_bfloat16 *__restrict__ y, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

static int blas_fail(kern_ctx *ctx, cublasStatus_t s, const char *what)
{
    return kern_fail(ctx, KERN_EBACKEND, "cuBLAS %s: %s", what, cublasGetStatusString(s));
}

static unsigned grid_for(size_t n, unsigned threads)
{
    size_t g = (n + threads - 1) / threads;
    return (unsigned)(g > 65535u * 16 ? 65535u * 16 : g);
}

static int launch_matvec(kern_ctx *ctx, const float *x, int n, int k, const kern_matmul_op *op)
{
    size_t rb = kern_row_bytes(op->wt, k);
    int nat = kcu_nat_align(op->wt);
    bool al = (uintptr_t)op->w % nat == 0 && rb % nat == 0;
    dim3 grid((op->m + KCU_MATVEC_WARPS - 1) / KCU_MATVEC_WARPS), block(KCU_MATVEC_WARPS * 32);
    cudaStream_t s = kcu(ctx)->stream;
    const uint8_t *w = (const uint8_t *)op->w;
#define MV(T)                                                                                     \
    if (al) k_matvec<T, kcu_nat_align(T)><<<grid, block, 0, s>>>(w, rb, x, k, n, op->y, op->m);  \
    else k_matvec<T, 1><<<grid, block, 0, s>>>(w, rb, x, k, n, op->y, op->m)
    int t = op->wt;
    KCU_TYPE_SWITCH(t, MV)
#undef MV
    KCU_LAUNCHED();
    return KERN_OK;
}

/* x in bf16 (c->xs), converted once per call and shared by every weight of it */
static int x_to_bf16(kern_ctx *ctx, const float *x, int n, int k, bool *x_bf16_done)
{
    if (*x_bf16_done) return KERN_OK;
    kern_cuda *c = kcu(ctx);
    size_t nx = (size_t)n * k;
    int rc = kcu_grow(ctx, &c->xs, &c->xs_bytes, nx * sizeof(__nv_bfloat16));
    if (rc) return rc;
    k_f32_to_bf16<<<grid_for(nx, 256), 256, 0, c->stream>>>(x, (__nv_bfloat16 *)c->xs, nx);
    KCU_LAUNCHED();
    *x_bf16_done = true;
    return KERN_OK;
}

static int launch_gemm(kern_ctx *ctx, const float *x, int n, int k, const kern_matmul_op *op, bool *x_bf16_done)
{
    kern_cuda *c = kcu(ctx);
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t bs;
    /* cuBLAS reads W in place only when it is 16-byte aligned (a pointer
     * into a packed file may be anywhere): else the byte-loading tile path */
    bool w16 = (uintptr_t)op->w % 16 == 0;
    if (op->wt == KERN_TYPE_F32 && w16) {
        bs = cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, op->m, n, k, &one, (const float *)op->w, k, x, k, &zero,
                         op->y, op->m);
        return bs == CUBLAS_STATUS_SUCCESS ? KERN_OK : blas_fail(ctx, bs, "SGEMM");
    }
    int rc0 = x_to_bf16(ctx, x, n, k, x_bf16_done);
    if (rc0) return rc0;
    if (op->wt == KERN_TYPE_BF16 && w16) {
        bs = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, op->m, n, k, &one, op->w, CUDA_R_16BF, k, c->xs,
                          CUDA_R_16BF, k, &zero, op->y, CUDA_R_32F, op->m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        return bs == CUBLAS_STATUS_SUCCESS ? KERN_OK : blas_fail(ctx, bs, "GemmEx bf16");
    }
    size_t rb = kern_row_bytes(op->wt, k);
    int nat = kcu_nat_align(op->wt);
    bool al = (uintptr_t)op->w % nat == 0 && rb % nat == 0;
    int tile_rows = (int)(KCU_TILE_ELEMS / (size_t)k);
    if (tile_rows < 1) tile_rows = 1;
    if (tile_rows > op->m) tile_rows = op->m;
    int rc = kcu_grow(ctx, &c->tile, &c->tile_bytes, (size_t)tile_rows * k * sizeof(__nv_bfloat16));
    if (rc) return rc;
    const uint8_t *w = (const uint8_t *)op->w;
    __nv_bfloat16 *tile = (__nv_bfloat16 *)c->tile;
    for (int r0 = 0; r0 < op->m; r0 += tile_rows) {
        int rows = op->m - r0 < tile_rows ? op->m - r0 : tile_rows;
        size_t threads = (size_t)rows * ((k + 31) / 32);
        unsigned g = (unsigned)((threads + 255) / 256);
#define DQ(T)                                                                                         \
    if (al) k_dequant_bf16<T, kcu_nat_align(T)><<<g, 256, 0, c->stream>>>(w, rb, k, r0, rows, tile);   \
    else k_dequant_bf16<T, 1><<<g, 256, 0, c->stream>>>(w, rb, k, r0, rows, tile)
        int t = op->wt;
        KCU_TYPE_SWITCH(t, DQ)
#undef DQ
        KCU_LAUNCHED();
        bs = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, n, k, &one, tile, CUDA_R_16BF, k, c->xs,
                          CUDA_R_16BF, k, &zero, op->y + r0, CUDA_R_32F, op->m, CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT);
        if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(ctx, bs, "GemmEx (dequantized tile)");
    }
    return KERN_OK;
}

int kcu_matmul(kern_ctx *ctx, const float *x, int n, int k, const kern_matmul_op *ops, int n_ops)
{
    /* the matvec reads x as float4 and whole 32-element chunks */
    bool vec_ok = n <= KCU_MATVEC_MAX_N && k % 32 == 0 && (uintptr_t)x % 16 == 0;
    bool x_bf16 = false;
    for (int o = 0; o < n_ops; o++) {
        int rc;
        if (vec_ok) rc = launch_matvec(ctx, x, n, k, &ops[o]);
        else if (kcu_mmq_takes(ops[o].wt, n, k, ops[o].w) && kcu_mmq_device_ok(ctx)) {
            rc = x_to_bf16(ctx, x, n, k, &x_bf16);
            if (!rc) rc = kcu_mmq(ctx, (const __nv_bfloat16 *)kcu(ctx)->xs, n, k, &ops[o]);
        } else rc = launch_gemm(ctx, x, n, k, &ops[o], &x_bf16);
        if (rc) return rc;
    }
    return KERN_OK;
}
