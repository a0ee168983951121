/* test_batch.c: the paged KV allocator and the batched forward step (Check).
 *
 *   test_batch MODEL.gguf...
 *
 * Allocator: all-or-nothing reservations, every block in at most one table, release
 * returns everything, bad sizes refused. Batch: several sequences of different
 * lengths are run together — prompts in chunks interleaved with decoding, blocks
 * scattered over the pool, a finished sequence's blocks reused by a new one — and
 * every logits row must match infer_eval on that sequence alone (tight tolerance)
 * with identical greedy tokens. Run once per model given (llama and gemma3 with a
 * small sliding window, which exercises the window's partial gathers). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "model.h"
#include "paged_kv.h"

static char **g_models;
static int g_n_models;

static kern_ctx *cpu(int threads)
{
    kern_config cfg = { .backend = KERN_BACKEND_CPU, .n_threads = threads };
    kern_ctx *kc = NULL;
    char err[256];
    ck_assert_msg(kern_ctx_create(&cfg, &kc, err, sizeof err) == 0, "%s", err);
    return kc;
}

/* ---------------------------------------------------------------- allocator */

START_TEST(pkv_reserve_release)
{
    kern_ctx *kc = cpu(1);
    infer_paged_kv kv;
    char err[256];
    ck_assert_int_eq(infer_pkv_init(&kv, kc, 2, 2, 8, 16, 10, KERN_TYPE_F16, err, sizeof err), 0);
    ck_assert_int_eq(kv.n_free, 10);
    ck_assert_int_eq(infer_pkv_blocks_for(&kv, 0), 0);
    ck_assert_int_eq(infer_pkv_blocks_for(&kv, 16), 1);
    ck_assert_int_eq(infer_pkv_blocks_for(&kv, 17), 2);
    infer_block_table a = { 0 }, b = { 0 };
    ck_assert_int_eq(infer_pkv_reserve(&kv, &a, 33), 0);      /* 3 blocks */
    ck_assert_int_eq(a.n, 3);
    ck_assert_int_eq(infer_pkv_reserve(&kv, &a, 40), 0);      /* still 3 */
    ck_assert_int_eq(a.n, 3);
    ck_assert_int_eq(infer_pkv_reserve(&kv, &b, 16 * 7), 0);  /* the other 7 */
    ck_assert_int_eq(kv.n_free, 0);
    /* all-or-nothing: a wants 2 more, none free; nothing changes */
    ck_assert_int_eq(infer_pkv_reserve(&kv, &a, 65), INFER_ERANGE);
    ck_assert_int_eq(a.n, 3);
    ck_assert_int_eq(kv.n_free, 0);
    int seen[10] = { 0 };
    for (int i = 0; i < a.n; i++)
        seen[a.ids[i]]++;
    for (int i = 0; i < b.n; i++)
        seen[b.ids[i]]++;
    for (int i = 0; i < 10; i++)
        ck_assert_msg(seen[i] == 1, "block %d is in %d tables", i, seen[i]);
    infer_pkv_release(&kv, &b);
    ck_assert_int_eq(kv.n_free, 7);
    ck_assert_int_eq(b.n, 0);
    ck_assert_ptr_null(b.ids);
    ck_assert_int_eq(infer_pkv_reserve(&kv, &a, 16 * 10), 0); /* now it fits */
    ck_assert_int_eq(kv.n_free, 0);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < a.n; i++)
        seen[a.ids[i]]++;
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(seen[i], 1);
    /* block storage: distinct, inside the pool, block_bytes apart */
    ck_assert_ptr_ne(infer_pkv_k(&kv, 1, 3), infer_pkv_v(&kv, 1, 3));
    ck_assert_int_eq((int)((uint8_t *)infer_pkv_k(&kv, 0, 4) - (uint8_t *)infer_pkv_k(&kv, 0, 3)),
                     (int)kv.block_bytes);
    ck_assert_int_eq((int)kv.block_bytes, 2 * 16 * 8 * 2);
    ck_assert_int_eq((int)infer_pkv_block_bytes(2, 2, 8, 16, KERN_TYPE_F16),
                     (int)(2 * 2 * kv.block_bytes));
    infer_pkv_release(&kv, &a);
    ck_assert_int_eq(kv.n_free, 10);
    infer_pkv_free(&kv);
    kern_ctx_destroy(kc);
}
END_TEST

