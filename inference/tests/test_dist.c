/* test_dist.c: distributed inference (dist.h) against a single process, under mpirun.
 *
 *   mpirun -np N test_dist --mode tp|pp --model M.gguf [--rtol R]
 *   mpirun -np N test_dist --mode tp|pp --model M.gguf --expect-error TEXT
 *
 * Rank 0 also loads the whole model alone as the reference. Then, on the distributed
 * model:
 *   1. infer_eval of a prompt in chunks (all logits) and 8 greedy tokens, every rank
 *      calling infer_eval with the same tokens (rank 0 broadcasts each choice);
 *   2. the batched step: three sequences over a paged KV pool (block ids scattered,
 *      a prompt split over two steps, decoding side by side, then one sequence alone
 *      with 6 tokens, which a pipeline cuts across micro-batches), rank 0 driving through
 *      infer_dist_batch_step, the other ranks in infer_dist_worker_run.
 * Every logits row must be within R (default 1e-4) of the reference, relative to the
 * row's largest magnitude (max |a-b| / max |b|: summation order differs across ranks,
 * so bit equality is not expected), and every greedy token must be identical. (With
 * quantized weights, matmul inputs are quantized too, and a last-bit difference can
 * flip a rounding: dist.cmake gives those models a looser R.)
 * --expect-error: loading must fail on every rank, on rank 0 with a message containing
 * TEXT. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "dist.h"
#include "model.h"
#include "paged_kv.h"

static int g_rank;
static double g_worst;
static int g_fail;

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "rank %d: FAIL %s:%d: ", g_rank, \
    __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); g_fail = 1; } } while (0)
#define MUST(call) do { char *e_ = err; int rc_ = (call); if (rc_) { fprintf(stderr, \
    "rank %d: %s failed (%d): %s\n", g_rank, #call, rc_, e_); MPI_Abort(MPI_COMM_WORLD, 2); } } while (0)

static char err[1024];

static uint32_t rng = 12345;
static int32_t rand_tok(int V)
{
    rng = rng * 1664525u + 1013904223u;
    return (int32_t)((rng >> 8) % (uint32_t)V);
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

/* Compare rows; record the worst relative difference. */
static void compare(const char *what, const float *got, const float *ref, int rows, int V,
                    double rtol)
{
    for (int r = 0; r < rows; r++) {
        double dmax = 0, bmax = 0;
        for (int i = 0; i < V; i++) {
            double d = fabs((double)got[(size_t)r * V + i] - ref[(size_t)r * V + i]);
            double b = fabs((double)ref[(size_t)r * V + i]);
            if (!(d <= dmax))   /* NaN counts as the worst */
                dmax = isnan(d) ? INFINITY : d;
            if (b > bmax)
                bmax = b;
        }
        double rel = bmax > 0 ? dmax / bmax : dmax;
        if (rel > g_worst)
            g_worst = rel;
        CHECK(rel <= rtol, "%s row %d: relative difference %.3g > %.3g", what, r, rel, rtol);
    }
}

static void part_eval(infer_model *dm, infer_model *ref, kern_ctx *kc, double rtol)
{
    const int V = infer_model_hparams(dm)->n_vocab;
    infer_ctx_params cp = { .n_ctx = 64, .n_batch = 4 };
    infer_ctx *c = NULL, *rc = NULL;
    MUST(infer_ctx_create(dm, kc, &cp, &c, err, sizeof err));
    if (ref)
        MUST(infer_ctx_create(ref, kc, &cp, &rc, err, sizeof err));
    int32_t prompt[11];
    for (int i = 0; i < 11; i++)
        prompt[i] = rand_tok(V);
    MUST(infer_eval(c, prompt, 11, true, err, sizeof err));
    if (ref) {
        MUST(infer_eval(rc, prompt, 11, true, err, sizeof err));
        compare("eval prompt", infer_logits(c, NULL), infer_logits(rc, NULL), 11, V, rtol);
    }
    for (int t = 0; t < 8; t++) {
        int32_t tok = 0, rtok = 0;
        if (ref) {
            tok = argmax(infer_logits(c, NULL), V);
            rtok = argmax(infer_logits(rc, NULL), V);
            CHECK(tok == rtok, "eval greedy token %d: %d, single process %d", t, tok, rtok);
        }
        MPI_Bcast(&tok, 1, MPI_INT32_T, 0, MPI_COMM_WORLD);
        MUST(infer_eval(c, &tok, 1, false, err, sizeof err));
        if (ref) {
            MUST(infer_eval(rc, &tok, 1, false, err, sizeof err));
            compare("eval decode", infer_logits(c, NULL), infer_logits(rc, NULL), 1, V, rtol);
        }
    }
    infer_ctx_free(c);
    infer_ctx_free(rc);
}

