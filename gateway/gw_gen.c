/* gw_gen.c: one generation request, from the HTTP body to the last byte.
 *
 * Order of checks (each refusal is OpenAI's error JSON): body (400), API key
 * (401; no key uses the anonymous tier when the policy enables one), the
 * key's tier (403 when the policy lost it), model (404 unknown, 503 no replica
 * up), max_tokens against the tier (400), quota (429 + Retry-After), then the
 * fair queue (503 after the queue timeout) and serve's own answer (400 for a
 * prompt too long for the context or the tier). A stream's status is decided
 * only after serve accepted the request, so every refusal above is a real
 * HTTP status, never an error inside a 200 stream; after that a failing
 * replica gives an error event (stream) or a 500, and the gateway goes on.
 */
#include "gw_gateway.h"

#include "gw_api.h"
#include "cm_crypto.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POLL_WAIT_MS 1000
#define CALL_SLACK_MS 5000 /* a reply later than wait_ms + this means the replica is gone */

enum phase { PH_ROLE, PH_TEXT, PH_END };

struct gw_run {
    gw_gateway *g;
    struct MHD_Connection *conn;
    const char *route;
    gw_gen gen;
    bool gen_parsed;
    gw_policy_ref *pol;
    char principal[GW_FLOW_MAX];
    int64_t key_id;              /* 0 = anonymous */
    gw_limits lim;
    int64_t max_tokens, reserved;
    bool quota_begun;
    gw_job job;
    bool job_ready;              /* gw_job_init succeeded */
    bool holding;                /* job holds a replica slot */
    bool replica_failed;
    char sid[48];                /* id at serve: gw<pid>-<n>, + r<k> after k failed starts */
    int retries;
    char oid[64];                /* id in the OpenAI response */
    int64_t created, t0_ms;
    bool started, done, first_text;
    int64_t prompt_tokens, completion_tokens;
    char *text;                  /* completion so far (non-streamed) */
    size_t text_len;
    int64_t offset;              /* bytes of completion text received: commons-serve
                                  * counts UTF-8 bytes and cuts only between characters */
    char finish[16];
    int status;                  /* HTTP status answered; 0: the client left first */
    /* streaming */
    enum phase phase;
    char *pending;
    size_t pending_len, pending_off;
};

/* ---- small helpers ---------------------------------------------------- */

/* True when the client closed its side (checked without blocking). */
static bool client_gone(void *arg)
{
    gw_run *r = arg;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void client_address(struct MHD_Connection *conn, char *buf, size_t len)
{
    snprintf(buf, len, "unknown");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)len);
}

static int refuse(gw_run *r, gw_api_err *e, int64_t retry_after, const char *reason)
{
    r->status = e->status;
    if (reason) gw_metrics_reject(r->g->metrics, reason);
    return gw_http_send_error(r->g, r->conn, r->route, e, retry_after);
}

static void cancel_at_serve(gw_run *r)
{
    json_t *req = json_pack("{s:s, s:s}", "type", "gen.cancel", "id", r->sid), *rep = NULL;
    char err[256];
    if (gw_serve_call(gw_disp_serve(r->g->disp, &r->job), req, &rep, 2000, err, sizeof err) != 0)
        cm_debug("gen.cancel %s: %s", r->sid, err);
    json_decref(req);
    json_decref(rep);
}

/* ---- who is asking ------------------------------------------------------ */

/* Fills principal, key_id and lim; 0, or -1 with e filled. */
static int authenticate(gw_run *r, gw_api_err *e, const char **reason)
{
    gw_gateway *g = r->g;
    const quota_policy *p = r->pol->p;
    const char *auth = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    int tier = -1;
    *reason = "auth";
    if (!auth || !*auth) {
        if (p->anonymous_tier < 0)
            return gw_api_fail(e, 401, "invalid_request_error", NULL, "missing_api_key",
                               "You didn't provide an API key. Send it as 'Authorization: Bearer "
                               "cmk_...'; this endpoint has no anonymous access.");
        char addr[64];
        client_address(r->conn, addr, sizeof addr);
        snprintf(r->principal, sizeof r->principal, "anon:%s", addr);
        r->key_id = 0;
        tier = p->anonymous_tier;
    } else {
        if (strncasecmp(auth, "Bearer ", 7) != 0)
            return gw_api_fail(e, 401, "invalid_request_error", NULL, "invalid_api_key",
                               "The Authorization header must be 'Bearer <API key>'.");
        const char *key = auth + 7;
        while (*key == ' ') key++;
        gw_key_info info;
        char err[256];
        int rc = gw_keys_lookup(g->keys, key, &info, err, sizeof err);
        if (rc == GW_KEYS_ENOTFOUND)
            return gw_api_fail(e, 401, "invalid_request_error", NULL, "invalid_api_key",
                               "Incorrect API key provided: %s.", err);
        if (rc != GW_KEYS_OK) {
            cm_error("key lookup: %s", err);
            *reason = NULL;
            return gw_api_fail(e, 500, "server_error", NULL, NULL,
                               "the key store is unavailable; retry later");
        }
        snprintf(r->principal, sizeof r->principal, "key:%lld", (long long)info.id);
        r->key_id = info.id;
        tier = info.tier[0] ? quota_tier_find(p, info.tier) : p->default_tier;
        if (tier < 0)
            return gw_api_fail(e, 403, "permission_error", NULL, "no_tier",
                               info.tier[0] ? "This key's tier '%s' is not in the current policy; "
                                              "ask the operators to fix the key or the policy."
                                            : "The policy defines no citizen tiers%s.",
                               info.tier);
    }
    const quota_tier *t = &p->tiers[tier];
    r->lim = (gw_limits){t->tokens_per_day, t->requests_per_minute, t->max_tokens_per_request,
                         t->concurrent_requests};
    return 0;
}

