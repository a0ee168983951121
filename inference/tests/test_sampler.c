/* test_sampler.c: sampler, stop strings and chat templates (sampler.h, chat.h).
 * Plain C (no Check) so it runs in COMMONS_INFERENCE_ONLY builds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "gguf.h"
#include "sampler.h"

static int failures, checks;

#define CHECK(cond, ...) \
    do { checks++; if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
                                  printf(__VA_ARGS__); printf("\n"); } } while (0)

enum { V = 1000 };

static infer_sampler *mk(infer_sampler_params p)
{
    infer_sampler *s;
    char err[256];
    int rc = infer_sampler_new(&p, V, &s, err, sizeof err);
    CHECK(rc == INFER_OK, "sampler_new: %s", err);
    return rc == INFER_OK ? s : NULL;
}

/* Logits: a smooth random landscape with one clear best (id 123) and runner-up (77). */
static void logits(float *l)
{
    unsigned x = 12345;
    for (int i = 0; i < V; i++) {
        x = x * 1103515245u + 12345u;
        l[i] = -(float)((x >> 16) % 1000) / 250.0f;   /* -4 .. 0: far below the two */
    }
    l[123] = 9.0f;
    l[77] = 8.5f;
}

static void test_greedy_and_topk1(void)
{
    float l[V];
    logits(l);
    infer_sampler_params p = { .temp = 0, .top_p = 1, .repeat_penalty = 1 };
    infer_sampler *s = mk(p);
    CHECK(infer_sampler_sample(s, l) == 123, "greedy picks the arg max");
    infer_sampler_free(s);
    p = (infer_sampler_params){ .temp = 5, .top_k = 1, .top_p = 1, .repeat_penalty = 1 };
    s = mk(p);
    for (int i = 0; i < 50; i++)
        CHECK(infer_sampler_sample(s, l) == 123, "top_k 1 is greedy at any temperature");
    infer_sampler_free(s);
}

static void test_seed_determinism(void)
{
    float l[V];
    logits(l);
    infer_sampler_params p;
    infer_sampler_defaults(&p);
    p.temp = 1.5f;
    p.top_k = 0;
    p.top_p = 1;
    p.min_p = 0;
    p.seed = 42;
    infer_sampler *a = mk(p), *b = mk(p);
    p.seed = 43;
    infer_sampler *c = mk(p);
    int same = 1, differs = 0;
    int32_t first[200];
    for (int i = 0; i < 200; i++) {
        int32_t x = infer_sampler_sample(a, l), y = infer_sampler_sample(b, l);
        int32_t z = infer_sampler_sample(c, l);
        first[i] = x;
        same &= x == y;
        differs |= x != z;
        CHECK(x >= 0 && x < V, "token in range");
    }
    CHECK(same, "same seed, same tokens");
    CHECK(differs, "another seed gives other tokens (200 draws at temperature 1.5)");
    infer_sampler_reset(a);
    int again = 1;
    for (int i = 0; i < 200; i++)
        again &= infer_sampler_sample(a, l) == first[i];
    CHECK(again, "reset restarts the sequence");
    infer_sampler_free(a);
    infer_sampler_free(b);
    infer_sampler_free(c);
}

static void test_top_p_min_p(void)
{
    float l[V];
    logits(l);
    /* p(123)/p(77) = e^0.5; the rest is far below: top_p 0.5 keeps only 123. */
    infer_sampler_params p = { .temp = 1, .top_p = 0.5f, .repeat_penalty = 1, .seed = 1 };
    infer_sampler *s = mk(p);
    for (int i = 0; i < 50; i++)
        CHECK(infer_sampler_sample(s, l) == 123, "top_p 0.5 keeps only the best");
    infer_sampler_free(s);
    /* min_p 0.5: p(77)/p(123) = e^-0.5 = 0.61 stays, others (<= e^-5) go. */
    p = (infer_sampler_params){ .temp = 1, .top_p = 1, .min_p = 0.5f, .repeat_penalty = 1,
                                .seed = 2 };
    s = mk(p);
    int n123 = 0, n77 = 0, other = 0;
    for (int i = 0; i < 2000; i++) {
        int32_t t = infer_sampler_sample(s, l);
        n123 += t == 123;
        n77 += t == 77;
        other += t != 123 && t != 77;
    }
    CHECK(other == 0, "min_p 0.5 keeps only two tokens (%d others)", other);
    /* Expected share of 77: 1/(1+e^0.5) = 0.378. */
    CHECK(fabs(n77 / 2000.0 - 0.378) < 0.05, "share of the runner-up %.3f", n77 / 2000.0);
    CHECK(n123 > n77, "best drawn more often");
    infer_sampler_free(s);
}

