/* contain.c: finding and ending a job's whole process tree.
 *
 * cgroup mode: each job gets its own cgroup v2 folder (base/job-<id>-<attempt>,
 * base = <agent's cgroup>/commons-<node>-<state dir hash>, so two agents on
 * one host, even with the same node name, never share a folder); every
 * descendant stays in it whatever it does with sessions or double forks,
 * and cgroup.kill ends them all at once.
 *
 * subreaper mode (no writable cgroup v2 with cgroup.kill): the job's main
 * process leads its own session and process group; the agent is a child
 * subreaper, so processes that leave the group by double-forking come back
 * to the agent as orphans. A job's tree is then its process group plus every
 * process whose initial environment says COMMONS_JOB_ID=<id>,
 * COMMONS_JOB_ATTEMPT=<attempt> and COMMONS_NODE=<node>, plus orphans of the agent that belong to no running
 * job. A process that both escapes its group and clears its environment,
 * while a re-started agent is not its subreaper, is not found: that is the
 * limit of this mode (docs/agent.md).
 */
#include "agent_internal.h"
#include "cm_log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_str(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, s, strlen(s));
    int saved = errno;
    close(fd);
    errno = saved;
    return n == (ssize_t)strlen(s) ? 0 : -1;
}

/* Finds the cgroup v2 mount point and this process's cgroup path in it. */
static int own_cgroup_dir(char *out, size_t len)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) return -1;
    char line[4096], mnt[PATH_MAX] = "", root[PATH_MAX] = "";
    while (fgets(line, sizeof line, f)) {
        char *sep = strstr(line, " - ");
        if (!sep || strncmp(sep + 3, "cgroup2 ", 8) != 0) continue;
        char r[PATH_MAX], m[PATH_MAX];
        if (sscanf(line, "%*s %*s %*s %4095s %4095s", r, m) == 2) {
            snprintf(root, sizeof root, "%s", r);
            snprintf(mnt, sizeof mnt, "%s", m);
            break;
        }
    }
    fclose(f);
    if (!mnt[0]) return -1;
    f = fopen("/proc/self/cgroup", "re");
    if (!f) return -1;
    char path[PATH_MAX] = "";
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "0::", 3) == 0) {
            snprintf(path, sizeof path, "%s", line + 3);
            path[strcspn(path, "\n")] = '\0';
            break;
        }
    }
    fclose(f);
    if (!path[0]) return -1;
    /* A mount of a sub-tree (root != "/") shows paths below that root. */
    const char *rel = path;
    size_t rl = strlen(root);
    if (strcmp(root, "/") != 0 && strncmp(path, root, rl) == 0) rel = path + rl;
    if (strcmp(rel, "/") == 0) rel = "";
    if ((size_t)snprintf(out, len, "%s%s", mnt, rel) >= len) return -1;
    return 0;
}

