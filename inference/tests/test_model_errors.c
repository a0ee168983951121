/* test_model_errors.c: bad model files and bad calls give clear errors, never crashes.
 *
 * Writes tiny Llama/Gemma 3 GGUFs with one defect each (missing tensor, wrong shape,
 * unsupported type, missing or inconsistent metadata, truncation) and checks that
 * infer_model_load fails with the right status and a message naming the culprit; then
 * checks infer_eval's argument errors leave the context usable. Plain C (no Check), so
 * it also runs in COMMONS_INFERENCE_ONLY builds. usage: test_model_errors TMPDIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"

static int failures, checks;

#define CHECK(cond, ...) \
    do { checks++; if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
                        printf(__VA_ARGS__); printf("\n"); } } while (0)

typedef struct defect {
    const char *arch;        /* default "llama" */
    const char *skip_tensor; /* leave this tensor out */
    const char *bad_shape;   /* give this tensor one extra row */
    const char *bad_type;    /* store this tensor as unsupported_type */
    const char *skip_key;    /* leave this metadata key (without arch prefix) out */
    int n_head_kv;           /* default 2 */
} defect;

enum { E = 64, H = 4, D = 16, F = 128, L = 2, VOC = 100 };

/* A GGUF tensor type the kernels cannot multiply with (chosen at run time, since the
 * kernels' list grows), whose blocks fit a row of F elements. */
static int unsupported_type;

static int pick_unsupported_type(void)
{
    for (int t = 0; t < INFER_TYPE_COUNT; t++)
        if (infer_type_known(t) && !kern_type_supported(t) &&
            infer_type_block_size(t) > 0 && F % infer_type_block_size(t) == 0)
            return t;
    return -1;
}

static void add_t(infer_gguf_writer *w, const defect *d, const char *name, int64_t ne0,
                  int64_t ne1)
{
    if (d->skip_tensor && !strcmp(name, d->skip_tensor))
        return;
    int type = d->bad_type && !strcmp(name, d->bad_type) ? unsupported_type : INFER_TYPE_F32;
    if (d->bad_shape && !strcmp(name, d->bad_shape))
        ne1 = ne1 ? ne1 + 1 : 0, ne0 = ne1 ? ne0 : ne0 + 1;
    int64_t ne[2] = { ne0, ne1 };
    int rc = infer_gguf_writer_add_tensor(w, name, type, ne1 ? 2 : 1, ne, NULL);
    CHECK(rc == INFER_OK, "add tensor %s: %d", name, rc);
}

static void write_model(const char *path, const defect *d)
{
    const char *a = d->arch ? d->arch : "llama";
    bool gemma = !strcmp(a, "gemma3");
    int kvh = d->n_head_kv ? d->n_head_kv : 2;
    infer_gguf_writer *w = infer_gguf_writer_new();
    char key[128];
    infer_gguf_writer_add_str(w, "general.architecture", a);
    struct { const char *k; uint32_t v; } ints[] = {
        { "context_length", 64 }, { "embedding_length", E }, { "block_count", L },
        { "feed_forward_length", F }, { "attention.head_count", H },
        { "attention.head_count_kv", (uint32_t)kvh },
    };
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        if (d->skip_key && !strcmp(d->skip_key, ints[i].k))
            continue;
        snprintf(key, sizeof key, "%s.%s", a, ints[i].k);
        infer_gguf_writer_add_u32(w, key, ints[i].v);
    }
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", a);
    infer_gguf_writer_add_f32(w, key, 1e-5f);
    add_t(w, d, "token_embd.weight", E, VOC);
    add_t(w, d, "output_norm.weight", E, 0);
    for (int l = 0; l < L; l++) {
        char n[64];
#define T(suffix, a0, a1) (snprintf(n, sizeof n, "blk.%d.%s.weight", l, suffix), \
                           add_t(w, d, n, a0, a1))
        T("attn_norm", E, 0);
        T("attn_q", E, H * D);
        T("attn_k", E, kvh * D);
        T("attn_v", E, kvh * D);
        T("attn_output", H * D, E);
        T("ffn_norm", E, 0);
        T("ffn_gate", E, F);
        T("ffn_up", E, F);
        T("ffn_down", F, E);
        if (gemma) {
            T("attn_q_norm", D, 0);
            T("attn_k_norm", D, 0);
            T("post_attention_norm", E, 0);
            T("post_ffw_norm", E, 0);
        }
