/* spawn.c: starting one job's main process, under a keeper process that
 * records its exit status (see agent_spawn_fork and the steps after it in
 * agent_internal.h).
 *
 * Everything that may allocate or consult NSS (argv, environment, groups)
 * is prepared before fork; the child only makes system calls, because the
 * agent has nng threads and a forked child of a threaded process may only
 * call async-signal-safe functions. The child leads a new session (so the
 * job's tree can be signalled as a process group), waits for the parent to
 * record it, drops to the job's account, enters workdir, opens its output
 * files as that account (so they are created with its ownership and its
 * permissions apply) and execs. Failures come back to the parent as
 * (stage, errno) through a close-on-exec pipe. */
#include "agent_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

enum stage { ST_SETGROUPS = 1, ST_SETGID, ST_SETUID, ST_CHDIR, ST_STDIN, ST_STDOUT, ST_STDERR,
             ST_BIND, ST_FORK, ST_EXEC };

#ifndef MPOL_BIND
#define MPOL_BIND 2 /* linux/mempolicy.h; no libnuma needed for one system call */
#endif

struct child_report {
    int stage, err;
};

/* A NULL-terminated vector of strings built before fork. */
struct strvec {
    char **v;
    size_t n, cap;
};

static int sv_add(struct strvec *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sv_add(struct strvec *s, const char *fmt, ...)
{
    if (s->n + 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        char **v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&s->v[s->n], fmt, ap);
    va_end(ap);
    if (rc < 0) return -1;
    s->v[++s->n] = NULL;
    return 0;
}

static void sv_free(struct strvec *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
}

static bool sv_has(const struct strvec *s, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < s->n; i++)
        if (strncmp(s->v[i], name, len) == 0 && s->v[i][len] == '=') return true;
    return false;
}

/* The COMMONS_* names the agent sets (or leaves unset on purpose): a value
 * of the job's env under one of them would be stale or forged, e.g. the
 * COMMONS_ARRAY_TASK_ID of the array task a job was submitted from. Other
 * COMMONS_* names (COMMONS_ADDR, ...) are the user's and pass through. */
static bool agent_owned(const char *name)
{
    static const char *const owned[] = {
        "COMMONS_JOB_ID", "COMMONS_JOB_ATTEMPT", "COMMONS_JOB_NAME", "COMMONS_ARRAY_TASK_ID",
        "COMMONS_CPUS", "COMMONS_TASKS", "COMMONS_GPUS", "COMMONS_MEM_MB", "COMMONS_NODE",
        "COMMONS_NODELIST", "COMMONS_SUBMIT_DIR", "COMMONS_TASK_ID", "COMMONS_LOCAL_TASK_ID",
        "COMMONS_CPU_LIST", "COMMONS_TASK_CPU_LIST", "COMMONS_GPU_LIST",
        "COMMONS_TASKS_PER_NODE", "COMMONS_STEP_KEY", "COMMONS_SPAWN_ID", "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER"};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        if (strcmp(name, owned[i]) == 0) return true;
    return false;
}

static int add_list(struct strvec *env, const char *name, const int *v, int n)
{
    char buf[AGENT_MAX_PUS * 5 + 1];
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && off + 8 < sizeof buf; i++)
        off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%d", i ? "," : "", v[i]);
    return sv_add(env, "%s=%s", name, buf);
}

