/* sampler.c: token sampling and stop strings (sampler.h). */
#include "sampler.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

typedef struct cand {
    float logit;
    int32_t id;
} cand;

struct infer_sampler {
    infer_sampler_params p;
    int n_vocab;
    uint64_t rng;
    int32_t *hist;     /* ring of the last repeat_last_n accepted tokens */
    int n_hist, hist_next;
    float *work;       /* n_vocab penalized logits */
    int *count;        /* n_vocab occurrence counts inside the window */
    cand *cands;       /* n_vocab */
};

void infer_sampler_defaults(infer_sampler_params *p)
{
    *p = (infer_sampler_params){ .temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                                 .repeat_penalty = 1.0f, .repeat_last_n = 64 };
}

int infer_sampler_new(const infer_sampler_params *p, int n_vocab, infer_sampler **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    const char *bad = NULL;
    if (n_vocab < 1) bad = "vocabulary size must be positive";
    else if (!isfinite(p->temp)) bad = "temperature must be a number";
    else if (!(p->top_p > 0)) bad = "top_p must be in (0, 1]";
    else if (!(p->min_p >= 0) || p->min_p > 1) bad = "min_p must be in [0, 1]";
    else if (!(p->repeat_penalty > 0)) bad = "repeat_penalty must be positive";
    else if (p->repeat_last_n < 0 || p->repeat_last_n > 1 << 20)
        bad = "repeat_last_n must be in [0, 2^20]";
    else if (!isfinite(p->freq_penalty) || !isfinite(p->presence_penalty))
        bad = "penalties must be numbers";
    if (bad) {
        snprintf(err, errlen, "sampler: %s", bad);
        return INFER_EINVAL;
    }
    infer_sampler *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "sampler: out of memory");
        return INFER_ENOMEM;
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    s->hist = malloc(((size_t)p->repeat_last_n + 1) * sizeof *s->hist);
    s->work = malloc((size_t)n_vocab * sizeof *s->work);
    s->count = calloc((size_t)n_vocab, sizeof *s->count);
    s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
    if (!s->hist || !s->work || !s->count || !s->cands) {
        infer_sampler_free(s);
        snprintf(err, errlen, "sampler: out of memory");
        return INFER_ENOMEM;
    }
    infer_sampler_reset(s);
    *out = s;
    return INFER_OK;
}

void infer_sampler_free(infer_sampler *s)
{
    if (!s)
        return;
    free(s->hist);
    free(s->work);
    free(s->count);
    free(s->cands);
    free(s);
}

void infer_sampler_reset(infer_sampler *s)
{
    for (int i = 0; i < s->n_hist; i++)
        s->count[s->hist[i]] = 0;
    s->n_hist = s->hist_next = 0;
    s->rng = s->p.seed ^ 0x6A09E667F3BCC909ULL;
}

void infer_sampler_accept(infer_sampler *s, int32_t t)
{
    int w = s->p.repeat_last_n;
    if (w == 0 || t < 0 || t >= s->n_vocab)
        return;
    if (s->n_hist == w)   /* window full: the oldest token leaves it */
        s->count[s->hist[s->hist_next]]--;
    else
        s->n_hist++;
    s->hist[s->hist_next] = t;
    s->count[t]++;
    s->hist_next = (s->hist_next + 1) % w;
}

