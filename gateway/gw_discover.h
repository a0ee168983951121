/* gw_discover.h: serve replicas learned from commonsd, and autoscaling.
 *
 * With --service NAME --commonsd URL, a thread asks commonsd for the service's
 * replicas every period (service.list) and adds each new endpoint to the
 * dispatcher; replicas that go away fail their health checks and take no more
 * requests. With --autoscale it also asks commonsd to scale the service within
 * its MIN..MAX: up by one when requests have been waiting with every slot busy,
 * or the mean time to first token of the requests since the last poll has
 * been above ttft_ms, for up_after_ms; down by one when fewer than 30% of slots have been busy and
 * nothing waited for down_after_ms; after each change it waits up_after_ms
 * before deciding again, so it does not flap.
 */
#ifndef GW_DISCOVER_H
#define GW_DISCOVER_H

#include <stddef.h>
#include <stdint.h>

#include "gw_disp.h"
#include "gw_metrics.h"

#include <jansson.h>

typedef struct gw_discover_opts {
    const char *commonsd;   /* tcp://host:port of commonsd */
    const char *service;    /* service name */
    const char *token_file; /* a token of the service's owner (or an admin) */
    int autoscale;
    int64_t period_ms, up_after_ms, down_after_ms; /* defaults 1000, 10000, 60000 */
    int64_t ttft_ms;        /* time to first token that counts as overload (default 2000; <0: off) */
    gw_metrics *metrics;    /* where the gateway records time to first token */
} gw_discover_opts;

typedef struct gw_discover gw_discover;

int gw_discover_start(gw_disp *d, const gw_discover_opts *o, gw_discover **out, char *err, size_t errlen);
void gw_discover_stop(gw_discover *g); /* NULL is fine */
/* The last view of the cluster for the status page (a new reference, or NULL
 * before the first): {"nodes": [...], "jobs": [...], "share": [...],
 * "usage": [...] (billed units per institution and day, from the ledger)}. */
json_t *gw_discover_cluster(gw_discover *g);

#endif
