/* api.c: the backend-independent half of kernels.h. Creates contexts,
 * validates every argument once (so no backend has to) and dispatches to
 * the context's backend table. */
#include "kern_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef KERN_HAVE_CUDA
#include "kern_cuda.h"
#endif

int kern_fail(kern_ctx *ctx, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
    return status;
}

int kern_ctx_create(const kern_config *cfg, kern_ctx **out, char *err, size_t errlen)
{
    if (out) *out = NULL;
    if (!cfg || !out) {
        if (err) snprintf(err, errlen, "kern_ctx_create: NULL config or output pointer");
        return KERN_EINVAL;
    }
#ifdef KERN_HAVE_CUDA
    if (cfg->backend != KERN_BACKEND_CPU && cfg->backend != KERN_BACKEND_CUDA) {
#else
    if (cfg->backend != KERN_BACKEND_CPU) {
#endif
        if (err)
            snprintf(err, errlen, "kern_ctx_create: backend %d is not built in (%s)", (int)cfg->backend,
                     cfg->backend == KERN_BACKEND_CUDA ? "this build has no CUDA backend: it was configured "
                     "without nvcc or with COMMONS_CUDA=OFF" : "unknown backend");
        return KERN_ENOTSUP;
    }
    kern_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        if (err) snprintf(err, errlen, "kern_ctx_create: out of memory");
        return KERN_ENOMEM;
    }
    ctx->backend = cfg->backend;
    ctx->n_threads = cfg->n_threads > 0 ? cfg->n_threads : 1;
#ifdef KERN_HAVE_CUDA
    int rc = cfg->backend == KERN_BACKEND_CUDA ? kern_cuda_init(ctx, cfg->device) : kern_cpu_init(ctx);
#else
    int rc = kern_cpu_init(ctx);
#endif
    if (rc) {
        if (err) snprintf(err, errlen, "%s", ctx->err);
        free(ctx);
        return rc;
    }
    *out = ctx;
    return KERN_OK;
}

void kern_ctx_destroy(kern_ctx *ctx)
{
    if (!ctx) return;
    ctx->ops->destroy(ctx);
    free(ctx);
}

const char *kern_ctx_error(const kern_ctx *ctx) { return ctx ? ctx->err : "NULL kern_ctx"; }
kern_backend kern_ctx_backend(const kern_ctx *ctx) { return ctx->backend; }
int kern_ctx_threads(const kern_ctx *ctx) { return ctx->n_threads; }
int kern_ctx_host_memory(const kern_ctx *ctx) { return ctx->backend == KERN_BACKEND_CPU; }

void kern_ctx_describe(kern_ctx *ctx, char *buf, size_t len)
{
    if (len == 0)
        return;
#ifdef KERN_HAVE_CUDA
    if (ctx->backend == KERN_BACKEND_CUDA) {
        char desc[160] = "?";
        kern_cuda_describe(ctx, desc, sizeof desc);
        snprintf(buf, len, "CUDA: %s", desc);
        return;
    }
#endif
    snprintf(buf, len, "CPU, %d threads (%s)", ctx->n_threads, kern_isa_name(kern_get_isa()));
}

#define NEED(cond, ...) \
    do { if (!(cond)) return kern_fail(ctx, KERN_EINVAL, __VA_ARGS__); } while (0)
#define CTX() \
    do { if (!ctx) return KERN_EINVAL; ctx->err[0] = 0; } while (0)

int kern_sync(kern_ctx *ctx) { CTX(); return ctx->ops->sync(ctx); }

void *kern_alloc(kern_ctx *ctx, size_t bytes)
{
    if (!ctx) return NULL;
    if (bytes == 0) { kern_fail(ctx, KERN_EINVAL, "kern_alloc: 0 bytes requested"); return NULL; }
    return ctx->ops->alloc(ctx, bytes);
}

void kern_free(kern_ctx *ctx, void *p)
{
    if (ctx && p) ctx->ops->free(ctx, p);
}

int kern_upload(kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    CTX();
    NEED(dst && src, "kern_upload: NULL pointer");
    return ctx->ops->upload(ctx, dst, src, bytes);
}

int kern_download(kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    CTX();
    NEED(dst && src, "kern_download: NULL pointer");
    return ctx->ops->download(ctx, dst, src, bytes);
}

