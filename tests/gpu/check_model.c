/* check_model.c: whole-model logits, CUDA backend against the CPU backend,
 * on one GGUF (tests/gpu/check.sh generates synthetic ones on the GPU
 * machine). A prompt of random token ids is evaluated with every
 * position's logits kept, then tokens are generated one at a time (the
 * CPU's greedy pick fed to both, so both see the same sequence). Every row
 * is compared: rel.err = max|gpu - cpu| / max|cpu| over the row; the worst
 * row must stay within --bound, and no logit may be NaN/inf.
 * Usage: check_model MODEL.gguf [--kv f16] [--prompt N] [--gen N]
 *        [--bound B] [--threads N] [--batch N] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern_cuda.h"
#include "model.h"

typedef struct side {
    kern_ctx *kc;
    infer_model *m;
    infer_ctx *c;
} side;

static int open_side(side *s, const char *path, kern_backend b, int threads, const infer_ctx_params *p)
{
    char err[512];
    kern_config cfg = {.backend = b, .n_threads = threads, .device = 0};
    if (kern_ctx_create(&cfg, &s->kc, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return b == KERN_BACKEND_CUDA ? 2 : 1;
    }
    if (infer_model_load(path, s->kc, NULL, NULL, &s->m, err, sizeof err) ||
        infer_ctx_create(s->m, s->kc, p, &s->c, err, sizeof err)) {
        fprintf(stderr, "%s backend: %s\n", b == KERN_BACKEND_CUDA ? "CUDA" : "CPU", err);
        return 1;
    }
    return 0;
}

/* worst row error of rows x vocab logits; -1 if a GPU value is not finite */
static double compare(const float *g, const float *c, int rows, int vocab, int *top1_same)
{
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        const float *gr = g + (size_t)r * vocab, *cr = c + (size_t)r * vocab;
        double emax = 0, rmax = 0;
        int gb = 0, cb = 0;
        for (int i = 0; i < vocab; i++) {
            if (!isfinite(gr[i])) return -1;
            double e = fabs((double)gr[i] - cr[i]);
            emax = e > emax ? e : emax;
            rmax = fabs(cr[i]) > rmax ? fabs(cr[i]) : rmax;
            if (gr[i] > gr[gb]) gb = i;
            if (cr[i] > cr[cb]) cb = i;
        }
        double rel = emax / (rmax > 1e-30 ? rmax : 1e-30);
        worst = rel > worst ? rel : worst;
        *top1_same += gb == cb;
    }
    return worst;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: check_model MODEL.gguf [--kv f16] [--prompt N] [--gen N] [--bound B] "
                        "[--threads N] [--batch N]\n");
        return 2;
    }
    const char *path = argv[1];
    int n_prompt = 40, n_gen = 8, threads = 8;
    double bound = 5e-2; /* CPU: 8-bit activations for quantized weights; GPU: f32 (decode) or bf16 (prompts) */
    infer_ctx_params p = {0};
    for (int i = 2; i < argc; i += 2) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return fprintf(stderr, "check_model: %s needs a value\n", f), 2;
        if (!strcmp(f, "--kv") && (!strcmp(v, "f16") || !strcmp(v, "f32")))
            p.kv_type = !strcmp(v, "f16") ? KERN_TYPE_F16 : KERN_TYPE_F32;
        else if (!strcmp(f, "--prompt")) n_prompt = atoi(v);
        else if (!strcmp(f, "--gen")) n_gen = atoi(v);
        else if (!strcmp(f, "--bound")) bound = atof(v);
        else if (!strcmp(f, "--threads")) threads = atoi(v);
        else if (!strcmp(f, "--batch")) p.n_batch = atoi(v);
        else return fprintf(stderr, "check_model: unknown option %s\n", f), 2;
    }
    if (n_prompt < 1 || n_gen < 0 || threads < 1 || !(bound > 0))
        return fprintf(stderr, "check_model: --prompt >= 1, --gen >= 0, --threads >= 1, --bound > 0\n"), 2;
    p.n_ctx = n_prompt + n_gen + 8;
    side cpu = {0}, gpu = {0};
    /* the CPU side first: without a GPU (check.sh --dry-run) the model file is
     * still loaded and validated before the exit status 2 "no CUDA device" */
    int rc = open_side(&cpu, path, KERN_BACKEND_CPU, threads, &p);
    if (!rc) rc = open_side(&gpu, path, KERN_BACKEND_CUDA, 1, &p);
    if (rc) return rc;
    const infer_hparams *hp = infer_model_hparams(cpu.m);
    int V = hp->n_vocab;
    int32_t *toks = malloc((size_t)(n_prompt + n_gen) * sizeof *toks);
    uint64_t s = 12345;
    for (int i = 0; i < n_prompt; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        toks[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }
    char err[512];
    double worst = 0;
    int same = 0, rows_total = 0, fail = 0;
    for (int step = 0; step <= n_gen && !fail; step++) {
        const int32_t *in = step == 0 ? toks : toks + n_prompt + step - 1;
        int n = step == 0 ? n_prompt : 1;
        if (infer_eval(cpu.c, in, n, step == 0, err, sizeof err))
            return fprintf(stderr, "CPU eval: %s\n", err), 1;
        if (infer_eval(gpu.c, in, n, step == 0, err, sizeof err))
            return fprintf(stderr, "CUDA eval: %s\n", err), 1;
        int rows_c, rows_g;
        const float *lc = infer_logits(cpu.c, &rows_c), *lg = infer_logits(gpu.c, &rows_g);
        if (rows_c != rows_g) return fprintf(stderr, "row counts differ: %d vs %d\n", rows_c, rows_g), 1;
        double w = compare(lg, lc, rows_c, V, &same);
        rows_total += rows_c;
        if (w < 0) fail = 1, printf("non-finite GPU logit at step %d\n", step);
        worst = w > worst ? w : worst;
        if (step < n_gen) { /* the CPU's greedy pick is the next token of both */
            const float *last = lc + (size_t)(rows_c - 1) * V;
            int b = 0;
            for (int i = 1; i < V; i++) b = last[i] > last[b] ? i : b;
            toks[n_prompt + step] = b;
        }
    }
    fail |= !(worst <= bound);
    printf("%s %s: %s L=%d E=%d H=%d/%d D=%d V=%d, kv %s: %d rows, worst rel.err %.2e (bound %.0e), "
           "top-1 same %d/%d\n", fail ? "FAIL" : "ok  ", path, hp->arch_name, hp->n_layer, hp->n_embd, hp->n_head,
           hp->n_head_kv, hp->head_dim, V, p.kv_type == KERN_TYPE_F16 ? "f16" : "f32", rows_total, worst, bound,
           same, rows_total);
    infer_ctx_free(gpu.c), infer_model_free(gpu.m), kern_ctx_destroy(gpu.kc);
    infer_ctx_free(cpu.c), infer_model_free(cpu.m), kern_ctx_destroy(cpu.kc);
    free(toks);
    return fail;
}
