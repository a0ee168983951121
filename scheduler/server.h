/* server.h: commonsd's nng REP endpoint with many contexts, feeding one queue.
 *
 * nng's threads only move messages: each received request is queued, and the
 * main loop takes the whole queue at once (server_take), so that a batch of
 * requests shares one store transaction (group commit). A request can be
 * answered at once or held (an agent's long poll) and answered later.
 */
#ifndef SCHED_SERVER_H
#define SCHED_SERVER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define SERVER_CONTEXTS 256 /* requests in flight at once, held polls included */

struct server;
struct srv_req; /* one request in flight; owned by the server */

/* url: tcp://host:port, or tls+tcp://host:port with tls_cert_key the PEM file
 * holding the server's certificate chain and private key. */
int server_open(struct server **out, const char *url, const char *tls_cert_key, char *err, size_t errlen);
void server_close(struct server *s);
/* Waits up to timeout_ms for requests; returns how many were taken into out. */
size_t server_take(struct server *s, struct srv_req **out, size_t max, int timeout_ms);
/* The request's text (NUL-terminated) and size. */
const char *server_req_body(struct srv_req *r, size_t *len);
/* Sends reply (stealing the reference) and frees the request for reuse. */
void server_reply(struct srv_req *r, json_t *reply);

#endif
