/* service.c: inference as a scheduled service. A service keeps between min
 * and max replicas of commons-serve running as ordinary jobs (placed, pinned,
 * charged to its account's fair-share and limits like any job); `target` is
 * how many it wants now, changed by `commons service scale` or the gateway's
 * autoscaler within [min, max].
 *
 * Invariant after each pass (service_reconcile): the number of the service's
 * replica jobs that are pending or running and not being stopped equals its
 * target; replicas that end are replaced. Each replica is given a port of
 * the cluster's service range at submit (its spec's "service_port", kept for
 * the job's life, requeues included), and no two jobs that have not ended
 * hold the same port, so replicas that land on one node never collide.
 *
 * A split model (spec "tp" or "pp": N ranks, docs/distributed.md) makes each
 * replica an mpi job of N tasks (nodes x tasks_per_node = N, all on one node
 * unless the deploy says otherwise) running `commons-serve --tp|--pp N`; only
 * rank 0 listens, and rank 0 runs on the job's first node, whose endpoint the
 * service lists. The split lives in the spec, so the services table (a JSON
 * document per service) keeps it across restarts without a schema change.
 */
#include "cluster.h"

#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int service_ports_parse(const char *text, int *lo, int *hi, char *err, size_t errlen)
{
    char *end, *end2;
    long a = strtol(text, &end, 10);
    long b = *end == '-' ? strtol(end + 1, &end2, 10) : -1;
    if (!isdigit((unsigned char)text[0]) || *end != '-' || !isdigit((unsigned char)end[1]) || *end2 || a < 1024 ||
        b < a || b > 65535) {
        snprintf(err, errlen, "expected LO-HI with 1024 <= LO <= HI <= 65535, got '%s'", text);
        return -1;
    }
    *lo = (int)a;
    *hi = (int)b;
    return 0;
}

static int replica_port(const struct job *j)
{
    return (int)json_integer_value(json_object_get(j->spec, "service_port"));
}

/* A port of the service range that no job that has not ended holds, searching
 * round-robin from where the last search stopped (a replacement does not take
 * the port its predecessor just gave up); 0 when every one is held. */
static int free_service_port(struct cluster *c)
{
    int lo = c->set.service_ports_lo, hi = c->set.service_ports_hi, span = hi - lo + 1;
    unsigned char *held = calloc((size_t)span, 1);
    if (!held) return 0;
    for (int64_t id = 1; id < c->next_id; id++) {
        struct job *j = c->jobs[id];
        int p = j && !job_state_is_final(j->state) ? replica_port(j) : 0;
        if (p >= lo && p <= hi) held[p - lo] = 1;
    }
    int port = 0;
    int start = c->service_port_next >= lo && c->service_port_next <= hi ? c->service_port_next - lo : 0;
    for (int k = 0; k < span && !port; k++)
        if (!held[(start + k) % span]) port = lo + (start + k) % span;
    free(held);
    if (port) c->service_port_next = port < hi ? port + 1 : lo;
    return port;
}

struct service *cluster_service(struct cluster *c, const char *name)
{
    for (int i = 0; i < c->nservices; i++)
        if (strcmp(c->services[i].name, name) == 0) return &c->services[i];
    return NULL;
}

static void service_free(struct service *s)
{
    free(s->name);
    free(s->user);
    json_decref(s->spec);
}

/* Forgets s (its record in memory only); the last service takes its place. */
static void service_drop(struct cluster *c, struct service *s)
{
    service_free(s);
    *s = c->services[--c->nservices];
}

void cluster_services_free(struct cluster *c)
{
    for (int i = 0; i < c->nservices; i++) service_free(&c->services[i]);
    free(c->services);
    c->services = NULL;
    c->nservices = 0;
}

