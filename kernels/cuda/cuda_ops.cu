/* cuda_ops.cu: the CUDA backend's row and element-wise operations: embedding
 * lookup, RMSNorm, RoPE (normal and NeoX pairs, frequency factors), softmax,
 * SiLU/GELU, gated activations, add/mul/scale, KV-cache stores, the paged-KV
 * block gather. Semantics
 * are the CPU backend's (kernels.h); RoPE angles are computed in double as
 * there, so positions in the hundreds of thousands keep their accuracy. */
#include "cuda_quant.cuh"

#define EW_THREADS 256

static unsigned ew_grid(size_t n)
{
    size_t g = (n + EW_THREADS - 1) / EW_THREADS;
    return (unsigned)(g > 65535u * 32 ? 65535u * 32 : g); /* grid-stride loops cover the rest */
}

/* ---- embedding lookup: one block per id ---- */
template <int T>
__global__ void k_get_rows(float *__restrict__ dst, const uint8_t *__restrict__ table, size_t rb, int n_rows,
                           int dim, const int32_t *__restrict__ ids)
{
    int id = ids[blockIdx.x];
    id = id < 0 ? 0 : id >= n_rows ? n_rows - 1 : id; /* api.c checked; never fault the GPU */
    const uint8_t *row = table + (size_t)id * rb;
    float *d = dst + (size_t)blockIdx.x * dim;
    int nc = dim >> 5;
    for (int c = threadIdx.x; c < nc; c += blockDim.x) {
        float w[32];
        kcu_deq32<T, 1>(row, c, w);
#pragma unroll
        for (int i = 0; i < 32; i++) d[32 * c + i] = w[i];
    }
    for (int i = 32 * nc + threadIdx.x; i < dim; i += blockDim.x) d[i] = kcu_float_elem(T, row, i);
}

int kcu_get_rows_d(kern_ctx *ctx, float *dst, const void *table, int t, int n_rows, int dim,
                   const int32_t *ids_dev, int n_ids)
{
    size_t rb = kern_row_bytes(t, dim);
    cudaStream_t s = kcu(ctx)->stream;
    const uint8_t *tb = (const uint8_t *)table;
#define GR(T) k_get_rows<T><<<n_ids, 128, 0, s>>>(dst, tb, rb, n_rows, dim, ids_dev)
    KCU_TYPE_SWITCH(t, GR)
#undef GR
    KCU_LAUNCHED();
    return KERN_OK;
}

/* ---- block reductions (blockDim.x a multiple of 32, <= 1024) ---- */
__device__ float block_sum(float v, float *sh)
{
    v = kcu_warp_sum(v);
    int w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads(); /* sh may still be read from a previous reduction */
    if ((threadIdx.x & 31) == 0) sh[w] = v;
    __syncthreads();
    v = (int)(threadIdx.x & 31) < nw ? sh[threadIdx.x & 31] : 0.0f;
    return kcu_warp_sum(v); /* every warp reads sh: all threads get the total */
}

__device__ float block_max(float v, float *sh)
{
    v = kcu_warp_max(v);
    int w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh[w] = v;
    __syncthreads();
    v = (int)(threadIdx.x & 31) < nw ? sh[threadIdx.x & 31] : -INFINITY;
    return kcu_warp_max(v);
}

/* ---- RMSNorm: one block per row ---- */
__global__ void k_rmsnorm(float *y, const float *x, const float *__restrict__ w, int dim, float eps)
{
    __shared__ float sh[32];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, sh);
    float s = rsqrtf(ss / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = w ? xr[i] * s * w[i] : xr[i] * s;
}

static int row_threads(int dim) { return dim >= 1024 ? 1024 : dim >= 256 ? 256 : 64; }

int kcu_rmsnorm(kern_ctx *ctx, float *y, const float *x, const float *w, int n, int dim, float eps)
{
    k_rmsnorm<<<n, row_threads(dim), 0, kcu(ctx)->stream>>>(y, x, w, dim, eps);
    KCU_LAUNCHED();
    return KERN_OK;
}

/* ---- RoPE: one thread per (token, pair), looping over heads ---- */
__global__ void k_rope(float *x, int n_tok, int n_head, int head_dim, const int32_t *__restrict__ pos, int neox,
                       int n_rot, float base, float scale, const float *__restrict__ ff)
{
    int half = n_rot / 2;
    int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (int64_t)n_tok * half) return;
    int t = (int)(id / half), i = (int)(id % half);
    double theta = (double)pos[t] * scale * pow((double)base, -2.0 * i / n_rot);
    if (ff) theta /= ff[i];
    double sd, cd;
    sincos(theta, &sd, &cd);
    float sn = (float)sd, cs = (float)cd;
    int a0 = neox ? i : 2 * i, a1 = neox ? i + half : 2 * i + 1;
    for (int h = 0; h < n_head; h++) {
        float *v = x + ((size_t)t * n_head + h) * head_dim;
        float x0 = v[a0], x1 = v[a1];
        v[a0] = x0 * cs - x1 * sn;
        v[a1] = x0 * sn + x1 * cs;
    }
}

