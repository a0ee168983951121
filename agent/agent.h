/* agent.h: the contract of commons-agent (agent/), the node agent.
 *
 * Two layers:
 *  - the runner (agent_runner_*): starts, watches, limits and kills jobs on
 *    this node and keeps a durable record of each one in the state dir, so a
 *    restarted agent re-attaches to the jobs that are still alive and never
 *    starts a job id twice. It knows nothing about the network; it turns
 *    launch/kill commands (docs/protocol.md, "Agents") into job events.
 *  - the loop (agent_loop_run): talks to commonsd (register, long-poll,
 *    events) and drives the runner. See docs/agent.md.
 *
 * The runner is single-threaded: call it from one thread only. It makes the
 * process a child subreaper (PR_SET_CHILD_SUBREAPER) and reaps children with
 * waitpid(-1, WNOHANG) in agent_runner_tick, so the process that owns a
 * runner must not reap children itself.
 */
#ifndef AGENT_H
#define AGENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* How a job's whole process tree is found and ended. */
enum agent_containment {
    AGENT_CONTAIN_AUTO,      /* cgroup when the system offers it, else subreaper */
    AGENT_CONTAIN_CGROUP,    /* a cgroup v2 subtree per job, ended with cgroup.kill */
    AGENT_CONTAIN_SUBREAPER, /* process group + subreaper + COMMONS_JOB_ID sweep */
};

struct agent_topology; /* agent_internal.h: the node as hwloc describes it */

struct agent_runner_opts {
    const char *state_dir;   /* created (0711) when missing; holds jobs/ and scripts/ */
    const char *node;        /* node name: COMMONS_NODE and the cgroup folder name */
    int kill_grace_ms;       /* SIGTERM -> SIGKILL delay; <= 0 means 10000 */
    enum agent_containment containment;
    const char *cgroup_base; /* NULL: <cgroup2 mount><own cgroup>/commons-<node>-<hash of
                                state_dir> */
    int lock_wait_ms;        /* how long to wait for the state dir's lock */
    /* Placement (docs/agent.md, "Placement"); NULL: launches are not placed. */
    const struct agent_topology *topology;
    const char *server;      /* commonsd's address, given to jobs as COMMONS_ADDR; NULL: none */
    const char *rsh_agent;   /* commons-rsh for mpirun (NULL: "commons-rsh" from PATH) */
};

typedef struct agent_runner agent_runner;

/* Opens the state dir (taking an exclusive lock on STATE/agent.lock so two
 * agents never share it), recovers the recorded jobs and picks the
 * containment. Returns 0, or -1 with err filled. */
int agent_runner_open(const struct agent_runner_opts *o, agent_runner **out, char *err,
                      size_t errlen);
/* Frees the runner. Running jobs are left running (a later open re-attaches). */
void agent_runner_close(agent_runner *r);

/* "cgroup" or "subreaper": what this runner uses to end process trees. */
const char *agent_runner_containment(const agent_runner *r);
/* "cgroup" (memory.max, cpu.max) or "rlimit" (RLIMIT_AS): how limits are enforced. */
const char *agent_runner_limits(const agent_runner *r);

/* Handles one LAUNCH object (protocol "launch" command). A job instance is
 * the pair (id, attempt) ("attempt" defaults to 0); an instance seen before
 * is never started again: its current status is re-reported. A bad launch
 * that carries an id ends that instance with an error event. Returns 0 when
 * handled, -1 (err filled) only when there is no usable "id" or "attempt". */
int agent_runner_launch(agent_runner *r, json_t *launch, char *err, size_t errlen);
/* Handles an array of LAUNCH objects (one reply's launches) as batches: the
 * processes of a batch are forked first, their records are made durable by
 * one group commit, and then all are released (docs/agent.md, "Durability
 * and restarts"). Each launch behaves as with agent_runner_launch; one
 * without a usable id or attempt is logged and skipped. Returns the number
 * skipped, or -1 when no memory was left for the batch (logged; commonsd
 * sends launches again until they are acknowledged). */
int agent_runner_launch_batch(agent_runner *r, json_t *launches);

