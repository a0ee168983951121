/* jobstore.c: the durable record of each job instance this agent has seen,
 * one JSON file per instance (STATE/jobs/<id>-<attempt>.json), written atomically before the agent
 * acts on a change, so a restarted agent knows every job id it ever started
 * and every event it still owes the scheduler. */
#include "agent_internal.h"
#include "cm_log.h"
#include "cm_util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *phase_names[] = {"launching", "running", "draining", "ended"};

const char *agent_phase_name(enum agent_phase p)
{
    return p <= AJ_ENDED ? phase_names[p] : "?";
}

/* "<id>-<attempt>.json" for a job, "<id>-<attempt>-s<spawn_id>.json" for a spawn of it. */
static void record_name(int64_t id, int attempt, int64_t spawn_id, char *out, size_t len)
{
    if (spawn_id > 0)
        snprintf(out, len, "%lld-%d-s%lld.json", (long long)id, attempt, (long long)spawn_id);
    else
        snprintf(out, len, "%lld-%d.json", (long long)id, attempt);
}

static void record_path(const char *state_dir, int64_t id, int attempt, int64_t spawn_id,
                        char *out, size_t len)
{
    char name[96];
    record_name(id, attempt, spawn_id, name, sizeof name);
    snprintf(out, len, "%s/jobs/%s", state_dir, name);
}

static json_t *to_json(const struct agent_job *j)
{
    return json_pack(
        "{sI si ss sI sI sI sI sI sI ss ss ss sb sb sb ss si si ss sI sb sb sI}",
        "id", (json_int_t)j->id, "attempt", j->attempt, "phase", agent_phase_name(j->phase),
        "pid", (json_int_t)j->pid, "proc_start", (json_int_t)j->proc_start,
        "keeper", (json_int_t)j->keeper, "keeper_start", (json_int_t)j->keeper_start,
        "start_ms", (json_int_t)j->start_ms, "time_limit_s", (json_int_t)j->time_limit_s,
        "unix_user", j->unix_user, "cgroup", j->cgroup, "script", j->script,
        "released", j->released, "timed_out", j->timed_out, "cancelled", j->cancelled,
        "kill_reason", j->kill_reason, "exit_code", j->exit_code, "signal", j->signal,
        "error", j->error, "ended_ms", (json_int_t)j->ended_ms,
        "started_pending", j->started_pending, "ended_pending", j->ended_pending,
        "spawn_id", (json_int_t)j->spawn_id);
}

int agent_store_save(const char *state_dir, const struct agent_job *j, char *err, size_t errlen)
{
    json_t *o = to_json(j);
    if (o && j->binding) json_object_set(o, "binding", j->binding); /* what was applied or recorded */
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) {
        snprintf(err, errlen, "job %lld: cannot encode record", (long long)j->id);
        return -1;
    }
    char path[PATH_MAX];
    record_path(state_dir, j->id, j->attempt, j->spawn_id, path, sizeof path);
    int rc = cm_write_file_atomic(path, text, strlen(text), 0600, err, errlen);
    free(text);
    return rc;
}

void agent_store_remove(const char *state_dir, int64_t id, int attempt, int64_t spawn_id)
{
    char path[PATH_MAX];
    record_path(state_dir, id, attempt, spawn_id, path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT)
        cm_warn("cannot remove %s: %s", path, strerror(errno));
}

static void copy_str(char *dst, size_t len, json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    snprintf(dst, len, "%s", s ? s : "");
}

