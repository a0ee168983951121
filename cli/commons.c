/* commons: the one command for Commons users and admins.
 *
 * Every subcommand sends one request to commonsd (docs/protocol.md) and
 * prints a table, or the reply's JSON with --json. Exit status: 0 success,
 * 1 refused by commonsd (or a job failed, for submit --wait), 2 bad usage or
 * bad input, 3 commonsd could not be reached.
 */
#include "cm_rpc.h"
#include "cm_util.h"
#include "gw_keys_cli.h"
#include "jobfile.h"
#include "ledger.h"
#include "sim.h"
#include "quotas.h"
#include "table.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

static struct {
    const char *addr, *token_file;
    int json, timeout_ms;
    cm_rpc_client *rpc;
    char *token;
} g = {.timeout_ms = 30000};

static const char usage_text[] =
    "usage: commons [--addr URL] [--token-file FILE] [--timeout 30s] [--json] COMMAND ...\n"
    "\n"
    "Jobs:\n"
    "  submit [OPTIONS] SCRIPT [ARGS]    submit a batch script (#COMMONS directives allowed)\n"
    "  submit [OPTIONS] JOB.yaml         submit a YAML job file\n"
    "  submit [OPTIONS] -- CMD [ARGS]    submit a command\n"
    "  queue [-u USER] [-A ACCOUNT] [-t STATE] [--all]\n"
    "  show ID                           one job in full\n"
    "  cancel ID...   hold ID...   release ID...\n"
    "Cluster:\n"
    "  nodes                             nodes and their use\n"
    "  nodes --topology NODE             a node's NUMA nodes, PUs and GPUs, and which are in use\n"
    "  nodes drain NODE --reason TEXT    (admin) nothing new starts there; nodes resume NODE\n"
    "  share                             fair-share tree (like sshare)\n"
    "  prio                              pending jobs' priority factors (like sprio)\n"
    "  ledger verify [--anchor SEQ:HASH] | ledger export [--format json|csv] [--out FILE]\n"
    "  usage --by institution|account|user [--period day|month] [--since YYYY-MM-DD]\n"
    "Services (inference replicas as jobs):\n"
    "  service deploy NAME --model M.gguf --replicas MIN..MAX [--account A] [--qos Q]\n"
    "          [--cpus-per-replica N] [--gpus-per-replica N] [--mem SIZE] [--serve-bin PATH]\n"
    "          [--tp N | --pp N] [--nodes N] [--ntasks-per-node N]   each replica N MPI ranks\n"
    "  service list [NAME]   service scale NAME N   service remove NAME\n"
    "Policy:\n"
    "  policy check FILE                 validate a policy file (no server needed)\n"
    "  policy apply FILE                 put a policy in force (admin)\n"
    "  policy show [--version N] [--history]\n"
    "Citizens' API keys (on the gateway's host):\n"
    "  keys create --state DIR [--name N] [--tier T --policy P] | keys list --state DIR | keys revoke --state DIR ID|NAME\n"
    "Simulator (no server):\n"
    "  sim --trace FILE.swf --policy P.yaml [...]   replay a workload trace (commons sim --help)\n"
    "  whoami   stats\n"
    "Admin:\n"
    "  admin account add NAME [--parent NAME]    admin account list\n"
    "  admin user add NAME --account A [--accounts A,B] [--admin] [--unix-user U]\n"
    "  admin user list    admin token create USER [--expires 30d]    admin token revoke USER\n"
    "\n"
    "Connection: --addr or COMMONS_ADDR (default " CM_RPC_DEFAULT_ADDR "); the token comes from\n"
    "COMMONS_TOKEN, --token-file, COMMONS_TOKEN_FILE, or ~/.config/commons/token. With a\n"
    "tls+tcp:// address, COMMONS_TLS_CA names the PEM file of the CA that signed commonsd's certificate.\n"
    "Exit status: 0 ok, 1 refused by commonsd, 2 bad usage or input, 3 commonsd unreachable.\n";

static const char submit_usage[] =
    "usage: commons submit [OPTIONS] SCRIPT [ARGS] | JOB.yaml | -- CMD [ARGS]\n"
    "  --wait                   wait until the job ends; exit 0 only if it COMPLETED\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "commons: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see commons --help)\n");
    return EXIT_USAGE;
}

static int load_token(void)
{
    const char *t = getenv("COMMONS_TOKEN");
    if (t && *t) {
        g.token = strdup(t);
        return 0;
    }
    char path[4096], err[512];
    const char *file = g.token_file ? g.token_file : getenv("COMMONS_TOKEN_FILE");
    if (!file) {
        const char *home = getenv("HOME");
        snprintf(path, sizeof path, "%s/.config/commons/token", home ? home : ".");
        file = path;
    }
    g.token = cm_read_secret(file, err, sizeof err);
    if (!g.token) {
        fprintf(stderr, "commons: no token: %s (set COMMONS_TOKEN or use --token-file)\n", err);
        return -1;
    }
    return 0;
}

/* Sends req (consumed). Returns the reply, or NULL after printing why. *rc
 * gets the exit status to use when the reply is NULL or not ok. */
static json_t *call(json_t *req, int *rc)
{
    char err[1024];
    if (!g.token && load_token() != 0) {
        json_decref(req);
        *rc = EXIT_USAGE;
        return NULL;
    }
    json_object_set_new(req, "token", json_string(g.token));
    if (!g.rpc && cm_rpc_client_open(g.addr, &g.rpc, err, sizeof err) != 0) {
        fprintf(stderr, "commons: %s\n", err);
        json_decref(req);
        *rc = EXIT_UNREACHABLE;
        return NULL;
    }
    json_t *reply = NULL;
    int r = cm_rpc_call(g.rpc, req, &reply, g.timeout_ms, err, sizeof err);
    json_decref(req);
    if (r != 0) {
        fprintf(stderr, "commons: %s: %s\n", g.addr, err);
        *rc = EXIT_UNREACHABLE;
        return NULL;
    }
    if (!json_is_true(json_object_get(reply, "ok"))) {
        if (g.json) {
            json_dumpf(reply, stdout, JSON_INDENT(2));
            putchar('\n');
        } else {
            fprintf(stderr, "commons: %s\n", cm_reply_error_text(reply, err, sizeof err));
        }
        json_decref(reply);
        *rc = EXIT_REFUSED;
        return NULL;
    }
    *rc = 0;
    return reply;
}

