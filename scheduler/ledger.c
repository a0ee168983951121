/* ledger.c: the hash-chained ledger table: append, verify, read (see ledger.h). */
#include "ledger.h"

#include "cm_crypto.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ledger_schema =
    "CREATE TABLE IF NOT EXISTS ledger(seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, kind TEXT NOT NULL,"
    " body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)";

static int fail(struct store *s, const char *what)
{
    snprintf(s->err, sizeof s->err, "%s: %s (ledger: %s)", s->path, sqlite3_errmsg(s->db), what);
    return -1;
}

void ledger_hash(const char *prev_hash, int64_t seq, int64_t time, const char *kind, const char *body,
                 char out[65])
{
    char head[160];
    int n = snprintf(head, sizeof head, "%s\n%" PRId64 "\n%" PRId64 "\n", prev_hash, seq, time);
    size_t klen = strlen(kind), blen = strlen(body);
    size_t len = (size_t)n + klen + 1 + blen;
    char *buf = malloc(len);
    if (!buf) { /* cannot happen for sane sizes; a wrong hash is then reported, not a crash */
        memset(out, '?', 64);
        out[64] = '\0';
        return;
    }
    memcpy(buf, head, (size_t)n);
    memcpy(buf + n, kind, klen);
    buf[(size_t)n + klen] = '\n';
    memcpy(buf + n + klen + 1, body, blen);
    cm_sha256_hex(buf, len, out);
    free(buf);
}

int ledger_table_present(struct store *s, int *present)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='ledger'", -1, &st,
                           NULL) != SQLITE_OK)
        return fail(s, "schema");
    *present = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) > 0;
    sqlite3_finalize(st);
    return 0;
}

/* meta.ledger_seq, or 0 when absent (no entry was ever appended). */
static int recorded_count(struct store *s, int64_t *out)
{
    sqlite3_stmt *st;
    *out = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key='ledger_seq'", -1, &st, NULL) != SQLITE_OK)
        return fail(s, "meta");
    if (sqlite3_step(st) == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return 0;
}

int64_t ledger_append(struct store *s, int64_t time, const char *kind, json_t *body)
{
    if (!kind || !*kind || strlen(kind) > 64 || strcspn(kind, "\n\r,\"") != strlen(kind)) {
        snprintf(s->err, sizeof s->err, "ledger: kind '%s': expected a short name without newlines, commas or quotes",
                 kind ? kind : "(null)");
        return -1;
    }
    if (!json_is_object(body)) {
        snprintf(s->err, sizeof s->err, "ledger: the body of a '%s' entry must be a JSON object", kind);
        return -1;
    }
    if (store_exec(s, ledger_schema) != 0) return -1;
    sqlite3_stmt *st;
    int64_t last = 0, recorded = 0;
    char prev[65] = LEDGER_GENESIS;
    if (sqlite3_prepare_v2(s->db, "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1", -1, &st, NULL) != SQLITE_OK)
        return fail(s, "last entry");
    if (sqlite3_step(st) == SQLITE_ROW) {
        last = sqlite3_column_int64(st, 0);
        const unsigned char *h = sqlite3_column_text(st, 1);
        snprintf(prev, sizeof prev, "%s", h ? (const char *)h : "");
    }
    sqlite3_finalize(st);
    if (recorded_count(s, &recorded) != 0) return -1;
    /* Removed last entries leave meta ahead of the table: continuing after meta
     * keeps the gap visible to verify instead of papering over it. */
    int64_t seq = (recorded > last ? recorded : last) + 1;
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!text) {
        snprintf(s->err, sizeof s->err, "ledger: cannot serialize the '%s' body", kind);
        return -1;
    }
    char hash[65];
    ledger_hash(prev, seq, time, kind, text, hash);
    int rc = -1;
    if (sqlite3_prepare_v2(s->db, "INSERT INTO ledger(seq, time, kind, body, prev_hash, hash) VALUES(?,?,?,?,?,?)", -1,
                           &st, NULL) != SQLITE_OK) {
        fail(s, "insert");
    } else {
        sqlite3_bind_int64(st, 1, seq);
        sqlite3_bind_int64(st, 2, time);
        sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, text, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, prev, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, hash, -1, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : fail(s, "insert");
        sqlite3_finalize(st);
    }
    free(text);
    if (rc == 0) rc = store_meta_set_int(s, "ledger_seq", seq);
    return rc == 0 ? seq : -1;
}

const char *ledger_problem_name(enum ledger_problem p)
{
    static const char *const names[] = {"ok", "changed", "hash_altered", "missing", "unlinked", "truncated",
                                        "extra", "bad_row"};
    return (unsigned)p < sizeof names / sizeof names[0] ? names[p] : "unknown";
}

static int is_hash(const unsigned char *h)
{
    if (!h || strlen((const char *)h) != 64) return 0;
    return strspn((const char *)h, "0123456789abcdef") == 64;
}

static void verdict(struct ledger_verdict *v, enum ledger_problem p, int64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void verdict(struct ledger_verdict *v, enum ledger_problem p, int64_t seq, const char *fmt, ...)
{
    v->problem = p;
    v->first_bad = seq;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->message, sizeof v->message, fmt, ap);
    va_end(ap);
}

