/* test_priority_limits.c: multifactor priority factors, limits, budgets and
 * submit-time checks, with pending reasons. */
#include <stdlib.h>

#include "qtest.h"

static const char *policy_text =
    "priority:\n"
    "  weights: {fairshare: 10000, age: 1000, job_size: 500, qos: 2000}\n"
    "  max_age: 2d\n"
    "qos:\n"
    "  normal: {priority: 100, max_wall: 1d}\n"
    "  short: {priority: 1000, max_wall: 1h}\n"
    "accounts:\n"
    "  uni:\n"
    "    limits:\n"
    "      max_running_cpus: 100\n"
    "      max_running_gpus: 4\n"
    "      max_running_memory: 1T\n"
    "      budget: {period: month, gpu_hours: 10}\n"
    "    children:\n"
    "      phys:\n"
    "        limits: {max_running_jobs: 2, max_queued_jobs: 3, max_wall: 12h,\n"
    "                 max_running_memory: 64G}\n"
    "      chem:\n"
    "  other:\n"
    "users:\n"
    "  alice: {default_account: phys}\n"
    "  bob: {default_account: chem}\n"
    "  admin: {default_account: other, admin: true}\n";

typedef struct fx {
    quota_policy *p;
    quota_diags d;
    quota_state *st;
    int uni, phys, chem, normal, shrt;
} fx;

static void fx_init(fx *f)
{
    int rc = qt_load(policy_text, &f->p, &f->d);
    if (rc)
        quota_diags_print(&f->d, stderr);
    ck_assert_int_eq(rc, QUOTA_OK);
    f->st = calloc((size_t)f->p->naccounts, sizeof *f->st);
    f->uni = quota_account_find(f->p, "uni");
    f->phys = quota_account_find(f->p, "phys");
    f->chem = quota_account_find(f->p, "chem");
    f->normal = quota_qos_find(f->p, "normal");
    f->shrt = quota_qos_find(f->p, "short");
}

static void fx_free(fx *f)
{
    quota_policy_free(f->p);
    quota_diags_free(&f->d);
    free(f->st);
}

static quota_request job(int account, int qos, int64_t cpus, int64_t gpus, int64_t mem,
                         int64_t t)
{
    quota_request r = {.account = account, .qos = qos, .cpus = cpus, .gpus = gpus,
                       .mem = mem, .time_limit = t};
    return r;
}

START_TEST(priority_factors)
{
    fx f;
    fx_init(&f);
    /* fs 0.5*10000 + age (1d/2d)*1000 + size (16/64)*500 + qos (100/1000)*2000 */
    quota_prio r = quota_priority(f.p, 0.5, 86400, 16, 64, f.normal);
    ck_assert_double_eq_tol(r.factor.fairshare, 0.5, 1e-12);
    ck_assert_double_eq_tol(r.factor.age, 0.5, 1e-12);
    ck_assert_double_eq_tol(r.factor.size, 0.25, 1e-12);
    ck_assert_double_eq_tol(r.factor.qos, 0.1, 1e-12);
    ck_assert_double_eq_tol(r.weighted.fairshare, 5000, 1e-9);
    ck_assert_double_eq_tol(r.weighted.age, 500, 1e-9);
    ck_assert_double_eq_tol(r.weighted.size, 125, 1e-9);
    ck_assert_double_eq_tol(r.weighted.qos, 200, 1e-9);
    ck_assert_double_eq_tol(r.total, 5825, 1e-9);
    /* Age caps at max_age; a future submit time counts as 0; factors clamp. */
    ck_assert_double_eq(quota_priority(f.p, 0.5, 10 * 86400, 1, 64, -1).factor.age, 1.0);
    ck_assert_double_eq(quota_priority(f.p, 0.5, -30, 1, 64, -1).factor.age, 0.0);
    ck_assert_double_eq(quota_priority(f.p, 3.0, 0, 1, 64, -1).factor.fairshare, 1.0);
    ck_assert_double_eq(quota_priority(f.p, 0.5, 0, 128, 64, -1).factor.size, 1.0);
    ck_assert_double_eq(quota_priority(f.p, 0.5, 0, 16, 0, -1).factor.size, 0.0);
    /* The highest QOS gets factor 1; -1 means the default QOS. */
    ck_assert_double_eq(quota_priority(f.p, 0, 0, 1, 64, f.shrt).factor.qos, 1.0);
    ck_assert_double_eq_tol(quota_priority(f.p, 0, 0, 1, 64, -1).factor.qos, 0.1, 1e-12);
    fx_free(&f);
}
END_TEST

