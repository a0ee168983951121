/* bench_infer_gpu.c: generation speed of one GGUF through the inference code
 * (infer_eval, infer_batch_step) on the CUDA backend, against the
 * memory-bandwidth floor (bench/infer-gpu/README.md).
 *  - floor: weight bytes / copy bandwidth (bytes read plus bytes written per
 *    second by a 512 MiB device-to-device cudaMemcpy, measured in this run;
 *    host memcpy with --backend cpu),
 *  - batch 1: ms per generated token through infer_eval (one token per call,
 *    logits downloaded each time), after a 32-token prompt, mean of --gen; on
 *    CUDA once replayed as a CUDA graph (inference/model_gpu.c, the default) and
 *    once op by op (COMMONS_CUDA_GRAPH=0),
 *  - batch B (default 32): B sequences with different 32-token prompts on the
 *    paged KV cache (inference/batch.c, as commons-serve runs them), then one
 *    untimed decode step (on CUDA it captures the step's graph) and --gen timed
 *    decode steps of one token per sequence, all B logit rows downloaded each step:
 *    tokens/s = B * steps / time, and ms per step against the floor (a step reads
 *    every weight once, like a batch-1 token). On CUDA twice: replayed as a CUDA
 *    graph (the default; the run fails unless every timed step was a replay) and
 *    eagerly (COMMONS_CUDA_GRAPH=0, the same kernels launched one by one); and
 *    once more through the graphs with each row reduced on the device to its 40
 *    best (value, id) pairs, which is all that is downloaded (infer_batch_set_top:
 *    what commons-serve does with its default top_k 40; on the CPU the same as
 *    logits).
 * Prints one markdown table row (the header too with --header).
 * --backend cpu runs the same measurement on the CPU backend: what
 * tests/gpu/check.sh --dry-run uses where there is no GPU.
 * Usage: bench_infer_gpu MODEL.gguf --label NAME [--gen N] [--batch B]
 *        [--backend cuda|cpu] [--threads N] [--header]
 * Exit status: 0, 1 on a failure, 2 on usage or no CUDA device. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "gpu_bw.h"
#include "kern_cuda.h"
#include "model.h"

#define PROMPT 32

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* host memcpy bandwidth, counted as gpu_copy_bandwidth counts it */
static double host_copy_bandwidth(void)
{
    size_t bytes = (size_t)256 << 20;
    char *a = malloc(bytes), *b = malloc(bytes);
    double bw = 0;
    if (a && b) {
        memset(a, 1, bytes), memset(b, 2, bytes);
        double t0 = now();
        for (int i = 0; i < 4; i++) {
            memcpy(i & 1 ? a : b, i & 1 ? b : a, bytes);
            __asm__ volatile("" : : "r"(a), "r"(b) : "memory"); /* the copy must happen */
        }
        bw = 2.0 * bytes * 4 / (now() - t0);
    }
    free(a), free(b);
    return bw;
}

#define DIE(...) do { fprintf(stderr, "bench_infer_gpu: " __VA_ARGS__); fprintf(stderr, "\n"); return 1; } while (0)

/* batch-1 decode through infer_eval: ms per token */
static int bench_single(infer_model *m, kern_ctx *kc, int n_gen, double *ms_tok)
{
    char err[512];
    infer_ctx *c = NULL;
    infer_ctx_params p = {.n_ctx = PROMPT + n_gen + 9, .n_batch = PROMPT};
    const int V = infer_model_hparams(m)->n_vocab;
    if (infer_ctx_create(m, kc, &p, &c, err, sizeof err)) DIE("context: %s", err);
    int32_t toks[PROMPT];
    for (int i = 0; i < PROMPT; i++) toks[i] = (i * 7919 + 11) % V;
    int rc = infer_eval(c, toks, PROMPT, false, err, sizeof err);
    if (!rc) { /* one untimed token: the graph path captures its step here */
        int32_t t = 5 % V;
        rc = infer_eval(c, &t, 1, false, err, sizeof err);
    }
    double t0 = now();
    for (int i = 0; !rc && i < n_gen; i++) {
        int32_t t = (i * 104729 + 3) % V;
        rc = infer_eval(c, &t, 1, false, err, sizeof err);
    }
    *ms_tok = (now() - t0) * 1e3 / n_gen;
    infer_ctx_free(c);
    if (rc) DIE("batch 1: %s", err);
    return 0;
}