static void print_json(json_t *v)
{
    json_dumpf(v, stdout, JSON_INDENT(2));
    putchar('\n');
}

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static long long num(json_t *o, const char *k) { return (long long)json_integer_value(json_object_get(o, k)); }

static void fmt_time(long long t, char *buf, size_t len)
{
    if (!t) {
        snprintf(buf, len, "-");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    localtime_r(&tt, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
}

static void job_id_text(json_t *j, char *buf, size_t len)
{
    if (json_object_get(j, "array_job_id"))
        snprintf(buf, len, "%lld_%lld", num(j, "array_job_id"), num(j, "array_task_id"));
    else
        snprintf(buf, len, "%lld", num(j, "id"));
}

/* ---- submit -------------------------------------------------------------- */

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static int wait_for(long long first, long long last)
{
    int rc;
    for (;;) {
        int done = 1, ok = 1;
        for (long long id = first; id <= last; id++) {
            json_t *reply = call(json_pack("{s:s, s:I}", "type", "job.show", "id", (json_int_t)id), &rc);
            if (!reply) return rc;
            json_t *j = json_object_get(reply, "job");
            const char *st = str(j, "state");
            if (strcmp(st, "PENDING") == 0 || strcmp(st, "RUNNING") == 0) done = 0;
            else if (strcmp(st, "COMPLETED") != 0) ok = 0;
            if (done && id == last) {
                if (!g.json) fprintf(stderr, "job %lld: %s\n", id, st);
            }
            json_decref(reply);
            if (!done) break;
        }
        if (done) return ok ? 0 : EXIT_REFUSED;
        usleep(200 * 1000);
    }
}

static int cmd_submit(int argc, char **argv)
{
    json_t *spec = json_object();
    json_t *cli = json_object(); /* flags, applied after file/directives so they win */
    char err[4096];
    int i = 1, wait = 0, rc = EXIT_USAGE;
    for (; i < argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "--") == 0 || a[0] != '-' || !a[1]) break;
        if (strcmp(a, "--wait") == 0) {
            wait = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("%s%s", submit_usage, jobfile_flags_help);
            rc = 0;
            goto out;
        }
        char *name = a + (a[1] == '-' ? 2 : 1), *value = NULL;
        char buf[256];
        snprintf(buf, sizeof buf, "%s", name);
        char *eq = strchr(buf, '=');
        if (eq) {
            *eq = '\0';
            value = strchr(a, '=') + 1;
        }
        int takes = jobfile_flag_takes_value(buf);
        if (takes < 0) {
            fprintf(stderr, "commons submit: unknown option '%s'\n%s%s", a, submit_usage, jobfile_flags_help);
            goto out;
        }
        if (takes && !value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "commons submit: option '%s' needs a value\n", a);
                goto out;
            }
            value = argv[++i];
        }
        if (jobfile_apply_flag(cli, buf, value, "command line", err, sizeof err) != 0) {
            fprintf(stderr, "commons submit: %s\n", err);
            goto out;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "commons submit: nothing to run: give a script, a YAML job file, or -- CMD\n");
        goto out;
    }
    if (strcmp(argv[i], "--") == 0) {
        if (++i >= argc) {
            fprintf(stderr, "commons submit: nothing after --\n");
            goto out;
        }
        json_t *cmd = json_array();
        for (; i < argc; i++) json_array_append_new(cmd, json_string(argv[i]));
        json_object_set_new(spec, "command", cmd);
    } else if (has_suffix(argv[i], ".yaml") || has_suffix(argv[i], ".yml")) {
        if (i + 1 < argc) {
            fprintf(stderr, "commons submit: a YAML job file takes no arguments\n");
            goto out;
        }
        if (jobfile_load_yaml(spec, argv[i], err, sizeof err) != 0) {
            fprintf(stderr, "commons submit: %s\n", err);
            goto out;
        }
    } else {
        size_t len;
        char *text = cm_read_file(argv[i], &len, err, sizeof err);
        if (!text) {
            fprintf(stderr, "commons submit: %s\n", err);
            goto out;
        }
        if (strlen(text) != len) {
            fprintf(stderr, "commons submit: %s: a batch script must be text (it contains NUL bytes)\n", argv[i]);
            free(text);
            goto out;
        }
        int d = jobfile_apply_directives(spec, text, argv[i], err, sizeof err);
        if (d == 0) {
            /* Script arguments become positional parameters, as with sbatch. */
            if (i + 1 < argc) {
                json_t *cmd = json_array();
                json_array_append_new(cmd, json_string("/bin/sh"));
                json_array_append_new(cmd, json_string("-c"));
                json_array_append_new(cmd, json_string(text));
                for (int k = i; k < argc; k++) json_array_append_new(cmd, json_string(argv[k]));
                json_object_set_new(spec, "command", cmd);
            } else {
                json_object_set_new(spec, "script", json_string(text));
            }
            if (!json_object_get(spec, "name")) {
                const char *base = strrchr(argv[i], '/');
                json_object_set_new(spec, "name", json_string(base ? base + 1 : argv[i]));
            }
        }
        free(text);
        if (d != 0) {
            fprintf(stderr, "commons submit: %s\n", err);
            goto out;
        }
    }
    json_object_update(spec, cli);
    if (!json_object_get(spec, "workdir")) {
        char cwd[4096];
        if (!getcwd(cwd, sizeof cwd)) {
            fprintf(stderr, "commons submit: cannot read the current directory: %s\n", strerror(errno));
            goto out;
        }
        json_object_set_new(spec, "workdir", json_string(cwd));
    }
    if (!json_object_get(spec, "env")) jobfile_apply_flag(spec, "export", "ALL", "", err, sizeof err);
    json_t *reply = call(json_pack("{s:s, s:O}", "type", "job.submit", "job", spec), &rc);
    if (!reply) goto out;
    long long id = num(reply, "job_id");
    json_t *arr = json_object_get(reply, "array_ids");
    long long last = arr ? (long long)json_integer_value(json_array_get(arr, 1)) : id;
    if (g.json) print_json(reply);
    else if (arr) printf("Submitted array job %lld (tasks are jobs %lld-%lld)\n", id, id, last);
    else printf("Submitted job %lld\n", id);
    fflush(stdout);
    json_decref(reply);
    rc = wait ? wait_for(id, last) : 0;
