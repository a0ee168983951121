/* kernels.h: the contract of the compute kernels of the inference core.
 *
 * One C interface, several backends. A kern_ctx is created for one backend
 * (KERN_BACKEND_CPU, or KERN_BACKEND_CUDA in builds with nvcc) and every
 * operation takes it as its first argument. All tensor pointers passed to an
 * operation live in that backend's memory: host memory for the CPU backend,
 * device memory for CUDA. Memory is obtained and moved with kern_alloc /
 * kern_upload / kern_download so a model graph written against this header
 * runs on either backend unchanged (on the CPU backend these are malloc and
 * memcpy, and mmap'ed GGUF weights may be passed directly).
 *
 * Conventions
 *  - Tensors are dense, row-major, with no padding between rows.
 *  - Errors are values: every operation returns KERN_OK (0) or a negative
 *    kern_status, and fills a message retrievable with kern_ctx_error().
 *    Bad arguments (NULL pointers, non-positive sizes, k not a multiple of
 *    the block size, unknown type, n_head not a multiple of n_head_kv) are
 *    reported, never crash.
 *  - A kern_ctx is used by one calling thread at a time (it owns scratch
 *    buffers and a thread pool). Use one ctx per serving thread.
 *  - Type ids and quantized block layouts are exactly ggml's, as stored in
 *    GGUF files, so tensor data can be used straight from the file.
 */
#ifndef COMMONS_KERNELS_H
#define COMMONS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- types */

/* Tensor element types: values are GGUF/ggml type ids. */
typedef enum kern_type {
    KERN_TYPE_F32 = 0,
    KERN_TYPE_F16 = 1,
    KERN_TYPE_Q4_0 = 2,  /* 32 elems: {f16 d; u8 qs[16]}          x = d*(q-8)  */
    KERN_TYPE_Q4_1 = 3,  /* 32 elems: {f16 d, m; u8 qs[16]}       x = d*q + m  */
    KERN_TYPE_Q5_0 = 6,  /* 32 elems: {f16 d; u8 qh[4]; u8 qs[16]} x = d*(q-16); bit j of
                            the little-endian u32 qh is the 5th bit of element j */
    KERN_TYPE_Q5_1 = 7,  /* 32 elems: {f16 d, m; u8 qh[4]; u8 qs[16]} x = d*q + m */
    KERN_TYPE_Q8_0 = 8,  /* 32 elems: {f16 d; i8 qs[32]}          x = d*q      */
    KERN_TYPE_Q4_K = 12, /* 256 elems: {f16 d,dmin; u8 scales[12]; u8 qs[128]} */
    KERN_TYPE_Q5_K = 13, /* 256 elems: {f16 d,dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} */
    KERN_TYPE_Q6_K = 14, /* 256 elems: {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d} */
    KERN_TYPE_BF16 = 30,
} kern_type;

/* Internal weight type (not a GGUF id, not reported by kern_type_supported):
 * Q4_0 repacked by kern_repack for the CPU backend. Each group of 4 rows is
 * stored as the 4 rows' bytes were (4 * k/32 * 18 bytes), in pieces of 8
 * blocks: 64 bytes of the 32 f16 scales (index 16h + 4r + j: row r, block
 * 4h + j), then per block j the 16 quant bytes of rows 0..3. One decode
 * pass reads a group as one contiguous stream. Only kern_matmul and
 * kern_matmul_multi accept it, on a context whose kern_repack_type chose it. */
#define KERN_TYPE_Q4_0_R4 31

/* 1 if t is one of the types above, else 0 (t may be any GGUF type id). */
int kern_type_supported(int t);
/* "f32", "q4_K", ...; "unknown" for unsupported ids. */
const char *kern_type_name(int t);
/* Elements per block (1 for F32/F16/BF16, 32 for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, 256 for K-quants);
 * 0 for unsupported ids. */