/* ---- admission and the serve calls ------------------------------------ */

/* Queues, waits for a slot and starts the sequence at serve.
 * 0: started; -1: e filled (and *retry_after); -2: the client left. */
static int start_generation(gw_run *r, gw_api_err *e, int64_t *retry_after, const char **reason)
{
    gw_gateway *g = r->g;
    int64_t deadline = cm_mono_ms() + g->cfg.queue_timeout_ms;
    snprintf(r->job.model, sizeof r->job.model, "%s", r->gen.model);
    if (gw_disp_enqueue(g->disp, &r->job, r->principal, r->reserved) != GW_DISP_OK)
        return gw_api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    for (;;) {
        int rc = gw_disp_wait(g->disp, &r->job, deadline, client_gone, r);
        if (rc == GW_DISP_GONE) return -2;
        if (rc == GW_DISP_TIMEOUT) {
            *retry_after = 1;
            *reason = "queue_timeout";
            return gw_api_fail(e, 503, "server_error", NULL, "overloaded",
                               "every serve replica was busy for %lld s; retry later",
                               (long long)(g->cfg.queue_timeout_ms / 1000));
        }
        r->holding = true;
        json_t *req = gw_api_serve_start(&r->gen, r->sid, r->max_tokens), *rep = NULL;
        char err[256];
        rc = req ? gw_serve_call(gw_disp_serve(g->disp, &r->job), req, &rep, 10000, err, sizeof err)
                 : (snprintf(err, sizeof err, "out of memory"), -1);
        json_decref(req);
        if (rc != 0) {
            cm_warn("gen.start %s: %s", r->sid, err);
            gw_disp_release(g->disp, &r->job, true);
            r->holding = false;
            if (gw_disp_model_state(g->disp, r->gen.model) != 1) {
                *retry_after = 5;
                *reason = "no_replica";
                return gw_api_fail(e, 503, "server_error", NULL, "no_replica",
                                   "no serve replica of model '%s' is reachable; retry later",
                                   r->gen.model);
            }
            /* A fresh id: the lost start may have reached serve after all. */
            size_t n = strcspn(r->sid, "r");
            snprintf(r->sid + n, sizeof r->sid - n, "r%d", ++r->retries);
            if (gw_disp_enqueue(g->disp, &r->job, r->principal, r->reserved) != GW_DISP_OK)
                return gw_api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
            continue;
        }
        /* Copied: the reply is freed before the code is looked at. */
        char code[32];
        const char *c = cm_reply_error_code(rep);
        snprintf(code, sizeof code, "%s", c ? c : "");
        if (!c) {
            r->started = true;
            r->prompt_tokens = json_integer_value(json_object_get(rep, "prompt_tokens"));
            json_decref(rep);
            return 0;
        }
        if (!strcmp(code, "busy")) {
            json_decref(rep);
            gw_disp_busy(g->disp, &r->job);
            r->holding = false;
            continue;
        }
        char msg[300];
        const char *m = json_string_value(json_object_get(json_object_get(rep, "error"), "message"));
        snprintf(msg, sizeof msg, "%s", m ? m : code);
        json_decref(rep);
        gw_disp_release(g->disp, &r->job, false);
        r->holding = false;
        *reason = NULL;
        if (!strcmp(code, "too_long"))
            return gw_api_fail(e, 400, "invalid_request_error", "messages", "context_length_exceeded",
                               "The prompt plus max_tokens do not fit the model's context: %s", msg);
        if (!strcmp(code, "bad_request"))
            return gw_api_fail(e, 400, "invalid_request_error", NULL, NULL, "%s", msg);
        return gw_api_fail(e, 500, "server_error", NULL, NULL, "the model server failed: %s", msg);
    }
}

