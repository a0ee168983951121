/* sched_pass.c: one scheduling pass of commonsd.
 *
 * Order: with no policy, submission order; with a policy, multifactor
 * priority (fair-share, age, size, QOS; quotas/quota_priority.h), ties by
 * submission. Then, for each pending job in that order: holds, dependencies
 * and array throttles keep it waiting without blocking others; policy limits
 * likewise (quota_check_start); everything else goes to the EASY planner
 * (quotas/quota_plan.h), the same planner the simulator uses, which starts
 * what fits and reserves the first blocked job's start so that backfilled
 * jobs never delay it. With --backfill none nothing passes a blocked job.
 */
#include "cluster.h"

#include "cm_log.h"
#include "cm_crypto.h"
#include "cm_util.h"

#include <stdlib.h>
#include <string.h>

void sched_order_fifo(struct cluster *c, int64_t *ids, size_t n)
{
    (void)c;
    (void)ids;
    (void)n; /* pending[] is kept in submission order */
}

/* Sort keys live in one array so the sort does not chase job pointers. */
struct prio_key {
    double total;
    int64_t submit, id;
};

static int by_priority(const void *a, const void *b)
{
    const struct prio_key *x = a, *y = b;
    if (x->total != y->total) return x->total > y->total ? -1 : 1;
    if (x->submit != y->submit) return x->submit < y->submit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

void sched_order_multifactor(struct cluster *c, int64_t *ids, size_t n)
{
    quota_share_row *rows = cluster_fairshare(c);
    if (!rows) return;
    int64_t cluster_cpus = 0, now = cm_now_ms() / 1000;
    for (int i = 0; i < c->nnodes; i++) cluster_cpus += c->nodes[i].cpus;
    struct prio_key *keys = malloc(sizeof *keys * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        struct job *j = c->jobs[ids[i]];
        int a = cluster_job_account(c, j);
        double fs = a >= 0 ? rows[a].fs_factor : 0;
        j->prio = quota_priority(c->policy, fs, (double)(now - j->submit_time),
                                 (int64_t)job_cpus_per_node(j) * j->nodes, cluster_cpus, cluster_job_qos(c, j));
        keys[i] = (struct prio_key){j->prio.total, j->submit_time, j->id};
    }
    free(rows);
    qsort(keys, n, sizeof *keys, by_priority);
    for (size_t i = 0; i < n; i++) ids[i] = keys[i].id;
    free(keys);
}

/* 1: all dependencies met; 0: some may still be; -1: one never can be. */
static int deps_state(struct cluster *c, const struct job *j)
{
    int ready = 1;
    for (int i = 0; i < j->ndeps; i++) {
        struct job *d = cluster_job(c, j->deps[i].id);
        if (!d) continue;
        if (!job_state_is_final(d->state)) ready = 0;
        else if (j->deps[i].kind == DEP_AFTEROK && d->state != JOB_COMPLETED) return -1;
    }
    return ready;
}

static int array_running(struct cluster *c, int64_t array_id)
{
    int n = 0;
    for (int64_t id = array_id; id < c->next_id; id++) {
        struct job *j = c->jobs[id];
        if (!j || j->array_job_id != array_id) break; /* array tasks have consecutive ids */
        n += j->state == JOB_RUNNING;
    }
    return n;
}

static quota_res job_res(const struct job *j)
{
    return (quota_res){.cpus = job_cpus_per_node(j), .gpus = j->gpus, .mem = j->mem_mb};
}

/* Sets up the planner with what every node has free and what each running
 * job gives back at its time limit. */
static int plan_begin(struct cluster *c, int64_t now)
{
    if (!c->plan || c->plan_nodes != c->nnodes) {
        quota_plan_free(c->plan);
        c->plan = quota_plan_new(c->nnodes > 0 ? c->nnodes : 1);
        c->plan_nodes = c->nnodes;
        if (!c->plan) return -1;
    }
    quota_res *free_now = calloc((size_t)(c->nnodes > 0 ? c->nnodes : 1), sizeof *free_now);
    for (int i = 0; i < c->nnodes; i++) {
        struct node *n = &c->nodes[i];
        if (n->state != NODE_UP || n->drain) continue;
        free_now[i].cpus = n->cpus - n->used_cpus;
        free_now[i].gpus = n->gpus - n->used_gpus;
        /* A node that reports no memory is not limited by memory. */
        free_now[i].mem = n->memory_mb ? n->memory_mb - n->used_mem : INT64_MAX / 4;
    }
    int rc = quota_plan_begin(c->plan, now, c->set.backfill, free_now);
    free(free_now);
    if (rc != QUOTA_OK) return -1;
    for (int64_t id = 1; id < c->next_id; id++) {
        struct job *j = c->jobs[id];
        if (!j || j->released || !j->nalloc) continue;
        quota_res r = job_res(j);
        for (int k = 0; k < j->nalloc; k++)
            if (c->nodes[j->alloc[k]].state == NODE_UP && !c->nodes[j->alloc[k]].drain)
                quota_plan_release(c->plan, j->alloc[k], &r, j->start_time + j->time_limit_s);
    }
    return 0;
}

static void start_job(struct cluster *c, struct job *j, const int *nodes, int64_t now)
{
    job_free_places(j);
    free(j->alloc);
    j->alloc = malloc(sizeof *j->alloc * (size_t)j->nodes);
    memcpy(j->alloc, nodes, sizeof *nodes * (size_t)j->nodes);
    j->nalloc = j->nodes;
    /* Nodes that reported a topology get specific PUs and GPUs (node.c). */
    for (int i = 0; i < j->nalloc; i++) {
        struct job_place p;
        if (node_pick(&c->nodes[j->alloc[i]], job_cpus_per_node(j), j->gpus, &p) != 0) continue;
        if (!j->place) j->place = calloc((size_t)j->nalloc, sizeof *j->place);
        j->place[i] = p;
    }
    if (cm_random_hex(32, j->step_key) != 0) j->step_key[0] = '\0';
    j->released = 0;
    j->launched = 0;
    j->launch_sent_ms = 0;
    j->missing_since_ms = 0;
    cluster_job_use(c, j, +1);
    j->state = JOB_RUNNING;
    j->reason[0] = '\0';
    j->start_time = now;
    cluster_job_save(c, j);
    c->qstate_valid = 0;
}

#define PREEMPT_MAX_PER_PASS 16

/* May QOS a preempt QOS v? */
static int qos_preempts(const quota_policy *p, int a, int v)
{
    if (a < 0 || v < 0 || !p->qos[v].preemptible) return 0;
    for (int i = 0; i < p->qos[a].npreempts; i++)
        if (p->qos[a].preempts[i] == v) return 1;
    return 0;
}

/* For a blocked single-node job whose QOS may preempt others: find one node
 * where its free resources plus those of preemptible running jobs (youngest
 * first) would fit it, and preempt just enough of them. Returns 1 if it did. */
static int preempt_for(struct cluster *c, struct job *j)
{
    const quota_policy *p = c->policy;
    int q = cluster_job_qos(c, j);
    if (q < 0) q = p->default_qos;
    if (j->nodes != 1 || p->qos[q].npreempts == 0) return 0;
    int cpus = job_cpus_per_node(j);
    for (int64_t id = 1; id < c->next_id; id++) /* already preempting for it: wait */
        if (c->jobs[id] && c->jobs[id]->preempted_by == j->id && !c->jobs[id]->released) return 0;
    for (int ni = 0; ni < c->nnodes; ni++) {
        struct node *n = &c->nodes[ni];
        if (n->state != NODE_UP || n->drain || n->cpus < cpus || n->gpus < j->gpus) continue;
        int fc = n->cpus - n->used_cpus, fg = n->gpus - n->used_gpus;
        int64_t fm = n->memory_mb ? n->memory_mb - n->used_mem : INT64_MAX / 4;
        /* Victims on this node, youngest first, so the least work is lost. */
        struct job *victims[256];
        int nv = 0;
        for (int64_t id = c->next_id - 1; id >= 1 && nv < 256; id--) {
            struct job *v = c->jobs[id];
            if (!v || v->state != JOB_RUNNING || v->kill_pending || v->released || v->nalloc != 1 || v->alloc[0] != ni)
                continue;
            if (qos_preempts(p, q, cluster_job_qos(c, v))) victims[nv++] = v;
        }
        for (int a = 0; a < nv; a++)
            for (int b = a + 1; b < nv; b++)
                if (victims[b]->start_time > victims[a]->start_time) {
                    struct job *x = victims[a];
                    victims[a] = victims[b];
                    victims[b] = x;
                }
        int take = 0;
        while ((fc < cpus || fg < j->gpus || fm < j->mem_mb) && take < nv) {
            fc += job_cpus_per_node(victims[take]);
            fg += victims[take]->gpus;
            fm += victims[take]->mem_mb;
            take++;
        }
        if (fc < cpus || fg < j->gpus || fm < j->mem_mb) continue;
        for (int k = 0; k < take; k++) cluster_job_preempt(c, victims[k], j, p->qos[cluster_job_qos(c, victims[k])].name);
        return take > 0;
    }
    return 0;
}

int cluster_schedule(struct cluster *c)
{
    c->dirty = 0;
    cluster_services_reconcile(c);
    int64_t now = cm_now_ms() / 1000;
    if (c->policy) sched_order_multifactor(c, c->pending, c->npending);
    else c->order(c, c->pending, c->npending);
    if (plan_begin(c, now) != 0) {
        cm_error("scheduling pass skipped: out of memory");
        return 0;
    }
    quota_state *qs = cluster_qstate(c);
    int started = 0;
    int *nodes = malloc(sizeof *nodes * JOB_MAX_ALLOC_NODES);
    size_t keep = 0;
    for (size_t i = 0; i < c->npending; i++) {
        struct job *j = c->jobs[c->pending[i]];
        const char *reason = NULL;
        if (j->hold) reason = "Held";
        else {
            int d = deps_state(c, j);
            if (d < 0) reason = "DependencyNeverSatisfied";
            else if (d == 0) reason = "Dependency";
            else if (j->array_throttle && array_running(c, j->array_job_id) >= j->array_throttle)
                reason = "ArrayTaskLimit";
        }
        quota_request req = {0};
        if (!reason && qs) {
            req.account = cluster_job_account(c, j);
            req.qos = cluster_job_qos(c, j);
            req.cpus = (int64_t)job_cpus_per_node(j) * j->nodes;
            req.gpus = (int64_t)j->gpus * j->nodes;
            req.mem = j->mem_mb * j->nodes * 1048576LL;
            req.time_limit = j->time_limit_s;
            quota_verdict v;
            if (req.account < 0) reason = "InvalidAccount";
            else if (quota_check_start(c->policy, qs, &req, &v) != QUOTA_REASON_NONE)
                reason = quota_reason_name(v.reason);
        }
        if (!reason) {
            quota_plan_job pj = {.nodes = j->nodes, .per_node = job_res(j), .time_limit = j->time_limit_s};
            int verdict = quota_plan_try(c->plan, &pj, nodes);
            if (verdict == QUOTA_PLAN_START) {
                start_job(c, j, nodes, now);
                if (qs) {
                    quota_state delta = {.cpus = req.cpus, .gpus = req.gpus, .mem = req.mem, .jobs = 1, .queued = -1};
                    quota_state_add(c->policy, qs, req.account, &delta);
                    c->qstate_valid = 1; /* kept exact by hand within the pass */
                }
                started++;
                continue;
            }
            reason = verdict == QUOTA_PLAN_RESERVED ? "Resources"
                     : verdict == QUOTA_PLAN_WAIT   ? "Priority"
                     : verdict == QUOTA_PLAN_NEVER  ? "ReqNodeNotAvail"
                                                    : "Resources";
        }
        size_t rl = strlen(reason);
        if (rl >= sizeof j->reason) rl = sizeof j->reason - 1;
        memcpy(j->reason, reason, rl); /* a pass sets every pending job's reason: no printf here */
        j->reason[rl] = '\0';
        c->pending[keep++] = c->pending[i];
    }
    free(nodes);
    c->npending = keep;
    /* Preemption: the highest-priority blocked jobs whose QOS may preempt others. */
    if (c->policy) {
        int tried = 0;
        for (size_t i = 0; i < c->npending && tried < PREEMPT_MAX_PER_PASS; i++) {
            struct job *j = c->jobs[c->pending[i]];
            if (strcmp(j->reason, "Resources") && strcmp(j->reason, "Priority")) continue;
            int q = cluster_job_qos(c, j);
            if (c->policy->qos[q < 0 ? c->policy->default_qos : q].npreempts == 0) continue;
            tried++;
            if (preempt_for(c, j)) snprintf(j->reason, sizeof j->reason, "Preempting");
        }
    }
    c->stats.started += (uint64_t)started;
    return started;
}
