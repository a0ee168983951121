/* kern_internal.h: declarations shared by the kernels' implementation files
 * (not part of the contract). Holds the ggml block layouts, the context, the
 * backend operation table that kernels.h dispatches through, the CPU
 * per-ISA function table and the thread pool. */
#ifndef COMMONS_KERN_INTERNAL_H
#define COMMONS_KERN_INTERNAL_H

#include "kernels.h"

#include <stdarg.h>

/* C++-compatible so the CUDA backend (a .cu file, compiled as C++) can
 * include it and fill a kern_backend_ops table. */
#ifdef __cplusplus
#define KERN_STATIC_ASSERT static_assert
extern "C" {
#else
#define KERN_STATIC_ASSERT _Static_assert
#endif

/* ---- ggml block layouts (byte-exact with GGUF files) ---- */
#define KQK 32   /* elements per Q4_0 / Q8_0 block */
#define KQK_K 256 /* elements per K-quant super-block */

typedef struct { uint16_t d; uint8_t qs[KQK / 2]; } kblock_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[KQK / 2]; } kblock_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[KQK / 2]; } kblock_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[KQK / 2]; } kblock_q5_1;
typedef struct { uint16_t d; int8_t qs[KQK]; } kblock_q8_0;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[KQK_K / 2]; } kblock_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[KQK_K / 8]; uint8_t qs[KQK_K / 2]; } kblock_q5_K;
typedef struct { uint8_t ql[KQK_K / 2]; uint8_t qh[KQK_K / 4]; int8_t scales[KQK_K / 16]; uint16_t d; } kblock_q6_K;
/* Activations for K-quant dots (never stored in files): 256 int8 with one
 * f32 scale and the sums of each 16 values (for the min/offset terms). */
typedef struct { float d; int8_t qs[KQK_K]; int16_t bsums[KQK_K / 16]; } kblock_q8_K;

KERN_STATIC_ASSERT(sizeof(kblock_q4_0) == 18, "q4_0 layout");
KERN_STATIC_ASSERT(sizeof(kblock_q4_1) == 20, "q4_1 layout");
KERN_STATIC_ASSERT(sizeof(kblock_q5_0) == 22, "q5_0 layout");
KERN_STATIC_ASSERT(sizeof(kblock_q5_1) == 24, "q5_1 layout");
KERN_STATIC_ASSERT(sizeof(kblock_q8_0) == 34, "q8_0 layout");
KERN_STATIC_ASSERT(sizeof(kblock_q4_K) == 144, "q4_K layout");
KERN_STATIC_ASSERT(sizeof(kblock_q5_K) == 176, "q5_K layout");
KERN_STATIC_ASSERT(sizeof(kblock_q6_K) == 210, "q6_K layout");

/* 6-bit scale and min j (0..7) of a Q4_K/Q5_K super-block. */
static inline void kern_k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* ---- CPU function table, one per ISA ---- */
#define KERN_NTYPES 31 /* type ids are < 31 */

/* Dot product of one weight row (k elements of the weight type) with one
 * activation row in that type's activation format (see kern_act_type). */
typedef float (*kern_dot_fn)(int k, const void *w, const void *x);

/* Dots of 4 consecutive weight rows (stride ws bytes) with nx (1..4)
 * activation rows (stride xs bytes): out[xi*os + r] for r < 4, xi < nx.
 * Each activation block is reused for 4 rows and each decoded weight block
 * for nx activation rows; 4 rows' partial sums are reduced together. */
typedef void (*kern_dot4_fn)(int k, const void *w, size_t ws, const void *x, size_t xs, int nx, float *out,
                             size_t os);

/* Dots of one weight row with nx (1..4) activation rows (stride xs bytes)
 * into out[xi*os]: each weight block is decoded once for all of them. */
typedef void (*kern_dotx_fn)(int k, const void *w, const void *x, size_t xs, int nx, float *out, size_t os);

/* Tiled matmul of KERN_GEMM_ROWS consecutive weight rows (stride ws bytes)
 * with n >= 1 activation rows into out[i*os + r]: the rows are decoded once
 * into tile (kern_gemm_tile_bytes(k), 64-byte aligned, per thread) and
 * every activation row passes over them. Activations: rows in the type's
 * activation format (q, stride qs bytes); for Q8_0 also each block's scale
 * as float (d) and sum of quants (s), k/32 of each per row. */