START_TEST(pkv_bad_sizes)
{
    kern_ctx *kc = cpu(1);
    infer_paged_kv kv;
    char err[256] = "";
    ck_assert_int_eq(infer_pkv_init(&kv, kc, 2, 2, 8, 16, 0, KERN_TYPE_F32, err, sizeof err),
                     INFER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "0 blocks"));
    ck_assert_int_eq(infer_pkv_init(&kv, kc, 2, 2, 8, 0, 4, KERN_TYPE_F32, err, sizeof err),
                     INFER_EINVAL);
    ck_assert_int_eq(infer_pkv_init(&kv, kc, 2, 2, 8, 16, 4, KERN_TYPE_Q8_0, err, sizeof err),
                     INFER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "expected F32"));
    /* an impossible pool is an error value, not a crash */
    ck_assert_int_eq(infer_pkv_init(&kv, kc, 1 << 20, 64, 256, 256, 1 << 20, KERN_TYPE_F32,
                                    err, sizeof err), INFER_ENOMEM);
    ck_assert_ptr_nonnull(strstr(err, "--kv-mb"));
    kern_ctx_destroy(kc);
}
END_TEST

/* ------------------------------------------------------------ batch vs single */

#define N_SEQ 5
#define GEN 10

typedef struct seq {
    int32_t toks[160];
    int n_prompt, n_total;   /* n_total: prompt + generated so far */
    int n_past;              /* evaluated */
    int start_step;          /* joins at this step */
    infer_block_table bt;
    infer_ctx *ref;
    bool done;
} seq;

static int argmax(const float *l, int n)
{
    int t = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[t])
            t = i;
    return t;
}

