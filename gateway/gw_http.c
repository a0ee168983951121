/* gw_http.c: the HTTP/1.1 layer (libmicrohttpd, one thread per connection).
 *
 * Thread per connection because a generation blocks its request thread
 * (queue wait, long polls to serve); the connection limits bound the threads.
 * Limits: request line + headers (MHD's per-connection memory, too large ->
 * MHD's own 431), body (Content-Length over the limit -> 413 before reading
 * it; a chunked body is counted as it comes), connections in all and per
 * address, and an idle timeout so a silent or slow client is dropped.
 */
#include "gw_gateway.h"

#include "gw_api.h"
#include "cm_log.h"
#include "cm_util.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include "gw_www.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum route { R_OTHER, R_MODELS, R_COMPLETIONS, R_CHAT, R_HEALTH, R_METRICS, R_STATUS, R_PAGE };
/* R_PAGE: "/" and the page's script and style sheet (gw_www.h). */
static const char *ROUTE_NAMES[] = {"other", "models", "completions", "chat", "health", "metrics",
                                    "status", "page"};

typedef struct conn_req {
    enum route route;
    bool post;
    char *body;
    size_t len, cap;
    bool too_big;
    bool answered;
    gw_run *run;
} conn_req;

int gw_http_send(struct MHD_Connection *conn, int status, const char *content_type, char *body,
                 int64_t retry_after_s)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(body ? strlen(body) : 0, body,
                                                             MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", content_type);
    if (retry_after_s > 0) {
        char v[32];
        snprintf(v, sizeof v, "%lld", (long long)retry_after_s);
        MHD_add_response_header(r, "Retry-After", v);
    }
    int ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

int gw_http_send_error(gw_gateway *g, struct MHD_Connection *conn, const char *route,
                       const gw_api_err *e, int64_t retry_after_s)
{
    gw_metrics_request(g->metrics, route, e->status);
    return gw_http_send(conn, e->status, "application/json", gw_api_error_body(e), retry_after_s);
}

static enum route route_of(const char *url)
{
    if (!strcmp(url, "/v1/models")) return R_MODELS;
    if (!strcmp(url, "/v1/completions")) return R_COMPLETIONS;
    if (!strcmp(url, "/v1/chat/completions")) return R_CHAT;
    if (!strcmp(url, "/health")) return R_HEALTH;
    if (!strcmp(url, "/metrics")) return R_METRICS;
    if (!strcmp(url, "/status")) return R_STATUS;
    for (const gw_asset *a = gw_assets; a->path; a++)
        if (!strcmp(url, a->path)) return R_PAGE;
    return R_OTHER;
}

static int answer_models(gw_gateway *g, struct MHD_Connection *conn)
{
    char **names = NULL;
    int n = 0;
    if (gw_disp_models(g->disp, &names, &n) != 0) return MHD_NO;
    char *body = gw_api_models((const char *const *)names, n, 0);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    gw_metrics_request(g->metrics, "models", 200);
    return gw_http_send(conn, 200, "application/json", body, 0);
}

static int answer_health(gw_gateway *g, struct MHD_Connection *conn)
{
    char **names = NULL;
    int n = 0, up = 0;
    if (gw_disp_models(g->disp, &names, &n) != 0) return MHD_NO;
    for (int i = 0; i < n; i++) {
        if (gw_disp_model_state(g->disp, names[i]) == 1) up++;
        free(names[i]);
    }
    free(names);
    /* Healthy = can serve some model now; a load balancer should skip us otherwise. */
    int status = up > 0 ? 200 : 503;
    char *body = NULL;
    if (asprintf(&body, "{\"status\":\"%s\",\"models_up\":%d}", up > 0 ? "ok" : "no_replica",
                 up) < 0)
        return MHD_NO;
    gw_metrics_request(g->metrics, "health", status);
    return gw_http_send(conn, status, "application/json", body, 0);
}

static int answer_metrics(gw_gateway *g, struct MHD_Connection *conn)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return MHD_NO;
    gw_metrics_request(g->metrics, "metrics", 200);
    gw_metrics_write(g->metrics, f);
    gw_disp_metrics(g->disp, f);
    fclose(f);
    return gw_http_send(conn, 200, "text/plain; version=0.0.4", text, 0);
}

static int answer_status(gw_gateway *g, struct MHD_Connection *conn, const char *url, bool html)
{
    char *body = NULL;
    if (html) {
        for (const gw_asset *a = gw_assets; a->path; a++) {
            if (strcmp(url, a->path) != 0) continue;
            if (!(body = malloc(a->len + 1))) return MHD_NO;
            memcpy(body, a->data, a->len);
            body[a->len] = '\0';
            gw_metrics_request(g->metrics, "page", 200);
            return gw_http_send(conn, 200, a->content_type, body, 0);
        }
        return MHD_NO;
    } else {
        json_t *st = gw_status_json(g);
        body = st ? json_dumps(st, JSON_COMPACT) : NULL;
        json_decref(st);
    }
    if (!body) return MHD_NO;
    gw_metrics_request(g->metrics, html ? "page" : "status", 200);
    return gw_http_send(conn, 200, html ? "text/html; charset=utf-8" : "application/json", body, 0);
}

static int not_found(gw_gateway *g, struct MHD_Connection *conn, const char *method,
                     const char *url)
{
    gw_api_err e;
    gw_api_fail(&e, 404, "invalid_request_error", NULL, "unknown_url",
                "Unknown request URL: %s %s. See docs/gateway.md for the endpoints.", method, url);
    return gw_http_send_error(g, conn, "other", &e, 0);
}

