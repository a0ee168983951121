/* api.c: commonsd's request handlers (see api.h, docs/protocol.md). */
#include "api.h"
#include "ledger.h"

#include "cm_crypto.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AGENT_MAX_SKEW_MS (300 * 1000)
#define POLL_MAX_WAIT_MS 5000

static const char *const mutating_types[] = {"job.submit", "job.cancel", "job.hold", "job.release",
                                             "user.add", "token.create", "token.revoke",
                                             "account.add", "policy.apply", "node.drain", "node.resume",
                                             "job.spawn", "service.deploy", "service.scale", "service.remove",
                                             "agent", NULL};

int api_is_mutating(const char *type)
{
    for (int i = 0; mutating_types[i]; i++)
        if (strcmp(type, mutating_types[i]) == 0) return 1;
    return 0;
}

/* ---- JSON views ---------------------------------------------------------- */

static json_t *job_summary(struct cluster *c, const struct job *j)
{
    char nodes[1024];
    size_t n = 0;
    nodes[0] = '\0';
    for (int i = 0; i < j->nalloc && n + 140 < sizeof nodes; i++)
        n += (size_t)snprintf(nodes + n, sizeof nodes - n, i ? ",%s" : "%s", c->nodes[j->alloc[i]].name);
    json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:i, s:i, s:i, s:I, s:i}",
                          "id", (json_int_t)j->id, "name", j->name, "user", j->user, "account",
                          j->account, "qos", j->qos, "state", job_state_name(j->state), "reason",
                          j->reason, "nodelist", nodes, "submit_time", (json_int_t)j->submit_time,
                          "start_time", (json_int_t)j->start_time, "end_time", (json_int_t)j->end_time,
                          "time_limit_s", (json_int_t)j->time_limit_s, "nodes", j->nodes, "tasks", j->tasks,
                          "cpus", job_cpus_per_node(j) * j->nodes, "mem_mb", (json_int_t)j->mem_mb, "gpus", j->gpus);
    if (j->array_job_id) {
        json_object_set_new(o, "array_job_id", json_integer(j->array_job_id));
        json_object_set_new(o, "array_task_id", json_integer(j->array_task_id));
    }
    if (job_state_is_final(j->state)) {
        json_object_set_new(o, "exit_code", json_integer(j->exit_code));
        json_object_set_new(o, "signal", json_integer(j->signal));
    }
    return o;
}

static json_t *job_full(struct cluster *c, const struct job *j, int may_see_private)
{
    json_t *o = job_summary(c, j);
    json_t *spec = json_deep_copy(j->spec);
    if (!may_see_private) {
        json_object_del(spec, "script");
        json_object_del(spec, "env");
        json_object_del(spec, "command");
        json_object_set_new(o, "private", json_string("script, command and environment are visible to the owner and admins only"));
    }
    json_object_set_new(o, "spec", spec);
    json_object_set_new(o, "requeues", json_integer(j->requeues));
    if (j->error) json_object_set_new(o, "error", json_string(j->error));
    if (j->note) json_object_set_new(o, "note", json_string(j->note));
    if (j->preempted_by) json_object_set_new(o, "preempted_by", json_integer(j->preempted_by));
    if (j->ndeps) json_object_set(o, "dependency", json_object_get(j->spec, "dependency"));
    return o;
}

/* ---- users --------------------------------------------------------------- */

static json_t *need_admin(const struct user *u)
{
    return u->admin ? NULL : cm_reply_err("forbidden", "this needs an admin; user '%s' is not one", u->name);
}

static json_t *id_list(json_t *req, const char **err)
{
    json_t *ids = json_object_get(req, "ids");
    size_t i;
    json_t *v;
    if (!json_is_array(ids) || json_array_size(ids) == 0 || json_array_size(ids) > 100000) {
        *err = "field 'ids': expected a non-empty array of job ids";
        return NULL;
    }
    json_array_foreach(ids, i, v)
        if (!json_is_integer(v)) {
            *err = "field 'ids': every entry must be an integer job id";
            return NULL;
        }
    return ids;
}

enum job_op { OP_CANCEL, OP_HOLD, OP_RELEASE };

static json_t *jobs_op(struct cluster *c, const struct user *u, json_t *req, enum job_op op)
{
    const char *e = NULL;
    json_t *ids = id_list(req, &e);
    if (!ids) return cm_reply_err("bad_request", "%s", e);
    json_t *results = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        int64_t id = json_integer_value(v);
        struct job *j = cluster_job(c, id);
        char err[512] = "";
        int rc = -1;
        if (!j) snprintf(err, sizeof err, "no job %lld", (long long)id);
        else if (!u->admin && strcmp(j->user, u->name) != 0)
            snprintf(err, sizeof err, "job %lld belongs to another user", (long long)id);
        else if (op == OP_CANCEL) rc = cluster_cancel(c, j, err, sizeof err);
        else rc = cluster_hold(c, j, op == OP_HOLD, err, sizeof err);
        json_t *r = json_pack("{s:I, s:b}", "id", (json_int_t)id, "ok", rc == 0);
        if (rc) json_object_set_new(r, "error", json_string(err));
        json_array_append_new(results, r);
    }
    json_t *reply = cm_reply_ok();
    json_object_set_new(reply, "results", results);
    return reply;
}

