/* cluster.c: jobs, nodes, users and accounts in memory, mirrored to the store
 * (see cluster.h for the invariants). */
#include "cluster.h"
#include "ledger.h"

#include "cm_crypto.h"
#include "cm_log.h"
#include "cm_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOST_GRACE_MS 2000   /* a launched job may be briefly missing from a poll */
#define RELAUNCH_MS 5000     /* resend an unacknowledged launch after this long */
#define REKILL_MS 1000       /* resend a kill the agent has not yet acted on after this long */

struct job *cluster_job(struct cluster *c, int64_t id)
{
    return id > 0 && id < c->next_id ? c->jobs[id] : NULL;
}

struct user *cluster_user(struct cluster *c, const char *name)
{
    int i = strmap_get(&c->user_by_name, name);
    return i < 0 ? NULL : &c->users[i];
}

struct user *cluster_user_by_token(struct cluster *c, const char *token, int *expired)
{
    char hash[65];
    cm_sha256_hex(token, strlen(token), hash);
    int i = strmap_get(&c->user_by_token, hash);
    *expired = 0;
    if (i < 0) return NULL;
    if (c->tokens[i].expires && c->tokens[i].expires <= cm_now_ms() / 1000) {
        *expired = 1;
        return NULL;
    }
    return &c->users[c->tokens[i].user];
}

static void token_remember(struct cluster *c, const char *hash, int user, int64_t expires)
{
    c->tokens = realloc(c->tokens, sizeof *c->tokens * (size_t)(c->ntokens + 1));
    c->tokens[c->ntokens].user = user;
    c->tokens[c->ntokens].expires = expires;
    strmap_put(&c->user_by_token, hash, c->ntokens++);
}

int cluster_account_exists(struct cluster *c, const char *name)
{
    if (c->policy) return quota_account_find(c->policy, name) >= 0;
    return strmap_get(&c->account_by_name, name) >= 0;
}

struct node *cluster_node(struct cluster *c, const char *name)
{
    int i = strmap_get(&c->node_by_name, name);
    return i < 0 ? NULL : &c->nodes[i];
}

int cluster_node_index(struct cluster *c, const struct node *n) { return (int)(n - c->nodes); }

const char *node_state_name(const struct node *n)
{
    int busy = n->used_cpus > 0 || n->used_gpus > 0;
    switch (n->state) {
    case NODE_UNKNOWN: return n->drain ? "UNKNOWN+DRAIN" : "UNKNOWN";
    case NODE_DOWN: return n->drain ? "DOWN+DRAIN" : "DOWN";
    case NODE_UP: break;
    }
    if (n->drain) return busy ? "DRAINING" : "DRAINED";
    if (!busy) return "IDLE";
    return n->used_cpus >= n->cpus ? "ALLOCATED" : "MIXED";
}

static const char *node_state_store_name(enum node_state s)
{
    return s == NODE_DOWN ? "DOWN" : s == NODE_UP ? "UP" : "UNKNOWN";
}

static char *node_topology_text(const struct node *n)
{
    return n->topology ? json_dumps(n->topology, JSON_COMPACT) : NULL;
}

static int node_save(struct cluster *c, struct node *n)
{
    char *topo = node_topology_text(n);
    int rc = store_node_put(&c->store, n->name, n->hostname, n->cpus, n->memory_mb, n->gpus,
                            node_state_store_name(n->state), n->reason, cm_now_ms() / 1000, topo);
    free(topo);
    return rc;
}

/* ---- loading ---------------------------------------------------------- */

static int ensure_job_slot(struct cluster *c, int64_t id)
{
    if (id < c->jobs_cap) return 0;
    int64_t cap = c->jobs_cap ? c->jobs_cap : 1024;
    while (cap <= id) cap *= 2;
    struct job **nj = realloc(c->jobs, sizeof *nj * (size_t)cap);
    if (!nj) return -1;
    memset(nj + c->jobs_cap, 0, sizeof *nj * (size_t)(cap - c->jobs_cap));
    c->jobs = nj;
    c->jobs_cap = cap;
    return 0;
}

static void pending_push(struct cluster *c, int64_t id)
{
    if (c->npending == c->pending_cap) {
        c->pending_cap = c->pending_cap ? c->pending_cap * 2 : 1024;
        c->pending = realloc(c->pending, sizeof *c->pending * c->pending_cap);
    }
    c->pending[c->npending++] = id;
}

/* Keeps pending[] in id order, which is submission order. */
static void pending_insert_sorted(struct cluster *c, int64_t id)
{
    pending_push(c, id);
    size_t i = c->npending - 1;
    while (i > 0 && c->pending[i - 1] > id) {
        c->pending[i] = c->pending[i - 1];
        i--;
    }
    c->pending[i] = id;
}

static char *dup_col(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return strdup(t ? (const char *)t : "");
}

static int load_account(void *ctx, sqlite3_stmt *st)
{
    struct cluster *c = ctx;
    c->accounts = realloc(c->accounts, sizeof *c->accounts * (size_t)(c->naccounts + 1));
    struct account *a = &c->accounts[c->naccounts];
    a->name = dup_col(st, 0);
    a->parent = dup_col(st, 1);
    strmap_put(&c->account_by_name, a->name, c->naccounts++);
    return 0;
}

static int load_user(void *ctx, sqlite3_stmt *st)
{
    struct cluster *c = ctx;
    c->users = realloc(c->users, sizeof *c->users * (size_t)(c->nusers + 1));
    struct user *u = &c->users[c->nusers];
    u->name = dup_col(st, 0);
    u->account = dup_col(st, 1);
    u->accounts = json_loads((const char *)sqlite3_column_text(st, 2), 0, NULL);
    if (!json_is_array(u->accounts)) {
        json_decref(u->accounts);
        u->accounts = json_array();
    }
    u->admin = sqlite3_column_int(st, 3);
    u->unix_user = dup_col(st, 4);
    strmap_put(&c->user_by_name, u->name, c->nusers++);
    return 0;
}

