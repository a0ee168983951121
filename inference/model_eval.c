/* model_eval.c: evaluation contexts and the forward pass (model.h).
 *
 * One forward chunk processes up to n_batch tokens at consecutive positions with
 * matrix-matrix products (prompt processing) or a single token (generation); both
 * go through the same code. Invariant: after a successful infer_eval, cache slots
 * 0..n_past-1 of every layer hold the keys/values of the sequence so far; a failed
 * call leaves n_past unchanged, so slots beyond it are just scratch. */
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
#ifdef KERN_HAVE_CUDA
    infer_gpu_free(c);
#endif
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

/* Forward n tokens at positions pos0.. (n <= n_batch) through the contiguous cache.
 * Writes the logits of rows [row0, n) to out (host, (n-row0) x n_vocab). */
static int forward(infer_ctx *c, const int32_t *tokens, int n, int pos0, int row0, float *out,
                   char *err, size_t errlen)
{
    const infer_model *m = c->m;
    const infer_hparams *hp = &m->hp;
    kern_ctx *kc = c->kc;
    const int E = hp->n_embd;
    int rc;

    for (int i = 0; i < n; i++)
        c->pos[i] = pos0 + i;
    if ((rc = infer_embed(m, kc, tokens, n, c->x, err, errlen)))
        return rc;
    for (int il = 0; il < hp->n_layer; il++) {
        if ((rc = infer_layer_qkv(m, kc, il, n, c->pos, c->x, c->h, c->q, c->k, c->v, err,
                                  errlen)))
            return rc;
        INFER_K(il, kern_kv_store(kc, c->kv.k[il], &c->kv.layout, pos0, n, c->k));
        INFER_K(il, kern_kv_store(kc, c->kv.v[il], &c->kv.layout, pos0, n, c->v));
        kern_attn_params ap = {
            .n_q = n, .n_head = hp->n_head, .q_pos0 = pos0, .n_kv = pos0 + n,
            .window = infer_layer_local(hp, il) ? hp->sliding_window : 0,
            .scale = hp->attn_scale,
        };
        INFER_K(il, kern_attention(kc, c->attn, c->q, c->kv.k[il], c->kv.v[il],
                                   &c->kv.layout, &ap));
        if ((rc = infer_layer_out(m, kc, il, n, c->x, c->attn, c->o, c->h, c->gate, c->up,
                                  err, errlen)))
            return rc;
    }
    const int V = hp->n_vocab;
    const bool host = kern_ctx_host_memory(kc);
    for (int r = row0; r < n; r += LOGIT_ROWS) {   /* none for an inner prompt chunk */
        int rows = n - r < LOGIT_ROWS ? n - r : LOGIT_ROWS;
        float *dst = out + (size_t)(r - row0) * V;
        if ((rc = infer_head(m, kc, rows, c->x + (size_t)r * E, c->h, host ? dst :
                             c->logits_dev, err, errlen)))
            return rc;
        if (!host)
            INFER_K(-1, kern_download(kc, dst, c->logits_dev, (size_t)rows * V * sizeof(float)));
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
#ifdef KERN_HAVE_CUDA
    if (n == 1 && !all_logits && infer_gpu_graph_ok(c)) {   /* decode: a replayed CUDA graph */
        if ((rc = infer_gpu_decode(c, tokens[0], err, errlen)))
            return rc;
        c->n_past += 1;
        c->n_logits = 1;
        return INFER_OK;
    }
#endif
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
