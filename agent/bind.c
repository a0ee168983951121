/* bind.c: where a job instance's processes go on this node (docs/agent.md,
 * "Placement"): the launch's cpu_list is checked against the topology and
 * cut into one slice of cpus_per_task PUs per task; memory goes to the NUMA
 * nodes of those PUs; the first node of an mpi job gets an mpirun command
 * line with a hostfile and a rankfile made from the job's alloc. Everything
 * here runs in the agent before fork, so the child only makes system calls.
 *
 * Invariant: on success every PU of every task slice is a PU of the
 * topology, slices are disjoint, and report describes exactly what is (or,
 * on an XML node, would be) applied. */
#include "agent_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int agent_bind_node_index(const struct agent_launch *l, const char *node)
{
    size_t i;
    json_t *a;
    json_array_foreach(l->alloc, i, a) {
        const char *n = json_string_value(json_object_get(a, "node"));
        if (n && strcmp(n, node) == 0) return (int)i;
    }
    return 0;
}

static int check_lists(const struct agent_launch *l, const struct agent_topology *t, char *err,
                       size_t errlen)
{
    for (int i = 0; i < l->ncpu; i++)
        if (!agent_topology_has_pu(t, l->cpu_list[i])) {
            snprintf(err, errlen, "field \"cpu_list\": PU %d is not in this node's topology (%d PUs)",
                     l->cpu_list[i], t->npus);
            return -1;
        }
    for (int i = 0; i < l->ngpu; i++)
        if (l->gpu_list[i] >= t->ngpus) {
            snprintf(err, errlen, "field \"gpu_list\": GPU %d is not on this node (%d GPUs)",
                     l->gpu_list[i], t->ngpus);
            return -1;
        }
    for (int i = 0; i < l->nnuma; i++) {
        bool found = false;
        for (int k = 0; k < t->nnuma; k++) found |= t->numa_id[k] == l->numa[i];
        if (!found) {
            snprintf(err, errlen, "field \"numa\": NUMA node %d is not on this node", l->numa[i]);
            return -1;
        }
    }
    return 0;
}

static void set_node(struct agent_bind *b, int id)
{
    size_t bits = 8 * sizeof(unsigned long);
    b->nodemask[id / bits] |= 1UL << (id % bits);
}