int kcu_rope_d(kern_ctx *ctx, float *x, int n_tok, int n_head, int head_dim, const int32_t *pos_dev,
               const kern_rope_params *p)
{
    size_t n = (size_t)n_tok * (p->n_rot / 2);
    k_rope<<<(unsigned)((n + 127) / 128), 128, 0, kcu(ctx)->stream>>>(x, n_tok, n_head, head_dim, pos_dev,
                                                                      p->mode == KERN_ROPE_NEOX, p->n_rot,
                                                                      p->freq_base, p->freq_scale, p->freq_factors);
    KCU_LAUNCHED();
    return KERN_OK;
}

int kcu_rope(kern_ctx *ctx, float *x, int n_tok, int n_head, int head_dim, const int32_t *pos,
             const kern_rope_params *p)
{
    const void *d;
    int rc = kcu_stage(ctx, pos, (size_t)n_tok * sizeof *pos, &d);
    return rc ? rc : kcu_rope_d(ctx, x, n_tok, n_head, head_dim, (const int32_t *)d, p);
}

/* ---- softmax: one block per row ---- */
__global__ void k_softmax(float *x, int dim)
{
    __shared__ float sh[32];
    float *r = x + (size_t)blockIdx.x * dim;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) mx = fmaxf(mx, r[i]);
    mx = block_max(mx, sh);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float e = expf(r[i] - mx);
        r[i] = e;
        sum += e;
    }
    float inv = 1.0f / block_sum(sum, sh);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) r[i] *= inv;
}

int kcu_softmax(kern_ctx *ctx, float *x, int n, int dim)
{
    k_softmax<<<n, row_threads(dim), 0, kcu(ctx)->stream>>>(x, dim);
    KCU_LAUNCHED();
    return KERN_OK;
}

/* ---- element-wise ---- */
enum { EW_SILU, EW_GELU, EW_GSILU, EW_GGELU, EW_ADD, EW_MUL, EW_SCALE };

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float gelu(float x)
{
    const float c2 = 2 * 0.7978845608028654f; /* x * sigmoid(2z) == 0.5x(1 + tanh z), as on the CPU */
    return x / (1.0f + expf(-c2 * (x + 0.044715f * x * x * x)));
}

template <int OP>
__global__ void k_ew(float *y, const float *a, const float *b, float s, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v;
        if constexpr (OP == EW_SILU) v = silu(a[i]);
        else if constexpr (OP == EW_GELU) v = gelu(a[i]);
        else if constexpr (OP == EW_GSILU) v = silu(a[i]) * b[i];
        else if constexpr (OP == EW_GGELU) v = gelu(a[i]) * b[i];
        else if constexpr (OP == EW_ADD) v = a[i] + b[i];
        else if constexpr (OP == EW_MUL) v = a[i] * b[i];
        else v = a[i] * s;
        y[i] = v;
    }
}

template <int OP>
static int ew(kern_ctx *ctx, float *y, const float *a, const float *b, float s, size_t n)
{
    k_ew<OP><<<ew_grid(n), EW_THREADS, 0, kcu(ctx)->stream>>>(y, a, b, s, n);
    KCU_LAUNCHED();
    return KERN_OK;
}

int kcu_act(kern_ctx *ctx, float *y, const float *x, size_t n, kern_act act)
{
    return act == KERN_ACT_SILU ? ew<EW_SILU>(ctx, y, x, NULL, 0, n) : ew<EW_GELU>(ctx, y, x, NULL, 0, n);
}

int kcu_gated(kern_ctx *ctx, float *y, const float *g, const float *u, size_t n, kern_act act)
{
    return act == KERN_ACT_SILU ? ew<EW_GSILU>(ctx, y, g, u, 0, n) : ew<EW_GGELU>(ctx, y, g, u, 0, n);
}

int kcu_binary(kern_ctx *ctx, float *y, const float *a, const float *b, size_t n, int op)
{
    return op == KERN_BIN_ADD ? ew<EW_ADD>(ctx, y, a, b, 0, n) : ew<EW_MUL>(ctx, y, a, b, 0, n);
}