/* The placement variables of one task (docs/agent.md, "Environment"). */
static int placement_env(const struct agent_launch *l, const struct agent_spawn_ctx *ctx,
                         int task, struct strvec *env)
{
    const struct agent_bind *b = ctx->bind;
    int rc = 0, tpn = l->tasks_per_node > 0 ? (int)l->tasks_per_node : 1;
    char slice[AGENT_MAX_PUS * 5 + 1];
    if (l->spawn_id > 0) rc |= sv_add(env, "COMMONS_SPAWN_ID=%lld", (long long)l->spawn_id);
    if (l->spawn_id == 0 && !l->mpi) {
        rc |= sv_add(env, "COMMONS_TASK_ID=%d",
                     agent_bind_node_index(l, ctx->node) * tpn + task);
        rc |= sv_add(env, "COMMONS_LOCAL_TASK_ID=%d", task);
    }
    rc |= sv_add(env, "COMMONS_TASKS_PER_NODE=%d", tpn);
    if (l->ncpu) {
        rc |= add_list(env, "COMMONS_CPU_LIST", l->cpu_list, l->ncpu);
        agent_bind_task_list(b, task, slice, sizeof slice);
        rc |= sv_add(env, "COMMONS_TASK_CPU_LIST=%s", slice);
        int cpt = b && b->task_cpus ? CPU_COUNT(&b->task_cpus[task]) : l->ncpu;
        if (!sv_has(env, "OMP_NUM_THREADS")) rc |= sv_add(env, "OMP_NUM_THREADS=%d", cpt);
    }
    if (l->ngpu || l->gpus == 0) {
        /* A job without GPUs must not see any either. */
        rc |= add_list(env, "COMMONS_GPU_LIST", l->gpu_list, l->ngpu);
        rc |= add_list(env, "CUDA_VISIBLE_DEVICES", l->gpu_list, l->ngpu);
        rc |= sv_add(env, "CUDA_DEVICE_ORDER=PCI_BUS_ID"); /* the agent's GPU numbering */
    }
    if (l->step_key) rc |= sv_add(env, "COMMONS_STEP_KEY=%s", l->step_key);
    if (ctx->server) rc |= sv_add(env, "COMMONS_ADDR=%s", ctx->server);
    return rc;
}

/* Job env first (minus the agent's names), then the agent's COMMONS_*
 * variables, then login defaults the job env did not give. */
static int build_env(const struct agent_launch *l, const struct agent_account *a,
                     const struct agent_spawn_ctx *ctx, int task, struct strvec *env)
{
    const char *k, *node = ctx->node;
    json_t *v;
    int rc = 0;
    if (l->env)
        json_object_foreach(l->env, k, v) {
            if (agent_owned(k) || (ctx->server && strcmp(k, "COMMONS_ADDR") == 0)) continue;
            rc |= sv_add(env, "%s=%s", k, json_string_value(v));
        }
    rc |= placement_env(l, ctx, task, env);
    rc |= sv_add(env, "COMMONS_JOB_ID=%lld", (long long)l->id);
    rc |= sv_add(env, "COMMONS_JOB_ATTEMPT=%d", l->attempt);
    if (l->name) rc |= sv_add(env, "COMMONS_JOB_NAME=%s", l->name);
    if (l->array_task_id >= 0)
        rc |= sv_add(env, "COMMONS_ARRAY_TASK_ID=%lld", (long long)l->array_task_id);
    rc |= sv_add(env, "COMMONS_CPUS=%lld", (long long)l->cpus);
    rc |= sv_add(env, "COMMONS_TASKS=%lld", (long long)l->tasks);
    rc |= sv_add(env, "COMMONS_GPUS=%lld", (long long)l->gpus);
    rc |= sv_add(env, "COMMONS_MEM_MB=%lld", (long long)l->mem_mb);
    rc |= sv_add(env, "COMMONS_NODE=%s", node);
    rc |= sv_add(env, "COMMONS_NODELIST=%s", l->nodelist && l->nodelist[0] ? l->nodelist : node);
    rc |= sv_add(env, "COMMONS_SUBMIT_DIR=%s", l->submit_dir ? l->submit_dir : l->workdir);
    if (!sv_has(env, "PATH")) rc |= sv_add(env, "PATH=/usr/local/bin:/usr/bin:/bin");
    if (!sv_has(env, "HOME")) rc |= sv_add(env, "HOME=%s", a->home);
    if (!sv_has(env, "USER")) rc |= sv_add(env, "USER=%s", a->name);
    if (!sv_has(env, "LOGNAME")) rc |= sv_add(env, "LOGNAME=%s", a->name);
    if (!sv_has(env, "SHELL")) rc |= sv_add(env, "SHELL=%s", a->shell);
    return rc ? -1 : 0;
}

