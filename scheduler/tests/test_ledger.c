/* Unit tests for the transparency ledger: the hash recipe, appending, verify
 * on an intact chain and on every kind of tampering (each named at the right
 * seq), bad input, and usage totals. */
#include "ledger.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fixture {
    char dir[64];
    struct store s;
};

static void open_store(struct fixture *f)
{
    char err[512];
    snprintf(f->dir, sizeof f->dir, "/tmp/commons-ledger-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(f->dir));
    ck_assert_msg(store_open(&f->s, f->dir, STORE_SYNC_NORMAL, err, sizeof err) == 0, "%s", err);
}

static void close_store(struct fixture *f)
{
    char path[128];
    store_close(&f->s);
    const char *files[] = {"commons.db", "commons.db-wal", "commons.db-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", f->dir, files[i]);
        unlink(path);
    }
    rmdir(f->dir);
}

static int64_t append_text(struct store *s, int64_t time, const char *kind, const char *body)
{
    json_t *b = json_loads(body, 0, NULL);
    ck_assert_ptr_nonnull(b);
    int64_t seq = ledger_append(s, time, kind, b);
    json_decref(b);
    return seq;
}

/* Five entries, committed. */
static void fill(struct fixture *f)
{
    ck_assert_int_eq(store_begin(&f->s), 0);
    for (int i = 1; i <= 5; i++) {
        char body[64];
        snprintf(body, sizeof body, "{\"n\": %d, \"a\": \"x%d\"}", i, i);
        ck_assert_int_eq(append_text(&f->s, 1700000000 + i, "test", body), i);
    }
    ck_assert_int_eq(store_commit(&f->s), 0);
}

static void exec(struct fixture *f, const char *sql)
{
    ck_assert_msg(store_exec(&f->s, sql) == 0, "%s: %s", sql, f->s.err);
}

static void expect_break(const char *tamper, enum ledger_problem problem, int64_t seq)
{
    struct fixture f;
    open_store(&f);
    fill(&f);
    exec(&f, tamper);
    struct ledger_verdict v;
    ck_assert_int_eq(ledger_verify(&f.s, &v), 0);
    ck_assert_msg(v.problem == problem && v.first_bad == seq, "%s: got %s at %lld (%s), expected %s at %lld", tamper,
                  ledger_problem_name(v.problem), (long long)v.first_bad, v.message, ledger_problem_name(problem),
                  (long long)seq);
    char needle[32];
    snprintf(needle, sizeof needle, "entr");
    ck_assert_ptr_nonnull(strstr(v.message, needle));
    close_store(&f);
}

START_TEST(hash_recipe)
{
    /* Computed independently: printf '%s\n1\n1700000000\njob_end\n{"a":1}' $(printf '0%.0s' {1..64}) | sha256sum */
    char h[65];
    ledger_hash(LEDGER_GENESIS, 1, 1700000000, "job_end", "{\"a\":1}", h);
    ck_assert_str_eq(h, "46139fe896d75c060434ec6870c1eb3c006dee1fa9d14131077f74cc203e6857");
    ledger_hash(LEDGER_GENESIS, 2, 1700000000, "job_end", "{\"a\":1}", h);
    ck_assert_str_ne(h, "46139fe896d75c060434ec6870c1eb3c006dee1fa9d14131077f74cc203e6857");
}
END_TEST

START_TEST(append_and_verify)
{
    struct fixture f;
    open_store(&f);
    struct ledger_verdict v;
    ck_assert_int_eq(ledger_verify(&f.s, &v), 0); /* no table yet: an empty, valid ledger */
    ck_assert_int_eq(v.problem, LEDGER_OK);
    ck_assert_int_eq(v.entries, 0);
    fill(&f);
    ck_assert_int_eq(ledger_verify(&f.s, &v), 0);
    ck_assert_msg(v.problem == LEDGER_OK, "%s", v.message);
    ck_assert_int_eq(v.entries, 5);
    ck_assert_int_eq(v.head_seq, 5);
    json_t *e = ledger_entries(&f.s, 0, 100);
    ck_assert_int_eq(json_array_size(e), 5);
    /* Bodies are canonical (sorted keys, compact); each links to the one before. */
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(e, 0), "body")), "{\"a\":\"x1\",\"n\":1}");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(e, 0), "prev_hash")), LEDGER_GENESIS);
    for (size_t i = 1; i < 5; i++)
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(e, i), "prev_hash")),
                         json_string_value(json_object_get(json_array_get(e, i - 1), "hash")));
    ck_assert_str_eq(v.head_hash, json_string_value(json_object_get(json_array_get(e, 4), "hash")));
    json_decref(e);
    e = ledger_entries(&f.s, 3, 1); /* paging */
    ck_assert_int_eq(json_array_size(e), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(e, 0), "seq")), 4);
    json_decref(e);
    /* A rolled-back append leaves nothing behind. */
    ck_assert_int_eq(store_begin(&f.s), 0);
    ck_assert_int_eq(append_text(&f.s, 1, "test", "{}"), 6);
    store_rollback(&f.s);
    ck_assert_int_eq(ledger_verify(&f.s, &v), 0);
    ck_assert_int_eq(v.problem, LEDGER_OK);
    ck_assert_int_eq(v.head_seq, 5);
    close_store(&f);
}
END_TEST

