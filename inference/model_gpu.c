/* model_gpu.c: the one-token decode step of infer_eval replayed as a CUDA graph
 * (docs/cuda.md, "A fast GPU decode"). Compiled only with the CUDA backend.
 *
 * Issued op by op, a decode step is a few hundred kernel launches whose CPU-side
 * cost exceeds the GPU time of a small model's token. Here the step is captured once
 * per context and replayed per token; what changes between tokens (the token id and
 * its position) lives in two device ints, uploaded before each replay:
 *  - infer_embed and infer_layer_qkv run unchanged: their host arrays (the token,
 *    c->pos) are bound to the device ints with kern_cuda_bind while the step is run
 *    eagerly and captured, so the graph reads the device ints;
 *  - the KV store and attention take the position from the device int
 *    (kern_cuda_kv_store_dev, kern_cuda_attention_dev, whose split is sized for the
 *    whole cache so the graph stays valid at every position).
 * The first call runs the step eagerly (this token's result, and every scratch buffer
 * sized) and then captures it; later calls replay it. The kernels are the op-by-op
 * path's; only attention splits the keys differently (sized for the cache, not for
 * the keys so far), so the logits agree with op by op to float rounding, and
 * tests/gpu compares both with the CPU.
 * Should the capture fail (an operation CUDA cannot capture), the context keeps
 * running the same step eagerly instead: slower, never wrong.
 * COMMONS_CUDA_GRAPH=0 in the environment turns the path off (op by op). */
#ifdef KERN_HAVE_CUDA
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern_cuda.h"
#include "model_internal.h"

bool infer_gpu_graphs_on(const infer_model *m, kern_ctx *kc)
{
    if (!kern_cuda_is(kc) || m->dist)
        return false;
    const char *e = getenv("COMMONS_CUDA_GRAPH");   /* read per call: benchmarks toggle it */
    return !(e && !strcmp(e, "0"));
}

bool infer_gpu_graph_ok(const infer_ctx *c)
{
    return infer_gpu_graphs_on(c->m, c->kc);
}

int infer_gpu_run_capture(kern_ctx *kc, int (*step)(void *ud, char *err, size_t errlen), void *ud,
                          bool capture, kern_cuda_graph **graph, bool *failed, const char *what,
                          char *err, size_t errlen)
{
    int rc = step(ud, err, errlen);
    if (rc || !capture || *failed)
        return rc;
    char cerr[256] = "";
    kern_cuda_graph *g = NULL;
    bool began = kern_cuda_graph_begin(kc) == KERN_OK;
    int crc = began ? step(ud, cerr, sizeof cerr) : INFER_EINVAL;
    /* always end a begun capture, even after a failed step */
    if (began && kern_cuda_graph_end(kc, &g) != KERN_OK && !crc)
        crc = INFER_EINVAL;
    if (crc) {   /* this step's result stands; later ones run eagerly */
        kern_cuda_graph_free(g);
        *failed = true;
        /* not an error (nothing is wrong with the results), but a person timing this
         * must know: said once per owner of *failed (tests/gpu/check.sh looks for it) */
        const char *why = cerr[0] ? cerr : kern_ctx_error(kc);
        fprintf(stderr, "commons: CUDA graph capture of the %s failed (%s); running it op by op\n",
                what, why[0] ? why : "no reason given");
    } else {
        *graph = g;
    }
    return INFER_OK;
}

/* The decode step of the token in graph_dev[0] at position graph_dev[1]. */
static int step(void *ud, char *err, size_t errlen)
{
    infer_ctx *c = ud;
    const infer_model *m = c->m;
    const infer_hparams *hp = &m->hp;
    kern_ctx *kc = c->kc;
    const int32_t *pos_dev = c->graph_dev + 1;
    int rc;
    if ((rc = infer_embed(m, kc, &c->graph_tok, 1, c->x, err, errlen)))
        return rc;
    for (int il = 0; il < hp->n_layer; il++) {
        if ((rc = infer_layer_qkv(m, kc, il, 1, c->pos, c->x, c->h, c->q, c->k, c->v, err,
                                  errlen)))
            return rc;
        INFER_K(il, kern_cuda_kv_store_dev(kc, c->kv.k[il], &c->kv.layout, pos_dev, 1, c->k));
        INFER_K(il, kern_cuda_kv_store_dev(kc, c->kv.v[il], &c->kv.layout, pos_dev, 1, c->v));
        kern_attn_params ap = {
            .n_q = 1, .n_head = hp->n_head,
            .window = infer_layer_local(hp, il) ? hp->sliding_window : 0,
            .scale = hp->attn_scale,
        };
        INFER_K(il, kern_cuda_attention_dev(kc, c->attn, c->q, c->kv.k[il], c->kv.v[il],
                                            &c->kv.layout, &ap, pos_dev));
        if ((rc = infer_layer_out(m, kc, il, 1, c->x, c->attn, c->o, c->h, c->gate, c->up,
                                  err, errlen)))
            return rc;
    }
    return infer_head(m, kc, 1, c->x, c->h, c->logits_dev, err, errlen);
}

/* The step run eagerly (this token's result); then, unless capture failed before,
 * captured for the next tokens. The host arrays are bound only here. */
static int run_and_capture(infer_ctx *c, char *err, size_t errlen)
{
    kern_ctx *kc = c->kc;
    int rc = INFER_OK;
    if (kern_cuda_bind(kc, &c->graph_tok, sizeof c->graph_tok, c->graph_dev) ||
        kern_cuda_bind(kc, c->pos, sizeof *c->pos, c->graph_dev + 1)) {
        snprintf(err, errlen, "CUDA graph decode: %s", kern_ctx_error(kc));
        rc = INFER_EINVAL;
    }
    kern_cuda_graph *g = NULL;
    if (!rc)
        rc = infer_gpu_run_capture(kc, step, c, true, &g, &c->graph_failed, "decode step", err,
                                   errlen);
    c->graph = g;
    kern_cuda_unbind_all(kc);
    return rc;
}

int infer_gpu_decode(infer_ctx *c, int32_t token, char *err, size_t errlen)
{
    kern_ctx *kc = c->kc;
    if (!c->graph_dev && !(c->graph_dev = kern_alloc(kc, 2 * sizeof(int32_t)))) {
        snprintf(err, errlen, "CUDA graph decode: %s", kern_ctx_error(kc));
        return INFER_ENOMEM;
    }
    int32_t in[2] = { token, c->n_past };
    c->graph_tok = token;      /* the host copies stay valid for the eager first run */
    c->pos[0] = c->n_past;
    INFER_K(-1, kern_upload(kc, c->graph_dev, in, sizeof in));
    int rc = INFER_OK;
    if (!c->graph)
        rc = run_and_capture(c, err, errlen);   /* its eager run computes this token */
    else
        INFER_K(-1, kern_cuda_graph_launch(kc, c->graph));
    if (rc)
        return rc;
    INFER_K(-1, kern_download(kc, c->logits, c->logits_dev,
                              (size_t)c->m->hp.n_vocab * sizeof(float)));
    return INFER_OK;
}

void infer_gpu_free(infer_ctx *c)
{
    kern_cuda_graph_free(c->graph);
    kern_free(c->kc, c->graph_dev);
    c->graph = NULL;
    c->graph_dev = NULL;
    c->graph_failed = false;
}
#endif