#define NSEQ 3
#define BT 4
#define NBLK 40

typedef struct side {
    infer_paged_kv kv;
    infer_batch *b;
    infer_block_table bt[NSEQ];
} side;

static void side_init(side *s, infer_model *m, kern_ctx *kc)
{
    const infer_hparams *hp = infer_model_hparams(m);
    memset(s, 0, sizeof *s);
    MUST(infer_pkv_init(&s->kv, kc, hp->n_layer, hp->n_head_kv, hp->head_dim, BT, NBLK,
                        KERN_TYPE_F32, err, sizeof err));
    infer_batch_params bp = { .max_tokens = 32, .max_logits = NSEQ, .n_ctx = 64 };
    MUST(infer_batch_create(m, kc, &s->kv, &bp, &s->b, err, sizeof err));
}

static void side_free(side *s)
{
    for (int i = 0; i < NSEQ; i++)
        infer_pkv_release(&s->kv, &s->bt[i]);
    infer_batch_free(s->b);
    infer_pkv_free(&s->kv);
}

/* Rank 0: the steps, on the distributed job and on the reference. */
static void part_batch_driver(infer_dist *d, side *ds, side *rs, int V, double rtol)
{
    static const int plen[NSEQ] = { 5, 9, 2 };
    int32_t toks[NSEQ][64];
    int n_past[NSEQ] = { 0 }, n_toks[NSEQ];
    for (int s = 0; s < NSEQ; s++) {
        for (int i = 0; i < plen[s]; i++)
            toks[s][i] = rand_tok(V);
        n_toks[s] = plen[s];
    }
    /* scatter the tables: reserve a few positions each, round robin, then the rest */
    for (int round = 1; round <= 4; round++)
        for (int s = 0; s < NSEQ; s++) {
            CHECK(infer_pkv_reserve(&ds->kv, &ds->bt[s], round * BT * 2) == 0, "reserve");
            CHECK(infer_pkv_reserve(&rs->kv, &rs->bt[s], round * BT * 2) == 0, "reserve");
        }
    for (int step = 0; step < 8; step++) {
        infer_batch_seq q[NSEQ];
        int n = 0;
        for (int s = 0; s < NSEQ; s++) {
            int left = n_toks[s] - n_past[s];
            /* sequence 1's prompt goes in two steps */
            int len = (s == 1 && n_past[s] == 0) ? 4 : left;
            q[n++] = (infer_batch_seq){ .bt = &ds->bt[s], .n_past = n_past[s],
                                        .tokens = toks[s] + n_past[s], .n_tokens = len,
                                        .logits = n_past[s] + len == n_toks[s] };
        }
        MUST(infer_dist_batch_step(d, ds->b, q, n, err, sizeof err));
        int rows = 0, rrows = 0;
        const float *lg = infer_dist_batch_logits(d, ds->b, &rows);
        for (int i = 0; i < n; i++)
            q[i].bt = &rs->bt[i];
        MUST(infer_batch_step(rs->b, q, n, err, sizeof err));
        const float *rl = infer_batch_logits(rs->b, &rrows);
        CHECK(rows == rrows, "step %d: %d logit rows, single process %d", step, rows, rrows);
        compare("batch", lg, rl, rows < rrows ? rows : rrows, V, rtol);
        for (int i = 0, r = 0; i < n; i++) {
            n_past[i] += q[i].n_tokens;
            if (!q[i].logits || r >= rows || r >= rrows)
                continue;
            int t = argmax(lg + (size_t)r * V, V), rt = argmax(rl + (size_t)r * V, V);
            CHECK(t == rt, "step %d sequence %d: greedy %d, single process %d", step, i, t, rt);
            toks[i][n_toks[i]++] = rt;
            r++;
        }
    }
    /* one sequence alone with 6 tokens (a pipeline cuts it across its micro-batches) */
    {
        int32_t more[6];
        for (int i = 0; i < 6; i++)
            more[i] = toks[0][n_past[0] + i] = rand_tok(V);
        infer_batch_seq q1 = { .bt = &ds->bt[0], .n_past = n_past[0], .tokens = more,
                               .n_tokens = 6, .logits = true };
        MUST(infer_dist_batch_step(d, ds->b, &q1, 1, err, sizeof err));
        int rows = 0, rrows = 0;
        const float *lg = infer_dist_batch_logits(d, ds->b, &rows);
        q1.bt = &rs->bt[0];
        MUST(infer_batch_step(rs->b, &q1, 1, err, sizeof err));
        const float *rl = infer_batch_logits(rs->b, &rrows);
        CHECK(rows == 1 && rrows == 1, "one sequence: %d and %d logit rows", rows, rrows);
        compare("one sequence of 6 tokens", lg, rl, 1, V, rtol);
        n_past[0] += 6;
        toks[0][n_past[0]] = rand_tok(V);   /* the next step's token */
    }
    /* a step the workers must reject like rank 0 (token outside the vocabulary), then
     * the job goes on */
    int32_t bad = V;
    infer_batch_seq q = { .bt = &ds->bt[0], .n_past = n_past[0], .tokens = &bad, .n_tokens = 1,
                          .logits = true };
    CHECK(infer_dist_batch_step(d, ds->b, &q, 1, err, sizeof err) == INFER_EINVAL,
          "a bad token was accepted");
    q.tokens = &toks[0][n_past[0]];
    MUST(infer_dist_batch_step(d, ds->b, &q, 1, err, sizeof err));
    infer_dist_stop(d);
}