static json_t *handle_submit(struct cluster *c, const struct user *u, json_t *req)
{
    struct job_spec spec;
    char err[1024];
    for (const char *const *f = (const char *const[]){"service", "service_port", NULL}; *f; f++)
        if (json_object_get(json_object_get(req, "job"), *f))
            return cm_reply_err("invalid_job", "field '%s' is set by commonsd for service replicas (commons service deploy)",
                                *f);
    if (job_spec_validate(json_object_get(req, "job"), &spec, err, sizeof err) != 0) {
        c->stats.rejected++;
        return cm_reply_err("invalid_job", "%s", err);
    }
    const char *code = "invalid_job";
    int64_t id = cluster_submit(c, u, &spec, &code, err, sizeof err);
    json_t *reply;
    if (id < 0) {
        c->stats.rejected++;
        reply = cm_reply_err(code, "%s", err);
    } else {
        reply = cm_reply_ok();
        json_object_set_new(reply, "job_id", json_integer(id));
        if (spec.narray) {
            json_object_set_new(reply, "array_ids", json_pack("[I, I]", (json_int_t)id, (json_int_t)(id + spec.narray - 1)));
        }
    }
    job_spec_free(&spec);
    return reply;
}

static json_t *handle_list(struct cluster *c, json_t *req)
{
    const char *fu = json_string_value(json_object_get(req, "user"));
    const char *fa = json_string_value(json_object_get(req, "account"));
    const char *fs = json_string_value(json_object_get(req, "state"));
    int want_state = -1;
    if (fs && (want_state = job_state_parse(fs)) < 0)
        return cm_reply_err("bad_request", "field 'state': '%s' is not a job state (PENDING, RUNNING, COMPLETED, ...)", fs);
    int all = json_is_true(json_object_get(req, "all"));
    json_t *jobs = json_array();
    for (int64_t id = 1; id < c->next_id; id++) {
        struct job *j = c->jobs[id];
        if (!j) continue;
        if (fu && strcmp(j->user, fu) != 0) continue;
        if (fa && strcmp(j->account, fa) != 0) continue;
        if (want_state >= 0 && (int)j->state != want_state) continue;
        /* Like squeue, ended jobs are listed only when asked for. */
        if (want_state < 0 && !all && job_state_is_final(j->state)) continue;
        json_array_append_new(jobs, job_summary(c, j));
    }
    json_t *reply = cm_reply_ok();
    json_object_set_new(reply, "jobs", jobs);
    return reply;
}

static json_t *handle_user_add(struct cluster *c, json_t *req)
{
    const char *name = json_string_value(json_object_get(req, "name"));
    const char *account = json_string_value(json_object_get(req, "account"));
    const char *unix_user = json_string_value(json_object_get(req, "unix_user"));
    json_t *accounts = json_object_get(req, "accounts");
    if (!name || !*name || strlen(name) > 64 || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != strlen(name))
        return cm_reply_err("bad_request", "field 'name': expected a user name of letters, digits, '_', '-', '.'");
    if (!account) return cm_reply_err("bad_request", "field 'account': expected the user's default account");
    if (accounts && !json_is_array(accounts))
        return cm_reply_err("bad_request", "field 'accounts': expected an array of account names");
    char token[80], err[512];
    json_t *none = json_array();
    int rc = cluster_user_add(c, name, account, accounts ? accounts : none, json_is_true(json_object_get(req, "admin")),
                              unix_user ? unix_user : name, token, err, sizeof err);
    json_decref(none);
    if (rc != 0) return cm_reply_err("bad_request", "%s", err);
    json_t *reply = cm_reply_ok();
    json_object_set_new(reply, "token", json_string(token));
    return reply;
}