START_TEST(priority_favor_small)
{
    quota_policy *p;
    quota_diags d;
    ck_assert_int_eq(qt_load("priority: {favor_small: true, weights: {job_size: 100}}\n"
                             "accounts: {a: }\nusers: {u: {default_account: a}}\n",
                             &p, &d),
                     QUOTA_OK);
    quota_prio r = quota_priority(p, 0, 0, 16, 64, -1);
    ck_assert_double_eq_tol(r.factor.size, 0.75, 1e-12);
    ck_assert_double_eq_tol(r.weighted.size, 75, 1e-9);
    /* No QOS has a priority: the QOS factor is 0, not a division by zero. */
    ck_assert_double_eq(r.factor.qos, 0.0);
    quota_policy_free(p);
    quota_diags_free(&d);
}
END_TEST

START_TEST(reason_names)
{
    ck_assert_str_eq(quota_reason_name(QUOTA_REASON_NONE), "None");
    ck_assert_str_eq(quota_reason_name(QUOTA_REASON_ACCOUNT_GPU), "AccountGPULimit");
    ck_assert_str_eq(quota_reason_name(QUOTA_REASON_BUDGET), "BudgetExhausted");
    ck_assert_str_eq(quota_reason_name(QUOTA_REASON_QOS_MAX_WALL), "QOSMaxWall");
    ck_assert_str_eq(quota_reason_name(QUOTA_REASON_COUNT), "Unknown");
    for (int i = 0; i < QUOTA_REASON_COUNT; i++) {
        ck_assert_str_ne(quota_reason_name(i), "Unknown");
        for (int j = 0; j < i; j++)
            ck_assert_str_ne(quota_reason_name(i), quota_reason_name(j));
    }
}
END_TEST

START_TEST(state_add_charges_ancestors)
{
    fx f;
    fx_init(&f);
    quota_state d = {.cpus = 8, .gpus = 1, .jobs = 1, .gpu_seconds = 60};
    quota_state_add(f.p, f.st, f.phys, &d);
    quota_state_add(f.p, f.st, f.chem, &d);
    ck_assert_int_eq(f.st[f.phys].cpus, 8);
    ck_assert_int_eq(f.st[f.uni].cpus, 16);
    ck_assert_int_eq(f.st[0].jobs, 2);
    ck_assert_double_eq(f.st[f.uni].gpu_seconds, 120);
    ck_assert_int_eq(f.st[quota_account_find(f.p, "other")].cpus, 0);
    fx_free(&f);
}
END_TEST

START_TEST(running_limits)
{
    fx f;
    fx_init(&f);
    quota_verdict v;
    quota_request r = job(f.phys, -1, 10, 1, 8LL << 30, 3600);
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_NONE);

    /* chem runs 96 CPUs: uni's 100-CPU cap blocks a 10-CPU phys job. */
    quota_state busy = {.cpus = 96, .jobs = 1};
    quota_state_add(f.p, f.st, f.chem, &busy);
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_ACCOUNT_CPU);
    ck_assert_int_eq(v.account, f.uni);
    ck_assert_ptr_nonnull(strstr(v.detail, "uni"));
    r.cpus = 4; /* 96 + 4 = 100: exactly at the limit is allowed */
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_NONE);

    quota_state gpus = {.gpus = 4};
    quota_state_add(f.p, f.st, f.chem, &gpus);
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_ACCOUNT_GPU);
    r.gpus = 0;
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_NONE);

    r.mem = 65LL << 30; /* phys's own 64G cap */
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_ACCOUNT_MEM);
    ck_assert_int_eq(v.account, f.phys);
    r.mem = 1LL << 30;

    quota_state two = {.jobs = 2};
    quota_state_add(f.p, f.st, f.phys, &two);
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_ACCOUNT_JOBS);
    ck_assert_str_eq(quota_reason_name(v.reason), "AccountJobLimit");
    fx_free(&f);
}
END_TEST

