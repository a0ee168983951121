/* batch.c: the batched forward step over a paged KV cache (batch.h).
 *
 * The layer graph is the model's own (model_layer.c: infer_embed, infer_layer_qkv,
 * infer_layer_out, infer_head — what infer_eval runs), applied to the concatenation of
 * every sequence's tokens: embeddings, norms, matmuls, RoPE (each token at its own
 * position) and the FFN treat the step's T tokens as T rows. Only the KV store and
 * attention are per sequence: new keys/values go to the sequence's blocks, then the
 * blocks attention needs are gathered into one contiguous cache (the kernels'
 * layout) and kern_attention runs over it, so every query sees exactly the keys, in
 * the same order, that infer_eval's contiguous cache would give it.
 *
 * Sliding-window layers gather only the blocks the window can reach: positions are
 * shifted by the first gathered block's start, which changes neither the causal nor
 * the window mask (both are relative).
 *
 * Any backend: scratch and the logits of the head live in backend memory, rows move
 * with kern_copy, and only the step's token ids, positions and block tables (host
 * arrays the kernels take) and the returned logits are host memory. On host memory
 * (CPU) the per-sequence store / gather / attend above runs as written; on a device
 * (or with paged_kernels) the same computation is three calls per layer for the whole
 * step, two kern_kv_store_paged (every token's key and value to its slot) and one
 * kern_attention_paged (every sequence over its block table), instead of a few small
 * launches per sequence. */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>

#include "model_internal.h"

#define FAIL(code, ...) do { snprintf(err, errlen, __VA_ARGS__); return (code); } while (0)

struct infer_batch {
    infer_model *m;
    kern_ctx *kc;
    infer_paged_kv *kv;
    infer_batch_params p;
    /* Scratch (backend memory), sized for p.max_tokens rows. */
    float *x, *h, *q, *k, *v, *attn, *o, *gate, *up;
    float *xl, *hl;        /* [max_logits][n_embd]: rows that want logits, normed */
    uint8_t *gk, *gv;      /* per-sequence path only: gathered caches [n_head_kv][g_cap][head_dim] */
    float *logits_dev;     /* [max_logits][n_vocab]; NULL on host memory (== logits) */
    int g_cap;             /* positions of the gathered caches (whole blocks) */
    /* Host memory */
    int32_t *tok, *pos;    /* [max_tokens] */
    bool paged;            /* the paged kernels (device backends, or p.paged_kernels) */
    int32_t *slot;         /* paged: [max_tokens] pool slot of each token */
    kern_paged_seq *pseq;  /* paged: [max_tokens] the step's sequences */
    float *logits;         /* [max_logits][n_vocab] */
    int n_logits;
};

void infer_batch_free(infer_batch *b)
{
    if (!b)
        return;
    void *dev[] = { b->x, b->h, b->q, b->k, b->v, b->attn, b->o, b->gate, b->up, b->xl, b->hl,
                    b->gk, b->gv, b->logits_dev };
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
        kern_free(b->kc, dev[i]);
    free(b->tok);
    free(b->pos);
    free(b->slot);
    free(b->pseq);
    kern_host_free(b->kc, b->logits);
    free(b);
}

