/* agent_internal.h: the pieces behind the runner (agent.h), shared by the
 * agent's own files and its tests; not a public contract.
 *
 *  jobstore.c  one durable record per job instance (STATE/jobs/<id>-<attempt>.json);
 *              the instance names of its files and cgroup folders
 *  spawn.c     fork/exec of a job under its Unix account, via its keeper
 *  contain.c   finding and ending a job's whole process tree
 *  procinfo.c  /proc readers (start time, state, parent, environment)
 */
#ifndef AGENT_INTERNAL_H
#define AGENT_INTERNAL_H

#include "agent.h"

#include <limits.h>
#include <sched.h>
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
    int64_t spawn_id;             /* 0: the job itself; > 0: a spawn of it (job.spawn) */
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
    bool on_disk;                 /* a record of it exists (was written or loaded) */
    bool sync_due;                /* its record must be made durable by the runner's commit */
    bool exit_file_due;           /* ended: remove its exit file once ENDED is written */
    bool status_from_file;        /* the exit status came from the keeper's exit file */
    bool record_lost;             /* rebuilt from the name of an unreadable record file */
    int64_t write_due_ms;         /* monotonic: write the record (no fsync) then; 0: nothing due */
    json_t *binding;              /* the placement applied or recorded (sent with started), or NULL */
    int64_t term_ms;              /* when SIGTERM was sent, 0 if not */
    int64_t drain_ms;             /* when draining began */
    struct agent_job *next;
};

/* ---- topology.c ---- */
#define AGENT_MAX_PUS 1024   /* PU os indices 0..1023 (a cpu_set_t) */
#define AGENT_MAX_NUMA 64
#define AGENT_MAX_GPUS 64
/* The node as hwloc describes it, copied out of hwloc (usable after fork). */
struct agent_topology {
    char source[PATH_MAX + 8];     /* "hwloc" or "xml:PATH" */
    bool applied;                  /* this machine: bindings are applied, else recorded */
    int packages, cores, npus, nnuma, ngpus;
    int pu_numa[AGENT_MAX_PUS];    /* NUMA os index of each PU; -2: no such PU; -1: none */
    int numa_id[AGENT_MAX_NUMA];
    int64_t numa_mb[AGENT_MAX_NUMA];
    int64_t memory_mb;
    int gpu_numa[AGENT_MAX_GPUS];  /* by GPU index (PCI bus order) */
    char gpu_name[AGENT_MAX_GPUS][128];
    char gpu_pci[AGENT_MAX_GPUS][16];
};
/* Loads this machine's topology (xml NULL) or an hwloc XML file. */
int agent_topology_load(const char *xml, struct agent_topology *t, char *err, size_t errlen);
/* The `topology` object of agent.register; limits is "cgroup" or "rlimit". */
json_t *agent_topology_report(const struct agent_topology *t, const char *limits);
bool agent_topology_has_pu(const struct agent_topology *t, int pu);

/* ---- jobstore.c ---- */
/* Writes the job's record atomically (temp + fsync + rename). */
int agent_store_save(const char *state_dir, const struct agent_job *j, char *err, size_t errlen);
/* Writes the job's record atomically but without fsync (temp + rename): for
 * changes a restarted agent rebuilds, or whose loss only repeats an event
 * (runner.c says which). */
int agent_store_write(const char *state_dir, const struct agent_job *j, char *err,
                      size_t errlen);
/* Group commit: writes the records of n instances and makes them durable
 * together. Each is written to a temp file; the temp files are fsynced
 * concurrently (the disk, or a journaling filesystem's commit, takes them
 * together: n records cost a few times what one does), renamed into place, and the jobs
 * folder is fsynced once so that the renames are durable too. rcs[i] is
 * 0 when record i is durable, else -1. Returns the number of failures,
 * err describing the first. */
int agent_store_save_many(const char *state_dir, struct agent_job *const *jobs, size_t n,
                          int *rcs, char *err, size_t errlen);
/* Writes all of text to fd; 0, or -1 with errno set. */
int agent_write_all(int fd, const char *text);
/* Removes a record (pruning of old tombstones). */
void agent_store_remove(const char *state_dir, int64_t id, int attempt, int64_t spawn_id);
/* Hands every record of STATE/jobs to take (which owns it; order
 * unspecified; a nonzero return stops the load with an out-of-memory error).
 * A record that cannot be parsed (a write without fsync cut by a power
 * loss) is renamed to <name>.bad, logged, and handed over rebuilt from its
 * file name: phase running, released, no pids, record_lost set; the
 * instance stays known (runner.c ends it, "record lost"). */
