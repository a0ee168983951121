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

int agent_launch_parse(json_t *launch, struct agent_launch *l, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->id = -1;
    if (!json_is_object(launch)) {
        snprintf(err, errlen, "launch: expected a JSON object");
        return -1;
    }
    json_t *id = json_object_get(launch, "id");
    if (!json_is_integer(id) || json_integer_value(id) < 0) {
        snprintf(err, errlen, "field \"id\": expected a non-negative integer");
        return -1;
    }
    l->id = json_integer_value(id);
    json_t *att = json_object_get(launch, "attempt");
    if (att && (!json_is_integer(att) || json_integer_value(att) < 0 ||
                json_integer_value(att) > 1000000)) {
        snprintf(err, errlen, "field \"attempt\": expected a non-negative integer");
        l->id = -1; /* no instance to report on without its attempt */
        return -1;
    }
    l->attempt = att ? (int)json_integer_value(att) : 0;
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
    json_t *cmd = json_object_get(launch, "command");
    if (cmd && !json_is_null(cmd)) {
        if (!json_is_array(cmd) || json_array_size(cmd) == 0) {
            snprintf(err, errlen, "field \"command\": expected a non-empty array of strings");
            return -1;
        }
        size_t i;
        json_t *a;
        json_array_foreach(cmd, i, a) {
            if (!json_is_string(a)) {
                snprintf(err, errlen, "field \"command\"[%zu]: expected a string", i);
                return -1;
            }
        }
        l->command = cmd;
    }
    if (!!l->command == !!l->script) {
        snprintf(err, errlen, "fields \"command\" and \"script\": exactly one is required");
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
    return 0;
}
