/* serve_engine.c: the engine thread of commons-serve — continuous batching.
 *
 * Each iteration, under the lock: forget sequences finished more than
 * SERVE_KEEP_MS ago, cancel those not polled for --abandon-s (and, when a
 * drain's deadline passed, all), then compose a step: every decoding sequence
 * contributes its last token, then prompts still prefilling get chunks of at most
 * prefill_chunk tokens in all (and SERVE_PREFILL_DECODING each while some decode),
 * oldest first. So a new request joins at the next step and a long prompt advances chunk
 * by chunk without stalling decoders. While nothing decodes, a burst of arriving
 * prompts is gathered into one step (gather()). The step runs without the lock;
 * sampling too (each sampler is the engine's alone; the step's rows are spread over
 * a small pool of threads, idle between steps). Then, under the lock again, tokens
 * become text, finished sequences free their KV blocks, and held polls are woken.
 *
 * Admission (serve_rpc.c) reserves a sequence's blocks for prompt + max_tokens up
 * front, so a running sequence never runs out of KV memory and nothing is ever
 * preempted: a full pool means `busy` at gen.start. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm_log.h"
#include "dist.h"
#include "serve.h"

#define SERVE_GATHER_MS 5        /* a burst of prompts: quiet this long ends it */
#define SERVE_GATHER_MAX_MS 25   /* ... or this long after it began */
#define SERVE_PREFILL_DECODING 256  /* one prompt's tokens per step while others decode */

int64_t serve_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void serve_seq_wake(serve_seq *q)
{
    serve_worker *w = q->waiters;
    q->waiters = NULL;
    while (w) {
        serve_worker *next = serve_worker_next(w);
        serve_worker_wake(w);
        w = next;
    }
}

void serve_seq_end(serve_server *s, serve_seq *q, const char *finish)
{
    if (q->state == SEQ_DONE)
        return;
    if (q->state == SEQ_DECODE)
        s->n_active--;
    else
        s->n_waiting--;
    q->state = SEQ_DONE;
    q->finish = finish;
    q->t_done_ms = serve_now_ms();
    serve_text_finish(&q->text);
    if (!q->in_step)
        infer_pkv_release(&s->kv, &q->bt);
    serve_seq_wake(q);
    cm_info("%s: %s after %d prompt + %d generated tokens (%.2f s)", q->id, finish,
            q->n_prompt, q->n_toks - q->n_prompt, (double)(q->t_done_ms - q->t_start_ms) / 1e3);
}

serve_seq *serve_seq_find(serve_server *s, const char *id)
{
    for (serve_seq *q = s->seqs; q; q = q->next)
        if (!strcmp(q->id, id))
            return q;
    return NULL;
}

int serve_n_running(const serve_server *s)
{
    return s->n_active + s->n_waiting;
}

bool serve_all_delivered(const serve_server *s, int64_t grace_ms)
{
    int64_t now = serve_now_ms();
    for (const serve_seq *q = s->seqs; q; q = q->next)
        if (q->state != SEQ_DONE || (!q->delivered && now - q->t_done_ms < grace_ms))
            return false;
    return true;
}

static void seq_free(serve_seq *q)
{
    infer_sampler_free(q->smp);
    for (int i = 0; i < q->n_stops; i++)
        free(q->stops[i]);
    free(q->toks);
    serve_text_free(&q->text);
    free(q);
}

