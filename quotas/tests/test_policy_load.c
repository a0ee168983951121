/* test_policy_load.c: loading the shipped policies, lookups, dump, units. */
#include <stdlib.h>

#include "qtest.h"

static quota_policy *load_config(const char *name, quota_diags *d)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", QUOTA_CONFIGS, name);
    quota_diags_init(d);
    quota_policy *p = NULL;
    int rc = quota_policy_load_file(path, &p, d);
    if (rc)
        quota_diags_print(d, stderr);
    ck_assert_int_eq(rc, QUOTA_OK);
    ck_assert_ptr_nonnull(p);
    return p;
}

START_TEST(example_policy_loads_clean)
{
    quota_diags d;
    quota_policy *p = load_config("policy.example.yaml", &d);
    ck_assert_uint_eq(d.errors, 0);
    ck_assert_uint_eq(d.warnings, 0);
    ck_assert_str_eq(p->cluster, "commons-national");
    ck_assert_double_eq(p->billing.gpu, 32.0);
    ck_assert_double_eq(p->billing.mem_per_gb, 0.25);
    ck_assert_int_eq(p->decay_half_life, 7 * 86400);
    ck_assert_double_eq(p->priority.job_size, 500);
    ck_assert_int_eq(p->priority.max_age, 7 * 86400);

    /* Tree: root, nation, uni-a, physics, lattice-qcd, astro, chemistry, uni-b,
     * biology, genomics, climate (flat, parent: uni-b), ops, industry. */
    ck_assert_int_eq(p->naccounts, 13);
    ck_assert_int_eq(p->nleaves, 8);
    ck_assert_str_eq(p->accounts[0].name, "root");
    int nation = quota_account_find(p, "nation"), unib = quota_account_find(p, "uni-b");
    int lqcd = quota_account_find(p, "lattice-qcd"), climate = quota_account_find(p, "climate");
    ck_assert_int_eq(nation, 1);
    ck_assert_int_eq(p->accounts[nation].parent, 0);
    ck_assert_int_eq(p->accounts[climate].parent, unib);
    ck_assert_int_eq(p->accounts[unib].nchildren, 3);
    ck_assert_int_eq(p->accounts[lqcd].depth, 4);
    ck_assert_int_eq(p->accounts[lqcd].limits.max_running_gpus, 64);
    ck_assert_int_eq(p->accounts[lqcd].limits.max_wall, 3 * 86400);
    ck_assert_int_eq(p->accounts[lqcd].limits.max_running_cpus, QUOTA_UNLIMITED);
    int unia = quota_account_find(p, "uni-a");
    ck_assert_int_eq(p->accounts[unia].limits.max_running_mem, 120LL << 40);
    ck_assert_double_eq(p->accounts[unia].limits.gpu_hours, 150000);
    ck_assert_double_eq(p->accounts[unia].limits.cpu_hours, -1);
    ck_assert_int_eq(p->accounts[unia].limits.budget_period, QUOTA_PERIOD_MONTH);
    int chem = quota_account_find(p, "chemistry");
    ck_assert_int_eq(p->accounts[chem].limits.budget_period, QUOTA_PERIOD_WEEK);
    /* Pre-order invariant: each subtree is a contiguous index range. */
    for (int i = 1; i < p->naccounts; i++) {
        int par = p->accounts[i].parent;
        ck_assert_int_lt(par, i);
        ck_assert(quota_account_within(p, i, par));
        ck_assert_int_le(p->accounts[i].subtree_end, p->accounts[par].subtree_end);
    }
    ck_assert_int_eq(p->accounts[0].subtree_end, p->naccounts);
    int anc[8];
    ck_assert_int_eq(quota_account_ancestors(p, lqcd, anc, 8), 4);
    ck_assert_str_eq(p->accounts[anc[1]].name, "physics");
    ck_assert_int_eq(anc[3], nation);
    ck_assert(!quota_account_within(p, lqcd, unib));

    /* QOS */
    ck_assert_int_eq(p->nqos, 4);
    int high = quota_qos_find(p, "high"), scav = quota_qos_find(p, "scavenger");
    ck_assert_int_eq(p->default_qos, quota_qos_find(p, "normal"));
    ck_assert_int_eq(p->max_qos_priority, 1000);
    ck_assert_int_eq(p->qos[high].npreempts, 1);
    ck_assert_int_eq(p->qos[high].preempts[0], scav);
    ck_assert(p->qos[scav].preemptible);
    ck_assert_int_eq(p->qos[scav].preempt_mode, QUOTA_PREEMPT_REQUEUE);
    ck_assert_double_eq(p->qos[scav].usage_factor, 0.1);
    ck_assert_int_eq(p->qos[high].max_wall, 12 * 3600);

    /* Users */
    int alice = quota_user_find(p, "alice"), bob = quota_user_find(p, "bob");
    int ops = quota_user_find(p, "root-ops");
    ck_assert_int_eq(p->users[alice].default_account, lqcd);
    ck_assert_int_eq(p->users[alice].naccounts, 2);
    ck_assert_str_eq(p->users[alice].unix_user, "alice");
    ck_assert_str_eq(p->users[quota_user_find(p, "dmitri")].unix_user, "ext_dmitri");
    ck_assert(quota_user_may_use(p, bob, climate));
    ck_assert(!quota_user_may_use(p, bob, lqcd));
    ck_assert(!quota_user_may_use(p, bob, unib));   /* inner account */
    ck_assert(p->users[ops].admin);
    ck_assert(quota_user_may_use(p, ops, lqcd));    /* admin: any leaf */
    ck_assert(!quota_user_may_use(p, ops, unia));   /* but never an inner one */
    ck_assert_int_eq(p->accounts[lqcd].nusers, 1);

    /* Citizens */
    ck_assert_int_eq(p->ntiers, 3);
    ck_assert_int_eq(p->anonymous_tier, quota_tier_find(p, "anonymous"));
    ck_assert_int_eq(p->default_tier, quota_tier_find(p, "citizen"));
    ck_assert_int_eq(p->tiers[quota_tier_find(p, "researcher")].max_tokens_per_request, 8192);

    ck_assert_int_eq(quota_account_find(p, "nope"), -1);
    ck_assert_int_eq(quota_user_find(p, "nope"), -1);
    ck_assert_int_eq(quota_qos_find(p, NULL), -1);
    quota_policy_free(p);
    quota_diags_free(&d);
}
END_TEST