out:
    json_decref(spec);
    json_decref(cli);
    return rc;
}

/* ---- policy and fair-share ----------------------------------------------------- */

static int cmd_policy(int argc, char **argv)
{
    if (argc < 2) return usage_error("policy: expected check, apply or show%s", "");
    const char *act = argv[1];
    if (!strcmp(act, "check") || !strcmp(act, "apply")) {
        if (argc != 3) return usage_error("policy %s: expected one policy file", act);
        quota_diags d;
        quota_diags_init(&d);
        quota_policy *p = NULL;
        int rc = quota_policy_load_file(argv[2], &p, &d);
        quota_diags_print(&d, stderr);
        if (rc != QUOTA_OK) {
            fprintf(stderr, "commons policy %s: %s: %zu error(s), %zu warning(s); not valid\n", act, argv[2],
                    d.errors, d.warnings);
            quota_diags_free(&d);
            return rc == QUOTA_EIO ? EXIT_USAGE : EXIT_REFUSED;
        }
        if (!strcmp(act, "check")) {
            if (g.json) {
                char *dump = quota_policy_dump(p);
                printf("%s\n", dump ? dump : "{}");
                free(dump);
            } else {
                printf("%s: valid: %d accounts (%d leaves), %d users, %d QOS, %d citizen tiers; %zu warning(s)\n",
                       argv[2], p->naccounts - 1, p->nleaves, p->nusers, p->nqos, p->ntiers, d.warnings);
            }
            quota_policy_free(p);
            quota_diags_free(&d);
            return 0;
        }
        quota_policy_free(p);
        quota_diags_free(&d);
        size_t len;
        char err[1024];
        char *text = cm_read_file(argv[2], &len, err, sizeof err);
        if (!text) {
            fprintf(stderr, "commons policy apply: %s\n", err);
            return EXIT_USAGE;
        }
        json_t *req = json_pack("{s:s, s:s%, s:s}", "type", "policy.apply", "text", text, len, "source", argv[2]);
        free(text);
        int code;
        json_t *reply = call(req, &code);
        if (!reply) return code;
        if (g.json) print_json(reply);
        else printf("Policy version %lld is in force\n", num(reply, "version"));
        json_decref(reply);
        return 0;
    }
    if (!strcmp(act, "show")) {
        json_t *req = json_pack("{s:s}", "type", "policy.show");
        int history = 0;
        for (int i = 2; i < argc; i++) {
            char *end;
            if (!strcmp(argv[i], "--history")) history = 1;
            else if (!strcmp(argv[i], "--version") && i + 1 < argc) {
                long long v = strtoll(argv[++i], &end, 10);
                if (*end) {
                    json_decref(req);
                    return usage_error("policy show: --version needs a number, got '%s'", argv[i]);
                }
                json_object_set_new(req, "version", json_integer(v));
            } else {
                json_decref(req);
                return usage_error("policy show: unexpected '%s' (expected --version N or --history)", argv[i]);
            }
        }
        int code;
        json_t *reply = call(req, &code);
        if (!reply) return code;
        json_t *pol = json_object_get(reply, "policy");
        if (g.json) {
            print_json(reply);
        } else if (history) {
            static const char *const h[] = {"VERSION", "APPLIED", "BY", "SOURCE", "SHA256"};
            struct table *t = table_new(5, h);
            size_t i;
            json_t *v;
            json_array_foreach(json_object_get(reply, "versions"), i, v) {
                char when[64];
                fmt_time(num(v, "applied_at"), when, sizeof when);
                table_addf(t, "%lld%s\t%s\t%s\t%s\t%.16s", num(v, "version"),
                           num(v, "version") == num(reply, "version") ? "*" : "", when, str(v, "applied_by"),
                           str(v, "source"), str(v, "sha256"));
            }
            table_print(t, stdout);
            table_free(t);
        } else if (!json_is_object(pol)) {
            printf("No quota policy is in force: jobs run in submission order and no limits apply.\n");
        } else {
            char when[64];
            fmt_time(num(pol, "applied_at"), when, sizeof when);
            printf("# policy version %lld, applied %s by %s from %s, sha256 %s\n%s", num(pol, "version"), when,
                   str(pol, "applied_by"), str(pol, "source"), str(pol, "sha256"), str(pol, "text"));
        }
        json_decref(reply);
        return 0;
    }
    return usage_error("policy: unknown action '%s' (expected check, apply or show)", act);
}

static int cmd_share(int argc, char **argv)
{
    (void)argv;
    if (argc != 1) return usage_error("share: no arguments expected%s", "");
    int code;
    json_t *reply = call(json_pack("{s:s}", "type", "share"), &code);
    if (!reply) return code;
    if (g.json) {
        print_json(json_object_get(reply, "accounts"));
    } else {
        static const char *const h[] = {"Account", "RawShares", "NormShares", "RawUsage", "NormUsage", "EffectvUsage",
                                        "LevelFS", "FairShare"};
        struct table *t = table_new(8, h);
        size_t i;
        json_t *a;
        json_array_foreach(json_object_get(reply, "accounts"), i, a) {
            char name[300], lfs[32];
            int depth = (int)num(a, "depth");
            snprintf(name, sizeof name, "%*s%s", depth, "", str(a, "account"));
            if (json_is_null(json_object_get(a, "level_fs"))) snprintf(lfs, sizeof lfs, "inf");
            else snprintf(lfs, sizeof lfs, "%.6f", json_real_value(json_object_get(a, "level_fs")));
            double fs = json_real_value(json_object_get(a, "fairshare"));
            char fsbuf[32] = "";
            if (json_is_true(json_object_get(a, "leaf"))) snprintf(fsbuf, sizeof fsbuf, "%.6f", fs);
            table_addf(t, "%s\t%lld\t%.6f\t%.0f\t%.6f\t%.6f\t%s\t%s", name, num(a, "raw_shares"),
                       json_real_value(json_object_get(a, "norm_shares")), json_real_value(json_object_get(a, "raw_usage")),
                       json_real_value(json_object_get(a, "norm_usage")),
                       json_real_value(json_object_get(a, "effective_usage")), depth ? lfs : "", fsbuf);
        }
        table_print(t, stdout);
        table_free(t);
    }
    json_decref(reply);
    return 0;
}

