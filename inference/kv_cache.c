/* kv_cache.c: allocation of the per-layer KV caches (see kv_cache.h). */
#include "kv_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

int infer_kv_init(infer_kv_cache *kv, kern_ctx *kc, int n_layer, int n_head_kv, int head_dim,
                  int capacity, int type, char *err, size_t errlen)
{
    memset(kv, 0, sizeof *kv);
    if (type != KERN_TYPE_F32 && type != KERN_TYPE_F16) {
        snprintf(err, errlen, "KV cache type %d: expected F32 (0) or F16 (1)", type);
        return INFER_EINVAL;
    }
    if (n_layer < 1 || n_head_kv < 1 || head_dim < 1 || capacity < 1) {
        snprintf(err, errlen, "KV cache: bad size (layers %d, kv heads %d, head dim %d, "
                 "capacity %d)", n_layer, n_head_kv, head_dim, capacity);
        return INFER_EINVAL;
    }
    kv->kc = kc;
    kv->layout = (kern_kv_layout){ .type = type, .n_head_kv = n_head_kv, .head_dim = head_dim,
                                   .capacity = capacity };
    kv->n_layer = n_layer;
    kv->k = calloc((size_t)n_layer, sizeof *kv->k);
    kv->v = calloc((size_t)n_layer, sizeof *kv->v);
    if (!kv->k || !kv->v)
        goto oom;
    size_t bytes = kern_kv_bytes(&kv->layout);
    for (int l = 0; l < n_layer; l++) {
        kv->k[l] = kern_alloc(kc, bytes);
        kv->v[l] = kern_alloc(kc, bytes);
        if (!kv->k[l] || !kv->v[l])
            goto oom;
    }
    return INFER_OK;
oom:
    snprintf(err, errlen, "KV cache: out of memory allocating %d layers x 2 x %zu bytes "
             "(capacity %d positions; try a smaller context)", n_layer,
             kern_kv_bytes(&kv->layout), capacity);
    infer_kv_free(kv);
    return INFER_ENOMEM;
}

void infer_kv_free(infer_kv_cache *kv)
{
    for (int l = 0; kv->k && l < kv->n_layer; l++)
        kern_free(kv->kc, kv->k[l]);
    for (int l = 0; kv->v && l < kv->n_layer; l++)
        kern_free(kv->kc, kv->v[l]);
    free(kv->k);
    free(kv->v);
    memset(kv, 0, sizeof *kv);
}

size_t infer_kv_bytes(const infer_kv_cache *kv)
{
    return 2 * (size_t)kv->n_layer * kern_kv_bytes(&kv->layout);
}
