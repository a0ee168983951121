/* ledger.c: `commons ledger verify [--anchor SEQ:HASH]`, `commons ledger export
 * [--format json|csv] [--out FILE]` and `commons usage --by institution|account|user
 * [--period day|month] [--since YYYY-MM-DD]` (docs/ledger.md). */
#include "ledger.h"

#include "table.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { EXIT_BAD = 1, EXIT_USAGE = 2 };

static const char ledger_usage_text[] =
    "usage: commons ledger verify [--anchor SEQ:HASH]\n"
    "       commons ledger export [--format json|csv] [--out FILE]   (admin)\n"
    "       commons usage --by institution|account|user [--period day|month] [--since YYYY-MM-DD]\n";

static int bad_usage(const char *what, const char *arg)
{
    fprintf(stderr, "commons: %s '%s'\n%s", what, arg ? arg : "", ledger_usage_text);
    return EXIT_USAGE;
}

static const char *text(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static int verify(int argc, char **argv, cli_call_fn call, int json)
{
    json_t *req = json_pack("{s:s}", "type", "ledger.verify");
    for (int i = 2; i < argc; i++) {
        char hash[65];
        long long seq;
        int used = 0;
        if (!strcmp(argv[i], "--anchor") && i + 1 < argc && sscanf(argv[i + 1], "%lld:%64[0-9a-f]%n", &seq, hash, &used) == 2 &&
            used == (int)strlen(argv[i + 1]) && strlen(hash) == 64) {
            json_object_set_new(req, "anchor", json_pack("{s:I, s:s}", "seq", (json_int_t)seq, "hash", hash));
            i++;
        } else {
            json_decref(req);
            return bad_usage("ledger verify: expected --anchor SEQ:HASH (64 lowercase hex digits), not", argv[i]);
        }
    }
    int rc;
    json_t *r = call(req, &rc);
    if (!r) return rc;
    int valid = json_is_true(json_object_get(r, "valid"));
    if (json) {
        json_dumpf(r, stdout, JSON_INDENT(2));
        putchar('\n');
    } else if (json_is_true(json_object_get(r, "valid"))) {
        printf("ledger ok: %lld entries, head entry %lld hash %s%s\n",
               (long long)json_integer_value(json_object_get(r, "entries")),
               (long long)json_integer_value(json_object_get(r, "head_seq")), text(r, "head_hash"),
               json_is_true(json_object_get(r, "anchor_ok")) ? " (anchor matches)" : "");
    } else if (strcmp(text(r, "problem"), "ok") != 0) {
        printf("ledger BROKEN at entry %lld (%s): %s\n", (long long)json_integer_value(json_object_get(r, "first_bad_seq")),
               text(r, "problem"), text(r, "message"));
    } else {
        printf("ledger chain holds (%lld entries) but the anchor does not match: %s\n",
               (long long)json_integer_value(json_object_get(r, "entries")), text(r, "anchor_message"));
    }
    json_decref(r);
    return valid ? 0 : EXIT_BAD;
}

/* RFC 4180: a field with a comma, quote or newline is quoted, quotes doubled. */
static void csv_field(FILE *f, const char *s, int last)
{
    if (strpbrk(s, ",\"\r\n")) {
        fputc('"', f);
        for (; *s; s++) {
            if (*s == '"') fputc('"', f);
            fputc(*s, f);
        }
        fputc('"', f);
    } else {
        fputs(s, f);
    }
    fputc(last ? '\n' : ',', f);
}

static void write_entry(FILE *f, json_t *e, int csv, int first)
{
    if (csv) {
        fprintf(f, "%lld,%lld,", (long long)json_integer_value(json_object_get(e, "seq")),
                (long long)json_integer_value(json_object_get(e, "time")));
        csv_field(f, text(e, "kind"), 0);
        csv_field(f, text(e, "body"), 0);
        csv_field(f, text(e, "prev_hash"), 0);
        csv_field(f, text(e, "hash"), 1);
    } else {
        char *s = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
        fprintf(f, "%s%s", first ? "[\n" : ",\n", s ? s : "null");
        free(s);
    }
}

static int export(int argc, char **argv, cli_call_fn call)
{
    const char *format = "json", *out = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--format") && i + 1 < argc) format = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else return bad_usage("ledger export: unexpected", argv[i]);
    }
    int csv = !strcmp(format, "csv");
    if (!csv && strcmp(format, "json") != 0) return bad_usage("ledger export: --format is json or csv, not", format);
    /* Written beside the target and renamed at the end: no half export under its name. */
    char tmp[4096];
    FILE *f = stdout;
    if (out) {
        snprintf(tmp, sizeof tmp, "%s.part", out);
        if (!(f = fopen(tmp, "w"))) {
            fprintf(stderr, "commons: %s: cannot write: %s\n", tmp, strerror(errno));
            return EXIT_USAGE;
        }
    }
    if (csv) fputs("seq,time,kind,body,prev_hash,hash\n", f);
    long long after = 0, n = 0;
    int rc = 0, more = 1;
    while (more) {
        json_t *r = call(json_pack("{s:s, s:I, s:i}", "type", "ledger.export", "after", (json_int_t)after, "limit", 1000), &rc);
        if (!r) break;
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(r, "entries"), i, e) {
            write_entry(f, e, csv, n == 0);
            after = (long long)json_integer_value(json_object_get(e, "seq"));
            n++;
        }
        more = json_is_true(json_object_get(r, "more")) && json_array_size(json_object_get(r, "entries")) > 0;
        json_decref(r);
    }
    if (!csv && rc == 0) fputs(n ? "\n]\n" : "[]\n", f);
    if (out) {
        int werr = ferror(f);
        if (fclose(f) != 0 || werr) {
            fprintf(stderr, "commons: %s: write failed: %s\n", tmp, strerror(errno));
            rc = rc ? rc : EXIT_USAGE;
        }
        if (rc == 0 && rename(tmp, out) != 0) {
            fprintf(stderr, "commons: %s: cannot rename to %s: %s\n", tmp, out, strerror(errno));
            rc = EXIT_USAGE;
        }
        if (rc != 0) remove(tmp);
        else fprintf(stderr, "%lld entries written to %s\n", n, out);
    }
    return rc;
}