static json_t *handle_share(struct cluster *c)
{
    if (!c->policy) return cm_reply_err("not_found", "no quota policy is in force (commons policy apply FILE)");
    quota_share_row *rows = cluster_fairshare(c);
    if (!rows) return cm_reply_err("internal", "out of memory");
    json_t *out = json_array();
    const quota_policy *p = c->policy;
    for (int a = 0; a < p->naccounts; a++) {
        const quota_account *acc = &p->accounts[a];
        const quota_share_row *r = &rows[a];
        json_t *o = json_pack("{s:s, s:s, s:i, s:b, s:I, s:f, s:f, s:f, s:f, s:f, s:i}", "account", acc->name,
                              "parent", acc->parent >= 0 ? p->accounts[acc->parent].name : "", "depth", acc->depth,
                              "leaf", acc->nchildren == 0, "raw_shares", (json_int_t)r->raw_shares,
                              "norm_shares", r->norm_shares, "raw_usage", r->raw_usage, "norm_usage", r->norm_usage,
                              "effective_usage", r->effective_usage, "fairshare", r->fs_factor, "rank", r->rank);
        /* JSON has no infinity: an account with no usage has an unbounded level fair-share. */
        json_object_set_new(o, "level_fs", isinf(r->level_fs) ? json_null() : json_real(r->level_fs));
        json_array_append_new(out, o);
    }
    free(rows);
    json_t *reply = cm_reply_ok();
    json_object_set_new(reply, "accounts", out);
    json_object_set_new(reply, "policy_version", json_integer(c->policy_version));
    return reply;
}

static json_t *handle_prio(struct cluster *c)
{
    if (!c->policy) return cm_reply_err("not_found", "no quota policy is in force: jobs run in submission order");
    sched_order_multifactor(c, c->pending, c->npending); /* fresh factors; the order is what the next pass uses */
    json_t *out = json_array();
    for (size_t i = 0; i < c->npending; i++) {
        const struct job *j = c->jobs[c->pending[i]];
        const quota_prio *q = &j->prio;
        json_array_append_new(out, json_pack("{s:I, s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:f, s:{s:f, s:f, s:f, s:f}}",
                                             "id", (json_int_t)j->id, "user", j->user, "account", j->account,
                                             "qos", j->qos, "priority", q->total, "fairshare", q->weighted.fairshare,
                                             "age", q->weighted.age, "size", q->weighted.size, "qos_weighted",
                                             q->weighted.qos, "factors", "fairshare", q->factor.fairshare, "age",
                                             q->factor.age, "size", q->factor.size, "qos", q->factor.qos));
    }
    json_t *reply = cm_reply_ok();
    json_object_set_new(reply, "jobs", out);
    return reply;
}

static int load_policy_row(void *ctx, sqlite3_stmt *st)
{
    json_array_append_new(ctx, json_pack("{s:I, s:s, s:s, s:s, s:I, s:s}", "version", (json_int_t)sqlite3_column_int64(st, 0),
                                         "sha256", sqlite3_column_text(st, 1), "source",
                                         sqlite3_column_text(st, 2) ? (const char *)sqlite3_column_text(st, 2) : "",
                                         "applied_by", sqlite3_column_text(st, 3), "applied_at",
                                         (json_int_t)sqlite3_column_int64(st, 4), "text", sqlite3_column_text(st, 5)));
    return 0;
}

static json_t *handle_policy_show(struct cluster *c, json_t *req)
{
    json_t *versions = json_array();
    json_t *want = json_object_get(req, "version");
    if (want && !json_is_integer(want)) return cm_reply_err("bad_request", "field 'version': expected an integer");
    if (store_each(&c->store, "SELECT version, sha256, source, applied_by, applied_at, text FROM policies ORDER BY version",
                   load_policy_row, versions) != 0) {
        json_decref(versions);
        return cm_reply_err("internal", "%s", c->store.err);
    }
    json_int_t v = want ? json_integer_value(want) : c->policy_version;
    json_t *reply = cm_reply_ok(), *chosen = NULL, *e;
    size_t i;
    json_array_foreach(versions, i, e) {
        if (json_integer_value(json_object_get(e, "version")) == v) chosen = e;
        else json_object_del(e, "text"); /* the history lists metadata; only one text is sent */
    }
    if (want && !chosen) {
        json_decref(versions);
        json_decref(reply);
        return cm_reply_err("not_found", "no policy version %lld", (long long)v);
    }
    json_object_set_new(reply, "version", json_integer(chosen ? v : 0));
    json_object_set(reply, "policy", chosen ? chosen : json_null());
    json_object_set_new(reply, "versions", versions);
    return reply;
}

static json_t *handle_policy_apply(struct cluster *c, const struct user *u, json_t *req)
{
    json_t *text = json_object_get(req, "text");
    const char *source = json_string_value(json_object_get(req, "source"));
    if (!json_is_string(text)) return cm_reply_err("bad_request", "field 'text': expected the policy's YAML text");
    char *report = NULL, err[512];
    int rc = cluster_policy_apply(c, json_string_value(text), json_string_length(text), source ? source : "policy.yaml",
                                  u->name, &report, err, sizeof err);
    json_t *reply = rc == 0 ? cm_reply_ok() : cm_reply_err("invalid_policy", "%s", err);
    json_object_set_new(reply, "diagnostics", json_string(report ? report : ""));
    if (rc == 0) json_object_set_new(reply, "version", json_integer(c->policy_version));
    free(report);
    return reply;
}

