/* store.c: SQLite persistence for commonsd (see store.h). */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const char *const schema_v1 =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TABLE accounts(name TEXT PRIMARY KEY, parent TEXT);"
    "CREATE TABLE users(name TEXT PRIMARY KEY, account TEXT NOT NULL, accounts TEXT NOT NULL,"
    "  admin INTEGER NOT NULL, unix_user TEXT NOT NULL);"
    "CREATE TABLE tokens(hash TEXT PRIMARY KEY, user TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,"
    "  expires INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE nodes(name TEXT PRIMARY KEY, hostname TEXT, cpus INTEGER, memory_mb INTEGER,"
    "  gpus INTEGER, state TEXT, reason TEXT, last_seen INTEGER, topology TEXT,"
    "  drain INTEGER NOT NULL DEFAULT 0, drain_reason TEXT);"
    "CREATE TABLE jobs(id INTEGER PRIMARY KEY, array_job_id INTEGER, array_task_id INTEGER,"
    "  array_throttle INTEGER, user TEXT NOT NULL, account TEXT NOT NULL, spec TEXT NOT NULL,"
    "  state INTEGER NOT NULL, reason TEXT, submit_time INTEGER, start_time INTEGER,"
    "  end_time INTEGER, exit_code INTEGER, signal INTEGER, error TEXT, alloc TEXT,"
    "  released INTEGER, launched INTEGER, kill_pending INTEGER, hold INTEGER, requeues INTEGER,"
    "  placement TEXT, step_key TEXT, preempted_by INTEGER NOT NULL DEFAULT 0, note TEXT);"
    "CREATE INDEX jobs_state ON jobs(state);"
    "CREATE TABLE policies(version INTEGER PRIMARY KEY, text TEXT NOT NULL, sha256 TEXT NOT NULL,"
    "  source TEXT, applied_by TEXT NOT NULL, applied_at INTEGER NOT NULL);"
    "CREATE TABLE usage(account TEXT PRIMARY KEY, usage REAL NOT NULL, updated INTEGER NOT NULL);"
    "CREATE TABLE services(name TEXT PRIMARY KEY, user TEXT NOT NULL, spec TEXT NOT NULL, min INTEGER NOT NULL,"
    "  max INTEGER NOT NULL, target INTEGER NOT NULL);";

static int fail(struct store *s, const char *what)
{
    snprintf(s->err, sizeof s->err, "%s: %s (%s)", s->path, sqlite3_errmsg(s->db), what);
    return -1;
}

