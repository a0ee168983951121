/* commons-run.c: run a GGUF language model on the CPU or an NVIDIA GPU from the command
 * line.
 *
 *   commons-run --model M.gguf [--prompt TEXT | --chat] [-n N] [--temp T] [--top-k K]
 *               [--top-p P] [--min-p P] [--repeat-penalty R] [--seed S] [--threads N]
 *               [--ctx N] [--kv f16] [--stop TEXT]... [--system TEXT] [--gpu [--device N]]
 *   commons-run --model M.gguf --tokenize TEXT
 *   commons-run --model M.gguf --logits "ID ID ..."     (test aid: top logits per position)
 *   commons-run --model M.gguf --bench PP,TG [--threads N]   (speed, like llama-bench)
 *
 * Generated text streams to stdout; the loading progress bar (on a terminal) and the
 * prompt / generation speeds go to stderr. --chat reads one user message per line from
 * stdin and keeps the conversation's KV cache between turns (only the new tokens are
 * evaluated). --gpu runs the kernels on CUDA device N (default 0): the weights are
 * uploaded once, the KV cache and scratch live on the device, and only each step's
 * logits come back; a build without CUDA or a machine without a usable device fails
 * with exit status 1 and says which. Exit status: 0 success, 1 runtime failure (message
 * on stderr), 2 usage. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

#define MAX_STOPS 8

typedef struct args {
    const char *model, *prompt, *tokenize, *logits, *system;
    int chat_format;          /* --chat-format, else detected from the file */
    int bench_pp, bench_tg;   /* --bench: both > 0 */
    bool chat, gpu;
    int device;               /* --device: CUDA ordinal, -1 when not given */
    int n_predict, threads, n_ctx, kv_type;
    const char *stops[MAX_STOPS];
    int n_stops;
    infer_sampler_params sp;
} args;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: commons-run --model M.gguf [--prompt TEXT | --chat] [options]\n"
        "       commons-run --model M.gguf --tokenize TEXT\n"
        "options:\n"
        "  -n, --n-predict N      tokens to generate (default 128; chat: per turn)\n"
        "  --temp T               temperature, 0 = greedy (default 0.8)\n"
        "  --top-k K              keep the K most likely tokens (default 40, 0 = off)\n"
        "  --top-p P              nucleus sampling (default 0.95, 1 = off)\n"
        "  --min-p P              drop tokens below P * p_max (default 0.05, 0 = off)\n"
        "  --repeat-penalty R     penalize the last 64 tokens (default 1 = off)\n"
        "  --frequency-penalty F  --presence-penalty P   OpenAI-style penalties\n"
        "  --seed S               sampling seed (default 0; same seed, same output)\n"
        "  --threads N            CPU threads (default 2)\n"
        "  --gpu                  run on an NVIDIA GPU (CUDA builds)\n"
        "  --device N             CUDA device ordinal for --gpu (default 0)\n"
        "  --ctx N                context size (default min(model, 4096))\n"
        "  --kv f32|f16           KV cache type (default f32)\n"
        "  --stop TEXT            stop when TEXT is generated (repeatable)\n"
        "  --system TEXT          system message for --chat\n"
        "  --chat-format F        gemma, llama3, llama2 or chatml (default: from the file)\n"
        "  --tokenize TEXT        print the token ids of TEXT (no BOS/EOS) and exit\n"
        "  --bench PP,TG          time PP prompt tokens in batches, then TG generated ones\n");
}

static int bad_value(const char *flag, const char *v, const char *what)
{
    fprintf(stderr, "commons-run: %s expects %s, got '%s'\n", flag, what, v);
    usage(stderr);
    return 2;
}