void *kern_host_alloc(kern_ctx *ctx, size_t bytes)
{
    if (!ctx) return NULL;
    ctx->err[0] = 0;
    if (bytes == 0) { kern_fail(ctx, KERN_EINVAL, "kern_host_alloc: 0 bytes requested"); return NULL; }
#ifdef KERN_HAVE_CUDA
    if (ctx->backend == KERN_BACKEND_CUDA) return kern_cuda_host_alloc(ctx, bytes);
#endif
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!p) kern_fail(ctx, KERN_ENOMEM, "kern_host_alloc: out of host memory for %zu bytes", bytes);
    return p;
}

void kern_host_free(kern_ctx *ctx, void *p)
{
    if (!ctx || !p) return;
#ifdef KERN_HAVE_CUDA
    if (ctx->backend == KERN_BACKEND_CUDA) { kern_cuda_host_free(ctx, p); return; }
#endif
    free(p);
}

/* The two operations below are plain copies on host memory, so api.c does
 * them itself for host backends (the backend table, kern_internal.h, has no
 * entry for them) and hands them to the CUDA backend otherwise. */
int kern_copy(kern_ctx *ctx, void *dst, const void *src, size_t bytes)
{
    CTX();
    NEED(dst && src, "kern_copy: NULL pointer");
    if (!bytes) return KERN_OK;
    NEED((const char *)dst + bytes <= (const char *)src || (const char *)src + bytes <= (const char *)dst,
         "kern_copy: the %zu-byte ranges overlap", bytes);
#ifdef KERN_HAVE_CUDA
    if (ctx->backend == KERN_BACKEND_CUDA) return kern_cuda_copy(ctx, dst, src, bytes);
#endif
    memcpy(dst, src, bytes);
    return KERN_OK;
}

static int check_kv(kern_ctx *ctx, const char *fn, const kern_kv_layout *l);

int kern_kv_gather(kern_ctx *ctx, void *dst, const kern_kv_layout *dst_l, const void *pool,
                   const kern_kv_layout *block, int n_pool, const int32_t *ids, int n_ids)
{
    CTX();
    int rc = check_kv(ctx, "kern_kv_gather", dst_l);
    if (!rc) rc = check_kv(ctx, "kern_kv_gather", block);
    if (rc) return rc;
    NEED(dst && pool && ids, "kern_kv_gather: NULL pointer");
    NEED(dst_l->type == block->type && dst_l->n_head_kv == block->n_head_kv && dst_l->head_dim == block->head_dim,
         "kern_kv_gather: destination (%s, %d heads of %d) and blocks (%s, %d heads of %d) differ",
         kern_type_name(dst_l->type), dst_l->n_head_kv, dst_l->head_dim, kern_type_name(block->type),
         block->n_head_kv, block->head_dim);
    NEED(n_pool > 0 && n_ids > 0, "kern_kv_gather: n_pool=%d n_ids=%d must be positive", n_pool, n_ids);
    NEED((int64_t)n_ids * block->capacity <= dst_l->capacity,
         "kern_kv_gather: %d blocks of %d positions do not fit the destination's capacity %d", n_ids,
         block->capacity, dst_l->capacity);
    for (int i = 0; i < n_ids; i++)
        NEED(ids[i] >= 0 && ids[i] < n_pool, "kern_kv_gather: block id %d (index %d) is outside the pool [0, %d)",
             ids[i], i, n_pool);
#ifdef KERN_HAVE_CUDA
    if (ctx->backend == KERN_BACKEND_CUDA)
        return kern_cuda_kv_gather(ctx, dst, dst_l, pool, block, n_pool, ids, n_ids);
#endif
    const size_t bb = kern_kv_bytes(block), HKV = (size_t)block->n_head_kv;
    const size_t head_bytes = bb / HKV, row = head_bytes / (size_t)block->capacity;
    for (size_t h = 0; h < HKV; h++)
        for (int i = 0; i < n_ids; i++)
            memcpy((uint8_t *)dst + (h * (size_t)dst_l->capacity + (size_t)i * block->capacity) * row,
                   (const uint8_t *)pool + (size_t)ids[i] * bb + h * head_bytes, head_bytes);
    return KERN_OK;
}

/* The internal repacked type: CPU backend only, whole 4-row groups and
 * 8-block pieces (kernels.h, KERN_TYPE_Q4_0_R4). */
