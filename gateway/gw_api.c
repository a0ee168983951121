/* gw_api.c: OpenAI request parsing and response shapes (see gw_api.h). */
#include "gw_api.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gw_api_fail(gw_api_err *e, int status, const char *type, const char *param, const char *code,
                const char *fmt, ...)
{
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

#define BAD(e, param, ...) gw_api_fail(e, 400, "invalid_request_error", param, NULL, __VA_ARGS__)

static int want_number(json_t *v, const char *name, double lo, double hi, bool lo_open, double *out,
                       gw_api_err *e)
{
    if (!json_is_number(v)) return BAD(e, name, "'%s' must be a number", name);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi || (lo_open && d <= lo))
        return BAD(e, name, "'%s' must be %s %g and <= %g, got %g", name, lo_open ? ">" : ">=", lo,
                   hi, d);
    *out = d;
    return 0;
}

static int parse_stop(json_t *v, gw_gen *g, gw_api_err *e)
{
    if (json_is_null(v)) return 0;
    if (json_is_string(v)) {
        if (!(g->stop[0] = strdup(json_string_value(v)))) return BAD(e, "stop", "out of memory");
        g->nstop = 1;
        return 0;
    }
    if (!json_is_array(v)) return BAD(e, "stop", "'stop' must be a string or an array of strings");
    if (json_array_size(v) > 4) return BAD(e, "stop", "'stop' may hold at most 4 strings");
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s) {
        if (!json_is_string(s)) return BAD(e, "stop", "'stop[%zu]' must be a string", i);
        if (!(g->stop[g->nstop] = strdup(json_string_value(s))))
            return BAD(e, "stop", "out of memory");
        g->nstop++;
    }
    return 0;
}

/* Chat content: a string, or an array of {"type": "text", "text": ...} parts. */
static int flatten_content(json_t *c, size_t idx, const char *role, json_t **out, gw_api_err *e)
{
    if (json_is_string(c)) {
        *out = json_incref(c);
        return 0;
    }
    if (json_is_null(c) && strcmp(role, "assistant") == 0) {
        *out = json_string("");
        return 0;
    }
    if (!json_is_array(c))
        return BAD(e, "messages", "'messages[%zu].content' must be a string or an array of text parts",
                   idx);
    size_t cap = 256, len = 0;
    char *buf = malloc(cap);
    if (!buf) return BAD(e, "messages", "out of memory");
    buf[0] = 0;
    size_t i;
    json_t *part;
    json_array_foreach(c, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *text = json_object_get(part, "text");
        if (!json_is_object(part) || !type || strcmp(type, "text") != 0 || !json_is_string(text)) {
            free(buf);
            return BAD(e, "messages",
                       "'messages[%zu].content[%zu]' must be {\"type\": \"text\", \"text\": string}; "
                       "only text content is supported", idx, i);
        }
        size_t n = json_string_length(text);
        if (len + n + 1 > cap) {
            while (len + n + 1 > cap) cap *= 2;
            char *p = realloc(buf, cap);
            if (!p) {
                free(buf);
                return BAD(e, "messages", "out of memory");
            }
            buf = p;
        }
        memcpy(buf + len, json_string_value(text), n);
        len += n;
        buf[len] = 0;
    }
    *out = json_stringn(buf, len);
    free(buf);
    if (!*out) return BAD(e, "messages", "'messages[%zu].content' is not valid UTF-8", idx);
    return 0;
}

