/* fuzz_gguf.c: libFuzzer harness for the GGUF reader and the tokenizer
 * metadata loader (inference/gguf.h, inference/tokenizer.h): model files
 * come from the internet, so every byte of them is hostile input.
 *
 * Input: a whole file, opened by path (a memfd) as commons-serve opens a
 * model. Properties, checking gguf.h's contract that after a successful open
 * "every pointer handed out points inside the mapped file and every size is
 * exact": a failed open returns a status with a message and no handle; after
 * a successful one every key is found again by name, every string and array
 * lies inside the file, every tensor's bytes lie inside the file and equal
 * infer_type_nbytes of its shape, and every tensor is found by name. If the
 * file holds a vocabulary that loads, tokenizing text gives ids within the
 * vocabulary and detokenizing them works. */
#include "fuzz_util.h"
#include "gguf.h"
#include "tokenizer.h"

static const uint8_t *base;
static size_t fsize;

static void check_inside(const void *p, uint64_t len, const char *what)
{
    const uint8_t *b = p;
    FUZZ_CHECK(len == 0 || (b >= base && len <= fsize && (size_t)(b - base) <= fsize - len),
               "%s: %llu bytes at %p lie outside the file [%p, +%zu)", what, (unsigned long long)len, p,
               (const void *)base, fsize);
}

static void check_kvs(const infer_gguf *g)
{
    int64_t n = infer_gguf_n_kv(g);
    FUZZ_CHECK(n >= 0, "n_kv %lld", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        const char *key = infer_gguf_key(g, i);
        FUZZ_CHECK(key != NULL && infer_gguf_find_key(g, key) == i, "key %lld", (long long)i);
        int type = infer_gguf_kv_type(g, i);
        FUZZ_CHECK(type >= 0 && type < INFER_GGUF_TYPE_COUNT, "key '%s' type %d", key, type);
        infer_gguf_str s;
        infer_gguf_arr a;
        if (type == INFER_GGUF_STRING) {
            FUZZ_CHECK(infer_gguf_kv_str(g, i, &s) == INFER_OK, "key '%s' string", key);
            check_inside(s.ptr, s.len, key);
            char small[8];
            int rc = infer_gguf_get_str_copy(g, key, small, sizeof small);
            FUZZ_CHECK(rc == INFER_OK || rc == INFER_ERANGE, "key '%s' copy %d", key, rc);
        } else if (type == INFER_GGUF_ARRAY) {
            FUZZ_CHECK(infer_gguf_kv_arr(g, i, &a) == INFER_OK, "key '%s' array", key);
            FUZZ_CHECK(a.type >= 0 && a.type < INFER_GGUF_TYPE_COUNT && a.type != INFER_GGUF_ARRAY,
                       "key '%s' element type %d", key, a.type);
            if (a.type == INFER_GGUF_STRING) {
                for (uint64_t k = 0; k < a.n; k++) check_inside(a.strs[k].ptr, a.strs[k].len, key);
            } else {
                size_t es = infer_gguf_type_size(a.type);
                FUZZ_CHECK(es > 0 && a.n <= fsize / es, "key '%s': %llu elements of %zu bytes", key,
                           (unsigned long long)a.n, es);
                check_inside(a.data, a.n * es, key);
                int64_t iv;
                double dv;
                if (a.n) {
                    infer_gguf_arr_i64(&a, a.n - 1, &iv);
                    infer_gguf_arr_f64(&a, 0, &dv);
                }
                FUZZ_CHECK(infer_gguf_arr_i64(&a, a.n, &iv) != INFER_OK, "key '%s': read past the end", key);
            }
        } else {
            const void *v = infer_gguf_kv_scalar(g, i);
            FUZZ_CHECK(v != NULL, "key '%s' scalar", key);
            check_inside(v, infer_gguf_type_size(type), key);
            uint64_t u;
            double d;
            infer_gguf_get_u64(g, key, &u);
            infer_gguf_get_f64(g, key, &d);
        }
    }
}