static int service_save(struct cluster *c, const struct service *s)
{
    char *text = json_dumps(s->spec, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = store_service_put(&c->store, s->name, s->user, text, s->min, s->max, s->target);
    free(text);
    return rc;
}

static int load_service(void *ctx, sqlite3_stmt *st)
{
    struct cluster *c = ctx;
    json_t *spec = json_loads((const char *)sqlite3_column_text(st, 2), 0, NULL);
    if (!spec) return 0;
    c->services = realloc(c->services, sizeof *c->services * (size_t)(c->nservices + 1));
    struct service *s = &c->services[c->nservices++];
    *s = (struct service){0};
    s->name = strdup((const char *)sqlite3_column_text(st, 0));
    s->user = strdup((const char *)sqlite3_column_text(st, 1));
    s->spec = spec;
    s->min = sqlite3_column_int(st, 3);
    s->max = sqlite3_column_int(st, 4);
    s->target = sqlite3_column_int(st, 5);
    return 0;
}

int cluster_services_load(struct cluster *c)
{
    return store_each(&c->store, "SELECT name, user, spec, min, max, target FROM services ORDER BY name", load_service, c);
}

/* The split of a service's spec: "tp" or "pp" and its rank count, or NULL. */
static const char *service_split(const json_t *spec, int *ranks)
{
    const char *mode = json_object_get(spec, "tp") ? "tp" : json_object_get(spec, "pp") ? "pp" : NULL;
    *ranks = mode ? (int)json_integer_value(json_object_get(spec, mode)) : 1;
    return mode;
}

/* Checks the split fields of a deploy's spec and completes them: a split of N
 * ranks becomes an mpi job with nodes x tasks_per_node = N (default: one node
 * with all N); without a split, a replica is one process (no mpi, one task). */
static int split_normalize(json_t *spec, char *err, size_t errlen)
{
    json_t *tp = json_object_get(spec, "tp"), *pp = json_object_get(spec, "pp");
    if (tp && pp) {
        snprintf(err, errlen, "fields 'tp' and 'pp': give one of them (a model is split one way)");
        return -1;
    }
    const char *mode = tp ? "tp" : pp ? "pp" : NULL;
    json_t *v = tp ? tp : pp;
    long nodes, tpn, tasks;
    if (job_spec_int(spec, "nodes", 1, CM_SERVICE_MAX_RANKS, 1, &nodes, err, errlen) ||
        job_spec_int(spec, "tasks_per_node", 1, CM_SERVICE_MAX_RANKS, 0, &tpn, err, errlen) ||
        job_spec_int(spec, "tasks", 1, CM_SERVICE_MAX_RANKS, 0, &tasks, err, errlen))
        return -1;
    json_t *mpi = json_object_get(spec, "mpi");
    if (!mode) {
        if (nodes > 1 || tpn > 1 || tasks > 1 || json_is_true(mpi)) {
            snprintf(err, errlen, "fields 'nodes', 'tasks', 'tasks_per_node', 'mpi': only a split model "
                                  "('tp' or 'pp') runs as several ranks; a replica is one process");
            return -1;
        }
        return 0;
    }
    long n = json_is_integer(v) ? (long)json_integer_value(v) : 0;
    if (n < 2 || n > CM_SERVICE_MAX_RANKS) {
        snprintf(err, errlen, "field '%s': expected the number of ranks as an integer from 2 to %d", mode,
                 CM_SERVICE_MAX_RANKS);
        return -1;
    }
    if (mpi && !json_is_true(mpi)) {
        snprintf(err, errlen, "field 'mpi': a split replica ('%s') runs under mpirun; leave 'mpi' out or true", mode);
        return -1;
    }
    if (tasks && tasks != n) {
        snprintf(err, errlen, "field 'tasks': %ld tasks, but %s %ld runs %ld ranks", tasks, mode, n, n);
        return -1;
    }
    if (!tpn) tpn = n / nodes;
    if (nodes * tpn != n) {
        snprintf(err, errlen, "fields 'nodes' and 'tasks_per_node': %ld nodes x %ld ranks per node is not the %ld "
                              "ranks of %s %ld",
                 nodes, tpn, n, mode, n);
        return -1;
    }
    json_object_set_new(spec, "mpi", json_true());
    json_object_set_new(spec, "nodes", json_integer(nodes));
    json_object_set_new(spec, "tasks_per_node", json_integer(tpn));
    json_object_del(spec, "tasks");
    return 0;
}

/* A replica's job spec: the service's spec less the fields only the service
 * reads (the replica's command carries them). */
static json_t *replica_job(const json_t *spec)
{
    json_t *job = json_deep_copy(spec);
    static const char *const service_only[] = {"model", "serve_bin", "tp", "pp"};
    for (size_t i = 0; i < sizeof service_only / sizeof service_only[0]; i++) json_object_del(job, service_only[i]);
    return job;
}

static int submit_replica(struct cluster *c, struct service *s, const char **code, char *err, size_t errlen);

int cluster_service_deploy(struct cluster *c, const struct user *u, const char *name, json_t *spec, int min, int max,
                           char *err, size_t errlen)
{
    if (cluster_service(c, name)) {
        snprintf(err, errlen, "service '%s' exists; scale it or remove it first", name);
        return -1;
    }
    if (min < 0 || max < 1 || min > max || max > 1024) {
        snprintf(err, errlen, "replicas %d..%d: expected 0 <= MIN <= MAX, 1 <= MAX <= 1024", min, max);
        return -1;
    }
    json_t *own = json_deep_copy(spec);
    if (split_normalize(own, err, errlen) != 0) {
        json_decref(own);
        return -1;
    }
    /* The replica's job spec must validate like any job, with a placeholder command. */
    json_t *probe = replica_job(own);
    json_object_set_new(probe, "command", json_pack("[s]", "commons-serve"));
    struct job_spec js;
    int rc = job_spec_validate(probe, &js, err, errlen);
    json_decref(probe);
    if (rc != 0) {
        json_decref(own);
        return -1;
    }
    job_spec_free(&js);
    c->services = realloc(c->services, sizeof *c->services * (size_t)(c->nservices + 1));
    struct service *s = &c->services[c->nservices++];
    *s = (struct service){0};
    s->name = strdup(name);
    s->user = strdup(u->name);
    s->spec = own;
    s->min = min;
    s->max = max;
    s->target = min > 0 ? min : 1;
    if (s->target > max) s->target = max;
    c->dirty = 1;
    if (service_save(c, s) != 0) {
        snprintf(err, errlen, "%s", c->store.err);
        service_drop(c, s); /* not kept in memory when it is not stored */
        return -1;
    }
    /* The first replica now, so that one that can never run (larger than every
     * node, say N ranks x C CPUs on one node) or that the policy forbids is
     * refused here, saying why, as a job would be at submit. A queue limit is
     * not permanent: that replica is submitted again by later passes. */
    const char *code;
    if (c->nnodes > 0 && submit_replica(c, s, &code, err, errlen) != 0 && strcmp(code, "limit") != 0) {
        char why[768];
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, errlen, "a replica of service '%s' cannot run: %s", name, why);
        if (store_service_delete(&c->store, name) != 0) cm_warn("service %s: %s", name, c->store.err);
        service_drop(c, s);
        return -1;
    }
    return 0;
}

