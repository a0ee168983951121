/* quota_sim.c: the virtual-time simulator core (quota_sim.h). */
#include "quota_sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quota_limits.h"
#include "quota_priority.h"
#include "quota_share.h"

typedef struct run {
    int64_t end;
    size_t job;
} run;

typedef struct sim {
    const quota_sim_config *cfg;
    const quota_policy *p;
    quota_sim_job *jobs;
    size_t njobs;
    size_t *order, next;     /* jobs by submit time; next to arrive */
    run *heap;               /* running jobs, min-heap by end */
    size_t nheap;
    run *byexp;              /* running jobs with a time limit, sorted by start + limit, */
    size_t nexp;             /* so the planner gets its releases in time order */
    size_t *pending, npending;
    double *prio;            /* per job, this pass */
    size_t *alloc_at;        /* per job: offset of its node list in pool */
    int *pool;
    size_t npool;
    int *nodes_buf;
    quota_res *free;
    quota_plan *plan;
    double *self, *rate;     /* per account: decayed usage, billed rate running */
    quota_state *states;
    quota_share_row *rows;
    int64_t now;
    double *waits;
    double cpu_seconds;
    quota_sim_result *out;
    size_t cap_buckets;
} sim;

static bool heap_less(const run *a, const run *b)
{
    return a->end < b->end || (a->end == b->end && a->job < b->job);
}

