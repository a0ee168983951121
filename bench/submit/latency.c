/* latency.c: time from submit to RUNNING for N short jobs (default 1,000
 * jobs of `sleep 1`) on a cluster with a real agent.
 *
 * Three clocks, all wall-clock milliseconds on this machine:
 *  - accepted: when the client got commonsd's acknowledgement of the submit;
 *  - left PENDING: a poller thread asks job.list for the PENDING jobs every
 *    POLL_MS; a job that was accepted before a poll was sent and is absent
 *    from its answer started (RUNNING: placed and sent to its agent) no later
 *    than when that answer arrived. The bound is loose by up to one poll
 *    interval (reported: the mean time between polls, answers included).
 *  - process start: each job runs `date +%s%N` first, into its stdout file,
 *    so the agent's fork/exec/setuid path is included.
 * Reported: median and p99 of (left PENDING - accepted) and (process start -
 * accepted), and the time from the first submit until all jobs were
 * RUNNING, had started, and had ended.
 */
#include "bench.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POLL_MS 10

struct slot {
    int64_t id;
    double accept_ms, left_ms, proc_ms;
};

struct run {
    const struct bench_opts *o;
    pthread_mutex_t mu;
    struct slot *slots;
    int nfilled, nsubmitted_or_failed, nfailed;
    int stop;
    int npolls;                  /* job.list requests the poller made */
    double first_poll, last_poll; /* when the first and the last were sent */
    char first_err[512];
    double t0;
};

struct submitter {
    struct run *r;
    int index, njobs;
};

static void *submit_main(void *arg)
{
    struct submitter *s = arg;
    struct run *r = s->r;
    const struct bench_opts *o = r->o;
    cm_rpc_client *c = NULL;
    char err[512] = "", cmd[128], out[4200];
    snprintf(cmd, sizeof cmd, "date +%%s%%N; exec sleep %g", o->sleep_s);
    snprintf(out, sizeof out, "%s/%%j.out", o->outdir);
    const char *const argv[] = {"/bin/sh", "-c", cmd, NULL};
    int lost = cm_rpc_client_open(o->addr, &c, err, sizeof err) != 0;
    for (int i = 0; i < s->njobs; i++) {
        if (lost) { /* the run is lost: count the rest as failed at once */
            pthread_mutex_lock(&r->mu);
            r->nfailed += s->njobs - i;
            r->nsubmitted_or_failed += s->njobs - i;
            if (!r->first_err[0]) snprintf(r->first_err, sizeof r->first_err, "client %d: %s", s->index, err);
            pthread_mutex_unlock(&r->mu);
            break;
        }
        char name[64];
        snprintf(name, sizeof name, "lat-%d-%d", s->index, i);
        json_t *req = bench_submit_req(o->token, name, argv, 0, o->outdir, out);
        int64_t id = bench_submit_once(c, req, err, sizeof err);
        lost = id < 0; /* a transport failure ends this client too */
        double t = bench_now_ms();
        json_decref(req);
        pthread_mutex_lock(&r->mu);
        if (id > 0) r->slots[r->nfilled++] = (struct slot){.id = id, .accept_ms = t};
        else {
            r->nfailed++;
            if (!r->first_err[0]) snprintf(r->first_err, sizeof r->first_err, "client %d: %s", s->index, err);
        }
        r->nsubmitted_or_failed++;
        pthread_mutex_unlock(&r->mu);
    }
    cm_rpc_client_close(c);
    return NULL;
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Ids of the jobs in state (sorted), or NULL on failure. */
static int64_t *list_ids(cm_rpc_client *c, const char *token, const char *state, size_t *n, char *err, size_t errlen)
{
    json_t *req = json_pack("{s:s, s:s, s:s}", "type", "job.list", "token", token, "state", state), *reply = NULL;
    int rc = cm_rpc_call(c, req, &reply, BENCH_RPC_TIMEOUT_MS, err, errlen);
    json_decref(req);
    if (rc != 0) return NULL;
    json_t *jobs = json_object_get(reply, "jobs");
    if (!json_is_array(jobs)) {
        cm_reply_error_text(reply, err, errlen);
        json_decref(reply);
        return NULL;
    }
    *n = json_array_size(jobs);
    int64_t *ids = malloc(sizeof *ids * (*n + 1));
    for (size_t i = 0; i < *n; i++) ids[i] = json_integer_value(json_object_get(json_array_get(jobs, i), "id"));
    json_decref(reply);
    qsort(ids, *n, sizeof *ids, cmp_id);
    return ids;
}

static void *poll_main(void *arg)
{
    struct run *r = arg;
    cm_rpc_client *c = NULL;
    char err[512];
    if (cm_rpc_client_open(r->o->addr, &c, err, sizeof err) != 0) return NULL;
    for (;;) {
        double t_send = bench_now_ms();
        size_t n = 0;
        int64_t *pending = list_ids(c, r->o->token, "PENDING", &n, err, sizeof err);
        double t_recv = bench_now_ms();
        pthread_mutex_lock(&r->mu);
        if (!r->npolls++) r->first_poll = t_send;
        r->last_poll = t_send;
        int left = 0;
        for (int i = 0; pending && i < r->nfilled; i++) {
            struct slot *s = &r->slots[i];
            if (!s->left_ms && s->accept_ms <= t_send && !bsearch(&s->id, pending, n, sizeof *pending, cmp_id))
                s->left_ms = t_recv;
            left += s->left_ms > 0;
        }
        int done = r->stop || (r->nsubmitted_or_failed == r->o->jobs && left == r->nfilled);
        pthread_mutex_unlock(&r->mu);
        free(pending);
        if (done) break;
        usleep(POLL_MS * 1000);
    }
    cm_rpc_client_close(c);
    return NULL;
}

/* Reads the start time (ns since the epoch) a job wrote first into its stdout. */
static double proc_start_ms(const char *outdir, int64_t id)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%lld.out", outdir, (long long)id);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    long long ns = 0;
    int ok = fscanf(f, "%lld", &ns) == 1;
    fclose(f);
    return ok ? (double)ns / 1e6 : 0;
}

