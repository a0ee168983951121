/* gguf_get.c: accessors over a validated GGUF (see gguf.c). Typed getters
 * convert between integer widths only when the value fits, so a reader asking
 * for a u32 gets a u32-sized truth or an error, never a silent wrap. */
#include "gguf_internal.h"

#include <string.h>

uint32_t infer_gguf_version(const infer_gguf *g) { return g->version; }
size_t infer_gguf_alignment(const infer_gguf *g) { return g->alignment; }
const void *infer_gguf_base(const infer_gguf *g) { return g->base; }
size_t infer_gguf_size(const infer_gguf *g) { return g->size; }
uint64_t infer_gguf_data_offset(const infer_gguf *g) { return g->data_offset; }
int64_t infer_gguf_n_kv(const infer_gguf *g) { return g->n_kv; }
int64_t infer_gguf_n_tensors(const infer_gguf *g) { return g->n_tensors; }

int64_t infer_gguf_find_key(const infer_gguf *g, const char *key)
{
    return gguf_index_find(&g->kv_index, key);
}

const char *infer_gguf_key(const infer_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? g->kvs[i].key : NULL;
}

int infer_gguf_kv_type(const infer_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? g->kvs[i].type : -1;
}

const void *infer_gguf_kv_scalar(const infer_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? g->kvs[i].scalar : NULL;
}

/* A numeric value widened to int64 / uint64 / double. is_int is false for
 * floats and bool; neg tells whether an integer is negative. */
struct num {
    bool is_int, is_float, neg;
    int64_t i;
    uint64_t u;
    double f;
};

static bool load_num(int type, const void *p, struct num *n)
{
    memset(n, 0, sizeof *n);
    n->is_int = true;
    switch (type) {
    case INFER_GGUF_UINT8: { uint8_t v; memcpy(&v, p, 1); n->u = v; break; }
    case INFER_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); n->u = v; break; }
    case INFER_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); n->u = v; break; }
    case INFER_GGUF_UINT64: { memcpy(&n->u, p, 8); break; }
    case INFER_GGUF_INT8: { int8_t v; memcpy(&v, p, 1); n->i = v; n->neg = v < 0; break; }
    case INFER_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); n->i = v; n->neg = v < 0; break; }
    case INFER_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); n->i = v; n->neg = v < 0; break; }
    case INFER_GGUF_INT64: { memcpy(&n->i, p, 8); n->neg = n->i < 0; break; }
    case INFER_GGUF_FLOAT32: { float v; memcpy(&v, p, 4); n->f = v; n->is_int = false; n->is_float = true; return true; }
    case INFER_GGUF_FLOAT64: { memcpy(&n->f, p, 8); n->is_int = false; n->is_float = true; return true; }
    default: return false;
    }
    /* Keep both views consistent: u for non-negative values, i for signed. */
    bool is_signed = type == INFER_GGUF_INT8 || type == INFER_GGUF_INT16 ||
                     type == INFER_GGUF_INT32 || type == INFER_GGUF_INT64;
    if (is_signed && !n->neg)
        n->u = (uint64_t)n->i;
    if (!is_signed)
        n->i = n->u <= INT64_MAX ? (int64_t)n->u : 0;
    return true;
}

static int get_num(const infer_gguf *g, const char *key, struct num *n)
{
    int64_t i = infer_gguf_find_key(g, key);
    if (i < 0)
        return INFER_ENOTFOUND;
    const struct gguf_kv *kv = &g->kvs[i];
    if (kv->type == INFER_GGUF_BOOL || !kv->scalar || !load_num(kv->type, kv->scalar, n))
        return INFER_ETYPE;
    return INFER_OK;
}

static int to_u64(const struct num *n, uint64_t max, uint64_t *out)
{
    if (!n->is_int)
        return INFER_ETYPE;
    if (n->neg || n->u > max)
        return INFER_ERANGE;
    *out = n->u;
    return INFER_OK;
}

static int to_i64(const struct num *n, int64_t min, int64_t max, int64_t *out)
{
    if (!n->is_int)
        return INFER_ETYPE;
    if (!n->neg && n->u > (uint64_t)max)
        return INFER_ERANGE;
    int64_t v = n->neg ? n->i : (int64_t)n->u;
    if (v < min)
        return INFER_ERANGE;
    *out = v;
    return INFER_OK;
}

int infer_gguf_get_u32(const infer_gguf *g, const char *key, uint32_t *out)
{
    struct num n;
    uint64_t v;
    int rc = get_num(g, key, &n);
    if (!rc && !(rc = to_u64(&n, UINT32_MAX, &v)))
        *out = (uint32_t)v;
    return rc;
}

int infer_gguf_get_u64(const infer_gguf *g, const char *key, uint64_t *out)
{
    struct num n;
    int rc = get_num(g, key, &n);
    return rc ? rc : to_u64(&n, UINT64_MAX, out);
}