/* Under the lock: cancellations by age and drain; forget old finished sequences. */
static void reap(serve_server *s)
{
    int64_t now = serve_now_ms();
    bool drain_over = s->draining && now >= s->drain_deadline_ms;
    serve_seq **pp = &s->seqs, *prev = NULL;
    while (*pp) {
        serve_seq *q = *pp;
        bool abandoned = !q->waiters && now - q->t_last_poll_ms > (int64_t)s->cfg.abandon_s * 1000;
        if (q->state != SEQ_DONE && (drain_over || abandoned)) {
            cm_warn("%s: %s", q->id, drain_over ? "drain deadline passed, cancelling" :
                    "not polled for a while, abandoned: cancelling");
            serve_seq_end(s, q, "cancelled");
        }
        if (q->state == SEQ_DONE && !q->in_step && !q->waiters &&
            now - q->t_done_ms > SERVE_KEEP_MS) {
            *pp = q->next;
            if (s->seqs_tail == q)
                s->seqs_tail = prev;
            seq_free(q);
            continue;
        }
        prev = q;
        pp = &q->next;
    }
}

typedef struct step_plan {
    infer_batch_seq *bs;
    serve_seq **seq;
    int n, n_decode;   /* rows; the first n_decode are decoding sequences */
} step_plan;

/* Under the lock: choose this step's rows. */
static void plan_step(serve_server *s, step_plan *p)
{
    p->n = 0;
    for (serve_seq *q = s->seqs; q; q = q->next)
        if (q->state == SEQ_DECODE) {
            p->bs[p->n] = (infer_batch_seq){ .bt = &q->bt, .n_past = q->n_past,
                                             .tokens = q->toks + q->n_past, .n_tokens = 1,
                                             .logits = true };
            p->seq[p->n++] = q;
        }
    p->n_decode = p->n;
    /* Prompt tokens lengthen the step for everyone in it. While sequences decode, a
     * long prompt advances by at most SERVE_PREFILL_DECODING tokens a step, so their
     * next token is not held up by one big chunk; short prompts arriving together
     * still share the step, up to --prefill-chunk tokens in all. */
    int budget = s->cfg.prefill_chunk;
    int per_seq = p->n_decode > 0 ? SERVE_PREFILL_DECODING : budget;
    for (serve_seq *q = s->seqs; q && budget > 0; q = q->next)
        if (q->state == SEQ_PREFILL) {
            int len = q->n_prompt - q->n_past;
            len = len < budget ? len : budget;
            len = len < per_seq ? len : per_seq;
            budget -= len;
            p->bs[p->n] = (infer_batch_seq){ .bt = &q->bt, .n_past = q->n_past,
                                             .tokens = q->toks + q->n_past, .n_tokens = len,
                                             .logits = q->n_past + len == q->n_prompt };
            p->seq[p->n++] = q;
        }
    for (int i = 0; i < p->n; i++)
        p->seq[i]->in_step = true;
}

/* Under the lock: a sampled token joins its sequence (text, stops, limits). */
static void accept_token(serve_server *s, serve_seq *q, int32_t t, const char *piece,
                         int64_t plen)
{
    if (q->state == SEQ_PREFILL) {
        q->state = SEQ_DECODE;
        s->n_waiting--;
        s->n_active++;
    }
    if (infer_token_is_eog(s->tok, t)) {
        serve_seq_end(s, q, "stop");
        return;
    }
    q->toks[q->n_toks++] = t;
    s->n_tokens_generated++;
    bool stopped = false;
    size_t before = q->text.vis_len;
    if (serve_text_append(&q->text, piece, (size_t)plen, (const char *const *)q->stops,
                          q->n_stops, &stopped)) {
        serve_seq_end(s, q, "error");
        return;
    }
    if (stopped)
        serve_seq_end(s, q, "stop");
    else if (q->n_toks - q->n_prompt >= q->max_tokens)
        serve_seq_end(s, q, "length");
    else if (q->text.vis_len > before)
        serve_seq_wake(q);
}

/* Under the lock: when nothing is decoding and prompts are arriving (a burst of
 * clients, or the next requests of clients whose sequences just ended), wait until
 * none came for SERVE_GATHER_MS (at most SERVE_GATHER_MAX_MS in all), so that their
 * prompts share one step: a step's cost grows much slower than its tokens, and
 * the last prompt of a burst would otherwise wait for every smaller step before
 * it. Nobody is decoding, so no one's next token is delayed. Returns true after a
 * wait (the caller plans again). *since: when this gathering began, or -1. */
