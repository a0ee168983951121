/* model_load.c: reading hyper-parameters and validating/preparing weights (model.h).
 *
 * Every tensor the forward pass uses is looked up here, its shape checked against
 * the hyper-parameters and its type against what the kernels compute with, so that
 * the forward pass never meets a surprise. Weights stay in the file mapping when
 * the kernels use host memory; a norm vector stored in another type than F32 is
 * dequantized. Pages are touched while loading so the progress callback reflects
 * the real cost of bringing a large file in from disk.
 *
 * A shard (infer_model_load_shard) touches only its slice: row slices are used in
 * place, column slices copied out (then their mapped pages are dropped), tensors the
 * shard never reads are validated but neither touched nor counted. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model_internal.h"

#define FAIL(code, ...) do { snprintf(err, errlen, __VA_ARGS__); return (code); } while (0)

/* ---- metadata ---- */

/* Integer key "<arch>.<suffix>"; dflt < 0 means required. Must be >= 0 (or >= 1 when
 * positive is set). */
static int key_int(const infer_model *m, const char *suffix, int64_t dflt, bool positive,
                   int *out, char *err, size_t errlen)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->hp.arch_name, suffix);
    int64_t v;
    int rc = infer_gguf_get_i64(m->gguf, key, &v);
    if (rc == INFER_ENOTFOUND) {
        if (dflt < 0)
            FAIL(INFER_EFORMAT, "%s: metadata key '%s' is missing (required for %s)",
                 m->path, key, m->hp.arch_name);
        v = dflt;
    } else if (rc != INFER_OK) {
        FAIL(INFER_EFORMAT, "%s: metadata key '%s': %s (expected an integer)", m->path, key,
             infer_status_str(rc));
    }
    if (v < (positive ? 1 : 0) || v > (1 << 30))
        FAIL(INFER_EFORMAT, "%s: metadata key '%s' = %lld, expected %s and at most 2^30",
             m->path, key, (long long)v, positive ? "> 0" : ">= 0");
    *out = (int)v;
    return INFER_OK;
}

static int key_float(const infer_model *m, const char *suffix, double dflt, bool required,
                     float *out, char *err, size_t errlen)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", m->hp.arch_name, suffix);
    float v;
    int rc = infer_gguf_get_f32(m->gguf, key, &v);
    if (rc == INFER_ENOTFOUND) {
        if (required)
            FAIL(INFER_EFORMAT, "%s: metadata key '%s' is missing", m->path, key);
        v = (float)dflt;
    } else if (rc != INFER_OK) {
        FAIL(INFER_EFORMAT, "%s: metadata key '%s': %s (expected a float)", m->path, key,
             infer_status_str(rc));
    }
    if (!isfinite(v) || v <= 0)
        FAIL(INFER_EFORMAT, "%s: metadata key '%s' = %g, expected a positive number",
             m->path, key, v);
    *out = v;
    return INFER_OK;
}