/* One gen.poll; appends new text to *out (malloc'd, may be empty).
 * 0, or -1 with e filled (replica failure or a failed sequence). */
static int poll_once(gw_run *r, int wait_ms, char **out, size_t *outlen, gw_api_err *e)
{
    *out = NULL;
    *outlen = 0;
    json_t *req = json_pack("{s:s, s:s, s:I, s:i}", "type", "gen.poll", "id", r->sid, "offset",
                            (json_int_t)r->offset, "wait_ms", wait_ms),
           *rep = NULL;
    char err[256];
    int rc = gw_serve_call(gw_disp_serve(r->g->disp, &r->job), req, &rep, wait_ms + CALL_SLACK_MS,
                           err, sizeof err);
    json_decref(req);
    if (rc != 0) {
        cm_warn("gen.poll %s: %s", r->sid, err);
        r->replica_failed = true;
        return gw_api_fail(e, 500, "server_error", NULL, "replica_failed",
                           "the model server stopped answering mid-generation; retry the request");
    }
    const char *code = cm_reply_error_code(rep);
    if (code) {
        const char *m = json_string_value(json_object_get(json_object_get(rep, "error"), "message"));
        gw_api_fail(e, 500, "server_error", NULL, NULL, "the model server lost the request: %s: %s",
                    code, m ? m : "");
        json_decref(rep);
        return -1;
    }
    json_t *text = json_object_get(rep, "text");
    size_t n = json_is_string(text) ? json_string_length(text) : 0;
    if (!(*out = malloc(n + 1))) {
        json_decref(rep);
        return gw_api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    memcpy(*out, n ? json_string_value(text) : "", n);
    (*out)[n] = 0;
    *outlen = n;
    r->offset += (int64_t)n;
    json_int_t pt = json_integer_value(json_object_get(rep, "prompt_tokens"));
    if (pt > 0) r->prompt_tokens = pt;
    r->completion_tokens = json_integer_value(json_object_get(rep, "completion_tokens"));
    if (n && !r->first_text) {
        r->first_text = true;
        gw_metrics_ttft(r->g->metrics, (double)(cm_mono_ms() - r->t0_ms) / 1000.0);
    }
    if (json_is_true(json_object_get(rep, "done"))) {
        r->done = true;
        const char *fr = json_string_value(json_object_get(rep, "finish_reason"));
        snprintf(r->finish, sizeof r->finish, "%s", fr ? fr : "stop");
    }
    json_decref(rep);
    if (r->done && strcmp(r->finish, "stop") != 0 && strcmp(r->finish, "length") != 0) {
        free(*out);
        *out = NULL;
        return gw_api_fail(e, 500, "server_error", NULL, NULL,
                           "the model server ended the generation with '%s'", r->finish);
    }
    return 0;
}

/* ---- answers ----------------------------------------------------------- */

static int answer_whole(gw_run *r)
{
    gw_api_err e;
    while (!r->done) {
        if (client_gone(r)) return MHD_NO;
        char *t;
        size_t n;
        if (poll_once(r, POLL_WAIT_MS, &t, &n, &e) != 0) return refuse(r, &e, 0, "replica_error");
        char *p = realloc(r->text, r->text_len + n + 1);
        if (!p) {
            free(t);
            return MHD_NO;
        }
        memcpy(p + r->text_len, t, n + 1);
        r->text = p;
        r->text_len += n;
        free(t);
    }
    char *body = gw_api_response(&r->gen, r->oid, r->created, r->text ? r->text : "", r->finish,
                                 r->prompt_tokens, r->completion_tokens);
    gw_metrics_request(r->g->metrics, r->route, 200);
    r->status = 200;
    return gw_http_send(r->conn, 200, "application/json", body, 0);
}

static void set_pending(gw_run *r, char *s)
{
    free(r->pending);
    r->pending = s;
    r->pending_len = s ? strlen(s) : 0;
    r->pending_off = 0;
}

static char *concat3(char *a, char *b, const char *c)
{
    char *out = NULL;
    if (asprintf(&out, "%s%s%s", a ? a : "", b ? b : "", c ? c : "") < 0) out = NULL;
    free(a);
    free(b);
    return out;
}

/* Fills r->pending with the next events; false when the stream must end
 * with an error (client gone). */
static bool next_events(gw_run *r)
{
    if (r->phase == PH_ROLE) {
        set_pending(r, gw_api_chunk(&r->gen, r->oid, r->created, "", true, NULL));
        r->phase = PH_TEXT;
        return r->pending != NULL;
    }
    if (r->done) {
        /* The last chunk carries finish_reason; usage when asked; then [DONE]. */
        char *last = gw_api_chunk(&r->gen, r->oid, r->created, NULL, false, r->finish);
        char *usage = r->gen.include_usage
                          ? gw_api_usage_chunk(&r->gen, r->oid, r->created, r->prompt_tokens,
                                               r->completion_tokens)
                          : NULL;
        set_pending(r, concat3(last, usage, "data: [DONE]\n\n"));
        r->phase = PH_END;
        return r->pending != NULL;
    }
    if (client_gone(r)) return false;
    gw_api_err e;
    char *t;
    size_t n;
    if (poll_once(r, POLL_WAIT_MS, &t, &n, &e) != 0) {
        gw_metrics_reject(r->g->metrics, "replica_error");
        set_pending(r, gw_api_error_event(&e));
        r->phase = PH_END;
        return r->pending != NULL;
    }
    if (n) {
        set_pending(r, gw_api_chunk(&r->gen, r->oid, r->created, t, false, NULL));
    } else if (!r->done) {
        /* Nothing new within the wait: an SSE comment keeps proxies from timing out. */
        set_pending(r, strdup(": keep-alive\n\n"));
    }
    free(t);
    return true;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    gw_run *r = cls;
    for (;;) {
        if (r->pending_off < r->pending_len) {
            size_t n = r->pending_len - r->pending_off;
            if (n > max) n = max;
            memcpy(buf, r->pending + r->pending_off, n);
            r->pending_off += n;
            return (ssize_t)n;
        }
        if (r->phase == PH_END) return MHD_CONTENT_READER_END_OF_STREAM;
        if (!next_events(r)) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static int answer_stream(gw_run *r)
{
    r->phase = r->gen.kind == GW_CHAT ? PH_ROLE : PH_TEXT;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, r, NULL);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    int ret = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    gw_metrics_request(r->g->metrics, r->route, 200);
    r->status = 200;
    return ret;
}

/* ---- entry points ------------------------------------------------------ */

int gw_gen_handle(gw_gateway *g, struct MHD_Connection *conn, int kind, const char *body,
                  size_t len, gw_run **out)
{
    gw_run *r = calloc(1, sizeof *r);
    if (!r) return MHD_NO;
    *out = r;
    r->g = g;
    r->conn = conn;
    r->route = kind == GW_CHAT ? "chat" : "completions";
    r->t0_ms = cm_mono_ms();
    r->created = (int64_t)time(NULL); /* shown to the client: wall clock */
    r->pol = gw_policy_get(g);
    pthread_mutex_lock(&g->mu);
    uint64_t n = ++g->next_id;
    pthread_mutex_unlock(&g->mu);
    snprintf(r->sid, sizeof r->sid, "gw%ld-%llu", (long)getpid(), (unsigned long long)n);
    char hex[25];
    if (cm_random_hex(12, hex) != 0) snprintf(hex, sizeof hex, "%llu", (unsigned long long)n);
    snprintf(r->oid, sizeof r->oid, "%s-%s", kind == GW_CHAT ? "chatcmpl" : "cmpl", hex);

    gw_api_err e;
    const char *reason = NULL;
    int jrc = gw_job_init(&r->job);
    if (jrc != 0) {
        gw_api_fail(&e, 500, "server_error", NULL, NULL, "cannot make a condition variable: %s",
                    strerror(jrc));
        return refuse(r, &e, 0, NULL);
    }
    r->job_ready = true;
    if (gw_api_parse((gw_kind)kind, body, len, &r->gen, &e) != 0) return refuse(r, &e, 0, "bad_request");
    r->gen_parsed = true;
    if (authenticate(r, &e, &reason) != 0) return refuse(r, &e, 0, reason);

    int state = gw_disp_model_state(g->disp, r->gen.model);
    if (state == -2) {
        /* No replica ever answered: whether the model exists is unknown. */
        gw_api_fail(&e, 503, "server_error", NULL, "no_replica",
                    "no serve replica is reachable yet; retry later");
        return refuse(r, &e, 5, "no_replica");
    }
    if (state < 0) {
        gw_api_fail(&e, 404, "invalid_request_error", "model", "model_not_found",
                    "The model '%s' does not exist; GET /v1/models lists the models served here.",
                    r->gen.model);
        return refuse(r, &e, 0, "unknown_model");
    }
    if (state == 0) {
        gw_api_fail(&e, 503, "server_error", NULL, "no_replica",
                    "no serve replica of model '%s' is reachable; retry later", r->gen.model);
        return refuse(r, &e, 5, "no_replica");
    }

    int64_t tier_max = r->lim.max_tokens_per_request;
    /* Prompt estimate (serve counts exactly at gen.start): ~4 bytes per token.
     * It prices the request in the fair queue and reserves the daily budget. */
    int64_t est_prompt = (int64_t)(r->gen.input_bytes / 4) + 1;
    if (r->gen.max_tokens > 0) {
        if (tier_max >= 0 && r->gen.max_tokens > tier_max) {
            gw_api_fail(&e, 400, "invalid_request_error", "max_tokens", "max_tokens_too_large",
                        "max_tokens is too large: %lld. Your tier allows %lld tokens per request, "
                        "prompt and completion together.", (long long)r->gen.max_tokens,
                        (long long)tier_max);
            return refuse(r, &e, 0, "max_tokens");
        }
        r->max_tokens = r->gen.max_tokens;
    } else {
        /* Not given: the default, within what the tier leaves after the prompt. */
        r->max_tokens = g->cfg.default_max_tokens;
        int64_t room = tier_max - est_prompt;
        if (tier_max >= 0 && r->max_tokens > room) r->max_tokens = room > 0 ? room : 1;
    }
    r->reserved = est_prompt + r->max_tokens;

    gw_quota_verdict v;
    static const char *why_names[] = {"", "rate", "concurrency", "tokens"};
    if (gw_quota_begin(g->quota, r->principal, &r->lim, r->reserved, cm_now_ms(), cm_mono_ms(), &v) != GW_QUOTA_OK) {
        gw_api_fail(&e, 429, "rate_limit_error", NULL,
                    v.why == GW_QUOTA_TOKENS ? "insufficient_quota" : "rate_limit_exceeded", "%s",
                    v.message);
        return refuse(r, &e, v.retry_after_s, why_names[v.why]);
    }
    r->quota_begun = true;

    int64_t retry = 0;
    int rc = start_generation(r, &e, &retry, &reason);
    if (rc == -2) return MHD_NO;
    if (rc != 0) return refuse(r, &e, retry, reason);

    if (tier_max >= 0 && r->prompt_tokens + r->max_tokens > tier_max) {
        gw_api_fail(&e, 400, "invalid_request_error", "max_tokens", "context_length_exceeded",
                    "This request needs %lld tokens (%lld in the prompt + %lld max_tokens); your "
                    "tier allows %lld tokens per request. Shorten the prompt or lower max_tokens.",
                    (long long)(r->prompt_tokens + r->max_tokens), (long long)r->prompt_tokens,
                    (long long)r->max_tokens, (long long)tier_max);
        return refuse(r, &e, 0, "max_tokens");
    }
    return r->gen.stream ? answer_stream(r) : answer_whole(r);
}

void gw_gen_finish(gw_gateway *g, gw_run *r)
{
    if (r->holding) {
        if (r->started && !r->done && !r->replica_failed) cancel_at_serve(r);
        gw_disp_release(g->disp, &r->job, r->replica_failed);
    }
    int64_t used = r->started ? r->prompt_tokens + r->completion_tokens : 0;
    /* Settle the in-memory quota before the store: a day roll-over reloads from it. */
    if (r->quota_begun) gw_quota_end(g->quota, r->principal, r->reserved, used, cm_now_ms(), cm_mono_ms());
    if (r->started) {
        char err[256];
        if (gw_keys_add_usage(g->keys, r->key_id, cm_now_ms() / 1000 / 86400, r->prompt_tokens,
                              r->completion_tokens, err, sizeof err) != GW_KEYS_OK)
            cm_error("recording usage of %s: %s", r->principal, err);
        gw_metrics_tokens(g->metrics, r->prompt_tokens, r->completion_tokens);
    }
    /* The access log: who, what, how it ended; never the prompt or the text. */
    cm_info("%s %s model=%s status=%d%s finish=%s prompt=%lld completion=%lld %.3fs",
            r->route, r->principal[0] ? r->principal : "-",
            r->gen_parsed ? r->gen.model : "-", r->status, r->status ? "" : "(client left)",
            r->finish[0] ? r->finish : "-", (long long)r->prompt_tokens,
            (long long)r->completion_tokens, (double)(cm_mono_ms() - r->t0_ms) / 1000.0);
    if (r->gen_parsed) gw_gen_free(&r->gen);
    gw_policy_put(g, r->pol);
    if (r->job_ready) gw_job_destroy(&r->job);
    free(r->text);
    free(r->pending);
    free(r);
}
