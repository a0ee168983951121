/* fuzz_gateway.c: libFuzzer harness for the public endpoint's request
 * handling (gateway/gw_api.h): the OpenAI-compatible body parser that every
 * citizen's POST /v1/completions and /v1/chat/completions goes through, and
 * the builders that turn a parsed request into the serve protocol's
 * gen.start and into responses. (HTTP framing itself is libmicrohttpd's;
 * tests/integration/test_gateway.py covers limits, slow clients and routes.)
 *
 * Input: byte 0 picks completions (even) or chat (odd); the rest is the body,
 * handed over without a terminating NUL. Properties: a rejected body gets
 * status 400 with a message, and its error body and stream error event are
 * JSON with error.message; an accepted one has a model, max_tokens -1 or
 * >= 1, temperature/top_p unset or in range, at most 4 stop strings; its
 * gen.start request, response, stream chunks and usage chunk are all valid
 * JSON (chunks as "data: {...}\n\n"), with generated text taken from the
 * input so that odd bytes reach the builders. */
#include "fuzz_util.h"
#include "gw_api.h"

static void check_json(const char *text, const char *what)
{
    FUZZ_CHECK(text != NULL, "%s: NULL", what);
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    FUZZ_CHECK(json_is_object(j), "%s is not a JSON object (%s): %.200s", what, jerr.text, text);
    json_decref(j);
}

static void check_event(const char *ev, const char *what)
{
    FUZZ_CHECK(ev != NULL && strncmp(ev, "data: ", 6) == 0, "%s: not an SSE data line", what);
    size_t n = strlen(ev);
    FUZZ_CHECK(n >= 8 && strcmp(ev + n - 2, "\n\n") == 0, "%s: not ended by a blank line", what);
    char *body = strndup(ev + 6, n - 8);
    if (!body) abort();
    check_json(body, what);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    gw_kind kind = data[0] & 1 ? GW_CHAT : GW_COMPLETION;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    gw_gen g;
    gw_api_err e;
    memset(&e, 0, sizeof e);
    if (gw_api_parse(kind, body, len, &g, &e) != 0) {
        FUZZ_CHECK(e.status == 400 && e.message[0] && e.type, "rejected with status %d, no message", e.status);
        char *eb = gw_api_error_body(&e);
        check_json(eb, "error body");
        free(eb);
        char *ev = gw_api_error_event(&e);
        check_event(ev, "error event");
        free(ev);
        return 0;
    }
    FUZZ_CHECK(g.model != NULL && g.input != NULL, "accepted without model or input");
    FUZZ_CHECK(g.max_tokens == -1 || g.max_tokens >= 1, "max_tokens %lld", (long long)g.max_tokens);
    FUZZ_CHECK(g.temperature < 0 || g.temperature <= 2, "temperature %g", g.temperature);
    FUZZ_CHECK(g.top_p < 0 || (g.top_p > 0 && g.top_p <= 1), "top_p %g", g.top_p);
    FUZZ_CHECK(g.nstop >= 0 && g.nstop <= 4, "nstop %d", g.nstop);
    json_t *start = gw_api_serve_start(&g, "req-1", g.max_tokens > 0 ? g.max_tokens : 16);
    FUZZ_CHECK(json_is_object(start), "gen.start is not an object");
    char *text = json_dumps(start, JSON_COMPACT);
    FUZZ_CHECK(text != NULL, "gen.start does not serialize");
    free(text);
    json_decref(start);

    /* Generated text: the body itself, as a model could produce any bytes. */
    char *gen = fuzz_cstr(data + 1, len);
    char *r = gw_api_response(&g, "req-1", 1700000000, gen, "stop", 3, 5);
    check_json(r, "response");
    free(r);
    char *c1 = gw_api_chunk(&g, "req-1", 1700000000, NULL, true, NULL);
    char *c2 = gw_api_chunk(&g, "req-1", 1700000000, gen, false, NULL);
    char *c3 = gw_api_chunk(&g, "req-1", 1700000000, NULL, false, "length");
    char *u = gw_api_usage_chunk(&g, "req-1", 1700000000, 3, 5);
    check_event(c1, "first chunk");
    check_event(c2, "text chunk");
    check_event(c3, "last chunk");
    check_event(u, "usage chunk");
    free(c1), free(c2), free(c3), free(u);
    free(gen);
    gw_gen_free(&g);
    return 0;
}
