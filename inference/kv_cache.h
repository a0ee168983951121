/* kv_cache.h: per-layer K and V caches of one sequence, in backend memory.
 *
 * Layout and storage are the kernels' (kern_kv_layout: [n_head_kv][capacity][head_dim],
 * F32 or F16); this file owns allocation, and the invariant that position p of the
 * sequence lives at slot p of every layer, so that attention over positions
 * 0..n_past-1 reads slots 0..n_past-1. Memory: 2 * n_layer * kern_kv_bytes(layout). */
#ifndef INFER_KV_CACHE_H
#define INFER_KV_CACHE_H

#include <stddef.h>

#include "kernels.h"

typedef struct infer_kv_cache {
    kern_ctx *kc;
    kern_kv_layout layout;
    int n_layer;
    void **k;   /* n_layer buffers */
    void **v;
} infer_kv_cache;

/* Allocates the caches; on failure frees what it got and fills err. */
int infer_kv_init(infer_kv_cache *kv, kern_ctx *kc, int n_layer, int n_head_kv, int head_dim,
                  int capacity, int type, char *err, size_t errlen);
void infer_kv_free(infer_kv_cache *kv);
size_t infer_kv_bytes(const infer_kv_cache *kv);

#endif
