/* model.h: transformer language models from GGUF files — Llama family and Gemma 3.
 *
 * infer_model is the immutable part: hyper-parameters read from the GGUF metadata
 * and the weights (used in place from the mmap'ed file; only norm vectors stored in
 * another type than F32 are converted once at load). Loading validates every
 * tensor's presence, type and shape against the hyper-parameters and names the
 * offending tensor and the expected shape when something is wrong.
 *
 * infer_ctx is one sequence being evaluated: its KV cache, scratch buffers and the
 * logits of the last evaluation. A model can serve many contexts; one context is
 * used by one thread at a time, with a kern_ctx of its own.
 *
 * Architectures (general.architecture):
 *   "llama"  — Llama 2/3 (incl. rope_freqs frequency factors and linear RoPE scaling),
 *              TinyLlama, SmolLM, Mistral-style grouped-query attention; output
 *              projection tied to the embeddings when output.weight is absent.
 *   "gemma3" — embeddings scaled by sqrt(n_embd); pre- and post-norms around
 *              attention and FFN; per-head QK RMSNorm; GELU(tanh)-gated FFN; NeoX
 *              RoPE; 5 sliding-window layers (RoPE base 10000 or rope.freq_base_swa)
 *              then 1 global layer (or attention.sliding_window_pattern's period)
 *              (RoPE base rope.freq_base, scaled by rope.scaling.*); tied output.
 *              Norm weights are used as stored (llama.cpp's converter already
 *              added Gemma's +1). */
#ifndef INFER_MODEL_H
#define INFER_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

enum infer_arch {
    INFER_ARCH_LLAMA = 1,
    INFER_ARCH_GEMMA3 = 2
};

/* Gemma 3 interleaves 5 local (sliding-window) layers with 1 global layer, unless
 * gemma3.attention.sliding_window_pattern gives another period (as llama.cpp reads it). */
#define INFER_GEMMA3_SWA_PATTERN 6

typedef struct infer_hparams {
    int arch;              /* enum infer_arch */
    char arch_name[16];    /* "llama", "gemma3" */
    int n_vocab;           /* rows of token_embd.weight */
    int n_ctx_train;       /* context_length */
    int n_embd;            /* embedding_length */
    int n_layer;           /* block_count */
    int n_ff;              /* feed_forward_length */
    int n_head;            /* attention.head_count */
    int n_head_kv;         /* attention.head_count_kv (default n_head) */
    int head_dim;          /* attention.key_length (= value_length; default n_embd/n_head) */
    int n_rot;             /* rope.dimension_count (default head_dim) */
    float eps;             /* attention.layer_norm_rms_epsilon */
    float rope_base;       /* rope.freq_base (global layers on Gemma 3) */
    float rope_scale;      /* 1/rope.scaling.factor for linear scaling, else 1 */
    float rope_base_local; /* Gemma 3 sliding-window layers: rope.freq_base_swa or 10000 */
    int sliding_window;    /* Gemma 3 attention.sliding_window; 0 = none */
    int swa_period;        /* layer il is local iff (il + 1) % swa_period != 0 */
    float attn_scale;      /* 1/sqrt(head_dim) */
    bool tied_output;      /* no output.weight: logits use token_embd.weight */
    /* A shard (infer_model_load_shard) keeps the hyper-parameters of its own slice:
     * n_head, n_head_kv, n_ff (tensor parallel) or n_layer (pipeline stage) are local
     * then. first_layer is the file's index of layers[0] (0 unless a pipeline stage). */
    int first_layer;
} infer_hparams;

/* One layer's weights as the kernels take them. Matrices are [rows=out][k=in]
 * in type *_t; norm vectors are f32. Pointers are backend memory. */
typedef struct infer_layer {
    const float *attn_norm, *q_norm, *k_norm, *post_attn_norm, *ffn_norm, *post_ffw_norm;
    const void *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
    int wq_t, wk_t, wv_t, wo_t, w_gate_t, w_up_t, w_down_t;
} infer_layer;

typedef struct infer_model infer_model;

/* Progress while loading (fraction 0..1 of bytes touched); may be NULL. */
typedef void (*infer_progress_fn)(void *ud, double fraction);

