/* quota_load_accounts.c: the account tree.
 *
 * Accounts may be written nested (children: mappings, any depth) or flat (a
 * top-level entry with parent: NAME), or both. Collection first records every
 * definition as a "decl"; then names are checked for duplicates, parent
 * references resolved, cycles found, and the valid part laid out in pre-order
 * under the implicit root. Errors exclude the offending accounts but the rest
 * is still built so users can be checked against it.
 */
#include <stdlib.h>
#include <string.h>

#include "quota_load.h"

#define MAX_DEPTH 64

typedef struct decl {
    const char *name;          /* points into the document */
    yaml_node_t *key, *val;
    char *path;                /* field path of the account's mapping */
    int nested_parent;         /* decl index, -1 for top-level */
    yaml_node_t *parent_node;  /* the parent: NAME value, top-level only */
    int parent;                /* resolved: decl index, -1 root, -2 unusable */
    int64_t shares;
    const char *description;
    quota_limits limits;
    int state;                 /* 0 unvisited, 1 on the walk, 2 good, 3 bad */
    int final;                 /* index in policy->accounts, -1 when excluded */
} decl;

typedef struct decls {
    decl *v;
    int n, cap;
} decls;

static const quota_limits no_limits = {
    .max_running_cpus = QUOTA_UNLIMITED, .max_running_gpus = QUOTA_UNLIMITED,
    .max_running_mem = QUOTA_UNLIMITED,  .max_running_jobs = QUOTA_UNLIMITED,
    .max_queued_jobs = QUOTA_UNLIMITED,  .max_wall = QUOTA_UNLIMITED,
    .cpu_hours = -1,                     .gpu_hours = -1,
    .budget_period = QUOTA_PERIOD_MONTH};

static int collect(qp *q, decls *ds, yaml_node_t *map, const char *base, int parent,
                   int depth);

static int add_decl(qp *q, decls *ds, yaml_node_t *k, yaml_node_t *v, const char *base,
                    int parent, int depth)
{
    char path[QP_PATH];
    if (!qp_check_name(q, k, base, "an account"))
        return 0;
    qp_join(path, base, qp_text(k));
    /* The same key node twice means a YAML alias pulled a mapping into
     * itself; following it again would never end. */
    for (int i = 0; i < ds->n; i++)
        if (ds->v[i].key == k) {
            qp_error(q, k, path, "account '%s' is reached again through a YAML alias "
                                 "that contains itself", qp_text(k));
            return 0;
        }
    if (ds->n == ds->cap) {
        int cap = ds->cap ? ds->cap * 2 : 32;
        decl *nv = realloc(ds->v, (size_t)cap * sizeof *nv);
        if (!nv) {
            qp_error(q, k, path, "out of memory");
            return -1;
        }
        ds->v = nv;
        ds->cap = cap;
    }
    int me = ds->n++;
    decl *d = &ds->v[me];
    memset(d, 0, sizeof *d);
    d->name = qp_text(k);
    d->key = k;
    d->val = v;
    d->path = qp_strdup(q, path);
    d->nested_parent = parent;
    d->parent = parent;
    d->shares = 1;
    d->description = "";
    d->limits = no_limits;
    d->final = -1;
    if (!strcmp(d->name, "root")) {
        qp_error(q, k, path, "'root' is reserved for the implicit top of the tree; "
                             "name your top-level account differently");
        d->parent = -2;
    }
    if (qp_is_null(v))
        return 0; /* "physics:" alone: an account with default settings */
    if (!qp_want_map(q, v, path, "an account: shares, limits, children, ..."))
        return 0;
    static const char *const keys[] = {"shares", "description", "limits", "children",
                                       "parent", NULL};
    qp_check_keys(q, v, path, keys);
    int64_t shares;
    if (qp_int(q, v, path, "shares", 1, false, &shares))
        d->shares = shares;
    const char *desc;
    if (qp_str(q, v, path, "description", &desc))
        d->description = desc;
    yaml_node_t *lim = qp_get(q, v, "limits", NULL);
    if (lim) {
        char lp[QP_PATH];
        quota_limits l = no_limits;
        qpl_limits(q, lim, qp_join(lp, path, "limits"), &l);
        ds->v[me].limits = l;
    }
    yaml_node_t *pn = qp_get(q, v, "parent", NULL);
    if (pn) {
        char pp[QP_PATH];
        qp_join(pp, path, "parent");
        if (parent >= 0)
            qp_error(q, pn, pp, "only top-level accounts may name a parent; this one is "
                                "already nested under '%s'", ds->v[parent].name);
        else if (!qp_text(pn) || qp_is_null(pn))
            qp_error(q, pn, pp, "expected an account name, got %s", qp_kind(pn));
        else
            ds->v[me].parent_node = pn;
    }
    yaml_node_t *ch = qp_get(q, v, "children", NULL);
    if (ch && !qp_is_null(ch)) {
        char cp[QP_PATH];
        qp_join(cp, path, "children");
        if (depth + 1 >= MAX_DEPTH) {
            qp_error(q, ch, cp, "account tree deeper than %d levels (a YAML alias loop?)",
                     MAX_DEPTH);
            return 0;
        }
        if (qp_want_map(q, ch, cp, "sub-accounts by name"))
            return collect(q, ds, ch, cp, me, depth + 1);
    }
    return 0;
}

