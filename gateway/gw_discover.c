/* gw_discover.c: replicas from commonsd's service list, and autoscaling (see gw_discover.h). */
#include "gw_discover.h"

#include "gw_clock.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct gw_discover {
    gw_disp *disp;
    gw_discover_opts o;
    char *token;
    cm_rpc_client *rpc;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    int64_t saturated_since, idle_since, last_change;
    int64_t last_gens;     /* generations and TTFT total at the previous poll, */
    double last_ttft_sum;  /* for the mean TTFT of recent requests */
    json_t *cluster; /* guarded by mu */
    int polls;
    char last_error[512];
};

/* quiet: failures are expected (a cluster view piece that needs a policy) and not logged. */
static json_t *call_q(gw_discover *g, json_t *req, bool quiet)
{
    char err[512];
    json_object_set_new(req, "token", json_string(g->token));
    json_t *reply = NULL;
    int rc = cm_rpc_call(g->rpc, req, &reply, 5000, err, sizeof err);
    json_decref(req);
    if (rc == 0 && !json_is_true(json_object_get(reply, "ok"))) {
        cm_reply_error_text(reply, err, sizeof err);
        json_decref(reply);
        reply = NULL;
        rc = -1;
    }
    if (quiet) return reply;
    if (rc != 0 && strcmp(err, g->last_error) != 0) { /* log each new problem once */
        cm_warn("service %s at %s: %s", g->o.service, g->o.commonsd, err);
        snprintf(g->last_error, sizeof g->last_error, "%s", err);
    }
    if (rc == 0) g->last_error[0] = '\0';
    return reply;
}

static json_t *call(gw_discover *g, json_t *req) { return call_q(g, req, false); }

static void autoscale(gw_discover *g, json_t *svc)
{
    int queued, inflight, slots;
    gw_disp_load(g->disp, &queued, &inflight, &slots);
    int64_t now = cm_mono_ms();
    int target = (int)json_integer_value(json_object_get(svc, "target"));
    int min = (int)json_integer_value(json_object_get(svc, "min")), max = (int)json_integer_value(json_object_get(svc, "max"));
    /* Mean time to first token of the requests answered since the last poll. */
    int64_t gens = 0, toks;
    double mean = 0, recent_ms = 0;
    if (g->o.metrics) {
        gw_metrics_summary(g->o.metrics, &gens, &toks, &mean);
        double sum = mean * (double)gens;
        if (gens > g->last_gens) recent_ms = 1000 * (sum - g->last_ttft_sum) / (double)(gens - g->last_gens);
        g->last_gens = gens;
        g->last_ttft_sum = sum;
    }
    bool slow = g->o.ttft_ms > 0 && recent_ms > (double)g->o.ttft_ms;
    bool saturated = (queued > 0 && inflight >= slots) || slow;
    bool idle = queued == 0 && inflight * 10 < slots * 3;
    g->saturated_since = saturated ? (g->saturated_since ? g->saturated_since : now) : 0;
    g->idle_since = idle ? (g->idle_since ? g->idle_since : now) : 0;
    if (now - g->last_change < g->o.up_after_ms) return; /* hysteresis after a change */
    int want = target;
    if (g->saturated_since && now - g->saturated_since >= g->o.up_after_ms && target < max) want = target + 1;
    else if (g->idle_since && now - g->idle_since >= g->o.down_after_ms && target > min) want = target - 1;
    if (want == target) return;
    json_t *r = call(g, json_pack("{s:s, s:s, s:i}", "type", "service.scale", "name", g->o.service, "target", want));
    if (r) {
        cm_info("service %s: scaled %d -> %d (%d waiting, %d/%d slots busy, recent time to first token %.0f ms)",
                g->o.service, target, want, queued, inflight, slots, recent_ms);
        g->last_change = now;
        g->saturated_since = g->idle_since = 0;
        json_decref(r);
    }
}

