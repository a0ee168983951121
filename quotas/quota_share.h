/* quota_share.h: billed usage, decay, and Fair Tree fair-share (docs/policy.md).
 *
 * Usage is kept by the caller in a plain array indexed like policy->accounts:
 * self_usage[i] = decayed billed usage charged directly to account i (only
 * leaves are charged). Store it keyed by account name so it survives policy
 * changes; rebuild the array with quota_account_find() after a reload. The
 * functions here roll it up to every ancestor themselves.
 */
#ifndef COMMONS_QUOTA_SHARE_H
#define COMMONS_QUOTA_SHARE_H

#include <stdint.h>

#include "quota_policy.h"

/* Billing units per second of a job, before the QOS usage factor:
 * billing.cpu*cpus + billing.gpu*gpus + billing.mem_per_gb*mem_bytes/2^30.
 * Negative inputs count as 0. */
double quota_billing_rate(const quota_policy *p, int64_t cpus, int64_t gpus, int64_t mem_bytes);

/* Billing units for running a job: seconds * usage_factor(qos) *
 * (billing.cpu*cpus + billing.gpu*gpus + billing.mem_per_gb*mem_bytes/2^30).
 * qos < 0 uses the default QOS. Negative inputs count as 0. */
double quota_billed(const quota_policy *p, int64_t cpus, int64_t gpus, int64_t mem_bytes,
                    double seconds, int qos);

/* usage * 2^(-dt/half_life). half_life <= 0 (decay off) or dt <= 0 returns usage.
 * Decaying in several steps equals decaying once over their sum. */
double quota_usage_decay(double usage, double dt_seconds, int64_t half_life);

/* total[i] = sum of self[j] over i's subtree (total[0] = whole cluster). */
void quota_usage_rollup(const quota_policy *p, const double *self, double *total);

/* An account's share of the whole cluster by policy: the product of the
 * normalized shares on its path from the root (1 for the root). What
 * delivered service is compared against. */
double quota_global_share(const quota_policy *p, int account);

/* One row of the sshare-like table, for account rows[i].account == i. */
typedef struct quota_share_row {
    int64_t raw_shares;   /* from the policy */
    double norm_shares;   /* raw_shares / sum of raw shares of it and its siblings */
    double raw_usage;     /* decayed usage of its subtree (rolled up) */
    double norm_usage;    /* raw_usage / the whole cluster's usage (0 when none) */
    double effective_usage; /* raw_usage / its parent's raw_usage (0 when the parent has none) */
    double level_fs;      /* norm_shares / effective_usage; INFINITY with no usage; 0 for root */
    double fs_factor;     /* leaves: rank / nleaves in (0,1]; inner accounts and root: 0 */
    int rank;             /* leaves: Fair Tree rank, nleaves = best; others 0 */
} quota_share_row;

/* Fair Tree over the whole tree. self_usage: see above (negative counts as 0).
 * rows: policy->naccounts entries, filled for every account. Leaves are ranked
 * depth first, siblings by descending level_fs; ties (equal within a relative
 * 1e-9) follow Slurm: tied leaves share a rank, tied inner accounts have their
 * children merged and ranked together. Returns QUOTA_OK, QUOTA_EARG or
 * QUOTA_ENOMEM. O(n log n) in the number of accounts. */
int quota_fairshare(const quota_policy *p, const double *self_usage, quota_share_row *rows);

#endif