int cluster_service_scale(struct cluster *c, struct service *s, int target, char *err, size_t errlen)
{
    if (target < s->min || target > s->max) {
        snprintf(err, errlen, "service '%s' keeps %d..%d replicas; %d is outside", s->name, s->min, s->max, target);
        return -1;
    }
    s->target = target;
    c->dirty = 1;
    return service_save(c, s) ? (snprintf(err, errlen, "%s", c->store.err), -1) : 0;
}

/* Jobs of service s that count as its replicas (not ended, not being stopped). */
static int live_replicas(struct cluster *c, const struct service *s, struct job **out, int max)
{
    int n = 0;
    for (int64_t id = 1; id < c->next_id; id++) {
        struct job *j = c->jobs[id];
        if (!j || job_state_is_final(j->state) || j->kill_pending) continue;
        const char *svc = json_string_value(json_object_get(j->spec, "service"));
        if (svc && strcmp(svc, s->name) == 0 && n < max) out[n++] = j;
    }
    return n;
}

static int submit_replica(struct cluster *c, struct service *s, const char **code, char *err, size_t errlen)
{
    struct user *u = cluster_user(c, s->user);
    if (!u) {
        *code = "forbidden";
        snprintf(err, errlen, "its owner %s no longer exists", s->user);
        return -1;
    }
    json_t *spec = replica_job(s->spec);
    const char *bin = json_string_value(json_object_get(s->spec, "serve_bin"));
    const char *model = json_string_value(json_object_get(s->spec, "model"));
    json_object_set_new(spec, "service", json_string(s->name));
    json_object_set_new(spec, "requeue", json_true());
    int port = free_service_port(c);
    if (!port) {
        json_decref(spec);
        *code = "unavailable";
        snprintf(err, errlen, "every port of the service range %d-%d is held by a replica (commonsd --service-ports)",
                 c->set.service_ports_lo, c->set.service_ports_hi);
        return -1;
    }
    json_object_set_new(spec, "service_port", json_integer(port));
    char listen[64], threads[16];
    snprintf(listen, sizeof listen, "tcp://0.0.0.0:%d", port);
    snprintf(threads, sizeof threads, "%lld", (long long)json_integer_value(json_object_get(spec, "cpus_per_task")));
    json_t *cmd = json_pack("[s, s, s, s, s, s, s, s, s]", bin, "--model", model, "--listen", listen, "--threads",
                            threads, "--name", s->name, "--foreground");
    int ranks;
    const char *split = service_split(s->spec, &ranks);
    if (split) {
        /* Every rank gets the same flags (mpirun runs the command as each); --threads is per rank. */
        char flag[8], n[16];
        snprintf(flag, sizeof flag, "--%s", split);
        snprintf(n, sizeof n, "%d", ranks);
        json_array_append_new(cmd, json_string(flag));
        json_array_append_new(cmd, json_string(n));
    }
    json_object_set_new(spec, "command", cmd);
    struct job_spec js;
    *code = "invalid_job";
    int rc = job_spec_validate(spec, &js, err, errlen) != 0 || cluster_submit(c, u, &js, code, err, errlen) < 0 ? -1 : 0;
    job_spec_free(&js);
    json_decref(spec);
    return rc;
}