static void poll_once(gw_discover *g)
{
    json_t *reply = call(g, json_pack("{s:s, s:s}", "type", "service.list", "name", g->o.service));
    if (!reply) return;
    json_t *svc = json_array_get(json_object_get(reply, "services"), 0), *rep;
    size_t i;
    if (!svc) {
        if (strcmp(g->last_error, "no such service") != 0) {
            cm_warn("service %s is not deployed at %s", g->o.service, g->o.commonsd);
            snprintf(g->last_error, sizeof g->last_error, "no such service");
        }
        json_decref(reply);
        return;
    }
    json_array_foreach(json_object_get(svc, "replicas"), i, rep) {
        const char *ep = json_string_value(json_object_get(rep, "endpoint"));
        char err[256];
        if (ep && gw_disp_add(g->disp, ep, err, sizeof err) < 0) cm_warn("service %s: %s", g->o.service, err);
    }
    if (g->o.autoscale) autoscale(g, svc);
    json_decref(reply);
}

/* The status page's view of the cluster, refreshed every few polls. */
static void refresh_cluster(gw_discover *g)
{
    static const char *const parts[][2] = {{"node.list", "nodes"}, {"job.list", "jobs"}, {"share", "accounts"}};
    json_t *view = json_object();
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        json_t *r = call_q(g, json_pack("{s:s}", "type", parts[i][0]), true);
        json_t *part = r ? json_object_get(r, parts[i][1]) : NULL;
        json_object_set_new(view, i == 2 ? "share" : parts[i][1], part ? json_incref(part) : json_array());
        json_decref(r);
    }
    json_t *u = call_q(g, json_pack("{s:s, s:s, s:s}", "type", "usage.report", "by", "institution", "period", "day"),
                       true);
    json_t *rows = u ? json_object_get(u, "rows") : NULL;
    json_object_set_new(view, "usage", rows ? json_incref(rows) : json_array());
    json_decref(u);
    json_object_set_new(view, "updated", json_integer(cm_now_ms() / 1000));
    pthread_mutex_lock(&g->mu);
    json_decref(g->cluster);
    g->cluster = view;
    pthread_mutex_unlock(&g->mu);
}

json_t *gw_discover_cluster(gw_discover *g)
{
    if (!g) return NULL;
    pthread_mutex_lock(&g->mu);
    json_t *v = json_incref(g->cluster);
    pthread_mutex_unlock(&g->mu);
    return v;
}

static void *discover_main(void *arg)
{
    gw_discover *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        pthread_mutex_unlock(&g->mu);
        poll_once(g);
        if (g->polls++ % 5 == 0) refresh_cluster(g);
        pthread_mutex_lock(&g->mu);
        struct timespec ts;
        gw_mono_deadline(g->o.period_ms, &ts);
        while (!g->stop && pthread_cond_timedwait(&g->cv, &g->mu, &ts) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int gw_discover_start(gw_disp *d, const gw_discover_opts *o, gw_discover **out, char *err, size_t errlen)
{
    gw_discover *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    g->disp = d;
    g->o = *o;
    if (g->o.period_ms <= 0) g->o.period_ms = 1000;
    if (g->o.up_after_ms <= 0) g->o.up_after_ms = 10000;
    if (g->o.down_after_ms <= 0) g->o.down_after_ms = 60000;
    if (g->o.ttft_ms == 0) g->o.ttft_ms = 2000;
    if (!(g->token = cm_read_secret(o->token_file, err, errlen)) ||
        cm_rpc_client_open(o->commonsd, &g->rpc, err, errlen) != 0) {
        free(g->token);
        free(g);
        return -1;
    }
    int rc = gw_cond_init_mono(&g->cv); /* the polling period waits on it */
    if (rc != 0) {
        snprintf(err, errlen, "cannot make a condition variable: %s", strerror(rc));
        goto fail;
    }
    pthread_mutex_init(&g->mu, NULL);
    g->last_change = cm_mono_ms() - g->o.up_after_ms; /* free to act at once */
    if (pthread_create(&g->thread, NULL, discover_main, g) != 0) {
        snprintf(err, errlen, "cannot start the discovery thread");
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
        goto fail;
    }
    *out = g;
    return 0;
fail:
    cm_rpc_client_close(g->rpc);
    free(g->token);
    free(g);
    return -1;
}

void gw_discover_stop(gw_discover *g)
{
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    cm_rpc_client_close(g->rpc);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    json_decref(g->cluster);
    free(g->token);
    free(g);
}