static int check_repacked(kern_ctx *ctx, const char *fn, int m, int64_t k)
{
    NEED(ctx->backend == KERN_BACKEND_CPU, "%s: weight type q4_0_r4 (repacked) is for the CPU backend only", fn);
    NEED(m % 4 == 0 && k > 0 && k % 256 == 0,
         "%s: q4_0_r4 (repacked) weight with m=%d k=%lld: expected m a multiple of 4 and k of 256", fn, m,
         (long long)k);
    return KERN_OK;
}

int kern_repack_type(kern_ctx *ctx, int t, int64_t m, int64_t k)
{
    const char *env = getenv("COMMONS_KERN_REPACK");
    if (!ctx || t != KERN_TYPE_Q4_0 || !kern_ctx_host_memory(ctx) || !kern_cpu()->dot4_r4 || m <= 0 ||
        m % 4 || m > INT_MAX || k <= 0 || k % 256 || k > INT_MAX || (env && strcmp(env, "0") == 0))
        return t;
    return KERN_TYPE_Q4_0_R4;
}

int kern_repack(kern_ctx *ctx, void *dst, const void *src, int t, int64_t m, int64_t k)
{
    CTX();
    NEED(dst && src, "kern_repack: NULL pointer");
    NEED(((uintptr_t)dst & 63) == 0, "kern_repack: dst %p is not 64-byte aligned", dst);
    NEED(kern_repack_type(ctx, t, m, k) == KERN_TYPE_Q4_0_R4,
         "kern_repack: nothing to repack for type %s, m=%lld, k=%lld on this context (kern_repack_type)",
         kern_type_name(t), (long long)m, (long long)k);
    kern_repack_q4_0_r4(dst, src, m, k);
    return KERN_OK;
}

static int check_type_k(kern_ctx *ctx, const char *fn, int t, int64_t k)
{
    if (t == KERN_TYPE_Q4_0_R4) return KERN_OK; /* check_repacked, with m */
    NEED(kern_type_supported(t), "%s: unsupported tensor type id %d (supported: f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q4_K q5_K q6_K)", fn, t);
    NEED(k > 0 && k % (int64_t)kern_type_block_elems(t) == 0,
         "%s: row length %lld is not a positive multiple of %s's block of %zu elements", fn,
         (long long)k, kern_type_name(t), kern_type_block_elems(t));
    return KERN_OK;
}

int kern_matmul(kern_ctx *ctx, float *y, const float *x, const void *w, int wt, int n, int m, int k)
{
    CTX();
    NEED(y && x && w, "kern_matmul: NULL pointer (y=%p x=%p w=%p)", (void *)y, (const void *)x, w);
    NEED(n > 0 && m > 0, "kern_matmul: n=%d m=%d must be positive", n, m);
    int rc = check_type_k(ctx, "kern_matmul", wt, k);
    if (!rc && wt == KERN_TYPE_Q4_0_R4) rc = check_repacked(ctx, "kern_matmul", m, k);
    kern_matmul_op op = {y, w, wt, m};
    return rc ? rc : ctx->ops->matmul(ctx, x, n, k, &op, 1);
}

int kern_matmul_multi(kern_ctx *ctx, const float *x, int n, int k, const kern_matmul_op *ops, int n_ops)
{
    CTX();
    NEED(x && ops, "kern_matmul_multi: NULL pointer");
    NEED(n_ops >= 1 && n_ops <= KERN_MATMUL_MAX_OPS, "kern_matmul_multi: %d weights, expected 1..%d", n_ops,
         KERN_MATMUL_MAX_OPS);
    NEED(n > 0, "kern_matmul_multi: n=%d must be positive", n);
    for (int o = 0; o < n_ops; o++) {
        NEED(ops[o].y && ops[o].w, "kern_matmul_multi: weight %d: NULL pointer", o);
        NEED(ops[o].m > 0, "kern_matmul_multi: weight %d: m=%d must be positive", o, ops[o].m);
        int rc = check_type_k(ctx, "kern_matmul_multi", ops[o].wt, k);
        if (!rc && ops[o].wt == KERN_TYPE_Q4_0_R4) rc = check_repacked(ctx, "kern_matmul_multi", ops[o].m, k);
        if (rc) return rc;
    }
    return ctx->ops->matmul(ctx, x, n, k, ops, n_ops);
}