int agent_store_load(const char *state_dir, int (*take)(void *, struct agent_job *), void *arg,
                     char *err, size_t errlen);
/* Reads the record of one job instance into *j. */
int agent_store_load_one(const char *state_dir, int64_t id, int attempt, int64_t spawn_id,
                         struct agent_job *j, char *err, size_t errlen);
const char *agent_phase_name(enum agent_phase p);
/* Writes "<id>-<attempt>" (a job) or "<id>-<attempt>-s<spawn_id>" (a spawn of
 * it), the part of its file and cgroup names that tells an instance apart. */
#define AGENT_INSTANCE_NAME_MAX 64
void agent_instance_name(int64_t id, int attempt, int64_t spawn_id,
                         char out[AGENT_INSTANCE_NAME_MAX]);
/* Parses "<prefix><id>-<attempt>[-s<spawn_id>]<suffix>" (decimal digits, no
 * sign; spawn_id > 0, 0 when absent), the name of an instance's record
 * ("", ".json"), exit file ("", ".exit"), script ("", ".sh") or cgroup
 * folder (AGENT_CGROUP_PREFIX, ""); false for any other name. */
bool agent_instance_name_parse(const char *name, const char *prefix, const char *suffix,
                               int64_t *id, int *attempt, int64_t *spawn_id);

/* ---- spawn.c ---- */
/* What is needed to start one job, parsed from a LAUNCH object. */
struct agent_launch {
    int64_t id;
    int attempt;
    const char *unix_user, *workdir, *stdout_path, *stderr_path, *script, *name;
    const char *submit_dir, *nodelist;
    json_t *command;   /* array of strings or NULL ("argv" of a spawn) */
    json_t *env;       /* object of strings or NULL */
    int64_t time_limit_s, cpus, mem_mb, gpus, tasks, array_task_id;
    char default_out[PATH_MAX]; /* WORKDIR/commons-<id>.out when stdout is not given */
    /* placement (protocol "Topology, placement and multi-node jobs"); n* = 0 when absent */
    int cpu_list[AGENT_MAX_PUS], ncpu;
    int gpu_list[AGENT_MAX_GPUS], ngpu;
    int numa[AGENT_MAX_NUMA], nnuma;
    json_t *alloc;     /* [{"node", "cpu_list", "gpu_list"}] or NULL */
    int64_t tasks_per_node, cpus_per_task;
    bool mpi;
    const char *step_key;
    int64_t spawn_id;  /* > 0 for a spawn command */
};
/* Checks the fields of a LAUNCH object; borrowed pointers into launch (and
 * into *out itself for the default stdout: do not copy the struct). */
int agent_launch_parse(json_t *launch, struct agent_launch *out, char *err, size_t errlen);
/* The instance a LAUNCH object names, checked as agent_launch_parse checks it:
 * 0 with *id and *attempt (0 when absent), or -1 with err. */
int agent_launch_instance(json_t *launch, int64_t *id, int *attempt, char *err, size_t errlen);
/* The same for a "spawn" command ({"op": "spawn", "id", "attempt", "spawn_id", "argv", ...}):
 * argv becomes command; output goes to /dev/null. */
int agent_spawn_cmd_parse(json_t *cmd, struct agent_launch *out, char *err, size_t errlen);

/* ---- bind.c ---- */
#define AGENT_MAX_TASKS 256
/* How one job instance's processes are placed on this node, computed in
 * the parent before fork. */
struct agent_bind {
    bool apply;                 /* set affinity/memory policy (this machine's topology) */
    int ntasks;                 /* processes to start here (>= 1) */
    cpu_set_t *task_cpus;       /* ntasks sets (NULL: unbound) */
    unsigned long nodemask[AGENT_MAX_NUMA / (8 * sizeof(unsigned long))];
    bool membind;               /* nodemask is set */
    int64_t mem_limit_mb;       /* RLIMIT_AS in MB when the cgroup cannot limit; 0: none */
    json_t *report;             /* the "binding" object of the started event */
    char **argv_override;       /* mpirun command line for the first node of an mpi job */
    char mpi_dir[PATH_MAX];     /* where the hostfile/rankfile live ("" if none) */
};
/* Checks the launch's placement against the topology (t may be NULL: no
 * topology, no placement) and fills b; for an mpi job on its first node it
 * also writes the hostfile and rankfile under dir and the mpirun argv
 * (rsh_agent: the commons-rsh path). Returns 0, or -1 with err naming the field. */