int bench_latency(const struct bench_opts *o)
{
    {
        struct bench_server_stats st;
        cm_rpc_client *c = NULL;
        char err[512] = "";
        int ok = cm_rpc_client_open(o->addr, &c, err, sizeof err) == 0 && bench_server_stats(c, o->token, &st, err, sizeof err) == 0;
        cm_rpc_client_close(c);
        if (!ok) {
            fprintf(stderr, "submit_bench latency: commonsd at %s does not answer 'stats': %s\n", o->addr, err);
            return 1;
        }
    }
    struct run r = {.o = o};
    pthread_mutex_init(&r.mu, NULL);
    r.slots = calloc((size_t)o->jobs, sizeof *r.slots);
    struct submitter *subs = calloc((size_t)o->clients, sizeof *subs);
    pthread_t *th = calloc((size_t)o->clients, sizeof *th), poller;
    r.t0 = bench_now_ms();
    pthread_create(&poller, NULL, poll_main, &r);
    for (int i = 0; i < o->clients; i++) {
        subs[i] = (struct submitter){.r = &r, .index = i, .njobs = o->jobs / o->clients + (i < o->jobs % o->clients)};
        pthread_create(&th[i], NULL, submit_main, &subs[i]);
    }
    for (int i = 0; i < o->clients; i++) pthread_join(th[i], NULL);
    double t_submitted = bench_now_ms();
    /* Wait for every accepted job to leave PENDING, then for all to end. */
    int timed_out = 0;
    for (;;) {
        pthread_mutex_lock(&r.mu);
        int left = 0;
        for (int i = 0; i < r.nfilled; i++) left += r.slots[i].left_ms > 0;
        if (left == r.nfilled) {
            pthread_mutex_unlock(&r.mu);
            break;
        }
        if (bench_now_ms() - r.t0 > o->timeout_s * 1e3) {
            r.stop = timed_out = 1;
            pthread_mutex_unlock(&r.mu);
            break;
        }
        pthread_mutex_unlock(&r.mu);
        usleep(20 * 1000);
    }
    pthread_join(poller, NULL);
    cm_rpc_client *c = NULL;
    char err[512] = "";
    double t_done = 0;
    if (cm_rpc_client_open(o->addr, &c, err, sizeof err) == 0) {
        while (!timed_out) {
            size_t n = 0;
            int64_t *running = list_ids(c, o->token, "RUNNING", &n, err, sizeof err);
            free(running);
            if (running && n == 0) {
                t_done = bench_now_ms();
                break;
            }
            if (bench_now_ms() - r.t0 > o->timeout_s * 1e3) timed_out = 1;
            else usleep(20 * 1000);
        }
    }
    size_t ncompleted = 0;
    int64_t *completed = timed_out ? NULL : list_ids(c, o->token, "COMPLETED", &ncompleted, err, sizeof err);
    free(completed);
    cm_rpc_client_close(c);

    int n = r.nfilled, nproc = 0;
    double *run_lat = calloc((size_t)n + 1, sizeof(double)), *proc_lat = calloc((size_t)n + 1, sizeof(double));
    double last_left = 0, last_proc = 0;
    for (int i = 0; i < n; i++) {
        struct slot *s = &r.slots[i];
        run_lat[i] = s->left_ms - s->accept_ms;
        if (s->left_ms > last_left) last_left = s->left_ms;
        s->proc_ms = proc_start_ms(o->outdir, s->id);
        if (s->proc_ms > 0) {
            proc_lat[nproc++] = s->proc_ms - s->accept_ms;
            if (s->proc_ms > last_proc) last_proc = s->proc_ms;
        }
    }
    double run_p50 = bench_quantile(run_lat, (size_t)n, 0.5), run_p99 = bench_quantile(run_lat, (size_t)n, 0.99);
    double proc_p50 = bench_quantile(proc_lat, (size_t)nproc, 0.5), proc_p99 = bench_quantile(proc_lat, (size_t)nproc, 0.99);
    double submit_s = (t_submitted - r.t0) / 1e3, all_running_s = (last_left - r.t0) / 1e3;
    double poll_ms = r.npolls > 1 ? (r.last_poll - r.first_poll) / (r.npolls - 1) : 0;
    double all_started_s = nproc ? (last_proc - r.t0) / 1e3 : 0, all_done_s = t_done ? (t_done - r.t0) / 1e3 : 0;
    printf("latency: %d of %d jobs accepted with %d clients in %.2f s%s\n", n, o->jobs, o->clients, submit_s,
           timed_out ? " (TIMED OUT waiting for them)" : "");
    printf("  submit -> RUNNING (seen by polling, one poll every %.1f ms): median %.1f ms, p99 %.1f ms;"
           " all RUNNING after %.2f s\n",
           poll_ms, run_p50, run_p99, all_running_s);
    printf("  submit -> process started (job's own clock): median %.1f ms, p99 %.1f ms over %d jobs; all started after %.2f s\n",
           proc_p50, proc_p99, nproc, all_started_s);
    printf("  all ended after %.2f s; %zu COMPLETED\n", all_done_s, ncompleted);
    if (r.first_err[0]) printf("first error: %s\n", r.first_err);
    json_t *res = json_pack("{s:s, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:b, s:f}", "mode", "latency",
                            "jobs", o->jobs, "clients", o->clients, "accepted", n, "proc_reported", nproc,
                            "submit_s", submit_s, "running_p50_ms", run_p50, "running_p99_ms", run_p99,
                            "all_running_s", all_running_s, "proc_p50_ms", proc_p50, "proc_p99_ms", proc_p99,
                            "all_started_s", all_started_s, "all_done_s", all_done_s, "completed",
                            (json_int_t)ncompleted, "timed_out", timed_out, "poll_ms", poll_ms);
    char *text = json_dumps(res, JSON_COMPACT);
    printf("RESULT %s\n", text);
    free(text);
    json_decref(res);
    int ok = !timed_out && n == o->jobs && nproc == n && (int)ncompleted == n;
    free(run_lat);
    free(proc_lat);
    free(r.slots);
    free(subs);
    free(th);
    pthread_mutex_destroy(&r.mu);
    return ok ? 0 : 1;
}
