/* fuzz_policy.c: libFuzzer harness for quota policy YAML (quotas/).
 *
 * Input: the bytes of a policy file. Properties, besides "no crash, no
 * sanitizer report": a load either succeeds with a policy and no errors, or
 * fails with QUOTA_EINVALID, no policy and at least one error; every
 * diagnostic formats; a loaded policy is usable end to end (canonical dump,
 * name lookups agree with the tables, Fair Tree ranks leaves within
 * 1..nleaves, priorities are finite and factors within [0,1]). */
#include "fuzz_util.h"
#include "quotas.h"

#include <math.h>

static void check_policy(const quota_policy *p, const uint8_t *data, size_t size)
{
    char *dump = quota_policy_dump(p);
    FUZZ_CHECK(dump != NULL, "dump failed");
    free(dump);
    for (int i = 0; i < p->naccounts; i++)
        FUZZ_CHECK(quota_account_find(p, p->accounts[i].name) == i, "account '%s'", p->accounts[i].name);
    for (int i = 0; i < p->nusers; i++)
        FUZZ_CHECK(quota_user_find(p, p->users[i].name) == i, "user '%s'", p->users[i].name);
    for (int i = 0; i < p->nqos; i++)
        FUZZ_CHECK(quota_qos_find(p, p->qos[i].name) == i, "qos '%s'", p->qos[i].name);

    /* Usage derived from the input bytes, so the ranking sees varied trees. */
    size_t n = (size_t)p->naccounts;
    double *usage = calloc(n, sizeof *usage);
    quota_share_row *rows = calloc(n, sizeof *rows);
    if (!usage || !rows) abort();
    for (size_t i = 0; i < n && size; i++)
        usage[i] = (double)(data[i % size] % 7) * 1000.0;
    FUZZ_CHECK(quota_fairshare(p, usage, rows) == QUOTA_OK, "fairshare failed");
    for (size_t i = 0; i < n; i++) {
        if (p->accounts[i].nchildren == 0 && i > 0)
            FUZZ_CHECK(rows[i].rank >= 1 && rows[i].rank <= p->nleaves, "account %zu rank %d of %d leaves", i,
                       rows[i].rank, p->nleaves);
        FUZZ_CHECK(rows[i].fs_factor >= 0 && rows[i].fs_factor <= 1, "fs_factor %g", rows[i].fs_factor);
        quota_prio pr = quota_priority(p, rows[i].fs_factor, 3600.0 * (double)i, (int64_t)i, 64, (int)i % (p->nqos + 1) - 1);
        FUZZ_CHECK(isfinite(pr.total), "priority %g", pr.total);
        FUZZ_CHECK(pr.factor.age >= 0 && pr.factor.age <= 1 && pr.factor.size >= 0 && pr.factor.size <= 1 &&
                       pr.factor.qos >= 0 && pr.factor.qos <= 1,
                   "factor out of [0,1]");
        FUZZ_CHECK(quota_billed(p, 4, 1, (int64_t)1 << 30, 60, -1) >= 0, "negative bill");
    }
    free(usage);
    free(rows);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    quota_diags d;
    quota_diags_init(&d);
    quota_policy *p = NULL;
    int rc = quota_policy_load_string((const char *)data, size, "fuzz.yaml", &p, &d);
    char line[2048];
    for (size_t i = 0; i < d.count; i++) {
        FUZZ_CHECK(quota_diag_format(&d, &d.items[i], line, sizeof line) > 0, "empty diagnostic");
        FUZZ_CHECK(d.items[i].line >= 0 && d.items[i].column >= 0, "position %d:%d", d.items[i].line,
                   d.items[i].column);
    }
    if (rc == QUOTA_OK) {
        FUZZ_CHECK(p != NULL && d.errors == 0, "loaded with %zu errors", d.errors);
        check_policy(p, data, size);
    } else {
        FUZZ_CHECK(rc == QUOTA_EINVALID && p == NULL && d.errors >= 1, "rc %d, %zu errors", rc, d.errors);
    }
    quota_policy_free(p);
    quota_diags_free(&d);
    return 0;
}
