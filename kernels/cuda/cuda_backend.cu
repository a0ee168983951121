/* cuda_backend.cu: the CUDA backend's table, context setup and teardown,
 * device memory, host<->device copies, the staging ring for host arrays,
 * CUDA graph capture and the kern_cuda.h entry points that only forward. */
#include "cuda_internal.h"
#include "cuda_mmq.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__global__ void k_probe(void) {}

static void cu_destroy(kern_ctx *ctx)
{
    kern_cuda *c = kcu(ctx);
    if (!c) return;
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    cudaFree(c->tile);
    cudaFree(c->xs);
    cudaFree(c->part);
    cudaFree(c->ring_dev);
    cudaFree(c->blas_ws);
    for (int i = 0; i < c->n_retired; i++) cudaFree(c->retired[i]);
    free(c->retired);
    cudaFreeHost(c->ring_host);
    if (c->blas) cublasDestroy(c->blas);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
    ctx->scratch = NULL;
}

static void *cu_alloc(kern_ctx *ctx, size_t bytes)
{
    if (kcu(ctx)->capturing) {
        kern_fail(ctx, KERN_EINVAL, "kern_alloc: not allowed while a CUDA graph is being captured");
        return NULL;
    }
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes); /* 256-byte aligned */
    if (e != cudaSuccess) {
        kern_fail(ctx, KERN_ENOMEM, "kern_alloc: cudaMalloc of %zu bytes: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cu_free(kern_ctx *ctx, void *p)
{
    (void)ctx;
    cudaFree(p); /* implicitly waits for work that may still use p */
}

static int cu_upload(kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    if (kcu(ctx)->capturing) return kern_fail(ctx, KERN_EINVAL, "kern_upload: not allowed during CUDA graph capture");
    if (!bytes) return KERN_OK;
    /* From pageable memory this returns once src has been staged, so the
     * caller may reuse src at once; stream order keeps earlier kernels safe. */
    KCU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, kcu(ctx)->stream));
    return KERN_OK;
}

static int cu_download(kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    kern_cuda *c = kcu(ctx);
    if (c->capturing) return kern_fail(ctx, KERN_EINVAL, "kern_download: not allowed during CUDA graph capture");
    if (!bytes) return KERN_OK;
    KCU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    KCU_CHECK(cudaStreamSynchronize(c->stream));
    return KERN_OK;
}

static int cu_sync(kern_ctx *ctx)
{
    kern_cuda *c = kcu(ctx);
    if (c->capturing) return kern_fail(ctx, KERN_EINVAL, "kern_sync: not allowed during CUDA graph capture");
    KCU_CHECK(cudaStreamSynchronize(c->stream));
    return KERN_OK;
}

int kcu_stage(kern_ctx *ctx, const void *host, size_t bytes, const void **dev)
{
    kern_cuda *c = kcu(ctx);
    size_t need = (bytes + 255) & ~(size_t)255;
    for (int i = 0; i < c->n_binds; i++)
        if (host == c->binds[i].host && bytes <= c->binds[i].bytes) { /* the caller keeps it current */
            *dev = c->binds[i].dev;
            return KERN_OK;
        }
    if (c->capturing)
        return kern_fail(ctx, KERN_EINVAL,
                         "host positions/ids inside a CUDA graph capture would be stale at replay: use the "
                         "kern_cuda_*_dev variants (kern_cuda.h)");
    if (need > KCU_RING_BYTES)
        return kern_fail(ctx, KERN_EINVAL, "%zu bytes of host indices exceed the %d-byte staging ring", bytes,
                         KCU_RING_BYTES);
    /* the same bytes as the last array: its device copy, ordered before what follows */
    if (c->last_valid && bytes == c->last_bytes && !memcmp(c->ring_host + c->last_off, host, bytes)) {
        *dev = c->ring_dev + c->last_off;
        return KERN_OK;
    }
    if (c->ring_off + need > KCU_RING_BYTES) {
        KCU_CHECK(cudaStreamSynchronize(c->stream)); /* every earlier slot has been read */
        c->ring_off = 0;
        c->last_valid = 0;
    }
    memcpy(c->ring_host + c->ring_off, host, bytes);
    uint8_t *d = c->ring_dev + c->ring_off;
    KCU_CHECK(cudaMemcpyAsync(d, c->ring_host + c->ring_off, bytes, cudaMemcpyHostToDevice, c->stream));
    c->last_off = c->ring_off, c->last_bytes = bytes, c->last_valid = 1;
    c->ring_off += need;
    *dev = d;
    return KERN_OK;
}

