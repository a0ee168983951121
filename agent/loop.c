/* loop.c: commons-agent's conversation with commonsd (docs/protocol.md,
 * "Agents"): register, then a long-poll loop that starts waiting launches
 * (a backlog, LAUNCHES_PER_ROUND per round, in launch batches), sends owed
 * events, polls with the running list, and hands the commands to the runner.
 *
 * The runner is driven from this thread only; calls to commonsd run on a
 * worker thread (rpcworker.c) while this one keeps ticking the runner, so
 * jobs are supervised even while a poll is held or commonsd is silent.
 * Signals (SIGCHLD, SIGTERM, SIGINT, SIGHUP) are blocked in every thread
 * (the mask is set before any thread starts) and read from a signalfd, so
 * reaping is never racy; the runner reaps with waitpid(WNOHANG) per tick. When commonsd is unreachable the agent
 * keeps supervising its jobs and retries with a capped backoff, logging the
 * outage once and the recovery once. SIGTERM stops polling and exits,
 * leaving the jobs running: a restarted agent re-attaches to them. */
#include "agent_internal.h"
#include "cm_daemon.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define POLL_WAIT_MS 1000
#define CALL_TIMEOUT_MS 3000
#define POLL_PACE_MS 200
#define EVENT_BATCH 256
/* Launches started per round of the loop; the rest of a burst waits in the
 * backlog while the round's events and a poll (not held) go out, so a reply
 * of thousands of launches never keeps the agent silent toward commonsd
 * (which marks a node DOWN after 30 s without a message). */
#define LAUNCHES_PER_ROUND 256
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 10000

struct loop {
    const struct agent_config *cfg;
    agent_runner *r;
    struct agent_rpcw *rpc;
    char *key;
    int sfd;
    int64_t last_ts;
    bool stop, registered, down;
    int backoff_ms;
    int poll_wait_ms;
    int64_t next_poll_ms;  /* monotonic: no poll before this */
    json_t *backlog;       /* LAUNCH objects received and not yet started, in order */
    char hostname[256];
    char last_refusal[512];
    struct agent_topology *topo;
    int cpus, gpus;        /* offered: the topology's unless given on the command line */
    bool counts_only;      /* --cpus differs from the topology: no topology, no placement */
    int64_t memory_mb;
    char rsh_agent[PATH_MAX];
};

static void read_signals(struct loop *L)
{
    struct signalfd_siginfo si;
    while (read(L->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            if (!L->stop)
                cm_info("signal %d: stopping; jobs keep running and are re-attached on restart",
                        (int)si.ssi_signo);
            L->stop = true;
        } else if (si.ssi_signo == SIGHUP) {
            cm_info("SIGHUP: the agent has no configuration file to reload");
        }
        /* SIGCHLD only wakes us: the runner's tick reaps. */
    }
}

/* Supervises jobs for ms milliseconds (or until a stop signal). */
static void idle(struct loop *L, int ms)
{
    int64_t until = cm_mono_ms() + ms;
    while (!L->stop) {
        int next = agent_runner_tick(L->r);
        int64_t left = until - cm_mono_ms();
        if (left <= 0) break;
        struct pollfd p = {.fd = L->sfd, .events = POLLIN};
        poll(&p, 1, (int)(left < next ? left : next));
        read_signals(L);
    }
}

/* Sends one signed payload; 0 with *reply ({"ok": true}), 1 with *reply
 * for {"ok": false}, -1 when commonsd could not be reached. */
static int call(struct loop *L, const char *type, json_t *payload, int timeout_ms, json_t **reply)
{
    int64_t ts = cm_now_ms();
    if (ts <= L->last_ts) ts = L->last_ts + 1; /* commonsd rejects a ts that does not grow */
    L->last_ts = ts;
    json_object_set_new(payload, "type", json_string(type));
    json_object_set_new(payload, "node", json_string(L->cfg->name));
    json_object_set_new(payload, "ts", json_integer(ts));
    json_t *frame = cm_rpc_sign(L->key, payload);
    json_decref(payload);
    char err[512] = "cannot sign the message";
    *reply = NULL;
    int rc = -1;
    if (frame) {
        /* The worker makes the call; meanwhile jobs are supervised here. */
        agent_rpcw_submit(L->rpc, frame, timeout_ms);
        while ((rc = agent_rpcw_result(L->rpc, reply, err, sizeof err)) == 1) {
            int next = agent_runner_tick(L->r);
            struct pollfd p[2] = {{.fd = L->sfd, .events = POLLIN},
                                  {.fd = agent_rpcw_fd(L->rpc), .events = POLLIN}};
            poll(p, 2, next);
            read_signals(L);
        }
    }
    if (rc != 0) {
        if (!L->down)
            cm_warn("commonsd at %s unreachable (%s); retrying with backoff up to %d s",
                    L->cfg->server, err, BACKOFF_MAX_MS / 1000);
        L->down = true;
        L->registered = false; /* register again: commonsd may have restarted */
        return -1;
    }
    if (L->down) cm_info("commonsd at %s reachable again", L->cfg->server);
    L->down = false;
    return json_is_true(json_object_get(*reply, "ok")) ? 0 : 1;
}

