/* dist_mpi.c: dist.h over MPI — the hooks of the layer graph, the step descriptor
 * rank 0 sends to the workers, pipeline micro-batches.
 *
 * MPI errors are fatal (MPI_ERRORS_ARE_FATAL, the default), so every MPI call either
 * succeeds or ends the job; a rank that dies makes mpirun end the others.
 *
 * Step descriptor (int32, rank 0 -> every worker, tag TAG_STEP):
 *   op (OP_STEP | OP_STOP), n_seqs, then per sequence
 *   n_past, n_tokens, logits, n_blocks, tokens[n_tokens], block ids[n_blocks].
 * Workers wait for it with MPI_Iprobe and short sleeps once idle for IDLE_SPIN_S,
 * so an idle service does not keep cores busy in MPI's polling. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist.h"
#include "model_internal.h"

#define FAIL(code, ...) do { snprintf(err, errlen, __VA_ARGS__); return (code); } while (0)

enum { TAG_STEP = 1, TAG_X = 2, TAG_LOGITS = 3 };
enum { OP_STEP = 1, OP_STOP = 2 };
#define IDLE_SPIN_S 0.005
#define IDLE_SLEEP_NS 200000L

struct infer_dist {
    MPI_Comm comm;
    int kind, rank, size;
    bool inited;               /* we called MPI_Init_thread (so we finalize) */
    infer_dist_hooks hooks;
    const infer_model *m;      /* the shard attached by infer_dist_load */
    infer_dist_stats st;
    float *host;               /* staging for non-host backends */
    size_t host_cap;
    float *tmp;                /* rank 0: another rank's logits */
    size_t tmp_cap;
    /* pipeline */
    int micro;                 /* micro-batches per step */
    bool defer;                /* inside a pipelined step: rank 0 receives logits async */
    float *lg;                 /* rank 0: the step's logits, [lg_rows][V] */
    size_t lg_cap;
    int lg_rows, lg_off;
    MPI_Request *lgreq;
    int n_lgreq, cap_lgreq;
    infer_batch_seq *piece;    /* the step cut into micro-batches */
    size_t piece_cap;
    /* step descriptors */
    int32_t *desc;
    size_t desc_cap;
    infer_batch_seq *wseq;
    infer_block_table *wbt;
    int wcap;
};

static double now_s(void) { return MPI_Wtime(); }

static void account(infer_dist *d, double t0, size_t bytes)
{
    d->st.comm_s += now_s() - t0;
    d->st.calls++;
    d->st.bytes += bytes;
}

static int grow(void **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    void *q = realloc(*p, need);
    if (!q)
        return -1;
    *p = q;
    *cap = need;
    return 0;
}

/* Backend memory <-> a host buffer for MPI (no copy for host-memory backends). */
static float *stage_in(infer_dist *d, kern_ctx *kc, const float *dev, size_t n, bool copy)
{
    if (kern_ctx_host_memory(kc))
        return (float *)dev;
    if (grow((void **)&d->host, &d->host_cap, n * sizeof(float)))
        return NULL;
    if (copy && kern_download(kc, d->host, dev, n * sizeof(float)) != KERN_OK)
        return NULL;
    return d->host;
}

static int stage_out(kern_ctx *kc, float *dev, const float *host, size_t n)
{
    if (host == dev)
        return KERN_OK;
    return kern_upload(kc, dev, host, n * sizeof(float));
}

#define STAGE_FAIL() FAIL(INFER_ENOMEM, "distributed step: cannot stage %zu floats through " \
                          "host memory: %s", n, kern_ctx_error(kc))

/* ---- hooks ---- */

static int hook_allreduce(void *ud, kern_ctx *kc, float *y, int rows, int E, char *err,
                          size_t errlen)
{
    infer_dist *d = ud;
    size_t n = (size_t)rows * E;
    float *h = stage_in(d, kc, y, n, true);
    if (!h)
        STAGE_FAIL();
    double t0 = now_s();
    MPI_Allreduce(MPI_IN_PLACE, h, (int)n, MPI_FLOAT, MPI_SUM, d->comm);
    account(d, t0, n * sizeof(float));
    if (stage_out(kc, y, h, n) != KERN_OK)
        STAGE_FAIL();
    return INFER_OK;
}

