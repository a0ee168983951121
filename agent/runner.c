/* runner.c: the job table of one node agent: launch, kill, time limits,
 * reaping, draining of process trees, recovery after a restart, and the
 * events owed to the scheduler (contract in agent.h).
 *
 * Invariants: a job instance (id, attempt) has at most one record and runs
 * at most once (its record is durable before the job is released to exec,
 * a job never released runs nothing, and the record is kept for
 * PRUNE_AFTER_MS after its end was acknowledged); a flag reported in the
 * ended event (cancelled, timed out) is written before the agent acts on it;
 * an instance is ENDED only when its whole process tree is gone (or
 * DRAIN_MAX_MS passed).
 *
 * What is on disk, and when (power loss included, not only a crash of the
 * agent). Writing a record creates a file (temp + rename), and on this
 * project's disks creating files and fsync are what a launch costs, so a
 * record is written only where a restart could not rebuild the state:
 *  1. before a job's process may exec: its record, phase running, not
 *     released, with the main and keeper pids and their start times. Made
 *     durable by one group commit for all the jobs of a launch batch
 *     (LAUNCH_BATCH_MAX), before any of them is released;
 *  2. "released" is written (no fsync) RELEASED_WRITE_MS after the release
 *     (or at close), so most short jobs never write it: a restart asks the
 *     keeper instead (settle_unreleased);
 *  3. an end whose status came from the keeper's exit file (fsynced by the
 *     keeper) is not written: the running record and that file give a
 *     restart the same end. ENDED is written (no fsync) when commonsd
 *     acknowledges it, and the exit file is removed only once the ENDED
 *     record is durable or acknowledged. Any other end (failed launch, kill
 *     before launch, lost status) is made durable by the group commit
 *     (commit()), which every entry point runs before it returns: the loop
 *     reads events between calls, so commonsd never hears of such an end
 *     before it is on disk;
 *  4. cancelled / timed out, and re-reported events, are written at once
 *     and made durable by that same commit.
 * A write without fsync (2, 3's ENDED) lost by a crash of the agent leaves
 * the previous record. Lost by a power loss it may leave an empty or cut
 * file (the rename can reach the disk before the data): agent_store_load
 * then rebuilds the instance from the file name (running, released, no
 * pids), which ends at once with "record lost" and an unknown status. The
 * instance stays known, so nothing starts twice; what is lost is its
 * status (and a released job still running is found by its environment
 * and killed).
 * A restarted agent does with each recorded phase what recover() says:
 * running and not released -> ask the keeper (nothing ran: forget it, and
 * the launch commonsd sends again starts it; released: as running); running
 * -> re-attach, or end with the keeper's status; draining -> kill again,
 * end; ended -> report again until acknowledged.
 */
#include "agent_internal.h"
#include "cm_crypto.h"
#include "cm_log.h"
#include "cm_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DRAIN_MAX_MS 10000                          /* give up on unkillable remnants */
#define PRUNE_AFTER_MS (7LL * 24 * 3600 * 1000)     /* keep acked tombstones a week */
#define SWEEP_EVERY_MS 500

/* An instance whose ended event was acknowledged: only its identity stays
 * in memory (a week of small jobs would otherwise hold every full record);
 * its record stays on disk until pruned and is read back if the instance
 * is ever named again. */
struct agent_done {
    int64_t id, ended_ms, spawn_id;
    int attempt;
};

struct agent_runner {
    char state_dir[PATH_MAX - 128]; /* room for "/scripts/<id>.sh" within PATH_MAX */
    char node[128];
    int kill_grace_ms;
    struct agent_contain contain;
    int lock_fd;
    struct agent_job *jobs;       /* every instance not yet retired */
    struct agent_done *done;      /* retired instances */
    size_t ndone, cap_done;
    int64_t last_prune_ms, last_sweep_ms;
    const struct agent_topology *topo;
    char server[256], rsh_agent[PATH_MAX];
    size_t nsync;                 /* records marked sync_due since the last commit (a hint) */
};

/* A job instance (sid 0) or one of its spawns (sid > 0). */
static struct agent_job *find_sp(agent_runner *r, int64_t id, int attempt, int64_t sid)
{
    for (struct agent_job *j = r->jobs; j; j = j->next)
        if (j->id == id && j->attempt == attempt && j->spawn_id == sid) return j;
    return NULL;
}

static struct agent_job *find(agent_runner *r, int64_t id, int attempt)
{
    return find_sp(r, id, attempt, 0);
}

static void free_job(struct agent_job *j)
{
    json_decref(j->binding);
    free(j);
}

static void remove_exit_file(agent_runner *r, struct agent_job *j);

/* The record now says all that memory says. An ended job's exit file (the
 * source of its status until then) can go once that is durable, or once
 * commonsd has acknowledged the end (a record lost then ends as "record
 * lost": see the header). */
static void written(agent_runner *r, struct agent_job *j, bool durable)
{
    j->on_disk = true;
    j->write_due_ms = 0;
    if (j->phase == AJ_ENDED && j->exit_file_due && (durable || !j->ended_pending)) {
        j->exit_file_due = false;
        remove_exit_file(r, j);
    }
}

/* Written now, without fsync: see "Durability" above for which states. */
static int save_lazy(agent_runner *r, struct agent_job *j)
{
    char err[512];
    if (agent_store_write(r->state_dir, j, err, sizeof err) == 0) {
        written(r, j, false);
        return 0;
    }
    cm_error("job %lld: cannot save its record: %s", (long long)j->id, err);
    return -1;
}

/* Durable by the end of the current entry point (commit), for a change
 * nothing acts on before that commit (the first record of a launch, an
 * ended job). Each write creates a file, and creating files is what costs
 * most on ext4 with thousands of them (new inodes), so this one writes once. */
static void save_at_commit(agent_runner *r, struct agent_job *j)
{
    j->sync_due = true;
    r->nsync++;
}

/* Durable by the end of the current entry point, for a change the agent
 * acts on at once (signals a tree): an existing record is also written now,
 * so that a crash of the agent before the commit finds it. Returns -1 only
 * when that immediate write failed; the commit logs its own errors. */
static int save(agent_runner *r, struct agent_job *j)
{
    save_at_commit(r, j);
    return j->on_disk ? save_lazy(r, j) : 0;
}

static int add_done(agent_runner *r, const struct agent_job *j)
{
    if (r->ndone == r->cap_done) {
        size_t cap = r->cap_done ? r->cap_done * 2 : 256;
        struct agent_done *d = realloc(r->done, cap * sizeof *d);
        if (!d) return -1;
        r->done = d;
        r->cap_done = cap;
    }
    r->done[r->ndone++] = (struct agent_done){j->id, j->ended_ms, j->spawn_id, j->attempt};
    return 0;
}

