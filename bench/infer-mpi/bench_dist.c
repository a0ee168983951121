/* bench_dist.c: generation speed of the batched step, alone or distributed (dist.h).
 *
 *   bench_dist --model M.gguf [--mode none|tp|pp] [--threads T] [--batch B]
 *              [--prompt P] [--gen G] [--micro N]
 *   mpirun -np 2 bench_dist --mode tp ...
 *
 * B sequences get random prompts of P tokens (one prefill step), then G decode steps
 * of B tokens each, greedy, through infer_dist_batch_step (serving's path; rank 0
 * drives, other ranks run the worker loop). Rank 0 prints one line:
 *   mode MODE ranks R threads T batch B: generation X tok/s, step S ms,
 *   comm C ms/step (rank 0, inside MPI), wire W ms/step, bytes K KiB/step, ...
 * comm is rank 0's time inside MPI calls during the decode steps: transfers plus
 * waiting for the other ranks' compute. wire replays the step's messages afterwards
 * with every rank ready: the transfers alone (pipeline: 2 ranks only). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "dist.h"
#include "paged_kv.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The decode step's messages alone, all ranks ready (after the run): what the wires
 * cost without waiting for another rank's compute. Tensor parallel: 2 allreduces of
 * B x n_embd floats per layer, and the logits slices to rank 0; pipeline (2 ranks): x
 * from stage 0 to 1, B x n_vocab logits back. Milliseconds per step on rank 0. */
