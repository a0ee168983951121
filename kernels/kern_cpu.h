/* kern_cpu.h: the CPU backend's operations, split over cpu_*.c files and
 * gathered into one kern_backend_ops table by cpu_backend.c. Arguments were
 * validated by api.c. */
#ifndef COMMONS_KERN_CPU_H
#define COMMONS_KERN_CPU_H

#include "kern_internal.h"

int kern_cpu_matmul(kern_ctx *ctx, const float *x, int n, int k, const kern_matmul_op *ops, int n_ops);
int kern_cpu_rmsnorm(kern_ctx *ctx, float *y, const float *x, const float *w, int n, int dim, float eps);
int kern_cpu_rope(kern_ctx *ctx, float *x, int n_tok, int n_head, int head_dim, const int32_t *pos,
                  const kern_rope_params *p);
int kern_cpu_softmax(kern_ctx *ctx, float *x, int n, int dim);
int kern_cpu_act(kern_ctx *ctx, float *y, const float *x, size_t n, kern_act act);
int kern_cpu_gated(kern_ctx *ctx, float *y, const float *g, const float *u, size_t n, kern_act act);
int kern_cpu_binary(kern_ctx *ctx, float *y, const float *a, const float *b, size_t n, int op);
int kern_cpu_scale(kern_ctx *ctx, float *y, const float *x, float s, size_t n);
int kern_cpu_kv_store(kern_ctx *ctx, void *cache, const kern_kv_layout *l, int pos0, int n, const float *src);
int kern_cpu_attention(kern_ctx *ctx, float *out, const float *q, const void *k, const void *v,
                       const kern_kv_layout *l, const kern_attn_params *p);

#endif
