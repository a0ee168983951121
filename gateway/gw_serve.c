/* gw_serve.c: concurrent REQ/REP calls to a serve replica (see gw_serve.h). */
#include "gw_serve.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVE_MAX_MSG (1024 * 1024) /* docs/serving.md */

struct gw_serve {
    nng_socket sock;
    char *url;
};

int gw_serve_open(const char *url, gw_serve **out, char *err, size_t errlen)
{
    gw_serve *s = calloc(1, sizeof *s);
    if (!s || !(s->url = strdup(url))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rv = nng_req0_open(&s->sock);
    if (rv == 0) rv = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, SERVE_MAX_MSG);
    if (rv == 0) rv = nng_socket_set_ms(s->sock, NNG_OPT_RECONNMINT, 50);
    if (rv == 0) rv = nng_socket_set_ms(s->sock, NNG_OPT_RECONNMAXT, 1000);
    if (rv == 0) rv = nng_dial(s->sock, url, NULL, NNG_FLAG_NONBLOCK);
    if (rv != 0) {
        snprintf(err, errlen, "cannot dial serve replica %s: %s", url, nng_strerror(rv));
        nng_close(s->sock);
        free(s->url);
        free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void gw_serve_close(gw_serve *s)
{
    if (!s) return;
    nng_close(s->sock);
    free(s->url);
    free(s);
}

const char *gw_serve_url(const gw_serve *s) { return s->url; }

int gw_serve_call(gw_serve *s, json_t *req, json_t **reply, int timeout_ms, char *err,
                  size_t errlen)
{
    *reply = NULL;
    if (!json_object_get(req, "v")) json_object_set_new(req, "v", json_integer(1));
    char *text = json_dumps(req, JSON_COMPACT);
    if (!text) {
        snprintf(err, errlen, "cannot encode the request");
        return -1;
    }
    size_t len = strlen(text);
    nng_ctx ctx;
    nng_aio *aio = NULL;
    nng_msg *msg = NULL;
    int rv = len > SERVE_MAX_MSG ? NNG_EMSGSIZE : nng_ctx_open(&ctx, s->sock);
    if (rv != 0) {
        free(text);
        snprintf(err, errlen, "%s: %s", s->url, nng_strerror(rv));
        return -1;
    }
    rv = nng_ctx_set_ms(ctx, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    if (rv == 0) rv = nng_aio_alloc(&aio, NULL, NULL);
    if (rv == 0) rv = nng_msg_alloc(&msg, 0);
    if (rv == 0) rv = nng_msg_append(msg, text, len);
    free(text);
    if (rv == 0) {
        nng_aio_set_timeout(aio, timeout_ms);
        nng_aio_set_msg(aio, msg);
        nng_ctx_send(ctx, aio);
        nng_aio_wait(aio);
        rv = nng_aio_result(aio);
        if (rv == 0) msg = NULL; /* the transport owns it now */
    }
    if (rv == 0) {
        nng_aio_set_timeout(aio, timeout_ms);
        nng_ctx_recv(ctx, aio);
        nng_aio_wait(aio);
        rv = nng_aio_result(aio);
        if (rv == 0) msg = nng_aio_get_msg(aio);
    }
    int result = -1;
    if (rv != 0) {
        snprintf(err, errlen, "%s: %s", s->url,
                 rv == NNG_ETIMEDOUT ? "no reply in time" : nng_strerror(rv));
    } else {
        json_error_t jerr;
        json_t *r = json_loadb(nng_msg_body(msg), nng_msg_len(msg), 0, &jerr);
        if (!r || !json_is_object(r) || !json_is_boolean(json_object_get(r, "ok"))) {
            snprintf(err, errlen, "%s: malformed reply%s%s", s->url, r ? "" : ": ",
                     r ? "" : jerr.text);
            json_decref(r);
        } else {
            *reply = r;
            result = 0;
        }
    }
    if (msg) nng_msg_free(msg);
    if (aio) nng_aio_free(aio);
    nng_ctx_close(ctx);
    return result;
}

