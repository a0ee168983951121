/* test_fairshare.c: billing, decay, roll-up and the Fair Tree ranking on small
 * trees whose answers are computed by hand in the comments. */
#include <math.h>
#include <stdlib.h>

#include "qtest.h"

typedef struct tree {
    quota_policy *p;
    quota_diags d;
    double *usage;
    quota_share_row *rows;
} tree;

static void tree_load(tree *t, const char *yaml)
{
    int rc = qt_load(yaml, &t->p, &t->d);
    if (rc)
        quota_diags_print(&t->d, stderr);
    ck_assert_int_eq(rc, QUOTA_OK);
    t->usage = calloc((size_t)t->p->naccounts, sizeof *t->usage);
    t->rows = calloc((size_t)t->p->naccounts, sizeof *t->rows);
}

static void use(tree *t, const char *account, double u)
{
    int a = quota_account_find(t->p, account);
    ck_assert_int_gt(a, 0);
    t->usage[a] = u;
}

static const quota_share_row *row(tree *t, const char *account)
{
    int a = quota_account_find(t->p, account);
    ck_assert_int_ge(a, 0);
    return &t->rows[a];
}

static void run(tree *t)
{
    ck_assert_int_eq(quota_fairshare(t->p, t->usage, t->rows), QUOTA_OK);
}

static void tree_free(tree *t)
{
    quota_policy_free(t->p);
    quota_diags_free(&t->d);
    free(t->usage);
    free(t->rows);
}

typedef struct want_rank {
    const char *account;
    int rank;
} want_rank;

static void expect_ranks(tree *t, const want_rank *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const quota_share_row *r = row(t, w[i].account);
        ck_assert_msg(r->rank == w[i].rank, "%s: rank %d, expected %d", w[i].account, r->rank,
                      w[i].rank);
        ck_assert_double_eq_tol(r->fs_factor, (double)w[i].rank / t->p->nleaves, 1e-12);
    }
}

#define EPS 1e-12

/* Three siblings. A: S=1/4, U=10/40 -> LF 1. B: S=1/4, U=30/40 -> LF 1/3.
 * C: S=2/4, U=0 -> LF inf. Ranks C 3, A 2, B 1 of 3 leaves. */
START_TEST(flat_siblings)
{
    tree t;
    tree_load(&t, "accounts: {A: {shares: 1}, B: {shares: 1}, C: {shares: 2}}\n"
                  "users: {u: {default_account: A, accounts: [B, C]}}\n");
    use(&t, "A", 10);
    use(&t, "B", 30);
    run(&t);
    ck_assert_double_eq_tol(row(&t, "A")->norm_shares, 0.25, EPS);
    ck_assert_double_eq_tol(row(&t, "C")->norm_shares, 0.5, EPS);
    ck_assert_double_eq_tol(row(&t, "B")->effective_usage, 0.75, EPS);
    ck_assert_double_eq_tol(row(&t, "A")->level_fs, 1.0, EPS);
    ck_assert_double_eq_tol(row(&t, "B")->level_fs, 1.0 / 3.0, 1e-9);
    ck_assert(isinf(row(&t, "C")->level_fs));
    static const want_rank want[] = {{"C", 3}, {"A", 2}, {"B", 1}};
    expect_ranks(&t, want, sizeof want / sizeof want[0]);
    ck_assert_double_eq_tol(row(&t, "C")->fs_factor, 1.0, EPS);
    ck_assert_double_eq_tol(row(&t, "A")->fs_factor, 2.0 / 3.0, EPS);
    ck_assert_double_eq_tol(row(&t, "B")->fs_factor, 1.0 / 3.0, EPS);
    ck_assert_double_eq_tol(t.rows[0].raw_usage, 40, EPS);
    ck_assert_double_eq_tol(quota_global_share(t.p, quota_account_find(t.p, "C")), 0.5, EPS);
    tree_free(&t);
}
END_TEST

/* Depth first: A (LF 0.5/(100/300) = 1.5) beats B (0.5/(200/300) = 0.75), so
 * all of A's leaves rank above B's, even a2 whose own LF (0.5/0.9) is below b2's
 * (0.5/0.25 = 2). Inside A: a2 LF 5 > a1 LF 0.556. Inside B: b2 2 > b1 0.667. */
