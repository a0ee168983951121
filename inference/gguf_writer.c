/* gguf_writer.c: builds GGUF v3 files. Each key/value is encoded into its
 * on-disk bytes when added, so writing is a plain concatenation; tensor data
 * is borrowed or produced by a callback at write time and padded to the
 * alignment, with offsets assigned in insertion order. */
#include "gguf_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wkv {
    char *key;
    uint32_t type;
    uint8_t *val;       /* encoded value bytes */
    size_t val_len;
};

struct wtensor {
    char *name;
    int type;
    uint32_t n_dims;
    int64_t ne[INFER_GGUF_MAX_DIMS];
    size_t nbytes;
    const void *data;
    infer_gguf_fill_fn fill;
    void *ctx;
};

struct infer_gguf_writer {
    struct wkv *kvs;
    size_t n_kv, cap_kv;
    struct wtensor *tensors;
    size_t n_tensors, cap_tensors;
};

/* Growable byte buffer. */
struct buf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
};

static void put(struct buf *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_u32(struct buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct buf *b, uint64_t v) { put(b, &v, 8); }

static void put_str(struct buf *b, const char *s, size_t len)
{
    put_u64(b, len);
    put(b, s, len);
}

infer_gguf_writer *infer_gguf_writer_new(void)
{
    return calloc(1, sizeof(infer_gguf_writer));
}

void infer_gguf_writer_free(infer_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val);
    }
    for (size_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->kvs);
    free(w->tensors);
    free(w);
}

/* Takes ownership of the encoded value in b (freed on failure). */
static int set_kv(infer_gguf_writer *w, const char *key, uint32_t type, struct buf *b)
{
    if (!w || !key || !key[0]) {
        free(b->p);
        return INFER_EINVAL;
    }
    if (b->oom) {
        free(b->p);
        return INFER_ENOMEM;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) == 0) {
            free(w->kvs[i].val);
            w->kvs[i].type = type;
            w->kvs[i].val = b->p;
            w->kvs[i].val_len = b->len;
            return INFER_OK;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        struct wkv *p = realloc(w->kvs, cap * sizeof *p);
        if (!p) {
            free(b->p);
            return INFER_ENOMEM;
        }
        w->kvs = p;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(b->p);
        return INFER_ENOMEM;
    }
    w->kvs[w->n_kv++] = (struct wkv){k, type, b->p, b->len};
    return INFER_OK;
}

static int add_scalar(infer_gguf_writer *w, const char *key, uint32_t type, const void *v)
{
    struct buf b = {0};
    put(&b, v, infer_gguf_type_size((int)type));
    return set_kv(w, key, type, &b);
}

int infer_gguf_writer_add_u8(infer_gguf_writer *w, const char *k, uint8_t v) { return add_scalar(w, k, INFER_GGUF_UINT8, &v); }
int infer_gguf_writer_add_i8(infer_gguf_writer *w, const char *k, int8_t v) { return add_scalar(w, k, INFER_GGUF_INT8, &v); }
int infer_gguf_writer_add_u16(infer_gguf_writer *w, const char *k, uint16_t v) { return add_scalar(w, k, INFER_GGUF_UINT16, &v); }
int infer_gguf_writer_add_i16(infer_gguf_writer *w, const char *k, int16_t v) { return add_scalar(w, k, INFER_GGUF_INT16, &v); }
int infer_gguf_writer_add_u32(infer_gguf_writer *w, const char *k, uint32_t v) { return add_scalar(w, k, INFER_GGUF_UINT32, &v); }
int infer_gguf_writer_add_i32(infer_gguf_writer *w, const char *k, int32_t v) { return add_scalar(w, k, INFER_GGUF_INT32, &v); }
int infer_gguf_writer_add_u64(infer_gguf_writer *w, const char *k, uint64_t v) { return add_scalar(w, k, INFER_GGUF_UINT64, &v); }
int infer_gguf_writer_add_i64(infer_gguf_writer *w, const char *k, int64_t v) { return add_scalar(w, k, INFER_GGUF_INT64, &v); }
int infer_gguf_writer_add_f32(infer_gguf_writer *w, const char *k, float v) { return add_scalar(w, k, INFER_GGUF_FLOAT32, &v); }
int infer_gguf_writer_add_f64(infer_gguf_writer *w, const char *k, double v) { return add_scalar(w, k, INFER_GGUF_FLOAT64, &v); }

int infer_gguf_writer_add_bool(infer_gguf_writer *w, const char *k, bool v)
{
    uint8_t b = v ? 1 : 0;
    return add_scalar(w, k, INFER_GGUF_BOOL, &b);
}