int infer_batch_create(infer_model *m, kern_ctx *kc, infer_paged_kv *kv,
                       const infer_batch_params *p, infer_batch **out,
                       char *err, size_t errlen)
{
    *out = NULL;
    if (!m || !kc || !kv || !p)
        FAIL(INFER_EINVAL, "infer_batch_create: NULL argument");
    const infer_hparams *hp = &m->hp;
    if (p->max_tokens < 1 || p->max_logits < 1 || p->n_ctx < 1 || p->n_ctx > hp->n_ctx_train)
        FAIL(INFER_EINVAL, "batch: max_tokens %d and max_logits %d must be >= 1, n_ctx %d in "
             "[1, %d] (the model's context_length)", p->max_tokens, p->max_logits, p->n_ctx,
             hp->n_ctx_train);
    if (kv->n_layer != hp->n_layer || kv->block.n_head_kv != hp->n_head_kv ||
        kv->block.head_dim != hp->head_dim)
        FAIL(INFER_EINVAL, "batch: KV pool shape (layers %d, kv heads %d, head dim %d) does "
             "not match the model (%d, %d, %d)", kv->n_layer, kv->block.n_head_kv,
             kv->block.head_dim, hp->n_layer, hp->n_head_kv, hp->head_dim);
    if (!kern_ctx_host_memory(kc) && (kv->kc != kc || m->kc != kc))
        FAIL(INFER_EINVAL, "batch: on a device backend the model, the KV pool and the batch "
             "must use the same kernel context (their memory lives there)");
    infer_batch *b = calloc(1, sizeof *b);
    if (!b)
        FAIL(INFER_ENOMEM, "out of memory");
    b->m = m;
    b->kc = kc;
    b->kv = kv;
    b->p = *p;
    b->paged = !kern_ctx_host_memory(kc) || p->paged_kernels;
    b->g_cap = infer_pkv_blocks_for(kv, p->n_ctx) * kv->block_tokens;
    size_t T = (size_t)p->max_tokens, E = (size_t)hp->n_embd, F = (size_t)hp->n_ff;
    size_t Q = (size_t)hp->n_head * hp->head_dim, KV = (size_t)hp->n_head_kv * hp->head_dim;
    size_t L = (size_t)p->max_logits, LV = L * (size_t)hp->n_vocab;
    kern_kv_layout g = kv->block;
    g.capacity = b->g_cap;
    size_t gbytes = kern_kv_bytes(&g);
    const bool host = kern_ctx_host_memory(kc), paged = b->paged;
    struct { void **p; size_t bytes; } dev[] = {
        { (void **)&b->x, T * E * 4 }, { (void **)&b->h, T * E * 4 },
        { (void **)&b->q, T * Q * 4 }, { (void **)&b->k, T * KV * 4 },
        { (void **)&b->v, T * KV * 4 }, { (void **)&b->attn, T * Q * 4 },
        { (void **)&b->o, T * E * 4 }, { (void **)&b->gate, T * F * 4 },
        { (void **)&b->up, T * F * 4 }, { (void **)&b->xl, L * E * 4 },
        { (void **)&b->hl, L * E * 4 },
        { (void **)&b->gk, paged ? 0 : gbytes }, { (void **)&b->gv, paged ? 0 : gbytes },
        { (void **)&b->logits_dev, host ? 0 : LV * 4 },
    };
    bool ok = true;
    for (size_t i = 0; i < sizeof dev / sizeof *dev && ok; i++)
        ok = !dev[i].bytes || (*dev[i].p = kern_alloc(kc, dev[i].bytes)) != NULL;
    b->tok = ok ? malloc(T * sizeof *b->tok) : NULL;
    b->pos = ok ? malloc(T * sizeof *b->pos) : NULL;
    b->slot = ok ? malloc(T * sizeof *b->slot) : NULL;
    b->pseq = ok ? malloc(T * sizeof *b->pseq) : NULL;
    /* pinned on CUDA (the download runs at bus speed); on host memory the head writes
     * here directly */
    b->logits = ok ? kern_host_alloc(kc, LV * 4) : NULL;
    if (!b->tok || !b->pos || !b->slot || !b->pseq || !b->logits) {
        infer_batch_free(b);
        FAIL(INFER_ENOMEM, "out of memory for batch scratch (%d tokens per step, %d logit "
             "rows, context %d)%s%s", p->max_tokens, p->max_logits, p->n_ctx,
             kern_ctx_error(kc)[0] ? ": " : "", kern_ctx_error(kc));
    }
    *out = b;
    return INFER_OK;
}

const float *infer_batch_logits(const infer_batch *b, int *n_rows)
{
    if (n_rows)
        *n_rows = b->n_logits;
    return b->logits;
}

