/* test_sim.c: the simulator on small hand-made traces with known answers
 * (FCFS order, a backfilled job, a reservation not delayed, limits, decay),
 * the 50/30/20 fairness run, SWF parsing, and a real trace replayed with the
 * schedule checked for feasibility. */
#include <math.h>
#include <stdlib.h>

#include "qtest.h"
#include "quota_sim.h"
#include "quota_swf.h"

static quota_policy *policy(const char *text)
{
    quota_policy *p;
    quota_diags d;
    int rc = qt_load(text, &p, &d);
    if (rc)
        quota_diags_print(&d, stderr);
    ck_assert_int_eq(rc, QUOTA_OK);
    quota_diags_free(&d);
    return p;
}

static const char *one_account = "accounts: {a: , b: }\n"
                                 "users: {u: {default_account: a, accounts: [b]}}\n";

static quota_sim_job J(int64_t id, int64_t submit, int64_t cpus, int64_t runtime, int64_t tl,
                       int account)
{
    quota_sim_job j = {.id = id, .submit = submit, .runtime = runtime, .time_limit = tl,
                       .account = account, .qos = -1, .nodes = 1, .per_node = {cpus, 0, 0}};
    return j;
}

static void run_sim(quota_sim_config *c, quota_sim_job *jobs, size_t n, quota_sim_result *r)
{
    char err[256] = "";
    int rc = quota_sim_run(c, jobs, n, r, err, sizeof err);
    ck_assert_msg(rc == QUOTA_OK, "sim: %s", err);
}

/* One 4-CPU node. J1 (3 CPUs, 0-100), J2 (4 CPUs) must wait for it, J3 and J4
 * (1 CPU) arrive after J2. */
static void four_jobs(quota_sim_job *j, int a)
{
    j[0] = J(1, 0, 3, 100, 100, a);
    j[1] = J(2, 1, 4, 50, 50, a);
    j[2] = J(3, 2, 1, 10, 10, a);
    j[3] = J(4, 3, 1, 200, 200, a);
}

START_TEST(fcfs_order)
{
    quota_policy *p = policy(one_account);
    quota_sim_config c = {.policy = p, .nnodes = 1, .node = {4, 0, 0},
                          .order = QUOTA_SIM_FIFO, .backfill = QUOTA_BACKFILL_NONE};
    quota_sim_job j[4];
    four_jobs(j, 1);
    quota_sim_result r;
    run_sim(&c, j, 4, &r);
    /* Strict order: J3 and J4 wait behind J2 although a CPU is free. */
    ck_assert_int_eq(j[0].start, 0);
    ck_assert_int_eq(j[1].start, 100);
    ck_assert_int_eq(j[2].start, 150);
    ck_assert_int_eq(j[3].start, 150);
    ck_assert_int_eq(r.started, 4);
    ck_assert_double_eq_tol(r.mean_wait, (0 + 99 + 148 + 147) / 4.0, 1e-9);
    ck_assert_double_eq_tol(r.median_wait, (99 + 147) / 2.0, 1e-9);
    ck_assert_int_eq(r.makespan, 350);
    /* CPU-seconds: 300 + 200 + 10 + 200 = 710 of 4 * 350. */
    ck_assert_double_eq_tol(r.utilization, 710.0 / 1400.0, 1e-9);
    /* Bounded slowdown (tau 10): J1 1, J2 149/50, J3 158/10, J4 347/200. */
    ck_assert_double_eq_tol(r.mean_bounded_slowdown,
                            (1 + 149.0 / 50 + 158.0 / 10 + 347.0 / 200) / 4, 1e-9);
    quota_sim_result_free(&r);
    quota_policy_free(p);
}
END_TEST

/* EASY: J2 is reserved at 100 (when J1's limit ends). J3 (10 s) fits in the
 * free CPU and ends long before: backfilled at 2. J4 (200 s) would still hold
 * the CPU at 100 and delay J2: it waits, and J2 starts exactly at 100. */
START_TEST(easy_backfill)
{
    quota_policy *p = policy(one_account);
    quota_sim_config c = {.policy = p, .nnodes = 1, .node = {4, 0, 0},
                          .order = QUOTA_SIM_FIFO, .backfill = QUOTA_BACKFILL_EASY};
    quota_sim_job j[4];
    four_jobs(j, 1);
    quota_sim_result r;
    run_sim(&c, j, 4, &r);
    ck_assert_int_eq(j[2].start, 2);
    ck_assert_int_eq(j[2].end, 12);
    ck_assert_int_eq(j[1].start, 100); /* the reservation is not delayed */
    ck_assert_int_eq(j[3].start, 150);
    quota_sim_result_free(&r);
    quota_policy_free(p);
}
END_TEST