static int hook_recv_x(void *ud, kern_ctx *kc, float *x, int rows, int E, char *err,
                       size_t errlen)
{
    infer_dist *d = ud;
    size_t n = (size_t)rows * E;
    float *h = stage_in(d, kc, x, n, false);
    if (!h)
        STAGE_FAIL();
    double t0 = now_s();
    MPI_Recv(h, (int)n, MPI_FLOAT, d->rank - 1, TAG_X, d->comm, MPI_STATUS_IGNORE);
    account(d, t0, n * sizeof(float));
    if (stage_out(kc, x, h, n) != KERN_OK)
        STAGE_FAIL();
    return INFER_OK;
}

/* A blocking send: the next stage is normally already waiting in its receive, so it
 * returns at once. (An MPI_Isend would not overlap anything: without a progress thread
 * a rendezvous transfer only advances inside MPI calls, and this rank is computing the
 * next micro-batch meanwhile.) */
static int hook_send_x(void *ud, kern_ctx *kc, const float *x, int rows, int E, char *err,
                       size_t errlen)
{
    infer_dist *d = ud;
    size_t n = (size_t)rows * E;
    const float *h = stage_in(d, kc, x, n, true);
    if (!h)
        STAGE_FAIL();
    double t0 = now_s();
    MPI_Send(h, (int)n, MPI_FLOAT, d->rank + 1, TAG_X, d->comm);
    account(d, t0, n * sizeof(float));
    return INFER_OK;
}

/* Rank 0 receives the logits; the last stage (which computed them) sends them. */
static int hook_head(void *ud, kern_ctx *kc, float *logits, int rows, int V, char *err,
                     size_t errlen)
{
    infer_dist *d = ud;
    size_t n = (size_t)rows * V;
    double t0 = now_s();
    if (d->rank != 0) {
        const float *h = stage_in(d, kc, logits, n, true);
        if (!h)
            STAGE_FAIL();
        t0 = now_s();
        MPI_Send(h, (int)n, MPI_FLOAT, 0, TAG_LOGITS, d->comm);
        account(d, t0, n * sizeof(float));
        return INFER_OK;
    }
    if (d->defer) {   /* into the step's logits, collected at the end of the step */
        if (d->n_lgreq == d->cap_lgreq) {
            int cap = d->cap_lgreq ? 2 * d->cap_lgreq : 16;
            MPI_Request *r = realloc(d->lgreq, (size_t)cap * sizeof *r);
            if (!r)
                FAIL(INFER_ENOMEM, "distributed step: out of memory");
            d->lgreq = r;
            d->cap_lgreq = cap;
        }
        MPI_Irecv(d->lg + (size_t)d->lg_off * V, (int)n, MPI_FLOAT, d->size - 1, TAG_LOGITS,
                  d->comm, &d->lgreq[d->n_lgreq++]);
        d->lg_off += rows;
        account(d, t0, n * sizeof(float));
        return INFER_OK;
    }
    float *h = stage_in(d, kc, logits, n, false);
    if (!h)
        STAGE_FAIL();
    t0 = now_s();
    MPI_Recv(h, (int)n, MPI_FLOAT, d->size - 1, TAG_LOGITS, d->comm, MPI_STATUS_IGNORE);
    account(d, t0, n * sizeof(float));
    if (stage_out(kc, logits, h, n) != KERN_OK)
        STAGE_FAIL();
    return INFER_OK;
}

/* Tensor parallel: rank r computed the logits of vocabulary rows [V*r/N, V*(r+1)/N) as
 * [rows][its width] at the start of logits; rank 0 assembles [rows][V]. */