START_TEST(tamper_detected)
{
    expect_break("UPDATE ledger SET body='{\"a\":\"x9\",\"n\":3}' WHERE seq=3", LEDGER_CHANGED, 3);
    expect_break("UPDATE ledger SET time=time+1 WHERE seq=2", LEDGER_CHANGED, 2);
    expect_break("UPDATE ledger SET kind='other' WHERE seq=4", LEDGER_CHANGED, 4);
    expect_break("DELETE FROM ledger WHERE seq=2", LEDGER_MISSING, 2);
    expect_break("DELETE FROM ledger WHERE seq=1", LEDGER_MISSING, 1);
    expect_break("DELETE FROM ledger WHERE seq=5", LEDGER_TRUNCATED, 5);
    /* Swap the contents of entries 2 and 4 (each keeps its own hashes). */
    expect_break("CREATE TEMP TABLE t AS SELECT * FROM ledger WHERE seq IN (2,4);"
                 "UPDATE ledger SET time=(SELECT time FROM t WHERE seq=4), kind=(SELECT kind FROM t WHERE seq=4),"
                 " body=(SELECT body FROM t WHERE seq=4), prev_hash=(SELECT prev_hash FROM t WHERE seq=4),"
                 " hash=(SELECT hash FROM t WHERE seq=4) WHERE seq=2;"
                 "UPDATE ledger SET time=(SELECT time FROM t WHERE seq=2), kind=(SELECT kind FROM t WHERE seq=2),"
                 " body=(SELECT body FROM t WHERE seq=2), prev_hash=(SELECT prev_hash FROM t WHERE seq=2),"
                 " hash=(SELECT hash FROM t WHERE seq=2) WHERE seq=4",
                 LEDGER_UNLINKED, 2);
    /* Renumber: entries 3 and 4 exchange places, hashes and all. */
    expect_break("UPDATE ledger SET seq=100 WHERE seq=3; UPDATE ledger SET seq=3 WHERE seq=4;"
                 "UPDATE ledger SET seq=4 WHERE seq=100", LEDGER_UNLINKED, 3);
    expect_break("UPDATE ledger SET hash='" LEDGER_GENESIS "' WHERE seq=3", LEDGER_HASH_ALTERED, 3);
    /* The last entry has no successor to tell a changed hash from changed contents. */
    expect_break("UPDATE ledger SET hash='" LEDGER_GENESIS "' WHERE seq=5", LEDGER_CHANGED, 5);
    expect_break("UPDATE ledger SET hash='not hex' WHERE seq=4", LEDGER_BAD_ROW, 4);
    expect_break("UPDATE meta SET value=3 WHERE key='ledger_seq'", LEDGER_EXTRA, 4);
}
END_TEST

START_TEST(rewritten_chain_and_truncated_tail)
{
    struct fixture f;
    open_store(&f);
    fill(&f);
    /* An entry inserted with a correct hash past commonsd's count is extra. */
    struct ledger_verdict v;
    json_t *e = ledger_entries(&f.s, 4, 1);
    char h[65], sql[512];
    ledger_hash(json_string_value(json_object_get(json_array_get(e, 0), "hash")), 6, 1, "test", "{}", h);
    snprintf(sql, sizeof sql, "INSERT INTO ledger VALUES(6, 1, 'test', '{}', '%s', '%s')",
             json_string_value(json_object_get(json_array_get(e, 0), "hash")), h);
    json_decref(e);
    exec(&f, sql);
    ck_assert_int_eq(ledger_verify(&f.s, &v), 0);
    ck_assert_int_eq(v.problem, LEDGER_EXTRA);
    ck_assert_int_eq(v.first_bad, 6);
    /* Removing the tail and appending again does not hide the removal. */
    exec(&f, "DELETE FROM ledger WHERE seq >= 5");
    exec(&f, "UPDATE meta SET value=5 WHERE key='ledger_seq'");
    ck_assert_int_eq(store_begin(&f.s), 0);
    ck_assert_int_eq(append_text(&f.s, 2, "test", "{}"), 6);
    ck_assert_int_eq(store_commit(&f.s), 0);
    ck_assert_int_eq(ledger_verify(&f.s, &v), 0);
    ck_assert_int_eq(v.problem, LEDGER_MISSING);
    ck_assert_int_eq(v.first_bad, 5);
    close_store(&f);
}
END_TEST