/* top_k 0 with top_p: every draw lies in the top-p prefix computed by brute force, and
 * every token of that prefix with a fair share is drawn. A large flat tail (5000 tokens
 * holding ~67% of the mass) makes the prefix boundary fall inside the tail. */
static void test_top_p_full_vocabulary(void)
{
    enum { N = 5010 };
    static float l[N];
    for (int i = 0; i < N; i++)
        l[i] = i < 10 ? 8.0f - 0.1f * (float)i : 2.0f;
    double sum = 0, mx = 8.0;
    for (int i = 0; i < N; i++)
        sum += exp(l[i] - mx);
    /* Brute force: sorted order is 0..9 then the tail in id order. */
    double cum = 0, top_p = 0.7;
    int keep = 0;
    while (keep < N && cum < top_p)
        cum += exp(l[keep++] - mx) / sum;
    CHECK(keep > 10 && keep < N, "the boundary is inside the tail (%d)", keep);
    infer_sampler_params p = { .temp = 1, .top_p = (float)top_p, .repeat_penalty = 1,
                               .seed = 9 };
    infer_sampler *s;
    char err[256];
    CHECK(infer_sampler_new(&p, N, &s, err, sizeof err) == INFER_OK, "%s", err);
    int outside = 0, seen_head = 0, tail = 0;
    for (int i = 0; i < 3000; i++) {
        int32_t t = infer_sampler_sample(s, l);
        outside += t >= keep;
        seen_head |= t == 9;
        tail += t >= 10;
    }
    /* The kept tail tokens hold about (0.7 - 0.33) / 0.7 of the kept mass. */
    CHECK(tail > 1200 && tail < 1950, "%d of 3000 draws from the kept tail", tail);
    CHECK(outside == 0, "%d draws outside the top-p prefix of %d tokens", outside, keep);
    CHECK(seen_head, "the 10th best token is drawn");
    infer_sampler_free(s);
}

static void test_penalties(void)
{
    float l[V];
    logits(l);
    infer_sampler_params p = { .temp = 0, .top_p = 1, .repeat_penalty = 1.5f,
                               .repeat_last_n = 4 };
    infer_sampler *s = mk(p);
    infer_sampler_accept(s, 123);
    /* 9 / 1.5 = 6 < 8.5: the runner-up wins. */
    CHECK(infer_sampler_sample(s, l) == 77, "repetition penalty demotes a repeated token");
    for (int i = 0; i < 4; i++)
        infer_sampler_accept(s, 5);   /* pushes 123 out of the 4-token window */
    CHECK(infer_sampler_sample(s, l) == 123, "the window forgets old tokens");
    infer_sampler_free(s);

    p = (infer_sampler_params){ .temp = 0, .top_p = 1, .repeat_penalty = 1,
                                .repeat_last_n = 64, .freq_penalty = 0.3f };
    s = mk(p);
    infer_sampler_accept(s, 123);
    CHECK(infer_sampler_sample(s, l) == 123, "one occurrence: 9 - 0.3 still wins");
    infer_sampler_accept(s, 123);
    CHECK(infer_sampler_sample(s, l) == 77, "two occurrences: 9 - 0.6 < 8.5");
    infer_sampler_free(s);

    p = (infer_sampler_params){ .temp = 0, .top_p = 1, .repeat_penalty = 1,
                                .repeat_last_n = 64, .presence_penalty = 0.6f };
    s = mk(p);
    infer_sampler_accept(s, 123);
    CHECK(infer_sampler_sample(s, l) == 77, "presence penalty 0.6 demotes 123");
    float copy[V];
    memcpy(copy, l, sizeof copy);
    infer_sampler_sample(s, l);
    CHECK(memcmp(copy, l, sizeof copy) == 0, "logits are not modified");
    infer_sampler_free(s);
}

