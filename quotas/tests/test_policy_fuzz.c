/* test_policy_fuzz.c: damaged policies never crash the loader and never come
 * back half-valid. Every prefix of the example policy and a fixed sequence of
 * byte substitutions are loaded; each load must either succeed with no errors
 * or fail with at least one error and no policy. (Run it under
 * COMMONS_SANITIZE=ON to also catch memory errors.) */
#include <stdio.h>
#include <stdlib.h>

#include "qtest.h"

static char *read_example(size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/policy.example.yaml", QUOTA_CONFIGS);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    char *buf = malloc(1 << 16);
    *len = fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    ck_assert_uint_gt(*len, 1000);
    return buf;
}

/* Returns 1 when the text loaded, 0 when it was rejected (consistently). */
static int load_consistent(const char *text, size_t len)
{
    quota_diags d;
    quota_diags_init(&d);
    quota_policy *p = NULL;
    int rc = quota_policy_load_string(text, len, "fuzz.yaml", &p, &d);
    if (rc == QUOTA_OK) {
        ck_assert_ptr_nonnull(p);
        ck_assert_uint_eq(d.errors, 0);
        /* A loaded policy is usable end to end. */
        char *dump = quota_policy_dump(p);
        ck_assert_ptr_nonnull(dump);
        free(dump);
        double *u = calloc((size_t)p->naccounts, sizeof *u);
        quota_share_row *rows = calloc((size_t)p->naccounts, sizeof *rows);
        ck_assert_int_eq(quota_fairshare(p, u, rows), QUOTA_OK);
        free(u);
        free(rows);
    } else {
        ck_assert_int_eq(rc, QUOTA_EINVALID);
        ck_assert_ptr_null(p);
        ck_assert_uint_ge(d.errors, 1);
        for (size_t i = 0; i < d.count; i++)
            ck_assert_int_ge(d.items[i].line, 0);
    }
    quota_policy_free(p);
    quota_diags_free(&d);
    return rc == QUOTA_OK;
}

START_TEST(every_prefix)
{
    size_t len;
    char *text = read_example(&len);
    int ok = 0, rejected = 0;
    for (size_t n = 0; n <= len; n += 7) {
        if (load_consistent(text, n))
            ok++;
        else
            rejected++;
    }
    /* Cutting a file at random places must be caught most of the time. */
    ck_assert_int_gt(rejected, ok);
    ck_assert(load_consistent(text, len));
    free(text);
}
END_TEST

START_TEST(byte_substitutions)
{
    size_t len;
    char *text = read_example(&len);
    static const char subst[] = {'-', ':', ' ', '\n', '{', '[', '*', '&', '"', '0', 'x', '\t'};
    unsigned seed = 12345;
    int rejected = 0;
    for (int i = 0; i < 1500; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t at = (seed >> 8) % len;
        char keep = text[at];
        text[at] = subst[(seed >> 4) % sizeof subst];
        rejected += !load_consistent(text, len);
        text[at] = keep;
    }
    ck_assert_int_gt(rejected, 0);
    free(text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("quota_policy_fuzz");
    TCase *t = tcase_create("fuzz");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, every_prefix);
    tcase_add_test(t, byte_substitutions);
    suite_add_tcase(s, t);
    return qt_run(s);
}