/* Handles a "spawn" command (protocol "Spawning on the job's other nodes"):
 * runs argv like a job of the same instance, keyed (id, attempt, spawn_id),
 * reported with spawn_started / spawn_ended events. Returns as launch. */
int agent_runner_spawn(agent_runner *r, json_t *cmd, char *err, size_t errlen);
/* Handles "kill_spawns": ends every live spawn of the instance here. */
void agent_runner_kill_spawns(agent_runner *r, int64_t id, int attempt);

/* Handles a "kill" command: SIGTERM to the instance's tree, SIGKILL after
 * the grace; it ends with cancelled = true. reason is "cancel", "node_fail"
 * or "not_yours". attempt < 0 means every unfinished attempt of id. An
 * unknown instance is recorded as ended (so a late launch of it is never
 * started) and its ended event is owed. Returns 0, or -1 if a record cannot
 * be written. */
int agent_runner_kill(agent_runner *r, int64_t id, int attempt, const char *reason);
/* A kill that names no attempt, for launches not started yet (the agent's
 * backlog): each launch of id in `launches` is recorded as killed before it
 * was launched (as agent_runner_kill with its attempt) and removed from the
 * array. Launches with an unusable attempt stay (starting them reports the
 * error). Returns how many were removed. */
size_t agent_runner_kill_waiting(agent_runner *r, json_t *launches, int64_t id,
                                 const char *reason);

/* Reaps children, enforces time limits and kill graces, finishes draining
 * process trees, re-checks re-attached jobs. Returns the number of ms until
 * it next needs to run (at most 1000). */
int agent_runner_tick(agent_runner *r);

/* How many instances have not ended yet (running or draining). */
int agent_runner_active(agent_runner *r);

/* New reference: JSON array of [id, attempt] pairs: every instance running
 * here, or started here with its ended event not yet acknowledged. */
json_t *agent_runner_running(agent_runner *r);
/* New reference: JSON array of the events not yet acknowledged, by id
 * ({"id", "attempt", "event": "started", "pid"} / {..., "event": "ended",
 * "exit_code", "signal", "timed_out", "cancelled", "error"?}). */
json_t *agent_runner_events(agent_runner *r);
/* Marks the events of `sent` (as returned by agent_runner_events) whose id
 * is in `acked` (array of ids) as delivered. */
void agent_runner_ack(agent_runner *r, json_t *sent, json_t *acked);

/* What the runner knows about one job, for tests and logs. */
enum agent_job_phase { AGENT_JOB_UNKNOWN, AGENT_JOB_RUNNING, AGENT_JOB_ENDED };
struct agent_job_status {
    enum agent_job_phase phase;
    pid_t pid;               /* the job's main process */
    pid_t keeper;            /* the process that waits for it (docs/agent.md) */
    int exit_code;           /* exit status; 128+signal when killed; -1 when unknown */
    int signal;              /* terminating signal or 0 */
    bool timed_out, cancelled;
    char error[512];         /* empty when none */
};
void agent_runner_status(agent_runner *r, int64_t id, int attempt, struct agent_job_status *st);

/* The agent daemon's configuration (commons-agent's options). */
struct agent_config {
    const char *server;      /* tcp://host:port of commonsd */
    const char *name;        /* node name */
    const char *key_file;    /* cluster key (hex text) */
    const char *state_dir;
    int cpus;                /* <= 0: detected */
    int64_t memory_mb;       /* <= 0: detected */
    int gpus;
    int kill_grace_ms;
    enum agent_containment containment;
    const char *topology_xml; /* --topology FILE.xml, or NULL: this machine */
    const char *hostname;     /* --hostname: how others reach this node (services), or NULL: gethostname */
};

/* Node resources from the OS: online CPUs and MemTotal in MB. */
int agent_detect_cpus(void);
int64_t agent_detect_memory_mb(void);

/* Runs the agent until SIGTERM/SIGINT; returns the process exit status. */
int agent_loop_run(const struct agent_config *cfg);
/* Ends every job of the state dir (SIGTERM, SIGKILL after the grace) without
 * talking to commonsd; their ended events (cancelled, reason node_fail) are
 * sent by the next agent that runs on the state dir. Returns the exit status. */
int agent_kill_jobs(const struct agent_config *cfg);

#endif