int store_exec(struct store *s, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(s->err, sizeof s->err, "%s: %s", s->path, msg ? msg : "error");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int prepare(struct store *s, const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v2(s->db, sql, -1, st, NULL) == SQLITE_OK ? 0 : fail(s, sql);
}

int store_open(struct store *s, const char *state_dir, enum store_sync sync, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create state directory: %s", state_dir, strerror(errno));
        return -1;
    }
    snprintf(s->path, sizeof s->path, "%s/commons.db", state_dir);
    if (sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot open: %s", s->path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sqlite3_close(s->db);
        s->db = NULL;
        return -1;
    }
    sqlite3_busy_timeout(s->db, 5000);
    /* A corrupt file must be caught here, before anything trusts it. */
    sqlite3_stmt *st = NULL;
    const char *res = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA quick_check", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        res = (const char *)sqlite3_column_text(st, 0);
    if (!res || strcmp(res, "ok") != 0) {
        snprintf(err, errlen, "%s: the state database is corrupt or not a Commons database (%s); "
                 "restore it from a backup or move it away to start empty",
                 s->path, res ? res : sqlite3_errmsg(s->db));
        sqlite3_finalize(st);
        store_close(s);
        return -1;
    }
    sqlite3_finalize(st);
    if (store_exec(s, "PRAGMA journal_mode=WAL") ||
        store_exec(s, sync == STORE_SYNC_FULL ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"))
        goto bad;
    int64_t version = 0;
    int has_meta = 0;
    if (prepare(s, "SELECT count(*) FROM sqlite_master WHERE name='meta'", &st)) goto bad;
    if (sqlite3_step(st) == SQLITE_ROW) has_meta = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (!has_meta) {
        if (store_exec(s, "BEGIN") || store_exec(s, schema_v1) ||
            store_meta_set_int(s, "schema_version", STORE_SCHEMA_VERSION) ||
            store_meta_set_int(s, "next_job_id", 1) || store_exec(s, "COMMIT"))
            goto bad;
    } else if (store_meta_get_int(s, "schema_version", &version) || version != STORE_SCHEMA_VERSION) {
        snprintf(err, errlen, "%s: schema version %lld, this commonsd knows version %d",
                 s->path, (long long)version, STORE_SCHEMA_VERSION);
        store_close(s);
        return -1;
    }
    if (prepare(s,
                "INSERT INTO jobs(id, array_job_id, array_task_id, array_throttle, user, account,"
                " spec, state, reason, submit_time, start_time, end_time, exit_code, signal, error,"
                " alloc, released, launched, kill_pending, hold, requeues, placement, step_key, preempted_by, note)"
                " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                &s->ins_job) ||
        prepare(s,
                /* Numbered as in the INSERT above, so bind_job_changes() binds both. */
                "UPDATE jobs SET state=?8, reason=?9, submit_time=?10, start_time=?11, end_time=?12,"
                " exit_code=?13, signal=?14, error=?15, alloc=?16, released=?17, launched=?18,"
                " kill_pending=?19, hold=?20, requeues=?21, placement=?22, step_key=?23,"
                " preempted_by=?24, note=?25 WHERE id=?1",
                &s->upd_job) ||
        prepare(s, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", &s->set_meta))
        goto bad;
    return 0;
bad:
    snprintf(err, errlen, "%s", s->err);
    store_close(s);
    return -1;
}

void store_close(struct store *s)
{
    if (!s->db) return;
    sqlite3_finalize(s->ins_job);
    sqlite3_finalize(s->upd_job);
    sqlite3_finalize(s->set_meta);
    sqlite3_close(s->db);
    s->db = NULL;
}

int store_begin(struct store *s) { return store_exec(s, "BEGIN IMMEDIATE"); }
int store_commit(struct store *s) { return store_exec(s, "COMMIT"); }
void store_rollback(struct store *s)
{
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

int store_meta_get_int(struct store *s, const char *key, int64_t *out)
{
    sqlite3_stmt *st;
    if (prepare(s, "SELECT value FROM meta WHERE key=?", &st)) return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : fail(s, key);
}

int store_meta_set_int(struct store *s, const char *key, int64_t v)
{
    sqlite3_stmt *st = s->set_meta;
    int own = 0;
    if (!st) { /* during schema creation, before statements are prepared */
        if (prepare(s, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", &st)) return -1;
        own = 1;
    }
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, v);
    int rc = sqlite3_step(st);
    if (own) sqlite3_finalize(st);
    else sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : fail(s, "meta");
}

static char *alloc_text(const struct job *j, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < j->nalloc && n + 12 < len; i++)
        n += (size_t)snprintf(buf + n, len - n, i ? ",%d" : "%d", j->alloc[i]);
    return buf;
}

/* [[pus...], [gpus...]] per allocated node, or NULL when counts only. */
static char *placement_text(const struct job *j)
{
    if (!j->place || !j->nalloc) return NULL;
    json_t *a = json_array();
    for (int i = 0; i < j->nalloc; i++) {
        json_t *pus = json_array(), *gpus = json_array();
        for (int k = 0; k < j->place[i].npus; k++) json_array_append_new(pus, json_integer(j->place[i].pus[k]));
        for (int k = 0; k < j->place[i].ngpus; k++) json_array_append_new(gpus, json_integer(j->place[i].gpus[k]));
        json_array_append_new(a, json_pack("[o, o]", pus, gpus));
    }
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return text;
}

/* Resets st and binds what both job statements share, numbered as in the INSERT: the id (?1)
 * and every column a job's life changes (?8..?25); the INSERT alone also binds ?2..?7.
 * alloc (alloclen bytes) and *place (the caller frees it) hold texts until st has run. */
static void bind_job_changes(sqlite3_stmt *st, const struct job *j, char *alloc, size_t alloclen,
                             char **place)
{
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, j->id);
    sqlite3_bind_int(st, 8, j->state);
    sqlite3_bind_text(st, 9, j->reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 10, j->submit_time);
    sqlite3_bind_int64(st, 11, j->start_time);
    sqlite3_bind_int64(st, 12, j->end_time);
    sqlite3_bind_int(st, 13, j->exit_code);
    sqlite3_bind_int(st, 14, j->signal);
    sqlite3_bind_text(st, 15, j->error, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 16, alloc_text(j, alloc, alloclen), -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 17, j->released);
    sqlite3_bind_int(st, 18, j->launched);
    sqlite3_bind_int(st, 19, j->kill_pending);
    sqlite3_bind_int(st, 20, j->hold);
    sqlite3_bind_int(st, 21, j->requeues);
    *place = placement_text(j);
    sqlite3_bind_text(st, 22, *place, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 23, j->step_key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 24, j->preempted_by);
    sqlite3_bind_text(st, 25, j->note, -1, SQLITE_STATIC);
}

int store_job_insert(struct store *s, const struct job *j)
{
    sqlite3_stmt *st = s->ins_job;
    char *spec = json_dumps(j->spec, JSON_COMPACT), *place;
    char alloc[8192];
    bind_job_changes(st, j, alloc, sizeof alloc, &place);
    sqlite3_bind_int64(st, 2, j->array_job_id);
    sqlite3_bind_int(st, 3, j->array_task_id);
    sqlite3_bind_int(st, 4, j->array_throttle);
    sqlite3_bind_text(st, 5, j->user, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, j->account, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, spec, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    free(place);
    free(spec);
    return rc == SQLITE_DONE ? 0 : fail(s, "insert job");
}

int store_job_update(struct store *s, const struct job *j)
{
    sqlite3_stmt *st = s->upd_job;
    char alloc[8192], *place;
    bind_job_changes(st, j, alloc, sizeof alloc, &place);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    free(place);
    return rc == SQLITE_DONE ? 0 : fail(s, "update job");
}

static int exec_bound(struct store *s, const char *sql, int n, const char *const *texts,
                      const int64_t *ints, const char *kinds)
{
    sqlite3_stmt *st;
    if (prepare(s, sql, &st)) return -1;
    for (int i = 0; i < n; i++) {
        if (kinds[i] == 't') sqlite3_bind_text(st, i + 1, texts[i], -1, SQLITE_STATIC);
        else sqlite3_bind_int64(st, i + 1, ints[i]);
    }
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : fail(s, sql);
}

int store_user_put(struct store *s, const char *name, const char *account, const char *accounts_json,
                   int admin, const char *unix_user)
{
    const char *t[] = {name, account, accounts_json, NULL, unix_user};
    int64_t i[] = {0, 0, 0, admin, 0};
    return exec_bound(s, "INSERT OR REPLACE INTO users VALUES(?,?,?,?,?)", 5, t, i, "tttit");
}

int store_token_put(struct store *s, const char *hash, const char *user, int64_t expires)
{
    const char *t[] = {hash, user, NULL};
    int64_t i[] = {0, 0, expires};
    return exec_bound(s, "INSERT INTO tokens(hash, user, expires) VALUES(?,?,?)", 3, t, i, "tti");
}

int store_token_revoke_user(struct store *s, const char *user, int *count)
{
    const char *t[] = {user};
    if (exec_bound(s, "UPDATE tokens SET revoked=1 WHERE user=? AND revoked=0", 1, t, NULL, "t")) return -1;
    *count = sqlite3_changes(s->db);
    return 0;
}

int store_account_put(struct store *s, const char *name, const char *parent)
{
    const char *t[] = {name, parent};
    return exec_bound(s, "INSERT OR REPLACE INTO accounts VALUES(?,?)", 2, t, NULL, "tt");
}

int store_node_put(struct store *s, const char *name, const char *hostname, int cpus,
                   int64_t memory_mb, int gpus, const char *state, const char *reason,
                   int64_t last_seen, const char *topology)
{
    const char *t[] = {name, hostname, NULL, NULL, NULL, state, reason, NULL, topology};
    int64_t i[] = {0, 0, cpus, memory_mb, gpus, 0, 0, last_seen, 0};
    /* An upsert that leaves the drain columns alone: drains outlive re-registration. */
    return exec_bound(s,
                      "INSERT INTO nodes(name, hostname, cpus, memory_mb, gpus, state, reason, last_seen, topology)"
                      " VALUES(?,?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET hostname=excluded.hostname,"
                      " cpus=excluded.cpus, memory_mb=excluded.memory_mb, gpus=excluded.gpus, state=excluded.state,"
                      " reason=excluded.reason, last_seen=excluded.last_seen, topology=excluded.topology",
                      9, t, i, "ttiiittit");
}

int store_node_drain(struct store *s, const char *name, int drain, const char *reason)
{
    const char *t[] = {NULL, reason, name};
    int64_t i[] = {drain, 0, 0};
    return exec_bound(s, "UPDATE nodes SET drain=?, drain_reason=? WHERE name=?", 3, t, i, "itt");
}

int store_policy_put(struct store *s, int64_t version, const char *text, const char *sha256,
                     const char *source, const char *applied_by, int64_t applied_at)
{
    const char *t[] = {NULL, text, sha256, source, applied_by, NULL};
    int64_t i[] = {version, 0, 0, 0, 0, applied_at};
    return exec_bound(s, "INSERT INTO policies VALUES(?,?,?,?,?,?)", 6, t, i, "itttti");
}

int store_usage_put(struct store *s, const char *account, double usage, int64_t updated)
{
    sqlite3_stmt *st;
    if (prepare(s, "INSERT OR REPLACE INTO usage VALUES(?,?,?)", &st)) return -1;
    sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, usage);
    sqlite3_bind_int64(st, 3, updated);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : fail(s, "usage");
}

int store_service_put(struct store *s, const char *name, const char *user, const char *spec, int min, int max,
                      int target)
{
    const char *t[] = {name, user, spec, NULL, NULL, NULL};
    int64_t i[] = {0, 0, 0, min, max, target};
    return exec_bound(s, "INSERT OR REPLACE INTO services VALUES(?,?,?,?,?,?)", 6, t, i, "tttiii");
}

int store_service_delete(struct store *s, const char *name)
{
    const char *t[] = {name};
    return exec_bound(s, "DELETE FROM services WHERE name=?", 1, t, NULL, "t");
}

int store_each(struct store *s, const char *sql, store_row_fn fn, void *ctx)
{
    sqlite3_stmt *st;
    if (prepare(s, sql, &st)) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (fn(ctx, st) != 0) {
            sqlite3_finalize(st);
            return -1;
        }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : fail(s, sql);
}