START_TEST(local_policy_loads_clean)
{
    quota_diags d;
    quota_policy *p = load_config("policy.local.yaml", &d);
    ck_assert_uint_eq(d.errors + d.warnings, 0);
    int alice = quota_user_find(p, "alice"), bob = quota_user_find(p, "bob");
    int admin = quota_user_find(p, "admin");
    ck_assert_int_ge(alice, 0);
    ck_assert_str_eq(p->accounts[p->users[alice].default_account].name, "physics");
    ck_assert_str_eq(p->accounts[p->users[bob].default_account].name, "biology");
    ck_assert(p->users[admin].admin);
    ck_assert(!p->users[alice].admin);
    ck_assert_int_eq(p->accounts[1].nchildren, 2); /* one nation, two institutions */
    quota_policy_free(p);
    quota_diags_free(&d);
}
END_TEST

/* The smallest valid policy gets the documented defaults. */
START_TEST(minimal_policy_defaults)
{
    quota_diags d;
    quota_policy *p;
    ck_assert_int_eq(qt_load("accounts:\n  lab:\nusers:\n  ann: {default_account: lab}\n", &p,
                             &d),
                     QUOTA_OK);
    ck_assert_int_eq(p->naccounts, 2);
    ck_assert_int_eq(p->accounts[1].shares, 1);
    ck_assert_int_eq(p->nqos, 1);
    ck_assert_str_eq(p->qos[0].name, "normal");
    ck_assert_int_eq(p->default_qos, 0);
    ck_assert_int_eq(p->qos[0].max_wall, QUOTA_UNLIMITED);
    ck_assert_double_eq(p->billing.cpu, 1.0);
    ck_assert_int_eq(p->decay_half_life, 7 * 86400);
    ck_assert_double_eq(p->priority.fairshare, 10000);
    ck_assert_int_eq(p->anonymous_tier, -1);
    ck_assert_int_eq(p->default_tier, -1);
    ck_assert_uint_eq(d.count, 0);
    quota_policy_free(p);
    quota_diags_free(&d);
}
END_TEST

