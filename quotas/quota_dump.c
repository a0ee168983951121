/* quota_dump.c: canonical JSON text of a loaded policy (quota_policy_dump).
 *
 * Fixed key order and number formats, so equal policies dump to equal text.
 * Written with libc only; the caller may parse it back with any JSON library. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quota_policy.h"

typedef struct buf {
    char *s;
    size_t len, cap;
    bool oom;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        /* b->s is NULL before the first growth: no pointer arithmetic on it then. */
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

static void str(buf *b, const char *s)
{
    put(b, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            put(b, "\\%c", *c);
        else if (*c < 0x20)
            put(b, "\\u%04x", *c);
        else
            put(b, "%c", *c);
    }
    put(b, "\"");
}

/* %.17g round-trips doubles; integers print without a fraction. */
static void num(buf *b, double x)
{
    put(b, "%.17g", x);
}

static void limits(buf *b, const quota_limits *l)
{
    static const char *const per[] = {"day", "week", "month"};
    put(b, "{\"max_running_cpus\":%lld,\"max_running_gpus\":%lld,\"max_running_memory\":%lld,"
           "\"max_running_jobs\":%lld,\"max_queued_jobs\":%lld,\"max_wall\":%lld,",
        (long long)l->max_running_cpus, (long long)l->max_running_gpus,
        (long long)l->max_running_mem, (long long)l->max_running_jobs,
        (long long)l->max_queued_jobs, (long long)l->max_wall);
    put(b, "\"budget\":{\"period\":\"%s\",\"cpu_hours\":", per[l->budget_period]);
    num(b, l->cpu_hours);
    put(b, ",\"gpu_hours\":");
    num(b, l->gpu_hours);
    put(b, "}}");
}

static void accounts(buf *b, const quota_policy *p)
{
    put(b, "\"accounts\":[");
    for (int i = 0; i < p->naccounts; i++) {
        const quota_account *a = &p->accounts[i];
        put(b, "%s{\"name\":", i ? "," : "");
        str(b, a->name);
        put(b, ",\"parent\":");
        if (a->parent >= 0)
            str(b, p->accounts[a->parent].name);
        else
            put(b, "null");
        put(b, ",\"depth\":%d,\"shares\":%lld,\"description\":", a->depth, (long long)a->shares);
        str(b, a->description);
        put(b, ",\"limits\":");
        limits(b, &a->limits);
        put(b, "}");
    }
    put(b, "]");
}

static void users(buf *b, const quota_policy *p)
{
    put(b, "\"users\":[");
    for (int i = 0; i < p->nusers; i++) {
        const quota_user *u = &p->users[i];
        put(b, "%s{\"name\":", i ? "," : "");
        str(b, u->name);
        put(b, ",\"default_account\":");
        str(b, u->default_account >= 0 ? p->accounts[u->default_account].name : "");
        put(b, ",\"accounts\":[");
        for (int k = 0; k < u->naccounts; k++) {
            put(b, "%s", k ? "," : "");
            str(b, p->accounts[u->accounts[k]].name);
        }
        put(b, "],\"admin\":%s,\"unix_user\":", u->admin ? "true" : "false");
        str(b, u->unix_user ? u->unix_user : "");
        put(b, "}");
    }
    put(b, "]");
}

static void qos(buf *b, const quota_policy *p)
{
    put(b, "\"qos\":[");
    for (int i = 0; i < p->nqos; i++) {
        const quota_qos *q = &p->qos[i];
        put(b, "%s{\"name\":", i ? "," : "");
        str(b, q->name);
        put(b, ",\"priority\":%lld,\"max_wall\":%lld,\"usage_factor\":", (long long)q->priority,
            (long long)q->max_wall);
        num(b, q->usage_factor);
        put(b, ",\"preemptible\":%s,\"preempt_mode\":\"%s\",\"preempt\":[",
            q->preemptible ? "true" : "false",
            q->preempt_mode == QUOTA_PREEMPT_CANCEL ? "cancel" : "requeue");
        for (int k = 0; k < q->npreempts; k++) {
            put(b, "%s", k ? "," : "");
            str(b, p->qos[q->preempts[k]].name);
        }
        put(b, "]}");
    }
    put(b, "],\"default_qos\":");
    str(b, p->default_qos >= 0 ? p->qos[p->default_qos].name : "");
}

static void citizens(buf *b, const quota_policy *p)
{
    put(b, "\"citizens\":{\"tiers\":[");
    for (int i = 0; i < p->ntiers; i++) {
        const quota_tier *t = &p->tiers[i];
        put(b, "%s{\"name\":", i ? "," : "");
        str(b, t->name);
        put(b, ",\"tokens_per_day\":%lld,\"requests_per_minute\":%lld,"
               "\"max_tokens_per_request\":%lld,\"concurrent_requests\":%lld}",
            (long long)t->tokens_per_day, (long long)t->requests_per_minute,
            (long long)t->max_tokens_per_request, (long long)t->concurrent_requests);
    }
    put(b, "],\"default_tier\":");
    if (p->default_tier >= 0)
        str(b, p->tiers[p->default_tier].name);
    else
        put(b, "null");
    put(b, ",\"anonymous_tier\":");
    if (p->anonymous_tier >= 0)
        str(b, p->tiers[p->anonymous_tier].name);
    else
        put(b, "null");
    put(b, "}");
}

char *quota_policy_dump(const quota_policy *p)
{
    if (!p)
        return NULL;
    buf b = {0};
    put(&b, "{\"version\":1,\"cluster\":");
    str(&b, p->cluster ? p->cluster : "");
    put(&b, ",\"billing\":{\"cpu\":");
    num(&b, p->billing.cpu);
    put(&b, ",\"gpu\":");
    num(&b, p->billing.gpu);
    put(&b, ",\"mem_per_gb\":");
    num(&b, p->billing.mem_per_gb);
    put(&b, "},\"usage\":{\"decay_half_life\":%lld},", (long long)p->decay_half_life);
    put(&b, "\"priority\":{\"weights\":{\"fairshare\":");
    num(&b, p->priority.fairshare);
    put(&b, ",\"age\":");
    num(&b, p->priority.age);
    put(&b, ",\"job_size\":");
    num(&b, p->priority.job_size);
    put(&b, ",\"qos\":");
    num(&b, p->priority.qos);
    put(&b, "},\"max_age\":%lld,\"favor_small\":%s},", (long long)p->priority.max_age,
        p->priority.favor_small ? "true" : "false");
    qos(&b, p);
    put(&b, ",");
    accounts(&b, p);
    put(&b, ",");
    users(&b, p);
    put(&b, ",");
    citizens(&b, p);
    put(&b, "}\n");
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