static int load_token(void *ctx, sqlite3_stmt *st)
{
    struct cluster *c = ctx;
    int u = strmap_get(&c->user_by_name, (const char *)sqlite3_column_text(st, 1));
    if (u >= 0) token_remember(c, (const char *)sqlite3_column_text(st, 0), u, sqlite3_column_int64(st, 2));
    return 0;
}

static int load_node(void *ctx, sqlite3_stmt *st)
{
    struct cluster *c = ctx;
    c->nodes = realloc(c->nodes, sizeof *c->nodes * (size_t)(c->nnodes + 1));
    struct node *n = &c->nodes[c->nnodes];
    memset(n, 0, sizeof *n);
    n->name = dup_col(st, 0);
    n->hostname = dup_col(st, 1);
    n->cpus = sqlite3_column_int(st, 2);
    n->memory_mb = sqlite3_column_int64(st, 3);
    n->gpus = sqlite3_column_int(st, 4);
    /* After a restart, a node is UNKNOWN until its agent is heard from again;
     * a drained node stays drained. */
    n->state = NODE_UNKNOWN;
    snprintf(n->reason, sizeof n->reason, "%s", sqlite3_column_text(st, 6) ? (const char *)sqlite3_column_text(st, 6) : "");
    const char *topo = (const char *)sqlite3_column_text(st, 7);
    if (topo) {
        char err[256];
        json_t *t = json_loads(topo, 0, NULL);
        if (node_set_topology(n, t, err, sizeof err) < 0) cm_warn("node %s: stored topology ignored: %s", n->name, err);
        json_decref(t);
    }
    n->drain = sqlite3_column_int(st, 8);
    snprintf(n->drain_reason, sizeof n->drain_reason, "%s",
             sqlite3_column_text(st, 9) ? (const char *)sqlite3_column_text(st, 9) : "");
    n->last_heard_ms = cm_mono_ms(); /* the timeout counts from our start */
    strmap_put(&c->node_by_name, n->name, c->nnodes++);
    return 0;
}

void cluster_job_use(struct cluster *c, struct job *j, int sign)
{
    for (int i = 0; i < j->nalloc; i++) {
        struct node *n = &c->nodes[j->alloc[i]];
        n->used_cpus += sign * job_cpus_per_node(j);
        n->used_gpus += sign * j->gpus;
        n->used_mem += sign * j->mem_mb;
        if (j->place) node_mark(n, &j->place[i], sign);
    }
}

void job_free_places(struct job *j)
{
    if (j->place)
        for (int i = 0; i < j->nalloc; i++) {
            free(j->place[i].pus);
            free(j->place[i].gpus);
        }
    free(j->place);
    j->place = NULL;
}

/* placement column: [[pus...], [gpus...]] per allocated node. */
static void load_places(struct job *j, const char *text)
{
    json_t *a = text ? json_loads(text, 0, NULL) : NULL;
    if (!json_is_array(a) || (int)json_array_size(a) != j->nalloc) {
        json_decref(a);
        return;
    }
    j->place = calloc((size_t)j->nalloc, sizeof *j->place);
    for (int i = 0; i < j->nalloc; i++) {
        json_t *pus = json_array_get(json_array_get(a, (size_t)i), 0), *gpus = json_array_get(json_array_get(a, (size_t)i), 1);
        struct job_place *p = &j->place[i];
        p->pus = malloc(sizeof *p->pus * (json_array_size(pus) + 1));
        p->gpus = malloc(sizeof *p->gpus * (json_array_size(gpus) + 1));
        size_t k;
        json_t *v;
        json_array_foreach(pus, k, v) p->pus[p->npus++] = (int)json_integer_value(v);
        json_array_foreach(gpus, k, v) p->gpus[p->ngpus++] = (int)json_integer_value(v);
    }
    json_decref(a);
}

static void job_fill_from_spec(struct job *j)
{
    json_t *s = j->spec;
    j->name = strdup(json_string_value(json_object_get(s, "name")));
    j->qos = strdup(json_string_value(json_object_get(s, "qos")));
    j->nodes = (int)json_integer_value(json_object_get(s, "nodes"));
    if (j->nodes < 1) j->nodes = 1;
    j->tasks = json_object_get(s, "tasks") ? (int)json_integer_value(json_object_get(s, "tasks")) : j->nodes;
    j->cpus_per_task = json_object_get(s, "cpus_per_task") ? (int)json_integer_value(json_object_get(s, "cpus_per_task")) : 1;
    j->gpus = (int)json_integer_value(json_object_get(s, "gpus"));
    j->mem_mb = json_integer_value(json_object_get(s, "mem_mb"));
    j->time_limit_s = json_integer_value(json_object_get(s, "time_limit_s"));
    j->hold = json_is_true(json_object_get(s, "hold"));
    j->requeue = json_is_true(json_object_get(s, "requeue"));
    j->mpi = json_is_true(json_object_get(s, "mpi"));
    const char *dep = json_string_value(json_object_get(s, "dependency"));
    if (dep && *dep) {
        struct job_dep deps[JOB_MAX_DEPS];
        char err[256];
        int n = job_deps_parse(dep, deps, JOB_MAX_DEPS, err, sizeof err);
        if (n > 0) {
            j->deps = malloc(sizeof *j->deps * (size_t)n);
            memcpy(j->deps, deps, sizeof *deps * (size_t)n);
            j->ndeps = n;
        }
    }
}

