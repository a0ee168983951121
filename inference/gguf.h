/* gguf.h: GGUF v3 model files — a validating, mmap-based reader and a writer.
 *
 * Contract of the reader: infer_gguf_open() checks every count, length, type,
 * offset, tensor shape and tensor extent before returning; after a successful
 * open every pointer handed out points inside the mapped file and every size
 * is exact, so callers never re-validate. A truncated or corrupt file yields
 * INFER_EFORMAT and a message naming the byte offset and the key or tensor.
 * Multi-byte values are little-endian (the only byte order GGUF files in
 * the wild use); big-endian files are rejected by the version check.
 * Version 2 files, laid out identically, are read too. See docs/gguf.md.
 *
 * Strings inside the file are NOT NUL-terminated: they come as infer_gguf_str
 * {ptr,len} views into the mapping. Key and tensor names are copied and
 * NUL-terminated at open (names with embedded NUL bytes are rejected).
 *
 * Tensor type ids are ggml's (F32=0, F16=1, Q4_0=2, Q8_0=8, Q4_K=12, ...).
 * Every ggml id has a block/type size so extents of any tensor validate;
 * infer_type_supported() tells which ones this code base computes with.
 *
 * The status codes below are shared by the whole inference/ folder. */
#ifndef INFER_GGUF_H
#define INFER_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes: 0 is success, the rest say what kind of failure it was;
 * the accompanying err buffer says where and why. */
enum infer_status {
    INFER_OK = 0,
    INFER_EIO = 1,          /* open/stat/mmap/write failed (errno text in message) */
    INFER_EFORMAT = 2,      /* the bytes are not a valid GGUF v3 file */
    INFER_ENOTFOUND = 3,    /* no such key / tensor / token */
    INFER_ETYPE = 4,        /* key exists but holds another type */
    INFER_ERANGE = 5,       /* value or output does not fit */
    INFER_ENOMEM = 6,
    INFER_EUNSUPPORTED = 7, /* valid file, feature not implemented here */
    INFER_EINVAL = 8        /* bad argument from the caller */
};

/* Human-readable name of a status code ("format error", ...). */
const char *infer_status_str(int status);

/* ---- value types of GGUF key/value metadata ---- */
enum infer_gguf_type {
    INFER_GGUF_UINT8 = 0,
    INFER_GGUF_INT8 = 1,
    INFER_GGUF_UINT16 = 2,
    INFER_GGUF_INT16 = 3,
    INFER_GGUF_UINT32 = 4,
    INFER_GGUF_INT32 = 5,
    INFER_GGUF_FLOAT32 = 6,
    INFER_GGUF_BOOL = 7,
    INFER_GGUF_STRING = 8,
    INFER_GGUF_ARRAY = 9,
    INFER_GGUF_UINT64 = 10,
    INFER_GGUF_INT64 = 11,
    INFER_GGUF_FLOAT64 = 12,
    INFER_GGUF_TYPE_COUNT = 13
};

/* Name ("u32", "string", ...) and element size in bytes (0 for string/array). */
const char *infer_gguf_type_name(int type);
size_t infer_gguf_type_size(int type);

/* ---- tensor types (ggml ids) ---- */
enum infer_type {
    INFER_TYPE_F32 = 0,
    INFER_TYPE_F16 = 1,
    INFER_TYPE_Q4_0 = 2,
    INFER_TYPE_Q4_1 = 3,
    INFER_TYPE_Q5_0 = 6,
    INFER_TYPE_Q5_1 = 7,
    INFER_TYPE_Q8_0 = 8,
    INFER_TYPE_Q8_1 = 9,
    INFER_TYPE_Q2_K = 10,
    INFER_TYPE_Q3_K = 11,
    INFER_TYPE_Q4_K = 12,
    INFER_TYPE_Q5_K = 13,
    INFER_TYPE_Q6_K = 14,
    INFER_TYPE_Q8_K = 15,
    INFER_TYPE_IQ2_XXS = 16,
    INFER_TYPE_IQ2_XS = 17,
    INFER_TYPE_IQ3_XXS = 18,
    INFER_TYPE_IQ1_S = 19,
    INFER_TYPE_IQ4_NL = 20,
    INFER_TYPE_IQ3_S = 21,
    INFER_TYPE_IQ2_S = 22,
    INFER_TYPE_IQ4_XS = 23,
    INFER_TYPE_I8 = 24,
    INFER_TYPE_I16 = 25,
    INFER_TYPE_I32 = 26,
    INFER_TYPE_I64 = 27,
    INFER_TYPE_F64 = 28,
    INFER_TYPE_IQ1_M = 29,
    INFER_TYPE_BF16 = 30,
    INFER_TYPE_TQ1_0 = 34,
    INFER_TYPE_TQ2_0 = 35,
    INFER_TYPE_MXFP4 = 39,
    INFER_TYPE_NVFP4 = 40,
    INFER_TYPE_Q1_0 = 41,
    INFER_TYPE_COUNT = 42   /* one past the largest id; gaps are retired ids */
};

