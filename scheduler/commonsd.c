/* commonsd: the Commons scheduler daemon.
 *
 * One main loop owns all state. Each turn it takes every request that arrived,
 * handles them inside one SQLite transaction, runs node checks and a
 * scheduling pass in the same transaction, commits, and only then sends the
 * replies and agent commands: nothing is acknowledged or launched before it is
 * durable (group commit: one fsync per turn, however many requests).
 */
#include "api.h"
#include "cm_crypto.h"
#include "cm_daemon.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BATCH_MAX SERVER_CONTEXTS
#define TICK_MS 100
#define NODE_CHECK_MS 500
#define WRITABLE_RETRY_MS 5000

static volatile sig_atomic_t got_term, got_hup;
static void on_signal(int sig)
{
    if (sig == SIGHUP) got_hup = 1;
    else got_term = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: commonsd --state DIR [--listen URL] [--foreground] [--node-timeout SECONDS]\n"
            "                [--policy FILE] [--backfill easy|none] [--tls-cert FILE] [--sync full|normal]\n"
            "                [--service-ports LO-HI] [--log-level debug|info|warn|error]\n"
            "  --state DIR          state directory (SQLite database, keys); created if missing\n"
            "  --listen URL         where clients and agents connect (default %s)\n"
            "  --foreground         stay in the foreground and log to stderr\n"
            "  --node-timeout S     a node unheard for S seconds goes DOWN (default 30)\n"
            "  --policy FILE        quota policy to apply at start and on SIGHUP when it changed\n"
            "                       (commons policy apply does the same over the wire)\n"
            "  --backfill MODE      easy (default): EASY backfill; none: strict priority order\n"
            "  --tls-cert FILE      PEM with the certificate chain and key; listen on tls+tcp://...\n"
            "                       (clients set COMMONS_TLS_CA to the CA's PEM file)\n"
            "  --sync full|normal   SQLite synchronous mode (default full: survives power loss;\n"
            "                       normal survives a crash of commonsd but not of the machine)\n"
            "  --service-ports LO-HI  ports service replicas listen on, one per live replica\n"
            "                       (default %d-%d)\n",
            CM_RPC_DEFAULT_ADDR, SERVICE_PORTS_LO, SERVICE_PORTS_HI);
}

/* First start: the cluster key for agents, and an admin user with a token. */
static int bootstrap(struct daemon *d, const char *state_dir, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/cluster.key", state_dir);
    if (access(path, R_OK) != 0) {
        char key[65];
        if (cm_random_hex(32, key) != 0 || cm_write_file_atomic(path, key, 64, 0600, err, errlen) != 0) return -1;
        cm_info("created cluster key %s (give it to agents with --key-file)", path);
    }
    if (!(d->cluster_key = cm_read_secret(path, err, errlen))) return -1;
    if (d->c.nusers > 0) return 0;
    struct passwd *pw = getpwuid(getuid());
    char token[80];
    if (store_begin(&d->c.store) || cluster_account_add(&d->c, "root", "", err, errlen) ||
        cluster_user_add(&d->c, "admin", "root", NULL, 1, pw ? pw->pw_name : "root", token, err, errlen)) {
        store_rollback(&d->c.store);
        if (!err[0]) snprintf(err, errlen, "%s", d->c.store.err);
        return -1;
    }
    snprintf(path, sizeof path, "%s/admin.token", state_dir);
    char line[100];
    int n = snprintf(line, sizeof line, "%s\n", token);
    if (cm_write_file_atomic(path, line, (size_t)n, 0600, err, errlen) != 0 || store_commit(&d->c.store) != 0) {
        store_rollback(&d->c.store);
        return -1;
    }
    cm_info("created user admin; its token is in %s", path);
    return 0;
}

static int newest_sha(void *ctx, sqlite3_stmt *st)
{
    snprintf(ctx, 65, "%s", (const char *)sqlite3_column_text(st, 0));
    return 0;
}

/* Applies the --policy file when its text differs from the policy in force.
 * Runs in its own transaction. Returns -1 only when nothing valid is in force. */