static double uniform01(infer_sampler *s)
{
    uint64_t z = (s->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* Descending logit, then ascending id: a total order, so results never depend on
 * the sort algorithm. */
static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Insert x into the sorted c[0..*m) that keeps the k best (*m <= k). */
static void top_insert(cand *c, int *m, int k, cand x)
{
    if (*m == k && cand_cmp(&x, &c[k - 1]) >= 0)
        return;
    int j = *m < k ? (*m)++ : k - 1;
    while (j > 0 && cand_cmp(&x, &c[j - 1]) < 0) {
        c[j] = c[j - 1];
        j--;
    }
    c[j] = x;
}

/* The k best of v[0..n) (1 <= k <= n) into c[0..k), sorted; tokens with skip[id] > 0
 * are left out (NULL: none). Reads v once and writes only the k kept: the scan is
 * ids ascending, so once k are kept a later token enters only with a logit strictly
 * above the k-th (an equal logit has the larger id, which loses the tie). Blocks of
 * 16 logits are first tested against that threshold at once (vectorizable), and
 * almost all of a vocabulary fails it. */
static int scan_top(const float *v, int n, int k, const int *skip, cand *c)
{
    enum { B = 16 };
    int m = 0, j = 0;
    for (; j < n && m < k; j++)
        if (!skip || skip[j] <= 0)
            top_insert(c, &m, k, (cand){ v[j], j });
    float thr = m == k ? c[k - 1].logit : -INFINITY;
    for (; j < n; j += B) {
        int e = n - j < B ? n - j : B, any = 0;
        if (e == B)
            for (int t = 0; t < B; t++)
                any |= v[j + t] > thr;
        else
            any = 1;
        if (!any)
            continue;
        for (int t = 0; t < e; t++)
            if (v[j + t] > thr && (!skip || skip[j + t] <= 0)) {
                top_insert(c, &m, k, (cand){ v[j + t], j + t });
                thr = c[m - 1].logit;
            }
    }
    return m;
}

/* Penalized logit of token t that occurred c > 0 times in the window. */
static float penalized(const infer_sampler_params *p, float l, int c)
{
    if (p->repeat_penalty != 1.0f)
        l = l > 0 ? l / p->repeat_penalty : l * p->repeat_penalty;
    return l - ((float)c * p->freq_penalty + p->presence_penalty);
}

static bool penalties_on(const infer_sampler *s)
{
    const infer_sampler_params *p = &s->p;
    return s->n_hist > 0 && (p->repeat_penalty != 1.0f || p->freq_penalty != 0.0f ||
                             p->presence_penalty != 0.0f);
}

/* All n_vocab penalized logits, for the paths that need the whole distribution. */
static const float *penalize_all(infer_sampler *s, const float *logits)
{
    if (!penalties_on(s))
        return logits;
    float *l = s->work;
    memcpy(l, logits, (size_t)s->n_vocab * sizeof *l);
    for (int i = 0; i < s->n_hist; i++) {   /* from the raw logit: repeats are harmless */
        int32_t t = s->hist[i];
        l[t] = penalized(&s->p, logits[t], s->count[t]);
    }
    return l;
}

/* The k best penalized logits into c[0..k), sorted (1 <= k <= n_vocab). Small k (the
 * usual top_k 40, greedy's 1) without copying the vocabulary: the raw logits are
 * scanned leaving out the tokens of the window, which then come in with their
 * penalized logits (a total order: insertion order does not matter). A large k is
 * a full sort, as insertion would cost O(n k). */
static int select_top(infer_sampler *s, const float *logits, int k, cand *c)
{
    if (k > 256) {
        const float *l = penalize_all(s, logits);
        for (int j = 0; j < s->n_vocab; j++)
            c[j] = (cand){ l[j], j };
        qsort(c, (size_t)s->n_vocab, sizeof *c, cand_cmp);
        return k;
    }
    if (!penalties_on(s))
        return scan_top(logits, s->n_vocab, k, NULL, c);
    int m = scan_top(logits, s->n_vocab, k, s->count, c);
    for (int i = 0; i < s->n_hist; i++) {
        int32_t t = s->hist[i];
        int cnt = s->count[t];
        if (cnt <= 0)
            continue;   /* already in via an earlier occurrence in the ring */
        top_insert(c, &m, k, (cand){ penalized(&s->p, logits[t], cnt), t });
        s->count[t] = -cnt;   /* mark as done; restored below */
    }
    for (int i = 0; i < s->n_hist; i++)
        if (s->count[s->hist[i]] < 0)
            s->count[s->hist[i]] = -s->count[s->hist[i]];
    return m;
}

/* Steps 3 (top_p, min_p) and 4 over the sorted candidates c[0..n), whose best logit
 * is mx; sum = the sum of exp(l - mx) top_p weighs against. */
static int32_t draw(infer_sampler *s, cand *c, int n, double mx, double sum)
{
    const infer_sampler_params *p = &s->p;
    if (p->top_p < 1) {
        double cum = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += exp((double)c[i].logit - mx) / sum;
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (p->min_p > 0) {   /* p_i / p_max = exp(l_i - l_max) */
        double cut = log((double)p->min_p);
        int keep = 1;
        while (keep < n && (double)c[keep].logit - mx >= cut)
            keep++;
        n = keep;
    }
    sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp(((double)c[i].logit - mx) / p->temp);
    double r = uniform01(s) * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += exp(((double)c[i].logit - mx) / p->temp);
        if (r < acc)
            return c[i].id;
    }
    return c[n - 1].id;
}

/* The top-k path's draw over its k sorted candidates c[0..k): the probabilities are
 * over these k alone. */
static int32_t draw_top(infer_sampler *s, cand *c, int k)
{
    double mx = c[0].logit, sum = 0;
    for (int i = 0; i < k; i++)
        sum += exp((double)c[i].logit - mx);
    return draw(s, c, k, mx, sum);
}

int32_t infer_sampler_sample(infer_sampler *s, const float *logits)
{
    const infer_sampler_params *p = &s->p;
    const int V = s->n_vocab;
    cand *c = s->cands;
    if (p->temp <= 0) {   /* arg max, ties to the lowest id: the best of the total order */
        select_top(s, logits, 1, c);
        return c[0].id;
    }
    if (p->top_k > 0 && p->top_k < V)
        return draw_top(s, c, select_top(s, logits, p->top_k, c));
    /* All tokens are candidates. Sorting a large vocabulary for every token is avoided
     * without changing the result: a token with probability below (1 - top_p) / V can
     * never be inside the top-p prefix (the tokens from it on would weigh less than
     * 1 - top_p in all), nor one below min_p * p_max in the min-p set; so only tokens
     * above both bounds are sorted, and the probabilities keep the sum over the whole
     * vocabulary, which only top-p needs. */
    const float *l = penalize_all(s, logits);
    double mx = l[0], sum = 0;
    for (int j = 1; j < V; j++)
        mx = l[j] > mx ? l[j] : mx;
    double cut = -INFINITY;
    if (p->top_p < 1) {
        for (int j = 0; j < V; j++)
            sum += exp((double)l[j] - mx);
        cut = mx + log(sum * (1.0 - p->top_p) / V);
    }
    if (p->min_p > 0 && mx + log((double)p->min_p) > cut)
        cut = mx + log((double)p->min_p);
    int n = 0;
    for (int j = 0; j < V; j++)
        if ((double)l[j] >= cut)
            c[n++] = (cand){ l[j], j };
    qsort(c, (size_t)n, sizeof *c, cand_cmp);
    return draw(s, c, n, mx, sum);
}

int infer_sampler_top_need(const infer_sampler *s)
{
    const infer_sampler_params *p = &s->p;
    if (penalties_on(s))   /* the penalized order may bring in any token of the window */
        return 0;
    if (p->temp <= 0)
        return 1;
    return p->top_k > 0 && p->top_k < s->n_vocab && p->top_k <= INFER_SAMPLER_TOP_MAX
               ? p->top_k : 0;
}

int32_t infer_sampler_sample_top(infer_sampler *s, const float *vals, const int32_t *ids, int n)
{
    const infer_sampler_params *p = &s->p;
    if (p->temp <= 0)
        return ids[0];
    /* the top-k path of infer_sampler_sample from select_top on: the same k candidates
     * in the same order, so the same sums and the same draw */
    int k = p->top_k < n ? p->top_k : n;
    cand *c = s->cands;
    for (int i = 0; i < k; i++)
        c[i] = (cand){ vals[i], ids[i] };
    return draw_top(s, c, k);
}

struct infer_sample_pool {
    int n_helpers;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t go, idle;
    uint64_t gen;    /* bumped per job: a helper serves each job at most once */
    bool stop;
    /* the job; rows are claimed under mu, one at a time (a row is ~0.1 ms of work) */
    infer_sampler *const *smp;
    const float *const *logits;
    int32_t *out;
    int n, next;     /* rows, next unclaimed (n = 0 between jobs) */
    int running;     /* rows claimed by helpers and not finished */
};

static void sample_row(infer_sample_pool *p, int i)
{
    p->out[i] = infer_sampler_sample(p->smp[i], p->logits[i]);
    infer_sampler_accept(p->smp[i], p->out[i]);
}

static void *sample_helper(void *arg)
{
    infer_sample_pool *p = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen)
            pthread_cond_wait(&p->go, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        while (p->next < p->n) {   /* a late wake-up finds next == n: nothing to do */
            int i = p->next++;
            p->running++;
            pthread_mutex_unlock(&p->mu);
            sample_row(p, i);
            pthread_mutex_lock(&p->mu);
            if (--p->running == 0)
                pthread_cond_signal(&p->idle);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int infer_sample_pool_new(int n_threads, infer_sample_pool **out, char *err, size_t errlen)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > 64) {
        snprintf(err, errlen, "sample pool: %d threads (expected 1 to 64)", n_threads);
        return INFER_EINVAL;
    }
    infer_sample_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->th = calloc((size_t)n_threads, sizeof *p->th))) {
        free(p);
        snprintf(err, errlen, "sample pool: out of memory");
        return INFER_ENOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->idle, NULL);
    for (int i = 0; i < n_threads - 1; i++) {
        int rc = pthread_create(&p->th[i], NULL, sample_helper, p);
        if (rc) {
            infer_sample_pool_free(p);
            snprintf(err, errlen, "sample pool: cannot start a thread: %s", strerror(rc));
            return INFER_ENOMEM;
        }
        p->n_helpers++;
    }
    *out = p;
    return INFER_OK;
}

