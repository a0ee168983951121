/* cuda_internal.h: state and helpers shared by the CUDA backend's .cu files.
 * The backend state hangs off kern_ctx's scratch pointer (the CPU backend's
 * field; kern_internal.h has no backend-neutral one yet), so only code that
 * knows ctx->backend == KERN_BACKEND_CUDA may call kcu(ctx). Arguments
 * were validated by api.c; these functions check only CUDA's results. */
#ifndef COMMONS_CUDA_INTERNAL_H
#define COMMONS_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include "kern_cuda.h"
#include "kern_internal.h"

#define KCU_RING_BYTES (1 << 20) /* pinned + device staging ring for host arrays */
#define KCU_BLAS_WS ((size_t)32 << 20) /* cuBLAS workspace */
#define KCU_MAX_BINDS 8

typedef struct kern_cuda {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    int capturing;
    int n_sm;
    int mmq_ok;      /* cuda_mmq.cu's kernels usable here (kcu_mmq_prepare, at creation) */
    /* host arrays (pos, ids) cross through a ring: copied into pinned memory,
     * then cudaMemcpyAsync to the same offset of the device ring. A wrap
     * waits for the stream, so a slot is never rewritten while in flight. */
    uint8_t *ring_host, *ring_dev;
    size_t ring_off;
    /* the last staged array (offset, bytes): an identical array staged next reuses
     * its device copy (a decode step stages the same positions for every layer's
     * RoPE: one copy per step instead of two per layer). Invalid after a wrap. */
    size_t last_off, last_bytes;
    int last_valid;
    /* kern_cuda_bind: host arrays read from device memory instead of staged */
    struct { const void *host; const void *dev; size_t bytes; } binds[KCU_MAX_BINDS];
    int n_binds;
    /* grown on demand, freed with the ctx (never during capture) */
    void *tile; size_t tile_bytes;  /* weights dequantized to bf16 for cuBLAS; cuda_mmq.cu's split-K partial sums */
    void *xs; size_t xs_bytes;      /* activations converted to bf16 */
    void *part; size_t part_bytes;  /* flash-decoding partial results */
    void *blas_ws;                  /* cuBLAS workspace, KCU_BLAS_WS bytes */
    /* Once a graph exists it may hold the addresses of the buffers above, so
     * a buffer that grows afterwards is retired here (freed with the ctx),
     * never freed while a graph could still replay into it. */
    int graphs_made;
    void **retired;
    int n_retired;
} kern_cuda;

static inline kern_cuda *kcu(kern_ctx *ctx) { return (kern_cuda *)ctx->scratch; }

/* Return KERN_EBACKEND with CUDA's message from the enclosing function. */
#define KCU_CHECK(call)                                                                          \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess)                                                                   \
            return kern_fail(ctx, KERN_EBACKEND, "CUDA %s (%s:%d: %s)", cudaGetErrorString(e_),   \
                             __FILE__, __LINE__, #call);                                         \
    } while (0)
#define KCU_LAUNCHED() KCU_CHECK(cudaGetLastError())

/* Host array -> *dev, a device copy valid for operations issued after it on
 * ctx's stream; status. */
int kcu_stage(kern_ctx *ctx, const void *host, size_t bytes, const void **dev);
/* Device buffer *buf of at least bytes (grown, contents lost); status. */
int kcu_grow(kern_ctx *ctx, void **buf, size_t *have, size_t bytes);

/* ---- device helpers ---- */
#ifdef __CUDACC__
#include <cuda_fp16.h>
/* The dequantization helpers are __host__ __device__ so a host-only ctest
 * (test_cuda_dequant.cu) can check the block layouts without a GPU. */
__host__ __device__ __forceinline__ float kcu_bits_f(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}
__host__ __device__ __forceinline__ float kcu_h2f(uint16_t h)
{
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half(h));
#else
    return kern_f16_to_f32(h);
#endif
}
__host__ __device__ __forceinline__ float kcu_b2f(uint16_t h) { return kcu_bits_f((uint32_t)h << 16); }
/* read-only cached load on the device, a plain load on the host */
template <class T>
__host__ __device__ __forceinline__ T kcu_ldg(const T *p)
{
#ifdef __CUDA_ARCH__
    return __ldg(p);
#else
    return *p;
#endif
}
__device__ __forceinline__ uint16_t kcu_f2h(float f) { return __half_as_ushort(__float2half_rn(f)); }
__device__ __forceinline__ float kcu_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float kcu_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
#endif

/* ---- operations (the backend table's entries), one file each ---- */
int kcu_matmul(kern_ctx *ctx, const float *x, int n, int k, const kern_matmul_op *ops, int n_ops);
int kcu_get_rows(kern_ctx *ctx, float *dst, const void *table, int t, int dim, const int32_t *ids,
                 int n_ids);
int kcu_get_rows_d(kern_ctx *ctx, float *dst, const void *table, int t, int n_rows, int dim,
                   const int32_t *ids_dev, int n_ids);
int kcu_rmsnorm(kern_ctx *ctx, float *y, const float *x, const float *w, int n, int dim, float eps);
int kcu_rope(kern_ctx *ctx, float *x, int n_tok, int n_head, int head_dim, const int32_t *pos,
             const kern_rope_params *p);
int kcu_rope_d(kern_ctx *ctx, float *x, int n_tok, int n_head, int head_dim, const int32_t *pos_dev,
               const kern_rope_params *p);
int kcu_softmax(kern_ctx *ctx, float *x, int n, int dim);
int kcu_act(kern_ctx *ctx, float *y, const float *x, size_t n, kern_act act);
int kcu_gated(kern_ctx *ctx, float *y, const float *g, const float *u, size_t n, kern_act act);
int kcu_binary(kern_ctx *ctx, float *y, const float *a, const float *b, size_t n, int op);
int kcu_scale(kern_ctx *ctx, float *y, const float *x, float s, size_t n);
int kcu_kv_store(kern_ctx *ctx, void *cache, const kern_kv_layout *l, int pos0, int n, const float *src);
int kcu_kv_store_d(kern_ctx *ctx, void *cache, const kern_kv_layout *l, const int32_t *pos0_dev, int pos0,
                   int n, const float *src);
int kcu_attention(kern_ctx *ctx, float *out, const float *q, const void *k, const void *v,
                  const kern_kv_layout *l, const kern_attn_params *p);
int kcu_attention_d(kern_ctx *ctx, float *out, const float *q, const void *k, const void *v,
                    const kern_kv_layout *l, const kern_attn_params *p, const int32_t *pos0_dev);

#endif
