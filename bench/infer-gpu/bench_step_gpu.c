/* bench_step_gpu.c: a Llama decode step written directly against the
 * kernels (random weights made on the host, uploaded per layer), timed three
 * ways on the CUDA backend: issued op by op ("eager"), captured once in a
 * CUDA graph and replayed per token (what infer_eval does on CUDA,
 * inference/model_gpu.c), and a graph of 32 tokens per
 * forward (stand-in for batch 32, attention over one sequence). Before timing,
 * the graph's logits must equal the eager step's bit for bit (same kernels,
 * no atomics): exit 1 otherwise, so this also checks the graph path.
 * Usage: bench_step_gpu --type bf16|q8_0|q4_k|f16 [--label NAME] [--layers N]
 *        [--embd N] [--ff N] [--heads N] [--kv-heads N] [--vocab N] [--steps N] [--header] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu_bw.h"
#include "kern_cuda.h"

typedef struct shape {
    int layers, E, F, H, HKV, D, V, cap, type;
} shape;

typedef struct layer {
    void *wq, *wk, *wv, *wo, *wg, *wu, *wd;
    void *kc, *vc;
} layer;

typedef struct net {
    shape s;
    kern_ctx *kc;
    layer *L;
    void *emb, *out;
    float *norm, *x, *h, *q, *k, *v, *att, *o, *g, *u, *logits;
    int32_t *tok_dev, *pos_dev, *pick_dev;
    kern_kv_layout kv;
    size_t weight_bytes;
} net;

#define CK(call)                                                                   \
    do {                                                                           \
        if ((call) != KERN_OK) {                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, kern_ctx_error(n->kc)); \
            exit(1);                                                               \
        }                                                                          \
    } while (0)

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float unif(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}

/* rows x k random weights of the net's type, uploaded `copies` times */
static void make_weights(net *n, int rows, int k, void **dst, int copies, size_t stride)
{
    float *f = malloc((size_t)rows * k * sizeof *f);
    for (size_t i = 0; i < (size_t)rows * k; i++) f[i] = unif() * 0.05f;
    size_t bytes = kern_row_bytes(n->s.type, k) * rows;
    void *q = malloc(bytes);
    if (!f || !q || kern_quantize(n->s.type, q, f, rows, k, NULL, 0)) fprintf(stderr, "quantize\n"), exit(1);
    for (int c = 0; c < copies; c++) {
        void **d = (void **)((char *)dst + c * stride);
        if (!(*d = kern_alloc(n->kc, bytes))) fprintf(stderr, "alloc: %s\n", kern_ctx_error(n->kc)), exit(1);
        CK(kern_upload(n->kc, *d, q, bytes));
        n->weight_bytes += bytes;
    }
    free(f), free(q);
}

static float *fbuf(net *n, size_t floats)
{
    float *p = kern_alloc(n->kc, floats * sizeof *p);
    if (!p) fprintf(stderr, "alloc: %s\n", kern_ctx_error(n->kc)), exit(1);
    return p;
}

static void build(net *n)
{
    shape *s = &n->s;
    int Q = s->H * s->D, KV = s->HKV * s->D, B = 32;
    n->L = calloc(s->layers, sizeof *n->L);
    size_t st = sizeof(layer);
    make_weights(n, Q, s->E, &n->L[0].wq, s->layers, st);
    make_weights(n, KV, s->E, &n->L[0].wk, s->layers, st);
    make_weights(n, KV, s->E, &n->L[0].wv, s->layers, st);
    make_weights(n, s->E, Q, &n->L[0].wo, s->layers, st);
    make_weights(n, s->F, s->E, &n->L[0].wg, s->layers, st);
    make_weights(n, s->F, s->E, &n->L[0].wu, s->layers, st);
    make_weights(n, s->E, s->F, &n->L[0].wd, s->layers, st);
    make_weights(n, s->V, s->E, &n->emb, 1, 0);
    make_weights(n, s->V, s->E, &n->out, 1, 0);
    n->kv = (kern_kv_layout){KERN_TYPE_F16, s->HKV, s->D, s->cap};
    for (int l = 0; l < s->layers; l++) {
        n->L[l].kc = kern_alloc(n->kc, kern_kv_bytes(&n->kv));
        n->L[l].vc = kern_alloc(n->kc, kern_kv_bytes(&n->kv));
        if (!n->L[l].kc || !n->L[l].vc) fprintf(stderr, "KV alloc: %s\n", kern_ctx_error(n->kc)), exit(1);
    }
    float *ones = malloc((size_t)s->E * sizeof *ones);
    for (int i = 0; i < s->E; i++) ones[i] = 1.0f;
    n->norm = fbuf(n, s->E);
    CK(kern_upload(n->kc, n->norm, ones, (size_t)s->E * sizeof *ones));
    free(ones);
    n->x = fbuf(n, (size_t)B * s->E), n->h = fbuf(n, (size_t)B * s->E), n->o = fbuf(n, (size_t)B * s->E);
    n->q = fbuf(n, (size_t)B * Q), n->att = fbuf(n, (size_t)B * Q);
    n->k = fbuf(n, (size_t)B * KV), n->v = fbuf(n, (size_t)B * KV);
    n->g = fbuf(n, (size_t)B * s->F), n->u = fbuf(n, (size_t)B * s->F);
    n->logits = fbuf(n, (size_t)B * s->V);
    n->tok_dev = kern_alloc(n->kc, B * 4), n->pos_dev = kern_alloc(n->kc, B * 4), n->pick_dev = kern_alloc(n->kc, B * 4);
}

