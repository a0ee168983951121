/* kern_cuda.h: the CUDA backend's internal interface (not part of the
 * kernels.h contract). kern_ctx_create(KERN_BACKEND_CUDA) reaches
 * kern_cuda_init; everything else here is for callers that know they run
 * on CUDA (inference/'s GPU decode step, tests/gpu, bench/infer-gpu) and
 * need what a fast GPU decode needs beyond kernels.h:
 *  - the ctx's stream (every operation is asynchronous on it; kern_sync or
 *    kern_download waits),
 *  - capture of a sequence of operations into a CUDA graph and its replay,
 *  - variants of the operations that take host arrays (positions, token ids)
 *    which read them from device memory instead, and attention / KV-store
 *    positions read from a device int, so a captured decode step stays valid
 *    from one token to the next (see docs/cuda.md),
 *  - greedy and top-k sampling on the device.
 * Every function returns a kern_status and fills kern_ctx_error(ctx). */
#ifndef COMMONS_KERN_CUDA_H
#define COMMONS_KERN_CUDA_H

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills ctx's backend table for device ordinal `device`. Fails with
 * KERN_EBACKEND and a message ("no CUDA device", driver too old, ...) when
 * the device cannot be used; ctx is then left for the caller to free. */
int kern_cuda_init(kern_ctx *ctx, int device);
/* 1 if ctx is a CUDA context. */
int kern_cuda_is(const kern_ctx *ctx);
/* The cudaStream_t of ctx (as void *), NULL for other backends. */
void *kern_cuda_stream(kern_ctx *ctx);
/* "NVIDIA H200, 139 GiB, cc 9.0" into buf. */
int kern_cuda_describe(kern_ctx *ctx, char *buf, size_t len);

/* kern_host_alloc / kern_host_free on CUDA: page-locked (pinned) host memory. */
void *kern_cuda_host_alloc(kern_ctx *ctx, size_t bytes);
void kern_cuda_host_free(kern_ctx *ctx, void *p);

/* Device-to-device copy of bytes on ctx's stream (e.g. gathering paged KV
 * blocks, which inference/batch.c does with memcpy on the CPU). */
int kern_cuda_copy(kern_ctx *ctx, void *dst_dev, const void *src_dev, size_t bytes);
/* kern_kv_gather on the device (api.c has validated the arguments; ids is
 * host memory, staged like kern_get_rows' ids; the device clamps ids to the pool). */
int kern_cuda_kv_gather(kern_ctx *ctx, void *dst, const kern_kv_layout *dst_l, const void *pool,
                        const kern_kv_layout *block, int n_pool, const int32_t *ids, int n_ids);
/* kern_kv_store_paged and kern_attention_paged on the device (validated by api.c;
 * slots and block tables are staged; the device clamps them to the pool). */
int kern_cuda_kv_store_paged(kern_ctx *ctx, void *pool, const kern_kv_layout *block, int n_pool,
                             const int32_t *slots, int n, const float *src);
int kern_cuda_attention_paged(kern_ctx *ctx, float *out, const float *q, const void *k_pool,
                              const void *v_pool, const kern_kv_layout *block, int n_pool,
                              const kern_paged_seq *seqs, int n_seqs, int n_head, int window,
                              float scale);
/* Two kern_kv_store_paged in one launch: row i of k_src and of v_src ([n][n_head_kv]
 * [head_dim]) to slot slots[i] of k_pool and of v_pool (same layout). slots is a host
 * array (checked against the pool here; staged, or read from its bound device copy). */
int kern_cuda_kv_store_paged_kv(kern_ctx *ctx, void *k_pool, void *v_pool, const kern_kv_layout *block,
                                int n_pool, const int32_t *slots, int n, const float *k_src,
                                const float *v_src);

/* kern_attention_paged for `n_rows` decode rows whose positions and block tables are
 * already device memory, so the call can be captured in a CUDA graph and replayed with
 * new values uploaded in place. meta_dev[3 * n_rows]: per row its position p (it sees
 * keys lo .. p, lo = p - window + 1 clamped at 0, window 0 = all), the offset of its
 * table in tables_dev, the blocks in its table (read at most max_blocks of them); a row
 * with p = -1 sees nothing and its output row is left untouched. Key j of a row is slot
 * j % block->capacity of block tables_dev[off + j / block->capacity] (ids clamped to
 * [0, n_pool)). The launch grid depends only on n_rows, n_head, max_blocks and window,
 * never on the values (the split is sized for max_blocks * capacity keys, or the
 * window): one launch for every row of the call, plus a merge launch when the keys
 * are split over several blocks (few query-heads; with many, each block merges its
 * warps itself). */
