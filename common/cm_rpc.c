/* cm_rpc.c: the client side of the wire protocol (see cm_rpc.h, docs/protocol.md). */
#include "cm_rpc.h"

#include "cm_crypto.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cm_rpc_client {
    nng_socket sock;
};

int cm_rpc_client_open(const char *addr, cm_rpc_client **out, char *err, size_t errlen)
{
    cm_rpc_client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rv = nng_req0_open(&c->sock);
    if (rv == 0) rv = nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, CM_RPC_MAX_REPLY);
    /* Resending is the caller's decision (a resent submit could be accepted twice). */
    if (rv == 0) rv = nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    if (rv == 0) rv = nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 50);
    if (rv == 0) rv = nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 1000);
    nng_dialer d;
    if (rv == 0) rv = nng_dialer_create(&d, c->sock, addr);
    if (rv == 0 && strncmp(addr, "tls+tcp://", 10) == 0) {
        const char *ca = getenv("COMMONS_TLS_CA");
        char host[256];
        snprintf(host, sizeof host, "%s", addr + 10);
        host[strcspn(host, ":/")] = '\0';
        nng_tls_config *cfg = NULL;
        if (!ca || !*ca) {
            snprintf(err, errlen, "%s: set COMMONS_TLS_CA to the PEM file of the CA that signed the server's certificate", addr);
            nng_close(c->sock);
            free(c);
            return -1;
        }
        if ((rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_CLIENT)) == 0 &&
            (rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED)) == 0 &&
            (rv = nng_tls_config_ca_file(cfg, ca)) == 0 && (rv = nng_tls_config_server_name(cfg, host)) == 0)
            rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg);
        if (cfg) nng_tls_config_free(cfg); /* the dialer holds its own reference */
        if (rv != 0) {
            snprintf(err, errlen, "TLS setup for %s with CA file %s: %s", addr, ca, nng_strerror(rv));
            nng_close(c->sock);
            free(c);
            return -1;
        }
    }
    if (rv == 0) rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK);
    if (rv != 0) {
        snprintf(err, errlen, "cannot dial %s: %s", addr, nng_strerror(rv));
        nng_close(c->sock);
        free(c);
        return -1;
    }
    *out = c;
    return 0;
}

void cm_rpc_client_close(cm_rpc_client *c)
{
    if (!c) return;
    nng_close(c->sock);
    free(c);
}

int cm_rpc_call(cm_rpc_client *c, json_t *req, json_t **reply, int timeout_ms,
                char *err, size_t errlen)
{
    if (!json_object_get(req, "v")) json_object_set_new(req, "v", json_integer(CM_RPC_VERSION));
    char *text = json_dumps(req, JSON_COMPACT);
    if (!text) {
        snprintf(err, errlen, "cannot encode request");
        return -1;
    }
    size_t len = strlen(text);
    if (len > CM_RPC_MAX_MSG) {
        snprintf(err, errlen, "request of %zu bytes exceeds the %d-byte message limit", len,
                 CM_RPC_MAX_MSG);
        free(text);
        return -1;
    }
    nng_socket_set_ms(c->sock, NNG_OPT_SENDTIMEO, timeout_ms);
    nng_socket_set_ms(c->sock, NNG_OPT_RECVTIMEO, timeout_ms);
    int rv = nng_send(c->sock, text, len, 0);
    free(text);
    if (rv != 0) {
        snprintf(err, errlen, "send failed: %s", nng_strerror(rv));
        return -1;
    }
    char *buf = NULL;
    size_t n = 0;
    rv = nng_recv(c->sock, &buf, &n, NNG_FLAG_ALLOC);
    if (rv != 0) {
        snprintf(err, errlen, "%s", rv == NNG_ETIMEDOUT ? "no reply from the server (timed out; is commonsd running?)"
                                                        : nng_strerror(rv));
        return -1;
    }
    json_error_t jerr;
    json_t *r = json_loadb(buf, n, 0, &jerr);
    nng_free(buf, n);
    if (!r || !json_is_object(r) || !json_is_boolean(json_object_get(r, "ok"))) {
        snprintf(err, errlen, "malformed reply from the server%s%s", r ? "" : ": ",
                 r ? "" : jerr.text);
        json_decref(r);
        return -1;
    }
    *reply = r;
    return 0;
}

json_t *cm_rpc_sign(const char *key, json_t *payload)
{
    char *text = json_dumps(payload, JSON_COMPACT);
    if (!text) return NULL;
    char sig[65];
    cm_hmac_sha256_hex(key, text, strlen(text), sig);
    json_t *frame = json_pack("{s:s, s:i, s:s, s:s}", "type", "agent", "v", CM_RPC_VERSION,
                              "payload", text, "sig", sig);
    free(text);
    return frame;
}

int cm_rpc_verify(const char *key, json_t *frame, json_t **payload, char *err, size_t errlen)
{
    const char *text = json_string_value(json_object_get(frame, "payload"));
    const char *sig = json_string_value(json_object_get(frame, "sig"));
    if (!text || !sig) {
        snprintf(err, errlen, "signed frame needs string fields 'payload' and 'sig'");
        return -1;
    }
    char want[65];
    cm_hmac_sha256_hex(key, text, strlen(text), want);
    if (!cm_str_eq_ct(want, sig)) {
        snprintf(err, errlen, "bad signature");
        return -1;
    }
    json_error_t jerr;
    json_t *p = json_loads(text, 0, &jerr);
    if (!p || !json_is_object(p)) {
        snprintf(err, errlen, "payload is not a JSON object%s%s", p ? "" : ": ", p ? "" : jerr.text);
        json_decref(p);
        return -1;
    }
    *payload = p;
    return 0;
}

json_t *cm_reply_ok(void)
{
    return json_pack("{s:b}", "ok", 1);
}

json_t *cm_reply_err(const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return json_pack("{s:b, s:{s:s, s:s}}", "ok", 0, "error", "code", code, "message", msg);
}

const char *cm_reply_error_code(json_t *reply)
{
    if (json_is_true(json_object_get(reply, "ok"))) return NULL;
    const char *code = json_string_value(json_object_get(json_object_get(reply, "error"), "code"));
    return code ? code : "internal";
}

const char *cm_reply_error_text(json_t *reply, char *buf, size_t len)
{
    json_t *e = json_object_get(reply, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    snprintf(buf, len, "%s: %s", code ? code : "error", msg ? msg : "(no message)");
    return buf;
}