int ledger_verify(struct store *s, struct ledger_verdict *v)
{
    memset(v, 0, sizeof *v);
    snprintf(v->head_hash, sizeof v->head_hash, "%s", LEDGER_GENESIS);
    snprintf(v->message, sizeof v->message, "the chain holds");
    int present;
    int64_t recorded;
    if (ledger_table_present(s, &present) != 0 || recorded_count(s, &recorded) != 0) return -1;
    sqlite3_stmt *st = NULL;
    if (present && sqlite3_prepare_v2(s->db, "SELECT seq, time, kind, body, prev_hash, hash FROM ledger ORDER BY seq",
                                      -1, &st, NULL) != SQLITE_OK)
        return fail(s, "read");
    /* prev_stored: the previous row's stored hash (what the next row must name);
     * prev_true: its recomputed hash. They differ only for a row already
     * suspect, which the next row's prev_hash then classifies. */
    char prev_stored[65] = LEDGER_GENESIS, prev_true[65] = LEDGER_GENESIS;
    int64_t expect = 1, suspect = 0;
    int rc;
    while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0), time = sqlite3_column_int64(st, 1);
        const unsigned char *kind = sqlite3_column_text(st, 2), *body = sqlite3_column_text(st, 3);
        const unsigned char *ph = sqlite3_column_text(st, 4), *h = sqlite3_column_text(st, 5);
        v->entries++;
        if (sqlite3_column_type(st, 1) != SQLITE_INTEGER || !kind || !body || !is_hash(ph) || !is_hash(h)) {
            verdict(v, LEDGER_BAD_ROW, seq, "entry %" PRId64 " is malformed (time, kind, body or a hash has the wrong "
                    "type or is not 64 lowercase hex digits)", seq);
            break;
        }
        if (seq != expect) {
            if (suspect) break; /* the suspect row is reported below */
            if (expect == 1)
                verdict(v, LEDGER_MISSING, 1, "entry 1 is missing: the ledger starts at entry %" PRId64 "", seq);
            else
                verdict(v, LEDGER_MISSING, expect, "entry %" PRId64 " is missing: entry %" PRId64 " is followed by entry %" PRId64
                        " (entries were removed)", expect, expect - 1, seq);
            break;
        }
        if (strcmp((const char *)ph, prev_stored) != 0) {
            if (suspect && strcmp((const char *)ph, prev_true) == 0) {
                verdict(v, LEDGER_HASH_ALTERED, suspect, "entry %" PRId64 "'s stored hash was altered: its contents still "
                        "hash to %s, which entry %" PRId64 " names as its predecessor", suspect, prev_true, seq);
                suspect = 0;
                break;
            }
            if (suspect) break;
            verdict(v, LEDGER_UNLINKED, seq, "entry %" PRId64 " does not follow entry %" PRId64 ": its prev_hash is %.16s... "
                    "but entry %" PRId64 "'s hash is %.16s... (entries reordered, replaced or inserted)",
                    seq, seq - 1, (const char *)ph, seq - 1, prev_stored);
            break;
        }
        if (suspect) break; /* the next row links to the stored hash: the contents changed */
        char h2[65];
        ledger_hash((const char *)ph, seq, time, (const char *)kind, (const char *)body, h2);
        if (strcmp(h2, (const char *)h) != 0) suspect = seq;
        snprintf(prev_stored, sizeof prev_stored, "%s", (const char *)h);
        snprintf(prev_true, sizeof prev_true, "%s", h2);
        v->head_seq = seq;
        snprintf(v->head_hash, sizeof v->head_hash, "%s", (const char *)h);
        expect = seq + 1;
    }
    if (st) sqlite3_finalize(st);
    if (suspect)
        verdict(v, LEDGER_CHANGED, suspect, "entry %" PRId64 " was changed: its time, kind or body no longer hash to its "
                "stored hash %.16s...", suspect, prev_stored);
    if (v->problem != LEDGER_OK) return 0;
    if (recorded > v->head_seq)
        verdict(v, LEDGER_TRUNCATED, v->head_seq + 1, "entries %" PRId64 "..%" PRId64 " are missing at the end "
                "(commonsd recorded %" PRId64 " entries; the last ones were removed)", v->head_seq + 1, recorded, recorded);
    else if (recorded < v->head_seq)
        verdict(v, LEDGER_EXTRA, recorded + 1, "entries after %" PRId64 " were not appended by commonsd (it recorded "
                "%" PRId64 " entries, the table ends at %" PRId64 ")", recorded, recorded, v->head_seq);
    return 0;
}

json_t *ledger_entries(struct store *s, int64_t after, int limit)
{
    json_t *out = json_array();
    int present;
    if (ledger_table_present(s, &present) != 0) {
        json_decref(out);
        return NULL;
    }
    if (!present) return out;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT seq, time, kind, body, prev_hash, hash FROM ledger WHERE seq > ? ORDER BY seq"
                           " LIMIT ?", -1, &st, NULL) != SQLITE_OK) {
        json_decref(out);
        fail(s, "read");
        return NULL;
    }
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int(st, 2, limit);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *cols[4];
        for (int i = 0; i < 4; i++) {
            cols[i] = (const char *)sqlite3_column_text(st, 2 + i);
            if (!cols[i]) cols[i] = "";
        }
        json_int_t seq = (json_int_t)sqlite3_column_int64(st, 0);
        json_t *e = json_pack("{s:I, s:I, s:s, s:s, s:s, s:s}", "seq", seq, "time",
                              (json_int_t)sqlite3_column_int64(st, 1), "kind", cols[0], "body", cols[1], "prev_hash",
                              cols[2], "hash", cols[3]);
        /* commonsd writes ASCII; a row edited into invalid UTF-8 is shown, not dropped. */
        if (!e) e = json_pack("{s:I, s:s}", "seq", seq, "error", "a column is not valid UTF-8 (the row was edited)");
        json_array_append_new(out, e);
    }
    sqlite3_finalize(st);
    return out;
}