START_TEST(bad_input)
{
    struct fixture f;
    open_store(&f);
    json_t *arr = json_array(), *obj = json_object();
    ck_assert_int_eq(ledger_append(&f.s, 1, "test", arr), -1);
    ck_assert_ptr_nonnull(strstr(f.s.err, "JSON object"));
    ck_assert_int_eq(ledger_append(&f.s, 1, "", obj), -1);
    ck_assert_ptr_nonnull(strstr(f.s.err, "kind"));
    ck_assert_int_eq(ledger_append(&f.s, 1, "a\nb", obj), -1);
    ck_assert_int_eq(ledger_append(&f.s, 1, NULL, obj), -1);
    json_decref(arr);
    json_decref(obj);
    ck_assert_int_eq(ledger_by_parse("institution"), LEDGER_BY_INSTITUTION);
    ck_assert_int_eq(ledger_by_parse("group"), -1);
    ck_assert_int_eq(ledger_by_parse(NULL), -1);
    ck_assert_int_eq(ledger_period_parse("month"), LEDGER_PERIOD_MONTH);
    ck_assert_int_eq(ledger_period_parse("year"), -1);
    close_store(&f);
}
END_TEST

static json_t *row(json_t *rows, const char *period, const char *name)
{
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
        if (!strcmp(json_string_value(json_object_get(r, "period")), period) &&
            !strcmp(json_string_value(json_object_get(r, "name")), name))
            return r;
    return NULL;
}

static double num(json_t *r, const char *k) { return json_number_value(json_object_get(r, k)); }

START_TEST(usage_totals)
{
    struct fixture f;
    open_store(&f);
    ck_assert_int_eq(store_begin(&f.s), 0);
    /* 2026-11-27 00:00:00 UTC = 1795737600; 2026-12-01 = 1796083200. */
    append_text(&f.s, 1, LEDGER_JOB_END, "{\"job\":1,\"user\":\"alice\",\"account\":\"physics\",\"institution\":\"uni-a\","
                "\"cpus\":4,\"gpus\":1,\"start\":1795737600,\"end\":1795741200,\"billed\":14400.5}");
    append_text(&f.s, 2, LEDGER_JOB_REQUEUE, "{\"job\":2,\"user\":\"bob\",\"account\":\"chem\",\"institution\":\"uni-a\","
                "\"cpus\":2,\"gpus\":0,\"start\":1795737600,\"end\":1795739400,\"billed\":3600}");
    append_text(&f.s, 3, LEDGER_JOB_END, "{\"job\":2,\"user\":\"bob\",\"account\":\"chem\",\"institution\":\"uni-a\","
                "\"cpus\":2,\"gpus\":0,\"start\":1795824000,\"end\":1795827600}");
    append_text(&f.s, 4, LEDGER_POLICY_CHANGE, "{\"version\":1,\"sha256\":\"x\"}");
    append_text(&f.s, 5, LEDGER_JOB_END, "{\"job\":3,\"user\":\"alice\",\"account\":\"physics\",\"institution\":\"uni-a\","
                "\"cpus\":1,\"gpus\":0,\"start\":1796083200,\"end\":1796086800}");
    ck_assert_int_eq(store_commit(&f.s), 0);
    json_t *rows = ledger_usage(&f.s, LEDGER_BY_INSTITUTION, LEDGER_PERIOD_MONTH, 0, NULL);
    ck_assert_int_eq(json_array_size(rows), 2);
    json_t *nov = row(rows, "2026-11", "uni-a"), *dec = row(rows, "2026-12", "uni-a");
    ck_assert_ptr_nonnull(nov);
    ck_assert_ptr_nonnull(dec);
    ck_assert_int_eq(num(nov, "jobs"), 2); /* the requeued run is not a job of its own */
    ck_assert_int_eq(num(nov, "runs"), 3);
    ck_assert_double_eq_tol(num(nov, "cpu_hours"), 4.0 + 1.0 + 2.0, 1e-9);
    ck_assert_double_eq_tol(num(nov, "gpu_hours"), 1.0, 1e-9);
    ck_assert_double_eq_tol(num(nov, "billed"), 18000.5, 1e-9);
    ck_assert_double_eq_tol(num(dec, "cpu_hours"), 1.0, 1e-9);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "period")), "2026-11");
    json_decref(rows);
    rows = ledger_usage(&f.s, LEDGER_BY_ACCOUNT, LEDGER_PERIOD_DAY, 0, NULL);
    ck_assert_int_eq(json_array_size(rows), 4);
    ck_assert_double_eq_tol(num(row(rows, "2026-11-27", "chem"), "cpu_hours"), 1.0, 1e-9);
    ck_assert_double_eq_tol(num(row(rows, "2026-11-28", "chem"), "cpu_hours"), 2.0, 1e-9);
    json_decref(rows);
    rows = ledger_usage(&f.s, LEDGER_BY_USER, LEDGER_PERIOD_MONTH, 1795800000, "alice");
    ck_assert_int_eq(json_array_size(rows), 1);
    ck_assert_ptr_nonnull(row(rows, "2026-12", "alice"));
    json_decref(rows);
    close_store(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ledger");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, hash_recipe);
    tcase_add_test(tc, append_and_verify);
    tcase_add_test(tc, tamper_detected);
    tcase_add_test(tc, rewritten_chain_and_truncated_tail);
    tcase_add_test(tc, bad_input);
    tcase_add_test(tc, usage_totals);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
