/* sim.c: `commons sim` replays a Standard Workload Format trace through the
 * quotas library's scheduling code (fair-share, priority, limits, EASY
 * backfill: quotas/quota_sim.h) in virtual time and reports wait times,
 * slowdown, utilization and each account's delivered share against its
 * policy share, as a table, JSON, CSV and an SVG plot.
 *
 * Mapping a trace onto a cluster (docs/simulator.md):
 *  - nodes: --nodes N or NxC (N nodes of C CPUs); default from the header's
 *    MaxNodes and MaxProcs (C = MaxProcs / MaxNodes), else MaxProcs 1-CPU nodes;
 *  - a job asking P processors (requested, else allocated) gets
 *    ceil(P / C) nodes with min(P, C) CPUs on each;
 *  - time limit: requested time, else its run time; it runs min(run, limit);
 *  - accounts: the trace's group (or user) id; a leaf account named like the
 *    id ("7", "g7" or "u7") takes it, else ids are spread over the leaves by
 *    id modulo the number of leaves;
 *  - records with no run time or no processors are skipped (and counted).
 */
#include "sim.h"

#include "quotas.h"
#include "quota_sim.h"
#include "quota_swf.h"
#include "table.h"
#include "cm_util.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sim_opts {
    const char *trace, *policy, *nodes, *json_path, *csv_path, *svg_path;
    int by_user;
    quota_sim_order order;
    quota_backfill backfill;
    long from, count; /* window: records from..from+count-1 (1-based), count 0 = all */
    int64_t bucket;
};

static int fail(const char *fmt, const char *a)
{
    fprintf(stderr, "commons sim: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    return 2;
}

static const char sim_usage[] =
    "usage: commons sim --trace FILE.swf[.gz] --policy POLICY.yaml [--nodes N|NxC]\n"
    "                   [--accounts-from group|user] [--priority fifo|multifactor]\n"
    "                   [--backfill none|easy] [--jobs FROM:COUNT] [--bucket DURATION]\n"
    "                   [--json FILE] [--csv FILE] [--svg FILE]\n";

static int parse_opts(int argc, char **argv, struct sim_opts *o)
{
    memset(o, 0, sizeof *o);
    o->order = QUOTA_SIM_MULTIFACTOR;
    o->backfill = QUOTA_BACKFILL_EASY;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(sim_usage, stdout);
            return 1;
        }
        if (!v) return fail("option '%s' needs a value (see commons sim --help)", a) ? -1 : -1;
        i++;
        if (!strcmp(a, "--trace")) o->trace = v;
        else if (!strcmp(a, "--policy")) o->policy = v;
        else if (!strcmp(a, "--nodes")) o->nodes = v;
        else if (!strcmp(a, "--json")) o->json_path = v;
        else if (!strcmp(a, "--csv")) o->csv_path = v;
        else if (!strcmp(a, "--svg")) o->svg_path = v;
        else if (!strcmp(a, "--accounts-from")) {
            if (strcmp(v, "group") && strcmp(v, "user")) return fail("--accounts-from: expected group or user, got '%s'", v), -1;
            o->by_user = !strcmp(v, "user");
        } else if (!strcmp(a, "--priority")) {
            if (strcmp(v, "fifo") && strcmp(v, "multifactor")) return fail("--priority: expected fifo or multifactor, got '%s'", v), -1;
            o->order = !strcmp(v, "fifo") ? QUOTA_SIM_FIFO : QUOTA_SIM_MULTIFACTOR;
        } else if (!strcmp(a, "--backfill")) {
            if (strcmp(v, "none") && strcmp(v, "easy")) return fail("--backfill: expected none or easy, got '%s'", v), -1;
            o->backfill = !strcmp(v, "none") ? QUOTA_BACKFILL_NONE : QUOTA_BACKFILL_EASY;
        } else if (!strcmp(a, "--jobs")) {
            char *end;
            o->from = strtol(v, &end, 10);
            if (*end != ':' || o->from < 1) return fail("--jobs: expected FROM:COUNT with FROM >= 1, got '%s'", v), -1;
            o->count = strtol(end + 1, &end, 10);
            if (*end || o->count < 1) return fail("--jobs: expected FROM:COUNT with COUNT >= 1, got '%s'", v), -1;
        } else if (!strcmp(a, "--bucket")) {
            o->bucket = cm_parse_duration(v);
            if (o->bucket <= 0) return fail("--bucket: expected a duration such as 1d or 6h, got '%s'", v), -1;
        } else return fail("unknown option '%s' (see commons sim --help)", a), -1;
    }
    if (!o->trace || !o->policy) return fail("%s", "--trace and --policy are required"), -1;
    return 0;
}

