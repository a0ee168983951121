/* quota_yaml.h (private): typed access to a libyaml document with diagnostics.
 *
 * Every getter reports its own problems (wrong type, out of range, malformed
 * duration...) at the offending node's line:column with the field path, and
 * returns false; callers then keep their default and carry on, so one load
 * reports every problem in the file.
 */
#ifndef COMMONS_QUOTA_YAML_H
#define COMMONS_QUOTA_YAML_H

#include <stdbool.h>
#include <stdint.h>
#include <yaml.h>

#include "quota_diag.h"

#define QP_PATH 512

typedef struct qp {
    yaml_document_t doc;
    quota_diags *diags;
} qp;

void qp_error(qp *q, const yaml_node_t *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void qp_warn(qp *q, const yaml_node_t *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "base.key" into buf (just key when base is empty). Returns buf. */
char *qp_join(char *buf, const char *base, const char *key);

yaml_node_t *qp_node(qp *q, int id);
/* Scalar text of a node, NULL when it is not a scalar. */
const char *qp_text(const yaml_node_t *n);
/* A plain "", "~" or "null" scalar: YAML's null. */
bool qp_is_null(const yaml_node_t *n);
/* "a mapping", "a list", "a string", "null" (for messages). */
const char *qp_kind(const yaml_node_t *n);

/* Errors unless n is a mapping; the message names what the field holds. */
bool qp_want_map(qp *q, const yaml_node_t *n, const char *path, const char *what);

/* Checks a mapping's keys: each a scalar, no duplicates, each in allowed
 * (NULL-terminated). Unknown keys get "did you mean" when one is close. */
void qp_check_keys(qp *q, const yaml_node_t *map, const char *path,
                   const char *const *allowed);
/* Reports keys that repeat in a mapping as "duplicate WHAT 'name'". */
void qp_check_unique(qp *q, const yaml_node_t *map, const char *path, const char *what);

/* Value node for key in a mapping, or NULL. With key_out, the key node too. */
yaml_node_t *qp_get(qp *q, const yaml_node_t *map, const char *key, yaml_node_t **key_out);

/* Typed getters for map[key]. Return true when the key is present and valid
 * (value stored); false when absent (silently) or invalid (error reported).
 * path is the mapping's path; the key is appended. */
bool qp_int(qp *q, const yaml_node_t *map, const char *path, const char *key, int64_t min,
            bool allow_unlimited, int64_t *out);
bool qp_num(qp *q, const yaml_node_t *map, const char *path, const char *key, double min,
            double *out);
bool qp_bool(qp *q, const yaml_node_t *map, const char *path, const char *key, bool *out);
bool qp_str(qp *q, const yaml_node_t *map, const char *path, const char *key,
            const char **out);
bool qp_duration(qp *q, const yaml_node_t *map, const char *path, const char *key,
                 bool allow_unlimited, int64_t *out);
bool qp_size(qp *q, const yaml_node_t *map, const char *path, const char *key,
             bool allow_unlimited, int64_t *out);
/* Reports "missing required key" at the mapping when key is absent. */
bool qp_require(qp *q, const yaml_node_t *map, const char *path, const char *key);

/* Names of accounts, users, QOS and tiers: 1-64 of [A-Za-z0-9._-], starting
 * with a letter or digit. Reports and returns false otherwise. */
bool qp_check_name(qp *q, const yaml_node_t *n, const char *path, const char *what);

#endif