static int cmd_prio(int argc, char **argv)
{
    (void)argv;
    if (argc != 1) return usage_error("prio: no arguments expected%s", "");
    int code;
    json_t *reply = call(json_pack("{s:s}", "type", "prio"), &code);
    if (!reply) return code;
    if (g.json) {
        print_json(json_object_get(reply, "jobs"));
    } else {
        static const char *const h[] = {"JOBID", "USER", "ACCOUNT", "PRIORITY", "AGE", "FAIRSHARE", "JOBSIZE", "QOS"};
        struct table *t = table_new(8, h);
        size_t i;
        json_t *j;
        json_array_foreach(json_object_get(reply, "jobs"), i, j) {
            table_addf(t, "%lld\t%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f", num(j, "id"), str(j, "user"),
                       str(j, "account"), json_real_value(json_object_get(j, "priority")),
                       json_real_value(json_object_get(j, "age")), json_real_value(json_object_get(j, "fairshare")),
                       json_real_value(json_object_get(j, "size")), json_real_value(json_object_get(j, "qos_weighted")));
        }
        table_print(t, stdout);
        table_free(t);
    }
    json_decref(reply);
    return 0;
}

/* ---- services ---------------------------------------------------------------- */

static int simple(const char *type, json_t *req_extra, const char *print_key);

/* commons-serve next to this program in the build tree (cli/../inference/). */
static int default_serve_bin(char *out, size_t len)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return -1;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash) return -1;
    *slash = '\0';
    char guess[4200];
    snprintf(guess, sizeof guess, "%s/../inference/commons-serve", self);
    return realpath(guess, out) && access(out, X_OK) == 0 && len >= 2 ? 0 : -1;
}

/* --tp N / --pp N (ranks of a split model; one of the two) and the ranks'
 * placement --nodes N / --ntasks-per-node N, each a number from 1 (2 for the
 * split) to CM_SERVICE_MAX_RANKS; commonsd checks that they agree. */
static int service_rank_flag(json_t *replica, const char *flag, const char *v, const char **split)
{
    int is_split = !strcmp(flag, "--tp") || !strcmp(flag, "--pp");
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    long lo = is_split ? 2 : 1;
    if (errno || end == v || *end || n < lo || n > CM_SERVICE_MAX_RANKS) {
        fprintf(stderr, "commons service deploy: %s %s: expected %s from %ld to %d\n", flag, v,
                is_split ? "the number of MPI ranks to split the model over" : "a number", lo, CM_SERVICE_MAX_RANKS);
        return -1;
    }
    if (is_split) {
        if (*split) {
            fprintf(stderr, "commons service deploy: %s with --%s: give one of --tp and --pp (a model is split one "
                    "way)\n", flag, *split);
            return -1;
        }
        *split = flag + 2;
    }
    json_object_set_new(replica, is_split ? flag + 2 : !strcmp(flag, "--nodes") ? "nodes" : "tasks_per_node",
                        json_integer(n));
    return 0;
}

