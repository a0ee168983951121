/* node.c: node topology (PUs, NUMA nodes, GPUs), choosing specific PUs and
 * GPUs for a job, draining, and the JSON view of a node.
 *
 * Placement rules (docs/scheduler.md): a job's PUs on a node come from one
 * NUMA node when some NUMA node has enough free PUs (the fullest such one,
 * to keep large holes for large jobs), else from the NUMA nodes with the
 * most free PUs first; its GPUs are the free GPUs attached to those NUMA
 * nodes first, then any free GPU.
 */
#include "cluster.h"

#include <stdlib.h>
#include <string.h>

void node_free_topology(struct node *n)
{
    struct node_topo *t = &n->topo;
    free(t->pus);
    free(t->pu_numa);
    free(t->gpus);
    free(t->gpu_numa);
    free(t->pu_used);
    free(t->gpu_used);
    memset(t, 0, sizeof *t);
    json_decref(n->topology);
    n->topology = NULL;
}

int node_set_topology(struct node *n, json_t *topology, char *err, size_t errlen)
{
    node_free_topology(n);
    if (!topology || json_is_null(topology)) return 0;
    json_t *numa = json_object_get(topology, "numa"), *gpus = json_object_get(topology, "gpus");
    if (!json_is_object(topology) || !json_is_array(numa) || (gpus && !json_is_array(gpus))) {
        snprintf(err, errlen, "field 'topology': expected an object with arrays 'numa' and 'gpus'");
        return -1;
    }
    struct node_topo t = {0};
    size_t i, k;
    json_t *nn, *pu;
    json_array_foreach(numa, i, nn) t.npus += (int)json_array_size(json_object_get(nn, "pus"));
    t.ngpus = (int)json_array_size(gpus);
    if (t.npus != n->cpus) {
        /* An agent told to offer more or fewer CPUs than the machine has (--cpus) cannot
         * bind to PUs it does not have: the node is scheduled by counts instead. */
        snprintf(err, errlen, "topology lists %d PUs but the node offers %d CPUs; placing by counts, unbound", t.npus,
                 n->cpus);
        return 1;
    }
    if (t.ngpus != n->gpus) {
        snprintf(err, errlen, "topology lists %d GPUs but the node offers %d; placing by counts, unbound", t.ngpus,
                 n->gpus);
        return 1;
    }
    t.pus = calloc((size_t)t.npus + 1, sizeof *t.pus);
    t.pu_numa = calloc((size_t)t.npus + 1, sizeof *t.pu_numa);
    t.pu_used = calloc((size_t)t.npus + 1, 1);
    t.gpus = calloc((size_t)t.ngpus + 1, sizeof *t.gpus);
    t.gpu_numa = calloc((size_t)t.ngpus + 1, sizeof *t.gpu_numa);
    t.gpu_used = calloc((size_t)t.ngpus + 1, 1);
    int p = 0;
    json_array_foreach(numa, i, nn) {
        json_t *id = json_object_get(nn, "id");
        json_array_foreach(json_object_get(nn, "pus"), k, pu) {
            if (!json_is_integer(pu) || !json_is_integer(id)) {
                snprintf(err, errlen, "field 'topology.numa[%zu]': expected an integer 'id' and integer 'pus'", i);
                n->topo = t;
                node_free_topology(n);
                return -1;
            }
            t.pus[p] = (int)json_integer_value(pu);
            t.pu_numa[p++] = (int)json_integer_value(id);
        }
    }
    json_array_foreach(gpus, i, nn) {
        json_t *idx = json_object_get(nn, "index"), *nu = json_object_get(nn, "numa");
        if (!json_is_integer(idx)) {
            snprintf(err, errlen, "field 'topology.gpus[%zu]': expected an integer 'index'", i);
            n->topo = t;
            node_free_topology(n);
            return -1;
        }
        t.gpus[i] = (int)json_integer_value(idx);
        t.gpu_numa[i] = json_is_integer(nu) ? (int)json_integer_value(nu) : -1;
    }
    n->topo = t;
    n->topology = json_incref(topology);
    return 0;
}

static int free_pus_in(const struct node_topo *t, int numa)
{
    int f = 0;
    for (int i = 0; i < t->npus; i++) f += t->pu_numa[i] == numa && !t->pu_used[i];
    return f;
}

static int free_gpus_in(const struct node_topo *t, int numa)
{
    int f = 0;
    for (int i = 0; i < t->ngpus; i++) f += t->gpu_numa[i] == numa && !t->gpu_used[i];
    return f;
}