size_t kern_type_block_elems(int t);
/* Bytes per block (f32 4, f16 2, q4_0 18, q4_1 20, q5_0 22, q5_1 24, q8_0 34, q4_K 144, q5_K 176,
 * q6_K 210, bf16 2); 0 for unsupported ids. */
size_t kern_type_block_bytes(int t);
/* Bytes of a row of k elements; 0 if t is unsupported or k is not a
 * multiple of the block size. */
size_t kern_row_bytes(int t, int64_t k);

/* Status codes (negative; KERN_OK is 0). */
typedef enum kern_status {
    KERN_OK = 0,
    KERN_EINVAL = -1,  /* bad argument: see kern_ctx_error() */
    KERN_ENOMEM = -2,  /* allocation failed */
    KERN_ENOTSUP = -3, /* operation or type not supported by this backend */
    KERN_EBACKEND = -4 /* backend failure (thread creation, CUDA error...) */
} kern_status;

/* ------------------------------------------------------------- context */

typedef enum kern_backend {
    KERN_BACKEND_CPU = 0,
    KERN_BACKEND_CUDA = 1, /* builds without nvcc: kern_ctx_create says it is not built in */
} kern_backend;

typedef struct kern_config {
    kern_backend backend;
    int n_threads; /* CPU: worker threads including the caller; <= 0 means 1 */
    int device;    /* CUDA: device ordinal (ignored on the CPU) */
} kern_config;

typedef struct kern_ctx kern_ctx;

/* Creates a context. On failure returns a status, sets *out to NULL and
 * writes a message into err (err may be NULL). */
int kern_ctx_create(const kern_config *cfg, kern_ctx **out, char *err, size_t errlen);
void kern_ctx_destroy(kern_ctx *ctx);
/* Message of the last failed call on ctx ("" if none). */
const char *kern_ctx_error(const kern_ctx *ctx);
kern_backend kern_ctx_backend(const kern_ctx *ctx);
int kern_ctx_threads(const kern_ctx *ctx);
/* Where ctx computes, for logs: "CPU, 2 threads (avx512)", or "CUDA: <name, memory,
 * compute capability, SMs, device ordinal>". Always writes a terminated string into buf. */
void kern_ctx_describe(kern_ctx *ctx, char *buf, size_t len);
/* 1 if the backend's memory is host memory (pointers to mmap'ed weights and
 * malloc'ed buffers can be passed directly), 0 otherwise. */
int kern_ctx_host_memory(const kern_ctx *ctx);
/* Load-time repacking of weights for faster CPU kernels. The type
 * kern_repack would give t (m rows of k) on ctx: KERN_TYPE_Q4_0_R4 for Q4_0
 * when ctx uses host memory, the active ISA has its decode kernel, m is a
 * multiple of 4 and k of 256, and COMMONS_KERN_REPACK is not "0";
 * otherwise t itself (nothing to do). Matrices read by kern_get_rows
 * (embeddings) must not be repacked. */
int kern_repack_type(kern_ctx *ctx, int t, int64_t m, int64_t k);
/* Writes src (m rows of k, type t, as in the file) into dst (the same
 * number of bytes, 64-byte aligned, not overlapping src) in the layout of
 * kern_repack_type(ctx, t, m, k); KERN_EINVAL when that is t itself. */
int kern_repack(kern_ctx *ctx, void *dst, const void *src, int t, int64_t m, int64_t k);
/* Waits until every operation issued on ctx has finished (CPU: no-op, all
 * operations are synchronous there). */
int kern_sync(kern_ctx *ctx);

/* Backend memory. kern_alloc returns 64-byte aligned memory or NULL (message
 * in kern_ctx_error). */
void *kern_alloc(kern_ctx *ctx, size_t bytes);
void kern_free(kern_ctx *ctx, void *p);
int kern_upload(kern_ctx *ctx, void *dst_backend, const void *src_host, size_t bytes);
int kern_download(kern_ctx *ctx, void *dst_host, const void *src_backend, size_t bytes);
/* Host memory that kern_upload / kern_download move fastest (CUDA: pinned, so copies
 * run at full bus speed; CPU: 64-byte aligned malloc). NULL on failure (message in
 * kern_ctx_error). Free with kern_host_free on the same ctx. */
