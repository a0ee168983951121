/* cpu_matmul.c: y_i[n][m_i] = x[n][k] . W_i[m_i][k]^T for one or several
 * weights sharing the input x (q/k/v, gate/up). The activations are
 * quantized once per activation format, then one parallel-for runs over the
 * rows of all weights together (one dispatch instead of one per weight).
 * Several activation rows (prompts, batched decode) take the tiled kernels
 * where the ISA has them (kern_gemm_fn: 16 weight rows decoded once, then
 * all activation rows), otherwise the 4-row kernels (4 weight rows and up
 * to 4 activation rows at a time). */
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
    /* tiled kernels: per Q8_0 activation row and block its scale and sum,
     * and one decoded-weight tile per thread */
    kern_gemm_x gx[2]; /* Q8_0, Q8_K */
    float *gd;
    int32_t *gs;
    uint8_t *tiles;
    size_t tile_bytes;
    /* repacked weights (KERN_TYPE_Q4_0_R4) where no kernel reads them as
     * they are: per thread, room for KERN_GEMM_ROWS + 4 rows unpacked back
     * to Q4_0 (mm_rows_r4_unpacked) */
    uint8_t *unpacked;
    size_t unpacked_bytes;
} mm_job;

/* the file type whose kernels serve weight type wt (repacked Q4_0 runs the
 * Q4_0 kernels on rows unpacked where it has no kernel of its own) */
static int mm_base_type(int wt) { return wt == KERN_TYPE_Q4_0_R4 ? KERN_TYPE_Q4_0 : wt; }

static void quant_task(void *a, int64_t b, int64_t e, int tid)
{
    (void)tid;
    mm_job *j = a;
    for (int64_t i = b; i < e; i++) {
        uint8_t *row = (uint8_t *)j->qdst + i * j->qxb;
        kern_act_quantize(j->f, j->qt, j->x + i * j->k, row, j->k);
        if (j->qt != KERN_TYPE_Q8_0 || !j->tiles) continue;
        const kblock_q8_0 *q = (const kblock_q8_0 *)row;
        int nb = j->k / KQK;
        for (int bi = 0; bi < nb; bi++) {
            int32_t sum = 0;
            for (int t = 0; t < KQK; t++) sum += q[bi].qs[t];
            j->gd[i * nb + bi] = kern_f16_to_f32(q[bi].d);
            j->gs[i * nb + bi] = sum;
        }
    }
}

/* Decoding a tile costs about as much as 2 activation rows of the 4-row
 * kernels for the 32-element types and 4-5 for the K-quants (Q6_K the
 * most), so the tiled kernels run from these many activation rows on
 * (both give the same numbers). */
static int gemm_min_rows(int wt) { return kern_act_type(wt) == KERN_ACT_Q8_K ? 6 : 3; }

/* the tiled kernel for weight type wt with n activation rows, or NULL
 * where the 4-row/one-row kernels run */
static kern_gemm_fn mm_gemm_for(const kern_cpu_fns *f, int wt, int n)
{
    wt = mm_base_type(wt);
    return n >= gemm_min_rows(wt) ? f->gemm[wt] : NULL;
}

/* rows [r0, r1) of op o. Tiles of 16 decoded weight rows (tiled kernels)
 * or groups of 4 rows stay in L1/L2 while every activation row passes over
 * them (activations stay in L2), so each weight byte is read from memory
 * once per call whatever n is. */
