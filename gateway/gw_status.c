/* gw_status.c: GET /status, the JSON behind the public status page (gateway/www/,
 * served at /): which models are up, how busy the replicas and the queue are,
 * the citizen tiers in force (the policy is public, so citizens can see the
 * limits they are held to), inference totals, and, when the gateway follows a
 * commonsd service, the cluster: nodes, queue, fair-share tree and delivered
 * usage per institution and day. */
#include "gw_gateway.h"

#include "gw_discover.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *gw_status_json(gw_gateway *g)
{
    json_t *st = gw_disp_status(g->disp);
    if (!st) return NULL;
    gw_policy_ref *pr = gw_policy_get(g);
    const quota_policy *p = pr->p;
    json_t *tiers = json_array();
    for (int i = 0; i < p->ntiers; i++) {
        const quota_tier *t = &p->tiers[i];
        json_array_append_new(tiers, json_pack("{s:s, s:I, s:I, s:I, s:I, s:b, s:b}", "name", t->name,
                                               "tokens_per_day", (json_int_t)t->tokens_per_day,
                                               "requests_per_minute", (json_int_t)t->requests_per_minute,
                                               "max_tokens_per_request", (json_int_t)t->max_tokens_per_request,
                                               "concurrent_requests", (json_int_t)t->concurrent_requests,
                                               "default", i == p->default_tier,
                                               "anonymous", i == p->anonymous_tier));
    }
    gw_policy_put(g, pr);
    json_object_set_new(st, "tiers", tiers);
    int64_t gens, toks;
    double ttft;
    gw_metrics_summary(g->metrics, &gens, &toks, &ttft);
    json_object_set_new(st, "inference", json_pack("{s:I, s:I, s:f}", "generations", (json_int_t)gens,
                                                   "completion_tokens", (json_int_t)toks, "mean_ttft_s", ttft));
    json_t *cluster = gw_discover_cluster(g->discover);
    json_object_set_new(st, "cluster", cluster ? cluster : json_null());
    return st;
}