static int hook_head_tp(void *ud, kern_ctx *kc, float *logits, int rows, int V, char *err,
                        size_t errlen)
{
    infer_dist *d = ud;
    const int N = d->size;
#define VLO(r) ((int)((int64_t)V * (r) / N))
    const size_t mine = (size_t)rows * (VLO(d->rank + 1) - VLO(d->rank)), n = (size_t)rows * V;
    float *h = logits;
    if (!kern_ctx_host_memory(kc)) {
        if (grow((void **)&d->host, &d->host_cap, n * sizeof(float)) ||
            kern_download(kc, d->host, logits, mine * sizeof(float)) != KERN_OK)
            STAGE_FAIL();
        h = d->host;
    }
    double t0 = now_s();
    if (d->rank != 0) {
        MPI_Send(h, (int)mine, MPI_FLOAT, 0, TAG_LOGITS, d->comm);
        account(d, t0, mine * sizeof(float));
        return INFER_OK;
    }
    /* spread rank 0's rows to their stride (in place, last row first), then the others' */
    const int w0 = VLO(1);
    for (int i = rows - 1; i > 0; i--)
        memmove(h + (size_t)i * V, h + (size_t)i * w0, (size_t)w0 * sizeof(float));
    for (int r = 1; r < N; r++) {
        const int lo = VLO(r), w = VLO(r + 1) - lo;
        if (grow((void **)&d->tmp, &d->tmp_cap, (size_t)rows * w * sizeof(float)))
            FAIL(INFER_ENOMEM, "distributed step: out of memory for %d rows of logits", rows);
        t0 = now_s();
        MPI_Recv(d->tmp, rows * w, MPI_FLOAT, r, TAG_LOGITS, d->comm, MPI_STATUS_IGNORE);
        account(d, t0, (size_t)rows * w * sizeof(float));
        for (int i = 0; i < rows; i++)
            memcpy(h + (size_t)i * V + lo, d->tmp + (size_t)i * w, (size_t)w * sizeof(float));
    }
#undef VLO
    if (stage_out(kc, logits, h, n) != KERN_OK)
        STAGE_FAIL();
    return INFER_OK;
}

/* ---- job ---- */

bool infer_dist_available(void) { return true; }

int infer_dist_init(int *argc, char ***argv, int kind, int n, infer_dist **out,
                    char *err, size_t errlen)
{
    *out = NULL;
    const char *flag = kind == INFER_SHARD_PP ? "--pp" : "--tp";
    if ((kind != INFER_SHARD_TP && kind != INFER_SHARD_PP) || n < 1)
        FAIL(INFER_EINVAL, "distributed inference: bad mode %d or rank count %d", kind, n);
    infer_dist *d = calloc(1, sizeof *d);
    if (!d)
        FAIL(INFER_ENOMEM, "out of memory");
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
        d->inited = true;
    } else {
        MPI_Query_thread(&provided);
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    d->kind = kind;
    d->micro = d->size;
    if (provided < MPI_THREAD_SERIALIZED || d->size != n) {
        char e[256];
        if (provided < MPI_THREAD_SERIALIZED)
            snprintf(e, sizeof e, "the MPI library does not support MPI_THREAD_SERIALIZED "
                     "(provided level %d)", provided);
        else
            snprintf(e, sizeof e, "%s %d but this job has %d rank%s: start it with "
                     "mpirun -np %d", flag, n, d->size, d->size == 1 ? "" : "s", n);
        snprintf(err, errlen, "%s", e);
        infer_dist_free(d);
        return INFER_EINVAL;
    }
    *out = d;
    return INFER_OK;
}

void infer_dist_free(infer_dist *d)
{
    if (!d)
        return;
    free(d->host);
    free(d->tmp);
    free(d->lg);
    free(d->lgreq);
    free(d->piece);
    free(d->desc);
    free(d->wseq);
    free(d->wbt);
    MPI_Comm_free(&d->comm);
    if (d->inited)
        MPI_Finalize();
    free(d);
}

