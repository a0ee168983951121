/* spawn.c: relaying a job's request to start a command on another node of
 * the same job (Open MPI's remote launch, through commons-rsh) to that node's
 * agent, and the job's view of the result (docs/protocol.md, "Spawning").
 *
 * Spawns live in memory only. After a restart of commonsd they are rebuilt from
 * the agents: a spawn an agent lists in `running`, or reports ended, for a job
 * still running that attempt on that node is adopted (spawn_adopt), so the
 * commons-rsh waiting for it (which keeps asking through a restart) gets its
 * end and mpirun keeps its daemon; live spawns of ended jobs are killed because
 * agents list them in `running`. Only a launch in flight (created, not yet
 * started by its agent) is lost: its commons-rsh gives up and mpirun fails.
 * Spawn ids start at the wall clock in ms when commonsd starts (cluster_load),
 * above every id of an earlier run (unless the clock went back), and go on
 * above every adopted one.
 * Invariant: a spawn belongs to one attempt of one job and to one of that
 * attempt's nodes; it is started at most once (the agent keys it by spawn id).
 */
#include "cluster.h"

#include "cm_crypto.h"
#include "cm_log.h"
#include "cm_util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPAWN_RESEND_MS 5000
#define SPAWN_KEEP_MS 60000 /* an ended spawn is remembered this long for spawn_wait */

struct spawn *cluster_spawn_find(struct cluster *c, int64_t spawn_id)
{
    for (int i = 0; i < c->nspawns; i++)
        if (c->spawns[i].id == spawn_id) return &c->spawns[i];
    return NULL;
}

static void spawn_free(struct spawn *s)
{
    json_decref(s->argv);
    json_decref(s->env);
    free(s->error);
}

/* Forgets ended spawns nobody asked about for a while. */
static void spawn_gc(struct cluster *c)
{
    int64_t now = cm_mono_ms();
    for (int i = 0; i < c->nspawns;) {
        struct spawn *s = &c->spawns[i];
        if (s->state == SPAWN_ENDED && now - s->ended_ms > SPAWN_KEEP_MS) {
            spawn_free(s);
            c->spawns[i] = c->spawns[--c->nspawns];
        } else {
            i++;
        }
    }
}

/* A new record, zeroed but for its identity, or NULL at the limit or out of memory. */
static struct spawn *spawn_add(struct cluster *c, int64_t id, const struct job *j, int node)
{
    if (c->nspawns >= CLUSTER_MAX_SPAWNS) return NULL;
    struct spawn *more = realloc(c->spawns, sizeof *c->spawns * (size_t)(c->nspawns + 1));
    if (!more) return NULL;
    c->spawns = more;
    struct spawn *s = &c->spawns[c->nspawns++];
    memset(s, 0, sizeof *s);
    s->id = id;
    s->job = j->id;
    s->attempt = j->requeues;
    s->node = node;
    return s;
}

/* Whether node index idx is one of job j's nodes. */
static bool job_on_node(const struct job *j, int idx)
{
    for (int i = 0; i < j->nalloc; i++)
        if (j->alloc[i] == idx) return true;
    return false;
}

/* A spawn that node idx runs (or ran) and this commonsd does not know, started by
 * an earlier run of it: adopted when it belongs to a job running this attempt
 * there (its command is not known again, and need not be: it is never resent). */
static struct spawn *spawn_adopt(struct cluster *c, int idx, int64_t job, int attempt, int64_t sid)
{
    struct job *j = cluster_job(c, job);
    if (sid <= 0 || cluster_spawn_find(c, sid) || !j || j->state != JOB_RUNNING || j->kill_pending ||
        j->requeues != attempt || !job_on_node(j, idx))
        return NULL;
    struct spawn *s = spawn_add(c, sid, j, idx);
    if (!s) return NULL;
    s->argv = json_array();
    s->env = json_object();
    s->state = SPAWN_RUNNING;
    if (sid > c->next_spawn_id) c->next_spawn_id = sid;
    cm_info("spawn %lld of job %lld on %s adopted after a restart", (long long)sid, (long long)job,
            c->nodes[idx].name);
    return s;
}