static int collect(qp *q, decls *ds, yaml_node_t *map, const char *base, int parent,
                   int depth)
{
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
         pr++)
        if (add_decl(q, ds, qp_node(q, pr->key), qp_node(q, pr->value), base, parent, depth))
            return -1;
    return 0;
}

static int find_decl(const decls *ds, const char *name)
{
    for (int i = 0; i < ds->n; i++)
        if (ds->v[i].parent != -2 && !strcmp(ds->v[i].name, name))
            return i;
    return -1;
}

/* Duplicates are excluded (-2) after being reported at the later definition. */
static void check_duplicates(qp *q, decls *ds)
{
    for (int i = 0; i < ds->n; i++) {
        for (int j = 0; j < i; j++) {
            if (ds->v[j].parent == -2 || strcmp(ds->v[i].name, ds->v[j].name))
                continue;
            yaml_node_t *first = ds->v[j].key;
            qp_error(q, ds->v[i].key, ds->v[i].path,
                     "duplicate account '%s' (first defined at line %d:%d as %s)",
                     ds->v[i].name, (int)first->start_mark.line + 1,
                     (int)first->start_mark.column + 1, ds->v[j].path);
            ds->v[i].parent = -2;
            break;
        }
    }
}

static void resolve_parents(qp *q, decls *ds)
{
    for (int i = 0; i < ds->n; i++) {
        decl *d = &ds->v[i];
        if (!d->parent_node || d->parent == -2)
            continue;
        const char *want = qp_text(d->parent_node);
        char pp[QP_PATH];
        qp_join(pp, d->path, "parent");
        int k = find_decl(ds, want);
        if (k < 0) {
            qp_error(q, d->parent_node, pp,
                     "account '%s' is referenced but not defined under accounts", want);
            d->parent = -2;
        } else {
            d->parent = k;
        }
    }
}

/* Marks each decl good (reaches the root) or bad (excluded, a duplicate, an
 * undefined parent, or a cycle), reporting each cycle once at its first member. */
static void find_cycles(qp *q, decls *ds)
{
    int *walk = malloc((size_t)(ds->n ? ds->n : 1) * sizeof *walk);
    if (!walk) {
        qp_error(q, NULL, "accounts", "out of memory");
        return;
    }
    for (int i = 0; i < ds->n; i++) {
        int len = 0, cur = i, verdict;
        for (;;) {
            decl *c = &ds->v[cur];
            if (c->state == 2 || c->state == 3) {
                verdict = c->state;
                break;
            }
            if (c->parent == -2) {
                walk[len++] = cur;
                verdict = 3;
                break;
            }
            if (c->state == 1) { /* back on the walk: cur starts a cycle */
                char chain[QP_PATH] = "";
                int from = 0;
                while (walk[from] != cur)
                    from++;
                /* Report at a parent: reference; only those can close a cycle. */
                for (int k = from; k < len; k++)
                    if (ds->v[walk[k]].parent_node) {
                        c = &ds->v[walk[k]];
                        break;
                    }
                for (int k = from; k < len; k++) {
                    size_t used = strlen(chain);
                    snprintf(chain + used, sizeof chain - used, "%s -> ", ds->v[walk[k]].name);
                }
                size_t used = strlen(chain);
                snprintf(chain + used, sizeof chain - used, "%s", ds->v[cur].name);
                char pp[QP_PATH];
                qp_error(q, c->parent_node ? c->parent_node : c->key,
                         qp_join(pp, c->path, "parent"),
                         "cycle in the account tree: %s (each account's parent leads back "
                         "to itself, so none of them reaches the top)",
                         chain);
                verdict = 3;
                break;
            }
            c->state = 1;
            walk[len++] = cur;
            if (c->parent == -1) {
                verdict = 2;
                break;
            }
            cur = c->parent;
        }
        for (int k = 0; k < len; k++)
            ds->v[walk[k]].state = verdict;
    }
    free(walk);
}