static int read_hparams(infer_model *m, char *err, size_t errlen)
{
    infer_hparams *hp = &m->hp;
    char arch[64] = "";
    int rc = infer_gguf_get_str_copy(m->gguf, "general.architecture", arch, sizeof arch);
    if (rc == INFER_ENOTFOUND)
        FAIL(INFER_EFORMAT, "%s: metadata key 'general.architecture' is missing (is this a "
             "model file and not a vocabulary-only GGUF?)", m->path);
    if (strcmp(arch, "llama") == 0)
        hp->arch = INFER_ARCH_LLAMA;
    else if (strcmp(arch, "gemma3") == 0)
        hp->arch = INFER_ARCH_GEMMA3;
    else
        FAIL(INFER_EUNSUPPORTED, "%s: architecture '%s' is not supported (supported: llama, "
             "gemma3)", m->path, arch);
    bool gemma = hp->arch == INFER_ARCH_GEMMA3;
    snprintf(hp->arch_name, sizeof hp->arch_name, "%s", gemma ? "gemma3" : "llama");

    if ((rc = key_int(m, "context_length", -1, true, &hp->n_ctx_train, err, errlen)) ||
        (rc = key_int(m, "embedding_length", -1, true, &hp->n_embd, err, errlen)) ||
        (rc = key_int(m, "block_count", -1, true, &hp->n_layer, err, errlen)) ||
        (rc = key_int(m, "feed_forward_length", -1, true, &hp->n_ff, err, errlen)) ||
        (rc = key_int(m, "attention.head_count", -1, true, &hp->n_head, err, errlen)) ||
        (rc = key_int(m, "attention.head_count_kv", hp->n_head, true, &hp->n_head_kv, err,
                      errlen)))
        return rc;
    if (hp->n_head % hp->n_head_kv)
        FAIL(INFER_EFORMAT, "%s: attention.head_count %d is not a multiple of "
             "attention.head_count_kv %d", m->path, hp->n_head, hp->n_head_kv);
    int dk, dv;
    if ((rc = key_int(m, "attention.key_length", hp->n_embd / hp->n_head, true, &dk, err,
                      errlen)) ||
        (rc = key_int(m, "attention.value_length", dk, true, &dv, err, errlen)))
        return rc;
    if (dk != dv)
        FAIL(INFER_EUNSUPPORTED, "%s: attention.key_length %d != value_length %d is not "
             "supported", m->path, dk, dv);
    hp->head_dim = dk;
    if ((rc = key_int(m, "rope.dimension_count", dk, true, &hp->n_rot, err, errlen)))
        return rc;
    if (hp->n_rot > dk || hp->n_rot % 2)
        FAIL(INFER_EFORMAT, "%s: rope.dimension_count %d must be even and <= key_length %d",
             m->path, hp->n_rot, dk);
    if ((rc = key_float(m, "attention.layer_norm_rms_epsilon", 0, true, &hp->eps, err,
                        errlen)) ||
        (rc = key_float(m, "rope.freq_base", gemma ? 1e6 : 1e4, false, &hp->rope_base, err,
                        errlen)))
        return rc;
    hp->rope_scale = 1.0f;
    char key[128], stype[32] = "none";
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    infer_gguf_get_str_copy(m->gguf, key, stype, sizeof stype);
    if (strcmp(stype, "linear") == 0) {
        float f;
        if ((rc = key_float(m, "rope.scaling.factor", 1.0, false, &f, err, errlen)))
            return rc;
        hp->rope_scale = 1.0f / f;
    } else if (strcmp(stype, "none") != 0) {
        FAIL(INFER_EUNSUPPORTED, "%s: %s = '%s' is not supported (none, linear; Llama 3 "
             "scaling comes as the rope_freqs tensor)", m->path, key, stype);
    }
    hp->rope_base_local = 10000.0f;
    hp->sliding_window = 0;
    hp->swa_period = INFER_GEMMA3_SWA_PATTERN;
    if (gemma) {
        snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", arch);
        int64_t ki = infer_gguf_find_key(m->gguf, key);
        if (ki >= 0 && infer_gguf_kv_type(m->gguf, ki) == INFER_GGUF_ARRAY)
            FAIL(INFER_EUNSUPPORTED, "%s: %s as a per-layer array is not supported (only a "
                 "period)", m->path, key);
        if ((rc = key_int(m, "attention.sliding_window", 0, false, &hp->sliding_window, err,
                          errlen)) ||
            (rc = key_int(m, "attention.sliding_window_pattern", INFER_GEMMA3_SWA_PATTERN,
                          true, &hp->swa_period, err, errlen)) ||
            (rc = key_float(m, "rope.freq_base_swa", 10000.0, false, &hp->rope_base_local,
                            err, errlen)))
            return rc;
    }
    hp->attn_scale = 1.0f / sqrtf((float)dk);
    return INFER_OK;
}

/* ---- tensors ---- */

static int own(infer_model *m, void *p)
{
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **o = realloc(m->owned, (size_t)cap * sizeof *o);
        if (!o)
            return INFER_ENOMEM;
        m->owned = o;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return INFER_OK;
}