/* Logs a refused request; a node commonsd does not know registers again. */
static void refused(struct loop *L, const char *type, json_t *reply)
{
    char buf[512];
    const char *code = cm_reply_error_code(reply);
    cm_reply_error_text(reply, buf, sizeof buf);
    /* The same refusal repeats every backoff period: say it once. */
    if (strcmp(buf, L->last_refusal) != 0) cm_warn("%s refused by commonsd: %s", type, buf);
    snprintf(L->last_refusal, sizeof L->last_refusal, "%s", buf);
    if (code && strcmp(code, "not_found") == 0) L->registered = false;
}

/* Starts up to LAUNCHES_PER_ROUND launches of the backlog. */
static void start_backlog(struct loop *L)
{
    size_t n = json_array_size(L->backlog);
    if (n == 0) return;
    if (n <= LAUNCHES_PER_ROUND) {
        agent_runner_launch_batch(L->r, L->backlog);
        json_array_clear(L->backlog);
        return;
    }
    json_t *now = json_array(), *rest = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append(i < LAUNCHES_PER_ROUND ? now : rest, json_array_get(L->backlog, i));
    json_decref(L->backlog);
    L->backlog = rest;
    agent_runner_launch_batch(L->r, now);
    json_decref(now);
}

static void run_commands(struct loop *L, json_t *cmds)
{
    size_t i;
    json_t *c;
    json_array_foreach(cmds, i, c) {
        const char *op = json_string_value(json_object_get(c, "op"));
        char err[1024];
        if (op && strcmp(op, "launch") == 0) {
            /* Launches wait in the backlog, started in batches by
             * start_backlog (one group commit per batch for their records).
             * A kill for one still waiting records the instance as ended, so
             * the launch is never started, which is the kill's intent; a
             * kill without an attempt names no instance, so it takes the
             * launches of its id out of the backlog (recorded the same way). */
            json_t *job = json_object_get(c, "job");
            json_array_append_new(L->backlog, job ? json_incref(job) : json_null());
        } else if (op && strcmp(op, "kill") == 0) {
            json_t *id = json_object_get(c, "id"), *att = json_object_get(c, "attempt");
            const char *reason = json_string_value(json_object_get(c, "reason"));
            if (!json_is_integer(id) || (att && !json_is_integer(att))) {
                cm_warn("ignoring a kill command without an integer id/attempt");
                continue;
            }
            if (!att)
                agent_runner_kill_waiting(L->r, L->backlog, json_integer_value(id),
                                          reason ? reason : "cancel");
            agent_runner_kill(L->r, json_integer_value(id),
                              att ? (int)json_integer_value(att) : -1, reason ? reason : "cancel");
        } else if (op && strcmp(op, "spawn") == 0) {
            if (agent_runner_spawn(L->r, c, err, sizeof err) != 0)
                cm_warn("ignoring a spawn command: %s", err);
        } else if (op && strcmp(op, "kill_spawns") == 0) {
            json_t *id = json_object_get(c, "id"), *att = json_object_get(c, "attempt");
            if (!json_is_integer(id) || !json_is_integer(att)) {
                cm_warn("ignoring a kill_spawns command without an integer id and attempt");
                continue;
            }
            agent_runner_kill_spawns(L->r, json_integer_value(id), (int)json_integer_value(att));
        } else {
            cm_warn("ignoring unknown command op \"%s\"", op ? op : "(none)");
        }
    }
}