/* B sequences prefilled, one untimed decode step, then n_gen steps of one token each:
 * tokens/s. want_graph: on CUDA every timed step must have replayed a graph. */
static int bench_batch(infer_model *m, kern_ctx *kc, int B, int n_gen, bool want_graph, int top, double *tps,
                       double *ms_step)
{
    char err[512];
    const infer_hparams *hp = infer_model_hparams(m);
    const int V = hp->n_vocab, len = PROMPT + n_gen + 2, BT = 16;
    infer_paged_kv kv = {0};
    infer_batch *b = NULL;
    infer_block_table *bt = calloc(B, sizeof *bt);
    infer_batch_seq *seqs = calloc(B, sizeof *seqs);
    int32_t *toks = malloc((size_t)B * PROMPT * sizeof *toks), *next = malloc((size_t)B * sizeof *next);
    if (!bt || !seqs || !toks || !next) DIE("out of memory");
    int per_seq = (len + BT - 1) / BT, rc = 0;
    infer_batch_params bp = {.max_tokens = B * PROMPT, .max_logits = B, .n_ctx = len};
    if (infer_pkv_init(&kv, kc, hp->n_layer, hp->n_head_kv, hp->head_dim, BT, B * per_seq, KERN_TYPE_F32, err,
                       sizeof err) ||
        infer_batch_create(m, kc, &kv, &bp, &b, err, sizeof err))
        DIE("batch %d: %s", B, err);
    if (top && infer_batch_set_top(b, top, err, sizeof err)) DIE("batch %d: %s", B, err);
    for (int s = 0; s < B && !rc; s++) {
        if (infer_pkv_reserve(&kv, &bt[s], len)) DIE("batch %d: the KV pool is too small", B);
        for (int i = 0; i < PROMPT; i++) toks[s * PROMPT + i] = (int32_t)((7919LL * (s * PROMPT + i) + 13) % V);
        seqs[s] = (infer_batch_seq){.bt = &bt[s], .n_past = 0, .tokens = toks + s * PROMPT, .n_tokens = PROMPT,
                                    .logits = true};
    }
    rc = infer_batch_step(b, seqs, B, err, sizeof err); /* every prompt in one step */
    double t0 = 0;
    infer_batch_stats st0 = {0}, st1 = {0};
    for (int step = 0; !rc && step <= n_gen; step++) { /* step 0: untimed */
        if (step == 1) {
            infer_batch_get_stats(b, &st0);
            t0 = now();
        }
        for (int s = 0; s < B; s++) {
            next[s] = (int32_t)((104729LL * (step * B + s) + 3) % V);
            seqs[s] = (infer_batch_seq){.bt = &bt[s], .n_past = PROMPT + step, .tokens = &next[s], .n_tokens = 1,
                                        .logits = true};
        }
        rc = infer_batch_step(b, seqs, B, err, sizeof err);
    }
    double dt = now() - t0;
    *tps = (double)B * n_gen / dt;
    *ms_step = dt * 1e3 / n_gen;
    infer_batch_get_stats(b, &st1);
    long replayed = st1.replayed - st0.replayed;
    /* batch.c keeps graphs for at most 64 sequences: larger batches run eagerly */
    if (!rc && want_graph && kern_cuda_is(kc) && B <= 64 && replayed != n_gen) {
        snprintf(err, sizeof err, "%ld of %d timed steps replayed a CUDA graph (a failed capture says why above)",
                 replayed, n_gen);
        rc = 1;
    }
    infer_batch_free(b);
    for (int s = 0; s < B; s++) infer_pkv_release(&kv, &bt[s]);
    infer_pkv_free(&kv);
    free(bt), free(seqs), free(toks), free(next);
    if (rc) DIE("batch %d: %s", B, err);
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 && argv[1][0] != '-' ? argv[1] : NULL, *label = "?";
    int n_gen = 64, header = 0, batch = 32, threads = 1, cuda = 1, bad = 0;
    for (int i = 2; i < argc && !bad; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--header")) header = 1;
        else if (!v) bad = 1;
        else if (!strcmp(f, "--label")) label = v, i++;
        else if (!strcmp(f, "--gen")) n_gen = atoi(v), i++;
        else if (!strcmp(f, "--batch")) batch = atoi(v), i++;
        else if (!strcmp(f, "--threads")) threads = atoi(v), i++;
        else if (!strcmp(f, "--backend") && (!strcmp(v, "cuda") || !strcmp(v, "cpu"))) cuda = !strcmp(v, "cuda"), i++;
        else bad = 1;
    }
    if (!path || bad || n_gen < 1 || batch < 1 || batch > 256 || threads < 1) {
        fprintf(stderr, "usage: bench_infer_gpu MODEL.gguf --label NAME [--gen N] [--batch B (1..256)] "
                        "[--backend cuda|cpu] [--threads N] [--header]\n");
        return 2;
    }
    char err[512];
    kern_ctx *kc = NULL;
    kern_config cfg = {.backend = cuda ? KERN_BACKEND_CUDA : KERN_BACKEND_CPU, .n_threads = threads, .device = 0};
    if (kern_ctx_create(&cfg, &kc, err, sizeof err)) return fprintf(stderr, "%s\n", err), 2;
    char desc[192];
    kern_ctx_describe(kc, desc, sizeof desc);
    double bw = cuda ? gpu_copy_bandwidth() : host_copy_bandwidth();
    infer_model *m = NULL;
    if (infer_model_load(path, kc, NULL, NULL, &m, err, sizeof err)) return fprintf(stderr, "%s\n", err), 1;
    double ms_tok = 0, ms_eager = 0, tps = 0, ms_step = 0, tps_eager = 0, ms_step_eager = 0;
    setenv("COMMONS_CUDA_GRAPH", "0", 1);
    int rc = bench_single(m, kc, n_gen, &ms_eager);
    if (!rc) rc = bench_batch(m, kc, batch, n_gen, false, 0, &tps_eager, &ms_step_eager);
    unsetenv("COMMONS_CUDA_GRAPH");
    if (!rc) rc = bench_single(m, kc, n_gen, &ms_tok);
    if (!rc) rc = bench_batch(m, kc, batch, n_gen, true, 0, &tps, &ms_step);
    double tps_top = 0, ms_step_top = 0;   /* as commons-serve samples by default (top_k 40) */
    if (!rc) rc = bench_batch(m, kc, batch, n_gen, true, 40, &tps_top, &ms_step_top);
    size_t wb = infer_model_weight_bytes(m);
    double floor_ms = bw > 0 ? wb / bw * 1e3 : 0;
    if (!rc && header)
        printf("device: %s\n\n| model | weights GB | copy GB/s | floor ms | batch 1 ms/token | x floor "
               "| batch 1 op by op ms | batch %d tok/s | batch %d ms/step | x floor | batch %d op by op tok/s "
               "| batch %d top-40 tok/s |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|---|\n", desc, batch, batch, batch, batch);
    if (!rc)
        printf("| %s | %.3f | %.0f | %.3f | %.3f | %.2f | %.3f | %.0f | %.3f | %.2f | %.0f | %.0f |\n", label,
               wb / 1e9, bw / 1e9, floor_ms, ms_tok, floor_ms > 0 ? ms_tok / floor_ms : 0, ms_eager, tps, ms_step,
               floor_ms > 0 ? ms_step / floor_ms : 0, tps_eager, tps_top);
    infer_model_free(m);
    kern_ctx_destroy(kc);
    return rc;
}