int kcu_scale(kern_ctx *ctx, float *y, const float *x, float s, size_t n)
{
    return ew<EW_SCALE>(ctx, y, x, NULL, s, n);
}

/* ---- KV cache: src[n][n_head_kv][hd] -> cache[n_head_kv][cap][hd] at pos0.. ---- */
template <bool F16>
__global__ void k_kv_store(void *cache, int n_head_kv, int cap, int hd, const int32_t *pos0_dev, int pos0, int n,
                           const float *__restrict__ src)
{
    if (pos0_dev) pos0 = *pos0_dev;
    size_t total = (size_t)n * n_head_kv * hd;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(e % hd);
        size_t r = e / hd;
        int h = (int)(r % n_head_kv), i = (int)(r / n_head_kv);
        int p = pos0 + i;
        if (p < 0 || p >= cap) continue; /* a bad device position must not corrupt memory */
        size_t o = ((size_t)h * cap + p) * hd + d;
        if (F16) ((uint16_t *)cache)[o] = kcu_f2h(src[e]);
        else ((float *)cache)[o] = src[e];
    }
}

int kcu_kv_store_d(kern_ctx *ctx, void *cache, const kern_kv_layout *l, const int32_t *pos0_dev, int pos0, int n,
                   const float *src)
{
    size_t total = (size_t)n * l->n_head_kv * l->head_dim;
    cudaStream_t s = kcu(ctx)->stream;
    if (l->type == KERN_TYPE_F16)
        k_kv_store<true><<<ew_grid(total), EW_THREADS, 0, s>>>(cache, l->n_head_kv, l->capacity, l->head_dim,
                                                               pos0_dev, pos0, n, src);
    else
        k_kv_store<false><<<ew_grid(total), EW_THREADS, 0, s>>>(cache, l->n_head_kv, l->capacity, l->head_dim,
                                                                pos0_dev, pos0, n, src);
    KCU_LAUNCHED();
    return KERN_OK;
}

int kcu_kv_store(kern_ctx *ctx, void *cache, const kern_kv_layout *l, int pos0, int n, const float *src)
{
    return kcu_kv_store_d(ctx, cache, l, NULL, pos0, n, src);
}

/* ---- paged KV gather: block ids[i] (all heads) -> positions i*bt.. of dst ----
 * One block per (block, head); W-byte words when every address and size is a
 * multiple of W. */
template <class W>
__global__ void k_kv_gather(uint8_t *__restrict__ dst, size_t dst_head_bytes, const uint8_t *__restrict__ pool,
                            size_t block_bytes, size_t head_bytes, int n_pool, const int32_t *__restrict__ ids)
{
    int i = blockIdx.x, h = blockIdx.y, id = ids[i];
    id = id < 0 ? 0 : id >= n_pool ? n_pool - 1 : id; /* api.c checked; never fault the GPU */
    const W *s = (const W *)(pool + (size_t)id * block_bytes + (size_t)h * head_bytes);
    W *d = (W *)(dst + (size_t)h * dst_head_bytes + (size_t)i * head_bytes);
    for (size_t e = threadIdx.x; e < head_bytes / sizeof(W); e += blockDim.x) d[e] = s[e];
}

extern "C" int kern_cuda_kv_gather(kern_ctx *ctx, void *dst, const kern_kv_layout *dst_l, const void *pool,
                                   const kern_kv_layout *block, int n_pool, const int32_t *ids, int n_ids)
{
    if (!kern_cuda_is(ctx)) return kern_fail(ctx, KERN_EINVAL, "kern_kv_gather: not a CUDA context");
    const void *ids_dev;
    int rc = kcu_stage(ctx, ids, (size_t)n_ids * sizeof *ids, &ids_dev);
    if (rc) return rc;
    size_t bb = kern_kv_bytes(block), head_bytes = bb / (size_t)block->n_head_kv;
    size_t dst_head_bytes = kern_kv_bytes(dst_l) / (size_t)dst_l->n_head_kv;
    uintptr_t a = (uintptr_t)dst | (uintptr_t)pool | (uintptr_t)bb | (uintptr_t)head_bytes | (uintptr_t)dst_head_bytes;
    dim3 grid((unsigned)n_ids, (unsigned)block->n_head_kv);
    cudaStream_t s = kcu(ctx)->stream;
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *p = (const uint8_t *)pool;
    const int32_t *id = (const int32_t *)ids_dev;
    if (a % 16 == 0) k_kv_gather<uint4><<<grid, 128, 0, s>>>(d, dst_head_bytes, p, bb, head_bytes, n_pool, id);
    else if (a % 4 == 0) k_kv_gather<uint32_t><<<grid, 128, 0, s>>>(d, dst_head_bytes, p, bb, head_bytes, n_pool, id);
    else k_kv_gather<uint8_t><<<grid, 128, 0, s>>>(d, dst_head_bytes, p, bb, head_bytes, n_pool, id);
    KCU_LAUNCHED();
    return KERN_OK;
}

