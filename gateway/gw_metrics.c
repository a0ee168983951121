/* gw_metrics.c: fixed tables of labelled counters (see gw_metrics.h). */
#include "gw_metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERIES 64
#define LABEL_MAX 32

typedef struct series {
    char a[LABEL_MAX];
    int b;
    int64_t n;
} series;

static const double TTFT_BOUNDS[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define NBOUNDS (sizeof TTFT_BOUNDS / sizeof TTFT_BOUNDS[0])

struct gw_metrics {
    pthread_mutex_t mu;
    series requests[MAX_SERIES];
    int nrequests;
    series rejects[MAX_SERIES];
    int nrejects;
    int64_t prompt_tokens, completion_tokens;
    int64_t ttft_buckets[NBOUNDS];
    int64_t ttft_count;
    double ttft_sum;
};

gw_metrics *gw_metrics_new(void)
{
    gw_metrics *m = calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->mu, NULL);
    return m;
}

void gw_metrics_free(gw_metrics *m)
{
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static void bump(series *t, int *n, const char *a, int b)
{
    for (int i = 0; i < *n; i++)
        if (t[i].b == b && strcmp(t[i].a, a) == 0) {
            t[i].n++;
            return;
        }
    if (*n == MAX_SERIES) return;
    snprintf(t[*n].a, LABEL_MAX, "%s", a);
    t[*n].b = b;
    t[*n].n = 1;
    (*n)++;
}

void gw_metrics_request(gw_metrics *m, const char *route, int status)
{
    pthread_mutex_lock(&m->mu);
    bump(m->requests, &m->nrequests, route, status);
    pthread_mutex_unlock(&m->mu);
}

void gw_metrics_reject(gw_metrics *m, const char *reason)
{
    pthread_mutex_lock(&m->mu);
    bump(m->rejects, &m->nrejects, reason, 0);
    pthread_mutex_unlock(&m->mu);
}

void gw_metrics_tokens(gw_metrics *m, int64_t prompt, int64_t completion)
{
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += prompt;
    m->completion_tokens += completion;
    pthread_mutex_unlock(&m->mu);
}

void gw_metrics_ttft(gw_metrics *m, double seconds)
{
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < NBOUNDS; i++)
        if (seconds <= TTFT_BOUNDS[i]) m->ttft_buckets[i]++;
    m->ttft_count++;
    m->ttft_sum += seconds;
    pthread_mutex_unlock(&m->mu);
}

void gw_metrics_summary(gw_metrics *m, int64_t *generations, int64_t *completion_tokens, double *mean_ttft)
{
    pthread_mutex_lock(&m->mu);
    *generations = m->ttft_count;
    *completion_tokens = m->completion_tokens;
    *mean_ttft = m->ttft_count ? m->ttft_sum / (double)m->ttft_count : 0;
    pthread_mutex_unlock(&m->mu);
}

void gw_metrics_write(gw_metrics *m, FILE *f)
{
    pthread_mutex_lock(&m->mu);
    fprintf(f, "# HELP commons_gateway_requests_total HTTP requests answered, by route and status.\n"
               "# TYPE commons_gateway_requests_total counter\n");
    for (int i = 0; i < m->nrequests; i++)
        fprintf(f, "commons_gateway_requests_total{route=\"%s\",code=\"%d\"} %lld\n",
                m->requests[i].a, m->requests[i].b, (long long)m->requests[i].n);
    fprintf(f, "# HELP commons_gateway_rejected_total Requests refused, by reason.\n"
               "# TYPE commons_gateway_rejected_total counter\n");
    for (int i = 0; i < m->nrejects; i++)
        fprintf(f, "commons_gateway_rejected_total{reason=\"%s\"} %lld\n", m->rejects[i].a,
                (long long)m->rejects[i].n);
    fprintf(f, "# HELP commons_gateway_tokens_total Tokens of finished generations.\n"
               "# TYPE commons_gateway_tokens_total counter\n"
               "commons_gateway_tokens_total{kind=\"prompt\"} %lld\n"
               "commons_gateway_tokens_total{kind=\"completion\"} %lld\n",
            (long long)m->prompt_tokens, (long long)m->completion_tokens);
    fprintf(f, "# HELP commons_gateway_ttft_seconds Time from arrival to the first token.\n"
               "# TYPE commons_gateway_ttft_seconds histogram\n");
    for (size_t i = 0; i < NBOUNDS; i++)
        fprintf(f, "commons_gateway_ttft_seconds_bucket{le=\"%g\"} %lld\n", TTFT_BOUNDS[i],
                (long long)m->ttft_buckets[i]);
    fprintf(f, "commons_gateway_ttft_seconds_bucket{le=\"+Inf\"} %lld\n"
               "commons_gateway_ttft_seconds_sum %g\n"
               "commons_gateway_ttft_seconds_count %lld\n",
            (long long)m->ttft_count, m->ttft_sum, (long long)m->ttft_count);
    pthread_mutex_unlock(&m->mu);
}