int infer_gguf_writer_add_strn(infer_gguf_writer *w, const char *key, const char *s, size_t len)
{
    if (!s && len)
        return INFER_EINVAL;
    struct buf b = {0};
    put_str(&b, s, len);
    return set_kv(w, key, INFER_GGUF_STRING, &b);
}

int infer_gguf_writer_add_str(infer_gguf_writer *w, const char *key, const char *s)
{
    return s ? infer_gguf_writer_add_strn(w, key, s, strlen(s)) : INFER_EINVAL;
}

int infer_gguf_writer_add_arr(infer_gguf_writer *w, const char *key, int elem_type,
                              const void *data, uint64_t n)
{
    size_t es = infer_gguf_type_size(elem_type);
    uint64_t bytes;
    if (es == 0 || (!data && n) || __builtin_mul_overflow(n, (uint64_t)es, &bytes) ||
        bytes > SIZE_MAX)
        return INFER_EINVAL;
    struct buf b = {0};
    put_u32(&b, (uint32_t)elem_type);
    put_u64(&b, n);
    put(&b, data, (size_t)bytes);
    return set_kv(w, key, INFER_GGUF_ARRAY, &b);
}

int infer_gguf_writer_add_arr_str(infer_gguf_writer *w, const char *key,
                                  const char *const *strs, const size_t *lens, uint64_t n)
{
    if (!strs && n)
        return INFER_EINVAL;
    struct buf b = {0};
    put_u32(&b, INFER_GGUF_STRING);
    put_u64(&b, n);
    for (uint64_t i = 0; i < n; i++) {
        if (!strs[i]) {
            free(b.p);
            return INFER_EINVAL;
        }
        put_str(&b, strs[i], lens ? lens[i] : strlen(strs[i]));
    }
    return set_kv(w, key, INFER_GGUF_ARRAY, &b);
}

int infer_gguf_writer_copy_kv(infer_gguf_writer *w, const infer_gguf *src, int64_t i)
{
    if (!src || i < 0 || i >= src->n_kv)
        return INFER_EINVAL;
    const struct gguf_kv *kv = &src->kvs[i];
    struct buf b = {0};
    if (kv->type == INFER_GGUF_STRING) {
        put_str(&b, kv->str.ptr, (size_t)kv->str.len);
    } else if (kv->type == INFER_GGUF_ARRAY) {
        put_u32(&b, (uint32_t)kv->arr_type);
        put_u64(&b, kv->arr_n);
        if (kv->arr_type == INFER_GGUF_STRING) {
            for (uint64_t j = 0; j < kv->arr_n; j++)
                put_str(&b, kv->strs[j].ptr, (size_t)kv->strs[j].len);
        } else {
            put(&b, kv->arr_data, (size_t)kv->arr_n * infer_gguf_type_size(kv->arr_type));
        }
    } else {
        put(&b, kv->scalar, infer_gguf_type_size(kv->type));
    }
    return set_kv(w, kv->key, (uint32_t)kv->type, &b);
}

static int add_tensor(infer_gguf_writer *w, const char *name, int type, uint32_t n_dims,
                      const int64_t *ne, const void *data, infer_gguf_fill_fn fill, void *ctx)
{
    size_t nbytes;
    if (!w || !name || !name[0] || infer_type_nbytes(type, n_dims, ne, &nbytes) != INFER_OK)
        return INFER_EINVAL;
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return INFER_EINVAL;
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 16;
        struct wtensor *p = realloc(w->tensors, cap * sizeof *p);
        if (!p)
            return INFER_ENOMEM;
        w->tensors = p;
        w->cap_tensors = cap;
    }
    struct wtensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name)))
        return INFER_ENOMEM;
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < INFER_GGUF_MAX_DIMS; d++)
        t->ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    t->nbytes = nbytes;
    t->data = data;
    t->fill = fill;
    t->ctx = ctx;
    w->n_tensors++;
    return INFER_OK;
}

int infer_gguf_writer_add_tensor(infer_gguf_writer *w, const char *name, int type,
                                 uint32_t n_dims, const int64_t *ne, const void *data)
{
    return add_tensor(w, name, type, n_dims, ne, data, NULL, NULL);
}

int infer_gguf_writer_add_tensor_fn(infer_gguf_writer *w, const char *name, int type,
                                    uint32_t n_dims, const int64_t *ne,
                                    infer_gguf_fill_fn fill, void *ctx)
{
    if (!fill)
        return INFER_EINVAL;
    return add_tensor(w, name, type, n_dims, ne, NULL, fill, ctx);
}

