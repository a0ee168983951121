/* ledger.h: the transparency ledger (issue 8, docs/ledger.md).
 *
 * An append-only, hash-chained table `ledger` in commonsd's store. Each entry is
 * (seq, time, kind, body, prev_hash, hash) with
 *   hash = SHA-256 hex of  prev_hash "\n" seq "\n" time "\n" kind "\n" body
 * (decimal integers, lowercase hex; the first entry's prev_hash is 64 zeros) and
 * body canonical JSON (sorted keys, compact). meta.ledger_seq holds the number of
 * entries so that a removed last entry is noticed too.
 *
 * Invariants: seq runs 1, 2, 3, ... with no gaps; entry N's prev_hash is entry
 * N-1's hash; an entry is never updated or deleted by commonsd. Appending happens
 * inside the caller's open store transaction, so a record commits atomically with
 * the state change it records (or not at all).
 */
#ifndef SCHED_LEDGER_H
#define SCHED_LEDGER_H

#include "store.h"

#include <jansson.h>
#include <stdint.h>

#define LEDGER_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"
#define LEDGER_EXPORT_MAX 2000 /* entries per ledger.export reply: it stays well under 1 MiB */

/* Record kinds (docs/ledger.md defines every body). */
#define LEDGER_JOB_END "job_end"
#define LEDGER_JOB_REQUEUE "job_requeue"
#define LEDGER_POLICY_CHANGE "policy_change"
#define LEDGER_INFERENCE_USAGE "inference_usage"
#define LEDGER_PREEMPTION "preemption"

struct cluster;
struct job;
struct user;

/* The hash of one entry, as the recipe above says. */
void ledger_hash(const char *prev_hash, int64_t seq, int64_t time, const char *kind, const char *body,
                 char out[65]);

/* Appends one entry (body: a JSON object, written canonically). Creates the table
 * when absent. Returns the new seq, or -1 with s->err set (the caller rolls back). */
int64_t ledger_append(struct store *s, int64_t time, const char *kind, json_t *body);

/* Whether the table exists yet (it is made by the first append). 0 or -1 with s->err. */
int ledger_table_present(struct store *s, int *present);

enum ledger_problem {
    LEDGER_OK,
    LEDGER_CHANGED,      /* an entry's contents no longer match its hash */
    LEDGER_HASH_ALTERED, /* an entry's stored hash was edited; the next entry still links to the true one */
    LEDGER_MISSING,      /* a seq is absent: entries were removed */
    LEDGER_UNLINKED,     /* prev_hash is not the previous entry's hash: reordered, replaced or inserted */
    LEDGER_TRUNCATED,    /* fewer entries than meta.ledger_seq records: the last ones were removed */
    LEDGER_EXTRA,        /* more entries than meta.ledger_seq records: appended outside commonsd */
    LEDGER_BAD_ROW       /* a column has the wrong type or shape */
};

struct ledger_verdict {
    int64_t entries;   /* rows read */
    int64_t head_seq;  /* seq of the last entry (0: empty) */
    char head_hash[65];
    enum ledger_problem problem;
    int64_t first_bad; /* seq where the chain first breaks (0 when ok) */
    char message[512]; /* what is wrong, for a person */
};

const char *ledger_problem_name(enum ledger_problem p);

/* Recomputes the whole chain. Returns 0 with *v filled (v->problem says whether it
 * holds), or -1 with s->err set when the store could not be read. */
int ledger_verify(struct store *s, struct ledger_verdict *v);

/* Entries with seq > after, at most limit, as objects {seq, time, kind, body (the
 * exact hashed text), prev_hash, hash}. NULL with s->err set on a store error. */
json_t *ledger_entries(struct store *s, int64_t after, int limit);

/* Usage totals from job_end and job_requeue entries (ledger_usage.c). */
enum ledger_by { LEDGER_BY_INSTITUTION, LEDGER_BY_ACCOUNT, LEDGER_BY_USER };
enum ledger_period { LEDGER_PERIOD_DAY, LEDGER_PERIOD_MONTH };
int ledger_by_parse(const char *s);     /* -1 when unknown */
int ledger_period_parse(const char *s); /* -1 when unknown */
/* Rows [{period, name, jobs, runs, cpu_hours, gpu_hours, billed}] sorted by period
 * then name, for jobs that ended at or after since (Unix seconds). only_user, when
 * not NULL, keeps that user's records only. NULL with s->err on a store error. */
json_t *ledger_usage(struct store *s, enum ledger_by by, enum ledger_period period, int64_t since,
                     const char *only_user);

/* Records commonsd appends (ledger_records.c). A job's run ended (finally or
 * to be requeued): kind from its state. Logs and sets store.err on failure. */
int ledger_record_job(struct cluster *c, struct job *j);
int ledger_record_policy(struct cluster *c, int64_t version, const char *sha256, const char *applied_by,
                         const char *source);

/* Request handlers ledger.verify, ledger.export, usage.report (api_ledger.c);
 * NULL when type is none of them. */
json_t *api_ledger_handle(struct cluster *c, const struct user *u, const char *type, json_t *req);

#endif
