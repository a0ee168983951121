/* gw_metrics.h: the gateway's counters, exposed by GET /metrics in
 * Prometheus text format. Thread-safe; recording never fails (a counter that
 * does not fit the fixed table is dropped from the output, not the request). */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <stdint.h>
#include <stdio.h>

typedef struct gw_metrics gw_metrics;

gw_metrics *gw_metrics_new(void);
void gw_metrics_free(gw_metrics *m);

/* One answered HTTP request: route label ("chat", "completions", "models",
 * "health", "metrics", "other") and status code. */
void gw_metrics_request(gw_metrics *m, const char *route, int status);
/* Tokens of a finished generation. */
void gw_metrics_tokens(gw_metrics *m, int64_t prompt, int64_t completion);
/* A refusal by reason ("rate", "concurrency", "tokens", "auth", "queue_timeout", ...). */
void gw_metrics_reject(gw_metrics *m, const char *reason);
/* Time from admission request to first token, seconds. */
void gw_metrics_ttft(gw_metrics *m, double seconds);

void gw_metrics_write(gw_metrics *m, FILE *f);
/* For the status page: generations so far, tokens, and mean time to first token (s). */
void gw_metrics_summary(gw_metrics *m, int64_t *generations, int64_t *completion_tokens, double *mean_ttft);

#endif
