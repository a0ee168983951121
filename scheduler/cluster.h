/* cluster.h: commonsd's in-memory view of the cluster, kept in step with the store.
 *
 * Every change to a job, node, user or account is made through these functions,
 * which update memory and write the store inside the caller's open transaction.
 * Invariants:
 *   - jobs[id] is the job with that id (ids start at 1, are never reused);
 *   - a node's used_* are the sums over jobs allocated to it and not released;
 *   - pending[] holds exactly the PENDING jobs, in submission order.
 * Single-threaded: only commonsd's main loop calls in here.
 */
#ifndef SCHED_CLUSTER_H
#define SCHED_CLUSTER_H

#include "job.h"
#include "quotas.h"
#include "quota_plan.h"
#include "store.h"
#include "strmap.h"

struct cluster;

/* Liveness of a node's agent; draining is separate (a drained node can be up). */
enum node_state { NODE_UNKNOWN, NODE_UP, NODE_DOWN };

/* A node's processing units and GPUs as its agent reported them (hwloc).
 * Invariant: npus == node.cpus; pu_used/gpu_used mark what running jobs hold. */
struct node_topo {
    int npus, ngpus;
    int *pus, *pu_numa;   /* OS index and NUMA node of each PU */
    int *gpus, *gpu_numa; /* index and NUMA node (-1: unknown) of each GPU */
    unsigned char *pu_used, *gpu_used;
};

struct node {
    char *name, *hostname;
    int cpus, gpus;
    int64_t memory_mb;
    int used_cpus, used_gpus;
    int64_t used_mem;
    enum node_state state;
    char reason[128];
    int drain;             /* an admin drained it: nothing new starts there */
    char drain_reason[128];
    json_t *topology;      /* as reported, or NULL: then only counts are allocated */
    struct node_topo topo;
    int64_t last_heard_ms; /* monotonic */
    int64_t last_ts;       /* last accepted agent timestamp (replay guard) */
};

struct user {
    char *name, *account, *unix_user;
    json_t *accounts; /* array of allowed account names */
    int admin;
};

struct account {
    char *name, *parent;
};

/* Decides the order in which pending jobs are considered: the replaceable
 * piece (FIFO now; fair-share multifactor later). Sorts ids in place. */
typedef void (*sched_order_fn)(struct cluster *c, int64_t *ids, size_t n);

/* A command a job asked to start on one of its other nodes (spawn.c). */
enum spawn_state { SPAWN_PENDING, SPAWN_RUNNING, SPAWN_ENDED };
struct spawn {
    int64_t id, job;
    int attempt, node; /* node index */
    json_t *argv, *env;
    enum spawn_state state;
    int exit_code, signal;
    char *error;
    int64_t sent_ms, ended_ms;
};
#define CLUSTER_MAX_SPAWNS 4096

/* An inference service: replicas of commons-serve kept running as jobs (service.c). */
struct service {
    char *name, *user; /* user: the owner, whose jobs the replicas are */
    json_t *spec;      /* job fields of a replica plus "model", "serve_bin" and, split, "tp" or "pp" */
    int min, max, target;
    int submit_failing; /* the last replica submission failed and was logged: quiet until one succeeds */
};

/* What commonsd's options set. cluster_free keeps it, so a reload of the state
 * (cluster_free, then cluster_load) runs under the same settings. */
struct cluster_settings {
    int64_t node_timeout_ms;  /* a node unheard this long goes DOWN */
    quota_backfill backfill;
    int service_ports_lo, service_ports_hi; /* replicas' ports: no two live replicas hold the same one */
};

struct cluster_stats {
    uint64_t submitted, started, ended, batches, batch_requests, rejected;
    uint64_t commit_us_total;
};