/* ---- paged KV store: row i of src[n][n_head_kv][hd] -> slot slots[i] of the pool;
 * with vpool, row i of vsrc to the same slot of vpool in the same pass (K and V of a
 * step in one launch) ---- */
template <bool F16>
__global__ void k_kv_store_paged(void *pool, void *vpool, int n_head_kv, int bt, int hd, int n_pool,
                                 const int32_t *__restrict__ slots, int n, const float *__restrict__ src,
                                 const float *__restrict__ vsrc)
{
    size_t total = (size_t)n * n_head_kv * hd;
    long long n_slots = (long long)n_pool * bt;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(e % hd);
        size_t r = e / hd;
        int h = (int)(r % n_head_kv), i = (int)(r / n_head_kv);
        int slot = slots[i];
        if (slot < 0 || slot >= n_slots) continue; /* api.c checked; never write outside the pool */
        size_t o = (((size_t)(slot / bt) * n_head_kv + h) * bt + slot % bt) * hd + d;
        if (F16) ((uint16_t *)pool)[o] = kcu_f2h(src[e]);
        else ((float *)pool)[o] = src[e];
        if (!vpool) continue;
        if (F16) ((uint16_t *)vpool)[o] = kcu_f2h(vsrc[e]);
        else ((float *)vpool)[o] = vsrc[e];
    }
}

static int store_paged(kern_ctx *ctx, void *pool, void *vpool, const kern_kv_layout *block, int n_pool,
                       const int32_t *slots, int n, const float *src, const float *vsrc)
{
    const void *sd;
    int rc = kcu_stage(ctx, slots, (size_t)n * sizeof *slots, &sd); /* or its bound device copy */
    if (rc) return rc;
    size_t total = (size_t)n * block->n_head_kv * block->head_dim;
    cudaStream_t s = kcu(ctx)->stream;
    const int32_t *sl = (const int32_t *)sd;
    if (block->type == KERN_TYPE_F16)
        k_kv_store_paged<true><<<ew_grid(total), EW_THREADS, 0, s>>>(pool, vpool, block->n_head_kv, block->capacity,
                                                                     block->head_dim, n_pool, sl, n, src, vsrc);
    else
        k_kv_store_paged<false><<<ew_grid(total), EW_THREADS, 0, s>>>(pool, vpool, block->n_head_kv, block->capacity,
                                                                      block->head_dim, n_pool, sl, n, src, vsrc);
    KCU_LAUNCHED();
    return KERN_OK;
}

extern "C" int kern_cuda_kv_store_paged(kern_ctx *ctx, void *pool, const kern_kv_layout *block, int n_pool,
                                        const int32_t *slots, int n, const float *src)
{
    if (!kern_cuda_is(ctx)) return kern_fail(ctx, KERN_EINVAL, "kern_kv_store_paged: not a CUDA context");
    return store_paged(ctx, pool, NULL, block, n_pool, slots, n, src, NULL);
}

extern "C" int kern_cuda_kv_store_paged_kv(kern_ctx *ctx, void *k_pool, void *v_pool, const kern_kv_layout *block,
                                           int n_pool, const int32_t *slots, int n, const float *k_src,
                                           const float *v_src)
{
    if (!ctx) return KERN_EINVAL;
    if (!kern_cuda_is(ctx)) return kern_fail(ctx, KERN_EINVAL, "kern_cuda_kv_store_paged_kv: not a CUDA context");
    if (!k_pool || !v_pool || !slots || !k_src || !v_src || !block || kern_kv_bytes(block) == 0 || n_pool <= 0 ||
        n <= 0)
        return kern_fail(ctx, KERN_EINVAL, "kern_cuda_kv_store_paged_kv: bad arguments (NULL, layout or sizes)");
    const long long n_slots = (long long)n_pool * block->capacity;
    for (int i = 0; i < n; i++) /* the host values: current, also for a bound array */
        if (slots[i] < 0 || slots[i] >= n_slots)
            return kern_fail(ctx, KERN_EINVAL, "kern_cuda_kv_store_paged_kv: slot %d (row %d) is outside the pool's "
                             "%lld", slots[i], i, n_slots);
    return store_paged(ctx, k_pool, v_pool, block, n_pool, slots, n, k_src, v_src);
}