static int parse_messages(json_t *v, gw_gen *g, gw_api_err *e)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return BAD(e, "messages", "'messages' must be a non-empty array of messages");
    json_t *out = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m) {
        if (!json_is_object(m)) {
            json_decref(out);
            return BAD(e, "messages", "'messages[%zu]' must be an object", i);
        }
        const char *role = json_string_value(json_object_get(m, "role"));
        static const char *roles[] = {"system", "developer", "user", "assistant"};
        bool known = false;
        for (size_t r = 0; role && r < 4; r++) known |= strcmp(role, roles[r]) == 0;
        if (!known) {
            json_decref(out);
            return BAD(e, "messages", "'messages[%zu].role' must be one of system, developer, user, "
                       "assistant", i);
        }
        const char *key;
        json_t *val;
        json_object_foreach(m, key, val) {
            if (strcmp(key, "role") && strcmp(key, "content") && strcmp(key, "name")) {
                json_decref(out);
                return BAD(e, "messages", "'messages[%zu].%s' is not supported", i, key);
            }
        }
        json_t *content;
        if (flatten_content(json_object_get(m, "content"), i, role, &content, e) != 0) {
            json_decref(out);
            return -1;
        }
        g->input_bytes += json_string_length(content) + 8; /* + role markers of the template */
        json_array_append_new(out, json_pack("{s:s, s:o}", "role",
                                             strcmp(role, "developer") == 0 ? "system" : role,
                                             "content", content));
    }
    g->input = out;
    return 0;
}

static int parse_prompt(json_t *v, gw_gen *g, gw_api_err *e)
{
    if (json_is_array(v) && json_array_size(v) == 1 && json_is_string(json_array_get(v, 0)))
        v = json_array_get(v, 0);
    if (!json_is_string(v))
        return BAD(e, "prompt", "'prompt' must be a string (or an array of exactly one string)");
    g->input = json_incref(v);
    g->input_bytes = json_string_length(v);
    return 0;
}

/* Fields some clients send with neutral values: accepted only with those. */
static int neutral_field(const char *key, json_t *val, gw_api_err *e, bool *handled)
{
    *handled = true;
    if (!strcmp(key, "presence_penalty") || !strcmp(key, "frequency_penalty")) {
        if (json_is_null(val) || (json_is_number(val) && json_number_value(val) == 0)) return 0;
        return BAD(e, key, "'%s' is not supported (only 0)", key);
    }
    if (!strcmp(key, "echo") || !strcmp(key, "logprobs")) {
        if (json_is_null(val) || json_is_false(val)) return 0;
        return BAD(e, key, "'%s' is not supported", key);
    }
    if (!strcmp(key, "best_of")) {
        if (json_is_null(val) || (json_is_integer(val) && json_integer_value(val) == 1)) return 0;
        return BAD(e, key, "'best_of' must be 1");
    }
    if (!strcmp(key, "user")) {
        if (json_is_string(val)) return 0;
        return BAD(e, key, "'user' must be a string");
    }
    *handled = false;
    return 0;
}

