/* serve.c: commons-serve, the inference worker behind commons-gateway.
 *
 *   commons-serve --model M.gguf [--listen URL] [--threads N] [--kv-mb M | --kv-blocks N]
 *                 [--max-batch N] [--prefill-chunk N] [--ctx N] [--block N] [--kv f32|f16]
 *                 [--name NAME] [--drain-s S] [--abandon-s S] [--log-level L] [--foreground]
 *                 [--tp N | --pp N [--micro-batches M]] [--gpu [--device N]]
 *
 * Loads the model once, then serves the gateway <-> serve protocol (docs/serving.md)
 * with continuous batching (serve_engine.c) over a paged KV cache. Always runs in
 * the foreground (--foreground is accepted for uniformity with the other daemons),
 * logs to stderr. SIGTERM or SIGINT drains: no new sequences (`busy`), running ones
 * get --drain-s seconds to finish (then are cancelled), finished ones are kept until
 * their final poll was answered (at most 5 s more), then it exits 0. A second
 * signal exits at once. SIGHUP is logged and ignored (there is no config to reload).
 * Exit status: 0 after a drain, 1 runtime failure, 2 usage.
 *
 * Distributed (dist.h, docs/distributed.md): `mpirun -np N commons-serve --tp N ...`
 * (or --pp N) with the same flags on every rank. Rank 0 is the server above; ranks > 0
 * load their slice and evaluate rank 0's steps until rank 0 stops (after its drain).
 * Any rank failing to load ends the whole job (MPI_Abort). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.h"
#include "cm_log.h"
#include "dist.h"
#include "serve.h"

#define DELIVER_GRACE_MS 5000

static void usage(FILE *f)
{
    fprintf(f,
        "usage: commons-serve --model M.gguf [options]\n"
        "  --listen URL          nng address (default tcp://127.0.0.1:7700)\n"
        "  --threads N           CPU threads for the forward pass (default 2)\n"
        "  --kv-mb M             KV cache pool in MiB (default 512)\n"
        "  --kv-blocks N         KV cache pool in blocks (overrides --kv-mb)\n"
        "  --block N             positions per KV block (default 16)\n"
        "  --kv f32|f16          KV cache type (default f32)\n"
        "  --max-batch N         sequences admitted at once (default 32)\n"
        "  --prefill-chunk N     prompt tokens per step, all sequences (default 1024)\n"
        "  --ctx N               longest sequence, prompt + completion (default\n"
        "                        min(model context, 4096))\n"
        "  --name NAME           model name in serve.info (default: file name without .gguf)\n"
        "  --drain-s S           on SIGTERM, running sequences get S seconds (default 30)\n"
        "  --abandon-s S         cancel a sequence not polled for S seconds (default 30)\n"
        "  --log-level L         debug|info|warn|error (default info)\n"
        "  --foreground          accepted; commons-serve never daemonizes\n"
        "  --gpu                 run the kernels on an NVIDIA GPU (CUDA builds)\n"
        "  --device N            CUDA device ordinal for --gpu (default 0)\n"
        "  --tp N                tensor parallel over N MPI ranks (under mpirun -np N)\n"
        "  --pp N                pipeline parallel, N stages (under mpirun -np N)\n"
        "  --micro-batches M     pipeline: micro-batches per step (default N)\n");
}

static int parse_int(const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || !*v || x < lo || x > hi) {
        fprintf(stderr, "commons-serve: %s expects an integer in [%ld, %ld], got '%s'\n", flag,
                lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* Options kept outside serve_config: --tp / --pp (which distributed mode, over how
 * many ranks; kind 0: none) and --gpu / --device (device -1: not given). */
typedef struct extra_opt {
    int kind, n, micro;   /* micro: --micro-batches, 0 when not given */
    bool gpu;
    int device;
} extra_opt;