/* Host bytes -> where the kernels read them. host_copy says the bytes are a
 * malloc'd buffer this function takes over. */
static int place(infer_model *m, const void *bytes, size_t n, bool host_copy,
                 const void **out, char *err, size_t errlen)
{
    if (kern_ctx_host_memory(m->kc)) {
        if (host_copy && own(m, (void *)bytes)) {
            free((void *)bytes);
            FAIL(INFER_ENOMEM, "%s: out of memory", m->path);
        }
        *out = bytes;
        return INFER_OK;
    }
    void *d = kern_alloc(m->kc, n);
    if (!d || kern_upload(m->kc, d, bytes, n) != KERN_OK) {
        if (host_copy)
            free((void *)bytes);
        kern_free(m->kc, d);
        FAIL(INFER_ENOMEM, "%s: cannot place %zu bytes of weights on the device: %s", m->path,
             n, kern_ctx_error(m->kc));
    }
    if (host_copy)
        free((void *)bytes);
    if (own(m, d)) {
        kern_free(m->kc, d);
        FAIL(INFER_ENOMEM, "%s: out of memory", m->path);
    }
    m->owned_on_backend = true;
    *out = d;
    return INFER_OK;
}

/* Advice to drop the whole pages of [base, base + n) of the file mapping from
 * memory once their bytes were copied: they are file-backed, so a later read
 * would fault them back in, but nothing reads them. A failure leaves them
 * resident, nothing more. */
