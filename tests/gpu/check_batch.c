/* check_batch.c: the batched step (inference/batch.c) on CUDA against the CPU, on one
 * GGUF (tests/gpu/check.sh makes synthetic ones on the GPU machine).
 *
 * Three sides run the same plan of steps over NSEQ sequences of different lengths
 * (16-position blocks: decoding crosses block boundaries; one prompt is longer than
 * the default sliding window of 512, so on a Gemma 3 shape its local layers see a
 * window that starts mid-table):
 *   cpu:   the CPU backend's per-sequence path, the reference;
 *   graph: CUDA, decode-only steps replayed from CUDA graphs (one per n);
 *   eager: CUDA with COMMONS_CUDA_GRAPH=0, the same kernels launched one by one.
 * The plan: two prefill steps (the second mixes a prompt's tail with a decoding
 * sequence: the eager paged path), then decode-only steps of all NSEQ sequences
 * (n = 10: the quantized batched matmul (cuda_mmq.cu) for quantized weights, cuBLAS for
 * BF16), of 3 of them (n = 3: the matvec path), and
 * of all again (the first graph replayed at new positions). Each sequence's next
 * token is the CPU's greedy pick, fed to all sides.
 * First, at kernel level, kern_cuda_kv_store_paged_kv + kern_cuda_attention_paged_dev
 * (what the decode step stores and attends with) against the CPU's kern_kv_store_paged
 * + kern_attention_paged: rows at positions on both sides of block boundaries, one row
 * with position -1 (must stay untouched), table entries past a row's blocks set to
 * invalid ids (must never be read), with and without a window, few heads (keys split,
 * merged by a second kernel) and many (one block per query-head, merged in place).
 * Then the model:
 * Checked: every logits row of graph within --bound of the CPU (rel.err = max|g - c| /
 * max|c| over the row); graph and eager logits equal bit for bit; the host buffers
 * the GPU steps download into are poisoned with NaN before each step and no
 * non-finite logit passes; graph replayed every decode step but the first of each n
 * (2 captures) and eager never replayed; then candidates (infer_batch_set_top) are
 * exactly each row's best logits (check_top).
 * Usage: check_gpu_batch MODEL.gguf [--kv f16] [--threads N] [--bound B] [--long N]
 * Exit status: 0 all passed, 1 a failure, 2 usage or no CUDA device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "check_common.h"
#include "model.h"
#include "paged_kv.h"
#include "sampler.h"

#define NSEQ 10
#define BT 16

enum { CPU, GRAPH, EAGER, NSIDE };
static const char *side_name[NSIDE] = {"cpu", "graph", "eager"};

typedef struct side {
    infer_paged_kv kv;
    infer_batch *b;
    infer_block_table bt[NSEQ];
} side;

typedef struct plan {
    int len[NSEQ];     /* prompt lengths */
    int past[NSEQ];    /* positions in every side's cache */
    int32_t *toks[NSEQ];
    int V;
    double bound, worst;
    int rows, top1_same, fails;
} plan;

#define FAILF(pl, ...) do { (pl)->fails++; printf("FAIL "); printf(__VA_ARGS__); printf("\n"); } while (0)

