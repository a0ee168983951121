/* quota_load_users.c: the users section, resolved against the account tree. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "quota_load.h"

/* A leaf account by name, or -1 after reporting why the name cannot be used. */
static int leaf_ref(qp *q, const quota_policy *p, yaml_node_t *v, const char *path)
{
    const char *name = qp_text(v);
    if (!name || qp_is_null(v)) {
        qp_error(q, v, path, "expected an account name, got %s", qp_kind(v));
        return -1;
    }
    int a = quota_account_find(p, name);
    if (a < 0) {
        qp_error(q, v, path, "account '%s' is referenced but not defined under accounts", name);
        return -1;
    }
    if (a == 0 || p->accounts[a].nchildren > 0) {
        qp_error(q, v, path, "account '%s' has sub-accounts; jobs are charged to leaf "
                             "accounts (projects) only", name);
        return -1;
    }
    return a;
}

/* POSIX-portable user names: what useradd accepts by default. */
static bool unix_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 32 || !(islower((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_' ||
              s[i] == '-' || s[i] == '.' || (s[i] == '$' && i == n - 1)))
            return false;
    return true;
}

static void add_account(quota_user *u, int a)
{
    for (int i = 0; i < u->naccounts; i++)
        if (u->accounts[i] == a)
            return;
    u->accounts[u->naccounts++] = a;
}

static void user_one(qp *q, quota_policy *p, yaml_node_t *v, const char *path, quota_user *u)
{
    static const char *const keys[] = {"default_account", "accounts", "admin", "unix_user",
                                       "description", NULL};
    char sub[QP_PATH], ip[QP_PATH + 48];
    u->default_account = -1;
    if (!qp_want_map(q, v, path, "a user: default_account, accounts, admin, unix_user"))
        return;
    qp_check_keys(q, v, path, keys);
    yaml_node_t *l = qp_get(q, v, "accounts", NULL);
    size_t nl = 0;
    if (l && l->type == YAML_SEQUENCE_NODE)
        nl = (size_t)(l->data.sequence.items.top - l->data.sequence.items.start);
    else if (l)
        qp_error(q, l, qp_join(sub, path, "accounts"), "expected a list of account names, got %s",
                 qp_kind(l));
    u->accounts = qp_alloc(q, nl + 1, sizeof(int));
    if (!u->accounts)
        return;
    if (qp_require(q, v, path, "default_account")) {
        int a = leaf_ref(q, p, qp_get(q, v, "default_account", NULL),
                         qp_join(sub, path, "default_account"));
        if (a >= 0) {
            u->default_account = a;
            add_account(u, a);
        }
    }
    for (size_t i = 0; i < nl; i++) {
        snprintf(ip, sizeof ip, "%s.accounts[%zu]", path, i);
        int a = leaf_ref(q, p, qp_node(q, l->data.sequence.items.start[i]), ip);
        if (a >= 0)
            add_account(u, a);
    }
    qp_bool(q, v, path, "admin", &u->admin);
    const char *unix_user;
    if (qp_str(q, v, path, "unix_user", &unix_user)) {
        if (unix_name_ok(unix_user))
            u->unix_user = qp_strdup(q, unix_user);
        else
            qp_error(q, qp_get(q, v, "unix_user", NULL), qp_join(sub, path, "unix_user"),
                     "'%s' is not a valid local user name; expected lower-case letters, "
                     "digits, '_', '-' or '.', starting with a letter or '_', at most 32",
                     unix_user);
    }
    const char *desc;
    qp_str(q, v, path, "description", &desc);
}

void qpl_users(qp *q, yaml_node_t *n, quota_policy *p)
{
    if (!qp_want_map(q, n, "users", "users by name"))
        return;
    qp_check_unique(q, n, "users", "user");
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    p->users = qp_alloc(q, count ? count : 1, sizeof *p->users);
    for (size_t i = 0; p->users && i < count; i++) {
        yaml_node_pair_t *pr = &n->data.mapping.pairs.start[i];
        yaml_node_t *k = qp_node(q, pr->key);
        char path[QP_PATH];
        if (!qp_check_name(q, k, "users", "a user"))
            continue;
        quota_user *u = &p->users[p->nusers++];
        u->name = qp_strdup(q, qp_text(k));
        u->line = (int)k->start_mark.line + 1;
        u->column = (int)k->start_mark.column + 1;
        user_one(q, p, qp_node(q, pr->value), qp_join(path, "users", u->name), u);
        if (!u->unix_user && unix_name_ok(u->name))
            u->unix_user = qp_strdup(q, u->name);
        else if (!u->unix_user)
            qp_error(q, k, path, "user name '%s' is not a valid local user name; "
                                 "add unix_user: to say which local account runs the jobs",
                     u->name);
        for (int j = 0; j < u->naccounts; j++)
            p->accounts[u->accounts[j]].nusers++;
    }
}
