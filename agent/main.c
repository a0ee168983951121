/* main.c: commons-agent, the node agent: options, daemonizing, then the
 * protocol loop (loop.c). See docs/agent.md. */
#include "agent_internal.h"
#include "cm_daemon.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: commons-agent --name NODE --key-file FILE --state DIR [options]\n"
            "       commons-agent --name NODE --state DIR --kill-jobs\n"
            "  --server URL          commonsd address (default %s)\n"
            "  --name NODE           this node's name (letters, digits, '.', '_', '-')\n"
            "  --key-file FILE       the cluster key (commonsd's STATE/cluster.key)\n"
            "  --state DIR           the agent's state dir (job records, scripts)\n"
            "  --cpus N              CPUs to offer (default: the topology's PUs; another count\n"
            "                        offers a plain count with no topology)\n"
            "  --memory-mb M         memory to offer in MB (default: MemTotal)\n"
            "  --gpus G              GPUs to offer (default: those of the topology)\n"
            "  --topology FILE.xml   play the node an hwloc XML describes (bindings recorded, not applied)\n"
            "  --hostname NAME       the name or address others reach this node by (service endpoints;\n"
            "                        default: this machine's host name)\n"
            "  --kill-grace S        seconds between SIGTERM and SIGKILL (default 10)\n"
            "  --containment KIND    auto|cgroup|subreaper (default auto)\n"
            "  --log-level LEVEL     debug|info|warn|error (default info)\n"
            "  --foreground          do not detach from the terminal\n"
            "  --kill-jobs           end every job of --state (no commonsd needed) and exit\n"
            "  --print-topology      print the topology report (JSON) of this machine or\n"
            "                        --topology FILE.xml and exit\n",
            CM_RPC_DEFAULT_ADDR);
}