static int check_step(const infer_batch *b, const infer_batch_seq *seqs, int n_seqs,
                      char *err, size_t errlen)
{
    const int V = b->m->hp.n_vocab;
    int total = 0, n_logits = 0;
    for (int s = 0; s < n_seqs; s++) {
        const infer_batch_seq *q = &seqs[s];
        if (!q->bt || !q->tokens || q->n_tokens < 1 || q->n_past < 0)
            FAIL(INFER_EINVAL, "batch step: sequence %d has no tokens or no block table", s);
        if (q->n_past + q->n_tokens > b->p.n_ctx)
            FAIL(INFER_EINVAL, "batch step: sequence %d would reach position %d, beyond the "
                 "context of %d", s, q->n_past + q->n_tokens, b->p.n_ctx);
        if (q->bt->n * b->kv->block_tokens < q->n_past + q->n_tokens)
            FAIL(INFER_EINVAL, "batch step: sequence %d has %d blocks (%d positions), needs "
                 "%d positions", s, q->bt->n, q->bt->n * b->kv->block_tokens,
                 q->n_past + q->n_tokens);
        for (int i = 0; i < q->n_tokens; i++)
            if (q->tokens[i] < 0 || q->tokens[i] >= V)
                FAIL(INFER_EINVAL, "batch step: sequence %d, token %d (index %d) is outside "
                     "the vocabulary [0, %d)", s, q->tokens[i], i, V);
        for (int i = 0; i < q->bt->n; i++)
            if (q->bt->ids[i] < 0 || q->bt->ids[i] >= b->kv->n_blocks)
                FAIL(INFER_EINVAL, "batch step: sequence %d, block %d has id %d, outside the "
                     "pool [0, %d)", s, i, q->bt->ids[i], b->kv->n_blocks);
        total += q->n_tokens;
        n_logits += q->logits;
    }
    if (n_seqs < 1 || total > b->p.max_tokens || n_logits > b->p.max_logits)
        FAIL(INFER_EINVAL, "batch step: %d sequences, %d tokens (at most %d), %d logit rows "
             "(at most %d)", n_seqs, total, b->p.max_tokens, n_logits, b->p.max_logits);
    return INFER_OK;
}

/* Store rows kr/vr ([n][n_head_kv][head_dim]) of one sequence at positions pos0.. */
static int store_kv(infer_batch *b, int il, const infer_block_table *bt, int pos0, int n,
                    const float *kr, const float *vr, char *err, size_t errlen)
{
    kern_ctx *kc = b->kc;
    const infer_paged_kv *kv = b->kv;
    const int BT = kv->block_tokens;
    const size_t KV = (size_t)kv->block.n_head_kv * kv->block.head_dim;
    for (int i = 0; i < n;) {
        int p = pos0 + i, slot = p % BT, len = BT - slot < n - i ? BT - slot : n - i;
        int32_t id = bt->ids[p / BT];
        INFER_K(il, kern_kv_store(kc, infer_pkv_k(kv, il, id), &kv->block, slot, len, kr + i * KV));
        INFER_K(il, kern_kv_store(kc, infer_pkv_v(kv, il, id), &kv->block, slot, len, vr + i * KV));
        i += len;
    }
    return INFER_OK;
}