/* One step: sequence i takes n[i] tokens from past[i] on (0: not in this step). */
static int step(plan *pl, side *sd, const int *n, const char *what)
{
    infer_batch_seq seqs[NSIDE][NSEQ];
    int ns = 0, want[NSEQ];
    char err[512];
    for (int i = 0; i < NSEQ; i++) {
        if (!n[i]) continue;
        bool last = pl->past[i] + n[i] >= pl->len[i]; /* logits once its prompt is in */
        for (int k = 0; k < NSIDE; k++) {
            if (infer_pkv_reserve(&sd[k].kv, &sd[k].bt[i], pl->past[i] + n[i])) {
                FAILF(pl, "%s: %s: the KV pool is too small", what, side_name[k]);
                return 1;
            }
            seqs[k][ns] = (infer_batch_seq){&sd[k].bt[i], pl->past[i], pl->toks[i] + pl->past[i], n[i], last};
        }
        want[ns++] = last ? i : -1;
    }
    const float *lg[NSIDE];
    int rows[NSIDE];
    for (int k = 0; k < NSIDE; k++) {
        if (k != CPU) { /* poison what the step downloads into */
            int r;
            float *h = (float *)infer_batch_logits(sd[k].b, &r);
            for (size_t j = 0; j < (size_t)NSEQ * pl->V; j++) h[j] = NAN;
        }
        if (k == EAGER) setenv("COMMONS_CUDA_GRAPH", "0", 1);
        int rc = infer_batch_step(sd[k].b, seqs[k], ns, err, sizeof err);
        if (k == EAGER) unsetenv("COMMONS_CUDA_GRAPH");
        if (rc) {
            FAILF(pl, "%s: %s step: %s", what, side_name[k], err);
            return 1;
        }
        lg[k] = infer_batch_logits(sd[k].b, &rows[k]);
    }
    if (rows[GRAPH] != rows[CPU] || rows[EAGER] != rows[CPU]) {
        FAILF(pl, "%s: logit rows cpu %d graph %d eager %d", what, rows[CPU], rows[GRAPH], rows[EAGER]);
        return 1;
    }
    size_t row_bytes = (size_t)pl->V * sizeof(float);
    for (int s = 0, r = 0; s < ns; s++) {
        if (want[s] < 0) continue;
        const float *c = lg[CPU] + (size_t)r * pl->V, *g = lg[GRAPH] + (size_t)r * pl->V;
        double emax = 0, rmax = 0;
        int bad = 0, gb = 0, cb = 0;
        for (int j = 0; j < pl->V; j++) {
            if (!isfinite(g[j])) bad++;
            double e = fabs((double)g[j] - c[j]);
            emax = e > emax ? e : emax;
            rmax = fabs(c[j]) > rmax ? fabs(c[j]) : rmax;
            gb = g[j] > g[gb] ? j : gb;
            cb = c[j] > c[cb] ? j : cb;
        }
        double rel = emax / (rmax > 1e-30 ? rmax : 1e-30);
        pl->worst = rel > pl->worst ? rel : pl->worst;
        pl->rows++;
        pl->top1_same += gb == cb;
        if (bad || !(rel <= pl->bound))
            FAILF(pl, "%s: sequence %d (position %d): graph vs cpu rel.err %.3g (bound %.0e)%s", what, want[s],
                  pl->past[want[s]] + n[want[s]] - 1, rel, pl->bound, bad ? ", NON-FINITE logits" : "");
        if (memcmp(g, lg[EAGER] + (size_t)r * pl->V, row_bytes))
            FAILF(pl, "%s: sequence %d: graph and eager (COMMONS_CUDA_GRAPH=0) logits differ", what, want[s]);
        /* the CPU's greedy pick is every side's next token */
        int i = want[s];
        if (pl->past[i] + n[i] < pl->len[i] + 64) pl->toks[i][pl->past[i] + n[i]] = cb;
        r++;
    }
    for (int i = 0; i < NSEQ; i++) pl->past[i] += n[i];
    return 0;
}

static const float *sort_ref;

/* Descending value, then ascending id: the order infer_batch_top promises. */
static int by_value(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (sort_ref[i] != sort_ref[j]) return sort_ref[i] > sort_ref[j] ? -1 : 1;
    return (i > j) - (i < j);
}

/* Candidates (infer_batch_set_top) on the graph side: the decode step of every sequence
 * at its current position is run once for its logits and again (same tokens, same
 * positions: the same K/V rewritten to the same slots, so the same logits) for k
 * candidates per row, which must be exactly the row's k best by (value descending,
 * id ascending), values bit for bit; the step then gives no logits. Also the limits
 * of set_top. Does not advance the plan. */