void *kern_host_alloc(kern_ctx *ctx, size_t bytes);
void kern_host_free(kern_ctx *ctx, void *p);
/* Backend memory to backend memory (CPU: memcpy; CUDA: a device-to-device
 * copy ordered with the other operations). The ranges must not overlap. */
int kern_copy(kern_ctx *ctx, void *dst_backend, const void *src_backend, size_t bytes);

/* ------------------------------------------------------- CPU ISA choice */

typedef enum kern_isa {
    KERN_ISA_PORTABLE = 0, /* plain C, runs everywhere */
    KERN_ISA_AVX2 = 1,     /* AVX2 + FMA + F16C */
    KERN_ISA_AVX512 = 2,   /* AVX2 plus AVX-512 F/BW/VL/VNNI kernels where they help */
} kern_isa;

/* The best ISA this CPU supports. The active ISA starts there unless the
 * environment variable COMMONS_KERN_ISA (portable, avx2 or avx512) names
 * another one the CPU supports. */
kern_isa kern_isa_best(void);
kern_isa kern_get_isa(void);
/* 1 if this CPU (and build) can run isa. */
int kern_isa_supported(kern_isa isa);
/* Process-wide; returns KERN_ENOTSUP (and changes nothing) if the CPU lacks
 * the ISA. Not to be called while operations run. */
int kern_set_isa(kern_isa isa);
const char *kern_isa_name(kern_isa isa);

/* ------------------------------------------- conversions (host helpers) */

float kern_f16_to_f32(uint16_t h);
uint16_t kern_f32_to_f16(float f); /* round to nearest even; inf/nan kept */
float kern_bf16_to_f32(uint16_t h);
uint16_t kern_f32_to_bf16(float f); /* round to nearest even; nan kept */
void kern_f16_to_f32_row(float *dst, const uint16_t *src, size_t n);
void kern_f32_to_f16_row(uint16_t *dst, const float *src, size_t n);
void kern_bf16_to_f32_row(float *dst, const uint16_t *src, size_t n);
void kern_f32_to_bf16_row(uint16_t *dst, const float *src, size_t n);

/* Host-side quantization, for writers of GGUF files and tests: n_rows rows
 * of k floats into dst (n_rows * kern_row_bytes(t, k) bytes). Any supported
 * type; k must be a multiple of the type's block size. Returns a status;
 * msg (may be NULL) gets the reason on failure. */
int kern_quantize(int t, void *dst, const float *src, int64_t n_rows, int64_t k,
                  char *msg, size_t msglen);
/* Host-side dequantization of n elements (a multiple of the block size). */
int kern_dequantize(int t, float *dst, const void *src, int64_t n, char *msg, size_t msglen);

/* ----------------------------------------------------------- operations
 * Pointers are backend memory. Unless stated, outputs may not alias inputs
 * except where "in place" is allowed. */

/* y[n][m] = x[n][k] . W[m][k]^T, W of type wt (rows are output features, as
 * in ggml). Quantized W: x is quantized once per call (Q8_0 blocks for
 * Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, 256-element Q8_K blocks for K-quants) and integer dot products
 * are used. k must be a multiple of wt's block size. */
int kern_matmul(kern_ctx *ctx, float *y, const float *x, const void *w, int wt,
                int n, int m, int k);

/* One weight of a kern_matmul_multi: y[n][m] = x . W[m][k]^T, W of type wt. */
typedef struct kern_matmul_op {
    float *y;
    const void *w;
    int wt;
    int m;
} kern_matmul_op;

