/* sched_bench: one full commonsd scheduling pass (priority recomputation with
 * Fair Tree + EASY backfill) with many pending jobs on many nodes, using the
 * scheduler's own code (scheduler/cluster.h) on a temporary store, and the
 * memory each pending job costs.
 *
 *   sched_bench [PENDING] [NODES]     (defaults: 100000 10000)
 *
 * Nodes have 64 CPUs; a tenth of the pending jobs are submitted first and
 * fill part of the cluster in the first pass; the timed passes then see a
 * busy cluster with the rest pending, as a scheduler does all day. */
#include "cluster.h"

#include "cm_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char policy_text[] =
    "version: 1\n"
    "priority: {weights: {fairshare: 10000, age: 1000, job_size: 100, qos: 1000}, max_age: 7d}\n"
    "accounts:\n"
    "  nation:\n"
    "    children:\n"
    "      uni-a: {shares: 40, children: {a1: {shares: 1}, a2: {shares: 1}, a3: {shares: 2}}}\n"
    "      uni-b: {shares: 35, children: {b1: {shares: 1}, b2: {shares: 3}}}\n"
    "      uni-c: {shares: 25, children: {c1: {shares: 1}, c2: {shares: 1}, c3: {shares: 1}}}\n"
    "users:\n"
    "  u1: {default_account: a1, accounts: [a2, a3, b1, b2, c1, c2, c3]}\n";

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

/* CPU time of this process: the machine is shared, so wall time is noisier. */
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    long npending = argc > 1 ? atol(argv[1]) : 100000, nnodes = argc > 2 ? atol(argv[2]) : 10000;
    char dir[] = "/tmp/sched-bench-XXXXXX", err[4096], *report = NULL;
    if (!mkdtemp(dir)) return 1;
    static struct cluster c;
    c.node_timeout_ms = 1 << 30;
    c.backfill = QUOTA_BACKFILL_EASY;
    if (store_open(&c.store, dir, STORE_SYNC_NORMAL, err, sizeof err) || cluster_load(&c, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    store_begin(&c.store);
    if (cluster_policy_apply(&c, policy_text, strlen(policy_text), "bench", "bench", &report, err, sizeof err)) {
        fprintf(stderr, "%s\n%s", err, report);
        return 1;
    }
    free(report);
    for (long i = 0; i < nnodes; i++) {
        char name[32];
        snprintf(name, sizeof name, "n%05ld", i);
        cluster_node_register(&c, name, name, 64, 256 * 1024, i % 8 == 0 ? 8 : 0, NULL, err, sizeof err);
    }
    struct user *u = cluster_user(&c, "u1");
    static const char *const accounts[] = {"a1", "a2", "a3", "b1", "b2", "c1", "c2", "c3"};
    long rss0 = rss_kb();
    double t0 = now_ms();
    srand(7);
    for (long i = 0; i < npending; i++) {
        char text[512];
        int cpus = 1 << (rand() % 7), nodes = rand() % 50 == 0 ? 1 + rand() % 16 : 1;
        snprintf(text, sizeof text,
                 "{\"command\":[\"true\"],\"workdir\":\"/tmp\",\"account\":\"%s\",\"nodes\":%d,\"tasks\":%d,"
                 "\"cpus_per_task\":%d,\"time_limit_s\":%d,\"gpus\":%d}",
                 accounts[rand() % 8], nodes, nodes, cpus, 600 + rand() % 86000, rand() % 20 == 0 ? 1 : 0);
        json_t *spec = json_loads(text, 0, NULL);
        struct job_spec s;
        const char *code;
        if (job_spec_validate(spec, &s, err, sizeof err) != 0 || cluster_submit(&c, u, &s, &code, err, sizeof err) < 0) {
            fprintf(stderr, "submit: %s\n", err);
            return 1;
        }
        job_spec_free(&s);
        json_decref(spec);
    }
    double t_submit = now_ms() - t0;
    long rss1 = rss_kb();
    store_commit(&c.store);
    /* First pass fills the empty cluster; later passes are the steady state. */
    store_begin(&c.store);
    t0 = now_ms();
    int started = cluster_schedule(&c);
    double first = now_ms() - t0;
    if (getenv("SCHED_BENCH_DEBUG"))
        for (size_t i = 0; i < 5 && i < c.npending; i++)
            fprintf(stderr, "job %lld: %s\n", (long long)c.pending[i], c.jobs[c.pending[i]]->reason);
    double best = 1e30, total = 0;
    int passes = 5;
    for (int k = 0; k < passes; k++) {
        t0 = now_ms();
        cluster_schedule(&c);
        double dt = now_ms() - t0;
        total += dt;
        if (dt < best) best = dt;
    }
    store_commit(&c.store);
    char cpu[256] = "unknown";
    FILE *f = popen("lscpu | sed -n 's/^Model name: *//p'", "r");
    if (f && fgets(cpu, sizeof cpu, f)) cpu[strcspn(cpu, "\n")] = '\0';
    if (f) pclose(f);
    printf("| pending jobs | nodes | jobs started by first pass | first pass CPU ms | steady pass CPU ms (best of %d) | mean CPU ms | submit in memory+SQL us/job | memory per pending job (bytes) |\n",
           passes);
    printf("|---|---|---|---|---|---|---|---|\n");
    printf("| %ld | %ld | %d | %.0f | %.0f | %.0f | %.1f | %.0f |\n", npending, nnodes, started, first, best, total / passes,
           1000.0 * t_submit / npending, (double)(rss1 - rss0) * 1024 / npending);
    printf("machine: %s, %ld CPUs\n", cpu, sysconf(_SC_NPROCESSORS_ONLN));
    cluster_free(&c);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}