static int parse_args(int argc, char **argv, serve_config *c, int *log_level, extra_opt *dopt)
{
    *dopt = (extra_opt){ .kind = INFER_SHARD_NONE, .n = 1, .device = -1 };
    memset(c, 0, sizeof *c);
    c->listen = "tcp://127.0.0.1:7700";
    c->threads = 2;
    c->kv_mb = 512;
    c->block_tokens = 16;
    c->kv_type = KERN_TYPE_F32;
    c->max_batch = 32;
    c->prefill_chunk = 1024;
    c->drain_s = 30;
    c->abandon_s = 30;
    *log_level = CM_LOG_INFO;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(f, "--foreground"))
            continue;
        if (!strcmp(f, "--gpu")) {
            dopt->gpu = true;
            continue;
        }
        if (f[0] != '-' || i + 1 >= argc) {
            fprintf(stderr, "commons-serve: %s: %s\n", f, f[0] == '-' ? "missing value" :
                    "unexpected argument");
            return -1;
        }
        const char *v = argv[++i];
        long x = 0;
        if (!strcmp(f, "--model")) c->model_path = v;
        else if (!strcmp(f, "--listen")) c->listen = v;
        else if (!strcmp(f, "--name")) c->name = v;
        else if (!strcmp(f, "--kv")) {
            if (!strcmp(v, "f32")) c->kv_type = KERN_TYPE_F32;
            else if (!strcmp(v, "f16")) c->kv_type = KERN_TYPE_F16;
            else {
                fprintf(stderr, "commons-serve: --kv expects f32 or f16, got '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(f, "--log-level")) {
            if ((*log_level = cm_log_level_parse(v)) < 0) {
                fprintf(stderr, "commons-serve: --log-level expects debug|info|warn|error, "
                        "got '%s'\n", v);
                return -1;
            }
        }
        else if (!strcmp(f, "--threads")) { if (parse_int(f, v, 1, 1024, &x)) return -1; c->threads = (int)x; }
        else if (!strcmp(f, "--kv-mb")) { if (parse_int(f, v, 1, 1L << 24, &x)) return -1; c->kv_mb = x; }
        else if (!strcmp(f, "--kv-blocks")) { if (parse_int(f, v, 1, 1L << 24, &x)) return -1; c->kv_blocks = (int)x; }
        else if (!strcmp(f, "--block")) { if (parse_int(f, v, 1, 4096, &x)) return -1; c->block_tokens = (int)x; }
        else if (!strcmp(f, "--max-batch")) { if (parse_int(f, v, 1, 4096, &x)) return -1; c->max_batch = (int)x; }
        else if (!strcmp(f, "--prefill-chunk")) { if (parse_int(f, v, 1, 65536, &x)) return -1; c->prefill_chunk = (int)x; }
        else if (!strcmp(f, "--ctx")) { if (parse_int(f, v, 1, 1L << 24, &x)) return -1; c->n_ctx = (int)x; }
        else if (!strcmp(f, "--drain-s")) { if (parse_int(f, v, 0, 86400, &x)) return -1; c->drain_s = (int)x; }
        else if (!strcmp(f, "--abandon-s")) { if (parse_int(f, v, 1, 86400, &x)) return -1; c->abandon_s = (int)x; }
        else if (!strcmp(f, "--device")) { if (parse_int(f, v, 0, 4095, &x)) return -1; dopt->device = (int)x; }
        else if (!strcmp(f, "--micro-batches")) { if (parse_int(f, v, 1, 4096, &x)) return -1; dopt->micro = (int)x; }
        else if (!strcmp(f, "--tp") || !strcmp(f, "--pp")) {
            if (parse_int(f, v, 1, 4096, &x))
                return -1;
            if (dopt->kind) {
                fprintf(stderr, "commons-serve: give one of --tp and --pp, once\n");
                return -1;
            }
            dopt->kind = f[2] == 't' ? INFER_SHARD_TP : INFER_SHARD_PP;
            dopt->n = (int)x;
        }
        else {
            fprintf(stderr, "commons-serve: unknown option %s\n", f);
            return -1;
        }
    }
    if (!c->model_path) {
        fprintf(stderr, "commons-serve: --model is required\n");
        return -1;
    }
    if (dopt->micro && dopt->kind != INFER_SHARD_PP) {
        fprintf(stderr, "commons-serve: --micro-batches is for pipelines; give --pp too\n");
        return -1;
    }
    if (dopt->device >= 0 && !dopt->gpu) {
        fprintf(stderr, "commons-serve: --device selects the GPU of --gpu; give --gpu too\n");
        return -1;
    }
    return 0;
}

static void model_name(serve_server *s)
{
    const char *p = s->cfg.name;
    if (!p) {
        p = strrchr(s->cfg.model_path, '/');
        p = p ? p + 1 : s->cfg.model_path;
    }
    snprintf(s->name, sizeof s->name, "%s", p);
    size_t n = strlen(s->name);
    if (!s->cfg.name && n > 5 && !strcmp(s->name + n - 5, ".gguf"))
        s->name[n - 5] = 0;
}

/* Model (this rank's slice of it), tokenizer (rank 0), KV pool, batch. All ranks take
 * the smallest number of KV blocks any rank's budget holds, so that rank 0's block ids
 * are valid everywhere. */