static json_t *handle_service(struct cluster *c, struct user *u, const char *type, json_t *req)
{
    char err[1024];
    const char *name = json_string_value(json_object_get(req, "name"));
    if (strcmp(type, "service.list") == 0) {
        json_t *all = json_array();
        for (int i = 0; i < c->nservices; i++)
            if (!name || strcmp(name, c->services[i].name) == 0) json_array_append_new(all, cluster_service_json(c, &c->services[i]));
        json_t *r = cm_reply_ok();
        json_object_set_new(r, "services", all);
        return r;
    }
    if (!name || !*name || strlen(name) > 64 ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != strlen(name))
        return cm_reply_err("bad_request", "field 'name': expected a service name of letters, digits, '_', '-', '.'");
    struct service *s = cluster_service(c, name);
    if (strcmp(type, "service.deploy") == 0) {
        json_t *spec = json_object_get(req, "replica"), *mn = json_object_get(req, "min"), *mx = json_object_get(req, "max");
        const char *model = json_string_value(json_object_get(spec, "model"));
        const char *bin = json_string_value(json_object_get(spec, "serve_bin"));
        if (!json_is_object(spec) || !model || model[0] != '/' || !bin || bin[0] != '/')
            return cm_reply_err("bad_request", "field 'replica': expected an object with absolute paths 'model' and 'serve_bin'");
        if (!json_is_integer(mn) || !json_is_integer(mx))
            return cm_reply_err("bad_request", "fields 'min' and 'max': expected the replica range as integers");
        if (json_object_get(spec, "command") || json_object_get(spec, "script") || json_object_get(spec, "array"))
            return cm_reply_err("bad_request", "field 'replica': commonsd writes the replica's command; no command, script or array");
        if (cluster_service_deploy(c, u, name, spec, (int)json_integer_value(mn), (int)json_integer_value(mx), err,
                                   sizeof err) != 0)
            return cm_reply_err("bad_request", "%s", err);
        cm_info("service %s deployed by %s", name, u->name);
        return cm_reply_ok();
    }
    if (!s) return cm_reply_err("not_found", "no service '%s'", name);
    if (!u->admin && strcmp(s->user, u->name) != 0)
        return cm_reply_err("forbidden", "service '%s' belongs to %s", name, s->user);
    if (strcmp(type, "service.scale") == 0) {
        json_t *t = json_object_get(req, "target");
        if (!json_is_integer(t)) return cm_reply_err("bad_request", "field 'target': expected a number of replicas");
        if (cluster_service_scale(c, s, (int)json_integer_value(t), err, sizeof err) != 0)
            return cm_reply_err("bad_request", "%s", err);
        return cm_reply_ok();
    }
    if (cluster_service_remove(c, s, err, sizeof err) != 0) return cm_reply_err("unavailable", "%s", err);
    cm_info("service %s removed by %s", name, u->name);
    return cm_reply_ok();
}