/* A job runs min(runtime, limit): the trace's 500 s job with a 100 s limit is
 * killed at 100, and the scheduler plans with the limit, not the runtime. */
START_TEST(killed_at_time_limit)
{
    quota_policy *p = policy(one_account);
    quota_sim_config c = {.policy = p, .nnodes = 1, .node = {1, 0, 0},
                          .order = QUOTA_SIM_FIFO, .backfill = QUOTA_BACKFILL_EASY};
    quota_sim_job j[2] = {J(1, 0, 1, 500, 100, 1), J(2, 0, 1, 5, 1000, 1)};
    quota_sim_result r;
    run_sim(&c, j, 2, &r);
    ck_assert_int_eq(j[0].end, 100);
    ck_assert_int_eq(j[1].start, 100);
    quota_sim_result_free(&r);
    quota_policy_free(p);
}
END_TEST

/* max_running_jobs: 1 on account a serialises its jobs on an idle cluster,
 * while b's job runs at once; a job too big for the cluster never starts. */
START_TEST(limits_hold_jobs)
{
    quota_policy *p = policy("accounts: {a: {limits: {max_running_jobs: 1}}, b: }\n"
                             "users: {u: {default_account: a, accounts: [b]}}\n");
    quota_sim_config c = {.policy = p, .nnodes = 2, .node = {4, 0, 0},
                          .order = QUOTA_SIM_FIFO, .backfill = QUOTA_BACKFILL_EASY,
                          .limits = true};
    int a = quota_account_find(p, "a"), b = quota_account_find(p, "b");
    quota_sim_job j[4] = {J(1, 0, 1, 60, 60, a), J(2, 0, 1, 60, 60, a), J(3, 0, 1, 60, 60, b),
                          J(4, 0, 9, 60, 60, b)};
    quota_sim_result r;
    run_sim(&c, j, 4, &r);
    ck_assert_int_eq(j[0].start, 0);
    ck_assert_int_eq(j[1].start, 60);
    ck_assert_int_eq(j[2].start, 0);
    ck_assert_int_eq(j[3].start, -1);
    ck_assert_uint_eq(r.never, 1);
    ck_assert_uint_eq(r.started, 3);
    /* Without limits both of a's jobs start at once. */
    c.limits = false;
    quota_sim_result_free(&r);
    run_sim(&c, j, 4, &r);
    ck_assert_int_eq(j[1].start, 0);
    quota_sim_result_free(&r);
    quota_policy_free(p);
}
END_TEST

/* Decay decides who goes first. A used the single CPU for 100000 s at day 0,
 * B for 3600 s at day 9. At day 10 both submit a job (A's first by id).
 * With a 30-day half-life A is still the heavier user, so B goes first; with a
 * 1-hour half-life A's old usage is forgotten (decayed 2^-212) while B's
 * (2^-23) is not, so A goes first. */
static void decay_case(const char *half_life, int64_t *a_start, int64_t *b_start)
{
    char text[512];
    snprintf(text, sizeof text,
             "usage: {decay_half_life: %s}\n"
             "priority: {weights: {fairshare: 1000, age: 0, job_size: 0, qos: 0}}\n"
             "accounts: {A: , B: }\nusers: {u: {default_account: A, accounts: [B]}}\n",
             half_life);
    quota_policy *p = policy(text);
    int A = quota_account_find(p, "A"), B = quota_account_find(p, "B");
    quota_sim_config c = {.policy = p, .nnodes = 1, .node = {1, 0, 0},
                          .order = QUOTA_SIM_MULTIFACTOR, .backfill = QUOTA_BACKFILL_EASY};
    int64_t day = 86400;
    quota_sim_job j[4] = {J(1, 0, 1, 100000, 100000, A), J(2, 9 * day, 1, 3600, 3600, B),
                          J(3, 10 * day, 1, 10, 10, A), J(4, 10 * day, 1, 10, 10, B)};
    quota_sim_result r;
    run_sim(&c, j, 4, &r);
    *a_start = j[2].start - 10 * day;
    *b_start = j[3].start - 10 * day;
    quota_sim_result_free(&r);
    quota_policy_free(p);
}