struct trace {
    quota_sim_job *jobs;
    size_t n, cap, skipped;
    int64_t max_procs, max_nodes;
    int64_t *ids; /* the trace's group or user id per job */
};

static int read_trace(const struct sim_opts *o, struct trace *t)
{
    size_t len = strlen(o->trace);
    FILE *f;
    int piped = len > 3 && !strcmp(o->trace + len - 3, ".gz");
    if (piped) {
        char cmd[4200];
        if (strchr(o->trace, '\'')) return fail("%s: file names with quotes are not supported", o->trace);
        snprintf(cmd, sizeof cmd, "gzip -dc '%s'", o->trace);
        f = popen(cmd, "r");
    } else {
        f = fopen(o->trace, "r");
    }
    if (!f) {
        fprintf(stderr, "commons sim: %s: %s\n", o->trace, strerror(errno));
        return 2;
    }
    char line[4096], err[256];
    long lineno = 0, record = 0;
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == ';') {
            long long v;
            if (sscanf(line, "; MaxProcs: %lld", &v) == 1) t->max_procs = v;
            if (sscanf(line, "; MaxNodes: %lld", &v) == 1) t->max_nodes = v;
            continue;
        }
        quota_swf_job s;
        int r = quota_swf_parse_line(line, &s, err, sizeof err);
        if (r < 0) {
            fprintf(stderr, "commons sim: %s:%ld: %s\n", o->trace, lineno, err);
            rc = 2;
            break;
        }
        if (r == 0) continue;
        record++;
        if (o->count && (record < o->from || record >= o->from + o->count)) continue;
        int64_t procs = s.req_procs > 0 ? s.req_procs : s.procs;
        if (s.runtime < 0 || procs <= 0 || s.submit < 0) {
            t->skipped++;
            continue;
        }
        if (t->n == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 4096;
            t->jobs = realloc(t->jobs, sizeof *t->jobs * t->cap);
            t->ids = realloc(t->ids, sizeof *t->ids * t->cap);
        }
        quota_sim_job *j = &t->jobs[t->n];
        memset(j, 0, sizeof *j);
        j->id = s.id;
        j->submit = s.submit;
        j->runtime = s.runtime;
        j->time_limit = s.req_time > 0 ? s.req_time : s.runtime;
        j->qos = -1;
        j->nodes = procs; /* per-node split once the node size is known */
        t->ids[t->n] = o->by_user ? s.user : s.group;
        t->n++;
    }
    if (piped) {
        if (pclose(f) != 0 && rc == 0) rc = fail("%s: gzip could not read it", o->trace);
    } else {
        fclose(f);
    }
    if (!rc && t->n == 0) rc = fail("%s: no jobs to simulate", o->trace);
    return rc;
}

/* Leaf account for a trace id. */
static int account_for(const quota_policy *p, const int *leaves, int nleaves, int64_t id, int by_user)
{
    char name[64];
    const char *forms[] = {"%lld", by_user ? "u%lld" : "g%lld"};
    for (int k = 0; k < 2; k++) {
        snprintf(name, sizeof name, forms[k], (long long)id);
        int a = quota_account_find(p, name);
        if (a >= 0 && p->accounts[a].nchildren == 0) return a;
    }
    int64_t m = id < 0 ? -id : id;
    return leaves[m % nleaves];
}

/* Each leaf's share of the whole cluster by policy: the product of its and
 * its ancestors' normalized shares. */
static void policy_shares(const quota_policy *p, double *share)
{
    quota_share_row *rows = calloc((size_t)p->naccounts, sizeof *rows);
    double *zero = calloc((size_t)p->naccounts, sizeof *zero);
    quota_fairshare(p, zero, rows);
    for (int a = 0; a < p->naccounts; a++) {
        double s = 1;
        for (int x = a; x > 0; x = p->accounts[x].parent) s *= rows[x].norm_shares;
        share[a] = s;
    }
    free(rows);
    free(zero);
}

