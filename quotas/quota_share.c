/* quota_share.c: billing, decay, roll-up and the Fair Tree ranking (quota_share.h). */
#include "quota_share.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double quota_billing_rate(const quota_policy *p, int64_t cpus, int64_t gpus, int64_t mem_bytes)
{
    if (!p)
        return 0.0;
    return p->billing.cpu * (double)(cpus > 0 ? cpus : 0) +
           p->billing.gpu * (double)(gpus > 0 ? gpus : 0) +
           p->billing.mem_per_gb * (double)(mem_bytes > 0 ? mem_bytes : 0) /
               (1024.0 * 1024.0 * 1024.0);
}

double quota_billed(const quota_policy *p, int64_t cpus, int64_t gpus, int64_t mem_bytes,
                    double seconds, int qos)
{
    if (!p || !(seconds > 0))
        return 0.0;
    if (qos < 0 || qos >= p->nqos)
        qos = p->default_qos;
    double factor = qos >= 0 ? p->qos[qos].usage_factor : 1.0;
    return quota_billing_rate(p, cpus, gpus, mem_bytes) * seconds * factor;
}

double quota_usage_decay(double usage, double dt_seconds, int64_t half_life)
{
    if (half_life <= 0 || !(dt_seconds > 0))
        return usage;
    return usage * exp2(-dt_seconds / (double)half_life);
}

void quota_usage_rollup(const quota_policy *p, const double *self, double *total)
{
    for (int i = 0; i < p->naccounts; i++)
        total[i] = self[i] > 0 ? self[i] : 0.0;
    /* Pre-order: every child comes after its parent, so a reverse sweep adds
     * each finished subtree into its parent exactly once. */
    for (int i = p->naccounts - 1; i > 0; i--)
        total[p->accounts[i].parent] += total[i];
}

double quota_global_share(const quota_policy *p, int account)
{
    if (!p || account < 0 || account >= p->naccounts)
        return 0.0;
    double share = 1.0;
    for (int a = account; a > 0; a = p->accounts[a].parent) {
        const quota_account *par = &p->accounts[p->accounts[a].parent];
        double level = 0;
        for (int k = 0; k < par->nchildren; k++)
            level += (double)p->accounts[par->children[k]].shares;
        share *= (double)p->accounts[a].shares / level;
    }
    return share;
}

/* Level fair-share values are rounded to 40 mantissa bits so that ratios that
 * are equal on paper (0.6/0.3 and 0.4/0.2) compare equal despite rounding,
 * while the ordering stays an exact, transitive comparison of doubles. */
static double quantize(double x)
{
    if (x == 0 || isinf(x))
        return x;
    int e;
    double m = frexp(x, &e);
    return ldexp(round(ldexp(m, 40)), e - 40);
}

typedef struct ft {
    const quota_policy *p;
    quota_share_row *rows;
    int rank, rnt; /* current rank, and the rank it would be without ties */
} ft;


static bool is_leaf(const quota_policy *p, int a)
{
    return p->accounts[a].nchildren == 0;
}

/* Descending level_fs; on equal values leaves first (Slurm: users before
 * accounts), then file order for determinism. */
static int cmp_level(const void *x, const void *y, void *arg)
{
    const ft *f = arg;
    int a = *(const int *)x, b = *(const int *)y;
    double la = f->rows[a].level_fs, lb = f->rows[b].level_fs;
    if (la != lb)
        return la < lb ? 1 : -1;
    bool leaf_a = is_leaf(f->p, a), leaf_b = is_leaf(f->p, b);
    if (leaf_a != leaf_b)
        return leaf_a ? -1 : 1;
    return (a > b) - (a < b);
}

static int rank_level(ft *f, int *sib, int n, bool account_tied)
{
    qsort_r(sib, (size_t)n, sizeof *sib, cmp_level, f);
    double prev = NAN;
    for (int i = 0; i < n; i++) {
        int a = sib[i];
        double lf = f->rows[a].level_fs;
        bool tied = (i == 0 && account_tied) || (i > 0 && lf == prev);
        if (is_leaf(f->p, a)) {
            if (!tied)
                f->rank = f->rnt;
            f->rows[a].rank = f->rank;
            f->rows[a].fs_factor = (double)f->rank / (double)f->p->nleaves;
            f->rnt--;
        } else {
            /* Tied sibling accounts are merged: their children compete as one level. */
            int m = 0, total = 0;
            while (i + m + 1 < n && !is_leaf(f->p, sib[i + m + 1]) &&
                   f->rows[sib[i + m + 1]].level_fs == lf)
                m++;
            for (int k = i; k <= i + m; k++)
                total += f->p->accounts[sib[k]].nchildren;
            int *merged = malloc((size_t)total * sizeof *merged);
            if (!merged)
                return QUOTA_ENOMEM;
            int t = 0;
            for (int k = i; k <= i + m; k++) {
                const quota_account *acc = &f->p->accounts[sib[k]];
                memcpy(merged + t, acc->children, (size_t)acc->nchildren * sizeof *merged);
                t += acc->nchildren;
            }
            int rc = rank_level(f, merged, total, tied);
            free(merged);
            if (rc)
                return rc;
            i += m;
        }
        prev = lf;
    }
    return QUOTA_OK;
}

int quota_fairshare(const quota_policy *p, const double *self_usage, quota_share_row *rows)
{
    if (!p || !self_usage || !rows || p->naccounts < 1)
        return QUOTA_EARG;
    double *total = malloc((size_t)p->naccounts * sizeof *total);
    if (!total)
        return QUOTA_ENOMEM;
    quota_usage_rollup(p, self_usage, total);
    memset(rows, 0, (size_t)p->naccounts * sizeof *rows);
    double cluster = total[0];
    rows[0].raw_shares = p->accounts[0].shares;
    rows[0].norm_shares = 1.0;
    rows[0].raw_usage = cluster;
    rows[0].norm_usage = rows[0].effective_usage = cluster > 0 ? 1.0 : 0.0;
    for (int i = 0; i < p->naccounts; i++) {
        const quota_account *par = &p->accounts[i];
        double level_shares = 0;
        for (int k = 0; k < par->nchildren; k++)
            level_shares += (double)p->accounts[par->children[k]].shares;
        for (int k = 0; k < par->nchildren; k++) {
            int c = par->children[k];
            quota_share_row *r = &rows[c];
            r->raw_shares = p->accounts[c].shares;
            r->norm_shares = (double)r->raw_shares / level_shares;
            r->raw_usage = total[c];
            r->norm_usage = cluster > 0 ? total[c] / cluster : 0.0;
            r->effective_usage = total[i] > 0 ? total[c] / total[i] : 0.0;
            /* LF = S / U: above 1 under-served, below 1 over-served; no usage
             * at all ranks first (infinity), as in Slurm. */
            r->level_fs = r->effective_usage > 0
                              ? quantize(r->norm_shares / r->effective_usage)
                              : INFINITY;
        }
    }
    free(total);
    const quota_account *root = &p->accounts[0];
    if (root->nchildren == 0)
        return QUOTA_OK;
    int *top = malloc((size_t)root->nchildren * sizeof *top);
    if (!top)
        return QUOTA_ENOMEM;
    memcpy(top, root->children, (size_t)root->nchildren * sizeof *top);
    ft f = {p, rows, p->nleaves, p->nleaves};
    int rc = rank_level(&f, top, root->nchildren, false);
    free(top);
    return rc;
}
