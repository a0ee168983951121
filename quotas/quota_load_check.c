/* quota_load_check.c: warnings that need the whole policy loaded.
 *
 * These never make a policy invalid; they point at things that are legal but
 * almost always a mistake. */
#include <stdlib.h>

#include "quota_load.h"

/* Sibling shares further apart than this are usually a typo (an extra zero). */
#define SHARE_RATIO_WARN 1000.0

void qpl_free_paths(char **paths, int n)
{
    if (!paths)
        return;
    for (int i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}

void qpl_warnings(qp *q, char **paths, const quota_policy *p)
{
    for (int i = 1; i < p->naccounts; i++) {
        const quota_account *a = &p->accounts[i];
        const char *path = paths ? paths[i] : NULL;
        if (a->nchildren == 0 && a->nusers == 0)
            quota_diag_add(q->diags, QUOTA_DIAG_WARNING, a->line, a->column,
                           path ? path : a->name,
                           "account '%s' has no users and no sub-accounts: nobody can use "
                           "its share",
                           a->name);
    }
    for (int i = 0; i < p->naccounts; i++) {
        const quota_account *par = &p->accounts[i];
        if (par->nchildren < 2)
            continue;
        int lo = par->children[0], hi = par->children[0];
        for (int k = 1; k < par->nchildren; k++) {
            int c = par->children[k];
            if (p->accounts[c].shares < p->accounts[lo].shares)
                lo = c;
            if (p->accounts[c].shares > p->accounts[hi].shares)
                hi = c;
        }
        double ratio = (double)p->accounts[hi].shares / (double)p->accounts[lo].shares;
        const quota_account *small = &p->accounts[lo];
        if (ratio > SHARE_RATIO_WARN)
            quota_diag_add(q->diags, QUOTA_DIAG_WARNING, small->line, small->column,
                           paths && paths[lo] ? paths[lo] : small->name,
                           "account '%s' has %lld shares, %.0f times fewer than its sibling "
                           "'%s'; ratios above 1000:1 are usually a typo",
                           small->name, (long long)small->shares, ratio,
                           p->accounts[hi].name);
    }
}