START_TEST(dump_is_canonical)
{
    quota_diags d1, d2;
    quota_policy *a = load_config("policy.example.yaml", &d1);
    quota_policy *b = load_config("policy.example.yaml", &d2);
    char *sa = quota_policy_dump(a), *sb = quota_policy_dump(b);
    ck_assert_ptr_nonnull(sa);
    ck_assert_str_eq(sa, sb);
    ck_assert_ptr_nonnull(strstr(sa, "\"name\":\"climate\",\"parent\":\"uni-b\""));
    ck_assert_ptr_nonnull(strstr(sa, "\"decay_half_life\":604800"));
    ck_assert_ptr_nonnull(strstr(sa, "\"anonymous_tier\":\"anonymous\""));
    ck_assert_ptr_nonnull(strstr(sa, "\"preempt\":[\"scavenger\"]"));
    /* A changed share changes the dump. */
    quota_diags d3;
    quota_policy *c;
    ck_assert_int_eq(qt_load("accounts: {lab: {shares: 2}}\nusers: {ann: {default_account: lab}}\n",
                             &c, &d3),
                     QUOTA_OK);
    char *sc = quota_policy_dump(c);
    ck_assert_ptr_nonnull(strstr(sc, "\"shares\":2"));
    ck_assert_str_ne(sa, sc);
    free(sa);
    free(sb);
    free(sc);
    quota_policy_free(a);
    quota_policy_free(b);
    quota_policy_free(c);
    quota_diags_free(&d1);
    quota_diags_free(&d2);
    quota_diags_free(&d3);
}
END_TEST

START_TEST(durations_parse)
{
    int64_t s;
    char err[256];
    ck_assert_int_eq(quota_parse_duration("30m", false, &s, err, sizeof err), 0);
    ck_assert_int_eq(s, 1800);
    ck_assert_int_eq(quota_parse_duration("1d12h", false, &s, err, sizeof err), 0);
    ck_assert_int_eq(s, 36 * 3600);
    ck_assert_int_eq(quota_parse_duration("2w", false, &s, err, sizeof err), 0);
    ck_assert_int_eq(s, 14 * 86400);
    ck_assert_int_eq(quota_parse_duration("1-02:03:04", false, &s, err, sizeof err), 0);
    ck_assert_int_eq(s, 86400 + 2 * 3600 + 3 * 60 + 4);
    ck_assert_int_eq(quota_parse_duration("10:00", false, &s, err, sizeof err), 0);
    ck_assert_int_eq(s, 600);
    ck_assert_int_eq(quota_parse_duration("unlimited", true, &s, err, sizeof err), 0);
    ck_assert_int_eq(s, QUOTA_UNLIMITED);
    ck_assert_int_eq(quota_parse_duration("unlimited", false, &s, err, sizeof err), -1);
    ck_assert_int_eq(quota_parse_duration("90", false, &s, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "no unit"));
    ck_assert_int_eq(quota_parse_duration("5y", false, &s, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "unknown unit 'y'"));
    ck_assert_int_eq(quota_parse_duration("", false, &s, err, sizeof err), -1);
    ck_assert_int_eq(quota_parse_duration("-5m", false, &s, err, sizeof err), -1);
    ck_assert_int_eq(quota_parse_duration("1:99:00", false, &s, err, sizeof err), -1);
    ck_assert_int_eq(quota_parse_duration("99999999999999999999s", false, &s, err, sizeof err),
                     -1);
    char buf[32];
    quota_format_duration(36 * 3600 + 60, buf, sizeof buf);
    ck_assert_str_eq(buf, "1d12h1m");
    quota_format_duration(QUOTA_UNLIMITED, buf, sizeof buf);
    ck_assert_str_eq(buf, "unlimited");
}
END_TEST

