/* sampler.h: choosing the next token from logits, and stop strings.
 *
 * Order of operations (llama.cpp's default chain, minus the exotic samplers):
 *   1. penalties over the last repeat_last_n accepted tokens: repetition (logit > 0
 *      divided by repeat_penalty, else multiplied), frequency (minus count * freq) and
 *      presence (minus presence once the token occurred);
 *   2. temp <= 0: the arg max (greedy; ties go to the lowest id), done;
 *   3. top_k, then top_p (smallest prefix of the sorted candidates whose probability
 *      reaches top_p) and min_p (keep p >= min_p * p_max), with probabilities of the
 *      untempered logits;
 *   4. softmax of the survivors at temperature temp, one draw from the seeded generator.
 * Same seed, same logits, same accepted history: same token, on every machine. */
#ifndef INFER_SAMPLER_H
#define INFER_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct infer_sampler_params {
    float temp;             /* <= 0: greedy */
    int top_k;              /* <= 0: off */
    float top_p;            /* >= 1: off */
    float min_p;            /* <= 0: off */
    float repeat_penalty;   /* 1: off */
    int repeat_last_n;      /* history window of the penalties (0: off) */
    float freq_penalty;     /* 0: off */
    float presence_penalty; /* 0: off */
    uint64_t seed;
} infer_sampler_params;

/* temp 0.8, top_k 40, top_p 0.95, min_p 0.05, penalties off (repeat_last_n 64), seed 0. */
void infer_sampler_defaults(infer_sampler_params *p);

typedef struct infer_sampler infer_sampler;

/* INFER_EINVAL (with message) for out-of-range parameters. */
int infer_sampler_new(const infer_sampler_params *p, int n_vocab, infer_sampler **out,
                      char *err, size_t errlen);
void infer_sampler_free(infer_sampler *s);   /* NULL is fine */
/* Forget the history and restart the generator from the seed. */
void infer_sampler_reset(infer_sampler *s);
/* Record a token of the sequence (prompt or generated) for the penalties. */
void infer_sampler_accept(infer_sampler *s, int32_t token);
/* Choose a token from n_vocab logits (not modified). */
int32_t infer_sampler_sample(infer_sampler *s, const float *logits);

/* Drawing from the best logits of a row alone (commons-serve on a GPU: the device
 * selects them, and n_vocab floats per row need not cross the bus).
 * infer_sampler_top_need: how many of the row's best logits infer_sampler_sample_top
 * needs to draw exactly the token infer_sampler_sample would draw from the whole row
 * now: 1 when greedy, top_k when 1 <= top_k <= INFER_SAMPLER_TOP_MAX (and < n_vocab);
 * 0 when it needs the whole row (top_k off or larger, or penalties with a history,
 * which may lift any token of the window into the best).
 * infer_sampler_sample_top: vals[0..n) the n best logits of the row, descending, ties
 * to the lower id, ids[] their tokens, n >= infer_sampler_top_need(s) > 0. Accepts
 * nothing (call infer_sampler_accept as after infer_sampler_sample). */
#define INFER_SAMPLER_TOP_MAX 256
int infer_sampler_top_need(const infer_sampler *s);
int32_t infer_sampler_sample_top(infer_sampler *s, const float *vals, const int32_t *ids, int n);

/* The draws of many sequences at once (commons-serve: one per row of a batched step),
 * spread over threads: the caller and n_threads - 1 helpers. Each sampler is used by
 * one thread at a time, so every draw is the one infer_sampler_sample then
 * infer_sampler_accept would make; order does not matter. A pool is used by one
 * caller at a time. The caller never waits for a helper that has not started. */
typedef struct infer_sample_pool infer_sample_pool;

/* INFER_EINVAL for n_threads outside [1, 64], INFER_ENOMEM, or the thread error. */
int infer_sample_pool_new(int n_threads, infer_sample_pool **out, char *err, size_t errlen);
void infer_sample_pool_free(infer_sample_pool *p);   /* NULL is fine */
/* out[i] = the token smp[i] draws from logits[i] (n_vocab floats), accepted into its
 * history. p NULL: all on the calling thread. */
void infer_sample_many(infer_sample_pool *p, infer_sampler *const *smp,
                       const float *const *logits, int n, int32_t *out);

/* Stop strings. Returns the byte offset of the earliest occurrence of any of the n
 * stops in text[0..len), or -1. *hold (may be NULL) gets how many trailing bytes
 * are a proper prefix of some stop: a streaming caller prints text[0..len-hold) now
 * and waits for more before printing the rest. Empty stop strings are ignored. */
long infer_stop_find(const char *text, size_t len, const char *const *stops, int n,
                     size_t *hold);

#ifdef __cplusplus
}
#endif
#endif
