/* quota_priority.h: multifactor job priority, as Slurm's priority/multifactor
 * plugin defines it (docs/policy.md has the formulas).
 *
 *   total = w_fs * F_fs + w_age * F_age + w_size * F_size + w_qos * F_qos
 *
 *   F_fs   = the job's account fair-share factor (quota_share_row.fs_factor)
 *   F_age  = min(age, max_age) / max_age
 *   F_size = min(cpus, cluster_cpus) / cluster_cpus, or 1 - that with
 *            favor_small (Slurm also averages in a node-count term; Commons
 *            jobs are sized in CPUs, so only the CPU term is used)
 *   F_qos  = qos.priority / (largest priority over all QOS), 0 if that is 0
 *
 * Every factor is clamped to [0,1]; weights come from policy->priority.
 */
#ifndef COMMONS_QUOTA_PRIORITY_H
#define COMMONS_QUOTA_PRIORITY_H

#include <stdint.h>

#include "quota_policy.h"

typedef struct quota_prio_parts {
    double fairshare, age, size, qos;
} quota_prio_parts;

typedef struct quota_prio {
    double total;              /* sum of weighted */
    quota_prio_parts weighted; /* factor * weight: what sprio prints */
    quota_prio_parts factor;   /* each in [0,1] */
} quota_prio;

/* qos < 0 or out of range uses the default QOS. age_seconds < 0 counts as 0
 * (a submit time in the future); cluster_cpus <= 0 makes F_size 0. */
quota_prio quota_priority(const quota_policy *p, double fairshare_factor, double age_seconds,
                          int64_t job_cpus, int64_t cluster_cpus, int qos);

#endif
