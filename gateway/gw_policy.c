/* gw_policy.c: the policy in force, counted references and SIGHUP reloads
 * (see gw_gateway.h). */
#include "gw_gateway.h"

#include "cm_log.h"

#include <stdio.h>
#include <stdlib.h>

gw_policy_ref *gw_policy_get(gw_gateway *g)
{
    pthread_mutex_lock(&g->mu);
    gw_policy_ref *r = g->pol;
    r->refs++;
    pthread_mutex_unlock(&g->mu);
    return r;
}

void gw_policy_put(gw_gateway *g, gw_policy_ref *r)
{
    if (!r) return;
    pthread_mutex_lock(&g->mu);
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&g->mu);
    if (last) {
        quota_policy_free(r->p);
        free(r);
    }
}

int gw_policy_reload(gw_gateway *g, char *err, size_t errlen)
{
    quota_diags diags;
    quota_diags_init(&diags);
    quota_policy *p = NULL;
    int rc = quota_policy_load_file(g->policy_path, &p, &diags);
    for (size_t i = 0; i < diags.count; i++) {
        char line[1024];
        quota_diag_format(&diags, &diags.items[i], line, sizeof line);
        if (diags.items[i].level == QUOTA_DIAG_ERROR) cm_error("%s", line);
        else cm_warn("%s", line);
        if (rc != QUOTA_OK && diags.items[i].level == QUOTA_DIAG_ERROR && err[0] == 0)
            snprintf(err, errlen, "%s", line);
    }
    quota_diags_free(&diags);
    if (rc != QUOTA_OK) {
        if (err[0] == 0) snprintf(err, errlen, "cannot load policy %s", g->policy_path);
        return -1;
    }
    if (p->ntiers == 0)
        cm_warn("policy %s defines no citizen tiers: every generation request will be refused",
                g->policy_path);
    gw_policy_ref *r = calloc(1, sizeof *r);
    if (!r) {
        quota_policy_free(p);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->p = p;
    r->refs = 1; /* the gateway's own reference */
    pthread_mutex_lock(&g->mu);
    gw_policy_ref *old = g->pol;
    g->pol = r;
    pthread_mutex_unlock(&g->mu);
    gw_policy_put(g, old);
    return 0;
}
