/* quota_plan.c: the EASY backfill planner (quota_plan.h).
 *
 * Per pass the planner holds: free[] (now), the releases of running jobs, and
 * once a job is blocked, the reservation: shadow time and left[] = what each
 * node will have free at the shadow time after the reserved job takes its
 * share. A backfilled job that may still run at the shadow time is charged to
 * left[] too, which is what keeps the reservation intact. */
#include "quota_plan.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct release {
    int64_t end;
    int node;
    quota_res res;
} release;

struct quota_plan {
    int nnodes;
    int64_t now;
    quota_backfill mode;
    quota_res *free, *left, *work;
    quota_res total;     /* sum of free[] */
    release *rel;
    size_t nrel, caprel;
    size_t sorted;       /* rel[0, sorted) is in time order (callers usually add them so) */
    bool reserved, blocked; /* a reservation exists / a job could not start */
    int64_t shadow;
    /* Upper bounds on what one node offers, learned from failed scans: [0]
     * over free[], [1] over min(free, left). Both arrays only shrink during a
     * pass, so a bound stays valid, and a job that asks more on any resource
     * fails without a scan (most of a long queue, once the cluster is full). */
    quota_res bound[2];
    /* Failed scans remembered as (per-node need, node count): a job needing at
     * least as much per node on at least as many nodes cannot fit either. */
    struct {
        quota_plan_job job;
        bool used;
    } failed[2][8];
    unsigned nfailed[2];
    int first_free;      /* nodes below it have no CPU free now (free[] only shrinks) */
};

quota_plan *quota_plan_new(int nnodes)
{
    if (nnodes < 0)
        return NULL;
    quota_plan *pl = calloc(1, sizeof *pl);
    size_t n = (size_t)(nnodes ? nnodes : 1);
    if (!pl)
        return NULL;
    pl->nnodes = nnodes;
    pl->free = calloc(n, sizeof *pl->free);
    pl->left = calloc(n, sizeof *pl->left);
    pl->work = calloc(n, sizeof *pl->work);
    if (!pl->free || !pl->left || !pl->work) {
        quota_plan_free(pl);
        return NULL;
    }
    return pl;
}

void quota_plan_free(quota_plan *pl)
{
    if (!pl)
        return;
    free(pl->free);
    free(pl->left);
    free(pl->work);
    free(pl->rel);
    free(pl);
}

static void add(quota_res *a, const quota_res *b, int sign)
{
    a->cpus += sign * b->cpus;
    a->gpus += sign * b->gpus;
    a->mem += sign * b->mem;
}

static bool fits(const quota_res *have, const quota_res *need)
{
    return have->cpus >= need->cpus && have->gpus >= need->gpus && have->mem >= need->mem;
}

int quota_plan_begin(quota_plan *pl, int64_t now, quota_backfill mode, const quota_res *free_now)
{
    if (!pl || !free_now)
        return QUOTA_EARG;
    pl->now = now;
    pl->mode = mode;
    pl->nrel = pl->sorted = 0;
    memset(pl->failed, 0, sizeof pl->failed);
    pl->nfailed[0] = pl->nfailed[1] = 0;
    pl->reserved = pl->blocked = false;
    pl->shadow = -1;
    memset(&pl->total, 0, sizeof pl->total);
    pl->bound[0] = pl->bound[1] = (quota_res){INT64_MAX, INT64_MAX, INT64_MAX};
    pl->first_free = 0;
    for (int i = 0; i < pl->nnodes; i++) {
        pl->free[i] = free_now[i];
        add(&pl->total, &free_now[i], 1);
    }
    return QUOTA_OK;
}

