/* quota_plan.h: the EASY backfill planner, shared by commonsd and the simulator.
 *
 * One scheduling pass:
 *   quota_plan_begin(pl, now, mode, free)     free resources of each node now
 *   quota_plan_release(pl, node, res, end)    for each running job, per node:
 *                                             what it gives back at start+time limit
 *   quota_plan_try(pl, &job, nodes) ...       for each pending job, in priority order
 *
 * EASY (Lifka 1995; Mu'alem & Feitelson 2001): jobs start in priority order
 * while they fit. The first job that does not fit gets a reservation at the
 * earliest time enough resources are released (by the running jobs' time
 * limits) on enough nodes: the shadow time. Later jobs start now only if they
 * fit now and either end (by their time limit) before the shadow time, or fit
 * in what the reservation leaves on their nodes at the shadow time, so they
 * never delay it. With QUOTA_BACKFILL_NONE nothing starts after the first
 * job that does not fit (strict priority order).
 *
 * Placement is per node and multi-resource (CPUs, GPUs, memory): a job asks
 * for `nodes` nodes with `per_node` resources on each, first fit by node index.
 * Limits are the caller's business (quota_check_start) before quota_plan_try.
 * Not thread-safe; one planner per scheduler.
 */
#ifndef COMMONS_QUOTA_PLAN_H
#define COMMONS_QUOTA_PLAN_H

#include <stdint.h>

#include "quota_policy.h" /* return codes */

typedef struct quota_res {
    int64_t cpus, gpus, mem; /* mem in bytes (or any unit, used consistently) */
} quota_res;

typedef enum quota_backfill {
    QUOTA_BACKFILL_NONE = 0,
    QUOTA_BACKFILL_EASY = 1
} quota_backfill;

typedef enum quota_plan_verdict {
    QUOTA_PLAN_START = 0,    /* start now on the nodes returned */
    QUOTA_PLAN_RESERVED = 1, /* first blocked job: reserved at the shadow time */
    QUOTA_PLAN_WAIT = 2,     /* blocked behind the reservation (or no backfill) */
    QUOTA_PLAN_NEVER = 3     /* cannot fit on the nodes as given even when every
                              * running job ends (too big, or nodes down); it
                              * does not block the jobs behind it */
} quota_plan_verdict;

typedef struct quota_plan_job {
    int64_t nodes;          /* >= 1 */
    quota_res per_node;
    int64_t time_limit;     /* seconds; <= 0 means none (runs past any shadow time) */
} quota_plan_job;

typedef struct quota_plan quota_plan;

/* A planner for clusters of up to nnodes nodes; NULL when out of memory. */
quota_plan *quota_plan_new(int nnodes);
void quota_plan_free(quota_plan *pl);

/* Starts a pass: free[i] is what node i has free now (0 for nodes that are
 * down or drained). Forgets the previous pass. */
int quota_plan_begin(quota_plan *pl, int64_t now, quota_backfill mode, const quota_res *free);

/* A running job returns res on node at end (start + time limit; an end in
 * the past counts as now). Call for every running job before the first
 * quota_plan_try of a pass; jobs started by quota_plan_try are added by it. */
int quota_plan_release(quota_plan *pl, int node, const quota_res *res, int64_t end);

/* Decides one pending job. With QUOTA_PLAN_START, nodes_out (job->nodes
 * entries) gets the chosen node indices and the planner counts them as used
 * from now on. Returns a quota_plan_verdict, or QUOTA_EARG/QUOTA_ENOMEM (< 0). */
int quota_plan_try(quota_plan *pl, const quota_plan_job *job, int *nodes_out);

/* The pass's reservation: its shadow (start) time, or -1 when none yet. */
int64_t quota_plan_shadow(const quota_plan *pl);

/* True when no node has any CPU free now: nothing else can start this pass. */
int quota_plan_full(const quota_plan *pl);

#endif
