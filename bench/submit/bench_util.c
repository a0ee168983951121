/* bench_util.c: clock, quantiles and the job.submit round trip (bench.h). */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_quantile(double *v, size_t n, double q)
{
    if (n == 0) return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t rank = (size_t)(q * (double)n + 0.999999); /* nearest rank, 1-based */
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

json_t *bench_submit_req(const char *token, const char *name, const char *const *argv, int hold,
                         const char *workdir, const char *stdout_path)
{
    json_t *cmd = json_array();
    for (int i = 0; argv[i]; i++) json_array_append_new(cmd, json_string(argv[i]));
    json_t *job = json_pack("{s:s, s:o, s:b, s:i}", "name", name, "command", cmd, "hold", hold, "time_limit_s", 600);
    if (workdir) json_object_set_new(job, "workdir", json_string(workdir));
    if (stdout_path) json_object_set_new(job, "stdout", json_string(stdout_path));
    return json_pack("{s:s, s:s, s:o}", "type", "job.submit", "token", token, "job", job);
}

int64_t bench_submit_once(cm_rpc_client *c, json_t *req, char *err, size_t errlen)
{
    json_t *reply = NULL;
    if (cm_rpc_call(c, req, &reply, BENCH_RPC_TIMEOUT_MS, err, errlen) != 0) return -1;
    int64_t id = 0;
    if (json_is_true(json_object_get(reply, "ok")) && json_is_integer(json_object_get(reply, "job_id")))
        id = json_integer_value(json_object_get(reply, "job_id"));
    else
        cm_reply_error_text(reply, err, errlen);
    json_decref(reply);
    return id;
}

/* Reads one counter from Prometheus text ("name value" on its own line). */
static double metric(const char *text, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, name, len) == 0 && p[len] == ' ') return strtod(p + len + 1, NULL);
    return -1;
}

int bench_server_stats(cm_rpc_client *c, const char *token, struct bench_server_stats *out, char *err, size_t errlen)
{
    json_t *req = json_pack("{s:s, s:s}", "type", "stats", "token", token), *reply = NULL;
    int rc = cm_rpc_call(c, req, &reply, BENCH_SETUP_TIMEOUT_MS, err, errlen);
    json_decref(req);
    if (rc != 0) return -1;
    const char *text = json_string_value(json_object_get(reply, "text"));
    if (!text) {
        cm_reply_error_text(reply, err, errlen);
        json_decref(reply);
        return -1;
    }
    out->batches = metric(text, "commons_batches_total");
    out->batch_requests = metric(text, "commons_batch_requests_total");
    out->commit_s = metric(text, "commons_commit_seconds_total");
    json_decref(reply);
    return 0;
}
