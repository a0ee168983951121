/* quota_yaml.c: typed, position-aware access to a libyaml document (quota_yaml.h). */
#include "quota_yaml.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quota_units.h"

static void vreport(qp *q, quota_diag_level lvl, const yaml_node_t *n, const char *path,
                    const char *fmt, va_list ap)
{
    char msg[900];
    vsnprintf(msg, sizeof msg, fmt, ap);
    int line = n ? (int)n->start_mark.line + 1 : 0;
    int col = n ? (int)n->start_mark.column + 1 : 0;
    quota_diag_add(q->diags, lvl, line, col, path, "%s", msg);
}

void qp_error(qp *q, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(q, QUOTA_DIAG_ERROR, n, path, fmt, ap);
    va_end(ap);
}

void qp_warn(qp *q, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(q, QUOTA_DIAG_WARNING, n, path, fmt, ap);
    va_end(ap);
}

char *qp_join(char *buf, const char *base, const char *key)
{
    if (base && *base)
        snprintf(buf, QP_PATH, "%s.%s", base, key);
    else
        snprintf(buf, QP_PATH, "%s", key);
    return buf;
}

yaml_node_t *qp_node(qp *q, int id)
{
    return yaml_document_get_node(&q->doc, id);
}

const char *qp_text(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static bool plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

bool qp_is_null(const yaml_node_t *n)
{
    if (!n || !plain(n))
        return false;
    const char *t = qp_text(n);
    return !*t || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") ||
           !strcmp(t, "NULL");
}

const char *qp_kind(const yaml_node_t *n)
{
    if (!n)
        return "nothing";
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a mapping";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_SCALAR_NODE: return qp_is_null(n) ? "null" : "a string";
    default: return "nothing";
    }
}

bool qp_want_map(qp *q, const yaml_node_t *n, const char *path, const char *what)
{
    if (n && n->type == YAML_MAPPING_NODE)
        return true;
    qp_error(q, n, path, "expected a mapping (%s), got %s", what, qp_kind(n));
    return false;
}

/* Edit distance, for "did you mean" (keys are short). */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 64;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

void qp_check_unique(qp *q, const yaml_node_t *map, const char *path, const char *what)
{
    char p[QP_PATH];
    for (yaml_node_pair_t *a = map->data.mapping.pairs.start; a < map->data.mapping.pairs.top;
         a++) {
        yaml_node_t *k = qp_node(q, a->key);
        const char *name = qp_text(k);
        for (yaml_node_pair_t *b = map->data.mapping.pairs.start; name && b < a; b++) {
            yaml_node_t *pk = qp_node(q, b->key);
            const char *prev = qp_text(pk);
            if (prev && !strcmp(prev, name)) {
                qp_error(q, k, qp_join(p, path, name),
                         "duplicate %s '%s' (first defined at line %d:%d)", what, name,
                         (int)pk->start_mark.line + 1, (int)pk->start_mark.column + 1);
                break;
            }
        }
    }
}

void qp_check_keys(qp *q, const yaml_node_t *map, const char *path,
                   const char *const *allowed)
{
    char p[QP_PATH];
    qp_check_unique(q, map, path, "key");
    for (yaml_node_pair_t *a = map->data.mapping.pairs.start; a < map->data.mapping.pairs.top;
         a++) {
        yaml_node_t *k = qp_node(q, a->key);
        const char *name = qp_text(k);
        if (!name) {
            qp_error(q, k, path, "expected a plain key, got %s", qp_kind(k));
            continue;
        }
        const char *best = NULL;
        size_t bestd = 3;
        bool known = false;
        char list[400] = "";
        for (const char *const *w = allowed; *w; w++) {
            if (!strcmp(*w, name)) {
                known = true;
                break;
            }
            size_t d = distance(*w, name);
            if (d < bestd) {
                bestd = d;
                best = *w;
            }
            size_t used = strlen(list);
            snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", *w);
        }
        if (known)
            continue;
        if (best)
            qp_error(q, k, qp_join(p, path, name), "unknown key '%s'; did you mean '%s'?",
                     name, best);
        else
            qp_error(q, k, qp_join(p, path, name), "unknown key '%s'; expected one of: %s",
                     name, list);
    }
}

yaml_node_t *qp_get(qp *q, const yaml_node_t *map, const char *key, yaml_node_t **key_out)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *a = map->data.mapping.pairs.start; a < map->data.mapping.pairs.top;
         a++) {
        yaml_node_t *k = qp_node(q, a->key);
        const char *t = qp_text(k);
        if (t && !strcmp(t, key)) {
            if (key_out)
                *key_out = k;
            return qp_node(q, a->value);
        }
    }
    return NULL;
}

bool qp_require(qp *q, const yaml_node_t *map, const char *path, const char *key)
{
    if (qp_get(q, map, key, NULL))
        return true;
    qp_error(q, map, path, "missing required key '%s'", key);
    return false;
}

/* The value as a plain (unquoted) scalar for numbers/booleans, or NULL after
 * reporting the wrong type. */
static const char *plain_value(qp *q, const yaml_node_t *v, const char *path,
                               const char *expect)
{
    if (v->type != YAML_SCALAR_NODE || qp_is_null(v)) {
        qp_error(q, v, path, "expected %s, got %s", expect, qp_kind(v));
        return NULL;
    }
    if (!plain(v)) {
        qp_error(q, v, path, "expected %s, got the quoted string \"%s\"", expect, qp_text(v));
        return NULL;
    }
    return qp_text(v);
}