START_TEST(depth_first)
{
    tree t;
    tree_load(&t, "accounts:\n"
                  "  A: {children: {a1: , a2: }}\n"
                  "  B: {children: {b1: , b2: }}\n"
                  "users: {u: {default_account: a1, accounts: [a2, b1, b2]}}\n");
    use(&t, "a1", 90);
    use(&t, "a2", 10);
    use(&t, "b1", 150);
    use(&t, "b2", 50);
    run(&t);
    ck_assert_double_eq_tol(row(&t, "A")->raw_usage, 100, EPS);
    ck_assert_double_eq_tol(row(&t, "B")->norm_usage, 2.0 / 3.0, EPS);
    ck_assert_double_eq_tol(row(&t, "A")->level_fs, 1.5, 1e-9);
    ck_assert_double_eq_tol(row(&t, "B")->level_fs, 0.75, 1e-9);
    ck_assert_double_eq_tol(row(&t, "a1")->effective_usage, 0.9, EPS);
    ck_assert_double_eq_tol(row(&t, "b2")->norm_usage, 50.0 / 300.0, EPS);
    static const want_rank want[] = {{"a2", 4}, {"a1", 3}, {"b2", 2}, {"b1", 1}};
    expect_ranks(&t, want, sizeof want / sizeof want[0]);
    ck_assert_double_eq_tol(row(&t, "a1")->fs_factor, 0.75, EPS);
    /* Policy share of the cluster: 1/2 (A of A, B) * 1/2 (a1 of a1, a2). */
    ck_assert_double_eq_tol(quota_global_share(t.p, quota_account_find(t.p, "a1")), 0.25, EPS);
    ck_assert_double_eq(quota_global_share(t.p, 0), 1.0);
    /* Inner accounts are not ranked. */
    ck_assert_int_eq(row(&t, "A")->rank, 0);
    ck_assert_double_eq(row(&t, "A")->fs_factor, 0.0);
    tree_free(&t);
}
END_TEST

/* Tied sibling accounts are merged (Slurm rule 2). X and Y both have LF 1
 * (S 0.5, U 40/80). Merged children by their own LF: x1 0.5/0.25 = 2,
 * y1 = y2 = 0.5/0.5 = 1, x2 0.5/0.75 = 0.667. Ranks: x1 4, y1 3, y2 3 (tied
 * leaves share a rank), x2 1 (the rank without ties). Unmerged, x2 would be 3. */
START_TEST(tied_accounts_merge)
{
    tree t;
    tree_load(&t, "accounts:\n"
                  "  X: {children: {x1: , x2: }}\n"
                  "  Y: {children: {y1: , y2: }}\n"
                  "users: {u: {default_account: x1, accounts: [x2, y1, y2]}}\n");
    use(&t, "x1", 10);
    use(&t, "x2", 30);
    use(&t, "y1", 20);
    use(&t, "y2", 20);
    run(&t);
    static const want_rank want[] = {{"x1", 4}, {"y1", 3}, {"y2", 3}, {"x2", 1}};
    expect_ranks(&t, want, sizeof want / sizeof want[0]);
    ck_assert_double_eq_tol(row(&t, "y2")->fs_factor, 0.75, EPS);
    ck_assert_double_eq_tol(row(&t, "x2")->fs_factor, 0.25, EPS);
    tree_free(&t);
}
END_TEST

/* A leaf tied with a sibling account (rule 3): L and M both LF 1; the leaf
 * sorts first and takes rank 3; M's best child (m1, LF 0.5/0.2 = 2.5) starts
 * tied and gets the same rank 3; m2 (0.5/0.8) gets the untied rank 1. */
START_TEST(leaf_tied_with_account)
{
    tree t;
    tree_load(&t, "accounts:\n"
                  "  M: {children: {m1: , m2: }}\n"
                  "  L:\n"
                  "users: {u: {default_account: L, accounts: [m1, m2]}}\n");
    use(&t, "L", 10);
    use(&t, "m1", 2);
    use(&t, "m2", 8);
    run(&t);
    static const want_rank want[] = {{"L", 3}, {"m1", 3}, {"m2", 1}};
    expect_ranks(&t, want, sizeof want / sizeof want[0]);
    tree_free(&t);
}
END_TEST

/* Ratios equal on paper tie even when floating point disagrees: after X, Y, Z
 * tie (equal shares, usage 20 each) and merge, x1 = 0.3/0.1 and y1 = 0.6/0.2
 * (both 2.9999999999999996 in doubles) tie with z1 = 0.75/0.25 = 3 exactly.
 * Then x2 0.7/0.9, y2 0.4/0.8, z2 0.25/0.75 rank 3, 2, 1. */
START_TEST(float_ties)
{
    tree t;
    tree_load(&t, "accounts:\n"
                  "  X: {children: {x1: {shares: 3}, x2: {shares: 7}}}\n"
                  "  Y: {children: {y1: {shares: 3}, y2: {shares: 2}}}\n"
                  "  Z: {children: {z1: {shares: 3}, z2: {shares: 1}}}\n"
                  "users: {u: {default_account: x1, accounts: [x2, y1, y2, z1, z2]}}\n");
    use(&t, "x1", 2);
    use(&t, "x2", 18);
    use(&t, "y1", 4);
    use(&t, "y2", 16);
    use(&t, "z1", 5);
    use(&t, "z2", 15);
    run(&t);
    static const want_rank want[] = {{"x1", 6}, {"y1", 6}, {"z1", 6}, {"x2", 3}, {"y2", 2}, {"z2", 1}};
    expect_ranks(&t, want, sizeof want / sizeof want[0]);
    tree_free(&t);
}
END_TEST

