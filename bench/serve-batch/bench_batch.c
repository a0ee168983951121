/* bench_batch: the batched forward step alone (inference/batch.h), then sampling as
 * commons-serve does it; no RPC.
 *
 *   bench_batch MODEL.gguf [THREADS] [BATCHES...]     (default 2 threads, batches 1 8 32)
 *
 * For each batch size B: B sequences with different 32-token prompts are prefilled
 * (one step each), then 32 decode steps advance all B together (greedy token of each
 * sequence draws its next token with commons-serve's default sampler, top_k 40, top_p
 * 0.95, min_p 0.05, temperature 0.8, its own seed, the rows spread over a sample pool
 * of THREADS threads as in the engine). Prints, per B, the decode step time and the
 * decode tokens/s, and the time per step split into the forward pass and sampling.
 * Not a test: numbers for bench/serve-batch/run and bench/RESULTS.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "sampler.h"

#define PROMPT 32
#define DECODE 32

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_batch MODEL.gguf [THREADS] [BATCHES...]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    int batches[16] = { 1, 8, 32 }, n_b = 3;
    if (argc > 3) {
        n_b = 0;
        for (int i = 3; i < argc && n_b < 16; i++)
            batches[n_b++] = atoi(argv[i]);
    }
    int max_b = 1;
    for (int i = 0; i < n_b; i++) {
        if (batches[i] < 1 || batches[i] > 256) {
            fprintf(stderr, "bench_batch: batch sizes are 1..256\n");
            return 2;
        }
        if (batches[i] > max_b)
            max_b = batches[i];
    }
    char err[1024];
    kern_ctx *kc;
    infer_model *m;
    kern_config cfg = { .backend = KERN_BACKEND_CPU, .n_threads = threads };
    if (kern_ctx_create(&cfg, &kc, err, sizeof err) ||
        infer_model_load(argv[1], kc, NULL, NULL, &m, err, sizeof err)) {
        fprintf(stderr, "bench_batch: %s\n", err);
        return 1;
    }
    const infer_hparams *hp = infer_model_hparams(m);
    const int V = hp->n_vocab, len = PROMPT + DECODE;
    infer_paged_kv kv;
    infer_batch *b;
    infer_batch_params bp = { .max_tokens = max_b * PROMPT, .max_logits = max_b, .n_ctx = len };
    int per_seq = (len + 15) / 16;
    if (infer_pkv_init(&kv, kc, hp->n_layer, hp->n_head_kv, hp->head_dim, 16, max_b * per_seq,
                       KERN_TYPE_F32, err, sizeof err) ||
        infer_batch_create(m, kc, &kv, &bp, &b, err, sizeof err)) {
        fprintf(stderr, "bench_batch: %s\n", err);
        return 1;
    }
    infer_block_table *bt = calloc((size_t)max_b, sizeof *bt);
    int32_t *toks = malloc((size_t)max_b * len * sizeof *toks);
    infer_batch_seq *bs = malloc((size_t)max_b * sizeof *bs);
    infer_sampler **smp = calloc((size_t)max_b, sizeof *smp);
    const float **rows = malloc((size_t)max_b * sizeof *rows);
    int32_t *drawn = malloc((size_t)max_b * sizeof *drawn);
    infer_sample_pool *pool;
    if (!bt || !toks || !bs || !smp || !rows || !drawn)
        return 1;
    if (infer_sample_pool_new(threads, &pool, err, sizeof err)) {
        fprintf(stderr, "bench_batch: %s\n", err);
        return 1;
    }
    printf("model %s, %d threads (%s), prompt %d, %d decode steps\n", argv[1], threads,
           kern_isa_name(kern_get_isa()), PROMPT, DECODE);
    printf("| batch | decode step ms | forward ms | sampling ms | decode tokens/s |\n");
    printf("| --- | --- | --- | --- | --- |\n");
    for (int ib = 0; ib < n_b; ib++) {
        int B = batches[ib];
        for (int s = 0; s < B; s++) {
            for (int i = 0; i < PROMPT; i++)
                toks[s * len + i] = (int32_t)((7919LL * (i + 1) * (s + 3) + 13) % V);
            if (infer_pkv_reserve(&kv, &bt[s], len)) {
                fprintf(stderr, "bench_batch: pool too small\n");
                return 1;
            }
            bs[s] = (infer_batch_seq){ .bt = &bt[s], .n_past = 0, .tokens = toks + s * len,
                                       .n_tokens = PROMPT, .logits = true };
            infer_sampler_params sp;
            infer_sampler_defaults(&sp);
            sp.seed = (uint64_t)s;
            infer_sampler_free(smp[s]);
            if (infer_sampler_new(&sp, V, &smp[s], err, sizeof err)) {
                fprintf(stderr, "bench_batch: %s\n", err);
                return 1;
            }
            for (int i = 0; i < PROMPT; i++)
                infer_sampler_accept(smp[s], toks[s * len + i]);
        }
        double t_fwd = 0, t_smp = 0;
        for (int step = 0; step <= DECODE; step++) {
            double t0 = now();
            if (infer_batch_step(b, bs, B, err, sizeof err)) {
                fprintf(stderr, "bench_batch: %s\n", err);
                return 1;
            }
            double t1 = now();
            const float *lg = infer_batch_logits(b, NULL);
            for (int s = 0; s < B; s++)
                rows[s] = lg + (size_t)s * V;
            infer_sample_many(pool, smp, rows, B, drawn);
            for (int s = 0; s < B; s++) {
                bs[s].n_past += bs[s].n_tokens;
                toks[s * len + bs[s].n_past] = drawn[s];
                bs[s].tokens = toks + s * len + bs[s].n_past;
                bs[s].n_tokens = 1;
            }
            if (step > 0) {   /* step 0 is the prefill */
                t_fwd += t1 - t0;
                t_smp += now() - t1;
            }
        }
        double step_ms = (t_fwd + t_smp) * 1e3 / DECODE;
        printf("| %d | %.1f | %.1f | %.2f | %.1f |\n", B, step_ms, t_fwd * 1e3 / DECODE,
               t_smp * 1e3 / DECODE, B * 1e3 / step_ms);
        fflush(stdout);
        for (int s = 0; s < B; s++)
            infer_pkv_release(&kv, &bt[s]);
    }
    for (int s = 0; s < max_b; s++)
        infer_sampler_free(smp[s]);
    infer_sample_pool_free(pool);
    free(smp);
    free(rows);
    free(drawn);
    free(bt);
    free(toks);
    free(bs);
    infer_batch_free(b);
    infer_pkv_free(&kv);
    infer_model_free(m);
    kern_ctx_destroy(kc);
    return 0;
}