int gw_api_parse(gw_kind kind, const char *body, size_t len, gw_gen *g, gw_api_err *e)
{
    memset(g, 0, sizeof *g);
    memset(e, 0, sizeof *e);
    g->kind = kind;
    g->max_tokens = -1;
    g->temperature = -1;
    g->top_p = -1;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!root)
        return BAD(e, NULL, "the body is not valid JSON: %s (line %d, column %d)", jerr.text,
                   jerr.line, jerr.column);
    int rc = -1;
    if (!json_is_object(root)) {
        BAD(e, NULL, "the body must be a JSON object");
        goto out;
    }
    const char *key;
    json_t *val;
    bool have_input = false;
    json_object_foreach(root, key, val) {
        bool handled;
        if (neutral_field(key, val, e, &handled) != 0) goto out;
        if (handled) continue;
        if (!strcmp(key, "model")) {
            if (!json_is_string(val) || json_string_length(val) == 0) {
                BAD(e, "model", "'model' must be a non-empty string");
                goto out;
            }
            g->model = strdup(json_string_value(val));
        } else if (kind == GW_COMPLETION && !strcmp(key, "prompt")) {
            if (parse_prompt(val, g, e) != 0) goto out;
            have_input = true;
        } else if (kind == GW_CHAT && !strcmp(key, "messages")) {
            if (parse_messages(val, g, e) != 0) goto out;
            have_input = true;
        } else if (!strcmp(key, "max_tokens") ||
                   (kind == GW_CHAT && !strcmp(key, "max_completion_tokens"))) {
            if (json_is_null(val)) continue;
            if (!json_is_integer(val) || json_integer_value(val) < 1) {
                BAD(e, key, "'%s' must be an integer >= 1", key);
                goto out;
            }
            g->max_tokens = json_integer_value(val);
        } else if (!strcmp(key, "temperature")) {
            if (!json_is_null(val) && want_number(val, key, 0, 2, false, &g->temperature, e)) goto out;
        } else if (!strcmp(key, "top_p")) {
            if (!json_is_null(val) && want_number(val, key, 0, 1, true, &g->top_p, e)) goto out;
        } else if (!strcmp(key, "seed")) {
            if (json_is_null(val)) continue;
            if (!json_is_integer(val)) {
                BAD(e, key, "'seed' must be an integer");
                goto out;
            }
            g->has_seed = true;
            g->seed = json_integer_value(val);
        } else if (!strcmp(key, "stop")) {
            if (parse_stop(val, g, e) != 0) goto out;
        } else if (!strcmp(key, "n")) {
            if (json_is_null(val)) continue;
            if (!json_is_integer(val)) {
                BAD(e, key, "'n' must be an integer");
                goto out;
            }
            if (json_integer_value(val) != 1) {
                BAD(e, key, "only n = 1 is supported");
                goto out;
            }
        } else if (!strcmp(key, "stream")) {
            if (json_is_null(val)) continue;
            if (!json_is_boolean(val)) {
                BAD(e, key, "'stream' must be a boolean");
                goto out;
            }
            g->stream = json_is_true(val);
        } else if (!strcmp(key, "stream_options")) {
            if (json_is_null(val)) continue;
            json_t *iu = json_object_get(val, "include_usage");
            if (!json_is_object(val) || json_object_size(val) != (iu ? 1u : 0u) ||
                (iu && !json_is_boolean(iu))) {
                BAD(e, key, "'stream_options' must be {\"include_usage\": boolean}");
                goto out;
            }
            g->include_usage = json_is_true(iu);
        } else {
            BAD(e, key, "Unrecognized request argument supplied: %s", key);
            goto out;
        }
    }
    if (!g->model) {
        BAD(e, "model", "you must provide a model parameter");
        goto out;
    }
    if (!have_input) {
        BAD(e, kind == GW_CHAT ? "messages" : "prompt", "'%s' is required",
            kind == GW_CHAT ? "messages" : "prompt");
        goto out;
    }
    if (g->include_usage && !g->stream) {
        BAD(e, "stream_options", "'stream_options' is only allowed when 'stream' is true");
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    if (rc != 0) gw_gen_free(g);
    return rc;
}

void gw_gen_free(gw_gen *g)
{
    free(g->model);
    json_decref(g->input);
    for (int i = 0; i < g->nstop; i++) free(g->stop[i]);
    memset(g, 0, sizeof *g);
}

json_t *gw_api_serve_start(const gw_gen *g, const char *id, int64_t max_tokens)
{
    json_t *r = json_pack("{s:s, s:i, s:s, s:O, s:I}", "type", "gen.start", "v", 1, "id", id,
                          g->kind == GW_CHAT ? "messages" : "prompt", g->input, "max_tokens",
                          (json_int_t)max_tokens);
    if (!r) return NULL;
    if (g->temperature >= 0) json_object_set_new(r, "temperature", json_real(g->temperature));
    if (g->top_p >= 0) json_object_set_new(r, "top_p", json_real(g->top_p));
    if (g->has_seed) json_object_set_new(r, "seed", json_integer(g->seed));
    if (g->nstop) {
        json_t *a = json_array();
        for (int i = 0; i < g->nstop; i++) json_array_append_new(a, json_string(g->stop[i]));
        json_object_set_new(r, "stop", a);
    }
    return r;
}