static int load_job(void *ctx, sqlite3_stmt *st)
{
    struct cluster *c = ctx;
    int64_t id = sqlite3_column_int64(st, 0);
    if (ensure_job_slot(c, id) != 0) return -1;
    struct job *j = calloc(1, sizeof *j);
    j->id = id;
    j->array_job_id = sqlite3_column_int64(st, 1);
    j->array_task_id = sqlite3_column_int(st, 2);
    j->array_throttle = sqlite3_column_int(st, 3);
    j->user = dup_col(st, 4);
    j->account = dup_col(st, 5);
    j->spec = json_loads((const char *)sqlite3_column_text(st, 6), 0, NULL);
    if (!j->spec) {
        cm_error("job %lld: stored spec is not JSON; skipping it", (long long)id);
        free(j);
        return 0;
    }
    job_fill_from_spec(j);
    j->state = (enum job_state)sqlite3_column_int(st, 7);
    snprintf(j->reason, sizeof j->reason, "%s", sqlite3_column_text(st, 8) ? (const char *)sqlite3_column_text(st, 8) : "");
    j->submit_time = sqlite3_column_int64(st, 9);
    j->start_time = sqlite3_column_int64(st, 10);
    j->end_time = sqlite3_column_int64(st, 11);
    j->exit_code = sqlite3_column_int(st, 12);
    j->signal = sqlite3_column_int(st, 13);
    if (sqlite3_column_text(st, 14)) j->error = dup_col(st, 14);
    const char *alloc = (const char *)sqlite3_column_text(st, 15);
    if (alloc && *alloc) {
        j->alloc = malloc(sizeof *j->alloc * JOB_MAX_ALLOC_NODES);
        for (const char *p = alloc; *p && j->nalloc < JOB_MAX_ALLOC_NODES;) {
            j->alloc[j->nalloc++] = atoi(p);
            p += strcspn(p, ",");
            if (*p == ',') p++;
        }
    }
    j->released = sqlite3_column_int(st, 16);
    j->launched = sqlite3_column_int(st, 17);
    j->kill_pending = sqlite3_column_int(st, 18);
    j->hold = sqlite3_column_int(st, 19);
    j->requeues = sqlite3_column_int(st, 20);
    load_places(j, (const char *)sqlite3_column_text(st, 21));
    snprintf(j->step_key, sizeof j->step_key, "%s", sqlite3_column_text(st, 22) ? (const char *)sqlite3_column_text(st, 22) : "");
    j->preempted_by = sqlite3_column_int64(st, 23);
    if (sqlite3_column_text(st, 24)) j->note = dup_col(st, 24);
    for (int i = 0; i < j->nalloc; i++)
        if (j->alloc[i] < 0 || j->alloc[i] >= c->nnodes) j->nalloc = 0; /* corrupt: drop */
    c->jobs[id] = j;
    if (id >= c->next_id) c->next_id = id + 1;
    if (j->nalloc && !j->released) cluster_job_use(c, j, +1);
    if (j->state == JOB_PENDING) pending_push(c, id);
    return 0;
}

int cluster_load(struct cluster *c, char *err, size_t errlen)
{
    strmap_init(&c->node_by_name);
    strmap_init(&c->user_by_name);
    strmap_init(&c->user_by_token);
    strmap_init(&c->account_by_name);
    if (!c->order) c->order = sched_order_fifo;
    int64_t next = 1;
    struct store *s = &c->store;
    if (store_each(s, "SELECT name, parent FROM accounts", load_account, c) ||
        store_each(s, "SELECT name, account, accounts, admin, unix_user FROM users", load_user, c) ||
        store_each(s, "SELECT hash, user, expires FROM tokens WHERE revoked=0", load_token, c) ||
        store_each(s, "SELECT name, hostname, cpus, memory_mb, gpus, state, reason, topology, drain, drain_reason"
                      " FROM nodes ORDER BY rowid",
                   load_node, c) ||
        store_each(s,
                   "SELECT id, array_job_id, array_task_id, array_throttle, user, account, spec, state,"
                   " reason, submit_time, start_time, end_time, exit_code, signal, error, alloc,"
                   " released, launched, kill_pending, hold, requeues, placement, step_key, preempted_by, note FROM jobs ORDER BY id",
                   load_job, c) ||
        store_meta_get_int(s, "next_job_id", &next)) {
        snprintf(err, errlen, "%s", s->err);
        return -1;
    }
    if (next > c->next_id) c->next_id = next;
    if (c->next_id < 1) c->next_id = 1;
    ensure_job_slot(c, c->next_id);
    c->next_spawn_id = cm_now_ms(); /* spawns are not stored: ids of this run start here (spawn.c) */
    if (cluster_policy_restore(c, err, errlen) != 0) return -1;
    if (cluster_services_load(c) != 0) {
        snprintf(err, errlen, "%s", c->store.err);
        return -1;
    }
    c->dirty = 1;
    return 0;
}

static void job_free(struct job *j)
{
    job_free_places(j);
    free(j->note);
    free(j->user);
    free(j->account);
    free(j->name);
    free(j->qos);
    free(j->deps);
    free(j->alloc);
    free(j->error);
    json_decref(j->spec);
    free(j);
}

void cluster_free(struct cluster *c)
{
    for (int64_t i = 0; i < c->jobs_cap; i++)
        if (c->jobs[i]) job_free(c->jobs[i]);
    free(c->jobs);
    for (int i = 0; i < c->nnodes; i++) {
        free(c->nodes[i].name);
        free(c->nodes[i].hostname);
        node_free_topology(&c->nodes[i]);
    }
    free(c->nodes);
    for (int i = 0; i < c->nusers; i++) {
        free(c->users[i].name);
        free(c->users[i].account);
        free(c->users[i].unix_user);
        json_decref(c->users[i].accounts);
    }
    free(c->users);
    for (int i = 0; i < c->naccounts; i++) {
        free(c->accounts[i].name);
        free(c->accounts[i].parent);
    }
    free(c->accounts);
    free(c->pending);
    quota_policy_free(c->policy);
    free(c->usage);
    free(c->qstate);
    quota_plan_free(c->plan);
    for (int i = 0; i < c->nspawns; i++) {
        json_decref(c->spawns[i].argv);
        json_decref(c->spawns[i].env);
        free(c->spawns[i].error);
    }
    free(c->spawns);
    cluster_services_free(c);
    strmap_free(&c->node_by_name);
    strmap_free(&c->user_by_name);
    strmap_free(&c->user_by_token);
    free(c->tokens);
    strmap_free(&c->account_by_name);
    store_close(&c->store);
    struct cluster_settings set = c->set;
    memset(c, 0, sizeof *c);
    c->set = set;
}

/* ---- users and accounts ----------------------------------------------- */