static void mm_rows(const mm_job *j, int o, const kern_matmul_op *op, int64_t r0, int64_t r1, int tid)
{
    kern_dot_fn dot = j->f->dot[op->wt];
    kern_dot4_fn dot4 = j->f->dot4[op->wt];
    size_t wb = kern_row_bytes(op->wt, j->k), xb = j->xb[o];
    const uint8_t *w = op->w, *xq = j->xq[o];
    int64_t r = r0;
    kern_gemm_fn gemm = j->tiles ? mm_gemm_for(j->f, op->wt, j->n) : NULL;
    if (gemm)
        for (; r + KERN_GEMM_ROWS <= r1; r += KERN_GEMM_ROWS)
            gemm(j->k, w + (size_t)r * wb, wb, &j->gx[kern_act_type(op->wt) == KERN_ACT_Q8_K], j->n, op->y + r, (size_t)op->m,
                 j->tiles + (size_t)tid * j->tile_bytes);
    /* Decode is memory-bound: on long rows the 4-row kernels' four
     * interleaved streams read slower than one row after another (one
     * stream the hardware prefetcher follows), ~6 vs ~11 GB/s for
     * 4096-element Q8_0 rows; on short rows they read as fast and compute
     * faster; where the ISA's 4-row kernel is much faster than its one-row
     * one (dot4_long) it wins on long rows too. Prompts (n > 1) are
     * compute-bound: always 4 rows. */
    if (dot4 && (j->n > 1 || wb < DOT4_MAX_ROW_BYTES_DECODE || j->f->dot4_long[op->wt]))
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

/* rows [r0, r1) of repacked op o unpacked back to Q4_0 and run through
 * mm_rows KERN_GEMM_ROWS at a time from r0, as mm_rows runs Q4_0 weights
 * (tiles, then groups of 4, then single rows from r0), so each row takes the
 * same kernel as it would on the weights as stored in the file. A chunk's
 * unpacked groups start at the group holding its first row: up to
 * KERN_GEMM_ROWS + 4 rows. */
static void mm_rows_r4_unpacked(const mm_job *j, int o, int64_t r0, int64_t r1, int tid)
{
    const kern_matmul_op *op = &j->ops[o];
    const size_t wb = kern_row_bytes(KERN_TYPE_Q4_0, j->k);
    uint8_t *buf = j->unpacked + (size_t)tid * j->unpacked_bytes;
    for (; r0 < r1; r0 += KERN_GEMM_ROWS) {
        int64_t e = r0 + KERN_GEMM_ROWS < r1 ? r0 + KERN_GEMM_ROWS : r1, g = r0 / 4 * 4, ge = (e + 3) / 4 * 4;
        kern_unpack_q4_0_r4(buf, (const uint8_t *)op->w + (size_t)g * wb, ge - g, j->k);
        kern_matmul_op u = {.y = op->y + g, .w = buf, .wt = KERN_TYPE_Q4_0, .m = op->m};
        mm_rows(j, o, &u, r0 - g, e - g, tid);
    }
}

/* rows [r0, r1) of a repacked op (KERN_TYPE_Q4_0_R4; m is a multiple of
 * 4). Decode of whole 4-row groups and the tiles of several activation
 * rows take the ISA's kernels for the layout (bitwise what mm_rows's
 * 4-row and tiled kernels give on Q4_0); everything else (n = 2; rows
 * after the tiles or groups; a range not starting at a group; ISAs without
 * those kernels) is unpacked to Q4_0. So every row's result is bitwise
 * that of the Q4_0 weights. */
static void mm_rows_r4(const mm_job *j, int o, int64_t r0, int64_t r1, int tid)
{
    const kern_matmul_op *op = &j->ops[o];
    const size_t wb = kern_row_bytes(KERN_TYPE_Q4_0, j->k);
    const uint8_t *w = op->w;
    if (j->n == 1 && j->f->dot4_r4 && r0 % 4 == 0)
        for (; r0 + 4 <= r1; r0 += 4) j->f->dot4_r4(j->k, w + (size_t)r0 * wb, wb, j->xq[o], 0, 1, op->y + r0, 0);
    /* tiles where mm_rows would take them on Q4_0 (from r0 on), then the rest */
    if (j->tiles && j->f->gemm_r4 && mm_gemm_for(j->f, KERN_TYPE_Q4_0, j->n) && r0 % 4 == 0)
        for (; r0 + KERN_GEMM_ROWS <= r1; r0 += KERN_GEMM_ROWS)
            j->f->gemm_r4(j->k, w + (size_t)r0 * wb, wb, &j->gx[0], j->n, op->y + r0, (size_t)op->m,
                          j->tiles + (size_t)tid * j->tile_bytes);
    if (r0 < r1) mm_rows_r4_unpacked(j, o, r0, r1, tid);
}

static void mm_task(void *a, int64_t g0, int64_t g1, int tid)
{
    mm_job *j = a;
    for (int o = 0; o < j->n_ops; o++) {
        int64_t b = g0 > j->start[o] ? g0 : j->start[o], e = g1 < j->start[o + 1] ? g1 : j->start[o + 1];
        if (b >= e) continue;
        if (j->ops[o].wt == KERN_TYPE_Q4_0_R4)
            mm_rows_r4(j, o, b - j->start[o], e - j->start[o], tid);
        else
            mm_rows(j, o, &j->ops[o], b - j->start[o], e - j->start[o], tid);
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
        for (int o = 0; o < n_ops; o++) used |= kern_act_type(mm_base_type(ops[o].wt)) == fmts[f];
        off[f] = total;
        len[f] = used ? (size_t)n * kern_act_row_bytes(fmts[f], k) : 0;
        total += len[f];
    }
    /* tiled kernels: block scales and sums of the Q8_0 rows, tiles */
    int tiled = 0;
    for (int o = 0; o < n_ops; o++) tiled |= mm_gemm_for(j.f, ops[o].wt, n) != NULL;
    size_t gsz = 0, tiles_off = 0;
    if (tiled) {
        total = (total + 63) & ~(size_t)63;
        gsz = ((size_t)n * (k / KQK) * sizeof(float) + 63) & ~(size_t)63;
        j.tile_bytes = kern_gemm_tile_bytes(k);
        tiles_off = total + 2 * gsz;
        total = tiles_off + (size_t)ctx->n_threads * j.tile_bytes;
    }
    /* repacked weights: rows unpacked back to Q4_0 (mm_rows_r4_unpacked) */
    int repacked = 0;
    for (int o = 0; o < n_ops; o++) repacked |= ops[o].wt == KERN_TYPE_Q4_0_R4;
    size_t unpacked_off = 0;
    if (repacked) {
        total = (total + 63) & ~(size_t)63;
        unpacked_off = total;
        j.unpacked_bytes = (KERN_GEMM_ROWS + 4) * kern_row_bytes(KERN_TYPE_Q4_0, k);
        total += (size_t)ctx->n_threads * j.unpacked_bytes;
    }
    uint8_t *buf = NULL;
    if (total && !(buf = kern_scratch(ctx, total))) return KERN_ENOMEM;
    if (j.unpacked_bytes) j.unpacked = buf + unpacked_off;
    if (tiled) {
        j.gd = (float *)(buf + tiles_off - 2 * gsz);
        j.gs = (int32_t *)(buf + tiles_off - gsz);
        j.tiles = buf + tiles_off;
        j.gx[0] = (kern_gemm_x){.q = buf + off[0], .qs = kern_act_row_bytes(KERN_TYPE_Q8_0, k), .d = j.gd, .s = j.gs};
        j.gx[1] = (kern_gemm_x){.q = buf + off[1], .qs = kern_act_row_bytes(KERN_ACT_Q8_K, k)};
    }
    for (int f = 0; f < 2; f++) {
        if (!len[f]) continue;
        j.qt = fmts[f];
        j.qdst = buf + off[f];
        j.qxb = kern_act_row_bytes(fmts[f], k);
        kern_pool_run(ctx->pool, n, 1, quant_task, &j);
    }
    j.start[0] = 0;
    for (int o = 0; o < n_ops; o++) {
        int at = kern_act_type(mm_base_type(ops[o].wt)), f = at == fmts[0] ? 0 : at == fmts[1] ? 1 : -1;
        j.xq[o] = f < 0 ? (const uint8_t *)x : buf + off[f]; /* float weights read x as it is */
        j.xb[o] = f < 0 ? (size_t)k * sizeof(float) : kern_act_row_bytes(at, k);
        j.start[o + 1] = j.start[o] + ops[o].m;
    }
    /* Enough pieces per thread to balance, few enough to keep dispatch cheap;
     * whole tiles for the tiled kernels, whole 4-row groups for the 4-row
     * kernels. */
    int64_t unit = tiled ? KERN_GEMM_ROWS : 4, rows = j.start[n_ops],
            grain = rows / ((int64_t)ctx->n_threads * 8) / unit * unit;
    if (grain < unit) grain = unit;
    kern_pool_run(ctx->pool, rows, grain, mm_task, &j);
    return KERN_OK;
}