/* Top-k scan: ties at the k-th logit go to the lowest ids, as in a full sort. */
static void test_top_k_ties(void)
{
    static float l[V];
    for (int i = 0; i < V; i++)
        l[i] = 1.0f;
    l[600] = 2.0f;   /* the best comes late: it must displace a tied one */
    infer_sampler_params p = { .temp = 1, .top_k = 5, .top_p = 1, .repeat_penalty = 1,
                               .seed = 3 };
    infer_sampler *s = mk(p);
    int seen[V] = { 0 }, outside = 0;
    for (int i = 0; i < 3000; i++) {
        int32_t t = infer_sampler_sample(s, l);
        outside += !(t == 600 || (t >= 0 && t < 4));
        if (t >= 0 && t < V)
            seen[t]++;
    }
    CHECK(outside == 0, "%d draws outside {600, 0..3}", outside);
    CHECK(seen[600] && seen[0] && seen[3], "every kept token is drawn (%d %d %d)", seen[600],
          seen[0], seen[3]);
    infer_sampler_free(s);
    p.temp = 0;
    s = mk(p);
    l[600] = 1.0f;
    CHECK(infer_sampler_sample(s, l) == 0, "greedy over ties picks the lowest id");
    infer_sampler_free(s);
}

/* Penalized logits of the test's own copy of the window (brute force). */
static void penalize(const infer_sampler_params *p, const int32_t *win, int n, const float *in,
                     float *out, int nv)
{
    memcpy(out, in, (size_t)nv * sizeof *out);
    for (int t = 0; t < nv; t++) {
        int c = 0;
        for (int i = 0; i < n; i++)
            c += win[i] == t;
        if (!c)
            continue;
        float x = in[t];
        if (p->repeat_penalty != 1.0f)
            x = x > 0 ? x / p->repeat_penalty : x * p->repeat_penalty;
        out[t] = x - ((float)c * p->freq_penalty + p->presence_penalty);
    }
}

static const float *sort_logits;

/* Descending logit, then ascending id. */
static int by_logit(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (sort_logits[i] != sort_logits[j])
        return sort_logits[i] > sort_logits[j] ? -1 : 1;
    return (i > j) - (i < j);
}

/* The sampler's penalties (applied while selecting, without a copy of the logits)
 * draw exactly what a sampler without penalties draws from logits penalized by brute
 * force, seed for seed, on the top-k, full-vocabulary and greedy paths; and top-k
 * draws always lie in the set a full sort keeps (top_k, then top_p, then min_p). */