int infer_gguf_get_i32(const infer_gguf *g, const char *key, int32_t *out)
{
    struct num n;
    int64_t v;
    int rc = get_num(g, key, &n);
    if (!rc && !(rc = to_i64(&n, INT32_MIN, INT32_MAX, &v)))
        *out = (int32_t)v;
    return rc;
}

int infer_gguf_get_i64(const infer_gguf *g, const char *key, int64_t *out)
{
    struct num n;
    int rc = get_num(g, key, &n);
    return rc ? rc : to_i64(&n, INT64_MIN, INT64_MAX, out);
}

int infer_gguf_get_f64(const infer_gguf *g, const char *key, double *out)
{
    struct num n;
    int rc = get_num(g, key, &n);
    if (rc)
        return rc;
    if (!n.is_float)
        return INFER_ETYPE;
    *out = n.f;
    return INFER_OK;
}

int infer_gguf_get_f32(const infer_gguf *g, const char *key, float *out)
{
    double d;
    int rc = infer_gguf_get_f64(g, key, &d);
    if (!rc)
        *out = (float)d;
    return rc;
}

int infer_gguf_get_bool(const infer_gguf *g, const char *key, bool *out)
{
    int64_t i = infer_gguf_find_key(g, key);
    if (i < 0)
        return INFER_ENOTFOUND;
    if (g->kvs[i].type != INFER_GGUF_BOOL)
        return INFER_ETYPE;
    *out = g->kvs[i].scalar[0] != 0;
    return INFER_OK;
}

int infer_gguf_kv_str(const infer_gguf *g, int64_t i, infer_gguf_str *out)
{
    if (i < 0 || i >= g->n_kv)
        return INFER_ENOTFOUND;
    if (g->kvs[i].type != INFER_GGUF_STRING)
        return INFER_ETYPE;
    *out = g->kvs[i].str;
    return INFER_OK;
}

int infer_gguf_get_str(const infer_gguf *g, const char *key, infer_gguf_str *out)
{
    return infer_gguf_kv_str(g, infer_gguf_find_key(g, key), out);
}

int infer_gguf_get_str_copy(const infer_gguf *g, const char *key, char *buf, size_t buflen)
{
    infer_gguf_str s;
    int rc = infer_gguf_get_str(g, key, &s);
    if (rc)
        return rc;
    if (!buf || buflen == 0)
        return INFER_ERANGE;
    size_t n = s.len < buflen - 1 ? (size_t)s.len : buflen - 1;
    memcpy(buf, s.ptr, n);
    buf[n] = 0;
    return n < s.len ? INFER_ERANGE : INFER_OK;
}

int infer_gguf_kv_arr(const infer_gguf *g, int64_t i, infer_gguf_arr *out)
{
    if (i < 0 || i >= g->n_kv)
        return INFER_ENOTFOUND;
    const struct gguf_kv *kv = &g->kvs[i];
    if (kv->type != INFER_GGUF_ARRAY)
        return INFER_ETYPE;
    out->type = kv->arr_type;
    out->n = kv->arr_n;
    out->data = kv->arr_data;
    out->strs = kv->strs;
    return INFER_OK;
}

int infer_gguf_get_arr(const infer_gguf *g, const char *key, infer_gguf_arr *out)
{
    return infer_gguf_kv_arr(g, infer_gguf_find_key(g, key), out);
}

static int arr_num(const infer_gguf_arr *a, uint64_t i, struct num *n)
{
    if (i >= a->n)
        return INFER_ERANGE;
    if (a->type == INFER_GGUF_STRING || a->type == INFER_GGUF_BOOL)
        return INFER_ETYPE;
    const uint8_t *p = (const uint8_t *)a->data + i * infer_gguf_type_size(a->type);
    return load_num(a->type, p, n) ? INFER_OK : INFER_ETYPE;
}

int infer_gguf_arr_i64(const infer_gguf_arr *a, uint64_t i, int64_t *out)
{
    struct num n;
    int rc = arr_num(a, i, &n);
    return rc ? rc : to_i64(&n, INT64_MIN, INT64_MAX, out);
}

int infer_gguf_arr_f64(const infer_gguf_arr *a, uint64_t i, double *out)
{
    struct num n;
    int rc = arr_num(a, i, &n);
    if (rc)
        return rc;
    if (n.is_float)
        *out = n.f;
    else
        *out = n.neg ? (double)n.i : (double)n.u;
    return INFER_OK;
}

const infer_gguf_tensor *infer_gguf_tensor_at(const infer_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const infer_gguf_tensor *infer_gguf_find_tensor(const infer_gguf *g, const char *name)
{
    return infer_gguf_tensor_at(g, gguf_index_find(&g->tensor_index, name));
}