void infer_sample_pool_free(infer_sample_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_helpers; i++)
        pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->idle);
    free(p->th);
    free(p);
}

void infer_sample_many(infer_sample_pool *p, infer_sampler *const *smp,
                       const float *const *logits, int n, int32_t *out)
{
    if (!p || p->n_helpers == 0 || n < 2) {
        for (int i = 0; i < n; i++) {
            out[i] = infer_sampler_sample(smp[i], logits[i]);
            infer_sampler_accept(smp[i], out[i]);
        }
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->smp = smp;
    p->logits = logits;
    p->out = out;
    p->n = n;
    p->next = 0;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    while (p->next < n) {
        int i = p->next++;
        pthread_mutex_unlock(&p->mu);
        sample_row(p, i);
        pthread_mutex_lock(&p->mu);
    }
    while (p->running > 0)   /* only rows a helper claimed */
        pthread_cond_wait(&p->idle, &p->mu);
    p->n = p->next = 0;
    pthread_mutex_unlock(&p->mu);
}

long infer_stop_find(const char *text, size_t len, const char *const *stops, int n,
                     size_t *hold)
{
    long first = -1;
    size_t h = 0;
    for (int k = 0; k < n; k++) {
        size_t sl = stops[k] ? strlen(stops[k]) : 0;
        if (sl == 0)
            continue;
        if (len >= sl)
            for (size_t i = 0; i + sl <= len; i++)
                if (memcmp(text + i, stops[k], sl) == 0) {
                    if (first < 0 || (long)i < first)
                        first = (long)i;
                    break;
                }
        /* Longest proper prefix of the stop that ends the text. */
        for (size_t m = sl - 1; m > h; m--)
            if (m <= len && memcmp(text + len - m, stops[k], m) == 0) {
                h = m;
                break;
            }
    }
    if (hold)
        *hold = first >= 0 ? 0 : h;
    return first;
}