static void check_top(plan *pl, side *sd)
{
    infer_batch *b = sd[GRAPH].b;
    infer_batch_seq seqs[NSEQ];
    char err[512];
    int ns = 0;
    for (int i = 0; i < NSEQ; i++) {   /* a sequence at a block boundary needs one more block */
        if (infer_pkv_reserve(&sd[GRAPH].kv, &sd[GRAPH].bt[i], pl->past[i] + 1)) {
            FAILF(pl, "top: the KV pool is too small");
            return;
        }
        seqs[ns++] = (infer_batch_seq){&sd[GRAPH].bt[i], pl->past[i], pl->toks[i] + pl->past[i], 1, true};
    }
    size_t LV = (size_t)ns * pl->V;
    float *ref = malloc(LV * sizeof *ref);
    int *ord = malloc((size_t)pl->V * sizeof *ord);
    if (!ref || !ord) { FAILF(pl, "top: out of memory"); free(ref); free(ord); return; }
    if (infer_batch_set_top(b, INFER_SAMPLER_TOP_MAX + 1, err, sizeof err) != INFER_EINVAL)
        FAILF(pl, "top: set_top(%d) was not refused", INFER_SAMPLER_TOP_MAX + 1);
    static const int ks[] = {1, 40, INFER_SAMPLER_TOP_MAX};
    for (size_t t = 0; t < sizeof ks / sizeof *ks; t++) {
        int k = ks[t], rows = 0, tk = 0;
        const int32_t *ids = NULL;
        if (infer_batch_set_top(b, 0, err, sizeof err) || infer_batch_step(b, seqs, ns, err, sizeof err)) {
            FAILF(pl, "top k=%d: logits step: %s", k, err);
            break;
        }
        memcpy(ref, infer_batch_logits(b, &rows), LV * sizeof *ref);
        if (infer_batch_set_top(b, k, err, sizeof err) || infer_batch_step(b, seqs, ns, err, sizeof err)) {
            FAILF(pl, "top k=%d: candidates step: %s", k, err);
            break;
        }
        const float *vals = infer_batch_top(b, &ids, &rows, &tk);
        if (!vals || rows != ns || tk != k || infer_batch_logits(b, &rows)) {
            FAILF(pl, "top k=%d: the step gave %s (%d rows of %d)", k, vals ? "candidates and logits" : "no candidates",
                  rows, tk);
            continue;
        }
        int bad = 0;
        for (int r = 0; r < ns; r++) {
            sort_ref = ref + (size_t)r * pl->V;
            for (int j = 0; j < pl->V; j++) ord[j] = j;
            qsort(ord, (size_t)pl->V, sizeof *ord, by_value);
            for (int j = 0; j < k; j++)
                bad += ids[r * k + j] != ord[j] ||
                       memcmp(&vals[r * k + j], &sort_ref[ord[j]], sizeof(float)) != 0;
        }
        if (bad)
            FAILF(pl, "top k=%d: %d of %d candidates differ from the row's best", k, bad, ns * k);
    }
    infer_batch_set_top(b, 0, err, sizeof err);
    free(ref);
    free(ord);
}

/* kern_cuda_attention_paged_dev vs kern_attention_paged (CPU) on rows of positions
 * pos[] (-1: no sequence) over random pools of n_pool blocks; tables of MB entries per
 * row, those past a row's blocks invalid. */