/* No usage anywhere: every level ties at infinity, everyone gets factor 1. */
START_TEST(no_usage_everyone_first)
{
    tree t;
    tree_load(&t, "accounts:\n"
                  "  A: {shares: 5, children: {a1: , a2: {shares: 9}}}\n"
                  "  b:\n"
                  "users: {u: {default_account: a1, accounts: [a2, b]}}\n");
    run(&t);
    ck_assert_double_eq(row(&t, "a1")->fs_factor, 1.0);
    ck_assert_double_eq(row(&t, "a2")->fs_factor, 1.0);
    ck_assert_double_eq(row(&t, "b")->fs_factor, 1.0);
    ck_assert_double_eq(t.rows[0].raw_usage, 0.0);
    ck_assert_double_eq(row(&t, "a1")->effective_usage, 0.0);
    tree_free(&t);
}
END_TEST

START_TEST(rollup_charges_ancestors)
{
    tree t;
    tree_load(&t, "accounts:\n"
                  "  n: {children: {u1: {children: {p: , q: }}, u2: {children: {r: }}}}\n"
                  "users: {u: {default_account: p, accounts: [q, r]}}\n");
    use(&t, "p", 1);
    use(&t, "q", 2);
    use(&t, "r", 4);
    t.usage[quota_account_find(t.p, "u2")] = -7; /* negative self usage counts as 0 */
    double *total = calloc((size_t)t.p->naccounts, sizeof *total);
    quota_usage_rollup(t.p, t.usage, total);
    ck_assert_double_eq(total[quota_account_find(t.p, "u1")], 3);
    ck_assert_double_eq(total[quota_account_find(t.p, "u2")], 4);
    ck_assert_double_eq(total[quota_account_find(t.p, "n")], 7);
    ck_assert_double_eq(total[0], 7);
    free(total);
    ck_assert_int_eq(quota_fairshare(t.p, NULL, t.rows), QUOTA_EARG);
    tree_free(&t);
}
END_TEST

START_TEST(decay_half_life)
{
    int64_t hl = 7 * 86400;
    ck_assert_double_eq_tol(quota_usage_decay(100, (double)hl, hl), 50, 1e-9);
    ck_assert_double_eq_tol(quota_usage_decay(100, 3.0 * (double)hl, hl), 12.5, 1e-9);
    /* Many small steps equal one big one. */
    double u = 100;
    for (int i = 0; i < 7 * 24; i++)
        u = quota_usage_decay(u, 3600, hl);
    ck_assert_double_eq_tol(u, 50, 1e-9);
    ck_assert_double_eq(quota_usage_decay(100, 3600, 0), 100);   /* decay off */
    ck_assert_double_eq(quota_usage_decay(100, -60, hl), 100);   /* clock went back */
    ck_assert_double_eq(quota_usage_decay(100, 0, hl), 100);
}
END_TEST

START_TEST(billing)
{
    tree t;
    tree_load(&t, "billing: {cpu: 1, gpu: 32, mem_per_gb: 0.25}\n"
                  "qos: {normal: {}, high: {usage_factor: 2}}\n"
                  "accounts: {a: }\nusers: {u: {default_account: a}}\n");
    int high = quota_qos_find(t.p, "high");
    /* (4*1 + 1*32 + 8*0.25) * 3600 * 2 = 38 * 7200 */
    ck_assert_double_eq_tol(quota_billed(t.p, 4, 1, 8LL << 30, 3600, high), 38.0 * 7200, 1e-6);
    /* Default QOS (normal, factor 1) when qos is -1. */
    ck_assert_double_eq_tol(quota_billed(t.p, 2, 0, 0, 10, -1), 20, 1e-9);
    ck_assert_double_eq(quota_billed(t.p, 2, 0, 0, -10, -1), 0);
    ck_assert_double_eq(quota_billed(t.p, -2, -1, -5, 10, -1), 0);
    tree_free(&t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("quota_fairshare");
    TCase *t = tcase_create("fairtree");
    tcase_add_test(t, flat_siblings);
    tcase_add_test(t, depth_first);
    tcase_add_test(t, tied_accounts_merge);
    tcase_add_test(t, leaf_tied_with_account);
    tcase_add_test(t, float_ties);
    tcase_add_test(t, no_usage_everyone_first);
    tcase_add_test(t, rollup_charges_ancestors);
    tcase_add_test(t, decay_half_life);
    tcase_add_test(t, billing);
    suite_add_tcase(s, t);
    return qt_run(s);
}