static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->n_predict = 128;
    a->threads = 2;
    a->kv_type = KERN_TYPE_F32;
    a->device = -1;
    infer_sampler_defaults(&a->sp);
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(f, "--chat")) {
            a->chat = true;
            continue;
        }
        if (!strcmp(f, "--gpu")) {
            a->gpu = true;
            continue;
        }
        if (f[0] != '-' || i + 1 >= argc) {
            fprintf(stderr, "commons-run: %s: %s\n", f, f[0] == '-' ? "missing value" :
                    "unexpected argument");
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        char *end;
        errno = 0;
        if (!strcmp(f, "--model") || !strcmp(f, "-m")) a->model = v;
        else if (!strcmp(f, "--prompt") || !strcmp(f, "-p")) a->prompt = v;
        else if (!strcmp(f, "--tokenize")) a->tokenize = v;
        else if (!strcmp(f, "--logits")) a->logits = v;
        else if (!strcmp(f, "--system")) a->system = v;
        else if (!strcmp(f, "--chat-format")) {
            a->chat_format = infer_chat_format_by_name(v);
            if (a->chat_format == INFER_CHAT_NONE)
                return bad_value(f, v, "gemma, llama3, llama2 or chatml");
        }
        else if (!strcmp(f, "--bench")) {
            if (sscanf(v, "%d,%d", &a->bench_pp, &a->bench_tg) != 2 || a->bench_pp < 1 ||
                a->bench_tg < 1 || a->bench_pp > 65536 || a->bench_tg > 65536)
                return bad_value(f, v, "PP,TG (two positive token counts)");
        }
        else if (!strcmp(f, "--stop")) {
            if (a->n_stops == MAX_STOPS)
                return bad_value(f, v, "at most 8 stop strings");
            a->stops[a->n_stops++] = v;
        } else if (!strcmp(f, "--kv")) {
            if (!strcmp(v, "f32")) a->kv_type = KERN_TYPE_F32;
            else if (!strcmp(v, "f16")) a->kv_type = KERN_TYPE_F16;
            else return bad_value(f, v, "f32 or f16");
        } else if (!strcmp(f, "-n") || !strcmp(f, "--n-predict") || !strcmp(f, "--top-k") ||
                   !strcmp(f, "--threads") || !strcmp(f, "--ctx") || !strcmp(f, "--device")) {
            long x = strtol(v, &end, 10);
            if (errno || *end || !*v || x < 0 || x > 1 << 24 ||
                (x == 0 && (!strcmp(f, "--threads") || !strcmp(f, "--ctx"))))
                return bad_value(f, v, "a non-negative integer (threads, ctx: positive)");
            if (!strcmp(f, "--top-k")) a->sp.top_k = (int)x;
            else if (!strcmp(f, "--threads")) a->threads = (int)x;
            else if (!strcmp(f, "--ctx")) a->n_ctx = (int)x;
            else if (!strcmp(f, "--device")) a->device = (int)x;
            else a->n_predict = (int)x;
        } else if (!strcmp(f, "--seed")) {
            unsigned long long x = strtoull(v, &end, 10);
            if (errno || *end || !*v || v[0] == '-')
                return bad_value(f, v, "a non-negative integer");
            a->sp.seed = x;
        } else if (!strcmp(f, "--temp") || !strcmp(f, "--top-p") || !strcmp(f, "--min-p") ||
                   !strcmp(f, "--repeat-penalty") || !strcmp(f, "--frequency-penalty") ||
                   !strcmp(f, "--presence-penalty")) {
            float x = strtof(v, &end);
            if (errno || *end || !*v)
                return bad_value(f, v, "a number");
            if (!strcmp(f, "--temp")) a->sp.temp = x;
            else if (!strcmp(f, "--top-p")) a->sp.top_p = x;
            else if (!strcmp(f, "--min-p")) a->sp.min_p = x;
            else if (!strcmp(f, "--repeat-penalty")) a->sp.repeat_penalty = x;
            else if (!strcmp(f, "--frequency-penalty")) a->sp.freq_penalty = x;
            else a->sp.presence_penalty = x;
        } else {
            fprintf(stderr, "commons-run: unknown option %s\n", f);
            usage(stderr);
            return 2;
        }
    }
    if (a->device >= 0 && !a->gpu) {
        fprintf(stderr, "commons-run: --device selects the GPU of --gpu; give --gpu too\n");
        usage(stderr);
        return 2;
    }
    if (!a->model) {
        fprintf(stderr, "commons-run: --model is required\n");
        usage(stderr);
        return 2;
    }
    int modes = (a->prompt != NULL) + a->chat + (a->tokenize != NULL) + (a->logits != NULL) +
                (a->bench_pp > 0);
    if (modes != 1) {
        fprintf(stderr, "commons-run: give exactly one of --prompt, --chat, --tokenize, "
                "--bench\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Tokenize into a malloc'd array (caller frees); NULL with a message on failure. */
static int32_t *tokenize(const infer_tokenizer *t, const char *s, bool add_special,
                         bool parse_special, size_t *n)
{
    size_t len = strlen(s), cap = len + 8;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *ids = malloc(cap * sizeof *ids);
        if (!ids)
            break;
        int rc = infer_tokenize(t, s, len, add_special, parse_special, ids, cap, n);
        if (rc == INFER_OK)
            return ids;
        free(ids);
        if (rc != INFER_ERANGE) {
            fprintf(stderr, "commons-run: tokenizing failed: %s\n", infer_status_str(rc));
            return NULL;
        }
        cap = *n;
    }
    fprintf(stderr, "commons-run: out of memory tokenizing\n");
    return NULL;
}

static int run_tokenize(const args *a)
{
    char err[1024];
    infer_gguf *g;
    infer_tokenizer *t;
    if (infer_gguf_open(a->model, &g, err, sizeof err)) {
        fprintf(stderr, "commons-run: %s\n", err);
        return 1;
    }
    int rc = infer_tokenizer_load(g, &t, err, sizeof err);
    infer_gguf_close(g);
    if (rc) {
        fprintf(stderr, "commons-run: %s: %s\n", a->model, err);
        return 1;
    }
    size_t n;
    int32_t *ids = tokenize(t, a->tokenize, false, false, &n);
    for (size_t i = 0; ids && i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    if (ids)
        printf("\n");
    free(ids);
    infer_tokenizer_free(t);
    return ids ? 0 : 1;
}

static void progress(void *ud, double frac)
{
    int *last = ud;
    int pct = (int)(frac * 100);
    if (pct == *last)
        return;
    *last = pct;
    char bar[41];
    int fill = pct * 40 / 100;
    for (int i = 0; i < 40; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[40] = 0;
    fprintf(stderr, "\rloading [%s] %3d%%", bar, pct);
    if (pct == 100)
        fprintf(stderr, "\n");
}

/* Everything a generation needs, loaded once. */
typedef struct session {
    kern_ctx *kc;
    infer_model *m;
    infer_ctx *c;
    infer_tokenizer *tok;
    infer_sampler *smp;
    int n_vocab;
    double t_prompt, t_gen;
    long n_prompt, n_gen;
} session;

static int open_session(const args *a, session *s)
{
    char err[1024];
    memset(s, 0, sizeof *s);
    kern_config kcfg = { .backend = a->gpu ? KERN_BACKEND_CUDA : KERN_BACKEND_CPU,
                         .n_threads = a->threads, .device = a->device < 0 ? 0 : a->device };
    if (kern_ctx_create(&kcfg, &s->kc, err, sizeof err)) {
        fprintf(stderr, "commons-run: %s%s\n", a->gpu ? "--gpu: " : "", err);
        return 1;
    }
    char where[192];
    kern_ctx_describe(s->kc, where, sizeof where);
    int last = -1;
    bool tty = isatty(2);
    double t0 = now();
    if (infer_model_load(a->model, s->kc, tty ? progress : NULL, &last, &s->m, err,
                         sizeof err)) {
        if (tty && last >= 0)
            fprintf(stderr, "\n");
        fprintf(stderr, "commons-run: %s\n", err);
        return 1;
    }
    const infer_hparams *hp = infer_model_hparams(s->m);
    s->n_vocab = hp->n_vocab;
    fprintf(stderr, "commons-run: %s: %s, %d layers, embd %d, vocab %d, %.1f MiB of weights, "
            "loaded in %.2f s, %s\n", a->model, hp->arch_name, hp->n_layer,
            hp->n_embd, hp->n_vocab, (double)infer_model_weight_bytes(s->m) / 1048576.0,
            now() - t0, where);
    infer_ctx_params cp = { .n_ctx = a->n_ctx, .kv_type = a->kv_type };
    if (infer_ctx_create(s->m, s->kc, &cp, &s->c, err, sizeof err) ||
        infer_tokenizer_load(infer_model_gguf(s->m), &s->tok, err, sizeof err) ||
        infer_sampler_new(&a->sp, hp->n_vocab, &s->smp, err, sizeof err)) {
        fprintf(stderr, "commons-run: %s\n", err);
        return 1;
    }
    if (infer_tokenizer_n_vocab(s->tok) > hp->n_vocab) {
        fprintf(stderr, "commons-run: the vocabulary has %d tokens but the model only %d "
                "embeddings\n", infer_tokenizer_n_vocab(s->tok), hp->n_vocab);
        return 1;
    }
    return 0;
}

static void close_session(session *s)
{
    infer_sampler_free(s->smp);
    infer_tokenizer_free(s->tok);
    infer_ctx_free(s->c);
    infer_model_free(s->m);
    kern_ctx_destroy(s->kc);
}

/* Evaluate tokens (timed as prompt processing). */
static int eval_prompt(session *s, const int32_t *ids, size_t n)
{
    char err[1024];
    if (n == 0)
        return 0;
    double t0 = now();
    if (infer_eval(s->c, ids, (int)n, false, err, sizeof err)) {
        fprintf(stderr, "commons-run: %s\n", err);
        return 1;
    }
    s->t_prompt += now() - t0;
    s->n_prompt += (long)n;
    for (size_t i = 0; i < n; i++)
        infer_sampler_accept(s->smp, ids[i]);
    return 0;
}

/* Generate up to n_predict tokens after what was evaluated, streaming text to stdout.
 * The text (without a matched stop string) is returned in *out (malloc'd) when out is
 * non-NULL. Stops at an end-of-generation token, a stop string or a full context. */
static int generate(const args *a, session *s, const char *const *stops, int n_stops,
                    char **out)
{
    char err[1024];
    size_t cap = 4096, len = 0, printed = 0;
    char *text = malloc(cap);
    if (!text)
        return 1;
    int rc = 0;
    for (int i = 0; i < a->n_predict; i++) {
        int32_t t = infer_sampler_sample(s->smp, infer_logits(s->c, NULL));
        if (infer_token_is_eog(s->tok, t))
            break;
        char piece[256];
        int64_t pl = infer_token_piece(s->tok, t, false, piece, sizeof piece);
        if (pl < 0)
            pl = 0;
        if (pl > (int64_t)sizeof piece)
            pl = sizeof piece;
        if (len + (size_t)pl + 1 > cap) {
            char *nt = realloc(text, cap *= 2);
            if (!nt) {
                rc = 1;
                break;
            }
            text = nt;
        }
        memcpy(text + len, piece, (size_t)pl);
        len += (size_t)pl;
        size_t hold = 0;
        long stop = infer_stop_find(text, len, stops, n_stops, &hold);
        if (stop >= 0)
            len = (size_t)stop;
        size_t upto = stop >= 0 ? len : len - hold;
        if (upto > printed) {
            fwrite(text + printed, 1, upto - printed, stdout);
            fflush(stdout);
            printed = upto;
        }
        infer_sampler_accept(s->smp, t);
        s->n_gen++;
        if (stop >= 0)
            break;
        if (infer_ctx_n_past(s->c) >= infer_ctx_n_ctx(s->c)) {
            fprintf(stderr, "\ncommons-run: context full (%d positions)\n",
                    infer_ctx_n_ctx(s->c));
            break;
        }
        double t0 = now();
        if (infer_eval(s->c, &t, 1, false, err, sizeof err)) {
            fprintf(stderr, "\ncommons-run: %s\n", err);
            rc = 1;
            break;
        }
        s->t_gen += now() - t0;
    }
    if (len > printed)   /* a held-back partial stop string that never completed */
        fwrite(text + printed, 1, len - printed, stdout);
    fflush(stdout);
    text[len] = 0;
    if (out)
        *out = text;
    else
        free(text);
    return rc;
}

static void report(const session *s)
{
    fprintf(stderr, "\ncommons-run: prompt %ld tokens in %.3f s (%.1f tokens/s); "
            "generation %ld tokens in %.3f s (%.1f tokens/s)\n", s->n_prompt, s->t_prompt,
            s->t_prompt > 0 ? (double)s->n_prompt / s->t_prompt : 0.0, s->n_gen, s->t_gen,
            s->t_gen > 0 ? (double)(s->n_gen > 0 ? s->n_gen - 1 : 0) / s->t_gen : 0.0);
}

static int run_prompt(const args *a, session *s)
{
    size_t n;
    int32_t *ids = tokenize(s->tok, a->prompt, true, true, &n);
    if (!ids)
        return 1;
    int rc = eval_prompt(s, ids, n);
    free(ids);
    if (!rc)
        rc = generate(a, s, a->stops, a->n_stops, NULL);
    report(s);
    return rc;
}

static int run_logits(session *s, const char *list)
{
    int32_t ids[4096];
    int n = 0;
    char *end;
    for (const char *p = list; *p && n < 4096;) {
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        ids[n++] = (int32_t)v;
        p = end;
    }
    char err[1024];
    if (n == 0 || infer_eval(s->c, ids, n, true, err, sizeof err)) {
        fprintf(stderr, "commons-run: %s\n", n ? err : "--logits: no token ids");
        return 1;
    }
    const float *lg = infer_logits(s->c, NULL);
    for (int i = 0; i < n; i++) {
        const float *row = lg + (size_t)i * s->n_vocab;
        int top[5] = { -1, -1, -1, -1, -1 };
        for (int j = 0; j < s->n_vocab; j++)
            for (int k = 0; k < 5; k++)
                if (top[k] < 0 || row[j] > row[top[k]]) {
                    memmove(top + k + 1, top + k, (size_t)(4 - k) * sizeof *top);
                    top[k] = j;
                    break;
                }
        printf("pos %d", i);
        for (int k = 0; k < 5; k++)
            printf(" %d:%.4f", top[k], row[top[k]]);
        printf("\n");
    }
    return 0;
}

/* Benchmark: pp fixed prompt tokens (spread over the vocabulary) evaluated in batches,
 * then tg greedy tokens one at a time regardless of end-of-generation tokens. Prints
 * one line "bench pp P tg T: prompt X tokens/s, generation Y tokens/s" on stdout. */
static int run_bench(const args *a, session *s)
{
    if (a->bench_pp + a->bench_tg > infer_ctx_n_ctx(s->c)) {
        fprintf(stderr, "commons-run: --bench %d,%d needs a context of %d (--ctx)\n",
                a->bench_pp, a->bench_tg, a->bench_pp + a->bench_tg);
        return 1;
    }
    int32_t *ids = malloc((size_t)a->bench_pp * sizeof *ids);
    if (!ids)
        return 1;
    for (int i = 0; i < a->bench_pp; i++)
        ids[i] = (int32_t)((7919LL * i + 13) % s->n_vocab);
    int rc = eval_prompt(s, ids, (size_t)a->bench_pp);
    free(ids);
    char err[1024];
    for (int i = 0; !rc && i < a->bench_tg; i++) {
        const float *l = infer_logits(s->c, NULL);
        int32_t t = 0;
        for (int j = 1; j < s->n_vocab; j++)
            if (l[j] > l[t])
                t = j;
        double t0 = now();
        if (infer_eval(s->c, &t, 1, false, err, sizeof err)) {
            fprintf(stderr, "commons-run: %s\n", err);
            rc = 1;
        }
        s->t_gen += now() - t0;
        s->n_gen++;
    }
    if (!rc)
        printf("bench pp %d tg %d threads %d: prompt %.2f tokens/s, generation %.2f "
               "tokens/s\n", a->bench_pp, a->bench_tg, kern_ctx_threads(s->kc),
               (double)s->n_prompt / s->t_prompt, (double)s->n_gen / s->t_gen);
    return rc;
}

/* One user line per turn; the whole conversation is re-rendered and only the tokens
 * after the longest prefix already in the cache are evaluated. */
static int run_chat(const args *a, session *s)
{
    int fmt = a->chat_format ? a->chat_format : infer_chat_detect(infer_model_gguf(s->m));
    if (fmt == INFER_CHAT_NONE) {
        fprintf(stderr, "commons-run: %s has no chat format this program recognizes "
                "(gemma, llama3, llama2, chatml); name one with --chat-format, or use "
                "--prompt\n", a->model);
        return 1;
    }
    const char *stops[MAX_STOPS + 1];
    int n_stops = 0;
    for (int i = 0; i < a->n_stops; i++)
        stops[n_stops++] = a->stops[i];
    if (infer_chat_end_of_turn(fmt))
        stops[n_stops++] = infer_chat_end_of_turn(fmt);
    fprintf(stderr, "commons-run: chat format %s; one message per line, end with EOF\n",
            infer_chat_format_name(fmt));
    infer_chat_msg msgs[256];
    char *owned[256];
    int n_msgs = 0, n_owned = 0, rc = 0;
    if (a->system)
        msgs[n_msgs++] = (infer_chat_msg){ "system", a->system };
    int32_t *cached = NULL;
    size_t n_cached = 0;
    char line[8192], err[1024];
    bool tty = isatty(0);
    while (n_msgs + 2 <= 256) {
        if (tty)
            fprintf(stderr, "> ");
        if (!fgets(line, sizeof line, stdin))
            break;
        line[strcspn(line, "\n")] = 0;
        if (!line[0])
            continue;
        char *user = strdup(line);
        if (!user) {
            rc = 1;
            break;
        }
        owned[n_owned++] = user;
        msgs[n_msgs++] = (infer_chat_msg){ "user", user };
        long need = infer_chat_render(fmt, msgs, n_msgs, true, NULL, 0, err, sizeof err);
        char *prompt = need >= 0 ? malloc((size_t)need + 1) : NULL;
        if (!prompt) {
            fprintf(stderr, "commons-run: %s\n", need < 0 ? err : "out of memory");
            rc = 1;
            break;
        }
        infer_chat_render(fmt, msgs, n_msgs, true, prompt, (size_t)need + 1, err, sizeof err);
        size_t n;
        int32_t *ids = tokenize(s->tok, prompt, true, true, &n);
        free(prompt);
        if (!ids) {
            rc = 1;
            break;
        }
        size_t keep = 0;
        while (keep < n && keep < n_cached && ids[keep] == cached[keep])
            keep++;
        if (keep == n)   /* re-evaluate the last token to get its logits */
            keep--;
        infer_ctx_truncate(s->c, (int)keep);
        infer_sampler_reset(s->smp);
        for (size_t i = 0; i < keep; i++)
            infer_sampler_accept(s->smp, ids[i]);
        if (eval_prompt(s, ids + keep, n - keep)) {
            free(ids);
            rc = 1;
            break;
        }
        free(cached);
        cached = ids;
        n_cached = n;
        char *reply = NULL;
        rc = generate(a, s, stops, n_stops, &reply);
        printf("\n");
        fflush(stdout);
        if (rc || !reply) {
            free(reply);
            rc = 1;
            break;
        }
        owned[n_owned++] = reply;
        msgs[n_msgs++] = (infer_chat_msg){ "assistant", reply };
    }
    free(cached);
    for (int i = 0; i < n_owned; i++)
        free(owned[i]);
    report(s);
    return rc;
}

int main(int argc, char **argv)
{
    args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    if (a.tokenize)
        return run_tokenize(&a);
    session s;
    rc = open_session(&a, &s);
    if (!rc) {
        if (a.logits)
            rc = run_logits(&s, a.logits);
        else if (a.bench_pp)
            rc = run_bench(&a, &s);
        else if (a.chat)
            rc = run_chat(&a, &s);
        else
            rc = run_prompt(&a, &s);
    }
    close_session(&s);
    return rc;
}
