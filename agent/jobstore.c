/* jobstore.c: the durable record of each job instance this agent has seen,
 * one JSON file per instance (STATE/jobs/<id>-<attempt>.json), always
 * replaced atomically (temp file + rename), so a restarted agent knows every
 * job id it ever started and every event it still owes the scheduler.
 * Three ways to write one: durable alone (temp + fsync + rename), without
 * fsync, and durable as a group (agent_store_save_many: many records for
 * about the price of one); runner.c says which change is written how, and when.
 * A write without fsync is atomic against a crash of the agent, not against
 * a power loss (the rename may reach the disk before the data): a record
 * found empty or cut is rebuilt from its file name (agent_store_load).
 * The instance names that records, exit files, scripts and cgroup folders
 * share are written and read here too (agent_instance_name, _parse). */
#include "agent_internal.h"
#include "cm_log.h"
#include "cm_util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *phase_names[] = {"launching", "running", "draining", "ended"};

const char *agent_phase_name(enum agent_phase p)
{
    return p <= AJ_ENDED ? phase_names[p] : "?";
}

void agent_instance_name(int64_t id, int attempt, int64_t spawn_id,
                         char out[AGENT_INSTANCE_NAME_MAX])
{
    if (spawn_id > 0)
        snprintf(out, AGENT_INSTANCE_NAME_MAX, "%lld-%d-s%lld", (long long)id, attempt,
                 (long long)spawn_id);
    else
        snprintf(out, AGENT_INSTANCE_NAME_MAX, "%lld-%d", (long long)id, attempt);
}

/* "<instance name>.json". */
static void record_name(int64_t id, int attempt, int64_t spawn_id, char *out, size_t len)
{
    char n[AGENT_INSTANCE_NAME_MAX];
    agent_instance_name(id, attempt, spawn_id, n);
    snprintf(out, len, "%s.json", n);
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

static char *encode(const struct agent_job *j, char *err, size_t errlen)
{
    json_t *o = to_json(j);
    if (o && j->binding) json_object_set(o, "binding", j->binding); /* what was applied or recorded */
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) snprintf(err, errlen, "job %lld: cannot encode record", (long long)j->id);
    return text;
}

int agent_store_save(const char *state_dir, const struct agent_job *j, char *err, size_t errlen)
{
    char *text = encode(j, err, errlen);
    if (!text) return -1;
    char path[PATH_MAX];
    record_path(state_dir, j->id, j->attempt, j->spawn_id, path, sizeof path);
    int rc = cm_write_file_atomic(path, text, strlen(text), 0600, err, errlen);
    free(text);
    return rc;
}

int agent_write_all(int fd, const char *text)
{
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        off += (size_t)w;
    }
    return 0;
}

/* Writes text to a new temp file beside path ("<path>.tmp.<pid>", the name
 * agent_store_load removes when a write was interrupted); returns its open
 * descriptor, or -1 with err. */
