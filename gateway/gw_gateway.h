/* gw_gateway.h: the running gateway's shared state, and the HTTP entry points.
 *
 * One gw_gateway per process, built by gw_main.c. The policy is swapped
 * whole on SIGHUP: request threads take a counted reference for the life of
 * one request (gw_policy_get/put), so a reload never frees a policy in use.
 */
#ifndef GW_GATEWAY_H
#define GW_GATEWAY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "gw_disp.h"
#include "gw_keys.h"
#include "gw_metrics.h"
#include "gw_quota.h"
#include "quota_policy.h"

typedef struct gw_config {
    const char *listen_host;   /* numeric IPv4 or IPv6 address */
    int listen_port;
    size_t max_body;           /* bytes of a request body (default 1 MiB) */
    size_t max_header;         /* bytes of the request line + headers (default 16 KiB) */
    unsigned max_conns;        /* open connections in all (default 256) */
    unsigned max_conns_per_ip; /* default 64; 0 = no limit */
    unsigned idle_timeout_s;   /* a connection silent this long is closed (default 30) */
    int64_t queue_timeout_ms;  /* longest wait for a replica before 503 (default 30 s) */
    int64_t default_max_tokens;/* when a request gives none (default 256, capped by tier) */
} gw_config;

typedef struct gw_policy_ref {
    quota_policy *p;
    int refs;
} gw_policy_ref;

typedef struct gw_gateway {
    gw_config cfg;
    gw_keystore *keys;
    gw_quota *quota;
    gw_disp *disp;
    gw_metrics *metrics;
    const char *policy_path;
    pthread_mutex_t mu;       /* guards pol, next_id, active */
    gw_policy_ref *pol;
    uint64_t next_id;
    int active;               /* requests being handled, for draining */
    struct MHD_Daemon *mhd;
    struct gw_discover *discover; /* replicas and the cluster view from commonsd, or NULL */
} gw_gateway;

gw_policy_ref *gw_policy_get(gw_gateway *g);
void gw_policy_put(gw_gateway *g, gw_policy_ref *r);
/* Loads policy_path and swaps it in; on any error keeps the old one and
 * fills err with the first problem (all of them are logged). */
int gw_policy_reload(gw_gateway *g, char *err, size_t errlen);

/* Starts the HTTP daemon (thread per connection). 0 or -1 with err. */
int gw_http_start(gw_gateway *g, char *err, size_t errlen);
/* Stops accepting, waits up to drain_ms for requests in flight, stops. */
void gw_http_stop(gw_gateway *g, int64_t drain_ms);

/* Handles POST /v1/completions and /v1/chat/completions (gw_gen.c).
 * conn is the MHD connection; ctx the per-request state (gw_http.c owns it). */
struct MHD_Connection;
typedef struct gw_run gw_run;
int gw_gen_handle(gw_gateway *g, struct MHD_Connection *conn, int kind, const char *body,
                  size_t len, gw_run **run);
/* Called once when the HTTP request is over (sent, failed or client gone):
 * cancels what is still running and settles quota and usage. */
void gw_gen_finish(gw_gateway *g, gw_run *run);

/* The status page's data (gw_status.c), a new reference; the page itself is gw_www.h. */
json_t *gw_status_json(gw_gateway *g);

/* Helpers shared by the HTTP files. */
int gw_http_send(struct MHD_Connection *conn, int status, const char *content_type, char *body,
                 int64_t retry_after_s);
struct gw_api_err;
int gw_http_send_error(gw_gateway *g, struct MHD_Connection *conn, const char *route,
                       const struct gw_api_err *e, int64_t retry_after_s);

#endif
