/* check_ops.c: every CUDA kernel against the CPU backend (the reference) on
 * fresh random inputs. Usage: check_ops [--seed N] [--threads N] [--no-bench].
 * Prints one line per case and exits 0 only if all pass; exits 2 when there
 * is no CUDA device. At the end (unless --no-bench) a few seconds of timing
 * lines for the quantized matmul at batch 32 (printed, never asserted). Bounds are relative to the largest reference value of the output:
 * float weights on the warp matvec path agree to ~1e-6; the CPU quantizes
 * activations to 8 bits for quantized weights and cuBLAS prompt products
 * round x (and dequantized weights) to bf16, hence 3e-2 there. */
#include "check_common.h"

#include <time.h>

static const int types[] = {KERN_TYPE_F32,  KERN_TYPE_F16,  KERN_TYPE_BF16, KERN_TYPE_Q4_0,
                            KERN_TYPE_Q4_1, KERN_TYPE_Q5_0, KERN_TYPE_Q5_1, KERN_TYPE_Q8_0,
                            KERN_TYPE_Q4_K, KERN_TYPE_Q5_K, KERN_TYPE_Q6_K};
#define NTYPES (int)(sizeof types / sizeof *types)

static int is_float(int t) { return t == KERN_TYPE_F32 || t == KERN_TYPE_F16 || t == KERN_TYPE_BF16; }

/* y = x . W^T with W random in type t. wofs: weights placed that many bytes
 * past an aligned address; xofs: x that many floats past one (both take the
 * kernels' fallback paths: byte loads, cuBLAS instead of the matvec). */
static void check_matmul(chk *c, int t, int n, int m, int k, int wofs, int xofs)
{
    size_t rb = kern_row_bytes(t, k), wbytes = rb * m;
    float *wf = malloc((size_t)m * k * sizeof *wf), *x = malloc(((size_t)n * k + 4) * sizeof *x);
    float *yc = malloc((size_t)n * m * sizeof *yc);
    uint8_t *wq = malloc(wbytes);
    chk_fill(c, wf, (size_t)m * k, 1.0f);
    chk_fill(c, x, (size_t)n * k + 4, 2.0f);
    if (kern_quantize(t, wq, wf, m, k, NULL, 0)) fprintf(stderr, "quantize failed\n"), exit(1);
    int rcc = kern_matmul(c->cpu, yc, x + xofs, wq, t, n, m, k);
    uint8_t *wd = chk_dev(c, NULL, wbytes + 16);
    if (kern_upload(c->gpu, wd + wofs, wq, wbytes)) fprintf(stderr, "upload\n"), exit(1);
    float *xd = chk_dev(c, x, ((size_t)n * k + 4) * sizeof *x), *yd = chk_dev(c, NULL, (size_t)n * m * sizeof *yc);
    chk_poison(c, yd, (size_t)n * m);
    int rcg = kern_matmul(c->gpu, yd, xd + xofs, wd + wofs, t, n, m, k);
    char name[96];
    char wo[16] = "";
    if (wofs) snprintf(wo, sizeof wo, " w+%dB", wofs);
    snprintf(name, sizeof name, "matmul %s n=%d m=%d k=%d%s%s", kern_type_name(t), n, m, k, wo, xofs ? " x+4B" : "");
    int vec = n <= 8 && !xofs && k % 32 == 0;
    double bound = is_float(t) ? (vec || (t == KERN_TYPE_F32 && !wofs) ? 1e-4 : 2e-2) : 3e-2;
    chk_cmp(c, name, yd, yc, (size_t)n * m, bound, rcg, rcc);
    kern_free(c->gpu, wd), kern_free(c->gpu, xd), kern_free(c->gpu, yd);
    free(wf), free(x), free(yc), free(wq);
}

/* The quantized matmul for 8 < n <= 64 (kernels/cuda/cuda_mmq.cu): against
 * the CPU (x quantized to 8 bits there: the 3e-2 bound of the other quantized
 * paths), then against the dequantize + cuBLAS path it replaces
 * (COMMONS_CUDA_MMQ=0): both multiply the same bf16 weights and activations
 * with fp32 sums, so only the summation order differs (bound 5e-4). wofs:
 * weight bytes past an aligned address (2: Q4_0/Q5_0/Q8_0/Q6_K blocks stay
 * on this path with the first granule partly outside the matrix). */
