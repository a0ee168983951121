/* gguf_index.c: name -> index hash table (FNV-1a, linear probing) used for
 * key and tensor lookup and for rejecting duplicate names at open. */
#include "gguf_internal.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

int gguf_index_init(struct gguf_index *ix, uint64_t expected)
{
    size_t cap = 16;
    while (cap < 2 * expected)
        cap *= 2;
    ix->names = calloc(cap, sizeof *ix->names);
    ix->ids = calloc(cap, sizeof *ix->ids);
    ix->cap = cap;
    return ix->names && ix->ids ? 0 : INFER_ENOMEM;
}

void gguf_index_add(struct gguf_index *ix, const char *name, int64_t id)
{
    size_t i = hash(name) & (ix->cap - 1);
    while (ix->names[i])
        i = (i + 1) & (ix->cap - 1);
    ix->names[i] = name;
    ix->ids[i] = id;
}

int64_t gguf_index_find(const struct gguf_index *ix, const char *name)
{
    if (!ix->cap || !name)
        return -1;
    for (size_t i = hash(name) & (ix->cap - 1); ix->names[i]; i = (i + 1) & (ix->cap - 1))
        if (strcmp(ix->names[i], name) == 0)
            return ix->ids[i];
    return -1;
}

void gguf_index_free(struct gguf_index *ix)
{
    free(ix->names);
    free(ix->ids);
    ix->names = NULL;
    ix->ids = NULL;
    ix->cap = 0;
}
