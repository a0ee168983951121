/* agent_internal.h: the pieces behind the runner (agent.h), shared by the
 * agent's own files and its tests; not a public contract.
 *
 *  jobstore.c  one durable record per job instance (STATE/jobs/<id>-<attempt>.json)
 *  spawn.c     fork/exec of a job under its Unix account, via its keeper
 *  contain.c   finding and ending a job's whole process tree
 *  procinfo.c  /proc readers (start time, state, parent, environment)
 */
#ifndef AGENT_INTERNAL_H
#define AGENT_INTERNAL_H

#include "agent.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* A job's life on this node. Every transition is written to its record
 * before the agent acts on it, so a restart can tell what happened. */
enum agent_phase {
    AJ_LAUNCHING, /* being set up; not forked, or forked but not recorded */
    AJ_RUNNING,   /* main process forked and recorded (released once exec'd) */
    AJ_DRAINING,  /* main process gone; killing what is left of its tree */
    AJ_ENDED,     /* tree gone; the ended event is final */
};

struct agent_job {
    int64_t id;
    int attempt;                  /* (id, attempt) is the job instance */
    enum agent_phase phase;
    pid_t pid;                    /* main process; also its pgid and sid */
    unsigned long long proc_start; /* /proc/PID/stat starttime: guards pid reuse */
    pid_t keeper;                 /* waits for pid and writes its status (spawn.c) */
    unsigned long long keeper_start;
    int64_t start_ms;             /* wall clock when forked */
    int64_t time_limit_s;         /* <= 0: none */
    char unix_user[64];
    char cgroup[PATH_MAX];        /* job cgroup dir, "" when not used */
    char script[PATH_MAX];        /* script file to remove at the end, "" if none */
    bool released;                /* the go byte was sent: the job may have run */
    bool timed_out, cancelled;
    char kill_reason[32];
    /* ended event */
    int exit_code, signal;
    char error[512];
    int64_t ended_ms;
    /* delivery: events the scheduler has not acknowledged yet */
    bool started_pending, ended_pending;
    /* in memory only */
    bool adopted;                 /* re-attached after a restart: not our child */
    int64_t term_ms;              /* when SIGTERM was sent, 0 if not */
    int64_t drain_ms;             /* when draining began */
    struct agent_job *next;
};

/* ---- jobstore.c ---- */
/* Writes the job's record atomically (temp + fsync + rename). */
int agent_store_save(const char *state_dir, const struct agent_job *j, char *err, size_t errlen);
/* Removes a record (pruning of old tombstones). */
void agent_store_remove(const char *state_dir, int64_t id, int attempt);
/* Hands every record of STATE/jobs to take (which owns it; order
 * unspecified; a nonzero return stops the load with an out-of-memory error).
 * A record that cannot be parsed is renamed to <name>.bad and logged. */
int agent_store_load(const char *state_dir, int (*take)(void *, struct agent_job *), void *arg,
                     char *err, size_t errlen);
/* Reads the record of one job instance into *j. */
int agent_store_load_one(const char *state_dir, int64_t id, int attempt, struct agent_job *j,
                         char *err, size_t errlen);
const char *agent_phase_name(enum agent_phase p);

/* ---- spawn.c ---- */
/* What is needed to start one job, parsed from a LAUNCH object. */
struct agent_launch {
    int64_t id;
    int attempt;
    const char *unix_user, *workdir, *stdout_path, *stderr_path, *script, *name;
    const char *submit_dir, *nodelist;
    json_t *command;   /* array of strings or NULL */
    json_t *env;       /* object of strings or NULL */
    int64_t time_limit_s, cpus, mem_mb, gpus, tasks, array_task_id;
    char default_out[PATH_MAX]; /* WORKDIR/commons-<id>.out when stdout is not given */
};
/* Checks the fields of a LAUNCH object; borrowed pointers into launch (and
 * into *out itself for the default stdout: do not copy the struct). */
int agent_launch_parse(json_t *launch, struct agent_launch *out, char *err, size_t errlen);

/* The Unix account a job runs as, resolved in the parent (NSS is not safe
 * after fork in a process with threads). */
struct agent_account {
    uid_t uid;
    gid_t gid;
    bool switch_user;  /* agent is root: setgroups/setgid/setuid in the child */
    int ngroups;
    gid_t groups[256];
    char name[64], home[PATH_MAX], shell[PATH_MAX];
};
/* Applies the account rules of docs/agent.md (root agent: any account, uid
 * 0 only for the literal "root"; other agent: only its own account). */
int agent_account_resolve(const char *unix_user, struct agent_account *a, char *err,
                          size_t errlen);