static void release_pages(const void *base, size_t n)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)base + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    uintptr_t b = ((uintptr_t)base + n) / (uintptr_t)page * (uintptr_t)page;
    if (b > a)
        (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

/* A matrix the kernels read faster in another layout (kern_repack_type: Q4_0
 * rows interleaved by 4 on AVX-512 hosts) is copied into that layout, owned by
 * the model, and its mapped pages are released: resident memory stays one copy
 * (peak: one tensor more). rt is the repacked type. */
static int repack(infer_model *m, const char *name, const infer_gguf_tensor *t, int64_t rows,
                  int64_t k, int rt, const void **ptr, int *type, char *err, size_t errlen)
{
    void *buf = NULL;
    if (posix_memalign(&buf, 64, t->nbytes))
        FAIL(INFER_ENOMEM, "%s: out of memory repacking '%s' (%zu bytes)", m->path, name,
             t->nbytes);
    if (kern_repack(m->kc, buf, t->data, t->type, rows, k) != KERN_OK) {
        free(buf);
        FAIL(INFER_EFORMAT, "%s: tensor '%s': %s", m->path, name, kern_ctx_error(m->kc));
    }
    if (own(m, buf)) {
        free(buf);
        FAIL(INFER_ENOMEM, "%s: out of memory", m->path);
    }
    release_pages(t->data, t->nbytes);
    *ptr = buf;
    *type = rt;
    return INFER_OK;
}

/* USE_ROWS: a matrix kern_get_rows reads (the embeddings, and a tied head with them),
 * so kept in the file's layout (never repacked). */
enum use { USE_VEC, USE_MAT, USE_ROWS };

typedef struct loader {
    infer_model *m;
    infer_progress_fn progress;
    void *ud;
    size_t done, total;
    volatile unsigned char sink;
    bool unused;   /* the tensors being looked up now are validated only (pointer NULL) */
    bool lazy;     /* used in place but neither touched nor counted: a shard reads only
                    * some rows of it, which come in on first use */
} loader;

static void touch_range(loader *L, const void *data, size_t nbytes)
{
    const unsigned char *p = data;
    unsigned char s = 0;
    for (size_t i = 0; i < nbytes; i += 4096)
        s ^= p[i];
    L->sink ^= s;
    L->done += nbytes;
    if (L->progress && L->total)
        L->progress(L->ud, (double)L->done / (double)L->total);
}

static void touch(loader *L, const infer_gguf_tensor *t)
{
    touch_range(L, t->data, t->nbytes);
}

/* How a matrix is split across tensor-parallel ranks: nothing, rows [lo, hi) (the
 * output dimension, contiguous in the file) or columns [lo, hi) (the input one). */
enum split { SPLIT_NONE, SPLIT_ROWS, SPLIT_COLS };
typedef struct slice {
    enum split split;
    int64_t lo, hi;
} slice;

static int unsupported(const infer_model *m, const char *name, const infer_gguf_tensor *t,
                       char *err, size_t errlen);

/* Find tensor `name`, check it is [ne0] (vec) or [ne0, ne1] (matrix) and usable,
 * and produce the pointer the kernels read. *optional_missing (when non-NULL) makes
 * absence a non-error. what: how the expected shape follows from the metadata. */
static int get_tensor(loader *L, const char *name, enum use use, int64_t ne0, int64_t ne1,
                      const char *what, const void **ptr, int *type, bool *missing,
                      char *err, size_t errlen)
{
    infer_model *m = L->m;
    const infer_gguf_tensor *t = infer_gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (missing) {
            *missing = true;
            return INFER_OK;
        }
        FAIL(INFER_EFORMAT, "%s: tensor '%s' is missing (a %s model needs it: %s)", m->path,
             name, m->hp.arch_name, what);
    }
    if (missing)
        *missing = false;
    bool shape_ok = t->ne[0] == ne0 && t->ne[2] == 1 && t->ne[3] == 1 &&
                    (use == USE_VEC ? t->ne[1] == 1 : t->ne[1] == ne1);
    if (!shape_ok) {
        if (use == USE_VEC)
            FAIL(INFER_EFORMAT, "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected "
                 "[%lld] (%s)", m->path, name, (long long)t->ne[0], (long long)t->ne[1],
                 (long long)t->ne[2], (long long)t->ne[3], (long long)ne0, what);
        FAIL(INFER_EFORMAT, "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected "
             "[%lld, %lld] (%s)", m->path, name, (long long)t->ne[0], (long long)t->ne[1],
             (long long)t->ne[2], (long long)t->ne[3], (long long)ne0, (long long)ne1, what);
    }
    if (L->unused) {   /* validated; this shard never reads it */
        *ptr = NULL;
        if (use != USE_VEC) {
            if (!kern_type_supported(t->type))
                return unsupported(m, name, t, err, errlen);
            *type = t->type;
        }
        return INFER_OK;
    }
    if (!L->lazy)
        touch(L, t);
    if (use == USE_VEC) {
        if (t->type == INFER_TYPE_F32) {
            m->weight_bytes += t->nbytes;
            return place(m, t->data, t->nbytes, false, ptr, err, errlen);
        }
        if (!kern_type_supported(t->type))
            FAIL(INFER_EUNSUPPORTED, "%s: tensor '%s' has type %s; a norm vector must be F32, "
                 "F16 or BF16", m->path, name, infer_type_name(t->type) ?
                 infer_type_name(t->type) : "unknown");
        float *f = malloc((size_t)ne0 * sizeof *f);
        char msg[256];
        if (!f)
            FAIL(INFER_ENOMEM, "%s: out of memory", m->path);
        if (kern_dequantize(t->type, f, t->data, ne0, msg, sizeof msg) != KERN_OK) {
            free(f);
            FAIL(INFER_EFORMAT, "%s: tensor '%s': %s", m->path, name, msg);
        }
        m->weight_bytes += (size_t)ne0 * sizeof *f;
        return place(m, f, (size_t)ne0 * sizeof *f, true, ptr, err, errlen);
    }
    if (kern_type_supported(t->type)) {
        *type = t->type;
        if (!L->lazy)
            m->weight_bytes += t->nbytes;
        int rt = L->lazy || use == USE_ROWS ? t->type
                 : kern_repack_type(m->kc, t->type, ne1, ne0);
        if (rt != t->type)
            return repack(m, name, t, ne1, ne0, rt, ptr, type, err, errlen);
        return place(m, t->data, t->nbytes, false, ptr, err, errlen);
    }
    return unsupported(m, name, t, err, errlen);
}