int cluster_account_add(struct cluster *c, const char *name, const char *parent, char *err, size_t errlen)
{
    if (parent && *parent && !cluster_account_exists(c, parent)) {
        snprintf(err, errlen, "parent account '%s' does not exist", parent);
        return -1;
    }
    if (store_account_put(&c->store, name, parent ? parent : "")) {
        snprintf(err, errlen, "%s", c->store.err);
        return -1;
    }
    if (!cluster_account_exists(c, name)) {
        c->accounts = realloc(c->accounts, sizeof *c->accounts * (size_t)(c->naccounts + 1));
        c->accounts[c->naccounts].name = strdup(name);
        c->accounts[c->naccounts].parent = strdup(parent ? parent : "");
        strmap_put(&c->account_by_name, name, c->naccounts++);
    }
    return 0;
}

static int new_token(struct cluster *c, int user_index, int64_t expires, char *token_out, char *err, size_t errlen)
{
    char rnd[65], hash[65];
    if (cm_random_hex(32, rnd) != 0) {
        snprintf(err, errlen, "no randomness available for a token");
        return -1;
    }
    snprintf(token_out, 72, "cm_%s", rnd);
    cm_sha256_hex(token_out, strlen(token_out), hash);
    if (store_token_put(&c->store, hash, c->users[user_index].name, expires)) {
        snprintf(err, errlen, "%s", c->store.err);
        return -1;
    }
    token_remember(c, hash, user_index, expires);
    return 0;
}

int cluster_user_add(struct cluster *c, const char *name, const char *account, json_t *accounts,
                     int admin, const char *unix_user, char *token_out, char *err, size_t errlen)
{
    if (cluster_user(c, name)) {
        snprintf(err, errlen, "user '%s' already exists", name);
        return -1;
    }
    if (!cluster_account_exists(c, account)) {
        snprintf(err, errlen, "account '%s' does not exist (add it with: commons admin account add %s)", account, account);
        return -1;
    }
    json_t *all = json_array();
    json_array_append_new(all, json_string(account));
    size_t i;
    json_t *a;
    json_array_foreach(accounts, i, a) {
        if (!json_is_string(a) || !cluster_account_exists(c, json_string_value(a))) {
            snprintf(err, errlen, "accounts[%zu]: expected the name of an existing account", i);
            json_decref(all);
            return -1;
        }
        if (strcmp(json_string_value(a), account) != 0) json_array_append(all, a);
    }
    char *text = json_dumps(all, JSON_COMPACT);
    int rc = store_user_put(&c->store, name, account, text, admin, unix_user);
    free(text);
    if (rc) {
        snprintf(err, errlen, "%s", c->store.err);
        json_decref(all);
        return -1;
    }
    c->users = realloc(c->users, sizeof *c->users * (size_t)(c->nusers + 1));
    struct user *u = &c->users[c->nusers];
    u->name = strdup(name);
    u->account = strdup(account);
    u->accounts = all;
    u->admin = admin;
    u->unix_user = strdup(unix_user);
    strmap_put(&c->user_by_name, name, c->nusers++);
    return new_token(c, c->nusers - 1, 0, token_out, err, errlen);
}

int cluster_token_create(struct cluster *c, const char *user, int64_t expires, char *token_out, char *err,
                         size_t errlen)
{
    int i = strmap_get(&c->user_by_name, user);
    if (i < 0) {
        snprintf(err, errlen, "no user '%s'", user);
        return -1;
    }
    return new_token(c, i, expires, token_out, err, errlen);
}

int cluster_token_revoke(struct cluster *c, const char *user, int *count, char *err, size_t errlen)
{
    if (store_token_revoke_user(&c->store, user, count) != 0) {
        snprintf(err, errlen, "%s", c->store.err);
        return -1;
    }
    /* The map holds hashes only, so rebuild it from the live tokens. */
    strmap_free(&c->user_by_token);
    strmap_init(&c->user_by_token);
    free(c->tokens);
    c->tokens = NULL;
    c->ntokens = 0;
    if (store_each(&c->store, "SELECT hash, user, expires FROM tokens WHERE revoked=0", load_token, c) != 0) {
        snprintf(err, errlen, "%s", c->store.err);
        return -1;
    }
    return 0;
}

/* ---- jobs ------------------------------------------------------------- */

static int user_may_use(const struct user *u, const char *account)
{
    size_t i;
    json_t *a;
    json_array_foreach(u->accounts, i, a)
        if (strcmp(json_string_value(a), account) == 0) return 1;
    return 0;
}

/* Could any registered node ever run j (ignoring what is in use now)? */
static int satisfiable(struct cluster *c, const struct job_spec *s, char *err, size_t errlen)
{
    int tasks_per_node = (s->tasks + s->nodes - 1) / s->nodes;
    int cpus = tasks_per_node * s->cpus_per_task, fit = 0;
    if (c->nnodes == 0) {
        snprintf(err, errlen, "no nodes are registered yet, so no job can be placed; start a commons-agent first");
        return 0;
    }
    for (int i = 0; i < c->nnodes && fit < s->nodes; i++) {
        struct node *n = &c->nodes[i];
        fit += n->cpus >= cpus && n->gpus >= s->gpus && n->memory_mb >= s->mem_mb;
    }
    if (fit >= s->nodes) return 1;
    int max_cpus = 0, max_gpus = 0;
    int64_t max_mem = 0;
    for (int i = 0; i < c->nnodes; i++) {
        struct node *n = &c->nodes[i];
        if (n->cpus > max_cpus) max_cpus = n->cpus;
        if (n->gpus > max_gpus) max_gpus = n->gpus;
        if (n->memory_mb > max_mem) max_mem = n->memory_mb;
    }
    snprintf(err, errlen,
             "no %d node(s) could ever run this job: it needs %d CPUs, %d GPUs and %lld MB per node; "
             "the largest node has %d CPUs, %d GPUs, %lld MB and %d node(s) fit",
             s->nodes, cpus, s->gpus, (long long)s->mem_mb, max_cpus, max_gpus, (long long)max_mem, fit);
    return 0;
}

