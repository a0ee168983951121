/* bench_kernels.c: matvec (decode) and prompt matmul throughput of the CPU
 * kernels per weight type. Prints GB/s of weight bytes streamed for n=1 at
 * 1 and 2 threads (decode is memory-bound: this is the number to compare
 * with the machine's bandwidth) and GFLOP/s for a 64-row prompt matmul,
 * each the fastest of repeated calls.
 * A first column gives the kernel's own speed: matvec over an L2-resident
 * slice, per CPU-second of the (single) thread, which a busy machine
 * barely disturbs; likewise a prompt column on 1 thread per CPU-second.
 * Not run by ctest. Usage: bench_kernels [MiB per matrix (default 128)]
 * [seconds per measurement (default 0.5)] [k (default 4096)] [type names...
 * (default all)] */
#include "kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }

/* CPU seconds of this thread: with one thread and cache-resident weights
 * this measures the kernel itself, whoever else shares the machine. */
static double cpu_now(void) { return clock_s(CLOCK_THREAD_CPUTIME_ID); }

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static float rndf(void) { return (float)rnd() / 4294967296.0f - 0.5f; }

/* Random weights without quantizing: random bytes, then the float fields
 * (block scales, or the elements of float types) set to sane values. */
static void fill_weights(int t, uint8_t *w, size_t bytes)
{
    size_t bb = kern_type_block_bytes(t), nb = bytes / bb;
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rnd();
    for (size_t b = 0; b < nb; b++) {
        uint8_t *p = w + b * bb;
        uint16_t d = kern_f32_to_f16(rndf() * 0.01f);
        switch (t) {
        case KERN_TYPE_F32: { float f = rndf(); memcpy(p, &f, 4); break; }
        case KERN_TYPE_F16: { uint16_t h = kern_f32_to_f16(rndf()); memcpy(p, &h, 2); break; }
        case KERN_TYPE_BF16: { uint16_t h = kern_f32_to_bf16(rndf()); memcpy(p, &h, 2); break; }
        case KERN_TYPE_Q4_0: case KERN_TYPE_Q5_0: case KERN_TYPE_Q8_0: memcpy(p, &d, 2); break;
        case KERN_TYPE_Q4_K: case KERN_TYPE_Q5_K: case KERN_TYPE_Q4_1: case KERN_TYPE_Q5_1:
            memcpy(p, &d, 2); memcpy(p + 2, &d, 2); break;
        case KERN_TYPE_Q6_K: memcpy(p + 208, &d, 2); break;
        }
    }
}

/* Fastest call of y = x.W^T over repetitions lasting at least min_s: the
 * machine may be shared, and the fastest call is the one that shows what the
 * kernel can do rather than who else was running. */
static double time_matmul_clock(double (*clk)(void), kern_ctx *c, float *y, const float *x, const void *w, int t,
                                int n, int m, int k, double min_s)
{
    kern_matmul(c, y, x, w, t, n, m, k); /* warm: pages, scratch */
    double t0 = now(), best = 1e30;
    do {
        /* one sample: calls until 1 ms has passed on clk (its ticks may be coarse) */
        double t1 = clk(), el;
        int calls = 0;
        do {
            if (kern_matmul(c, y, x, w, t, n, m, k)) { fprintf(stderr, "%s\n", kern_ctx_error(c)); exit(1); }
            calls++;
        } while ((el = clk() - t1) < 1e-3);
        if (el / calls < best) best = el / calls;
    } while (now() - t0 < min_s);
    return best;
}

static double time_matmul(kern_ctx *c, float *y, const float *x, const void *w, int t, int n, int m, int k, double min_s)
{
    return time_matmul_clock(now, c, y, x, w, t, n, m, k, min_s);
}

int main(int argc, char **argv)
{
    double mib = argc > 1 ? atof(argv[1]) : 128, secs = argc > 2 ? atof(argv[2]) : 0.5;
    const int types[] = {KERN_TYPE_Q4_0, KERN_TYPE_Q4_1, KERN_TYPE_Q5_0, KERN_TYPE_Q5_1, KERN_TYPE_Q8_0, KERN_TYPE_Q4_K, KERN_TYPE_Q5_K, KERN_TYPE_Q6_K,
                         KERN_TYPE_F16, KERN_TYPE_BF16, KERN_TYPE_F32};
    const int k = argc > 3 ? atoi(argv[3]) : 4096, np = 64;
    if (k <= 0 || k % 256) { fprintf(stderr, "k must be a positive multiple of 256\n"); return 1; }
    float *x = malloc(sizeof(float) * np * k), *y = malloc(sizeof(float) * np * 65536);
    for (int i = 0; i < np * k; i++) x[i] = rndf();
    kern_ctx *ctx[2];
    for (int i = 0; i < 2; i++) {
        kern_config cfg = {KERN_BACKEND_CPU, i + 1, 0};
        char err[256];
        if (kern_ctx_create(&cfg, &ctx[i], err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    }
    char load[64] = "?";
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (!fgets(load, sizeof load, la)) strcpy(load, "?");
        load[strcspn(load, "\n")] = 0;
        fclose(la);
    }
    printf("isa %s, k=%d, ~%.0f MiB of weights per matrix (bigger than the caches), fastest of repeated calls, "
           "loadavg at start %s\n", kern_isa_name(kern_get_isa()), k, mib, load);
    printf("| type | L2-resident matvec, GB/s per CPU-second | matvec 1 thr GB/s | matvec 2 thr GB/s | prompt n=%d 2 thr GFLOP/s "
           "| prompt n=%d 1 thr GFLOP/s per CPU-second |\n", np, np);
    printf("|------|------:|------------------:|------------------:|-------------------------:|------:|\n");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        int t = types[ti], wanted = argc <= 4;
        for (int a = 4; a < argc; a++) wanted |= !strcmp(argv[a], kern_type_name(t));
        if (!wanted) continue;
        size_t rb = kern_row_bytes(t, k);
        int m = (int)(mib * 1048576 / rb);
        if (m > 65536) m = 65536;
        uint8_t *w = malloc(rb * m);
        fill_weights(t, w, rb * m);
        /* kernel speed: a 256 KiB slice (L2-resident), thread CPU time */
        int mc = (int)(262144 / rb) & ~3;
        double comp = (double)rb * mc / time_matmul_clock(cpu_now, ctx[0], y, x, w, t, 1, mc, k, secs) / 1e9;
        double gbs[2];
        for (int i = 0; i < 2; i++) gbs[i] = (double)rb * m / time_matmul(ctx[i], y, x, w, t, 1, m, k, secs) / 1e9;
        int mp = m < 4096 ? m : 4096; /* prompt: a 4096-row slice is plenty */
        double tp = time_matmul(ctx[1], y, x, w, t, np, mp, k, secs);
        double tp1 = time_matmul_clock(cpu_now, ctx[0], y, x, w, t, np, mp, k, secs);
        printf("| %s | %.1f | %.1f | %.1f | %.1f | %.1f |\n", kern_type_name(t), comp, gbs[0], gbs[1],
               2.0 * np * mp * k / tp / 1e9, 2.0 * np * mp * k / tp1 / 1e9);
        fflush(stdout);
        free(w);
    }
    for (int i = 0; i < 2; i++) kern_ctx_destroy(ctx[i]);
    free(x); free(y);
    return 0;
}