static bool gather(serve_server *s, int64_t *since)
{
    int64_t now = serve_now_ms();
    if (s->n_active > 0 || s->n_waiting == 0 || !s->seqs_tail) {
        *since = -1;
        return false;
    }
    if (*since < 0)
        *since = now;
    int64_t until = s->seqs_tail->t_start_ms + SERVE_GATHER_MS;
    if (until > *since + SERVE_GATHER_MAX_MS)
        until = *since + SERVE_GATHER_MAX_MS;
    if (now >= until || s->seqs_tail->state != SEQ_PREFILL) {
        *since = -1;
        return false;
    }
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);   /* s->wake waits on the monotonic clock */
    int64_t ns = t.tv_nsec + (until - now) * 1000000;
    t.tv_sec += ns / 1000000000;
    t.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(&s->wake, &s->mu, &t);
    return true;
}

static void *engine_main(void *arg)
{
    serve_server *s = arg;
    int cap = s->cfg.max_batch * 2 + 1;   /* decoders + prefill chunks, both <= max_batch */
    step_plan p = { malloc((size_t)cap * sizeof *p.bs), malloc((size_t)cap * sizeof *p.seq),
                    0, 0 };
    int32_t *sampled = malloc((size_t)cap * sizeof *sampled);
    int32_t *drawn = malloc((size_t)cap * sizeof *drawn);
    char (*pieces)[256] = malloc((size_t)cap * sizeof *pieces);
    int64_t *plen = malloc((size_t)cap * sizeof *plen);
    infer_sampler **smp = malloc((size_t)cap * sizeof *smp);
    const float **rowl = malloc((size_t)cap * sizeof *rowl);
    char err[512];
    /* Sampling runs between forward steps, when the kernels' threads are idle: spread
     * the step's rows over as many threads (each sampler is the engine's alone). */
    infer_sample_pool *pool = NULL;
    if (!p.bs || !p.seq || !sampled || !drawn || !pieces || !plen || !smp || !rowl) {
        cm_error("engine: out of memory");
        goto out;
    }
    if (infer_sample_pool_new(kern_ctx_threads(s->kc), &pool, err, sizeof err))
        cm_warn("engine: sampling on one thread (%s)", err);
    int64_t gather_since = -1;
    /* infer_batch_set_top failed (no device memory for the candidates): whole rows of
     * logits from then on, without asking again every step */
    bool top_off = false;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        reap(s);
        if (gather(s, &gather_since))
            continue;
        plan_step(s, &p);
        if (p.n == 0) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&s->wake, &s->mu, &until);
            continue;
        }
        pthread_mutex_unlock(&s->mu);

        /* On a GPU, rows whose draw needs only their best logits (greedy, top_k <= 256,
         * no penalties) come back as (value, id) candidates selected on the device;
         * one row that needs its whole distribution makes the step download logits. */
        int need = 0;
        for (int i = 0; i < p.n && need >= 0; i++)
            if (p.bs[i].logits) {
                int k = infer_sampler_top_need(p.seq[i]->smp);
                need = k == 0 ? -1 : k > need ? k : need;
            }
        if (!top_off && infer_batch_set_top(s->batch, need > 0 ? need : 0, err, sizeof err)) {
            cm_warn("engine: sampling on the host from whole rows of logits: %s", err);
            top_off = true;
            infer_batch_set_top(s->batch, 0, err, sizeof err);
        }

        int64_t t0 = serve_now_ms();
        int rc = infer_dist_batch_step(infer_model_dist(s->model), s->batch, p.bs, p.n, err,
                                       sizeof err);
        int64_t t_fwd = serve_now_ms() - t0;
        int rows = 0;
        const float *lg = rc ? NULL : infer_dist_batch_logits(infer_model_dist(s->model),
                                                              s->batch, &rows);
        int V = infer_model_hparams(s->model)->n_vocab, r = 0;
        for (int i = 0; !rc && i < p.n; i++)
            if (p.bs[i].logits) {
                smp[r] = p.seq[i]->smp;
                rowl[r] = lg ? lg + (size_t)r * V : NULL;   /* NULL: candidates instead */
                r++;
            }
        const int32_t *top_ids = NULL;
        int top_rows = 0, top_k = 0;
        const float *top = rc ? NULL : infer_batch_top(s->batch, &top_ids, &top_rows, &top_k);
        /* the prompt's tokens were accepted at admission; generated ones here */
        if (top) {   /* a few candidates per row: no pool needed; top_rows == r */
            for (int j = 0; j < top_rows; j++) {
                drawn[j] = infer_sampler_sample_top(smp[j], top + (size_t)j * top_k,
                                                    top_ids + (size_t)j * top_k, top_k);
                infer_sampler_accept(smp[j], drawn[j]);
            }
        } else {
            infer_sample_many(pool, smp, rowl, r, drawn);
        }
        for (int i = 0, j = 0; !rc && i < p.n; i++) {
            if (!p.bs[i].logits)
                continue;
            sampled[i] = drawn[j++];
            plen[i] = infer_token_piece(s->tok, sampled[i], false, pieces[i], sizeof pieces[i]);
            if (plen[i] < 0)
                plen[i] = 0;
            if (plen[i] > (int64_t)sizeof pieces[i])
                plen[i] = sizeof pieces[i];
        }

        int n_tok = 0;
        for (int i = 0; i < p.n; i++)
            n_tok += p.bs[i].n_tokens;
        cm_debug("step: %d decoding + %d prefilling sequences, %d tokens, forward %lld ms, "
                 "sampling %lld ms", p.n_decode, p.n - p.n_decode, n_tok, (long long)t_fwd,
                 (long long)(serve_now_ms() - t0 - t_fwd));
        pthread_mutex_lock(&s->mu);
        s->n_steps++;
        pthread_cond_broadcast(&s->stepped);
        if (rc)
            cm_error("engine: forward step of %d sequences failed: %s", p.n, err);
        for (int i = 0; i < p.n; i++) {
            serve_seq *q = p.seq[i];
            q->in_step = false;
            if (q->state == SEQ_DONE) {   /* cancelled during the step */
                infer_pkv_release(&s->kv, &q->bt);
                continue;
            }
            if (rc) {
                serve_seq_end(s, q, "error");
                continue;
            }
            q->n_past += p.bs[i].n_tokens;
            if (q->state == SEQ_PREFILL)
                s->n_prompt_tokens += (uint64_t)p.bs[i].n_tokens;
            if (p.bs[i].logits)
                accept_token(s, q, sampled[i], pieces[i], plen[i]);
        }
    }
    pthread_mutex_unlock(&s->mu);
out:
    infer_sample_pool_free(pool);
    free(p.bs);
    free(p.seq);
    free(sampled);
    free(pieces);
    free(plen);
    free(smp);
    free(rowl);
    free(drawn);
    return NULL;
}

int serve_engine_start(serve_server *s, char *err, size_t errlen)
{
    int rc = pthread_create(&s->engine, NULL, engine_main, s);
    if (rc) {
        snprintf(err, errlen, "cannot start the engine thread: %s", strerror(rc));
        return -1;
    }
    s->engine_started = true;
    return 0;
}

void serve_engine_stop(serve_server *s)
{
    if (!s->engine_started)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->engine, NULL);
    s->engine_started = false;
    /* Sequences left: free them (their pollers were answered during the drain). */
    while (s->seqs) {
        serve_seq *q = s->seqs;
        s->seqs = q->next;
        infer_pkv_release(&s->kv, &q->bt);
        seq_free(q);
    }
    s->seqs_tail = NULL;
}