static void check_paged_dev(chk *c, int kvt, int hd, int window, int NH)
{
    enum { R = 6, MB = 24, BTK = 16, NPOOL = 48, HKV = 2 };
    static const int pos[R] = {0, 15, -1, 16, 200, 383};
    kern_kv_layout blk = {kvt, HKV, hd, BTK};
    size_t pb = kern_kv_bytes(&blk) * NPOOL, KVR = (size_t)HKV * hd, QR = (size_t)NH * hd;
    int n_slots = NPOOL * BTK, rcc = 0, rcg = 0;
    /* pools: every slot of K and V from random rows, through kv_store_paged on the CPU
     * and the one-launch K+V store (what the decode step uses) on the GPU */
    float *kv = malloc((size_t)n_slots * KVR * 4), *vv = malloc((size_t)n_slots * KVR * 4);
    int32_t *slots = malloc((size_t)n_slots * 4);
    chk_fill(c, kv, (size_t)n_slots * KVR, 1.0f), chk_fill(c, vv, (size_t)n_slots * KVR, 1.0f);
    for (int i = 0; i < n_slots; i++) slots[i] = i;
    void *kp = kern_alloc(c->cpu, pb), *vp = kern_alloc(c->cpu, pb);
    void *kpd = chk_dev(c, NULL, pb), *vpd = chk_dev(c, NULL, pb);
    float *kd = chk_dev(c, kv, (size_t)n_slots * KVR * 4), *vd = chk_dev(c, vv, (size_t)n_slots * KVR * 4);
    rcc |= kern_kv_store_paged(c->cpu, kp, &blk, NPOOL, slots, n_slots, kv) |
           kern_kv_store_paged(c->cpu, vp, &blk, NPOOL, slots, n_slots, vv);
    rcg |= kern_cuda_kv_store_paged_kv(c->gpu, kpd, vpd, &blk, NPOOL, slots, n_slots, kd, vd);
    /* the descriptor: meta (position, table offset, blocks) and tables, as batch.c writes them */
    int32_t meta[3 * R], tabs[R * MB];
    kern_paged_seq sq[R];
    int ns = 0;
    for (int r = 0; r < R; r++) {
        int nb = pos[r] < 0 ? 0 : pos[r] / BTK + 1;
        for (int i = 0; i < MB; i++) tabs[r * MB + i] = i < nb ? (int32_t)((r + R * i) * 7 % NPOOL) : NPOOL + 7;
        meta[3 * r] = pos[r], meta[3 * r + 1] = r * MB, meta[3 * r + 2] = nb;
        if (pos[r] >= 0) sq[ns++] = (kern_paged_seq){r, 1, pos[r], tabs + r * MB};
    }
    int32_t *metad = chk_dev(c, meta, sizeof meta), *tabd = chk_dev(c, tabs, sizeof tabs);
    float *q = malloc((size_t)R * QR * 4), *oc = malloc((size_t)R * QR * 4), *og = malloc((size_t)R * QR * 4);
    chk_fill(c, q, (size_t)R * QR, 1.0f);
    for (size_t i = 0; i < (size_t)R * QR; i++) oc[i] = NAN;
    float *qd = chk_dev(c, q, (size_t)R * QR * 4), *od = chk_dev(c, NULL, (size_t)R * QR * 4);
    chk_poison(c, od, (size_t)R * QR);
    float scale = 1.0f / sqrtf((float)hd);
    rcc |= kern_attention_paged(c->cpu, oc, q, kp, vp, &blk, NPOOL, sq, ns, NH, window, scale);
    rcg |= kern_cuda_attention_paged_dev(c->gpu, od, qd, kpd, vpd, &blk, NPOOL, metad, tabd, MB, R, NH, window, scale);
    char name[128];
    for (int r = 0; r < R; r++) {
        if (pos[r] < 0) continue;
        snprintf(name, sizeof name, "attention_paged_dev %s h=%d hd=%d win=%d row at %d", kern_type_name(kvt), NH, hd,
                 window, pos[r]);
        chk_cmp(c, name, od + (size_t)r * QR, oc + (size_t)r * QR, QR, 1e-4, rcg, rcc);
    }
    /* the row without a sequence keeps its poison */
    int bad = rcg || kern_download(c->gpu, og, od, (size_t)R * QR * 4);
    for (size_t i = 0; !bad && i < QR; i++) bad = !isnan(og[2 * QR + i]);
    c->total++, c->fails += bad;
    printf("%s attention_paged_dev %s h=%d hd=%d win=%d: a row at position -1 left untouched\n",
           bad ? "FAIL" : "ok  ", kern_type_name(kvt), NH, hd, window);
    kern_free(c->cpu, kp), kern_free(c->cpu, vp);
    void *dev[] = {kpd, vpd, kd, vd, metad, tabd, qd, od};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) kern_free(c->gpu, dev[i]);
    free(kv), free(vv), free(slots), free(q), free(oc), free(og);
}