static void test_penalties_match_brute_force(void)
{
    enum { N = 3000, W = 16, STEPS = 300 };
    static float base[N], pen[N], land[N];
    unsigned x = 777;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        base[i] = (float)((x >> 16) % 400) / 50.0f - 4.0f;   /* many exact ties */
    }
    for (int path = 0; path < 3; path++) {
        infer_sampler_params pa = { .temp = path == 2 ? 0 : 0.8f, .top_k = path == 1 ? 0 : 40,
                                    .top_p = 0.95f, .min_p = 0.05f, .repeat_penalty = 1.3f,
                                    .repeat_last_n = W, .freq_penalty = 0.1f,
                                    .presence_penalty = 0.2f, .seed = 11 };
        infer_sampler_params pb = pa;
        pb.repeat_penalty = 1;
        pb.freq_penalty = pb.presence_penalty = 0;
        pb.repeat_last_n = 0;
        infer_sampler *a, *b;
        char err[256];
        CHECK(infer_sampler_new(&pa, N, &a, err, sizeof err) == INFER_OK, "%s", err);
        CHECK(infer_sampler_new(&pb, N, &b, err, sizeof err) == INFER_OK, "%s", err);
        int32_t win[W];
        int nwin = 0, differ = 0, outside = 0, distinct = 0;
        static int drawn[N];
        memset(drawn, 0, sizeof drawn);
        for (int step = 0; step < STEPS; step++) {
            /* the landscape drifts so that the window's tokens keep mattering */
            for (int i = 0; i < N; i++)
                land[i] = base[(i + step * 7) % N];
            penalize(&pa, win, nwin, land, pen, N);
            int32_t ta = infer_sampler_sample(a, land), tb = infer_sampler_sample(b, pen);
            differ += ta != tb;
            if (path == 0) {   /* brute force: the kept set of a full sort */
                static int idx[N];
                for (int i = 0; i < N; i++)
                    idx[i] = i;
                sort_logits = pen;
                qsort(idx, N, sizeof *idx, by_logit);
                double mx = pen[idx[0]], sum = 0, cum = 0;
                for (int i = 0; i < 40; i++)
                    sum += exp(pen[idx[i]] - mx);
                int keep = 40;
                for (int i = 0; i < 40; i++)
                    if ((cum += exp(pen[idx[i]] - mx) / sum) >= 0.95) {
                        keep = i + 1;
                        break;
                    }
                int k2 = 1;
                while (k2 < keep && pen[idx[k2]] - mx >= log(0.05))
                    k2++;
                int in = 0;
                for (int i = 0; i < k2; i++)
                    in |= idx[i] == ta;
                outside += !in;
            }
            distinct += !drawn[ta]++;
            infer_sampler_accept(a, ta);
            if (nwin == W)
                memmove(win, win + 1, (W - 1) * sizeof *win);
            else
                nwin++;
            win[nwin - 1] = ta;
        }
        CHECK(differ == 0, "path %d: %d of %d draws differ from brute-force penalties", path,
              differ, STEPS);
        CHECK(outside == 0, "path %d: %d draws outside the brute-force kept set", path, outside);
        CHECK(distinct > 20, "path %d: the penalties spread the draws (%d distinct)", path,
              distinct);
        infer_sampler_free(a);
        infer_sampler_free(b);
    }
}

/* Drawing from the best logits alone (infer_sampler_sample_top) is the draw from the
 * whole row, seed for seed, whenever infer_sampler_top_need says it may be used: with
 * ties in the row, with more candidates than needed, for greedy, top_k 1..256 with
 * top_p / min_p; and the need is 0 where the whole row is required. */