/* A slice of matrix `name` ([k, rows], see get_tensor). Row slices stay in the
 * mapping; a column slice is gathered row by row into an owned buffer and the
 * tensor's whole pages are released from memory (they are file-backed: a later read
 * would fault them back in, but nothing reads them). */
static int get_slice(loader *L, const char *name, int64_t k, int64_t rows, const char *what,
                     const slice *sl, const void **ptr, int *type, char *err, size_t errlen)
{
    if (sl->split == SPLIT_NONE)
        return get_tensor(L, name, USE_MAT, k, rows, what, ptr, type, NULL, err, errlen);
    infer_model *m = L->m;
    const infer_gguf_tensor *t = infer_gguf_find_tensor(m->gguf, name);
    if (!t || t->ne[0] != k || t->ne[1] != rows || !kern_type_supported(t->type))
        return get_tensor(L, name, USE_MAT, k, rows, what, ptr, type, NULL, err, errlen);
    *type = t->type;
    const size_t row_bytes = t->nbytes / (size_t)rows;
    const unsigned char *base = t->data;
    if (sl->split == SPLIT_ROWS) {
        size_t n = (size_t)(sl->hi - sl->lo) * row_bytes;
        touch_range(L, base + (size_t)sl->lo * row_bytes, n);
        m->weight_bytes += n;
        return place(m, base + (size_t)sl->lo * row_bytes, n, false, ptr, err, errlen);
    }
    const int64_t bs = infer_type_block_size(t->type);
    if (sl->lo % bs || sl->hi % bs)
        FAIL(INFER_EUNSUPPORTED, "%s: tensor '%s' (%s, blocks of %lld values) cannot be split "
             "by columns [%lld, %lld) for tensor parallelism: each rank's %lld columns must "
             "be a multiple of the block size (use fewer ranks or another quantization)",
             m->path, name, infer_type_name(t->type), (long long)bs, (long long)sl->lo,
             (long long)sl->hi, (long long)(sl->hi - sl->lo));
    const size_t off = (size_t)(sl->lo / bs) * infer_type_type_size(t->type);
    const size_t len = (size_t)((sl->hi - sl->lo) / bs) * infer_type_type_size(t->type);
    unsigned char *buf = malloc(len * (size_t)rows);
    if (!buf)
        FAIL(INFER_ENOMEM, "%s: out of memory for the slice of '%s' (%zu bytes)", m->path,
             name, len * (size_t)rows);
    for (int64_t r = 0; r < rows; r++)
        memcpy(buf + (size_t)r * len, base + (size_t)r * row_bytes + off, len);
    L->done += t->nbytes;
    release_pages(base, t->nbytes);
    m->weight_bytes += len * (size_t)rows;
    return place(m, buf, len * (size_t)rows, true, ptr, err, errlen);
}

static int unsupported(const infer_model *m, const char *name, const infer_gguf_tensor *t,
                       char *err, size_t errlen)
{
    char list[256] = "";
    for (int ty = 0; ty < INFER_TYPE_COUNT; ty++)
        if (kern_type_supported(ty) && infer_type_name(ty) &&
            strlen(list) + strlen(infer_type_name(ty)) + 2 < sizeof list)
            strcat(strcat(list, " "), infer_type_name(ty));
    FAIL(INFER_EUNSUPPORTED, "%s: tensor '%s' has type %s, which the kernels cannot compute "
         "with (supported:%s)", m->path, name,
         infer_type_name(t->type) ? infer_type_name(t->type) : "unknown", list);
}

/* The slice a shard holds: hyper-parameters become local (model.h: infer_shard), and
 * the tensor-parallel row/column ranges of the layer matrices are returned. */
typedef struct shard_plan {
    slice q, kv, ff, o_cols, down_cols;
    int l0, l1;                  /* file layers held */
    bool embd, head;             /* this shard reads the embeddings / the output head */
} shard_plan;

