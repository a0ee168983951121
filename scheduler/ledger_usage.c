/* ledger_usage.c: usage totals computed from the ledger's job entries, so a
 * report can be recomputed by anyone from an export (docs/ledger.md). */
#include "ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int ledger_by_parse(const char *s)
{
    if (!s) return -1;
    if (!strcmp(s, "institution")) return LEDGER_BY_INSTITUTION;
    if (!strcmp(s, "account")) return LEDGER_BY_ACCOUNT;
    if (!strcmp(s, "user")) return LEDGER_BY_USER;
    return -1;
}

int ledger_period_parse(const char *s)
{
    if (!s) return -1;
    if (!strcmp(s, "day")) return LEDGER_PERIOD_DAY;
    if (!strcmp(s, "month")) return LEDGER_PERIOD_MONTH;
    return -1;
}

struct usage_ctx {
    enum ledger_by by;
    enum ledger_period period;
    int64_t since;
    const char *only_user;
    json_t *rows; /* "period\tname" -> row object */
};

static int64_t int_field(json_t *b, const char *k) { return (int64_t)json_integer_value(json_object_get(b, k)); }

/* One job entry into its row. A requeued run counts in the hours and billing
 * (the machine was used) but not as a job: the job counts once, when it ends. */
static void add_entry(struct usage_ctx *u, const char *kind, json_t *b)
{
    static const char *const key_field[] = {"institution", "account", "user"};
    const char *name = json_string_value(json_object_get(b, key_field[u->by]));
    const char *user = json_string_value(json_object_get(b, "user"));
    int64_t start = int_field(b, "start"), end = int_field(b, "end");
    if (!name || end < u->since || end < start) return;
    if (u->only_user && (!user || strcmp(user, u->only_user) != 0)) return;
    time_t t = (time_t)end;
    struct tm tm;
    gmtime_r(&t, &tm);
    char period[16], key[600];
    strftime(period, sizeof period, u->period == LEDGER_PERIOD_DAY ? "%Y-%m-%d" : "%Y-%m", &tm);
    snprintf(key, sizeof key, "%s\t%s", period, name);
    json_t *row = json_object_get(u->rows, key);
    if (!row) {
        row = json_pack("{s:s, s:s, s:I, s:I, s:f, s:f, s:f}", "period", period, "name", name, "jobs", (json_int_t)0,
                        "runs", (json_int_t)0, "cpu_hours", 0.0, "gpu_hours", 0.0, "billed", 0.0);
        json_object_set_new(u->rows, key, row);
    }
    double hours = (double)(end - start) / 3600.0;
    json_object_set_new(row, "runs", json_integer(int_field(row, "runs") + 1));
    if (!strcmp(kind, LEDGER_JOB_END)) json_object_set_new(row, "jobs", json_integer(int_field(row, "jobs") + 1));
    json_object_set_new(row, "cpu_hours", json_real(json_real_value(json_object_get(row, "cpu_hours")) +
                                                    hours * (double)int_field(b, "cpus")));
    json_object_set_new(row, "gpu_hours", json_real(json_real_value(json_object_get(row, "gpu_hours")) +
                                                    hours * (double)int_field(b, "gpus")));
    json_object_set_new(row, "billed", json_real(json_real_value(json_object_get(row, "billed")) +
                                                 json_number_value(json_object_get(b, "billed"))));
}

static int cmp_keys(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

json_t *ledger_usage(struct store *s, enum ledger_by by, enum ledger_period period, int64_t since,
                     const char *only_user)
{
    struct usage_ctx u = {by, period, since, only_user, json_object()};
    json_t *out = json_array();
    sqlite3_stmt *st = NULL;
    int present = 0;
    if (ledger_table_present(s, &present) != 0) {
        json_decref(u.rows);
        json_decref(out);
        return NULL;
    }
    if (present && sqlite3_prepare_v2(s->db, "SELECT kind, body FROM ledger WHERE kind IN ('" LEDGER_JOB_END "', '"
                                      LEDGER_JOB_REQUEUE "') ORDER BY seq", -1, &st, NULL) != SQLITE_OK) {
        snprintf(s->err, sizeof s->err, "%s: %s (ledger: usage)", s->path, sqlite3_errmsg(s->db));
        json_decref(u.rows);
        json_decref(out);
        return NULL;
    }
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(st, 0), *text = (const char *)sqlite3_column_text(st, 1);
        json_t *b = text ? json_loads(text, 0, NULL) : NULL;
        if (json_is_object(b)) add_entry(&u, kind, b); /* an unreadable body is verify's business */
        json_decref(b);
    }
    sqlite3_finalize(st);
    size_t n = json_object_size(u.rows), i = 0;
    const char **keys = malloc(sizeof *keys * (n ? n : 1));
    const char *k;
    json_t *v;
    json_object_foreach(u.rows, k, v) keys[i++] = k;
    qsort(keys, n, sizeof *keys, cmp_keys);
    for (i = 0; i < n; i++) json_array_append(out, json_object_get(u.rows, keys[i]));
    free(keys);
    json_decref(u.rows);
    return out;
}
