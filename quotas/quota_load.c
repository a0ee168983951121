/* quota_load.c: quota_policy_load_file/_string and quota_policy_free.
 *
 * The text is parsed with libyaml's document API (every node keeps its
 * line:column), then each section is read in dependency order: qos, accounts,
 * users, citizens, the rest. Any error, from any section, means no policy. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quota_load.h"

void *qp_alloc(qp *q, size_t n, size_t size)
{
    void *m = calloc(n, size);
    if (!m)
        qp_error(q, NULL, "", "out of memory");
    return m;
}

char *qp_strdup(qp *q, const char *s)
{
    char *m = strdup(s ? s : "");
    if (!m)
        qp_error(q, NULL, "", "out of memory");
    return m;
}

static void set_defaults(quota_policy *p)
{
    p->billing.cpu = 1.0;
    p->decay_half_life = 7 * 86400;
    p->priority.fairshare = 10000;
    p->priority.age = 1000;
    p->priority.job_size = 0;
    p->priority.qos = 1000;
    p->priority.max_age = 7 * 86400;
    p->default_tier = -1;
    p->anonymous_tier = -1;
}

static void load_document(qp *q, quota_policy *p)
{
    static const char *const keys[] = {"version", "cluster", "billing", "usage", "priority",
                                       "qos", "default_qos", "accounts", "users", "citizens",
                                       NULL};
    yaml_node_t *root = yaml_document_get_root_node(&q->doc);
    if (!root || qp_is_null(root)) {
        qp_error(q, root, "", "the policy is empty; expected a mapping with at least "
                              "'accounts'");
        return;
    }
    if (!qp_want_map(q, root, "", "the policy: accounts, users, qos, ..."))
        return;
    qp_check_keys(q, root, "", keys);
    int64_t version;
    if (qp_int(q, root, "", "version", 1, false, &version) && version != 1)
        qp_error(q, qp_get(q, root, "version", NULL), "version",
                 "unsupported policy version %lld; this build reads version 1",
                 (long long)version);
    const char *cluster = "";
    qp_str(q, root, "", "cluster", &cluster);
    p->cluster = qp_strdup(q, cluster);
    yaml_node_t *n;
    if ((n = qp_get(q, root, "billing", NULL)))
        qpl_billing(q, n, p);
    if ((n = qp_get(q, root, "usage", NULL)))
        qpl_usage(q, n, p);
    if ((n = qp_get(q, root, "priority", NULL)))
        qpl_priority(q, n, p);
    qpl_qos(q, qp_get(q, root, "qos", NULL), qp_get(q, root, "default_qos", NULL), p);
    char **paths = qpl_accounts(q, qp_get(q, root, "accounts", NULL), root, p);
    if (quota_policy_index(p)) {
        qp_error(q, NULL, "", "out of memory");
        qpl_free_paths(paths, p->naccounts);
        return;
    }
    if ((n = qp_get(q, root, "users", NULL)))
        qpl_users(q, n, p);
    else
        qp_warn(q, root, "users", "no users are defined, so nobody can submit jobs");
    if ((n = qp_get(q, root, "citizens", NULL)))
        qpl_citizens(q, n, p);
    if (quota_policy_index(p))
        qp_error(q, NULL, "", "out of memory");
    else
        qpl_warnings(q, paths, p);
    qpl_free_paths(paths, p->naccounts);
}

int quota_policy_load_string(const char *text, size_t len, const char *name,
                             quota_policy **out, quota_diags *diags)
{
    if (!out || !diags || (!text && len))
        return QUOTA_EARG;
    *out = NULL;
    if (!diags->source)
        diags->source = strdup(name ? name : "<string>");
    size_t errors_before = diags->errors;
    qp q = {.diags = diags};
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        quota_diag_add(diags, QUOTA_DIAG_ERROR, 0, 0, "", "out of memory");
        return QUOTA_ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)(text ? text : ""), len);
    if (!yaml_parser_load(&parser, &q.doc)) {
        /* A syntax error: libyaml stops at the first one, so it is the only one. */
        const yaml_mark_t *m = parser.problem_mark.line || parser.problem_mark.column
                                   ? &parser.problem_mark
                                   : &parser.context_mark;
        quota_diag_add(diags, QUOTA_DIAG_ERROR, (int)m->line + 1, (int)m->column + 1, "",
                       "YAML syntax: %s%s%s", parser.problem ? parser.problem : "malformed",
                       parser.context ? " " : "", parser.context ? parser.context : "");
        int rc = parser.error == YAML_MEMORY_ERROR ? QUOTA_ENOMEM : QUOTA_EINVALID;
        yaml_parser_delete(&parser);
        return rc;
    }
    quota_policy *p = calloc(1, sizeof *p);
    if (!p) {
        yaml_document_delete(&q.doc);
        yaml_parser_delete(&parser);
        quota_diag_add(diags, QUOTA_DIAG_ERROR, 0, 0, "", "out of memory");
        return QUOTA_ENOMEM;
    }
    set_defaults(p);
    p->source = qp_strdup(&q, name ? name : "<string>");
    load_document(&q, p);
    /* A second document would be silently ignored by the reader: say so. */
    yaml_document_t extra;
    if (yaml_parser_load(&parser, &extra)) {
        yaml_node_t *r = yaml_document_get_root_node(&extra);
        if (r)
            quota_diag_add(diags, QUOTA_DIAG_ERROR, (int)r->start_mark.line + 1,
                           (int)r->start_mark.column + 1, "",
                           "a second YAML document; a policy is one document");
        yaml_document_delete(&extra);
    }
    yaml_document_delete(&q.doc);
    yaml_parser_delete(&parser);
    if (diags->errors > errors_before) {
        quota_policy_free(p);
        return QUOTA_EINVALID;
    }
    *out = p;
    return QUOTA_OK;
}

