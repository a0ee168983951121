/* cpu_backend.c: the CPU backend's table, memory (host malloc), scratch,
 * embedding lookup and matmul. Matmul quantizes the activations once per
 * call, then splits the weight rows over the pool; for prompts (n > 1) each
 * task walks tiles of activation rows against a few weight rows so each
 * weight block is decoded once per tile and stays in cache. */
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

/* ---- matmul ---- */
#define TILE_X 8 /* activation rows per tile (n > 1) */

typedef struct {
    const kern_cpu_fns *f;
    float *y;
    const float *x;
    const uint8_t *w, *xq;
    int wt, n, m, k;
    size_t wb, xb; /* bytes per weight row, per activation row */
} mm_job;

static void quant_task(void *a, int64_t b, int64_t e, int tid)
{
    (void)tid;
    mm_job *j = a;
    for (int64_t i = b; i < e; i++)
        kern_act_quantize(j->f, j->wt, j->x + i * j->k, (uint8_t *)j->xq + i * j->xb, j->k);
}

static void mm_task(void *a, int64_t r0, int64_t r1, int tid)
{
    (void)tid;
    mm_job *j = a;
    kern_dot_fn dot = j->f->dot[j->wt];
    kern_dot4_fn dot4 = j->f->dot4[j->wt];
    kern_dot_nr_fn dot_nr = j->f->dot_nr[j->wt];
    for (int i0 = 0; i0 < j->n; i0 += TILE_X) {
        int nt = j->n - i0 < TILE_X ? j->n - i0 : TILE_X;
        const uint8_t *xt = j->xq + (size_t)i0 * j->xb;
        int64_t r = r0;
        if (dot4 && !(dot_nr && nt > 1)) {
            for (; r + 4 <= r1; r += 4)
                for (int i = 0; i < nt; i++)
                    dot4(j->k, j->w + (size_t)r * j->wb, j->wb, xt + (size_t)i * j->xb,
                         j->y + (size_t)(i0 + i) * j->m + r);
        }
        for (; r < r1; r++) {
            const uint8_t *wr = j->w + (size_t)r * j->wb;
            float *yr = j->y + (size_t)i0 * j->m + r;
            if (dot_nr && nt > 1) {
                dot_nr(j->k, wr, xt, j->xb, nt, yr, (size_t)j->m);
            } else {
                for (int i = 0; i < nt; i++) yr[(size_t)i * j->m] = dot(j->k, wr, xt + (size_t)i * j->xb);
            }
        }
    }
}

int kern_cpu_matmul(kern_ctx *ctx, float *y, const float *x, const void *w, int wt, int n, int m, int k)
{
    mm_job j = {kern_cpu(), y, x, w, NULL, wt, n, m, k, kern_row_bytes(wt, k), kern_act_row_bytes(wt, k)};
    if (kern_act_type(wt) == KERN_TYPE_F32) {
        j.xq = (const uint8_t *)x; /* float weights read the activations as they are */
    } else {
        void *buf = kern_scratch(ctx, (size_t)n * j.xb);
        if (!buf) return KERN_ENOMEM;
        j.xq = buf;
        kern_pool_run(ctx->pool, n, 1, quant_task, &j);
    }
    /* Enough pieces per thread to balance, few enough to keep dispatch cheap. */
    int64_t grain = m / ((int64_t)ctx->n_threads * 8) & ~(int64_t)3; /* whole 4-row groups */
    if (grain < 4) grain = 4;
    kern_pool_run(ctx->pool, m, grain, mm_task, &j);
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