static int plan_shard(infer_model *m, shard_plan *sp, char *err, size_t errlen)
{
    infer_hparams *hp = &m->hp;
    const infer_shard *sh = &m->shard;
    const int N = sh->n, r = sh->rank, H = hp->n_head, HKV = hp->n_head_kv, D = hp->head_dim;
    *sp = (shard_plan){ .l0 = 0, .l1 = hp->n_layer, .embd = true, .head = true };
    if (sh->kind == INFER_SHARD_NONE)
        return INFER_OK;
    if (N < 1 || r < 0 || r >= N || (sh->kind != INFER_SHARD_TP && sh->kind != INFER_SHARD_PP))
        FAIL(INFER_EINVAL, "%s: bad shard (kind %d, rank %d of %d)", m->path, sh->kind, r, N);
    if (sh->kind == INFER_SHARD_PP) {
        if (hp->n_layer < N)
            FAIL(INFER_EUNSUPPORTED, "%s: %d layers cannot be split into %d pipeline stages "
                 "(at most one stage per layer)", m->path, hp->n_layer, N);
        sp->l0 = (int)((int64_t)r * hp->n_layer / N);
        sp->l1 = (int)((int64_t)(r + 1) * hp->n_layer / N);
        sp->embd = r == 0;
        sp->head = r == N - 1;
        hp->first_layer = sp->l0;
        hp->n_layer = sp->l1 - sp->l0;
        return INFER_OK;
    }
    if (H % N)
        FAIL(INFER_EUNSUPPORTED, "%s: tensor parallelism over %d ranks needs attention."
             "head_count (%d) to be a multiple of %d", m->path, N, H, N);
    if (hp->n_ff % N)
        FAIL(INFER_EUNSUPPORTED, "%s: tensor parallelism over %d ranks needs "
             "feed_forward_length (%d) to be a multiple of %d", m->path, N, hp->n_ff, N);
    int hkv, kv0;
    if (HKV % N == 0) {
        hkv = HKV / N;
        kv0 = r * hkv;
    } else if (N % HKV == 0) {   /* N/HKV ranks share each KV head: each keeps a copy */
        hkv = 1;
        kv0 = r * HKV / N;
    } else {
        FAIL(INFER_EUNSUPPORTED, "%s: tensor parallelism over %d ranks needs attention."
             "head_count_kv (%d) to be a multiple of %d, or %d a multiple of it", m->path, N,
             HKV, N, N);
    }
    const int h = H / N, f = hp->n_ff / N;
    sp->q = (slice){ SPLIT_ROWS, (int64_t)r * h * D, (int64_t)(r + 1) * h * D };
    sp->o_cols = (slice){ SPLIT_COLS, sp->q.lo, sp->q.hi };
    sp->kv = (slice){ SPLIT_ROWS, (int64_t)kv0 * D, (int64_t)(kv0 + hkv) * D };
    sp->ff = (slice){ SPLIT_ROWS, (int64_t)r * f, (int64_t)(r + 1) * f };
    sp->down_cols = (slice){ SPLIT_COLS, sp->ff.lo, sp->ff.hi };
    return INFER_OK;
}

