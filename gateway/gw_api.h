/* gw_api.h: the OpenAI-compatible JSON of the public endpoint.
 *
 * Parsing checks a request body the way OpenAI does: a body that is not a
 * JSON object, a field of the wrong type, a value out of range, n other than
 * 1 or an unrecognised field is a 400 naming the field (gw_api_err.param).
 * Accepted: model, prompt (completions: a string or a one-string array) or
 * messages (chat: role system|developer|user|assistant, content a string or
 * text parts), max_tokens (chat also max_completion_tokens), temperature
 * [0, 2], top_p (0, 1], seed, stop (a string or up to 4 strings), n = 1,
 * stream, stream_options.include_usage, user; presence_penalty and
 * frequency_penalty only as 0, echo only false, logprobs only null/false,
 * best_of only 1 (fields some clients always send).
 *
 * Builders make the response objects, stream chunks and error bodies in
 * OpenAI's shapes. All returned strings are malloc'd.
 */
#ifndef GW_API_H
#define GW_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum gw_kind { GW_COMPLETION = 0, GW_CHAT = 1 } gw_kind;

typedef struct gw_api_err {
    int status;           /* HTTP status */
    char message[512];
    const char *type;     /* "invalid_request_error", ... */
    char param[64];       /* "" when none */
    const char *code;     /* NULL when none */
} gw_api_err;

typedef struct gw_gen {
    gw_kind kind;
    char *model;
    json_t *input;          /* completions: prompt string; chat: [{role, content}] normalised */
    size_t input_bytes;     /* characters of prompt text, for the cost estimate */
    int64_t max_tokens;     /* -1: not given */
    double temperature;     /* < 0: not given */
    double top_p;           /* < 0: not given */
    bool has_seed;
    int64_t seed;
    char *stop[4];
    int nstop;
    bool stream, include_usage;
} gw_gen;

/* Parses body into g (zeroed first). 0, or -1 with e filled (status 400). */
int gw_api_parse(gw_kind kind, const char *body, size_t len, gw_gen *g, gw_api_err *e);
void gw_gen_free(gw_gen *g);

/* The serve protocol's gen.start request (docs/serving.md). */
json_t *gw_api_serve_start(const gw_gen *g, const char *id, int64_t max_tokens);

/* Error body {"error": {"message", "type", "param", "code"}}. */
char *gw_api_error_body(const gw_api_err *e);
/* Fills e; fmt is the message. Returns -1 (for `return gw_api_fail(...)`). */
int gw_api_fail(gw_api_err *e, int status, const char *type, const char *param, const char *code,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* A whole (non-streamed) response: text_completion or chat.completion. */
char *gw_api_response(const gw_gen *g, const char *id, int64_t created, const char *text,
                      const char *finish_reason, int64_t prompt_tokens, int64_t completion_tokens);

/* One "data: {...}\n\n" event of a stream. text may be NULL (chat: the first
 * chunk with the role; the last with finish_reason). finish_reason NULL while
 * streaming. */
char *gw_api_chunk(const gw_gen *g, const char *id, int64_t created, const char *text,
                   bool role, const char *finish_reason);
/* The usage chunk of stream_options.include_usage (empty choices). */
char *gw_api_usage_chunk(const gw_gen *g, const char *id, int64_t created, int64_t prompt_tokens,
                         int64_t completion_tokens);
/* An error event in a stream: "data: {"error": ...}\n\n". */
char *gw_api_error_event(const gw_api_err *e);

/* GET /v1/models body for these model names. */
char *gw_api_models(const char *const *names, int n, int64_t created);

#endif