static int cmd_service(int argc, char **argv)
{
    int rc;
    if (argc < 2) return usage_error("service: expected deploy, list, scale or remove%s", "");
    const char *act = argv[1];
    if (!strcmp(act, "list")) {
        json_t *req = json_pack("{s:s}", "type", "service.list");
        if (argc == 3) json_object_set_new(req, "name", json_string(argv[2]));
        json_t *reply = call(req, &rc);
        if (!reply) return rc;
        if (g.json) print_json(json_object_get(reply, "services"));
        else {
            static const char *const h[] = {"SERVICE", "OWNER", "REPLICAS(T/MIN..MAX)", "SPLIT", "JOB", "STATE",
                                            "ENDPOINT(REASON)"};
            struct table *t = table_new(7, h);
            size_t i, k;
            json_t *s, *r;
            json_array_foreach(json_object_get(reply, "services"), i, s) {
                char reps[64], split[96] = "-";
                snprintf(reps, sizeof reps, "%lld/%lld..%lld", num(s, "target"), num(s, "min"), num(s, "max"));
                json_t *sp = json_object_get(s, "split");
                /* "tp 2 (1x2)": the mode, its ranks, and nodes x ranks per node. */
                if (json_is_object(sp))
                    snprintf(split, sizeof split, "%s %lld (%lldx%lld)", str(sp, "mode"), num(sp, "ranks"),
                             num(sp, "nodes"), num(sp, "ranks_per_node"));
                if (json_array_size(json_object_get(s, "replicas")) == 0)
                    table_addf(t, "%s\t%s\t%s\t%s\t-\t-\t-", str(s, "name"), str(s, "owner"), reps, split);
                json_array_foreach(json_object_get(s, "replicas"), k, r) {
                    char where[600];
                    if (*str(r, "endpoint")) snprintf(where, sizeof where, "%s", str(r, "endpoint"));
                    else snprintf(where, sizeof where, "(%s)", str(r, "reason"));
                    table_addf(t, "%s\t%s\t%s\t%s\t%lld\t%s%s\t%s", k ? "" : str(s, "name"), k ? "" : str(s, "owner"),
                               k ? "" : reps, k ? "" : split, num(r, "job"), str(r, "state"),
                               json_is_true(json_object_get(r, "stopping")) ? "+STOPPING" : "", where);
                }
            }
            table_print(t, stdout);
            table_free(t);
        }
        json_decref(reply);
        return 0;
    }
    if (argc < 3) return usage_error("service %s: expected a service name", act);
    const char *name = argv[2];
    if (!strcmp(act, "scale")) {
        char *end;
        long n = argc == 4 ? strtol(argv[3], &end, 10) : -1;
        if (argc != 4 || *end || n < 0) return usage_error("service scale: expected NAME REPLICAS%s", "");
        return simple("service.scale", json_pack("{s:s, s:i}", "name", name, "target", (int)n), NULL);
    }
    if (!strcmp(act, "remove")) {
        if (argc != 3) return usage_error("service remove: expected NAME%s", "");
        return simple("service.remove", json_pack("{s:s}", "name", name), NULL);
    }
    if (strcmp(act, "deploy") != 0) return usage_error("service: unknown action '%s' (deploy, list, scale, remove)", act);
    json_t *replica = json_object();
    char err[1024], path[4096], bin[4096] = "";
    long lo = -1, hi = -1;
    const char *split = NULL; /* "tp" or "pp" */
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            json_decref(replica);
            return usage_error("service deploy: option '%s' needs a value", a);
        }
        i++;
        if (!strcmp(a, "--model")) {
            if (!realpath(v, path)) {
                json_decref(replica);
                fprintf(stderr, "commons service deploy: --model %s: %s\n", v, strerror(errno));
                return EXIT_USAGE;
            }
            json_object_set_new(replica, "model", json_string(path));
        } else if (!strcmp(a, "--serve-bin")) {
            if (!realpath(v, bin)) bin[0] = '\0';
        } else if (!strcmp(a, "--tp") || !strcmp(a, "--pp") || !strcmp(a, "--nodes") ||
                   !strcmp(a, "--ntasks-per-node")) {
            if (service_rank_flag(replica, a, v, &split) != 0) {
                json_decref(replica);
                return EXIT_USAGE;
            }
        } else if (!strcmp(a, "--replicas")) {
            if (sscanf(v, "%ld..%ld", &lo, &hi) != 2) {
                json_decref(replica);
                return usage_error("service deploy: --replicas expects MIN..MAX, got '%s'", v);
            }
        } else {
            const char *flag = !strcmp(a, "--gpus-per-replica") ? "gpus" : !strcmp(a, "--cpus-per-replica") ? "cpus-per-task"
                             : !strcmp(a, "--account") ? "account" : !strcmp(a, "--qos") ? "qos" : !strcmp(a, "--mem") ? "mem"
                             : !strcmp(a, "--time") ? "time" : NULL;
            if (!flag || jobfile_apply_flag(replica, flag, v, "command line", err, sizeof err) != 0) {
                json_decref(replica);
                if (flag) fprintf(stderr, "commons service deploy: %s\n", err);
                return flag ? EXIT_USAGE : usage_error("service deploy: unknown option '%s'", a);
            }
        }
    }
    if (!bin[0] && default_serve_bin(bin, sizeof bin) != 0) {
        json_decref(replica);
        fprintf(stderr, "commons service deploy: no commons-serve next to this program; give --serve-bin PATH\n");
        return EXIT_USAGE;
    }
    if (!json_object_get(replica, "model") || lo < 0) {
        json_decref(replica);
        return usage_error("service deploy: --model M.gguf and --replicas MIN..MAX are required%s", "");
    }
    if (!split && (json_object_get(replica, "nodes") || json_object_get(replica, "tasks_per_node"))) {
        json_decref(replica);
        return usage_error("service deploy: --nodes and --ntasks-per-node place the ranks of a split model; "
                           "give --tp N or --pp N too%s", "");
    }
    char cwd[4096];
    json_object_set_new(replica, "serve_bin", json_string(bin));
    json_object_set_new(replica, "workdir", json_string(getcwd(cwd, sizeof cwd) ? cwd : "/"));
    json_object_set_new(replica, "name", json_string(name));
    json_object_set_new(replica, "stdout", json_string("service-%j.log"));
    if (!json_object_get(replica, "cpus_per_task")) json_object_set_new(replica, "cpus_per_task", json_integer(1));
    if (!json_object_get(replica, "time_limit_s")) json_object_set_new(replica, "time_limit_s", json_integer(30 * 86400));
    int ranks = split ? (int)json_integer_value(json_object_get(replica, split)) : 1;
    rc = simple("service.deploy", json_pack("{s:s, s:o, s:i, s:i}", "name", name, "replica", replica, "min", (int)lo, "max",
                                            (int)hi),
                NULL);
    if (!rc && !g.json) {
        printf("Service %s deployed: %ld..%ld replicas of %s", name, lo, hi, bin);
        if (split) printf(", each --%s %d under mpirun (commons service list shows the placement)", split, ranks);
        printf("\n");
    }
    return rc;
}

/* ---- queries --------------------------------------------------------------- */