static int apply_policy_file(struct daemon *d, const char *path, const char *who)
{
    char err[1024], sha[65], current[65] = "";
    size_t len;
    char *text = cm_read_file(path, &len, err, sizeof err);
    if (!text) {
        cm_error("policy: %s", err);
        return d->c.policy ? 0 : -1;
    }
    cm_sha256_hex(text, len, sha);
    store_each(&d->c.store, "SELECT sha256 FROM policies ORDER BY version DESC LIMIT 1", newest_sha, current);
    if (strcmp(sha, current) == 0) {
        cm_info("policy %s is already in force (version %lld)", path, (long long)d->c.policy_version);
        free(text);
        return 0;
    }
    char *report = NULL;
    int rc = store_begin(&d->c.store);
    if (rc == 0) rc = cluster_policy_apply(&d->c, text, len, path, who, &report, err, sizeof err);
    if (rc == 0) rc = store_commit(&d->c.store);
    if (rc != 0) {
        store_rollback(&d->c.store);
        cm_error("policy %s not applied: %s\n%s", path, err, report ? report : "");
    } else if (report && *report) {
        cm_warn("policy %s applied with warnings:\n%s", path, report);
    }
    free(report);
    free(text);
    return rc == 0 || d->c.policy ? 0 : -1;
}

static void send_all(struct daemon *d, int failed)
{
    for (int i = 0; i < d->nout; i++) {
        json_t *reply = d->out[i].reply;
        if (failed) {
            json_decref(reply);
            reply = cm_reply_err("unavailable", "commonsd could not store this change (%s); nothing was changed",
                                 d->c.store.err);
        }
        server_reply(d->out[i].req, reply);
    }
    d->nout = 0;
}