int infer_dist_rank(const infer_dist *d) { return d ? d->rank : 0; }
int infer_dist_size(const infer_dist *d) { return d ? d->size : 1; }
int infer_dist_kind(const infer_dist *d) { return d ? d->kind : INFER_SHARD_NONE; }
infer_dist_stats infer_dist_get_stats(const infer_dist *d) { return d->st; }
void infer_dist_set_micro_batches(infer_dist *d, int n) { d->micro = n > 0 ? n : 1; }
void infer_dist_abort(infer_dist *d, int code) { MPI_Abort(d->comm, code); }

int infer_dist_min_int(infer_dist *d, int *v)
{
    int mine = *v;
    MPI_Allreduce(&mine, v, 1, MPI_INT, MPI_MIN, d->comm);
    return INFER_OK;
}

int infer_dist_load(infer_dist *d, const char *path, kern_ctx *kc, infer_model **out,
                    char *err, size_t errlen)
{
    infer_shard sh = { d->kind, d->rank, d->size };
    int rc = infer_model_load_shard(path, kc, &sh, NULL, NULL, out, err, errlen);
    /* All ranks agree, or none goes on: the lowest failing rank is named. */
    int mine = rc ? d->rank : d->size, first = d->size;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, d->comm);
    if (first < d->size) {
        if (!rc) {
            infer_model_free(*out);
            *out = NULL;
            FAIL(INFER_EINVAL, "rank %d could not load its part of %s (see its log)", first,
                 path);
        }
        return rc;
    }
    infer_model *m = *out;
    infer_dist_hooks *h = &d->hooks;
    *h = (infer_dist_hooks){ .ud = d, .computes_head = true };
    if (d->kind == INFER_SHARD_TP) {
        h->allreduce = hook_allreduce;
        h->head = hook_head_tp;
    } else {
        const bool last = d->rank == d->size - 1;
        h->recv_x = d->rank > 0 ? hook_recv_x : NULL;
        h->send_x = last ? NULL : hook_send_x;
        h->computes_head = last;
        h->head = d->size > 1 && (d->rank == 0 || last) ? hook_head : NULL;
    }
    m->dist = h;
    m->dist_owner = d;
    d->m = m;
    return INFER_OK;
}

/* ---- steps ---- */

/* Pipeline: the step's tokens, in order, cut into up to d->micro micro-batches of about
 * equal size (every rank cuts the same way), one infer_batch_step each. A sequence that
 * crosses a boundary is cut there like a prompt in chunks: its first part runs first on
 * every stage, so the second finds its keys; only its last part asks for logits. So
 * one long prompt pipelines too. Stage r hands x of micro-batch g to stage r+1 and goes
 * on with g+1 while r+1 works on g; rank 0 posts a receive for each micro-batch's
 * logits and collects them all at the end. */
static int pp_step(infer_dist *d, infer_batch *b, const infer_batch_seq *seqs, int n,
                   char *err, size_t errlen)
{
    int total = 0, n_logits = 0;
    for (int i = 0; i < n; i++) {
        if (seqs[i].n_tokens < 1 || !seqs[i].tokens || !seqs[i].bt)   /* the step says why */
            return infer_batch_step(b, seqs, n, err, errlen);
        total += seqs[i].n_tokens;
        n_logits += seqs[i].logits;
    }
    const size_t V = (size_t)d->m->hp.n_vocab;
    const int groups = d->micro < total ? d->micro : total;
    if ((d->rank == 0 &&
         grow((void **)&d->lg, &d->lg_cap, (size_t)(n_logits ? n_logits : 1) * V * 4)) ||
        grow((void **)&d->piece, &d->piece_cap, (size_t)(n + groups) * sizeof *d->piece))
        FAIL(INFER_ENOMEM, "distributed step: out of memory for %d sequences", n);
    int rc = INFER_OK, np = 0;
    d->lg_off = 0;
    d->n_lgreq = 0;
    d->defer = true;
    for (int g = 0, pos = 0, i = 0, off = 0; g < groups && !rc; g++) {
        const int end = (int)((int64_t)total * (g + 1) / groups), first = np;
        while (pos < end) {
            const infer_batch_seq *q = &seqs[i];
            int take = q->n_tokens - off < end - pos ? q->n_tokens - off : end - pos;
            d->piece[np++] = (infer_batch_seq){ .bt = q->bt, .n_past = q->n_past + off,
                                                .tokens = q->tokens + off, .n_tokens = take,
                                                .logits = q->logits && off + take == q->n_tokens };
            pos += take;
            off += take;
            if (off == q->n_tokens) {
                i++;
                off = 0;
            }
        }
        rc = infer_batch_step(b, d->piece + first, np - first, err, errlen);
    }
    d->defer = false;
    double t0 = now_s();
    if (d->n_lgreq)
        MPI_Waitall(d->n_lgreq, d->lgreq, MPI_STATUSES_IGNORE);
    account(d, t0, 0);
    d->lg_rows = d->lg_off;
    return rc;
}