static int open_side(side *sd, infer_model *m, kern_ctx *kc, int n_ctx, int kv_type, char *err, size_t errlen)
{
    const infer_hparams *hp = infer_model_hparams(m);
    int per_seq = (n_ctx + BT - 1) / BT;
    /* the first prefill step: half the long prompt + 218 tokens of the others */
    infer_batch_params p = {.max_tokens = n_ctx + 256, .max_logits = NSEQ, .n_ctx = n_ctx};
    return infer_pkv_init(&sd->kv, kc, hp->n_layer, hp->n_head_kv, hp->head_dim, BT, NSEQ * per_seq + 2, kv_type,
                          err, errlen) ||
           infer_batch_create(m, kc, &sd->kv, &p, &sd->b, err, errlen);
}

static void close_side(side *sd)
{
    infer_batch_free(sd->b);
    for (int i = 0; i < NSEQ; i++) infer_pkv_release(&sd->kv, &sd->bt[i]);
    if (sd->kv.n_blocks) infer_pkv_free(&sd->kv);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: check_gpu_batch MODEL.gguf [--kv f16] [--threads N] [--bound B] [--long N]\n");
        return 2;
    }
    const char *path = argv[1];
    int threads = 8, kv_type = KERN_TYPE_F32, longest = 530;
    plan pl = {.bound = 5e-2, .len = {3, 17, 31, 40, 0, 5, 16, 33, 64, 9}};
    for (int i = 2; i < argc; i += 2) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return fprintf(stderr, "check_gpu_batch: %s needs a value\n", f), 2;
        if (!strcmp(f, "--kv") && (!strcmp(v, "f16") || !strcmp(v, "f32")))
            kv_type = !strcmp(v, "f16") ? KERN_TYPE_F16 : KERN_TYPE_F32;
        else if (!strcmp(f, "--threads")) threads = atoi(v);
        else if (!strcmp(f, "--bound")) pl.bound = atof(v);
        else if (!strcmp(f, "--long")) longest = atoi(v);
        else return fprintf(stderr, "check_gpu_batch: unknown option %s\n", f), 2;
    }
    if (threads < 1 || !(pl.bound > 0) || longest < 128 || longest > 1024)
        return fprintf(stderr, "check_gpu_batch: --threads >= 1, --bound > 0, --long in [128, 1024]\n"), 2;
    pl.len[4] = longest;
    unsetenv("COMMONS_CUDA_GRAPH"); /* the graph side must use graphs */
    char err[512];
    kern_ctx *kc[2] = {NULL, NULL};
    infer_model *m[2] = {NULL, NULL};
    /* the CPU side first: without a GPU (check.sh --dry-run) the model is still loaded
     * and checked before the exit status 2 "no CUDA device" */
    for (int k = 0; k < 2; k++) {
        kern_config cfg = {.backend = k ? KERN_BACKEND_CUDA : KERN_BACKEND_CPU, .n_threads = k ? 1 : threads};
        if (kern_ctx_create(&cfg, &kc[k], err, sizeof err)) return fprintf(stderr, "%s\n", err), k ? 2 : 1;
        if (infer_model_load(path, kc[k], NULL, NULL, &m[k], err, sizeof err))
            return fprintf(stderr, "%s backend: %s\n", k ? "CUDA" : "CPU", err), 1;
    }
    chk kc_chk = {.cpu = kc[0], .gpu = kc[1], .rng = 88172645463325252ull};
    /* 8 heads: keys split over several blocks + merge; 64 heads (384 query-heads, more
     * than twice the SMs of an H100/H200): one block per query-head merging itself */
    for (int t = 0; t < 2; t++)
        for (int w = 0; w < 2; w++)
            for (int h = 8; h <= 64; h *= 8)
                check_paged_dev(&kc_chk, t ? KERN_TYPE_F16 : KERN_TYPE_F32, t ? 256 : 64, w * 100, h);
    pl.fails += kc_chk.fails;
    const infer_hparams *hp = infer_model_hparams(m[0]);
    pl.V = hp->n_vocab;
    int n_ctx = longest + 40;
    if (n_ctx > hp->n_ctx_train) return fprintf(stderr, "check_gpu_batch: the model's context is too short\n"), 1;
    uint64_t rng = 12345;
    for (int i = 0; i < NSEQ; i++) {
        pl.toks[i] = malloc((size_t)(pl.len[i] + 64) * sizeof(int32_t));
        for (int j = 0; j < pl.len[i]; j++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            pl.toks[i][j] = (int32_t)((rng >> 33) % (uint64_t)pl.V);
        }
    }
    side sd[NSIDE];
    memset(sd, 0, sizeof sd);
    for (int k = 0; k < NSIDE; k++)
        if (open_side(&sd[k], m[k != CPU], kc[k != CPU], n_ctx, kv_type, err, sizeof err))
            return fprintf(stderr, "%s side: %s\n", side_name[k], err), 1;

    /* prefill: every prompt but the long one's second half; then its second half
     * with sequence 0 decoding (a mixed step) */
    int n[NSEQ];
    for (int i = 0; i < NSEQ; i++) n[i] = i == 4 ? longest / 2 : pl.len[i];
    int rc = step(&pl, sd, n, "prefill 1");
    for (int i = 0; i < NSEQ; i++) n[i] = i == 4 ? longest - longest / 2 : i == 0;
    if (!rc) rc = step(&pl, sd, n, "prefill 2 (mixed)");
    /* decode-only: all (n = 10), 3 of them (n = 3), all again */
    static const int phase_steps[3] = {5, 4, 3};
    int decode_steps = 0;
    for (int ph = 0; ph < 3 && !rc; ph++)
        for (int s = 0; s < phase_steps[ph] && !rc; s++) {
            char what[64];
            for (int i = 0; i < NSEQ; i++) n[i] = ph != 1 || (i % 2 == 0 && i <= 4); /* phase 1: 0, 2, 4 */
            snprintf(what, sizeof what, "decode phase %d step %d", ph, s);
            rc = step(&pl, sd, n, what);
            decode_steps++;
        }
    infer_batch_stats st[NSIDE];
    for (int k = 0; k < NSIDE; k++) infer_batch_get_stats(sd[k].b, &st[k]);
    if (!rc) {
        /* graph: the first step of each n eager then captured, every other one replayed */
        if (st[GRAPH].captured != 2 || st[GRAPH].eager != 2 || st[GRAPH].replayed != decode_steps - 2)
            FAILF(&pl, "graph side: %ld replayed, %ld eager, %ld captured; want %d, 2, 2 (a failed capture says "
                  "why on stderr)", st[GRAPH].replayed, st[GRAPH].eager, st[GRAPH].captured, decode_steps - 2);
        if (st[EAGER].replayed || st[EAGER].captured || st[EAGER].eager != decode_steps)
            FAILF(&pl, "eager side: %ld replayed, %ld eager, %ld captured; want 0, %d, 0", st[EAGER].replayed,
                  st[EAGER].eager, st[EAGER].captured, decode_steps);
        if (st[CPU].replayed || st[CPU].eager || st[CPU].captured) FAILF(&pl, "cpu side counted CUDA steps");
        check_top(&pl, sd);
    }
    int fail = rc || pl.fails;
    printf("%s %s: %s L=%d window %d, kv %s, %d sequences (longest %d), %d decode steps (n = 10, 3, 10): "
           "%d rows, worst graph vs cpu rel.err %.2e (bound %.0e), top-1 same %d/%d, graph == eager bitwise %s; "
           "graph side %ld replayed / %ld eager / %ld captured\n",
           fail ? "FAIL" : "ok  ", path, hp->arch_name, hp->n_layer, hp->sliding_window,
           kv_type == KERN_TYPE_F16 ? "f16" : "f32", NSEQ, longest, decode_steps, pl.rows, pl.worst, pl.bound,
           pl.top1_same, pl.rows, fail ? "(see above)" : "yes", st[GRAPH].replayed, st[GRAPH].eager,
           st[GRAPH].captured);
    for (int k = 0; k < NSIDE; k++) close_side(&sd[k]);
    for (int k = 0; k < 2; k++) infer_model_free(m[k]), kern_ctx_destroy(kc[k]);
    for (int i = 0; i < NSEQ; i++) free(pl.toks[i]);
    return fail;
}