static int reload(struct daemon *d, const char *state_dir, enum store_sync sync)
{
    char err[1024];
    api_flush_parked(d, 1);
    cluster_free(&d->c); /* keeps d->c.set */
    if (store_open(&d->c.store, state_dir, sync, err, sizeof err) != 0 || cluster_load(&d->c, err, sizeof err) != 0) {
        cm_error("cannot reload state: %s", err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *state_dir = NULL, *listen = CM_RPC_DEFAULT_ADDR, *policy_path = NULL, *tls_cert = NULL;
    quota_backfill backfill = QUOTA_BACKFILL_EASY;
    int foreground = 0, level = CM_LOG_INFO, ports_lo = SERVICE_PORTS_LO, ports_hi = SERVICE_PORTS_HI;
    double node_timeout = 30;
    enum store_sync sync = STORE_SYNC_FULL;
    static const struct option opts[] = {
        {"state", required_argument, 0, 's'}, {"listen", required_argument, 0, 'l'},
        {"foreground", no_argument, 0, 'f'}, {"node-timeout", required_argument, 0, 't'},
        {"sync", required_argument, 0, 'y'}, {"log-level", required_argument, 0, 'v'},
        {"policy", required_argument, 0, 'p'}, {"backfill", required_argument, 0, 'b'},
        {"tls-cert", required_argument, 0, 'c'}, {"service-ports", required_argument, 0, 'P'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 's': state_dir = optarg; break;
        case 'l': listen = optarg; break;
        case 'f': foreground = 1; break;
        case 't': {
            char *end;
            node_timeout = strtod(optarg, &end);
            if (*end || node_timeout <= 0 || node_timeout > 86400) {
                fprintf(stderr, "commonsd: --node-timeout: expected seconds from 0 to 86400, got '%s'\n", optarg);
                return 2;
            }
            break;
        }
        case 'y':
            if (strcmp(optarg, "full") == 0) sync = STORE_SYNC_FULL;
            else if (strcmp(optarg, "normal") == 0) sync = STORE_SYNC_NORMAL;
            else {
                fprintf(stderr, "commonsd: --sync: expected full or normal, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'v':
            if ((level = cm_log_level_parse(optarg)) < 0) {
                fprintf(stderr, "commonsd: --log-level: expected debug, info, warn or error\n");
                return 2;
            }
            break;
        case 'p': policy_path = optarg; break;
        case 'c': tls_cert = optarg; break;
        case 'b':
            if (strcmp(optarg, "easy") == 0) backfill = QUOTA_BACKFILL_EASY;
            else if (strcmp(optarg, "none") == 0) backfill = QUOTA_BACKFILL_NONE;
            else {
                fprintf(stderr, "commonsd: --backfill: expected easy or none, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'P': {
            char perr[200];
            if (service_ports_parse(optarg, &ports_lo, &ports_hi, perr, sizeof perr) != 0) {
                fprintf(stderr, "commonsd: --service-ports: %s\n", perr);
                return 2;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!state_dir || optind < argc) {
        usage(stderr);
        return 2;
    }
    cm_log_init("commonsd", level);
    static struct daemon d;
    char err[6000] = "";
    if (store_open(&d.c.store, state_dir, sync, err, sizeof err) != 0) {
        cm_error("%s", err);
        return 1;
    }
    d.c.set = (struct cluster_settings){.node_timeout_ms = (int64_t)(node_timeout * 1000), .backfill = backfill,
                                        .service_ports_lo = ports_lo, .service_ports_hi = ports_hi};
    if (cluster_load(&d.c, err, sizeof err) != 0 || bootstrap(&d, state_dir, err, sizeof err) != 0) {
        cm_error("%s", err);
        return 1;
    }
    if (policy_path && apply_policy_file(&d, policy_path, "commonsd --policy") != 0) return 1;
    /* Detach before server_open(): nng must not be started before a fork (it panics "nng is
     * not fork-reentrant safe" in the child), so a listen error is in commonsd.log. */
    if (!foreground && cm_daemonize(state_dir, "commonsd.log", err, sizeof err) != 0) {
        cm_error("%s", err);
        return 1;
    }
    if (server_open(&d.srv, listen, tls_cert, err, sizeof err) != 0) {
        cm_error("%s", err);
        return 1;
    }
    char pidpath[4200];
    cm_pid_file_write(state_dir, "commonsd.pid", pidpath, sizeof pidpath);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    cm_info("listening on %s, state in %s (%lld jobs, %d nodes, %d users)", listen, state_dir,
            (long long)(d.c.next_id - 1), d.c.nnodes, d.c.nusers);

    static struct srv_req *batch[BATCH_MAX];
    int64_t last_check = 0, last_write_try = 0;
    while (!got_term) {
        if (got_hup) {
            got_hup = 0;
            if (policy_path) {
                cm_info("SIGHUP: reloading policy %s", policy_path);
                apply_policy_file(&d, policy_path, "SIGHUP");
            } else {
                cm_info("SIGHUP: no --policy file to reload");
            }
        }
        size_t n = server_take(d.srv, batch, BATCH_MAX, TICK_MS);
        int64_t now = cm_mono_ms();
        if (d.read_only && now - last_write_try >= WRITABLE_RETRY_MS) {
            last_write_try = now;
            if (store_begin(&d.c.store) == 0 && store_meta_set_int(&d.c.store, "writable_probe", now) == 0 &&
                store_commit(&d.c.store) == 0) {
                cm_info("state directory is writable again; accepting new work");
                d.read_only = 0;
            } else {
                store_rollback(&d.c.store);
            }
        }
        int in_tx = 0;
        if (!d.read_only) {
            if (store_begin(&d.c.store) == 0) in_tx = 1;
            else {
                cm_error("cannot start a transaction: %s; refusing new work", d.c.store.err);
                d.read_only = 1;
                last_write_try = now;
            }
        }
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *body = server_req_body(batch[i], &len);
            json_error_t jerr;
            json_t *req = json_loadb(body, len, 0, &jerr);
            json_t *reply;
            if (!req || !json_is_object(req))
                reply = cm_reply_err("bad_request", "request is not a JSON object%s%s", req ? "" : ": ", req ? "" : jerr.text);
            else
                reply = api_handle(&d, batch[i], req);
            json_decref(req);
            if (reply) api_queue_reply(&d, batch[i], reply);
        }
        if (in_tx) {
            if (now - last_check >= NODE_CHECK_MS) {
                cluster_check_nodes(&d.c);
                last_check = now;
            }
            if (d.c.dirty) cluster_schedule(&d.c);
            api_flush_parked(&d, 0);
            int64_t t0 = cm_mono_ms();
            if (store_commit(&d.c.store) != 0) {
                cm_error("commit failed: %s; refusing new work until the state directory is writable", d.c.store.err);
                store_rollback(&d.c.store);
                send_all(&d, 1);
                d.read_only = 1;
                last_write_try = now;
                if (reload(&d, state_dir, sync) != 0) return 1;
                continue;
            }
            d.c.stats.commit_us_total += (uint64_t)(cm_mono_ms() - t0) * 1000;
            if (n) {
                d.c.stats.batches++;
                d.c.stats.batch_requests += n;
            }
        } else {
            api_flush_parked(&d, 0);
        }
        send_all(&d, 0);
    }
    cm_info("SIGTERM: draining");
    api_flush_parked(&d, 1);
    send_all(&d, 0);
    usleep(100 * 1000); /* let the last replies leave */
    server_close(d.srv);
    cluster_free(&d.c);
    free(d.cluster_key);
    unlink(pidpath);
    cm_info("stopped");
    return 0;
}