int kern_get_rows(kern_ctx *ctx, float *dst, const void *table, int t, int n_rows, int dim,
                  const int32_t *ids, int n_ids)
{
    CTX();
    NEED(dst && table && ids, "kern_get_rows: NULL pointer");
    NEED(n_rows > 0 && n_ids > 0, "kern_get_rows: n_rows=%d n_ids=%d must be positive", n_rows, n_ids);
    int rc = check_type_k(ctx, "kern_get_rows", t, dim);
    if (rc) return rc;
    for (int i = 0; i < n_ids; i++)
        NEED(ids[i] >= 0 && ids[i] < n_rows, "kern_get_rows: id %d (index %d) is outside the table's %d rows",
             ids[i], i, n_rows);
    return ctx->ops->get_rows(ctx, dst, table, t, dim, ids, n_ids);
}

int kern_rmsnorm(kern_ctx *ctx, float *y, const float *x, const float *w, int n, int dim, float eps)
{
    CTX();
    NEED(y && x, "kern_rmsnorm: NULL pointer");
    NEED(n > 0 && dim > 0, "kern_rmsnorm: n=%d dim=%d must be positive", n, dim);
    NEED(eps >= 0, "kern_rmsnorm: eps %g is negative", (double)eps);
    return ctx->ops->rmsnorm(ctx, y, x, w, n, dim, eps);
}

int kern_rope(kern_ctx *ctx, float *x, int n_tok, int n_head, int head_dim, const int32_t *pos,
              const kern_rope_params *p)
{
    CTX();
    NEED(x && pos && p, "kern_rope: NULL pointer");
    NEED(n_tok > 0 && n_head > 0 && head_dim > 0, "kern_rope: n_tok=%d n_head=%d head_dim=%d must be positive",
         n_tok, n_head, head_dim);
    NEED(p->mode == KERN_ROPE_NORMAL || p->mode == KERN_ROPE_NEOX, "kern_rope: unknown mode %d", (int)p->mode);
    NEED(p->n_rot > 0 && p->n_rot % 2 == 0 && p->n_rot <= head_dim,
         "kern_rope: n_rot %d must be even, positive and <= head_dim %d", p->n_rot, head_dim);
    NEED(p->freq_base > 0 && p->freq_scale > 0, "kern_rope: freq_base %g and freq_scale %g must be positive",
         (double)p->freq_base, (double)p->freq_scale);
    return ctx->ops->rope(ctx, x, n_tok, n_head, head_dim, pos, p);
}

int kern_softmax(kern_ctx *ctx, float *x, int n, int dim)
{
    CTX();
    NEED(x, "kern_softmax: NULL pointer");
    NEED(n > 0 && dim > 0, "kern_softmax: n=%d dim=%d must be positive", n, dim);
    return ctx->ops->softmax(ctx, x, n, dim);
}

int kern_act_apply(kern_ctx *ctx, float *y, const float *x, size_t n, kern_act act)
{
    CTX();
    NEED(y && x, "kern_act_apply: NULL pointer");
    NEED(act == KERN_ACT_SILU || act == KERN_ACT_GELU, "kern_act_apply: unknown activation %d", (int)act);
    return n ? ctx->ops->act(ctx, y, x, n, act) : KERN_OK;
}

int kern_gated(kern_ctx *ctx, float *y, const float *g, const float *u, size_t n, kern_act act)
{
    CTX();
    NEED(y && g && u, "kern_gated: NULL pointer");
    NEED(act == KERN_ACT_SILU || act == KERN_ACT_GELU, "kern_gated: unknown activation %d", (int)act);
    return n ? ctx->ops->gated(ctx, y, g, u, n, act) : KERN_OK;
}

int kern_add(kern_ctx *ctx, float *y, const float *a, const float *b, size_t n)
{
    CTX();
    NEED(y && a && b, "kern_add: NULL pointer");
    return n ? ctx->ops->binary(ctx, y, a, b, n, KERN_BIN_ADD) : KERN_OK;
}

int kern_mul(kern_ctx *ctx, float *y, const float *a, const float *b, size_t n)
{
    CTX();
    NEED(y && a && b, "kern_mul: NULL pointer");
    return n ? ctx->ops->binary(ctx, y, a, b, n, KERN_BIN_MUL) : KERN_OK;
}

int kern_scale(kern_ctx *ctx, float *y, const float *x, float s, size_t n)
{
    CTX();
    NEED(y && x, "kern_scale: NULL pointer");
    return n ? ctx->ops->scale(ctx, y, x, s, n) : KERN_OK;
}

