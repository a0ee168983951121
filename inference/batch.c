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
 * launches per sequence.
 *
 * A decode-only step of a paged batch on CUDA or with paged_kernels (every sequence
 * one token, all wanting logits: steady serving) takes a faster road (decode below):
 * what changes from step to step (token ids, positions, KV slots, block tables) is
 * written into one step descriptor (pinned on CUDA) and uploaded in one copy to its
 * twin in backend memory, of a fixed layout; the step reads only that twin. On CUDA
 * its host arrays are bound to it with kern_cuda_bind, K and V are stored in one
 * launch and attention is kern_cuda_attention_paged_dev, whose grid is sized for the
 * context, not the keys so far, so the step is captured once per number of sequences
 * n as a CUDA graph and replayed afterwards: a few hundred launches become one. The
 * first step of each n runs eagerly (its result, and every scratch buffer sized) and
 * is then captured; at most INFER_BATCH_GRAPHS graphs (n <= 64) are kept, larger n run
 * the same kernels eagerly, as do all steps with COMMONS_CUDA_GRAPH=0 or after a failed
 * capture (said once on stderr). Eager or replayed, the kernels and their grids are
 * the same, so the logits are equal bit for bit. On the CPU (paged_kernels, for tests)
 * the same descriptor is read back into kern_attention_paged's sequences: the layout
 * is checked there without a GPU. Steps with prompt tokens keep the paged path above.
 * The CPU's default (per-sequence) path never takes this road. */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>

#include "model_internal.h"
#include "sampler.h"

#include <string.h>

#ifdef KERN_HAVE_CUDA
#define INFER_BATCH_GRAPHS 64   /* decode graphs kept: one per n = 1..64 sequences */
#endif

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
    /* Candidates instead of logits (infer_batch_set_top; CUDA, not distributed):
     * top_dev [max_logits * INFER_SAMPLER_TOP_MAX] floats then as many int32 ids,
     * top the pinned host copy in the same layout for the step's n rows x top_n. */
    float *top_dev, *top;
    int top_want;          /* k asked for the next steps (0: logits) */
    int top_n;             /* k of the last step's candidates; 0: it gave logits */
    infer_batch_stats stats;   /* CUDA decode steps only */
    /* Decode-only steps (decode), on CUDA or with paged_kernels on host memory; NULL
     * elsewhere. The step descriptor (host, pinned on CUDA) and its twin in backend
     * memory, one layout for every n (in int32s; S = desc_rows, MB = desc_blocks, the
     * blocks of an n_ctx-long table): tok [0, S), pos [S, 2S), slot [2S, 3S),
     * meta [3S, 6S) (per row: position, table offset, blocks used),
     * tables [6S, 6S + S * MB) (the step's block tables packed one after another,
     * row r's at 6S + its table offset; room for S full-width ones). */
    int32_t *desc, *desc_dev;
    int desc_rows, desc_blocks;
    bool desc_pending;     /* an upload of desc may still be reading it */
    int step_n;            /* sequences of the step being run or captured */
#ifdef KERN_HAVE_CUDA
    kern_cuda_graph *graphs[INFER_BATCH_GRAPHS + 1];  /* [n]: the step of n sequences */
    bool graph_failed;     /* a capture failed: every decode step runs eagerly */
#endif
};

void infer_batch_free(infer_batch *b)
{
    if (!b)
        return;
    if (b->desc_dev)
        kern_sync(b->kc);   /* a replay may still be running */
#ifdef KERN_HAVE_CUDA
    for (int n = 0; n <= INFER_BATCH_GRAPHS; n++)
        kern_cuda_graph_free(b->graphs[n]);
#endif
    kern_free(b->kc, b->desc_dev);
    kern_host_free(b->kc, b->desc);
    kern_free(b->kc, b->top_dev);
    kern_host_free(b->kc, b->top);
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
    bool desc = host && p->paged_kernels;   /* the CPU reference of the CUDA layout */
#ifdef KERN_HAVE_CUDA
    desc = desc || kern_cuda_is(kc);
#endif
    if (desc) {
        b->desc_rows = p->max_logits < p->max_tokens ? p->max_logits : p->max_tokens;
        b->desc_blocks = infer_pkv_blocks_for(kv, p->n_ctx);
        size_t bytes = ((size_t)6 + (size_t)b->desc_blocks) * (size_t)b->desc_rows * sizeof(int32_t);
        b->desc = kern_host_alloc(kc, bytes);
        b->desc_dev = b->desc ? kern_alloc(kc, bytes) : NULL;
        if (!b->desc_dev) {
            infer_batch_free(b);
            FAIL(INFER_ENOMEM, "out of memory for the batch's step descriptor (%zu bytes): %s", bytes,
                 kern_ctx_error(kc));
        }
    }
    *out = b;
    return INFER_OK;
}