struct agent_bind_ctx {
    const struct agent_topology *topo; /* NULL: no topology, nothing is placed */
    const char *node;       /* this node's name */
    const char *mpi_dir;    /* where an mpi job's hostfile/rankfile go (created) */
    const char *rsh_agent;  /* commons-rsh, Open MPI's plm_rsh_agent */
    bool rlimit;            /* memory is limited with RLIMIT_AS, not the cgroup */
    bool as_root;           /* the job runs as root (mpirun needs --allow-run-as-root) */
    uid_t uid;              /* owner of the mpi files */
    gid_t gid;
};
int agent_bind_plan(const struct agent_launch *l, const struct agent_bind_ctx *c,
                    struct agent_bind *b, char *err, size_t errlen);
void agent_bind_free(struct agent_bind *b);
/* Task i's slice of the node's cpu_list as "0,1,2" (empty when unbound). */
void agent_bind_task_list(const struct agent_bind *b, int task, char *out, size_t len);
/* Index of node in the launch's alloc, or 0 when absent. */
int agent_bind_node_index(const struct agent_launch *l, const char *node);

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
    const struct agent_bind *bind; /* placement; NULL: one unbound process */
    const char *server;      /* commonsd's address for COMMONS_ADDR, or NULL */
};
/* Starting a job: the agent forks a keeper, the keeper forks the job's main
 * process (a new session, the job's cgroup) and waits for it, then writes
 * its wait status to exit_path. The keeper stays outside the job's session
 * and cgroup and ignores terminal signals, so the status survives a restart
 * of the agent. Between fork and exec the job waits until the agent has
 * recorded it and releases it; a job that never hears from the agent exits
 * without running anything. In steps, so that a batch of jobs is forked
 * first, their records are made durable together, and then all are
 * released (runner.c):
 *  agent_spawn_fork     forks the keeper, which forks the job (in its cgroup
 *                       where the kernel can), which waits for its release;
 *  agent_spawn_pid      waits for the keeper to say the job's pid (0, or -1 with
 *                       err after an abort): separate, so that the keepers of
 *                       a batch fork while the agent forks the next keeper;
 *  agent_spawn_release  moves the job into its cgroup (cgroup "": none) unless
 *                       it was born there, and releases it;
 *  agent_spawn_wait     waits until the released job exec'd (0), or reports why it
 *                       could not (-1 with err; the job and its keeper are gone then);
 *  agent_spawn_abort    ends a job that is not to run (never released, or failed):
 *                       kills it, reaps its keeper and removes exit_path.
 * fork and release return 0, or -1 with err (after a failed release, call abort). */
struct agent_proc {
    pid_t keeper, pid;
    int go_fd;             /* one byte written here releases the job */
    int rep_fd;            /* end of file once every task exec'd, else a failure report */
    int pid_fd;            /* the keeper's report of the job's pid */
    bool in_cgroup;        /* the job was created in its cgroup */
    char argv0[PATH_MAX];  /* what is executed, for messages */
};
int agent_spawn_fork(const struct agent_launch *l, const struct agent_account *a,
                     const struct agent_spawn_ctx *ctx, const char *script_path,
                     struct agent_proc *p, char *err, size_t errlen);
int agent_spawn_pid(struct agent_proc *p, const char *exit_path, char *err, size_t errlen);
int agent_spawn_release(struct agent_proc *p, const char *cgroup, char *err, size_t errlen);
int agent_spawn_wait(struct agent_proc *p, const struct agent_launch *l,
                     const struct agent_account *a, const char *exit_path, char *err,
                     size_t errlen);
void agent_spawn_abort(struct agent_proc *p, const char *exit_path);
/* A keeper is named AGENT_KEEPER_WAITING until it has passed the go byte to
 * its job, then AGENT_KEEPER_RELEASED; AGENT_KEEPER_UNRELEASED once it knows
 * the job will never be released (the agent went away first), before it
 * kills the job and writes its exit file. A restarted agent reads the name
 * to tell a released job from one whose agent died before releasing it
 * (names are at most 15 characters: the kernel's comm). */
