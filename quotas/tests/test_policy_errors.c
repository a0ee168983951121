/* test_policy_errors.c: every kind of policy error and warning, each asserted
 * at its line:column and field path; a policy with errors is never returned. */
#include "qtest.h"

#define E QUOTA_DIAG_ERROR
#define W QUOTA_DIAG_WARNING

typedef struct want_diag {
    quota_diag_level level;
    int line, column;
    const char *path, *needle;
} want_diag;

static void expect_diags(const quota_diags *d, const want_diag *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        QT_DIAG(d, w[i].level, w[i].line, w[i].column, w[i].path, w[i].needle);
}

/* Loads a bad file and checks it is rejected with exactly `errors` errors. */
static void load_bad(const char *file, quota_diags *d, size_t errors)
{
    quota_policy *p = (quota_policy *)d;
    ck_assert_int_eq(qt_load_file(file, &p, d), QUOTA_EINVALID);
    ck_assert_ptr_null(p);
    if (d->errors != errors)
        quota_diags_print(d, stderr);
    ck_assert_uint_eq(d->errors, errors);
}

START_TEST(bad_values_all_reported)
{
    quota_diags d;
    load_bad("bad_values.yaml", &d, 13);
    static const want_diag want[] = {
        {E, 4, 3, "usage.decay_half_lfe", "did you mean 'decay_half_life'"},
        {E, 7, 16, "priority.weights.fairshare", "quoted string \"10000\""},
        {E, 8, 10, "priority.weights.age", "expected a number >= 0, got -5"},
        {E, 9, 12, "priority.max_age", "'90' has no unit"},
        {E, 12, 15, "qos.normal.max_wall", "malformed duration '2 days'"},
        {E, 13, 19, "qos.normal.usage_factor", "got 'lots'"},
        {E, 19, 17, "accounts.nation.children.uni-a.shares", "expected a positive integer, got -3"},
        {E, 21, 29, "accounts.nation.children.uni-a.limits.max_running_cpus", "write 'unlimited'"},
        {E, 22, 31, "accounts.nation.children.uni-a.limits.max_running_memory", "unknown unit in '64Q'"},
        {E, 24, 21, "accounts.nation.children.uni-a.limits.budget.period", "expected day, week or month, got 'fortnight'"},
        {W, 24, 13, "accounts.nation.children.uni-a.limits.budget", "neither cpu_hours nor gpu_hours"},
        {E, 26, 17, "accounts.nation.children.uni-b.shares", "expected a positive integer, got 0"},
        {E, 27, 19, "accounts.nation.children.uni-b.children", "expected a mapping (sub-accounts by name), got a list"},
        {E, 29, 10, "users.alice", "got a string"},
    };
    expect_diags(&d, want, sizeof want / sizeof want[0]);
    quota_diags_free(&d);
}
END_TEST

START_TEST(bad_references_all_reported)
{
    quota_diags d;
    load_bad("bad_refs.yaml", &d, 8);
    static const want_diag want[] = {
        {E, 4, 15, "qos.normal.preempt[0]", "QOS 'scavenger' is referenced but not defined"},
        {E, 7, 14, "default_qos", "QOS 'express' is referenced but not defined"},
        {E, 15, 13, "accounts.chemistry.parent", "account 'uni-z' is referenced but not defined"},
        {E, 18, 22, "users.alice.default_account", "'uni-a' has sub-accounts"},
        {E, 19, 25, "users.alice.accounts[1]", "account 'biology' is referenced but not defined"},
        {E, 21, 5, "users.bob", "missing required key 'default_account'"},
        {E, 25, 7, "citizens.tiers.free", "missing required key 'concurrent_requests'"},
        {E, 28, 19, "citizens.anonymous_tier", "tier 'guest' is referenced but not defined"},
    };
    expect_diags(&d, want, sizeof want / sizeof want[0]);
    quota_diags_free(&d);
}
END_TEST