static json_t *handle_user(struct daemon *d, struct user *u, const char *type, json_t *req)
{
    struct cluster *c = &d->c;
    json_t *deny;
    if (strcmp(type, "whoami") == 0) {
        json_t *r = cm_reply_ok();
        json_object_set_new(r, "user", json_string(u->name));
        json_object_set_new(r, "account", json_string(u->account));
        json_object_set(r, "accounts", u->accounts);
        json_object_set_new(r, "admin", json_boolean(u->admin));
        return r;
    }
    if (strcmp(type, "job.submit") == 0) return handle_submit(c, u, req);
    if (strcmp(type, "job.list") == 0) return handle_list(c, req);
    if (strcmp(type, "job.show") == 0) {
        json_t *idv = json_object_get(req, "id");
        if (!json_is_integer(idv)) return cm_reply_err("bad_request", "field 'id': expected a job id");
        struct job *j = cluster_job(c, json_integer_value(idv));
        if (!j) return cm_reply_err("not_found", "no job %lld", (long long)json_integer_value(idv));
        json_t *r = cm_reply_ok();
        json_object_set_new(r, "job", job_full(c, j, u->admin || strcmp(u->name, j->user) == 0));
        return r;
    }
    if (strcmp(type, "job.cancel") == 0) return jobs_op(c, u, req, OP_CANCEL);
    if (strcmp(type, "job.hold") == 0) return jobs_op(c, u, req, OP_HOLD);
    if (strcmp(type, "job.release") == 0) return jobs_op(c, u, req, OP_RELEASE);
    if (strcmp(type, "node.list") == 0) {
        json_t *nodes = json_array();
        for (int i = 0; i < c->nnodes; i++) json_array_append_new(nodes, node_json(&c->nodes[i], 0));
        json_t *r = cm_reply_ok();
        json_object_set_new(r, "nodes", nodes);
        return r;
    }
    if (strcmp(type, "node.show") == 0) {
        const char *name = json_string_value(json_object_get(req, "name"));
        struct node *n = name ? cluster_node(c, name) : NULL;
        if (!n) return cm_reply_err("not_found", "no node '%s'", name ? name : "(none given)");
        json_t *r = cm_reply_ok();
        json_object_set_new(r, "node", node_json(n, 1));
        return r;
    }
    if (strcmp(type, "account.list") == 0) {
        json_t *a = json_array();
        for (int i = 0; i < c->naccounts; i++)
            json_array_append_new(a, json_pack("{s:s, s:s}", "name", c->accounts[i].name, "parent", c->accounts[i].parent));
        json_t *r = cm_reply_ok();
        json_object_set_new(r, "accounts", a);
        return r;
    }
    if (strcmp(type, "stats") == 0) return api_stats(d);
    if (!strcmp(type, "service.list") || !strcmp(type, "service.deploy") || !strcmp(type, "service.scale") ||
        !strcmp(type, "service.remove"))
        return handle_service(c, u, type, req);
    if (strcmp(type, "share") == 0) return handle_share(c);
    if (strcmp(type, "prio") == 0) return handle_prio(c);
    if (strcmp(type, "policy.show") == 0) return handle_policy_show(c, req);
    json_t *ledger_reply = api_ledger_handle(c, u, type, req); /* ledger.verify, ledger.export, usage.report */
    if (ledger_reply) return ledger_reply;
    if ((deny = need_admin(u))) return deny;
    if (strcmp(type, "policy.apply") == 0) return handle_policy_apply(c, u, req);
    if (strcmp(type, "node.drain") == 0 || strcmp(type, "node.resume") == 0) {
        const char *name = json_string_value(json_object_get(req, "name"));
        const char *reason = json_string_value(json_object_get(req, "reason"));
        int drain = type[5] == 'd';
        struct node *n = name ? cluster_node(c, name) : NULL;
        char err[512];
        if (!n) return cm_reply_err("not_found", "no node '%s'", name ? name : "(none given)");
        if (drain && (!reason || !*reason)) return cm_reply_err("bad_request", "field 'reason': say why the node is drained");
        if (cluster_node_drain(c, n, drain, reason, err, sizeof err) != 0) return cm_reply_err("unavailable", "%s", err);
        cm_info("node %s %s by %s%s%s", n->name, drain ? "drained" : "resumed", u->name, drain ? ": " : "", drain ? reason : "");
        return cm_reply_ok();
    }
    /* Admin-only below. */
    if (strcmp(type, "user.add") == 0) {
        if (c->policy)
            return cm_reply_err("conflict", "users come from the policy (version %lld): add the user under 'users:' in the "
                                "policy file and apply it, then create a token with: commons admin token create NAME",
                                (long long)c->policy_version);
        return handle_user_add(c, req);
    }
    if (strcmp(type, "user.list") == 0) {
        json_t *a = json_array();
        for (int i = 0; i < c->nusers; i++) {
            struct user *x = &c->users[i];
            json_array_append_new(a, json_pack("{s:s, s:s, s:O, s:b, s:s}", "name", x->name, "account", x->account,
                                               "accounts", x->accounts, "admin", x->admin, "unix_user", x->unix_user));
        }
        json_t *r = cm_reply_ok();
        json_object_set_new(r, "users", a);
        return r;
    }
    if (strcmp(type, "token.create") == 0 || strcmp(type, "token.revoke") == 0) {
        const char *name = json_string_value(json_object_get(req, "user"));
        char err[512], token[80];
        if (!name) return cm_reply_err("bad_request", "field 'user': expected a user name");
        if (!cluster_user(c, name)) return cm_reply_err("not_found", "no user '%s'", name);
        json_t *r = cm_reply_ok();
        if (type[6] == 'c') {
            json_t *exp = json_object_get(req, "expires_s");
            if (exp && (!json_is_integer(exp) || json_integer_value(exp) < 1)) {
                json_decref(r);
                return cm_reply_err("bad_request", "field 'expires_s': expected a positive number of seconds");
            }
            /* Rounded up to a whole second: the token lives at least the time asked
             * (stored in Unix seconds, valid while now < expires). */
            int64_t expires = exp ? (cm_now_ms() + json_integer_value(exp) * 1000 + 999) / 1000 : 0;
            if (cluster_token_create(c, name, expires, token, err, sizeof err) != 0) {
                json_decref(r);
                return cm_reply_err("unavailable", "%s", err);
            }
            json_object_set_new(r, "token", json_string(token));
        } else {
            int n = 0;
            if (cluster_token_revoke(c, name, &n, err, sizeof err) != 0) {
                json_decref(r);
                return cm_reply_err("unavailable", "%s", err);
            }
            json_object_set_new(r, "revoked", json_integer(n));
        }
        return r;
    }
    if (strcmp(type, "account.add") == 0 && c->policy)
        return cm_reply_err("conflict", "accounts come from the policy (version %lld): edit the policy file and apply it",
                            (long long)c->policy_version);
    if (strcmp(type, "account.add") == 0) {
        const char *name = json_string_value(json_object_get(req, "name"));
        const char *parent = json_string_value(json_object_get(req, "parent"));
        char err[512];
        if (!name || !*name || strlen(name) > 128 || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != strlen(name))
            return cm_reply_err("bad_request", "field 'name': expected an account name of letters, digits, '_', '-', '.'");
        if (cluster_account_add(c, name, parent, err, sizeof err) != 0) return cm_reply_err("bad_request", "%s", err);
        return cm_reply_ok();
    }
    return cm_reply_err("bad_request", "unknown request type '%s'", type);
}

