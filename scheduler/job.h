/* job.h: a job as commonsd keeps it, its states, and the job-spec validator.
 *
 * A job spec arrives as JSON (docs/protocol.md, "Job spec"). job_spec_validate
 * checks every field and fills a job_spec with defaults applied; the normalized
 * spec is what the store keeps, so a restarted commonsd sees the same job.
 */
#ifndef SCHED_JOB_H
#define SCHED_JOB_H

#include "quota_priority.h"

#include <jansson.h>
#include <stdint.h>

enum job_state {
    JOB_PENDING,
    JOB_RUNNING,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_CANCELLED,
    JOB_TIMEOUT,
    JOB_NODE_FAIL,
    JOB_STATE_COUNT
};

const char *job_state_name(enum job_state s);
int job_state_parse(const char *name); /* -1 when unknown */
static inline int job_state_is_final(enum job_state s) { return s >= JOB_COMPLETED; }

enum dep_kind { DEP_AFTEROK, DEP_AFTERANY };
struct job_dep {
    enum dep_kind kind;
    int64_t id;
};

#define JOB_MAX_DEPS 64
#define JOB_MAX_ARRAY 100000
#define JOB_MAX_ALLOC_NODES 1024
#define JOB_SCRIPT_MAX (512 * 1024) /* a batch script; the message limit is 1 MiB */

/* The validated, defaulted request; everything the user chose. */
struct job_spec {
    json_t *json;        /* normalized spec (owned reference); stored verbatim */
    const char *name;    /* borrowed from json */
    const char *account; /* NULL until filled with the user's default */
    int nodes, tasks, cpus_per_task, gpus;
    int64_t mem_mb, time_limit_s;
    const char *qos;
    int hold, requeue, mpi;
    int ndeps;
    struct job_dep deps[JOB_MAX_DEPS];
    /* Array: indices expanded, and the throttle (0 = none). */
    int narray;
    int *array_idx;
    int array_throttle;
};

/* Validates spec; on error fills err with the field and what was expected and
 * returns -1. On success out owns a reference to a normalized copy. */
int job_spec_validate(json_t *spec, struct job_spec *out, char *err, size_t errlen);
void job_spec_free(struct job_spec *s);
/* Field key of spec as an integer from lo to hi, def when absent; -1 with err filled
 * ("field 'KEY': expected an integer from LO to HI") when it is not. */
int job_spec_int(json_t *spec, const char *key, long lo, long hi, long def, long *out, char *err,
                 size_t errlen);

/* Parses "1-100%10", "1,3,5", "0-15:4". Returns count, or -1 with err. */
int job_array_parse(const char *s, int **idx, int *throttle, char *err, size_t errlen);
/* Parses "afterok:1:2,afterany:3". Returns count, or -1 with err. */
int job_deps_parse(const char *s, struct job_dep *deps, int max, char *err, size_t errlen);

/* The PUs and GPUs a job holds on one node (empty when the node reported no topology). */
struct job_place {
    int npus, ngpus;
    int *pus, *gpus;
};

/* A job in commonsd's memory. Invariant: state PENDING => nalloc == 0;
 * nalloc > 0 && !released => its resources are counted as used on those nodes. */
struct job {
    int64_t id;
    int64_t array_job_id; /* 0 when not part of an array */
    int array_task_id;    /* -1 when not part of an array */
    int array_throttle;
    char *user, *account, *name, *qos;
    json_t *spec; /* normalized spec */
    enum job_state state;
    char reason[64];
    int nodes, tasks, cpus_per_task, gpus;
    int64_t mem_mb, time_limit_s;
    int hold, requeue;
    int ndeps;
    struct job_dep *deps;
    int64_t submit_time, start_time, end_time; /* Unix seconds; 0 when not yet */
    int exit_code, signal;
    char *error;         /* agent-reported error, if any */
    int nalloc;
    int *alloc;          /* node indices */
    struct job_place *place; /* per allocated node, parallel to alloc (NULL: counts only) */
    int mpi;             /* run under mpirun across its nodes */
    char step_key[65];   /* authenticates the job's own spawn requests */
    int64_t preempted_by; /* the pending job this one is being preempted for (0: none) */
    char *note;          /* what happened to it that `commons show` explains (preemptions) */
    int released;        /* resources returned to the nodes */
    int launched;        /* the first node's agent acknowledged the start */
    int kill_pending;    /* a kill must reach the agent */
    int64_t launch_sent_ms, kill_sent_ms, missing_since_ms;
    int requeues;
    quota_prio prio; /* from the last scheduling pass, for `commons prio` */
    /* Policy indices of account and QOS, valid while policy_version matches. */
    int64_t idx_version;
    int acct_idx, qos_idx;
};

int job_cpus_per_node(const struct job *j);

#endif
