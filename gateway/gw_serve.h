/* gw_serve.h: the gateway's client of one commons-serve replica (docs/serving.md).
 *
 * One nng REQ socket per replica; every call opens its own context, so any
 * number of request threads may call at once (each waiting only for its own
 * reply). Requests are never resent by the transport: gen.start is not
 * idempotent, and the caller decides what a timeout means.
 */
#ifndef GW_SERVE_H
#define GW_SERVE_H

#include <jansson.h>
#include <stddef.h>

typedef struct gw_serve gw_serve;

/* Dials url (tcp://host:port) lazily; only a malformed URL fails. */
int gw_serve_open(const char *url, gw_serve **out, char *err, size_t errlen);
void gw_serve_close(gw_serve *s);
const char *gw_serve_url(const gw_serve *s);

/* Sends req (adds "v": 1) and waits up to timeout_ms for the reply, a new
 * reference in *reply. 0, or -1 with err filled (timeout, transport,
 * malformed reply). A reply with "ok": false is still 0 here. */
int gw_serve_call(gw_serve *s, json_t *req, json_t **reply, int timeout_ms, char *err,
                  size_t errlen);

#endif
