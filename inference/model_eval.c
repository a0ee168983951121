/* model_eval.c: evaluation contexts and the forward pass (model.h).
 *
 * One forward chunk processes up to n_batch tokens at consecutive positions with
 * matrix-matrix products (prompt processing) or a single token (generation); both
 * go through the same code. Invariant: after a successful infer_eval, cache slots
 * 0..n_past-1 of every layer hold the keys/values of the sequence so far; a failed
 * call leaves n_past unchanged, so slots beyond it are just scratch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

#define FAIL(code, ...) do { snprintf(err, errlen, __VA_ARGS__); return (code); } while (0)

/* Output rows computed per logits matmul: bounds the scratch for large vocabularies. */
#define LOGIT_ROWS 16

static void ctx_free_buffers(infer_ctx *c)
{
    float **bufs[] = { &c->x, &c->h, &c->q, &c->k, &c->v, &c->attn, &c->o, &c->gate, &c->up,
                       &c->logits_dev };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
        kern_free(c->kc, *bufs[i]);
        *bufs[i] = NULL;
    }
}

int infer_ctx_create(infer_model *m, kern_ctx *kc, const infer_ctx_params *p,
                     infer_ctx **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!m || !kc)
        FAIL(INFER_EINVAL, "infer_ctx_create: NULL model or kernel context");
    const infer_hparams *hp = &m->hp;
    infer_ctx_params d = { 0 };
    if (p)
        d = *p;
    if (d.n_ctx <= 0)
        d.n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (d.n_batch <= 0)
        d.n_batch = 256;
    if (d.n_batch > d.n_ctx)
        d.n_batch = d.n_ctx;
    if (d.n_ctx > hp->n_ctx_train)
        FAIL(INFER_EINVAL, "context of %d positions exceeds the model's context_length %d",
             d.n_ctx, hp->n_ctx_train);
    infer_ctx *c = calloc(1, sizeof *c);
    if (!c)
        FAIL(INFER_ENOMEM, "out of memory");
    c->m = m;
    c->kc = kc;
    c->n_ctx = d.n_ctx;
    c->n_batch = d.n_batch;
    int rc = infer_kv_init(&c->kv, kc, hp->n_layer, hp->n_head_kv, hp->head_dim, d.n_ctx,
                           d.kv_type, err, errlen);
    if (rc) {
        free(c);
        return rc;
    }
    size_t B = (size_t)d.n_batch, E = (size_t)hp->n_embd, F = (size_t)hp->n_ff;
    size_t Q = (size_t)hp->n_head * hp->head_dim, KV = (size_t)hp->n_head_kv * hp->head_dim;
    size_t lrows = B < LOGIT_ROWS ? B : LOGIT_ROWS;
    struct { float **p; size_t n; } bufs[] = {
        { &c->x, B * E }, { &c->h, B * E }, { &c->q, B * Q }, { &c->k, B * KV },
        { &c->v, B * KV }, { &c->attn, B * Q }, { &c->o, B * E }, { &c->gate, B * F },
        { &c->up, B * F },
        { &c->logits_dev, kern_ctx_host_memory(kc) ? 1 : lrows * (size_t)hp->n_vocab },
    };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
        *bufs[i].p = kern_alloc(kc, bufs[i].n * sizeof(float));
        if (!*bufs[i].p) {
            ctx_free_buffers(c);
            infer_kv_free(&c->kv);
            free(c);
            FAIL(INFER_ENOMEM, "out of memory for scratch buffers (batch %d)", d.n_batch);
        }
    }
    c->pos = malloc(B * sizeof *c->pos);
    if (!c->pos) {
        infer_ctx_free(c);
        FAIL(INFER_ENOMEM, "out of memory");
    }
    *out = c;
    return INFER_OK;
}

void infer_ctx_free(infer_ctx *c)
{
    if (!c)
        return;
    ctx_free_buffers(c);
    infer_kv_free(&c->kv);
    free(c->logits);
    free(c->pos);
    free(c);
}