/* Pre-order layout: root, then each top-level account's subtree in file order. */
static int layout(qp *q, decls *ds, quota_policy *p, int *order, int *norder, int d, int depth)
{
    if (depth > MAX_DEPTH) {
        qp_error(q, ds->v[d].key, ds->v[d].path, "account tree deeper than %d levels",
                 MAX_DEPTH);
        return -1;
    }
    ds->v[d].final = *norder;
    order[(*norder)++] = d;
    for (int i = 0; i < ds->n; i++)
        if (ds->v[i].state == 2 && ds->v[i].parent == d)
            if (layout(q, ds, p, order, norder, i, depth + 1))
                return -1;
    return 0;
}

static void build(qp *q, decls *ds, quota_policy *p)
{
    int good = 0;
    for (int i = 0; i < ds->n; i++)
        good += ds->v[i].state == 2;
    int *order = qp_alloc(q, (size_t)good + 1, sizeof *order);
    p->accounts = qp_alloc(q, (size_t)good + 1, sizeof *p->accounts);
    if (!order || !p->accounts) {
        free(order);
        return;
    }
    int n = 0;
    for (int i = 0; i < ds->n; i++)
        if (ds->v[i].state == 2 && ds->v[i].parent == -1 && layout(q, ds, p, order + 1, &n, i, 1))
            break;
    quota_account *root = &p->accounts[0];
    root->name = qp_strdup(q, "root");
    root->description = qp_strdup(q, "");
    root->parent = -1;
    root->shares = 1;
    root->limits = no_limits;
    p->naccounts = 1;
    for (int k = 0; k < n; k++) {
        decl *d = &ds->v[order[k + 1]];
        quota_account *a = &p->accounts[p->naccounts++];
        a->name = qp_strdup(q, d->name);
        a->description = qp_strdup(q, d->description);
        a->parent = d->parent < 0 ? 0 : ds->v[d->parent].final + 1;
        a->depth = p->accounts[a->parent].depth + 1;
        a->shares = d->shares;
        a->limits = d->limits;
        a->line = (int)d->key->start_mark.line + 1;
        a->column = (int)d->key->start_mark.column + 1;
    }
    free(order);
    /* Children lists (in pre-order = file order among siblings) and subtree ends. */
    for (int i = 1; i < p->naccounts; i++)
        p->accounts[p->accounts[i].parent].nchildren++;
    for (int i = 0; i < p->naccounts; i++) {
        quota_account *a = &p->accounts[i];
        a->children = qp_alloc(q, (size_t)(a->nchildren ? a->nchildren : 1), sizeof(int));
        a->nchildren = 0;
        a->subtree_end = i + 1;
    }
    for (int i = 1; i < p->naccounts; i++) {
        quota_account *par = &p->accounts[p->accounts[i].parent];
        if (par->children)
            par->children[par->nchildren++] = i;
    }
    for (int i = p->naccounts - 1; i > 0; i--) {
        quota_account *par = &p->accounts[p->accounts[i].parent];
        if (p->accounts[i].subtree_end > par->subtree_end)
            par->subtree_end = p->accounts[i].subtree_end;
    }
    for (int i = 1; i < p->naccounts; i++)
        p->nleaves += p->accounts[i].nchildren == 0;
}

char **qpl_accounts(qp *q, yaml_node_t *n, yaml_node_t *where, quota_policy *p)
{
    decls ds = {0};
    if (!n) {
        qp_error(q, where, "accounts", "missing required key 'accounts': a policy needs at "
                                       "least one account");
    } else if (qp_want_map(q, n, "accounts", "accounts by name")) {
        if (n->data.mapping.pairs.top == n->data.mapping.pairs.start)
            qp_error(q, n, "accounts", "expected at least one account");
        collect(q, &ds, n, "accounts", -1, 0);
    }
    check_duplicates(q, &ds);
    resolve_parents(q, &ds);
    find_cycles(q, &ds);
    build(q, &ds, p);
    char **paths = calloc((size_t)p->naccounts + 1, sizeof *paths);
    if (paths) {
        paths[0] = qp_strdup(q, "accounts");
        for (int i = 0; i < ds.n; i++)
            if (ds.v[i].final >= 0 && ds.v[i].final + 1 < p->naccounts) {
                paths[ds.v[i].final + 1] = ds.v[i].path;
                ds.v[i].path = NULL;
            }
    }
    for (int i = 0; i < ds.n; i++)
        free(ds.v[i].path);
    free(ds.v);
    return paths;
}
