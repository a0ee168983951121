/* serve_rpc.c: commons-serve's side of the gateway <-> serve protocol
 * (docs/serving.md): nng REP with many contexts, one JSON object per message.
 *
 * Each worker owns an nng context and cycles RECV -> (reply) SEND -> RECV. A
 * gen.poll that finds nothing new is held: the worker parks on the sequence's waiter
 * list and sleeps on a second aio for wait_ms; the engine wakes it by aborting that
 * sleep when text arrives or the sequence ends, and either way the worker answers
 * with what is there. The sleep has its own aio so that a wake that races with the
 * timer can never cancel the reply being sent. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "chat.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "serve.h"

#define MAX_MSG (1024 * 1024)

enum { W_RECV, W_WAIT, W_SEND };

struct serve_worker {
    serve_server *s;
    nng_ctx ctx;
    nng_aio *aio;        /* recv and send */
    nng_aio *sleep;      /* held polls */
    int state;
    serve_worker *next_waiter;
    char poll_id[SERVE_ID_MAX];
    size_t poll_offset;
};

serve_worker *serve_worker_next(serve_worker *w) { return w->next_waiter; }
void serve_worker_wake(serve_worker *w) { nng_aio_abort(w->sleep, NNG_ECANCELED); }

static void send_reply(serve_worker *w, json_t *reply)
{
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    json_decref(reply);
    nng_msg *msg = NULL;
    if (!text || nng_msg_alloc(&msg, 0) || nng_msg_append(msg, text, strlen(text))) {
        /* Out of memory: answer with a fixed reply so the client is not left hanging. */
        static const char oom[] = "{\"ok\":false,\"error\":{\"code\":\"error\","
                                  "\"message\":\"commons-serve is out of memory\"}}";
        if (msg)
            nng_msg_free(msg);
        msg = NULL;
        if (nng_msg_alloc(&msg, 0) == 0)
            nng_msg_append(msg, oom, sizeof oom - 1);
    }
    free(text);
    w->state = W_SEND;
    if (!msg) {   /* nothing can be sent: go back to receiving */
        w->state = W_RECV;
        nng_ctx_recv(w->ctx, w->aio);
        return;
    }
    nng_aio_set_msg(w->aio, msg);
    nng_ctx_send(w->ctx, w->aio);
}

/* ---- field helpers: each returns NULL or an error reply naming the field ---- */

static json_t *get_int(json_t *req, const char *key, long long lo, long long hi,
                       long long *out)
{
    json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return cm_reply_err("bad_request", "field '%s': expected an integer in [%lld, %lld]",
                            key, lo, hi);
    *out = json_integer_value(v);
    return NULL;
}

static json_t *get_num(json_t *req, const char *key, double lo, double hi, float *out)
{
    json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi)
        return cm_reply_err("bad_request", "field '%s': expected a number in [%g, %g]", key, lo,
                            hi);
    *out = (float)json_number_value(v);
    return NULL;
}

static json_t *get_id(json_t *req, const char **id)
{
    json_t *v = json_object_get(req, "id");
    if (!json_is_string(v) || json_string_length(v) < 1 || json_string_length(v) >= SERVE_ID_MAX)
        return cm_reply_err("bad_request", "field 'id': expected a string of 1 to %d bytes",
                            SERVE_ID_MAX - 1);
    *id = json_string_value(v);
    return NULL;
}

/* Tokenize into a malloc'd array with room for `extra` more tokens. */
static int32_t *tokenize(const infer_tokenizer *t, const char *text, size_t len, int extra,
                         size_t *n)
{
    size_t cap = len + 8;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *ids = malloc((cap + (size_t)extra) * sizeof *ids);
        if (!ids)
            return NULL;
        int rc = infer_tokenize(t, text, len, true, true, ids, cap, n);
        if (rc == INFER_OK)
            return ids;
        free(ids);
        if (rc != INFER_ERANGE)
            return NULL;
        cap = *n;
    }
    return NULL;
}