int node_pick(const struct node *n, int cpus, int gpus, struct job_place *out)
{
    const struct node_topo *t = &n->topo;
    memset(out, 0, sizeof *out);
    if (!n->topology) return -1;
    /* Distinct NUMA ids, in the order the agent listed them. */
    int *ids = malloc(sizeof *ids * (size_t)(t->npus + 1)), nids = 0;
    for (int i = 0; i < t->npus; i++) {
        int seen = 0;
        for (int k = 0; k < nids; k++) seen |= ids[k] == t->pu_numa[i];
        if (!seen) ids[nids++] = t->pu_numa[i];
    }
    /* One NUMA node if any fits: prefer enough local GPUs, then the fullest. */
    int best = -1, best_free = 0, best_gpu_ok = 0;
    for (int k = 0; k < nids; k++) {
        int f = free_pus_in(t, ids[k]);
        if (f < cpus) continue;
        int gpu_ok = free_gpus_in(t, ids[k]) >= gpus;
        if (best < 0 || gpu_ok > best_gpu_ok || (gpu_ok == best_gpu_ok && f < best_free)) {
            best = ids[k];
            best_free = f;
            best_gpu_ok = gpu_ok;
        }
    }
    out->pus = malloc(sizeof *out->pus * (size_t)(cpus + 1));
    out->gpus = malloc(sizeof *out->gpus * (size_t)(gpus + 1));
    unsigned char *taken = calloc((size_t)t->npus + 1, 1);
    /* Visit NUMA nodes: the chosen one, else by most free PUs. */
    int *order = malloc(sizeof *order * (size_t)(nids + 1)), norder = 0;
    if (best >= 0) order[norder++] = best;
    else {
        memcpy(order, ids, sizeof *ids * (size_t)nids);
        norder = nids;
        for (int a = 0; a < norder; a++)
            for (int b = a + 1; b < norder; b++)
                if (free_pus_in(t, order[b]) > free_pus_in(t, order[a])) {
                    int x = order[a];
                    order[a] = order[b];
                    order[b] = x;
                }
    }
    for (int k = 0; k < norder && out->npus < cpus; k++)
        for (int i = 0; i < t->npus && out->npus < cpus; i++)
            if (t->pu_numa[i] == order[k] && !t->pu_used[i]) {
                taken[i] = 1;
                out->pus[out->npus++] = t->pus[i];
            }
    /* GPUs: local to the chosen PUs' NUMA nodes first. */
    for (int pass = 0; pass < 2 && out->ngpus < gpus; pass++)
        for (int g = 0; g < t->ngpus && out->ngpus < gpus; g++) {
            if (t->gpu_used[g]) continue;
            int local = 0;
            for (int i = 0; i < t->npus; i++) local |= taken[i] && t->pu_numa[i] == t->gpu_numa[g];
            int already = 0;
            for (int x = 0; x < out->ngpus; x++) already |= out->gpus[x] == t->gpus[g];
            if (!already && (pass == 1 || local)) out->gpus[out->ngpus++] = t->gpus[g];
        }
    free(taken);
    free(order);
    free(ids);
    return 0;
}

static int index_of(const int *v, int n, int x)
{
    for (int i = 0; i < n; i++)
        if (v[i] == x) return i;
    return -1;
}

void node_mark(struct node *n, const struct job_place *p, int sign)
{
    struct node_topo *t = &n->topo;
    if (!p || !n->topology) return;
    for (int i = 0; i < p->npus; i++) {
        int k = index_of(t->pus, t->npus, p->pus[i]);
        if (k >= 0) t->pu_used[k] = sign > 0;
    }
    for (int i = 0; i < p->ngpus; i++) {
        int k = index_of(t->gpus, t->ngpus, p->gpus[i]);
        if (k >= 0) t->gpu_used[k] = sign > 0;
    }
}

int cluster_node_drain(struct cluster *c, struct node *n, int drain, const char *reason, char *err, size_t errlen)
{
    n->drain = drain;
    snprintf(n->drain_reason, sizeof n->drain_reason, "%s", drain ? reason : "");
    if (store_node_drain(&c->store, n->name, drain, n->drain_reason) != 0) {
        snprintf(err, errlen, "%s", c->store.err);
        return -1;
    }
    c->dirty = 1;
    return 0;
}

json_t *node_json(const struct node *n, int with_topology)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:I, s:I, s:i, s:i, s:b}", "name", n->name, "hostname",
                          n->hostname ? n->hostname : "", "state", node_state_name(n), "reason",
                          n->drain ? n->drain_reason : n->reason, "cpus", n->cpus, "cpus_used", n->used_cpus,
                          "memory_mb", (json_int_t)n->memory_mb, "memory_used_mb", (json_int_t)n->used_mem, "gpus",
                          n->gpus, "gpus_used", n->used_gpus, "drain", n->drain);
    if (with_topology) {
        json_object_set(o, "topology", n->topology ? n->topology : json_null());
        json_t *used = json_array(), *gused = json_array();
        for (int i = 0; i < n->topo.npus; i++)
            if (n->topo.pu_used[i]) json_array_append_new(used, json_integer(n->topo.pus[i]));
        for (int i = 0; i < n->topo.ngpus; i++)
            if (n->topo.gpu_used[i]) json_array_append_new(gused, json_integer(n->topo.gpus[i]));
        json_object_set_new(o, "pus_used", used);
        json_object_set_new(o, "gpus_used_list", gused);
    }
    return o;
}