struct agent_spawn_ctx {
    const char *node;
    const char *state_dir;
    const char *cgroup;      /* job cgroup to join, or "" */
    const char *exit_path;   /* where the keeper writes the job's wait status */
};
/* Starts a job: the agent forks a keeper, the keeper forks the job's main
 * process (a new session, the job's cgroup) and waits for it, then writes
 * its wait status to exit_path. The keeper stays outside the job's session
 * and cgroup and ignores terminal signals, so the status survives a restart
 * of the agent. Between fork and exec the job waits until the parent has
 * recorded it (on_forked returns 0); a job that never hears from the agent
 * exits without running anything. Returns 0 with *keeper and *pid set when
 * exec succeeded, or -1 with err describing the failure (the keeper has
 * then been reaped). */
typedef int (*agent_forked_fn)(void *arg, pid_t keeper, pid_t pid);
int agent_spawn(const struct agent_launch *l, const struct agent_account *a,
                const struct agent_spawn_ctx *ctx, const char *script_path,
                agent_forked_fn on_forked, void *arg, pid_t *keeper, pid_t *pid, char *err,
                size_t errlen);
/* Reads the wait status a keeper wrote; 0, or -1 when there is none.
 * AGENT_EXIT_UNRELEASED: the agent never released the job, which ran nothing. */
#define AGENT_EXIT_UNRELEASED (-1)
int agent_exit_read(const char *path, int *status);
/* Writes a job script to path (0700, owned by the account). */
int agent_script_write(const char *path, const char *text, const struct agent_account *a,
                       char *err, size_t errlen);

/* ---- contain.c ---- */
struct agent_contain {
    enum agent_containment kind;  /* CGROUP or SUBREAPER once chosen */
    char base[PATH_MAX];          /* cgroup folder holding job-<id> folders */
    char node[128];
};
/* Picks the containment (AUTO tries the cgroup first). instance tells this
 * agent's cgroup folder apart from other agents' of the same node name. */
int agent_contain_init(struct agent_contain *c, enum agent_containment want, const char *node,
                       const char *instance, const char *cgroup_base, char *err, size_t errlen);
/* Whether cgroup v2 with cgroup.kill is usable here for `node`. */
bool agent_contain_cgroup_available(const char *node);
/* Creates the job instance's cgroup (cgroup mode); fills path. */
int agent_contain_job_create(struct agent_contain *c, int64_t id, int attempt, char *path,
                             size_t len, char *err, size_t errlen);
/* Sends sig to the whole tree of job j (SIGKILL: also cgroup.kill). */
void agent_contain_signal(struct agent_contain *c, const struct agent_job *j, int sig);
/* Whether any process of job j's tree is still alive. */
bool agent_contain_alive(struct agent_contain *c, const struct agent_job *j);
/* Removes the job's cgroup once empty. */
void agent_contain_cleanup(struct agent_contain *c, const struct agent_job *j);
/* Subreaper mode: kills children of this process that belong to no running
 * job (orphans re-parented to the agent). is_running(id, attempt) says if a
 * job instance is running; pid_is_main(pid) if pid is a job's main process. */
void agent_contain_sweep_orphans(struct agent_contain *c,
                                 bool (*is_running)(void *, int64_t, int),
                                 bool (*pid_is_main)(void *, pid_t), void *arg);

/* ---- rpcworker.c ---- */
/* The loop's calls to commonsd run on a worker thread (see rpcworker.c). */
struct agent_rpcw;
int agent_rpcw_start(const char *addr, struct agent_rpcw **out, char *err, size_t errlen);
/* Readable when the call submitted last has finished. */
int agent_rpcw_fd(const struct agent_rpcw *w);
/* Starts one call (one at a time); takes ownership of req. */
void agent_rpcw_submit(struct agent_rpcw *w, json_t *req, int timeout_ms);
/* 1 while the call is still running; else cm_rpc_call's result (0 with
 * *reply, or -1 with err). */
int agent_rpcw_result(struct agent_rpcw *w, json_t **reply, char *err, size_t errlen);
/* Waits for a call in flight (bounded by its timeout), then frees all. */
void agent_rpcw_stop(struct agent_rpcw *w);

/* ---- procinfo.c ---- */
struct agent_procstat {
    char state;                  /* R, S, D, Z, ... */
    pid_t ppid, pgrp;
    unsigned long long starttime;
};
/* Reads /proc/PID/stat; -1 if the process does not exist. */
int agent_proc_stat(pid_t pid, struct agent_procstat *st);
/* Whether pid is alive (not a zombie) and started at starttime. */
bool agent_proc_same(pid_t pid, unsigned long long starttime);
/* The job instance named by COMMONS_JOB_ID and COMMONS_JOB_ATTEMPT (0 when
 * absent) in pid's initial environment, if it also has COMMONS_NODE ==
 * node; returns the id, or -1 when absent or unreadable. */
int64_t agent_proc_job_id(pid_t pid, const char *node, int *attempt);
/* Calls fn for each numeric entry of /proc; stops when fn returns nonzero. */
void agent_proc_each(int (*fn)(void *, pid_t), void *arg);

#endif