/* ---- agents -------------------------------------------------------------- */

static json_t *validate_running(json_t *running, const char **err)
{
    if (!running) return json_array();
    size_t i;
    json_t *v;
    if (!json_is_array(running)) goto bad;
    json_array_foreach(running, i, v)
        if (!json_is_array(v) || json_array_size(v) < 2 || json_array_size(v) > 3 ||
            !json_is_integer(json_array_get(v, 0)) || !json_is_integer(json_array_get(v, 1)) ||
            (json_array_size(v) == 3 && !json_is_integer(json_array_get(v, 2))))
            goto bad;
    return json_incref(running);
bad:
    *err = "field 'running': expected an array of [job id, attempt] or [job id, attempt, spawn id]";
    return NULL;
}

static json_t *commands_reply(json_t *cmds)
{
    json_t *r = cm_reply_ok();
    json_object_set_new(r, "commands", cmds ? cmds : json_array());
    return r;
}

static json_t *handle_agent(struct daemon *d, struct srv_req *sr, json_t *frame)
{
    struct cluster *c = &d->c;
    json_t *p = NULL;
    char err[256];
    if (cm_rpc_verify(d->cluster_key, frame, &p, err, sizeof err) != 0) {
        cm_warn("rejected agent message: %s", err);
        return cm_reply_err("unauthorized", "agent message rejected: %s", err);
    }
    json_t *reply = NULL;
    const char *type = json_string_value(json_object_get(p, "type"));
    const char *name = json_string_value(json_object_get(p, "node"));
    json_t *tsv = json_object_get(p, "ts");
    int64_t now = cm_now_ms();
    if (!type || !name || !*name || strlen(name) > 128 || !json_is_integer(tsv)) {
        reply = cm_reply_err("bad_request", "agent payload needs string 'type', string 'node' and integer 'ts'");
        goto out;
    }
    int64_t ts = json_integer_value(tsv);
    if (ts < now - AGENT_MAX_SKEW_MS || ts > now + AGENT_MAX_SKEW_MS) {
        reply = cm_reply_err("unauthorized", "agent message time %lld is more than %d s from commonsd's clock",
                             (long long)ts, AGENT_MAX_SKEW_MS / 1000);
        goto out;
    }
    struct node *n = cluster_node(c, name);
    if (n && ts <= n->last_ts) {
        cm_warn("node %s: rejected a replayed or reordered message (ts %lld <= %lld)", name, (long long)ts,
                (long long)n->last_ts);
        reply = cm_reply_err("unauthorized", "replayed or reordered agent message (ts %lld not after %lld)",
                             (long long)ts, (long long)n->last_ts);
        goto out;
    }
    const char *e = NULL;
    if (strcmp(type, "agent.register") == 0) {
        json_t *cpus = json_object_get(p, "cpus"), *mem = json_object_get(p, "memory_mb"), *gpus = json_object_get(p, "gpus");
        if (!json_is_integer(cpus) || json_integer_value(cpus) < 1 || json_integer_value(cpus) > 1000000 ||
            !json_is_integer(mem) || json_integer_value(mem) < 0 || !json_is_integer(gpus) ||
            json_integer_value(gpus) < 0 || json_integer_value(gpus) > 1024) {
            reply = cm_reply_err("bad_request", "agent.register needs integer cpus >= 1, memory_mb >= 0 and gpus >= 0");
            goto out;
        }
        const char *host = json_string_value(json_object_get(p, "hostname"));
        n = cluster_node_register(c, name, host ? host : name, (int)json_integer_value(cpus), json_integer_value(mem),
                                  (int)json_integer_value(gpus), json_object_get(p, "topology"), err, sizeof err);
        if (!n) {
            reply = cm_reply_err("bad_request", "%s", err);
            goto out;
        }
        n->last_ts = ts;
        cm_info("node %s registered: %d CPUs, %lld MB, %d GPUs", name, n->cpus, (long long)n->memory_mb, n->gpus);
        json_t *running = validate_running(json_object_get(p, "running"), &e);
        if (!running) {
            reply = cm_reply_err("bad_request", "%s", e);
            goto out;
        }
        reply = commands_reply(cluster_node_commands(c, n, running));
        json_object_set_new(reply, "heartbeat_ms", json_integer(c->set.node_timeout_ms / 3));
        json_decref(running);
        goto out;
    }
    if (!n) {
        reply = cm_reply_err("not_found", "node '%s' is not registered; send agent.register first", name);
        goto out;
    }
    n->last_ts = ts;
    cluster_node_heard(c, n);
    if (strcmp(type, "agent.event") == 0) {
        json_t *events = json_object_get(p, "events"), *ev;
        size_t i;
        if (!json_is_array(events)) {
            reply = cm_reply_err("bad_request", "field 'events': expected an array");
            goto out;
        }
        json_t *acked = json_array();
        json_array_foreach(events, i, ev) {
            if (!json_is_object(ev) || !json_is_integer(json_object_get(ev, "id"))) continue;
            cluster_job_event(c, n, ev);
            json_array_append(acked, json_object_get(ev, "id"));
        }
        reply = cm_reply_ok();
        json_object_set_new(reply, "acked", acked);
    } else if (strcmp(type, "agent.poll") == 0) {
        json_t *running = validate_running(json_object_get(p, "running"), &e);
        if (!running) {
            reply = cm_reply_err("bad_request", "%s", e);
            goto out;
        }
        json_t *cmds = cluster_node_commands(c, n, running);
        json_int_t wait = json_integer_value(json_object_get(p, "wait_ms"));
        int idx = cluster_node_index(c, n);
        if (cmds || wait <= 0 || d->nparked >= SERVER_CONTEXTS) {
            reply = commands_reply(cmds);
            json_decref(running);
        } else {
            /* One held poll per node: a newer one replaces an older one. */
            for (int i = 0; i < d->nparked; i++)
                if (d->parked[i].node == idx) {
                    api_queue_reply(d, d->parked[i].req, commands_reply(NULL));
                    json_decref(d->parked[i].running);
                    d->parked[i] = d->parked[--d->nparked];
                    break;
                }
            struct parked_poll *pp = &d->parked[d->nparked++];
            pp->req = sr;
            pp->node = idx;
            pp->running = running;
            pp->deadline_ms = cm_mono_ms() + (wait > POLL_MAX_WAIT_MS ? POLL_MAX_WAIT_MS : wait);
        }
    } else {
        reply = cm_reply_err("bad_request", "unknown agent message type '%s'", type);
    }
out:
    json_decref(p);
    return reply;
}