static int build_argv(const struct agent_launch *l, const struct agent_bind *b,
                      const char *script_path, struct strvec *argv)
{
    int rc = 0;
    if (b && b->argv_override) {
        for (char **p = b->argv_override; *p; p++) rc |= sv_add(argv, "%s", *p);
    } else if (l->command) {
        size_t i;
        json_t *s;
        json_array_foreach(l->command, i, s) rc |= sv_add(argv, "%s", json_string_value(s));
    } else if (strncmp(l->script, "#!", 2) == 0) {
        rc |= sv_add(argv, "%s", script_path);
    } else {
        rc |= sv_add(argv, "/bin/sh");
        rc |= sv_add(argv, "%s", script_path);
    }
    return rc ? -1 : 0;
}

int agent_script_write(const char *path, const char *text, const struct agent_account *a,
                       char *err, size_t errlen)
{
    unlink(path); /* a leftover of an earlier attempt must not be followed or reused */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0700);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write job script %s: %s", path, strerror(errno));
        return -1;
    }
    if (agent_write_all(fd, text) != 0) {
        snprintf(err, errlen, "cannot write job script %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    if ((a->switch_user && fchown(fd, a->uid, a->gid) != 0) || fchmod(fd, 0700) != 0 ||
        close(fd) != 0) {
        snprintf(err, errlen, "cannot set owner/mode of job script %s: %s", path,
                 strerror(errno));
        unlink(path);
        return -1;
    }
    return 0;
}

static void report(int fd, int stage)
{
    struct child_report r = {stage, errno};
    ssize_t w = write(fd, &r, sizeof r);
    (void)w;
    _exit(127);
}

static int open_onto(const char *path, int flags, int target)
{
    int fd = open(path, flags, 0644);
    if (fd < 0) return -1;
    if (fd != target) {
        if (dup2(fd, target) < 0) return -1;
        close(fd);
    }
    return 0;
}

/* Puts the calling process on task's PUs and its memory on the NUMA nodes
 * of the allocation. Memory binding is best effort (a container may forbid
 * set_mempolicy); CPU binding is not. */
static void apply_bind(const struct agent_bind *b, int task, int rep_fd)
{
    if (!b || !b->apply || !b->task_cpus) return;
    if (sched_setaffinity(0, sizeof(cpu_set_t), &b->task_cpus[task]) != 0) report(rep_fd, ST_BIND);
    if (b->membind)
        syscall(SYS_set_mempolicy, MPOL_BIND, b->nodemask, (unsigned long)AGENT_MAX_NUMA + 1);
}

static void exec_task(const struct agent_bind *b, int task, char **argv, char **envp, int rep_fd)
{
    apply_bind(b, task, rep_fd);
    environ = envp;
    execvp(argv[0], argv);
    report(rep_fd, ST_EXEC);
}

/* Several tasks: this process starts one child per task and ends as the
 * job's status: 0 when all succeeded, else the first task that failed
 * (exit status, or the same signal). */
static void run_tasks(const struct agent_bind *b, char **argv, char ***envs, int rep_fd)
{
    pid_t kids[AGENT_MAX_TASKS];
    for (int i = 0; i < b->ntasks; i++) {
        kids[i] = fork();
        if (kids[i] == 0) exec_task(b, i, argv, envs[i], rep_fd);
        if (kids[i] < 0) {
            for (int k = 0; k < i; k++) kill(kids[k], SIGKILL);
            report(rep_fd, ST_FORK);
        }
    }
    close(rep_fd); /* the agent's read ends once every task has exec'd */
    prctl(PR_SET_NAME, "commons-tasks");
    int left = b->ntasks, first = 0, status;
    bool failed = false;
    while (left > 0) {
        pid_t p = waitpid(-1, &status, 0);
        if (p < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < b->ntasks; i++)
            if (kids[i] == p) {
                left--;
                if (!failed && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
                    failed = true;
                    first = status;
                }
            }
    }
    if (failed && WIFSIGNALED(first)) {
        struct rlimit none = {0, 0};
        setrlimit(RLIMIT_CORE, &none); /* the task dumped core already, if it could */
        signal(WTERMSIG(first), SIG_DFL);
        kill(getpid(), WTERMSIG(first));
        _exit(128 + WTERMSIG(first));
    }
    _exit(failed ? WEXITSTATUS(first) : 0);
}