static int load(serve_server *s, infer_dist *d, const extra_opt *xo, char *err, size_t errlen)
{
    kern_config kcfg = { .backend = xo->gpu ? KERN_BACKEND_CUDA : KERN_BACKEND_CPU,
                         .n_threads = s->cfg.threads, .device = xo->device < 0 ? 0 : xo->device };
    /* Ranks of one job on one node take one GPU each unless --device pins them all. */
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (xo->gpu && xo->device < 0 && d && local)
        kcfg.device = atoi(local);
    const bool worker = infer_dist_rank(d) > 0;
    if (kern_ctx_create(&kcfg, &s->kc, err, errlen)) {
        if (xo->gpu) {   /* say which flag asked for CUDA */
            char e[512];
            snprintf(e, sizeof e, "%s", err);
            snprintf(err, errlen, "--gpu: %s", e);
        }
        return -1;
    }
    if ((d ? infer_dist_load(d, s->cfg.model_path, s->kc, &s->model, err, errlen) :
             infer_model_load(s->cfg.model_path, s->kc, NULL, NULL, &s->model, err, errlen)) ||
        (!worker && infer_tokenizer_load(infer_model_gguf(s->model), &s->tok, err, errlen)))
        return -1;
    const infer_hparams *hp = infer_model_hparams(s->model);
    if (!worker && infer_tokenizer_n_vocab(s->tok) > hp->n_vocab) {
        snprintf(err, errlen, "%s: the vocabulary has %d tokens but the model only %d "
                 "embeddings", s->cfg.model_path, infer_tokenizer_n_vocab(s->tok), hp->n_vocab);
        return -1;
    }
    s->n_ctx = s->cfg.n_ctx ? s->cfg.n_ctx : (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096);
    if (s->n_ctx > hp->n_ctx_train) {
        snprintf(err, errlen, "--ctx %d exceeds the model's context_length %d", s->n_ctx,
                 hp->n_ctx_train);
        return -1;
    }
    s->chat_fmt = infer_chat_detect(infer_model_gguf(s->model));
    size_t bb = infer_pkv_block_bytes(hp->n_layer, hp->n_head_kv, hp->head_dim,
                                      s->cfg.block_tokens, s->cfg.kv_type);
    long blocks = s->cfg.kv_blocks ? s->cfg.kv_blocks :
                  (long)((size_t)s->cfg.kv_mb * 1048576 / bb);
    if (blocks > (1L << 24))
        blocks = 1L << 24;
    if (d) {
        int b = (int)blocks;
        infer_dist_min_int(d, &b);   /* pipeline stages differ in layers, so in block size */
        blocks = b;
    }
    if (blocks < 1) {
        snprintf(err, errlen, "--kv-mb %ld holds no block of %zu bytes; give more", s->cfg.kv_mb,
                 bb);
        return -1;
    }
    if (infer_pkv_init(&s->kv, s->kc, hp->n_layer, hp->n_head_kv, hp->head_dim,
                       s->cfg.block_tokens, (int)blocks, s->cfg.kv_type, err, errlen))
        return -1;
    infer_batch_params bp = { .max_tokens = s->cfg.max_batch + s->cfg.prefill_chunk,
                              .max_logits = s->cfg.max_batch, .n_ctx = s->n_ctx };
    if (infer_batch_create(s->model, s->kc, &s->kv, &bp, &s->batch, err, errlen))
        return -1;
    model_name(s);
    if (d)
        cm_info("rank %d of %d (%s): %d layers from layer %d, %d heads, %d KV heads, FFN %d",
                infer_dist_rank(d), infer_dist_size(d),
                infer_dist_kind(d) == INFER_SHARD_TP ? "tensor parallel" : "pipeline stage",
                hp->n_layer, hp->first_layer, hp->n_head, hp->n_head_kv, hp->n_ff);
    char where[192];
    kern_ctx_describe(s->kc, where, sizeof where);
    cm_info("model %s (%s, %d layers, vocab %d, %.1f MiB of weights), chat format %s, context "
            "%d, KV pool %ld blocks x %d positions (%.1f MiB, %s), max batch %d, prefill "
            "chunk %d, %s", s->name, hp->arch_name, hp->n_layer, hp->n_vocab,
            (double)infer_model_weight_bytes(s->model) / 1048576.0,
            infer_chat_format_name(s->chat_fmt), s->n_ctx, blocks, s->cfg.block_tokens,
            (double)blocks * (double)bb / 1048576.0, s->cfg.kv_type ? "f16" : "f32",
            s->cfg.max_batch, s->cfg.prefill_chunk, where);
    if (blocks * s->cfg.block_tokens < s->n_ctx)
        cm_warn("the KV pool (%ld positions) is smaller than the context (%d): longer "
                "requests get too_long", blocks * s->cfg.block_tokens, s->n_ctx);
    return 0;
}

