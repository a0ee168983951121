/* server.c: nng REP contexts feeding commonsd's main loop (see server.h). */
#include "server.h"

#include "cm_log.h"
#include "cm_rpc.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum req_state { REQ_RECV, REQ_QUEUED, REQ_SEND };

struct srv_req {
    struct server *srv;
    nng_ctx ctx;
    nng_aio *aio;
    enum req_state state;
    nng_msg *msg;
    struct srv_req *next;
};

struct server {
    nng_socket sock;
    nng_mtx *mtx;
    nng_cv *cv;
    struct srv_req *head, *tail;
    struct srv_req reqs[SERVER_CONTEXTS];
    int closing;
};

static void req_cb(void *arg)
{
    struct srv_req *r = arg;
    struct server *s = r->srv;
    int rv = nng_aio_result(r->aio);
    if (r->state == REQ_SEND) {
        if (rv != 0) nng_msg_free(nng_aio_get_msg(r->aio)); /* client gone: drop the reply */
        r->state = REQ_RECV;
        nng_ctx_recv(r->ctx, r->aio);
        return;
    }
    if (rv != 0) {
        if (rv != NNG_ECLOSED && rv != NNG_ECANCELED) nng_ctx_recv(r->ctx, r->aio);
        return;
    }
    r->msg = nng_aio_get_msg(r->aio);
    /* NUL-terminate so handlers can treat the body as a C string. */
    if (nng_msg_append(r->msg, "", 1) != 0) {
        nng_msg_free(r->msg);
        nng_ctx_recv(r->ctx, r->aio);
        return;
    }
    r->state = REQ_QUEUED;
    r->next = NULL;
    nng_mtx_lock(s->mtx);
    if (s->tail) s->tail->next = r;
    else s->head = r;
    s->tail = r;
    nng_cv_wake(s->cv);
    nng_mtx_unlock(s->mtx);
}

/* Frees a server whose contexts never started receiving. */
static void server_free_unstarted(struct server *s)
{
    nng_close(s->sock);
    for (int i = 0; i < SERVER_CONTEXTS; i++)
        if (s->reqs[i].aio) nng_aio_free(s->reqs[i].aio);
    if (s->cv) nng_cv_free(s->cv);
    if (s->mtx) nng_mtx_free(s->mtx);
    free(s);
}

int server_open(struct server **out, const char *url, const char *tls_cert_key, char *err, size_t errlen)
{
    struct server *s = calloc(1, sizeof *s);
    int rv;
    if ((rv = nng_rep0_open(&s->sock)) != 0 || (rv = nng_mtx_alloc(&s->mtx)) != 0 ||
        (rv = nng_cv_alloc(&s->cv, s->mtx)) != 0 ||
        (rv = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, CM_RPC_MAX_MSG)) != 0) {
        snprintf(err, errlen, "cannot open the server socket: %s", nng_strerror(rv));
        free(s);
        return -1;
    }
    for (int i = 0; i < SERVER_CONTEXTS; i++) {
        struct srv_req *r = &s->reqs[i];
        r->srv = s;
        if ((rv = nng_ctx_open(&r->ctx, s->sock)) != 0 || (rv = nng_aio_alloc(&r->aio, req_cb, r)) != 0) {
            snprintf(err, errlen, "cannot open server contexts: %s", nng_strerror(rv));
            server_free_unstarted(s);
            return -1;
        }
    }
    int tls = strncmp(url, "tls+tcp://", 10) == 0;
    if (tls != (tls_cert_key != NULL)) {
        snprintf(err, errlen, tls ? "%s needs --tls-cert FILE (certificate chain and key, PEM)"
                                  : "--tls-cert needs a tls+tcp:// listen address, not %s", url);
        server_free_unstarted(s);
        return -1;
    }
    nng_listener l;
    rv = nng_listener_create(&l, s->sock, url);
    if (rv == 0 && tls) {
        nng_tls_config *cfg = NULL;
        if ((rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_SERVER)) == 0 &&
            (rv = nng_tls_config_cert_key_file(cfg, tls_cert_key, NULL)) == 0)
            rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, cfg);
        if (cfg) nng_tls_config_free(cfg);
        if (rv != 0) {
            snprintf(err, errlen, "TLS certificate %s: %s", tls_cert_key, nng_strerror(rv));
            server_free_unstarted(s);
            return -1;
        }
    }
    if (rv == 0) rv = nng_listener_start(l, 0);
    if (rv != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", url, nng_strerror(rv));
        server_free_unstarted(s);
        return -1;
    }
    for (int i = 0; i < SERVER_CONTEXTS; i++) {
        s->reqs[i].state = REQ_RECV;
        nng_ctx_recv(s->reqs[i].ctx, s->reqs[i].aio);
    }
    *out = s;
    return 0;
}

void server_close(struct server *s)
{
    if (!s) return;
    nng_close(s->sock);
    for (int i = 0; i < SERVER_CONTEXTS; i++) {
        nng_aio_stop(s->reqs[i].aio);
        nng_aio_free(s->reqs[i].aio);
        if (s->reqs[i].state == REQ_QUEUED && s->reqs[i].msg) nng_msg_free(s->reqs[i].msg);
    }
    nng_cv_free(s->cv);
    nng_mtx_free(s->mtx);
    free(s);
}

size_t server_take(struct server *s, struct srv_req **out, size_t max, int timeout_ms)
{
    nng_mtx_lock(s->mtx);
    if (!s->head && timeout_ms > 0) nng_cv_until(s->cv, nng_clock() + (nng_time)timeout_ms);
    size_t n = 0;
    while (s->head && n < max) {
        out[n++] = s->head;
        s->head = s->head->next;
    }
    if (!s->head) s->tail = NULL;
    nng_mtx_unlock(s->mtx);
    return n;
}

const char *server_req_body(struct srv_req *r, size_t *len)
{
    *len = nng_msg_len(r->msg) - 1;
    return nng_msg_body(r->msg);
}

void server_reply(struct srv_req *r, json_t *reply)
{
    char *text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    nng_msg_clear(r->msg);
    if (!text || nng_msg_append(r->msg, text, strlen(text)) != 0) {
        static const char oom[] = "{\"ok\":false,\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        nng_msg_clear(r->msg);
        nng_msg_append(r->msg, oom, sizeof oom - 1);
    }
    free(text);
    r->state = REQ_SEND;
    nng_aio_set_msg(r->aio, r->msg);
    r->msg = NULL;
    nng_ctx_send(r->ctx, r->aio);
}