/* With a policy: the user, account, QOS, wall-time and queue limits. */
static int policy_admits(struct cluster *c, const struct user *u, const struct job_spec *spec, const char *account,
                         const char **code, char *err, size_t errlen)
{
    const quota_policy *p = c->policy;
    int tasks_per_node = (spec->tasks + spec->nodes - 1) / spec->nodes;
    quota_request req = {
        .account = quota_account_find(p, account),
        .qos = spec->qos ? quota_qos_find(p, spec->qos) : p->default_qos,
        .cpus = (int64_t)tasks_per_node * spec->cpus_per_task * spec->nodes,
        .gpus = (int64_t)spec->gpus * spec->nodes,
        .mem = spec->mem_mb * spec->nodes * 1048576LL,
        .time_limit = spec->time_limit_s,
    };
    if (spec->qos && req.qos < 0) {
        *code = "invalid_job";
        snprintf(err, errlen, "field 'qos': the policy has no QOS '%s'", spec->qos);
        return 0;
    }
    quota_verdict v;
    if (quota_check_submit(p, cluster_qstate(c), quota_user_find(p, u->name), &req, &v) == QUOTA_REASON_NONE)
        return 1;
    *code = v.reason == QUOTA_REASON_ACCOUNT_QUEUED ? "limit" : v.reason == QUOTA_REASON_ACCOUNT_DENIED ? "forbidden"
                                                                                                        : "invalid_job";
    snprintf(err, errlen, "%s: %s", quota_reason_name(v.reason), v.detail[0] ? v.detail : "rejected by the policy");
    return 0;
}