/* Runs in the forked child: async-signal-safe calls only. */
static void child_main(const struct agent_launch *l, const struct agent_account *a,
                       const struct agent_bind *bind, char **argv, char ***envs, int go_fd,
                       int rep_fd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    setsid();
    char b;
    ssize_t r;
    do r = read(go_fd, &b, 1); while (r < 0 && errno == EINTR);
    if (r != 1) _exit(127); /* the agent could not record us: run nothing */
    close(go_fd);
    if (a->switch_user) {
        if (setgroups((size_t)a->ngroups, a->groups) != 0) report(rep_fd, ST_SETGROUPS);
        if (setgid(a->gid) != 0) report(rep_fd, ST_SETGID);
        if (setuid(a->uid) != 0) report(rep_fd, ST_SETUID);
    }
    umask(022);
    if (chdir(l->workdir) != 0) report(rep_fd, ST_CHDIR);
    if (open_onto("/dev/null", O_RDONLY, 0) != 0) report(rep_fd, ST_STDIN);
    int wflags = O_WRONLY | O_CREAT | O_APPEND;
    if (open_onto(l->stdout_path, wflags, 1) != 0) report(rep_fd, ST_STDOUT);
    if (strcmp(l->stderr_path, l->stdout_path) == 0) {
        if (dup2(1, 2) < 0) report(rep_fd, ST_STDERR);
    } else if (open_onto(l->stderr_path, wflags, 2) != 0) {
        report(rep_fd, ST_STDERR);
    }
    /* Nothing of the agent (sockets, lock, signalfd) may leak into the job. */
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    if (bind && bind->mem_limit_mb > 0) {
        /* No memory controller: each process gets at most mem_mb of address space. */
        struct rlimit lim = {(rlim_t)bind->mem_limit_mb << 20, (rlim_t)bind->mem_limit_mb << 20};
        if (setrlimit(RLIMIT_AS, &lim) != 0) report(rep_fd, ST_BIND);
    }
    if (bind && bind->ntasks > 1) run_tasks(bind, argv, envs, rep_fd);
    exec_task(bind, 0, argv, envs[0], rep_fd);
}

static void describe(const struct child_report *r, const struct agent_launch *l,
                     const struct agent_account *a, const char *argv0, char *err,
                     size_t errlen)
{
    const char *e = strerror(r->err);
    switch (r->stage) {
    case ST_SETGROUPS: case ST_SETGID: case ST_SETUID:
        snprintf(err, errlen, "cannot switch to Unix account %s (uid %d): %s", a->name,
                 (int)a->uid, e);
        break;
    case ST_CHDIR:
        snprintf(err, errlen, "cannot enter workdir %s as %s: %s", l->workdir, a->name, e);
        break;
    case ST_STDIN:
        snprintf(err, errlen, "cannot open /dev/null: %s", e);
        break;
    case ST_STDOUT:
        snprintf(err, errlen, "cannot open stdout file %s as %s: %s", l->stdout_path, a->name, e);
        break;
    case ST_STDERR:
        snprintf(err, errlen, "cannot open stderr file %s as %s: %s", l->stderr_path, a->name, e);
        break;
    case ST_BIND:
        snprintf(err, errlen, "cannot bind the job to its CPUs or set its memory limit: %s", e);
        break;
    case ST_FORK:
        snprintf(err, errlen, "cannot fork the job's tasks: %s", e);
        break;
    default:
        snprintf(err, errlen, "cannot execute %s as %s: %s%s", argv0, a->name, e,
                 r->err == EACCES && !l->command
                     ? " (the agent's state dir must be searchable by job accounts)" : "");
    }
}