struct cluster {
    struct store store;
    /* The quota policy in force, or NULL: then jobs go in submission order,
     * no limits apply, and accounts are managed with admin commands. */
    quota_policy *policy;
    int64_t policy_version;
    double *usage;        /* decayed billed usage charged to each policy account */
    int64_t usage_time;   /* Unix seconds usage was last decayed to */
    int64_t usage_saved;  /* Unix seconds usage was last written to the store */
    quota_state *qstate;  /* per-account running/queued totals for limits */
    int qstate_valid;
    quota_plan *plan;
    int plan_nodes;
    struct service *services;
    int nservices;
    struct spawn *spawns;
    int nspawns;
    int64_t next_spawn_id;
    struct job **jobs;
    int64_t jobs_cap, next_id;
    struct node *nodes;
    int nnodes;
    struct strmap node_by_name;
    struct user *users;
    int nusers;
    struct strmap user_by_name, user_by_token; /* token hash -> index into tokens */
    struct token_ref { int user; int64_t expires; } *tokens; /* expires: Unix s, 0 = never */
    int ntokens;
    struct account *accounts;
    int naccounts;
    struct strmap account_by_name;
    int64_t *pending;
    size_t npending, pending_cap;
    sched_order_fn order;
    struct cluster_settings set;
    int service_port_next; /* where the next search for a free port starts */
    int dirty; /* something changed that a scheduling pass should see */
    struct cluster_stats stats;
};

int cluster_load(struct cluster *c, char *err, size_t errlen);
/* Releases everything but c->set. */
void cluster_free(struct cluster *c);

struct job *cluster_job(struct cluster *c, int64_t id);
/* The user a live token belongs to; NULL for an unknown or revoked token, and
 * NULL with *expired set for one past its expiry. */
struct user *cluster_user_by_token(struct cluster *c, const char *token, int *expired);
struct user *cluster_user(struct cluster *c, const char *name);
int cluster_account_exists(struct cluster *c, const char *name);
struct node *cluster_node(struct cluster *c, const char *name);

/* Submits a validated spec for user (its account filled or checked).
 * Returns the first job id, or -1 with err and *code set. */
int64_t cluster_submit(struct cluster *c, const struct user *u, struct job_spec *spec,
                       const char **code, char *err, size_t errlen);
int cluster_cancel(struct cluster *c, struct job *j, char *err, size_t errlen);
int cluster_hold(struct cluster *c, struct job *j, int hold, char *err, size_t errlen);

int cluster_user_add(struct cluster *c, const char *name, const char *account, json_t *accounts,
                     int admin, const char *unix_user, char *token_out, char *err, size_t errlen);
/* expires: Unix seconds, 0 for a token that does not expire. */
int cluster_token_create(struct cluster *c, const char *user, int64_t expires, char *token_out, char *err,
                         size_t errlen);
/* Revokes every token of user; *count says how many were live. */
int cluster_token_revoke(struct cluster *c, const char *user, int *count, char *err, size_t errlen);
int cluster_account_add(struct cluster *c, const char *name, const char *parent, char *err, size_t errlen);

/* Agents. */
struct node *cluster_node_register(struct cluster *c, const char *name, const char *hostname,
                                   int cpus, int64_t memory_mb, int gpus, json_t *topology, char *err, size_t errlen);
void cluster_node_heard(struct cluster *c, struct node *n);
/* Applies one agent event; returns 0 (also for a stale or repeated event). */
int cluster_job_event(struct cluster *c, struct node *n, json_t *ev);
/* Builds the commands for node n given its running list; NULL means none. */
json_t *cluster_node_commands(struct cluster *c, struct node *n, json_t *running);
/* Marks nodes not heard from within the timeout DOWN and ends their jobs. */
void cluster_check_nodes(struct cluster *c);

/* One scheduling pass: starts what can start, sets every pending job's reason.
 * Returns the number of jobs started. */
int cluster_schedule(struct cluster *c);
void sched_order_fifo(struct cluster *c, int64_t *ids, size_t n);
/* Computes each job's multifactor priority (j->prio) and sorts by it. */
void sched_order_multifactor(struct cluster *c, int64_t *ids, size_t n);

const char *node_state_name(const struct node *n);

/* Policy (sched_policy.c). apply validates text and, only if it is valid,
 * stores it as a new version and puts it in force; otherwise *report gets the
 * diagnostics (malloc'd) and nothing changes. */
int cluster_policy_apply(struct cluster *c, const char *text, size_t len, const char *source,
                         const char *applied_by, char **report, char *err, size_t errlen);