bool qp_int(qp *q, const yaml_node_t *map, const char *path, const char *key, int64_t min,
            bool allow_unlimited, int64_t *out)
{
    yaml_node_t *v = qp_get(q, map, key, NULL);
    if (!v)
        return false;
    char p[QP_PATH], expect[96];
    qp_join(p, path, key);
    if (min == 1)
        snprintf(expect, sizeof expect, "a positive integer%s",
                 allow_unlimited ? " or 'unlimited'" : "");
    else
        snprintf(expect, sizeof expect, "an integer >= %lld%s", (long long)min,
                 allow_unlimited ? " or 'unlimited'" : "");
    const char *t = plain_value(q, v, p, expect);
    if (!t)
        return false;
    if (allow_unlimited && (!strcmp(t, "unlimited") || !strcmp(t, "infinite"))) {
        *out = QUOTA_UNLIMITED;
        return true;
    }
    errno = 0;
    char *e;
    long long x = strtoll(t, &e, 10);
    if (e == t || *e || errno) {
        qp_error(q, v, p, "expected %s, got '%s'", expect, t);
        return false;
    }
    if (x < min) {
        qp_error(q, v, p, "expected %s, got %lld%s", expect, x,
                 x >= 0             ? ""
                 : allow_unlimited ? " (limits cannot be negative; write 'unlimited' for none)"
                                   : " (this cannot be negative)");
        return false;
    }
    *out = x;
    return true;
}

bool qp_num(qp *q, const yaml_node_t *map, const char *path, const char *key, double min,
            double *out)
{
    yaml_node_t *v = qp_get(q, map, key, NULL);
    if (!v)
        return false;
    char p[QP_PATH], expect[64];
    qp_join(p, path, key);
    snprintf(expect, sizeof expect, "a number >= %g", min);
    const char *t = plain_value(q, v, p, expect);
    if (!t)
        return false;
    errno = 0;
    char *e;
    double x = strtod(t, &e);
    if (e == t || *e || errno || !isfinite(x)) {
        qp_error(q, v, p, "expected %s, got '%s'", expect, t);
        return false;
    }
    if (x < min) {
        qp_error(q, v, p, "expected %s, got %g", expect, x);
        return false;
    }
    *out = x;
    return true;
}

bool qp_bool(qp *q, const yaml_node_t *map, const char *path, const char *key, bool *out)
{
    yaml_node_t *v = qp_get(q, map, key, NULL);
    if (!v)
        return false;
    char p[QP_PATH];
    qp_join(p, path, key);
    const char *t = plain_value(q, v, p, "true or false");
    if (!t)
        return false;
    if (!strcmp(t, "true") || !strcmp(t, "True") || !strcmp(t, "TRUE")) {
        *out = true;
        return true;
    }
    if (!strcmp(t, "false") || !strcmp(t, "False") || !strcmp(t, "FALSE")) {
        *out = false;
        return true;
    }
    qp_error(q, v, p, "expected true or false, got '%s'", t);
    return false;
}

bool qp_str(qp *q, const yaml_node_t *map, const char *path, const char *key,
            const char **out)
{
    yaml_node_t *v = qp_get(q, map, key, NULL);
    if (!v)
        return false;
    if (v->type != YAML_SCALAR_NODE || qp_is_null(v)) {
        char p[QP_PATH];
        qp_error(q, v, qp_join(p, path, key), "expected a string, got %s", qp_kind(v));
        return false;
    }
    *out = qp_text(v);
    return true;
}

typedef int (*unit_parser)(const char *, bool, int64_t *, char *, size_t);

static bool unit_value(qp *q, const yaml_node_t *map, const char *path, const char *key,
                       bool allow_unlimited, int64_t *out, unit_parser parse, const char *what)
{
    yaml_node_t *v = qp_get(q, map, key, NULL);
    if (!v)
        return false;
    char p[QP_PATH], err[256];
    qp_join(p, path, key);
    if (v->type != YAML_SCALAR_NODE || qp_is_null(v)) {
        qp_error(q, v, p, "expected %s, got %s", what, qp_kind(v));
        return false;
    }
    if (parse(qp_text(v), allow_unlimited, out, err, sizeof err) != 0) {
        qp_error(q, v, p, "%s", err);
        return false;
    }
    return true;
}

bool qp_duration(qp *q, const yaml_node_t *map, const char *path, const char *key,
                 bool allow_unlimited, int64_t *out)
{
    return unit_value(q, map, path, key, allow_unlimited, out, quota_parse_duration,
                      "a duration like 12h");
}

bool qp_size(qp *q, const yaml_node_t *map, const char *path, const char *key,
             bool allow_unlimited, int64_t *out)
{
    return unit_value(q, map, path, key, allow_unlimited, out, quota_parse_size,
                      "a size like 64G");
}

bool qp_check_name(qp *q, const yaml_node_t *n, const char *path, const char *what)
{
    const char *t = qp_text(n);
    if (!t || qp_is_null(n)) {
        qp_error(q, n, path, "expected %s name, got %s", what, qp_kind(n));
        return false;
    }
    size_t len = strlen(t);
    bool ok = len >= 1 && len <= 64 && isalnum((unsigned char)t[0]);
    for (size_t i = 0; ok && i < len; i++)
        ok = isalnum((unsigned char)t[i]) || t[i] == '.' || t[i] == '_' || t[i] == '-';
    if (!ok)
        qp_error(q, n, path,
                 "'%s' is not a valid name for %s; expected 1-64 letters, digits, '.', '_' "
                 "or '-', starting with a letter or digit",
                 t, what);
    return ok;
}
