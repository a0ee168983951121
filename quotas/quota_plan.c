/* quota_plan.c: the EASY backfill planner (quota_plan.h).
 *
 * Per pass the planner holds: free[] (now), the releases of running jobs, and
 * once a job is blocked, the reservation: shadow time and left[] = what each
 * node will have free at the shadow time after the reserved job takes its
 * share. A backfilled job that may still run at the shadow time is charged to
 * left[] too, which is what keeps the reservation intact.
 *
 * Finding nodes is the hot path (100k pending jobs, 10k nodes): max-trees
 * over free CPUs (and over min(free, left) CPUs) find the next node with
 * enough CPUs in O(log n), and failed searches are remembered, since free[]
 * and left[] only shrink during a pass: a job needing at least as much per
 * node on at least as many nodes as one that failed fails too. */
#include "quota_plan.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct release {
    int64_t end;
    int node;
    quota_res res;
} release;

#define NFAILED 8

struct quota_plan {
    int nnodes, size;       /* size: leaves of the trees, a power of two */
    int64_t now;
    quota_backfill mode;
    quota_res *free, *left, *work;
    quota_res total;        /* sum of free[] */
    int64_t *tree[2];       /* max-trees: [0] free CPUs, [1] min(free, left) CPUs */
    release *rel;
    size_t nrel, caprel;
    size_t sorted;          /* rel[0, sorted) is in time order (callers usually add them so) */
    bool reserved, blocked; /* a reservation exists / a job could not start */
    int64_t shadow;
    quota_plan_job failed[2][NFAILED];
    unsigned nfailed[2];
};

quota_plan *quota_plan_new(int nnodes)
{
    if (nnodes < 0)
        return NULL;
    quota_plan *pl = calloc(1, sizeof *pl);
    if (!pl)
        return NULL;
    size_t n = (size_t)(nnodes ? nnodes : 1);
    pl->nnodes = nnodes;
    pl->size = 1;
    while (pl->size < nnodes)
        pl->size *= 2;
    pl->free = calloc(n, sizeof *pl->free);
    pl->left = calloc(n, sizeof *pl->left);
    pl->work = calloc(n, sizeof *pl->work);
    pl->tree[0] = calloc(2 * (size_t)pl->size, sizeof *pl->tree[0]);
    pl->tree[1] = calloc(2 * (size_t)pl->size, sizeof *pl->tree[1]);
    if (!pl->free || !pl->left || !pl->work || !pl->tree[0] || !pl->tree[1]) {
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
    free(pl->tree[0]);
    free(pl->tree[1]);
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

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* CPUs node i offers to a job in tree k: free now, and for k = 1 also at the
 * shadow time. */
static int64_t cpus_for(const quota_plan *pl, int k, int i)
{
    return k ? min64(pl->free[i].cpus, pl->left[i].cpus) : pl->free[i].cpus;
}

static void tree_build(quota_plan *pl, int k)
{
    int64_t *t = pl->tree[k];
    for (int i = 0; i < pl->size; i++)
        t[pl->size + i] = i < pl->nnodes ? cpus_for(pl, k, i) : -1; /* padding fits nothing */
    for (int i = pl->size - 1; i > 0; i--)
        t[i] = max64(t[2 * i], t[2 * i + 1]);
}

static void tree_update(quota_plan *pl, int k, int node)
{
    int64_t *t = pl->tree[k];
    int i = pl->size + node;
    t[i] = cpus_for(pl, k, node);
    for (i /= 2; i > 0; i /= 2)
        t[i] = max64(t[2 * i], t[2 * i + 1]);
}

/* Smallest node index >= from with at least need CPUs in tree k, or -1. */
static int tree_first(const quota_plan *pl, int k, int from, int64_t need)
{
    const int64_t *t = pl->tree[k];
    if (from >= pl->size)
        return -1;
    int i = pl->size + from;
    for (;;) {
        if (t[i] >= need) {
            while (i < pl->size)
                i = t[2 * i] >= need ? 2 * i : 2 * i + 1;
            return i - pl->size < pl->nnodes ? i - pl->size : -1;
        }
        while (i & 1) { /* a right child: its right neighbours are the parent's */
            if (i == 1)
                return -1;
            i /= 2;
        }
        i++;
    }
}

int quota_plan_begin(quota_plan *pl, int64_t now, quota_backfill mode, const quota_res *free_now)
{
    if (!pl || !free_now)
        return QUOTA_EARG;
    pl->now = now;
    pl->mode = mode;
    pl->nrel = pl->sorted = 0;
    pl->nfailed[0] = pl->nfailed[1] = 0;
    pl->reserved = pl->blocked = false;
    pl->shadow = -1;
    memset(&pl->total, 0, sizeof pl->total);
    for (int i = 0; i < pl->nnodes; i++) {
        pl->free[i] = free_now[i];
        add(&pl->total, &free_now[i], 1);
    }
    tree_build(pl, 0);
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

static bool dominates(const quota_plan_job *job, const quota_plan_job *failed)
{
    return job->nodes >= failed->nodes && fits(&job->per_node, &failed->per_node);
}

/* The first job->nodes nodes (by index) where the job fits now, and with_left
 * also at the shadow time. */
static bool pick(quota_plan *pl, bool with_left, const quota_plan_job *job, int *out)
{
    int k = with_left;
    unsigned known = pl->nfailed[k] < NFAILED ? pl->nfailed[k] : NFAILED;
    for (unsigned f = 0; f < known; f++)
        if (dominates(job, &pl->failed[k][f]))
            return false;
    int64_t got = 0;
    for (int i = tree_first(pl, k, 0, job->per_node.cpus); i >= 0 && got < job->nodes;
         i = tree_first(pl, k, i + 1, job->per_node.cpus))
        if (fits(&pl->free[i], &job->per_node) && (!with_left || fits(&pl->left[i], &job->per_node)))
            out[got++] = i;
    if (got == job->nodes)
        return true;
    pl->failed[k][pl->nfailed[k]++ % NFAILED] = *job;
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
        int n = nodes[k];
        add(&pl->free[n], &job->per_node, -1);
        add(&pl->total, &job->per_node, -1);
        if (from_left)
            add(&pl->left[n], &job->per_node, -1);
        tree_update(pl, 0, n);
        if (pl->reserved)
            tree_update(pl, 1, n);
        if (job->time_limit > 0) {
            int rc = quota_plan_release(pl, n, &job->per_node, pl->now + job->time_limit);
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
    if (pl->nrel > pl->sorted) /* qsort of nothing on a NULL array is undefined */
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
    if (fitting < job->nodes)
        return false;
    /* The rest of that instant's releases belong in left[] too. */
    for (; a < pl->sorted && pl->rel[a].end == at; a++)
        add(&pl->work[pl->rel[a].node], &pl->rel[a].res, 1);
    for (; b < pl->nrel && pl->rel[b].end == at; b++)
        add(&pl->work[pl->rel[b].node], &pl->rel[b].res, 1);
    int64_t got = 0;
    for (int i = 0; i < pl->nnodes && got < job->nodes; i++)
        if (fits(&pl->work[i], &job->per_node))
            scratch[got++] = i;
    memcpy(pl->left, pl->work, (size_t)pl->nnodes * sizeof *pl->left);
    for (int64_t k = 0; k < job->nodes; k++)
        add(&pl->left[scratch[k]], &job->per_node, -1);
    pl->shadow = at;
    pl->reserved = true;
    tree_build(pl, 1);
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
    return !pl || pl->tree[0][1] <= 0;
}