static void unload(serve_server *s)
{
    infer_batch_free(s->batch);
    if (s->kv.n_blocks)
        infer_pkv_free(&s->kv);
    infer_tokenizer_free(s->tok);
    infer_model_free(s->model);
    kern_ctx_destroy(s->kc);
}

/* Wait for signals; return when a drain is complete or a second signal came. */
static void run(serve_server *s)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    struct timespec tick = { 0, 200 * 1000000L };
    for (;;) {
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGHUP) {
            cm_info("SIGHUP: nothing to reload");
            continue;
        }
        pthread_mutex_lock(&s->mu);
        if ((sig == SIGTERM || sig == SIGINT) && s->draining) {
            pthread_mutex_unlock(&s->mu);
            cm_warn("second signal: exiting without finishing the drain");
            return;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            s->draining = true;
            s->drain_deadline_ms = serve_now_ms() + (int64_t)s->cfg.drain_s * 1000;
            cm_info("%s: draining (%d running sequences, up to %d s)", strsignal(sig),
                    serve_n_running(s), s->cfg.drain_s);
            pthread_cond_broadcast(&s->wake);
        }
        bool over = s->draining && serve_n_running(s) == 0 &&
                    serve_all_delivered(s, DELIVER_GRACE_MS);
        pthread_mutex_unlock(&s->mu);
        if (over)
            return;
    }
}

/* Ranks > 0: load, then evaluate rank 0's steps until it stops. */
static int worker_main(serve_server *s, infer_dist *d, const extra_opt *xo)
{
    char err[1024];
    if (load(s, d, xo, err, sizeof err)) {
        cm_error("%s", err);
        infer_dist_abort(d, 1);
    }
    int rc = infer_dist_worker_run(d, s->batch, err, sizeof err);
    if (rc)
        cm_error("%s", err);
    infer_dist_stats st = infer_dist_get_stats(d);
    cm_info("stopped; %.3f s in %llu MPI transfers (%.1f MiB)", st.comm_s,
            (unsigned long long)st.calls, (double)st.bytes / 1048576.0);
    unload(s);
    infer_dist_free(d);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    serve_server s;
    memset(&s, 0, sizeof s);
    int level;
    extra_opt dopt;
    if (parse_args(argc, argv, &s.cfg, &level, &dopt)) {
        usage(stderr);
        return 2;
    }
    infer_dist *dist = NULL;
    char err[1024];
    if (dopt.kind && infer_dist_init(&argc, &argv, dopt.kind, dopt.n, &dist, err, sizeof err)) {
        fprintf(stderr, "commons-serve: %s\n", err);
        return 2;
    }
    if (dopt.micro)
        infer_dist_set_micro_batches(dist, dopt.micro);
    static char progname[64];
    snprintf(progname, sizeof progname, infer_dist_rank(dist) ? "commons-serve[rank %d]" :
             "commons-serve", infer_dist_rank(dist));
    cm_log_init(progname, level);
    /* Signals are taken by run() with sigtimedwait: block them in every thread. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&s.mu, NULL);
    /* Deadlines on the monotonic clock: a wall-clock step cannot stall the engine. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s.wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&s.stepped, NULL);
    if (infer_dist_rank(dist) > 0)
        return worker_main(&s, dist, &dopt);
    int n_workers = 4 * s.cfg.max_batch + 16;
    int rc = 1;
    if (load(&s, dist, &dopt, err, sizeof err)) {
        cm_error("%s", err);
        if (dist)   /* the other ranks may wait for this one: end them all */
            infer_dist_abort(dist, 1);
        unload(&s);
        return 1;
    }
    if (serve_engine_start(&s, err, sizeof err) ||
        serve_rpc_start(&s, n_workers, err, sizeof err)) {
        cm_error("%s", err);
    } else {
        cm_info("listening on %s (%d contexts)", s.cfg.listen, n_workers);
        run(&s);
        rc = 0;
    }
    if (s.workers)
        serve_rpc_stop(&s);
    serve_engine_stop(&s);
    infer_dist_stop(dist);
    if (dist) {
        infer_dist_stats st = infer_dist_get_stats(dist);
        cm_info("%.3f s in %llu MPI transfers (%.1f MiB)", st.comm_s,
                (unsigned long long)st.calls, (double)st.bytes / 1048576.0);
    }
    cm_info("stopped after %llu steps, %llu prompt and %llu generated tokens, %llu requests",
            (unsigned long long)s.n_steps, (unsigned long long)s.n_prompt_tokens,
            (unsigned long long)s.n_tokens_generated, (unsigned long long)s.n_requests);
    unload(&s);
    infer_dist_free(dist);
    return rc;
}
