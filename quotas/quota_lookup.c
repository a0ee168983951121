/* quota_lookup.c: name lookups and tree queries on a loaded policy. */
#include <stdlib.h>
#include <string.h>

#include "quota_load.h"

/* The tables differ in type but each element starts with its char *name. */
typedef struct table {
    const char *base;
    size_t stride;
} table;

static const char *name_at(const table *t, int i)
{
    return *(char *const *)(const void *)(t->base + (size_t)i * t->stride);
}

static int cmp_index(const void *a, const void *b, void *arg)
{
    return strcmp(name_at(arg, *(const int *)a), name_at(arg, *(const int *)b));
}

static int build(int **idx, const void *base, size_t stride, int n)
{
    free(*idx);
    *idx = malloc((size_t)(n ? n : 1) * sizeof(int));
    if (!*idx)
        return -1;
    table t = {base, stride};
    for (int i = 0; i < n; i++)
        (*idx)[i] = i;
    qsort_r(*idx, (size_t)n, sizeof(int), cmp_index, &t);
    return 0;
}

int quota_policy_index(quota_policy *p)
{
    if (build(&p->by_name_account, p->accounts, sizeof *p->accounts, p->naccounts) ||
        build(&p->by_name_user, p->users, sizeof *p->users, p->nusers) ||
        build(&p->by_name_qos, p->qos, sizeof *p->qos, p->nqos) ||
        build(&p->by_name_tier, p->tiers, sizeof *p->tiers, p->ntiers))
        return QUOTA_ENOMEM;
    return QUOTA_OK;
}

static int find(const int *idx, const void *base, size_t stride, int n, const char *name)
{
    if (!idx || !name)
        return -1;
    table t = {base, stride};
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, name_at(&t, idx[mid]));
        if (c == 0)
            return idx[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

int quota_account_find(const quota_policy *p, const char *name)
{
    return find(p->by_name_account, p->accounts, sizeof *p->accounts, p->naccounts, name);
}

int quota_user_find(const quota_policy *p, const char *name)
{
    return find(p->by_name_user, p->users, sizeof *p->users, p->nusers, name);
}

int quota_qos_find(const quota_policy *p, const char *name)
{
    return find(p->by_name_qos, p->qos, sizeof *p->qos, p->nqos, name);
}

int quota_tier_find(const quota_policy *p, const char *name)
{
    return find(p->by_name_tier, p->tiers, sizeof *p->tiers, p->ntiers, name);
}

int quota_account_ancestors(const quota_policy *p, int account, int *out, int max)
{
    if (!p || account < 0 || account >= p->naccounts || (max > 0 && !out))
        return QUOTA_EARG;
    int n = 0;
    for (int a = account; a > 0 && n < max; a = p->accounts[a].parent)
        out[n++] = a;
    return n;
}

bool quota_account_within(const quota_policy *p, int account, int ancestor)
{
    if (!p || account < 0 || account >= p->naccounts || ancestor < 0 ||
        ancestor >= p->naccounts)
        return false;
    return account >= ancestor && account < p->accounts[ancestor].subtree_end;
}

bool quota_user_may_use(const quota_policy *p, int user, int account)
{
    if (!p || user < 0 || user >= p->nusers || account <= 0 || account >= p->naccounts)
        return false;
    const quota_user *u = &p->users[user];
    for (int i = 0; i < u->naccounts; i++)
        if (u->accounts[i] == account)
            return true;
    return u->admin && p->accounts[account].nchildren == 0;
}