const float *infer_logits(const infer_ctx *c, int *n_rows)
{
    if (n_rows)
        *n_rows = c->n_logits;
    return c->logits;
}

int infer_ctx_n_past(const infer_ctx *c) { return c->n_past; }
int infer_ctx_n_ctx(const infer_ctx *c) { return c->n_ctx; }

int infer_ctx_truncate(infer_ctx *c, int n_past)
{
    if (n_past < 0 || n_past > c->n_past)
        return INFER_EINVAL;
    c->n_past = n_past;
    return INFER_OK;
}

/* Kernel call; a failure becomes an infer status with the kernel's message. */
#define K(call) \
    do { int krc_ = (call); \
         if (krc_ != KERN_OK) { \
             snprintf(err, errlen, "forward pass, layer %d: %s", il, kern_ctx_error(kc)); \
             return krc_ == KERN_ENOMEM ? INFER_ENOMEM : \
                    krc_ == KERN_ENOTSUP ? INFER_EUNSUPPORTED : INFER_EINVAL; } } while (0)

/* Forward n tokens at positions pos0.. (n <= n_batch). Writes the logits of rows
 * [row0, n) to out (host, (n-row0) x n_vocab). */
static int forward(infer_ctx *c, const int32_t *tokens, int n, int pos0, int row0, float *out,
                   char *err, size_t errlen)
{
    const infer_model *m = c->m;
    const infer_hparams *hp = &m->hp;
    kern_ctx *kc = c->kc;
    const bool gemma = hp->arch == INFER_ARCH_GEMMA3;
    const int E = hp->n_embd, F = hp->n_ff, D = hp->head_dim, H = hp->n_head;
    const int HKV = hp->n_head_kv, Q = H * D, KV = HKV * D;
    const kern_act act = gemma ? KERN_ACT_GELU : KERN_ACT_SILU;
    int il = -1;

    for (int i = 0; i < n; i++)
        c->pos[i] = pos0 + i;
    K(kern_get_rows(kc, c->x, m->tok_embd, m->tok_embd_t, hp->n_vocab, E, tokens, n));
    if (gemma)
        K(kern_scale(kc, c->x, c->x, sqrtf((float)E), (size_t)n * E));

    for (il = 0; il < hp->n_layer; il++) {
        const infer_layer *ly = &m->layers[il];
        const bool local = gemma && hp->sliding_window > 0 &&
                           (il + 1) % INFER_GEMMA3_SWA_PATTERN != 0;
        kern_rope_params rp = {
            .mode = gemma ? KERN_ROPE_NEOX : KERN_ROPE_NORMAL,
            .n_rot = hp->n_rot,
            .freq_base = local ? hp->rope_base_local : hp->rope_base,
            .freq_scale = local ? 1.0f : hp->rope_scale,
            .freq_factors = gemma ? NULL : m->rope_freqs,
        };
        K(kern_rmsnorm(kc, c->h, c->x, ly->attn_norm, n, E, hp->eps));
        K(kern_matmul(kc, c->q, c->h, ly->wq, ly->wq_t, n, Q, E));
        K(kern_matmul(kc, c->k, c->h, ly->wk, ly->wk_t, n, KV, E));
        K(kern_matmul(kc, c->v, c->h, ly->wv, ly->wv_t, n, KV, E));
        if (gemma) {
            K(kern_rmsnorm(kc, c->q, c->q, ly->q_norm, n * H, D, hp->eps));
            K(kern_rmsnorm(kc, c->k, c->k, ly->k_norm, n * HKV, D, hp->eps));
        }
        K(kern_rope(kc, c->q, n, H, D, c->pos, &rp));
        K(kern_rope(kc, c->k, n, HKV, D, c->pos, &rp));
        K(kern_kv_store(kc, c->kv.k[il], &c->kv.layout, pos0, n, c->k));
        K(kern_kv_store(kc, c->kv.v[il], &c->kv.layout, pos0, n, c->v));
        kern_attn_params ap = {
            .n_q = n, .n_head = H, .q_pos0 = pos0, .n_kv = pos0 + n,
            .window = local ? hp->sliding_window : 0, .scale = hp->attn_scale,
        };
        K(kern_attention(kc, c->attn, c->q, c->kv.k[il], c->kv.v[il], &c->kv.layout, &ap));
        K(kern_matmul(kc, c->o, c->attn, ly->wo, ly->wo_t, n, E, Q));
        if (gemma)
            K(kern_rmsnorm(kc, c->o, c->o, ly->post_attn_norm, n, E, hp->eps));
        K(kern_add(kc, c->x, c->x, c->o, (size_t)n * E));

        K(kern_rmsnorm(kc, c->h, c->x, ly->ffn_norm, n, E, hp->eps));
        K(kern_matmul(kc, c->gate, c->h, ly->w_gate, ly->w_gate_t, n, F, E));
        K(kern_matmul(kc, c->up, c->h, ly->w_up, ly->w_up_t, n, F, E));
        K(kern_gated(kc, c->gate, c->gate, c->up, (size_t)n * F, act));
        K(kern_matmul(kc, c->o, c->gate, ly->w_down, ly->w_down_t, n, E, F));
        if (gemma)
            K(kern_rmsnorm(kc, c->o, c->o, ly->post_ffw_norm, n, E, hp->eps));
        K(kern_add(kc, c->x, c->x, c->o, (size_t)n * E));
    }

    il = -1;   /* errors below are in the output head */
    if (row0 >= n)
        return INFER_OK;   /* an inner prompt chunk: no logits wanted */
    const int V = hp->n_vocab;
    K(kern_rmsnorm(kc, c->h + (size_t)row0 * E, c->x + (size_t)row0 * E, m->output_norm,
                   n - row0, E, hp->eps));
    const bool host = kern_ctx_host_memory(kc);
    for (int r = row0; r < n; r += LOGIT_ROWS) {
        int rows = n - r < LOGIT_ROWS ? n - r : LOGIT_ROWS;
        float *dst = out + (size_t)(r - row0) * V;
        K(kern_matmul(kc, host ? dst : c->logits_dev, c->h + (size_t)r * E, m->output,
                      m->output_t, rows, V, E));
        if (!host)
            K(kern_download(kc, dst, c->logits_dev, (size_t)rows * V * sizeof(float)));
    }
    return INFER_OK;
}