void api_flush_parked(struct daemon *d, int force_all)
{
    int64_t now = cm_mono_ms();
    for (int i = 0; i < d->nparked;) {
        struct parked_poll *pp = &d->parked[i];
        json_t *cmds = force_all ? NULL : cluster_node_commands(&d->c, &d->c.nodes[pp->node], pp->running);
        if (cmds || force_all || now >= pp->deadline_ms) {
            api_queue_reply(d, pp->req, commands_reply(cmds));
            json_decref(pp->running);
            *pp = d->parked[--d->nparked];
        } else {
            i++;
        }
    }
}

/* ---- spawns: a job's own processes, authenticated by its step key --------- */

static json_t *handle_spawn(struct cluster *c, const char *type, json_t *req)
{
    json_t *idv = json_object_get(req, "id");
    const char *key = json_string_value(json_object_get(req, "step_key"));
    struct job *j = json_is_integer(idv) ? cluster_job(c, json_integer_value(idv)) : NULL;
    if (!j || !key || !j->step_key[0] || !cm_str_eq_ct(key, j->step_key))
        return cm_reply_err("unauthorized", "unknown job or wrong step key");
    char err[512];
    if (strcmp(type, "job.spawn") == 0) {
        const char *node = json_string_value(json_object_get(req, "node"));
        json_t *argv = json_object_get(req, "argv"), *env = json_object_get(req, "env"), *a;
        size_t i;
        if (j->state != JOB_RUNNING || j->kill_pending || json_integer_value(json_object_get(req, "attempt")) != j->requeues)
            return cm_reply_err("conflict", "job %lld is not running this attempt", (long long)j->id);
        if (!node || !json_is_array(argv) || json_array_size(argv) == 0 || (env && !json_is_object(env)))
            return cm_reply_err("bad_request", "job.spawn needs 'node', a non-empty 'argv' array and an optional 'env' object");
        json_array_foreach(argv, i, a)
            if (!json_is_string(a)) return cm_reply_err("bad_request", "field 'argv[%zu]': expected a string", i);
        int64_t sid = cluster_spawn_create(c, j, node, argv, env, err, sizeof err);
        if (sid < 0) return cm_reply_err("bad_request", "%s", err);
        json_t *reply = cm_reply_ok();
        json_object_set_new(reply, "spawn_id", json_integer(sid));
        return reply;
    }
    struct spawn *s = cluster_spawn_find(c, json_integer_value(json_object_get(req, "spawn_id")));
    if (!s || s->job != j->id) return cm_reply_err("not_found", "no such spawn for job %lld", (long long)j->id);
    json_t *reply = cm_reply_ok();
    json_object_set_new(reply, "state", json_string(spawn_state_name(s)));
    json_object_set_new(reply, "exit_code", json_integer(s->exit_code));
    json_object_set_new(reply, "signal", json_integer(s->signal));
    if (s->error) json_object_set_new(reply, "error", json_string(s->error));
    return reply;
}