static int do_register(struct loop *L)
{
    json_t *p = json_pack("{si sI si ss so ss}", "cpus", L->cpus, "memory_mb",
                          (json_int_t)L->memory_mb, "gpus", L->gpus, "hostname",
                          L->hostname, "running", agent_runner_running(L->r), "containment",
                          agent_runner_containment(L->r));
    if (!L->counts_only)
        json_object_set_new(p, "topology",
                            agent_topology_report(L->topo, agent_runner_limits(L->r)));
    json_t *reply;
    int rc = call(L, "agent.register", p, CALL_TIMEOUT_MS, &reply);
    if (rc == 0) {
        json_int_t hb = json_integer_value(json_object_get(reply, "heartbeat_ms"));
        /* Poll at least twice per heartbeat period so the node never looks silent. */
        L->poll_wait_ms = hb > 0 && hb / 2 < POLL_WAIT_MS ? (int)(hb / 2) : POLL_WAIT_MS;
        cm_info("registered as %s with %s: %d CPUs, %lld MB, %d GPUs, containment %s, "
                "limits %s, topology %s (binding %s)", L->cfg->name, L->cfg->server, L->cpus,
                (long long)L->memory_mb, L->gpus, agent_runner_containment(L->r),
                agent_runner_limits(L->r), L->topo->source,
                L->topo->applied ? "applied" : "recorded");
        L->registered = true;
        run_commands(L, json_object_get(reply, "commands"));
    } else if (rc == 1) {
        refused(L, "agent.register", reply);
    }
    json_decref(reply);
    return rc;
}

/* Sends owed events in batches small enough for CM_RPC_MAX_MSG (an event
 * with the longest error is under 1 KiB). */
static int send_events(struct loop *L)
{
    json_t *all = agent_runner_events(L->r);
    int rc = 0;
    for (size_t from = 0; rc == 0 && from < json_array_size(all); from += EVENT_BATCH) {
        json_t *batch = json_array();
        for (size_t i = from; i < from + EVENT_BATCH && i < json_array_size(all); i++)
            json_array_append(batch, json_array_get(all, i));
        json_t *reply;
        rc = call(L, "agent.event", json_pack("{sO}", "events", batch), CALL_TIMEOUT_MS, &reply);
        if (rc == 0)
            agent_runner_ack(L->r, batch, json_object_get(reply, "acked"));
        else if (rc == 1)
            refused(L, "agent.event", reply);
        json_decref(reply);
        json_decref(batch);
    }
    json_decref(all);
    return rc;
}

static int do_poll(struct loop *L)
{
    /* commonsd answers at once while it has commands, and it repeats a kill
     * on every poll until the job is gone: pace polls that follow such a
     * reply instead of spinning through a kill grace. */
    int64_t wait_more = L->next_poll_ms - cm_mono_ms();
    if (wait_more > 0) idle(L, (int)wait_more);
    if (L->stop) return 0;
    L->next_poll_ms = cm_mono_ms();
    int next = agent_runner_tick(L->r);
    int wait = next < L->poll_wait_ms ? next : L->poll_wait_ms;
    if (json_array_size(L->backlog) > 0) wait = 0; /* launches are waiting: do not hold */
    json_t *reply;
    json_t *p = json_pack("{so si}", "running", agent_runner_running(L->r), "wait_ms", wait);
    int rc = call(L, "agent.poll", p, wait + CALL_TIMEOUT_MS, &reply);
    if (rc == 0) {
        json_t *cmds = json_object_get(reply, "commands");
        if (json_array_size(cmds) > 0 && json_array_size(L->backlog) == 0)
            L->next_poll_ms += POLL_PACE_MS;
        run_commands(L, cmds);
    } else if (rc == 1) {
        refused(L, "agent.poll", reply);
    }
    json_decref(reply);
    return rc;
}

