/* rpcworker.c: runs the agent's calls to commonsd on a thread of their own,
 * so the main loop keeps supervising jobs (reaping, time limits, kill
 * graces) while a long poll is held or commonsd does not answer.
 *
 * One call at a time. Ownership passes with the call: the main thread hands
 * over the request and touches nothing of it until the result is ready
 * (signalled on an eventfd it polls); the worker hands back the reply. The
 * job runner is never touched here: it stays single-threaded. */
#include "agent_internal.h"
#include "cm_rpc.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct agent_rpcw {
    cm_rpc_client *rpc;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int efd;
    bool quit, pending, done;
    json_t *req, *reply;
    int timeout_ms, rc;
    char err[512];
};

static void *worker(void *arg)
{
    struct agent_rpcw *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->pending && !w->quit) pthread_cond_wait(&w->cv, &w->mu);
        if (w->quit) break;
        json_t *req = w->req;
        int timeout = w->timeout_ms;
        pthread_mutex_unlock(&w->mu);
        json_t *reply = NULL;
        char err[512] = "";
        int rc = cm_rpc_call(w->rpc, req, &reply, timeout, err, sizeof err);
        json_decref(req);
        pthread_mutex_lock(&w->mu);
        w->req = NULL;
        w->reply = reply;
        w->rc = rc;
        snprintf(w->err, sizeof w->err, "%s", err);
        w->pending = false;
        w->done = true;
        uint64_t one = 1;
        ssize_t n = write(w->efd, &one, sizeof one);
        (void)n; /* an eventfd counter cannot overflow at one write per call */
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int agent_rpcw_start(const char *addr, struct agent_rpcw **out, char *err, size_t errlen)
{
    struct agent_rpcw *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        free(w);
        return -1;
    }
    if (cm_rpc_client_open(addr, &w->rpc, err, errlen) != 0) {
        close(w->efd);
        free(w);
        return -1;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    int rc = pthread_create(&w->thread, NULL, worker, w);
    if (rc != 0) {
        snprintf(err, errlen, "pthread_create: %s", strerror(rc));
        cm_rpc_client_close(w->rpc);
        close(w->efd);
        free(w);
        return -1;
    }
    *out = w;
    return 0;
}

int agent_rpcw_fd(const struct agent_rpcw *w)
{
    return w->efd;
}

void agent_rpcw_submit(struct agent_rpcw *w, json_t *req, int timeout_ms)
{
    pthread_mutex_lock(&w->mu);
    w->req = req;
    w->timeout_ms = timeout_ms;
    w->pending = true;
    w->done = false;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int agent_rpcw_result(struct agent_rpcw *w, json_t **reply, char *err, size_t errlen)
{
    uint64_t v;
    ssize_t n = read(w->efd, &v, sizeof v);
    (void)n; /* drains the wake-up; `done` below is the truth */
    pthread_mutex_lock(&w->mu);
    int rc = 1;
    if (w->done) {
        rc = w->rc;
        *reply = w->reply;
        w->reply = NULL;
        snprintf(err, errlen, "%s", w->err);
        w->done = false;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void agent_rpcw_stop(struct agent_rpcw *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->quit = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    /* A call in flight ends by its own timeout; the loop waits for results
     * before it stops, so there is none here in practice. */
    pthread_join(w->thread, NULL);
    json_decref(w->reply);
    json_decref(w->req);
    cm_rpc_client_close(w->rpc);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    close(w->efd);
    free(w);
}
