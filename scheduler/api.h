/* api.h: commonsd's request handlers (docs/protocol.md), one per message type.
 *
 * api_handle runs inside the main loop's open store transaction. It returns the
 * reply, or NULL when it held the request (an agent poll with nothing to do);
 * held polls are answered by api_flush_parked when work appears or they expire.
 */
#ifndef SCHED_API_H
#define SCHED_API_H

#include "cluster.h"
#include "server.h"

struct parked_poll {
    struct srv_req *req;
    int node;          /* index into cluster.nodes */
    json_t *running;   /* the poll's running list */
    int64_t deadline_ms;
};

struct outgoing {
    struct srv_req *req;
    json_t *reply;
};

struct daemon {
    struct cluster c;
    struct outgoing out[SERVER_CONTEXTS]; /* replies held until the transaction commits */
    int nout;
    struct server *srv;
    char *cluster_key;
    struct parked_poll parked[SERVER_CONTEXTS];
    int nparked;
    int read_only; /* the store refused a transaction: refuse new work */
};

/* Whether a request type needs the store to be writable. */
int api_is_mutating(const char *type);
/* Queues a reply to go out after the current transaction commits. */
void api_queue_reply(struct daemon *d, struct srv_req *r, json_t *reply);
json_t *api_handle(struct daemon *d, struct srv_req *r, json_t *req);
/* Answers held polls whose node has commands now, or whose time is up. */
void api_flush_parked(struct daemon *d, int force_all);
json_t *api_stats(struct daemon *d);

#endif
