/* cpu_backend.c: the CPU backend's table, host memory, scratch buffers and
 * embedding lookup. */
#include "kern_cpu.h"

#include <stdlib.h>
#include <string.h>

static void *cpu_alloc(kern_ctx *ctx, size_t bytes)
{
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!p) kern_fail(ctx, KERN_ENOMEM, "kern_alloc: out of host memory for %zu bytes", bytes);
    return p;
}

static void cpu_free(kern_ctx *ctx, void *p) { (void)ctx; free(p); }

static int cpu_copy(kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    (void)ctx;
    memmove(dst, src, bytes);
    return KERN_OK;
}

static int cpu_sync(kern_ctx *ctx) { (void)ctx; return KERN_OK; }

static void cpu_destroy(kern_ctx *ctx)
{
    kern_pool_destroy(ctx->pool);
    free(ctx->scratch);
}

void *kern_scratch(kern_ctx *ctx, size_t bytes)
{
    if (bytes <= ctx->scratch_bytes) return ctx->scratch;
    free(ctx->scratch);
    ctx->scratch_bytes = 0;
    ctx->scratch = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!ctx->scratch) {
        kern_fail(ctx, KERN_ENOMEM, "out of memory for %zu bytes of scratch", bytes);
        return NULL;
    }
    ctx->scratch_bytes = bytes;
    return ctx->scratch;
}

/* ---- embedding lookup ---- */
typedef struct {
    float *dst;
    const uint8_t *table;
    int t, dim;
    size_t rb;
    const int32_t *ids;
} rows_job;

static void rows_task(void *a, int64_t b, int64_t e, int tid)
{
    (void)tid;
    rows_job *j = a;
    for (int64_t i = b; i < e; i++)
        kern_dequant_row(j->t, j->table + (size_t)j->ids[i] * j->rb, j->dst + i * j->dim, j->dim);
}

static int cpu_get_rows(kern_ctx *ctx, float *dst, const void *table, int t, int dim, const int32_t *ids,
                        int n_ids)
{
    rows_job j = {dst, table, t, dim, kern_row_bytes(t, dim), ids};
    kern_pool_run(ctx->pool, n_ids, 4, rows_task, &j);
    return KERN_OK;
}

static const kern_backend_ops cpu_ops = {
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .matmul = kern_cpu_matmul,
    .get_rows = cpu_get_rows,
    .rmsnorm = kern_cpu_rmsnorm,
    .rope = kern_cpu_rope,
    .softmax = kern_cpu_softmax,
    .act = kern_cpu_act,
    .gated = kern_cpu_gated,
    .binary = kern_cpu_binary,
    .scale = kern_cpu_scale,
    .kv_store = kern_cpu_kv_store,
    .attention = kern_cpu_attention,
};

int kern_cpu_init(kern_ctx *ctx)
{
    ctx->ops = &cpu_ops;
    int rc = kern_pool_create(ctx->n_threads, &ctx->pool);
    if (rc) return kern_fail(ctx, rc, "kern_ctx_create: cannot start %d CPU threads", ctx->n_threads);
    return KERN_OK;
}