static struct agent_done *find_done(agent_runner *r, int64_t id, int attempt, int64_t sid)
{
    for (size_t i = 0; i < r->ndone; i++)
        if (r->done[i].id == id && r->done[i].attempt == attempt && r->done[i].spawn_id == sid)
            return &r->done[i];
    return NULL;
}

/* Acknowledged and final: keep only its identity in memory. */
static void retire(agent_runner *r, struct agent_job *j)
{
    if (add_done(r, j) != 0) return; /* no memory: simply stay in the full list */
    for (struct agent_job **pp = &r->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            free_job(j);
            return;
        }
}

/* Brings a retired instance back (from its record) so its end can be
 * reported again; NULL if its record is gone. */
static struct agent_job *revive(agent_runner *r, struct agent_done *d)
{
    struct agent_job *j = calloc(1, sizeof *j);
    char err[512];
    if (!j) return NULL;
    if (agent_store_load_one(r->state_dir, d->id, d->attempt, d->spawn_id, j, err, sizeof err) !=
        0) {
        cm_warn("job %lld.%d ended long ago and %s", (long long)d->id, d->attempt, err);
        free(j);
        return NULL;
    }
    *d = r->done[--r->ndone];
    j->on_disk = true;
    j->next = r->jobs;
    r->jobs = j;
    return j;
}

static void exit_path(agent_runner *r, const struct agent_job *j, char *out, size_t len)
{
    char n[AGENT_INSTANCE_NAME_MAX];
    agent_instance_name(j->id, j->attempt, j->spawn_id, n);
    snprintf(out, len, "%s/jobs/%s.exit", r->state_dir, n);
}

/* A job's script (spawns run none); the sweep of leftovers reads these names. */
static void script_path(agent_runner *r, int64_t id, int attempt, char *out, size_t len)
{
    snprintf(out, len, "%s/scripts/%lld-%d.sh", r->state_dir, (long long)id, attempt);
}

static void remove_exit_file(agent_runner *r, struct agent_job *j)
{
    char ep[PATH_MAX];
    exit_path(r, j, ep, sizeof ep);
    unlink(ep);
}

/* What an ended job leaves besides its exit file: its cgroup and script. */
static void cleanup(agent_runner *r, struct agent_job *j)
{
    agent_contain_cleanup(&r->contain, j);
    if (j->script[0] && unlink(j->script) != 0 && errno != ENOENT)
        cm_warn("job %lld: cannot remove %s: %s", (long long)j->id, j->script, strerror(errno));
}

/* The group commit: makes every record marked by save() durable at once
 * (and removes what ended jobs left once their ENDED record is). */
static void commit(agent_runner *r)
{
    if (r->nsync == 0) return;
    size_t n = 0;
    for (struct agent_job *j = r->jobs; j; j = j->next) n += j->sync_due;
    struct agent_job **v = n ? malloc(n * sizeof *v) : NULL;
    int *rcs = n ? malloc(n * sizeof *rcs) : NULL;
    char err[512] = "";
    if (n && (!v || !rcs)) {
        /* No memory for a batch: one record at a time. */
        for (struct agent_job *j = r->jobs; j; j = j->next) {
            if (!j->sync_due) continue;
            if (agent_store_save(r->state_dir, j, err, sizeof err) == 0)
                written(r, j, true);
            else
                cm_error("job %lld: cannot save its record: %s", (long long)j->id, err);
        }
    } else if (n) {
        size_t k = 0;
        for (struct agent_job *j = r->jobs; j; j = j->next)
            if (j->sync_due) v[k++] = j;
        agent_store_save_many(r->state_dir, v, n, rcs, err, sizeof err);
        for (size_t i = 0; i < n; i++) {
            if (rcs[i] == 0)
                written(r, v[i], true);
            else
                cm_error("job %lld: cannot save its record: %s", (long long)v[i]->id, err);
        }
    }
    free(v);
    free(rcs);
    r->nsync = 0;
    for (struct agent_job *j = r->jobs; j; j = j->next) j->sync_due = false;
}

/* The tree is gone: the ended event becomes final and owed. An end whose
 * status came from the keeper's exit file is not written now: the record
 * on disk (running) and that file, kept until the ENDED record is written
 * (when commonsd acknowledges the end), lead a restarted agent to the same
 * end. Any other end (a launch that failed, a kill before the launch, a
 * lost status) is made durable by the commit. */
static void finish(agent_runner *r, struct agent_job *j)
{
    j->phase = AJ_ENDED;
    j->ended_ms = cm_now_ms();
    j->ended_pending = true;
    j->exit_file_due = true;
    if (!j->status_from_file) save_at_commit(r, j);
    cleanup(r, j);
    cm_info("job %lld.%d%s ended: exit %d signal %d%s%s%s%s", (long long)j->id, j->attempt,
            j->spawn_id ? " (spawn)" : "", j->exit_code,
            j->signal, j->timed_out ? " (timed out)" : "", j->cancelled ? " (cancelled)" : "",
            j->error[0] ? ": " : "", j->error);
}

static void end_spawns(agent_runner *r, int64_t id, int attempt, const char *reason);

/* Main process gone: record its status, then end what is left of the tree. */
static void main_gone(agent_runner *r, struct agent_job *j, int status, const char *error)
{
    if (error) {
        j->exit_code = -1;
        j->signal = 0;
        snprintf(j->error, sizeof j->error, "%s", error);
    } else if (WIFSIGNALED(status)) {
        j->signal = WTERMSIG(status);
        j->exit_code = 128 + j->signal;
    } else {
        j->exit_code = WEXITSTATUS(status);
        j->signal = 0;
    }
    j->status_from_file = !error;
    j->phase = AJ_DRAINING;
    j->drain_ms = cm_now_ms();
    agent_contain_signal(&r->contain, j, SIGKILL);
    /* Usually the tree is gone at once and the next write is ENDED. A
     * draining record is only written when the tree outlives SIGKILL for a
     * while (without fsync: a restart rebuilds it from the keeper's exit
     * file, which is kept until ENDED is durable). */
    if (!agent_contain_alive(&r->contain, j)) finish(r, j);
    else save_lazy(r, j);
    if (j->spawn_id == 0) end_spawns(r, j->id, j->attempt, "job_ended");
}