static void write_svg(FILE *f, const quota_policy *p, const quota_sim_result *r, const int *leaves, int nleaves,
                      const double *target)
{
    static const char *const colors[] = {"#1b6ca8", "#d1495b", "#edae49", "#00798c", "#66a182", "#8d6a9f", "#3d405b", "#e07a5f"};
    const int W = 900, H = 420, L = 60, R = 180, T = 30, B = 50;
    double pw = W - L - R, ph = H - T - B;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%d\" y=\"18\" font-size=\"14\">Delivered share per account (solid) vs policy share (dashed), per %.3g-day bucket</text>\n",
            L, (double)r->bucket / 86400);
    for (int k = 0; k <= 4; k++) {
        double y = T + ph - ph * k / 4;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%d%%</text>\n",
                L, y, L + pw, y, L - 6, y + 4, k * 25);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">time (buckets of %lld s since the first submission)</text>\n", L + pw / 2, H - 12,
            (long long)r->bucket);
    int nb = r->nbuckets > 0 ? r->nbuckets : 1;
    for (int i = 0; i < nleaves; i++) {
        int a = leaves[i];
        const char *col = colors[i % 8];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
        for (int b = 0; b < r->nbuckets; b++) {
            double tot = 0;
            for (int k = 0; k < nleaves; k++) tot += r->delivered[(size_t)b * r->naccounts + leaves[k]];
            double s = tot > 0 ? r->delivered[(size_t)b * r->naccounts + a] / tot : 0;
            fprintf(f, "%.1f,%.1f ", L + pw * (b + 0.5) / nb, T + ph - ph * s);
        }
        fprintf(f, "\"/>\n<line x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-dasharray=\"6 4\"/>\n", L, L + pw,
                T + ph - ph * target[a], T + ph - ph * target[a], col);
        fprintf(f, "<rect x=\"%.1f\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%.1f\" y=\"%d\">%s (%.1f%%)</text>\n",
                L + pw + 12, T + 18 * i, col, L + pw + 30, T + 18 * i + 11, p->accounts[a].name, 100 * target[a]);
    }
    fprintf(f, "</svg>\n");
}