/* The keeper's status file: "<wait status>\n", written with system calls
 * only (temp file, fsync, rename, fsync of the folder) since the keeper is
 * a forked child of a threaded process. Durable when this returns: the
 * agent keeps no record of an end whose status is in this file (runner.c). */
static void keeper_write_exit(const char *path, int status)
{
    char tmp[PATH_MAX + 8], num[16];
    size_t n = strlen(path);
    if (n + 5 > sizeof tmp) return;
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    int len = 0;
    if (status < 0) num[len++] = '-';
    unsigned v = status < 0 ? (unsigned)-status : (unsigned)status;
    char rev[16];
    int nd = 0;
    do rev[nd++] = (char)('0' + v % 10); while ((v /= 10) && nd < 12);
    while (nd > 0) num[len++] = rev[--nd];
    num[len++] = '\n';
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return;
    bool ok = write(fd, num, (size_t)len) == len && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return;
    }
    /* The rename is an entry of the jobs folder: durable once it is. */
    char *slash = strrchr(tmp, '/');
    if (slash == tmp) slash++; /* a file in "/" */
    if (slash) *slash = '\0';
    int dfd = open(slash ? tmp : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

int agent_exit_read(const char *path, int *status)
{
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    int rc = fscanf(f, "%d", status) == 1 ? 0 : -1;
    fclose(f);
    return rc;
}

/* Runs in the forked keeper: async-signal-safe calls only. */
/* What the keeper tells the agent once it forked the job. */
struct keeper_report {
    pid_t job;
    int in_cgroup; /* the job was created in its cgroup (clone3 CLONE_INTO_CGROUP) */
};

/* clone3's arguments (linux/sched.h, which clashes with sched.h). */
struct clone3_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
        set_tid_size, cgroup;
};
#define AGENT_CLONE_INTO_CGROUP 0x200000000ULL

/* fork(), but the child starts in the cgroup cgfd (when >= 0 and the kernel
 * can: Linux >= 5.7): moving a process into a cgroup afterwards
 * (cgroup.procs) waits for an RCU grace period, about a millisecond per job.
 * *in_cgroup says whether it worked; fork() is the fallback. */
static pid_t fork_into(int cgfd, int *in_cgroup)
{
    *in_cgroup = 0;
    if (cgfd >= 0) {
        struct clone3_args ca = {.flags = AGENT_CLONE_INTO_CGROUP, .exit_signal = SIGCHLD,
                                 .cgroup = (uint64_t)cgfd};
        long pid = syscall(SYS_clone3, &ca, sizeof ca);
        if (pid >= 0) {
            *in_cgroup = 1;
            return (pid_t)pid;
        }
    }
    return fork();
}