/* A job that failed before it ran anything (bad launch, account, files). */
static void fail(agent_runner *r, struct agent_job *j, const char *why)
{
    cm_warn("job %lld%s not started: %s", (long long)j->id, j->spawn_id ? " (spawn)" : "", why);
    j->phase = AJ_DRAINING;
    j->exit_code = -1;
    j->signal = 0;
    j->started_pending = false;
    /* Long messages (paths) are cut to the record's field on purpose. */
    snprintf(j->error, sizeof j->error, "%.*s", (int)sizeof j->error - 1, why);
    finish(r, j);
}

/* The keeper has exited: the job's status is in its file, unless the keeper
 * itself was killed before the job ended. */
static void keeper_gone(agent_runner *r, struct agent_job *j)
{
    char ep[PATH_MAX];
    int status;
    exit_path(r, j, ep, sizeof ep);
    int rc = agent_exit_read(ep, &status);
    /* Without its record the flags (cancelled, timed out) and pids are gone:
     * an exit file alone would report a partial end, so none is claimed. */
    if (j->record_lost)
        main_gone(r, j, 0, "agent restarted and the job's record was lost (unreadable); "
                           "exit status unknown");
    else if (rc == 0 && status == AGENT_EXIT_UNRELEASED)
        main_gone(r, j, 0, "agent restarted before the job started");
    else if (rc == 0)
        main_gone(r, j, status, NULL);
    else
        main_gone(r, j, 0, j->adopted ? "agent restarted; exit status lost"
                                      : "the job's keeper process died; exit status lost");
}

/* A job that is not our keeper's child (re-attached after a restart) ends
 * when both its main process and its keeper are gone. Returns true then. */
static bool keeper_check(agent_runner *r, struct agent_job *j)
{
    if (agent_proc_same(j->pid, j->proc_start) ||
        (j->keeper > 0 && agent_proc_same(j->keeper, j->keeper_start)))
        return false;
    keeper_gone(r, j);
    return true;
}

static void term(agent_runner *r, struct agent_job *j)
{
    j->term_ms = cm_now_ms();
    agent_contain_signal(&r->contain, j, SIGTERM);
    agent_contain_signal(&r->contain, j, SIGCONT); /* a stopped job must see its SIGTERM */
}

/* Ends the live spawns of a job instance here (kill_spawns, or the job
 * itself ended or was killed on this node): SIGTERM, SIGKILL after the grace. */
static void end_spawns(agent_runner *r, int64_t id, int attempt, const char *reason)
{
    for (struct agent_job *j = r->jobs; j; j = j->next) {
        if (j->id != id || j->attempt != attempt || j->spawn_id == 0 ||
            j->phase != AJ_RUNNING || j->cancelled || j->timed_out)
            continue;
        j->cancelled = true;
        snprintf(j->kill_reason, sizeof j->kill_reason, "%s", reason);
        cm_info("job %lld.%d spawn %lld: kill (%s)", (long long)id, attempt,
                (long long)j->spawn_id, reason);
        save(r, j);
        term(r, j);
    }
}

static struct agent_job *new_job(agent_runner *r, int64_t id, int attempt, int64_t sid)
{
    struct agent_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->id = id;
    j->attempt = attempt;
    j->spawn_id = sid;
    j->exit_code = -1;
    j->next = r->jobs;
    r->jobs = j;
    return j;
}

/* Drops an instance that never ran (the agent died before releasing it),
 * so the launch commonsd sends again starts it. It was never reported:
 * launches are handled whole between two messages to commonsd. */
static void forget(agent_runner *r, struct agent_job *j)
{
    cm_info("job %lld.%d was never released before the agent stopped; waiting for commonsd "
            "to launch it again", (long long)j->id, j->attempt);
    agent_store_remove(r->state_dir, j->id, j->attempt, j->spawn_id);
    remove_exit_file(r, j);
    cleanup(r, j);
    for (struct agent_job **pp = &r->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            free_job(j);
            return;
        }
}

/* A record saved before release but not after: the agent died in the middle
 * of a launch batch, or before the job's "released" was written (it is
 * deferred). The keeper knows, and says so by its name and its exit file:
 * named AGENT_KEEPER_RELEASED once it passed the go byte on; without the go
 * byte it is named AGENT_KEEPER_UNRELEASED at once, then kills the job and
 * writes AGENT_EXIT_UNRELEASED. Waits (until `until`, a deadline shared by
 * all such records) while a live keeper has decided neither way; a keeper
 * still undecided then is waiting for a job that was released. A keeper
 * that decided "unreleased" gets KEEPER_DECIDE_MS more to write its file,
 * then is killed: an exit file it wrote after the record is forgotten
 * would be read as the end of the instance's next launch. Returns true if
 * j was forgotten. */
#define KEEPER_DECIDE_MS 2000

/* 1: the keeper passed the go byte on; -1: it will never (killing the job);
 * 0: undecided, or gone (or another process now has its pid). */
static int keeper_says(const struct agent_job *j)
{
    struct agent_procstat st;
    if (j->keeper <= 0 || agent_proc_stat(j->keeper, &st) != 0 ||
        st.starttime != j->keeper_start || st.state == 'Z' || st.state == 'X')
        return 0;
    if (strcmp(st.comm, AGENT_KEEPER_RELEASED) == 0) return 1;
    return strcmp(st.comm, AGENT_KEEPER_UNRELEASED) == 0 ? -1 : 0;
}

static bool settle_unreleased(agent_runner *r, struct agent_job *j, int64_t until)
{
    char ep[PATH_MAX];
    exit_path(r, j, ep, sizeof ep);
    int status, says = 0;
    while (agent_exit_read(ep, &status) != 0 && agent_proc_same(j->keeper, j->keeper_start) &&
           (says = keeper_says(j)) != 1 &&
           cm_mono_ms() < (says < 0 ? until + KEEPER_DECIDE_MS : until))
        usleep(5 * 1000);
    bool unreleased;
    if (agent_exit_read(ep, &status) == 0) {
        unreleased = status == AGENT_EXIT_UNRELEASED;
    } else if ((unreleased = keeper_says(j) < 0)) {
        /* Stuck killing its job: end it before it can write a file, and
         * the job (unreleased: nothing of it ran) with it. Its process
         * group only while its leader is that job: the pid may be reused. */
        kill(j->keeper, SIGKILL);
        if (agent_proc_same(j->pid, j->proc_start)) {
            kill(-j->pid, SIGKILL);
            kill(j->pid, SIGKILL);
        }
        for (int64_t t = cm_mono_ms() + 1000;
             agent_proc_same(j->keeper, j->keeper_start) && cm_mono_ms() < t;)
            usleep(5 * 1000);
    }
    if (unreleased) {
        forget(r, j);
        return true;
    }
    j->released = true;
    j->started_pending = true;
    save(r, j);
    return false;
}