#undef T
    }
    char err[512];
    int rc = infer_gguf_writer_write(w, path, err, sizeof err);
    CHECK(rc == INFER_OK, "write %s: %s", path, err);
    infer_gguf_writer_free(w);
}

/* Load must fail with status want and a message containing every needle. */
static void expect_fail(kern_ctx *kc, const char *path, const defect *d, int want,
                        const char *needle1, const char *needle2)
{
    write_model(path, d);
    infer_model *m = (infer_model *)1;
    char err[1024] = "";
    int rc = infer_model_load(path, kc, NULL, NULL, &m, err, sizeof err);
    CHECK(rc == want, "%s: status %d (%s), expected %d; message: %s", needle1, rc,
          infer_status_str(rc), want, err);
    CHECK(m == NULL, "%s: model handle not NULL on failure", needle1);
    CHECK(strstr(err, needle1) != NULL, "message lacks '%s': %s", needle1, err);
    CHECK(!needle2 || strstr(err, needle2) != NULL, "message lacks '%s': %s", needle2, err);
    printf("ok: %s\n", err);
    if (m && m != (infer_model *)1)
        infer_model_free(m);
}

/* Flip bytes of a good model, mostly in its header and metadata (a deterministic
 * sweep): every load must fail with a message or succeed, and a model that loads must
 * evaluate without crashing. SHOW_FLIPS=1 prints each rejection. */