static void check_tensors(const infer_gguf *g)
{
    int64_t n = infer_gguf_n_tensors(g);
    FUZZ_CHECK(n >= 0, "n_tensors %lld", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        const infer_gguf_tensor *t = infer_gguf_tensor_at(g, i);
        FUZZ_CHECK(t != NULL && t->name != NULL && infer_gguf_find_tensor(g, t->name) == t, "tensor %lld",
                   (long long)i);
        FUZZ_CHECK(t->n_dims >= 1 && t->n_dims <= INFER_GGUF_MAX_DIMS, "tensor '%s' n_dims %u", t->name,
                   t->n_dims);
        size_t nb = 0;
        FUZZ_CHECK(infer_type_nbytes(t->type, t->n_dims, t->ne, &nb) == INFER_OK && nb == t->nbytes,
                   "tensor '%s': nbytes %zu, shape says %zu", t->name, t->nbytes, nb);
        check_inside(t->data, t->nbytes, t->name);
        FUZZ_CHECK(((const uint8_t *)t->data - base) % infer_gguf_alignment(g) == 0 || t->nbytes == 0,
                   "tensor '%s' is not aligned", t->name);
    }
    FUZZ_CHECK(infer_gguf_tensor_at(g, n) == NULL && infer_gguf_tensor_at(g, -1) == NULL, "index out of range");
}

static void check_tokenizer(const infer_gguf *g, const uint8_t *data, size_t size)
{
    infer_tokenizer *t = NULL;
    char err[512] = "";
    int rc = infer_tokenizer_load(g, &t, err, sizeof err);
    if (rc != INFER_OK) {
        FUZZ_CHECK(t == NULL && err[0], "tokenizer rejected (%d) without a message", rc);
        return;
    }
    int32_t nv = infer_tokenizer_n_vocab(t);
    FUZZ_CHECK(nv >= 1, "n_vocab %d", nv);
    /* Text: a fixed sample and the tail of the file itself. */
    static const char sample[] = "Hello world <s> \xe2\x96\x81x 123\n\t\xc3\xa9\xff";
    size_t tail = size < 64 ? size : 64;
    const char *texts[2] = {sample, (const char *)data + size - tail};
    size_t lens[2] = {sizeof sample - 1, tail};
    for (int k = 0; k < 2; k++) {
        int32_t ids[1024];
        size_t n = 0;
        rc = infer_tokenize(t, texts[k], lens[k], true, k == 0, ids, 1024, &n);
        FUZZ_CHECK(rc == INFER_OK || rc == INFER_ERANGE, "tokenize %d", rc);
        if (rc != INFER_OK) continue;
        for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < nv, "id %d of %d", ids[i], nv);
        char back[8192];
        int64_t bl = infer_detokenize(t, ids, n, true, back, sizeof back);
        FUZZ_CHECK(bl >= 0, "detokenize %lld", (long long)bl);
    }
    for (int32_t id = 0; id < nv && id < 512; id++) {
        char piece[64];
        FUZZ_CHECK(infer_token_piece(t, id, true, piece, sizeof piece) >= 0, "piece %d", id);
        size_t len;
        const char *text = infer_token_text(t, id, &len);
        FUZZ_CHECK(text != NULL, "text of %d", id);
        infer_token_lookup(t, text, len);
    }
    FUZZ_CHECK(infer_token_piece(t, nv, false, NULL, 0) == -1, "piece past the vocabulary");
    infer_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd;
    char path[64];
    fuzz_memfile(data, size, &fd, path, sizeof path);
    infer_gguf *g = (infer_gguf *)1;
    char err[512] = "";
    int rc = infer_gguf_open(path, &g, err, sizeof err);
    close(fd);
    if (rc != INFER_OK) {
        FUZZ_CHECK(g == NULL && err[0], "open failed (%d) without a message or left a handle", rc);
        return 0;
    }
    base = infer_gguf_base(g);
    fsize = infer_gguf_size(g);
    FUZZ_CHECK(fsize == size, "size %zu, file has %zu", fsize, size);
    /* A file without tensors may end before the padding of its (empty) data section. */
    FUZZ_CHECK(infer_gguf_n_tensors(g) == 0 || infer_gguf_data_offset(g) <= fsize, "data offset past the end");
    check_kvs(g);
    check_tensors(g);
    check_tokenizer(g, data, size);
    infer_gguf_close(g);
    return 0;
}