static int parse_int(const char *opt, const char *s, long long min, long long max,
                     long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "commons-agent: %s: expected an integer from %lld to %lld, got \"%s\"\n",
                opt, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* An absolute form of path, so the daemon can chdir("/"). */
static char *absolute(const char *path)
{
    if (path[0] == '/') return strdup(path);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return NULL;
    char *out;
    return asprintf(&out, "%s/%s", cwd, path) < 0 ? NULL : out;
}

/* --print-topology: the report agent.register would carry, on stdout. */
static int print_topology(const char *xml)
{
    struct agent_topology *t = malloc(sizeof *t);
    struct agent_contain c;
    char err[512];
    if (!t || agent_topology_load(xml, t, err, sizeof err) != 0) {
        fprintf(stderr, "commons-agent: %s\n", t ? err : "out of memory");
        free(t);
        return 1;
    }
    bool cg = agent_contain_init(&c, AGENT_CONTAIN_AUTO, "print-topology", "probe", NULL, err,
                                 sizeof err) == 0 && c.kind == AGENT_CONTAIN_CGROUP && c.limits;
    json_t *r = agent_topology_report(t, cg ? "cgroup" : "rlimit");
    json_dumpf(r, stdout, JSON_INDENT(1) | JSON_SORT_KEYS);
    putchar('\n');
    json_decref(r);
    free(t);
    return 0;
}

int main(int argc, char **argv)
{
    /* Fds 0-2 must be open: otherwise a pipe or the lock could land on one
     * and be clobbered when a keeper or job redirects its standard streams. */
    int fd;
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd < 3) {}
    if (fd > 2) close(fd);
    struct agent_config cfg = {.server = CM_RPC_DEFAULT_ADDR, .kill_grace_ms = 10000,
                               .containment = AGENT_CONTAIN_AUTO};
    const char *state = NULL, *key = NULL;
    int foreground = 0, kill_jobs = 0, print_topo = 0, level = CM_LOG_INFO;
    static const struct option opts[] = {
        {"server", required_argument, 0, 's'},    {"name", required_argument, 0, 'n'},
        {"key-file", required_argument, 0, 'k'},  {"state", required_argument, 0, 'd'},
        {"cpus", required_argument, 0, 'c'},      {"memory-mb", required_argument, 0, 'm'},
        {"gpus", required_argument, 0, 'g'},      {"kill-grace", required_argument, 0, 'K'},
        {"containment", required_argument, 0, 'C'}, {"log-level", required_argument, 0, 'l'},
        {"foreground", no_argument, 0, 'f'},      {"help", no_argument, 0, 'h'},
        {"kill-jobs", no_argument, 0, 'X'},      {"topology", required_argument, 0, 'T'},
        {"print-topology", no_argument, 0, 'P'}, {"hostname", required_argument, 0, 'H'},
        {0, 0, 0, 0}};
    int c;
    long long v;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': cfg.server = optarg; break;
        case 'n': cfg.name = optarg; break;
        case 'k': key = optarg; break;
        case 'd': state = optarg; break;
        case 'c':
            if (parse_int("--cpus", optarg, 1, 1000000, &v)) return 2;
            cfg.cpus = (int)v;
            break;
        case 'm':
            if (parse_int("--memory-mb", optarg, 1, (long long)1 << 40, &v)) return 2;
            cfg.memory_mb = v;
            break;
        case 'g':
            if (parse_int("--gpus", optarg, 0, 1024, &v)) return 2;
            cfg.gpus = (int)v;
            break;
        case 'K': {
            char *end;
            double s = strtod(optarg, &end);
            if (end == optarg || *end || !(s > 0 && s <= 3600)) {
                fprintf(stderr, "commons-agent: --kill-grace: expected seconds in (0, 3600], "
                        "got \"%s\"\n", optarg);
                return 2;
            }
            cfg.kill_grace_ms = (int)(s * 1000 + 0.5);
            if (cfg.kill_grace_ms < 1) cfg.kill_grace_ms = 1;
            break;
        }
        case 'C':
            if (!strcmp(optarg, "auto")) cfg.containment = AGENT_CONTAIN_AUTO;
            else if (!strcmp(optarg, "cgroup")) cfg.containment = AGENT_CONTAIN_CGROUP;
            else if (!strcmp(optarg, "subreaper")) cfg.containment = AGENT_CONTAIN_SUBREAPER;
            else {
                fprintf(stderr, "commons-agent: --containment: expected auto, cgroup or "
                        "subreaper, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'l':
            if ((level = cm_log_level_parse(optarg)) < 0) {
                fprintf(stderr, "commons-agent: --log-level: expected debug, info, warn or "
                        "error, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'f': foreground = 1; break;
        case 'T': cfg.topology_xml = optarg; break;
        case 'H': cfg.hostname = optarg; break;
        case 'P': print_topo = 1; break;
        case 'X': kill_jobs = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (print_topo && optind == argc) return print_topology(cfg.topology_xml);
    if (optind < argc || !cfg.name || (!key && !kill_jobs) || !state) {
        fprintf(stderr, "commons-agent: %s\n", optind < argc ? "unexpected argument"
                : "--name, --key-file and --state are required");
        usage(stderr);
        return 2;
    }
    if (!cfg.name[0] || strlen(cfg.name) > 100 ||
        strspn(cfg.name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
            strlen(cfg.name)) {
        fprintf(stderr, "commons-agent: --name: expected 1-100 letters, digits, '.', '_' or "
                "'-', got \"%s\"\n", cfg.name);
        return 2;
    }
    if (kill_jobs) {
        cm_log_init("commons-agent", (enum cm_log_level)level);
        cfg.state_dir = state;
        return agent_kill_jobs(&cfg);
    }
    char *state_abs = absolute(state), *key_abs = absolute(key);
    if (!state_abs || !key_abs) {
        fprintf(stderr, "commons-agent: cannot resolve --state/--key-file: %s\n", strerror(errno));
        return 1;
    }
    cfg.state_dir = state_abs;
    cfg.key_file = key_abs;
    char *topo_abs = cfg.topology_xml ? absolute(cfg.topology_xml) : NULL;
    if (cfg.topology_xml) {
        /* Checked here, while the terminal is attached; the daemon loads it again. */
        if (!topo_abs || access(topo_abs, R_OK) != 0) {
            fprintf(stderr, "commons-agent: --topology %s: %s\n", cfg.topology_xml,
                    strerror(errno));
            return 1;
        }
        cfg.topology_xml = topo_abs;
    }
    if (cfg.memory_mb <= 0) cfg.memory_mb = agent_detect_memory_mb();
    cm_log_init("commons-agent", (enum cm_log_level)level);
    /* Say what is wrong while the terminal is still attached. */
    char err[512] = "";
    char *probe = cm_read_secret(cfg.key_file, err, sizeof err);
    if (!probe) {
        fprintf(stderr, "commons-agent: --key-file: %s\n", err);
        return 1;
    }
    free(probe);
    if (!foreground) {
        /* The log goes into the state dir (made here if new, as the runner would). */
        if (mkdir(state_abs, 0711) != 0 && errno != EEXIST) {
            fprintf(stderr, "commons-agent: --state %s: %s\n", state_abs, strerror(errno));
            return 1;
        }
        if (cm_daemonize(state_abs, "agent.log", err, sizeof err) != 0 || chdir("/") != 0) {
            fprintf(stderr, "commons-agent: %s\n", err[0] ? err : strerror(errno));
            return 1;
        }
    }
    int rc = agent_loop_run(&cfg);
    free(state_abs);
    free(key_abs);
    free(topo_abs);
    return rc;
}
