/* store.h: commonsd's durable state in SQLite (WAL), schema version 1.
 *
 * Invariant: whatever commonsd has told a client it accepted is in a committed
 * transaction. The caller groups many requests into one transaction
 * (store_begin ... store_commit) so one fsync covers a whole batch.
 * Every write function returns 0 or -1; after a -1 the caller must
 * store_rollback and rebuild its memory from the store (store_load_*).
 */
#ifndef SCHED_STORE_H
#define SCHED_STORE_H

#include "job.h"

#include <sqlite3.h>
#include <stddef.h>

#define STORE_SCHEMA_VERSION 1

struct store {
    sqlite3 *db;
    char path[4096];
    char err[5000]; /* last error, for logs and replies */
    sqlite3_stmt *ins_job, *upd_job, *set_meta;
};

enum store_sync { STORE_SYNC_FULL, STORE_SYNC_NORMAL };

/* Opens or creates STATE/commons.db; checks integrity and the schema version. */
int store_open(struct store *s, const char *state_dir, enum store_sync sync, char *err, size_t errlen);
void store_close(struct store *s);

int store_begin(struct store *s);
int store_commit(struct store *s);
void store_rollback(struct store *s);

int store_meta_get_int(struct store *s, const char *key, int64_t *out);
int store_meta_set_int(struct store *s, const char *key, int64_t v);

int store_job_insert(struct store *s, const struct job *j);
int store_job_update(struct store *s, const struct job *j); /* mutable fields only */

/* Users, tokens, accounts, nodes: rows as JSON objects, for loading. */
int store_exec(struct store *s, const char *sql); /* for the simple writes below */
int store_user_put(struct store *s, const char *name, const char *account, const char *accounts_json,
                   int admin, const char *unix_user);
int store_token_put(struct store *s, const char *hash, const char *user, int64_t expires);
int store_token_revoke_user(struct store *s, const char *user, int *count);
int store_account_put(struct store *s, const char *name, const char *parent);
int store_node_put(struct store *s, const char *name, const char *hostname, int cpus,
                   int64_t memory_mb, int gpus, const char *state, const char *reason,
                   int64_t last_seen, const char *topology);
int store_node_drain(struct store *s, const char *name, int drain, const char *reason);

int store_policy_put(struct store *s, int64_t version, const char *text, const char *sha256,
                     const char *source, const char *applied_by, int64_t applied_at);
int store_usage_put(struct store *s, const char *account, double usage, int64_t updated);

int store_service_put(struct store *s, const char *name, const char *user, const char *spec, int min, int max,
                      int target);
int store_service_delete(struct store *s, const char *name);

/* Row iteration: calls fn for each row of a SELECT. */
typedef int (*store_row_fn)(void *ctx, sqlite3_stmt *row);
int store_each(struct store *s, const char *sql, store_row_fn fn, void *ctx);

#endif