/* Drive N_SEQ sequences through batched steps; compare with single-sequence eval. */
static void run_equivalence(const char *path, int block_tokens, int chunk, int kv_type,
                            int threads)
{
    char err[512];
    kern_ctx *kc = cpu(threads);
    infer_model *m = NULL;
    ck_assert_msg(infer_model_load(path, kc, NULL, NULL, &m, err, sizeof err) == 0, "%s", err);
    const infer_hparams *hp = infer_model_hparams(m);
    const int V = hp->n_vocab, n_ctx = 256;
    infer_paged_kv kv;
    /* The free list is a stack: the last sequence joins after the first was released and
     * gets its (dirty) blocks first, so stale keys would show up as wrong logits. */
    ck_assert_int_eq(infer_pkv_init(&kv, kc, hp->n_layer, hp->n_head_kv, hp->head_dim,
                                    block_tokens, 4 * (160 / block_tokens + 1), kv_type,
                                    err, sizeof err), 0);
    infer_batch_params bp = { .max_tokens = N_SEQ + chunk, .max_logits = N_SEQ, .n_ctx = n_ctx };
    infer_batch *b = NULL;
    ck_assert_msg(infer_batch_create(m, kc, &kv, &bp, &b, err, sizeof err) == 0, "%s", err);

    static const int prompt_len[N_SEQ] = { 3, 19, 40, 70, 33 };
    static const int start[N_SEQ] = { 0, 0, 1, 2, 9 };
    seq S[N_SEQ];
    memset(S, 0, sizeof S);
    unsigned rng = 12345;
    for (int s = 0; s < N_SEQ; s++) {
        S[s].n_prompt = S[s].n_total = prompt_len[s];
        S[s].start_step = start[s];
        for (int i = 0; i < prompt_len[s]; i++) {
            rng = rng * 1103515245u + 12345u;
            S[s].toks[i] = (int32_t)((rng >> 8) % (unsigned)V);
        }
        infer_ctx_params cp = { .n_ctx = n_ctx, .kv_type = kv_type };
        ck_assert_msg(infer_ctx_create(m, kc, &cp, &S[s].ref, err, sizeof err) == 0, "%s", err);
    }
    double worst = 0;
    int compared = 0;
    for (int step = 0; step < 200; step++) {
        infer_batch_seq bs[N_SEQ];
        int map[N_SEQ], n = 0, budget = chunk;
        /* decoding sequences first (one token each), then prompt chunks in order */
        for (int pass = 0; pass < 2; pass++)
            for (int s = 0; s < N_SEQ; s++) {
                seq *q = &S[s];
                if (q->done || step < q->start_step)
                    continue;
                bool decoding = q->n_past >= q->n_prompt;
                if (decoding != (pass == 0))
                    continue;
                int len = decoding ? 1 : q->n_prompt - q->n_past;
                if (!decoding) {
                    if (budget == 0)
                        continue;
                    if (len > budget)
                        len = budget;
                    budget -= len;
                }
                ck_assert_int_eq(infer_pkv_reserve(&kv, &q->bt, q->n_past + len), 0);
                bs[n] = (infer_batch_seq){ .bt = &q->bt, .n_past = q->n_past,
                                           .tokens = q->toks + q->n_past, .n_tokens = len,
                                           .logits = q->n_past + len >= q->n_prompt };
                map[n++] = s;
            }
        if (n == 0)
            break;
        ck_assert_msg(infer_batch_step(b, bs, n, err, sizeof err) == 0, "%s", err);
        int rows;
        const float *lg = infer_batch_logits(b, &rows);
        int r = 0;
        for (int i = 0; i < n; i++) {
            seq *q = &S[map[i]];
            ck_assert_msg(infer_eval(q->ref, bs[i].tokens, bs[i].n_tokens, false, err,
                                     sizeof err) == 0, "%s", err);
            q->n_past += bs[i].n_tokens;
            if (!bs[i].logits)
                continue;
            const float *want = infer_logits(q->ref, NULL), *got = lg + (size_t)r++ * V;
            double scale = 1, diff = 0;
            for (int j = 0; j < V; j++) {
                if (fabs(want[j]) > scale)
                    scale = fabs(want[j]);
                if (fabs(want[j] - got[j]) > diff)
                    diff = fabs(want[j] - got[j]);
            }
            if (diff / scale > worst)
                worst = diff / scale;
            ck_assert_msg(diff <= 1e-4 * scale, "%s: sequence %d at position %d: logits differ "
                          "by %g (scale %g)", path, map[i], q->n_past, diff, scale);
            int tb = argmax(got, V), tr = argmax(want, V);
            ck_assert_msg(tb == tr, "%s: sequence %d at position %d: greedy token %d batched, "
                          "%d alone", path, map[i], q->n_past, tb, tr);
            compared++;
            q->toks[q->n_total++] = tb;
            if (q->n_total - q->n_prompt >= (map[i] == 0 ? 5 : GEN)) {
                q->done = true;
                infer_pkv_release(&kv, &q->bt);
            }
        }
        ck_assert_int_eq(r, rows);
    }
    for (int s = 0; s < N_SEQ; s++) {
        ck_assert_msg(S[s].done, "sequence %d did not finish", s);
        infer_ctx_free(S[s].ref);
    }
    ck_assert_int_eq(kv.n_free, kv.n_blocks);
    ck_assert_int_ge(compared, N_SEQ * GEN - 5);
    printf("%s: block %d, chunk %d, kv %s, %d threads: %d logit rows, worst relative diff %g\n",
           path, block_tokens, chunk, kv_type ? "f16" : "f32", threads, compared, worst);
    infer_batch_free(b);
    infer_pkv_free(&kv);
    infer_model_free(m);
    kern_ctx_destroy(kc);
}