int64_t cluster_submit(struct cluster *c, const struct user *u, struct job_spec *spec,
                       const char **code, char *err, size_t errlen)
{
    const char *account = spec->account ? spec->account : u->account;
    if (c->policy) {
        if (!policy_admits(c, u, spec, account, code, err, errlen)) return -1;
    } else if (!cluster_account_exists(c, account)) {
        *code = "invalid_job";
        snprintf(err, errlen, "field 'account': account '%s' does not exist", account);
        return -1;
    }
    if (!c->policy && !user_may_use(u, account)) {
        *code = "forbidden";
        snprintf(err, errlen, "field 'account': user '%s' may not charge account '%s'", u->name, account);
        return -1;
    }
    for (int i = 0; i < spec->ndeps; i++)
        if (!cluster_job(c, spec->deps[i].id)) {
            *code = "invalid_job";
            snprintf(err, errlen, "field 'dependency': job %lld does not exist", (long long)spec->deps[i].id);
            return -1;
        }
    if (!satisfiable(c, spec, err, errlen)) {
        *code = "unsatisfiable";
        return -1;
    }
    int count = spec->narray ? spec->narray : 1;
    int64_t first = c->next_id;
    if (ensure_job_slot(c, first + count) != 0) {
        *code = "internal";
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* account may point into spec->json, which the next line changes: copy it first. */
    char account_buf[256];
    snprintf(account_buf, sizeof account_buf, "%s", account);
    account = account_buf;
    json_object_set_new(spec->json, "account", json_string(account));
    if (!spec->qos) { /* the policy's default QOS, or "normal" without one */
        json_object_set_new(spec->json, "qos",
                            json_string(c->policy ? c->policy->qos[c->policy->default_qos].name : "normal"));
    }
    int64_t now = cm_now_ms() / 1000;
    for (int k = 0; k < count; k++) {
        struct job *j = calloc(1, sizeof *j);
        j->id = first + k;
        j->array_job_id = spec->narray ? first : 0;
        j->array_task_id = spec->narray ? spec->array_idx[k] : -1;
        j->array_throttle = spec->array_throttle;
        j->user = strdup(u->name);
        j->account = strdup(account);
        j->spec = json_incref(spec->json);
        job_fill_from_spec(j);
        j->state = JOB_PENDING;
        snprintf(j->reason, sizeof j->reason, "%s", j->hold ? "Held" : "Priority");
        j->submit_time = now;
        if (store_job_insert(&c->store, j) != 0) {
            *code = "unavailable";
            snprintf(err, errlen, "cannot store the job: %s", c->store.err);
            job_free(j);
            return -1; /* the caller rolls back the batch and reloads */
        }
        c->jobs[j->id] = j;
        pending_push(c, j->id);
    }
    c->next_id = first + count;
    if (c->policy && c->qstate_valid) {
        quota_state d = {.queued = count};
        quota_state_add(c->policy, c->qstate, quota_account_find(c->policy, account), &d);
    }
    if (store_meta_set_int(&c->store, "next_job_id", c->next_id) != 0) {
        *code = "unavailable";
        snprintf(err, errlen, "cannot store the job: %s", c->store.err);
        return -1;
    }
    c->stats.submitted += (uint64_t)count;
    c->dirty = 1;
    return first;
}

static void pending_remove(struct cluster *c, int64_t id)
{
    for (size_t i = 0; i < c->npending; i++)
        if (c->pending[i] == id) {
            memmove(&c->pending[i], &c->pending[i + 1], sizeof *c->pending * (c->npending - i - 1));
            c->npending--;
            return;
        }
}

int cluster_job_save(struct cluster *c, struct job *j)
{
    if (store_job_update(&c->store, j) != 0) {
        cm_error("job %lld: %s", (long long)j->id, c->store.err);
        return -1;
    }
    return 0;
}

/* Ends a job in a final state; its resources stay in use until the agent
 * confirms the processes are gone (released), unless the node is gone. */
static void job_finish(struct cluster *c, struct job *j, enum job_state st, int release_now)
{
    if (j->state == JOB_PENDING) pending_remove(c, j->id);
    int was_running = j->state == JOB_RUNNING;
    j->state = st;
    j->reason[0] = '\0';
    j->end_time = cm_now_ms() / 1000;
    if (release_now && j->nalloc && !j->released) {
        cluster_job_use(c, j, -1);
        j->released = 1;
    }
    if (was_running) cluster_usage_charge(c, j);
    c->qstate_valid = 0;
    c->stats.ended++;
    c->dirty = 1;
}

int cluster_cancel(struct cluster *c, struct job *j, char *err, size_t errlen)
{
    if (job_state_is_final(j->state)) {
        snprintf(err, errlen, "job %lld already ended (%s)", (long long)j->id, job_state_name(j->state));
        return -1;
    }
    if (j->state == JOB_RUNNING) j->kill_pending = 1;
    job_finish(c, j, JOB_CANCELLED, 0);
    return cluster_job_save(c, j) ? (snprintf(err, errlen, "%s", c->store.err), -1) : 0;
}

int cluster_hold(struct cluster *c, struct job *j, int hold, char *err, size_t errlen)
{
    if (j->state != JOB_PENDING) {
        snprintf(err, errlen, "job %lld is %s; only pending jobs can be %s", (long long)j->id,
                 job_state_name(j->state), hold ? "held" : "released");
        return -1;
    }
    j->hold = hold;
    snprintf(j->reason, sizeof j->reason, "%s", hold ? "Held" : "Priority");
    c->dirty = 1;
    return cluster_job_save(c, j) ? (snprintf(err, errlen, "%s", c->store.err), -1) : 0;
}

/* ---- agents ----------------------------------------------------------- */

static void job_requeue(struct cluster *c, struct job *j, const char *reason);

struct node *cluster_node_register(struct cluster *c, const char *name, const char *hostname,
                                   int cpus, int64_t memory_mb, int gpus, json_t *topology, char *err, size_t errlen)
{
    struct node *n = cluster_node(c, name);
    if (!n) {
        c->nodes = realloc(c->nodes, sizeof *c->nodes * (size_t)(c->nnodes + 1));
        n = &c->nodes[c->nnodes];
        memset(n, 0, sizeof *n);
        n->name = strdup(name);
        n->hostname = strdup(hostname);
        strmap_put(&c->node_by_name, name, c->nnodes++);
        /* nodes[] may have moved: everything else refers to nodes by index. */
    } else {
        free(n->hostname);
        n->hostname = strdup(hostname);
    }
    if (n->used_cpus && (cpus != n->cpus || gpus != n->gpus || !!topology != !!n->topology)) {
        snprintf(err, errlen, "node %s re-registers with other resources while jobs run there; drain it first", name);
        return NULL;
    }
    n->cpus = cpus;
    n->memory_mb = memory_mb;
    n->gpus = gpus;
    /* Keep which PUs running jobs hold across the re-registration. */
    int topo = node_set_topology(n, topology, err, errlen);
    if (topo < 0) return NULL;
    if (topo > 0) cm_warn("node %s: %s", name, err);
    for (int64_t id = 1; id < c->next_id; id++) {
        struct job *j = c->jobs[id];
        if (!j || j->released || !j->place) continue;
        for (int k = 0; k < j->nalloc; k++)
            if (&c->nodes[j->alloc[k]] == n) node_mark(n, &j->place[k], +1);
    }
    n->state = NODE_UP;
    n->reason[0] = '\0';
    n->last_heard_ms = cm_mono_ms();
    if (node_save(c, n)) {
        snprintf(err, errlen, "%s", c->store.err);
        return NULL;
    }
    c->dirty = 1;
    return n;
}

void cluster_node_heard(struct cluster *c, struct node *n)
{
    n->last_heard_ms = cm_mono_ms();
    if (n->state == NODE_UNKNOWN || n->state == NODE_DOWN) {
        n->state = NODE_UP;
        n->reason[0] = '\0';
        node_save(c, n);
        cm_info("node %s is up", n->name);
        c->dirty = 1;
    }
}

static int on_node(struct cluster *c, const struct job *j, const struct node *n)
{
    return j->nalloc > 0 && j->alloc[0] == cluster_node_index(c, n);
}

int cluster_job_event(struct cluster *c, struct node *n, json_t *ev)
{
    const char *kind = json_string_value(json_object_get(ev, "event"));
    if (kind && strncmp(kind, "spawn_", 6) == 0) {
        cluster_spawn_event(c, n, ev);
        return 0;
    }
    struct job *j = cluster_job(c, json_integer_value(json_object_get(ev, "id")));
    const char *what = json_string_value(json_object_get(ev, "event"));
    int attempt = (int)json_integer_value(json_object_get(ev, "attempt"));
    if (!j || !what || !on_node(c, j, n) || attempt != j->requeues || j->released) return 0;
    if (strcmp(what, "started") == 0) {
        if (!j->launched) {
            j->launched = 1;
            cluster_job_save(c, j);
        }
        return 0;
    }
    if (strcmp(what, "ended") != 0) return 0;
    j->launched = 1;
    j->exit_code = (int)json_integer_value(json_object_get(ev, "exit_code"));
    j->signal = (int)json_integer_value(json_object_get(ev, "signal"));
    const char *error = json_string_value(json_object_get(ev, "error"));
    if (error && *error) {
        free(j->error);
        j->error = strndup(error, 1024);
    }
    if (j->state == JOB_RUNNING && j->preempted_by && json_is_true(json_object_get(ev, "cancelled"))) {
        /* Preempted: back to the queue or cancelled, as its QOS says. */
        int q = cluster_job_qos(c, j);
        int cancel = c->policy && q >= 0 && c->policy->qos[q].preempt_mode == QUOTA_PREEMPT_CANCEL;
        size_t len = strlen(j->note ? j->note : "");
        char *note = realloc(j->note, len + 32);
        if (note) {
            snprintf(note + len, 32, cancel ? ": cancelled" : ": requeued");
            j->note = note;
        }
        if (cancel) {
            j->preempted_by = 0;
            job_finish(c, j, JOB_CANCELLED, 1);
        } else {
            job_requeue(c, j, "Preempted");
        }
    } else if (j->state == JOB_RUNNING) {
        enum job_state st = JOB_COMPLETED;
        if (json_is_true(json_object_get(ev, "timed_out"))) st = JOB_TIMEOUT;
        else if (json_is_true(json_object_get(ev, "cancelled"))) st = JOB_CANCELLED;
        else if (j->exit_code != 0 || j->signal != 0 || (error && *error)) st = JOB_FAILED;
        job_finish(c, j, st, 1);
    } else {
        cluster_job_use(c, j, -1); /* cancelled earlier: the processes are gone now */
        j->released = 1;
        c->dirty = 1;
    }
    j->kill_pending = 0;
    return cluster_job_save(c, j);
}

static json_t *launch_command(struct cluster *c, struct job *j)
{
    struct user *u = cluster_user(c, j->user);
    json_t *spec = j->spec;
    char idbuf[32], arr[32], ai[32];
    snprintf(idbuf, sizeof idbuf, "%lld", (long long)j->id);
    snprintf(arr, sizeof arr, "%lld", (long long)(j->array_job_id ? j->array_job_id : j->id));
    snprintf(ai, sizeof ai, "%d", j->array_task_id);
    const char *workdir = json_string_value(json_object_get(spec, "workdir"));
    /* Expand %j, %A, %a and make relative paths relative to workdir. */
    json_t *paths[2] = {json_object_get(spec, "stdout"), json_object_get(spec, "stderr")};
    char expanded[2][4096];
    for (int k = 0; k < 2; k++) {
        const char *p = json_string_value(paths[k]);
        expanded[k][0] = '\0';
        if (!p) continue;
        size_t n = 0;
        if (p[0] != '/') n = (size_t)snprintf(expanded[k], sizeof expanded[k], "%s/", workdir);
        for (; *p && n + 32 < sizeof expanded[k]; p++) {
            if (p[0] == '%' && (p[1] == 'j' || p[1] == 'A' || p[1] == 'a')) {
                const char *v = p[1] == 'j' ? idbuf : p[1] == 'A' ? arr : ai;
                n += (size_t)snprintf(expanded[k] + n, sizeof expanded[k] - n, "%s", v);
                p++;
            } else {
                expanded[k][n++] = *p;
                expanded[k][n] = '\0';
            }
        }
    }
    char nodelist[8192];
    size_t nl = 0;
    nodelist[0] = '\0';
    for (int i = 0; i < j->nalloc && nl + 256 < sizeof nodelist; i++)
        nl += (size_t)snprintf(nodelist + nl, sizeof nodelist - nl, i ? ",%s" : "%s", c->nodes[j->alloc[i]].name);
    json_t *l = json_pack("{s:I, s:i, s:s, s:s, s:s, s:s, s:I, s:i, s:I, s:i, s:i, s:i, s:s, s:s, s:s}",
                          "id", (json_int_t)j->id, "attempt", j->requeues, "user", j->user,
                          "unix_user", u ? u->unix_user : j->user, "workdir", workdir,
                          "stdout", expanded[0], "time_limit_s", (json_int_t)j->time_limit_s,
                          "cpus", job_cpus_per_node(j), "mem_mb", (json_int_t)j->mem_mb,
                          "gpus", j->gpus, "tasks", j->tasks, "array_task_id", j->array_task_id,
                          "nodelist", nodelist, "name", j->name, "account", j->account);
    if (expanded[1][0]) json_object_set_new(l, "stderr", json_string(expanded[1]));
    json_t *env = json_object_get(spec, "env");
    json_object_set(l, "env", env ? env : json_object());
    if (!env) json_decref(json_object_get(l, "env")); /* balance the fresh object */
    if (json_object_get(spec, "script")) json_object_set(l, "script", json_object_get(spec, "script"));
    else json_object_set(l, "command", json_object_get(spec, "command"));
    /* Placement: this (first) node's PUs/GPUs, and every node's for mpirun. */
    cluster_place_fields(c, j, 0, l);
    json_t *all = json_array();
    for (int i = 0; i < j->nalloc; i++) {
        json_t *a = json_pack("{s:s}", "node", c->nodes[j->alloc[i]].name);
        cluster_place_fields(c, j, i, a);
        json_object_del(a, "numa");
        json_array_append_new(all, a);
    }
    json_object_set_new(l, "alloc", all);
    json_object_set_new(l, "tasks_per_node", json_integer((j->tasks + j->nodes - 1) / j->nodes));
    json_object_set_new(l, "cpus_per_task", json_integer(j->cpus_per_task));
    json_object_set_new(l, "mpi", json_boolean(j->mpi));
    json_object_set_new(l, "step_key", json_string(j->step_key));
    return json_pack("{s:s, s:o}", "op", "launch", "job", l);
}

void cluster_place_fields(struct cluster *c, const struct job *j, int k, json_t *obj)
{
    json_t *pus = json_array(), *gpus = json_array(), *numa = json_array();
    const struct job_place *p = j->place ? &j->place[k] : NULL;
    const struct node_topo *t = &c->nodes[j->alloc[k]].topo;
    for (int i = 0; p && i < p->npus; i++) {
        json_array_append_new(pus, json_integer(p->pus[i]));
        for (int x = 0; x < t->npus; x++) {
            if (t->pus[x] != p->pus[i]) continue;
            int seen = 0;
            size_t q;
            json_t *v;
            json_array_foreach(numa, q, v) seen |= json_integer_value(v) == t->pu_numa[x];
            if (!seen) json_array_append_new(numa, json_integer(t->pu_numa[x]));
        }
    }
    for (int i = 0; p && i < p->ngpus; i++) json_array_append_new(gpus, json_integer(p->gpus[i]));
    json_object_set_new(obj, "cpu_list", pus);
    json_object_set_new(obj, "gpu_list", gpus);
    json_object_set_new(obj, "numa", numa);
}

static json_t *kill_command(const struct job *j, const char *reason)
{
    return json_pack("{s:s, s:I, s:i, s:s}", "op", "kill", "id", (json_int_t)j->id, "attempt",
                     j->requeues, "reason", reason);
}

/* Puts a job that was running back in the queue as a new attempt, keeping its
 * submit time; what it used so far is charged. */
static void job_requeue(struct cluster *c, struct job *j, const char *reason)
{
    cluster_usage_charge(c, j);
    cluster_job_use(c, j, -1);
    job_free_places(j);
    j->nalloc = 0;
    j->released = 0;
    j->launched = 0;
    j->kill_pending = 0;
    j->preempted_by = 0;
    j->requeues++;
    j->state = JOB_PENDING;
    j->start_time = 0;
    snprintf(j->reason, sizeof j->reason, "%s", reason);
    pending_insert_sorted(c, j->id);
    c->qstate_valid = 0;
    c->dirty = 1;
}

static void lost_job(struct cluster *c, struct job *j, const char *why)
{
    cm_warn("job %lld: %s", (long long)j->id, why);
    free(j->error);
    j->error = strdup(why);
    if (j->requeue) job_requeue(c, j, "Requeued");
    else job_finish(c, j, JOB_NODE_FAIL, 1);
    cluster_job_save(c, j);
}

void cluster_job_preempt(struct cluster *c, struct job *victim, const struct job *for_job, const char *qos_name)
{
    char note[512];
    char when[32];
    time_t now = (time_t)(cm_now_ms() / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(note, sizeof note, "%s%spreempted at %s for job %lld (QOS %s, may preempt QOS %s)", victim->note ? victim->note : "",
             victim->note ? "; " : "", when, (long long)for_job->id, for_job->qos, qos_name);
    free(victim->note);
    victim->note = strdup(note);
    victim->preempted_by = for_job->id;
    victim->kill_pending = 1;
    int q = cluster_job_qos(c, victim);
    int cancel = c->policy && q >= 0 && c->policy->qos[q].preempt_mode == QUOTA_PREEMPT_CANCEL;
    json_t *rec = json_pack("{s:I, s:s, s:s, s:s, s:I, s:s, s:s, s:I}", "job", (json_int_t)victim->id, "user",
                            victim->user, "account", victim->account, "qos", victim->qos, "for_job",
                            (json_int_t)for_job->id, "for_qos", for_job->qos, "action", cancel ? "cancel" : "requeue",
                            "time", (json_int_t)now);
    if (ledger_append(&c->store, (int64_t)now, LEDGER_PREEMPTION, rec) < 0)
        cm_error("job %lld: the preemption could not be written to the ledger: %s", (long long)victim->id, c->store.err);
    json_decref(rec);
    victim->kill_sent_ms = 0;
    cm_info("job %lld: preempted for job %lld", (long long)victim->id, (long long)for_job->id);
    cluster_job_save(c, victim);
}

json_t *cluster_node_commands(struct cluster *c, struct node *n, json_t *running)
{
    json_t *cmds = json_array();
    int64_t now = cm_mono_ms();
    int idx = cluster_node_index(c, n);
    /* What the agent runs that is not (or no longer) ours gets a kill. */
    size_t i;
    json_t *r;
    json_array_foreach(running, i, r) {
        if (json_array_size(r) == 3) continue; /* a spawn: cluster_spawn_commands decides */
        int64_t id = json_integer_value(json_array_get(r, 0));
        int attempt = (int)json_integer_value(json_array_get(r, 1));
        struct job *j = cluster_job(c, id);
        if (j && on_node(c, j, n) && attempt == j->requeues && !j->released) {
            j->missing_since_ms = 0;
            if (!j->launched) {
                j->launched = 1;
                cluster_job_save(c, j);
            }
            continue;
        }
        json_array_append_new(cmds, json_pack("{s:s, s:I, s:i, s:s}", "op", "kill", "id", (json_int_t)id,
                                              "attempt", attempt, "reason", "not_yours"));
    }
    /* Our jobs on this node: launch, resend, kill, or declare lost.
     * A scan over running jobs; the pending queue is never touched here. */
    for (int64_t id = 1; id < c->next_id; id++) {
        struct job *j = c->jobs[id];
        if (!j || j->released || j->nalloc == 0 || j->alloc[0] != idx) continue;
        int listed = 0;
        json_array_foreach(running, i, r)
            if (json_array_size(r) == 2 && json_integer_value(json_array_get(r, 0)) == id &&
                json_integer_value(json_array_get(r, 1)) == j->requeues) listed = 1;
        if (j->kill_pending) {
            if (!listed && j->launched) { /* already gone and we missed its end */
                cluster_job_use(c, j, -1);
                j->released = 1;
                j->kill_pending = 0;
                cluster_job_save(c, j);
                c->dirty = 1;
            } else if (now - j->kill_sent_ms >= REKILL_MS) {
                json_array_append_new(cmds, kill_command(j, j->preempted_by ? "preempt" : "cancel"));
                j->kill_sent_ms = now;
            }
            continue;
        }
        if (listed) continue;
        if (!j->launched) {
            if (now - j->launch_sent_ms >= RELAUNCH_MS || j->launch_sent_ms == 0) {
                json_array_append_new(cmds, launch_command(c, j));
                j->launch_sent_ms = now;
            }
        } else if (!j->missing_since_ms) {
            j->missing_since_ms = now;
        } else if (now - j->missing_since_ms >= LOST_GRACE_MS) {
            lost_job(c, j, "the node's agent no longer runs this job and reported no end");
        }
    }
    cluster_spawn_commands(c, n, running, cmds);
    if (json_array_size(cmds) == 0) {
        json_decref(cmds);
        return NULL;
    }
    return cmds;
}

void cluster_check_nodes(struct cluster *c)
{
    int64_t now = cm_mono_ms();
    for (int i = 0; i < c->nnodes; i++) {
        struct node *n = &c->nodes[i];
        if (n->state == NODE_DOWN || now - n->last_heard_ms < c->set.node_timeout_ms) continue;
        cm_warn("node %s: no heartbeat for %lld ms; marking it DOWN", n->name, (long long)(now - n->last_heard_ms));
        n->state = NODE_DOWN;
        snprintf(n->reason, sizeof n->reason, "Not responding");
        node_save(c, n);
        for (int64_t id = 1; id < c->next_id; id++) {
            struct job *j = c->jobs[id];
            if (!j || j->released || j->nalloc == 0) continue;
            int uses = 0;
            for (int k = 0; k < j->nalloc; k++) uses |= j->alloc[k] == i;
            if (!uses) continue;
            if (j->state == JOB_RUNNING) lost_job(c, j, "its node stopped responding");
            else {
                cluster_job_use(c, j, -1);
                j->released = 1;
                cluster_job_save(c, j);
            }
        }
        c->dirty = 1;
    }
}