int quota_plan_release(quota_plan *pl, int node, const quota_res *res, int64_t end)
{
    if (!pl || !res || node < 0 || node >= pl->nnodes)
        return QUOTA_EARG;
    if (pl->nrel == pl->caprel) {
        size_t cap = pl->caprel ? pl->caprel * 2 : 256;
        release *r = realloc(pl->rel, cap * sizeof *r);
        if (!r)
            return QUOTA_ENOMEM;
        pl->rel = r;
        pl->caprel = cap;
    }
    release r = {end > pl->now ? end : pl->now, node, *res};
    if (pl->sorted == pl->nrel && (pl->nrel == 0 || pl->rel[pl->nrel - 1].end <= r.end))
        pl->sorted++;
    pl->rel[pl->nrel++] = r;
    return QUOTA_OK;
}

static int cmp_release(const void *a, const void *b)
{
    int64_t x = ((const release *)a)->end, y = ((const release *)b)->end;
    return (x > y) - (x < y);
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static void raise_to(quota_res *m, const quota_res *r)
{
    if (r->cpus > m->cpus)
        m->cpus = r->cpus;
    if (r->gpus > m->gpus)
        m->gpus = r->gpus;
    if (r->mem > m->mem)
        m->mem = r->mem;
}

/* First job->nodes nodes where the job fits in have[] (and in also[] when
 * given: free now and at the shadow time); first fit by index. *seen gets
 * the most any one node offers when the scan went through every node. */
static bool scan(const quota_plan *pl, const quota_res *have, const quota_res *also,
                 const quota_plan_job *job, int *out, quota_res *seen)
{
    *seen = (quota_res){0, 0, 0};
    int64_t got = 0;
    /* Nodes without a free CPU fit no job that needs one; skip them. */
    int from = have == pl->free && job->per_node.cpus > 0 ? pl->first_free : 0;
    for (int i = from; i < pl->nnodes && got < job->nodes; i++) {
        quota_res avail = have[i];
        if (also)
            avail = (quota_res){min64(avail.cpus, also[i].cpus), min64(avail.gpus, also[i].gpus),
                                min64(avail.mem, also[i].mem)};
        raise_to(seen, &avail);
        if (fits(&avail, &job->per_node))
            out[got++] = i;
    }
    return got == job->nodes;
}

/* scan() over free[] (and left[]), skipped when a bound already rules it out.
 * Scans for jobs that need CPUs skip the leading full nodes, so their bounds
 * only speak for such jobs. */
static bool pick(quota_plan *pl, bool with_left, const quota_plan_job *job, int *out)
{
    quota_res *bound = &pl->bound[with_left], seen;
    if (job->per_node.cpus > 0) {
        if (!fits(bound, &job->per_node))
            return false;
        for (int k = 0; k < 8; k++)
            if (pl->failed[with_left][k].used && job->nodes >= pl->failed[with_left][k].job.nodes &&
                fits(&job->per_node, &pl->failed[with_left][k].job.per_node))
                return false;
    }
    if (scan(pl, pl->free, with_left ? pl->left : NULL, job, out, &seen))
        return true;
    *bound = seen;
    unsigned slot = pl->nfailed[with_left]++ % 8;
    pl->failed[with_left][slot].job = *job;
    pl->failed[with_left][slot].used = job->per_node.cpus > 0;
    return false;
}

static bool enough_in_total(const quota_plan *pl, const quota_plan_job *job)
{
    return pl->total.cpus >= job->nodes * job->per_node.cpus &&
           pl->total.gpus >= job->nodes * job->per_node.gpus &&
           pl->total.mem >= job->nodes * job->per_node.mem;
}

/* Starts a job: its resources leave free[] (and left[] when it may still run
 * at the shadow time) and come back at its time limit for later reservations. */
static int take(quota_plan *pl, const quota_plan_job *job, const int *nodes, bool from_left)
{
    for (int64_t k = 0; k < job->nodes; k++) {
        add(&pl->free[nodes[k]], &job->per_node, -1);
        add(&pl->total, &job->per_node, -1);
        if (from_left)
            add(&pl->left[nodes[k]], &job->per_node, -1);
        while (pl->first_free < pl->nnodes && pl->free[pl->first_free].cpus <= 0)
            pl->first_free++;
        if (job->time_limit > 0) {
            int rc = quota_plan_release(pl, nodes[k], &job->per_node, pl->now + job->time_limit);
            if (rc)
                return rc;
        }
    }
    return QUOTA_PLAN_START;
}

/* Earliest time the job fits as running jobs release their resources; sets
 * shadow and left[]. Nodes only gain resources as time passes, so a node
 * that fits keeps fitting and a count of fitting nodes suffices. */
static bool reserve(quota_plan *pl, const quota_plan_job *job, int *scratch)
{
    /* Two sorted runs, walked as one: the sorted prefix, and the rest sorted
     * now (usually just the jobs started earlier in this pass). */
    qsort(pl->rel + pl->sorted, pl->nrel - pl->sorted, sizeof *pl->rel, cmp_release);
    memcpy(pl->work, pl->free, (size_t)pl->nnodes * sizeof *pl->work);
    int64_t fitting = 0;
    for (int i = 0; i < pl->nnodes; i++)
        fitting += fits(&pl->work[i], &job->per_node);
    size_t a = 0, b = pl->sorted;
    int64_t at = pl->now;
    while (fitting < job->nodes && (a < pl->sorted || b < pl->nrel)) {
        bool from_a = b >= pl->nrel || (a < pl->sorted && pl->rel[a].end <= pl->rel[b].end);
        const release *r = from_a ? &pl->rel[a++] : &pl->rel[b++];
        quota_res *w = &pl->work[r->node];
        bool before = fits(w, &job->per_node);
        add(w, &r->res, 1);
        fitting += !before && fits(w, &job->per_node);
        at = r->end;
    }
    /* The rest of that instant's releases belong in left[] too. */
    for (; a < pl->sorted && pl->rel[a].end == at; a++)
        add(&pl->work[pl->rel[a].node], &pl->rel[a].res, 1);
    for (; b < pl->nrel && pl->rel[b].end == at; b++)
        add(&pl->work[pl->rel[b].node], &pl->rel[b].res, 1);
    if (fitting < job->nodes)
        return false;
    quota_res seen;
    scan(pl, pl->work, NULL, job, scratch, &seen);
    memcpy(pl->left, pl->work, (size_t)pl->nnodes * sizeof *pl->left);
    for (int64_t k = 0; k < job->nodes; k++)
        add(&pl->left[scratch[k]], &job->per_node, -1);
    pl->shadow = at;
    pl->reserved = true;
    return true;
}

int quota_plan_try(quota_plan *pl, const quota_plan_job *job, int *nodes_out)
{
    if (!pl || !job || !nodes_out || job->nodes < 1 || job->per_node.cpus < 0 ||
        job->per_node.gpus < 0 || job->per_node.mem < 0)
        return QUOTA_EARG;
    if (job->nodes > pl->nnodes)
        return QUOTA_PLAN_NEVER;
    bool fit_now = enough_in_total(pl, job);
    if (!pl->blocked) {
        if (fit_now && pick(pl, false, job, nodes_out))
            return take(pl, job, nodes_out, false);
        if (!reserve(pl, job, nodes_out))
            return QUOTA_PLAN_NEVER; /* does not block the jobs behind it */
        pl->blocked = true;
        return QUOTA_PLAN_RESERVED;
    }
    if (pl->mode != QUOTA_BACKFILL_EASY || !fit_now)
        return QUOTA_PLAN_WAIT;
    bool ends_before = job->time_limit > 0 && pl->now + job->time_limit <= pl->shadow;
    if (ends_before && pick(pl, false, job, nodes_out))
        return take(pl, job, nodes_out, false);
    if (pick(pl, true, job, nodes_out))
        return take(pl, job, nodes_out, true);
    return QUOTA_PLAN_WAIT;
}

int64_t quota_plan_shadow(const quota_plan *pl)
{
    return pl && pl->reserved ? pl->shadow : -1;
}

int quota_plan_full(const quota_plan *pl)
{
    return !pl || pl->total.cpus <= 0;
}