/* A pipeline of two or more stages: micro-batches, x passed between stages, logits
 * gathered by rank 0. One stage is the whole model: the batched step as it is. */
static bool pipelined(const infer_dist *d) { return d->kind == INFER_SHARD_PP && d->size > 1; }

/* Every rank: the same step. */
static int run_step(infer_dist *d, infer_batch *b, const infer_batch_seq *seqs, int n,
                    char *err, size_t errlen)
{
    if (pipelined(d))
        return pp_step(d, b, seqs, n, err, errlen);
    return infer_batch_step(b, seqs, n, err, errlen);
}

static int send_desc(infer_dist *d, const int32_t *desc, size_t len)
{
    double t0 = now_s();
    for (int r = 1; r < d->size; r++)
        MPI_Send(desc, (int)len, MPI_INT32_T, r, TAG_STEP, d->comm);
    account(d, t0, len * 4 * (size_t)(d->size - 1));
    return INFER_OK;
}

int infer_dist_batch_step(infer_dist *d, infer_batch *b, const infer_batch_seq *seqs,
                          int n_seqs, char *err, size_t errlen)
{
    if (!d)
        return infer_batch_step(b, seqs, n_seqs, err, errlen);
    if (d->rank != 0)
        FAIL(INFER_EINVAL, "infer_dist_batch_step: only rank 0 starts steps (rank %d)",
             d->rank);
    if (n_seqs < 0 || (n_seqs > 0 && !seqs))
        FAIL(INFER_EINVAL, "batch step: %d sequences", n_seqs);
    size_t len = 2;
    for (int s = 0; s < n_seqs; s++) {
        if (!seqs[s].bt || !seqs[s].tokens || seqs[s].n_tokens < 1 || seqs[s].bt->n < 0)
            FAIL(INFER_EINVAL, "batch step: sequence %d has no tokens or no block table", s);
        len += 4 + (size_t)seqs[s].n_tokens + (size_t)seqs[s].bt->n;
    }
    if (len > (size_t)INT32_MAX / 4 ||
        grow((void **)&d->desc, &d->desc_cap, len * sizeof(int32_t)))
        FAIL(INFER_ENOMEM, "batch step: out of memory for the step descriptor");
    int32_t *p = d->desc;
    *p++ = OP_STEP;
    *p++ = n_seqs;
    for (int s = 0; s < n_seqs; s++) {
        const infer_batch_seq *q = &seqs[s];
        *p++ = q->n_past;
        *p++ = q->n_tokens;
        *p++ = q->logits;
        *p++ = q->bt->n;
        memcpy(p, q->tokens, (size_t)q->n_tokens * 4);
        p += q->n_tokens;
        memcpy(p, q->bt->ids, (size_t)q->bt->n * 4);
        p += q->bt->n;
    }
    send_desc(d, d->desc, len);
    int rc = run_step(d, b, seqs, n_seqs, err, errlen);
    if (rc && rc != INFER_EINVAL) {
        /* the ranks may be out of step now (a kernel failed in the middle) */
        fprintf(stderr, "rank 0: distributed step failed (%s): ending the job\n", err);
        MPI_Abort(d->comm, 1);
    }
    return rc;
}