static int cmd_queue(int argc, char **argv)
{
    json_t *req = json_pack("{s:s}", "type", "job.list");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *key = !strcmp(a, "-u") || !strcmp(a, "--user")      ? "user"
                          : !strcmp(a, "-A") || !strcmp(a, "--account") ? "account"
                          : !strcmp(a, "-t") || !strcmp(a, "--state")   ? "state"
                                                                         : NULL;
        if (!strcmp(a, "--all") || !strcmp(a, "-a")) {
            json_object_set_new(req, "all", json_true());
        } else if (key && i + 1 < argc) {
            json_object_set_new(req, key, json_string(argv[++i]));
        } else {
            json_decref(req);
            return usage_error("queue: unexpected '%s' (expected -u USER, -A ACCOUNT, -t STATE, --all)", a);
        }
    }
    int rc;
    json_t *reply = call(req, &rc);
    if (!reply) return rc;
    if (g.json) {
        print_json(json_object_get(reply, "jobs"));
    } else {
        static const char *const h[] = {"JOBID", "NAME", "USER", "ACCOUNT", "STATE", "TIME", "LIMIT", "NODES", "NODELIST(REASON)"};
        struct table *t = table_new(9, h);
        size_t i;
        json_t *j;
        long long now = (long long)time(NULL);
        json_array_foreach(json_object_get(reply, "jobs"), i, j) {
            char id[64], used[32], limit[32], where[1100];
            job_id_text(j, id, sizeof id);
            long long start = num(j, "start_time"), end = num(j, "end_time");
            cm_format_duration(start ? (end ? end : now) - start : 0, used, sizeof used);
            cm_format_duration(num(j, "time_limit_s"), limit, sizeof limit);
            if (!strcmp(str(j, "state"), "PENDING")) snprintf(where, sizeof where, "(%s)", str(j, "reason"));
            else snprintf(where, sizeof where, "%s", str(j, "nodelist"));
            table_addf(t, "%s\t%.20s\t%s\t%s\t%s\t%s\t%s\t%lld\t%s", id, str(j, "name"), str(j, "user"),
                       str(j, "account"), str(j, "state"), used, limit, num(j, "nodes"), where);
        }
        table_print(t, stdout);
        table_free(t);
    }
    json_decref(reply);
    return 0;
}

static int cmd_show(int argc, char **argv)
{
    char *end;
    if (argc != 2) return usage_error("show: expected one job id%s", "");
    long long id = strtoll(argv[1], &end, 10);
    if (*end || id < 1) return usage_error("show: '%s' is not a job id", argv[1]);
    int rc;
    json_t *reply = call(json_pack("{s:s, s:I}", "type", "job.show", "id", (json_int_t)id), &rc);
    if (!reply) return rc;
    json_t *j = json_object_get(reply, "job");
    if (g.json) {
        print_json(j);
    } else {
        char buf[64], lim[32];
        job_id_text(j, buf, sizeof buf);
        printf("JobId=%s Name=%s\n", buf, str(j, "name"));
        printf("   User=%s Account=%s QOS=%s\n", str(j, "user"), str(j, "account"), str(j, "qos"));
        printf("   State=%s Reason=%s", str(j, "state"), *str(j, "reason") ? str(j, "reason") : "None");
        if (json_object_get(j, "exit_code")) printf(" ExitCode=%lld:%lld", num(j, "exit_code"), num(j, "signal"));
        printf(" Requeues=%lld\n", num(j, "requeues"));
        cm_format_duration(num(j, "time_limit_s"), lim, sizeof lim);
        fmt_time(num(j, "submit_time"), buf, sizeof buf);
        printf("   SubmitTime=%s", buf);
        fmt_time(num(j, "start_time"), buf, sizeof buf);
        printf(" StartTime=%s", buf);
        fmt_time(num(j, "end_time"), buf, sizeof buf);
        printf(" EndTime=%s TimeLimit=%s\n", buf, lim);
        printf("   NumNodes=%lld NumTasks=%lld NumCPUs=%lld Mem=%lldM GPUs=%lld NodeList=%s\n", num(j, "nodes"),
               num(j, "tasks"), num(j, "cpus"), num(j, "mem_mb"), num(j, "gpus"), *str(j, "nodelist") ? str(j, "nodelist") : "-");
        json_t *spec = json_object_get(j, "spec");
        printf("   WorkDir=%s StdOut=%s", str(spec, "workdir"), str(spec, "stdout"));
        if (*str(spec, "stderr")) printf(" StdErr=%s", str(spec, "stderr"));
        putchar('\n');
        if (*str(spec, "dependency")) printf("   Dependency=%s\n", str(spec, "dependency"));
        if (*str(j, "error")) printf("   Error=%s\n", str(j, "error"));
        if (*str(j, "note")) printf("   Note=%s\n", str(j, "note"));
        if (json_object_get(spec, "command")) {
            printf("   Command=");
            size_t i;
            json_t *a;
            json_array_foreach(json_object_get(spec, "command"), i, a) printf("%s%s", i ? " " : "", json_string_value(a));
            putchar('\n');
        }
        if (json_object_get(spec, "script")) printf("   Script:\n%s\n", str(spec, "script"));
        if (*str(j, "private")) printf("   (%s)\n", str(j, "private"));
    }
    json_decref(reply);
    return 0;
}

static int cmd_jobs_op(int argc, char **argv, const char *type)
{
    if (argc < 2) return usage_error("%s: expected one or more job ids", argv[0]);
    json_t *ids = json_array();
    for (int i = 1; i < argc; i++) {
        char *end;
        long long id = strtoll(argv[i], &end, 10);
        if (*end || id < 1) {
            json_decref(ids);
            return usage_error("'%s' is not a job id", argv[i]);
        }
        json_array_append_new(ids, json_integer(id));
    }
    int rc;
    json_t *reply = call(json_pack("{s:s, s:o}", "type", type, "ids", ids), &rc);
    if (!reply) return rc;
    size_t i;
    json_t *r;
    int failed = 0;
    if (g.json) print_json(json_object_get(reply, "results"));
    json_array_foreach(json_object_get(reply, "results"), i, r) {
        if (!json_is_true(json_object_get(r, "ok"))) {
            failed = 1;
            if (!g.json) fprintf(stderr, "commons %s: %s\n", argv[0], str(r, "error"));
        }
    }
    json_decref(reply);
    return failed ? EXIT_REFUSED : 0;
}

