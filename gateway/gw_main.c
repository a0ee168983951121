/* gw_main.c: commons-gateway, the public OpenAI-compatible endpoint.
 *
 *   commons-gateway --policy FILE --state DIR [--listen HOST:PORT]
 *                   [--serve URL]... [--foreground] [limits...]
 *   commons-gateway keys create|list|revoke --state DIR ...
 *
 * Signals: SIGHUP reloads the policy (a bad file keeps the old one), SIGTERM
 * and SIGINT stop accepting, let requests in flight finish (up to
 * --drain SECONDS) and exit. See docs/gateway.md.
 */
#include "gw_gateway.h"

#include "gw_discover.h"
#include "gw_keys_cli.h"
#include "cm_daemon.h"
#include "cm_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SERVES 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: commons-gateway --policy FILE --state DIR [options]\n"
            "       commons-gateway keys create|list|revoke --state DIR ... (keys --help)\n"
            "  --listen HOST:PORT     HTTP address (default 127.0.0.1:8080; [::1]:8080 for IPv6)\n"
            "  --serve URL            a commons-serve replica, repeatable (default tcp://127.0.0.1:7700)\n"
            "  --policy FILE          policy with the citizens' tiers; reloaded on SIGHUP\n"
            "  --state DIR            keys and usage (DIR/gateway.db)\n"
            "  --foreground           stay in the foreground and log to stderr\n"
            "  --log-level LEVEL      debug|info|warn|error (default info)\n"
            "  --max-body BYTES       largest request body (default 1048576)\n"
            "  --max-header BYTES     memory for request line and headers (default 16384)\n"
            "  --max-connections N    open connections (default 256)\n"
            "  --max-per-ip N         open connections per client address (default 64, 0 = no limit)\n"
            "  --idle-timeout SECONDS close a silent connection (default 30)\n"
            "  --queue-timeout SECONDS longest wait for a free replica before 503 (default 30)\n"
            "  --default-max-tokens N max_tokens of a request that gives none (default 256)\n"
            "  --replica-slots N      requests in flight per replica (default: serve's max_batch)\n"
            "  --quantum TOKENS       fair-queue credit per turn (default 32)\n"
            "  --drain SECONDS        on SIGTERM, wait this long for requests in flight (default 10)\n"
            "  --service NAME         also route to the replicas of this commonsd service (service.list)\n"
            "  --commonsd URL         commonsd to ask (default tcp://127.0.0.1:7600)\n"
            "  --token-file FILE      a token of the service's owner or an admin\n"
            "  --autoscale            ask commonsd to scale the service within MIN..MAX from the load\n"
            "  --scale-up-after S     requests waiting with all slots busy this long: one more replica (10)\n"
            "  --scale-down-after S   under 30%% of slots busy, none waiting, this long: one fewer (60)\n"
            "  --scale-ttft-ms MS     recent mean time to first token above this also counts as overload\n"
            "                         (default 2000; -1: off)\n");
}

static int parse_listen(const char *s, gw_config *cfg, char *host, size_t hostlen)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) return -1;
    size_t n = (size_t)(colon - s);
    if (s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= hostlen) return -1;
    memcpy(host, s, n);
    host[n] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) return -1;
    /* Checked here, before daemonizing, so a typo fails the command itself. */
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1) return -1;
    cfg->listen_host = host;
    cfg->listen_port = (int)port;
    return 0;
}

static int64_t num_arg(const char *opt, const char *v, int64_t lo)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || x < lo) {
        fprintf(stderr, "commons-gateway: %s expects an integer >= %lld, got '%s'\n", opt,
                (long long)lo, v);
        exit(2);
    }
    return x;
}

