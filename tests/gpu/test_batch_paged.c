/* test_batch_paged.c: ctest inference.batch.paged. The batched step's device path
 * (kern_kv_store_paged + kern_attention_paged, what inference/batch.c runs on CUDA)
 * taken on the CPU with infer_batch_params.paged_kernels, against the per-sequence
 * host path: the same steps on two pools (prompts in chunks, decoding, blocks
 * interleaved over the pool, a sliding window crossing blocks), every logits row
 * must agree (relative difference <= 1e-6, NaN never passes). The decode-only steps
 * of the plan take batch.c's descriptor path (the layout CUDA replays as graphs, read
 * back on the CPU). Then the paged kernels' bad arguments. Runs without a GPU; tests/gpu/check_ops compares the
 * GPU's paged kernels with these CPU ones.
 * Usage: test_batch_paged MODEL.gguf... */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "sampler.h"
#include "model.h"
#include "paged_kv.h"

#define NSEQ 3
#define LEN 40

static int fails;
#define CHECK(cond, ...) \
    do { if (!(cond)) { fails++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

typedef struct side {
    infer_paged_kv kv;
    infer_batch *b;
    infer_block_table bt[NSEQ];
} side;

typedef struct run {
    const char *model;
    int V;
    side sd[2]; /* 0: per-sequence path, 1: paged kernels */
    int past[NSEQ];
    int32_t toks[NSEQ][LEN];
    double worst;
} run;

/* One step on both sides: sequence i takes n[i] tokens (0: not in this step). */
static int step(run *r, const int *n, int no)
{
    infer_batch_seq seqs[2][NSEQ];
    int ns = 0;
    char err[512];
    for (int i = 0; i < NSEQ; i++) {
        if (!n[i]) continue;
        for (int k = 0; k < 2; k++) {
            side *s = &r->sd[k];
            if (infer_pkv_reserve(&s->kv, &s->bt[i], r->past[i] + n[i])) {
                CHECK(0, "%s: the pool is too small", r->model);
                return 1;
            }
            seqs[k][ns] = (infer_batch_seq){&s->bt[i], r->past[i], r->toks[i] + r->past[i], n[i], true};
        }
        ns++;
    }
    for (int k = 0; k < 2; k++)
        if (infer_batch_step(r->sd[k].b, seqs[k], ns, err, sizeof err)) {
            CHECK(0, "%s step %d, %s path: %s", r->model, no, k ? "paged" : "per-sequence", err);
            return 1;
        }
    int r0, r1;
    const float *l0 = infer_batch_logits(r->sd[0].b, &r0), *l1 = infer_batch_logits(r->sd[1].b, &r1);
    if (r0 != ns || r1 != ns) {
        CHECK(0, "%s step %d: %d and %d logit rows, want %d", r->model, no, r0, r1, ns);
        return 1;
    }
    for (int row = 0; row < ns; row++) {
        double emax = 0, rmax = 0;
        int bad = 0;
        for (int j = 0; j < r->V; j++) {
            double a = l0[(size_t)row * r->V + j], b = l1[(size_t)row * r->V + j];
            if (!isfinite(a) || !isfinite(b)) bad = 1;
            emax = fabs(a - b) > emax ? fabs(a - b) : emax;
            rmax = fabs(a) > rmax ? fabs(a) : rmax;
        }
        double rel = emax / (rmax > 1e-30 ? rmax : 1e-30);
        r->worst = rel > r->worst ? rel : r->worst;
        CHECK(!bad && rel <= 1e-6, "%s step %d row %d: paged vs per-sequence relative difference %.3g%s", r->model,
              no, row, rel, bad ? " (non-finite)" : "");
    }
    for (int i = 0; i < NSEQ; i++) r->past[i] += n[i];
    return 0;
}

static void check_model(const char *path, kern_ctx *kc)
{
    char err[512];
    infer_model *m = NULL;
    if (infer_model_load(path, kc, NULL, NULL, &m, err, sizeof err)) {
        CHECK(0, "%s", err);
        return;
    }
    const infer_hparams *hp = infer_model_hparams(m);
    run *r = calloc(1, sizeof *r);
    r->model = path;
    r->V = hp->n_vocab;
    for (int i = 0; i < NSEQ; i++)
        for (int j = 0; j < LEN; j++) r->toks[i][j] = (int32_t)((7919LL * (i * LEN + j) + 13) % r->V);
    int ok = 1, fails0 = fails;
    for (int k = 0; k < 2 && ok; k++) {
        infer_batch_params p = {.max_tokens = 48, .max_logits = NSEQ, .n_ctx = LEN, .paged_kernels = k == 1};
        /* 4-position blocks: sequences interleave in the pool and windows cross blocks */
        ok = !infer_pkv_init(&r->sd[k].kv, kc, hp->n_layer, hp->n_head_kv, hp->head_dim, 4, NSEQ * LEN / 4 + 2,
                             KERN_TYPE_F16, err, sizeof err) &&
             !infer_batch_create(m, kc, &r->sd[k].kv, &p, &r->sd[k].b, err, sizeof err);
        CHECK(ok, "%s: %s", path, err);
    }
    /* prompts in chunks mixed with decoding, then everyone decodes */
    static const int plan[][NSEQ] = {{9, 3, 0}, {1, 6, 5}, {1, 1, 13}, {1, 1, 1}, {1, 0, 1}, {1, 1, 1},
                                     {2, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}};
    for (size_t s = 0; ok && s < sizeof plan / sizeof *plan; s++) ok = !step(r, plan[s], (int)s);
    for (int k = 0; k < 2 && ok; k++) { /* CUDA graphs are for CUDA contexts only */
        infer_batch_stats st;
        infer_batch_get_stats(r->sd[k].b, &st);
        CHECK(!st.replayed && !st.eager && !st.captured, "%s: a CPU batch counted CUDA decode steps (%ld/%ld/%ld)",
              path, st.replayed, st.eager, st.captured);
    }
    /* candidates are a CUDA road: on the CPU set_top is accepted and steps keep giving
     * logits (commons-serve's engine then samples from whole rows); bad k refused */
    for (int k = 0; k < 2 && ok; k++) {
        CHECK(infer_batch_set_top(r->sd[k].b, -1, err, sizeof err) == INFER_EINVAL &&
                  infer_batch_set_top(r->sd[k].b, INFER_SAMPLER_TOP_MAX + 1, err, sizeof err) == INFER_EINVAL,
              "%s: set_top accepted a k outside [0, %d]", path, INFER_SAMPLER_TOP_MAX);
        CHECK(infer_batch_set_top(r->sd[k].b, 40, err, sizeof err) == INFER_OK, "%s: set_top(40): %s", path, err);
    }
    static const int last[NSEQ] = {1, 1, 1};
    ok = ok && !step(r, last, (int)(sizeof plan / sizeof *plan));
    for (int k = 0; k < 2 && ok; k++) {
        const int32_t *ids;
        int rows, tk;
        CHECK(!infer_batch_top(r->sd[k].b, &ids, &rows, &tk) && rows == 0 && tk == 0,
              "%s: a CPU batch gave candidates", path);
    }
    printf("%s %s: %s, window %d, %d steps, worst relative difference %.3g\n",
           ok && fails == fails0 ? "ok  " : "FAIL", path,
           hp->arch_name, hp->sliding_window, (int)(sizeof plan / sizeof *plan), r->worst);
    for (int k = 0; k < 2; k++) {
        infer_batch_free(r->sd[k].b);
        for (int i = 0; i < NSEQ; i++) infer_pkv_release(&r->sd[k].kv, &r->sd[k].bt[i]);
        if (r->sd[k].kv.n_blocks) infer_pkv_free(&r->sd[k].kv);
    }
    free(r);
    infer_model_free(m);
}

/* kern_kv_store_paged / kern_attention_paged refuse bad arguments with a message */
static void check_refusals(kern_ctx *kc)
{
    kern_kv_layout blk = {KERN_TYPE_F32, 2, 8, 4};
    size_t bb = kern_kv_bytes(&blk);
    float *pool = kern_alloc(kc, 3 * bb), *pool2 = kern_alloc(kc, 3 * bb), *src = kern_alloc(kc, 64 * 4);
    float *q = kern_alloc(kc, 2 * 4 * 8 * 4), *out = kern_alloc(kc, 2 * 4 * 8 * 4);
    memset(src, 0, 64 * 4), memset(q, 0, 2 * 4 * 8 * 4);
    int32_t slots[2] = {0, 12}, good[2] = {0, 11}, blocks[2] = {2, 3};
    CHECK(kern_kv_store_paged(kc, pool, &blk, 3, slots, 2, src) == KERN_EINVAL &&
              strstr(kern_ctx_error(kc), "outside the pool"), "slot past the pool: %s", kern_ctx_error(kc));
    CHECK(kern_kv_store_paged(kc, pool, &blk, 3, good, 2, src) == KERN_OK, "good slots: %s", kern_ctx_error(kc));
    CHECK(kern_kv_store_paged(kc, pool, &blk, 3, NULL, 2, src) == KERN_EINVAL, "NULL slots");
    kern_paged_seq s = {0, 2, 3, blocks}; /* positions 3..4: blocks 0 and 1 of its table; id 3 is outside */
    CHECK(kern_attention_paged(kc, out, q, pool, pool2, &blk, 3, &s, 1, 4, 0, 0.5f) == KERN_EINVAL &&
              strstr(kern_ctx_error(kc), "outside the pool"), "block id past the pool: %s", kern_ctx_error(kc));
    blocks[1] = 1;
    CHECK(kern_attention_paged(kc, out, q, pool, pool2, &blk, 3, &s, 1, 3, 0, 0.5f) == KERN_EINVAL &&
              strstr(kern_ctx_error(kc), "multiple"), "n_head 3 with 2 KV heads: %s", kern_ctx_error(kc));
    CHECK(kern_attention_paged(kc, out, q, pool, pool2, &blk, 3, &s, 1, 4, -1, 0.5f) == KERN_EINVAL,
          "negative window");
    kern_paged_seq empty = {0, 0, 0, blocks};
    CHECK(kern_attention_paged(kc, out, q, pool, pool2, &blk, 3, &empty, 1, 4, 0, 0.5f) == KERN_EINVAL,
          "a sequence without queries");
    CHECK(kern_attention_paged(kc, out, q, pool, pool2, &blk, 3, &s, 1, 4, 0, 0.5f) == KERN_OK, "good call: %s",
          kern_ctx_error(kc));
    kern_free(kc, pool), kern_free(kc, pool2), kern_free(kc, src), kern_free(kc, q), kern_free(kc, out);
}

int main(int argc, char **argv)
{
    if (argc < 2) return fprintf(stderr, "usage: test_batch_paged MODEL.gguf...\n"), 2;
    kern_config cfg = {.backend = KERN_BACKEND_CPU, .n_threads = 2};
    kern_ctx *kc = NULL;
    char err[256];
    if (kern_ctx_create(&cfg, &kc, err, sizeof err)) return printf("CPU context: %s\n", err), 1;
    for (int i = 1; i < argc; i++) check_model(argv[i], kc);
    check_refusals(kc);
    kern_ctx_destroy(kc);
    printf("%s\n", fails ? "FAILED" : "paged path == per-sequence path");
    return fails ? 1 : 0;
}
