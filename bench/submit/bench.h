/* bench.h: shared pieces of submit_bench, the job-submission benchmark of
 * issue 2 (see README.md in this folder).
 *
 * Every measurement goes through the real protocol (docs/protocol.md) with
 * the project's own RPC client (common/cm_rpc.h): one cm_rpc_client per
 * client thread, a real user token, and "job.submit" requests that commonsd
 * acknowledges only after its group commit.
 */
#ifndef BENCH_SUBMIT_H
#define BENCH_SUBMIT_H

#include "cm_rpc.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_RPC_TIMEOUT_MS 60000   /* a submit under heavy load */
#define BENCH_SETUP_TIMEOUT_MS 10000 /* whoami and stats before a run: is commonsd there? */

struct bench_opts {
    const char *addr;
    char *token;        /* read from --token-file */
    int jobs, clients;
    int hold;           /* throughput: submit held jobs (default) */
    const char *outdir; /* latency: where jobs write their start time */
    double sleep_s;     /* latency: how long each job sleeps */
    int timeout_s;      /* latency: give up after this long */
};

/* Wall-clock milliseconds with sub-millisecond precision (jobs report their
 * start with `date +%s%N`, so both sides use the same clock). */
double bench_now_ms(void);

/* Sorts v in place and returns the nearest-rank q-quantile (0 < q <= 1). */
double bench_quantile(double *v, size_t n, double q);

/* A job.submit request for a one-task job running argv (NULL-terminated). */
json_t *bench_submit_req(const char *token, const char *name, const char *const *argv, int hold,
                         const char *workdir, const char *stdout_path);

/* One job.submit round trip. Returns the job id (> 0), 0 when commonsd
 * answered with an error (err filled), -1 on a transport failure. */
int64_t bench_submit_once(cm_rpc_client *c, json_t *req, char *err, size_t errlen);

/* commonsd's own counters (the "stats" request): turns of its main loop that
 * handled requests, requests in them, and seconds spent in COMMIT. */
struct bench_server_stats {
    double batches, batch_requests, commit_s;
};
int bench_server_stats(cm_rpc_client *c, const char *token, struct bench_server_stats *out, char *err,
                       size_t errlen);

/* Subcommands; each prints human lines and one "RESULT {json}" line. */
int bench_throughput(const struct bench_opts *o);
int bench_latency(const struct bench_opts *o);

#endif