#define KERN_MATMUL_MAX_OPS 16
/* Several matmuls sharing the input x[n][k] (Q/K/V, gate/up) in one call:
 * x is quantized once per activation format and all weights' rows are split
 * over the threads in one dispatch. Same rules as kern_matmul per weight;
 * 1 <= n_ops <= KERN_MATMUL_MAX_OPS; outputs must not alias x. */
int kern_matmul_multi(kern_ctx *ctx, const float *x, int n, int k, const kern_matmul_op *ops, int n_ops);

/* Embedding lookup: dst[i][0..dim) = row ids[i] of table[n_rows][dim] (type t),
 * dequantized to f32. ids is host memory on every backend; every id must be
 * in [0, n_rows). */
int kern_get_rows(kern_ctx *ctx, float *dst, const void *table, int t, int n_rows, int dim,
                  const int32_t *ids, int n_ids);

/* RMSNorm per row: y = x / sqrt(mean(x^2) + eps) * w (w may be NULL: no
 * weight). n rows of dim. In place (y == x) allowed. For QK-norm pass
 * n = n_tokens * n_heads, dim = head_dim. */
int kern_rmsnorm(kern_ctx *ctx, float *y, const float *x, const float *w, int n, int dim,
                 float eps);

typedef enum kern_rope_mode {
    KERN_ROPE_NORMAL = 0, /* rotate pairs (x[2i], x[2i+1]): Llama GGUFs */
    KERN_ROPE_NEOX = 2,   /* rotate pairs (x[i], x[i+n_rot/2]): Gemma, NeoX */
} kern_rope_mode;

typedef struct kern_rope_params {
    kern_rope_mode mode;
    int n_rot;                  /* rotated dims (even, <= head_dim); rest untouched */
    float freq_base;            /* theta base, e.g. 10000 or 500000 */
    float freq_scale;           /* linear scaling: angle *= freq_scale (1 = none) */
    const float *freq_factors;  /* NULL or n_rot/2 divisors (Llama 3 rope_freqs),
                                   backend memory */
} kern_rope_params;

/* Rotary embedding in place on x[n_tok][n_head][head_dim]; token t is at
 * position pos[t] (pos: host memory). For pair i (0 <= i < n_rot/2):
 * angle = pos * freq_scale * freq_base^(-2i/n_rot) / freq_factors[i]. */
int kern_rope(kern_ctx *ctx, float *x, int n_tok, int n_head, int head_dim,
              const int32_t *pos, const kern_rope_params *p);

/* Softmax of each of n rows of dim, in place. */
int kern_softmax(kern_ctx *ctx, float *x, int n, int dim);

typedef enum kern_act {
    KERN_ACT_SILU = 0, /* x * sigmoid(x) */
    KERN_ACT_GELU = 1, /* tanh approximation (Gemma's gelu_pytorch_tanh) */
} kern_act;

/* y[i] = act(x[i]), n elements; in place allowed. */
int kern_act_apply(kern_ctx *ctx, float *y, const float *x, size_t n, kern_act act);
/* Gated activation: y[i] = act(g[i]) * u[i]; y may alias g or u. */
int kern_gated(kern_ctx *ctx, float *y, const float *g, const float *u, size_t n, kern_act act);
/* Element-wise, n elements; y may alias an input. */
int kern_add(kern_ctx *ctx, float *y, const float *a, const float *b, size_t n);
int kern_mul(kern_ctx *ctx, float *y, const float *a, const float *b, size_t n);
int kern_scale(kern_ctx *ctx, float *y, const float *x, float s, size_t n);

/* ------------------------------------------------------------ KV cache
 * One layer's K (or V) cache is a buffer of kern_kv_bytes() bytes laid out
 * [n_head_kv][capacity][head_dim] of type F32 or F16 (F16 halves memory;
 * values are rounded to f16 when stored, attention accumulates in f32).
 * Head-major so that attention reads each head's keys contiguously. */
