/* job.c: job states, and validation of job specs, arrays and dependencies. */
#include "job.h"

#include "cm_util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[JOB_STATE_COUNT] = {
    "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"};

const char *job_state_name(enum job_state s)
{
    return (unsigned)s < JOB_STATE_COUNT ? state_names[s] : "UNKNOWN";
}

int job_state_parse(const char *name)
{
    for (int i = 0; i < JOB_STATE_COUNT; i++)
        if (strcasecmp(name, state_names[i]) == 0) return i;
    return -1;
}

int job_cpus_per_node(const struct job *j)
{
    int tasks_per_node = (j->tasks + j->nodes - 1) / j->nodes;
    return tasks_per_node * j->cpus_per_task;
}

/* Parses a non-negative decimal integer that fills the whole of [s, end). */
static int parse_int_span(const char *s, const char *end, long *out)
{
    if (s == end) return -1;
    long v = 0;
    for (const char *p = s; p < end; p++) {
        if (!isdigit((unsigned char)*p) || v > 100000000) return -1;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 0;
}

int job_array_parse(const char *s, int **idx, int *throttle, char *err, size_t errlen)
{
    *idx = NULL;
    *throttle = 0;
    const char *pct = strchr(s, '%');
    const char *end = pct ? pct : s + strlen(s);
    if (pct) {
        long t;
        if (parse_int_span(pct + 1, pct + strlen(pct), &t) != 0 || t < 1) {
            snprintf(err, errlen, "array '%s': the throttle after %% must be a positive integer", s);
            return -1;
        }
        *throttle = (int)t;
    }
    int n = 0, cap = 16;
    int *v = malloc(sizeof *v * (size_t)cap);
    const char *p = s;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        const char *dash = memchr(p, '-', (size_t)(item_end - p));
        const char *colon = memchr(p, ':', (size_t)(item_end - p));
        long lo, hi, step = 1;
        int bad;
        if (dash) {
            bad = parse_int_span(p, dash, &lo) ||
                  parse_int_span(dash + 1, colon ? colon : item_end, &hi) ||
                  (colon && (parse_int_span(colon + 1, item_end, &step) || step < 1)) || hi < lo;
        } else {
            bad = colon != NULL || parse_int_span(p, item_end, &lo);
            hi = bad ? 0 : lo;
        }
        if (bad) {
            snprintf(err, errlen,
                     "array '%s': expected ranges like 1-100, 1-100:2, 1,3,5 with an optional %%N throttle",
                     s);
            free(v);
            return -1;
        }
        for (long i = lo; i <= hi; i += step) {
            if (n >= JOB_MAX_ARRAY) {
                snprintf(err, errlen, "array '%s' has more than %d tasks", s, JOB_MAX_ARRAY);
                free(v);
                return -1;
            }
            if (n == cap) {
                cap *= 2;
                v = realloc(v, sizeof *v * (size_t)cap);
            }
            v[n++] = (int)i;
        }
        p = comma ? comma + 1 : end;
        if (comma && p == end) {
            snprintf(err, errlen, "array '%s': trailing comma", s);
            free(v);
            return -1;
        }
    }
    if (n == 0) {
        snprintf(err, errlen, "array '%s' is empty", s);
        free(v);
        return -1;
    }
    *idx = v;
    return n;
}

int job_deps_parse(const char *s, struct job_dep *deps, int max, char *err, size_t errlen)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *colon = memchr(p, ':', (size_t)(end - p));
        enum dep_kind kind;
        if (colon && (size_t)(colon - p) == 7 && strncmp(p, "afterok", 7) == 0)
            kind = DEP_AFTEROK;
        else if (colon && (size_t)(colon - p) == 8 && strncmp(p, "afterany", 8) == 0)
            kind = DEP_AFTERANY;
        else {
            snprintf(err, errlen, "dependency '%s': expected afterok:ID[:ID...] or afterany:ID[:ID...]", s);
            return -1;
        }
        const char *q = colon + 1;
        for (;;) {
            const char *next = memchr(q, ':', (size_t)(end - q));
            const char *id_end = next ? next : end;
            long id;
            if (parse_int_span(q, id_end, &id) || id < 1) {
                snprintf(err, errlen, "dependency '%s': job ids must be positive integers", s);
                return -1;
            }
            if (n == max) {
                snprintf(err, errlen, "dependency '%s': more than %d jobs", s, max);
                return -1;
            }
            deps[n].kind = kind;
            deps[n].id = id;
            n++;
            if (!next) break;
            q = next + 1;
        }
        p = comma ? comma + 1 : end;
    }
    return n;
}