int infer_batch_step(infer_batch *b, const infer_batch_seq *seqs, int n_seqs,
                     char *err, size_t errlen)
{
    int rc = check_step(b, seqs, n_seqs, err, errlen);
    if (rc)
        return rc;
    const infer_model *m = b->m;
    const infer_hparams *hp = &m->hp;
    kern_ctx *kc = b->kc;
    const int E = hp->n_embd, H = hp->n_head, Q = H * hp->head_dim;
    const int KV = hp->n_head_kv * hp->head_dim, BT = b->kv->block_tokens;
    kern_kv_layout g = b->kv->block;
    g.capacity = b->g_cap;

    int T = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int i = 0; i < seqs[s].n_tokens; i++, T++) {
            b->tok[T] = seqs[s].tokens[i];
            b->pos[T] = seqs[s].n_past + i;
        }
    const bool paged = b->paged;
    if (paged)
        for (int s = 0, t = 0; s < n_seqs; s++) {
            const infer_batch_seq *q = &seqs[s];
            b->pseq[s] = (kern_paged_seq){ .row0 = t, .n_q = q->n_tokens, .q_pos0 = q->n_past,
                                           .blocks = q->bt->ids };
            for (int i = 0; i < q->n_tokens; i++, t++) {
                int p = q->n_past + i;
                b->slot[t] = q->bt->ids[p / BT] * BT + p % BT;
            }
        }
    if ((rc = infer_embed(m, kc, b->tok, T, b->x, err, errlen)))
        return rc;
    for (int il = 0; il < hp->n_layer; il++) {
        const bool local = infer_layer_local(hp, il);
        if ((rc = infer_layer_qkv(m, kc, il, T, b->pos, b->x, b->h, b->q, b->k, b->v, err,
                                  errlen)))
            return rc;
        if (paged) {
            const infer_paged_kv *kv = b->kv;
            INFER_K(il, kern_kv_store_paged(kc, kv->k[il], &kv->block, kv->n_blocks, b->slot, T,
                                            b->k));
            INFER_K(il, kern_kv_store_paged(kc, kv->v[il], &kv->block, kv->n_blocks, b->slot, T,
                                            b->v));
            INFER_K(il, kern_attention_paged(kc, b->attn, b->q, kv->k[il], kv->v[il], &kv->block,
                                             kv->n_blocks, b->pseq, n_seqs, H,
                                             local ? hp->sliding_window : 0, hp->attn_scale));
        }
        for (int s = 0, off = 0; !paged && s < n_seqs; off += seqs[s].n_tokens, s++) {
            const infer_batch_seq *q = &seqs[s];
            rc = store_kv(b, il, q->bt, q->n_past, q->n_tokens, b->k + (size_t)off * KV,
                          b->v + (size_t)off * KV, err, errlen);
            if (rc)
                return rc;
            int end = q->n_past + q->n_tokens, first = 0;
            if (local) {   /* the earliest key any of this step's queries can see */
                int lo = q->n_past - hp->sliding_window + 1;
                first = lo > 0 ? lo / BT : 0;
            }
            /* the blocks attention needs, side by side in the gathered caches */
            int n_blk = infer_pkv_blocks_for(b->kv, end) - first;
            INFER_K(il, kern_kv_gather(kc, b->gk, &g, b->kv->k[il], &b->kv->block,
                                       b->kv->n_blocks, q->bt->ids + first, n_blk));
            INFER_K(il, kern_kv_gather(kc, b->gv, &g, b->kv->v[il], &b->kv->block,
                                       b->kv->n_blocks, q->bt->ids + first, n_blk));
            kern_attn_params ap = {
                .n_q = q->n_tokens, .n_head = H, .q_pos0 = q->n_past - first * BT,
                .n_kv = end - first * BT, .window = local ? hp->sliding_window : 0,
                .scale = hp->attn_scale,
            };
            INFER_K(il, kern_attention(kc, b->attn + (size_t)off * Q, b->q + (size_t)off * Q,
                                       b->gk, b->gv, &g, &ap));
        }
        if ((rc = infer_layer_out(m, kc, il, T, b->x, b->attn, b->o, b->h, b->gate, b->up,
                                  err, errlen)))
            return rc;
    }

    /* The last row of each sequence that wants logits, side by side, through the head. */
    int n_out = 0;
    for (int s = 0, off = 0; s < n_seqs; off += seqs[s].n_tokens, s++)
        if (seqs[s].logits)
            INFER_K(-1, kern_copy(kc, b->xl + (size_t)n_out++ * E,
                                  b->x + (size_t)(off + seqs[s].n_tokens - 1) * E,
                                  (size_t)E * sizeof(float)));
    float *lg = b->logits_dev ? b->logits_dev : b->logits;
    if (n_out && (rc = infer_head(m, kc, n_out, b->xl, b->hl, lg, err, errlen)))
        return rc;
    if (n_out && b->logits_dev)
        INFER_K(-1, kern_download(kc, b->logits, b->logits_dev,
                                  (size_t)n_out * hp->n_vocab * sizeof(float)));
    b->n_logits = n_out;
    return INFER_OK;
}
