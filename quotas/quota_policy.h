/* quota_policy.h: the Commons quota policy (docs/policy.md) as a validated,
 * read-only model shared by commonsd, the simulator and the CLI.
 *
 * Load with quota_policy_load_file()/_string(); every problem lands in the
 * quota_diags (all of them, with line:column and field path). A policy with any
 * error is never returned. The returned policy is immutable: callers read its
 * arrays directly and keep per-account state (usage, running totals) in their
 * own arrays indexed like policy->accounts.
 *
 * Invariants of a loaded policy:
 *  - accounts[0] is the implicit root "root" (parent -1, depth 0); the policy's
 *    top-level accounts are its children.
 *  - accounts are in pre-order: a parent comes before its children, and the
 *    subtree of account i is exactly the indices [i, accounts[i].subtree_end).
 *  - jobs are charged only to leaf accounts (no children); every user's
 *    accounts are leaves.
 *  - names are unique within accounts, users, qos and tiers.
 *  - QUOTA_UNLIMITED (-1) stands for "no limit" in every int64 limit.
 */
#ifndef COMMONS_QUOTA_POLICY_H
#define COMMONS_QUOTA_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "quota_diag.h"
#include "quota_units.h"

/* Return codes of the quotas library. */
enum {
    QUOTA_OK = 0,
    QUOTA_EINVALID = -1, /* the policy has errors (see the diagnostics) */
    QUOTA_EIO = -2,      /* the file could not be read */
    QUOTA_ENOMEM = -3,
    QUOTA_EARG = -4      /* a caller passed a bad argument (NULL, bad index) */
};

typedef enum quota_period {
    QUOTA_PERIOD_DAY = 0,   /* budgets reset at 00:00 UTC */
    QUOTA_PERIOD_WEEK = 1,  /* ... on Monday 00:00 UTC */
    QUOTA_PERIOD_MONTH = 2  /* ... on the 1st, 00:00 UTC */
} quota_period;

/* Limits on one account; they apply to the sum over its whole subtree. */
typedef struct quota_limits {
    int64_t max_running_cpus;
    int64_t max_running_gpus;
    int64_t max_running_mem;   /* bytes */
    int64_t max_running_jobs;
    int64_t max_queued_jobs;   /* pending jobs, checked at submit */
    int64_t max_wall;          /* seconds, per job */
    double cpu_hours;          /* budget per period; < 0 means none */
    double gpu_hours;          /* budget per period; < 0 means none */
    quota_period budget_period;
} quota_limits;

typedef struct quota_account {
    char *name;
    char *description;     /* "" when absent */
    int parent;            /* index, -1 for the root */
    int depth;             /* root 0, top-level accounts 1 */
    int subtree_end;       /* one past the last descendant (pre-order) */
    int *children;         /* indices, in file order */
    int nchildren;
    int64_t shares;        /* raw shares, > 0 (root: 1) */
    quota_limits limits;
    int nusers;            /* users allowed to charge this account */
    int line, column;      /* where it was defined (0 for the root) */
} quota_account;

typedef struct quota_user {
    char *name;
    int default_account;   /* index of a leaf account */
    int *accounts;         /* allowed leaf accounts, default first */
    int naccounts;
    bool admin;
    char *unix_user;       /* local account the agent runs jobs as; = name when absent */
    int line, column;
} quota_user;

typedef enum quota_preempt_mode {
    QUOTA_PREEMPT_REQUEUE = 0,  /* a preempted job goes back to the queue */
    QUOTA_PREEMPT_CANCEL = 1    /* a preempted job is cancelled */
} quota_preempt_mode;

typedef struct quota_qos {
    char *name;
    int64_t priority;          /* >= 0; factor = priority / max priority over all QOS */
    int64_t max_wall;          /* seconds or QUOTA_UNLIMITED */
    double usage_factor;       /* multiplies billed usage, >= 0 */
    bool preemptible;          /* jobs in it may be preempted */
    quota_preempt_mode preempt_mode; /* what preemption does to them */
    int *preempts;             /* QOS indices this QOS may preempt */
    int npreempts;
    int line, column;
} quota_qos;

/* Citizen quota tier for the public inference endpoint (used by the gateway). */
typedef struct quota_tier {
    char *name;
    int64_t tokens_per_day;          /* prompt + generated; QUOTA_UNLIMITED allowed */
    int64_t requests_per_minute;
    int64_t max_tokens_per_request;
    int64_t concurrent_requests;
    int line, column;
} quota_tier;

/* What one second of a job costs, in billing units (see quota_billed()). */
typedef struct quota_billing {
    double cpu;         /* per CPU */
    double gpu;         /* per GPU */
    double mem_per_gb;  /* per GiB of memory */
} quota_billing;

typedef struct quota_prio_weights {
    double fairshare, age, job_size, qos;  /* each >= 0 */
    int64_t max_age;    /* seconds; the age factor reaches 1 here (> 0) */
    bool favor_small;   /* size factor favours small jobs instead of large */
} quota_prio_weights;

typedef struct quota_policy {
    char *source;              /* file name or the name given when loading */
    char *cluster;             /* "" when absent */
    quota_account *accounts;   /* [0] = root; pre-order */
    int naccounts;
    int nleaves;               /* leaf accounts (ranked by Fair Tree) */
    quota_user *users;
    int nusers;
    quota_qos *qos;
    int nqos;
    int default_qos;           /* index; jobs with no QOS get it */
    int64_t max_qos_priority;  /* over all QOS, for the QOS factor */
    quota_tier *tiers;
    int ntiers;
    int default_tier;          /* tier of registered citizens; -1 when no tiers */
    int anonymous_tier;        /* tier of requests without a key; -1 = anonymous disabled */
    quota_billing billing;
    int64_t decay_half_life;   /* seconds; 0 = usage never decays */
    quota_prio_weights priority;
    /* private: name indices sorted for binary search */
    int *by_name_account, *by_name_user, *by_name_qos, *by_name_tier;
} quota_policy;

/* Load and validate. On success returns QUOTA_OK and *out (free with
 * quota_policy_free); diags may still hold warnings. On any error returns
 * QUOTA_EINVALID/QUOTA_EIO/QUOTA_ENOMEM with *out = NULL. diags must be
 * initialised; it is appended to (its source set if unset). */
int quota_policy_load_file(const char *path, quota_policy **out, quota_diags *diags);
int quota_policy_load_string(const char *text, size_t len, const char *name,
                             quota_policy **out, quota_diags *diags);
void quota_policy_free(quota_policy *p);

/* Lookups by name: index or -1. O(log n). */
int quota_account_find(const quota_policy *p, const char *name);
int quota_user_find(const quota_policy *p, const char *name);
int quota_qos_find(const quota_policy *p, const char *name);
int quota_tier_find(const quota_policy *p, const char *name);

/* Fills out[] with account, its parent, ... up to (not including) the root;
 * returns how many (<= max), or QUOTA_EARG for a bad index. */
int quota_account_ancestors(const quota_policy *p, int account, int *out, int max);

/* True when account is a descendant of (or equal to) ancestor. O(1). */
bool quota_account_within(const quota_policy *p, int account, int ancestor);

/* True when the user may charge jobs to the account: it is one of the user's
 * accounts, or the user is an admin and the account is a leaf. */
bool quota_user_may_use(const quota_policy *p, int user, int account);

/* Canonical JSON text of the whole policy (fixed key order, durations in
 * seconds, sizes in bytes, unlimited as -1), for `commons policy show` and for
 * comparing policies. malloc'd; NULL when out of memory. */
char *quota_policy_dump(const quota_policy *p);

#endif
