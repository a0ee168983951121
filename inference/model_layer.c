/* model_layer.c: the transformer graph, one piece at a time (model_internal.h).
 *
 * Llama: x += WO attn(rope(WQ n(x)), rope(WK n(x)), WV n(x)); x += W2 (silu(W1 n(x)) * W3 n(x))
 * Gemma 3 adds: embeddings * sqrt(E), per-head RMSNorm of q and k before RoPE (NeoX),
 * RMSNorm of the attention and FFN outputs before each residual add, GELU(tanh) gating,
 * and per-layer RoPE base/scaling (local layers: base 10000, no scaling). Attention and
 * the KV cache are the caller's: infer_eval uses a contiguous cache, the batched step a
 * paged one.
 *
 * Distributed jobs (model_internal.h: infer_dist_hooks) join here, so both callers
 * become tensor- or pipeline-parallel unchanged: a tensor-parallel rank's WO and
 * W_down products are partial sums over its heads / FFN columns and are summed across
 * ranks before the post-norm and the residual add; a pipeline stage receives x instead
 * of embedding, passes x on after its last layer, and only the last stage computes the
 * head. A tensor-parallel rank computes the logits of its vocabulary slice
 * ([n][head_rows] at the start of logits); the head hook gathers the rows on rank 0. */
#include <math.h>
#include <stdio.h>

#include "model_internal.h"

bool infer_layer_local(const infer_hparams *hp, int il)
{
    return hp->arch == INFER_ARCH_GEMMA3 && hp->sliding_window > 0 &&
           (il + hp->first_layer + 1) % hp->swa_period != 0;
}

int infer_embed(const infer_model *m, kern_ctx *kc, const int32_t *tokens, int n, float *x,
                char *err, size_t errlen)
{
    const infer_hparams *hp = &m->hp;
    if (m->dist && m->dist->recv_x)
        return m->dist->recv_x(m->dist->ud, kc, x, n, hp->n_embd, err, errlen);
    INFER_K(-1, kern_get_rows(kc, x, m->tok_embd, m->tok_embd_t, hp->n_vocab, hp->n_embd,
                              tokens, n));
    if (hp->arch == INFER_ARCH_GEMMA3)
        INFER_K(-1, kern_scale(kc, x, x, sqrtf((float)hp->n_embd), (size_t)n * hp->n_embd));
    return INFER_OK;
}

int infer_layer_qkv(const infer_model *m, kern_ctx *kc, int il, int n, const int32_t *pos,
                    const float *x, float *h, float *q, float *k, float *v,
                    char *err, size_t errlen)
{
    const infer_hparams *hp = &m->hp;
    const infer_layer *ly = &m->layers[il];
    const bool gemma = hp->arch == INFER_ARCH_GEMMA3, local = infer_layer_local(hp, il);
    const int E = hp->n_embd, D = hp->head_dim, H = hp->n_head, HKV = hp->n_head_kv;
    kern_rope_params rp = {
        .mode = gemma ? KERN_ROPE_NEOX : KERN_ROPE_NORMAL,
        .n_rot = hp->n_rot,
        .freq_base = local ? hp->rope_base_local : hp->rope_base,
        .freq_scale = local ? 1.0f : hp->rope_scale,
        .freq_factors = gemma ? NULL : m->rope_freqs,
    };
    INFER_K(il, kern_rmsnorm(kc, h, x, ly->attn_norm, n, E, hp->eps));
    /* one call: h is converted once (quantized on the CPU, bf16 on CUDA) for all three */
    const kern_matmul_op qkv[3] = {
        {q, ly->wq, ly->wq_t, H * D}, {k, ly->wk, ly->wk_t, HKV * D}, {v, ly->wv, ly->wv_t, HKV * D},
    };
    INFER_K(il, kern_matmul_multi(kc, h, n, E, qkv, 3));
    if (gemma) {
        INFER_K(il, kern_rmsnorm(kc, q, q, ly->q_norm, n * H, D, hp->eps));
        INFER_K(il, kern_rmsnorm(kc, k, k, ly->k_norm, n * HKV, D, hp->eps));
    }
    INFER_K(il, kern_rope(kc, q, n, H, D, pos, &rp));
    INFER_K(il, kern_rope(kc, k, n, HKV, D, pos, &rp));
    return INFER_OK;
}

int infer_layer_out(const infer_model *m, kern_ctx *kc, int il, int n, float *x,
                    const float *attn, float *o, float *h, float *gate, float *up,
                    char *err, size_t errlen)
{
    const infer_hparams *hp = &m->hp;
    const infer_layer *ly = &m->layers[il];
    const bool gemma = hp->arch == INFER_ARCH_GEMMA3;
    const int E = hp->n_embd, F = hp->n_ff, Q = hp->n_head * hp->head_dim;
    const infer_dist_hooks *d = m->dist;
    int rc;
    INFER_K(il, kern_matmul(kc, o, attn, ly->wo, ly->wo_t, n, E, Q));
    if (d && d->allreduce && (rc = d->allreduce(d->ud, kc, o, n, E, err, errlen)))
        return rc;
    if (gemma)
        INFER_K(il, kern_rmsnorm(kc, o, o, ly->post_attn_norm, n, E, hp->eps));
    INFER_K(il, kern_add(kc, x, x, o, (size_t)n * E));

    INFER_K(il, kern_rmsnorm(kc, h, x, ly->ffn_norm, n, E, hp->eps));
    const kern_matmul_op gate_up[2] = {{gate, ly->w_gate, ly->w_gate_t, F}, {up, ly->w_up, ly->w_up_t, F}};
    INFER_K(il, kern_matmul_multi(kc, h, n, E, gate_up, 2));
    INFER_K(il, kern_gated(kc, gate, gate, up, (size_t)n * F,
                           gemma ? KERN_ACT_GELU : KERN_ACT_SILU));
    INFER_K(il, kern_matmul(kc, o, gate, ly->w_down, ly->w_down_t, n, E, F));
    if (d && d->allreduce && (rc = d->allreduce(d->ud, kc, o, n, E, err, errlen)))
        return rc;
    if (gemma)
        INFER_K(il, kern_rmsnorm(kc, o, o, ly->post_ffw_norm, n, E, hp->eps));
    INFER_K(il, kern_add(kc, x, x, o, (size_t)n * E));
    if (d && d->send_x && il == hp->n_layer - 1)
        return d->send_x(d->ud, kc, x, n, E, err, errlen);
    return INFER_OK;
}

int infer_head(const infer_model *m, kern_ctx *kc, int n, const float *x, float *h,
               float *logits, char *err, size_t errlen)
{
    const infer_hparams *hp = &m->hp;
    const infer_dist_hooks *d = m->dist;
    if (!d || d->computes_head) {
        INFER_K(-1, kern_rmsnorm(kc, h, x, m->output_norm, n, hp->n_embd, hp->eps));
        INFER_K(-1, kern_matmul(kc, logits, h, m->output, m->output_t, n, m->head_rows,
                                hp->n_embd));
    }
    if (d && d->head)
        return d->head(d->ud, kc, logits, n, hp->n_vocab, err, errlen);
    return INFER_OK;
}
