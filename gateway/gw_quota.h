/* gw_quota.h: per-citizen limits of a policy tier, enforced in memory.
 *
 * One entry per principal ("key:ID" or "anon:ADDRESS"). begin() admits a
 * request or says why not and when to retry; end() settles it. Limits (from
 * the tier, QUOTA_UNLIMITED = -1 for none):
 *  - requests_per_minute: at most N requests began in any sliding 60 s;
 *  - concurrent_requests: at most N begun and not yet ended (queued or running);
 *  - tokens_per_day: tokens charged this UTC day plus tokens reserved by
 *    requests in flight (their estimate: prompt + max_tokens) plus this
 *    request's estimate must fit; end() swaps the reservation for the actual
 *    count. Tokens already charged today come from a caller callback the first
 *    time a principal is seen each day (the key store), so a restart does not
 *    reset a key's budget.
 * Two clocks: wall_ms (Unix ms) names the UTC day, a date people see;
 * mono_ms (CLOCK_MONOTONIC ms, cm_mono_ms) measures the sliding minute and the
 * idle time after which a principal is forgotten, so a step of the wall clock
 * neither blocks a citizen for the length of the step nor lifts the rate limit.
 * Thread-safe.
 */
#ifndef GW_QUOTA_H
#define GW_QUOTA_H

#include <stdint.h>

typedef struct gw_limits {
    int64_t tokens_per_day, requests_per_minute, max_tokens_per_request, concurrent_requests;
} gw_limits;

typedef enum gw_quota_why {
    GW_QUOTA_OK = 0,
    GW_QUOTA_RATE,        /* requests per minute */
    GW_QUOTA_CONCURRENCY, /* requests in flight */
    GW_QUOTA_TOKENS       /* tokens per day */
} gw_quota_why;

typedef struct gw_quota_verdict {
    gw_quota_why why;
    int64_t retry_after_s; /* >= 1 when refused */
    char message[256];     /* for the 429 body */
} gw_quota_verdict;

/* Tokens charged to principal on UTC day (Unix seconds / 86400). */
typedef int64_t (*gw_quota_loader)(void *ctx, const char *principal, int64_t day);

typedef struct gw_quota gw_quota;

gw_quota *gw_quota_new(gw_quota_loader load, void *ctx); /* load may be NULL: start at 0 */
void gw_quota_free(gw_quota *q);

/* Admits (counting the request and reserving est_tokens) or refuses. */
gw_quota_why gw_quota_begin(gw_quota *q, const char *principal, const gw_limits *lim,
                            int64_t est_tokens, int64_t wall_ms, int64_t mono_ms,
                            gw_quota_verdict *v);

/* Settles a begun request: releases its slot and reservation, charges actual. */
void gw_quota_end(gw_quota *q, const char *principal, int64_t reserved, int64_t actual_tokens,
                  int64_t wall_ms, int64_t mono_ms);

#endif