START_TEST(sizes_parse)
{
    int64_t b;
    char err[256];
    ck_assert_int_eq(quota_parse_size("64G", false, &b, err, sizeof err), 0);
    ck_assert_int_eq(b, 64LL << 30);
    ck_assert_int_eq(quota_parse_size("512MiB", false, &b, err, sizeof err), 0);
    ck_assert_int_eq(b, 512LL << 20);
    ck_assert_int_eq(quota_parse_size("1.5T", false, &b, err, sizeof err), 0);
    ck_assert_int_eq(b, 3LL << 39);
    ck_assert_int_eq(quota_parse_size("4k", false, &b, err, sizeof err), 0);
    ck_assert_int_eq(b, 4096);
    ck_assert_int_eq(quota_parse_size("64", false, &b, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "no unit"));
    ck_assert_int_eq(quota_parse_size("64Q", false, &b, err, sizeof err), -1);
    ck_assert_int_eq(quota_parse_size("64GBs", false, &b, err, sizeof err), -1);
    ck_assert_int_eq(quota_parse_size("-1G", false, &b, err, sizeof err), -1);
    ck_assert_int_eq(quota_parse_size("99999P", false, &b, err, sizeof err), -1);
    char buf[32];
    quota_format_size(3LL << 39, buf, sizeof buf);
    ck_assert_str_eq(buf, "1.5T");
    quota_format_size(64LL << 30, buf, sizeof buf);
    ck_assert_str_eq(buf, "64G");
}
END_TEST

START_TEST(diag_format_like_a_compiler)
{
    quota_diags d;
    quota_policy *p;
    ck_assert_int_eq(qt_load("accounts:\n  lab: {shares: -2}\n", &p, &d), QUOTA_EINVALID);
    ck_assert_ptr_null(p);
    ck_assert_uint_ge(d.count, 1);
    char line[512];
    quota_diag_format(&d, &d.items[0], line, sizeof line);
    ck_assert_str_eq(line, "t.yaml:2:17: error: accounts.lab.shares: expected a positive integer, "
                           "got -2 (this cannot be negative)");
    quota_diags_free(&d);
}
END_TEST

START_TEST(unreadable_file)
{
    quota_diags d;
    quota_policy *p = (quota_policy *)&d; /* must be reset to NULL */
    quota_diags_init(&d);
    ck_assert_int_eq(quota_policy_load_file("/nonexistent/policy.yaml", &p, &d), QUOTA_EIO);
    ck_assert_ptr_null(p);
    ck_assert_uint_eq(d.errors, 1);
    ck_assert_ptr_nonnull(strstr(d.items[0].message, "cannot open"));
    ck_assert_int_eq(quota_policy_load_file(NULL, &p, &d), QUOTA_EARG);
    quota_diags_free(&d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("quota_policy_load");
    TCase *t = tcase_create("load");
    tcase_add_test(t, example_policy_loads_clean);
    tcase_add_test(t, local_policy_loads_clean);
    tcase_add_test(t, minimal_policy_defaults);
    tcase_add_test(t, dump_is_canonical);
    tcase_add_test(t, durations_parse);
    tcase_add_test(t, sizes_parse);
    tcase_add_test(t, diag_format_like_a_compiler);
    tcase_add_test(t, unreadable_file);
    suite_add_tcase(s, t);
    return qt_run(s);
}