START_TEST(cycle_and_duplicates)
{
    quota_diags d;
    load_bad("bad_cycle.yaml", &d, 3);
    static const want_diag want[] = {
        {E, 8, 13, "accounts.loop-a.parent", "cycle in the account tree: loop-a -> loop-b -> loop-a"},
        {E, 11, 3, "accounts.physics", "duplicate account 'physics' (first defined at line 6:7"},
        {E, 16, 3, "users.alice", "duplicate user 'alice' (first defined at line 14:3)"},
    };
    expect_diags(&d, want, sizeof want / sizeof want[0]);
    quota_diags_free(&d);
}
END_TEST

START_TEST(self_parent_is_a_cycle)
{
    quota_diags d;
    quota_policy *p;
    ck_assert_int_eq(qt_load("accounts:\n  a: {parent: a}\n  b:\n", &p, &d), QUOTA_EINVALID);
    QT_DIAG(&d, E, 2, 15, "accounts.a.parent", "cycle in the account tree: a -> a");
    ck_assert_uint_eq(d.errors, 1);
    quota_diags_free(&d);
}
END_TEST

START_TEST(syntax_error_has_position)
{
    quota_diags d;
    load_bad("bad_syntax.yaml", &d, 1);
    QT_DIAG(&d, E, 4, 4, "", "YAML syntax: did not find expected key");
    quota_diags_free(&d);
}
END_TEST

START_TEST(structural_errors)
{
    static const char *text = "polcy: 1\n"                       /* 1 */
                              "version: 2\n"                     /* 2 */
                              "accounts:\n"                      /* 3 */
                              "  root: {}\n"                     /* 4 */
                              "  lab:\n"                         /* 5 */
                              "    shares: 1\n"                  /* 6 */
                              "    shares: 2\n"                  /* 7 */
                              "    children:\n"                  /* 8 */
                              "      sub: {parent: lab, shares: {a: 1}}\n" /* 9 */
                              "  \"bad name!\": {}\n"            /* 10 */
                              "qos:\n"                           /* 11 */
                              "  normal: {preempt: [normal], preemptible: yes}\n" /* 12 */
                              "users:\n"                         /* 13 */
                              "  Zed: {default_account: sub, admin: 1}\n"; /* 14 */
    quota_diags d;
    quota_policy *p;
    ck_assert_int_eq(qt_load(text, &p, &d), QUOTA_EINVALID);
    ck_assert_ptr_null(p);
    static const want_diag want[] = {
        {E, 1, 1, "polcy", "unknown key 'polcy'; expected one of: version, cluster"},
        {E, 2, 10, "version", "unsupported policy version 2"},
        {E, 4, 3, "accounts.root", "'root' is reserved"},
        {E, 7, 5, "accounts.lab.shares", "duplicate key 'shares' (first defined at line 6:5)"},
        {E, 9, 21, "accounts.lab.children.sub.parent", "only top-level accounts may name a parent"},
        {E, 9, 34, "accounts.lab.children.sub.shares", "expected a positive integer, got a mapping"},
        {E, 10, 3, "accounts", "'bad name!' is not a valid name for an account"},
        {E, 12, 22, "qos.normal.preempt[0]", "cannot preempt itself"},
        {E, 12, 44, "qos.normal.preemptible", "expected true or false, got 'yes'"},
        {E, 14, 38, "users.Zed.admin", "expected true or false, got '1'"},
        {E, 14, 3, "users.Zed", "not a valid local user name"},
    };
    expect_diags(&d, want, sizeof want / sizeof want[0]);
    quota_diags_free(&d);
}
END_TEST

