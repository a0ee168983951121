/* gw_fairq.c: deficit round robin over flows (see gw_fairq.h). */
#include "gw_fairq.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct gw_fq_flow {
    char name[GW_FLOW_MAX];
    gw_fq_item *head, *tail;
    int64_t deficit;     /* unused credit, tokens */
    bool credited;       /* already got this turn's quantum */
    gw_fq_flow *rnext, *rprev; /* active ring */
};

struct gw_fairq {
    int64_t quantum;
    gw_fq_flow *cur; /* whose turn it is; NULL when empty */
    size_t nitems, nflows;
};

gw_fairq *gw_fairq_new(int64_t quantum)
{
    gw_fairq *q = calloc(1, sizeof *q);
    if (q) q->quantum = quantum < 1 ? 1 : quantum;
    return q;
}

void gw_fairq_free(gw_fairq *q)
{
    if (!q) return;
    while (q->cur) {
        gw_fq_flow *f = q->cur;
        for (gw_fq_item *it = f->head; it; it = it->next) it->flow = NULL;
        q->cur = f->rnext == f ? NULL : f->rnext;
        f->rprev->rnext = f->rnext;
        f->rnext->rprev = f->rprev;
        free(f);
    }
    free(q);
}

static gw_fq_flow *find_flow(gw_fairq *q, const char *name)
{
    gw_fq_flow *f = q->cur;
    if (!f) return NULL;
    do {
        if (strcmp(f->name, name) == 0) return f;
        f = f->rnext;
    } while (f != q->cur);
    return NULL;
}

/* Links a new empty flow into the ring just before the current one (the end
 * of this round), or makes it current when first = true. */
static gw_fq_flow *new_flow(gw_fairq *q, const char *name, bool first)
{
    gw_fq_flow *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    strcpy(f->name, name);
    if (!q->cur) {
        f->rnext = f->rprev = f;
        q->cur = f;
    } else {
        f->rnext = q->cur;
        f->rprev = q->cur->rprev;
        f->rprev->rnext = f;
        q->cur->rprev = f;
        if (first) q->cur = f;
    }
    q->nflows++;
    return f;
}

/* Drops an empty flow from the ring; its credit is forgotten. */
static void drop_flow(gw_fairq *q, gw_fq_flow *f)
{
    if (f->rnext == f) {
        q->cur = NULL;
    } else {
        f->rprev->rnext = f->rnext;
        f->rnext->rprev = f->rprev;
        if (q->cur == f) q->cur = f->rnext;
    }
    q->nflows--;
    free(f);
}

static void unlink_item(gw_fq_flow *f, gw_fq_item *it)
{
    if (it->prev) it->prev->next = it->next; else f->head = it->next;
    if (it->next) it->next->prev = it->prev; else f->tail = it->prev;
    it->next = it->prev = NULL;
    it->flow = NULL;
}

int gw_fairq_push(gw_fairq *q, const char *flow, gw_fq_item *it, int64_t cost)
{
    if (strlen(flow) >= GW_FLOW_MAX) return -1;
    gw_fq_flow *f = find_flow(q, flow);
    if (!f && !(f = new_flow(q, flow, false))) return -1;
    strcpy(it->flow_name, flow);
    it->cost = cost < 1 ? 1 : cost;
    it->flow = f;
    it->next = NULL;
    it->prev = f->tail;
    if (f->tail) f->tail->next = it; else f->head = it;
    f->tail = it;
    q->nitems++;
    return 0;
}

gw_fq_item *gw_fairq_pop(gw_fairq *q)
{
    if (!q->cur) return NULL;
    /* A head costlier than the quantum needs several turns of credit; grant
     * whole rounds at once so a pop is O(flows), not O(cost/quantum * flows). */
    int64_t rounds = INT64_MAX;
    gw_fq_flow *f = q->cur;
    do {
        int64_t need = f->head->cost - f->deficit - (f->credited ? 0 : q->quantum);
        int64_t r = need <= 0 ? 0 : (need + q->quantum - 1) / q->quantum;
        if (r < rounds) rounds = r;
        f = f->rnext;
    } while (f != q->cur);
    if (rounds > 0) {
        f = q->cur;
        do {
            f->deficit += rounds * q->quantum;
            f = f->rnext;
        } while (f != q->cur);
    }
    for (;;) {
        f = q->cur;
        if (!f->credited) {
            f->deficit += q->quantum;
            f->credited = true;
        }
        gw_fq_item *it = f->head;
        if (it->cost <= f->deficit) {
            f->deficit -= it->cost;
            unlink_item(f, it);
            q->nitems--;
            if (!f->head) drop_flow(q, f);
            return it;
        }
        f->credited = false;
        q->cur = f->rnext;
    }
}

int gw_fairq_unpop(gw_fairq *q, gw_fq_item *it)
{
    /* Other pops may have happened since; the flow jumps the ring to be served
     * next, and the flow whose turn it was keeps its credit but not its turn
     * (invariant: only the current flow is marked credited). */
    gw_fq_flow *old = q->cur;
    gw_fq_flow *f = find_flow(q, it->flow_name);
    if (!f && !(f = new_flow(q, it->flow_name, true))) return -1;
    if (old && old != f) old->credited = false;
    q->cur = f;
    f->credited = true; /* this turn's quantum was already spent on it */
    f->deficit += it->cost;
    it->flow = f;
    it->prev = NULL;
    it->next = f->head;
    if (f->head) f->head->prev = it; else f->tail = it;
    f->head = it;
    q->nitems++;
    return 0;
}

void gw_fairq_remove(gw_fairq *q, gw_fq_item *it)
{
    gw_fq_flow *f = it->flow;
    if (!f) return;
    unlink_item(f, it);
    q->nitems--;
    if (!f->head) drop_flow(q, f);
}

size_t gw_fairq_len(const gw_fairq *q) { return q->nitems; }
size_t gw_fairq_flows(const gw_fairq *q) { return q->nflows; }