#define KERN_GEMM_ROWS 16
typedef struct {
    const uint8_t *q;
    size_t qs;
    const float *d;
    const int32_t *s;
} kern_gemm_x;
typedef void (*kern_gemm_fn)(int k, const void *w, size_t ws, const kern_gemm_x *x, int n, float *out, size_t os,
                             void *tile);
/* decoded bytes (16 per element) plus scales: at most 24 bytes per element */
static inline size_t kern_gemm_tile_bytes(int k) { return (size_t)24 * k; }
void kern_gemm_q4_0_avx512(int k, const void *w, size_t ws, const kern_gemm_x *x, int n, float *out, size_t os,
                           void *tile);
void kern_gemm_q5_0_avx512(int k, const void *w, size_t ws, const kern_gemm_x *x, int n, float *out, size_t os,
                           void *tile);
void kern_gemm_q8_0_avx512(int k, const void *w, size_t ws, const kern_gemm_x *x, int n, float *out, size_t os,
                           void *tile);
/* KERN_TYPE_Q4_0_R4: 16 rows = 4 groups from w (a group's first row; ws is
 * the Q4_0 row size): the tile and results of kern_gemm_q4_0_avx512 */
void kern_gemm_q4_0_r4_avx512(int k, const void *w, size_t ws, const kern_gemm_x *x, int n, float *out, size_t os,
                              void *tile);
void kern_gemm_q4_K_avx512(int k, const void *w, size_t ws, const kern_gemm_x *x, int n, float *out, size_t os,
                           void *tile);
void kern_gemm_q5_K_avx512(int k, const void *w, size_t ws, const kern_gemm_x *x, int n, float *out, size_t os,
                           void *tile);
void kern_gemm_q6_K_avx512(int k, const void *w, size_t ws, const kern_gemm_x *x, int n, float *out, size_t os,
                           void *tile);

typedef struct kern_cpu_fns {
    kern_dot_fn dot[KERN_NTYPES];
    kern_dot4_fn dot4[KERN_NTYPES];     /* may be NULL: falls back to dotx or dot */
    kern_dotx_fn dotx[KERN_NTYPES];     /* may be NULL: falls back to dot */
    kern_gemm_fn gemm[KERN_NTYPES];     /* may be NULL: falls back to dot4/dotx/dot */
    /* decode of rows of 2 KiB and more: 1 where dot4 still reads them
     * faster than dot (one stream per thread), else 0 */
    unsigned char dot4_long[KERN_NTYPES];
    /* decode (nx = 1 only) of one 4-row group of KERN_TYPE_Q4_0_R4 at w
     * (ws, xs, os unused); NULL where the ISA has none (kern_repack_type
     * then keeps Q4_0, and repacked weights are unpacked to Q4_0 rows) */
    kern_dot4_fn dot4_r4;
    kern_gemm_fn gemm_r4; /* tiles of KERN_TYPE_Q4_0_R4, NULL: unpacked */
    void (*quant_q8_0)(const float *x, void *y, int k);
    void (*quant_q8_K)(const float *x, void *y, int k);
    void (*f16_to_f32)(float *dst, const uint16_t *src, size_t n);
    void (*f32_to_f16)(uint16_t *dst, const float *src, size_t n);
    void (*axpy_f32)(float *y, float a, const float *x, int n);    /* y += a*x */
    void (*axpy_f16)(float *y, float a, const uint16_t *x, int n); /* y += a*x */
    void (*scale_f32)(float *y, float a, int n);                    /* y *= a */
} kern_cpu_fns;

extern const kern_cpu_fns kern_cpu_portable;
extern const kern_cpu_fns kern_cpu_avx2;
const kern_cpu_fns *kern_cpu_avx512(void); /* AVX2 table + AVX-512 VNNI kernels */
/* The table of the active ISA. */
const kern_cpu_fns *kern_cpu(void);

/* Activation format a weight type's dot expects: Q8_0 for the 32-blocks, Q8_K
 * (internal id KERN_ACT_Q8_K) for K-quants, F32 for float weights. */
