/* gw_quota.c: sliding-minute request log, concurrency and daily token budget
 * per principal (see gw_quota.h). */
#include "gw_quota.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 4096
#define RATE_LOG_MAX 100000 /* a larger requests_per_minute is not enforced exactly */
#define MAX_ENTRIES 100000  /* beyond this, idle principals are forgotten (see sweep) */
#define IDLE_MS (3600 * 1000)

typedef struct entry {
    struct entry *next;
    char *name;
    int64_t day;       /* UTC day of tokens */
    int64_t tokens;    /* charged on day */
    int64_t reserved;  /* estimates of requests in flight */
    int64_t inflight;
    int64_t *log;      /* begin times (monotonic ms), ring of logcap */
    int64_t logcap, loghead, logn;
    int64_t last_ms;   /* last begin or end (monotonic ms) */
} entry;

struct gw_quota {
    pthread_mutex_t mu;
    entry *buckets[NBUCKETS];
    size_t count;
    gw_quota_loader load;
    void *ctx;
};

gw_quota *gw_quota_new(gw_quota_loader load, void *ctx)
{
    gw_quota *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    pthread_mutex_init(&q->mu, NULL);
    q->load = load;
    q->ctx = ctx;
    return q;
}

void gw_quota_free(gw_quota *q)
{
    if (!q) return;
    for (int i = 0; i < NBUCKETS; i++) {
        for (entry *e = q->buckets[i], *n; e; e = n) {
            n = e->next;
            free(e->name);
            free(e->log);
            free(e);
        }
    }
    pthread_mutex_destroy(&q->mu);
    free(q);
}

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h % NBUCKETS;
}

/* Many distinct anonymous addresses must not grow memory without bound:
 * principals with nothing in flight and silent for an hour are dropped. A key
 * dropped this way reloads its day's tokens from the store when it returns;
 * an anonymous address starts again from zero (documented in docs/gateway.md). */
static void sweep(gw_quota *q, int64_t mono_ms)
{
    for (int i = 0; i < NBUCKETS; i++) {
        entry **pp = &q->buckets[i];
        while (*pp) {
            entry *e = *pp;
            if (e->inflight == 0 && e->last_ms < mono_ms - IDLE_MS) {
                *pp = e->next;
                free(e->name);
                free(e->log);
                free(e);
                q->count--;
            } else {
                pp = &e->next;
            }
        }
    }
}

static entry *get(gw_quota *q, const char *name, int64_t mono_ms)
{
    unsigned b = hash(name);
    for (entry *e = q->buckets[b]; e; e = e->next)
        if (strcmp(e->name, name) == 0) return e;
    if (q->count >= MAX_ENTRIES) sweep(q, mono_ms);
    entry *e = calloc(1, sizeof *e);
    if (!e || !(e->name = strdup(name))) {
        free(e);
        return NULL;
    }
    e->day = -1;
    e->next = q->buckets[b];
    q->buckets[b] = e;
    q->count++;
    return e;
}

/* Rolls the token count over to today (loading what is already charged). */
static void roll_day(gw_quota *q, entry *e, const char *name, int64_t day)
{
    if (e->day == day) return;
    e->day = day;
    e->tokens = q->load ? q->load(q->ctx, name, day) : 0;
}

static int64_t secs_to_midnight(int64_t wall_ms)
{
    int64_t s = 86400 - (wall_ms / 1000) % 86400;
    return s < 1 ? 1 : s;
}

gw_quota_why gw_quota_begin(gw_quota *q, const char *principal, const gw_limits *lim,
                            int64_t est_tokens, int64_t wall_ms, int64_t mono_ms,
                            gw_quota_verdict *v)
{
    memset(v, 0, sizeof *v);
    pthread_mutex_lock(&q->mu);
    entry *e = get(q, principal, mono_ms);
    if (!e) {
        /* Out of memory: refusing briefly is safer than admitting unmetered. */
        v->why = GW_QUOTA_CONCURRENCY;
        v->retry_after_s = 1;
        snprintf(v->message, sizeof v->message, "the gateway is out of memory; retry shortly");
        goto out;
    }
    int64_t day = wall_ms / 1000 / 86400;
    roll_day(q, e, principal, day);
    e->last_ms = mono_ms;

    if (lim->concurrent_requests >= 0 && e->inflight >= lim->concurrent_requests) {
        v->why = GW_QUOTA_CONCURRENCY;
        v->retry_after_s = 1;
        snprintf(v->message, sizeof v->message,
                 "too many concurrent requests: your tier allows %lld at a time; wait for one to finish",
                 (long long)lim->concurrent_requests);
        goto out;
    }
    int64_t rpm = lim->requests_per_minute;
    if (rpm >= 0) {
        if (rpm > RATE_LOG_MAX) rpm = RATE_LOG_MAX;
        if (e->logcap != rpm) {
            /* First use or the policy changed: start a fresh log of that size. */
            free(e->log);
            e->log = rpm ? calloc((size_t)rpm, sizeof *e->log) : NULL;
            e->logcap = rpm;
            e->loghead = e->logn = 0;
        }
        /* Forget begins older than a minute. */
        while (e->logn > 0 && e->log[e->loghead] <= mono_ms - 60000) {
            e->loghead = (e->loghead + 1) % e->logcap;
            e->logn--;
        }
        if (e->logn >= rpm) {
            int64_t wait_ms = rpm ? e->log[e->loghead] + 60000 - mono_ms : 60000;
            v->why = GW_QUOTA_RATE;
            v->retry_after_s = wait_ms <= 1000 ? 1 : (wait_ms + 999) / 1000;
            snprintf(v->message, sizeof v->message,
                     "rate limit reached: your tier allows %lld requests per minute",
                     (long long)lim->requests_per_minute);
            goto out;
        }
    }
    if (lim->tokens_per_day >= 0 && e->tokens + e->reserved + est_tokens > lim->tokens_per_day) {
        v->why = GW_QUOTA_TOKENS;
        /* Tokens held by requests in flight come back soon; the day's charge at midnight. */
        v->retry_after_s = e->tokens + est_tokens <= lim->tokens_per_day ? 1
                                                                         : secs_to_midnight(wall_ms);
        snprintf(v->message, sizeof v->message,
                 "daily token quota reached: %lld of %lld tokens used today (UTC), this request "
                 "may need %lld (prompt + max_tokens)",
                 (long long)(e->tokens + e->reserved), (long long)lim->tokens_per_day,
                 (long long)est_tokens);
        goto out;
    }
    e->inflight++;
    e->reserved += est_tokens;
    if (rpm > 0) {
        e->log[(e->loghead + e->logn) % e->logcap] = mono_ms;
        e->logn++;
    }
out:
    pthread_mutex_unlock(&q->mu);
    return v->why;
}

void gw_quota_end(gw_quota *q, const char *principal, int64_t reserved, int64_t actual_tokens,
                  int64_t wall_ms, int64_t mono_ms)
{
    pthread_mutex_lock(&q->mu);
    entry *e = get(q, principal, mono_ms);
    if (e) {
        e->last_ms = mono_ms;
        if (e->inflight > 0) e->inflight--;
        e->reserved -= reserved;
        if (e->reserved < 0) e->reserved = 0;
        roll_day(q, e, principal, wall_ms / 1000 / 86400);
        e->tokens += actual_tokens;
    }
    pthread_mutex_unlock(&q->mu);
}