static void test_sample_top_matches_full_row(void)
{
    enum { N = 2000, STEPS = 200 };
    static float l[N], vals[INFER_SAMPLER_TOP_MAX];
    static int ord[N];
    int32_t ids[INFER_SAMPLER_TOP_MAX];
    const struct { float temp; int top_k; float top_p, min_p; } cases[] = {
        { 0, 0, 1, 0 }, { 0.8f, 40, 0.95f, 0.05f }, { 1.5f, 1, 1, 0 }, { 1, 7, 1, 0 },
        { 0.7f, 256, 0.9f, 0 }, { 2, 100, 1, 0.2f },
    };
    unsigned x = 4242;
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        infer_sampler_params p = { .temp = cases[ci].temp, .top_k = cases[ci].top_k,
                                   .top_p = cases[ci].top_p, .min_p = cases[ci].min_p,
                                   .repeat_penalty = 1, .repeat_last_n = 64,
                                   .seed = 11 + ci };
        infer_sampler *full, *top;
        char err[256];
        if (infer_sampler_new(&p, N, &full, err, sizeof err) ||
            infer_sampler_new(&p, N, &top, err, sizeof err)) {
            CHECK(0, "sampler_new: %s", err);
            return;
        }
        int need = infer_sampler_top_need(top);
        CHECK(need == (p.temp <= 0 ? 1 : p.top_k), "case %zu: need %d", ci, need);
        int mismatches = 0;
        for (int step = 0; step < STEPS && need > 0; step++) {
            for (int i = 0; i < N; i++) {   /* coarse values: many ties */
                x = x * 1103515245u + 12345u;
                l[i] = (float)((x >> 16) % 64) / 8.0f;
            }
            for (int i = 0; i < N; i++)
                ord[i] = i;
            sort_logits = l;
            qsort(ord, N, sizeof *ord, by_logit);
            int n = need + step % 3;   /* the caller may pass more than needed */
            if (n > INFER_SAMPLER_TOP_MAX)
                n = INFER_SAMPLER_TOP_MAX;
            for (int i = 0; i < n; i++)
                vals[i] = l[ord[i]], ids[i] = ord[i];
            int32_t a = infer_sampler_sample(full, l), b = infer_sampler_sample_top(top, vals, ids, n);
            mismatches += a != b;
            infer_sampler_accept(full, a);
            infer_sampler_accept(top, a);
        }
        CHECK(mismatches == 0, "case %zu: %d of %d draws differ", ci, mismatches, STEPS);
        infer_sampler_free(full);
        infer_sampler_free(top);
    }
    /* the whole row is needed: top_k off, beyond the limit, or not below n_vocab;
     * penalties once there is a history (not before) */
    const struct { int top_k; float rep, freq; int accept; int want; } need0[] = {
        { 0, 1, 0, 0, 0 }, { 257, 1, 0, 0, 0 }, { N, 1, 0, 0, 0 }, { 40, 1.1f, 0, 1, 0 },
        { 40, 1, 0.5f, 1, 0 }, { 40, 1.1f, 0, 0, 40 },
    };
    for (size_t i = 0; i < sizeof need0 / sizeof *need0; i++) {
        infer_sampler_params p = { .temp = 1, .top_k = need0[i].top_k, .top_p = 1,
                                   .repeat_penalty = need0[i].rep, .repeat_last_n = 64,
                                   .freq_penalty = need0[i].freq };
        infer_sampler *s;
        char err[256];
        if (infer_sampler_new(&p, N, &s, err, sizeof err)) {
            CHECK(0, "sampler_new: %s", err);
            continue;
        }
        if (need0[i].accept)
            infer_sampler_accept(s, 5);
        CHECK(infer_sampler_top_need(s) == need0[i].want, "need case %zu: %d, want %d", i,
              infer_sampler_top_need(s), need0[i].want);
        infer_sampler_free(s);
    }
}

/* A pool's draws equal one thread's, sampler for sampler, step after step (the
 * samplers' histories and generators advance the same way), with 1, 2 and 3 threads
 * and without a pool. */
static void test_sample_pool(void)
{
    enum { R = 9, N = 20000, STEPS = 40 };
    static float l[R][N];
    const float *rows[R];
    unsigned x = 99;
    for (int r = 0; r < R; r++) {
        for (int i = 0; i < N; i++) {
            x = x * 1103515245u + 12345u;
            l[r][i] = (float)((x >> 16) % 1000) / 100.0f;
        }
        rows[r] = l[r];
    }
    int32_t want[STEPS][R];
    for (int threads = 0; threads <= 3; threads++) {
        infer_sample_pool *pool = NULL;
        char err[256];
        if (threads > 0)
            CHECK(infer_sample_pool_new(threads, &pool, err, sizeof err) == INFER_OK, "%s", err);
        infer_sampler *smp[R];
        for (int r = 0; r < R; r++) {
            infer_sampler_params p;
            infer_sampler_defaults(&p);
            p.top_k = r % 3 == 0 ? 0 : 40;
            p.top_p = r % 2 ? 0.9f : 1.0f;
            p.repeat_penalty = r % 4 == 1 ? 1.2f : 1.0f;
            p.temp = r == 4 ? 0 : 1.5f;
            p.seed = (uint64_t)r;
            CHECK(infer_sampler_new(&p, N, &smp[r], err, sizeof err) == INFER_OK, "%s", err);
        }
        int differ = 0;
        for (int step = 0; step < STEPS; step++) {
            int32_t got[R];
            infer_sample_many(pool, smp, rows, R - step % 3, got);   /* varying row counts */
            for (int r = 0; r < R - step % 3; r++) {
                if (threads == 0)
                    want[step][r] = got[r];
                differ += got[r] != want[step][r] || got[r] < 0 || got[r] >= N;
            }
        }
        CHECK(differ == 0, "%d threads: %d draws differ from one thread's", threads, differ);
        for (int r = 0; r < R; r++)
            infer_sampler_free(smp[r]);
        infer_sample_pool_free(pool);
    }
    infer_sample_pool *pool = (infer_sample_pool *)&x;
    char err[256] = "";
    CHECK(infer_sample_pool_new(0, &pool, err, sizeof err) == INFER_EINVAL && !pool &&
          strstr(err, "threads"), "0 threads refused: %s", err);
}