static char *dump(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

/* Copies in to out (outlen > 0) replacing each byte that does not start or
 * continue a valid UTF-8 sequence with '?': error texts quote client input,
 * and JSON strings must be valid UTF-8. */
static const char *utf8_clean(const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)in;
    while (*p && o + 5 < outlen) {
        int n = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 && *p >= 0xC2 ? 2 : (*p & 0xF0) == 0xE0 ? 3
              : (*p & 0xF8) == 0xF0 && *p <= 0xF4 ? 4 : 0;
        for (int k = 1; k < n; k++)
            if ((p[k] & 0xC0) != 0x80) n = 0;
        if (n == 0) {
            out[o++] = '?';
            p++;
            continue;
        }
        memcpy(out + o, p, (size_t)n);
        o += (size_t)n;
        p += n;
    }
    out[o] = '\0';
    return out;
}

static json_t *error_obj(const gw_api_err *e)
{
    char msg[2048], param[256];
    utf8_clean(e->message, msg, sizeof msg);
    utf8_clean(e->param, param, sizeof param);
    return json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", msg, "type",
                     e->type ? e->type : "invalid_request_error", "param",
                     param[0] ? json_string(param) : json_null(), "code",
                     e->code ? json_string(e->code) : json_null());
}

char *gw_api_error_body(const gw_api_err *e) { return dump(error_obj(e)); }

static json_t *usage_obj(int64_t p, int64_t c)
{
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)p, "completion_tokens",
                     (json_int_t)c, "total_tokens", (json_int_t)(p + c));
}

static json_t *reason(const char *finish_reason)
{
    return finish_reason ? json_string(finish_reason) : json_null();
}

char *gw_api_response(const gw_gen *g, const char *id, int64_t created, const char *text,
                      const char *finish_reason, int64_t prompt_tokens, int64_t completion_tokens)
{
    json_t *choice;
    if (g->kind == GW_CHAT)
        choice = json_pack("{s:i, s:{s:s, s:s}, s:n, s:o}", "index", 0, "message", "role",
                           "assistant", "content", text, "logprobs", "finish_reason",
                           reason(finish_reason));
    else
        choice = json_pack("{s:s, s:i, s:n, s:o}", "text", text, "index", 0, "logprobs",
                           "finish_reason", reason(finish_reason));
    return dump(json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", id, "object",
                          g->kind == GW_CHAT ? "chat.completion" : "text_completion", "created",
                          (json_int_t)created, "model", g->model, "choices", choice, "usage",
                          usage_obj(prompt_tokens, completion_tokens)));
}

static char *event(json_t *j)
{
    char *body = dump(j);
    if (!body) return NULL;
    char *out = NULL;
    if (asprintf(&out, "data: %s\n\n", body) < 0) out = NULL;
    free(body);
    return out;
}

char *gw_api_chunk(const gw_gen *g, const char *id, int64_t created, const char *text, bool role,
                   const char *finish_reason)
{
    json_t *choice;
    if (g->kind == GW_CHAT) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string("assistant"));
        if (text) json_object_set_new(delta, "content", json_string(text));
        choice = json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "delta", delta, "logprobs",
                           "finish_reason", reason(finish_reason));
    } else {
        choice = json_pack("{s:s, s:i, s:n, s:o}", "text", text ? text : "", "index", 0,
                           "logprobs", "finish_reason", reason(finish_reason));
    }
    return event(json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", id, "object",
                           g->kind == GW_CHAT ? "chat.completion.chunk" : "text_completion",
                           "created", (json_int_t)created, "model", g->model, "choices", choice));
}

char *gw_api_usage_chunk(const gw_gen *g, const char *id, int64_t created, int64_t prompt_tokens,
                         int64_t completion_tokens)
{
    return event(json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", id, "object",
                           g->kind == GW_CHAT ? "chat.completion.chunk" : "text_completion",
                           "created", (json_int_t)created, "model", g->model, "choices", "usage",
                           usage_obj(prompt_tokens, completion_tokens)));
}

char *gw_api_error_event(const gw_api_err *e) { return event(error_obj(e)); }

char *gw_api_models(const char *const *names, int n, int64_t created)
{
    json_t *data = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s}", "id", names[i], "object",
                                              "model", "created", (json_int_t)created, "owned_by",
                                              "commons"));
    return dump(json_pack("{s:s, s:o}", "object", "list", "data", data));
}
