/* paged_kv.h: a paged KV cache shared by many sequences (commons-serve).
 *
 * One pool of fixed-size blocks, each holding block_tokens consecutive positions of
 * one sequence for every layer (K and V). Block b of layer l is a small kern KV cache
 * of capacity block_tokens (layout [n_head_kv][block_tokens][head_dim], F32 or F16),
 * so the kernels' kv_store writes into it directly. A sequence owns a block table:
 * position p lives in block table[p / block_tokens] at slot p % block_tokens.
 *
 * Allocation and release of a block are O(1) (a stack of free block ids). Reserving
 * for a sequence is all-or-nothing: either the table covers the requested positions
 * or nothing was taken. Not thread-safe: the serving engine calls it under its lock. */
#ifndef INFER_PAGED_KV_H
#define INFER_PAGED_KV_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

typedef struct infer_paged_kv {
    kern_ctx *kc;
    kern_kv_layout block;  /* layout of one block of one layer (capacity = block_tokens) */
    int n_layer, n_blocks, block_tokens;
    size_t block_bytes;    /* kern_kv_bytes(&block) */
    uint8_t **k, **v;      /* per layer: n_blocks * block_bytes of backend memory */
    int32_t *free_ids;     /* stack of free block ids; n_free on it */
    int n_free;
} infer_paged_kv;

/* A sequence's blocks, in position order. */
typedef struct infer_block_table {
    int32_t *ids;
    int n, cap;
} infer_block_table;

/* Bytes one block takes across all layers (K and V): for sizing the pool from MiB. */
size_t infer_pkv_block_bytes(int n_layer, int n_head_kv, int head_dim, int block_tokens,
                             int type);
int infer_pkv_init(infer_paged_kv *kv, kern_ctx *kc, int n_layer, int n_head_kv,
                   int head_dim, int block_tokens, int n_blocks, int type,
                   char *err, size_t errlen);
void infer_pkv_free(infer_paged_kv *kv);

/* Blocks needed to hold n positions. */
int infer_pkv_blocks_for(const infer_paged_kv *kv, int n_positions);
/* Grow t so that it covers positions 0 .. n_positions-1. INFER_ERANGE (nothing taken)
 * when the pool has too few free blocks, INFER_ENOMEM if the table cannot grow. */
int infer_pkv_reserve(infer_paged_kv *kv, infer_block_table *t, int n_positions);
/* Return all of t's blocks to the pool and free the table's memory. */
void infer_pkv_release(infer_paged_kv *kv, infer_block_table *t);

/* Block id's K or V storage for one layer (a cache of capacity block_tokens). */
static inline void *infer_pkv_k(const infer_paged_kv *kv, int layer, int32_t id)
{
    return kv->k[layer] + (size_t)id * kv->block_bytes;
}
static inline void *infer_pkv_v(const infer_paged_kv *kv, int layer, int32_t id)
{
    return kv->v[layer] + (size_t)id * kv->block_bytes;
}

#endif