/* ---- dispatch ------------------------------------------------------------ */

void api_queue_reply(struct daemon *d, struct srv_req *r, json_t *reply)
{
    /* Every request owns one context, so there are never more replies than contexts. */
    d->out[d->nout].req = r;
    d->out[d->nout].reply = reply;
    d->nout++;
}

json_t *api_handle(struct daemon *d, struct srv_req *r, json_t *req)
{
    const char *type = json_string_value(json_object_get(req, "type"));
    json_t *v = json_object_get(req, "v");
    if (!type) return cm_reply_err("bad_request", "field 'type': expected a string");
    if (v && (!json_is_integer(v) || json_integer_value(v) != CM_RPC_VERSION))
        return cm_reply_err("bad_request", "field 'v': this commonsd speaks protocol version %d", CM_RPC_VERSION);
    if (d->read_only && api_is_mutating(type))
        return cm_reply_err("unavailable", "commonsd cannot write its state (%s); it refuses new work until that is fixed",
                            d->c.store.err);
    if (strcmp(type, "agent") == 0) return handle_agent(d, r, req);
    if (strcmp(type, "job.spawn") == 0 || strcmp(type, "job.spawn_wait") == 0) return handle_spawn(&d->c, type, req);
    const char *token = json_string_value(json_object_get(req, "token"));
    if (!token) return cm_reply_err("unauthorized", "no token: set COMMONS_TOKEN or use --token-file");
    int expired;
    struct user *u = cluster_user_by_token(&d->c, token, &expired);
    if (expired) return cm_reply_err("unauthorized", "expired token: ask an admin for a new one (commons admin token create)");
    if (!u) return cm_reply_err("unauthorized", "unknown or revoked token");
    return handle_user(d, u, type, req);
}

json_t *api_stats(struct daemon *d)
{
    struct cluster *c = &d->c;
    int counts[JOB_STATE_COUNT] = {0};
    for (int64_t id = 1; id < c->next_id; id++)
        if (c->jobs[id]) counts[c->jobs[id]->state]++;
    char buf[8192];
    size_t n = 0;
    n += (size_t)snprintf(buf + n, sizeof buf - n, "# HELP commons_jobs Jobs by state.\n# TYPE commons_jobs gauge\n");
    for (int s = 0; s < JOB_STATE_COUNT; s++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "commons_jobs{state=\"%s\"} %d\n", job_state_name(s), counts[s]);
    int up = 0, cpus = 0, used = 0;
    for (int i = 0; i < c->nnodes; i++) {
        up += c->nodes[i].state == NODE_UP;
        cpus += c->nodes[i].cpus;
        used += c->nodes[i].used_cpus;
    }
    n += (size_t)snprintf(buf + n, sizeof buf - n,
                          "# TYPE commons_nodes gauge\ncommons_nodes %d\ncommons_nodes_up %d\n"
                          "# TYPE commons_cpus gauge\ncommons_cpus %d\ncommons_cpus_used %d\n"
                          "# TYPE commons_jobs_submitted_total counter\ncommons_jobs_submitted_total %llu\n"
                          "# TYPE commons_jobs_rejected_total counter\ncommons_jobs_rejected_total %llu\n"
                          "# TYPE commons_jobs_started_total counter\ncommons_jobs_started_total %llu\n"
                          "# TYPE commons_batches_total counter\ncommons_batches_total %llu\n"
                          "# TYPE commons_batch_requests_total counter\ncommons_batch_requests_total %llu\n"
                          "# TYPE commons_commit_seconds_total counter\ncommons_commit_seconds_total %.6f\n",
                          c->nnodes, up, cpus, used, (unsigned long long)c->stats.submitted,
                          (unsigned long long)c->stats.rejected, (unsigned long long)c->stats.started,
                          (unsigned long long)c->stats.batches, (unsigned long long)c->stats.batch_requests,
                          c->stats.commit_us_total / 1e6);
    json_t *r = cm_reply_ok();
    json_object_set_new(r, "text", json_string(buf));
    return r;
}