/* The prompt text of a request: `prompt` as is, or `messages` in the chat format. */
static json_t *prompt_text(serve_server *s, json_t *req, char **out, int *fmt_used)
{
    json_t *p = json_object_get(req, "prompt"), *m = json_object_get(req, "messages");
    *fmt_used = INFER_CHAT_NONE;
    if ((p != NULL) == (m != NULL))
        return cm_reply_err("bad_request", "give exactly one of 'prompt' (string) and 'messages'");
    if (p) {
        if (!json_is_string(p))
            return cm_reply_err("bad_request", "field 'prompt': expected a string");
        *out = strndup(json_string_value(p), json_string_length(p));
        return *out ? NULL : cm_reply_err("error", "out of memory");
    }
    if (!json_is_array(m) || json_array_size(m) < 1 || json_array_size(m) > 1024)
        return cm_reply_err("bad_request", "field 'messages': expected an array of 1 to 1024 "
                            "{role, content} objects");
    if (s->chat_fmt == INFER_CHAT_NONE)
        return cm_reply_err("bad_request", "model %s has no chat format commons-serve knows; "
                            "send 'prompt' instead of 'messages'", s->name);
    size_t n = json_array_size(m);
    infer_chat_msg *msgs = calloc(n, sizeof *msgs);
    if (!msgs)
        return cm_reply_err("error", "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(m, i);
        json_t *role = json_object_get(e, "role"), *content = json_object_get(e, "content");
        if (!json_is_string(role) || !json_is_string(content)) {
            free(msgs);
            return cm_reply_err("bad_request", "messages[%zu]: expected {\"role\": string, "
                                "\"content\": string}", i);
        }
        msgs[i] = (infer_chat_msg){ json_string_value(role), json_string_value(content) };
    }
    char cerr[256];
    long need = infer_chat_render(s->chat_fmt, msgs, (int)n, true, NULL, 0, cerr, sizeof cerr);
    json_t *r = NULL;
    if (need < 0)
        r = cm_reply_err("bad_request", "messages: %s", cerr);
    else if (!(*out = malloc((size_t)need + 1)))
        r = cm_reply_err("error", "out of memory");
    else
        infer_chat_render(s->chat_fmt, msgs, (int)n, true, *out, (size_t)need + 1, cerr,
                          sizeof cerr);
    free(msgs);
    *fmt_used = s->chat_fmt;
    return r;
}

static json_t *parse_stops(json_t *req, serve_seq *q)
{
    json_t *v = json_object_get(req, "stop");
    if (!v || json_is_null(v))
        return NULL;
    json_t *one = json_is_string(v) ? json_array() : NULL;   /* OpenAI also allows a string */
    if (one)
        json_array_append(one, v);
    json_t *arr = one ? one : v;
    json_t *r = NULL;
    if (!json_is_array(arr) || json_array_size(arr) > SERVE_MAX_STOPS - 1)
        r = cm_reply_err("bad_request", "field 'stop': expected at most %d strings",
                         SERVE_MAX_STOPS - 1);
    for (size_t i = 0; !r && i < json_array_size(arr); i++) {
        json_t *e = json_array_get(arr, i);
        if (!json_is_string(e) || json_string_length(e) > SERVE_MAX_STOP_LEN)
            r = cm_reply_err("bad_request", "stop[%zu]: expected a string of at most %d bytes",
                             i, SERVE_MAX_STOP_LEN);
        else if (json_string_length(e) > 0 &&
                 !(q->stops[q->n_stops++] = strndup(json_string_value(e), json_string_length(e))))
            r = cm_reply_err("error", "out of memory");
    }
    json_decref(one);
    return r;
}

/* A seed for requests without one: clock and a counter through a 64-bit mixer (unique
 * per request; unpredictability is not needed). */