int kcu_grow(kern_ctx *ctx, void **buf, size_t *have, size_t bytes)
{
    if (bytes <= *have) return KERN_OK;
    if (kcu(ctx)->capturing)
        return kern_fail(ctx, KERN_EINVAL,
                         "a scratch buffer must grow to %zu bytes during CUDA graph capture: run the "
                         "captured sequence once before capturing it", bytes);
    kern_cuda *c = kcu(ctx);
    if (*buf && c->graphs_made) {
        void **r = (void **)realloc(c->retired, (c->n_retired + 1) * sizeof *r);
        if (!r) return kern_fail(ctx, KERN_ENOMEM, "out of host memory");
        c->retired = r;
        c->retired[c->n_retired++] = *buf;
    } else {
        cudaFree(*buf);
    }
    *buf = NULL;
    *have = 0;
    KCU_CHECK(cudaMalloc(buf, bytes));
    *have = bytes;
    return KERN_OK;
}

static int cu_get_rows(kern_ctx *ctx, float *dst, const void *table, int t, int dim, const int32_t *ids,
                       int n_ids)
{
    /* api.c has range-checked ids; the device clamp is only a backstop */
    const void *d;
    int rc = kcu_stage(ctx, ids, (size_t)n_ids * sizeof *ids, &d);
    return rc ? rc : kcu_get_rows_d(ctx, dst, table, t, 0x7fffffff, dim, (const int32_t *)d, n_ids);
}

static const kern_backend_ops cuda_ops = {
    cu_destroy, cu_alloc,     cu_free,  cu_upload,   cu_download, cu_sync,
    kcu_matmul, cu_get_rows,  kcu_rmsnorm, kcu_rope, kcu_softmax, kcu_act,
    kcu_gated,  kcu_binary,   kcu_scale, kcu_kv_store, kcu_attention,
};