void cluster_services_reconcile(struct cluster *c)
{
    for (int i = 0; i < c->nservices; i++) {
        struct service *s = &c->services[i];
        struct job *reps[1024];
        int n = live_replicas(c, s, reps, 1024);
        char err[512];
        const char *code;
        for (; n < s->target; n++) {
            if (submit_replica(c, s, &code, err, sizeof err) == 0) {
                s->submit_failing = 0;
                continue;
            }
            /* Said once, not every pass, until a submission succeeds. */
            if (!s->submit_failing) cm_warn("service %s: cannot submit a replica: %s", s->name, err);
            s->submit_failing = 1;
            break;
        }
        /* Too many: stop the youngest first (pending before running). */
        while (n > s->target) {
            struct job *victim = reps[--n];
            char err[256];
            cluster_cancel(c, victim, err, sizeof err);
        }
    }
}

int cluster_service_remove(struct cluster *c, struct service *s, char *err, size_t errlen)
{
    s->target = 0;
    s->min = 0;
    cluster_services_reconcile(c);
    if (store_service_delete(&c->store, s->name) != 0) {
        snprintf(err, errlen, "%s", c->store.err);
        return -1;
    }
    service_drop(c, s);
    return 0;
}

json_t *cluster_service_json(struct cluster *c, const struct service *s)
{
    json_t *reps = json_array();
    for (int64_t id = 1; id < c->next_id; id++) {
        struct job *j = c->jobs[id];
        if (!j || job_state_is_final(j->state)) continue;
        const char *svc = json_string_value(json_object_get(j->spec, "service"));
        if (!svc || strcmp(svc, s->name) != 0) continue;
        json_t *r = json_pack("{s:I, s:s, s:b}", "job", (json_int_t)j->id, "state", job_state_name(j->state), "stopping",
                              j->kill_pending);
        if (j->state == JOB_RUNNING && j->nalloc) {
            const struct node *n = &c->nodes[j->alloc[0]];
            char ep[512];
            snprintf(ep, sizeof ep, "tcp://%s:%d", n->hostname && *n->hostname ? n->hostname : n->name, replica_port(j));
            json_object_set_new(r, "node", json_string(n->name));
            json_object_set_new(r, "endpoint", json_string(ep));
        } else {
            json_object_set_new(r, "reason", json_string(j->reason));
        }
        json_array_append_new(reps, r);
    }
    int ranks;
    const char *split = service_split(s->spec, &ranks);
    json_t *out = json_pack("{s:s, s:s, s:i, s:i, s:i, s:O, s:o}", "name", s->name, "owner", s->user, "min", s->min,
                            "max", s->max, "target", s->target, "spec", s->spec, "replicas", reps);
    /* split: how each replica is cut, null for one process per replica. */
    json_object_set_new(out, "split",
                        split ? json_pack("{s:s, s:i, s:I, s:I}", "mode", split, "ranks", ranks, "nodes",
                                          json_integer_value(json_object_get(s->spec, "nodes")), "ranks_per_node",
                                          json_integer_value(json_object_get(s->spec, "tasks_per_node")))
                              : json_null());
    return out;
}