/* Decides, after a restart, what each recorded job has become (a record
 * whose file was unreadable comes back running and released, with no pids:
 * see agent_store_load; it ends at once, "record lost", and stays known):
 *  - launching (no longer written, older agents did): nothing ran, forgotten;
 *  - running, not released: the keeper says whether the job was released
 *    (settle_unreleased): if not, nothing ran and the record is forgotten, so
 *    the launch commonsd sends again starts it; if so, as running;
 *  - running: re-attached if its main process lives (same start time), else
 *    ended with the status its keeper wrote, or "exit status lost";
 *  - draining: its tree is killed again until gone, then ended;
 *  - ended: its ended event is sent again until acknowledged. */
static void recover(agent_runner *r, struct agent_job *j, int64_t settle_until)
{
    switch (j->phase) {
    case AJ_LAUNCHING:
        forget(r, j);
        break;
    case AJ_RUNNING:
        if (!j->released && settle_unreleased(r, j, settle_until)) break;
        if (j->record_lost) { /* what the record named, so that cleanup removes it */
            agent_contain_job_path(&r->contain, j->id, j->attempt, j->spawn_id, j->cgroup,
                                   sizeof j->cgroup);
            if (j->spawn_id == 0) script_path(r, j->id, j->attempt, j->script, sizeof j->script);
        }
        j->adopted = true;
        if (agent_proc_same(j->pid, j->proc_start))
            cm_info("job %lld.%d (pid %d) still running: re-attached", (long long)j->id,
                    j->attempt, (int)j->pid);
        else
            keeper_check(r, j);
        break;
    case AJ_DRAINING:
        j->drain_ms = cm_now_ms();
        break;
    case AJ_ENDED:
        break;
    }
}

/* Removes, in folder dir, every entry named for an instance (prefix, suffix)
 * that no known job is: rm(path) is unlink or rmdir. */
static void sweep_folder(agent_runner *r, const char *dir, const char *prefix,
                         const char *suffix, int (*rm)(const char *))
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t id, sid;
        int attempt;
        if (!agent_instance_name_parse(e->d_name, prefix, suffix, &id, &attempt, &sid) ||
            find_sp(r, id, attempt, sid))
            continue;
        char path[PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (rm(path) == 0)
            cm_info("removed %s, which no job here names (left by a crash)", path);
        else if (errno != ENOENT)
            cm_warn("cannot remove %s (no job here names it): %s", path, strerror(errno));
    }
    closedir(d);
}

/* After recovery: what a launch cut by a crash before its record was written
 * left behind (its keeper killed the unreleased job and wrote an exit file;
 * its script and cgroup folder stay) is named by no record, so nothing else
 * would ever remove it; nor the exit file of a retired instance (its end
 * acknowledged) that a crash kept from going. A cgroup folder that still
 * holds processes cannot be removed (EBUSY) and is left, so a live tree is
 * never touched. */