START_TEST(wall_limits)
{
    fx f;
    fx_init(&f);
    quota_verdict v;
    quota_request r = job(f.phys, f.shrt, 1, 0, 0, 2 * 3600);
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_QOS_MAX_WALL);
    ck_assert_ptr_nonnull(strstr(v.detail, "1h"));
    r.qos = f.normal;
    r.time_limit = 13 * 3600; /* under normal's 1d, over phys's 12h */
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_ACCOUNT_MAX_WALL);
    ck_assert_int_eq(v.account, f.phys);
    r.time_limit = 0; /* no time limit given: over every finite max_wall */
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_QOS_MAX_WALL);
    r.time_limit = 12 * 3600;
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_NONE);
    fx_free(&f);
}
END_TEST

START_TEST(gpu_budget)
{
    fx f;
    fx_init(&f);
    quota_verdict v;
    quota_state used = {.gpu_seconds = 9 * 3600.0}; /* 9 of uni's 10 GPU-hours */
    quota_state_add(f.p, f.st, f.chem, &used);
    quota_request r = job(f.phys, -1, 1, 1, 0, 2 * 3600);
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_BUDGET);
    ck_assert_str_eq(quota_reason_name(v.reason), "BudgetExhausted");
    ck_assert_int_eq(v.account, f.uni);
    ck_assert_ptr_nonnull(strstr(v.detail, "GPU-hours"));
    r.time_limit = 3600; /* 9 + 1 = 10: fits exactly */
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_NONE);
    r.gpus = 0; /* CPU-only jobs are not held by a GPU budget */
    r.time_limit = 10 * 3600;
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_NONE);
    quota_state rest = {.gpu_seconds = 3600.0};
    quota_state_add(f.p, f.st, f.chem, &rest);
    r.gpus = 1;
    r.time_limit = 60;
    ck_assert_int_eq(quota_check_start(f.p, f.st, &r, &v), QUOTA_REASON_BUDGET);
    fx_free(&f);
}
END_TEST

START_TEST(submit_checks)
{
    fx f;
    fx_init(&f);
    quota_verdict v;
    int alice = quota_user_find(f.p, "alice"), bob = quota_user_find(f.p, "bob");
    int admin = quota_user_find(f.p, "admin");
    quota_request r = job(f.phys, -1, 4, 1, 1LL << 30, 3600);
    ck_assert_int_eq(quota_check_submit(f.p, f.st, alice, &r, &v), QUOTA_REASON_NONE);
    ck_assert_int_eq(quota_check_submit(f.p, f.st, -1, &r, &v), QUOTA_REASON_INVALID_USER);
    ck_assert_int_eq(quota_check_submit(f.p, f.st, bob, &r, &v), QUOTA_REASON_ACCOUNT_DENIED);
    ck_assert_str_eq(quota_reason_name(v.reason), "AccountNotAllowed");
    ck_assert_int_eq(quota_check_submit(f.p, f.st, admin, &r, &v), QUOTA_REASON_NONE);
    r.account = f.uni;
    ck_assert_int_eq(quota_check_submit(f.p, f.st, alice, &r, &v), QUOTA_REASON_INVALID_ACCOUNT);
    r.account = 999;
    ck_assert_int_eq(quota_check_submit(f.p, f.st, alice, &r, &v), QUOTA_REASON_INVALID_ACCOUNT);
    r.account = f.phys;
    r.qos = 99;
    ck_assert_int_eq(quota_check_submit(f.p, f.st, alice, &r, &v), QUOTA_REASON_INVALID_QOS);
    r.qos = -1;
    /* Asks more than uni may ever run: rejected now rather than pending forever. */
    r.gpus = 8;
    ck_assert_int_eq(quota_check_submit(f.p, f.st, alice, &r, &v), QUOTA_REASON_ACCOUNT_GPU);
    ck_assert_ptr_nonnull(strstr(v.detail, "may run at most"));
    /* 2 GPUs for 6h = 12 GPU-hours, more than the 10-hour budget holds. */
    r.gpus = 2;
    r.time_limit = 6 * 3600;
    ck_assert_int_eq(quota_check_submit(f.p, f.st, alice, &r, &v), QUOTA_REASON_BUDGET);
    r.time_limit = 3600;
    /* Running usage does not matter at submit, the queue length does. */
    quota_state full = {.cpus = 100, .queued = 3};
    quota_state_add(f.p, f.st, f.phys, &full);
    ck_assert_int_eq(quota_check_submit(f.p, f.st, alice, &r, &v),
                     QUOTA_REASON_ACCOUNT_QUEUED);
    ck_assert_str_eq(quota_reason_name(v.reason), "AccountQueuedJobLimit");
    ck_assert_int_eq(v.account, f.phys);
    fx_free(&f);
}
END_TEST

