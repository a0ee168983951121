/* quota_sim.h: the virtual-time simulator core behind `commons sim`.
 *
 * Replays jobs (e.g. from a Standard Workload Format trace, quota_swf.h)
 * through the same policy code commonsd uses: Fair Tree fair-share with
 * decayed usage, multifactor priority, account limits, and the EASY planner.
 * No sockets, no sleeping, no storage: time jumps from event to event (job
 * submissions and ends). Each job runs for min(runtime, time_limit), the
 * scheduler only ever seeing the time limit, as in the trace studies.
 *
 * At each event time the pass: decays usage (charging running jobs exactly,
 * as the integral of their rate under the decay), recomputes fair-share,
 * orders pending jobs (FIFO: by submit time; multifactor: by quota_priority,
 * then submit time, then id), skips jobs held by limits (running-resource and
 * wall-time limits; budgets are not simulated) and hands the rest to the
 * planner. Passes are skipped while no CPU is free.
 */
#ifndef COMMONS_QUOTA_SIM_H
#define COMMONS_QUOTA_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quota_plan.h"
#include "quota_policy.h"

typedef struct quota_sim_job {
    /* in */
    int64_t id;
    int64_t submit;      /* seconds, any origin */
    int64_t runtime;     /* actual run time; >= 0 */
    int64_t time_limit;  /* requested time; <= 0 means none (runs its runtime) */
    int account;         /* a leaf account of the policy */
    int qos;             /* -1: the default QOS */
    int64_t nodes;       /* >= 1 */
    quota_res per_node;
    /* out */
    int64_t start, end;  /* -1 when it never started (too big, or held forever) */
} quota_sim_job;

typedef enum quota_sim_order {
    QUOTA_SIM_FIFO = 0,
    QUOTA_SIM_MULTIFACTOR = 1
} quota_sim_order;

typedef struct quota_sim_config {
    const quota_policy *policy;
    int nnodes;
    quota_res node;          /* every node alike */
    quota_sim_order order;
    quota_backfill backfill;
    bool limits;             /* enforce the policy's running and wall-time limits */
    int64_t bucket;          /* seconds per delivered-share sample; <= 0: 1 day */
} quota_sim_config;

typedef struct quota_sim_result {
    size_t jobs, started, never;
    double mean_wait, median_wait;   /* seconds, over started jobs */
    double mean_bounded_slowdown;    /* max(1, (wait+run)/max(run, 10 s)) */
    double utilization;              /* CPU-seconds run / (CPUs * makespan) */
    int64_t first_submit, last_end, makespan; /* makespan = last_end - first_submit */
    int64_t passes;                  /* scheduling passes run */
    /* Delivered service: billing units (quota_billing_rate, no QOS factor)
     * per leaf account per bucket; bucket b covers
     * [first_submit + b*bucket, first_submit + (b+1)*bucket). */
    int naccounts, nbuckets;
    int64_t bucket;
    double *delivered;               /* [b * naccounts + account] */
} quota_sim_result;

/* Runs the simulation; fills jobs[].start/end and *out (free with
 * quota_sim_result_free). jobs need not be sorted. Returns QUOTA_OK,
 * QUOTA_EARG (bad config or a job naming a bad account/QOS, reported in err)
 * or QUOTA_ENOMEM. */
int quota_sim_run(const quota_sim_config *cfg, quota_sim_job *jobs, size_t njobs,
                  quota_sim_result *out, char *err, size_t errlen);
void quota_sim_result_free(quota_sim_result *r);

#endif
