/* gw_keys.c: API keys as SHA-256 hashes and per-day usage in SQLite (see gw_keys.h). */
#include "gw_keys.h"

#include "cm_crypto.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct gw_keystore {
    sqlite3 *db;
    pthread_mutex_t mu; /* one statement at a time on the shared connection */
};

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS keys ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " hash TEXT NOT NULL UNIQUE,"
    " prefix TEXT NOT NULL,"
    " name TEXT NOT NULL,"
    " tier TEXT NOT NULL,"
    " created INTEGER NOT NULL,"
    " revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS usage ("
    " key_id INTEGER NOT NULL,"
    " day INTEGER NOT NULL,"
    " requests INTEGER NOT NULL DEFAULT 0,"
    " prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    " completion_tokens INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (key_id, day));";

static int db_fail(gw_keystore *ks, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s", what, sqlite3_errmsg(ks->db));
    return GW_KEYS_EDB;
}

int gw_keys_open(const char *state_dir, gw_keystore **out, char *err, size_t errlen)
{
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create state directory %s: %s", state_dir, strerror(errno));
        return GW_KEYS_EDB;
    }
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/gateway.db", state_dir) >= sizeof path) {
        snprintf(err, errlen, "state directory path is too long");
        return GW_KEYS_EARG;
    }
    gw_keystore *ks = calloc(1, sizeof *ks);
    if (!ks) {
        snprintf(err, errlen, "out of memory");
        return GW_KEYS_EDB;
    }
    pthread_mutex_init(&ks->mu, NULL);
    if (sqlite3_open_v2(path, &ks->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path,
                 ks->db ? sqlite3_errmsg(ks->db) : "out of memory");
        gw_keys_close(ks);
        return GW_KEYS_EDB;
    }
    /* The gateway and an admin command may write at once: wait, don't fail. */
    sqlite3_busy_timeout(ks->db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(ks->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
                     &msg) != SQLITE_OK ||
        sqlite3_exec(ks->db, SCHEMA, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "cannot initialise %s: %s", path, msg ? msg : "unknown error");
        sqlite3_free(msg);
        gw_keys_close(ks);
        return GW_KEYS_EDB;
    }
    chmod(path, 0600);
    *out = ks;
    return GW_KEYS_OK;
}

void gw_keys_close(gw_keystore *ks)
{
    if (!ks) return;
    sqlite3_close(ks->db);
    pthread_mutex_destroy(&ks->mu);
    free(ks);
}

static int valid_name(const char *s, int allow_empty)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0) return allow_empty;
    if (n > GW_KEYS_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 (i > 0 && (c == '.' || c == '_' || c == '-'));
        if (!ok) return 0;
    }
    return 1;
}

static int64_t today(void) { return (int64_t)time(NULL) / 86400; }

int gw_keys_create(gw_keystore *ks, const char *name, const char *tier,
                   char key_out[GW_KEY_LEN + 1], gw_key_info *info, char *err, size_t errlen)
{
    if (!tier) tier = "";
    if (!valid_name(name, 0)) {
        snprintf(err, errlen, "key name '%s' is not valid: use 1 to %d letters, digits, '.', '_' "
                 "or '-', starting with a letter or digit", name ? name : "", GW_KEYS_NAME_MAX);
        return GW_KEYS_EARG;
    }
    if (!valid_name(tier, 1)) {
        snprintf(err, errlen, "tier name '%s' is not valid: use 1 to %d letters, digits, '.', '_' "
                 "or '-', starting with a letter or digit", tier, GW_KEYS_NAME_MAX);
        return GW_KEYS_EARG;
    }
    char hex[65], hash[65];
    if (cm_random_hex(32, hex) != 0) {
        snprintf(err, errlen, "cannot read random bytes for the key");
        return GW_KEYS_EDB;
    }
    snprintf(key_out, GW_KEY_LEN + 1, "cmk_%s", hex);
    cm_sha256_hex(key_out, strlen(key_out), hash);
    char prefix[GW_KEY_PREFIX_LEN + 1];
    memcpy(prefix, key_out, GW_KEY_PREFIX_LEN);
    prefix[GW_KEY_PREFIX_LEN] = 0;
    int64_t now = (int64_t)time(NULL);

    pthread_mutex_lock(&ks->mu);
    sqlite3_stmt *st = NULL;
    int rc = GW_KEYS_OK;
    if (sqlite3_prepare_v2(ks->db, "INSERT INTO keys(hash, prefix, name, tier, created) "
                           "VALUES (?, ?, ?, ?, ?)", -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(ks, "cannot store the key", err, errlen);
    } else {
        sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, prefix, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, tier, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, now);
        if (sqlite3_step(st) != SQLITE_DONE) rc = db_fail(ks, "cannot store the key", err, errlen);
    }
    int64_t id = sqlite3_last_insert_rowid(ks->db);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ks->mu);
    if (rc != GW_KEYS_OK) return rc;
    if (info) {
        memset(info, 0, sizeof *info);
        info->id = id;
        snprintf(info->name, sizeof info->name, "%s", name);
        snprintf(info->tier, sizeof info->tier, "%s", tier);
        memcpy(info->prefix, prefix, sizeof prefix);
        info->created = now;
    }
    return GW_KEYS_OK;
}

