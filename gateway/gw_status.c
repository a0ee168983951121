/* gw_status.c: the public status page. GET /status is JSON, GET / the same as
 * a small HTML page: which models are up, how busy the replicas and the queue
 * are, and the citizen tiers in force (the policy is public, so citizens can
 * see the limits they are held to). */
#include "gw_gateway.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *gw_status_json(gw_gateway *g)
{
    json_t *st = gw_disp_status(g->disp);
    if (!st) return NULL;
    gw_policy_ref *pr = gw_policy_get(g);
    const quota_policy *p = pr->p;
    json_t *tiers = json_array();
    for (int i = 0; i < p->ntiers; i++) {
        const quota_tier *t = &p->tiers[i];
        json_array_append_new(tiers, json_pack("{s:s, s:I, s:I, s:I, s:I, s:b, s:b}", "name", t->name,
                                               "tokens_per_day", (json_int_t)t->tokens_per_day,
                                               "requests_per_minute", (json_int_t)t->requests_per_minute,
                                               "max_tokens_per_request", (json_int_t)t->max_tokens_per_request,
                                               "concurrent_requests", (json_int_t)t->concurrent_requests,
                                               "default", i == p->default_tier,
                                               "anonymous", i == p->anonymous_tier));
    }
    gw_policy_put(g, pr);
    json_object_set_new(st, "tiers", tiers);
    return st;
}

static void html_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void html_limit(FILE *f, json_int_t v)
{
    if (v < 0) fputs("<td>unlimited</td>", f);
    else fprintf(f, "<td>%lld</td>", (long long)v);
}

char *gw_status_html(gw_gateway *g)
{
    json_t *st = gw_status_json(g);
    if (!st) return NULL;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f) {
        json_decref(st);
        return NULL;
    }
    fputs("<!doctype html><html><head><meta charset=\"utf-8\"><title>Commons inference</title>"
          "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}</style>"
          "</head><body><h1>Commons public inference</h1>"
          "<p>OpenAI-compatible API at <code>/v1</code> (<code>/v1/models</code>, "
          "<code>/v1/completions</code>, <code>/v1/chat/completions</code>). "
          "Machine-readable status: <a href=\"/status\">/status</a>.</p>", f);
    fprintf(f, "<h2>Replicas</h2><p>%lld requests waiting from %lld citizens.</p>"
               "<table><tr><th>model</th><th>state</th><th>in flight / slots</th></tr>",
            (long long)json_integer_value(json_object_get(st, "queued")),
            (long long)json_integer_value(json_object_get(st, "flows")));
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(st, "replicas"), i, r) {
        fputs("<tr><td>", f);
        html_text(f, json_string_value(json_object_get(r, "model")));
        fprintf(f, "</td><td>%s</td><td>%lld / %lld</td></tr>",
                json_is_true(json_object_get(r, "up")) ? "up" : "down",
                (long long)json_integer_value(json_object_get(r, "inflight")),
                (long long)json_integer_value(json_object_get(r, "slots")));
    }
    fputs("</table><h2>Tiers</h2><table><tr><th>tier</th><th>tokens per day</th>"
          "<th>requests per minute</th><th>tokens per request</th><th>concurrent</th></tr>", f);
    json_array_foreach(json_object_get(st, "tiers"), i, r) {
        fputs("<tr><td>", f);
        html_text(f, json_string_value(json_object_get(r, "name")));
        if (json_is_true(json_object_get(r, "default"))) fputs(" (keys)", f);
        if (json_is_true(json_object_get(r, "anonymous"))) fputs(" (no key)", f);
        fputs("</td>", f);
        html_limit(f, json_integer_value(json_object_get(r, "tokens_per_day")));
        html_limit(f, json_integer_value(json_object_get(r, "requests_per_minute")));
        html_limit(f, json_integer_value(json_object_get(r, "max_tokens_per_request")));
        html_limit(f, json_integer_value(json_object_get(r, "concurrent_requests")));
        fputs("</tr>", f);
    }
    fputs("</table><p>When the engines are busy, waiting requests are admitted by fair "
          "queuing between citizens, not first come, first served.</p></body></html>\n", f);
    fclose(f);
    json_decref(st);
    return out;
}