static int cgroup_base_ready(const char *base, char *err, size_t errlen)
{
    if (mkdir(base, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cgroup %s: %s", base, strerror(errno));
        return -1;
    }
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/cgroup.kill", base);
    if (access(p, W_OK) != 0) {
        snprintf(err, errlen, "cgroup %s: no writable cgroup.kill (needs Linux >= 5.14)", base);
        rmdir(base);
        return -1;
    }
    snprintf(p, sizeof p, "%s/cgroup.procs", base);
    if (access(p, W_OK) != 0) {
        snprintf(err, errlen, "cgroup %s: cgroup.procs not writable", base);
        rmdir(base);
        return -1;
    }
    return 0;
}

static int default_base(const char *node, const char *instance, char *out, size_t len)
{
    char own[PATH_MAX];
    if (own_cgroup_dir(own, sizeof own) != 0) return -1;
    return (size_t)snprintf(out, len, "%s/commons-%s-%s", own, node, instance) >= len ? -1 : 0;
}

/* Which controllers job folders can use: those the base folder has. */
static void probe_controllers(struct agent_contain *c)
{
    char p[PATH_MAX + 32], line[512] = "";
    snprintf(p, sizeof p, "%s/cgroup.controllers", c->base);
    FILE *f = fopen(p, "re");
    if (!f) return;
    if (!fgets(line, sizeof line, f)) line[0] = '\0';
    fclose(f);
    for (char *tok = strtok(line, " \n"); tok; tok = strtok(NULL, " \n")) {
        if (strcmp(tok, "memory") == 0) c->limits = true;
        if (strcmp(tok, "cpu") == 0) c->cpu_ctl = true;
        if (strcmp(tok, "cpuset") == 0) c->cpuset_ctl = true;
    }
}

/* memory.max, cpu.max and cpuset.cpus of a new job folder. */
static int set_limits(struct agent_contain *c, const char *path, int64_t mem_mb, int ncpus,
                      const char *cpus_list, char *err, size_t errlen)
{
    char p[PATH_MAX + 32], v[64];
    snprintf(p, sizeof p, "%s/cgroup.subtree_control", c->base);
    /* Enabling is idempotent; a controller that cannot be enabled is not used. */
    if (write_str(p, "+memory") != 0) c->limits = false;
    if (c->cpu_ctl && write_str(p, "+cpu") != 0) c->cpu_ctl = false;
    if (c->cpuset_ctl && write_str(p, "+cpuset") != 0) c->cpuset_ctl = false;
    if (c->limits && mem_mb > 0) {
        snprintf(p, sizeof p, "%s/memory.max", path);
        snprintf(v, sizeof v, "%lld", (long long)mem_mb << 20);
        if (write_str(p, v) != 0) goto fail;
        snprintf(p, sizeof p, "%s/memory.swap.max", path);
        write_str(p, "0"); /* absent without swap accounting: then nothing to limit */
    }
    if (c->cpu_ctl && ncpus > 0) {
        snprintf(p, sizeof p, "%s/cpu.max", path);
        snprintf(v, sizeof v, "%d 100000", ncpus * 100000);
        if (write_str(p, v) != 0) goto fail;
    }
    if (c->cpuset_ctl && cpus_list && cpus_list[0]) {
        snprintf(p, sizeof p, "%s/cpuset.cpus", path);
        if (write_str(p, cpus_list) != 0) goto fail;
    }
    return 0;
fail:
    snprintf(err, errlen, "cannot set %s: %s", p, strerror(errno));
    return -1;
}

int agent_contain_init(struct agent_contain *c, enum agent_containment want, const char *node,
                       const char *instance, const char *cgroup_base, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    snprintf(c->node, sizeof c->node, "%s", node);
    if (want != AGENT_CONTAIN_SUBREAPER) {
        char why[PATH_MAX + 128] = "no cgroup v2 mount found";
        int ok = -1;
        if (cgroup_base)
            ok = (size_t)snprintf(c->base, sizeof c->base, "%s", cgroup_base) < sizeof c->base
                     ? 0 : -1;
        else
            ok = default_base(node, instance, c->base, sizeof c->base);
        if (ok == 0) ok = cgroup_base_ready(c->base, why, sizeof why);
        if (ok == 0) {
            c->kind = AGENT_CONTAIN_CGROUP;
            probe_controllers(c);
            rmdir(c->base); /* made again for the first job; kept if jobs remain */
            return 0;
        }
        if (want == AGENT_CONTAIN_CGROUP) {
            snprintf(err, errlen, "cgroup containment unavailable: %s", why);
            return -1;
        }
        c->base[0] = '\0';
    }
    c->kind = AGENT_CONTAIN_SUBREAPER;
    return 0;
}

bool agent_contain_cgroup_available(const char *node)
{
    struct agent_contain c;
    char err[256];
    return agent_contain_init(&c, AGENT_CONTAIN_CGROUP, node, "probe", NULL, err,
                              sizeof err) == 0;
}

int agent_contain_job_path(const struct agent_contain *c, int64_t id, int attempt,
                           int64_t spawn_id, char *path, size_t len)
{
    path[0] = '\0';
    if (c->kind != AGENT_CONTAIN_CGROUP) return 0;
    char n[AGENT_INSTANCE_NAME_MAX];
    agent_instance_name(id, attempt, spawn_id, n);
    if ((size_t)snprintf(path, len, "%s/" AGENT_CGROUP_PREFIX "%s", c->base, n) < len) return 0;
    path[0] = '\0';
    return -1;
}

int agent_contain_job_create(struct agent_contain *c, int64_t id, int attempt, int64_t spawn_id,
                             int64_t mem_mb, int ncpus, const char *cpus_list, char *path,
                             size_t len, char *err, size_t errlen)
{
    if (agent_contain_job_path(c, id, attempt, spawn_id, path, len) != 0) {
        snprintf(err, errlen, "cgroup path too long under %s", c->base);
        return -1;
    }
    if (!path[0]) return 0;
    /* The base folder exists only while it has jobs (see cleanup). */
    if (mkdir(c->base, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cgroup %s: %s", c->base, strerror(errno));
        path[0] = '\0';
        return -1;
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cgroup %s: %s", path, strerror(errno));
        path[0] = '\0';
        return -1;
    }
    return set_limits(c, path, mem_mb, ncpus, cpus_list, err, errlen);
}

/* Calls fn(arg, pid) for each pid listed in the job cgroup's cgroup.procs. */
static int cgroup_each(const char *cg, void (*fn)(void *, pid_t), void *arg)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/cgroup.procs", cg);
    FILE *f = fopen(p, "re");
    if (!f) return -1;
    int n = 0, pid;
    while (fscanf(f, "%d", &pid) == 1) {
        n++;
        if (fn) fn(arg, (pid_t)pid);
    }
    fclose(f);
    return n;
}

static void kill_one(void *arg, pid_t pid)
{
    kill(pid, *(int *)arg);
}

struct sweep {
    const struct agent_job *job;
    const char *node;
    int sig;      /* 0: only count */
    int found;
};

/* Subreaper mode: is pid part of job's tree (same process group, or tagged
 * by its environment)? Zombies do not count: they are already dead. */
static int sweep_one(void *arg, pid_t pid)
{
    struct sweep *s = arg;
    struct agent_procstat st;
    if (pid == getpid() || agent_proc_stat(pid, &st) != 0 || st.state == 'Z') return 0;
    int attempt;
    int64_t sid;
    /* A job and its spawns on this node share the job's ids: the spawn id
     * tells their trees apart. */
    bool mine = (s->job->pid > 0 && st.pgrp == s->job->pid) ||
                (agent_proc_job_id(pid, s->node, &attempt, &sid) == s->job->id &&
                 attempt == s->job->attempt && sid == s->job->spawn_id);
    if (!mine) return 0;
    s->found++;
    if (s->sig) kill(pid, s->sig);
    return 0;
}

void agent_contain_signal(struct agent_contain *c, const struct agent_job *j, int sig)
{
    if (j->cgroup[0]) {
        /* The cgroup is exact: no process-group signal, which after the main
         * process is gone could reach a new group that reused its pid. */
        char p[PATH_MAX + 32];
        snprintf(p, sizeof p, "%s/cgroup.kill", j->cgroup);
        if (sig == SIGKILL && write_str(p, "1") == 0) return;
        if (cgroup_each(j->cgroup, kill_one, &sig) >= 0) return;
    }
    if (j->pid > 0) kill(-j->pid, sig);
    struct sweep s = {.job = j, .node = c->node, .sig = sig};
    agent_proc_each(sweep_one, &s);
}

bool agent_contain_alive(struct agent_contain *c, const struct agent_job *j)
{
    if (j->cgroup[0]) {
        int n = cgroup_each(j->cgroup, NULL, NULL);
        if (n >= 0) return n > 0;
        /* Missing cgroup folder: fall through to the process scan. */
    }
    struct sweep s = {.job = j, .node = c->node, .sig = 0};
    agent_proc_each(sweep_one, &s);
    return s.found > 0;
}

void agent_contain_cleanup(struct agent_contain *c, const struct agent_job *j)
{
    if (j->cgroup[0] && rmdir(j->cgroup) != 0 && errno != ENOENT)
        cm_warn("job %lld: cannot remove cgroup %s: %s", (long long)j->id, j->cgroup,
                strerror(errno));
    /* Leave no empty folder behind an agent that is killed while idle;
     * this fails harmlessly while other jobs have folders in it. */
    if (c->kind == AGENT_CONTAIN_CGROUP) rmdir(c->base);
}

struct orphans {
    bool (*is_running)(void *, int64_t, int);
    bool (*pid_is_main)(void *, pid_t);
    void *arg;
    struct agent_contain *c;      /* its suspects: those of the previous sweep */
    pid_t self;
    struct agent_pid_start next[AGENT_SUSPECTS_MAX];
    int nnext;                    /* suspects of this sweep */
};

static bool was_suspect(const struct agent_contain *c, pid_t pid, unsigned long long start)
{
    for (int i = 0; i < c->nsuspects; i++)
        if (c->suspects[i].pid == pid && c->suspects[i].start == start) return true;
    return false;
}

static int orphan_one(void *arg, pid_t pid)
{
    struct orphans *o = arg;
    struct agent_procstat st;
    if (agent_proc_stat(pid, &st) != 0 || st.ppid != o->self || st.state == 'Z') return 0;
    if (o->pid_is_main(o->arg, pid)) return 0;
    int attempt;
    int64_t sid;
    int64_t id = agent_proc_job_id(pid, o->c->node, &attempt, &sid);
    if (id >= 0 && o->is_running(o->arg, id, attempt)) return 0;
    /* No job in its environment: a process in the middle of an exec reads as empty
     * for a moment, so it is killed only if the previous sweep found it so too (same
     * pid and start time); until then it is a suspect. */
    if (id < 0 && !was_suspect(o->c, pid, st.starttime)) {
        if (o->nnext < AGENT_SUSPECTS_MAX)
            o->next[o->nnext++] = (struct agent_pid_start){pid, st.starttime};
        return 0;
    }
    cm_info("killing orphan process %d (job %lld, no longer running)", (int)pid, (long long)id);
    kill(pid, SIGKILL);
    return 0;
}

void agent_contain_sweep_orphans(struct agent_contain *c,
                                 bool (*is_running)(void *, int64_t, int),
                                 bool (*pid_is_main)(void *, pid_t), void *arg)
{
    if (c->kind != AGENT_CONTAIN_SUBREAPER) return;
    struct orphans o = {.is_running = is_running, .pid_is_main = pid_is_main, .arg = arg, .c = c,
                        .self = getpid()};
    agent_proc_each(orphan_one, &o);
    memcpy(c->suspects, o.next, (size_t)o.nnext * sizeof o.next[0]);
    c->nsuspects = o.nnext;
}
