/* launch.c: reading a LAUNCH object (docs/protocol.md) into what spawn
 * needs, with an error naming the field for anything malformed. */
#include "agent_internal.h"

#include <stdio.h>
#include <string.h>

static int opt_string(json_t *o, const char *key, const char **out, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) {
        snprintf(err, errlen, "field \"%s\": expected a string", key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static int opt_int(json_t *o, const char *key, int64_t def, int64_t *out, char *err,
                   size_t errlen)
{
    json_t *v = json_object_get(o, key);
    *out = def;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) {
        snprintf(err, errlen, "field \"%s\": expected an integer", key);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

/* An optional array of non-negative integers below max into out[]. */
static int opt_ints(json_t *o, const char *key, int max, int *out, int cap, int *n, char *err,
                    size_t errlen)
{
    json_t *v = json_object_get(o, key), *x;
    size_t i;
    *n = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_array(v) || json_array_size(v) > (size_t)cap) {
        snprintf(err, errlen, "field \"%s\": expected an array of at most %d integers", key, cap);
        return -1;
    }
    json_array_foreach(v, i, x) {
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= max) {
            snprintf(err, errlen, "field \"%s\"[%zu]: expected an integer from 0 to %d", key, i,
                     max - 1);
            return -1;
        }
        for (int k = 0; k < *n; k++)
            if (out[k] == (int)json_integer_value(x)) {
                snprintf(err, errlen, "field \"%s\": %d appears twice", key, out[k]);
                return -1;
            }
        out[(*n)++] = (int)json_integer_value(x);
    }
    return 0;
}

/* The placement fields (protocol "Topology, placement and multi-node jobs"). */
static int parse_placement(json_t *o, struct agent_launch *l, char *err, size_t errlen)
{
    if (opt_ints(o, "cpu_list", AGENT_MAX_PUS, l->cpu_list, AGENT_MAX_PUS, &l->ncpu, err,
                 errlen) ||
        opt_ints(o, "gpu_list", AGENT_MAX_GPUS, l->gpu_list, AGENT_MAX_GPUS, &l->ngpu, err,
                 errlen) ||
        opt_ints(o, "numa", AGENT_MAX_NUMA, l->numa, AGENT_MAX_NUMA, &l->nnuma, err, errlen) ||
        opt_int(o, "tasks_per_node", 0, &l->tasks_per_node, err, errlen) ||
        opt_int(o, "cpus_per_task", 0, &l->cpus_per_task, err, errlen) ||
        opt_string(o, "step_key", &l->step_key, err, errlen))
        return -1;
    json_t *mpi = json_object_get(o, "mpi");
    if (mpi && !json_is_null(mpi) && !json_is_boolean(mpi)) {
        snprintf(err, errlen, "field \"mpi\": expected true or false");
        return -1;
    }
    l->mpi = json_is_true(mpi);
    if (l->tasks_per_node < 0 || l->tasks_per_node > AGENT_MAX_TASKS || l->cpus_per_task < 0) {
        snprintf(err, errlen, "fields \"tasks_per_node\" (0..%d) and \"cpus_per_task\" (>= 0): "
                 "out of range", AGENT_MAX_TASKS);
        return -1;
    }
    json_t *alloc = json_object_get(o, "alloc"), *a;
    size_t i;
    if (alloc && !json_is_null(alloc)) {
        if (!json_is_array(alloc)) {
            snprintf(err, errlen, "field \"alloc\": expected an array of {node, cpu_list, gpu_list}");
            return -1;
        }
        json_array_foreach(alloc, i, a) {
            const char *node = json_string_value(json_object_get(a, "node"));
            json_t *cl = json_object_get(a, "cpu_list");
            if (!json_is_object(a) || !node || !node[0] || strspn(node,
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != strlen(node) ||
                (cl && !json_is_array(cl))) {
                snprintf(err, errlen, "field \"alloc\"[%zu]: expected {\"node\": NAME (letters, "
                         "digits, '.', '_', '-'), \"cpu_list\": [...], \"gpu_list\": [...]}", i);
                return -1;
            }
            size_t k;
            json_t *x;
            json_array_foreach(cl, k, x)
                if (!json_is_integer(x) || json_integer_value(x) < 0) {
                    snprintf(err, errlen, "field \"alloc\"[%zu].cpu_list[%zu]: expected a "
                             "non-negative integer", i, k);
                    return -1;
                }
        }
        l->alloc = alloc;
    }
    if (l->mpi && json_array_size(l->alloc) == 0) {
        snprintf(err, errlen, "field \"alloc\": an mpi job needs its allocation");
        return -1;
    }
    return 0;
}

int agent_launch_instance(json_t *launch, int64_t *id, int *attempt, char *err, size_t errlen)
{
    json_t *i = json_object_get(launch, "id");
    if (!json_is_integer(i) || json_integer_value(i) < 0) {
        snprintf(err, errlen, "field \"id\": expected a non-negative integer");
        return -1;
    }
    json_t *att = json_object_get(launch, "attempt");
    if (att && (!json_is_integer(att) || json_integer_value(att) < 0 ||
                json_integer_value(att) > 1000000)) {
        snprintf(err, errlen, "field \"attempt\": expected a non-negative integer");
        return -1;
    }
    *id = json_integer_value(i);
    *attempt = att ? (int)json_integer_value(att) : 0;
    return 0;
}

static int parse(json_t *launch, const char *cmd_key, struct agent_launch *l, char *err,
                 size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->id = -1;
    if (!json_is_object(launch)) {
        snprintf(err, errlen, "launch: expected a JSON object");
        return -1;
    }
    /* On failure l->id stays -1: no instance to report on without its attempt. */
    if (agent_launch_instance(launch, &l->id, &l->attempt, err, errlen) != 0) return -1;
    if (opt_string(launch, "unix_user", &l->unix_user, err, errlen) ||
        opt_string(launch, "workdir", &l->workdir, err, errlen) ||
        opt_string(launch, "stdout", &l->stdout_path, err, errlen) ||
        opt_string(launch, "stderr", &l->stderr_path, err, errlen) ||
        opt_string(launch, "script", &l->script, err, errlen) ||
        opt_string(launch, "name", &l->name, err, errlen) ||
        opt_string(launch, "submit_dir", &l->submit_dir, err, errlen) ||
        opt_string(launch, "nodelist", &l->nodelist, err, errlen) ||
        opt_int(launch, "time_limit_s", 0, &l->time_limit_s, err, errlen) ||
        opt_int(launch, "cpus", 1, &l->cpus, err, errlen) ||
        opt_int(launch, "mem_mb", 0, &l->mem_mb, err, errlen) ||
        opt_int(launch, "gpus", 0, &l->gpus, err, errlen) ||
        opt_int(launch, "tasks", 1, &l->tasks, err, errlen) ||
        opt_int(launch, "array_task_id", -1, &l->array_task_id, err, errlen))
        return -1;
    if (!l->unix_user || !l->unix_user[0]) {
        snprintf(err, errlen, "field \"unix_user\": missing; the job has no Unix account");
        return -1;
    }
    if (!l->workdir || l->workdir[0] != '/') {
        snprintf(err, errlen, "field \"workdir\": expected an absolute path");
        return -1;
    }
    json_t *cmd = json_object_get(launch, cmd_key);
    if (cmd && !json_is_null(cmd)) {
        if (!json_is_array(cmd) || json_array_size(cmd) == 0) {
            snprintf(err, errlen, "field \"%s\": expected a non-empty array of strings", cmd_key);
            return -1;
        }
        size_t i;
        json_t *a;
        json_array_foreach(cmd, i, a) {
            if (!json_is_string(a)) {
                snprintf(err, errlen, "field \"%s\"[%zu]: expected a string", cmd_key, i);
                return -1;
            }
        }
        l->command = cmd;
    }
    if (!!l->command == !!l->script) {
        snprintf(err, errlen, "fields \"%s\" and \"script\": exactly one is required", cmd_key);
        return -1;
    }
    json_t *env = json_object_get(launch, "env");
    if (env && !json_is_null(env)) {
        if (!json_is_object(env)) {
            snprintf(err, errlen, "field \"env\": expected an object of strings");
            return -1;
        }
        const char *k;
        json_t *v;
        json_object_foreach(env, k, v) {
            if (!json_is_string(v) || !k[0] || strchr(k, '=')) {
                snprintf(err, errlen, "field \"env\".\"%s\": expected a string value and a "
                         "name without '='", k);
                return -1;
            }
        }
        l->env = env;
    }
    if (!l->stdout_path || !l->stdout_path[0]) {
        snprintf(l->default_out, sizeof l->default_out, "%s/commons-%lld.out", l->workdir,
                 (long long)l->id);
        l->stdout_path = l->default_out;
    }
    if (!l->stderr_path || !l->stderr_path[0]) l->stderr_path = l->stdout_path;
    if (l->time_limit_s < 0) {
        snprintf(err, errlen, "field \"time_limit_s\": expected >= 0 (0: no limit)");
        return -1;
    }
    return parse_placement(launch, l, err, errlen);
}

int agent_launch_parse(json_t *launch, struct agent_launch *l, char *err, size_t errlen)
{
    return parse(launch, "command", l, err, errlen);
}

int agent_spawn_cmd_parse(json_t *cmd, struct agent_launch *l, char *err, size_t errlen)
{
    json_t *sid = json_object_get(cmd, "spawn_id");
    int rc = parse(cmd, "argv", l, err, errlen);
    if (rc == 0 && l->script) {
        snprintf(err, errlen, "spawn: field \"script\": not allowed (argv only)");
        rc = -1;
    }
    if (l->id >= 0 && (!json_is_integer(sid) || json_integer_value(sid) <= 0)) {
        snprintf(err, errlen, "spawn: field \"spawn_id\": expected a positive integer");
        l->id = -1; /* no instance to report on */
        return -1;
    }
    l->spawn_id = json_integer_value(sid);
    /* Open MPI's daemon sends rank output over its own connection. */
    l->stdout_path = l->stderr_path = "/dev/null";
    l->mpi = false;
    l->alloc = NULL;
    return rc;
}