void infer_batch_get_stats(const infer_batch *b, infer_batch_stats *out)
{
    *out = b->stats;
}

const float *infer_batch_logits(const infer_batch *b, int *n_rows)
{
    if (n_rows)
        *n_rows = b->top_n ? 0 : b->n_logits;
    return b->top_n ? NULL : b->logits;
}

int infer_batch_set_top(infer_batch *b, int k, char *err, size_t errlen)
{
    if (k < 0 || k > INFER_SAMPLER_TOP_MAX)
        FAIL(INFER_EINVAL, "batch: %d candidates per row asked, at most %d", k,
             INFER_SAMPLER_TOP_MAX);
    b->top_want = 0;
#ifdef KERN_HAVE_CUDA
    /* a distributed model's logits are gathered by its own hooks, on the host */
    if (k == 0 || !kern_cuda_is(b->kc) || b->m->dist)
        return INFER_OK;
    if (!b->top_dev) {   /* once, for the largest k: never inside a capture */
        size_t pairs = (size_t)b->p.max_logits * INFER_SAMPLER_TOP_MAX;
        b->top_dev = kern_alloc(b->kc, pairs * 8);
        b->top = b->top_dev ? kern_host_alloc(b->kc, pairs * 8) : NULL;
        if (!b->top) {
            kern_free(b->kc, b->top_dev);
            b->top_dev = NULL;
            FAIL(INFER_ENOMEM, "batch: no memory for %zu candidates: %s", pairs,
                 kern_ctx_error(b->kc));
        }
    }
    b->top_want = k;
#endif
    return INFER_OK;
}

const float *infer_batch_top(const infer_batch *b, const int32_t **ids, int *n_rows, int *k)
{
    *n_rows = b->top_n ? b->n_logits : 0;
    *k = b->top_n;
    *ids = b->top_n ? (const int32_t *)(b->top + (size_t)b->n_logits * b->top_n) : NULL;
    return b->top_n ? b->top : NULL;
}

/* The step's n rows of logits (in backend memory) to the host: whole rows, or on CUDA
 * with infer_batch_set_top their best top_want (value, id) pairs selected on the
 * device, n x k x 8 bytes instead of n x n_vocab x 4. */