/* One forward of nt tokens whose ids and positions are in tok_dev/pos_dev. */
static void step(net *n, int nt)
{
    shape *s = &n->s;
    int Q = s->H * s->D, KV = s->HKV * s->D;
    kern_rope_params rp = {KERN_ROPE_NORMAL, s->D, 10000.0f, 1.0f, NULL};
    kern_attn_params ap = {nt, s->H, 0, 0, 0, 1.0f / 8};
    CK(kern_cuda_get_rows_dev(n->kc, n->x, n->emb, s->type, s->V, s->E, n->tok_dev, nt));
    for (int l = 0; l < s->layers; l++) {
        layer *L = &n->L[l];
        CK(kern_rmsnorm(n->kc, n->h, n->x, n->norm, nt, s->E, 1e-5f));
        CK(kern_matmul(n->kc, n->q, n->h, L->wq, s->type, nt, Q, s->E));
        CK(kern_matmul(n->kc, n->k, n->h, L->wk, s->type, nt, KV, s->E));
        CK(kern_matmul(n->kc, n->v, n->h, L->wv, s->type, nt, KV, s->E));
        CK(kern_cuda_rope_dev(n->kc, n->q, nt, s->H, s->D, n->pos_dev, &rp));
        CK(kern_cuda_rope_dev(n->kc, n->k, nt, s->HKV, s->D, n->pos_dev, &rp));
        CK(kern_cuda_kv_store_dev(n->kc, L->kc, &n->kv, n->pos_dev, nt, n->k));
        CK(kern_cuda_kv_store_dev(n->kc, L->vc, &n->kv, n->pos_dev, nt, n->v));
        CK(kern_cuda_attention_dev(n->kc, n->att, n->q, L->kc, L->vc, &n->kv, &ap, n->pos_dev));
        CK(kern_matmul(n->kc, n->o, n->att, L->wo, s->type, nt, s->E, Q));
        CK(kern_add(n->kc, n->x, n->x, n->o, (size_t)nt * s->E));
        CK(kern_rmsnorm(n->kc, n->h, n->x, n->norm, nt, s->E, 1e-5f));
        CK(kern_matmul(n->kc, n->g, n->h, L->wg, s->type, nt, s->F, s->E));
        CK(kern_matmul(n->kc, n->u, n->h, L->wu, s->type, nt, s->F, s->E));
        CK(kern_gated(n->kc, n->g, n->g, n->u, (size_t)nt * s->F, KERN_ACT_SILU));
        CK(kern_matmul(n->kc, n->o, n->g, L->wd, s->type, nt, s->E, s->F));
        CK(kern_add(n->kc, n->x, n->x, n->o, (size_t)nt * s->E));
    }
    CK(kern_rmsnorm(n->kc, n->h, n->x, n->norm, nt, s->E, 1e-5f));
    CK(kern_matmul(n->kc, n->logits, n->h, n->out, s->type, nt, s->V, s->E));
    CK(kern_cuda_argmax(n->kc, n->pick_dev, n->logits, nt, s->V));
}