static void keeper_main(const struct agent_launch *l, const struct agent_account *a,
                        const struct agent_spawn_ctx *ctx, char **argv, char ***envs, int go[2],
                        int rep[2], int pidp[2], int cgfd)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    /* Out of the agent's group and immune to terminal signals: only the
     * job's end (or SIGKILL aimed at the keeper itself) ends it. */
    setsid();
    prctl(PR_SET_NAME, AGENT_KEEPER_WAITING); /* tells it apart from the agent in ps */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    /* Keep nothing of the agent: its lock, sockets and terminal would
     * otherwise stay open for as long as the job runs. */
    int keep[4] = {go[0], rep[1], pidp[1], cgfd}, nkeep = cgfd >= 0 ? 4 : 3;
    for (int i = 0; i < nkeep; i++)
        for (int k = i + 1; k < nkeep; k++)
            if (keep[k] < keep[i]) {
                int t = keep[i];
                keep[i] = keep[k];
                keep[k] = t;
            }
    unsigned lo = 3;
    for (int i = 0; i < nkeep; i++) {
        if ((unsigned)keep[i] > lo) close_range(lo, (unsigned)keep[i] - 1, 0);
        lo = (unsigned)keep[i] + 1;
    }
    close_range(lo, ~0U, 0);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2) close(null);
    }
    /* The agent's go byte passes through the keeper, so the keeper knows
     * whether the job was ever released: a job the agent never released
     * (it died first) is recorded as such, not as an exit status. */
    int gj[2];
    if (pipe2(gj, O_CLOEXEC) != 0) _exit(127);
    struct keeper_report kr;
    pid_t job = kr.job = fork_into(cgfd, &kr.in_cgroup);
    if (job == 0) {
        close(pidp[1]);
        close(go[0]);
        close(gj[1]);
        if (cgfd >= 0) close(cgfd);
        child_main(l, a, ctx->bind, argv, envs, gj[0], rep[1]);
    }
    if (cgfd >= 0) close(cgfd);
    close(gj[0]);
    close(rep[1]);
    ssize_t w = write(pidp[1], &kr, sizeof kr);
    close(pidp[1]);
    if (job < 0 || w != (ssize_t)sizeof kr) _exit(127);
    char b;
    ssize_t r;
    do r = read(go[0], &b, 1); while (r < 0 && errno == EINTR);
    bool released = r == 1 && write(gj[1], &b, 1) == 1;
    /* The job may run from now on, or never will: say so where a restarted
     * agent looks (runner.c, settle_unreleased), instead of a record write
     * per job; before the kill and exit file below, which take a while on a
     * loaded node (a name still "waiting" then would read as released). */
    prctl(PR_SET_NAME, released ? AGENT_KEEPER_RELEASED : AGENT_KEEPER_UNRELEASED);
    close(go[0]);
    close(gj[1]);
    if (!released) kill(job, SIGKILL);
    int status;
    while (waitpid(job, &status, 0) < 0)
        if (errno != EINTR) _exit(127);
    keeper_write_exit(ctx->exit_path, released ? status : AGENT_EXIT_UNRELEASED);
    _exit(0);
}