static void print_topology(json_t *n)
{
    json_t *t = json_object_get(n, "topology");
    if (!json_is_object(t)) {
        printf("%s: no topology reported (the agent allocates CPU and GPU counts only)\n", str(n, "name"));
        return;
    }
    printf("Node %s: %lld packages, %lld cores, %lld PUs; source %s; binding %s; limits %s\n", str(n, "name"),
           num(t, "packages"), num(t, "cores"), num(t, "pus"), str(t, "source"), str(t, "binding"), str(t, "limits"));
    json_t *used = json_object_get(n, "pus_used"), *gused = json_object_get(n, "gpus_used_list");
    static const char *const h[] = {"NUMA", "MEM_MB", "PUS", "IN_USE", "GPUS"};
    struct table *tb = table_new(5, h);
    size_t i, k, q;
    json_t *nn, *v, *g, *x;
    json_array_foreach(json_object_get(t, "numa"), i, nn) {
        char pus[4096] = "", inuse[4096] = "", gpus[1024] = "";
        size_t lp = 0, lu = 0, lg = 0;
        json_array_foreach(json_object_get(nn, "pus"), k, v) {
            int is_used = 0;
            json_array_foreach(used, q, x) is_used |= json_integer_value(x) == json_integer_value(v);
            if (lp + 16 < sizeof pus) lp += (size_t)snprintf(pus + lp, sizeof pus - lp, "%s%lld", lp ? "," : "", (long long)json_integer_value(v));
            if (is_used && lu + 16 < sizeof inuse)
                lu += (size_t)snprintf(inuse + lu, sizeof inuse - lu, "%s%lld", lu ? "," : "", (long long)json_integer_value(v));
        }
        json_array_foreach(json_object_get(t, "gpus"), k, g) {
            if (json_integer_value(json_object_get(g, "numa")) != json_integer_value(json_object_get(nn, "id"))) continue;
            int is_used = 0;
            json_array_foreach(gused, q, x) is_used |= json_integer_value(x) == json_integer_value(json_object_get(g, "index"));
            if (lg + 40 < sizeof gpus)
                lg += (size_t)snprintf(gpus + lg, sizeof gpus - lg, "%s%lld%s", lg ? "," : "",
                                       (long long)json_integer_value(json_object_get(g, "index")), is_used ? "*" : "");
        }
        table_addf(tb, "%lld\t%lld\t%s\t%s\t%s", (long long)json_integer_value(json_object_get(nn, "id")),
                   (long long)json_integer_value(json_object_get(nn, "memory_mb")), pus, lu ? inuse : "-", lg ? gpus : "-");
    }
    table_print(tb, stdout);
    table_free(tb);
    printf("(* = GPU in use)\n");
}

static int cmd_nodes(int argc, char **argv)
{
    int rc;
    if (argc >= 2 && (!strcmp(argv[1], "drain") || !strcmp(argv[1], "resume"))) {
        int drain = !strcmp(argv[1], "drain");
        if (argc < 3) return usage_error("nodes %s: expected a node name", argv[1]);
        json_t *req = json_pack("{s:s, s:s}", "type", drain ? "node.drain" : "node.resume", "name", argv[2]);
        for (int i = 3; i < argc; i++) {
            if (drain && !strcmp(argv[i], "--reason") && i + 1 < argc) json_object_set_new(req, "reason", json_string(argv[++i]));
            else {
                json_decref(req);
                return usage_error("nodes: unexpected '%s' (expected: nodes drain NODE --reason TEXT | nodes resume NODE)", argv[i]);
            }
        }
        json_t *reply = call(req, &rc);
        if (!reply) return rc;
        if (g.json) print_json(reply);
        else printf("Node %s %s\n", argv[2], drain ? "drained: running jobs finish, nothing new starts there" : "resumed");
        json_decref(reply);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "--topology")) {
        json_t *reply = call(json_pack("{s:s, s:s}", "type", "node.show", "name", argv[2]), &rc);
        if (!reply) return rc;
        if (g.json) print_json(json_object_get(reply, "node"));
        else print_topology(json_object_get(reply, "node"));
        json_decref(reply);
        return 0;
    }
    if (argc != 1) return usage_error("nodes: unexpected '%s' (expected --topology NODE, drain NODE --reason TEXT or resume NODE)", argv[1]);
    json_t *reply = call(json_pack("{s:s}", "type", "node.list"), &rc);
    if (!reply) return rc;
    if (g.json) {
        print_json(json_object_get(reply, "nodes"));
    } else {
        static const char *const h[] = {"NODE", "STATE", "CPUS(A/T)", "MEM_MB(A/T)", "GPUS(A/T)", "REASON"};
        struct table *t = table_new(6, h);
        size_t i;
        json_t *n;
        json_array_foreach(json_object_get(reply, "nodes"), i, n)
            table_addf(t, "%s\t%s\t%lld/%lld\t%lld/%lld\t%lld/%lld\t%s", str(n, "name"), str(n, "state"),
                       num(n, "cpus_used"), num(n, "cpus"), num(n, "memory_used_mb"), num(n, "memory_mb"),
                       num(n, "gpus_used"), num(n, "gpus"), str(n, "reason"));
        table_print(t, stdout);
        table_free(t);
    }
    json_decref(reply);
    return 0;
}

static int simple(const char *type, json_t *req_extra, const char *print_key)
{
    json_t *req = req_extra ? req_extra : json_object();
    json_object_set_new(req, "type", json_string(type));
    int rc;
    json_t *reply = call(req, &rc);
    if (!reply) return rc;
    if (g.json && print_key && json_is_array(json_object_get(reply, print_key)))
        print_json(json_object_get(reply, print_key)); /* lists print as lists, like queue */
    else if (g.json) print_json(reply);
    else if (print_key && json_is_string(json_object_get(reply, print_key))) printf("%s\n", str(reply, print_key));
    else if (print_key) print_json(json_object_get(reply, print_key));
    json_decref(reply);
    return 0;
}