int64_t cluster_spawn_create(struct cluster *c, struct job *j, const char *node, json_t *argv, json_t *env,
                             char *err, size_t errlen)
{
    spawn_gc(c);
    int where = -1;
    for (int i = 0; i < j->nalloc; i++)
        if (strcmp(c->nodes[j->alloc[i]].name, node) == 0) where = j->alloc[i];
    if (where < 0) {
        snprintf(err, errlen, "node '%s' is not one of job %lld's nodes", node, (long long)j->id);
        return -1;
    }
    struct spawn *s = spawn_add(c, c->next_spawn_id + 1, j, where);
    if (!s) {
        if (c->nspawns >= CLUSTER_MAX_SPAWNS)
            snprintf(err, errlen, "too many spawns in flight (%d)", CLUSTER_MAX_SPAWNS);
        else
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->next_spawn_id++;
    s->argv = json_incref(argv);
    s->env = env ? json_incref(env) : json_object();
    s->state = SPAWN_PENDING;
    return s->id;
}

static json_t *spawn_command(struct cluster *c, const struct spawn *s, const struct job *j)
{
    const struct user *u = cluster_user(c, j->user);
    json_t *cmd = json_pack("{s:s, s:I, s:i, s:I, s:O, s:O, s:s, s:s, s:I}", "op", "spawn", "id", (json_int_t)j->id,
                            "attempt", j->requeues, "spawn_id", (json_int_t)s->id, "argv", s->argv, "env", s->env,
                            "unix_user", u ? u->unix_user : j->user, "workdir",
                            json_string_value(json_object_get(j->spec, "workdir")), "time_limit_s",
                            (json_int_t)j->time_limit_s);
    json_object_set_new(cmd, "mem_mb", json_integer(j->mem_mb)); /* spawns are limited like the job */
    for (int i = 0; i < j->nalloc; i++)
        if (j->alloc[i] == s->node) cluster_place_fields(c, j, i, cmd);
    return cmd;
}

void cluster_spawn_commands(struct cluster *c, struct node *n, json_t *running, json_t *cmds)
{
    int idx = cluster_node_index(c, n);
    int64_t now = cm_mono_ms();
    for (int i = 0; i < c->nspawns; i++) {
        struct spawn *s = &c->spawns[i];
        if (s->node != idx || s->state != SPAWN_PENDING || now - s->sent_ms < SPAWN_RESEND_MS) continue;
        struct job *j = cluster_job(c, s->job);
        if (!j || j->state != JOB_RUNNING || j->requeues != s->attempt) {
            s->state = SPAWN_ENDED;
            s->ended_ms = now;
            s->exit_code = -1;
            free(s->error);
            s->error = strdup("the job ended before the spawn started");
            continue;
        }
        json_array_append_new(cmds, spawn_command(c, s, j));
        s->sent_ms = now;
    }
    /* Live spawns of jobs that are over, or not this attempt, are ended; those of
     * running jobs that a restart made us forget are adopted. */
    size_t k;
    json_t *r;
    json_array_foreach(running, k, r) {
        if (json_array_size(r) != 3) continue;
        int64_t id = json_integer_value(json_array_get(r, 0));
        int attempt = (int)json_integer_value(json_array_get(r, 1));
        struct job *j = cluster_job(c, id);
        if (j && j->state == JOB_RUNNING && !j->kill_pending && j->requeues == attempt) {
            spawn_adopt(c, idx, id, attempt, json_integer_value(json_array_get(r, 2)));
            continue;
        }
        int dup = 0; /* one kill_spawns per job and attempt in a reply */
        size_t q;
        json_t *x;
        json_array_foreach(cmds, q, x)
            dup |= !strcmp(json_string_value(json_object_get(x, "op")), "kill_spawns") &&
                   json_integer_value(json_object_get(x, "id")) == id &&
                   json_integer_value(json_object_get(x, "attempt")) == attempt;
        if (!dup)
            json_array_append_new(cmds, json_pack("{s:s, s:I, s:i}", "op", "kill_spawns", "id", (json_int_t)id,
                                                  "attempt", attempt));
    }
}

void cluster_spawn_event(struct cluster *c, struct node *n, json_t *ev)
{
    int64_t sid = json_integer_value(json_object_get(ev, "spawn_id"));
    struct spawn *s = cluster_spawn_find(c, sid);
    const char *what = json_string_value(json_object_get(ev, "event"));
    int idx = cluster_node_index(c, n);
    if (!s && what)   /* the end (or start) of a spawn of an earlier run of commonsd */
        s = spawn_adopt(c, idx, json_integer_value(json_object_get(ev, "id")),
                        (int)json_integer_value(json_object_get(ev, "attempt")), sid);
    if (!s || !what || s->state == SPAWN_ENDED || s->node != idx) return;
    if (strcmp(what, "spawn_started") == 0) {
        s->state = SPAWN_RUNNING;
        return;
    }
    s->state = SPAWN_ENDED;
    s->ended_ms = cm_mono_ms();
    s->exit_code = (int)json_integer_value(json_object_get(ev, "exit_code"));
    s->signal = (int)json_integer_value(json_object_get(ev, "signal"));
    const char *error = json_string_value(json_object_get(ev, "error"));
    if (error && *error) s->error = strndup(error, 1024);
}

const char *spawn_state_name(const struct spawn *s)
{
    return s->state == SPAWN_PENDING ? "pending" : s->state == SPAWN_RUNNING ? "running" : "ended";
}
