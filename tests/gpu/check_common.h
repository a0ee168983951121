/* check_common.h: helpers shared by the GPU check programs (tests/gpu):
 * a CPU and a CUDA kern_ctx side by side, random inputs, device buffers,
 * NaN poisoning and the relative-error comparison that decides PASS/FAIL.
 * Header-only: each check program is one .c file plus this. */
#ifndef COMMONS_CHECK_COMMON_H
#define COMMONS_CHECK_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern_cuda.h"
#include "kernels.h"

typedef struct chk {
    kern_ctx *cpu, *gpu;
    uint64_t rng;
    int fails, total;
} chk;

static inline uint64_t chk_next(chk *c)
{
    c->rng ^= c->rng << 13, c->rng ^= c->rng >> 7, c->rng ^= c->rng << 17;
    return c->rng;
}
/* uniform in [-1, 1) */
static inline float chk_unif(chk *c) { return (float)((chk_next(c) >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1; }
static inline void chk_fill(chk *c, float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = chk_unif(c) * scale;
}

/* Both contexts; exits 2 with the reason when there is no usable GPU. */
static inline void chk_open(chk *c, uint64_t seed, int cpu_threads)
{
    memset(c, 0, sizeof *c);
    c->rng = seed ? seed : 88172645463325252ull;
    char err[256];
    kern_config g = {.backend = KERN_BACKEND_CUDA, .n_threads = 1, .device = 0};
    if (kern_ctx_create(&g, &c->gpu, err, sizeof err)) {
        fprintf(stderr, "no CUDA device: %s\n", err);
        exit(2);
    }
    kern_config p = {.backend = KERN_BACKEND_CPU, .n_threads = cpu_threads};
    if (kern_ctx_create(&p, &c->cpu, err, sizeof err)) {
        fprintf(stderr, "CPU context: %s\n", err);
        exit(2);
    }
    char desc[128] = "?";
    kern_cuda_describe(c->gpu, desc, sizeof desc);
    printf("device: %s; CPU reference: %s ISA, %d threads; seed %llu\n", desc, kern_isa_name(kern_get_isa()),
           cpu_threads, (unsigned long long)seed);
}

static inline void chk_close(chk *c)
{
    kern_ctx_destroy(c->gpu);
    kern_ctx_destroy(c->cpu);
}

/* Device copy of host bytes (exits on failure: the check cannot go on). */
static inline void *chk_dev(chk *c, const void *h, size_t bytes)
{
    void *d = kern_alloc(c->gpu, bytes);
    if (!d || (h && kern_upload(c->gpu, d, h, bytes))) {
        fprintf(stderr, "device buffer of %zu bytes: %s\n", bytes, kern_ctx_error(c->gpu));
        exit(1);
    }
    return d;
}

/* Fills n floats of device memory with NaN, so an output the kernel does
 * not write cannot pass as correct. */
static inline void chk_poison(chk *c, float *d, size_t n)
{
    float *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    if (kern_upload(c->gpu, d, h, n * sizeof *h)) fprintf(stderr, "poison: %s\n", kern_ctx_error(c->gpu)), exit(1);
    free(h);
}

/* Downloads the GPU result and compares it with the CPU's:
 * err = max|g - c| / max|c| (over all n); any NaN or inf in g fails. */
static inline int chk_cmp(chk *c, const char *name, const float *gdev, const float *ref, size_t n, double bound,
                          int rc_gpu, int rc_cpu)
{
    c->total++;
    if (rc_gpu || rc_cpu) {
        printf("FAIL %-44s status gpu %d cpu %d: %s | %s\n", name, rc_gpu, rc_cpu,
               rc_gpu ? kern_ctx_error(c->gpu) : "", rc_cpu ? kern_ctx_error(c->cpu) : "");
        c->fails++;
        return 1;
    }
    float *g = malloc(n * sizeof *g);
    int rc = kern_download(c->gpu, g, gdev, n * sizeof *g);
    if (rc) {
        printf("FAIL %-44s download/kernel error: %s\n", name, kern_ctx_error(c->gpu));
        c->fails++;
        free(g);
        return 1;
    }
    double emax = 0, rmax = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(g[i])) { bad++; continue; }
        double e = fabs((double)g[i] - ref[i]);
        if (e > emax) emax = e;
        if (fabs(ref[i]) > rmax) rmax = fabs(ref[i]);
    }
    double err = emax / (rmax > 1e-30 ? rmax : 1e-30);
    int fail = bad > 0 || !(err <= bound);
    printf("%s %-44s rel.err %.2e (bound %.0e)%s\n", fail ? "FAIL" : "ok  ", name, err, bound,
           bad ? " NON-FINITE OUTPUT" : "");
    c->fails += fail;
    free(g);
    return fail;
}

#endif