/* Type metadata. For an unknown/retired id: name NULL, sizes 0, known false. */
const char *infer_type_name(int type);     /* "F32", "Q4_K", ... */
bool infer_type_known(int type);           /* a ggml id with a known layout */
bool infer_type_supported(int type);       /* F32 F16 BF16 Q8_0 Q4_0 Q5_0 Q4_K Q5_K Q6_K */
int64_t infer_type_block_size(int type);   /* elements per block (1 for plain types) */
size_t infer_type_type_size(int type);     /* bytes per block */

/* Bytes of a tensor of this type and shape, with overflow checks. Fails with
 * INFER_EFORMAT if the type is unknown, a dim is < 1 (0 is allowed: empty
 * tensor), ne[0] is not a multiple of the block size, or the size overflows. */
int infer_type_nbytes(int type, uint32_t n_dims, const int64_t *ne, size_t *out);

/* ---- reader ---- */
#define INFER_GGUF_MAX_DIMS 4
#define INFER_GGUF_DEFAULT_ALIGNMENT 32

typedef struct infer_gguf infer_gguf;

typedef struct infer_gguf_str {
    const char *ptr;   /* not NUL-terminated */
    uint64_t len;
} infer_gguf_str;

/* An array value. For fixed-size element types, data points at n packed
 * little-endian elements inside the mapping (may be unaligned: read with
 * memcpy or the infer_gguf_arr_* helpers). For strings use infer_gguf_arr_str. */
typedef struct infer_gguf_arr {
    int type;          /* enum infer_gguf_type of the elements (never ARRAY) */
    uint64_t n;
    const void *data;
    const infer_gguf_str *strs;   /* n entries when type == STRING, else NULL */
} infer_gguf_arr;

typedef struct infer_gguf_tensor {
    const char *name;                   /* NUL-terminated */
    int type;                           /* enum infer_type */
    uint32_t n_dims;                    /* 1..4 */
    int64_t ne[INFER_GGUF_MAX_DIMS];    /* elements per dim, ne[0] fastest; unused dims = 1 */
    uint64_t offset;                    /* from the start of the data section */
    const void *data;                   /* inside the mapping, aligned to the file alignment */
    size_t nbytes;
} infer_gguf_tensor;

/* Map and validate a file. On failure *out is NULL and err holds a message
 * like "m.gguf: byte 1234: key 'tokenizer.ggml.tokens': string length 99999
 * runs past end of file (size 2000)". err may be NULL. */
int infer_gguf_open(const char *path, infer_gguf **out, char *err, size_t errlen);

/* Same, over caller-owned memory that must outlive the handle (not copied).
 * name is used in messages only. */
int infer_gguf_open_memory(const void *data, size_t size, const char *name,
                           infer_gguf **out, char *err, size_t errlen);

void infer_gguf_close(infer_gguf *g);   /* NULL is fine */

uint32_t infer_gguf_version(const infer_gguf *g);
size_t infer_gguf_alignment(const infer_gguf *g);
const void *infer_gguf_base(const infer_gguf *g);   /* start of the file bytes */
size_t infer_gguf_size(const infer_gguf *g);        /* file size */
uint64_t infer_gguf_data_offset(const infer_gguf *g);  /* start of tensor data */

/* Key/value access by index (0..n_kv-1) and by name. */
int64_t infer_gguf_n_kv(const infer_gguf *g);
int64_t infer_gguf_find_key(const infer_gguf *g, const char *key); /* -1 if absent */
const char *infer_gguf_key(const infer_gguf *g, int64_t i);
int infer_gguf_kv_type(const infer_gguf *g, int64_t i);            /* enum infer_gguf_type */

/* Typed getters by key name. Return INFER_OK, INFER_ENOTFOUND, INFER_ETYPE
 * (wrong type), or INFER_ERANGE (integer of another width that does not fit).
 * Integer getters accept any integer-typed value that fits; get_f32 accepts
 * f32 and f64; get_bool only bool; get_str only string. *out untouched on error. */
int infer_gguf_get_u32(const infer_gguf *g, const char *key, uint32_t *out);
int infer_gguf_get_i32(const infer_gguf *g, const char *key, int32_t *out);
int infer_gguf_get_u64(const infer_gguf *g, const char *key, uint64_t *out);
int infer_gguf_get_i64(const infer_gguf *g, const char *key, int64_t *out);
int infer_gguf_get_f32(const infer_gguf *g, const char *key, float *out);
int infer_gguf_get_f64(const infer_gguf *g, const char *key, double *out);
int infer_gguf_get_bool(const infer_gguf *g, const char *key, bool *out);
int infer_gguf_get_str(const infer_gguf *g, const char *key, infer_gguf_str *out);
int infer_gguf_get_arr(const infer_gguf *g, const char *key, infer_gguf_arr *out);