int quota_policy_load_file(const char *path, quota_policy **out, quota_diags *diags)
{
    if (!path || !out || !diags)
        return QUOTA_EARG;
    *out = NULL;
    if (!diags->source)
        diags->source = strdup(path);
    FILE *f = fopen(path, "rb");
    if (!f) {
        quota_diag_add(diags, QUOTA_DIAG_ERROR, 0, 0, "", "cannot open: %s", strerror(errno));
        return QUOTA_EIO;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > ((size_t)64 << 20)) {
                quota_diag_add(diags, QUOTA_DIAG_ERROR, 0, 0, "",
                               "file larger than 64 MiB; not a policy");
                free(text);
                fclose(f);
                return QUOTA_EINVALID;
            }
            char *t = realloc(text, cap);
            if (!t) {
                free(text);
                fclose(f);
                quota_diag_add(diags, QUOTA_DIAG_ERROR, 0, 0, "", "out of memory");
                return QUOTA_ENOMEM;
            }
            text = t;
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(text);
        quota_diag_add(diags, QUOTA_DIAG_ERROR, 0, 0, "", "read error");
        return QUOTA_EIO;
    }
    int rc = quota_policy_load_string(text, len, path, out, diags);
    free(text);
    return rc;
}

void quota_policy_free(quota_policy *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->naccounts; i++) {
        free(p->accounts[i].name);
        free(p->accounts[i].description);
        free(p->accounts[i].children);
    }
    for (int i = 0; i < p->nusers; i++) {
        free(p->users[i].name);
        free(p->users[i].accounts);
        free(p->users[i].unix_user);
    }
    for (int i = 0; i < p->nqos; i++) {
        free(p->qos[i].name);
        free(p->qos[i].preempts);
    }
    for (int i = 0; i < p->ntiers; i++)
        free(p->tiers[i].name);
    free(p->accounts);
    free(p->users);
    free(p->qos);
    free(p->tiers);
    free(p->by_name_account);
    free(p->by_name_user);
    free(p->by_name_qos);
    free(p->by_name_tier);
    free(p->source);
    free(p->cluster);
    free(p);
}