static int setup(struct loop *L)
{
    char err[512];
    L->key = cm_read_secret(L->cfg->key_file, err, sizeof err);
    if (!L->key) {
        cm_error("cluster key: %s", err);
        return -1;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    /* Before any thread exists, so nng's threads inherit the mask. */
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    L->sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (L->sfd < 0) {
        cm_error("signalfd: %s", strerror(errno));
        return -1;
    }
    if (!(L->topo = malloc(sizeof *L->topo)) ||
        agent_topology_load(L->cfg->topology_xml, L->topo, err, sizeof err) != 0) {
        cm_error("topology: %s", L->topo ? err : "out of memory");
        return -1;
    }
    /* A topology is reported only when it agrees with what is offered (cpus =
     * its PUs); --cpus N other than that offers a plain count, as before. */
    L->cpus = L->topo->npus;
    if (L->cfg->cpus > 0 && L->cfg->cpus != L->topo->npus) {
        if (L->cfg->topology_xml) {
            cm_error("--cpus %d contradicts --topology %s (%d PUs)", L->cfg->cpus,
                     L->cfg->topology_xml, L->topo->npus);
            return -1;
        }
        cm_info("--cpus %d differs from this machine's %d PUs: offering a count, no topology",
                L->cfg->cpus, L->topo->npus);
        L->cpus = L->cfg->cpus;
        L->counts_only = true;
    }
    L->gpus = L->cfg->gpus > 0 ? L->cfg->gpus : L->topo->ngpus;
    L->memory_mb = L->cfg->memory_mb > 0 ? L->cfg->memory_mb
                   : L->cfg->topology_xml ? L->topo->memory_mb : agent_detect_memory_mb();
    /* commons-rsh is installed next to commons-agent. */
    ssize_t n = readlink("/proc/self/exe", L->rsh_agent, sizeof L->rsh_agent - 16);
    char *slash = n > 0 ? memrchr(L->rsh_agent, '/', (size_t)n) : NULL;
    if (slash) snprintf(slash + 1, 16, "commons-rsh");
    else snprintf(L->rsh_agent, sizeof L->rsh_agent, "commons-rsh");
    struct agent_runner_opts o = {.state_dir = L->cfg->state_dir, .node = L->cfg->name,
                                  .kill_grace_ms = L->cfg->kill_grace_ms,
                                  .containment = L->cfg->containment,
                                  .lock_wait_ms = 5000,
                                  .topology = L->counts_only ? NULL : L->topo,
                                  .server = L->cfg->server, .rsh_agent = L->rsh_agent};
    if (agent_runner_open(&o, &L->r, err, sizeof err) != 0) {
        cm_error("%s", err);
        return -1;
    }
    if (agent_rpcw_start(L->cfg->server, &L->rpc, err, sizeof err) != 0) {
        cm_error("--server %s: %s", L->cfg->server, err);
        return -1;
    }
    if (L->cfg->hostname)
        snprintf(L->hostname, sizeof L->hostname, "%s", L->cfg->hostname);
    else if (gethostname(L->hostname, sizeof L->hostname - 1) != 0)
        snprintf(L->hostname, sizeof L->hostname, "%s", L->cfg->name);
    L->poll_wait_ms = POLL_WAIT_MS;
    L->backoff_ms = BACKOFF_MIN_MS;
    return 0;
}

int agent_loop_run(const struct agent_config *cfg)
{
    struct loop L = {.cfg = cfg, .sfd = -1, .backlog = json_array()};
    int status = 0;
    if (setup(&L) != 0) {
        status = 1;
        goto out;
    }
    cm_info("agent %s: state %s, containment %s, server %s", cfg->name, cfg->state_dir,
            agent_runner_containment(L.r), cfg->server);
    /* Written while the runner holds the state dir's lock: it names this agent. */
    char pidpath[4200];
    cm_pid_file_write(cfg->state_dir, "agent.pid", pidpath, sizeof pidpath);
    while (!L.stop) {
        read_signals(&L);
        agent_runner_tick(L.r);
        int rc = L.registered ? 0 : do_register(&L);
        start_backlog(&L); /* its started events go out next */
        if (rc == 0) rc = send_events(&L);
        if (rc == 0 && L.registered) rc = do_poll(&L);
        if (rc == 0) {
            L.backoff_ms = BACKOFF_MIN_MS;
            L.last_refusal[0] = '\0';
        } else {
            idle(&L, L.backoff_ms);
            L.backoff_ms = L.backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : L.backoff_ms * 2;
        }
    }
    unlink(pidpath);
    json_t *running = L.r ? agent_runner_running(L.r) : NULL;
    cm_info("agent %s stopped; %zu job(s) left to a restarted agent", cfg->name,
            json_array_size(running));
    json_decref(running);
out:
    /* Launches not started are sent again by commonsd to the next agent. */
    json_decref(L.backlog);
    agent_rpcw_stop(L.rpc);
    agent_runner_close(L.r);
    if (L.sfd >= 0) close(L.sfd);
    free(L.key);
    free(L.topo);
    return status;
}