int job_spec_int(json_t *spec, const char *key, long lo, long hi, long def, long *out, char *err,
                 size_t errlen)
{
    json_t *v = json_object_get(spec, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(err, errlen, "field '%s': expected an integer from %ld to %ld", key, lo, hi);
        return -1;
    }
    *out = (long)json_integer_value(v);
    return 0;
}

static int get_str(json_t *spec, const char *key, size_t maxlen, const char **out, char *err,
                   size_t errlen)
{
    json_t *v = json_object_get(spec, key);
    *out = NULL;
    if (!v) return 0;
    if (!json_is_string(v) || json_string_length(v) > maxlen ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(err, errlen, "field '%s': expected a string of at most %zu bytes without NUL",
                 key, maxlen);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

static int get_bool(json_t *spec, const char *key, int *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(spec, key);
    *out = 0;
    if (!v) return 0;
    if (!json_is_boolean(v)) {
        snprintf(err, errlen, "field '%s': expected true or false", key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

static int valid_name_chars(const char *s)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("_-.", *s)) return 0;
    return 1;
}

static const char *const known_fields[] = {
    "name", "account", "command", "script", "workdir", "env", "stdout", "stderr", "nodes",
    "tasks", "cpus_per_task", "gpus", "mem_mb", "time_limit_s", "qos", "dependency",
    "array", "hold", "requeue", "mpi", "tasks_per_node", "service", "service_port", NULL};

int job_spec_validate(json_t *spec_in, struct job_spec *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(spec_in)) {
        snprintf(err, errlen, "job: expected a JSON object");
        return -1;
    }
    const char *key;
    json_t *val;
    json_object_foreach(spec_in, key, val) {
        int known = 0;
        for (int i = 0; known_fields[i]; i++) known |= strcmp(key, known_fields[i]) == 0;
        if (!known) {
            snprintf(err, errlen, "unknown job field '%s'", key);
            return -1;
        }
    }
    json_t *spec = json_deep_copy(spec_in);
    long nodes, tasks, cpt, gpus, mem, port;
    const char *name, *account, *script, *workdir, *out_path, *err_path, *qos, *dep, *array;
    if (job_spec_int(spec, "nodes", 1, JOB_MAX_ALLOC_NODES, 1, &nodes, err, errlen) ||
        job_spec_int(spec, "tasks", 1, 1 << 20, nodes, &tasks, err, errlen) ||
        job_spec_int(spec, "cpus_per_task", 1, 4096, 1, &cpt, err, errlen) ||
        job_spec_int(spec, "gpus", 0, 64, 0, &gpus, err, errlen) ||
        job_spec_int(spec, "mem_mb", 0, 1L << 40, 0, &mem, err, errlen) ||
        job_spec_int(spec, "service_port", 1, 65535, 0, &port, err, errlen) ||
        get_str(spec, "name", 256, &name, err, errlen) ||
        get_str(spec, "account", 128, &account, err, errlen) ||
        get_str(spec, "script", JOB_SCRIPT_MAX, &script, err, errlen) ||
        get_str(spec, "workdir", 4096, &workdir, err, errlen) ||
        get_str(spec, "stdout", 4096, &out_path, err, errlen) ||
        get_str(spec, "stderr", 4096, &err_path, err, errlen) ||
        get_str(spec, "qos", 64, &qos, err, errlen) ||
        get_str(spec, "dependency", 4096, &dep, err, errlen) ||
        get_str(spec, "array", 1024, &array, err, errlen) ||
        get_bool(spec, "hold", &out->hold, err, errlen) ||
        get_bool(spec, "requeue", &out->requeue, err, errlen) ||
        get_bool(spec, "mpi", &out->mpi, err, errlen))
        goto fail;
    json_t *tpn = json_object_get(spec, "tasks_per_node");
    if (tpn) {
        if (!json_is_integer(tpn) || json_integer_value(tpn) < 1 || json_integer_value(tpn) > 4096) {
            snprintf(err, errlen, "field 'tasks_per_node': expected an integer from 1 to 4096");
            goto fail;
        }
        long want = nodes * (long)json_integer_value(tpn);
        if (json_object_get(spec, "tasks") && tasks != want) {
            snprintf(err, errlen, "field 'tasks': %ld tasks disagree with %ld nodes x %lld tasks per node", tasks, nodes,
                     (long long)json_integer_value(tpn));
            goto fail;
        }
        tasks = want;
        json_object_set_new(spec, "tasks", json_integer(tasks));
        json_object_del(spec, "tasks_per_node");
    }
    if (tasks < nodes) {
        snprintf(err, errlen, "field 'tasks': %ld tasks cannot fill %ld nodes (need tasks >= nodes)",
                 tasks, nodes);
        goto fail;
    }
    /* Time limit: seconds, or a duration string such as "1:00:00". */
    json_t *tl = json_object_get(spec, "time_limit_s");
    int64_t limit = 3600;
    if (json_is_string(tl)) {
        limit = cm_parse_duration(json_string_value(tl));
    } else if (json_is_integer(tl)) {
        limit = json_integer_value(tl);
    } else if (tl) {
        limit = -1;
    }
    if (limit < 1 || limit > 365 * 86400) {
        snprintf(err, errlen, "field 'time_limit_s': expected seconds from 1 to %d (or a duration like 1:00:00)",
                 365 * 86400);
        goto fail;
    }
    json_object_set_new(spec, "time_limit_s", json_integer(limit));

    json_t *cmd = json_object_get(spec, "command");
    if (!!cmd == !!script) {
        snprintf(err, errlen, "job needs exactly one of 'command' (array of strings) and 'script' (text)");
        goto fail;
    }
    if (cmd) {
        if (!json_is_array(cmd) || json_array_size(cmd) == 0 || json_array_size(cmd) > 4096) {
            snprintf(err, errlen, "field 'command': expected a non-empty array of at most 4096 strings");
            goto fail;
        }
        size_t i;
        json_t *a;
        json_array_foreach(cmd, i, a) {
            if (!json_is_string(a) || strlen(json_string_value(a)) != json_string_length(a)) {
                snprintf(err, errlen, "field 'command[%zu]': expected a string without NUL", i);
                goto fail;
            }
        }
    }
    if (out->mpi && script) {
        snprintf(err, errlen, "field 'mpi': an MPI job runs a program under mpirun, once per rank; give the program "
                              "and its arguments (commons submit --mpi -- PROGRAM ARGS), not a batch script");
        goto fail;
    }
    if (!workdir || workdir[0] != '/') {
        snprintf(err, errlen, "field 'workdir': expected an absolute path");
        goto fail;
    }
    json_t *env = json_object_get(spec, "env");
    if (env) {
        if (!json_is_object(env)) {
            snprintf(err, errlen, "field 'env': expected an object of strings");
            goto fail;
        }
        json_object_foreach(env, key, val) {
            int ok = (isalpha((unsigned char)key[0]) || key[0] == '_');
            for (const char *p = key; *p; p++) ok &= isalnum((unsigned char)*p) || *p == '_';
            if (!ok || !json_is_string(val)) {
                snprintf(err, errlen, "field 'env.%s': expected a variable name [A-Za-z_][A-Za-z0-9_]* with a string value", key);
                goto fail;
            }
        }
    }
    if (!name) {
        /* The default name is the program, cut to the name limit at a UTF-8 character boundary. */
        const char *def = script ? "script" : json_string_value(json_array_get(cmd, 0));
        size_t t = strlen(def);
        if (t > 256) {
            t = 256;
            while (t > 0 && ((unsigned char)def[t] & 0xC0) == 0x80) t--;
        }
        json_object_set_new(spec, "name", json_stringn(def, t));
        get_str(spec, "name", 256, &name, err, errlen);
    }
    if (qos && (!*qos || !valid_name_chars(qos))) {
        snprintf(err, errlen, "field 'qos': expected a name of letters, digits, '_', '-', '.'");
        goto fail;
    }
    if (account && (!*account || !valid_name_chars(account))) {
        snprintf(err, errlen, "field 'account': expected a name of letters, digits, '_', '-', '.'");
        goto fail;
    }
    if (!out_path) json_object_set_new(spec, "stdout", json_string("commons-%j.out"));
    if (dep && *dep) {
        int n = job_deps_parse(dep, out->deps, JOB_MAX_DEPS, err, errlen);
        if (n < 0) goto fail;
        out->ndeps = n;
    }
    if (array) {
        int n = job_array_parse(array, &out->array_idx, &out->array_throttle, err, errlen);
        if (n < 0) goto fail;
        out->narray = n;
    }
    out->json = spec;
    out->name = name;
    out->account = account;
    out->qos = qos;
    out->nodes = (int)nodes;
    out->tasks = (int)tasks;
    out->cpus_per_task = (int)cpt;
    out->gpus = (int)gpus;
    out->mem_mb = mem;
    out->time_limit_s = limit;
    return 0;
fail:
    json_decref(spec);
    free(out->array_idx);
    memset(out, 0, sizeof *out);
    return -1;
}

void job_spec_free(struct job_spec *s)
{
    json_decref(s->json);
    free(s->array_idx);
    memset(s, 0, sizeof *s);
}