START_TEST(document_level_errors)
{
    quota_diags d;
    quota_policy *p;
    ck_assert_int_eq(qt_load("", &p, &d), QUOTA_EINVALID);
    QT_DIAG(&d, E, 0, 0, "", "the policy is empty");
    quota_diags_free(&d);
    ck_assert_int_eq(qt_load("- a\n- b\n", &p, &d), QUOTA_EINVALID);
    QT_DIAG(&d, E, 1, 1, "", "expected a mapping");
    quota_diags_free(&d);
    ck_assert_int_eq(qt_load("users: {}\n", &p, &d), QUOTA_EINVALID);
    QT_DIAG(&d, E, 1, 1, "accounts", "missing required key 'accounts'");
    quota_diags_free(&d);
    ck_assert_int_eq(qt_load("accounts: {a: }\nusers: {u: {default_account: a}}\n---\nx: 1\n",
                             &p, &d),
                     QUOTA_EINVALID);
    QT_DIAG(&d, E, 4, 1, "", "a second YAML document");
    quota_diags_free(&d);
    /* Several QOS and none called normal: default_qos is required. */
    ck_assert_int_eq(qt_load("qos: {fast: {}, slow: {}}\naccounts: {a: }\n"
                             "users: {u: {default_account: a}}\n",
                             &p, &d),
                     QUOTA_EINVALID);
    QT_DIAG(&d, E, 1, 6, "default_qos", "default_qos must name the QOS");
    quota_diags_free(&d);
}
END_TEST

/* An alias that contains itself must not recurse forever. */
START_TEST(alias_loop_is_bounded)
{
    quota_diags d;
    quota_policy *p;
    ck_assert_int_eq(qt_load("accounts:\n  a: &x {children: {b: *x}}\n", &p, &d), QUOTA_EINVALID);
    ck_assert_ptr_null(p);
    ck_assert_uint_eq(d.errors, 1);
    QT_DIAG(&d, E, 2, 21, "accounts.a.children.b.children.b", "through a YAML alias");
    quota_diags_free(&d);
}
END_TEST

START_TEST(warnings_do_not_reject)
{
    quota_diags d;
    quota_policy *p;
    ck_assert_int_eq(qt_load_file("warnings.yaml", &p, &d), QUOTA_OK);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(d.errors, 0);
    ck_assert_uint_eq(d.warnings, 6);
    static const want_diag want[] = {
        {W, 2, 10, "billing", "all billing weights are zero"},
        {W, 4, 20, "usage.decay_half_life", "half-life of 0"},
        {W, 6, 12, "priority.weights", "all priority weights are zero"},
        {W, 8, 26, "qos.normal.preempt_mode", "not preemptible"},
        {W, 14, 7, "accounts.nation.children.idle", "no users and no sub-accounts"},
        {W, 13, 7, "accounts.nation.children.tiny", "5000 times fewer than its sibling 'big'"},
    };
    expect_diags(&d, want, sizeof want / sizeof want[0]);
    ck_assert_int_eq(p->decay_half_life, 0);
    quota_policy_free(p);
    quota_diags_free(&d);
}
END_TEST

/* Diagnostics append: a second load into the same list keeps the first's. */
START_TEST(errors_accumulate_per_load)
{
    quota_diags d;
    quota_policy *p;
    ck_assert_int_eq(qt_load("accounts: {a: {shares: 0}}\n", &p, &d), QUOTA_EINVALID);
    size_t first = d.errors;
    static const char *ok = "accounts: {a: }\nusers: {u: {default_account: a}}\n";
    ck_assert_int_eq(quota_policy_load_string(ok, strlen(ok), "ok.yaml", &p, &d),
                     QUOTA_OK);
    ck_assert_uint_eq(d.errors, first);
    quota_policy_free(p);
    quota_diags_free(&d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("quota_policy_errors");
    TCase *t = tcase_create("errors");
    tcase_add_test(t, bad_values_all_reported);
    tcase_add_test(t, bad_references_all_reported);
    tcase_add_test(t, cycle_and_duplicates);
    tcase_add_test(t, self_parent_is_a_cycle);
    tcase_add_test(t, syntax_error_has_position);
    tcase_add_test(t, structural_errors);
    tcase_add_test(t, document_level_errors);
    tcase_add_test(t, alias_loop_is_bounded);
    tcase_add_test(t, warnings_do_not_reject);
    tcase_add_test(t, errors_accumulate_per_load);
    suite_add_tcase(s, t);
    return qt_run(s);
}