static int check_kv(kern_ctx *ctx, const char *fn, const kern_kv_layout *l)
{
    NEED(l, "%s: NULL KV layout", fn);
    NEED(l->type == KERN_TYPE_F32 || l->type == KERN_TYPE_F16, "%s: KV cache type %s (%d) must be f32 or f16",
         fn, kern_type_name(l->type), l->type);
    NEED(l->n_head_kv > 0 && l->head_dim > 0 && l->capacity > 0,
         "%s: KV layout n_head_kv=%d head_dim=%d capacity=%d must be positive", fn, l->n_head_kv,
         l->head_dim, l->capacity);
    return KERN_OK;
}

size_t kern_kv_bytes(const kern_kv_layout *l)
{
    if (!l || (l->type != KERN_TYPE_F32 && l->type != KERN_TYPE_F16) || l->n_head_kv <= 0 ||
        l->head_dim <= 0 || l->capacity <= 0)
        return 0;
    return (size_t)l->n_head_kv * (size_t)l->capacity * (size_t)l->head_dim * (l->type == KERN_TYPE_F32 ? 4 : 2);
}

int kern_kv_store(kern_ctx *ctx, void *cache, const kern_kv_layout *l, int pos0, int n, const float *src)
{
    CTX();
    int rc = check_kv(ctx, "kern_kv_store", l);
    if (rc) return rc;
    NEED(cache && src, "kern_kv_store: NULL pointer");
    NEED(pos0 >= 0 && n > 0 && (int64_t)pos0 + n <= l->capacity,
         "kern_kv_store: positions %d..%lld do not fit the cache capacity %d", pos0, (long long)pos0 + n - 1,
         l->capacity);
    return ctx->ops->kv_store(ctx, cache, l, pos0, n, src);
}

int kern_attention(kern_ctx *ctx, float *out, const float *q, const void *k_cache, const void *v_cache,
                   const kern_kv_layout *l, const kern_attn_params *p)
{
    CTX();
    int rc = check_kv(ctx, "kern_attention", l);
    if (rc) return rc;
    NEED(out && q && k_cache && v_cache && p, "kern_attention: NULL pointer");
    NEED(p->n_q > 0 && p->n_head > 0, "kern_attention: n_q=%d n_head=%d must be positive", p->n_q, p->n_head);
    NEED(p->n_head % l->n_head_kv == 0, "kern_attention: n_head %d is not a multiple of n_head_kv %d",
         p->n_head, l->n_head_kv);
    NEED(p->q_pos0 >= 0 && p->window >= 0, "kern_attention: q_pos0=%d window=%d must be >= 0", p->q_pos0,
         p->window);
    NEED(p->n_kv <= l->capacity && (int64_t)p->q_pos0 + p->n_q <= p->n_kv,
         "kern_attention: queries at %d..%lld need n_kv >= %lld (got %d, capacity %d)", p->q_pos0,
         (long long)p->q_pos0 + p->n_q - 1, (long long)p->q_pos0 + p->n_q, p->n_kv, l->capacity);
    return ctx->ops->attention(ctx, out, q, k_cache, v_cache, l, p);
}

/* ---- paged pools. Host backends run them through the table's kv_store and
 * attention (the CPU reference the GPU check compares with); CUDA has kernels
 * that read the slots and block tables on the device. */

static size_t paged_blocks(const kern_kv_layout *block, const kern_paged_seq *s)
{
    return ((size_t)s->q_pos0 + (size_t)s->n_q + (size_t)block->capacity - 1) / (size_t)block->capacity;
}

int kern_kv_store_paged(kern_ctx *ctx, void *pool, const kern_kv_layout *block, int n_pool, const int32_t *slots,
                        int n, const float *src)
{
    CTX();
    int rc = check_kv(ctx, "kern_kv_store_paged", block);
    if (rc) return rc;
    NEED(pool && slots && src, "kern_kv_store_paged: NULL pointer");
    NEED(n_pool > 0 && n > 0, "kern_kv_store_paged: n_pool=%d n=%d must be positive", n_pool, n);
    const int64_t n_slots = (int64_t)n_pool * block->capacity;
    for (int i = 0; i < n; i++)
        NEED(slots[i] >= 0 && slots[i] < n_slots, "kern_kv_store_paged: slot %d (row %d) is outside the pool's %lld",
             slots[i], i, (long long)n_slots);
#ifdef KERN_HAVE_CUDA
    if (ctx->backend == KERN_BACKEND_CUDA) return kern_cuda_kv_store_paged(ctx, pool, block, n_pool, slots, n, src);
#endif
    const size_t bb = kern_kv_bytes(block), row = (size_t)block->n_head_kv * block->head_dim;
    for (int i = 0; i < n; i++) {
        uint8_t *b = (uint8_t *)pool + (size_t)(slots[i] / block->capacity) * bb;
        if ((rc = ctx->ops->kv_store(ctx, b, block, slots[i] % block->capacity, 1, src + (size_t)i * row))) return rc;
    }
    return KERN_OK;
}