static void heap_push(sim *s, run r)
{
    size_t i = s->nheap++;
    s->heap[i] = r;
    while (i > 0 && heap_less(&s->heap[i], &s->heap[(i - 1) / 2])) {
        run t = s->heap[i];
        s->heap[i] = s->heap[(i - 1) / 2];
        s->heap[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static run heap_pop(sim *s)
{
    run top = s->heap[0];
    s->heap[0] = s->heap[--s->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->nheap && heap_less(&s->heap[l], &s->heap[m]))
            m = l;
        if (r < s->nheap && heap_less(&s->heap[r], &s->heap[m]))
            m = r;
        if (m == i)
            break;
        run t = s->heap[i];
        s->heap[i] = s->heap[m];
        s->heap[m] = t;
        i = m;
    }
    return top;
}

/* First index in byexp whose key is not below r (by end, then job). */
static size_t exp_find(const sim *s, run r)
{
    size_t lo = 0, hi = s->nexp;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (heap_less(&s->byexp[mid], &r))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void exp_insert(sim *s, run r)
{
    size_t at = exp_find(s, r);
    memmove(s->byexp + at + 1, s->byexp + at, (s->nexp - at) * sizeof *s->byexp);
    s->byexp[at] = r;
    s->nexp++;
}

static void exp_remove(sim *s, run r)
{
    size_t at = exp_find(s, r);
    if (at < s->nexp && s->byexp[at].job == r.job) {
        memmove(s->byexp + at, s->byexp + at + 1, (s->nexp - at - 1) * sizeof *s->byexp);
        s->nexp--;
    }
}

static double qos_factor(const sim *s, const quota_sim_job *j)
{
    int q = j->qos < 0 ? s->p->default_qos : j->qos;
    return q >= 0 ? s->p->qos[q].usage_factor : 1.0;
}

static double job_rate(const sim *s, const quota_sim_job *j)
{
    return quota_billing_rate(s->p, j->nodes * j->per_node.cpus, j->nodes * j->per_node.gpus,
                              j->nodes * j->per_node.mem);
}

/* Usage decays by f = 2^(-dt/H) while running jobs add rate per second; the
 * exact result is usage*f + rate*H/ln2*(1-f). Without decay: usage + rate*dt. */
static void advance(sim *s, int64_t t)
{
    double dt = (double)(t - s->now);
    s->now = t;
    if (dt <= 0)
        return;
    double h = (double)s->p->decay_half_life;
    double f = h > 0 ? exp2(-dt / h) : 1.0;
    double gain = h > 0 ? h / M_LN2 * (1.0 - f) : dt;
    for (int a = 0; a < s->p->naccounts; a++)
        s->self[a] = s->self[a] * f + s->rate[a] * gain;
}

static int deliver(sim *s, int account, double rate, int64_t start, int64_t end)
{
    quota_sim_result *o = s->out;
    int64_t b0 = (start - o->first_submit) / o->bucket;
    int64_t b1 = (end - 1 - o->first_submit) / o->bucket;
    if (end <= start)
        return QUOTA_OK;
    if ((size_t)b1 + 1 > s->cap_buckets) {
        size_t cap = s->cap_buckets ? s->cap_buckets : 64;
        while (cap < (size_t)b1 + 1)
            cap *= 2;
        double *d = realloc(o->delivered, cap * (size_t)o->naccounts * sizeof *d);
        if (!d)
            return QUOTA_ENOMEM;
        memset(d + s->cap_buckets * (size_t)o->naccounts, 0,
               (cap - s->cap_buckets) * (size_t)o->naccounts * sizeof *d);
        o->delivered = d;
        s->cap_buckets = cap;
    }
    if (b1 + 1 > o->nbuckets)
        o->nbuckets = (int)(b1 + 1);
    for (int64_t b = b0; b <= b1; b++) {
        int64_t lo = o->first_submit + b * o->bucket, hi = lo + o->bucket;
        int64_t from = start > lo ? start : lo, to = end < hi ? end : hi;
        o->delivered[b * o->naccounts + account] += rate * (double)(to - from);
    }
    return QUOTA_OK;
}

static quota_state job_state(const quota_sim_job *j, int sign)
{
    quota_state d = {.cpus = sign * j->nodes * j->per_node.cpus,
                     .gpus = sign * j->nodes * j->per_node.gpus,
                     .mem = sign * j->nodes * j->per_node.mem,
                     .jobs = sign};
    return d;
}

static void start_job(sim *s, size_t ji)
{
    quota_sim_job *j = &s->jobs[ji];
    int64_t dur = j->runtime;
    if (j->time_limit > 0 && dur > j->time_limit)
        dur = j->time_limit; /* killed at its time limit */
    j->start = s->now;
    j->end = s->now + dur;
    s->alloc_at[ji] = s->npool;
    for (int64_t k = 0; k < j->nodes; k++) {
        int n = s->nodes_buf[k];
        s->pool[s->npool++] = n;
        s->free[n].cpus -= j->per_node.cpus;
        s->free[n].gpus -= j->per_node.gpus;
        s->free[n].mem -= j->per_node.mem;
    }
    s->rate[j->account] += job_rate(s, j) * qos_factor(s, j);
    quota_state d = job_state(j, 1);
    quota_state_add(s->p, s->states, j->account, &d);
    heap_push(s, (run){j->end, ji});
    if (j->time_limit > 0)
        exp_insert(s, (run){j->start + j->time_limit, ji});
    s->out->started++;
    s->waits[s->out->started - 1] = (double)(j->start - j->submit);
}

static int end_job(sim *s, size_t ji)
{
    quota_sim_job *j = &s->jobs[ji];
    if (j->time_limit > 0)
        exp_remove(s, (run){j->start + j->time_limit, ji});
    for (int64_t k = 0; k < j->nodes; k++) {
        int n = s->pool[s->alloc_at[ji] + (size_t)k];
        s->free[n].cpus += j->per_node.cpus;
        s->free[n].gpus += j->per_node.gpus;
        s->free[n].mem += j->per_node.mem;
    }
    quota_state d = job_state(j, -1);
    quota_state_add(s->p, s->states, j->account, &d);
    /* Exact zero once idle, so rounding never leaves a phantom rate. */
    s->rate[j->account] =
        s->states[j->account].jobs ? s->rate[j->account] - job_rate(s, j) * qos_factor(s, j) : 0;
    s->cpu_seconds += (double)(j->nodes * j->per_node.cpus) * (double)(j->end - j->start);
    if (j->end > s->out->last_end)
        s->out->last_end = j->end;
    return deliver(s, j->account, job_rate(s, j), j->start, j->end);
}

static int cmp_prio(const void *a, const void *b, void *arg)
{
    const sim *s = arg;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    if (s->prio[x] != s->prio[y])
        return s->prio[x] > s->prio[y] ? -1 : 1;
    const quota_sim_job *jx = &s->jobs[x], *jy = &s->jobs[y];
    if (jx->submit != jy->submit)
        return jx->submit < jy->submit ? -1 : 1;
    return (jx->id > jy->id) - (jx->id < jy->id);
}

static int pass(sim *s)
{
    const quota_sim_config *c = s->cfg;
    int rc;
    int64_t free_cpus = 0;
    for (int n = 0; n < c->nnodes; n++)
        free_cpus += s->free[n].cpus;
    if (free_cpus <= 0 || s->npending == 0)
        return QUOTA_OK;
    s->out->passes++;
    if (c->order == QUOTA_SIM_MULTIFACTOR) {
        if ((rc = quota_fairshare(s->p, s->self, s->rows)))
            return rc;
        int64_t cluster_cpus = (int64_t)c->nnodes * c->node.cpus;
        for (size_t k = 0; k < s->npending; k++) {
            const quota_sim_job *j = &s->jobs[s->pending[k]];
            s->prio[s->pending[k]] =
                quota_priority(s->p, s->rows[j->account].fs_factor, (double)(s->now - j->submit),
                               j->nodes * j->per_node.cpus, cluster_cpus, j->qos)
                    .total;
        }
        qsort_r(s->pending, s->npending, sizeof *s->pending, cmp_prio, s);
    }
    if ((rc = quota_plan_begin(s->plan, s->now, c->backfill, s->free)))
        return rc;
    /* Jobs without a time limit are not in byexp: nobody knows when they end. */
    for (size_t r = 0; r < s->nexp; r++) {
        size_t ji = s->byexp[r].job;
        const quota_sim_job *j = &s->jobs[ji];
        for (int64_t k = 0; k < j->nodes; k++)
            if ((rc = quota_plan_release(s->plan, s->pool[s->alloc_at[ji] + (size_t)k],
                                         &j->per_node, s->byexp[r].end)))
                return rc;
    }
    size_t kept = 0, k = 0;
    for (; k < s->npending; k++) {
        size_t ji = s->pending[k];
        const quota_sim_job *j = &s->jobs[ji];
        if (quota_plan_full(s->plan))
            break;
        if (c->limits) {
            quota_request req = {.account = j->account, .qos = j->qos,
                                 .cpus = j->nodes * j->per_node.cpus,
                                 .gpus = j->nodes * j->per_node.gpus,
                                 .mem = j->nodes * j->per_node.mem,
                                 .time_limit = j->time_limit};
            if (quota_check_start(s->p, s->states, &req, NULL) != QUOTA_REASON_NONE) {
                s->pending[kept++] = ji;
                continue;
            }
        }
        quota_plan_job pj = {.nodes = j->nodes, .per_node = j->per_node,
                             .time_limit = j->time_limit};
        rc = quota_plan_try(s->plan, &pj, s->nodes_buf);
        if (rc < 0)
            return rc;
        if (rc == QUOTA_PLAN_START) {
            start_job(s, ji);
        } else if (rc == QUOTA_PLAN_NEVER) {
            s->out->never++;
        } else {
            s->pending[kept++] = ji;
            if (rc == QUOTA_PLAN_RESERVED && c->backfill == QUOTA_BACKFILL_NONE) {
                k++;
                break; /* strict order: nothing passes the blocked job */
            }
        }
    }
    for (; k < s->npending; k++)
        s->pending[kept++] = s->pending[k];
    s->npending = kept;
    return QUOTA_OK;
}

static int cmp_submit(const void *a, const void *b, void *arg)
{
    const quota_sim_job *jobs = arg;
    const quota_sim_job *x = &jobs[*(const size_t *)a], *y = &jobs[*(const size_t *)b];
    if (x->submit != y->submit)
        return x->submit < y->submit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int check(const quota_sim_config *c, const quota_sim_job *jobs, size_t n, char *err,
                 size_t errlen)
{
    const quota_policy *p = c->policy;
    if (!p || c->nnodes < 1 || c->node.cpus < 1 || c->node.gpus < 0 || c->node.mem < 0) {
        snprintf(err, errlen, "simulator needs a policy and at least one node with CPUs");
        return QUOTA_EARG;
    }
    for (size_t i = 0; i < n; i++) {
        const quota_sim_job *j = &jobs[i];
        const char *bad = NULL;
        if (j->account <= 0 || j->account >= p->naccounts ||
            p->accounts[j->account].nchildren > 0)
            bad = "account is not a leaf account of the policy";
        else if (j->qos >= p->nqos)
            bad = "no such QOS";
        else if (j->nodes < 1 || j->per_node.cpus < 1 || j->per_node.gpus < 0 ||
                 j->per_node.mem < 0)
            bad = "needs at least one node with at least one CPU";
        else if (j->runtime < 0)
            bad = "negative run time";
        if (bad) {
            snprintf(err, errlen, "job %lld: %s", (long long)j->id, bad);
            return QUOTA_EARG;
        }
    }
    return QUOTA_OK;
}

static void sim_free(sim *s)
{
    free(s->order);
    free(s->heap);
    free(s->byexp);
    free(s->pending);
    free(s->prio);
    free(s->alloc_at);
    free(s->pool);
    free(s->nodes_buf);
    free(s->free);
    quota_plan_free(s->plan);
    free(s->self);
    free(s->rate);
    free(s->states);
    free(s->rows);
    free(s->waits);
}

static int sim_alloc(sim *s, size_t n)
{
    const quota_sim_config *c = s->cfg;
    size_t na = (size_t)s->p->naccounts, nn = (size_t)c->nnodes;
    size_t pool = 1;
    for (size_t i = 0; i < n; i++)
        pool += (size_t)s->jobs[i].nodes;
    s->order = malloc((n + 1) * sizeof *s->order);
    s->heap = malloc((n + 1) * sizeof *s->heap);
    s->byexp = malloc((n + 1) * sizeof *s->byexp);
    s->pending = malloc((n + 1) * sizeof *s->pending);
    s->prio = calloc(n + 1, sizeof *s->prio);
    s->alloc_at = calloc(n + 1, sizeof *s->alloc_at);
    s->pool = malloc(pool * sizeof *s->pool);
    s->nodes_buf = malloc(nn * sizeof *s->nodes_buf);
    s->free = malloc(nn * sizeof *s->free);
    s->plan = quota_plan_new(c->nnodes);
    s->self = calloc(na, sizeof *s->self);
    s->rate = calloc(na, sizeof *s->rate);
    s->states = calloc(na, sizeof *s->states);
    s->rows = calloc(na, sizeof *s->rows);
    s->waits = calloc(n + 1, sizeof *s->waits);
    if (!s->order || !s->heap || !s->byexp || !s->pending || !s->prio || !s->alloc_at || !s->pool ||
        !s->nodes_buf || !s->free || !s->plan || !s->self || !s->rate || !s->states ||
        !s->rows || !s->waits)
        return QUOTA_ENOMEM;
    for (size_t i = 0; i < nn; i++)
        s->free[i] = c->node;
    return QUOTA_OK;
}

static void summarize(sim *s)
{
    quota_sim_result *o = s->out;
    size_t n = o->started;
    double wsum = 0, bsum = 0;
    for (size_t i = 0; i < s->njobs; i++) {
        const quota_sim_job *j = &s->jobs[i];
        if (j->start < 0)
            continue;
        double wait = (double)(j->start - j->submit), dur = (double)(j->end - j->start);
        double b = (wait + dur) / (dur > 10.0 ? dur : 10.0);
        wsum += wait;
        bsum += b > 1.0 ? b : 1.0;
    }
    if (n) {
        qsort(s->waits, n, sizeof *s->waits, cmp_double);
        o->mean_wait = wsum / (double)n;
        o->mean_bounded_slowdown = bsum / (double)n;
        o->median_wait = n % 2 ? s->waits[n / 2] : (s->waits[n / 2 - 1] + s->waits[n / 2]) / 2;
    }
    o->makespan = o->last_end > o->first_submit ? o->last_end - o->first_submit : 0;
    double cpus = (double)s->cfg->nnodes * (double)s->cfg->node.cpus;
    o->utilization = o->makespan > 0 ? s->cpu_seconds / (cpus * (double)o->makespan) : 0;
}

int quota_sim_run(const quota_sim_config *cfg, quota_sim_job *jobs, size_t njobs,
                  quota_sim_result *out, char *err, size_t errlen)
{
    if (!cfg || !out || (!jobs && njobs))
        return QUOTA_EARG;
    memset(out, 0, sizeof *out);
    int rc = check(cfg, jobs, njobs, err, errlen);
    if (rc)
        return rc;
    sim s = {.cfg = cfg, .p = cfg->policy, .jobs = jobs, .njobs = njobs, .out = out};
    out->jobs = njobs;
    out->naccounts = s.p->naccounts;
    out->bucket = cfg->bucket > 0 ? cfg->bucket : 86400;
    if ((rc = sim_alloc(&s, njobs))) {
        snprintf(err, errlen, "out of memory");
        sim_free(&s);
        return rc;
    }
    for (size_t i = 0; i < njobs; i++) {
        s.order[i] = i;
        jobs[i].start = jobs[i].end = -1;
    }
    qsort_r(s.order, njobs, sizeof *s.order, cmp_submit, jobs);
    out->first_submit = njobs ? jobs[s.order[0]].submit : 0;
    out->last_end = out->first_submit;
    s.now = out->first_submit;
    while (rc == QUOTA_OK && (s.next < njobs || s.nheap > 0)) {
        int64_t t = INT64_MAX;
        if (s.next < njobs)
            t = jobs[s.order[s.next]].submit;
        if (s.nheap > 0 && s.heap[0].end < t)
            t = s.heap[0].end;
        advance(&s, t);
        while (rc == QUOTA_OK && s.nheap > 0 && s.heap[0].end <= t)
            rc = end_job(&s, heap_pop(&s).job);
        while (s.next < njobs && jobs[s.order[s.next]].submit <= t)
            s.pending[s.npending++] = s.order[s.next++];
        if (rc == QUOTA_OK)
            rc = pass(&s);
    }
    /* Whatever is still pending with nothing left to run will never start
     * (held by a limit no running job will release). */
    out->never += s.npending;
    if (rc == QUOTA_OK)
        summarize(&s);
    else
        snprintf(err, errlen, "simulation failed (%d)", rc);
    sim_free(&s);
    if (rc)
        quota_sim_result_free(out);
    return rc;
}

void quota_sim_result_free(quota_sim_result *r)
{
    if (!r)
        return;
    free(r->delivered);
    r->delivered = NULL;
    r->nbuckets = 0;
}
