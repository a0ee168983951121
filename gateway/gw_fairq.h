/* gw_fairq.h: deficit round robin (DRR) over flows, costed in tokens.
 *
 * The gateway keeps one waiting request per item; a flow is one citizen (an
 * API key, or one anonymous address). pop() serves flows in round-robin order:
 * each time a flow's turn comes it gains `quantum` tokens of credit and may
 * take its head request when the credit covers the request's cost (prompt +
 * max_tokens). So a key with 32 waiting requests gets the same token rate as a
 * key with 2, not 16 times more, while the queue stays work-conserving.
 *
 * Invariants: a flow is in the active ring exactly when it has items; an empty
 * flow is freed and its credit forgotten (DRR resets idle flows to zero so
 * credit cannot be hoarded). Not thread-safe: the caller holds its own lock.
 * Items are embedded in the caller's request object; the queue never frees them.
 */
#ifndef GW_FAIRQ_H
#define GW_FAIRQ_H

#include <stddef.h>
#include <stdint.h>

#define GW_FLOW_MAX 96 /* bytes of a flow name, NUL included */

typedef struct gw_fq_flow gw_fq_flow;

typedef struct gw_fq_item {
    struct gw_fq_item *next, *prev; /* within its flow; private */
    gw_fq_flow *flow;               /* NULL when not queued; private */
    char flow_name[GW_FLOW_MAX];    /* set by push */
    int64_t cost;                   /* tokens, >= 1 */
} gw_fq_item;

typedef struct gw_fairq gw_fairq;

/* quantum: credit (tokens) a flow gains per turn, >= 1. NULL when out of memory. */
gw_fairq *gw_fairq_new(int64_t quantum);
void gw_fairq_free(gw_fairq *q); /* items still queued are simply dropped */

/* Appends it to flow's queue. cost < 1 counts as 1. 0, or -1 when out of memory
 * or the flow name does not fit GW_FLOW_MAX. */
int gw_fairq_push(gw_fairq *q, const char *flow, gw_fq_item *it, int64_t cost);

/* The next item by DRR, unlinked; NULL when the queue is empty. */
gw_fq_item *gw_fairq_pop(gw_fairq *q);

/* Undoes the pop of it (the replica answered busy): it goes back to the head
 * of its flow with its cost refunded and its flow is served next, so a busy
 * answer never costs a citizen their place. 0, or -1 when out of memory. */
int gw_fairq_unpop(gw_fairq *q, gw_fq_item *it);

/* Removes a queued item (timed out, client gone); no-op when not queued. */
void gw_fairq_remove(gw_fairq *q, gw_fq_item *it);

size_t gw_fairq_len(const gw_fairq *q);   /* queued items */
size_t gw_fairq_flows(const gw_fairq *q); /* flows with queued items */

#endif