typedef struct kern_kv_layout {
    int type;      /* KERN_TYPE_F32 or KERN_TYPE_F16 */
    int n_head_kv;
    int head_dim;
    int capacity;  /* positions the cache holds */
} kern_kv_layout;

size_t kern_kv_bytes(const kern_kv_layout *l);
/* Stores src[n][n_head_kv][head_dim] (f32, backend memory) at positions
 * pos0 .. pos0+n-1 of cache. */
int kern_kv_store(kern_ctx *ctx, void *cache, const kern_kv_layout *l, int pos0, int n,
                  const float *src);

/* Paged KV caches: a pool of n_pool blocks, block b at pool + b * kern_kv_bytes(block)
 * (each a cache of layout *block, capacity = positions per block). Copies blocks
 * ids[0..n_ids) (host memory, each in [0, n_pool)) into the contiguous cache dst of
 * layout *dst_l (same type, n_head_kv and head_dim; capacity >= n_ids * block
 * capacity): block ids[i] becomes positions i*cap_b .. i*cap_b+cap_b-1, so
 * kern_attention can run over a sequence's blocks. Same bytes on every backend. */
int kern_kv_gather(kern_ctx *ctx, void *dst, const kern_kv_layout *dst_l, const void *pool,
                   const kern_kv_layout *block, int n_pool, const int32_t *ids, int n_ids);

/* Paged pools, continuous batching: positions are addressed by slot, slot = block id *
 * (block capacity) + position % (block capacity). Stores row i of src[n][n_head_kv]
 * [head_dim] (f32, backend memory) at slot slots[i] (host memory, each in
 * [0, n_pool * block capacity)) of the pool; a row per token of any sequence, one call. */
int kern_kv_store_paged(kern_ctx *ctx, void *pool, const kern_kv_layout *block, int n_pool,
                        const int32_t *slots, int n, const float *src);

/* One sequence of a kern_attention_paged call. */
typedef struct kern_paged_seq {
    int row0;              /* its first query row in q and out */
    int n_q;               /* its queries, at positions q_pos0 .. q_pos0+n_q-1 */
    int q_pos0;
    const int32_t *blocks; /* host: ids of the blocks holding positions 0 .. q_pos0+n_q-1,
                              in order (ceil((q_pos0+n_q) / block capacity) of them) */
} kern_paged_seq;

/* Attention of several sequences over paged K/V pools in one call: for each sequence,
 * rows row0 .. row0+n_q-1 of out[][n_head][head_dim] get what kern_attention computes
 * from the same rows of q over a contiguous cache holding its blocks' positions
 * (n_kv = q_pos0 + n_q, the same window and scale for all). Rows no sequence covers
 * are left as they were. */
int kern_attention_paged(kern_ctx *ctx, float *out, const float *q, const void *k_pool,
                         const void *v_pool, const kern_kv_layout *block, int n_pool,
                         const kern_paged_seq *seqs, int n_seqs, int n_head, int window,
                         float scale);

typedef struct kern_attn_params {
    int n_q;          /* query positions */
    int n_head;       /* query heads, a multiple of the layout's n_head_kv */
    int q_pos0;       /* position of query 0; query t is at q_pos0 + t */
    int n_kv;         /* cache positions 0 .. n_kv-1 are valid; n_kv >= q_pos0 + n_q */
    int window;       /* sliding window: query at p sees keys j with p-window < j <= p;
                         0 = no window (causal only) */
    float scale;      /* multiplies q.k before softmax, e.g. 1/sqrt(head_dim) */
} kern_attn_params;

/* Causal grouped-query attention: out[n_q][n_head][head_dim] from
 * q[n_q][n_head][head_dim] (f32) and the K/V caches of one layer (same
 * layout). Query head h uses KV head h / (n_head / n_head_kv). */
int kern_attention(kern_ctx *ctx, float *out, const float *q, const void *k_cache,
                   const void *v_cache, const kern_kv_layout *l, const kern_attn_params *p);

#ifdef __cplusplus
}
#endif
#endif