const float *infer_dist_batch_logits(const infer_dist *d, const infer_batch *b, int *n_rows)
{
    if (!d || !pipelined(d))
        return infer_batch_logits(b, n_rows);
    if (n_rows)
        *n_rows = d->rank == 0 ? d->lg_rows : 0;
    return d->lg;
}

void infer_dist_stop(infer_dist *d)
{
    if (!d || d->rank != 0)
        return;
    int32_t stop[2] = { OP_STOP, 0 };
    send_desc(d, stop, 2);
}

/* Wait for rank 0's next descriptor: spin briefly (steps come back to back while
 * generating), then poll with sleeps. Returns its length in int32. */
static int recv_desc(infer_dist *d, size_t *len)
{
    MPI_Status st;
    int flag = 0;
    double idle0 = now_s();
    for (;;) {
        MPI_Iprobe(0, TAG_STEP, d->comm, &flag, &st);
        if (flag)
            break;
        if (now_s() - idle0 > IDLE_SPIN_S) {
            struct timespec ts = { 0, IDLE_SLEEP_NS };
            nanosleep(&ts, NULL);
        }
    }
    int count = 0;
    MPI_Get_count(&st, MPI_INT32_T, &count);
    if (count < 2 || grow((void **)&d->desc, &d->desc_cap, (size_t)count * 4))
        return -1;
    double t0 = now_s();
    MPI_Recv(d->desc, count, MPI_INT32_T, 0, TAG_STEP, d->comm, MPI_STATUS_IGNORE);
    account(d, t0, (size_t)count * 4);
    *len = (size_t)count;
    return 0;
}

/* Descriptor -> sequences whose tokens and block tables point into it. */
static int parse_desc(infer_dist *d, size_t len, int *n_seqs)
{
    const int32_t *p = d->desc + 2, *end = d->desc + len;
    int n = d->desc[1];
    if (n < 0 || (size_t)n > len)
        return -1;
    if (n > d->wcap) {
        infer_batch_seq *s = realloc(d->wseq, (size_t)n * sizeof *s);
        if (s)
            d->wseq = s;
        infer_block_table *t = realloc(d->wbt, (size_t)n * sizeof *t);
        if (t)
            d->wbt = t;
        if (!s || !t)
            return -1;
        d->wcap = n;
    }
    for (int i = 0; i < n; i++) {
        if (end - p < 4 || p[1] < 0 || p[3] < 0 || end - p - 4 < (int64_t)p[1] + p[3])
            return -1;
        d->wbt[i] = (infer_block_table){ .ids = (int32_t *)p + 4 + p[1], .n = p[3],
                                         .cap = p[3] };
        d->wseq[i] = (infer_batch_seq){ .bt = &d->wbt[i], .n_past = p[0],
                                        .tokens = p + 4, .n_tokens = p[1],
                                        .logits = p[2] != 0 };
        p += 4 + p[1] + p[3];
    }
    *n_seqs = n;
    return 0;
}

int infer_dist_worker_run(infer_dist *d, infer_batch *b, char *err, size_t errlen)
{
    if (!d || d->rank == 0)
        FAIL(INFER_EINVAL, "infer_dist_worker_run: only ranks > 0 are workers");
    for (;;) {
        size_t len;
        int n = 0;
        if (recv_desc(d, &len) || (d->desc[0] == OP_STEP && parse_desc(d, len, &n))) {
            fprintf(stderr, "rank %d: malformed step from rank 0 (or out of memory): ending "
                    "the job\n", d->rank);
            MPI_Abort(d->comm, 1);
        }
        if (d->desc[0] == OP_STOP)
            return INFER_OK;
        int rc = run_step(d, b, d->wseq, n, err, errlen);
        /* A rejected step (INFER_EINVAL: checked before any evaluation) is rejected by
         * rank 0 too; anything else leaves the ranks out of step. */
        if (rc && rc != INFER_EINVAL) {
            fprintf(stderr, "rank %d: distributed step failed (%s): ending the job\n",
                    d->rank, err);
            MPI_Abort(d->comm, 1);
        }
    }
}