int sim_main(int argc, char **argv, int json)
{
    struct sim_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc) return rc > 0 ? 0 : 2;
    quota_diags d;
    quota_diags_init(&d);
    quota_policy *p = NULL;
    if (quota_policy_load_file(o.policy, &p, &d) != QUOTA_OK) {
        quota_diags_print(&d, stderr);
        quota_diags_free(&d);
        return 2;
    }
    quota_diags_free(&d);
    struct trace t = {0};
    if ((rc = read_trace(&o, &t)) != 0) goto out;

    int64_t nnodes, cpn;
    if (o.nodes) {
        char *end;
        nnodes = strtoll(o.nodes, &end, 10);
        cpn = 1;
        if (*end == 'x') cpn = strtoll(end + 1, &end, 10);
        if (*end || nnodes < 1 || cpn < 1 || nnodes > 1000000) {
            rc = fail("--nodes: expected N or NxC (N nodes of C CPUs), got '%s'", o.nodes);
            goto out;
        }
    } else if (t.max_nodes > 0 && t.max_procs >= t.max_nodes) {
        nnodes = t.max_nodes;
        cpn = t.max_procs / t.max_nodes;
    } else if (t.max_procs > 0 || t.max_nodes > 0) {
        nnodes = t.max_procs > 0 ? t.max_procs : t.max_nodes;
        cpn = 1;
    } else {
        rc = fail("%s: the header gives no MaxProcs/MaxNodes; say --nodes N or NxC", o.trace);
        goto out;
    }
    int *leaves = malloc(sizeof *leaves * (size_t)p->naccounts), nleaves = 0;
    for (int a = 0; a < p->naccounts; a++)
        if (p->accounts[a].nchildren == 0 && a > 0) leaves[nleaves++] = a;
    /* The simulator starts the trace on an empty machine at its first submission. */
    int64_t t0 = INT64_MAX;
    for (size_t i = 0; i < t.n; i++)
        if (t.jobs[i].submit < t0) t0 = t.jobs[i].submit;
    for (size_t i = 0; i < t.n; i++) {
        quota_sim_job *j = &t.jobs[i];
        int64_t procs = j->nodes;
        j->submit -= t0;
        j->nodes = (procs + cpn - 1) / cpn;
        j->per_node.cpus = procs < cpn ? procs : cpn;
        j->account = account_for(p, leaves, nleaves, t.ids[i], o.by_user);
    }
    quota_sim_config cfg = {.policy = p, .nnodes = (int)nnodes, .node = {.cpus = cpn, .gpus = 0, .mem = 0},
                            .order = o.order, .backfill = o.backfill, .limits = true, .bucket = o.bucket};
    quota_sim_result r;
    char err[512];
    if (quota_sim_run(&cfg, t.jobs, t.n, &r, err, sizeof err) != QUOTA_OK) {
        fprintf(stderr, "commons sim: %s\n", err);
        free(leaves);
        rc = 1;
        goto out;
    }
    double *target = calloc((size_t)p->naccounts, sizeof *target), *total = calloc((size_t)p->naccounts, sizeof *total);
    policy_shares(p, target);
    double all = 0;
    for (int b = 0; b < r.nbuckets; b++)
        for (int i = 0; i < nleaves; i++) {
            total[leaves[i]] += r.delivered[(size_t)b * r.naccounts + leaves[i]];
            all += r.delivered[(size_t)b * r.naccounts + leaves[i]];
        }
    json_t *rep = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:I, s:I, s:I}",
                            "trace", o.trace, "policy", o.policy, "priority", o.order == QUOTA_SIM_FIFO ? "fifo" : "multifactor",
                            "backfill", o.backfill == QUOTA_BACKFILL_EASY ? "easy" : "none", "nodes", (json_int_t)nnodes,
                            "cpus_per_node", (json_int_t)cpn, "jobs", (json_int_t)r.jobs, "started", (json_int_t)r.started,
                            "never_started", (json_int_t)r.never, "skipped_records", (json_int_t)t.skipped,
                            "mean_wait_s", r.mean_wait, "median_wait_s", r.median_wait, "mean_bounded_slowdown",
                            r.mean_bounded_slowdown, "utilization", r.utilization, "makespan_s", (json_int_t)r.makespan,
                            "passes", (json_int_t)r.passes, "bucket_s", (json_int_t)r.bucket);
    json_t *accts = json_array();
    for (int i = 0; i < nleaves; i++) {
        int a = leaves[i];
        json_t *series = json_array();
        for (int b = 0; b < r.nbuckets; b++) {
            double tot = 0;
            for (int k = 0; k < nleaves; k++) tot += r.delivered[(size_t)b * r.naccounts + leaves[k]];
            json_array_append_new(series, json_real(tot > 0 ? r.delivered[(size_t)b * r.naccounts + a] / tot : 0));
        }
        json_array_append_new(accts, json_pack("{s:s, s:f, s:f, s:f, s:o}", "account", p->accounts[a].name, "policy_share",
                                               target[a], "delivered_share", all > 0 ? total[a] / all : 0, "delivered_units",
                                               total[a], "delivered_share_per_bucket", series));
    }
    json_object_set_new(rep, "accounts", accts);
    if (json) {
        json_dumpf(rep, stdout, JSON_INDENT(2));
        putchar('\n');
    } else {
        printf("Trace %s: %zu jobs (%zu records skipped), %lld nodes x %lld CPUs, priority %s, backfill %s\n", o.trace, r.jobs,
               t.skipped, (long long)nnodes, (long long)cpn, o.order == QUOTA_SIM_FIFO ? "fifo" : "multifactor",
               o.backfill == QUOTA_BACKFILL_EASY ? "easy" : "none");
        printf("  started %zu, never started %zu\n  mean wait %.0f s, median wait %.0f s, mean bounded slowdown (tau 10 s) %.2f\n"
               "  utilization %.1f%%, makespan %.2f days, %lld scheduling passes\n\n",
               r.started, r.never, r.mean_wait, r.median_wait, r.mean_bounded_slowdown, 100 * r.utilization,
               (double)r.makespan / 86400, (long long)r.passes);
        static const char *const h[] = {"ACCOUNT", "POLICY_SHARE", "DELIVERED_SHARE", "DIFF(pp)"};
        struct table *tb = table_new(4, h);
        for (int i = 0; i < nleaves; i++) {
            int a = leaves[i];
            double ds = all > 0 ? total[a] / all : 0;
            table_addf(tb, "%s\t%.1f%%\t%.1f%%\t%+.1f", p->accounts[a].name, 100 * target[a], 100 * ds, 100 * (ds - target[a]));
        }
        table_print(tb, stdout);
        table_free(tb);
    }
    if (o.json_path) {
        if (json_dump_file(rep, o.json_path, JSON_INDENT(2)) != 0) rc = fail("cannot write %s", o.json_path);
    }
    if (o.csv_path) {
        FILE *f = fopen(o.csv_path, "w");
        if (!f) rc = fail("cannot write %s", o.csv_path);
        else {
            fprintf(f, "bucket_start_s,account,policy_share,delivered_share,delivered_units\n");
            for (int b = 0; b < r.nbuckets; b++) {
                double tot = 0;
                for (int k = 0; k < nleaves; k++) tot += r.delivered[(size_t)b * r.naccounts + leaves[k]];
                for (int i = 0; i < nleaves; i++) {
                    double u = r.delivered[(size_t)b * r.naccounts + leaves[i]];
                    fprintf(f, "%lld,%s,%.6f,%.6f,%.3f\n", (long long)(b * r.bucket), p->accounts[leaves[i]].name, target[leaves[i]],
                            tot > 0 ? u / tot : 0, u);
                }
            }
            fclose(f);
        }
    }
    if (o.svg_path) {
        FILE *f = fopen(o.svg_path, "w");
        if (!f) rc = fail("cannot write %s", o.svg_path);
        else {
            write_svg(f, p, &r, leaves, nleaves, target);
            fclose(f);
        }
    }
    json_decref(rep);
    free(target);
    free(total);
    free(leaves);
    quota_sim_result_free(&r);
out:
    free(t.jobs);
    free(t.ids);
    quota_policy_free(p);
    return rc;
}
