/* sched_policy.c: the quota policy in commonsd: versions, users and accounts
 * taken from it, decayed usage, fair-share and the limit totals.
 *
 * Invariants: c->policy is either NULL or a policy that validated; it only
 * changes in cluster_policy_apply after the new version is stored. c->usage is
 * indexed like c->policy->accounts and holds usage charged to each account
 * itself (only leaves are charged), decayed to c->usage_time; the store keeps
 * it by account name so it outlives policy changes.
 */
#include "cluster.h"
#include "ledger.h"

#include "cm_crypto.h"
#include "cm_log.h"
#include "cm_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USAGE_SAVE_INTERVAL_S 60

/* Looks the indices up once per policy version: a pass touches every pending job. */
static void job_indices(struct cluster *c, struct job *j)
{
    if (j->idx_version == c->policy_version) return;
    j->acct_idx = quota_account_find(c->policy, j->account);
    j->qos_idx = quota_qos_find(c->policy, j->qos);
    j->idx_version = c->policy_version;
}

int cluster_job_qos(struct cluster *c, struct job *j)
{
    if (!c->policy) return -1;
    job_indices(c, j);
    return j->qos_idx;
}

int cluster_job_account(struct cluster *c, struct job *j)
{
    if (!c->policy) return -1;
    job_indices(c, j);
    return j->acct_idx;
}

static int load_usage_row(void *ctx, sqlite3_stmt *st)
{
    struct cluster *c = ctx;
    int a = quota_account_find(c->policy, (const char *)sqlite3_column_text(st, 0));
    if (a >= 0) c->usage[a] = sqlite3_column_double(st, 1);
    int64_t t = sqlite3_column_int64(st, 2);
    if (t > c->usage_time) c->usage_time = t;
    return 0;
}

/* Users and accounts follow the policy: a policy user gets (or keeps) a row
 * and its tokens; users outside the policy keep their tokens but cannot
 * submit (quota_check_submit says InvalidUser), except that an admin stays
 * an admin so nobody is locked out by a policy. */
static int sync_from_policy(struct cluster *c, char *err, size_t errlen)
{
    const quota_policy *p = c->policy;
    for (int a = 1; a < p->naccounts; a++) {
        const quota_account *acc = &p->accounts[a];
        const char *parent = acc->parent > 0 ? p->accounts[acc->parent].name : "";
        if (cluster_account_add(c, acc->name, parent, err, errlen) != 0) return -1;
    }
    for (int i = 0; i < p->nusers; i++) {
        const quota_user *pu = &p->users[i];
        json_t *accounts = json_array();
        for (int k = 0; k < pu->naccounts; k++) json_array_append_new(accounts, json_string(p->accounts[pu->accounts[k]].name));
        const char *def = p->accounts[pu->default_account].name;
        struct user *u = cluster_user(c, pu->name);
        int admin = pu->admin || (u && u->admin);
        char *text = json_dumps(accounts, JSON_COMPACT);
        int rc = store_user_put(&c->store, pu->name, def, text, admin, pu->unix_user);
        free(text);
        if (rc) {
            snprintf(err, errlen, "%s", c->store.err);
            json_decref(accounts);
            return -1;
        }
        if (!u) {
            c->users = realloc(c->users, sizeof *c->users * (size_t)(c->nusers + 1));
            u = &c->users[c->nusers];
            memset(u, 0, sizeof *u);
            u->name = strdup(pu->name);
            strmap_put(&c->user_by_name, u->name, c->nusers++);
        } else {
            free(u->account);
            free(u->unix_user);
            json_decref(u->accounts);
        }
        u->account = strdup(def);
        u->unix_user = strdup(pu->unix_user);
        u->accounts = accounts;
        u->admin = admin;
    }
    return 0;
}