static int load_tensors(loader *L, char *err, size_t errlen)
{
    infer_model *m = L->m;
    const infer_hparams *hp = &m->hp;
    bool gemma = hp->arch == INFER_ARCH_GEMMA3;
    /* shapes as stored in the file; plan_shard makes hp local afterwards */
    int64_t E = hp->n_embd, F = hp->n_ff, D = hp->head_dim;
    int64_t Q = (int64_t)hp->n_head * D, KV = (int64_t)hp->n_head_kv * D;
    int rc;
    shard_plan sp;
    if ((rc = plan_shard(m, &sp, err, errlen)))
        return rc;

    const infer_gguf_tensor *te = infer_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!te)
        FAIL(INFER_EFORMAT, "%s: tensor 'token_embd.weight' is missing", m->path);
    if (te->ne[1] < 1 || te->ne[1] > INT32_MAX)
        FAIL(INFER_EFORMAT, "%s: tensor 'token_embd.weight' has %lld rows", m->path,
             (long long)te->ne[1]);
    m->hp.n_vocab = (int)te->ne[1];
    for (int64_t i = 0; i < infer_gguf_n_tensors(m->gguf); i++)
        L->total += infer_gguf_tensor_at(m->gguf, i)->nbytes;
    bool tied = !infer_gguf_find_tensor(m->gguf, "output.weight");

    const bool shard = m->shard.kind != INFER_SHARD_NONE;
    /* the output head's vocabulary rows: a tensor-parallel rank computes its share */
    slice vocab = { SPLIT_NONE, 0, hp->n_vocab };
    if (m->shard.kind == INFER_SHARD_TP) {
        const int N = m->shard.n, r = m->shard.rank;
        if (hp->n_vocab < N)
            FAIL(INFER_EUNSUPPORTED, "%s: a vocabulary of %d cannot be split over %d ranks",
                 m->path, hp->n_vocab, N);
        vocab = (slice){ SPLIT_ROWS, (int64_t)hp->n_vocab * r / N,
                         (int64_t)hp->n_vocab * (r + 1) / N };
    }
    m->head_row0 = (int)vocab.lo;
    m->head_rows = (int)(vocab.hi - vocab.lo);

    const void *p;
    L->unused = !sp.embd && !(tied && sp.head);
    L->lazy = shard;
    if ((rc = get_tensor(L, "token_embd.weight", USE_ROWS, E, hp->n_vocab,
                         "embedding_length x vocabulary", &m->tok_embd, &m->tok_embd_t, NULL,
                         err, errlen)))
        return rc;
    L->lazy = false;
    L->unused = !sp.head;
    if ((rc = get_tensor(L, "output_norm.weight", USE_VEC, E, 0, "embedding_length", &p, NULL,
                         NULL, err, errlen)))
        return rc;
    m->output_norm = p;
    if (!tied &&
        (rc = get_slice(L, "output.weight", E, hp->n_vocab, "embedding_length x vocabulary",
                        &vocab, &m->output, &m->output_t, err, errlen)))
        return rc;
    L->unused = false;
    m->hp.tied_output = tied;
    if (tied && m->tok_embd) {   /* the head's rows of the embeddings */
        const size_t row_bytes = te->nbytes / (size_t)hp->n_vocab;
        m->output = (const unsigned char *)m->tok_embd + (size_t)vocab.lo * row_bytes;
        m->output_t = m->tok_embd_t;
        if (shard && sp.head) {
            touch_range(L, m->output, (size_t)m->head_rows * row_bytes);
            m->weight_bytes += (size_t)m->head_rows * row_bytes;
        }
    }
    bool missing;
    if (!gemma) {
        if ((rc = get_tensor(L, "rope_freqs.weight", USE_VEC, hp->n_rot / 2, 0,
                             "rope.dimension_count / 2", &p, NULL, &missing, err, errlen)))
            return rc;
        m->rope_freqs = missing ? NULL : p;
    }

    m->layers = calloc((size_t)(sp.l1 - sp.l0), sizeof *m->layers);
    if (!m->layers)
        FAIL(INFER_ENOMEM, "%s: out of memory", m->path);
    for (int il = sp.l0; il < sp.l1; il++) {
        infer_layer *ly = &m->layers[il - sp.l0];
        char n[96];
#define VEC(field, suffix, len, what) \
        do { snprintf(n, sizeof n, "blk.%d.%s.weight", il, suffix); \
             if ((rc = get_tensor(L, n, USE_VEC, len, 0, what, &p, NULL, NULL, err, errlen))) \
                 return rc; \
             ly->field = p; } while (0)
#define MAT(field, suffix, k, rows, what, sl) \
        do { snprintf(n, sizeof n, "blk.%d.%s.weight", il, suffix); \
             if ((rc = get_slice(L, n, k, rows, what, &(sl), &ly->field, &ly->field##_t, \
                                 err, errlen))) \
                 return rc; } while (0)
        VEC(attn_norm, "attn_norm", E, "embedding_length");
        MAT(wq, "attn_q", E, Q, "embedding_length x head_count*key_length", sp.q);
        MAT(wk, "attn_k", E, KV, "embedding_length x head_count_kv*key_length", sp.kv);
        MAT(wv, "attn_v", E, KV, "embedding_length x head_count_kv*value_length", sp.kv);
        MAT(wo, "attn_output", Q, E, "head_count*value_length x embedding_length", sp.o_cols);
        VEC(ffn_norm, "ffn_norm", E, "embedding_length");
        MAT(w_gate, "ffn_gate", E, F, "embedding_length x feed_forward_length", sp.ff);
        MAT(w_up, "ffn_up", E, F, "embedding_length x feed_forward_length", sp.ff);
        MAT(w_down, "ffn_down", F, E, "feed_forward_length x embedding_length", sp.down_cols);
        if (gemma) {
            VEC(q_norm, "attn_q_norm", D, "key_length");
            VEC(k_norm, "attn_k_norm", D, "key_length");
            VEC(post_attn_norm, "post_attention_norm", E, "embedding_length");
            VEC(post_ffw_norm, "post_ffw_norm", E, "embedding_length");
        }
#undef VEC
#undef MAT
    }
    if (m->shard.kind == INFER_SHARD_TP) {   /* the local slice's hyper-parameters */
        m->hp.n_head = (int)((sp.q.hi - sp.q.lo) / D);
        m->hp.n_head_kv = (int)((sp.kv.hi - sp.kv.lo) / D);
        m->hp.n_ff = (int)(sp.ff.hi - sp.ff.lo);
    }
    return INFER_OK;
}

