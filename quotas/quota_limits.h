/* quota_limits.h: which policy limit keeps a job from starting, or rejects it
 * at submit time, as a fixed reason string (docs/policy.md, "Pending reasons").
 *
 * Account limits apply to a whole subtree: a limit on uni-a caps the sum over
 * uni-a and everything below it. So the caller keeps per-account totals that
 * include descendants; quota_state_add() charges a delta to an account and all
 * its ancestors, which keeps that invariant. Typical use in a scheduling pass:
 * zero the array, quota_state_add() each running job (and each queued job with
 * .queued = 1), quota_budget_charge() the jobs of the budget periods, then
 * call quota_check_start() for pending jobs in priority order, adding each
 * job that starts.
 */
#ifndef COMMONS_QUOTA_LIMITS_H
#define COMMONS_QUOTA_LIMITS_H

#include <stdint.h>
#include <time.h>

#include "quota_policy.h"

typedef enum quota_reason {
    QUOTA_REASON_NONE = 0,        /* "None": no limit applies */
    QUOTA_REASON_ACCOUNT_CPU,     /* "AccountCPULimit": max_running_cpus reached */
    QUOTA_REASON_ACCOUNT_GPU,     /* "AccountGPULimit" */
    QUOTA_REASON_ACCOUNT_MEM,     /* "AccountMemLimit" */
    QUOTA_REASON_ACCOUNT_JOBS,    /* "AccountJobLimit": max_running_jobs reached */
    QUOTA_REASON_ACCOUNT_QUEUED,  /* "AccountQueuedJobLimit": max_queued_jobs (submit) */
    QUOTA_REASON_QOS_MAX_WALL,    /* "QOSMaxWall": time limit above the QOS max_wall */
    QUOTA_REASON_ACCOUNT_MAX_WALL,/* "AccountMaxWall" */
    QUOTA_REASON_BUDGET,          /* "BudgetExhausted": CPU- or GPU-hour budget */
    QUOTA_REASON_INVALID_USER,    /* "InvalidUser": not in the policy (submit) */
    QUOTA_REASON_INVALID_ACCOUNT, /* "InvalidAccount": unknown or not a leaf (submit) */
    QUOTA_REASON_ACCOUNT_DENIED,  /* "AccountNotAllowed": user may not charge it (submit) */
    QUOTA_REASON_INVALID_QOS,     /* "InvalidQOS" (submit) */
    QUOTA_REASON_COUNT
} quota_reason;

/* The fixed reason string ("AccountGPULimit"...); "Unknown" when out of range. */
const char *quota_reason_name(quota_reason r);

/* Per-account totals; in an array indexed like policy->accounts, each entry
 * covers the account's whole subtree. */
typedef struct quota_state {
    int64_t cpus, gpus, mem;      /* running: CPUs, GPUs, memory bytes */
    int64_t jobs;                 /* running jobs */
    int64_t queued;               /* pending jobs */
    double cpu_seconds;           /* consumed in the current budget period */
    double gpu_seconds;           /* (finished jobs plus elapsed part of running ones) */
} quota_state;

/* Adds delta to states[account] and to every ancestor (root included). */
void quota_state_add(const quota_policy *p, quota_state *states, int account,
                     const quota_state *delta);

/* Budget counters: charges cpus and gpus over [from, to) to account and each
 * ancestor, counting for each only the part inside that account's current
 * budget period ([quota_period_start(its period, now), now)), since
 * ancestors may reset on other days than their children. Call it for each
 * job that ran since the longest period began (finished: start..end;
 * running: start..now) to fill cpu_seconds/gpu_seconds before checking. */
void quota_budget_charge(const quota_policy *p, quota_state *states, int account,
                         int64_t cpus, int64_t gpus, time_t from, time_t to, time_t now);

/* What a job asks for. qos < 0 means the default QOS. */
typedef struct quota_request {
    int account;          /* index of a leaf account */
    int qos;
    int64_t cpus, gpus, mem; /* mem in bytes */
    int64_t time_limit;   /* seconds; also what budgets reserve */
} quota_request;

typedef struct quota_verdict {
    quota_reason reason;
    int account;          /* account whose limit applied, -1 for none / QOS */
    char detail[256];     /* e.g. "uni-a runs 8 of max 8 GPUs; job asks 2" */
} quota_verdict;

/* May the job start now given states (which must not yet include it)? Checks,
 * in this order: QOS max wall, account max wall, running CPU/GPU/memory/job
 * limits, then budgets, each on the account and every ancestor, nearest first.
 * A budget holds a job when used + cpus*time_limit (gpus*time_limit for GPU
 * hours) would exceed it, so started jobs never overrun a budget.
 * Returns v->reason (QUOTA_REASON_NONE when it may start). */
quota_reason quota_check_start(const quota_policy *p, const quota_state *states,
                               const quota_request *req, quota_verdict *v);

/* May the user submit it? user is an index (-1: unknown). Rejects unknown
 * users, accounts that are unknown or not leaves or not the user's, unknown
 * QOS, wall-time limits, the queued-job limit (states must not include the
 * job), and requests that no running limit could ever admit (more CPUs than
 * max_running_cpus, ...) so they are not queued forever. */
quota_reason quota_check_submit(const quota_policy *p, const quota_state *states, int user,
                                const quota_request *req, quota_verdict *v);

/* Start (UTC) of the budget period containing now: midnight, Monday midnight
 * or the 1st of the month. Budgets count usage since this instant. */
time_t quota_period_start(quota_period period, time_t now);

#endif
