/* serve.h: the inside of commons-serve (not a library contract; docs/serving.md is).
 *
 * Three parts share one serve_server:
 *   serve_text.c   completion text of a sequence: stop strings and valid UTF-8;
 *   serve_engine.c the engine thread: admission, one batched step after another
 *                  (decode rows + prompt chunks), sampling, finishing, reaping;
 *   serve_rpc.c    nng REP contexts and the JSON protocol, long-polls.
 * serve.c is the main (flags, loading, signals, drain).
 *
 * Locking: srv->mu guards the sequence list, every sequence's state and text, the
 * KV pool and the waiters. The engine runs the forward pass without it; a sequence
 * in the running step (in_step) keeps its blocks and tokens until the engine
 * releases them, so RPC threads never free what the step reads. Only the engine
 * thread frees sequences. */
#ifndef SERVE_H
#define SERVE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>

#include "batch.h"
#include "model.h"
#include "paged_kv.h"
#include "sampler.h"
#include "tokenizer.h"

#define SERVE_MAX_STOPS 8
#define SERVE_MAX_STOP_LEN 256
#define SERVE_ID_MAX 128
#define SERVE_KEEP_MS 60000      /* finished sequences answer late polls this long */
#define SERVE_MAX_WAIT_MS 5000   /* gen.poll's wait_ms is clamped to this */

/* Completion text: raw bytes as generated, and the part shown to clients (valid
 * UTF-8, never a stop string or a prefix of one that may still complete). */
typedef struct serve_text {
    char *raw;
    size_t raw_len, raw_cap;
    size_t conv;            /* raw[0..conv) has been converted into vis */
    char *vis;
    size_t vis_len, vis_cap;
} serve_text;

/* Append a token's bytes; returns 0, or -1 when out of memory. Sets *stopped when a
 * stop string completed (the raw text is cut before it). */
int serve_text_append(serve_text *t, const char *bytes, size_t n, const char *const *stops,
                      int n_stops, bool *stopped);
/* The sequence ended: show the rest (a held partial stop, a truncated UTF-8 tail as
 * U+FFFD). */
int serve_text_finish(serve_text *t);
void serve_text_free(serve_text *t);

enum serve_state { SEQ_PREFILL, SEQ_DECODE, SEQ_DONE };

typedef struct serve_worker serve_worker;

typedef struct serve_seq {
    struct serve_seq *next;
    char id[SERVE_ID_MAX];
    int state;                    /* enum serve_state */
    const char *finish;           /* "stop", "length", "cancelled", "error" once done */
    int32_t *toks;                /* prompt then generated; capacity n_prompt + max_tokens */
    int n_prompt, n_toks, n_past, max_tokens;
    infer_sampler *smp;
    char *stops[SERVE_MAX_STOPS];
    int n_stops;
    infer_block_table bt;
    bool in_step;                 /* read by the running forward step */
    bool delivered;               /* a poll reply carried done with all the text */
    serve_text text;
    int64_t t_start_ms, t_last_poll_ms, t_done_ms;
    serve_worker *waiters;        /* polls held until new text or the end */
} serve_seq;

typedef struct serve_config {
    const char *model_path, *listen, *name;
    int threads, max_batch, prefill_chunk, n_ctx, kv_blocks, kv_type, block_tokens;
    long kv_mb;
    int drain_s;                  /* SIGTERM: running sequences get this long to finish */
    int abandon_s;                /* not polled this long: cancelled (protocol: 30) */
} serve_config;

typedef struct serve_server {
    serve_config cfg;
    char name[128];
    kern_ctx *kc;
    infer_model *model;
    infer_tokenizer *tok;
    int chat_fmt;
    infer_paged_kv kv;
    infer_batch *batch;
    int n_ctx;

    pthread_mutex_t mu;
    pthread_cond_t wake;          /* engine: new work, or stop */
    pthread_cond_t stepped;       /* a forward step ended (in_step flags cleared) */
    serve_seq *seqs, *seqs_tail;  /* admission order */
    int n_active, n_waiting;      /* decoding / still prefilling (not done) */
    bool draining, stopping;
    int64_t drain_deadline_ms;
    pthread_t engine;
    bool engine_started;
    /* totals for logs and serve.info */
    uint64_t n_steps, n_tokens_generated, n_prompt_tokens, n_requests, n_busy;

    nng_socket sock;
    serve_worker **workers;
    int n_workers;
} serve_server;

int64_t serve_now_ms(void);

/* Engine: start/stop the thread. Caller holds no lock. */
int serve_engine_start(serve_server *s, char *err, size_t errlen);
void serve_engine_stop(serve_server *s);
/* Under s->mu: end a sequence (finish reason), free its blocks unless the running step
 * reads them, wake its pollers. */
void serve_seq_end(serve_server *s, serve_seq *q, const char *finish);
/* Under s->mu: find a live or recently finished sequence. */
serve_seq *serve_seq_find(serve_server *s, const char *id);
/* Under s->mu: answer every poll held on q now. */
void serve_seq_wake(serve_seq *q);
/* Under s->mu: admitted sequences not yet finished. */
int serve_n_running(const serve_server *s);
/* Under s->mu: every finished sequence has been delivered or waited long enough. */
bool serve_all_delivered(const serve_server *s, int64_t grace_ms);

/* RPC: listen with n_workers contexts; stop closes the socket and waits for callbacks. */
int serve_rpc_start(serve_server *s, int n_workers, char *err, size_t errlen);
void serve_rpc_stop(serve_server *s);
/* Worker hook used by serve_seq_wake: abort the held poll so it answers. */
void serve_worker_wake(serve_worker *w);
serve_worker *serve_worker_next(serve_worker *w);

#endif
