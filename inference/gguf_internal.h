/* gguf_internal.h: the reader's private tables, shared by gguf.c (parsing),
 * gguf_get.c (accessors) and gguf_index.c (name lookup). Not installed. */
#ifndef INFER_GGUF_INTERNAL_H
#define INFER_GGUF_INTERNAL_H

#include "gguf.h"

/* Open-addressing hash from a NUL-terminated name (owned elsewhere, stable
 * for the table's life) to an index. Capacity is a power of two at least
 * twice the expected count, so probes stay short and the table never fills. */
struct gguf_index {
    const char **names;
    int64_t *ids;
    size_t cap;
};

int gguf_index_init(struct gguf_index *ix, uint64_t expected);   /* 0 or INFER_ENOMEM */
void gguf_index_add(struct gguf_index *ix, const char *name, int64_t id);
int64_t gguf_index_find(const struct gguf_index *ix, const char *name);  /* -1 if absent */
void gguf_index_free(struct gguf_index *ix);

struct gguf_kv {
    char *key;
    int type;                   /* enum infer_gguf_type */
    const uint8_t *scalar;      /* fixed-size scalar value bytes */
    infer_gguf_str str;         /* type == STRING */
    int arr_type;               /* type == ARRAY: element type */
    uint64_t arr_n;
    const void *arr_data;       /* first element (fixed-size) or first string header */
    infer_gguf_str *strs;       /* arr_type == STRING: arr_n views */
};

struct infer_gguf {
    const uint8_t *base;
    size_t size;
    bool mapped;                /* base came from mmap and is unmapped at close */
    uint32_t version;
    size_t alignment;
    uint64_t data_offset;
    int64_t n_kv;
    struct gguf_kv *kvs;
    int64_t n_tensors;
    infer_gguf_tensor *tensors;
    struct gguf_index kv_index;
    struct gguf_index tensor_index;
};

#endif
