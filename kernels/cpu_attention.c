/* cpu_attention.c: KV-cache stores and causal grouped-query attention on
 * the CPU. One task per query position and GQA group (or single head):
 * scores against every visible key (causal, optionally within a sliding
 * window), softmax in f32, then the weighted sum of values. Per-thread
 * score rows live in the context's scratch. */
#include "kern_cpu.h"

#include <math.h>
#include <string.h>

static size_t elem_bytes(const kern_kv_layout *l) { return l->type == KERN_TYPE_F32 ? 4 : 2; }

int kern_cpu_kv_store(kern_ctx *ctx, void *cache, const kern_kv_layout *l, int pos0, int n, const float *src)
{
    const kern_cpu_fns *f = kern_cpu();
    size_t eb = elem_bytes(l);
    for (int i = 0; i < n; i++)
        for (int h = 0; h < l->n_head_kv; h++) {
            const float *s = src + ((size_t)i * l->n_head_kv + h) * l->head_dim;
            uint8_t *d = (uint8_t *)cache + (((size_t)h * l->capacity + pos0 + i) * l->head_dim) * eb;
            if (l->type == KERN_TYPE_F32) memcpy(d, s, (size_t)l->head_dim * 4);
            else f->f32_to_f16((uint16_t *)d, s, (size_t)l->head_dim);
        }
    (void)ctx;
    return KERN_OK;
}

typedef struct {
    const kern_cpu_fns *f;
    float *out, *scores;
    const float *q;
    const uint8_t *k, *v;
    const kern_kv_layout *l;
    const kern_attn_params *p;
    int hpt; /* query heads per task: a whole GQA group, or 1 when that leaves threads idle */
} attn_job;

/* One task: query position t, query heads h0 .. h0+hpt-1 (all of one KV
 * head). Each key and value row is read once for all hpt heads. */
static void attn_task(void *a, int64_t b, int64_t e, int tid)
{
    attn_job *j = a;
    const kern_attn_params *p = j->p;
    const kern_kv_layout *l = j->l;
    int hd = l->head_dim, group = p->n_head / l->n_head_kv, hpt = j->hpt, tasks_per_t = p->n_head / hpt;
    size_t eb = elem_bytes(l), row = (size_t)hd * eb;
    kern_dot_fn dot = j->f->dot[l->type];
    float *scores = j->scores + (size_t)tid * hpt * p->n_kv;
    for (int64_t task = b; task < e; task++) {
        int t = (int)(task / tasks_per_t), h0 = (int)(task % tasks_per_t) * hpt, kvh = h0 / group;
        int pos = p->q_pos0 + t;
        int lo = p->window > 0 && pos - p->window + 1 > 0 ? pos - p->window + 1 : 0;
        const float *q = j->q + ((size_t)t * p->n_head + h0) * hd;
        const uint8_t *kb = j->k + (size_t)kvh * l->capacity * row;
        const uint8_t *vb = j->v + (size_t)kvh * l->capacity * row;
        float mx[hpt], sum[hpt];
        for (int g = 0; g < hpt; g++) mx[g] = -INFINITY, sum[g] = 0;
        for (int i = lo; i <= pos; i++)
            for (int g = 0; g < hpt; g++) {
                float sc = dot(hd, kb + (size_t)i * row, q + (size_t)g * hd) * p->scale;
                scores[(size_t)g * p->n_kv + i] = sc;
                mx[g] = fmaxf(mx[g], sc);
            }
        for (int g = 0; g < hpt; g++) {
            float *s = scores + (size_t)g * p->n_kv;
            for (int i = lo; i <= pos; i++) {
                s[i] = expf(s[i] - mx[g]);
                sum[g] += s[i];
            }
        }
        float *o = j->out + ((size_t)t * p->n_head + h0) * hd;
        memset(o, 0, (size_t)hpt * hd * sizeof(float));
        for (int i = lo; i <= pos; i++)
            for (int g = 0; g < hpt; g++) {
                float w = scores[(size_t)g * p->n_kv + i];
                if (l->type == KERN_TYPE_F32) j->f->axpy_f32(o + (size_t)g * hd, w, (const float *)(vb + (size_t)i * row), hd);
                else j->f->axpy_f16(o + (size_t)g * hd, w, (const uint16_t *)(vb + (size_t)i * row), hd);
            }
        for (int g = 0; g < hpt; g++) j->f->scale_f32(o + (size_t)g * hd, 1.0f / sum[g], hd);
    }
}

int kern_cpu_attention(kern_ctx *ctx, float *out, const float *q, const void *k, const void *v,
                       const kern_kv_layout *l, const kern_attn_params *p)
{
    int group = p->n_head / l->n_head_kv;
    /* whole groups share K/V reads; single heads when there would be fewer
     * tasks than threads (decode of a model with one KV head) */
    int hpt = (int64_t)p->n_q * l->n_head_kv >= ctx->n_threads ? group : 1;
    float *scores = kern_scratch(ctx, (size_t)ctx->n_threads * hpt * (size_t)p->n_kv * sizeof(float));
    if (!scores) return KERN_ENOMEM;
    attn_job j = {kern_cpu(), out, scores, q, k, v, l, p, hpt};
    kern_pool_run(ctx->pool, (int64_t)p->n_q * (p->n_head / hpt), 1, attn_task, &j);
    return KERN_OK;
}
