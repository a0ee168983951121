/* gguf.c: the GGUF v3 reader. Maps the file, walks the header once with a
 * bounds-checked cursor, and builds the key and tensor tables. Every check
 * happens here so that accessors (gguf_get.c) can trust the tables.
 *
 * File layout: "GGUF" u32 version, u64 n_tensors, u64 n_kv, n_kv × {string
 * key, u32 type, value}, n_tensors × {string name, u32 n_dims, n_dims × i64 ne,
 * u32 type, u64 offset}, padding to the alignment, tensor data.
 * A string is u64 length + bytes; an array is u32 element type + u64 count +
 * elements. */
#include "gguf_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

/* Bounds-checked cursor over the file bytes. */
struct cursor {
    const uint8_t *base;
    size_t size;
    size_t off;
    const char *name;   /* file name for messages */
    char *err;
    size_t errlen;
};

static int fail(struct cursor *c, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct cursor *c, size_t at, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        int n = snprintf(c->err, c->errlen, "%s: byte %zu: ", c->name, at);
        if (n >= 0 && (size_t)n < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return INFER_EFORMAT;
}

static bool has(const struct cursor *c, uint64_t n)
{
    return n <= c->size - c->off;
}

static int read_bytes(struct cursor *c, void *dst, size_t n, const char *what, const char *ctx)
{
    if (!has(c, n))
        return fail(c, c->off, "%s: %s needs %zu bytes but the file ends at byte %zu (truncated?)",
                    ctx, what, n, c->size);
    memcpy(dst, c->base + c->off, n);
    c->off += n;
    return INFER_OK;
}

static int read_u32(struct cursor *c, uint32_t *v, const char *what, const char *ctx)
{
    return read_bytes(c, v, 4, what, ctx);
}

static int read_u64(struct cursor *c, uint64_t *v, const char *what, const char *ctx)
{
    return read_bytes(c, v, 8, what, ctx);
}

/* A string: u64 length, then bytes that must lie inside the file. */
static int read_str(struct cursor *c, infer_gguf_str *s, const char *what, const char *ctx)
{
    size_t at = c->off;
    uint64_t len = 0;
    int rc = read_u64(c, &len, what, ctx);
    if (rc)
        return rc;
    if (!has(c, len))
        return fail(c, at, "%s: %s length %llu runs past the end of the file (size %zu)",
                    ctx, what, (unsigned long long)len, c->size);
    s->ptr = (const char *)c->base + c->off;
    s->len = len;
    c->off += (size_t)len;
    return INFER_OK;
}

/* Names become C strings, so they may not be empty or contain NUL. */
static int copy_name(struct cursor *c, size_t at, infer_gguf_str s, const char *what, char **out)
{
    if (s.len == 0)
        return fail(c, at, "empty %s", what);
    if (memchr(s.ptr, 0, s.len))
        return fail(c, at, "%s contains a NUL byte", what);
    char *p = malloc(s.len + 1);
    if (!p) {
        fail(c, at, "out of memory copying a %s of %llu bytes", what, (unsigned long long)s.len);
        return INFER_ENOMEM;
    }
    memcpy(p, s.ptr, s.len);
    p[s.len] = 0;
    *out = p;
    return INFER_OK;
}

static int read_value(struct cursor *c, struct gguf_kv *kv)
{
    char ctx[300];
    snprintf(ctx, sizeof ctx, "key '%s'", kv->key);
    size_t at = c->off;
    if (kv->type == INFER_GGUF_STRING)
        return read_str(c, &kv->str, "string value", ctx);
    if (kv->type != INFER_GGUF_ARRAY) {
        size_t sz = infer_gguf_type_size(kv->type);
        if (!has(c, sz))
            return fail(c, at, "%s: %s value needs %zu bytes but the file ends at byte %zu",
                        ctx, infer_gguf_type_name(kv->type), sz, c->size);
        kv->scalar = c->base + c->off;
        c->off += sz;
        return INFER_OK;
    }
    uint32_t et = 0;
    uint64_t n = 0;
    int rc = read_u32(c, &et, "array element type", ctx);
    if (rc)
        return rc;
    if (et >= INFER_GGUF_TYPE_COUNT || et == INFER_GGUF_ARRAY)
        return fail(c, at, "%s: array element type %u is not a GGUF value type%s", ctx, et,
                    et == INFER_GGUF_ARRAY ? " (nested arrays are not supported)" : "");
    at = c->off;
    if ((rc = read_u64(c, &n, "array length", ctx)))
        return rc;
    kv->arr_type = (int)et;
    kv->arr_n = n;
    if (et != INFER_GGUF_STRING) {
        uint64_t bytes;
        if (__builtin_mul_overflow(n, (uint64_t)infer_gguf_type_size((int)et), &bytes) ||
            !has(c, bytes))
            return fail(c, at, "%s: array of %llu %s elements runs past the end of the file (size %zu)",
                        ctx, (unsigned long long)n, infer_gguf_type_name((int)et), c->size);
        kv->arr_data = c->base + c->off;
        c->off += (size_t)bytes;
        return INFER_OK;
    }
    /* Each string takes at least its 8-byte length: bounds n before allocating. */
    if (n > (c->size - c->off) / 8)
        return fail(c, at, "%s: array of %llu strings cannot fit in the remaining %zu bytes",
                    ctx, (unsigned long long)n, c->size - c->off);
    kv->arr_data = c->base + c->off;
    kv->strs = malloc((n ? n : 1) * sizeof *kv->strs);
    if (!kv->strs) {
        fail(c, at, "%s: out of memory for %llu strings", ctx, (unsigned long long)n);
        return INFER_ENOMEM;
    }
    for (uint64_t i = 0; i < n; i++) {
        /* inline fast path: vocabularies hold hundreds of thousands of these */
        size_t at_i = c->off;
        uint64_t len;
        if (has(c, 8)) {
            memcpy(&len, c->base + c->off, 8);
            if (len <= c->size - c->off - 8) {
                kv->strs[i].ptr = (const char *)c->base + c->off + 8;
                kv->strs[i].len = len;
                c->off += 8 + (size_t)len;
                continue;
            }
        }
        char what[64];
        snprintf(what, sizeof what, "string %llu", (unsigned long long)i);
        c->off = at_i;
        if ((rc = read_str(c, &kv->strs[i], what, ctx)))
            return rc;
    }
    return INFER_OK;
}

static int read_kvs(struct cursor *c, infer_gguf *g)
{
    for (int64_t i = 0; i < g->n_kv; i++) {
        struct gguf_kv *kv = &g->kvs[i];
        size_t at = c->off;
        char ctx[48];
        snprintf(ctx, sizeof ctx, "key/value %lld", (long long)i);
        infer_gguf_str key;
        int rc = read_str(c, &key, "key name", ctx);
        if (rc || (rc = copy_name(c, at, key, "key name", &kv->key)))
            return rc;
        if (gguf_index_find(&g->kv_index, kv->key) >= 0)
            return fail(c, at, "duplicate key '%s'", kv->key);
        gguf_index_add(&g->kv_index, kv->key, i);
        uint32_t type = 0;
        at = c->off;
        snprintf(ctx, sizeof ctx, "key '%.30s'", kv->key);
        if ((rc = read_u32(c, &type, "value type", ctx)))
            return rc;
        if (type >= INFER_GGUF_TYPE_COUNT)
            return fail(c, at, "key '%s': value type %u is not a GGUF value type (0..12)",
                        kv->key, type);
        kv->type = (int)type;
        if ((rc = read_value(c, kv)))
            return rc;
    }
    return INFER_OK;
}

static int read_alignment(struct cursor *c, infer_gguf *g)
{
    g->alignment = INFER_GGUF_DEFAULT_ALIGNMENT;
    int64_t i = infer_gguf_find_key(g, "general.alignment");
    if (i < 0)
        return INFER_OK;
    uint32_t a;
    if (g->kvs[i].type != INFER_GGUF_UINT32)
        return fail(c, 0, "key 'general.alignment' has type %s, expected u32",
                    infer_gguf_type_name(g->kvs[i].type));
    memcpy(&a, g->kvs[i].scalar, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return fail(c, (size_t)(g->kvs[i].scalar - c->base),
                    "key 'general.alignment' is %u, expected a power of two", a);
    g->alignment = a;
    return INFER_OK;
}

static int read_tensor_infos(struct cursor *c, infer_gguf *g)
{
    for (int64_t i = 0; i < g->n_tensors; i++) {
        infer_gguf_tensor *t = &g->tensors[i];
        size_t at = c->off;
        char ctx[48];
        snprintf(ctx, sizeof ctx, "tensor info %lld", (long long)i);
        infer_gguf_str name;
        int rc = read_str(c, &name, "tensor name", ctx);
        char *copy = NULL;
        if (rc || (rc = copy_name(c, at, name, "tensor name", &copy)))
            return rc;
        t->name = copy;
        if (gguf_index_find(&g->tensor_index, t->name) >= 0)
            return fail(c, at, "duplicate tensor '%s'", t->name);
        gguf_index_add(&g->tensor_index, t->name, i);
        char tctx[300];
        snprintf(tctx, sizeof tctx, "tensor '%s'", t->name);
        at = c->off;
        if ((rc = read_u32(c, &t->n_dims, "n_dims", tctx)))
            return rc;
        if (t->n_dims < 1 || t->n_dims > INFER_GGUF_MAX_DIMS)
            return fail(c, at, "%s: n_dims is %u, expected 1..%d", tctx, t->n_dims,
                        INFER_GGUF_MAX_DIMS);
        for (int d = 0; d < INFER_GGUF_MAX_DIMS; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            at = c->off;
            if ((rc = read_bytes(c, &t->ne[d], 8, "dimension", tctx)))
                return rc;
            if (t->ne[d] < 0)
                return fail(c, at, "%s: dimension %u is %lld, expected >= 0", tctx, d,
                            (long long)t->ne[d]);
        }
        uint32_t type = 0;
        at = c->off;
        if ((rc = read_u32(c, &type, "type", tctx)))
            return rc;
        if (!infer_type_known((int)type))
            return fail(c, at, "%s: tensor type %u is not a known ggml type", tctx, type);
        t->type = (int)type;
        if (infer_type_nbytes(t->type, t->n_dims, t->ne, &t->nbytes) != INFER_OK)
            return fail(c, at, "%s: shape [%lld,%lld,%lld,%lld] of type %s: first dimension "
                        "not a multiple of the block size %lld, or size overflows",
                        tctx, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                        (long long)t->ne[3], infer_type_name(t->type),
                        (long long)infer_type_block_size(t->type));
        at = c->off;
        if ((rc = read_u64(c, &t->offset, "data offset", tctx)))
            return rc;
        if (t->offset % g->alignment != 0)
            return fail(c, at, "%s: data offset %llu is not a multiple of the alignment %zu",
                        tctx, (unsigned long long)t->offset, g->alignment);
    }
    return INFER_OK;
}

static int cmp_by_offset(const void *a, const void *b)
{
    const infer_gguf_tensor *x = *(const infer_gguf_tensor *const *)a;
    const infer_gguf_tensor *y = *(const infer_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Data section starts at the next alignment boundary; every tensor must lie
 * inside the file and no two non-empty tensors may overlap. */
static int place_tensors(struct cursor *c, infer_gguf *g)
{
    uint64_t data = c->off;
    uint64_t pad = (g->alignment - data % g->alignment) % g->alignment;
    data += pad;
    if (g->n_tensors > 0 && data > c->size)
        return fail(c, c->off, "tensor data should start at byte %llu (alignment %zu) but the "
                    "file has only %zu bytes", (unsigned long long)data, g->alignment, c->size);
    g->data_offset = data;
    uint64_t avail = data <= c->size ? c->size - data : 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        infer_gguf_tensor *t = &g->tensors[i];
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return fail(c, (size_t)data, "tensor '%s' (%s, %zu bytes at data offset %llu) "
                        "extends past the end of the file (size %zu, data starts at %llu)",
                        t->name, infer_type_name(t->type), t->nbytes,
                        (unsigned long long)t->offset, c->size, (unsigned long long)data);
        t->data = c->base + data + t->offset;
    }
    if (g->n_tensors < 2)
        return INFER_OK;
    infer_gguf_tensor **order = malloc((size_t)g->n_tensors * sizeof *order);
    if (!order) {
        fail(c, 0, "out of memory sorting %lld tensors", (long long)g->n_tensors);
        return INFER_ENOMEM;
    }
    for (int64_t i = 0; i < g->n_tensors; i++)
        order[i] = &g->tensors[i];
    qsort(order, (size_t)g->n_tensors, sizeof *order, cmp_by_offset);
    int rc = INFER_OK;
    const infer_gguf_tensor *prev = NULL;
    for (int64_t i = 0; i < g->n_tensors && !rc; i++) {
        const infer_gguf_tensor *t = order[i];
        if (t->nbytes == 0)
            continue;
        if (prev && prev->offset + prev->nbytes > t->offset)
            rc = fail(c, (size_t)data, "tensors '%s' (data offset %llu, %zu bytes) and '%s' "
                      "(data offset %llu) overlap", prev->name, (unsigned long long)prev->offset,
                      prev->nbytes, t->name, (unsigned long long)t->offset);
        prev = t;
    }
    free(order);
    return rc;
}

static int parse(struct cursor *c, infer_gguf *g)
{
    char magic[4];
    uint64_t n_tensors = 0, n_kv = 0;
    int rc = read_bytes(c, magic, 4, "magic", "header");
    if (rc)
        return rc;
    if (memcmp(magic, "GGUF", 4) != 0)
        return fail(c, 0, "not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")",
                    (uint8_t)magic[0], (uint8_t)magic[1], (uint8_t)magic[2], (uint8_t)magic[3]);
    if ((rc = read_u32(c, &g->version, "version", "header")))
        return rc;
    if (g->version != 2 && g->version != 3)
        return fail(c, 4, "GGUF version %u is not supported (expected 3%s)", g->version,
                    g->version > 0xffff ? "; a big-endian file?" : "");
    if ((rc = read_u64(c, &n_tensors, "tensor count", "header")) ||
        (rc = read_u64(c, &n_kv, "key/value count", "header")))
        return rc;
    /* Smallest key/value: 8-byte length + 1-byte name + 4-byte type + 1-byte value;
     * smallest tensor info: 8 + 1 + 4 + 8 + 4 + 8. Bounds the allocations below. */
    if (n_kv > (c->size - c->off) / 14)
        return fail(c, 16, "key/value count %llu cannot fit in a file of %zu bytes",
                    (unsigned long long)n_kv, c->size);
    if (n_tensors > (c->size - c->off) / 33)
        return fail(c, 8, "tensor count %llu cannot fit in a file of %zu bytes",
                    (unsigned long long)n_tensors, c->size);
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    g->kvs = calloc(n_kv ? n_kv : 1, sizeof *g->kvs);
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    if (!g->kvs || !g->tensors || gguf_index_init(&g->kv_index, n_kv) ||
        gguf_index_init(&g->tensor_index, n_tensors)) {
        fail(c, 0, "out of memory for %llu keys and %llu tensors", (unsigned long long)n_kv,
             (unsigned long long)n_tensors);
        return INFER_ENOMEM;
    }
    if ((rc = read_kvs(c, g)) || (rc = read_alignment(c, g)) || (rc = read_tensor_infos(c, g)))
        return rc;
    return place_tensors(c, g);
}

int infer_gguf_open_memory(const void *data, size_t size, const char *name,
                           infer_gguf **out, char *err, size_t errlen)
{
    if (!out)
        return INFER_EINVAL;
    *out = NULL;
    if (err && errlen)
        err[0] = 0;
    infer_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return INFER_ENOMEM;
    g->base = data;
    g->size = size;
    struct cursor c = {data, size, 0, name ? name : "(memory)", err, errlen};
    int rc = data || size == 0 ? parse(&c, g) : INFER_EINVAL;
    if (rc) {
        infer_gguf_close(g);
        return rc;
    }
    *out = g;
    return INFER_OK;
}

int infer_gguf_open(const char *path, infer_gguf **out, char *err, size_t errlen)
{
    if (!out || !path)
        return INFER_EINVAL;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return INFER_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (err && errlen)
            snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return INFER_EIO;
    }
    size_t size = (size_t)st.st_size;
    void *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            if (err && errlen)
                snprintf(err, errlen, "%s: mmap of %zu bytes failed: %s", path, size,
                         strerror(errno));
            close(fd);
            return INFER_EIO;
        }
    }
    close(fd);
    static const uint8_t empty[1];
    int rc = infer_gguf_open_memory(map ? map : (const void *)empty, size, path, out, err, errlen);
    if (rc) {
        if (map)
            munmap(map, size);
        return rc;
    }
    (*out)->mapped = map != NULL;
    return INFER_OK;
}

void infer_gguf_close(infer_gguf *g)
{
    if (!g)
        return;
    for (int64_t i = 0; g->kvs && i < g->n_kv; i++) {
        free(g->kvs[i].key);
        free(g->kvs[i].strs);
    }
    for (int64_t i = 0; g->tensors && i < g->n_tensors; i++)
        free((char *)g->tensors[i].name);
    free(g->kvs);
    free(g->tensors);
    gguf_index_free(&g->kv_index);
    gguf_index_free(&g->tensor_index);
    if (g->mapped)
        munmap((void *)g->base, g->size);
    free(g);
}
