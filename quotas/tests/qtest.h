/* qtest.h: helpers shared by the quotas unit tests (Check). */
#ifndef COMMONS_QTEST_H
#define COMMONS_QTEST_H

#include <check.h>
#include <string.h>

#include "quotas.h"

/* Loads text; the caller frees both. */
static inline int qt_load(const char *text, quota_policy **p, quota_diags *d)
{
    quota_diags_init(d);
    return quota_policy_load_string(text, strlen(text), "t.yaml", p, d);
}

static inline int qt_load_file(const char *name, quota_policy **p, quota_diags *d)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", QUOTA_TEST_DATA, name);
    quota_diags_init(d);
    return quota_policy_load_file(path, p, d);
}

/* The diagnostic with this level and path whose message contains needle. */
static inline const quota_diag *qt_find(const quota_diags *d, quota_diag_level level,
                                        const char *path, const char *needle)
{
    for (size_t i = 0; i < d->count; i++) {
        const quota_diag *it = &d->items[i];
        if (it->level == level && !strcmp(it->path, path) && strstr(it->message, needle))
            return it;
    }
    return NULL;
}

/* Asserts that diagnostic exists at line:col (printing all on failure). */
#define QT_DIAG(d, level, ln_, col_, path, needle)                                          \
    do {                                                                                    \
        const quota_diag *qt_it_ = qt_find((d), (level), (path), (needle));                 \
        if (!qt_it_)                                                                        \
            quota_diags_print((d), stderr);                                                 \
        ck_assert_msg(qt_it_ != NULL, "no diagnostic at %s containing '%s'", (path),       \
                      (needle));                                                            \
        ck_assert_int_eq(qt_it_->line, (ln_));                                             \
        ck_assert_int_eq(qt_it_->column, (col_));                                            \
    } while (0)

/* Runs a suite; the exit status for main. */
static inline int qt_run(Suite *s)
{
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}

#endif
