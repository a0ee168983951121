/* paged_kv.c: the block pool and block tables of the paged KV cache (paged_kv.h).
 * Invariant: every block id is either on the free stack or in exactly one table. */
#include "paged_kv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

size_t infer_pkv_block_bytes(int n_layer, int n_head_kv, int head_dim, int block_tokens,
                             int type)
{
    kern_kv_layout l = { .type = type, .n_head_kv = n_head_kv, .head_dim = head_dim,
                         .capacity = block_tokens };
    return 2 * (size_t)n_layer * kern_kv_bytes(&l);
}

int infer_pkv_init(infer_paged_kv *kv, kern_ctx *kc, int n_layer, int n_head_kv,
                   int head_dim, int block_tokens, int n_blocks, int type,
                   char *err, size_t errlen)
{
    memset(kv, 0, sizeof *kv);
    if (type != KERN_TYPE_F32 && type != KERN_TYPE_F16) {
        snprintf(err, errlen, "paged KV cache type %d: expected F32 (0) or F16 (1)", type);
        return INFER_EINVAL;
    }
    if (n_layer < 1 || n_head_kv < 1 || head_dim < 1 || block_tokens < 1 || n_blocks < 1) {
        snprintf(err, errlen, "paged KV cache: bad size (layers %d, kv heads %d, head dim %d, "
                 "block of %d positions, %d blocks; all must be >= 1)", n_layer, n_head_kv,
                 head_dim, block_tokens, n_blocks);
        return INFER_EINVAL;
    }
    kv->kc = kc;
    kv->block = (kern_kv_layout){ .type = type, .n_head_kv = n_head_kv,
                                  .head_dim = head_dim, .capacity = block_tokens };
    kv->n_layer = n_layer;
    kv->n_blocks = n_blocks;
    kv->block_tokens = block_tokens;
    kv->block_bytes = kern_kv_bytes(&kv->block);
    kv->k = calloc((size_t)n_layer, sizeof *kv->k);
    kv->v = calloc((size_t)n_layer, sizeof *kv->v);
    kv->free_ids = malloc((size_t)n_blocks * sizeof *kv->free_ids);
    if (!kv->k || !kv->v || !kv->free_ids)
        goto oom;
    for (int l = 0; l < n_layer; l++) {
        kv->k[l] = kern_alloc(kc, (size_t)n_blocks * kv->block_bytes);
        kv->v[l] = kern_alloc(kc, (size_t)n_blocks * kv->block_bytes);
        if (!kv->k[l] || !kv->v[l])
            goto oom;
    }
    /* Lowest ids on top, so a fresh pool hands out 0, 1, 2, ... (easier to read in logs). */
    for (int i = 0; i < n_blocks; i++)
        kv->free_ids[i] = n_blocks - 1 - i;
    kv->n_free = n_blocks;
    return INFER_OK;
oom:
    snprintf(err, errlen, "paged KV cache: out of memory for %d blocks x %zu bytes x %d "
             "layers x 2 (use a smaller --kv-mb or --kv-blocks)", n_blocks, kv->block_bytes,
             n_layer);
    infer_pkv_free(kv);
    return INFER_ENOMEM;
}

void infer_pkv_free(infer_paged_kv *kv)
{
    for (int l = 0; kv->k && l < kv->n_layer; l++)
        kern_free(kv->kc, kv->k[l]);
    for (int l = 0; kv->v && l < kv->n_layer; l++)
        kern_free(kv->kc, kv->v[l]);
    free(kv->k);
    free(kv->v);
    free(kv->free_ids);
    memset(kv, 0, sizeof *kv);
}

int infer_pkv_blocks_for(const infer_paged_kv *kv, int n_positions)
{
    return n_positions <= 0 ? 0 : (n_positions + kv->block_tokens - 1) / kv->block_tokens;
}

int infer_pkv_reserve(infer_paged_kv *kv, infer_block_table *t, int n_positions)
{
    int need = infer_pkv_blocks_for(kv, n_positions);
    if (need <= t->n)
        return INFER_OK;
    if (need - t->n > kv->n_free)
        return INFER_ERANGE;
    if (need > t->cap) {
        int32_t *ids = realloc(t->ids, (size_t)need * sizeof *ids);
        if (!ids)
            return INFER_ENOMEM;
        t->ids = ids;
        t->cap = need;
    }
    while (t->n < need)
        t->ids[t->n++] = kv->free_ids[--kv->n_free];
    return INFER_OK;
}

void infer_pkv_release(infer_paged_kv *kv, infer_block_table *t)
{
    for (int i = t->n - 1; i >= 0; i--)
        kv->free_ids[kv->n_free++] = t->ids[i];
    free(t->ids);
    memset(t, 0, sizeof *t);
}
