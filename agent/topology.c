/* topology.c: the node's hardware as hwloc sees it (packages, NUMA nodes
 * with their PUs and memory, cores, PUs, GPUs with their NUMA locality),
 * from this machine or from an hwloc XML file, and the `topology` object of
 * agent.register (docs/protocol.md, "Topology, placement and multi-node
 * jobs"). The hwloc topology is only used while loading: what the agent
 * needs later (which PUs exist, each PU's NUMA node, each GPU's NUMA node)
 * is copied into plain arrays, so nothing of hwloc is touched after fork.
 *
 * GPUs: PCI devices of NVIDIA (0x10de) or AMD (0x1002) that are 3D or
 * other display controllers (class 0x0302, 0x0380), or VGA controllers with
 * a GPU/compute OS device (see is_gpu), numbered in PCI bus order; that is the order
 * CUDA uses with CUDA_DEVICE_ORDER=PCI_BUS_ID, which the agent sets. A
 * GPU's NUMA node is the first NUMA node of its nearest non-I/O ancestor. */
#include "agent_internal.h"

#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gpu_sort {
    unsigned domain, bus, dev, func;
    int numa;
    char name[128];
};

static int by_pci(const void *a, const void *b)
{
    const struct gpu_sort *x = a, *y = b;
    unsigned long long kx = ((unsigned long long)x->domain << 24) | (x->bus << 16) |
                            (x->dev << 8) | x->func;
    unsigned long long ky = ((unsigned long long)y->domain << 24) | (y->bus << 16) |
                            (y->dev << 8) | y->func;
    return kx < ky ? -1 : kx > ky;
}

/* The first NUMA node (os index) whose PUs intersect set, or -1. */
static int numa_of_cpuset(hwloc_topology_t t, hwloc_const_cpuset_t set)
{
    hwloc_obj_t n = NULL;
    while ((n = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, n)))
        if (n->cpuset && hwloc_bitmap_intersects(n->cpuset, set)) return (int)n->os_index;
    return -1;
}

static const char *gpu_name(hwloc_obj_t pci)
{
    const char *v;
    for (hwloc_obj_t c = pci->io_first_child; c; c = c->next_sibling)
        if (c->type == HWLOC_OBJ_OS_DEVICE && (v = hwloc_obj_get_info_by_name(c, "GPUModel")))
            return v;
    if ((v = hwloc_obj_get_info_by_name(pci, "PCIDevice"))) return v;
    for (hwloc_obj_t c = pci->io_first_child; c; c = c->next_sibling)
        if (c->type == HWLOC_OBJ_OS_DEVICE && c->name) return c->name;
    return pci->attr->pcidev.vendor_id == 0x10de ? "NVIDIA GPU" : "AMD GPU";
}

/* A compute GPU: a 3D or "other" display controller (class 0x0302, 0x0380)
 * from NVIDIA or AMD, or any of their display controllers that a GPU/compute
 * backend (CUDA, NVML, RSMI, OpenCL) reported; plain server VGA chips are
 * not GPUs. */
static bool is_gpu(hwloc_obj_t p)
{
    unsigned cls = p->attr->pcidev.class_id, vendor = p->attr->pcidev.vendor_id;
    if ((cls >> 8) != 0x03 || (vendor != 0x10de && vendor != 0x1002)) return false;
    if (cls == 0x0302 || cls == 0x0380) return true; /* 3D / other: compute accelerators */
    for (hwloc_obj_t c = p->io_first_child; c; c = c->next_sibling) {
        if (c->type != HWLOC_OBJ_OS_DEVICE || !c->name) continue;
        /* DRM's card0/renderD128 exist for any display chip. */
        bool drm = strncmp(c->name, "card", 4) == 0 || strncmp(c->name, "renderD", 7) == 0 ||
                   strncmp(c->name, "controlD", 8) == 0;
        if (!drm && (c->attr->osdev.type == HWLOC_OBJ_OSDEV_GPU ||
                     c->attr->osdev.type == HWLOC_OBJ_OSDEV_COPROC))
            return true;
    }
    return false;
}

static int collect_gpus(hwloc_topology_t t, struct agent_topology *topo, char *err,
                        size_t errlen)
{
    struct gpu_sort g[AGENT_MAX_GPUS];
    int n = 0;
    hwloc_obj_t p = NULL;
    while ((p = hwloc_get_next_pcidev(t, p))) {
        if (!is_gpu(p)) continue;
        if (n == AGENT_MAX_GPUS) {
            snprintf(err, errlen, "more than %d GPUs: not supported", AGENT_MAX_GPUS);
            return -1;
        }
        hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t, p);
        g[n] = (struct gpu_sort){p->attr->pcidev.domain, p->attr->pcidev.bus,
                                 p->attr->pcidev.dev, p->attr->pcidev.func,
                                 anc && anc->cpuset ? numa_of_cpuset(t, anc->cpuset) : -1, ""};
        snprintf(g[n].name, sizeof g[n].name, "%s", gpu_name(p));
        n++;
    }
    qsort(g, (size_t)n, sizeof g[0], by_pci);
    for (int i = 0; i < n; i++) {
        topo->gpu_numa[i] = g[i].numa;
        snprintf(topo->gpu_name[i], sizeof topo->gpu_name[i], "%s", g[i].name);
        snprintf(topo->gpu_pci[i], sizeof topo->gpu_pci[i], "%04x:%02x:%02x.%x", g[i].domain,
                 g[i].bus, g[i].dev, g[i].func);
    }
    topo->ngpus = n;
    return 0;
}

