/* model_internal.h: the layout of infer_model / infer_ctx shared by the model's .c files.
 * Not part of the contract (model.h is). */
#ifndef INFER_MODEL_INTERNAL_H
#define INFER_MODEL_INTERNAL_H

#include "kv_cache.h"
#include "model.h"

/* Where a distributed job (dist_mpi.c) joins the layer graph: each hook is NULL when
 * not needed, and infer_model.dist is NULL for a single process. Hooks see backend
 * memory (they stage through the host when the backend is not host memory). */
typedef struct infer_dist_hooks {
    void *ud;
    /* Tensor parallel: y[n][E] holds this rank's partial product (after WO, after
     * W_down); replace it by the sum over all ranks. */
    int (*allreduce)(void *ud, kern_ctx *kc, float *y, int n, int E, char *err, size_t errlen);
    /* Pipeline, stages > 0: x[n][E] comes from the previous stage instead of embeddings. */
    int (*recv_x)(void *ud, kern_ctx *kc, float *x, int n, int E, char *err, size_t errlen);
    /* Pipeline, stages before the last: x[n][E] after this stage's last layer goes on. */
    int (*send_x)(void *ud, kern_ctx *kc, const float *x, int n, int E, char *err,
                  size_t errlen);
    /* After the head (when computes_head) or in its place: logits[n][V] are sent to or
     * received from the rank that needs them. */
    int (*head)(void *ud, kern_ctx *kc, float *logits, int n, int V, char *err, size_t errlen);
    bool computes_head;
} infer_dist_hooks;

struct infer_model {
    infer_gguf *gguf;
    char path[512];
    kern_ctx *kc;          /* where the weights live */
    infer_hparams hp;
    const void *tok_embd;  /* [n_vocab][n_embd] */
    int tok_embd_t;
    const void *output;    /* [head_rows][n_embd]: rows head_row0.. of output.weight, or
                            * of token_embd.weight when tied */
    int output_t;
    int head_row0, head_rows;  /* the vocabulary slice this process's head computes:
                                * all of it, or a tensor-parallel rank's share */
    const float *output_norm;
    const float *rope_freqs;   /* n_rot/2 divisors or NULL */
    infer_layer *layers;
    /* Buffers this model allocated (converted or uploaded weights), freed with it. */
    void **owned;
    int n_owned, cap_owned;
    bool owned_on_backend; /* owned[] came from kern_alloc (else malloc) */
    size_t weight_bytes;
    infer_shard shard;
    const infer_dist_hooks *dist;  /* NULL: single process */
    struct infer_dist *dist_owner; /* the job that set dist (dist.h), or NULL */
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
    /* CUDA graph decode (model_gpu.c): the token (host), token and position on the
     * device, the captured step; unused on other backends */
    int32_t graph_tok;
    int32_t *graph_dev;
    struct kern_cuda_graph *graph;   /* kern_cuda.h's kern_cuda_graph */
    bool graph_failed;     /* capture failed once: the step runs eagerly */
};

#ifdef KERN_HAVE_CUDA
#include "kern_cuda.h"
/* model_gpu.c: whether decode steps of m on kc may replay CUDA graphs (a CUDA context,
 * not a distributed model, COMMONS_CUDA_GRAPH not 0 in the environment, read per call). */
bool infer_gpu_graphs_on(const infer_model *m, kern_ctx *kc);
/* Runs step(ud) eagerly (its result is this call's); then, when capture is set and
 * *failed is not, records a second run of it into *graph (NULL on entry; nothing in
 * step may allocate, sync or stage host arrays: bind them). A failed capture is no
 * error: *failed is set, *graph stays NULL and one line naming `what` goes to stderr
 * ("commons: CUDA graph capture of the <what> failed (...)"; tests/gpu/check.sh fails
 * on it). Returns step's status. */
int infer_gpu_run_capture(kern_ctx *kc, int (*step)(void *ud, char *err, size_t errlen), void *ud,
                          bool capture, kern_cuda_graph **graph, bool *failed, const char *what,
                          char *err, size_t errlen);
/* Whether infer_eval's one-token steps replay a CUDA graph on c (infer_gpu_graphs_on);
 * the step itself (logits into c->logits; the caller advances n_past); freeing with
 * the ctx. */
bool infer_gpu_graph_ok(const infer_ctx *c);
int infer_gpu_decode(infer_ctx *c, int32_t token, char *err, size_t errlen);
void infer_gpu_free(infer_ctx *c);
#endif

/* ---- the per-layer graph, shared by infer_eval (model_eval.c) and the batched step
 * (batch.c), so that both compute the same numbers (model_layer.c) ---- */

/* Whether layer il attends through the sliding window (Gemma 3 local layers). */
bool infer_layer_local(const infer_hparams *hp, int il);
/* Token embeddings of n tokens into x[n][E] (scaled for Gemma 3). Ids must be valid. */
int infer_embed(const infer_model *m, kern_ctx *kc, const int32_t *tokens, int n, float *x,
                char *err, size_t errlen);
/* Rows x[n][E] -> q[n][H*D], k, v[n][HKV*D], normed and roped at pos[] (host); h[n][E]
 * is scratch. */
int infer_layer_qkv(const infer_model *m, kern_ctx *kc, int il, int n, const int32_t *pos,
                    const float *x, float *h, float *q, float *k, float *v,
                    char *err, size_t errlen);
/* attn[n][H*D] -> x += WO attn (+post-norm); x += FFN(x) (+post-norm). Scratch o, h [n][E],
 * gate, up [n][F]. */
int infer_layer_out(const infer_model *m, kern_ctx *kc, int il, int n, float *x,
                    const float *attn, float *o, float *h, float *gate, float *up,
                    char *err, size_t errlen);
/* Final norm of rows x[n][E] into h, then logits[n][V] = h . output^T (backend memory). */
int infer_head(const infer_model *m, kern_ctx *kc, int n, const float *x, float *h,
               float *logits, char *err, size_t errlen);

/* A kernel call inside layer il; a failure becomes an infer status with the kernel's
 * message. Needs kc, err, errlen in scope. */
#define INFER_K(il, call) \
    do { int krc_ = (call); \
         if (krc_ != KERN_OK) { \
             snprintf(err, errlen, "forward pass, %s %d: %s", (il) < 0 ? "outside layers" : \
                      "layer", (il), kern_ctx_error(kc)); \
             return krc_ == KERN_ENOMEM ? INFER_ENOMEM : \
                    krc_ == KERN_ENOTSUP ? INFER_EUNSUPPORTED : INFER_EINVAL; } } while (0)

#endif