static int put_in_force(struct cluster *c, quota_policy *p, int64_t version, char *err, size_t errlen)
{
    quota_policy *old = c->policy;
    double *usage = calloc((size_t)p->naccounts, sizeof *usage);
    quota_state *qs = calloc((size_t)p->naccounts, sizeof *qs);
    if (!usage || !qs) {
        free(usage);
        free(qs);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->policy = p;
    free(c->usage);
    free(c->qstate);
    c->usage = usage;
    c->qstate = qs;
    c->qstate_valid = 0;
    c->usage_time = 0;
    if (store_each(&c->store, "SELECT account, usage, updated FROM usage", load_usage_row, c) != 0 ||
        sync_from_policy(c, err, errlen) != 0) {
        if (!err[0]) snprintf(err, errlen, "%s", c->store.err);
        c->policy = old; /* caller rolls back and reloads; old stays valid meanwhile */
        return -1;
    }
    if (!c->usage_time) c->usage_time = cm_now_ms() / 1000;
    c->policy_version = version;
    c->dirty = 1;
    quota_policy_free(old);
    return 0;
}

static char *diags_text(quota_diags *d)
{
    size_t cap = 256, n = 0;
    char *out = malloc(cap);
    out[0] = '\0';
    for (size_t i = 0; i < d->count; i++) {
        char line[2048];
        int len = quota_diag_format(d, &d->items[i], line, sizeof line);
        if (len < 0) continue;
        if ((size_t)len >= sizeof line) len = sizeof line - 1;
        while (n + (size_t)len + 2 > cap) out = realloc(out, cap *= 2);
        memcpy(out + n, line, (size_t)len);
        n += (size_t)len;
        out[n++] = '\n';
        out[n] = '\0';
    }
    return out;
}

int cluster_policy_apply(struct cluster *c, const char *text, size_t len, const char *source,
                         const char *applied_by, char **report, char *err, size_t errlen)
{
    quota_diags d;
    quota_diags_init(&d);
    quota_policy *p = NULL;
    int rc = quota_policy_load_string(text, len, source, &p, &d);
    *report = diags_text(&d);
    quota_diags_free(&d);
    if (rc != QUOTA_OK) {
        snprintf(err, errlen, "the policy has errors; the policy in force (version %lld) is unchanged",
                 (long long)c->policy_version);
        return -1;
    }
    char sha[65];
    cm_sha256_hex(text, len, sha);
    int64_t version = c->policy_version + 1;
    char *copy = strndup(text, len);
    int st = store_policy_put(&c->store, version, copy, sha, source, applied_by, cm_now_ms() / 1000);
    if (st == 0) st = ledger_record_policy(c, version, sha, applied_by, source);
    free(copy);
    if (st != 0) {
        snprintf(err, errlen, "%s", c->store.err);
        quota_policy_free(p);
        return -1;
    }
    if (c->policy) cluster_usage_decay(c, cm_now_ms() / 1000);
    /* Save usage under the old policy's names before the indices change. */
    if (c->policy)
        for (int a = 0; a < c->policy->naccounts; a++)
            if (c->usage[a] > 0 && store_usage_put(&c->store, c->policy->accounts[a].name, c->usage[a], c->usage_time)) {
                snprintf(err, errlen, "%s", c->store.err);
                quota_policy_free(p);
                return -1;
            }
    if (put_in_force(c, p, version, err, errlen) != 0) {
        quota_policy_free(p);
        return -1;
    }
    cm_info("policy version %lld (%s, sha256 %.12s) applied by %s", (long long)version, source, sha, applied_by);
    return 0;
}

static int load_latest(void *ctx, sqlite3_stmt *st)
{
    struct { int64_t version; char *text, *source; } *out = ctx;
    out->version = sqlite3_column_int64(st, 0);
    out->text = strdup((const char *)sqlite3_column_text(st, 1));
    out->source = strdup(sqlite3_column_text(st, 2) ? (const char *)sqlite3_column_text(st, 2) : "policy");
    return 0;
}

int cluster_policy_restore(struct cluster *c, char *err, size_t errlen)
{
    struct { int64_t version; char *text, *source; } latest = {0, NULL, NULL};
    if (store_each(&c->store, "SELECT version, text, source FROM policies ORDER BY version DESC LIMIT 1",
                   load_latest, &latest) != 0) {
        snprintf(err, errlen, "%s", c->store.err);
        return -1;
    }
    if (!latest.text) return 0;
    quota_diags d;
    quota_diags_init(&d);
    quota_policy *p = NULL;
    int rc = quota_policy_load_string(latest.text, strlen(latest.text), latest.source, &p, &d);
    quota_diags_free(&d);
    free(latest.text);
    free(latest.source);
    if (rc != QUOTA_OK) {
        snprintf(err, errlen, "stored policy version %lld no longer validates", (long long)latest.version);
        return -1;
    }
    return put_in_force(c, p, latest.version, err, errlen);
}

void cluster_usage_decay(struct cluster *c, int64_t now)
{
    if (!c->policy || now <= c->usage_time) return;
    double dt = (double)(now - c->usage_time);
    for (int a = 0; a < c->policy->naccounts; a++)
        c->usage[a] = quota_usage_decay(c->usage[a], dt, c->policy->decay_half_life);
    c->usage_time = now;
    if (now - c->usage_saved >= USAGE_SAVE_INTERVAL_S) {
        c->usage_saved = now;
        for (int a = 0; a < c->policy->naccounts; a++)
            if (c->usage[a] > 0) store_usage_put(&c->store, c->policy->accounts[a].name, c->usage[a], now);
    }
}

static double job_billed(struct cluster *c, struct job *j, double seconds)
{
    return quota_billed(c->policy, (int64_t)job_cpus_per_node(j) * j->nalloc, (int64_t)j->gpus * j->nalloc,
                        j->mem_mb * j->nalloc * 1048576LL, seconds, cluster_job_qos(c, j));
}

void cluster_usage_charge(struct cluster *c, struct job *j)
{
    ledger_record_job(c, j); /* with or without a policy: the ledger records every run */
    if (!c->policy || !j->start_time) return;
    int a = cluster_job_account(c, j);
    if (a < 0) return; /* the account left the policy; nothing to charge */
    int64_t now = cm_now_ms() / 1000;
    cluster_usage_decay(c, now);
    c->usage[a] += job_billed(c, j, (double)(now - j->start_time));
    store_usage_put(&c->store, j->account, c->usage[a], now);
}

quota_share_row *cluster_fairshare(struct cluster *c)
{
    if (!c->policy) return NULL;
    int64_t now = cm_now_ms() / 1000;
    cluster_usage_decay(c, now);
    int n = c->policy->naccounts;
    double *self = malloc(sizeof *self * (size_t)n);
    memcpy(self, c->usage, sizeof *self * (size_t)n);
    /* Running jobs count with what they have used so far. */
    for (int64_t id = 1; id < c->next_id; id++) {
        struct job *j = c->jobs[id];
        if (!j || j->state != JOB_RUNNING || !j->start_time) continue;
        int a = cluster_job_account(c, j);
        if (a >= 0) self[a] += job_billed(c, j, (double)(now - j->start_time));
    }
    quota_share_row *rows = calloc((size_t)n, sizeof *rows);
    if (quota_fairshare(c->policy, self, rows) != QUOTA_OK) {
        free(rows);
        rows = NULL;
    }
    free(self);
    return rows;
}

quota_state *cluster_qstate(struct cluster *c)
{
    if (!c->policy) return NULL;
    if (c->qstate_valid) return c->qstate;
    const quota_policy *p = c->policy;
    memset(c->qstate, 0, sizeof *c->qstate * (size_t)p->naccounts);
    int64_t now = cm_now_ms() / 1000;
    for (int64_t id = 1; id < c->next_id; id++) {
        struct job *j = c->jobs[id];
        if (!j) continue;
        int a = cluster_job_account(c, j);
        if (a < 0) continue;
        quota_state d = {0};
        if (j->state == JOB_PENDING) {
            d.queued = 1;
        } else if (j->state == JOB_RUNNING) {
            d.cpus = (int64_t)job_cpus_per_node(j) * j->nalloc;
            d.gpus = (int64_t)j->gpus * j->nalloc;
            d.mem = j->mem_mb * j->nalloc * 1048576LL;
            d.jobs = 1;
        }
        /* Budgets count what ran in the budget period of the account's own
         * limits; ancestors with other periods are approximated by it. */
        if (j->start_time) {
            time_t since = quota_period_start(p->accounts[a].limits.budget_period, (time_t)now);
            int64_t from = j->start_time > since ? j->start_time : since;
            int64_t to = j->end_time ? j->end_time : now;
            if (to > from) {
                d.cpu_seconds = (double)(to - from) * job_cpus_per_node(j) * j->nalloc;
                d.gpu_seconds = (double)(to - from) * j->gpus * j->nalloc;
            }
        }
        quota_state_add(p, c->qstate, a, &d);
    }
    c->qstate_valid = 1;
    return c->qstate;
}