/* The alignment the file will declare: general.alignment if set (it must be
 * a u32 power of two, as the reader demands), else 32. 0 when invalid. */
static size_t writer_alignment(const infer_gguf_writer *w)
{
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, "general.alignment") != 0)
            continue;
        uint32_t a = 0;
        if (w->kvs[i].type == INFER_GGUF_UINT32)
            memcpy(&a, w->kvs[i].val, 4);
        return a && (a & (a - 1)) == 0 ? a : 0;
    }
    return INFER_GGUF_DEFAULT_ALIGNMENT;
}

/* Where bytes go: a FILE or a memory buffer. */
struct sink {
    FILE *f;
    struct buf *mem;
    uint64_t written;
};

static bool emit(struct sink *s, const void *p, size_t n)
{
    s->written += n;
    if (s->f)
        return n == 0 || fwrite(p, 1, n, s->f) == n;
    put(s->mem, p, n);
    return !s->mem->oom;
}

static bool emit_pad(struct sink *s, size_t align)
{
    static const uint8_t zeros[256];
    size_t pad = (size_t)((align - s->written % align) % align);
    while (pad) {
        size_t n = pad < sizeof zeros ? pad : sizeof zeros;
        if (!emit(s, zeros, n))
            return false;
        pad -= n;
    }
    return true;
}

static int werr(char *err, size_t errlen, int rc, const char *fmt, const char *a, const char *b)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, a, b);
    return rc;
}

static int write_all(infer_gguf_writer *w, struct sink *s, const char *where, char *err,
                     size_t errlen)
{
    size_t align = writer_alignment(w);
    if (align == 0)
        return werr(err, errlen, INFER_EINVAL, "%s: %s must be a u32 power of two", where,
                    "general.alignment");
    struct buf h = {0};
    put(&h, "GGUF", 4);
    put_u32(&h, 3);
    put_u64(&h, w->n_tensors);
    put_u64(&h, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(&h, w->kvs[i].key, strlen(w->kvs[i].key));
        put_u32(&h, w->kvs[i].type);
        put(&h, w->kvs[i].val, w->kvs[i].val_len);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        put_str(&h, t->name, strlen(t->name));
        put_u32(&h, t->n_dims);
        put(&h, t->ne, 8 * (size_t)t->n_dims);
        put_u32(&h, (uint32_t)t->type);
        put_u64(&h, off);
        off += t->nbytes;
        off += (align - off % align) % align;
    }
    bool ok = !h.oom && emit(s, h.p, h.len) && emit_pad(s, align);
    free(h.p);
    if (!ok)
        return werr(err, errlen, h.oom ? INFER_ENOMEM : INFER_EIO, "%s: writing the header: %s",
                    where, h.oom ? "out of memory" : strerror(errno));
    for (size_t i = 0; i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        const void *src = t->data;
        void *tmp = NULL;
        if (!src && t->nbytes) {
            if (!(tmp = calloc(1, t->nbytes)))
                return werr(err, errlen, INFER_ENOMEM, "%s: tensor '%s': out of memory", where,
                            t->name);
            if (t->fill && t->fill(t->ctx, t->name, t->type, t->n_dims, t->ne, tmp, t->nbytes)) {
                free(tmp);
                return werr(err, errlen, INFER_EINVAL, "%s: tensor '%s': fill callback failed",
                            where, t->name);
            }
            src = tmp;
        }
        ok = emit(s, src, t->nbytes) && emit_pad(s, align);
        free(tmp);
        if (!ok)
            return werr(err, errlen, INFER_EIO, "%s: writing tensor '%s' failed", where, t->name);
    }
    return INFER_OK;
}

int infer_gguf_writer_write(infer_gguf_writer *w, const char *path, char *err, size_t errlen)
{
    if (!w || !path)
        return INFER_EINVAL;
    FILE *f = fopen(path, "wb");
    if (!f)
        return werr(err, errlen, INFER_EIO, "%s: cannot create: %s", path, strerror(errno));
    struct sink s = {f, NULL, 0};
    int rc = write_all(w, &s, path, err, errlen);
    if (fclose(f) != 0 && rc == INFER_OK)
        rc = werr(err, errlen, INFER_EIO, "%s: close failed: %s", path, strerror(errno));
    return rc;
}

int infer_gguf_writer_write_mem(infer_gguf_writer *w, void **out, size_t *size, char *err,
                                size_t errlen)
{
    if (!w || !out || !size)
        return INFER_EINVAL;
    struct buf b = {0};
    struct sink s = {NULL, &b, 0};
    int rc = write_all(w, &s, "(memory)", err, errlen);
    if (rc) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *size = b.len;
    return INFER_OK;
}