static int collect(hwloc_topology_t t, struct agent_topology *topo, char *err, size_t errlen)
{
    hwloc_const_cpuset_t all = hwloc_topology_get_topology_cpuset(t);
    int last = hwloc_bitmap_last(all);
    if (last < 0 || last >= AGENT_MAX_PUS) {
        snprintf(err, errlen, "topology has %s PUs (at most %d PU indices supported)",
                 last < 0 ? "no" : "too many", AGENT_MAX_PUS);
        return -1;
    }
    for (int i = 0; i < AGENT_MAX_PUS; i++) topo->pu_numa[i] = -2; /* not a PU */
    hwloc_obj_t pu = NULL;
    while ((pu = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_PU, pu))) {
        topo->pu_numa[pu->os_index] = numa_of_cpuset(t, pu->cpuset);
        topo->npus++;
    }
    hwloc_obj_t n = NULL;
    while ((n = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, n))) {
        if (topo->nnuma == AGENT_MAX_NUMA) {
            snprintf(err, errlen, "more than %d NUMA nodes: not supported", AGENT_MAX_NUMA);
            return -1;
        }
        topo->numa_id[topo->nnuma] = (int)n->os_index;
        topo->numa_mb[topo->nnuma] = (int64_t)(n->attr->numanode.local_memory >> 20);
        topo->memory_mb += topo->numa_mb[topo->nnuma];
        topo->nnuma++;
    }
    topo->packages = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PACKAGE);
    topo->cores = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
    if (topo->packages < 1) topo->packages = 1;
    if (topo->cores < 1) topo->cores = topo->npus;
    return collect_gpus(t, topo, err, errlen);
}

int agent_topology_load(const char *xml, struct agent_topology *topo, char *err, size_t errlen)
{
    memset(topo, 0, sizeof *topo);
    hwloc_topology_t t;
    if (hwloc_topology_init(&t) != 0) {
        snprintf(err, errlen, "hwloc: cannot initialize a topology");
        return -1;
    }
    int rc = -1;
    /* PCI devices are needed for GPUs and their locality. */
    hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    /* On Linux, sysfs gives the PCI devices and their locality; hwloc's
     * libpciaccess component would add only device names, and leaks at
     * every load. */
    if (!xml) hwloc_topology_set_components(t, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, "pci");
    if (xml && hwloc_topology_set_xml(t, xml) != 0) {
        snprintf(err, errlen, "--topology %s: cannot read it as an hwloc XML file", xml);
        goto out;
    }
    if (hwloc_topology_load(t) != 0) {
        snprintf(err, errlen, "%s%s: hwloc cannot load the topology", xml ? "--topology " : "",
                 xml ? xml : "this machine");
        goto out;
    }
    if (collect(t, topo, err, errlen) != 0) goto out;
    if (topo->npus == 0 || topo->nnuma == 0) {
        snprintf(err, errlen, "%s: topology has no PUs or no NUMA node", xml ? xml : "this machine");
        goto out;
    }
    topo->applied = xml == NULL;
    snprintf(topo->source, sizeof topo->source, "%s%s", xml ? "xml:" : "hwloc", xml ? xml : "");
    rc = 0;
out:
    hwloc_topology_destroy(t);
    return rc;
}

json_t *agent_topology_report(const struct agent_topology *t, const char *limits)
{
    json_t *numa = json_array(), *gpus = json_array();
    for (int i = 0; i < t->nnuma; i++) {
        json_t *pus = json_array();
        for (int p = 0; p < AGENT_MAX_PUS; p++)
            if (t->pu_numa[p] == t->numa_id[i]) json_array_append_new(pus, json_integer(p));
        json_array_append_new(numa, json_pack("{si so sI}", "id", t->numa_id[i], "pus", pus,
                                              "memory_mb", (json_int_t)t->numa_mb[i]));
    }
    for (int i = 0; i < t->ngpus; i++)
        json_array_append_new(gpus, json_pack("{si si ss ss}", "index", i, "numa", t->gpu_numa[i],
                                              "name", t->gpu_name[i], "pci", t->gpu_pci[i]));
    return json_pack("{ss ss ss si si si so so}", "source", t->source, "binding",
                     t->applied ? "applied" : "recorded", "limits", limits, "packages",
                     t->packages, "cores", t->cores, "pus", t->npus, "numa", numa, "gpus", gpus);
}

bool agent_topology_has_pu(const struct agent_topology *t, int pu)
{
    return pu >= 0 && pu < AGENT_MAX_PUS && t->pu_numa[pu] != -2;
}