static void sweep_unrecorded(agent_runner *r)
{
    char dir[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/jobs", r->state_dir);
    sweep_folder(r, dir, "", ".exit", unlink);
    snprintf(dir, sizeof dir, "%s/scripts", r->state_dir);
    sweep_folder(r, dir, "", ".sh", unlink);
    if (r->contain.kind == AGENT_CONTAIN_CGROUP) {
        sweep_folder(r, r->contain.base, AGENT_CGROUP_PREFIX, "", rmdir);
        rmdir(r->contain.base); /* fails harmlessly while it has jobs */
    }
}

static int make_dir(const char *path, mode_t mode, char *err, size_t errlen)
{
    if (mkdir(path, mode) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int take_record(void *arg, struct agent_job *j)
{
    agent_runner *r = arg;
    j->on_disk = true;
    /* An exit file is kept until its job's ENDED record is durable or
     * acknowledged: one left by a crash in between goes then, or (the end
     * acknowledged: retired, known to no job) with sweep_unrecorded. */
    j->exit_file_due = j->phase == AJ_ENDED;
    if (j->phase == AJ_ENDED && !j->ended_pending) {
        int rc = add_done(r, j);
        free_job(j);
        return rc;
    }
    j->next = r->jobs;
    r->jobs = j;
    return 0;
}

int agent_runner_open(const struct agent_runner_opts *o, agent_runner **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    if (!o->state_dir || !o->node || !o->node[0] || strchr(o->node, '/') ||
        strlen(o->node) > 100) {
        snprintf(err, errlen, "runner: a state dir and a node name (at most 100 characters, "
                 "no '/') are required");
        return -1;
    }
    if (strlen(o->state_dir) >= PATH_MAX - 128) {
        snprintf(err, errlen, "state dir path too long: %s", o->state_dir);
        return -1;
    }
    agent_runner *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->lock_fd = -1;
    snprintf(r->state_dir, sizeof r->state_dir, "%s", o->state_dir);
    snprintf(r->node, sizeof r->node, "%s", o->node);
    r->kill_grace_ms = o->kill_grace_ms > 0 ? o->kill_grace_ms : 10000;
    r->topo = o->topology;
    snprintf(r->server, sizeof r->server, "%s", o->server ? o->server : "");
    snprintf(r->rsh_agent, sizeof r->rsh_agent, "%s", o->rsh_agent ? o->rsh_agent : "commons-rsh");
    char path[PATH_MAX + 32];
    /* 0711: job accounts must reach scripts/<id>.sh, but not list anything. */
    if (make_dir(r->state_dir, 0711, err, errlen)) goto fail;
    snprintf(path, sizeof path, "%s/jobs", r->state_dir);
    if (make_dir(path, 0700, err, errlen)) goto fail;
    snprintf(path, sizeof path, "%s/scripts", r->state_dir);
    if (make_dir(path, 0711, err, errlen)) goto fail;
    snprintf(path, sizeof path, "%s/agent.lock", r->state_dir);
    r->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (r->lock_fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    /* A keeper forked just before a previous agent died holds a copy of the
     * lock until it closes the agent's descriptors: wait a little for it. */
    int64_t lock_until = cm_mono_ms() + (o->lock_wait_ms > 0 ? o->lock_wait_ms : 0);
    while (flock(r->lock_fd, LOCK_EX | LOCK_NB) != 0 && cm_mono_ms() < lock_until)
        usleep(50 * 1000);
    if (flock(r->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "state dir %s is in use by another agent (lock %s held)",
                 r->state_dir, path);
        goto fail;
    }
    /* Orphans of job processes come back to us instead of init. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        snprintf(err, errlen, "prctl(PR_SET_CHILD_SUBREAPER): %s", strerror(errno));
        goto fail;
    }
    /* The state dir names this agent: its cgroup folder is derived from it. */
    char real[PATH_MAX], hash[65];
    if (!realpath(r->state_dir, real)) snprintf(real, sizeof real, "%s", r->state_dir);
    cm_sha256_hex(real, strlen(real), hash);
    hash[8] = '\0';
    if (agent_contain_init(&r->contain, o->containment, r->node, hash, o->cgroup_base, err,
                           errlen))
        goto fail;
    if (agent_store_load(r->state_dir, take_record, r, err, errlen)) goto fail;
    int64_t settle_until = cm_mono_ms() + KEEPER_DECIDE_MS;
    for (struct agent_job *j = r->jobs, *next; j; j = next) {
        next = j->next; /* recover may forget (free) j */
        recover(r, j, settle_until);
    }
    sweep_unrecorded(r);
    commit(r);
    *out = r;
    return 0;
fail:
    agent_runner_close(r);
    return -1;
}

void agent_runner_close(agent_runner *r)
{
    if (!r) return;
    commit(r); /* every entry point committed already; this is only a safeguard */
    /* Deferred writes now, so that a restart need not ask keepers whether
     * their jobs were released. */
    for (struct agent_job *j = r->jobs; j; j = j->next)
        if (j->write_due_ms) save_lazy(r, j);
    while (r->jobs) {
        struct agent_job *n = r->jobs->next;
        free_job(r->jobs);
        r->jobs = n;
    }
    free(r->done);
    if (r->lock_fd >= 0) close(r->lock_fd);
    free(r);
}

const char *agent_runner_containment(const agent_runner *r)
{
    return r->contain.kind == AGENT_CONTAIN_CGROUP ? "cgroup" : "subreaper";
}

const char *agent_runner_limits(const agent_runner *r)
{
    return r->contain.kind == AGENT_CONTAIN_CGROUP && r->contain.limits ? "cgroup" : "rlimit";
}

/* A launch for an id already known: report what it is, start nothing. */
static void relaunch(agent_runner *r, struct agent_job *j)
{
    cm_info("job %lld launched again; it is %s here, not starting it twice", (long long)j->id,
            agent_phase_name(j->phase));
    /* Only a change is written: commonsd sends a launch again while it has
     * not seen it acknowledged (a long burst still in the loop's backlog). */
    if (j->phase == AJ_ENDED && !j->ended_pending)
        j->ended_pending = true;
    else if (j->phase == AJ_RUNNING && !j->started_pending && j->released)
        j->started_pending = true;
    else
        return;
    save(r, j);
}

/* Launch batches. The launches (or spawns) of one reply of commonsd are
 * started LAUNCH_BATCH_MAX at a time, in stages:
 *  1. prepare: checks, account, placement, cgroup, script, and fork of
 *     every keeper, then collect: each job's main process exists (forked
 *     by its keeper meanwhile) and waits for its release;
 *  2. one group commit of all their records (running, not released, pids
 *     and start times);
 *  3. release every job whose record is durable (the others are killed
 *     unreleased and end with an error);
 *  4. wait for each job's exec (they exec in parallel), then mark it
 *     released (written without fsync: a restarted agent asks the keeper).
 * A crash before 3 leaves records of unreleased jobs, which a restarted agent
 * forgets (their keepers killed them, nothing ran) so the launches commonsd
 * sends again start them; a crash after 3 leaves records of released jobs,
 * which it re-attaches. Nothing is started twice either way.
 * 64 bounds what waits between 1 and 3: 128 processes, 128 pipe ends, and
 * about 2 MB of launch state; a reply of 1,000 launches takes 16 commits. */
#define LAUNCH_BATCH_MAX 64
#define RELEASED_WRITE_MS 2000

struct pending {
    struct agent_launch l;     /* borrows from its command, which outlives the batch */
    int prc;                   /* parse result; perr the error */
    char perr[1024];
    struct agent_job *j;       /* after prepare: a forked job waiting for release, or NULL */
    struct agent_account acct;
    struct agent_bind bind;
    struct agent_proc proc;
};

/* Stage 1 for one launch: on return p->j is set only when its keeper was
 * forked (collect() then reads the job's pid). */
static void prepare(agent_runner *r, struct pending *p)
{
    char why[1024];
    struct agent_launch *l = &p->l;
    const char *what = l->spawn_id ? "spawn" : "launch";
    struct agent_job *j = find_sp(r, l->id, l->attempt, l->spawn_id);
    struct agent_done *d = j ? NULL : find_done(r, l->id, l->attempt, l->spawn_id);
    p->j = NULL;
    if (d && !(j = revive(r, d))) {
        cm_warn("job %lld.%d %s again; it ended here before: not starting it twice",
                (long long)l->id, l->attempt, what);
        return;
    }
    if (j) {
        relaunch(r, j);
        return;
    }
    if (!(j = new_job(r, l->id, l->attempt, l->spawn_id))) {
        cm_error("job %lld: out of memory; the launch is left to commonsd's next try",
                 (long long)l->id);
        return;
    }
    j->start_ms = cm_now_ms();
    if (p->prc != 0) {
        char msg[1100];
        snprintf(msg, sizeof msg, "%s rejected: %s", what, p->perr);
        fail(r, j, msg);
        return;
    }
    j->time_limit_s = l->time_limit_s;
    snprintf(j->unix_user, sizeof j->unix_user, "%s", l->unix_user);
    char mpi_dir[PATH_MAX];
    snprintf(mpi_dir, sizeof mpi_dir, "%s/scripts/mpi-%lld-%d", r->state_dir, (long long)l->id,
             l->attempt);
    if (agent_account_resolve(l->unix_user, &p->acct, why, sizeof why) != 0) {
        fail(r, j, why);
        return;
    }
    struct agent_account *acct = &p->acct;
    struct agent_bind_ctx bc = {r->topo, r->node, mpi_dir, r->rsh_agent,
                                strcmp(agent_runner_limits(r), "rlimit") == 0, acct->uid == 0,
                                acct->switch_user ? acct->uid : 0,
                                acct->switch_user ? acct->gid : 0};
    if (agent_bind_plan(l, &bc, &p->bind, why, sizeof why) != 0) {
        char msg[1100];
        snprintf(msg, sizeof msg, "%s rejected: %s", what, why);
        fail(r, j, msg);
        return;
    }
    char cpus[AGENT_MAX_PUS * 5 + 1] = "";
    agent_bind_task_list(&p->bind, 0, cpus, sizeof cpus);
    if (agent_contain_job_create(&r->contain, l->id, l->attempt, l->spawn_id, l->mem_mb,
                                 l->ncpu ? l->ncpu : (int)l->cpus, p->bind.apply ? cpus : "",
                                 j->cgroup, sizeof j->cgroup, why, sizeof why) != 0) {
        agent_bind_free(&p->bind);
        fail(r, j, why);
        return;
    }
    j->binding = json_incref(p->bind.report);
    if (l->script) script_path(r, l->id, l->attempt, j->script, sizeof j->script);
    /* No record yet: nothing runs before the batch's commit has saved one,
     * and a job the agent never released runs nothing (see recover). */
    j->phase = AJ_LAUNCHING;
    if (l->script && agent_script_write(j->script, l->script, acct, why, sizeof why) != 0) {
        agent_bind_free(&p->bind);
        fail(r, j, why);
        return;
    }
    char ep[PATH_MAX];
    exit_path(r, j, ep, sizeof ep);
    struct agent_spawn_ctx ctx = {r->node, r->state_dir, j->cgroup, ep, &p->bind,
                                  r->server[0] ? r->server : NULL};
    if (agent_spawn_fork(l, acct, &ctx, j->script, &p->proc, why, sizeof why) != 0) {
        agent_bind_free(&p->bind);
        fail(r, j, why);
        return;
    }
    p->j = j;
}

/* Stage 1, second half: the job's pid from its keeper, and the start times
 * that tell these processes from later ones with the same pids. */
static void collect(agent_runner *r, struct pending *p)
{
    struct agent_job *j = p->j;
    struct agent_procstat st, kst;
    char why[1024], ep[PATH_MAX];
    exit_path(r, j, ep, sizeof ep);
    p->j = NULL;
    if (agent_spawn_pid(&p->proc, ep, why, sizeof why) != 0) {
        agent_bind_free(&p->bind);
        fail(r, j, why);
        return;
    }
    if (agent_proc_stat(p->proc.pid, &st) != 0 || agent_proc_stat(p->proc.keeper, &kst) != 0) {
        agent_spawn_abort(&p->proc, ep);
        agent_bind_free(&p->bind);
        fail(r, j, "cannot record the started job: its processes vanished");
        return;
    }
    j->pid = p->proc.pid;
    j->proc_start = st.starttime;
    j->keeper = p->proc.keeper;
    j->keeper_start = kst.starttime;
    j->start_ms = cm_now_ms();
    j->phase = AJ_RUNNING;
    p->j = j;
}

/* Stages 2-4 for the prepared launches of p[0..n). */
static void release_batch(agent_runner *r, struct pending *p, size_t n)
{
    struct agent_job **v = malloc((n ? n : 1) * sizeof *v);
    int *rcs = malloc((n ? n : 1) * sizeof *rcs);
    size_t k = 0;
    char err[512] = "out of memory", why[1024], ep[PATH_MAX];
    bool mem = v && rcs;
    for (size_t i = 0; mem && i < n; i++)
        if (p[i].j) v[k++] = p[i].j;
    if (k) agent_store_save_many(r->state_dir, v, k, rcs, err, sizeof err);
    k = 0;
    for (size_t i = 0; i < n; i++) {
        struct agent_job *j = p[i].j;
        if (!j) continue;
        bool saved = mem && rcs[k++] == 0;
        exit_path(r, j, ep, sizeof ep);
        if (saved)
            written(r, j, true);
        else
            snprintf(why, sizeof why, "cannot record the started job: %s", err);
        if (!saved || agent_spawn_release(&p[i].proc, j->cgroup, why, sizeof why) != 0) {
            agent_spawn_abort(&p[i].proc, ep);
            agent_bind_free(&p[i].bind);
            fail(r, j, why);
            p[i].j = NULL;
        }
    }
    free(v);
    free(rcs);
    for (size_t i = 0; i < n; i++) {
        struct agent_job *j = p[i].j;
        if (!j) continue;
        exit_path(r, j, ep, sizeof ep);
        int rc = agent_spawn_wait(&p[i].proc, &p[i].l, &p[i].acct, ep, why, sizeof why);
        agent_bind_free(&p[i].bind);
        if (rc != 0) {
            fail(r, j, why);
            continue;
        }
        j->released = true;
        j->started_pending = true;
        /* Rebuilt after a crash (the keeper knows it was released), so not
         * written at once: a job that ends within RELEASED_WRITE_MS never
         * has it written (its next write is its end). */
        j->write_due_ms = cm_mono_ms() + RELEASED_WRITE_MS;
        cm_info("job %lld.%d%s started: pid %d as %s (%s)", (long long)j->id, j->attempt,
                j->spawn_id ? " spawn" : "", (int)j->pid, p[i].acct.name,
                agent_runner_containment(r));
    }
}

typedef int (*parse_fn)(json_t *, struct agent_launch *, char *, size_t);

/* Starts cmds[0..n) (launch or spawn commands, parsed with parse) in
 * batches; what cannot be told apart from any instance (no usable id or
 * attempt) is counted, described in err (the last one) and logged when
 * warn. Returns that count, -1 without memory. */
static int start_batches(agent_runner *r, json_t *const *cmds, size_t n, parse_fn parse,
                         const char *what, bool warn, char *err, size_t errlen)
{
    size_t cap = n < LAUNCH_BATCH_MAX ? n : LAUNCH_BATCH_MAX;
    struct pending *p = calloc(cap ? cap : 1, sizeof *p);
    int ignored = 0;
    if (!p) {
        snprintf(err, errlen, "out of memory for a batch of %zu %ss", n, what);
        return -1;
    }
    for (size_t from = 0; from < n; from += cap) {
        size_t m = 0;
        for (size_t i = from; i < n && i < from + cap; i++) {
            struct pending *q = &p[m];
            q->prc = parse(cmds[i], &q->l, q->perr, sizeof q->perr);
            if (q->l.id < 0) {
                snprintf(err, errlen, "%s rejected: %s", what, q->perr);
                if (warn) cm_warn("ignoring a %s command: %s", what, err);
                ignored++;
                continue;
            }
            prepare(r, q);
            m++;
        }
        for (size_t i = 0; i < m; i++)
            if (p[i].j) collect(r, &p[i]);
        release_batch(r, p, m);
        commit(r); /* the ends of launches that failed */
    }
    free(p);
    return ignored;
}

int agent_runner_launch_batch(agent_runner *r, json_t *launches)
{
    size_t n = json_array_size(launches);
    json_t **v = malloc((n ? n : 1) * sizeof *v);
    char err[1200];
    if (!v) {
        cm_error("out of memory for %zu launches; commonsd sends them again", n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) v[i] = json_array_get(launches, i);
    int rc = start_batches(r, v, n, agent_launch_parse, "launch", true, err, sizeof err);
    free(v);
    if (rc < 0) cm_error("%s", err);
    return rc;
}

int agent_runner_launch(agent_runner *r, json_t *launch, char *err, size_t errlen)
{
    return start_batches(r, &launch, 1, agent_launch_parse, "launch", false, err, errlen) == 0 ? 0 : -1;
}

int agent_runner_spawn(agent_runner *r, json_t *cmd, char *err, size_t errlen)
{
    return start_batches(r, &cmd, 1, agent_spawn_cmd_parse, "spawn", false, err, errlen) == 0 ? 0
                                                                                       : -1;
}

void agent_runner_kill_spawns(agent_runner *r, int64_t id, int attempt)
{
    end_spawns(r, id, attempt, "kill_spawns");
    /* Ended spawns whose end commonsd has not seen are reported again. */
    for (struct agent_job *j = r->jobs; j; j = j->next)
        if (j->id == id && j->attempt == attempt && j->spawn_id && j->phase == AJ_ENDED &&
            !j->ended_pending) {
            j->ended_pending = true;
            save(r, j);
        }
    commit(r);
}

static int kill_one(agent_runner *r, struct agent_job *j, const char *reason)
{
    if (j->phase == AJ_ENDED) {
        j->ended_pending = true; /* the scheduler has not seen the end yet: say it again */
        return save(r, j);
    }
    if (j->phase != AJ_RUNNING || j->cancelled || j->timed_out) return 0;
    j->cancelled = true;
    snprintf(j->kill_reason, sizeof j->kill_reason, "%s", reason ? reason : "cancel");
    cm_info("job %lld.%d: kill (%s)", (long long)j->id, j->attempt, j->kill_reason);
    int rc = save(r, j);
    term(r, j);
    if (j->spawn_id == 0) end_spawns(r, j->id, j->attempt, j->kill_reason);
    return rc;
}

static int kill_instance(agent_runner *r, int64_t id, int attempt, const char *reason)
{
    int rc = 0, found = 0;
    for (struct agent_job *j = r->jobs; j; j = j->next)
        if (j->id == id && j->spawn_id == 0 &&
            (attempt < 0 ? j->phase != AJ_ENDED : j->attempt == attempt)) {
            found = 1;
            rc |= kill_one(r, j, reason);
        }
    if (found || attempt < 0) return rc;
    struct agent_done *d = find_done(r, id, attempt, 0);
    struct agent_job *j = d ? revive(r, d) : NULL;
    if (j) return kill_one(r, j, reason); /* its end is reported again */
    if (d) return 0;
    /* Remember the instance so a launch that arrives late is never started. */
    j = new_job(r, id, attempt, 0);
    if (!j) return -1;
    j->cancelled = true;
    snprintf(j->kill_reason, sizeof j->kill_reason, "%s", reason ? reason : "cancel");
    j->phase = AJ_DRAINING;
    snprintf(j->error, sizeof j->error, "killed (%s) before it was launched here",
             j->kill_reason);
    finish(r, j);
    return 0;
}

int agent_runner_kill(agent_runner *r, int64_t id, int attempt, const char *reason)
{
    int rc = kill_instance(r, id, attempt, reason);
    commit(r);
    return rc;
}

size_t agent_runner_kill_waiting(agent_runner *r, json_t *launches, int64_t id,
                                 const char *reason)
{
    size_t removed = 0;
    for (size_t i = json_array_size(launches); i-- > 0;) {
        int64_t lid;
        int attempt;
        char why[128];
        if (agent_launch_instance(json_array_get(launches, i), &lid, &attempt, why,
                                  sizeof why) != 0 || lid != id)
            continue;
        kill_instance(r, id, attempt, reason);
        json_array_remove(launches, i);
        removed++;
    }
    commit(r);
    return removed;
}

/* The job instance or any of its spawns (they share its environment ids). */
static bool is_running_cb(void *arg, int64_t id, int attempt)
{
    for (struct agent_job *j = ((agent_runner *)arg)->jobs; j; j = j->next)
        if (j->id == id && j->attempt == attempt && j->phase != AJ_ENDED) return true;
    return false;
}

static bool is_main_cb(void *arg, pid_t pid)
{
    for (struct agent_job *j = ((agent_runner *)arg)->jobs; j; j = j->next)
        if ((j->pid == pid || j->keeper == pid) && j->phase != AJ_ENDED) return true;
    return false;
}

static void reap(agent_runner *r)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        (void)status; /* a keeper's own status says nothing: its file does */
        for (struct agent_job *j = r->jobs; j; j = j->next)
            if (j->keeper == pid && j->phase == AJ_RUNNING) {
                keeper_gone(r, j);
                break;
            }
        /* Other pids: orphans of job trees, re-parented to us. */
    }
}

static void prune(agent_runner *r, int64_t now)
{
    for (size_t i = 0; i < r->ndone;) {
        if (now - r->done[i].ended_ms > PRUNE_AFTER_MS) {
            agent_store_remove(r->state_dir, r->done[i].id, r->done[i].attempt,
                               r->done[i].spawn_id);
            r->done[i] = r->done[--r->ndone];
        } else {
            i++;
        }
    }
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int tick(agent_runner *r);

int agent_runner_tick(agent_runner *r)
{
    int next = tick(r);
    commit(r); /* the ends found by this tick, before anyone can read them */
    return next;
}

static int tick(agent_runner *r)
{
    reap(r);
    int64_t now = cm_now_ms(), next = 1000, mono = cm_mono_ms();
    for (struct agent_job *j = r->jobs; j; j = j->next) {
        if (j->write_due_ms && mono >= j->write_due_ms)
            save_lazy(r, j);
        else if (j->write_due_ms)
            next = min64(next, j->write_due_ms - mono);
        if (j->phase == AJ_RUNNING) {
            if (j->adopted && keeper_check(r, j)) continue;
            int64_t limit_at = j->start_ms + j->time_limit_s * 1000;
            if (j->time_limit_s > 0 && !j->timed_out && !j->cancelled && now >= limit_at) {
                cm_info("job %lld reached its time limit (%llds)", (long long)j->id,
                        (long long)j->time_limit_s);
                j->timed_out = true;
                save(r, j);
            }
            if ((j->timed_out || j->cancelled) && !j->term_ms) term(r, j);
            if (j->term_ms) {
                int64_t kill_at = j->term_ms + r->kill_grace_ms;
                if (now >= kill_at) {
                    agent_contain_signal(&r->contain, j, SIGKILL);
                    next = min64(next, 100);
                } else {
                    next = min64(next, kill_at - now);
                }
            } else if (j->time_limit_s > 0) {
                next = min64(next, limit_at - now);
            }
        } else if (j->phase == AJ_DRAINING) {
            if (!agent_contain_alive(&r->contain, j)) {
                finish(r, j);
            } else if (now - j->drain_ms > DRAIN_MAX_MS) {
                cm_warn("job %lld: processes of its tree survive SIGKILL; reporting it ended",
                        (long long)j->id);
                finish(r, j);
            } else {
                agent_contain_signal(&r->contain, j, SIGKILL);
                next = min64(next, 50);
            }
        }
    }
    if (now - r->last_sweep_ms >= SWEEP_EVERY_MS) {
        r->last_sweep_ms = now;
        agent_contain_sweep_orphans(&r->contain, is_running_cb, is_main_cb, r);
    }
    if (now - r->last_prune_ms >= 3600 * 1000) {
        r->last_prune_ms = now;
        prune(r, now);
    }
    return (int)(next < 1 ? 1 : next);
}

int agent_runner_active(agent_runner *r)
{
    int n = 0;
    for (struct agent_job *j = r->jobs; j; j = j->next) n += j->phase != AJ_ENDED;
    return n;
}

json_t *agent_runner_running(agent_runner *r)
{
    json_t *a = json_array();
    for (struct agent_job *j = r->jobs; j; j = j->next)
        if (j->phase != AJ_ENDED || (j->ended_pending && j->pid > 0))
            json_array_append_new(a, j->spawn_id
                                         ? json_pack("[I i I]", (json_int_t)j->id, j->attempt,
                                                     (json_int_t)j->spawn_id)
                                         : json_pack("[I i]", (json_int_t)j->id, j->attempt));
    return a;
}

static int by_id(const void *a, const void *b)
{
    const struct agent_job *x = *(struct agent_job *const *)a, *y = *(struct agent_job *const *)b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    if (x->attempt != y->attempt) return x->attempt < y->attempt ? -1 : 1;
    return x->spawn_id < y->spawn_id ? -1 : x->spawn_id > y->spawn_id;
}

json_t *agent_runner_events(agent_runner *r)
{
    size_t n = 0;
    for (struct agent_job *j = r->jobs; j; j = j->next) n++;
    struct agent_job **v = calloc(n ? n : 1, sizeof *v);
    json_t *a = json_array();
    if (!v) return a;
    n = 0;
    for (struct agent_job *j = r->jobs; j; j = j->next)
        if (j->ended_pending || (j->started_pending && j->pid > 0)) v[n++] = j;
    qsort(v, n, sizeof *v, by_id);
    for (size_t i = 0; i < n; i++) {
        struct agent_job *j = v[i];
        const char *sp = j->spawn_id ? "spawn_" : "";
        char kind[32];
        if (j->started_pending && j->pid > 0) {
            snprintf(kind, sizeof kind, "%sstarted", sp);
            json_t *e = json_pack("{sI si ss si}", "id", (json_int_t)j->id, "attempt",
                                  j->attempt, "event", kind, "pid", (int)j->pid);
            if (j->spawn_id) json_object_set_new(e, "spawn_id", json_integer(j->spawn_id));
            if (j->binding) json_object_set(e, "binding", j->binding);
            json_array_append_new(a, e);
        }
        if (j->ended_pending) {
            snprintf(kind, sizeof kind, "%sended", sp);
            json_t *e = json_pack("{sI si ss si si sb sb}", "id", (json_int_t)j->id, "attempt",
                                  j->attempt, "event", kind, "exit_code", j->exit_code, "signal", j->signal,
                                  "timed_out", j->timed_out, "cancelled", j->cancelled);
            if (j->spawn_id) json_object_set_new(e, "spawn_id", json_integer(j->spawn_id));
            if (j->error[0]) json_object_set_new(e, "error", json_string(j->error));
            json_array_append_new(a, e);
        }
    }
    free(v);
    return a;
}

void agent_runner_ack(agent_runner *r, json_t *sent, json_t *acked)
{
    size_t i, k;
    json_t *e, *id;
    json_array_foreach(sent, i, e) {
        int64_t eid = json_integer_value(json_object_get(e, "id"));
        int att = (int)json_integer_value(json_object_get(e, "attempt"));
        int64_t sid = json_integer_value(json_object_get(e, "spawn_id"));
        bool ok = false;
        json_array_foreach(acked, k, id)
            if (json_is_integer(id) && json_integer_value(id) == eid) ok = true;
        struct agent_job *j = ok ? find_sp(r, eid, att, sid) : NULL;
        if (!j) continue;
        const char *kind = json_string_value(json_object_get(e, "event"));
        if (kind && strncmp(kind, "spawn_", 6) == 0) kind += 6;
        /* Acknowledgements are written without fsync (started's not even
         * until the next change): lost by a crash, they only make a
         * restarted agent send the event again, which commonsd
         * acknowledges again; cut by a power loss, the record is rebuilt
         * as "record lost" (see the header). */
        if (kind && strcmp(kind, "started") == 0 && j->started_pending) {
            j->started_pending = false; /* not written: the next write of the record carries it */
        } else if (kind && strcmp(kind, "ended") == 0 && j->ended_pending) {
            j->ended_pending = false;
            j->started_pending = false;
            if (save_lazy(r, j) == 0 && !j->sync_due) retire(r, j);
        }
    }
}

void agent_runner_status(agent_runner *r, int64_t id, int attempt, struct agent_job_status *st)
{
    memset(st, 0, sizeof *st);
    struct agent_job *j = find(r, id, attempt), old;
    char err[512];
    if (!j && find_done(r, id, attempt, 0) &&
        agent_store_load_one(r->state_dir, id, attempt, 0, &old, err, sizeof err) == 0)
        j = &old;
    if (!j) return;
    st->phase = j->phase == AJ_ENDED ? AGENT_JOB_ENDED : AGENT_JOB_RUNNING;
    st->pid = j->pid;
    st->keeper = j->keeper;
    st->exit_code = j->exit_code;
    st->signal = j->signal;
    st->timed_out = j->timed_out;
    st->cancelled = j->cancelled;
    snprintf(st->error, sizeof st->error, "%s", j->error);
    if (j == &old) json_decref(old.binding);
}