/* Open, validate and prepare a model. On failure *out is NULL and err says which
 * file, key or tensor is wrong and what was expected. The kern_ctx decides where
 * the weights live (host memory: used in place from the mapping). */
int infer_model_load(const char *path, kern_ctx *kc, infer_progress_fn progress, void *ud,
                     infer_model **out, char *err, size_t errlen);
void infer_model_free(infer_model *m);   /* NULL is fine */

/* Which slice of the model a process of a distributed job holds (dist.h runs them). */
enum infer_shard_kind {
    INFER_SHARD_NONE = 0,
    INFER_SHARD_TP = 1,   /* tensor parallel: heads and FFN columns split n ways */
    INFER_SHARD_PP = 2    /* pipeline: a contiguous range of layers (stage `rank`) */
};
typedef struct infer_shard {
    int kind;             /* enum infer_shard_kind */
    int rank, n;          /* this slice, 0 <= rank < n */
} infer_shard;

/* Load one slice (shard NULL or kind NONE: the whole model, as infer_model_load).
 * Tensor parallel, rank r of n: the r-th n-th of the query heads (n_head % n == 0),
 * of the KV heads (n_head_kv % n == 0; when n_head_kv < n and n % n_head_kv == 0,
 * each rank keeps the one KV head its query heads use, replicated), and of the FFN
 * (n_ff % n == 0). WQ/WK/WV/gate/up rows are used in place from the mapping; the
 * column slices of WO and W_down (whose widths must be multiples of the type's block)
 * are copied into owned buffers and their mapped pages released, so only the slice
 * stays resident. The output head computes the r-th n-th of the vocabulary (rows
 * [V*r/n, V*(r+1)/n) of output.weight, or of the embeddings when tied); embeddings
 * and norms are replicated.
 * Pipeline, stage r of n: layers [r*L/n, (r+1)*L/n) only (L >= n); the embeddings
 * are read by stage 0, the head by the last stage only; the other layers' tensors
 * are not validated. A shard's embedding table is neither touched at load nor counted
 * in infer_model_weight_bytes (only the rows of the tokens it meets come in), except
 * for the rows its head reads. Errors name the shape that cannot be split. */
int infer_model_load_shard(const char *path, kern_ctx *kc, const infer_shard *shard,
                           infer_progress_fn progress, void *ud, infer_model **out,
                           char *err, size_t errlen);
const infer_shard *infer_model_shard(const infer_model *m);

const infer_hparams *infer_model_hparams(const infer_model *m);
const infer_gguf *infer_model_gguf(const infer_model *m);
/* Bytes of weights in use (mapped plus converted copies). */
size_t infer_model_weight_bytes(const infer_model *m);

/* ---- evaluation ---- */
typedef struct infer_ctx infer_ctx;

typedef struct infer_ctx_params {
    int n_ctx;      /* KV cache capacity in positions (0: min(n_ctx_train, 4096)) */
    int n_batch;    /* tokens evaluated per forward chunk (0: 256) */
    int kv_type;    /* KERN_TYPE_F32 or KERN_TYPE_F16 (0 is F32) */
} infer_ctx_params;

int infer_ctx_create(infer_model *m, kern_ctx *kc, const infer_ctx_params *p,
                     infer_ctx **out, char *err, size_t errlen);
void infer_ctx_free(infer_ctx *c);   /* NULL is fine */

/* Evaluate n tokens at positions n_past .. n_past+n-1 and append them to the cache.
 * all_logits: keep the logits of every one of the n positions (for tests), else
 * only of the last. Fails with INFER_ERANGE when the cache would overflow and
 * INFER_EINVAL for a token id outside the vocabulary; the cache is unchanged then. */
int infer_eval(infer_ctx *c, const int32_t *tokens, int n, bool all_logits,
               char *err, size_t errlen);

/* Logits of the last infer_eval: row i of [n_rows][n_vocab], i < n_rows. */
const float *infer_logits(const infer_ctx *c, int *n_rows);
int infer_ctx_n_past(const infer_ctx *c);
int infer_ctx_n_ctx(const infer_ctx *c);
/* Forget positions >= n_past (keeping a shared prefix between requests). */
int infer_ctx_truncate(infer_ctx *c, int n_past);

#ifdef __cplusplus
}
#endif
#endif