static void copy_col(sqlite3_stmt *st, int col, char *dst, size_t len)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(dst, len, "%s", t ? (const char *)t : "");
}

#define KEY_COLUMNS                                                                           \
    "SELECT k.id, k.name, k.tier, k.prefix, k.created, k.revoked,"                            \
    " COALESCE((SELECT prompt_tokens + completion_tokens FROM usage u"                        \
    "  WHERE u.key_id = k.id AND u.day = ?1), 0),"                                            \
    " COALESCE((SELECT requests FROM usage u WHERE u.key_id = k.id AND u.day = ?1), 0),"      \
    " COALESCE((SELECT SUM(prompt_tokens + completion_tokens) FROM usage u"                   \
    "  WHERE u.key_id = k.id), 0),"                                                           \
    " COALESCE((SELECT SUM(requests) FROM usage u WHERE u.key_id = k.id), 0)"                 \
    " FROM keys k"

static void read_key(sqlite3_stmt *st, gw_key_info *k)
{
    memset(k, 0, sizeof *k);
    k->id = sqlite3_column_int64(st, 0);
    copy_col(st, 1, k->name, sizeof k->name);
    copy_col(st, 2, k->tier, sizeof k->tier);
    copy_col(st, 3, k->prefix, sizeof k->prefix);
    k->created = sqlite3_column_int64(st, 4);
    k->revoked = sqlite3_column_int64(st, 5);
    k->tokens_today = sqlite3_column_int64(st, 6);
    k->requests_today = sqlite3_column_int64(st, 7);
    k->tokens_total = sqlite3_column_int64(st, 8);
    k->requests_total = sqlite3_column_int64(st, 9);
}

int gw_keys_list(gw_keystore *ks, gw_key_info **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&ks->mu);
    sqlite3_stmt *st = NULL;
    int rc = GW_KEYS_OK;
    size_t cap = 0;
    if (sqlite3_prepare_v2(ks->db, KEY_COLUMNS " ORDER BY k.id", -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(ks, "cannot list keys", err, errlen);
        goto done;
    }
    sqlite3_bind_int64(st, 1, today());
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            gw_key_info *p = realloc(*out, cap * sizeof *p);
            if (!p) {
                snprintf(err, errlen, "out of memory");
                rc = GW_KEYS_EDB;
                goto done;
            }
            *out = p;
        }
        read_key(st, &(*out)[(*n)++]);
    }
    if (s != SQLITE_DONE) rc = db_fail(ks, "cannot list keys", err, errlen);
done:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ks->mu);
    if (rc != GW_KEYS_OK) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