/* Puts the newest stored version in force (at start). */
int cluster_policy_restore(struct cluster *c, char *err, size_t errlen);
/* Charges a job's billed usage when it ends; decays usage to now. */
void cluster_usage_charge(struct cluster *c, struct job *j);
void cluster_usage_decay(struct cluster *c, int64_t now);
/* Fair-share rows with running jobs' usage so far included; caller frees. */
quota_share_row *cluster_fairshare(struct cluster *c);
/* Per-account totals for limits (recomputed when stale). */
quota_state *cluster_qstate(struct cluster *c);
/* Policy indices of a job's QOS and account (-1: none/unknown). */
int cluster_job_qos(struct cluster *c, struct job *j);
int cluster_job_account(struct cluster *c, struct job *j);

/* Nodes (node.c). */
/* Takes a reported topology (or NULL); returns 0, 1 when it is ignored because its
 * PU or GPU count differs from what the node offers (err says why), or -1 with
 * err for a malformed topology. */
int node_set_topology(struct node *n, json_t *topology, char *err, size_t errlen);
void node_free_topology(struct node *n);
/* Chooses cpus PUs (and gpus GPUs near them) among the free ones; fills the
 * placement. Returns 0, or -1 when the node has no topology. */
int node_pick(const struct node *n, int cpus, int gpus, struct job_place *out);
/* Marks a placement used (sign +1) or free (-1). */
void node_mark(struct node *n, const struct job_place *p, int sign);
int cluster_node_drain(struct cluster *c, struct node *n, int drain, const char *reason, char *err, size_t errlen);
/* The node as JSON; with_topology adds its PUs/GPUs and which are in use. */
json_t *node_json(const struct node *n, int with_topology);

/* Services (service.c). */
struct service *cluster_service(struct cluster *c, const char *name);
int cluster_services_load(struct cluster *c);
void cluster_services_free(struct cluster *c);
int cluster_service_deploy(struct cluster *c, const struct user *u, const char *name, json_t *spec, int min, int max,
                           char *err, size_t errlen);
int cluster_service_scale(struct cluster *c, struct service *s, int target, char *err, size_t errlen);
int cluster_service_remove(struct cluster *c, struct service *s, char *err, size_t errlen);
/* Starts or stops replicas so each service has its target (each scheduling pass). */
void cluster_services_reconcile(struct cluster *c);
json_t *cluster_service_json(struct cluster *c, const struct service *s);
#define SERVICE_PORTS_LO 20000
#define SERVICE_PORTS_HI 32767 /* below Linux's ephemeral ports (32768-60999) */
/* Parses "LO-HI" (1024 <= LO <= HI <= 65535) for --service-ports. */
int service_ports_parse(const char *text, int *lo, int *hi, char *err, size_t errlen);

/* Spawns (spawn.c). */
int64_t cluster_spawn_create(struct cluster *c, struct job *j, const char *node, json_t *argv, json_t *env,
                             char *err, size_t errlen);
struct spawn *cluster_spawn_find(struct cluster *c, int64_t spawn_id);
/* Appends spawn and kill_spawns commands for node n to cmds. */
void cluster_spawn_commands(struct cluster *c, struct node *n, json_t *running, json_t *cmds);
void cluster_spawn_event(struct cluster *c, struct node *n, json_t *ev);
const char *spawn_state_name(const struct spawn *s);
/* Adds cpu_list, gpu_list and numa of the job's k-th node to obj. */
void cluster_place_fields(struct cluster *c, const struct job *j, int k, json_t *obj);

/* Marks victim to be stopped for for_job (whose QOS may preempt qos_name);
 * its end then requeues or cancels it as its QOS says. */
void cluster_job_preempt(struct cluster *c, struct job *victim, const struct job *for_job, const char *qos_name);

/* Within scheduler/ only. */
void cluster_job_use(struct cluster *c, struct job *j, int sign);
void job_free_places(struct job *j);
int cluster_job_save(struct cluster *c, struct job *j);
int cluster_node_index(struct cluster *c, const struct node *n);

#endif