int infer_model_load(const char *path, kern_ctx *kc, infer_progress_fn progress, void *ud,
                     infer_model **out, char *err, size_t errlen)
{
    return infer_model_load_shard(path, kc, NULL, progress, ud, out, err, errlen);
}

int infer_model_load_shard(const char *path, kern_ctx *kc, const infer_shard *shard,
                           infer_progress_fn progress, void *ud, infer_model **out,
                           char *err, size_t errlen)
{
    *out = NULL;
    if (!path || !kc)
        FAIL(INFER_EINVAL, "infer_model_load: NULL path or kernel context");
    infer_model *m = calloc(1, sizeof *m);
    if (!m)
        FAIL(INFER_ENOMEM, "out of memory");
    snprintf(m->path, sizeof m->path, "%s", path);
    m->kc = kc;
    m->shard = shard ? *shard : (infer_shard){ INFER_SHARD_NONE, 0, 1 };
    int rc = infer_gguf_open(path, &m->gguf, err, errlen);
    if (rc == INFER_OK)
        rc = read_hparams(m, err, errlen);
    if (rc == INFER_OK) {
        loader L = { .m = m, .progress = progress, .ud = ud };
        rc = load_tensors(&L, err, errlen);
        if (rc == INFER_OK && progress)
            progress(ud, 1.0);
    }
    if (rc != INFER_OK) {
        infer_model_free(m);
        return rc;
    }
    *out = m;
    return INFER_OK;
}

void infer_model_free(infer_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_owned; i++) {
        if (m->owned_on_backend)
            kern_free(m->kc, m->owned[i]);
        else
            free(m->owned[i]);
    }
    free(m->owned);
    free(m->layers);
    infer_gguf_close(m->gguf);
    free(m);
}

const infer_hparams *infer_model_hparams(const infer_model *m) { return &m->hp; }
const infer_gguf *infer_model_gguf(const infer_model *m) { return m->gguf; }
size_t infer_model_weight_bytes(const infer_model *m) { return m->weight_bytes; }
const infer_shard *infer_model_shard(const infer_model *m) { return &m->shard; }