static int write_temp(const char *path, const char *text, char *tmp, size_t tmplen, char *err,
                      size_t errlen)
{
    snprintf(tmp, tmplen, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    if (agent_write_all(fd, text) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    return fd;
}

int agent_store_write(const char *state_dir, const struct agent_job *j, char *err,
                      size_t errlen)
{
    char path[PATH_MAX], tmp[PATH_MAX + 32];
    char *text = encode(j, err, errlen);
    if (!text) return -1;
    record_path(state_dir, j->id, j->attempt, j->spawn_id, path, sizeof path);
    int fd = write_temp(path, text, tmp, sizeof tmp, err, errlen);
    free(text);
    if (fd < 0) return -1;
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* At most this many fsyncs in flight: enough for the disk (or a journaling
 * filesystem's commit) to take a batch together, few enough to be cheap to
 * start per commit. 100 records took 300-360 ms one after the other and
 * 27-75 ms this way on the development VM (ext4 without a journal). */
#define SYNC_THREADS 8

struct sync_work {
    const int *fds;
    int *errnos;
    size_t n;
    size_t next; /* the next fd to fsync; taken with __atomic_fetch_add */
};

static void *sync_worker(void *arg)
{
    struct sync_work *w = arg;
    size_t i;
    while ((i = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED)) < w->n)
        if (w->fds[i] >= 0 && fsync(w->fds[i]) != 0) w->errnos[i] = errno;
    return NULL;
}

/* fsyncs every fd >= 0, several at a time; errnos[i] is set for a failure. */
static void sync_all(const int *fds, int *errnos, size_t n)
{
    struct sync_work w = {fds, errnos, n, 0};
    pthread_t t[SYNC_THREADS];
    size_t started = 0;
    /* This thread takes part too; a thread that cannot start is simply
     * one worker fewer. Signals stay blocked in the workers: they inherit
     * this thread's mask. */
    while (started + 1 < SYNC_THREADS && started + 1 < n &&
           pthread_create(&t[started], NULL, sync_worker, &w) == 0)
        started++;
    sync_worker(&w);
    for (size_t k = 0; k < started; k++) pthread_join(t[k], NULL);
}

int agent_store_save_many(const char *state_dir, struct agent_job *const *jobs, size_t n,
                          int *rcs, char *err, size_t errlen)
{
    int failed = 0, *fds = calloc(n ? n : 1, sizeof *fds), *errnos = calloc(n ? n : 1, sizeof *errnos);
    char (*tmps)[PATH_MAX + 32] = calloc(n ? n : 1, sizeof *tmps);
    char why[512] = "";
    if (!fds || !errnos || !tmps) {
        /* No memory for the batch: one record at a time, as durable. */
        for (size_t i = 0; i < n; i++)
            if ((rcs[i] = agent_store_save(state_dir, jobs[i], why, sizeof why)) != 0 &&
                failed++ == 0)
                snprintf(err, errlen, "%s", why);
        free(fds);
        free(errnos);
        free(tmps);
        return failed;
    }
    char path[PATH_MAX];
    for (size_t i = 0; i < n; i++) {
        char *text = encode(jobs[i], why, sizeof why);
        record_path(state_dir, jobs[i]->id, jobs[i]->attempt, jobs[i]->spawn_id, path,
                    sizeof path);
        fds[i] = text ? write_temp(path, text, tmps[i], sizeof tmps[i], why, sizeof why) : -1;
        free(text);
        rcs[i] = fds[i] >= 0 ? 0 : -1;
        if (rcs[i] != 0 && failed++ == 0) snprintf(err, errlen, "%s", why);
    }
    sync_all(fds, errnos, n);
    for (size_t i = 0; i < n; i++) {
        if (fds[i] < 0) continue;
        if (close(fds[i]) != 0 && !errnos[i]) errnos[i] = errno;
        record_path(state_dir, jobs[i]->id, jobs[i]->attempt, jobs[i]->spawn_id, path,
                    sizeof path);
        if (!errnos[i] && rename(tmps[i], path) != 0) errnos[i] = errno;
        if (errnos[i]) {
            unlink(tmps[i]);
            rcs[i] = -1;
            if (failed++ == 0) snprintf(err, errlen, "%s: %s", path, strerror(errnos[i]));
        }
    }
    /* The renames are entries of the jobs folder: durable once it is. */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/jobs", state_dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        int e = errno, earlier = failed;
        for (size_t i = 0; i < n; i++)
            if (rcs[i] == 0) {
                rcs[i] = -1;
                failed++;
            }
        if (!earlier)
            snprintf(err, errlen, "%s: cannot make the records durable: %s", dir, strerror(e));
    }
    if (dfd >= 0) close(dfd);
    free(fds);
    free(errnos);
    free(tmps);
    return failed;
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

/* Reads the decimal digits at *s (at least one, no sign) as a value <= max
 * and moves *s past them; false when there are none or the value is over. */
static bool read_number(const char **s, long long max, long long *v)
{
    const char *p = *s;
    long long x = 0;
    if (!isdigit((unsigned char)*p)) return false;
    for (; isdigit((unsigned char)*p); p++) {
        if (x > (max - (*p - '0')) / 10) return false;
        x = x * 10 + (*p - '0');
    }
    *s = p;
    *v = x;
    return true;
}

bool agent_instance_name_parse(const char *name, const char *prefix, const char *suffix,
                               int64_t *id, int *attempt, int64_t *spawn_id)
{
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0) return false;
    const char *n = name + pl;
    long long i, a, s = 0;
    if (!read_number(&n, LLONG_MAX, &i) || *n++ != '-' || !read_number(&n, INT_MAX, &a))
        return false;
    if (n[0] == '-' && n[1] == 's') {
        n += 2;
        if (!read_number(&n, LLONG_MAX, &s) || s == 0) return false;
    }
    if (strcmp(n, suffix) != 0) return false;
    *id = i;
    *attempt = (int)a;
    *spawn_id = s;
    return true;
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

/* Rebuilds the instance an unreadable record file names. Records are
 * written without fsync after their first, durable one (runner.c), so
 * after a power loss a rename may be on disk before the data: the file is
 * empty or cut. Its instance must stay known (else a launch sent again
 * would start it twice, or it would never be reported): it becomes
 * running and released with no pids (its processes, if any, are found by
 * their environment) and status unknown. */
static void lost_record(int64_t id, int attempt, int64_t spawn_id, struct agent_job *j)
{
    memset(j, 0, sizeof *j);
    j->id = id;
    j->attempt = attempt;
    j->spawn_id = spawn_id;
    j->phase = AJ_RUNNING;
    j->released = true;
    j->exit_code = -1;
    j->record_lost = true;
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
        /* Temp files of interrupted writes and set aside ".bad" files are not records. */
        int64_t id, sid;
        int attempt;
        if (!agent_instance_name_parse(e->d_name, "", ".json", &id, &attempt, &sid)) continue;
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
            cm_error("job record %s is unreadable (%s); moved to %s; the instance is ended "
                     "as \"record lost\"", path, why, bad);
            rename(path, bad);
            lost_record(id, attempt, sid, j);
        }
        if ((rc = take(arg, j)) != 0) snprintf(err, errlen, "out of memory loading %s", dir);
    }
    closedir(d);
    return rc;
}