/* Same by index, for iterating all keys. */
int infer_gguf_kv_str(const infer_gguf *g, int64_t i, infer_gguf_str *out);
int infer_gguf_kv_arr(const infer_gguf *g, int64_t i, infer_gguf_arr *out);
/* Raw scalar bytes of a fixed-size scalar value (not string/array), else NULL. */
const void *infer_gguf_kv_scalar(const infer_gguf *g, int64_t i);

/* Element i of an array, converted like the getters above; INFER_ERANGE for
 * i >= n or a value that does not fit, INFER_ETYPE for a non-numeric array. */
int infer_gguf_arr_i64(const infer_gguf_arr *a, uint64_t i, int64_t *out);
int infer_gguf_arr_f64(const infer_gguf_arr *a, uint64_t i, double *out);

/* Convenience: fixed string key copied NUL-terminated into buf (truncated
 * to buflen-1). INFER_ERANGE if truncated (buf still filled). */
int infer_gguf_get_str_copy(const infer_gguf *g, const char *key, char *buf, size_t buflen);

/* Tensors by index and by name (NULL if absent / out of range). */
int64_t infer_gguf_n_tensors(const infer_gguf *g);
const infer_gguf_tensor *infer_gguf_tensor_at(const infer_gguf *g, int64_t i);
const infer_gguf_tensor *infer_gguf_find_tensor(const infer_gguf *g, const char *name);

/* ---- writer ----
 * Collects KVs and tensor descriptions in memory, then writes a GGUF v3 file.
 * Keys are written in insertion order; adding a key twice replaces its value
 * in place. The alignment is the u32 value of "general.alignment" if that key
 * was added (must be a power of two), else 32. Tensor data is either borrowed
 * (the pointer must stay valid until write) or produced at write time by a
 * fill callback, so multi-GB synthetic models need not sit in memory. */
typedef struct infer_gguf_writer infer_gguf_writer;

/* Called once per tensor during write with a zeroed buffer of nbytes. */
typedef int (*infer_gguf_fill_fn)(void *ctx, const char *name, int type, uint32_t n_dims,
                                  const int64_t *ne, void *buf, size_t nbytes);

infer_gguf_writer *infer_gguf_writer_new(void);     /* NULL on out of memory */
void infer_gguf_writer_free(infer_gguf_writer *w);

int infer_gguf_writer_add_u8(infer_gguf_writer *w, const char *key, uint8_t v);
int infer_gguf_writer_add_i8(infer_gguf_writer *w, const char *key, int8_t v);
int infer_gguf_writer_add_u16(infer_gguf_writer *w, const char *key, uint16_t v);
int infer_gguf_writer_add_i16(infer_gguf_writer *w, const char *key, int16_t v);
int infer_gguf_writer_add_u32(infer_gguf_writer *w, const char *key, uint32_t v);
int infer_gguf_writer_add_i32(infer_gguf_writer *w, const char *key, int32_t v);
int infer_gguf_writer_add_u64(infer_gguf_writer *w, const char *key, uint64_t v);
int infer_gguf_writer_add_i64(infer_gguf_writer *w, const char *key, int64_t v);
int infer_gguf_writer_add_f32(infer_gguf_writer *w, const char *key, float v);
int infer_gguf_writer_add_f64(infer_gguf_writer *w, const char *key, double v);
int infer_gguf_writer_add_bool(infer_gguf_writer *w, const char *key, bool v);
int infer_gguf_writer_add_str(infer_gguf_writer *w, const char *key, const char *s);
int infer_gguf_writer_add_strn(infer_gguf_writer *w, const char *key, const char *s, size_t len);
/* Array of n fixed-size elements of elem_type (native little-endian layout). */
int infer_gguf_writer_add_arr(infer_gguf_writer *w, const char *key, int elem_type,
                              const void *data, uint64_t n);
/* Array of n strings; lens may be NULL (then strs are NUL-terminated). */
int infer_gguf_writer_add_arr_str(infer_gguf_writer *w, const char *key,
                                  const char *const *strs, const size_t *lens, uint64_t n);
/* Copy key/value i of an open file (e.g. a real vocabulary into a synthetic model). */
int infer_gguf_writer_copy_kv(infer_gguf_writer *w, const infer_gguf *src, int64_t i);

/* Tensor with borrowed data of exactly infer_type_nbytes() bytes; data NULL
 * writes zeros. Fails with INFER_EINVAL on a duplicate name or bad shape. */
int infer_gguf_writer_add_tensor(infer_gguf_writer *w, const char *name, int type,
                                 uint32_t n_dims, const int64_t *ne, const void *data);
int infer_gguf_writer_add_tensor_fn(infer_gguf_writer *w, const char *name, int type,
                                    uint32_t n_dims, const int64_t *ne,
                                    infer_gguf_fill_fn fill, void *ctx);

/* Write the file (or into a malloc'd buffer the caller frees). */
int infer_gguf_writer_write(infer_gguf_writer *w, const char *path, char *err, size_t errlen);
int infer_gguf_writer_write_mem(infer_gguf_writer *w, void **buf, size_t *size,
                                char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