static int from_json(json_t *o, struct agent_job *j, char *err, size_t errlen)
{
    json_t *id = json_object_get(o, "id"), *pid = json_object_get(o, "pid");
    json_t *att = json_object_get(o, "attempt");
    const char *phase = json_string_value(json_object_get(o, "phase"));
    if (!json_is_integer(id) || json_integer_value(id) < 0 || !json_is_integer(att) ||
        json_integer_value(att) < 0 || !json_is_integer(pid) || !phase) {
        snprintf(err, errlen, "missing or malformed id, attempt, pid or phase");
        return -1;
    }
    memset(j, 0, sizeof *j);
    j->id = json_integer_value(id);
    j->attempt = (int)json_integer_value(att);
    j->pid = (pid_t)json_integer_value(pid);
    int p = -1;
    for (int i = 0; i <= AJ_ENDED; i++)
        if (strcmp(phase, phase_names[i]) == 0) p = i;
    if (p < 0) {
        snprintf(err, errlen, "unknown phase \"%s\"", phase);
        return -1;
    }
    j->phase = (enum agent_phase)p;
    j->proc_start = (unsigned long long)json_integer_value(json_object_get(o, "proc_start"));
    j->keeper = (pid_t)json_integer_value(json_object_get(o, "keeper"));
    j->keeper_start = (unsigned long long)json_integer_value(json_object_get(o, "keeper_start"));
    j->start_ms = json_integer_value(json_object_get(o, "start_ms"));
    j->time_limit_s = json_integer_value(json_object_get(o, "time_limit_s"));
    copy_str(j->unix_user, sizeof j->unix_user, o, "unix_user");
    copy_str(j->cgroup, sizeof j->cgroup, o, "cgroup");
    copy_str(j->script, sizeof j->script, o, "script");
    copy_str(j->kill_reason, sizeof j->kill_reason, o, "kill_reason");
    copy_str(j->error, sizeof j->error, o, "error");
    j->released = json_is_true(json_object_get(o, "released"));
    j->timed_out = json_is_true(json_object_get(o, "timed_out"));
    j->cancelled = json_is_true(json_object_get(o, "cancelled"));
    j->exit_code = (int)json_integer_value(json_object_get(o, "exit_code"));
    j->signal = (int)json_integer_value(json_object_get(o, "signal"));
    j->ended_ms = json_integer_value(json_object_get(o, "ended_ms"));
    j->started_pending = json_is_true(json_object_get(o, "started_pending"));
    j->ended_pending = json_is_true(json_object_get(o, "ended_pending"));
    j->spawn_id = json_integer_value(json_object_get(o, "spawn_id"));
    if (j->spawn_id < 0) {
        snprintf(err, errlen, "malformed spawn_id");
        return -1;
    }
    json_t *b = json_object_get(o, "binding");
    j->binding = json_is_object(b) ? json_incref(b) : NULL;
    return 0;
}

/* Record files are "<id>-<attempt>[-s<spawn_id>].json"; temp files of
 * interrupted writes and set aside ".bad" files are not. */
static bool is_record_name(const char *n)
{
    size_t d = strspn(n, "0123456789");
    if (d == 0 || n[d] != '-') return false;
    n += d + 1;
    size_t a = strspn(n, "0123456789");
    if (a == 0) return false;
    n += a;
    if (n[0] == '-' && n[1] == 's') {
        size_t s = strspn(n + 2, "0123456789");
        if (s == 0) return false;
        n += 2 + s;
    }
    return strcmp(n, ".json") == 0;
}

/* Reads one record file; name is its file name, checked against the record. */
static int load_path(const char *path, const char *name, struct agent_job *j, char *why,
                     size_t len)
{
    json_error_t jerr;
    json_t *o = json_load_file(path, 0, &jerr);
    if (!o) {
        snprintf(why, len, "line %d: %s", jerr.line, jerr.text);
        return -1;
    }
    j->binding = NULL; /* from_json may fail before it clears j */
    int rc = from_json(o, j, why, len);
    json_decref(o);
    char want[96];
    record_name(j->id, j->attempt, j->spawn_id, want, sizeof want);
    if (rc == 0 && strcmp(name, want) != 0) {
        snprintf(why, len, "id and attempt do not match the file name");
        rc = -1;
    }
    if (rc != 0) {
        json_decref(j->binding);
        j->binding = NULL;
    }
    return rc;
}

int agent_store_load_one(const char *state_dir, int64_t id, int attempt, int64_t spawn_id,
                         struct agent_job *j, char *err, size_t errlen)
{
    char path[PATH_MAX], name[96], why[256];
    record_path(state_dir, id, attempt, spawn_id, path, sizeof path);
    record_name(id, attempt, spawn_id, name, sizeof name);
    if (load_path(path, name, j, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        return -1;
    }
    return 0;
}

int agent_store_load(const char *state_dir, int (*take)(void *, struct agent_job *), void *arg,
                     char *err, size_t errlen)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/jobs", state_dir);
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        char path[PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (strstr(e->d_name, ".tmp.")) {
            unlink(path); /* an atomic write that never completed */
            continue;
        }
        if (!is_record_name(e->d_name)) continue;
        struct agent_job *j = calloc(1, sizeof *j);
        if (!j) {
            snprintf(err, errlen, "out of memory loading %s", dir);
            rc = -1;
            break;
        }
        char why[256];
        if (load_path(path, e->d_name, j, why, sizeof why) != 0) {
            char bad[PATH_MAX + 310];
            snprintf(bad, sizeof bad, "%s.bad", path);
            cm_error("job record %s is unreadable (%s); moved to %s", path, why, bad);
            rename(path, bad);
            free(j);
            continue;
        }
        if ((rc = take(arg, j)) != 0) snprintf(err, errlen, "out of memory loading %s", dir);
    }
    closedir(d);
    return rc;
}