static int wrong_method(gw_gateway *g, struct MHD_Connection *conn, enum route r,
                        const char *method, const char *url)
{
    gw_api_err e;
    gw_api_fail(&e, 405, "invalid_request_error", NULL, "method_not_allowed",
                "%s is not allowed on %s (use %s)", method, url,
                r == R_COMPLETIONS || r == R_CHAT ? "POST" : "GET");
    return gw_http_send_error(g, conn, ROUTE_NAMES[r], &e, 0);
}

static int too_large(gw_gateway *g, struct MHD_Connection *conn, enum route r)
{
    gw_api_err e;
    gw_api_fail(&e, 413, "invalid_request_error", NULL, "request_too_large",
                "the request body is larger than the limit of %zu bytes", g->cfg.max_body);
    return gw_http_send_error(g, conn, ROUTE_NAMES[r], &e, 0);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    (void)version;
    gw_gateway *g = cls;
    conn_req *req = *con_cls;
    if (!req) {
        if (!(req = calloc(1, sizeof *req))) return MHD_NO;
        *con_cls = req;
        req->route = route_of(url);
        req->post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
        pthread_mutex_lock(&g->mu);
        g->active++;
        pthread_mutex_unlock(&g->mu);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > g->cfg.max_body) {
            /* Refuse before reading it; MHD closes the connection after. */
            req->answered = true;
            return (enum MHD_Result)too_large(g, conn, req->route);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!req->too_big) {
            if (req->len + *upload_size > g->cfg.max_body) {
                req->too_big = true;
                free(req->body);
                req->body = NULL;
                req->len = 0;
            } else {
                if (req->len + *upload_size + 1 > req->cap) {
                    size_t cap = req->cap ? req->cap : 4096;
                    while (cap < req->len + *upload_size + 1) cap *= 2;
                    char *p = realloc(req->body, cap);
                    if (!p) return MHD_NO;
                    req->body = p;
                    req->cap = cap;
                }
                memcpy(req->body + req->len, upload_data, *upload_size);
                req->len += *upload_size;
                req->body[req->len] = 0;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (req->answered) return MHD_YES;
    req->answered = true;
    if (req->too_big) return (enum MHD_Result)too_large(g, conn, req->route);
    switch (req->route) {
    case R_OTHER:
        return (enum MHD_Result)not_found(g, conn, method, url);
    case R_COMPLETIONS:
    case R_CHAT:
        if (!req->post) return (enum MHD_Result)wrong_method(g, conn, req->route, method, url);
        return (enum MHD_Result)gw_gen_handle(g, conn, req->route == R_CHAT ? GW_CHAT : GW_COMPLETION,
                                              req->body ? req->body : "", req->len, &req->run);
    default:
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
            return (enum MHD_Result)wrong_method(g, conn, req->route, method, url);
        if (req->route == R_MODELS) return (enum MHD_Result)answer_models(g, conn);
        if (req->route == R_HEALTH) return (enum MHD_Result)answer_health(g, conn);
        if (req->route == R_STATUS || req->route == R_PAGE)
            return (enum MHD_Result)answer_status(g, conn, url, req->route == R_PAGE);
        return (enum MHD_Result)answer_metrics(g, conn);
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    (void)conn;
    (void)why;
    gw_gateway *g = cls;
    conn_req *req = *con_cls;
    if (!req) return;
    if (req->run) gw_gen_finish(g, req->run);
    free(req->body);
    free(req);
    *con_cls = NULL;
    pthread_mutex_lock(&g->mu);
    g->active--;
    pthread_mutex_unlock(&g->mu);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    cm_debug("http: %s", msg);
}

int gw_http_start(gw_gateway *g, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    /* ITC: MHD_quiesce_daemon() needs it to stop accepting while draining. */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, g->cfg.listen_host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)g->cfg.listen_port);
    } else if (inet_pton(AF_INET6, g->cfg.listen_host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)g->cfg.listen_port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "--listen: '%s' is not a numeric IPv4 or IPv6 address",
                 g->cfg.listen_host);
        return -1;
    }
    g->mhd = MHD_start_daemon(
        flags, (uint16_t)g->cfg.listen_port, NULL, NULL, on_request, g,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, g,
        MHD_OPTION_CONNECTION_LIMIT, g->cfg.max_conns,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, g->cfg.max_conns_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, g->cfg.idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, g->cfg.max_header,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512 * 1024),
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_END);
    if (!g->mhd) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use, or not this host's?)",
                 g->cfg.listen_host, g->cfg.listen_port);
        return -1;
    }
    return 0;
}

void gw_http_stop(gw_gateway *g, int64_t drain_ms)
{
    if (!g->mhd) return;
    /* Stop accepting: the quiesced listening socket is ours to close, and closing
     * it makes new connections fail at once instead of waiting in the backlog. */
    MHD_socket ls = MHD_quiesce_daemon(g->mhd);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    /* Up to drain_ms measured on the monotonic clock (gw_clock.h), not by
     * counting sleeps, which overrun by whatever each turn takes. */
    for (int64_t until = cm_mono_ms() + drain_ms; cm_mono_ms() < until;) {
        pthread_mutex_lock(&g->mu);
        int active = g->active;
        pthread_mutex_unlock(&g->mu);
        if (active == 0) break;
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(g->mhd);
    g->mhd = NULL;
}