static uint64_t fresh_seed(void)
{
    static _Atomic uint64_t counter;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    uint64_t z = (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec +
                 0x9E3779B97F4A7C15ULL * ++counter;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void seq_discard(serve_seq *q)
{
    infer_sampler_free(q->smp);
    for (int i = 0; i < q->n_stops; i++)
        free(q->stops[i]);
    free(q->toks);
    free(q);
}

static json_t *gen_start(serve_server *s, json_t *req)
{
    const char *id = NULL;
    json_t *r = get_id(req, &id);
    if (r)
        return r;
    serve_seq *q = calloc(1, sizeof *q);
    if (!q)
        return cm_reply_err("error", "out of memory");
    snprintf(q->id, sizeof q->id, "%s", id);
    long long max_tokens = -1, top_k = -1, seed = 0;
    infer_sampler_params sp;
    infer_sampler_defaults(&sp);
    char *prompt = NULL;
    int fmt = INFER_CHAT_NONE;
    if ((r = get_int(req, "max_tokens", 1, 1 << 24, &max_tokens)) ||
        (r = get_int(req, "top_k", 0, 1 << 24, &top_k)) ||
        (r = get_int(req, "seed", 0, INT64_MAX, &seed)) ||
        (r = get_num(req, "temperature", 0, 100, &sp.temp)) ||
        (r = get_num(req, "top_p", 0, 1, &sp.top_p)) ||
        (r = get_num(req, "min_p", 0, 1, &sp.min_p)) ||
        (r = parse_stops(req, q)) || (r = prompt_text(s, req, &prompt, &fmt))) {
        seq_discard(q);
        return r;
    }
    if (top_k >= 0)
        sp.top_k = (int)top_k;
    if (json_object_get(req, "seed") && !json_is_null(json_object_get(req, "seed")))
        sp.seed = (uint64_t)seed;
    else   /* no seed: a fresh one, so equal requests do not give equal samples */
        sp.seed = fresh_seed();
    /* The chat format's end-of-turn text also ends the answer (as in commons-run --chat). */
    const char *eot = fmt != INFER_CHAT_NONE ? infer_chat_end_of_turn(fmt) : NULL;
    if (eot && !(q->stops[q->n_stops++] = strdup(eot))) {
        free(prompt);
        seq_discard(q);
        return cm_reply_err("error", "out of memory");
    }
    size_t n_prompt = 0;
    int room = max_tokens > 0 ? (int)max_tokens : s->n_ctx;
    q->toks = tokenize(s->tok, prompt, strlen(prompt), room, &n_prompt);
    free(prompt);
    if (!q->toks) {
        seq_discard(q);
        return cm_reply_err("error", "tokenizing the prompt failed (out of memory)");
    }
    char serr[256];
    if (n_prompt == 0)
        r = cm_reply_err("bad_request", "the prompt is empty (no tokens)");
    else if ((long long)n_prompt >= s->n_ctx || (max_tokens > 0 &&
             (long long)n_prompt + max_tokens > s->n_ctx))
        r = cm_reply_err("too_long", "prompt of %zu tokens plus max_tokens %lld exceeds the "
                         "context of %d", n_prompt, max_tokens > 0 ? max_tokens : 1, s->n_ctx);
    else if (infer_sampler_new(&sp, infer_model_hparams(s->model)->n_vocab, &q->smp, serr,
                               sizeof serr))
        r = cm_reply_err("bad_request", "sampling parameters: %s", serr);
    if (r) {
        seq_discard(q);
        return r;
    }
    q->n_prompt = q->n_toks = (int)n_prompt;
    /* Without max_tokens: up to 256 tokens, within the context. */
    q->max_tokens = max_tokens > 0 ? (int)max_tokens :
                    (s->n_ctx - q->n_prompt < 256 ? s->n_ctx - q->n_prompt : 256);
    for (int i = 0; i < q->n_prompt; i++)
        infer_sampler_accept(q->smp, q->toks[i]);

    int need = infer_pkv_blocks_for(&s->kv, q->n_prompt + q->max_tokens);
    pthread_mutex_lock(&s->mu);
    s->n_requests++;
    if (s->draining)
        r = cm_reply_err("busy", "commons-serve is draining (shutting down)");
    else if (serve_seq_find(s, q->id))
        r = cm_reply_err("bad_request", "id '%s' is already in use", q->id);
    else if (need > s->kv.n_blocks)
        r = cm_reply_err("too_long", "prompt %d + max_tokens %d tokens need %d KV blocks, the "
                         "pool has %d in all", q->n_prompt, q->max_tokens, need, s->kv.n_blocks);
    else if (serve_n_running(s) >= s->cfg.max_batch)
        r = cm_reply_err("busy", "all %d batch slots are taken", s->cfg.max_batch);
    else if (infer_pkv_reserve(&s->kv, &q->bt, q->n_prompt + q->max_tokens))
        r = cm_reply_err("busy", "KV cache full: %d blocks needed, %d free", need, s->kv.n_free);
    if (r) {
        if (!strcmp(cm_reply_error_code(r), "busy"))
            s->n_busy++;
        pthread_mutex_unlock(&s->mu);
        seq_discard(q);
        return r;
    }
    q->state = SEQ_PREFILL;
    q->t_start_ms = q->t_last_poll_ms = serve_now_ms();
    if (s->seqs_tail)
        s->seqs_tail->next = q;
    else
        s->seqs = q;
    s->seqs_tail = q;
    s->n_waiting++;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
    cm_info("%s: admitted, %d prompt tokens, max_tokens %d, %d KV blocks", q->id, q->n_prompt,
            q->max_tokens, need);
    return json_pack("{s:b, s:i}", "ok", 1, "prompt_tokens", q->n_prompt);
}

/* Under the lock: the answer to a poll of q from offset. At most MAX_POLL_TEXT bytes
 * go in one reply (cut at a character boundary) so that even escaped text stays far
 * below the 1 MiB message limit; `done` only comes with the last of the text. */
#define MAX_POLL_TEXT (128 * 1024)
static json_t *poll_answer(serve_seq *q, size_t offset)
{
    size_t n = q->text.vis_len - offset;
    if (n > MAX_POLL_TEXT) {
        n = MAX_POLL_TEXT;
        while (n > 0 && (q->text.vis[offset + n] & 0xC0) == 0x80)
            n--;
    }
    bool done = q->state == SEQ_DONE && offset + n == q->text.vis_len;
    json_t *r = json_pack("{s:b, s:s%, s:b, s:i, s:i}", "ok", 1, "text",
                          q->text.vis ? q->text.vis + offset : "", n,
                          "done", done, "prompt_tokens", q->n_prompt, "completion_tokens",
                          q->n_toks - q->n_prompt);
    if (r && done) {
        json_object_set_new(r, "finish_reason", json_string(q->finish));
        q->delivered = true;
    }
    q->t_last_poll_ms = serve_now_ms();
    return r ? r : cm_reply_err("error", "out of memory");
}

/* NULL: the poll is held (worker parked and sleeping). */
static json_t *gen_poll(serve_worker *w, json_t *req)
{
    serve_server *s = w->s;
    const char *id = NULL;
    long long offset = 0, wait_ms = 0;
    json_t *r = get_id(req, &id);
    if (r || (r = get_int(req, "offset", 0, INT64_MAX, &offset)) ||
        (r = get_int(req, "wait_ms", 0, INT64_MAX, &wait_ms)))
        return r;
    if (wait_ms > SERVE_MAX_WAIT_MS)
        wait_ms = SERVE_MAX_WAIT_MS;
    pthread_mutex_lock(&s->mu);
    serve_seq *q = serve_seq_find(s, id);
    if (!q)
        r = cm_reply_err("not_found", "no sequence '%s' (never started, or finished more than "
                         "%d s ago)", id, SERVE_KEEP_MS / 1000);
    else if ((size_t)offset > q->text.vis_len ||
             ((size_t)offset < q->text.vis_len && (q->text.vis[offset] & 0xC0) == 0x80))
        r = cm_reply_err("bad_request", "offset %lld: the text has %zu bytes and offsets fall "
                         "between UTF-8 characters", offset, q->text.vis_len);
    else if (q->text.vis_len > (size_t)offset || q->state == SEQ_DONE || wait_ms == 0)
        r = poll_answer(q, (size_t)offset);
    else {
        q->t_last_poll_ms = serve_now_ms();
        snprintf(w->poll_id, sizeof w->poll_id, "%s", id);
        w->poll_offset = (size_t)offset;
        w->next_waiter = q->waiters;
        q->waiters = w;
        w->state = W_WAIT;
        nng_sleep_aio((nng_duration)wait_ms, w->sleep);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

static json_t *gen_cancel(serve_server *s, json_t *req)
{
    const char *id = NULL;
    json_t *r = get_id(req, &id);
    if (r)
        return r;
    pthread_mutex_lock(&s->mu);
    serve_seq *q = serve_seq_find(s, id);
    if (!q)
        r = cm_reply_err("not_found", "no sequence '%s'", id);
    else {
        serve_seq_end(s, q, "cancelled");
        /* Blocks read by the running step are freed when it ends (milliseconds): wait
         * for that, so that serve.info right after the cancel shows them free. */
        while (q->in_step && !s->stopping)
            pthread_cond_wait(&s->stepped, &s->mu);
        r = json_pack("{s:b}", "ok", 1);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

static json_t *serve_info(serve_server *s)
{
    pthread_mutex_lock(&s->mu);
    json_t *r = json_pack("{s:b, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:I, s:I, s:I}",
                          "ok", 1, "model", s->name, "n_ctx", s->n_ctx,
                          "max_batch", s->cfg.max_batch, "active", s->n_active,
                          "waiting", s->n_waiting, "kv_blocks_total", s->kv.n_blocks,
                          "kv_blocks_free", s->kv.n_free, "block_tokens", s->kv.block_tokens,
                          "draining", s->draining, "steps", (json_int_t)s->n_steps,
                          "tokens_generated", (json_int_t)s->n_tokens_generated,
                          "busy_answers", (json_int_t)s->n_busy);
    pthread_mutex_unlock(&s->mu);
    return r ? r : cm_reply_err("error", "out of memory");
}

/* Prometheus text exposition of the same numbers (DESIGN: every daemon has metrics). */
static json_t *serve_metrics(serve_server *s)
{
    char buf[2048];
    pthread_mutex_lock(&s->mu);
    int n = snprintf(buf, sizeof buf,
        "# HELP commons_serve_sequences Admitted sequences by state.\n"
        "# TYPE commons_serve_sequences gauge\n"
        "commons_serve_sequences{state=\"active\"} %d\n"
        "commons_serve_sequences{state=\"waiting\"} %d\n"
        "# HELP commons_serve_kv_blocks KV cache blocks of the pool.\n"
        "# TYPE commons_serve_kv_blocks gauge\n"
        "commons_serve_kv_blocks{state=\"free\"} %d\n"
        "commons_serve_kv_blocks{state=\"reserved\"} %d\n"
        "# TYPE commons_serve_draining gauge\n"
        "commons_serve_draining %d\n"
        "# TYPE commons_serve_steps_total counter\n"
        "commons_serve_steps_total %llu\n"
        "# TYPE commons_serve_prompt_tokens_total counter\n"
        "commons_serve_prompt_tokens_total %llu\n"
        "# TYPE commons_serve_generated_tokens_total counter\n"
        "commons_serve_generated_tokens_total %llu\n"
        "# TYPE commons_serve_requests_total counter\n"
        "commons_serve_requests_total %llu\n"
        "# TYPE commons_serve_busy_total counter\n"
        "commons_serve_busy_total %llu\n",
        s->n_active, s->n_waiting, s->kv.n_free, s->kv.n_blocks - s->kv.n_free, s->draining,
        (unsigned long long)s->n_steps, (unsigned long long)s->n_prompt_tokens,
        (unsigned long long)s->n_tokens_generated, (unsigned long long)s->n_requests,
        (unsigned long long)s->n_busy);
    pthread_mutex_unlock(&s->mu);
    json_t *r = n > 0 && (size_t)n < sizeof buf ?
                json_pack("{s:b, s:s}", "ok", 1, "metrics", buf) : NULL;
    return r ? r : cm_reply_err("error", "metrics do not fit");
}

/* NULL: the request is a held poll. */
static json_t *handle(serve_worker *w, const char *body, size_t len)
{
    json_error_t je;
    json_t *req = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!req)
        return cm_reply_err("bad_request", "malformed JSON at line %d, column %d: %s", je.line,
                            je.column, je.text);
    json_t *r = NULL;
    json_t *type = json_object_get(req, "type"), *v = json_object_get(req, "v");
    const char *t = json_string_value(type);
    if (!json_is_object(req) || !t)
        r = cm_reply_err("bad_request", "expected a JSON object with a string 'type'");
    else if (v && (!json_is_integer(v) || json_integer_value(v) != 1))
        r = cm_reply_err("bad_request", "field 'v': this server speaks version 1");
    else if (!strcmp(t, "serve.info"))
        r = serve_info(w->s);
    else if (!strcmp(t, "gen.start"))
        r = gen_start(w->s, req);
    else if (!strcmp(t, "gen.poll"))
        r = gen_poll(w, req);
    else if (!strcmp(t, "gen.cancel"))
        r = gen_cancel(w->s, req);
    else if (!strcmp(t, "serve.metrics"))
        r = serve_metrics(w->s);
    else
        r = cm_reply_err("bad_request", "unknown type '%s' (serve.info, gen.start, gen.poll, "
                         "gen.cancel, serve.metrics)", t);
    json_decref(req);
    return r;
}

static void worker_cb(void *arg)
{
    serve_worker *w = arg;
    int rv = nng_aio_result(w->aio);
    if (w->state == W_SEND) {
        if (rv)
            nng_msg_free(nng_aio_get_msg(w->aio));
        if (rv == NNG_ECLOSED)
            return;
        w->state = W_RECV;
        nng_ctx_recv(w->ctx, w->aio);
        return;
    }
    /* W_RECV */
    if (rv) {
        if (rv != NNG_ECLOSED && rv != NNG_ECANCELED)
            nng_ctx_recv(w->ctx, w->aio);
        return;
    }
    nng_msg *msg = nng_aio_get_msg(w->aio);
    json_t *reply = handle(w, nng_msg_body(msg), nng_msg_len(msg));
    nng_msg_free(msg);
    if (reply)
        send_reply(w, reply);
}

/* A held poll's sleep ended: timed out, or woken by the engine. Answer it. */
static void sleep_cb(void *arg)
{
    serve_worker *w = arg;
    serve_server *s = w->s;
    pthread_mutex_lock(&s->mu);
    serve_seq *q = serve_seq_find(s, w->poll_id);
    json_t *r;
    if (!q)
        r = cm_reply_err("not_found", "sequence '%s' was forgotten", w->poll_id);
    else {
        for (serve_worker **pp = &q->waiters; *pp; pp = &(*pp)->next_waiter)
            if (*pp == w) {   /* timed out: still parked */
                *pp = w->next_waiter;
                break;
            }
        r = poll_answer(q, w->poll_offset);
    }
    w->next_waiter = NULL;
    pthread_mutex_unlock(&s->mu);
    send_reply(w, r);
}

int serve_rpc_start(serve_server *s, int n_workers, char *err, size_t errlen)
{
    int rv;
    if ((rv = nng_rep0_open(&s->sock))) {
        snprintf(err, errlen, "nng: cannot open a REP socket: %s", nng_strerror(rv));
        return -1;
    }
    nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, MAX_MSG);
    s->workers = calloc((size_t)n_workers, sizeof *s->workers);
    if (!s->workers) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n_workers; i++) {
        serve_worker *w = calloc(1, sizeof *w);
        if (!w || (rv = nng_aio_alloc(&w->aio, worker_cb, w)) ||
            (rv = nng_aio_alloc(&w->sleep, sleep_cb, w)) || (rv = nng_ctx_open(&w->ctx, s->sock))) {
            snprintf(err, errlen, "nng: cannot set up context %d: %s", i,
                     w ? nng_strerror(rv) : "out of memory");
            if (w) {
                nng_aio_free(w->aio);
                nng_aio_free(w->sleep);
                free(w);
            }
            return -1;
        }
        w->s = s;
        s->workers[s->n_workers++] = w;
    }
    if ((rv = nng_listen(s->sock, s->cfg.listen, NULL, 0))) {
        snprintf(err, errlen, "cannot listen on %s: %s", s->cfg.listen, nng_strerror(rv));
        return -1;
    }
    for (int i = 0; i < s->n_workers; i++) {
        s->workers[i]->state = W_RECV;
        nng_ctx_recv(s->workers[i]->ctx, s->workers[i]->aio);
    }
    return 0;
}

void serve_rpc_stop(serve_server *s)
{
    nng_close(s->sock);
    for (int i = 0; i < s->n_workers; i++) {
        nng_aio_stop(s->workers[i]->sleep);
        nng_aio_stop(s->workers[i]->aio);
    }
    /* No held poll is left; make sure the engine cannot wake a freed worker. */
    pthread_mutex_lock(&s->mu);
    for (serve_seq *q = s->seqs; q; q = q->next)
        q->waiters = NULL;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_workers; i++) {
        nng_aio_free(s->workers[i]->sleep);
        nng_aio_free(s->workers[i]->aio);
        free(s->workers[i]);
    }
    free(s->workers);
    s->workers = NULL;
    s->n_workers = 0;
}
