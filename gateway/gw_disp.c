/* gw_disp.c: replicas, health checks and fair admission (see gw_disp.h). */
#include "gw_disp.h"

#include "gw_clock.h"
#include "cm_log.h"
#include "cm_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HEALTH_PERIOD_MS 1000
#define WAIT_TICK_MS 50

typedef struct replica {
    gw_serve *cli;
    char model[GW_MODEL_MAX]; /* "" until the first serve.info */
    bool up;
    int slots;                /* admission limit */
    int inflight;
    int64_t n_ctx;
    int64_t held_until_ms;    /* after a busy answer: admit nothing before this ... */
    bool held;                /* ... or before one of its requests ends */
    int64_t admitted_total, busy_total, failures_total;
} replica;

typedef struct model_q {
    char name[GW_MODEL_MAX];
    gw_fairq *q;
} model_q;

typedef struct health_arg {
    struct gw_disp *d; /* NULL: no health thread runs for this replica */
    int replica;
} health_arg;

struct gw_disp {
    pthread_mutex_t mu;
    gw_disp_opts opts;
    replica *reps;
    int nreps;
    model_q *mqs;        /* one fair queue per model ever queued for */
    int nmqs;
    char **models;       /* ever reported by a replica */
    int nmodels;
    pthread_t *health;   /* one per replica */
    struct health_arg *hargs;
    int nhealth;         /* threads started */
    int first_checks;    /* threads past their first serve.info */
    bool stop;
    pthread_cond_t stop_cv;
};