static int64_t load_tokens(void *ctx, const char *principal, int64_t day)
{
    gw_gateway *g = ctx;
    if (strncmp(principal, "key:", 4) != 0) return 0; /* anonymous addresses: memory only */
    int64_t tokens = 0;
    char err[256];
    if (gw_keys_tokens_on(g->keys, strtoll(principal + 4, NULL, 10), day, &tokens, err,
                          sizeof err) != GW_KEYS_OK)
        cm_error("reading usage of %s: %s", principal, err);
    return tokens;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "keys")) return gw_keys_cli(argc - 1, argv + 1);

    gw_gateway g;
    memset(&g, 0, sizeof g);
    g.cfg = (gw_config){.listen_host = "127.0.0.1", .listen_port = 8080, .max_body = 1 << 20,
                        .max_header = 16384, .max_conns = 256, .max_conns_per_ip = 64,
                        .idle_timeout_s = 30, .queue_timeout_ms = 30000,
                        .default_max_tokens = 256};
    const char *serves[MAX_SERVES];
    int nserves = 0;
    const char *state = NULL;
    char host[256];
    int foreground = 0, level = CM_LOG_INFO;
    int64_t drain_s = 10;
    gw_disp_opts dopts = {0};
    enum { O_LISTEN = 1, O_SERVE, O_POLICY, O_STATE, O_FG, O_LOG, O_BODY, O_HEADER, O_CONNS,
           O_PERIP, O_IDLE, O_QTIMEOUT, O_DEFMAX, O_SLOTS, O_QUANTUM, O_DRAIN, O_HELP, O_SERVICE, O_COMMONSD,
           O_TOKENFILE, O_AUTOSCALE, O_UPAFTER, O_DOWNAFTER, O_TTFT };
    gw_discover_opts disc = {.commonsd = "tcp://127.0.0.1:7600"};
    static struct option opts[] = {
        {"listen", required_argument, 0, O_LISTEN}, {"serve", required_argument, 0, O_SERVE},
        {"service", required_argument, 0, O_SERVICE}, {"commonsd", required_argument, 0, O_COMMONSD},
        {"token-file", required_argument, 0, O_TOKENFILE}, {"autoscale", no_argument, 0, O_AUTOSCALE},
        {"scale-up-after", required_argument, 0, O_UPAFTER}, {"scale-down-after", required_argument, 0, O_DOWNAFTER},
        {"scale-ttft-ms", required_argument, 0, O_TTFT},
        {"policy", required_argument, 0, O_POLICY}, {"state", required_argument, 0, O_STATE},
        {"foreground", no_argument, 0, O_FG}, {"log-level", required_argument, 0, O_LOG},
        {"max-body", required_argument, 0, O_BODY}, {"max-header", required_argument, 0, O_HEADER},
        {"max-connections", required_argument, 0, O_CONNS},
        {"max-per-ip", required_argument, 0, O_PERIP},
        {"idle-timeout", required_argument, 0, O_IDLE},
        {"queue-timeout", required_argument, 0, O_QTIMEOUT},
        {"default-max-tokens", required_argument, 0, O_DEFMAX},
        {"replica-slots", required_argument, 0, O_SLOTS},
        {"quantum", required_argument, 0, O_QUANTUM}, {"drain", required_argument, 0, O_DRAIN},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_LISTEN:
            if (parse_listen(optarg, &g.cfg, host, sizeof host) != 0) {
                fprintf(stderr, "commons-gateway: --listen expects ADDRESS:PORT with a numeric IPv4 "
                        "or [IPv6] address, got '%s'\n", optarg);
                return 2;
            }
            break;
        case O_SERVE:
            if (nserves == MAX_SERVES) {
                fprintf(stderr, "commons-gateway: at most %d --serve replicas\n", MAX_SERVES);
                return 2;
            }
            serves[nserves++] = optarg;
            break;
        case O_POLICY: g.policy_path = optarg; break;
        case O_STATE: state = optarg; break;
        case O_FG: foreground = 1; break;
        case O_LOG:
            if ((level = cm_log_level_parse(optarg)) < 0) {
                fprintf(stderr, "commons-gateway: --log-level expects debug|info|warn|error\n");
                return 2;
            }
            break;
        case O_BODY: g.cfg.max_body = (size_t)num_arg("--max-body", optarg, 1); break;
        case O_HEADER: g.cfg.max_header = (size_t)num_arg("--max-header", optarg, 1024); break;
        case O_CONNS: g.cfg.max_conns = (unsigned)num_arg("--max-connections", optarg, 1); break;
        case O_PERIP: g.cfg.max_conns_per_ip = (unsigned)num_arg("--max-per-ip", optarg, 0); break;
        case O_IDLE: g.cfg.idle_timeout_s = (unsigned)num_arg("--idle-timeout", optarg, 1); break;
        case O_QTIMEOUT:
            g.cfg.queue_timeout_ms = 1000 * num_arg("--queue-timeout", optarg, 0);
            break;
        case O_DEFMAX: g.cfg.default_max_tokens = num_arg("--default-max-tokens", optarg, 1); break;
        case O_SLOTS: dopts.slots = (int)num_arg("--replica-slots", optarg, 1); break;
        case O_QUANTUM: dopts.quantum = num_arg("--quantum", optarg, 1); break;
        case O_DRAIN: drain_s = num_arg("--drain", optarg, 0); break;
        case O_SERVICE: disc.service = optarg; break;
        case O_COMMONSD: disc.commonsd = optarg; break;
        case O_TOKENFILE: disc.token_file = optarg; break;
        case O_AUTOSCALE: disc.autoscale = 1; break;
        case O_UPAFTER: disc.up_after_ms = (int64_t)(strtod(optarg, NULL) * 1000); break;
        case O_DOWNAFTER: disc.down_after_ms = (int64_t)(strtod(optarg, NULL) * 1000); break;
        case O_TTFT: disc.ttft_ms = num_arg("--scale-ttft-ms", optarg, -1); break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || !state || !g.policy_path) {
        if (optind != argc) fprintf(stderr, "commons-gateway: unexpected argument '%s'\n", argv[optind]);
        else fprintf(stderr, "commons-gateway: --policy FILE and --state DIR are required\n");
        usage(stderr);
        return 2;
    }
    if (disc.service && !disc.token_file) {
        fprintf(stderr, "commons-gateway: --service needs --token-file (a token of the service's owner)\n");
        return 2;
    }
    if (disc.autoscale && !disc.service) {
        fprintf(stderr, "commons-gateway: --autoscale needs --service NAME\n");
        return 2;
    }
    if (nserves == 0 && !disc.service) serves[nserves++] = "tcp://127.0.0.1:7700";
    cm_log_init("commons-gateway", (enum cm_log_level)level);

    char err[1024] = "";
    pthread_mutex_init(&g.mu, NULL);
    if (gw_policy_reload(&g, err, sizeof err) != 0) {
        cm_error("policy: %s", err);
        return 1;
    }
    if (gw_keys_open(state, &g.keys, err, sizeof err) != GW_KEYS_OK) {
        cm_error("%s", err);
        return 1;
    }
    /* Threads (nng's, MHD's) must start after daemon(), and with these signals
     * blocked: they inherit the mask, so only main's sigwait() takes them. */
    if (!foreground && cm_daemonize(state, "gateway.log", err, sizeof err) != 0) {
        cm_error("%s", err);
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    g.metrics = gw_metrics_new();
    g.quota = gw_quota_new(load_tokens, &g);
    if (!g.metrics || !g.quota) {
        cm_error("out of memory");
        return 1;
    }
    if (gw_disp_new(serves, nserves, &dopts, &g.disp, err, sizeof err) != 0) {
        cm_error("%s", err);
        return 1;
    }

    if (gw_disp_start(g.disp) != 0) {
        cm_error("cannot start the replica health thread");
        return 1;
    }
    gw_discover *discover = NULL;
    disc.metrics = g.metrics;
    if (disc.service && gw_discover_start(g.disp, &disc, &discover, err, sizeof err) != 0) {
        cm_error("--service %s: %s", disc.service, err);
        return 1;
    }
    g.discover = discover;
    if (gw_http_start(&g, err, sizeof err) != 0) {
        cm_error("%s", err);
        return 1;
    }
    cm_info("listening on http://%s:%d, %d serve replica%s, policy %s", g.cfg.listen_host,
            g.cfg.listen_port, nserves, nserves == 1 ? "" : "s", g.policy_path);

    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) continue;
        if (sig == SIGHUP) {
            err[0] = 0;
            if (gw_policy_reload(&g, err, sizeof err) == 0) cm_info("SIGHUP: policy %s reloaded", g.policy_path);
            else cm_error("SIGHUP: policy %s not reloaded, the old one stays: %s", g.policy_path, err);
            continue;
        }
        cm_info("signal %d: draining (up to %lld s)", sig, (long long)drain_s);
        break;
    }
    gw_http_stop(&g, drain_s * 1000);
    gw_discover_stop(discover);
    gw_disp_free(g.disp);
    gw_quota_free(g.quota);
    gw_metrics_free(g.metrics);
    gw_keys_close(g.keys);
    gw_policy_put(&g, g.pol);
    cm_info("stopped");
    return 0;
}
