/* api_ledger.c: request handlers ledger.verify, ledger.export and usage.report
 * (docs/protocol.md, docs/ledger.md). All three only read the store.
 *
 * Who may see what: any user may verify the chain and see usage by account or
 * institution (the policy's shares are public, so is what they delivered);
 * usage by user shows other users only to admins (a user sees their own row);
 * export is for admins, because entries name users and hashes cover whole
 * bodies, so an entry cannot be redacted without breaking the chain: admins
 * publish exports.
 */
#include "cluster.h"
#include "ledger.h"

#include "cm_rpc.h"

#include <string.h>

static json_t *handle_verify(struct cluster *c, json_t *req)
{
    json_t *anchor = json_object_get(req, "anchor");
    json_t *aseq = json_object_get(anchor, "seq");
    const char *ahash = json_string_value(json_object_get(anchor, "hash"));
    if (anchor && (!json_is_object(anchor) || !json_is_integer(aseq) || json_integer_value(aseq) < 1 || !ahash))
        return cm_reply_err("bad_request", "field 'anchor': expected {\"seq\": N >= 1, \"hash\": \"64 hex digits\"}, "
                            "a head published earlier");
    struct ledger_verdict v;
    if (ledger_verify(&c->store, &v) != 0) return cm_reply_err("internal", "%s", c->store.err);
    json_t *r = cm_reply_ok();
    json_object_set_new(r, "valid", json_boolean(v.problem == LEDGER_OK));
    json_object_set_new(r, "entries", json_integer(v.entries));
    json_object_set_new(r, "head_seq", json_integer(v.head_seq));
    json_object_set_new(r, "head_hash", json_string(v.head_hash));
    json_object_set_new(r, "problem", json_string(ledger_problem_name(v.problem)));
    json_object_set_new(r, "first_bad_seq", json_integer(v.first_bad));
    json_object_set_new(r, "message", json_string(v.message));
    if (anchor) {
        /* A chain rewritten from some entry on verifies by itself; a head
         * published before the rewrite does not match it any more. */
        json_int_t seq = json_integer_value(aseq);
        json_t *e = ledger_entries(&c->store, seq - 1, 1);
        if (!e) {
            json_decref(r);
            return cm_reply_err("internal", "%s", c->store.err);
        }
        json_t *got = json_array_get(e, 0);
        int match = got && json_integer_value(json_object_get(got, "seq")) == seq &&
                    strcmp(json_string_value(json_object_get(got, "hash")) ? json_string_value(json_object_get(got, "hash")) : "",
                           ahash) == 0;
        json_object_set_new(r, "anchor_ok", json_boolean(match));
        if (!match) {
            json_object_set_new(r, "valid", json_false());
            json_object_set_new(r, "anchor_message",
                                got && json_integer_value(json_object_get(got, "seq")) == seq
                                    ? json_sprintf("entry %lld's hash is %s, not the published %s", (long long)seq,
                                                   json_string_value(json_object_get(got, "hash")), ahash)
                                    : json_sprintf("entry %lld is not in the ledger", (long long)seq));
        }
        json_decref(e);
    }
    return r;
}

static json_t *handle_export(struct cluster *c, json_t *req)
{
    json_t *after = json_object_get(req, "after"), *limit = json_object_get(req, "limit");
    if (after && (!json_is_integer(after) || json_integer_value(after) < 0))
        return cm_reply_err("bad_request", "field 'after': expected the last seq already received (>= 0)");
    if (limit && (!json_is_integer(limit) || json_integer_value(limit) < 1 || json_integer_value(limit) > LEDGER_EXPORT_MAX))
        return cm_reply_err("bad_request", "field 'limit': expected 1..%d entries per reply", LEDGER_EXPORT_MAX);
    int n = limit ? (int)json_integer_value(limit) : 1000;
    /* One more than asked says whether another page follows. */
    json_t *e = ledger_entries(&c->store, after ? json_integer_value(after) : 0, n + 1);
    if (!e) return cm_reply_err("internal", "%s", c->store.err);
    int more = json_array_size(e) > (size_t)n;
    if (more) json_array_remove(e, (size_t)n);
    json_t *r = cm_reply_ok();
    json_object_set_new(r, "entries", e);
    json_object_set_new(r, "more", json_boolean(more));
    return r;
}

static json_t *handle_usage(struct cluster *c, const struct user *u, json_t *req)
{
    const char *bys = json_string_value(json_object_get(req, "by"));
    const char *ps = json_string_value(json_object_get(req, "period"));
    json_t *since = json_object_get(req, "since");
    int by = ledger_by_parse(bys), period = ps ? ledger_period_parse(ps) : LEDGER_PERIOD_MONTH;
    if (by < 0) return cm_reply_err("bad_request", "field 'by': expected institution, account or user");
    if (period < 0) return cm_reply_err("bad_request", "field 'period': expected day or month");
    if (since && (!json_is_integer(since) || json_integer_value(since) < 0))
        return cm_reply_err("bad_request", "field 'since': expected Unix seconds (>= 0)");
    const char *only = by == LEDGER_BY_USER && !u->admin ? u->name : NULL;
    json_t *rows = ledger_usage(&c->store, by, period, since ? json_integer_value(since) : 0, only);
    if (!rows) return cm_reply_err("internal", "%s", c->store.err);
    json_t *r = cm_reply_ok();
    json_object_set_new(r, "rows", rows);
    json_object_set_new(r, "by", json_string(bys));
    json_object_set_new(r, "period", json_string(period == LEDGER_PERIOD_DAY ? "day" : "month"));
    if (only) json_object_set_new(r, "note", json_string("only your own usage: usage of other users is for admins"));
    return r;
}

json_t *api_ledger_handle(struct cluster *c, const struct user *u, const char *type, json_t *req)
{
    if (!strcmp(type, "ledger.verify")) return handle_verify(c, req);
    if (!strcmp(type, "usage.report")) return handle_usage(c, u, req);
    if (!strcmp(type, "ledger.export")) {
        if (!u->admin)
            return cm_reply_err("forbidden", "ledger export is for admins (entries name users); user '%s' is not one, "
                                "but may run: commons ledger verify, commons usage --by account", u->name);
        return handle_export(c, req);
    }
    return NULL;
}