static int cmd_admin(int argc, char **argv)
{
    if (argc < 3) return usage_error("admin: expected 'account', 'user' or 'token' and an action%s", "");
    const char *what = argv[1], *act = argv[2];
    if (!strcmp(what, "account") && !strcmp(act, "list")) return simple("account.list", NULL, "accounts");
    if (!strcmp(what, "user") && !strcmp(act, "list")) return simple("user.list", NULL, "users");
    if (argc < 4) return usage_error("admin %s: expected a name", what);
    const char *name = argv[3];
    if (!strcmp(what, "token") && (!strcmp(act, "create") || !strcmp(act, "revoke"))) {
        json_t *req = json_pack("{s:s}", "user", name);
        if (argc == 6 && !strcmp(act, "create") && !strcmp(argv[4], "--expires")) {
            int64_t secs = cm_parse_duration(argv[5]);
            if (secs <= 0) {
                json_decref(req);
                return usage_error("admin token create: --expires needs a duration such as 30d or 12h, got '%s'", argv[5]);
            }
            json_object_set_new(req, "expires_s", json_integer(secs));
        } else if (argc != 4) {
            json_decref(req);
            return usage_error("admin token %s: expected a user name (and for create, optionally --expires DURATION)", act);
        }
        return simple(!strcmp(act, "create") ? "token.create" : "token.revoke", req,
                      !strcmp(act, "create") ? "token" : "revoked");
    }
    if (!strcmp(what, "account") && !strcmp(act, "add")) {
        json_t *req = json_pack("{s:s}", "name", name);
        for (int i = 4; i < argc; i++) {
            if (!strcmp(argv[i], "--parent") && i + 1 < argc) json_object_set_new(req, "parent", json_string(argv[++i]));
            else {
                json_decref(req);
                return usage_error("admin account add: unexpected '%s' (expected --parent NAME)", argv[i]);
            }
        }
        int rc = simple("account.add", req, NULL);
        if (!rc && !g.json) printf("Added account %s\n", name);
        return rc;
    }
    if (!strcmp(what, "user") && !strcmp(act, "add")) {
        json_t *req = json_pack("{s:s}", "name", name);
        for (int i = 4; i < argc; i++) {
            const char *a = argv[i];
            if (!strcmp(a, "--admin")) json_object_set_new(req, "admin", json_true());
            else if (!strcmp(a, "--account") && i + 1 < argc) json_object_set_new(req, "account", json_string(argv[++i]));
            else if (!strcmp(a, "--unix-user") && i + 1 < argc) json_object_set_new(req, "unix_user", json_string(argv[++i]));
            else if (!strcmp(a, "--accounts") && i + 1 < argc) {
                json_t *list = json_array();
                char *copy = strdup(argv[++i]), *save = NULL;
                for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
                    json_array_append_new(list, json_string(t));
                free(copy);
                json_object_set_new(req, "accounts", list);
            } else {
                json_decref(req);
                return usage_error("admin user add: unexpected '%s' (expected --account A, --accounts A,B, --admin, --unix-user U)", a);
            }
        }
        if (!json_object_get(req, "account")) {
            json_decref(req);
            return usage_error("admin user add: --account is required%s", "");
        }
        /* The token is shown once: commonsd keeps only its hash. */
        return simple("user.add", req, "token");
    }
    return usage_error("admin: unknown action '%s'", act);
}

int main(int argc, char **argv)
{
    g.addr = getenv("COMMONS_ADDR");
    if (!g.addr || !*g.addr) g.addr = CM_RPC_DEFAULT_ADDR;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--json")) g.json = 1;
        else if (!strcmp(argv[i], "--addr") && i + 1 < argc) g.addr = argv[++i];
        else if (!strcmp(argv[i], "--token-file") && i + 1 < argc) g.token_file = argv[++i];
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            int64_t s = cm_parse_duration(argv[++i]);
            if (s <= 0) {
                fprintf(stderr, "commons: --timeout: expected a duration such as 30s, got '%s'\n", argv[i]);
                return EXIT_USAGE;
            }
            g.timeout_ms = (int)(s * 1000);
        }
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else {
            fprintf(stderr, "commons: unknown option '%s'\n%s", argv[i], usage_text);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    /* --json may also follow the command. */
    int n = 0;
    char **args = malloc(sizeof *args * (size_t)(argc - i + 1));
    int after_dashdash = 0;
    for (int k = i; k < argc; k++) {
        if (!after_dashdash && !strcmp(argv[k], "--json")) {
            g.json = 1;
            continue;
        }
        if (!strcmp(argv[k], "--")) after_dashdash = 1;
        args[n++] = argv[k];
    }
    args[n] = NULL;
    const char *cmd = args[0];
    int rc;
    if (!strcmp(cmd, "submit")) rc = cmd_submit(n, args);
    else if (!strcmp(cmd, "queue")) rc = cmd_queue(n, args);
    else if (!strcmp(cmd, "show")) rc = cmd_show(n, args);
    else if (!strcmp(cmd, "cancel")) rc = cmd_jobs_op(n, args, "job.cancel");
    else if (!strcmp(cmd, "hold")) rc = cmd_jobs_op(n, args, "job.hold");
    else if (!strcmp(cmd, "release")) rc = cmd_jobs_op(n, args, "job.release");
    else if (!strcmp(cmd, "nodes")) rc = cmd_nodes(n, args);
    else if (!strcmp(cmd, "whoami")) rc = simple("whoami", NULL, "user");
    else if (!strcmp(cmd, "stats")) rc = simple("stats", NULL, "text");
    else if (!strcmp(cmd, "admin")) rc = cmd_admin(n, args);
    else if (!strcmp(cmd, "policy")) rc = cmd_policy(n, args);
    else if (!strcmp(cmd, "share")) rc = cmd_share(n, args);
    else if (!strcmp(cmd, "prio")) rc = cmd_prio(n, args);
    else if (!strcmp(cmd, "service")) rc = cmd_service(n, args);
    else if (!strcmp(cmd, "ledger")) rc = cli_ledger_main(n, args, call, g.json);
    else if (!strcmp(cmd, "usage")) rc = cli_usage_main(n, args, call, g.json);
    else if (!strcmp(cmd, "sim")) rc = sim_main(n, args, g.json);
    else if (!strcmp(cmd, "keys")) {
        /* Citizens' API keys live in the gateway's store (gateway/gw_keys.h). */
        char *kargs[n + 2];
        int k = 0;
        for (int i = 0; i < n; i++) {
            kargs[k++] = args[i];
            if (i == 1 && g.json) kargs[k++] = "--json";
        }
        kargs[k] = NULL;
        rc = gw_keys_cli(k, kargs);
    }
    else rc = usage_error("unknown command '%s'", cmd);
    free(args);
    cm_rpc_client_close(g.rpc);
    free(g.token);
    return rc;
}
