/* submit_bench: the job-submission benchmark of issue 2 (README.md here).
 *
 *   submit_bench setup --addr URL --state DIR --token-out FILE [--unix-user U]
 *                      [--fake-node NAME --cpus N]
 *       creates account and user "bench" with the admin token from
 *       DIR/admin.token, writes the user's token to FILE; with --fake-node,
 *       registers a node by sending one agent.register frame signed with
 *       DIR/cluster.key (commonsd refuses jobs while no node is registered;
 *       the node never polls, so nothing is launched).
 *   submit_bench throughput --addr URL --token-file F --jobs N --clients C [--no-hold]
 *   submit_bench latency --addr URL --token-file F --jobs N --clients C --outdir DIR
 *                        [--sleep S] [--timeout S]
 */
#include "bench.h"

#include "cm_util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: submit_bench setup --addr URL --state DIR --token-out FILE [--unix-user U]"
               " [--fake-node NAME --cpus N]\n"
               "       submit_bench throughput --addr URL --token-file F --jobs N --clients C [--no-hold]\n"
               "       submit_bench latency --addr URL --token-file F --jobs N --clients C --outdir DIR"
               " [--sleep S] [--timeout S]\n");
}

/* Sends req (consumed) and returns the reply if it says ok; else prints why. */
static json_t *call_ok(cm_rpc_client *c, json_t *req, const char *what)
{
    char err[1024];
    json_t *reply = NULL;
    int rc = cm_rpc_call(c, req, &reply, BENCH_RPC_TIMEOUT_MS, err, sizeof err);
    json_decref(req);
    if (rc == 0 && json_is_true(json_object_get(reply, "ok"))) return reply;
    if (rc == 0) cm_reply_error_text(reply, err, sizeof err);
    fprintf(stderr, "submit_bench setup: %s failed: %s\n", what, err);
    json_decref(reply);
    return NULL;
}

static int setup(const char *addr, const char *state, const char *token_out, const char *unix_user,
                 const char *fake_node, int cpus)
{
    char path[4200], err[1024];
    snprintf(path, sizeof path, "%s/admin.token", state);
    char *admin = cm_read_secret(path, err, sizeof err);
    snprintf(path, sizeof path, "%s/cluster.key", state);
    char *key = fake_node ? cm_read_secret(path, err, sizeof err) : NULL;
    cm_rpc_client *c = NULL;
    if (!admin || (fake_node && !key) || cm_rpc_client_open(addr, &c, err, sizeof err) != 0) {
        fprintf(stderr, "submit_bench setup: %s\n", err);
        return 1;
    }
    int rc = 1;
    json_t *r;
    if (!(r = call_ok(c, json_pack("{s:s, s:s, s:s}", "type", "account.add", "token", admin, "name", "bench"), "account.add")))
        goto out;
    json_decref(r);
    if (!(r = call_ok(c, json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "user.add", "token", admin, "name", "bench",
                                   "account", "bench", "unix_user", unix_user),
                      "user.add")))
        goto out;
    const char *token = json_string_value(json_object_get(r, "token"));
    char line[200];
    int n = snprintf(line, sizeof line, "%s\n", token ? token : "");
    if (!token || cm_write_file_atomic(token_out, line, (size_t)n, 0600, err, sizeof err) != 0) {
        fprintf(stderr, "submit_bench setup: cannot write the token to %s: %s\n", token_out, token ? err : "no token in reply");
        json_decref(r);
        goto out;
    }
    json_decref(r);
    if (fake_node) {
        json_t *payload = json_pack("{s:s, s:s, s:I, s:i, s:I, s:i, s:s, s:[]}", "type", "agent.register", "node",
                                    fake_node, "ts", (json_int_t)cm_now_ms(), "cpus", cpus, "memory_mb",
                                    (json_int_t)1048576, "gpus", 0, "hostname", fake_node, "running");
        json_t *frame = cm_rpc_sign(key, payload);
        json_decref(payload);
        if (!(r = call_ok(c, frame, "agent.register of the fake node"))) goto out;
        json_decref(r);
    }
    rc = 0;
out:
    cm_rpc_client_close(c);
    free(admin);
    free(key);
    return rc;
}

static int parse_int(const char *opt, const char *s, int lo, int hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end || v < lo || v > hi) {
        fprintf(stderr, "submit_bench: %s: expected an integer from %d to %d, got '%s'\n", opt, lo, hi, s);
        exit(2);
    }
    return (int)v;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *mode = argv[1];
    struct bench_opts o = {.addr = CM_RPC_DEFAULT_ADDR, .jobs = 2000, .clients = 1, .hold = 1, .sleep_s = 1,
                           .timeout_s = 600};
    const char *token_file = NULL, *state = NULL, *token_out = NULL, *fake_node = NULL, *unix_user = "nobody";
    int cpus = 1000;
    static const struct option opts[] = {
        {"addr", required_argument, 0, 'a'},       {"token-file", required_argument, 0, 'T'},
        {"jobs", required_argument, 0, 'n'},       {"clients", required_argument, 0, 'c'},
        {"no-hold", no_argument, 0, 'H'},          {"outdir", required_argument, 0, 'o'},
        {"sleep", required_argument, 0, 'S'},      {"timeout", required_argument, 0, 't'},
        {"state", required_argument, 0, 's'},      {"token-out", required_argument, 0, 'w'},
        {"unix-user", required_argument, 0, 'u'},  {"fake-node", required_argument, 0, 'f'},
        {"cpus", required_argument, 0, 'C'},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'a': o.addr = optarg; break;
        case 'T': token_file = optarg; break;
        case 'n': o.jobs = parse_int("--jobs", optarg, 1, 10000000); break;
        case 'c': o.clients = parse_int("--clients", optarg, 1, 200); break;
        case 'H': o.hold = 0; break;
        case 'o': o.outdir = optarg; break;
        case 'S': o.sleep_s = parse_int("--sleep", optarg, 0, 3600); break;
        case 't': o.timeout_s = parse_int("--timeout", optarg, 1, 86400); break;
        case 's': state = optarg; break;
        case 'w': token_out = optarg; break;
        case 'u': unix_user = optarg; break;
        case 'f': fake_node = optarg; break;
        case 'C': cpus = parse_int("--cpus", optarg, 1, 1000000); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (strcmp(mode, "setup") == 0) {
        if (!state || !token_out) {
            fprintf(stderr, "submit_bench setup: --state and --token-out are required\n");
            return 2;
        }
        return setup(o.addr, state, token_out, unix_user, fake_node, cpus);
    }
    if (strcmp(mode, "throughput") != 0 && strcmp(mode, "latency") != 0) {
        usage(stderr);
        return 2;
    }
    char err[1024];
    if (!token_file || !(o.token = cm_read_secret(token_file, err, sizeof err))) {
        fprintf(stderr, "submit_bench: --token-file: %s\n", token_file ? err : "required");
        return 2;
    }
    int rc;
    if (mode[0] == 't') rc = bench_throughput(&o);
    else if (!o.outdir || o.outdir[0] != '/') {
        fprintf(stderr, "submit_bench latency: --outdir must be an absolute directory the jobs can write\n");
        rc = 2;
    } else {
        rc = bench_latency(&o);
    }
    free(o.token);
    return rc;
}