static void check_mmq(chk *c, int t, int n, int m, int k, int wofs)
{
    size_t rb = kern_row_bytes(t, k), wbytes = rb * m, ny = (size_t)n * m;
    float *wf = malloc((size_t)m * k * sizeof *wf), *x = malloc((size_t)n * k * sizeof *x);
    float *yc = malloc(ny * sizeof *yc), *yb = malloc(ny * sizeof *yb);
    uint8_t *wq = malloc(wbytes);
    chk_fill(c, wf, (size_t)m * k, 1.0f);
    chk_fill(c, x, (size_t)n * k, 2.0f);
    if (kern_quantize(t, wq, wf, m, k, NULL, 0)) fprintf(stderr, "quantize failed\n"), exit(1);
    int rcc = kern_matmul(c->cpu, yc, x, wq, t, n, m, k);
    uint8_t *wd = chk_dev(c, NULL, wbytes + 16);
    if (kern_upload(c->gpu, wd + wofs, wq, wbytes)) fprintf(stderr, "upload\n"), exit(1);
    /* y with a guard of GUARD floats after it: they must stay NaN */
    enum { GUARD = 64 };
    float *xd = chk_dev(c, x, (size_t)n * k * sizeof *x), *yd = chk_dev(c, NULL, (ny + GUARD) * sizeof *yc);
    chk_poison(c, yd, ny + GUARD);
    int rcg = kern_matmul(c->gpu, yd, xd, wd + wofs, t, n, m, k);
    char name[128], wo[16] = "";
    if (wofs) snprintf(wo, sizeof wo, " w+%dB", wofs);
    snprintf(name, sizeof name, "mmq %s n=%d m=%d k=%d%s vs CPU", kern_type_name(t), n, m, k, wo);
    chk_cmp(c, name, yd, yc, ny, 3e-2, rcg, rcc);
    float guard[GUARD];
    int gbad = kern_download(c->gpu, guard, yd + ny, sizeof guard) != 0;
    for (int i = 0; i < GUARD; i++) gbad |= !isnan(guard[i]);
    c->total++, c->fails += gbad;
    printf("%s mmq %s n=%d m=%d: nothing written past y\n", gbad ? "FAIL" : "ok  ", kern_type_name(t), n, m);
    /* the old path into a second poisoned buffer, downloaded as the reference */
    float *yd2 = chk_dev(c, NULL, ny * sizeof *yc);
    chk_poison(c, yd2, ny);
    setenv("COMMONS_CUDA_MMQ", "0", 1);
    int rcb = kern_matmul(c->gpu, yd2, xd, wd + wofs, t, n, m, k);
    unsetenv("COMMONS_CUDA_MMQ");
    if (!rcb) rcb = kern_download(c->gpu, yb, yd2, ny * sizeof *yb);
    snprintf(name, sizeof name, "mmq %s n=%d m=%d k=%d%s vs dequant+cuBLAS", kern_type_name(t), n, m, k, wo);
    chk_cmp(c, name, yd, yb, ny, 5e-4, rcg, rcb);
    kern_free(c->gpu, wd), kern_free(c->gpu, xd), kern_free(c->gpu, yd), kern_free(c->gpu, yd2);
    free(wf), free(x), free(yc), free(yb), free(wq);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ms per kern_matmul call (median of 5 runs of `reps` calls), or -1 on error */
static double time_matmul(chk *c, float *yd, const float *xd, const void *wd, int t, int n, int m, int k, int reps)
{
    double best[5];
    for (int r = 0; r < 5; r++) {
        if (kern_matmul(c->gpu, yd, xd, wd, t, n, m, k) || kern_sync(c->gpu)) return -1;
        double t0 = now_s();
        for (int i = 0; i < reps; i++)
            if (kern_matmul(c->gpu, yd, xd, wd, t, n, m, k)) return -1;
        if (kern_sync(c->gpu)) return -1;
        best[r] = (now_s() - t0) * 1e3 / reps;
    }
    for (int i = 0; i < 5; i++) /* sort for the median */
        for (int j = i + 1; j < 5; j++)
            if (best[j] < best[i]) { double v = best[i]; best[i] = best[j]; best[j] = v; }
    return best[2];
}

/* Timing, not a check (never fails the run): the quantized matmul at n = 32 (16, 64) against the
 * dequantize + cuBLAS path and against the floor (weight bytes / measured
 * device-to-device copy bandwidth, read + write), for the TinyLlama-1.1B Q8_0
 * shapes of bench/infer-gpu and a few of the default model's. */
static void bench_mmq(chk *c)
{
    const size_t cb = (size_t)256 << 20;
    void *a = kern_alloc(c->gpu, cb), *b = kern_alloc(c->gpu, cb);
    double bw = 0;
    if (a && b && !kern_cuda_copy(c->gpu, b, a, cb) && !kern_sync(c->gpu)) {
        double t0 = now_s();
        for (int i = 0; i < 10; i++) kern_cuda_copy(c->gpu, b, a, cb);
        if (!kern_sync(c->gpu)) bw = 2.0 * cb * 10 / (now_s() - t0);
    }
    kern_free(c->gpu, a), kern_free(c->gpu, b);
    printf("timing (not a check): device-to-device copy %.0f GB/s (read + write)\n", bw / 1e9);
    /* per_step: how many times a TinyLlama step (22 layers and the output) multiplies by it */
    static const struct { int t, m, k, n, per_step; const char *what; } sh[] = {
        {KERN_TYPE_Q8_0, 2048, 2048, 32, 44, "TinyLlama q, o"},
        {KERN_TYPE_Q8_0, 256, 2048, 32, 44, "TinyLlama k, v"},
        {KERN_TYPE_Q8_0, 5632, 2048, 32, 44, "TinyLlama gate, up"},
        {KERN_TYPE_Q8_0, 2048, 5632, 32, 22, "TinyLlama down"},
        {KERN_TYPE_Q8_0, 32000, 2048, 32, 1, "TinyLlama output"},
        {KERN_TYPE_Q8_0, 5632, 2048, 16, 0, "TinyLlama gate, batch 16"},
        {KERN_TYPE_Q8_0, 5632, 2048, 64, 0, "TinyLlama gate, batch 64"},
        {KERN_TYPE_Q5_0, 2048, 640, 32, 0, "Gemma 270M gate"},
        {KERN_TYPE_Q4_K, 640, 2048, 32, 0, "Gemma 270M down"},
        {KERN_TYPE_Q6_K, 640, 2048, 32, 0, "Gemma 270M down"},
        {KERN_TYPE_Q8_0, 262144, 640, 32, 0, "Gemma 270M output"},
    };
    const int base_rows = 64;
    double step_new = 0, step_old = 0, step_floor = 0;
    for (size_t s = 0; s < sizeof sh / sizeof *sh; s++) {
        int t = sh[s].t, m = sh[s].m, k = sh[s].k, n = sh[s].n;
        size_t rb = kern_row_bytes(t, k), wbytes = rb * m;
        /* base_rows random rows, repeated: quantizing 262144 rows on the host would dominate */
        float *wf = malloc((size_t)base_rows * k * sizeof *wf), *x = malloc((size_t)n * k * sizeof *x);
        uint8_t *wq = malloc(wbytes);
        chk_fill(c, wf, (size_t)base_rows * k, 1.0f);
        chk_fill(c, x, (size_t)n * k, 1.0f);
        kern_quantize(t, wq, wf, base_rows, k, NULL, 0);
        for (int r = base_rows; r < m; r++) memcpy(wq + (size_t)r * rb, wq + (size_t)(r % base_rows) * rb, rb);
        void *wd = chk_dev(c, wq, wbytes);
        float *xd = chk_dev(c, x, (size_t)n * k * sizeof *x), *yd = chk_dev(c, NULL, (size_t)n * m * sizeof *x);
        int reps = wbytes > ((size_t)64 << 20) ? 5 : 20;
        double tn = time_matmul(c, yd, xd, wd, t, n, m, k, reps);
        setenv("COMMONS_CUDA_MMQ", "0", 1);
        double to = time_matmul(c, yd, xd, wd, t, n, m, k, reps);
        unsetenv("COMMONS_CUDA_MMQ");
        double fl = bw > 0 ? wbytes / bw * 1e3 : 0;
        if (tn < 0 || to < 0) {
            printf("timing (not a check): matmul %s n=%d m=%d k=%d (%s): error: %s\n", kern_type_name(t), n, m, k,
                   sh[s].what, kern_ctx_error(c->gpu));
            step_new = step_old = -1e30; /* the step sum is void */
        } else {
            printf("timing (not a check): matmul %s n=%d m=%d k=%d (%s): %.4f ms new, %.4f ms dequant+cuBLAS, "
                   "floor %.4f ms (new %.2fx floor, %.2fx faster)\n",
                   kern_type_name(t), n, m, k, sh[s].what, tn, to, fl, fl > 0 ? tn / fl : 0, tn > 0 ? to / tn : 0);
            step_new += sh[s].per_step * tn, step_old += sh[s].per_step * to;
        }
        step_floor += sh[s].per_step * fl;
        kern_free(c->gpu, wd), kern_free(c->gpu, xd), kern_free(c->gpu, yd);
        free(wf), free(x), free(wq);
    }
    if (step_new < 0) {
        printf("timing (not a check): no TinyLlama step sum (an error above)\n");
        return;
    }
    printf("timing (not a check): the matmuls of a TinyLlama-1.1B Q8_0 step at batch 32 (22 layers + output): "
           "%.3f ms new (%.0f tok/s if nothing else ran; llama.cpp's whole step: 8,168 tok/s on an H200), "
           "%.3f ms dequant+cuBLAS, floor %.3f ms\n",
           step_new, step_new > 0 ? 32 / (step_new * 1e-3) : 0, step_old, step_floor);
}

static void check_matmul_multi(chk *c, int n)
{
    const int k = 512, ms[3] = {256, 64, 96}, ts[3] = {KERN_TYPE_Q4_K, KERN_TYPE_Q8_0, KERN_TYPE_F16};
    float *x = malloc((size_t)n * k * sizeof *x);
    chk_fill(c, x, (size_t)n * k, 1.0f);
    float *xd = chk_dev(c, x, (size_t)n * k * sizeof *x);
    kern_matmul_op oc[3], og[3];
    void *wq[3];
    for (int o = 0; o < 3; o++) {
        float *wf = malloc((size_t)ms[o] * k * sizeof *wf);
        chk_fill(c, wf, (size_t)ms[o] * k, 1.0f);
        wq[o] = malloc(kern_row_bytes(ts[o], k) * ms[o]);
        kern_quantize(ts[o], wq[o], wf, ms[o], k, NULL, 0);
        free(wf);
        oc[o] = (kern_matmul_op){malloc((size_t)n * ms[o] * sizeof(float)), wq[o], ts[o], ms[o]};
        og[o] = (kern_matmul_op){chk_dev(c, NULL, (size_t)n * ms[o] * sizeof(float)),
                                 chk_dev(c, wq[o], kern_row_bytes(ts[o], k) * ms[o]), ts[o], ms[o]};
        chk_poison(c, og[o].y, (size_t)n * ms[o]);
    }
    int rcc = kern_matmul_multi(c->cpu, x, n, k, oc, 3), rcg = kern_matmul_multi(c->gpu, xd, n, k, og, 3);
    for (int o = 0; o < 3; o++) {
        char name[96];
        snprintf(name, sizeof name, "matmul_multi n=%d op %d (%s)", n, o, kern_type_name(ts[o]));
        chk_cmp(c, name, og[o].y, oc[o].y, (size_t)n * ms[o], 3e-2, rcg, rcc);
        kern_free(c->gpu, og[o].y), kern_free(c->gpu, (void *)og[o].w), free(oc[o].y), free(wq[o]);
    }
    kern_free(c->gpu, xd), free(x);
}

static void check_get_rows(chk *c, int t, int dim)
{
    const int rows = 50, n_ids = 7;
    int32_t ids[7] = {0, 49, 3, 3, 17, 25, 48};
    float *wf = malloc((size_t)rows * dim * sizeof *wf), *yc = malloc((size_t)n_ids * dim * sizeof *yc);
    chk_fill(c, wf, (size_t)rows * dim, 1.0f);
    uint8_t *wq = malloc(kern_row_bytes(t, dim) * rows);
    kern_quantize(t, wq, wf, rows, dim, NULL, 0);
    void *wd = chk_dev(c, wq, kern_row_bytes(t, dim) * rows);
    float *yd = chk_dev(c, NULL, (size_t)n_ids * dim * sizeof *yc);
    chk_poison(c, yd, (size_t)n_ids * dim);
    int rcc = kern_get_rows(c->cpu, yc, wq, t, rows, dim, ids, n_ids);
    int rcg = kern_get_rows(c->gpu, yd, wd, t, rows, dim, ids, n_ids);
    char name[96];
    snprintf(name, sizeof name, "get_rows %s dim=%d", kern_type_name(t), dim);
    chk_cmp(c, name, yd, yc, (size_t)n_ids * dim, 1e-6, rcg, rcc);
    kern_free(c->gpu, wd), kern_free(c->gpu, yd), free(wf), free(yc), free(wq);
}

enum { OP_RMS, OP_RMS_NOW, OP_SOFTMAX, OP_SILU, OP_GELU, OP_GSILU, OP_GGELU, OP_ADD, OP_MUL, OP_SCALE };
static const char *op_names[] = {"rmsnorm", "rmsnorm (no weight, in place)", "softmax", "silu", "gelu",
                                 "gated silu", "gated gelu", "add", "mul", "scale"};

static void check_rowop(chk *c, int op, int n, int dim)
{
    size_t N = (size_t)n * dim;
    float *a = malloc(N * 4), *b = malloc(N * 4), *w = malloc((size_t)dim * 4), *yc = malloc(N * 4);
    chk_fill(c, a, N, op == OP_SOFTMAX ? 20.0f : 4.0f);
    chk_fill(c, b, N, 3.0f);
    chk_fill(c, w, dim, 1.5f);
    float *ad = chk_dev(c, a, N * 4), *bd = chk_dev(c, b, N * 4), *wd = chk_dev(c, w, (size_t)dim * 4);
    float *yd = chk_dev(c, NULL, N * 4);
    int in_place = op == OP_RMS_NOW || op == OP_SOFTMAX;
    if (in_place) memcpy(yc, a, N * 4), kern_upload(c->gpu, yd, a, N * 4);
    else chk_poison(c, yd, N);
    int rcc = 0, rcg = 0;
    switch (op) {
    case OP_RMS: rcc = kern_rmsnorm(c->cpu, yc, a, w, n, dim, 1e-6f), rcg = kern_rmsnorm(c->gpu, yd, ad, wd, n, dim, 1e-6f); break;
    case OP_RMS_NOW: rcc = kern_rmsnorm(c->cpu, yc, yc, NULL, n, dim, 1e-5f), rcg = kern_rmsnorm(c->gpu, yd, yd, NULL, n, dim, 1e-5f); break;
    case OP_SOFTMAX: rcc = kern_softmax(c->cpu, yc, n, dim), rcg = kern_softmax(c->gpu, yd, n, dim); break;
    case OP_SILU: rcc = kern_act_apply(c->cpu, yc, a, N, KERN_ACT_SILU), rcg = kern_act_apply(c->gpu, yd, ad, N, KERN_ACT_SILU); break;
    case OP_GELU: rcc = kern_act_apply(c->cpu, yc, a, N, KERN_ACT_GELU), rcg = kern_act_apply(c->gpu, yd, ad, N, KERN_ACT_GELU); break;
    case OP_GSILU: rcc = kern_gated(c->cpu, yc, a, b, N, KERN_ACT_SILU), rcg = kern_gated(c->gpu, yd, ad, bd, N, KERN_ACT_SILU); break;
    case OP_GGELU: rcc = kern_gated(c->cpu, yc, a, b, N, KERN_ACT_GELU), rcg = kern_gated(c->gpu, yd, ad, bd, N, KERN_ACT_GELU); break;
    case OP_ADD: rcc = kern_add(c->cpu, yc, a, b, N), rcg = kern_add(c->gpu, yd, ad, bd, N); break;
    case OP_MUL: rcc = kern_mul(c->cpu, yc, a, b, N), rcg = kern_mul(c->gpu, yd, ad, bd, N); break;
    case OP_SCALE: rcc = kern_scale(c->cpu, yc, a, 0.37f, N), rcg = kern_scale(c->gpu, yd, ad, 0.37f, N); break;
    }
    char name[96];
    snprintf(name, sizeof name, "%s n=%d dim=%d", op_names[op], n, dim);
    chk_cmp(c, name, yd, yc, N, 1e-5, rcg, rcc);
    kern_free(c->gpu, ad), kern_free(c->gpu, bd), kern_free(c->gpu, wd), kern_free(c->gpu, yd);
    free(a), free(b), free(w), free(yc);
}

static void check_rope(chk *c, kern_rope_mode mode, int n_rot, int with_ff, float scale, int pos_base)
{
    const int n_tok = 9, n_head = 5, hd = 128;
    size_t N = (size_t)n_tok * n_head * hd;
    float *x = malloc(N * 4), ff[64];
    int32_t pos[9];
    chk_fill(c, x, N, 2.0f);
    for (int i = 0; i < 64; i++) ff[i] = 1.0f + (float)i / 8;
    for (int t = 0; t < n_tok; t++) pos[t] = pos_base + 3 * t;
    float *xd = chk_dev(c, x, N * 4), *ffd = chk_dev(c, ff, sizeof ff);
    kern_rope_params pc = {mode, n_rot, 10000.0f, scale, with_ff ? ff : NULL}, pg = pc;
    pg.freq_factors = with_ff ? ffd : NULL;
    int rcc = kern_rope(c->cpu, x, n_tok, n_head, hd, pos, &pc), rcg = kern_rope(c->gpu, xd, n_tok, n_head, hd, pos, &pg);
    char name[96];
    snprintf(name, sizeof name, "rope %s n_rot=%d%s scale=%g pos>=%d", mode == KERN_ROPE_NEOX ? "neox" : "normal",
             n_rot, with_ff ? " freq_factors" : "", (double)scale, pos_base);
    chk_cmp(c, name, xd, x, N, 1e-5, rcg, rcc);
    kern_free(c->gpu, xd), kern_free(c->gpu, ffd), free(x);
}

/* KV store then attention; both caches filled through kern_kv_store on each
 * backend, so the store is checked too (by the attention result and directly). */
static void check_attention(chk *c, int kvt, int n_head, int n_head_kv, int hd, int n_q, int q_pos0, int window)
{
    kern_kv_layout l = {kvt, n_head_kv, hd, q_pos0 + n_q + 5};
    int n_kv = q_pos0 + n_q;
    size_t kvb = kern_kv_bytes(&l), NK = (size_t)n_kv * n_head_kv * hd, NQ = (size_t)n_q * n_head * hd;
    float *k = malloc(NK * 4), *v = malloc(NK * 4), *q = malloc(NQ * 4), *oc = malloc(NQ * 4);
    chk_fill(c, k, NK, 1.0f), chk_fill(c, v, NK, 1.0f), chk_fill(c, q, NQ, 1.0f);
    void *kc = calloc(1, kvb), *vc = calloc(1, kvb);
    void *kg = chk_dev(c, kc, kvb), *vg = chk_dev(c, vc, kvb);
    float *kd = chk_dev(c, k, NK * 4), *vd = chk_dev(c, v, NK * 4), *qd = chk_dev(c, q, NQ * 4);
    float *od = chk_dev(c, NULL, NQ * 4);
    int rcc = kern_kv_store(c->cpu, kc, &l, 0, n_kv, k) | kern_kv_store(c->cpu, vc, &l, 0, n_kv, v);
    int rcg = kern_kv_store(c->gpu, kg, &l, 0, n_kv, kd) | kern_kv_store(c->gpu, vg, &l, 0, n_kv, vd);
    char name[128];
    if (kvt == KERN_TYPE_F32) { /* f32 cache: stored bytes must be identical */
        snprintf(name, sizeof name, "kv_store f32 hkv=%d hd=%d n=%d", n_head_kv, hd, n_kv);
        chk_cmp(c, name, kg, kc, kvb / 4, 0.0, rcg, rcc);
    }
    chk_poison(c, od, NQ);
    kern_attn_params p = {n_q, n_head, q_pos0, n_kv, window, 1.0f / sqrtf((float)hd)};
    rcc |= kern_attention(c->cpu, oc, q, kc, vc, &l, &p);
    rcg |= kern_attention(c->gpu, od, qd, kg, vg, &l, &p);
    snprintf(name, sizeof name, "attention %s h=%d/%d hd=%d q=%d@%d win=%d", kern_type_name(kvt), n_head, n_head_kv,
             hd, n_q, q_pos0, window);
    chk_cmp(c, name, od, oc, NQ, 1e-4, rcg, rcc);
    kern_free(c->gpu, kg), kern_free(c->gpu, vg), kern_free(c->gpu, kd), kern_free(c->gpu, vd);
    kern_free(c->gpu, qd), kern_free(c->gpu, od);
    free(k), free(v), free(q), free(oc), free(kc), free(vc);
}

/* A decode step (rope, KV store, attention) captured once in a CUDA graph
 * with the position in device memory, replayed for 5 positions: each replay
 * must match the CPU running the same step at that position. */
/* A decode step (RoPE, KV store, attention at a device position) captured
 * once and replayed at positions 0 .. n_pos-1 against the CPU; window > 0
 * also checks the split of a sliding window computed on the device. */
static void check_graph(chk *c, int window, int n_pos)
{
    const int H = 8, HKV = 2, D = 64, CAP = 64;
    kern_kv_layout l = {KERN_TYPE_F16, HKV, D, CAP};
    size_t kvb = kern_kv_bytes(&l);
    void *kc = calloc(1, kvb), *vc = calloc(1, kvb), *kg = chk_dev(c, kc, kvb), *vg = chk_dev(c, vc, kvb);
    float *q = malloc(H * D * 4), *k = malloc(HKV * D * 4), *v = malloc(HKV * D * 4), *oc = malloc(H * D * 4);
    float *qd = chk_dev(c, NULL, H * D * 4), *kd = chk_dev(c, NULL, HKV * D * 4), *vd = chk_dev(c, NULL, HKV * D * 4);
    float *od = chk_dev(c, NULL, H * D * 4);
    int32_t *posd = chk_dev(c, NULL, 4);
    kern_rope_params rp = {KERN_ROPE_NORMAL, D, 10000.0f, 1.0f, NULL};
    kern_attn_params ap = {1, H, 0, 1, window, 0.125f};
    kern_cuda_graph *g = NULL;
    /* warm-up run outside the capture sizes the scratch buffers */
    int32_t p0 = CAP - 1;
    kern_upload(c->gpu, posd, &p0, 4);
    int rc = kern_cuda_attention_dev(c->gpu, od, qd, kg, vg, &l, &ap, posd);
    rc |= kern_sync(c->gpu);
    rc |= kern_cuda_graph_begin(c->gpu);
    rc |= kern_cuda_rope_dev(c->gpu, qd, 1, H, D, posd, &rp);
    rc |= kern_cuda_rope_dev(c->gpu, kd, 1, HKV, D, posd, &rp);
    rc |= kern_cuda_kv_store_dev(c->gpu, kg, &l, posd, 1, kd);
    rc |= kern_cuda_kv_store_dev(c->gpu, vg, &l, posd, 1, vd);
    rc |= kern_cuda_attention_dev(c->gpu, od, qd, kg, vg, &l, &ap, posd);
    rc |= kern_cuda_graph_end(c->gpu, &g);
    if (rc) {
        printf("FAIL graph capture: %s\n", kern_ctx_error(c->gpu));
        c->fails++, c->total++;
    }
    for (int32_t pos = 0; pos < n_pos && pos < CAP && !rc; pos++) {
        chk_fill(c, q, H * D, 1.0f), chk_fill(c, k, HKV * D, 1.0f), chk_fill(c, v, HKV * D, 1.0f);
        kern_upload(c->gpu, qd, q, H * D * 4), kern_upload(c->gpu, kd, k, HKV * D * 4);
        kern_upload(c->gpu, vd, v, HKV * D * 4), kern_upload(c->gpu, posd, &pos, 4);
        chk_poison(c, od, H * D);
        int rg = kern_cuda_graph_launch(c->gpu, g);
        int rcpu = kern_rope(c->cpu, q, 1, H, D, &pos, &rp) | kern_rope(c->cpu, k, 1, HKV, D, &pos, &rp) |
                   kern_kv_store(c->cpu, kc, &l, pos, 1, k) | kern_kv_store(c->cpu, vc, &l, pos, 1, v);
        kern_attn_params a = ap;
        a.q_pos0 = pos, a.n_kv = pos + 1;
        rcpu |= kern_attention(c->cpu, oc, q, kc, vc, &l, &a);
        char name[64];
        snprintf(name, sizeof name, "graph replay decode step pos=%d win=%d", pos, window);
        chk_cmp(c, name, od, oc, H * D, 1e-4, rg, rcpu);
    }
    /* host positions inside a capture must be refused, not silently baked in */
    int32_t hp = 0;
    kern_cuda_graph_begin(c->gpu);
    int refused = kern_rope(c->gpu, qd, 1, H, D, &hp, &rp) == KERN_EINVAL;
    kern_cuda_graph *g2 = NULL;
    kern_cuda_graph_end(c->gpu, &g2); /* may fail: the capture saw no work */
    kern_cuda_graph_free(g2);
    c->total++;
    if (!refused) c->fails++;
    printf("%s host positions refused during capture\n", refused ? "ok  " : "FAIL");
    kern_cuda_graph_free(g);
    kern_free(c->gpu, kg), kern_free(c->gpu, vg), kern_free(c->gpu, qd), kern_free(c->gpu, kd);
    kern_free(c->gpu, vd), kern_free(c->gpu, od), kern_free(c->gpu, posd);
    free(kc), free(vc), free(q), free(k), free(v), free(oc);
}

/* kern_cuda_bind: a host position array bound to a device int is captured as a
 * read of the device int, so the replay follows new uploads (what
 * inference/model_gpu.c relies on); unbound, the capture refuses it again. */
static void check_bind(chk *c)
{
    const int H = 4, D = 64;
    kern_rope_params rp = {KERN_ROPE_NEOX, D, 10000.0f, 1.0f, NULL};
    int32_t hpos = 0, *posd = chk_dev(c, NULL, 4);
    float *x = malloc(H * D * 4), *xc = malloc(H * D * 4), *xd = chk_dev(c, NULL, H * D * 4);
    kern_cuda_graph *g = NULL;
    int rc = kern_cuda_bind(c->gpu, &hpos, sizeof hpos, posd);
    if (!rc) rc = kern_cuda_graph_begin(c->gpu);
    if (!rc) {
        rc = kern_rope(c->gpu, xd, 1, H, D, &hpos, &rp); /* allowed in a capture: bound */
        rc |= kern_cuda_graph_end(c->gpu, &g);
    }
    kern_cuda_unbind_all(c->gpu);
    if (rc) {
        printf("FAIL bound host positions in a capture: %s\n", kern_ctx_error(c->gpu));
        c->fails++, c->total++;
    }
    const int32_t pos[3] = {3, 1000, 77};
    for (int i = 0; i < 3 && !rc; i++) {
        chk_fill(c, x, (size_t)H * D, 1.0f);
        memcpy(xc, x, (size_t)H * D * 4);
        int rg = kern_upload(c->gpu, xd, x, (size_t)H * D * 4) | kern_upload(c->gpu, posd, &pos[i], 4);
        rg |= kern_cuda_graph_launch(c->gpu, g);
        int rcpu = kern_rope(c->cpu, xc, 1, H, D, &pos[i], &rp);
        char name[64];
        snprintf(name, sizeof name, "bound positions, graph replay at pos=%d", pos[i]);
        chk_cmp(c, name, xd, xc, (size_t)H * D, 1e-5, rg, rcpu);
    }
    kern_cuda_graph_free(g);
    kern_free(c->gpu, posd), kern_free(c->gpu, xd), free(x), free(xc);
}

static void check_copy(chk *c)
{
    const size_t n = 100003;
    float *h = malloc(n * 4), *back = malloc(n * 4);
    chk_fill(c, h, n, 5.0f);
    float *a = chk_dev(c, h, n * 4), *b = chk_dev(c, NULL, n * 4);
    chk_poison(c, b, n);
    int rc = kern_cuda_copy(c->gpu, b, a, n * 4);
    chk_cmp(c, "kern_cuda_copy 100003 floats", b, h, n, 0.0, rc, 0);
    chk_poison(c, b, n);
    rc = kern_copy(c->gpu, b + 1, a + 2, (n - 3) * 4); /* unaligned, through kernels.h */
    chk_cmp(c, "kern_copy 100000 floats at odd offsets", b + 1, h + 2, n - 3, 0.0, rc, 0);
    float *pin = kern_host_alloc(c->gpu, n * 4); /* pinned: the download runs at bus speed */
    int rp = pin ? kern_download(c->gpu, pin, a, n * 4) : KERN_ENOMEM;
    c->total++;
    int same = !rp && !memcmp(pin, h, n * 4);
    c->fails += !same;
    printf("%s download into kern_host_alloc memory%s%s\n", same ? "ok  " : "FAIL", rp ? ": " : "",
           rp ? kern_ctx_error(c->gpu) : "");
    kern_host_free(c->gpu, pin);
    kern_free(c->gpu, a), kern_free(c->gpu, b), free(h), free(back);
}

/* kern_kv_gather: the GPU's gathered cache must be the CPU's byte for byte
 * (compared as floats: f16 pairs are compared through their bit patterns). */
static void check_kv_gather(chk *c, int type, int hkv, int hd, int bt)
{
    const int n_pool = 9, n_ids = 5;
    kern_kv_layout blk = {type, hkv, hd, bt}, dl = {type, hkv, hd, n_ids * bt + 3};
    size_t pb = kern_kv_bytes(&blk) * n_pool, db = kern_kv_bytes(&dl);
    float *pool = malloc(pb), *dst = malloc(db);
    chk_fill(c, pool, pb / 4, 3.0f);
    for (size_t i = 0; i < db / 4; i++) dst[i] = NAN;
    float *pd = chk_dev(c, pool, pb), *dd = chk_dev(c, dst, db);
    int32_t ids[5] = {8, 0, 3, 3, 5};
    int rcc = kern_kv_gather(c->cpu, dst, &dl, pool, &blk, n_pool, ids, n_ids);
    int rcg = kern_kv_gather(c->gpu, dd, &dl, pd, &blk, n_pool, ids, n_ids);
    /* NaN in the untouched tail on both sides would fail chk_cmp: compare the gathered positions per head */
    size_t es = type == KERN_TYPE_F32 ? 4 : 2, head = (size_t)dl.capacity * hd * es, used = (size_t)n_ids * bt * hd * es;
    char name[96];
    for (int h = 0; h < hkv && !(rcc | rcg); h++) {
        snprintf(name, sizeof name, "kv_gather %s hkv=%d hd=%d block=%d head %d", kern_type_name(type), hkv, hd, bt, h);
        chk_cmp(c, name, (const float *)((const char *)dd + h * head), (const float *)((const char *)dst + h * head),
                used / 4, 0.0, rcg, rcc);
    }
    if (rcc | rcg) chk_cmp(c, "kv_gather", dd, dst, 1, 0.0, rcg, rcc);
    kern_free(c->gpu, pd), kern_free(c->gpu, dd), free(pool), free(dst);
}

/* kern_kv_store_paged + kern_attention_paged: 3 sequences (a prompt chunk, two
 * decodes) over blocks scattered in a pool, GPU against CPU. */
static void check_paged(chk *c, int kvt, int n_head, int hkv, int hd, int bt, int window)
{
    const int n_pool = 40, NS = 3;
    kern_kv_layout blk = {kvt, hkv, hd, bt};
    size_t bb = kern_kv_bytes(&blk), pb = bb * n_pool;
    int n_q[3] = {9, 1, 1}, pos0[3] = {0, 57, 130 % (n_pool * bt / 3)};
    int32_t tabs[3][64];
    kern_paged_seq sq[3];
    int rows = 0;
    for (int s = 0; s < NS; s++) {
        int nb = (pos0[s] + n_q[s] + bt - 1) / bt;
        for (int i = 0; i < nb; i++) tabs[s][i] = (int32_t)((s + NS * i) * 7 % n_pool); /* interleaved, scattered */
        sq[s] = (kern_paged_seq){rows, n_q[s], pos0[s], tabs[s]};
        rows += n_q[s];
    }
    /* fill every position a sequence sees, then the new rows, through kv_store_paged */
    uint8_t *kp = calloc(1, pb), *vp = calloc(1, pb);
    void *kpd = chk_dev(c, kp, pb), *vpd = chk_dev(c, vp, pb);
    size_t KVR = (size_t)hkv * hd, QR = (size_t)n_head * hd;
    int rcc = 0, rcg = 0;
    for (int s = 0; s < NS; s++) {
        int n = pos0[s] + n_q[s];
        float *kv = malloc((size_t)n * KVR * 4), *vv = malloc((size_t)n * KVR * 4);
        int32_t *slots = malloc((size_t)n * 4);
        chk_fill(c, kv, (size_t)n * KVR, 1.0f), chk_fill(c, vv, (size_t)n * KVR, 1.0f);
        for (int p = 0; p < n; p++) slots[p] = tabs[s][p / bt] * bt + p % bt;
        float *kd = chk_dev(c, kv, (size_t)n * KVR * 4), *vd = chk_dev(c, vv, (size_t)n * KVR * 4);
        rcc |= kern_kv_store_paged(c->cpu, kp, &blk, n_pool, slots, n, kv) |
               kern_kv_store_paged(c->cpu, vp, &blk, n_pool, slots, n, vv);
        rcg |= kern_kv_store_paged(c->gpu, kpd, &blk, n_pool, slots, n, kd) |
               kern_kv_store_paged(c->gpu, vpd, &blk, n_pool, slots, n, vd);
        kern_free(c->gpu, kd), kern_free(c->gpu, vd), free(kv), free(vv), free(slots);
    }
    char name[128];
    if (kvt == KERN_TYPE_F32) {
        snprintf(name, sizeof name, "kv_store_paged f32 hkv=%d hd=%d block=%d", hkv, hd, bt);
        chk_cmp(c, name, kpd, (const float *)kp, pb / 4, 0.0, rcg, rcc);
    }
    float *q = malloc((size_t)rows * QR * 4), *oc = malloc((size_t)rows * QR * 4);
    chk_fill(c, q, (size_t)rows * QR, 1.0f);
    float *qd = chk_dev(c, q, (size_t)rows * QR * 4), *od = chk_dev(c, NULL, (size_t)rows * QR * 4);
    chk_poison(c, od, (size_t)rows * QR);
    float scale = 1.0f / sqrtf((float)hd);
    rcc |= kern_attention_paged(c->cpu, oc, q, kp, vp, &blk, n_pool, sq, NS, n_head, window, scale);
    rcg |= kern_attention_paged(c->gpu, od, qd, kpd, vpd, &blk, n_pool, sq, NS, n_head, window, scale);
    snprintf(name, sizeof name, "attention_paged %s h=%d/%d hd=%d block=%d win=%d", kern_type_name(kvt), n_head, hkv,
             hd, bt, window);
    chk_cmp(c, name, od, oc, (size_t)rows * QR, 1e-4, rcg, rcc);
    kern_free(c->gpu, kpd), kern_free(c->gpu, vpd), kern_free(c->gpu, qd), kern_free(c->gpu, od);
    free(kp), free(vp), free(q), free(oc);
}

static void check_sampling(chk *c, int n, int vocab, int k)
{
    float *lg = malloc((size_t)n * vocab * 4);
    chk_fill(c, lg, (size_t)n * vocab, 10.0f);
    for (int r = 0; r < n; r++) lg[(size_t)r * vocab + (r * 7919) % vocab] = 10.0f; /* ties with ... */
    for (int r = 0; r < n; r++) lg[(size_t)r * vocab + (r * 104729 + 5) % vocab] = 10.0f; /* ... each other */
    float *ld = chk_dev(c, lg, (size_t)n * vocab * 4), *vd = chk_dev(c, NULL, (size_t)n * k * 4);
    int32_t *am = chk_dev(c, NULL, (size_t)n * 4), *id = chk_dev(c, NULL, (size_t)n * k * 4);
    int32_t *amh = malloc((size_t)n * 4), *idh = malloc((size_t)n * k * 4);
    float *vh = malloc((size_t)n * k * 4);
    int rc = kern_cuda_argmax(c->gpu, am, ld, n, vocab) | kern_cuda_topk(c->gpu, vd, id, ld, n, vocab, k);
    rc |= kern_download(c->gpu, amh, am, (size_t)n * 4) | kern_download(c->gpu, idh, id, (size_t)n * k * 4);
    rc |= kern_download(c->gpu, vh, vd, (size_t)n * k * 4);
    int bad = rc != 0;
    for (int r = 0; r < n && !bad; r++) {
        const float *row = lg + (size_t)r * vocab;
        /* reference: k passes of "best after the previous pick" on the host */
        float pv = INFINITY;
        int pi = -1;
        for (int j = 0; j < k; j++) {
            int bi = -1;
            for (int i = 0; i < vocab; i++) {
                int after = row[i] < pv || (row[i] == pv && i > pi);
                if (after && (bi < 0 || row[i] > row[bi])) bi = i;
            }
            if (j == 0 && amh[r] != bi) bad = 1;
            if (idh[(size_t)r * k + j] != bi || vh[(size_t)r * k + j] != row[bi]) bad = 1;
            pv = row[bi], pi = bi;
        }
    }
    c->total++, c->fails += bad;
    printf("%s argmax and top-%d n=%d vocab=%d%s%s\n", bad ? "FAIL" : "ok  ", k, n, vocab, rc ? ": " : "",
           rc ? kern_ctx_error(c->gpu) : "");
    kern_free(c->gpu, ld), kern_free(c->gpu, vd), kern_free(c->gpu, am), kern_free(c->gpu, id);
    free(lg), free(amh), free(idh), free(vh);
}

int main(int argc, char **argv)
{
    uint64_t seed = (uint64_t)time(NULL);
    int threads = 8, bench = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-bench")) bench = 0;
        else return fprintf(stderr, "usage: check_ops [--seed N] [--threads N] [--no-bench]\n"), 2;
    }
    chk c;
    chk_open(&c, seed, threads);
    for (int ti = 0; ti < NTYPES; ti++) {
        int t = types[ti], k = kern_type_block_elems(types[ti]) == 256 ? 1024 : 576;
        check_matmul(&c, t, 1, 333, k, 0, 0);
        check_matmul(&c, t, 3, 64, 2048, 0, 0);
        check_matmul(&c, t, 8, 77, k, 0, 0);
        check_matmul(&c, t, 37, 300, k, 0, 0);
        check_matmul(&c, t, 2, 50, k, 1, 0);
        check_matmul(&c, t, 2, 50, k, 0, 1);
        check_matmul(&c, t, 20, 50, k, 1, 0);
        check_get_rows(&c, t, k);
    }
    /* the quantized matmul for 8 < n <= 64 (cuda_mmq.cu): m not a multiple of its
     * 64-row tile, n on both sides of each dispatch bound and of the 16-row fragments */
    for (int ti = 0; ti < NTYPES; ti++) {
        int t = types[ti], k = kern_type_block_elems(t) == 256 ? 1024 : 576;
        if (is_float(t)) continue;
        static const int mn[] = {9, 16, 31, 32, 33, 64};
        for (int i = 0; i < 6; i++) check_mmq(&c, t, mn[i], 300, k, 0);
        check_matmul(&c, t, 8, 300, k, 0, 0);  /* matvec side of n = 9 */
        check_matmul(&c, t, 65, 300, k, 0, 0); /* cuBLAS side of n = 64 */
        check_matmul(&c, t, 32, 100, k, 1, 0); /* unaligned weights: cuBLAS path */
        check_matmul(&c, t, 32, 100, k, 0, 1); /* x not 16-byte aligned: converted to bf16 first */
        if (t == KERN_TYPE_Q4_0 || t == KERN_TYPE_Q5_0 || t == KERN_TYPE_Q8_0 || t == KERN_TYPE_Q6_K)
            check_mmq(&c, t, 32, 100, k, 2); /* 2-byte aligned blocks stay on the new path */
    }
    check_mmq(&c, KERN_TYPE_Q8_0, 32, 2048, 5632, 0); /* TinyLlama down: split-K, 22 stages */
    check_mmq(&c, KERN_TYPE_Q8_0, 32, 256, 2048, 0);  /* TinyLlama k/v: one stage per split */
    check_mmq(&c, KERN_TYPE_Q8_0, 32, 20000, 640, 0); /* many row blocks, no split, partial last stage */
    check_mmq(&c, KERN_TYPE_Q5_0, 32, 1024, 640, 0);  /* Gemma 270M attn_q */
    check_mmq(&c, KERN_TYPE_Q4_K, 48, 640, 2048, 0);  /* Gemma 270M ffn_down */
    check_mmq(&c, KERN_TYPE_Q6_K, 17, 640, 2048, 0);
    check_matmul(&c, KERN_TYPE_F16, 1, 40, 100, 0, 0); /* float row not a multiple of 32 */
    check_matmul(&c, KERN_TYPE_BF16, 20, 40, 100, 0, 0);
    check_matmul(&c, KERN_TYPE_F32, 3, 40, 100, 0, 0);
    check_matmul(&c, KERN_TYPE_F32, 12, 40, 100, 1, 0); /* float tail at an odd address */
    check_get_rows(&c, KERN_TYPE_F16, 100);
    check_get_rows(&c, KERN_TYPE_F32, 100);
    check_matmul_multi(&c, 1);
    check_matmul_multi(&c, 16);
    for (int op = OP_RMS; op <= OP_SCALE; op++) {
        check_rowop(&c, op, 7, 1000);
        check_rowop(&c, op, 3, 4096);
    }
    check_rowop(&c, OP_RMS, 40, 256); /* QK-norm shape */
    check_rope(&c, KERN_ROPE_NORMAL, 128, 0, 1.0f, 0);
    check_rope(&c, KERN_ROPE_NEOX, 128, 0, 0.25f, 100);
    check_rope(&c, KERN_ROPE_NORMAL, 128, 1, 1.0f, 70000);
    check_rope(&c, KERN_ROPE_NEOX, 64, 0, 1.0f, 5);
    check_attention(&c, KERN_TYPE_F32, 8, 2, 64, 1, 999, 0);
    check_attention(&c, KERN_TYPE_F16, 32, 4, 64, 1, 3000, 0);
    check_attention(&c, KERN_TYPE_F16, 4, 1, 256, 1, 700, 512);
    check_attention(&c, KERN_TYPE_F32, 4, 4, 80, 1, 10, 0);
    check_attention(&c, KERN_TYPE_F16, 8, 2, 128, 5, 60, 16); /* few queries: split kernel */
    check_attention(&c, KERN_TYPE_F32, 8, 2, 128, 37, 5, 0);  /* prompts: tiled kernel */
    check_attention(&c, KERN_TYPE_F16, 4, 1, 256, 300, 400, 128);
    check_attention(&c, KERN_TYPE_F16, 6, 3, 64, 129, 0, 0);
    check_graph(&c, 0, 5);
    check_graph(&c, 8, 40);
    check_bind(&c);
    check_copy(&c);
    check_kv_gather(&c, KERN_TYPE_F32, 2, 64, 16);
    check_kv_gather(&c, KERN_TYPE_F16, 1, 256, 16);
    check_kv_gather(&c, KERN_TYPE_F16, 3, 6, 5); /* rows of 12 bytes: word copies */
    check_paged(&c, KERN_TYPE_F32, 8, 2, 64, 16, 0);
    check_paged(&c, KERN_TYPE_F16, 32, 4, 64, 16, 0);   /* TinyLlama heads */
    check_paged(&c, KERN_TYPE_F16, 4, 1, 256, 16, 20);  /* Gemma heads, window across blocks */
    check_paged(&c, KERN_TYPE_F32, 4, 2, 80, 5, 7);
    check_sampling(&c, 3, 32000, 40);
    check_sampling(&c, 1, 262144, 1);
    check_sampling(&c, 2, 1000, 256);
    if (bench) bench_mmq(&c);
    printf("%d of %d checks failed\n", c.fails, c.total);
    chk_close(&c);
    return c.fails ? 1 : 0;
}