static double wire_ms(int kind, const infer_hparams *hp, int B)
{
    const int E = hp->n_embd, V = hp->n_vocab, reps = 20;
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (kind == INFER_SHARD_PP && size != 2)
        return 0;
    float *buf = calloc((size_t)B * (E > V ? E : V), sizeof *buf);
    if (!buf)
        return -1;
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int r = 0; r < reps; r++) {
        if (kind == INFER_SHARD_TP) {
            for (int l = 0; l < 2 * hp->n_layer; l++)
                MPI_Allreduce(MPI_IN_PLACE, buf, B * E, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            int w = V / size;
            if (rank == 0)
                for (int s = 1; s < size; s++)
                    MPI_Recv(buf, B * w, MPI_FLOAT, s, 9, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            else
                MPI_Send(buf, B * w, MPI_FLOAT, 0, 9, MPI_COMM_WORLD);
        } else if (rank == 0) {
            MPI_Send(buf, B * E, MPI_FLOAT, 1, 9, MPI_COMM_WORLD);
            MPI_Recv(buf, B * V, MPI_FLOAT, size - 1, 9, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else if (rank == 1 && size == 2) {
            MPI_Recv(buf, B * E, MPI_FLOAT, 0, 9, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(buf, B * V, MPI_FLOAT, 0, 9, MPI_COMM_WORLD);
        }
    }
    double ms = 1e3 * (MPI_Wtime() - t0) / reps;
    free(buf);
    return ms;
}

#define DIE(...) do { fprintf(stderr, "bench_dist: "); fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); if (d) infer_dist_abort(d, 1); exit(1); } while (0)

int main(int argc, char **argv)
{
    const char *path = NULL, *mode = "none";
    int threads = 1, B = 1, P = 16, G = 32, micro = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "--model")) path = v;
        else if (!strcmp(f, "--mode")) mode = v;
        else if (!strcmp(f, "--threads")) threads = atoi(v);
        else if (!strcmp(f, "--batch")) B = atoi(v);
        else if (!strcmp(f, "--prompt")) P = atoi(v);
        else if (!strcmp(f, "--gen")) G = atoi(v);
        else if (!strcmp(f, "--micro")) micro = atoi(v);
        else { fprintf(stderr, "bench_dist: unknown option %s\n", f); return 2; }
    }
    infer_dist *d = NULL;
    if (!path || threads < 1 || B < 1 || P < 1 || G < 1 ||
        (strcmp(mode, "none") && strcmp(mode, "tp") && strcmp(mode, "pp")))
        DIE("usage: [mpirun -np N] bench_dist --model M.gguf [--mode none|tp|pp] "
            "[--threads T] [--batch B] [--prompt P] [--gen G] [--micro N]");
    char err[1024];
    int kind = !strcmp(mode, "tp") ? INFER_SHARD_TP : !strcmp(mode, "pp") ? INFER_SHARD_PP : 0;
    if (kind) {
        int provided, size;
        MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        if (infer_dist_init(&argc, &argv, kind, size, &d, err, sizeof err))
            DIE("%s", err);
        if (micro)
            infer_dist_set_micro_batches(d, micro);
    }
    kern_config kcfg = { .backend = KERN_BACKEND_CPU, .n_threads = threads };
    kern_ctx *kc = NULL;
    infer_model *m = NULL;
    if (kern_ctx_create(&kcfg, &kc, err, sizeof err) ||
        (d ? infer_dist_load(d, path, kc, &m, err, sizeof err) :
             infer_model_load(path, kc, NULL, NULL, &m, err, sizeof err)))
        DIE("%s", err);
    const infer_hparams *hp = infer_model_hparams(m);
    const int V = hp->n_vocab, BT = 16, n_ctx = P + G + 1;
    infer_paged_kv kv;
    infer_batch *b = NULL;
    int blocks_per = (n_ctx + BT - 1) / BT;
    if (infer_pkv_init(&kv, kc, hp->n_layer, hp->n_head_kv, hp->head_dim, BT, B * blocks_per,
                       KERN_TYPE_F32, err, sizeof err))
        DIE("%s", err);
    infer_batch_params bp = { .max_tokens = B * P, .max_logits = B, .n_ctx = n_ctx };
    if (infer_batch_create(m, kc, &kv, &bp, &b, err, sizeof err))
        DIE("%s", err);
    int rank = infer_dist_rank(d), size = infer_dist_size(d);
    if (rank > 0) {
        if (infer_dist_worker_run(d, b, err, sizeof err))
            DIE("%s", err);
        wire_ms(kind, hp, B);
    } else {
        infer_block_table *bt = calloc((size_t)B, sizeof *bt);
        int32_t *toks = malloc((size_t)B * n_ctx * sizeof *toks);
        infer_batch_seq *q = malloc((size_t)B * sizeof *q);
        if (!bt || !toks || !q)
            DIE("out of memory");
        uint32_t r = 7;
        for (int s = 0; s < B; s++) {
            if (infer_pkv_reserve(&kv, &bt[s], n_ctx))
                DIE("KV pool too small");
            for (int i = 0; i < P; i++) {
                r = r * 1664525u + 1013904223u;
                toks[s * n_ctx + i] = (int32_t)((r >> 8) % (uint32_t)V);
            }
        }
        double t_gen = 0;
        infer_dist_stats s0 = { 0 }, s1 = { 0 };
        for (int step = 0; step <= G; step++) {
            int n_past = step ? P + step - 1 : 0, n = step ? 1 : P;
            for (int s = 0; s < B; s++)
                q[s] = (infer_batch_seq){ .bt = &bt[s], .n_past = n_past,
                                          .tokens = toks + s * n_ctx + n_past, .n_tokens = n,
                                          .logits = true };
            if (step == 1) {
                t_gen = now();
                if (d)
                    s0 = infer_dist_get_stats(d);
            }
            if (infer_dist_batch_step(d, b, q, B, err, sizeof err))
                DIE("%s", err);
            int rows;
            const float *lg = infer_dist_batch_logits(d, b, &rows);
            if (rows != B)
                DIE("%d logit rows, expected %d", rows, B);
            for (int s = 0; s < B; s++) {   /* greedy */
                const float *l = lg + (size_t)s * V;
                int best = 0;
                for (int i = 1; i < V; i++)
                    if (l[i] > l[best])
                        best = i;
                toks[s * n_ctx + P + step] = best;
            }
        }
        t_gen = now() - t_gen;
        if (d)
            s1 = infer_dist_get_stats(d);
        infer_dist_stop(d);
        double wire = d ? wire_ms(kind, hp, B) : 0;
        printf("mode %s ranks %d threads %d batch %d: generation %.2f tok/s, step %.1f ms, "
               "comm %.2f ms/step (rank 0, inside MPI), wire %.2f ms/step, bytes %.1f "
               "KiB/step, %.1f MiB of weights on rank 0\n", mode, size, threads, B,
               (double)B * G / t_gen, 1e3 * t_gen / G, 1e3 * (s1.comm_s - s0.comm_s) / G,
               wire, (double)(s1.bytes - s0.bytes) / 1024.0 / G,
               (double)infer_model_weight_bytes(m) / 1048576.0);
        for (int s = 0; s < B; s++)
            infer_pkv_release(&kv, &bt[s]);
        free(bt);
        free(toks);
        free(q);
    }
    infer_batch_free(b);
    infer_pkv_free(&kv);
    infer_model_free(m);
    kern_ctx_destroy(kc);
    if (d) {
        infer_dist_free(d);
        MPI_Finalize();
    }
    return 0;
}