static void test_bad_params(void)
{
    infer_sampler *s = NULL;
    char err[256];
    infer_sampler_params p;
    infer_sampler_defaults(&p);
    p.top_p = 0;
    CHECK(infer_sampler_new(&p, V, &s, err, sizeof err) == INFER_EINVAL && !s &&
          strstr(err, "top_p"), "top_p 0 rejected: %s", err);
    infer_sampler_defaults(&p);
    p.temp = NAN;
    CHECK(infer_sampler_new(&p, V, &s, err, sizeof err) == INFER_EINVAL, "NaN temperature");
    infer_sampler_defaults(&p);
    p.repeat_penalty = -1;
    CHECK(infer_sampler_new(&p, V, &s, err, sizeof err) == INFER_EINVAL, "negative penalty");
    infer_sampler_defaults(&p);
    CHECK(infer_sampler_new(&p, 0, &s, err, sizeof err) == INFER_EINVAL, "empty vocabulary");
}

static void test_stop_strings(void)
{
    const char *stops[] = { "<end_of_turn>", "\n\n", "" };
    size_t hold;
    const char *t1 = "Paris is nice.<end_of_turn>more";
    CHECK(infer_stop_find(t1, strlen(t1), stops, 3, &hold) == 14 && hold == 0,
          "finds the stop at its offset");
    const char *t2 = "Paris<end_of";
    CHECK(infer_stop_find(t2, strlen(t2), stops, 3, &hold) == -1 && hold == 7,
          "holds back a partial stop (hold %zu)", hold);
    const char *t3 = "a\n";
    CHECK(infer_stop_find(t3, strlen(t3), stops, 3, &hold) == -1 && hold == 1,
          "holds a lone newline (hold %zu)", hold);
    const char *t4 = "x\n\ny<end_of_turn>";
    CHECK(infer_stop_find(t4, strlen(t4), stops, 3, &hold) == 1, "earliest stop wins");
    CHECK(infer_stop_find("abc", 3, stops, 0, &hold) == -1 && hold == 0, "no stops");
}