/* Moves pid into the job's cgroup. */
static int join_cgroup(const char *cgroup, pid_t pid, char *err, size_t errlen)
{
    char p[PATH_MAX + 32], num[32];
    snprintf(p, sizeof p, "%s/cgroup.procs", cgroup);
    int n = snprintf(num, sizeof num, "%d", (int)pid);
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, num, (size_t)n) != n) {
        snprintf(err, errlen, "cannot move the job into cgroup %s: %s", cgroup, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int agent_spawn_fork(const struct agent_launch *l, const struct agent_account *a,
                     const struct agent_spawn_ctx *ctx, const char *script_path,
                     struct agent_proc *p, char *err, size_t errlen)
{
    *p = (struct agent_proc){.go_fd = -1, .rep_fd = -1, .pid_fd = -1};
    int ntasks = ctx->bind && ctx->bind->ntasks > 1 ? ctx->bind->ntasks : 1;
    struct strvec argv = {0}, *env = calloc((size_t)ntasks, sizeof *env);
    char ***envs = calloc((size_t)ntasks, sizeof *envs);
    int go[2] = {-1, -1}, rep[2] = {-1, -1}, pidp[2] = {-1, -1}, cgfd = -1;
    int rc = -1, bad = !env || !envs;
    pid_t keeper = -1;
    for (int i = 0; !bad && i < ntasks; i++) {
        bad |= build_env(l, a, ctx, i, &env[i]);
        envs[i] = env[i].v;
    }
    if (bad || build_argv(l, ctx->bind, script_path, &argv)) {
        snprintf(err, errlen, "out of memory preparing the job");
        goto out;
    }
    snprintf(p->argv0, sizeof p->argv0, "%s", argv.v[0]);
    if (pipe2(go, O_CLOEXEC) != 0 || pipe2(rep, O_CLOEXEC) != 0 || pipe2(pidp, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto out;
    }
    unlink(ctx->exit_path); /* only this attempt's keeper may write it */
    /* Where the cgroup cannot be entered at birth, release moves the job. */
    if (ctx->cgroup[0]) cgfd = open(ctx->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    keeper = fork();
    if (keeper < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        goto out;
    }
    if (keeper == 0) keeper_main(l, a, ctx, argv.v, envs, go, rep, pidp, cgfd);
    close(go[0]);
    close(rep[1]);
    close(pidp[1]);
    go[0] = rep[1] = pidp[1] = -1;
    p->keeper = keeper;
    p->go_fd = go[1];
    p->rep_fd = rep[0];
    p->pid_fd = pidp[0];
    go[1] = rep[0] = pidp[0] = -1;
    rc = 0;
out:
    if (cgfd >= 0) close(cgfd);
    for (int i = 0; i < 2; i++) {
        if (go[i] >= 0) close(go[i]);
        if (rep[i] >= 0) close(rep[i]);
        if (pidp[i] >= 0) close(pidp[i]);
    }
    sv_free(&argv);
    for (int i = 0; env && i < ntasks; i++) sv_free(&env[i]);
    free(env);
    free(envs);
    return rc;
}

int agent_spawn_pid(struct agent_proc *p, const char *exit_path, char *err, size_t errlen)
{
    struct keeper_report kr;
    ssize_t n;
    do n = read(p->pid_fd, &kr, sizeof kr); while (n < 0 && errno == EINTR);
    close(p->pid_fd);
    p->pid_fd = -1;
    if (n != (ssize_t)sizeof kr || kr.job <= 0) {
        snprintf(err, errlen, "the job's keeper could not fork the job");
        agent_spawn_abort(p, exit_path);
        return -1;
    }
    p->pid = kr.job;
    p->in_cgroup = kr.in_cgroup != 0;
    return 0;
}

int agent_spawn_release(struct agent_proc *p, const char *cgroup, char *err, size_t errlen)
{
    /* Contain first, then let the job run: nothing it starts escapes the cgroup. */
    if (cgroup[0] && !p->in_cgroup && join_cgroup(cgroup, p->pid, err, errlen) != 0) return -1;
    if (write(p->go_fd, "g", 1) != 1) {
        snprintf(err, errlen, "cannot release the job's process: %s", strerror(errno));
        return -1;
    }
    close(p->go_fd);
    p->go_fd = -1;
    return 0;
}

int agent_spawn_wait(struct agent_proc *p, const struct agent_launch *l,
                     const struct agent_account *a, const char *exit_path, char *err,
                     size_t errlen)
{
    struct child_report r;
    ssize_t n;
    do n = read(p->rep_fd, &r, sizeof r); while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof r) {
        describe(&r, l, a, p->argv0, err, errlen);
        agent_spawn_abort(p, exit_path);
        return -1;
    }
    close(p->rep_fd);
    p->rep_fd = -1;
    return 0;
}

void agent_spawn_abort(struct agent_proc *p, const char *exit_path)
{
    /* Without the go byte the job exits by itself (and its keeper follows
     * it); a released one that failed exits after its report. Either way
     * nothing of it may outlive this call. */
    if (p->go_fd >= 0) close(p->go_fd);
    if (p->rep_fd >= 0) close(p->rep_fd);
    if (p->pid_fd >= 0) close(p->pid_fd);
    p->go_fd = p->rep_fd = p->pid_fd = -1;
    if (p->pid > 0) {
        kill(-p->pid, SIGKILL); /* tasks already started are in its process group */
        kill(p->pid, SIGKILL);
    }
    if (p->keeper > 0)
        while (waitpid(p->keeper, NULL, 0) < 0 && errno == EINTR) {}
    unlink(exit_path);
    p->pid = p->keeper = 0;
}