static void set_tokens(net *n, int nt, int pos0)
{
    int32_t tok[32], pos[32];
    for (int i = 0; i < nt; i++) tok[i] = (pos0 * 7919 + i * 104729 + 1) % n->s.V, pos[i] = pos0 + i;
    CK(kern_upload(n->kc, n->tok_dev, tok, nt * 4));
    CK(kern_upload(n->kc, n->pos_dev, pos, nt * 4));
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int parse_type(const char *v)
{
    return !strcmp(v, "bf16") ? KERN_TYPE_BF16 : !strcmp(v, "f16") ? KERN_TYPE_F16 : !strcmp(v, "q8_0") ? KERN_TYPE_Q8_0
           : !strcmp(v, "q4_k") ? KERN_TYPE_Q4_K : -1;
}

int main(int argc, char **argv)
{
    net nn = {0}, *n = &nn;
    n->s = (shape){22, 2048, 5632, 32, 4, 64, 32000, 1024, KERN_TYPE_BF16};
    const char *label = "TinyLlama-1.1B shape";
    int steps = 64, header = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(f, "--header")) { header = 1; continue; }
        i++;
        if (!strcmp(f, "--type")) n->s.type = parse_type(v);
        else if (!strcmp(f, "--label")) label = v;
        else if (!strcmp(f, "--layers")) n->s.layers = atoi(v);
        else if (!strcmp(f, "--embd")) n->s.E = atoi(v);
        else if (!strcmp(f, "--ff")) n->s.F = atoi(v);
        else if (!strcmp(f, "--heads")) n->s.H = atoi(v);
        else if (!strcmp(f, "--kv-heads")) n->s.HKV = atoi(v);
        else if (!strcmp(f, "--vocab")) n->s.V = atoi(v);
        else if (!strcmp(f, "--steps")) steps = atoi(v);
        else n->s.type = -1;
    }
    shape *s = &n->s;
    if (s->type < 0 || s->layers < 1 || s->H < 1 || s->HKV < 1 || s->H % s->HKV || s->E % s->H || steps < 1) {
        fprintf(stderr, "usage: bench_step_gpu --type bf16|f16|q8_0|q4_k [--label NAME] [--layers N] [--embd N] "
                        "[--ff N] [--heads N] [--kv-heads N] [--vocab N] [--steps N] [--header]\n");
        return 2;
    }
    s->D = s->E / s->H;
    s->cap = 32 + steps + 32 * 8 + 64;
    char err[256];
    kern_config cfg = {.backend = KERN_BACKEND_CUDA, .n_threads = 1, .device = 0};
    if (kern_ctx_create(&cfg, &n->kc, err, sizeof err)) return fprintf(stderr, "%s\n", err), 2;
    double bw = gpu_copy_bandwidth();
    build(n);
    int32_t pick = 0;
    /* eager, one token per step, positions 0.. */
    set_tokens(n, 1, 0); /* warm-up: sizes the scratch */
    step(n, 1);
    CK(kern_sync(n->kc));
    double t0 = now();
    for (int i = 1; i <= steps; i++) {
        set_tokens(n, 1, i);
        step(n, 1);
        CK(kern_download(n->kc, &pick, n->pick_dev, 4));
    }
    double eager_ms = (now() - t0) * 1e3 / steps;
    /* graph of the same step; replay at position steps+1 must equal eager there */
    kern_cuda_graph *g1 = NULL, *g32 = NULL;
    CK(kern_cuda_graph_begin(n->kc));
    step(n, 1);
    CK(kern_cuda_graph_end(n->kc, &g1));
    float *le = malloc((size_t)s->V * 4), *lg = malloc((size_t)s->V * 4);
    int p = steps + 1;
    set_tokens(n, 1, p);
    step(n, 1);
    CK(kern_download(n->kc, le, n->logits, (size_t)s->V * 4));
    set_tokens(n, 1, p);
    CK(kern_cuda_graph_launch(n->kc, g1));
    CK(kern_download(n->kc, lg, n->logits, (size_t)s->V * 4));
    int same = memcmp(le, lg, (size_t)s->V * 4) == 0;
    t0 = now();
    for (int i = 0; i < steps; i++) {
        set_tokens(n, 1, p + i);
        CK(kern_cuda_graph_launch(n->kc, g1));
        CK(kern_download(n->kc, &pick, n->pick_dev, 4));
    }
    double graph_ms = (now() - t0) * 1e3 / steps;
    /* 32 tokens per forward, in a graph (cuBLAS path) */
    int p32 = p + steps;
    set_tokens(n, 32, p32);
    step(n, 32);
    CK(kern_sync(n->kc));
    CK(kern_cuda_graph_begin(n->kc));
    step(n, 32);
    CK(kern_cuda_graph_end(n->kc, &g32));
    const int reps = 6;
    t0 = now();
    for (int i = 0; i < reps; i++) {
        set_tokens(n, 32, p32 + 32 * i);
        CK(kern_cuda_graph_launch(n->kc, g32));
        CK(kern_download(n->kc, &pick, n->pick_dev, 4));
    }
    double tps32 = 32.0 * reps / (now() - t0);
    double floor_ms = bw > 0 ? n->weight_bytes / bw * 1e3 : 0;
    char desc[128] = "?";
    kern_cuda_describe(n->kc, desc, sizeof desc);
    if (header)
        printf("device: %s (kernel-level step, random weights, F16 KV)\n\n| model | weights GB | floor ms | eager "
               "ms/token | graph ms/token | graph x floor | graph 32 tok/forward tok/s |\n|---|---|---|---|---|---|---|\n",
               desc);
    printf("| %s %s | %.3f | %.3f | %.3f | %.3f | %.2f | %.0f |\n", label, kern_type_name(s->type),
           n->weight_bytes / 1e9, floor_ms, eager_ms, graph_ms, floor_ms > 0 ? graph_ms / floor_ms : 0, tps32);
    if (!same) fprintf(stderr, "FAIL: graph replay logits differ from the eager step's\n");
    kern_cuda_graph_free(g1), kern_cuda_graph_free(g32);
    free(le), free(lg);
    kern_ctx_destroy(n->kc); /* frees the process's device memory on exit anyway */
    return same ? 0 : 1;
}