#define AGENT_KEEPER_WAITING "commons-waiting"
#define AGENT_KEEPER_RELEASED "commons-keeper"
#define AGENT_KEEPER_UNRELEASED "commons-unrel"
/* Reads the wait status a keeper wrote; 0, or -1 when there is none.
 * AGENT_EXIT_UNRELEASED: the agent never released the job, which ran nothing. */
#define AGENT_EXIT_UNRELEASED (-1)
int agent_exit_read(const char *path, int *status);
/* Writes a job script to path (0700, owned by the account). */
int agent_script_write(const char *path, const char *text, const struct agent_account *a,
                       char *err, size_t errlen);

/* ---- contain.c ---- */
#define AGENT_SUSPECTS_MAX 64
/* A process as agent_proc_same tells it apart from a later one of the same pid. */
struct agent_pid_start {
    pid_t pid;
    unsigned long long start;
};
struct agent_contain {
    enum agent_containment kind;  /* CGROUP or SUBREAPER once chosen */
    char base[PATH_MAX];          /* cgroup folder holding job-<id> folders */
    char node[128];
    bool limits;                  /* memory (and cpu, cpuset when there) controllers enabled */
    bool cpu_ctl, cpuset_ctl;
    /* Subreaper mode: orphans whose job could not be read at the last sweep (killed
     * only if still so at the next: see agent_contain_sweep_orphans) */
    struct agent_pid_start suspects[AGENT_SUSPECTS_MAX];
    int nsuspects;
};
/* Picks the containment (AUTO tries the cgroup first). instance tells this
 * agent's cgroup folder apart from other agents' of the same node name. */
int agent_contain_init(struct agent_contain *c, enum agent_containment want, const char *node,
                       const char *instance, const char *cgroup_base, char *err, size_t errlen);
/* Whether cgroup v2 with cgroup.kill is usable here for `node`. */
bool agent_contain_cgroup_available(const char *node);
/* The path of a job instance's cgroup (cgroup mode; "" otherwise):
 * base/AGENT_CGROUP_PREFIX<instance name>; 0, or -1 when it does not fit in len. */
#define AGENT_CGROUP_PREFIX "job-"
int agent_contain_job_path(const struct agent_contain *c, int64_t id, int attempt,
                           int64_t spawn_id, char *path, size_t len);
/* Creates the job instance's cgroup (cgroup mode; spawn_id > 0 for a spawn),
 * with memory.max = mem_mb (0: none), cpu.max for cpus and cpuset.cpus =
 * cpus_list when the controllers are enabled (c->limits); fills path. */
int agent_contain_job_create(struct agent_contain *c, int64_t id, int attempt, int64_t spawn_id,
                             int64_t mem_mb, int ncpus, const char *cpus_list, char *path,
                             size_t len, char *err, size_t errlen);
/* Sends sig to the whole tree of job j (SIGKILL: also cgroup.kill). */
void agent_contain_signal(struct agent_contain *c, const struct agent_job *j, int sig);
/* Whether any process of job j's tree is still alive. */
bool agent_contain_alive(struct agent_contain *c, const struct agent_job *j);
/* Removes the job's cgroup once empty. */
void agent_contain_cleanup(struct agent_contain *c, const struct agent_job *j);
/* Subreaper mode: kills children of this process that belong to no running
 * job (orphans re-parented to the agent). is_running(id, attempt) says if a
 * job instance is running; pid_is_main(pid) if pid is a job's main process.
 * One whose environment names no job (unreadable for a moment during an exec)
 * is killed only when two consecutive sweeps find it so. */
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
    char comm[16];               /* the process's name (prctl PR_SET_NAME, or the program's) */
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
 * node; returns the id, or -1 when absent or unreadable. *spawn_id is its
 * COMMONS_SPAWN_ID (0: the job itself, not one of its spawns). */
int64_t agent_proc_job_id(pid_t pid, const char *node, int *attempt, int64_t *spawn_id);
/* Calls fn for each numeric entry of /proc; stops when fn returns nonzero. */
void agent_proc_each(int (*fn)(void *, pid_t), void *arg);

#endif
