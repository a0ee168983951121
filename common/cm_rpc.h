/* cm_rpc.h: the client side of Commons' wire protocol (docs/protocol.md).
 *
 * One JSON object per nng REQ/REP message. Users send plain requests carrying
 * their token; agents wrap each payload in a signed frame (HMAC-SHA256 over
 * the payload's exact bytes with the cluster key). Replies always carry "ok".
 */
#ifndef CM_RPC_H
#define CM_RPC_H

#include <jansson.h>
#include <stddef.h>

#define CM_RPC_VERSION 1
#define CM_RPC_MAX_MSG (1024 * 1024) /* bytes; larger requests are dropped */
#define CM_RPC_MAX_REPLY (256 * 1024 * 1024) /* bytes; replies (job lists) may be large */
#define CM_RPC_DEFAULT_ADDR "tcp://127.0.0.1:7600"
/* Most ranks of one split service replica (service.deploy "tp"/"pp", "nodes",
 * "tasks_per_node"): far beyond what a model's head count allows (tp) or a sane
 * pipeline (pp), small enough that a typo is refused. The CLI checks its flags
 * against it, commonsd the request. */
#define CM_SERVICE_MAX_RANKS 64

typedef struct cm_rpc_client cm_rpc_client;

/* Dials addr (tcp://host:port, or tls+tcp://host:port). The connection is
 * made lazily by nng and re-made after failures, so open only fails on a
 * malformed address. With tls+tcp, the server's certificate must chain to the
 * CA certificates in the PEM file named by the environment variable
 * COMMONS_TLS_CA and match the host name of addr. */
int cm_rpc_client_open(const char *addr, cm_rpc_client **out, char *err, size_t errlen);
void cm_rpc_client_close(cm_rpc_client *c);

/* Sends req (adds "v" when missing) and waits up to timeout_ms for the reply.
 * On success *reply is a new reference the caller must json_decref.
 * Returns 0, or -1 with err filled (timeout, transport, malformed reply).
 * A reply with "ok": false is still success at this level. */
int cm_rpc_call(cm_rpc_client *c, json_t *req, json_t **reply, int timeout_ms,
                char *err, size_t errlen);

/* Signed agent frames. key is the cluster key as given in the key file (hex
 * text); the HMAC is keyed with those bytes as text. */
json_t *cm_rpc_sign(const char *key, json_t *payload);
/* Checks frame's signature; on success *payload is a new reference. */
int cm_rpc_verify(const char *key, json_t *frame, json_t **payload, char *err, size_t errlen);

/* Reply builders: {"ok": true} and {"ok": false, "error": {code, message}}. */
json_t *cm_reply_ok(void);
json_t *cm_reply_err(const char *code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The error code of an "ok": false reply ("not_found", "busy", ...), "internal"
 * for one that names none, NULL for an "ok": true reply. */
const char *cm_reply_error_code(json_t *reply);
/* Reads a reply's error as "code: message" into buf; returns buf. */
const char *cm_reply_error_text(json_t *reply, char *buf, size_t len);

#endif