static void test_chat(void)
{
    char buf[1024], err[256];
    infer_chat_msg conv[] = {
        { "system", "Be brief." }, { "user", "Hi" }, { "assistant", "Hello!" },
        { "user", "Capital of France?" },
    };
    long n = infer_chat_render(INFER_CHAT_GEMMA, conv, 4, true, buf, sizeof buf, err,
                               sizeof err);
    const char *gemma = "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
                        "<start_of_turn>model\nHello!<end_of_turn>\n"
                        "<start_of_turn>user\nCapital of France?<end_of_turn>\n"
                        "<start_of_turn>model\n";
    CHECK(n == (long)strlen(gemma) && !strcmp(buf, gemma), "gemma:\n%s", buf);
    n = infer_chat_render(INFER_CHAT_LLAMA3, conv, 2, true, buf, sizeof buf, err, sizeof err);
    const char *l3 = "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                     "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n";
    CHECK(n == (long)strlen(l3) && !strcmp(buf, l3), "llama3:\n%s", buf);
    n = infer_chat_render(INFER_CHAT_LLAMA2, conv, 4, true, buf, sizeof buf, err, sizeof err);
    const char *l2 = "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>"
                     "[INST] Capital of France? [/INST]";
    CHECK(n == (long)strlen(l2) && !strcmp(buf, l2), "llama2:\n%s", buf);
    n = infer_chat_render(INFER_CHAT_CHATML, conv + 1, 1, true, buf, sizeof buf, err,
                          sizeof err);
    CHECK(!strcmp(buf, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
          "chatml:\n%s", buf);
    /* snprintf semantics: a short buffer gets a prefix, the return is the full length. */
    char small[10];
    long full = infer_chat_render(INFER_CHAT_GEMMA, conv, 4, true, small, sizeof small, err,
                                  sizeof err);
    CHECK(full == (long)strlen(gemma) && strlen(small) == 9 && !strncmp(small, gemma, 9),
          "truncation");
    infer_chat_msg bad[] = { { "robot", "x" } };
    CHECK(infer_chat_render(INFER_CHAT_GEMMA, bad, 1, true, buf, sizeof buf, err,
                            sizeof err) == -1 && strstr(err, "robot"), "unknown role: %s", err);

    const char *tmpl_l3 = "{% for m in messages %}<|start_header_id|>{{ m.role }}";
    CHECK(infer_chat_detect_template(tmpl_l3, strlen(tmpl_l3)) == INFER_CHAT_LLAMA3, "l3");
    const char *tmpl_l2 = "{{ bos_token + '[INST] ' + content + ' [/INST]' }}";
    CHECK(infer_chat_detect_template(tmpl_l2, strlen(tmpl_l2)) == INFER_CHAT_LLAMA2, "l2");
    const char *tmpl_g = "{{ '<start_of_turn>' + role + '\n' }}";
    CHECK(infer_chat_detect_template(tmpl_g, strlen(tmpl_g)) == INFER_CHAT_GEMMA, "gemma");
    CHECK(infer_chat_detect_template("hello", 5) == INFER_CHAT_NONE, "none");
    for (int f = INFER_CHAT_LLAMA2; f <= INFER_CHAT_CHATML; f++)
        CHECK(infer_chat_format_by_name(infer_chat_format_name(f)) == f, "name round trip %d", f);
    CHECK(infer_chat_format_by_name("jinja") == INFER_CHAT_NONE, "unknown name");
}

/* Detection from a file: template key wins, then vocabulary markers. */
static void test_chat_detect_file(const char *dir)
{
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/test_sampler_chat.gguf", dir);
    const char *toks[] = { "<unk>", "<s>", "<start_of_turn>", "hello" };
    for (int with_template = 0; with_template < 2; with_template++) {
        infer_gguf_writer *w = infer_gguf_writer_new();
        infer_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 4);
        if (with_template)
            infer_gguf_writer_add_str(w, "tokenizer.chat_template",
                                      "<|im_start|>{{ role }}");
        CHECK(infer_gguf_writer_write(w, path, err, sizeof err) == INFER_OK, "%s", err);
        infer_gguf_writer_free(w);
        infer_gguf *g;
        CHECK(infer_gguf_open(path, &g, err, sizeof err) == INFER_OK, "%s", err);
        int want = with_template ? INFER_CHAT_CHATML : INFER_CHAT_GEMMA;
        CHECK(infer_chat_detect(g) == want, "detect (template %d): %s", with_template,
              infer_chat_format_name(infer_chat_detect(g)));
        infer_gguf_close(g);
    }
    remove(path);
}

int main(int argc, char **argv)
{
    test_greedy_and_topk1();
    test_seed_determinism();
    test_top_p_min_p();
    test_top_p_full_vocabulary();
    test_penalties();
    test_top_k_ties();
    test_penalties_match_brute_force();
    test_sample_top_matches_full_row();
    test_sample_pool();
    test_bad_params();
    test_stop_strings();
    test_chat();
    test_chat_detect_file(argc > 1 ? argv[1] : ".");
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
