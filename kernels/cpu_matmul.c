/* cpu_matmul.c: y_i[n][m_i] = x[n][k] . W_i[m_i][k]^T for one or several
 * weights sharing the input x (q/k/v, gate/up). The activations are
 * quantized once per activation format, then one parallel-for runs over the
 * rows of all weights together (one dispatch instead of one per weight).
 * The 4-row kernels (where the ISA has them) take 4 weight rows and up to
 * 4 activation rows at a time. */
#include "kern_cpu.h"

#define DOT4_MAX_ROW_BYTES_DECODE 2048


typedef struct {
    const kern_cpu_fns *f;
    const float *x;
    int n, k, n_ops;
    const kern_matmul_op *ops;
    int64_t start[KERN_MATMUL_MAX_OPS + 1]; /* first global row of each op */
    const uint8_t *xq[KERN_MATMUL_MAX_OPS]; /* activations in each op's format */
    size_t xb[KERN_MATMUL_MAX_OPS];         /* bytes per activation row */
    /* quantization pass: one per distinct activation format */
    int qt;
    void *qdst;
    size_t qxb;
} mm_job;

static void quant_task(void *a, int64_t b, int64_t e, int tid)
{
    (void)tid;
    mm_job *j = a;
    for (int64_t i = b; i < e; i++)
        kern_act_quantize(j->f, j->qt, j->x + i * j->k, (uint8_t *)j->qdst + i * j->qxb, j->k);
}

/* rows [r0, r1) of op o. Groups of 4 weight rows stay in L1 while every
 * activation row passes over them (activations stay in L2), so each weight
 * byte is read from memory once per call whatever n is. */
static void mm_rows(const mm_job *j, int o, int64_t r0, int64_t r1)
{
    const kern_matmul_op *op = &j->ops[o];
    kern_dot_fn dot = j->f->dot[op->wt];
    kern_dot4_fn dot4 = j->f->dot4[op->wt];
    size_t wb = kern_row_bytes(op->wt, j->k), xb = j->xb[o];
    const uint8_t *w = op->w, *xq = j->xq[o];
    int64_t r = r0;
    /* Decode is memory-bound: on long rows the 4-row kernels' four
     * interleaved streams read slower than one row after another (one
     * stream the hardware prefetcher follows), ~6 vs ~11 GB/s for
     * 4096-element Q8_0 rows; on short rows they read as fast and compute
     * faster. Prompts (n > 1) are compute-bound: always 4 rows. */
    if (dot4 && (j->n > 1 || wb < DOT4_MAX_ROW_BYTES_DECODE))
        for (; r + 4 <= r1; r += 4)
            for (int i = 0; i < j->n; i += 4)
                dot4(j->k, w + (size_t)r * wb, wb, xq + (size_t)i * xb, xb, j->n - i < 4 ? j->n - i : 4,
                     op->y + (size_t)i * op->m + r, (size_t)op->m);
    kern_dotx_fn dotx = j->f->dotx[op->wt];
    for (; r < r1; r++) {
        if (dotx && j->n > 1)
            for (int i = 0; i < j->n; i += 4)
                dotx(j->k, w + (size_t)r * wb, xq + (size_t)i * xb, xb, j->n - i < 4 ? j->n - i : 4,
                     op->y + (size_t)i * op->m + r, (size_t)op->m);
        else
            for (int i = 0; i < j->n; i++) op->y[(size_t)i * op->m + r] = dot(j->k, w + (size_t)r * wb, xq + (size_t)i * xb);
    }
}

static void mm_task(void *a, int64_t g0, int64_t g1, int tid)
{
    (void)tid;
    mm_job *j = a;
    for (int o = 0; o < j->n_ops; o++) {
        int64_t b = g0 > j->start[o] ? g0 : j->start[o], e = g1 < j->start[o + 1] ? g1 : j->start[o + 1];
        if (b < e) mm_rows(j, o, b - j->start[o], e - j->start[o]);
    }
}

int kern_cpu_matmul(kern_ctx *ctx, const float *x, int n, int k, const kern_matmul_op *ops, int n_ops)
{
    mm_job j = {.f = kern_cpu(), .x = x, .n = n, .k = k, .n_ops = n_ops, .ops = ops};
    /* quantize x once into each activation format some weight needs */
    static const int fmts[2] = {KERN_TYPE_Q8_0, KERN_ACT_Q8_K};
    size_t off[2], len[2], total = 0;
    for (int f = 0; f < 2; f++) {
        int used = 0;
        for (int o = 0; o < n_ops; o++) used |= kern_act_type(ops[o].wt) == fmts[f];
        off[f] = total;
        len[f] = used ? (size_t)n * kern_act_row_bytes(fmts[f], k) : 0;
        total += len[f];
    }
    uint8_t *buf = NULL;
    if (total && !(buf = kern_scratch(ctx, total))) return KERN_ENOMEM;
    for (int f = 0; f < 2; f++) {
        if (!len[f]) continue;
        j.qt = fmts[f];
        j.qdst = buf + off[f];
        j.qxb = kern_act_row_bytes(fmts[f], k);
        kern_pool_run(ctx->pool, n, 1, quant_task, &j);
    }
    j.start[0] = 0;
    for (int o = 0; o < n_ops; o++) {
        int at = kern_act_type(ops[o].wt), f = at == fmts[0] ? 0 : at == fmts[1] ? 1 : -1;
        j.xq[o] = f < 0 ? (const uint8_t *)x : buf + off[f]; /* float weights read x as it is */
        j.xb[o] = f < 0 ? (size_t)k * sizeof(float) : kern_act_row_bytes(at, k);
        j.start[o + 1] = j.start[o] + ops[o].m;
    }
    /* Enough pieces per thread to balance, few enough to keep dispatch cheap;
     * whole 4-row groups for the 4-row kernels. */
    int64_t rows = j.start[n_ops], grain = rows / ((int64_t)ctx->n_threads * 8) & ~(int64_t)3;
    if (grain < 4) grain = 4;
    kern_pool_run(ctx->pool, rows, grain, mm_task, &j);
    return KERN_OK;
}