#define KERN_ACT_Q8_K 15
int kern_act_type(int wt);
/* Bytes of a row of k activations in format fmt (a kern_act_type result). */
size_t kern_act_row_bytes(int fmt, int k);
/* Quantizes one activation row into format fmt (Q8_0 or Q8_K). */
void kern_act_quantize(const kern_cpu_fns *f, int fmt, const float *x, void *dst, int k);

/* KERN_TYPE_Q4_0_R4 (kernels.h) <-> Q4_0: m rows (a multiple of 4) of k
 * (a multiple of 256) elements; the same byte count either way. */
#define KERN_R4_PIECE 576 /* bytes of 8 blocks of 4 rows: 64 of scales + 8 x 64 */
void kern_repack_q4_0_r4(void *dst, const void *src, int64_t m, int64_t k);
void kern_unpack_q4_0_r4(void *dst, const void *src, int64_t m, int64_t k);

/* Portable pieces reused by the AVX2 table and by the host helpers. */
void kern_dequant_row(int t, const void *src, float *dst, int64_t n);
void kern_quant_q8_0_portable(const float *x, void *y, int k);
void kern_quant_q8_K_portable(const float *x, void *y, int k);

/* ---- thread pool ---- */
typedef struct kern_pool kern_pool;
/* fn runs on sub-ranges [begin, end) of [0, total), each of at most grain
 * items, on the caller and the workers; tid is 0..n_threads-1. Returns when
 * all are done. */
typedef void (*kern_range_fn)(void *arg, int64_t begin, int64_t end, int tid);
int kern_pool_create(int n_threads, kern_pool **out);
void kern_pool_destroy(kern_pool *p);
int kern_pool_threads(const kern_pool *p);
void kern_pool_run(kern_pool *p, int64_t total, int64_t grain, kern_range_fn fn, void *arg);

/* ---- context and backend table ---- */
typedef struct kern_backend_ops {
    void (*destroy)(kern_ctx *ctx);
    void *(*alloc)(kern_ctx *ctx, size_t bytes);
    void (*free)(kern_ctx *ctx, void *p);
    int (*upload)(kern_ctx *ctx, void *dst, const void *src, size_t bytes);
    int (*download)(kern_ctx *ctx, void *dst, const void *src, size_t bytes);
    int (*sync)(kern_ctx *ctx);
    int (*matmul)(kern_ctx *ctx, const float *x, int n, int k, const kern_matmul_op *ops, int n_ops);
    int (*get_rows)(kern_ctx *ctx, float *dst, const void *table, int t, int dim,
                    const int32_t *ids, int n_ids);
    int (*rmsnorm)(kern_ctx *ctx, float *y, const float *x, const float *w, int n, int dim, float eps);
    int (*rope)(kern_ctx *ctx, float *x, int n_tok, int n_head, int head_dim, const int32_t *pos,
                const kern_rope_params *p);
    int (*softmax)(kern_ctx *ctx, float *x, int n, int dim);
    int (*act)(kern_ctx *ctx, float *y, const float *x, size_t n, kern_act act);
    int (*gated)(kern_ctx *ctx, float *y, const float *g, const float *u, size_t n, kern_act act);
    int (*binary)(kern_ctx *ctx, float *y, const float *a, const float *b, size_t n, int op);
    int (*scale)(kern_ctx *ctx, float *y, const float *x, float s, size_t n);
    int (*kv_store)(kern_ctx *ctx, void *cache, const kern_kv_layout *l, int pos0, int n,
                    const float *src);
    int (*attention)(kern_ctx *ctx, float *out, const float *q, const void *k, const void *v,
                     const kern_kv_layout *l, const kern_attn_params *p);
} kern_backend_ops;

enum { KERN_BIN_ADD = 0, KERN_BIN_MUL = 1 };

struct kern_ctx {
    kern_backend backend;
    const kern_backend_ops *ops;
    int n_threads;
    char err[256];
    /* CPU backend state */
    kern_pool *pool;
    void *scratch; /* grown on demand: quantized activations, attention scores */
    size_t scratch_bytes;
};

/* Sets ctx's message and returns status. */
int kern_fail(kern_ctx *ctx, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Scratch of at least bytes (64-byte aligned), or NULL with message set. */
void *kern_scratch(kern_ctx *ctx, size_t bytes);

int kern_cpu_init(kern_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
