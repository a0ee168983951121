/* cuda_sample.cu: greedy (argmax) and top-k selection of logits on the
 * device, so a GPU decode loop downloads 4 bytes (or k pairs) per token
 * instead of the whole vocabulary. Order: larger value first, lower index
 * first among equal values; NaN never wins. top-k runs k rounds of a block
 * argmax, each restricted to entries ordered after the previous pick: exact
 * and simple, O(k * vocab) reads (for k <= 256 well under a millisecond for a
 * 256K vocabulary). */
#include "cuda_internal.h"

#define SEL_THREADS 1024

/* (v, i) comes before (bv, bi) */
__device__ __forceinline__ bool before(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i < bi);
}

/* Best entry of row r after (pv, pi) in the order above (pi < 0: none yet);
 * result in every thread. */
__device__ void block_best(const float *r, int vocab, float pv, int pi, float *bv_out, int *bi_out)
{
    __shared__ float sv[32];
    __shared__ int si[32];
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float v = r[i];
        if (v != v) continue; /* NaN */
        if (pi >= 0 && !before(pv, pi, v, i)) continue;
        if (before(v, i, bv, bi)) bv = v, bi = i;
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (before(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) sv[w] = bv, si[w] = bi;
    __syncthreads();
    bv = lane < nw ? sv[lane] : -INFINITY;
    bi = lane < nw ? si[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (before(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    *bv_out = bv;
    *bi_out = bi;
}

__global__ void k_argmax(int32_t *out, const float *logits, int vocab)
{
    float v;
    int i;
    block_best(logits + (size_t)blockIdx.x * vocab, vocab, 0.0f, -1, &v, &i);
    if (threadIdx.x == 0) out[blockIdx.x] = i == 0x7fffffff ? 0 : i; /* all NaN: token 0 */
}

__global__ void k_topk(float *vals, int32_t *idx, const float *logits, int vocab, int k)
{
    const float *r = logits + (size_t)blockIdx.x * vocab;
    float pv = 0.0f;
    int pi = -1;
    for (int j = 0; j < k; j++) {
        float v;
        int i;
        block_best(r, vocab, pv, pi, &v, &i);
        if (threadIdx.x == 0) {
            vals[(size_t)blockIdx.x * k + j] = i == 0x7fffffff ? -INFINITY : v;
            idx[(size_t)blockIdx.x * k + j] = i == 0x7fffffff ? -1 : i;
        }
        if (i == 0x7fffffff) pi = 0x7fffffff, pv = -INFINITY; /* exhausted: the rest stay empty */
        else pv = v, pi = i;
    }
}

extern "C" int kern_cuda_argmax(kern_ctx *ctx, int32_t *out_dev, const float *logits, int n, int vocab)
{
    if (!ctx) return KERN_EINVAL;
    if (!kern_cuda_is(ctx)) return kern_fail(ctx, KERN_EINVAL, "kern_cuda_argmax: not a CUDA context");
    ctx->err[0] = 0;
    if (!out_dev || !logits || n <= 0 || vocab <= 0)
        return kern_fail(ctx, KERN_EINVAL, "kern_cuda_argmax: NULL pointer or n=%d vocab=%d not positive", n, vocab);
    k_argmax<<<n, SEL_THREADS, 0, kcu(ctx)->stream>>>(out_dev, logits, vocab);
    KCU_LAUNCHED();
    return KERN_OK;
}

extern "C" int kern_cuda_topk(kern_ctx *ctx, float *vals_dev, int32_t *idx_dev, const float *logits, int n, int vocab,
                              int k)
{
    if (!ctx) return KERN_EINVAL;
    if (!kern_cuda_is(ctx)) return kern_fail(ctx, KERN_EINVAL, "kern_cuda_topk: not a CUDA context");
    ctx->err[0] = 0;
    if (!vals_dev || !idx_dev || !logits || n <= 0 || vocab <= 0 || k < 1 || k > 256 || k > vocab)
        return kern_fail(ctx, KERN_EINVAL, "kern_cuda_topk: NULL pointer, or n=%d vocab=%d k=%d (need 1 <= k <= "
                         "min(256, vocab))", n, vocab, k);
    k_topk<<<n, SEL_THREADS, 0, kcu(ctx)->stream>>>(vals_dev, idx_dev, logits, vocab, k);
    KCU_LAUNCHED();
    return KERN_OK;
}