int kern_cuda_attention_paged_dev(kern_ctx *ctx, float *out, const float *q, const void *k_pool,
                                  const void *v_pool, const kern_kv_layout *block, int n_pool,
                                  const int32_t *meta_dev, const int32_t *tables_dev, int max_blocks,
                                  int n_rows, int n_head, int window, float scale);

/* ---- CUDA graphs ----
 * Between begin and end, operations on ctx are recorded, not run; end
 * instantiates them as *graph (replaces and frees a previous one). Host
 * arrays (pos, ids) are refused during capture (their replay would read stale
 * values): use the *_dev variants below for anything that changes between
 * replays, and run the sequence once before capturing it (scratch
 * buffers cannot grow during capture). Allocation, upload, download and
 * sync are refused during capture. A graph stays valid until freed: scratch
 * that grows later (a longer prompt) gets new memory and the old buffers
 * are kept until the ctx is destroyed. Graphs must be freed before their ctx. */
typedef struct kern_cuda_graph kern_cuda_graph;
int kern_cuda_graph_begin(kern_ctx *ctx);
int kern_cuda_graph_end(kern_ctx *ctx, kern_cuda_graph **graph);
int kern_cuda_graph_launch(kern_ctx *ctx, kern_cuda_graph *graph);
void kern_cuda_graph_free(kern_cuda_graph *graph);

/* ---- host arrays bound to device memory ----
 * While bound, an operation given exactly `host` (the same pointer, at most `bytes`
 * bytes: kern_rope's positions, kern_get_rows' ids) reads `dev` instead of a staged
 * copy, also during graph capture. So code written against kernels.h with host
 * arrays can be captured unchanged: the caller uploads the new values to dev before
 * running or replaying. Bind only around such runs (an unrelated use of the same
 * host array while bound would read dev). At most 8 bindings. */
int kern_cuda_bind(kern_ctx *ctx, const void *host, size_t bytes, const void *dev);
void kern_cuda_unbind_all(kern_ctx *ctx);

/* ---- device-side positions and ids (all pointers are device memory) ----
 * pos_dev[n_tok]; ids_dev[n_ids] (not range-checked on the device: ids
 * outside [0, n_rows) are clamped, so a bad id cannot fault the GPU).
 * pos0_dev: one int, the position of the first token / query. */
int kern_cuda_rope_dev(kern_ctx *ctx, float *x, int n_tok, int n_head, int head_dim,
                       const int32_t *pos_dev, const kern_rope_params *p);
int kern_cuda_get_rows_dev(kern_ctx *ctx, float *dst, const void *table, int t, int n_rows,
                           int dim, const int32_t *ids_dev, int n_ids);
int kern_cuda_kv_store_dev(kern_ctx *ctx, void *cache, const kern_kv_layout *l,
                           const int32_t *pos0_dev, int n, const float *src);
/* As kern_attention with q_pos0 = *pos0_dev and n_kv = *pos0_dev + n_q; p->q_pos0
 * and p->n_kv are ignored. */
int kern_cuda_attention_dev(kern_ctx *ctx, float *out, const float *q, const void *k_cache,
                            const void *v_cache, const kern_kv_layout *l,
                            const kern_attn_params *p, const int32_t *pos0_dev);

/* ---- sampling on the device ----
 * logits[n][vocab] (device). argmax: out_dev[i] = index of the largest logit
 * of row i (lowest index on ties), out_dev device memory. top-k: the k
 * largest logits of each row, sorted descending (ties: lower index first),
 * into vals_dev[n][k] and idx_dev[n][k]; 1 <= k <= 256. */
int kern_cuda_argmax(kern_ctx *ctx, int32_t *out_dev, const float *logits, int n, int vocab);
int kern_cuda_topk(kern_ctx *ctx, float *vals_dev, int32_t *idx_dev, const float *logits, int n,
                   int vocab, int k);

#ifdef __cplusplus
}
#endif
#endif