static int reserve_logits(infer_ctx *c, int rows, char *err, size_t errlen)
{
    if (rows <= c->cap_logits)
        return INFER_OK;
    float *l = realloc(c->logits, (size_t)rows * c->m->hp.n_vocab * sizeof *l);
    if (!l)
        FAIL(INFER_ENOMEM, "out of memory for %d rows of logits", rows);
    c->logits = l;
    c->cap_logits = rows;
    return INFER_OK;
}

int infer_eval(infer_ctx *c, const int32_t *tokens, int n, bool all_logits,
               char *err, size_t errlen)
{
    if (!c || !tokens || n < 1)
        FAIL(INFER_EINVAL, "infer_eval: no tokens");
    const int V = c->m->hp.n_vocab;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            FAIL(INFER_EINVAL, "token %d (index %d) is outside the vocabulary [0, %d)",
                 tokens[i], i, V);
    if (n > c->n_ctx - c->n_past)
        FAIL(INFER_ERANGE, "context full: %d positions used, %d more requested, capacity %d",
             c->n_past, n, c->n_ctx);
    int rc = reserve_logits(c, all_logits ? n : 1, err, errlen);
    if (rc)
        return rc;
    int pos = c->n_past;
    for (int i = 0; i < n; i += c->n_batch) {
        int len = n - i < c->n_batch ? n - i : c->n_batch;
        bool last = i + len == n;
        int row0 = all_logits ? 0 : (last ? len - 1 : len);
        float *out = c->logits + (all_logits ? (size_t)i * V : 0);
        rc = forward(c, tokens + i, len, pos + i, row0, out, err, errlen);
        if (rc)
            return rc;
    }
    c->n_past += n;
    c->n_logits = all_logits ? n : 1;
    return INFER_OK;
}