int gw_disp_new(const char *const *urls, int n, const gw_disp_opts *opts, gw_disp **out,
                char *err, size_t errlen)
{
    gw_disp *d = calloc(1, sizeof *d);
    /* Fixed capacity: replicas are added at run time while other threads hold indices. */
    if (n > GW_DISP_MAX_REPLICAS) {
        free(d);
        snprintf(err, errlen, "at most %d replicas", GW_DISP_MAX_REPLICAS);
        return -1;
    }
    if (!d || !(d->reps = calloc(GW_DISP_MAX_REPLICAS, sizeof *d->reps)) ||
        !(d->health = calloc(GW_DISP_MAX_REPLICAS, sizeof *d->health)) ||
        !(d->hargs = calloc(GW_DISP_MAX_REPLICAS, sizeof *d->hargs))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    int rc = gw_cond_init_mono(&d->stop_cv); /* the health period waits on it */
    if (rc != 0) {
        snprintf(err, errlen, "cannot make a condition variable: %s", strerror(rc));
        goto fail;
    }
    pthread_mutex_init(&d->mu, NULL);
    if (opts) d->opts = *opts;
    if (d->opts.quantum <= 0) d->opts.quantum = 32;
    if (d->opts.busy_backoff_ms <= 0) d->opts.busy_backoff_ms = 200;
    for (int i = 0; i < n; i++) {
        if (gw_serve_open(urls[i], &d->reps[i].cli, err, errlen) != 0) {
            gw_disp_free(d);
            return -1;
        }
        d->nreps++;
        d->reps[i].slots = 1;
    }
    *out = d;
    return 0;
fail:
    if (d) {
        free(d->reps);
        free(d->health);
        free(d->hargs);
    }
    free(d);
    return -1;
}

static model_q *find_mq(gw_disp *d, const char *model, bool create)
{
    for (int i = 0; i < d->nmqs; i++)
        if (strcmp(d->mqs[i].name, model) == 0) return &d->mqs[i];
    if (!create) return NULL;
    model_q *m = realloc(d->mqs, (size_t)(d->nmqs + 1) * sizeof *m);
    if (!m) return NULL;
    d->mqs = m;
    m = &d->mqs[d->nmqs];
    snprintf(m->name, sizeof m->name, "%s", model);
    if (!(m->q = gw_fairq_new(d->opts.quantum))) return NULL;
    d->nmqs++;
    return m;
}

static void remember_model(gw_disp *d, const char *model)
{
    for (int i = 0; i < d->nmodels; i++)
        if (strcmp(d->models[i], model) == 0) return;
    char **m = realloc(d->models, (size_t)(d->nmodels + 1) * sizeof *m);
    if (!m) return;
    d->models = m;
    if ((m[d->nmodels] = strdup(model))) d->nmodels++;
}

/* Admits queued jobs while some replica of their model has room. Locked. */
static void admit_locked(gw_disp *d)
{
    int64_t now = cm_mono_ms();
    for (int m = 0; m < d->nmqs; m++) {
        model_q *mq = &d->mqs[m];
        while (gw_fairq_len(mq->q) > 0) {
            int best = -1;
            double best_load = 0;
            for (int r = 0; r < d->nreps; r++) {
                replica *rp = &d->reps[r];
                if (!rp->up || strcmp(rp->model, mq->name) != 0 || rp->inflight >= rp->slots)
                    continue;
                if (rp->held && now < rp->held_until_ms) continue;
                rp->held = false;
                double load = (double)rp->inflight / rp->slots;
                if (best < 0 || load < best_load) {
                    best = r;
                    best_load = load;
                }
            }
            if (best < 0) break;
            gw_job *j = (gw_job *)gw_fairq_pop(mq->q); /* item is the first member */
            j->replica = best;
            j->admitted = true;
            d->reps[best].inflight++;
            d->reps[best].admitted_total++;
            pthread_cond_signal(&j->cv);
        }
    }
}

/* One serve.info call to replica i (made without the lock). */
static void health_check(gw_disp *d, int i)
{
    json_t *req = json_pack("{s:s}", "type", "serve.info"), *rep = NULL;
    char err[256];
    int rc = gw_serve_call(d->reps[i].cli, req, &rep, 2000, err, sizeof err);
    json_decref(req);
    const char *model = rc == 0 ? json_string_value(json_object_get(rep, "model")) : NULL;
    bool ok = rc == 0 && json_is_true(json_object_get(rep, "ok")) && model && *model &&
              strlen(model) < GW_MODEL_MAX;
    pthread_mutex_lock(&d->mu);
    replica *r = &d->reps[i];
    if (ok) {
        if (!r->up) cm_info("serve replica %s is up (model %s)", gw_serve_url(r->cli), model);
        r->up = true;
        snprintf(r->model, sizeof r->model, "%s", model);
        remember_model(d, model);
        json_int_t mb = json_integer_value(json_object_get(rep, "max_batch"));
        r->slots = d->opts.slots > 0 ? d->opts.slots : mb > 0 ? (int)mb : 1;
        r->n_ctx = json_integer_value(json_object_get(rep, "n_ctx"));
        admit_locked(d);
    } else {
        if (r->up)
            cm_warn("serve replica %s is down: %s", gw_serve_url(r->cli),
                    rc == 0 ? "serve.info reply without ok and a model" : err);
        r->up = false;
    }
    pthread_mutex_unlock(&d->mu);
    json_decref(rep);
}

static void gw_disp_stop_health(gw_disp *d);


/* One thread per replica, so a replica that does not answer (2 s timeout)
 * never delays what the gateway learns about the others. */
static void *health_main(void *arg)
{
    gw_disp *d = ((health_arg *)arg)->d;
    int i = ((health_arg *)arg)->replica;
    bool first = false;
    pthread_mutex_lock(&d->mu);
    while (!d->stop) {
        pthread_mutex_unlock(&d->mu);
        health_check(d, i);
        pthread_mutex_lock(&d->mu);
        if (!first) {
            first = true;
            d->first_checks++;
            pthread_cond_broadcast(&d->stop_cv);
        }
        struct timespec ts;
        gw_mono_deadline(HEALTH_PERIOD_MS, &ts);
        while (!d->stop && pthread_cond_timedwait(&d->stop_cv, &d->mu, &ts) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

int gw_disp_start(gw_disp *d)
{
    for (int i = 0; i < d->nreps; i++) {
        d->hargs[i] = (health_arg){d, i};
        if (pthread_create(&d->health[i], NULL, health_main, &d->hargs[i]) != 0) {
            d->hargs[i].d = NULL;
            gw_disp_stop_health(d);
            return -1;
        }
        d->nhealth++;
    }
    /* Start serving knowing which replicas are up (each first check in parallel). */
    pthread_mutex_lock(&d->mu);
    while (d->first_checks < d->nhealth) pthread_cond_wait(&d->stop_cv, &d->mu);
    pthread_mutex_unlock(&d->mu);
    return 0;
}

int gw_disp_add(gw_disp *d, const char *url, char *err, size_t errlen)
{
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->nreps; i++)
        if (strcmp(gw_serve_url(d->reps[i].cli), url) == 0) {
            pthread_mutex_unlock(&d->mu);
            return 0;
        }
    int full = d->nreps >= GW_DISP_MAX_REPLICAS || d->stop;
    pthread_mutex_unlock(&d->mu);
    if (full) {
        snprintf(err, errlen, "cannot add replica %s: at most %d replicas", url, GW_DISP_MAX_REPLICAS);
        return -1;
    }
    gw_serve *cli;
    if (gw_serve_open(url, &cli, err, errlen) != 0) return -1;
    /* Only the discovery thread adds, so the slot taken here stays ours. */
    pthread_mutex_lock(&d->mu);
    int i = d->nreps;
    memset(&d->reps[i], 0, sizeof d->reps[i]);
    d->reps[i].cli = cli;
    d->reps[i].slots = 1;
    d->hargs[i] = (health_arg){d, i};
    d->nreps++;
    pthread_mutex_unlock(&d->mu);
    if (pthread_create(&d->health[i], NULL, health_main, &d->hargs[i]) != 0) {
        d->hargs[i].d = NULL; /* never up, never joined */
        snprintf(err, errlen, "cannot start the health thread of %s", url);
        return -1;
    }
    pthread_mutex_lock(&d->mu);
    d->nhealth++;
    pthread_mutex_unlock(&d->mu);
    cm_info("serve replica %s added", url);
    return 1;
}

void gw_disp_load(gw_disp *d, int *queued, int *inflight, int *slots)
{
    pthread_mutex_lock(&d->mu);
    *queued = *inflight = *slots = 0;
    for (int m = 0; m < d->nmqs; m++) *queued += (int)gw_fairq_len(d->mqs[m].q);
    for (int r = 0; r < d->nreps; r++) {
        if (!d->reps[r].up) continue;
        *inflight += d->reps[r].inflight;
        *slots += d->reps[r].slots;
    }
    pthread_mutex_unlock(&d->mu);
}

static void gw_disp_stop_health(gw_disp *d)
{
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    pthread_cond_broadcast(&d->stop_cv);
    pthread_mutex_unlock(&d->mu);
    /* A replica's health thread exists exactly when its hargs point at d. */
    for (int i = 0; i < d->nreps; i++)
        if (d->hargs[i].d) {
            pthread_join(d->health[i], NULL);
            d->hargs[i].d = NULL;
        }
    d->nhealth = 0;
}

void gw_disp_free(gw_disp *d)
{
    if (!d) return;
    gw_disp_stop_health(d);
    free(d->health);
    free(d->hargs);
    for (int i = 0; i < d->nreps; i++) gw_serve_close(d->reps[i].cli);
    for (int i = 0; i < d->nmqs; i++) gw_fairq_free(d->mqs[i].q);
    for (int i = 0; i < d->nmodels; i++) free(d->models[i]);
    free(d->models);
    free(d->mqs);
    free(d->reps);
    pthread_cond_destroy(&d->stop_cv);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

int gw_disp_models(gw_disp *d, char ***names, int *n)
{
    pthread_mutex_lock(&d->mu);
    *n = 0;
    *names = calloc((size_t)d->nmodels + 1, sizeof **names);
    int rc = *names ? 0 : -1;
    for (int i = 0; rc == 0 && i < d->nmodels; i++)
        if (((*names)[i] = strdup(d->models[i]))) (*n)++;
    pthread_mutex_unlock(&d->mu);
    return rc;
}

int gw_disp_model_state(gw_disp *d, const char *model)
{
    pthread_mutex_lock(&d->mu);
    int state = d->nmodels ? -1 : -2;
    for (int i = 0; i < d->nmodels; i++)
        if (strcmp(d->models[i], model) == 0) state = 0;
    for (int r = 0; r < d->nreps; r++)
        if (d->reps[r].up && strcmp(d->reps[r].model, model) == 0) state = 1;
    pthread_mutex_unlock(&d->mu);
    return state;
}

int64_t gw_disp_model_ctx(gw_disp *d, const char *model)
{
    pthread_mutex_lock(&d->mu);
    int64_t n = 0;
    for (int r = 0; r < d->nreps; r++)
        if (strcmp(d->reps[r].model, model) == 0 && d->reps[r].n_ctx > n) n = d->reps[r].n_ctx;
    pthread_mutex_unlock(&d->mu);
    return n;
}

int gw_job_init(gw_job *j)
{
    memset(j, 0, sizeof *j);
    j->replica = -1;
    return gw_cond_init_mono(&j->cv); /* gw_disp_wait's tick waits on it */
}

void gw_job_destroy(gw_job *j) { pthread_cond_destroy(&j->cv); }

int gw_disp_enqueue(gw_disp *d, gw_job *j, const char *flow, int64_t cost)
{
    pthread_mutex_lock(&d->mu);
    model_q *mq = find_mq(d, j->model, true);
    int rc = mq && gw_fairq_push(mq->q, flow, &j->item, cost) == 0 ? GW_DISP_OK : GW_DISP_ENOMEM;
    if (rc == GW_DISP_OK) {
        j->admitted = false;
        j->replica = -1;
        admit_locked(d);
    }
    pthread_mutex_unlock(&d->mu);
    return rc;
}

int gw_disp_wait(gw_disp *d, gw_job *j, int64_t deadline_ms, bool (*gone)(void *), void *ctx)
{
    pthread_mutex_lock(&d->mu);
    int rc = GW_DISP_OK;
    while (!j->admitted) {
        int64_t now = cm_mono_ms();
        if (now >= deadline_ms) rc = GW_DISP_TIMEOUT;
        else if (gone && gone(ctx)) rc = GW_DISP_GONE;
        if (rc != GW_DISP_OK) {
            model_q *mq = find_mq(d, j->model, false);
            if (mq) gw_fairq_remove(mq->q, &j->item);
            break;
        }
        /* Wake on admission, or every tick to re-check held replicas, the
         * deadline and the client's socket. */
        int64_t wait = deadline_ms - now < WAIT_TICK_MS ? deadline_ms - now : WAIT_TICK_MS;
        struct timespec ts;
        gw_mono_deadline(wait, &ts);
        pthread_cond_timedwait(&j->cv, &d->mu, &ts);
        if (!j->admitted) admit_locked(d);
    }
    pthread_mutex_unlock(&d->mu);
    return rc;
}

void gw_disp_busy(gw_disp *d, gw_job *j)
{
    pthread_mutex_lock(&d->mu);
    if (j->replica >= 0) {
        replica *r = &d->reps[j->replica];
        r->inflight--;
        r->busy_total++;
        r->held = true;
        r->held_until_ms = cm_mono_ms() + d->opts.busy_backoff_ms;
    }
    j->replica = -1;
    j->admitted = false;
    model_q *mq = find_mq(d, j->model, false);
    if (mq) gw_fairq_unpop(mq->q, &j->item);
    admit_locked(d);
    pthread_mutex_unlock(&d->mu);
}

void gw_disp_release(gw_disp *d, gw_job *j, bool failed)
{
    pthread_mutex_lock(&d->mu);
    if (j->replica >= 0) {
        replica *r = &d->reps[j->replica];
        r->inflight--;
        r->held = false; /* room was made: try it again */
        if (failed) {
            r->failures_total++;
            if (r->up) cm_warn("serve replica %s marked down after a failed call", gw_serve_url(r->cli));
            r->up = false;
        }
    }
    j->replica = -1;
    j->admitted = false;
    admit_locked(d);
    pthread_mutex_unlock(&d->mu);
}

gw_serve *gw_disp_serve(gw_disp *d, const gw_job *j) { return d->reps[j->replica].cli; }

static void queue_totals(gw_disp *d, size_t *queued, size_t *flows)
{
    *queued = *flows = 0;
    for (int i = 0; i < d->nmqs; i++) {
        *queued += gw_fairq_len(d->mqs[i].q);
        *flows += gw_fairq_flows(d->mqs[i].q);
    }
}

json_t *gw_disp_status(gw_disp *d)
{
    pthread_mutex_lock(&d->mu);
    size_t queued, flows;
    queue_totals(d, &queued, &flows);
    json_t *reps = json_array();
    for (int i = 0; reps && i < d->nreps; i++) {
        replica *r = &d->reps[i];
        json_array_append_new(reps, json_pack("{s:s, s:s, s:b, s:i, s:i}", "url",
                                              gw_serve_url(r->cli), "model", r->model, "up", r->up,
                                              "slots", r->slots, "inflight", r->inflight));
    }
    pthread_mutex_unlock(&d->mu);
    return reps ? json_pack("{s:I, s:I, s:o}", "queued", (json_int_t)queued, "flows",
                            (json_int_t)flows, "replicas", reps)
                : NULL;
}

void gw_disp_metrics(gw_disp *d, FILE *f)
{
    pthread_mutex_lock(&d->mu);
    size_t queued, flows;
    queue_totals(d, &queued, &flows);
    fprintf(f, "# HELP commons_gateway_queued_requests Requests waiting for a serve replica.\n"
               "# TYPE commons_gateway_queued_requests gauge\n"
               "commons_gateway_queued_requests %zu\n"
               "# HELP commons_gateway_queued_flows Citizens with waiting requests.\n"
               "# TYPE commons_gateway_queued_flows gauge\n"
               "commons_gateway_queued_flows %zu\n", queued, flows);
    static const char *names[] = {"up", "inflight", "slots", "admitted_total", "busy_total",
                                  "failures_total"};
    for (int k = 0; k < 6; k++) {
        fprintf(f, "# TYPE commons_gateway_replica_%s %s\n", names[k],
                k < 3 ? "gauge" : "counter");
        for (int i = 0; i < d->nreps; i++) {
            replica *r = &d->reps[i];
            int64_t v[] = {r->up, r->inflight, r->slots, r->admitted_total, r->busy_total,
                           r->failures_total};
            fprintf(f, "commons_gateway_replica_%s{replica=\"%s\",model=\"%s\"} %lld\n", names[k],
                    gw_serve_url(r->cli), r->model, (long long)v[k]);
        }
    }
    pthread_mutex_unlock(&d->mu);
}