START_TEST(batch_matches_single)
{
    for (int i = 0; i < g_n_models; i++) {
        run_equivalence(g_models[i], 16, 32, KERN_TYPE_F32, 2);
        run_equivalence(g_models[i], 4, 7, KERN_TYPE_F16, 1);
    }
}
END_TEST

START_TEST(batch_bad_steps)
{
    char err[512];
    kern_ctx *kc = cpu(1);
    infer_model *m = NULL;
    ck_assert_msg(infer_model_load(g_models[0], kc, NULL, NULL, &m, err, sizeof err) == 0,
                  "%s", err);
    const infer_hparams *hp = infer_model_hparams(m);
    infer_paged_kv kv;
    ck_assert_int_eq(infer_pkv_init(&kv, kc, hp->n_layer, hp->n_head_kv, hp->head_dim, 16, 8,
                                    KERN_TYPE_F32, err, sizeof err), 0);
    infer_batch *b = NULL;
    infer_batch_params bp = { .max_tokens = 8, .max_logits = 1, .n_ctx = 64 };
    ck_assert_int_eq(infer_batch_create(m, kc, &kv, &bp, &b, err, sizeof err), 0);
    infer_block_table bt = { 0 };
    ck_assert_int_eq(infer_pkv_reserve(&kv, &bt, 16), 0);
    int32_t toks[20] = { 1, 2, 3 };
    infer_batch_seq s = { .bt = &bt, .n_past = 0, .tokens = toks, .n_tokens = 3, .logits = true };
    ck_assert_int_eq(infer_batch_step(b, &s, 1, err, sizeof err), 0);
    toks[1] = hp->n_vocab;   /* out of the vocabulary */
    ck_assert_int_eq(infer_batch_step(b, &s, 1, err, sizeof err), INFER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "outside the vocabulary"));
    toks[1] = 2;
    s.n_past = 15;           /* needs 18 positions, the table covers 16 */
    ck_assert_int_eq(infer_batch_step(b, &s, 1, err, sizeof err), INFER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "blocks"));
    s.n_past = 0;
    s.n_tokens = 9;          /* more than max_tokens */
    ck_assert_int_eq(infer_batch_step(b, &s, 1, err, sizeof err), INFER_EINVAL);
    infer_batch_seq two[2] = { s, s };
    two[0].n_tokens = two[1].n_tokens = 1;   /* two logit rows, room for one */
    ck_assert_int_eq(infer_batch_step(b, two, 2, err, sizeof err), INFER_EINVAL);
    s.n_tokens = 3;
    s.n_past = 62;           /* beyond n_ctx */
    ck_assert_int_eq(infer_batch_step(b, &s, 1, err, sizeof err), INFER_EINVAL);
    ck_assert_int_eq(infer_batch_step(b, &s, 0, err, sizeof err), INFER_EINVAL);
    bp.n_ctx = hp->n_ctx_train + 1;
    infer_batch *b2 = NULL;
    ck_assert_int_eq(infer_batch_create(m, kc, &kv, &bp, &b2, err, sizeof err), INFER_EINVAL);
    ck_assert_ptr_null(b2);
    infer_pkv_release(&kv, &bt);
    infer_batch_free(b);
    infer_pkv_free(&kv);
    infer_model_free(m);
    kern_ctx_destroy(kc);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_batch MODEL.gguf...\n");
        return 2;
    }
    g_models = argv + 1;
    g_n_models = argc - 1;
    Suite *s = suite_create("batch");
    TCase *a = tcase_create("paged_kv");
    tcase_add_test(a, pkv_reserve_release);
    tcase_add_test(a, pkv_bad_sizes);
    suite_add_tcase(s, a);
    TCase *t = tcase_create("step");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, batch_matches_single);
    tcase_add_test(t, batch_bad_steps);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
