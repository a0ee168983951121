/* model_internal.h: the layout of infer_model / infer_ctx shared by the model's .c files.
 * Not part of the contract (model.h is). */
#ifndef INFER_MODEL_INTERNAL_H
#define INFER_MODEL_INTERNAL_H

#include "kv_cache.h"
#include "model.h"

struct infer_model {
    infer_gguf *gguf;
    char path[512];
    kern_ctx *kc;          /* where the weights live */
    infer_hparams hp;
    const void *tok_embd;  /* [n_vocab][n_embd] */
    int tok_embd_t;
    const void *output;    /* [n_vocab][n_embd]; == tok_embd when tied */
    int output_t;
    const float *output_norm;
    const float *rope_freqs;   /* n_rot/2 divisors or NULL */
    infer_layer *layers;
    /* Buffers this model allocated (converted or uploaded weights), freed with it. */
    void **owned;
    int n_owned, cap_owned;
    bool owned_on_backend; /* owned[] came from kern_alloc (else malloc) */
    size_t weight_bytes;
};

struct infer_ctx {
    infer_model *m;
    kern_ctx *kc;
    infer_kv_cache kv;
    int n_ctx, n_batch, n_past;
    /* Scratch, backend memory, sized for n_batch tokens. */
    float *x, *h, *q, *k, *v, *attn, *o, *gate, *up;
    float *logits;         /* host: [n_logits][n_vocab] */
    float *logits_dev;     /* backend: one chunk's output rows */
    int n_logits, cap_logits;
    int32_t *pos;          /* host, n_batch */
};

#endif