START_TEST(decay_changes_order)
{
    int64_t a, b;
    decay_case("30d", &a, &b);
    ck_assert_int_eq(b, 0);
    ck_assert_int_eq(a, 10);
    decay_case("1h", &a, &b);
    ck_assert_int_eq(a, 0);
    ck_assert_int_eq(b, 10);
}
END_TEST

/* Three accounts with shares 50/30/20 keep 16 nodes oversubscribed for a week
 * (700 jobs each, 1 node for 20 min to 6 h, submitted at t=0): their
 * delivered shares over the 7 days are within 3 points of 50/30/20. */
START_TEST(fairness_50_30_20)
{
    quota_policy *p = policy("accounts: {A: {shares: 50}, B: {shares: 30}, C: {shares: 20}}\n"
                             "users: {u: {default_account: A, accounts: [B, C]}}\n");
    int acct[3] = {quota_account_find(p, "A"), quota_account_find(p, "B"),
                   quota_account_find(p, "C")};
    const size_t n = 2100;
    quota_sim_job *j = calloc(n, sizeof *j);
    unsigned seed = 7;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        int64_t runtime = 1200 + (int64_t)((seed >> 8) % (6 * 3600 - 1200));
        j[i] = J((int64_t)i + 1, 0, 4, runtime, 6 * 3600, acct[i % 3]);
    }
    quota_sim_config c = {.policy = p, .nnodes = 16, .node = {4, 0, 0},
                          .order = QUOTA_SIM_MULTIFACTOR, .backfill = QUOTA_BACKFILL_EASY,
                          .bucket = 86400};
    quota_sim_result r;
    run_sim(&c, j, n, &r);
    ck_assert_int_ge(r.nbuckets, 7);
    double got[3] = {0}, total = 0;
    for (int b = 0; b < 7; b++)
        for (int k = 0; k < 3; k++) {
            got[k] += r.delivered[b * r.naccounts + acct[k]];
            total += r.delivered[b * r.naccounts + acct[k]];
        }
    /* The cluster was full all week: 16 nodes * 4 CPUs * 7 days. */
    ck_assert_double_eq_tol(total, 16.0 * 4 * 7 * 86400, 16.0 * 4 * 7 * 86400 * 0.01);
    const double want[3] = {0.5, 0.3, 0.2};
    for (int k = 0; k < 3; k++)
        ck_assert_msg(fabs(got[k] / total - want[k]) <= 0.03, "account %d got %.3f, want %.2f",
                      k, got[k] / total, want[k]);
    ck_assert_uint_eq(r.started, n);
    quota_sim_result_free(&r);
    free(j);
    quota_policy_free(p);
}
END_TEST

START_TEST(swf_lines)
{
    quota_swf_job s;
    char err[128];
    ck_assert_int_eq(quota_swf_parse_line("; Version: 2", &s, err, sizeof err), 0);
    ck_assert_int_eq(quota_swf_parse_line("   \n", &s, err, sizeof err), 0);
    ck_assert_int_eq(quota_swf_parse_line("1 5094 -1 12072 16 -1 -1 32 14400 -1 1 7 3 -1 0 -1 "
                                          "-1 -1\n",
                                          &s, err, sizeof err),
                     1);
    ck_assert_int_eq(s.id, 1);
    ck_assert_int_eq(s.submit, 5094);
    ck_assert_int_eq(s.runtime, 12072);
    ck_assert_int_eq(s.procs, 16);
    ck_assert_int_eq(s.req_procs, 32);
    ck_assert_int_eq(s.req_time, 14400);
    ck_assert_int_eq(s.user, 7);
    ck_assert_int_eq(s.group, 3);
    ck_assert_int_eq(s.think, -1);
    /* 16 processors on 8-CPU nodes: 2 nodes of 8; the limit is the request. */
    quota_sim_job j;
    ck_assert_int_eq(quota_swf_to_sim(&s, 8, 1, -1, &j), 0);
    ck_assert_int_eq(j.nodes, 2);
    ck_assert_int_eq(j.per_node.cpus, 8);
    ck_assert_int_eq(j.time_limit, 14400);
    ck_assert_int_eq(j.runtime, 12072);
    /* 5 processors on 4-CPU nodes: 2 nodes of 3 (rounded up, never less). */
    s.procs = 5;
    s.req_time = -1;
    ck_assert_int_eq(quota_swf_to_sim(&s, 4, 1, -1, &j), 0);
    ck_assert_int_eq(j.nodes, 2);
    ck_assert_int_eq(j.per_node.cpus, 3);
    ck_assert_int_eq(j.time_limit, 12072);
    s.runtime = -1; /* cancelled before it ran */
    ck_assert_int_eq(quota_swf_to_sim(&s, 4, 1, -1, &j), -1);
    ck_assert_int_eq(quota_swf_parse_line("1 2 3", &s, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "only 3 of the 18"));
    ck_assert_int_eq(quota_swf_parse_line("1 2 x 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18", &s,
                                          err, sizeof err),
                     -1);
    ck_assert_ptr_nonnull(strstr(err, "field 3"));
    ck_assert_int_eq(quota_swf_parse_line("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19", &s,
                                          err, sizeof err),
                     -1);
}
END_TEST

