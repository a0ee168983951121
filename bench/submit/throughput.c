/* throughput.c: accepted jobs per second with C concurrent clients.
 *
 * Each client thread has its own connection (cm_rpc_client), connects and
 * authenticates with a whoami before the start barrier, then sends its share
 * of the jobs one request at a time (REQ/REP: a client waits for each
 * acknowledgement, like a user's `commons submit`). The clock runs from the
 * barrier to the last acknowledgement; only jobs commonsd accepted count.
 */
#include "bench.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct client {
    const struct bench_opts *o;
    pthread_barrier_t *start;
    int index, njobs;
    int accepted, rejected, failed, setup_failed;
    double *lat_ms; /* per request */
    char first_err[512];
};

static void *client_main(void *arg)
{
    struct client *cl = arg;
    cm_rpc_client *c = NULL;
    char err[512] = "";
    json_t *who = json_pack("{s:s, s:s}", "type", "whoami", "token", cl->o->token), *reply = NULL;
    if (cm_rpc_client_open(cl->o->addr, &c, err, sizeof err) != 0 ||
        cm_rpc_call(c, who, &reply, BENCH_SETUP_TIMEOUT_MS, err, sizeof err) != 0 ||
        !json_is_true(json_object_get(reply, "ok"))) {
        if (reply) cm_reply_error_text(reply, err, sizeof err);
        snprintf(cl->first_err, sizeof cl->first_err, "client %d cannot start: %s", cl->index, err);
        cl->setup_failed = 1;
    }
    json_decref(who);
    json_decref(reply);
    pthread_barrier_wait(cl->start);
    if (cl->setup_failed) {
        cm_rpc_client_close(c);
        return NULL;
    }
    static const char *const argv[] = {"true", NULL};
    for (int i = 0; i < cl->njobs; i++) {
        char name[64];
        snprintf(name, sizeof name, "bench-%d-%d", cl->index, i);
        json_t *req = bench_submit_req(cl->o->token, name, argv, cl->o->hold, "/tmp", "/dev/null");
        double t0 = bench_now_ms();
        int64_t id = bench_submit_once(c, req, err, sizeof err);
        cl->lat_ms[i] = bench_now_ms() - t0;
        json_decref(req);
        if (id > 0) cl->accepted++;
        else {
            if (id == 0) cl->rejected++;
            else cl->failed++;
            if (!cl->first_err[0]) snprintf(cl->first_err, sizeof cl->first_err, "client %d: %s", cl->index, err);
            if (id < 0) break; /* transport failure: the run is lost; do not wait out a timeout per job */
        }
    }
    cm_rpc_client_close(c);
    return NULL;
}

int bench_throughput(const struct bench_opts *o)
{
    int nc = o->clients;
    struct client *cls = calloc((size_t)nc, sizeof *cls);
    pthread_t *th = calloc((size_t)nc, sizeof *th);
    double *lat = calloc((size_t)o->jobs, sizeof *lat);
    /* commonsd's counters before and after tell how many requests shared
     * each commit and how much of the time was COMMIT (fsync). */
    struct bench_server_stats s0 = {0}, s1 = {0};
    cm_rpc_client *sc = NULL;
    char serr[512] = "";
    if (cm_rpc_client_open(o->addr, &sc, serr, sizeof serr) != 0 ||
        bench_server_stats(sc, o->token, &s0, serr, sizeof serr) != 0) {
        fprintf(stderr, "submit_bench throughput: commonsd at %s does not answer 'stats': %s\n", o->addr, serr);
        cm_rpc_client_close(sc);
        free(cls);
        free(th);
        free(lat);
        return 1;
    }
    int have_stats = 1;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)nc + 1);
    int off = 0;
    for (int i = 0; i < nc; i++) {
        cls[i].o = o;
        cls[i].start = &start;
        cls[i].index = i;
        cls[i].njobs = o->jobs / nc + (i < o->jobs % nc);
        cls[i].lat_ms = lat + off;
        off += cls[i].njobs;
        if (pthread_create(&th[i], NULL, client_main, &cls[i]) != 0) {
            fprintf(stderr, "submit_bench: cannot start client thread %d\n", i);
            exit(1);
        }
    }
    pthread_barrier_wait(&start);
    double t0 = bench_now_ms();
    for (int i = 0; i < nc; i++) pthread_join(th[i], NULL);
    double secs = (bench_now_ms() - t0) / 1e3;
    pthread_barrier_destroy(&start);
    have_stats = have_stats && bench_server_stats(sc, o->token, &s1, serr, sizeof serr) == 0;
    cm_rpc_client_close(sc);
    /* The two stats requests are in the counters too: subtract them. */
    double turns = s1.batches - s0.batches - 1, reqs = s1.batch_requests - s0.batch_requests - 1;
    double per_commit = have_stats && turns > 0 ? reqs / turns : 0;
    double commit_share = have_stats && secs > 0 ? (s1.commit_s - s0.commit_s) / secs : 0;

    int accepted = 0, rejected = 0, failed = 0, setup_failed = 0;
    const char *first_err = "";
    for (int i = 0; i < nc; i++) {
        accepted += cls[i].accepted;
        rejected += cls[i].rejected;
        failed += cls[i].failed;
        setup_failed += cls[i].setup_failed;
        if (!first_err[0] && cls[i].first_err[0]) first_err = cls[i].first_err;
    }
    double rate = secs > 0 ? accepted / secs : 0;
    double p50 = bench_quantile(lat, (size_t)o->jobs, 0.50), p99 = bench_quantile(lat, (size_t)o->jobs, 0.99);
    printf("throughput: %d jobs (%s), %d clients: %d accepted, %d rejected, %d transport errors in %.3f s"
           " = %.0f accepted jobs/s; per-request latency p50 %.2f ms, p99 %.2f ms\n",
           o->jobs, o->hold ? "held" : "not held", nc, accepted, rejected, failed, secs, rate, p50, p99);
    if (have_stats)
        printf("commonsd: %.0f turns with requests, %.2f requests per commit, COMMIT took %.0f%% of the time\n", turns,
               per_commit, commit_share * 100);
    else
        printf("commonsd stats unavailable: %s\n", serr);
    if (first_err[0]) printf("first error: %s\n", first_err);
    json_t *res = json_pack("{s:s, s:i, s:i, s:b, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f}", "mode", "throughput",
                            "jobs", o->jobs, "clients", nc, "hold", o->hold, "accepted", accepted, "rejected",
                            rejected, "errors", failed, "seconds", secs, "jobs_per_s", rate, "rpc_p50_ms", p50,
                            "rpc_p99_ms", p99, "requests_per_commit", per_commit, "commit_share", commit_share);
    char *text = json_dumps(res, JSON_COMPACT);
    printf("RESULT %s\n", text);
    free(text);
    json_decref(res);
    free(cls);
    free(th);
    free(lat);
    return (accepted == o->jobs && !setup_failed) ? 0 : 1;
}
