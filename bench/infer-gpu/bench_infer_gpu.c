/* bench_infer_gpu.c: generation speed of one GGUF on the CUDA backend
 * against the memory-bandwidth floor (bench/infer-gpu/README.md).
 *  - floor: weight bytes / device-to-device copy bandwidth (bytes read plus
 *    bytes written per second by cudaMemcpy, measured here on 512 MiB),
 *  - batch 1: ms per generated token through infer_eval (one token per
 *    call, logits downloaded each time), after a 32-token prompt,
 *  - 32 tokens per forward: tokens/s of infer_eval over 32-token chunks. The
 *    batching engine (inference/batch.c) runs on host memory only today, so
 *    this is a stand-in for batch 32: the same weight traffic and matrix
 *    products, attention over one sequence instead of 32.
 * Prints one markdown table row (header with --header).
 * Usage: bench_infer_gpu MODEL.gguf --label NAME [--gen N] [--header] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu_bw.h"
#include "kern_cuda.h"
#include "model.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : NULL, *label = "?";
    int n_gen = 64, header = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--label") && i + 1 < argc) label = argv[++i];
        else if (!strcmp(argv[i], "--gen") && i + 1 < argc) n_gen = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--header")) header = 1;
        else path = NULL;
    }
    if (!path || n_gen < 1) {
        fprintf(stderr, "usage: bench_infer_gpu MODEL.gguf --label NAME [--gen N] [--header]\n");
        return 2;
    }
    char err[512];
    kern_ctx *kc = NULL;
    kern_config cfg = {.backend = KERN_BACKEND_CUDA, .n_threads = 1, .device = 0};
    if (kern_ctx_create(&cfg, &kc, err, sizeof err)) return fprintf(stderr, "%s\n", err), 2;
    double bw = gpu_copy_bandwidth();
    infer_model *m = NULL;
    infer_ctx *c = NULL;
    const int chunk = 32, n_chunks = 4;
    infer_ctx_params p = {.n_ctx = 32 + n_gen + chunk * n_chunks + 8, .n_batch = chunk};
    if (infer_model_load(path, kc, NULL, NULL, &m, err, sizeof err) ||
        infer_ctx_create(m, kc, &p, &c, err, sizeof err))
        return fprintf(stderr, "%s\n", err), 1;
    const infer_hparams *hp = infer_model_hparams(m);
    int32_t toks[32];
    for (int i = 0; i < 32; i++) toks[i] = (i * 7919 + 11) % hp->n_vocab;
    if (infer_eval(c, toks, 32, false, err, sizeof err)) return fprintf(stderr, "prompt: %s\n", err), 1;
    double t0 = now();
    for (int i = 0; i < n_gen; i++) {
        int32_t t = (i * 104729 + 3) % hp->n_vocab;
        if (infer_eval(c, &t, 1, false, err, sizeof err)) return fprintf(stderr, "decode: %s\n", err), 1;
    }
    double ms_tok = (now() - t0) * 1e3 / n_gen;
    t0 = now();
    for (int i = 0; i < n_chunks; i++)
        if (infer_eval(c, toks, chunk, false, err, sizeof err)) return fprintf(stderr, "chunk: %s\n", err), 1;
    double tps = chunk * n_chunks / (now() - t0);
    size_t wb = infer_model_weight_bytes(m);
    double floor_ms = bw > 0 ? wb / bw * 1e3 : 0;
    char desc[128] = "?";
    kern_cuda_describe(kc, desc, sizeof desc);
    if (header)
        printf("device: %s\n\n| model | weights GB | D2D copy GB/s | floor ms/token | batch 1 ms/token | x floor "
               "| 32 tokens/forward tok/s |\n|---|---|---|---|---|---|---|\n", desc);
    printf("| %s | %.3f | %.0f | %.3f | %.3f | %.2f | %.0f |\n", label, wb / 1e9, bw / 1e9, floor_ms, ms_tok,
           floor_ms > 0 ? ms_tok / floor_ms : 0, tps);
    infer_ctx_free(c), infer_model_free(m), kern_ctx_destroy(kc);
    return 0;
}
