/* batch.h: one forward step over many sequences at once, over a paged KV cache.
 *
 * The engine of continuous batching (commons-serve). A step takes any mix of
 * sequences, each contributing n_tokens >= 1 consecutive tokens at positions
 * n_past .. n_past+n_tokens-1: one token for a sequence that is generating, a chunk
 * of its prompt for one that is prefilling. All tokens of the step go through every
 * weight matrix together (one matmul per weight per step: the weights are read once
 * for the whole batch), attention runs per sequence over its block table.
 *
 * Same numbers as infer_eval: for one sequence, the logits of a token are those
 * infer_eval computes for it with the same model and KV type (per-row kernels and the
 * same attention kernel over the same keys), whatever else is in the step.
 *
 * An infer_batch is used by one thread at a time (it owns scratch and uses kc). */
#ifndef INFER_BATCH_H
#define INFER_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "paged_kv.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct infer_batch_params {
    int max_tokens;  /* tokens per step, all sequences together (>= 1) */
    int max_logits;  /* sequences per step that want logits (>= 1) */
    int n_ctx;       /* longest sequence in positions (<= the model's context_length) */
    bool paged_kernels; /* store and attend with kern_kv_store_paged / kern_attention_paged
                           even on host memory (device backends always do): the CPU
                           reference of the device path, for tests; same logits */
} infer_batch_params;

/* One sequence's part of a step. */
typedef struct infer_batch_seq {
    const infer_block_table *bt;  /* must cover n_past + n_tokens positions */
    int n_past;                   /* positions already in the cache */
    const int32_t *tokens;        /* n_tokens ids (host) */
    int n_tokens;
    bool logits;                  /* want the logits of the last of the tokens */
} infer_batch_seq;

typedef struct infer_batch infer_batch;

/* Any backend (CPU or CUDA): scratch lives in kc's memory, the logits are copied to
 * host memory. kv must have been created with the model's n_layer / n_head_kv /
 * head_dim; on a device backend the model and kv must have been loaded/created on kc
 * itself. */
int infer_batch_create(infer_model *m, kern_ctx *kc, infer_paged_kv *kv,
                       const infer_batch_params *p, infer_batch **out,
                       char *err, size_t errlen);
void infer_batch_free(infer_batch *b);   /* NULL is fine */

/* Evaluate one step and write each sequence's new keys/values into its blocks.
 * INFER_EINVAL (message names the sequence) for a bad token, too many tokens or
 * logits for the step, a block table too short, or a sequence beyond n_ctx; nothing
 * was evaluated then. */
int infer_batch_step(infer_batch *b, const infer_batch_seq *seqs, int n_seqs,
                     char *err, size_t errlen);

/* Logits of the last step: row i ([n_vocab] floats) belongs to the i-th sequence,
 * in step order, that asked for logits. NULL (*n_rows 0) when the step gave
 * candidates instead (infer_batch_set_top). */
const float *infer_batch_logits(const infer_batch *b, int *n_rows);

/* Candidates instead of whole rows of logits (commons-serve on a GPU): with k > 0, each
 * later step's rows are reduced on the device to their k best (value, id) pairs,
 * sorted descending (ties: lower id first), and only those are downloaded (n x k x 8
 * bytes instead of n x n_vocab x 4); the step then has no logits (infer_batch_logits
 * gives NULL) but infer_batch_top. k 0 turns it off. Only on CUDA and for a model that
 * is not distributed: elsewhere this succeeds and steps keep giving logits (the
 * caller learns which from infer_batch_top after each step). INFER_EINVAL for k outside
 * [0, INFER_SAMPLER_TOP_MAX]; INFER_ENOMEM when the device has no room for the
 * candidates (allocated once). Not during a step. */
int infer_batch_set_top(infer_batch *b, int k, char *err, size_t errlen);
/* The last step's candidates: row i's k values at [i * k, i * k + k), its ids likewise
 * in *ids; NULL (and *n_rows = *k = 0) when the last step gave logits instead. */
const float *infer_batch_top(const infer_batch *b, const int32_t **ids, int *n_rows, int *k);

/* How b's decode-only steps ran on CUDA (every sequence one token, all wanting logits;
 * see batch.c): replayed from a captured CUDA graph, run eagerly (the first step of a
 * given number of sequences, then captured; COMMONS_CUDA_GRAPH=0; more than 64
 * sequences; or after a failed capture), graphs captured. All 0 on other backends and
 * for steps with prompt tokens, which never use graphs. */
typedef struct infer_batch_stats {
    long replayed, eager, captured;
} infer_batch_stats;
void infer_batch_get_stats(const infer_batch *b, infer_batch_stats *out);

#ifdef __cplusplus
}
#endif
#endif