extern "C" int kern_cuda_init(kern_ctx *ctx, int device)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return kern_fail(ctx, KERN_EBACKEND, "kern_ctx_create: no CUDA device (%s)",
                         e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports 0 devices");
    if (device < 0 || device >= n)
        return kern_fail(ctx, KERN_EBACKEND, "kern_ctx_create: CUDA device %d does not exist (%d present)",
                         device, n);
    kern_cuda *c = (kern_cuda *)calloc(1, sizeof *c);
    if (!c) return kern_fail(ctx, KERN_ENOMEM, "kern_ctx_create: out of memory");
    c->device = device;
    ctx->scratch = c;
    ctx->ops = &cuda_ops;
    ctx->n_threads = 1;
    int rc = KERN_EBACKEND;
    cudaDeviceProp prop;
    cublasStatus_t bs;
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaMallocHost((void **)&c->ring_host, KCU_RING_BYTES)) != cudaSuccess ||
        (e = cudaMalloc((void **)&c->ring_dev, KCU_RING_BYTES)) != cudaSuccess) {
        kern_fail(ctx, KERN_EBACKEND, "kern_ctx_create: CUDA device %d: %s", device, cudaGetErrorString(e));
        goto fail;
    }
    c->n_sm = prop.multiProcessorCount;
    {
        /* fails when the binary holds no code this GPU can run (built for
         * sm_90 + compute_90 PTX: Hopper and newer) */
        cudaFuncAttributes fa;
        if ((e = cudaFuncGetAttributes(&fa, k_probe)) != cudaSuccess) {
            kern_fail(ctx, KERN_ENOTSUP, "kern_ctx_create: CUDA device %d (%s, compute capability %d.%d) cannot run "
                      "these kernels (%s); set COMMONS_CUDA_ARCHITECTURES to include it and rebuild", device,
                      prop.name, prop.major, prop.minor, cudaGetErrorString(e));
            rc = KERN_ENOTSUP;
            goto fail;
        }
    }
    kcu_mmq_prepare(ctx);
    if ((e = cudaMalloc(&c->blas_ws, KCU_BLAS_WS)) != cudaSuccess) {
        kern_fail(ctx, KERN_EBACKEND, "kern_ctx_create: cuBLAS workspace: %s", cudaGetErrorString(e));
        goto fail;
    }
    if ((bs = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS ||
        (bs = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS ||
        /* a fixed workspace: cuBLAS must not allocate inside a graph capture */
        (bs = cublasSetWorkspace(c->blas, c->blas_ws, KCU_BLAS_WS)) != CUBLAS_STATUS_SUCCESS) {
        kern_fail(ctx, KERN_EBACKEND, "kern_ctx_create: cuBLAS: %s", cublasGetStatusString(bs));
        goto fail;
    }
    return KERN_OK;
fail:
    cu_destroy(ctx);
    ctx->ops = NULL;
    return rc;
}

extern "C" int kern_cuda_is(const kern_ctx *ctx) { return ctx && ctx->backend == KERN_BACKEND_CUDA && ctx->scratch; }

extern "C" void *kern_cuda_stream(kern_ctx *ctx) { return kern_cuda_is(ctx) ? (void *)kcu(ctx)->stream : NULL; }

#define NEED_CUDA()                                                                       \
    do {                                                                                  \
        if (!ctx) return KERN_EINVAL;                                                     \
        if (!kern_cuda_is(ctx)) return kern_fail(ctx, KERN_EINVAL, "%s: not a CUDA context", __func__); \
        ctx->err[0] = 0;                                                                  \
    } while (0)

extern "C" int kern_cuda_describe(kern_ctx *ctx, char *buf, size_t len)
{
    NEED_CUDA();
    cudaDeviceProp p;
    KCU_CHECK(cudaGetDeviceProperties(&p, kcu(ctx)->device));
    snprintf(buf, len, "%s, %.0f GiB, cc %d.%d, %d SMs, device %d", p.name, p.totalGlobalMem / 1073741824.0,
             p.major, p.minor, p.multiProcessorCount, kcu(ctx)->device);
    return KERN_OK;
}

extern "C" void *kern_cuda_host_alloc(kern_ctx *ctx, size_t bytes)
{
    if (!kern_cuda_is(ctx)) {
        kern_fail(ctx, KERN_EINVAL, "kern_cuda_host_alloc: not a CUDA context");
        return NULL;
    }
    if (kcu(ctx)->capturing) {
        kern_fail(ctx, KERN_EINVAL, "kern_host_alloc: not allowed while a CUDA graph is being captured");
        return NULL;
    }
    void *p = NULL;
    cudaError_t e = cudaMallocHost(&p, bytes);
    if (e != cudaSuccess) {
        kern_fail(ctx, KERN_ENOMEM, "kern_host_alloc: cudaMallocHost of %zu bytes: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

extern "C" void kern_cuda_host_free(kern_ctx *ctx, void *p)
{
    (void)ctx;
    cudaFreeHost(p); /* waits for copies that may still use p */
}

extern "C" int kern_cuda_bind(kern_ctx *ctx, const void *host, size_t bytes, const void *dev)
{
    NEED_CUDA();
    kern_cuda *c = kcu(ctx);
    if (!host || !dev || !bytes) return kern_fail(ctx, KERN_EINVAL, "kern_cuda_bind: NULL pointer or 0 bytes");
    if (c->n_binds == KCU_MAX_BINDS)
        return kern_fail(ctx, KERN_EINVAL, "kern_cuda_bind: %d bindings already (the most)", KCU_MAX_BINDS);
    c->binds[c->n_binds].host = host, c->binds[c->n_binds].dev = dev, c->binds[c->n_binds].bytes = bytes;
    c->n_binds++;
    return KERN_OK;
}

extern "C" void kern_cuda_unbind_all(kern_ctx *ctx)
{
    if (kern_cuda_is(ctx)) kcu(ctx)->n_binds = 0;
}

extern "C" int kern_cuda_copy(kern_ctx *ctx, void *dst_dev, const void *src_dev, size_t bytes)
{
    NEED_CUDA();
    if (!dst_dev || !src_dev) return kern_fail(ctx, KERN_EINVAL, "kern_cuda_copy: NULL pointer");
    if (bytes) KCU_CHECK(cudaMemcpyAsync(dst_dev, src_dev, bytes, cudaMemcpyDeviceToDevice, kcu(ctx)->stream));
    return KERN_OK;
}

/* ---- graphs ---- */
struct kern_cuda_graph {
    cudaGraphExec_t exec;
};

extern "C" int kern_cuda_graph_begin(kern_ctx *ctx)
{
    NEED_CUDA();
    kern_cuda *c = kcu(ctx);
    if (c->capturing) return kern_fail(ctx, KERN_EINVAL, "kern_cuda_graph_begin: already capturing");
    /* thread-local mode: other threads' CUDA calls do not break this capture */
    KCU_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    c->capturing = 1;
    return KERN_OK;
}

extern "C" int kern_cuda_graph_end(kern_ctx *ctx, kern_cuda_graph **graph)
{
    NEED_CUDA();
    kern_cuda *c = kcu(ctx);
    if (!graph) return kern_fail(ctx, KERN_EINVAL, "kern_cuda_graph_end: NULL output");
    if (!c->capturing) return kern_fail(ctx, KERN_EINVAL, "kern_cuda_graph_end: no capture in progress");
    c->capturing = 0;
    cudaGraph_t g = NULL;
    KCU_CHECK(cudaStreamEndCapture(c->stream, &g)); /* fails if an operation broke the capture */
    cudaGraphExec_t exec = NULL;
    cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    KCU_CHECK(e);
    kern_cuda_graph *out = (kern_cuda_graph *)malloc(sizeof *out);
    if (!out) {
        cudaGraphExecDestroy(exec);
        return kern_fail(ctx, KERN_ENOMEM, "kern_cuda_graph_end: out of memory");
    }
    out->exec = exec;
    c->graphs_made = 1;
    kern_cuda_graph_free(*graph);
    *graph = out;
    return KERN_OK;
}

extern "C" int kern_cuda_graph_launch(kern_ctx *ctx, kern_cuda_graph *graph)
{
    NEED_CUDA();
    if (!graph) return kern_fail(ctx, KERN_EINVAL, "kern_cuda_graph_launch: NULL graph");
    KCU_CHECK(cudaGraphLaunch(graph->exec, kcu(ctx)->stream));
    return KERN_OK;
}

extern "C" void kern_cuda_graph_free(kern_cuda_graph *graph)
{
    if (!graph) return;
    cudaGraphExecDestroy(graph->exec);
    free(graph);
}

/* ---- device-pointer variants: same checks as api.c where they apply ---- */
extern "C" int kern_cuda_rope_dev(kern_ctx *ctx, float *x, int n_tok, int n_head, int head_dim,
                                  const int32_t *pos_dev, const kern_rope_params *p)
{
    NEED_CUDA();
    if (!x || !pos_dev || !p || n_tok <= 0 || n_head <= 0 || head_dim <= 0 ||
        (p->mode != KERN_ROPE_NORMAL && p->mode != KERN_ROPE_NEOX) || p->n_rot <= 0 || p->n_rot % 2 ||
        p->n_rot > head_dim || !(p->freq_base > 0) || !(p->freq_scale > 0))
        return kern_fail(ctx, KERN_EINVAL, "kern_cuda_rope_dev: bad arguments (NULL, sizes, mode or n_rot)");
    return kcu_rope_d(ctx, x, n_tok, n_head, head_dim, pos_dev, p);
}

extern "C" int kern_cuda_get_rows_dev(kern_ctx *ctx, float *dst, const void *table, int t, int n_rows, int dim,
                                      const int32_t *ids_dev, int n_ids)
{
    NEED_CUDA();
    if (!dst || !table || !ids_dev || n_rows <= 0 || n_ids <= 0 || !kern_row_bytes(t, dim))
        return kern_fail(ctx, KERN_EINVAL, "kern_cuda_get_rows_dev: bad arguments (NULL, sizes or type %d/dim %d)",
                         t, dim);
    return kcu_get_rows_d(ctx, dst, table, t, n_rows, dim, ids_dev, n_ids);
}

static int kv_ok(const kern_kv_layout *l)
{
    return l && kern_kv_bytes(l) > 0;
}

extern "C" int kern_cuda_kv_store_dev(kern_ctx *ctx, void *cache, const kern_kv_layout *l,
                                      const int32_t *pos0_dev, int n, const float *src)
{
    NEED_CUDA();
    if (!cache || !src || !pos0_dev || !kv_ok(l) || n <= 0 || n > l->capacity)
        return kern_fail(ctx, KERN_EINVAL, "kern_cuda_kv_store_dev: bad arguments (NULL, layout or n)");
    return kcu_kv_store_d(ctx, cache, l, pos0_dev, 0, n, src);
}

extern "C" int kern_cuda_attention_dev(kern_ctx *ctx, float *out, const float *q, const void *k_cache,
                                       const void *v_cache, const kern_kv_layout *l, const kern_attn_params *p,
                                       const int32_t *pos0_dev)
{
    NEED_CUDA();
    if (!out || !q || !k_cache || !v_cache || !p || !pos0_dev || !kv_ok(l) || p->n_q <= 0 || p->n_head <= 0 ||
        p->n_head % l->n_head_kv || p->window < 0 || p->n_q > l->capacity)
        return kern_fail(ctx, KERN_EINVAL, "kern_cuda_attention_dev: bad arguments (NULL, layout or heads)");
    return kcu_attention_d(ctx, out, q, k_cache, v_cache, l, p, pos0_dev);
}
