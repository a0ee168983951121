/* gw_keys.h: citizens' API keys and their usage, in SQLite under a state dir.
 *
 * This is the whole key-management contract: commons-gateway uses it to check
 * keys and record usage, and `commons-gateway keys ...` (and the lead's
 * `commons keys ...`) use it to create, list and revoke keys. The database is
 * STATE/gateway.db in WAL mode, so an admin command is safe while the gateway
 * runs; a revoked key is refused by the very next request.
 *
 * A key is "cmk_" followed by 64 hex digits (32 random bytes). Only its
 * SHA-256 (hex) is stored, plus its first 12 characters as a display prefix;
 * the key itself is shown once, by create. Usage is kept per key and UTC day
 * (day = Unix time / 86400); key id 0 holds the anonymous tier's total.
 *
 * Every function returns GW_KEYS_OK or a negative GW_KEYS_E* code with err
 * filled with a sentence a person can act on. A store handle is thread-safe.
 */
#ifndef GW_KEYS_H
#define GW_KEYS_H

#include <stddef.h>
#include <stdint.h>

enum {
    GW_KEYS_OK = 0,
    GW_KEYS_ENOTFOUND = -1, /* no such key (or the key is revoked, for lookup) */
    GW_KEYS_EDB = -2,       /* SQLite or file-system error */
    GW_KEYS_EARG = -3       /* bad name, tier or key text */
};

#define GW_KEY_LEN 68       /* "cmk_" + 64 hex digits */
#define GW_KEY_PREFIX_LEN 12
#define GW_KEYS_NAME_MAX 64 /* names and tiers: 1..64 of [A-Za-z0-9._-] (tier may be empty) */

typedef struct gw_key_info {
    int64_t id;                             /* >= 1 */
    char name[GW_KEYS_NAME_MAX + 1];
    char tier[GW_KEYS_NAME_MAX + 1];        /* "" = the policy's default tier */
    char prefix[GW_KEY_PREFIX_LEN + 1];     /* "cmk_1a2b3c4d" */
    int64_t created;                        /* Unix seconds */
    int64_t revoked;                        /* Unix seconds; 0 = active */
    int64_t tokens_today, requests_today;   /* this UTC day */
    int64_t tokens_total, requests_total;
} gw_key_info;

typedef struct gw_keystore gw_keystore;

/* Opens (creating when needed) STATE/gateway.db; state_dir is created too. */
int gw_keys_open(const char *state_dir, gw_keystore **out, char *err, size_t errlen);
void gw_keys_close(gw_keystore *ks);

/* Creates a key. name: a label for people (need not be unique); tier: a tier
 * name or NULL/"" for the default tier (the caller checks it against the
 * policy). key_out receives the key text, NUL-terminated; info (optional) the
 * stored record. */
int gw_keys_create(gw_keystore *ks, const char *name, const char *tier,
                   char key_out[GW_KEY_LEN + 1], gw_key_info *info, char *err, size_t errlen);

/* All keys, revoked ones included, by id, with today's and total usage.
 * *out is malloc'd (free it); *n may be 0. */
int gw_keys_list(gw_keystore *ks, gw_key_info **out, size_t *n, char *err, size_t errlen);

/* Revokes by id ("7"), by prefix ("cmk_1a2b3c4d") or by name (every active
 * key with that name). *count (optional) gets how many were revoked; none
 * matching is GW_KEYS_ENOTFOUND. */
int gw_keys_revoke(gw_keystore *ks, const char *which, int *count, char *err, size_t errlen);

/* Looks an active key up by its text (hashes it). GW_KEYS_ENOTFOUND for an
 * unknown or revoked key; then info->revoked tells which (non-zero: revoked). */
int gw_keys_lookup(gw_keystore *ks, const char *key, gw_key_info *info, char *err, size_t errlen);

/* Adds one finished request's usage to key_id's row for day. */
int gw_keys_add_usage(gw_keystore *ks, int64_t key_id, int64_t day, int64_t prompt_tokens,
                      int64_t completion_tokens, char *err, size_t errlen);

/* Tokens (prompt + completion) charged to key_id on day; 0 when none. */
int gw_keys_tokens_on(gw_keystore *ks, int64_t key_id, int64_t day, int64_t *tokens,
                      char *err, size_t errlen);

#endif