/* Replays the first 1000 jobs of a real trace (256 one-CPU nodes) both ways
 * and checks the schedules are feasible: no job starts before it is
 * submitted, no node is ever over-committed, FCFS starts jobs in submit
 * order, and every job runs. */
static size_t load_trace(quota_sim_job *jobs, size_t max, int account)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/workloads/lublin_256.swf", COMMONS_SHARED_DATA);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s (COMMONS_SHARED_DATA)", path);
    char line[512], err[128];
    size_t n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        quota_swf_job s;
        int rc = quota_swf_parse_line(line, &s, err, sizeof err);
        ck_assert_msg(rc >= 0, "%s: %s", path, err);
        if (rc == 0)
            continue;
        if (quota_swf_to_sim(&s, 1, account, -1, &jobs[n]) == 0)
            n++;
    }
    fclose(f);
    return n;
}

static void check_feasible(const quota_sim_job *j, size_t n, int64_t nodes)
{
    /* At each job start, the nodes of all jobs running then fit the cluster
     * (usage only rises at starts, so checking there suffices). */
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_ge(j[i].start, j[i].submit);
        int64_t used = 0;
        for (size_t o = 0; o < n; o++)
            if (j[o].start <= j[i].start && j[o].end > j[i].start)
                used += j[o].nodes;
        ck_assert_int_le(used, nodes);
    }
}

START_TEST(real_trace_feasible)
{
    quota_policy *p = policy(one_account);
    const size_t max = 1000;
    quota_sim_job *j = calloc(max, sizeof *j);
    size_t n = load_trace(j, max, 1);
    ck_assert_uint_gt(n, 900);
    quota_sim_config c = {.policy = p, .nnodes = 256, .node = {1, 0, 0},
                          .order = QUOTA_SIM_FIFO, .backfill = QUOTA_BACKFILL_NONE};
    quota_sim_result fcfs, easy;
    run_sim(&c, j, n, &fcfs);
    ck_assert_uint_eq(fcfs.started, n);
    check_feasible(j, n, 256);
    for (size_t i = 1; i < n; i++) /* loaded in submit order */
        ck_assert_int_ge(j[i].start, j[i - 1].start);
    c.backfill = QUOTA_BACKFILL_EASY;
    run_sim(&c, j, n, &easy);
    ck_assert_uint_eq(easy.started, n);
    check_feasible(j, n, 256);
    ck_assert(easy.utilization > 0 && easy.utilization <= 1.0);
    ck_assert(easy.mean_wait <= fcfs.mean_wait);
    quota_sim_result_free(&fcfs);
    quota_sim_result_free(&easy);
    free(j);
    quota_policy_free(p);
}
END_TEST

START_TEST(bad_config)
{
    quota_policy *p = policy(one_account);
    quota_sim_config c = {.policy = p, .nnodes = 1, .node = {4, 0, 0}};
    quota_sim_job j = J(9, 0, 1, 10, 10, 0); /* the root is not a leaf account */
    quota_sim_result r;
    char err[128];
    ck_assert_int_eq(quota_sim_run(&c, &j, 1, &r, err, sizeof err), QUOTA_EARG);
    ck_assert_ptr_nonnull(strstr(err, "job 9"));
    c.nnodes = 0;
    ck_assert_int_eq(quota_sim_run(&c, NULL, 0, &r, err, sizeof err), QUOTA_EARG);
    quota_policy_free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("quota_sim");
    TCase *t = tcase_create("sim");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, fcfs_order);
    tcase_add_test(t, easy_backfill);
    tcase_add_test(t, killed_at_time_limit);
    tcase_add_test(t, limits_hold_jobs);
    tcase_add_test(t, decay_changes_order);
    tcase_add_test(t, fairness_50_30_20);
    tcase_add_test(t, swf_lines);
    tcase_add_test(t, real_trace_feasible);
    tcase_add_test(t, bad_config);
    suite_add_tcase(s, t);
    return qt_run(s);
}