int main(int argc, char **argv)
{
    const char *mode = NULL, *path = NULL, *expect = NULL;
    double rtol = 1e-4;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mode")) mode = argv[i + 1];
        else if (!strcmp(argv[i], "--model")) path = argv[i + 1];
        else if (!strcmp(argv[i], "--expect-error")) expect = argv[i + 1];
        else if (!strcmp(argv[i], "--rtol")) rtol = atof(argv[i + 1]);
    }
    if (!mode || !path || (strcmp(mode, "tp") && strcmp(mode, "pp"))) {
        fprintf(stderr, "usage: mpirun -np N test_dist --mode tp|pp --model M.gguf "
                "[--rtol R] [--expect-error TEXT]\n");
        return 2;
    }
    int provided, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int kind = mode[0] == 't' ? INFER_SHARD_TP : INFER_SHARD_PP;
    infer_dist *d = NULL;
    MUST(infer_dist_init(&argc, &argv, kind, size, &d, err, sizeof err));
    /* a job of the wrong size is refused */
    infer_dist *d2 = NULL;
    CHECK(infer_dist_init(&argc, &argv, kind, size + 1, &d2, err, sizeof err) != 0 &&
          strstr(err, "mpirun -np"), "a job of %d ranks accepted --tp %d (%s)", size, size + 1,
          err);
    kern_config kcfg = { .backend = KERN_BACKEND_CPU, .n_threads = 1 };
    kern_ctx *kc = NULL;
    MUST(kern_ctx_create(&kcfg, &kc, err, sizeof err));
    infer_model *dm = NULL, *ref = NULL;
    int lrc = infer_dist_load(d, path, kc, &dm, err, sizeof err);
    if (expect) {   /* every rank fails; rank 0 says what is expected */
        CHECK(lrc != 0 && (g_rank > 0 || strstr(err, expect)), "expected an error with "
              "'%s', got %d: %s", expect, lrc, lrc ? err : "success");
        if (g_rank == 0 && lrc && strstr(err, expect))
            printf("refused as expected: %s\n", err);
        infer_model_free(dm);
        goto out;
    }
    CHECK(lrc == 0, "load: %s", err);
    if (lrc)
        MPI_Abort(MPI_COMM_WORLD, 2);
    if (g_rank == 0)
        MUST(infer_model_load(path, kc, NULL, NULL, &ref, err, sizeof err));
    const int V = infer_model_hparams(dm)->n_vocab;
    const infer_hparams *hp = infer_model_hparams(dm);
    printf("rank %d: %s shard: layers %d.., %d of them, heads %d, kv heads %d, ff %d, "
           "%.2f MiB of weights\n", g_rank, mode, hp->first_layer, hp->n_layer, hp->n_head,
           hp->n_head_kv, hp->n_ff, (double)infer_model_weight_bytes(dm) / 1048576.0);

    part_eval(dm, ref, kc, rtol);
    side ds, rs;
    side_init(&ds, dm, kc);
    if (g_rank == 0) {
        side_init(&rs, ref, kc);
        part_batch_driver(d, &ds, &rs, V, rtol);
        side_free(&rs);
    } else {
        MUST(infer_dist_worker_run(d, ds.b, err, sizeof err));
    }
    side_free(&ds);
    infer_dist_stats st = infer_dist_get_stats(d);
    printf("rank %d: %.4f s in %llu MPI transfers, %.2f MiB\n", g_rank, st.comm_s,
           (unsigned long long)st.calls, (double)st.bytes / 1048576.0);
    if (g_rank == 0)
        printf("worst relative logits difference %.3g (limit %.3g)\n", g_worst, rtol);
    infer_model_free(dm);
    infer_model_free(ref);
out:
    kern_ctx_destroy(kc);
    infer_dist_free(d);
    int any = 0;
    MPI_Allreduce(&g_fail, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (g_rank == 0)
        printf("%s\n", any ? "FAILED" : "ok");
    MPI_Finalize();
    return any;
}