int kern_attention_paged(kern_ctx *ctx, float *out, const float *q, const void *k_pool, const void *v_pool,
                         const kern_kv_layout *block, int n_pool, const kern_paged_seq *seqs, int n_seqs, int n_head,
                         int window, float scale)
{
    CTX();
    int rc = check_kv(ctx, "kern_attention_paged", block);
    if (rc) return rc;
    NEED(out && q && k_pool && v_pool && seqs, "kern_attention_paged: NULL pointer");
    NEED(n_pool > 0 && n_seqs > 0 && n_head > 0 && window >= 0,
         "kern_attention_paged: n_pool=%d n_seqs=%d n_head=%d must be positive, window=%d >= 0", n_pool, n_seqs,
         n_head, window);
    NEED(n_head % block->n_head_kv == 0, "kern_attention_paged: n_head %d is not a multiple of n_head_kv %d", n_head,
         block->n_head_kv);
    size_t max_blocks = 0;
    for (int s = 0; s < n_seqs; s++) {
        const kern_paged_seq *sq = &seqs[s];
        NEED(sq->row0 >= 0 && sq->n_q > 0 && sq->q_pos0 >= 0 && sq->blocks,
             "kern_attention_paged: sequence %d: row0=%d n_q=%d q_pos0=%d blocks=%p", s, sq->row0, sq->n_q,
             sq->q_pos0, (const void *)sq->blocks);
        NEED((int64_t)sq->q_pos0 + sq->n_q <= INT32_MAX / 2, "kern_attention_paged: sequence %d: positions overflow", s);
        size_t nb = paged_blocks(block, sq);
        for (size_t i = 0; i < nb; i++)
            NEED(sq->blocks[i] >= 0 && sq->blocks[i] < n_pool,
                 "kern_attention_paged: sequence %d, block %zu has id %d, outside the pool [0, %d)", s, i,
                 sq->blocks[i], n_pool);
        max_blocks = nb > max_blocks ? nb : max_blocks;
    }
#ifdef KERN_HAVE_CUDA
    if (ctx->backend == KERN_BACKEND_CUDA)
        return kern_cuda_attention_paged(ctx, out, q, k_pool, v_pool, block, n_pool, seqs, n_seqs, n_head, window,
                                         scale);
#endif
    /* host: gather each sequence's blocks into one contiguous cache, then kern_attention */
    kern_kv_layout g = *block;
    g.capacity = (int)max_blocks * block->capacity;
    size_t gb = kern_kv_bytes(&g);
    uint8_t *gk = malloc(gb), *gv = malloc(gb);
    if (!gk || !gv) {
        free(gk), free(gv);
        return kern_fail(ctx, KERN_ENOMEM, "kern_attention_paged: out of memory for %zu bytes of gathered cache", 2 * gb);
    }
    const size_t hrow = (size_t)n_head * block->head_dim;
    for (int s = 0; s < n_seqs && !rc; s++) {
        const kern_paged_seq *sq = &seqs[s];
        int nb = (int)paged_blocks(block, sq);
        rc = kern_kv_gather(ctx, gk, &g, k_pool, block, n_pool, sq->blocks, nb);
        if (!rc) rc = kern_kv_gather(ctx, gv, &g, v_pool, block, n_pool, sq->blocks, nb);
        kern_attn_params p = {sq->n_q, n_head, sq->q_pos0, sq->q_pos0 + sq->n_q, window, scale};
        if (!rc) rc = ctx->ops->attention(ctx, out + (size_t)sq->row0 * hrow, q + (size_t)sq->row0 * hrow, gk, gv, &g, &p);
    }
    free(gk), free(gv);
    return rc;
}
