/* slurm_api_bench: Slurm's side of the protocol-level throughput comparison.
 *
 * The same shape as submit_bench throughput: C client threads in one
 * process, each submitting its share of held `true` jobs one RPC at a time,
 * here through libslurm's slurm_submit_batch_job() (what sbatch calls after
 * parsing its options). Run by slurm.sh with SLURM_CONF pointing at the
 * benchmark's cluster.
 *
 *   slurm_api_bench JOBS CLIENTS
 *
 * Prints a human line and "RESULT {json}" like submit_bench.
 */
#include <slurm/slurm.h>
#include <slurm/slurm_errno.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct client {
    pthread_barrier_t *start;
    int njobs, accepted, failed;
    char first_err[256];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    char *env[] = {"PATH=/usr/bin:/bin", NULL};
    pthread_barrier_wait(cl->start);
    for (int i = 0; i < cl->njobs; i++) {
        job_desc_msg_t d;
        slurm_init_job_desc_msg(&d);
        d.name = "bench";
        d.script = "#!/bin/sh\ntrue\n";
        d.work_dir = "/tmp";
        d.std_out = "/dev/null";
        d.environment = env;
        d.env_size = 1;
        d.user_id = getuid();
        d.group_id = getgid();
        d.min_nodes = 1;
        d.priority = 0; /* held, as sbatch --hold does */
        submit_response_msg_t *resp = NULL;
        if (slurm_submit_batch_job(&d, &resp) == SLURM_SUCCESS && resp) {
            cl->accepted++;
        } else {
            cl->failed++;
            if (!cl->first_err[0]) snprintf(cl->first_err, sizeof cl->first_err, "%s", slurm_strerror(slurm_get_errno()));
        }
        slurm_free_submit_response_response_msg(resp);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3 || atoi(argv[1]) < 1 || atoi(argv[2]) < 1 || atoi(argv[2]) > 200) {
        fprintf(stderr, "usage: slurm_api_bench JOBS CLIENTS (CLIENTS 1 to 200)\n");
        return 2;
    }
    int jobs = atoi(argv[1]), nc = atoi(argv[2]);
    slurm_init(NULL);
    struct client *cls = calloc((size_t)nc, sizeof *cls);
    pthread_t *th = calloc((size_t)nc, sizeof *th);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)nc + 1);
    for (int i = 0; i < nc; i++) {
        cls[i].start = &start;
        cls[i].njobs = jobs / nc + (i < jobs % nc);
        pthread_create(&th[i], NULL, client_main, &cls[i]);
    }
    pthread_barrier_wait(&start);
    double t0 = now_s();
    for (int i = 0; i < nc; i++) pthread_join(th[i], NULL);
    double secs = now_s() - t0;
    int accepted = 0, failed = 0;
    const char *err = "";
    for (int i = 0; i < nc; i++) {
        accepted += cls[i].accepted;
        failed += cls[i].failed;
        if (!err[0]) err = cls[i].first_err;
    }
    double rate = secs > 0 ? accepted / secs : 0;
    printf("slurm api: %d jobs, %d clients: %d accepted, %d failed in %.3f s = %.1f accepted jobs/s\n", jobs, nc,
           accepted, failed, secs, rate);
    if (err[0]) printf("first error: %s\n", err);
    printf("RESULT {\"mode\":\"throughput\",\"label\":\"slurm api\",\"jobs\":%d,\"clients\":%d,\"accepted\":%d,"
           "\"errors\":%d,\"seconds\":%.3f,\"jobs_per_s\":%.1f}\n",
           jobs, nc, accepted, failed, secs, rate);
    free(cls);
    free(th);
    slurm_fini();
    return accepted == jobs ? 0 : 1;
}
