/* tokenizer_heap.c: the priority queue that makes SPM and BPE merging
 * O(n log n): always the best-scoring (SPM) / lowest-rank (BPE) adjacent pair
 * next, leftmost first on ties, as SentencePiece and HF tokenizers do. */
#include "tokenizer_internal.h"

#include <stdlib.h>

static bool before(const struct tok_cand *a, const struct tok_cand *b)
{
    return a->prio < b->prio || (a->prio == b->prio && a->left < b->left);
}

int tok_heap_push(struct tok_heap *h, struct tok_cand c)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        struct tok_cand *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return INFER_ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&c, &h->v[parent]))
            break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = c;
    return INFER_OK;
}

bool tok_heap_pop(struct tok_heap *h, struct tok_cand *out)
{
    if (h->n == 0)
        return false;
    *out = h->v[0];
    struct tok_cand last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        const struct tok_cand *bv = &last;
        if (l < h->n && before(&h->v[l], bv))
            best = l, bv = &h->v[l];
        if (r < h->n && before(&h->v[r], bv))
            best = r;
        if (best == i)
            break;
        h->v[i] = h->v[best];
        i = best;
    }
    if (h->n)
        h->v[i] = last;
    return true;
}

void tok_heap_free(struct tok_heap *h)
{
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}