int gw_keys_revoke(gw_keystore *ks, const char *which, int *count, char *err, size_t errlen)
{
    if (count) *count = 0;
    if (!which || !*which) {
        snprintf(err, errlen, "say which key to revoke: its id, its prefix (cmk_...) or its name");
        return GW_KEYS_EARG;
    }
    char *end = NULL;
    long long id = strtoll(which, &end, 10);
    int by_id = *end == 0 && id > 0;
    const char *sql = by_id ? "UPDATE keys SET revoked = ?2 WHERE revoked = 0 AND id = ?1"
                    : strncmp(which, "cmk_", 4) == 0
                        ? "UPDATE keys SET revoked = ?2 WHERE revoked = 0 AND prefix = ?1"
                        : "UPDATE keys SET revoked = ?2 WHERE revoked = 0 AND name = ?1";
    pthread_mutex_lock(&ks->mu);
    sqlite3_stmt *st = NULL;
    int rc = GW_KEYS_OK, changed = 0;
    if (sqlite3_prepare_v2(ks->db, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(ks, "cannot revoke", err, errlen);
    } else {
        if (by_id) sqlite3_bind_int64(st, 1, id);
        else {
            /* A full key given by mistake still matches by its prefix. */
            char prefix[GW_KEY_PREFIX_LEN + 1];
            snprintf(prefix, sizeof prefix, "%s", which);
            sqlite3_bind_text(st, 1, strncmp(which, "cmk_", 4) == 0 ? prefix : which, -1,
                              SQLITE_TRANSIENT);
        }
        sqlite3_bind_int64(st, 2, (int64_t)time(NULL));
        if (sqlite3_step(st) != SQLITE_DONE) rc = db_fail(ks, "cannot revoke", err, errlen);
        else changed = sqlite3_changes(ks->db);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ks->mu);
    if (rc != GW_KEYS_OK) return rc;
    if (count) *count = changed;
    if (changed == 0) {
        snprintf(err, errlen, "no active key matches '%s' (by id, prefix or name; see keys list)",
                 which);
        return GW_KEYS_ENOTFOUND;
    }
    return GW_KEYS_OK;
}

int gw_keys_lookup(gw_keystore *ks, const char *key, gw_key_info *info, char *err, size_t errlen)
{
    memset(info, 0, sizeof *info);
    if (!key || strlen(key) != GW_KEY_LEN || strncmp(key, "cmk_", 4) != 0) {
        snprintf(err, errlen, "malformed API key (expected cmk_ and 64 hex digits)");
        return GW_KEYS_ENOTFOUND;
    }
    char hash[65];
    cm_sha256_hex(key, strlen(key), hash);
    pthread_mutex_lock(&ks->mu);
    sqlite3_stmt *st = NULL;
    int rc = GW_KEYS_OK;
    if (sqlite3_prepare_v2(ks->db, KEY_COLUMNS " WHERE k.hash = ?2", -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(ks, "cannot look the key up", err, errlen);
    } else {
        sqlite3_bind_int64(st, 1, today());
        sqlite3_bind_text(st, 2, hash, -1, SQLITE_STATIC);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            read_key(st, info);
            if (info->revoked) {
                snprintf(err, errlen, "this API key was revoked");
                rc = GW_KEYS_ENOTFOUND;
            }
        } else if (s == SQLITE_DONE) {
            snprintf(err, errlen, "unknown API key");
            rc = GW_KEYS_ENOTFOUND;
        } else {
            rc = db_fail(ks, "cannot look the key up", err, errlen);
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ks->mu);
    return rc;
}

int gw_keys_add_usage(gw_keystore *ks, int64_t key_id, int64_t day, int64_t prompt_tokens,
                      int64_t completion_tokens, char *err, size_t errlen)
{
    pthread_mutex_lock(&ks->mu);
    sqlite3_stmt *st = NULL;
    int rc = GW_KEYS_OK;
    if (sqlite3_prepare_v2(ks->db,
                           "INSERT INTO usage(key_id, day, requests, prompt_tokens, completion_tokens)"
                           " VALUES (?1, ?2, 1, ?3, ?4) ON CONFLICT(key_id, day) DO UPDATE SET"
                           " requests = requests + 1, prompt_tokens = prompt_tokens + ?3,"
                           " completion_tokens = completion_tokens + ?4",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(ks, "cannot record usage", err, errlen);
    } else {
        sqlite3_bind_int64(st, 1, key_id);
        sqlite3_bind_int64(st, 2, day);
        sqlite3_bind_int64(st, 3, prompt_tokens);
        sqlite3_bind_int64(st, 4, completion_tokens);
        if (sqlite3_step(st) != SQLITE_DONE) rc = db_fail(ks, "cannot record usage", err, errlen);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ks->mu);
    return rc;
}

int gw_keys_tokens_on(gw_keystore *ks, int64_t key_id, int64_t day, int64_t *tokens,
                      char *err, size_t errlen)
{
    *tokens = 0;
    pthread_mutex_lock(&ks->mu);
    sqlite3_stmt *st = NULL;
    int rc = GW_KEYS_OK;
    if (sqlite3_prepare_v2(ks->db, "SELECT prompt_tokens + completion_tokens FROM usage"
                           " WHERE key_id = ? AND day = ?", -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(ks, "cannot read usage", err, errlen);
    } else {
        sqlite3_bind_int64(st, 1, key_id);
        sqlite3_bind_int64(st, 2, day);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) *tokens = sqlite3_column_int64(st, 0);
        else if (s != SQLITE_DONE) rc = db_fail(ks, "cannot read usage", err, errlen);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ks->mu);
    return rc;
}