static void byte_flip_sweep(kern_ctx *kc, const char *path)
{
    write_model(path, &(defect){ .arch = "gemma3" });
    FILE *f = fopen(path, "rb");
    static unsigned char good[1 << 20];
    size_t n = f ? fread(good, 1, sizeof good, f) : 0;
    if (f)
        fclose(f);
    CHECK(n > 2048, "read back the model (%zu bytes)", n);
    size_t meta = 1500 < n ? 1500 : n;   /* header, metadata, tensor infos */
    unsigned x = 2463534242u;
    int loaded = 0, failed_with_message = 0, silent = 0;
    for (int trial = 0; trial < 300; trial++) {
        static unsigned char bad[1 << 20];
        memcpy(bad, good, n);
        for (int k = 0; k < 1 + trial % 3; k++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            /* Odd trials anywhere (weights too: NaN and Inf must not crash either). */
            bad[x % (trial % 2 ? n : meta)] ^= (unsigned char)(1u << (x >> 8) % 8);
        }
        FILE *w = fopen(path, "wb");
        if (!w || fwrite(bad, 1, n, w) != n) {
            CHECK(0, "write %s", path);
            if (w)
                fclose(w);
            return;
        }
        fclose(w);
        infer_model *m = NULL;
        char err[1024] = "";
        int rc = infer_model_load(path, kc, NULL, NULL, &m, err, sizeof err);
        if (rc == INFER_OK) {
            loaded++;
            infer_ctx *c = NULL;
            int32_t toks[3] = { 1, 2, 3 };
            if (infer_ctx_create(m, kc, &(infer_ctx_params){ .n_ctx = 8 }, &c, err,
                                 sizeof err) == INFER_OK)
                infer_eval(c, toks, 3, true, err, sizeof err);
            infer_ctx_free(c);
            infer_model_free(m);
        } else if (err[0] && m == NULL) {
            failed_with_message++;
            if (getenv("SHOW_FLIPS"))
                printf("  flip %d: %s\n", trial, err);
        } else {
            silent++;
        }
    }
    CHECK(silent == 0, "%d corrupt files failed without a message", silent);
    CHECK(failed_with_message > 0, "corruption was detected at least once");
    printf("ok: byte flips: %d loaded, %d rejected with a message\n", loaded,
           failed_with_message);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_model_errors TMPDIR\n");
        return 2;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/test_model_errors.gguf", argv[1]);
    char err[1024];
    kern_ctx *kc;
    kern_config cfg = { .backend = KERN_BACKEND_CPU, .n_threads = 1 };
    if (kern_ctx_create(&cfg, &kc, err, sizeof err)) {
        printf("FAIL kern_ctx_create: %s\n", err);
        return 1;
    }

    expect_fail(kc, path, &(defect){ .skip_tensor = "blk.1.ffn_up.weight" }, INFER_EFORMAT,
                "'blk.1.ffn_up.weight' is missing", path);
    expect_fail(kc, path, &(defect){ .bad_shape = "blk.0.attn_k.weight" }, INFER_EFORMAT,
                "blk.0.attn_k.weight", "expected [64, 32]");
    expect_fail(kc, path, &(defect){ .bad_shape = "blk.1.attn_norm.weight" }, INFER_EFORMAT,
                "blk.1.attn_norm.weight", "expected [64]");
    unsupported_type = pick_unsupported_type();
    CHECK(unsupported_type >= 0, "some GGUF type is unsupported by the kernels");
    if (unsupported_type >= 0)
        expect_fail(kc, path, &(defect){ .bad_type = "blk.0.ffn_down.weight" },
                    INFER_EUNSUPPORTED, "blk.0.ffn_down.weight",
                    infer_type_name(unsupported_type));
    expect_fail(kc, path, &(defect){ .skip_key = "block_count" }, INFER_EFORMAT,
                "llama.block_count", "missing");
    expect_fail(kc, path, &(defect){ .n_head_kv = 3 }, INFER_EFORMAT, "head_count_kv", NULL);
    expect_fail(kc, path, &(defect){ .arch = "gpt2" }, INFER_EUNSUPPORTED, "gpt2",
                "not supported");
    expect_fail(kc, path, &(defect){ .arch = "gemma3", .skip_tensor =
                "blk.0.attn_q_norm.weight" }, INFER_EFORMAT, "blk.0.attn_q_norm.weight",
                "missing");
    expect_fail(kc, path, &(defect){ .skip_tensor = "token_embd.weight" }, INFER_EFORMAT,
                "token_embd.weight", NULL);

    /* Truncated file: the GGUF reader's error comes through. */
    write_model(path, &(defect){ 0 });
    FILE *f = fopen(path, "r+");
    CHECK(f && ftruncate(fileno(f), 3000) == 0, "truncate");
    if (f)
        fclose(f);
    infer_model *m = NULL;
    int rc = infer_model_load(path, kc, NULL, NULL, &m, err, sizeof err);
    CHECK(rc == INFER_EFORMAT && m == NULL, "truncated file: status %d", rc);
    printf("ok: %s\n", err);
    rc = infer_model_load("/nonexistent/model.gguf", kc, NULL, NULL, &m, err, sizeof err);
    CHECK(rc == INFER_EIO && strstr(err, "/nonexistent/model.gguf"), "missing file: %d %s",
          rc, err);

    byte_flip_sweep(kc, path);

    /* A good model, then bad calls. */
    write_model(path, &(defect){ 0 });
    rc = infer_model_load(path, kc, NULL, NULL, &m, err, sizeof err);
    CHECK(rc == INFER_OK, "good model: %s", err);
    if (rc == INFER_OK) {
        infer_ctx *c = NULL;
        infer_ctx_params p = { .n_ctx = 8 };
        CHECK(infer_ctx_create(m, kc, &(infer_ctx_params){ .n_ctx = 65 }, &c, err,
                               sizeof err) == INFER_EINVAL && !c, "context beyond training");
        rc = infer_ctx_create(m, kc, &p, &c, err, sizeof err);
        CHECK(rc == INFER_OK, "ctx: %s", err);
        int32_t toks[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
        CHECK(infer_eval(c, toks, 5, false, err, sizeof err) == INFER_OK, "eval: %s", err);
        int32_t bad[2] = { 3, VOC };
        CHECK(infer_eval(c, bad, 2, false, err, sizeof err) == INFER_EINVAL &&
              strstr(err, "outside the vocabulary"), "token out of range: %s", err);
        bad[1] = -1;
        CHECK(infer_eval(c, bad, 2, false, err, sizeof err) == INFER_EINVAL, "negative id");
        CHECK(infer_eval(c, toks, 4, false, err, sizeof err) == INFER_ERANGE &&
              strstr(err, "context full"), "overflow: %s", err);
        CHECK(infer_ctx_n_past(c) == 5, "failed calls changed n_past to %d",
              infer_ctx_n_past(c));
        CHECK(infer_eval(c, toks, 3, false, err, sizeof err) == INFER_OK, "fill: %s", err);
        CHECK(infer_ctx_truncate(c, 9) == INFER_EINVAL, "truncate beyond n_past");
        CHECK(infer_ctx_truncate(c, 2) == INFER_OK && infer_ctx_n_past(c) == 2, "truncate");
        CHECK(infer_eval(c, toks, 0, false, err, sizeof err) == INFER_EINVAL, "zero tokens");
        infer_ctx_free(c);
        infer_model_free(m);
    }
    unlink(path);
    kern_ctx_destroy(kc);
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