static time_t utc(int y, int mon, int d, int h)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mon - 1, .tm_mday = d, .tm_hour = h};
    return timegm(&tm);
}

/* A weekly budget under a monthly one: a job that ran from Sunday 20:00 to
 * Monday 04:00 counts 4 hours against the week (which began Monday 00:00)
 * and all 8 against the month. */
START_TEST(budget_periods_per_account)
{
    quota_policy *p;
    quota_diags d;
    ck_assert_int_eq(qt_load("accounts:\n"
                             "  uni:\n"
                             "    limits: {budget: {period: month, cpu_hours: 1000}}\n"
                             "    children:\n"
                             "      chem: {limits: {budget: {period: week, cpu_hours: 10}}}\n"
                             "users: {u: {default_account: chem}}\n",
                             &p, &d),
                     QUOTA_OK);
    int uni = quota_account_find(p, "uni"), chem = quota_account_find(p, "chem");
    quota_state *st = calloc((size_t)p->naccounts, sizeof *st);
    time_t now = utc(2026, 11, 25, 12); /* Wednesday */
    quota_budget_charge(p, st, chem, 2, 1, utc(2026, 11, 22, 20), utc(2026, 11, 23, 4), now);
    ck_assert_double_eq(st[chem].cpu_seconds, 2 * 4 * 3600.0);
    ck_assert_double_eq(st[chem].gpu_seconds, 1 * 4 * 3600.0);
    ck_assert_double_eq(st[uni].cpu_seconds, 2 * 8 * 3600.0);
    /* A job still running is charged up to now; one from last month not at all. */
    quota_budget_charge(p, st, chem, 1, 0, utc(2026, 11, 25, 10), utc(2026, 11, 25, 20), now);
    ck_assert_double_eq(st[chem].cpu_seconds, (8 + 2) * 3600.0);
    quota_budget_charge(p, st, chem, 1, 0, utc(2026, 10, 30, 0), utc(2026, 10, 31, 0), now);
    ck_assert_double_eq(st[uni].cpu_seconds, (16 + 2) * 3600.0);
    /* chem has used 10 of its 10 CPU-hours this week: a 1-CPU job is held. */
    quota_verdict v;
    quota_request r = {.account = chem, .qos = -1, .cpus = 1, .time_limit = 60};
    ck_assert_int_eq(quota_check_start(p, st, &r, &v), QUOTA_REASON_BUDGET);
    ck_assert_int_eq(v.account, chem);
    free(st);
    quota_policy_free(p);
    quota_diags_free(&d);
}
END_TEST

START_TEST(budget_periods)
{
    time_t fri = utc(2026, 11, 27, 9); /* a Friday */
    ck_assert_int_eq(quota_period_start(QUOTA_PERIOD_DAY, fri), utc(2026, 11, 27, 0));
    ck_assert_int_eq(quota_period_start(QUOTA_PERIOD_WEEK, fri), utc(2026, 11, 23, 0));
    ck_assert_int_eq(quota_period_start(QUOTA_PERIOD_MONTH, fri), utc(2026, 11, 1, 0));
    ck_assert_int_eq(quota_period_start(QUOTA_PERIOD_WEEK, utc(2026, 11, 29, 23)),
                     utc(2026, 11, 23, 0)); /* Sunday belongs to the week of Monday 23 */
    ck_assert_int_eq(quota_period_start(QUOTA_PERIOD_WEEK, utc(2026, 11, 23, 0)),
                     utc(2026, 11, 23, 0));
    ck_assert_int_eq(quota_period_start(QUOTA_PERIOD_WEEK, utc(2026, 1, 1, 12)),
                     utc(2025, 12, 29, 0)); /* across a year boundary */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("quota_priority_limits");
    TCase *t = tcase_create("prio");
    tcase_add_test(t, priority_factors);
    tcase_add_test(t, priority_favor_small);
    tcase_add_test(t, reason_names);
    tcase_add_test(t, state_add_charges_ancestors);
    tcase_add_test(t, running_limits);
    tcase_add_test(t, wall_limits);
    tcase_add_test(t, gpu_budget);
    tcase_add_test(t, submit_checks);
    tcase_add_test(t, budget_periods);
    tcase_add_test(t, budget_periods_per_account);
    suite_add_tcase(s, t);
    return qt_run(s);
}
