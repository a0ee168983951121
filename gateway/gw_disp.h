/* gw_disp.h: the serve replicas and admission to them through fair queues.
 *
 * A request that passed its quota waits in its model's fair queue (DRR on
 * tokens across citizens, gw_fairq.h) until a replica of that model has room;
 * then it is admitted to the least loaded such replica (fewest in flight per
 * slot). A replica's slots are its serve.info max_batch (or --replica-slots),
 * so the gateway never stacks more on a replica than it can batch: the order
 * in which citizens get the engine is decided here, not by serve's FIFO. When
 * serve still answers "busy" (no KV room), the request goes back to the head of
 * its flow and the replica takes no more until one of its requests ends (or a
 * short back-off passes). A health thread per replica polls serve.info every second; a
 * replica that fails a call is marked down until it answers again.
 *
 * Thread-safe. Request threads block in gw_disp_wait(); nothing else blocks.
 */
#ifndef GW_DISP_H
#define GW_DISP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "gw_fairq.h"
#include "gw_serve.h"

#define GW_MODEL_MAX 128
#define GW_DISP_MAX_REPLICAS 256 /* --serve replicas plus those learned from commonsd */

typedef struct gw_disp gw_disp;

typedef struct gw_job {
    gw_fq_item item;           /* private */
    char model[GW_MODEL_MAX];  /* set by the caller before enqueue */
    int replica;               /* index once admitted, else -1 */
    bool admitted;             /* private */
    pthread_cond_t cv;         /* private */
} gw_job;

typedef struct gw_disp_opts {
    int64_t quantum;      /* DRR credit per turn, tokens (default 32: below a typical
                           * request, so a turn admits about one request per citizen) */
    int slots;            /* > 0: slots per replica instead of serve's max_batch */
    int64_t busy_backoff_ms; /* a busy replica takes nothing for this long (default 200) */
} gw_disp_opts;

enum { GW_DISP_OK = 0, GW_DISP_TIMEOUT = -1, GW_DISP_GONE = -2, GW_DISP_ENOMEM = -3 };

int gw_disp_new(const char *const *urls, int n, const gw_disp_opts *opts, gw_disp **out,
                char *err, size_t errlen);
/* Starts the health threads (one per replica); the first serve.info of every
 * replica is done before it returns. */
int gw_disp_start(gw_disp *d);
/* Adds a replica after start (one learned from commonsd's service list) and
 * starts its health thread; a URL already known is left alone. Returns 1 when
 * added, 0 when known, -1 with err (bad URL, GW_DISP_MAX_REPLICAS reached). */
int gw_disp_add(gw_disp *d, const char *url, char *err, size_t errlen);
/* Load for autoscaling: requests waiting, in flight, and slots of up replicas. */
void gw_disp_load(gw_disp *d, int *queued, int *inflight, int *slots);
void gw_disp_free(gw_disp *d); /* stops the health threads; no request may still be inside */

/* Model names ever reported by a replica (malloc'd array of malloc'd names). */
int gw_disp_models(gw_disp *d, char ***names, int *n);
/* 1: some replica serving model is up; 0: known but none up; -1: never seen
 * (while other models were); -2: no replica has ever answered serve.info. */
int gw_disp_model_state(gw_disp *d, const char *model);
/* Largest n_ctx among replicas of model (0 when unknown). */
int64_t gw_disp_model_ctx(gw_disp *d, const char *model);

/* 0, or an errno value (j unusable: no gw_job_destroy). */
int gw_job_init(gw_job *j);
void gw_job_destroy(gw_job *j);

/* Queues j (j->model set) in flow with cost tokens. GW_DISP_OK or GW_DISP_ENOMEM. */
int gw_disp_enqueue(gw_disp *d, gw_job *j, const char *flow, int64_t cost);
/* Waits until j is admitted (GW_DISP_OK, j->replica set, a slot held), the
 * deadline (monotonic ms) passes (GW_DISP_TIMEOUT) or gone(ctx) says the client
 * left (GW_DISP_GONE); then j is no longer queued. gone may be NULL. */
int gw_disp_wait(gw_disp *d, gw_job *j, int64_t deadline_ms, bool (*gone)(void *), void *ctx);
/* serve answered busy: frees j's slot, holds the replica back, requeues j at
 * the head of its flow. Call gw_disp_wait() again. */
void gw_disp_busy(gw_disp *d, gw_job *j);
/* Frees j's slot. failed: the replica broke (transport error): mark it down. */
void gw_disp_release(gw_disp *d, gw_job *j, bool failed);

/* The client of an admitted job's replica. */
gw_serve *gw_disp_serve(gw_disp *d, const gw_job *j);

/* {"queued": N, "flows": N, "replicas": [{"url", "model", "up", "slots", "inflight"}]}
 * for the status page; a new reference, NULL when out of memory. */
json_t *gw_disp_status(gw_disp *d);

/* Prometheus lines: queue depth, flows, per-replica up/in flight/slots. */
void gw_disp_metrics(gw_disp *d, FILE *f);

#endif