static int fetch_rows(infer_batch *b, int n, char *err, size_t errlen)
{
    kern_ctx *kc = b->kc;
    const int V = b->m->hp.n_vocab;
    b->n_logits = n;
    b->top_n = 0;
    if (!b->logits_dev || n == 0)
        return INFER_OK;
#ifdef KERN_HAVE_CUDA
    if (b->top_want) {
        const int k = b->top_want < V ? b->top_want : V;
        float *vals = b->top_dev;
        int32_t *ids = (int32_t *)(b->top_dev + (size_t)n * k);
        INFER_K(-1, kern_cuda_topk(kc, vals, ids, b->logits_dev, n, V, k));
        INFER_K(-1, kern_download(kc, b->top, b->top_dev, (size_t)n * k * 8));
        b->top_n = k;
        return INFER_OK;
    }
#endif
    INFER_K(-1, kern_download(kc, b->logits, b->logits_dev, (size_t)n * V * sizeof(float)));
    return INFER_OK;
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

/* ---- decode-only steps (see the top of the file) ---- */

/* Whether decode can run this (already checked) step. */
static bool decode_ok(const infer_batch *b, const infer_batch_seq *seqs, int n_seqs)
{
    if (!b->desc || b->m->dist || n_seqs > b->desc_rows)
        return false;
    for (int s = 0; s < n_seqs; s++)
        if (seqs[s].n_tokens != 1 || !seqs[s].logits)
            return false;
    return true;
}

/* The descriptor's tok, pos and slot arrays as the kernels are handed them: on host
 * memory the uploaded twin itself (so its layout is what is checked); on CUDA the host
 * arrays, bound to the twin while the step runs or is captured. */
static const int32_t *desc_arrays(const infer_batch *b)
{
    return kern_ctx_host_memory(b->kc) ? b->desc_dev : b->desc;
}

/* KV store and attention of layer il for the step's n rows. */
static int decode_attend(infer_batch *b, int il, int n, char *err, size_t errlen)
{
    const infer_hparams *hp = &b->m->hp;
    const infer_paged_kv *kv = b->kv;
    kern_ctx *kc = b->kc;
    const int S = b->desc_rows, window = infer_layer_local(hp, il) ? hp->sliding_window : 0;
    const int32_t *slot = desc_arrays(b) + 2 * S;
#ifdef KERN_HAVE_CUDA
    if (kern_cuda_is(kc)) {   /* one launch each, positions and tables from the twin */
        INFER_K(il, kern_cuda_kv_store_paged_kv(kc, kv->k[il], kv->v[il], &kv->block, kv->n_blocks,
                                                slot, n, b->k, b->v));
        INFER_K(il, kern_cuda_attention_paged_dev(kc, b->attn, b->q, kv->k[il], kv->v[il], &kv->block,
                                                  kv->n_blocks, b->desc_dev + 3 * S, b->desc_dev + 6 * S,
                                                  b->desc_blocks, n, hp->n_head, window, hp->attn_scale));
        return INFER_OK;
    }
#endif
    /* host memory: b->pseq was read back from the twin by decode */
    INFER_K(il, kern_kv_store_paged(kc, kv->k[il], &kv->block, kv->n_blocks, slot, n, b->k));
    INFER_K(il, kern_kv_store_paged(kc, kv->v[il], &kv->block, kv->n_blocks, slot, n, b->v));
    INFER_K(il, kern_attention_paged(kc, b->attn, b->q, kv->k[il], kv->v[il], &kv->block,
                                     kv->n_blocks, b->pseq, n, hp->n_head, window, hp->attn_scale));
    return INFER_OK;
}

/* The decode step of b->step_n sequences described by the descriptor (run eagerly or
 * captured: it reads nothing else that changes between steps; everything else is
 * backend memory fixed for b's life). Logits rows 0..n-1 = sequences in step order. */
static int decode_layers(void *ud, char *err, size_t errlen)
{
    infer_batch *b = ud;
    const infer_model *m = b->m;
    const infer_hparams *hp = &m->hp;
    kern_ctx *kc = b->kc;
    const int n = b->step_n, S = b->desc_rows;
    const int32_t *tok = desc_arrays(b), *pos = tok + S;
    int rc;
    if ((rc = infer_embed(m, kc, tok, n, b->x, err, errlen)))
        return rc;
    for (int il = 0; il < hp->n_layer; il++) {
        if ((rc = infer_layer_qkv(m, kc, il, n, pos, b->x, b->h, b->q, b->k, b->v, err, errlen)) ||
            (rc = decode_attend(b, il, n, err, errlen)) ||
            (rc = infer_layer_out(m, kc, il, n, b->x, b->attn, b->o, b->h, b->gate, b->up, err,
                                  errlen)))
            return rc;
    }
    /* every row wants logits: the head reads x directly (the paged path's row copies
     * into xl would copy exactly these rows) */
    return infer_head(m, kc, n, b->x, b->hl, b->logits_dev ? b->logits_dev : b->logits, err,
                      errlen);
}

#ifdef KERN_HAVE_CUDA
/* The step on CUDA: the graph of this n replayed, or the step run eagerly (and captured
 * when graphs are on) with its host arrays bound to the twin. */
static int decode_cuda(infer_batch *b, int n, char *err, size_t errlen)
{
    kern_ctx *kc = b->kc;
    const int S = b->desc_rows;
    bool graphs = infer_gpu_graphs_on(b->m, kc);
    kern_cuda_graph **g = n <= INFER_BATCH_GRAPHS ? &b->graphs[n] : NULL;
    if (graphs && g && *g) {
        INFER_K(-1, kern_cuda_graph_launch(kc, *g));
        b->stats.replayed++;
        return INFER_OK;
    }
    int rc = INFER_OK;
    const int32_t *tok = b->desc, *pos = tok + S, *slot = tok + 2 * S;
    if (kern_cuda_bind(kc, tok, (size_t)S * sizeof *tok, b->desc_dev) ||
        kern_cuda_bind(kc, pos, (size_t)S * sizeof *pos, b->desc_dev + S) ||
        kern_cuda_bind(kc, slot, (size_t)S * sizeof *slot, b->desc_dev + 2 * S)) {
        snprintf(err, errlen, "batched CUDA decode: %s", kern_ctx_error(kc));
        rc = INFER_EINVAL;
    }
    char what[64];
    snprintf(what, sizeof what, "batched decode step of %d sequences", n);
    kern_cuda_graph *made = NULL;
    if (!rc)
        rc = infer_gpu_run_capture(kc, decode_layers, b, graphs && g, &made, &b->graph_failed,
                                   what, err, errlen);
    kern_cuda_unbind_all(kc);
    if (made) {   /* only when g: capture was asked for */
        *g = made;
        b->stats.captured++;
    }
    b->stats.eager += !rc;
    return rc;
}
#endif

/* A decode-only step: the descriptor filled and uploaded in one copy, the step run
 * (decode_cuda, or decode_layers on host memory), the logits downloaded (which waits
 * for the stream, so the descriptor is free again). */
static int decode(infer_batch *b, const infer_batch_seq *seqs, int n, char *err, size_t errlen)
{
    kern_ctx *kc = b->kc;
    const int S = b->desc_rows, BT = b->kv->block_tokens;
    if (b->desc_pending)   /* a failed step left its upload in flight: let it finish */
        INFER_K(-1, kern_sync(kc));
    int32_t *tok = b->desc, *pos = tok + S, *slot = tok + 2 * S, *meta = tok + 3 * S;
    int32_t *tab = tok + 6 * S;
    size_t off = 0;   /* tables packed: each row's offset is in its meta */
    for (int s = 0; s < n; s++) {
        const infer_batch_seq *q = &seqs[s];
        /* check_step: p < n_ctx and the table covers p, so nb <= MB and <= bt->n, and
         * the packed tables end by n * MB <= S * MB */
        int p = q->n_past, nb = p / BT + 1;
        tok[s] = q->tokens[0];
        pos[s] = p;
        slot[s] = q->bt->ids[p / BT] * BT + p % BT;
        meta[3 * s] = p, meta[3 * s + 1] = (int32_t)off, meta[3 * s + 2] = nb;
        memcpy(tab + off, q->bt->ids, (size_t)nb * sizeof *tab);
        off += (size_t)nb;
    }
    /* rows n..S-1 of tok..meta are stale and never read (every kernel takes n rows);
     * only the blocks in use cross, not n_ctx-wide tables */
    INFER_K(-1, kern_upload(kc, b->desc_dev, b->desc, ((size_t)6 * S + off) * sizeof *tab));
    b->desc_pending = true;
    b->step_n = n;
    int rc;
#ifdef KERN_HAVE_CUDA
    if (kern_cuda_is(kc))
        rc = decode_cuda(b, n, err, errlen);
    else
#endif
    {   /* host memory: kern_attention_paged's sequences read back from the twin */
        const int32_t *dm = b->desc_dev + 3 * S, *dt = b->desc_dev + 6 * S;
        for (int s = 0; s < n; s++)
            b->pseq[s] = (kern_paged_seq){ .row0 = s, .n_q = 1, .q_pos0 = dm[3 * s],
                                           .blocks = dt + dm[3 * s + 1] };
        rc = decode_layers(b, err, errlen);
    }
    if (rc)
        return rc;
    if ((rc = fetch_rows(b, n, err, errlen)))
        return rc;
    b->desc_pending = false;
    return INFER_OK;
}

int infer_batch_step(infer_batch *b, const infer_batch_seq *seqs, int n_seqs,
                     char *err, size_t errlen)
{
    int rc = check_step(b, seqs, n_seqs, err, errlen);
    if (rc)
        return rc;
    if (decode_ok(b, seqs, n_seqs))
        return decode(b, seqs, n_seqs, err, errlen);
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
    return fetch_rows(b, n_out, err, errlen);
}