int cli_ledger_main(int argc, char **argv, cli_call_fn call, int json)
{
    if (argc < 2) return bad_usage("ledger: expected verify or export, got", "");
    if (!strcmp(argv[1], "verify")) return verify(argc, argv, call, json);
    if (!strcmp(argv[1], "export")) return export(argc, argv, call);
    return bad_usage("ledger: unknown action", argv[1]);
}

int cli_usage_main(int argc, char **argv, cli_call_fn call, int json)
{
    json_t *req = json_pack("{s:s}", "type", "usage.report");
    const char *by = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        char *end;
        if (!strcmp(a, "--by") && v && (!strcmp(v, "institution") || !strcmp(v, "account") || !strcmp(v, "user"))) {
            json_object_set_new(req, "by", json_string(by = v));
        } else if (!strcmp(a, "--period") && v && (!strcmp(v, "day") || !strcmp(v, "month"))) {
            json_object_set_new(req, "period", json_string(v));
        } else if (!strcmp(a, "--since") && v && (end = strptime(v, "%Y-%m-%d", &tm)) && !*end) {
            json_object_set_new(req, "since", json_integer((json_int_t)timegm(&tm)));
        } else {
            json_decref(req);
            return bad_usage("usage: expected --by institution|account|user, --period day|month or --since YYYY-MM-DD, "
                             "not", a);
        }
        i++;
    }
    if (!by) {
        json_decref(req);
        return bad_usage("usage: --by is required (institution, account or user)", "");
    }
    int rc;
    json_t *r = call(req, &rc);
    if (!r) return rc;
    if (json) {
        json_dumpf(json_object_get(r, "rows"), stdout, JSON_INDENT(2));
        putchar('\n');
    } else {
        const char *h[] = {"Period", by, "Jobs", "Runs", "CPU-hours", "GPU-hours", "Billed"};
        struct table *t = table_new(7, h);
        size_t i;
        json_t *row;
        json_array_foreach(json_object_get(r, "rows"), i, row)
            table_addf(t, "%s\t%s\t%lld\t%lld\t%.3f\t%.3f\t%.1f", text(row, "period"), text(row, "name"),
                       (long long)json_integer_value(json_object_get(row, "jobs")),
                       (long long)json_integer_value(json_object_get(row, "runs")),
                       json_number_value(json_object_get(row, "cpu_hours")),
                       json_number_value(json_object_get(row, "gpu_hours")), json_number_value(json_object_get(row, "billed")));
        table_print(t, stdout);
        table_free(t);
        if (json_object_get(r, "note")) fprintf(stderr, "(%s)\n", text(r, "note"));
    }
    json_decref(r);
    return 0;
}