static json_t *int_array(const int *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

void agent_bind_task_list(const struct agent_bind *b, int task, char *out, size_t len)
{
    size_t off = 0;
    out[0] = '\0';
    if (!b || !b->task_cpus || task < 0 || task >= b->ntasks) return;
    for (int p = 0; p < AGENT_MAX_PUS && off + 8 < len; p++)
        if (CPU_ISSET(p, &b->task_cpus[task]))
            off += (size_t)snprintf(out + off, len - off, "%s%d", off ? "," : "", p);
}

static int write_text(const char *path, const char *text, const struct agent_bind_ctx *c,
                      char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    size_t len = strlen(text);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len || (c->uid && fchown(fd, c->uid, c->gid)) ||
        close(fd) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    return 0;
}

/* Appends to a growing text buffer; -1 when out of memory. */
static int cat(char **buf, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int cat(char **buf, size_t *len, const char *fmt, ...)
{
    char *piece;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&piece, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    char *nb = realloc(*buf, *len + (size_t)n + 1);
    if (!nb) {
        free(piece);
        return -1;
    }
    memcpy(nb + *len, piece, (size_t)n + 1);
    *buf = nb;
    *len += (size_t)n;
    free(piece);
    return 0;
}

/* The hostfile (one line per node, slots = tasks_per_node) and, when
 * bindings are applied, the rankfile: rank N on its node's slice of PUs. */
static int mpi_files(const struct agent_launch *l, const struct agent_bind_ctx *c, int tpn,
                     int cpt, bool rankfile, char *host_path, char *rank_path, size_t plen,
                     char *err, size_t errlen)
{
    char *hosts = NULL, *ranks = NULL;
    size_t hl = 0, rl = 0;
    int rc = -1, rank = 0;
    size_t i;
    json_t *a;
    json_array_foreach(l->alloc, i, a) {
        const char *node = json_string_value(json_object_get(a, "node"));
        json_t *cl = json_object_get(a, "cpu_list");
        if (cat(&hosts, &hl, "%s slots=%d\n", node, tpn)) goto oom;
        for (int t = 0; t < tpn; t++, rank++) {
            if (!rankfile) continue;
            if ((size_t)((t + 1) * cpt) > json_array_size(cl)) {
                snprintf(err, errlen, "field \"alloc\"[%zu].cpu_list: %zu PUs for %d tasks of %d "
                         "CPUs", i, json_array_size(cl), tpn, cpt);
                goto out;
            }
            if (cat(&ranks, &rl, "rank %d=%s slot=", rank, node)) goto oom;
            for (int k = 0; k < cpt; k++)
                if (cat(&ranks, &rl, "%s%lld", k ? "," : "",
                        (long long)json_integer_value(json_array_get(cl, (size_t)(t * cpt + k)))))
                    goto oom;
            if (cat(&ranks, &rl, "\n")) goto oom;
        }
    }
    if (mkdir(c->mpi_dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", c->mpi_dir, strerror(errno));
        goto out;
    }
    snprintf(host_path, plen, "%s/hostfile", c->mpi_dir);
    snprintf(rank_path, plen, "%s/rankfile", c->mpi_dir);
    if (write_text(host_path, hosts, c, err, errlen) ||
        (rankfile && write_text(rank_path, ranks, c, err, errlen)))
        goto out;
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory writing the mpi hostfile");
out:
    free(hosts);
    free(ranks);
    return rc;
}

static int add_arg(char ***v, int *n, const char *s)
{
    char **nv = realloc(*v, (size_t)(*n + 2) * sizeof *nv);
    if (!nv) return -1;
    *v = nv;
    if (!(nv[*n] = strdup(s))) return -1;
    nv[++*n] = NULL;
    return 0;
}

/* mpirun [options] COMMAND...: Open MPI launches its daemons on the job's
 * nodes through commons-rsh (the relay) instead of ssh. */
static int mpi_argv(const struct agent_launch *l, const struct agent_bind_ctx *c,
                    struct agent_bind *b, int tpn, int cpt, char *err, size_t errlen)
{
    char host[PATH_MAX + 16], rank[PATH_MAX + 16], np[32];
    bool rankfile = b->apply;
    if (mpi_files(l, c, tpn, cpt, rankfile, host, rank, sizeof host, err, errlen)) return -1;
    snprintf(np, sizeof np, "%zu", json_array_size(l->alloc) * (size_t)tpn);
    /* Without tree spawn Open MPI tells each orted to daemonize, and the
     * agent ends a spawn's whole tree when its main process exits: the
     * orteds must stay attached to their spawn. */
    const char *pre[] = {"mpirun", "--hostfile", host, "--mca", "plm_rsh_agent", c->rsh_agent,
                         "--mca", "plm_rsh_no_tree_spawn", "1", "--leave-session-attached",
                         "-np", np};
    int n = 0, rc = 0;
    for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++) rc |= add_arg(&b->argv_override, &n, pre[i]);
    if (rankfile) {
        rc |= add_arg(&b->argv_override, &n, "--rankfile");
        rc |= add_arg(&b->argv_override, &n, rank);
        rc |= add_arg(&b->argv_override, &n, "--mca");
        rc |= add_arg(&b->argv_override, &n, "rmaps_rank_file_physical");
        rc |= add_arg(&b->argv_override, &n, "1");
    } else {
        rc |= add_arg(&b->argv_override, &n, "--bind-to");
        rc |= add_arg(&b->argv_override, &n, "none");
    }
    if (c->as_root) rc |= add_arg(&b->argv_override, &n, "--allow-run-as-root");
    size_t i;
    json_t *s;
    json_array_foreach(l->command, i, s) rc |= add_arg(&b->argv_override, &n, json_string_value(s));
    if (rc) snprintf(err, errlen, "out of memory building the mpirun command");
    snprintf(b->mpi_dir, sizeof b->mpi_dir, "%s", c->mpi_dir);
    return rc ? -1 : 0;
}

int agent_bind_plan(const struct agent_launch *l, const struct agent_bind_ctx *c,
                    struct agent_bind *b, char *err, size_t errlen)
{
    memset(b, 0, sizeof *b);
    const struct agent_topology *t = c->topo;
    b->mem_limit_mb = c->rlimit ? l->mem_mb : 0;
    b->ntasks = 1;
    const char *first_node = json_string_value(json_object_get(json_array_get(l->alloc, 0), "node"));
    bool first = !first_node || strcmp(first_node, c->node) == 0;
    int tpn = l->tasks_per_node > 0 ? (int)l->tasks_per_node : 1;
    if (l->mpi && l->spawn_id == 0) {
        if (!first) {
            snprintf(err, errlen, "mpi job: only the first node of alloc (%s) runs the launch",
                     first_node ? first_node : "?");
            return -1;
        }
        if (!l->command) {
            snprintf(err, errlen, "field \"script\": an mpi job runs its command as every rank; "
                     "give \"command\", not a script");
            return -1;
        }
    } else if (l->spawn_id == 0) {
        b->ntasks = tpn;
    }
    if (t && check_lists(l, t, err, errlen)) return -1;
    int cpt = l->cpus_per_task > 0 ? (int)l->cpus_per_task : (l->ncpu ? l->ncpu / tpn : 0);
    if (l->ncpu && (cpt < 1 || cpt * tpn > l->ncpu)) {
        snprintf(err, errlen, "field \"cpu_list\": %d PUs cannot hold %d tasks of %d CPUs",
                 l->ncpu, tpn, cpt < 1 ? 1 : cpt);
        return -1;
    }
    b->apply = t && t->applied && l->ncpu > 0;
    json_t *tasks = json_array();
    if (l->ncpu) {
        b->task_cpus = calloc((size_t)b->ntasks, sizeof *b->task_cpus);
        if (!b->task_cpus) {
            json_decref(tasks);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (int k = 0; k < b->ntasks; k++) {
            /* One task: the whole allocation (mpirun, a spawn, a 1-task job). */
            int from = b->ntasks == 1 ? 0 : k * cpt, n = b->ntasks == 1 ? l->ncpu : cpt;
            CPU_ZERO(&b->task_cpus[k]);
            for (int i = from; i < from + n; i++) CPU_SET(l->cpu_list[i], &b->task_cpus[k]);
            json_array_append_new(tasks, int_array(l->cpu_list + from, n));
        }
    }
    int numa[AGENT_MAX_NUMA], nn = 0;
    if (l->nnuma) {
        memcpy(numa, l->numa, sizeof(int) * (size_t)l->nnuma);
        nn = l->nnuma;
    } else if (t) {
        /* The NUMA nodes of the allocated PUs. */
        for (int i = 0; i < l->ncpu; i++) {
            int id = t->pu_numa[l->cpu_list[i]], k = 0;
            while (k < nn && numa[k] != id) k++;
            if (id >= 0 && k == nn && nn < AGENT_MAX_NUMA) numa[nn++] = id;
        }
    }
    for (int i = 0; i < nn; i++) set_node(b, numa[i]);
    b->membind = b->apply && nn > 0;
    int gnuma[AGENT_MAX_GPUS];
    for (int i = 0; i < l->ngpu; i++) gnuma[i] = t ? t->gpu_numa[l->gpu_list[i]] : -1;
    b->report = json_pack("{sb so so so so so}", "applied", b->apply, "cpu_list",
                          int_array(l->cpu_list, l->ncpu), "gpu_list",
                          int_array(l->gpu_list, l->ngpu), "numa", int_array(numa, nn),
                          "gpu_numa", int_array(gnuma, l->ngpu), "tasks", tasks);
    if (l->mpi && l->spawn_id == 0 && mpi_argv(l, c, b, tpn, cpt > 0 ? cpt : 1, err, errlen)) {
        agent_bind_free(b);
        return -1;
    }
    return 0;
}

void agent_bind_free(struct agent_bind *b)
{
    free(b->task_cpus);
    json_decref(b->report);
    for (char **a = b->argv_override; a && *a; a++) free(*a);
    free(b->argv_override);
    memset(b, 0, sizeof *b);
}
