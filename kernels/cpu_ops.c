/* cpu_ops.c: the CPU backend's row and element-wise operations: RMSNorm,
 * RoPE (normal and NeoX layouts), softmax, SiLU/GELU, gated activations,
 * add/mul/scale. Large inputs are split over the thread pool; these loops
 * are simple enough for the compiler to vectorize. */
#include "kern_cpu.h"

#include <math.h>

#define ELEM_GRAIN 32768 /* elements per piece (~10 us): below this, threads cost more than they save */

/* ---- RMSNorm ---- */
typedef struct { float *y; const float *x, *w; int dim; float eps; } norm_job;

static void norm_task(void *a, int64_t b, int64_t e, int tid)
{
    (void)tid;
    norm_job *j = a;
    for (int64_t r = b; r < e; r++) {
        const float *x = j->x + r * j->dim;
        float *y = j->y + r * j->dim;
        double ss = 0; /* double: dims up to ~16K of large activations */
        for (int i = 0; i < j->dim; i++) ss += (double)x[i] * x[i];
        float s = (float)(1.0 / sqrt(ss / j->dim + j->eps));
        if (j->w)
            for (int i = 0; i < j->dim; i++) y[i] = x[i] * s * j->w[i];
        else
            for (int i = 0; i < j->dim; i++) y[i] = x[i] * s;
    }
}

int kern_cpu_rmsnorm(kern_ctx *ctx, float *y, const float *x, const float *w, int n, int dim, float eps)
{
    norm_job j = {y, x, w, dim, eps};
    int64_t grain = ELEM_GRAIN / dim + 1;
    kern_pool_run(ctx->pool, n, grain, norm_task, &j);
    return KERN_OK;
}

/* ---- RoPE ---- */
typedef struct { float *x; int n_head, head_dim; const int32_t *pos; const kern_rope_params *p; } rope_job;

static void rope_task(void *a, int64_t b, int64_t e, int tid)
{
    (void)tid;
    rope_job *j = a;
    const kern_rope_params *p = j->p;
    int half = p->n_rot / 2;
    float cs[512], sn[512]; /* angles of up to 512 pairs at a time (any n_rot, in chunks) */
    for (int64_t t = b; t < e; t++) {
        for (int i0 = 0; i0 < half; i0 += 512) {
            int nb = half - i0 < 512 ? half - i0 : 512;
            for (int i = 0; i < nb; i++) {
                int ii = i0 + i;
                double theta = (double)j->pos[t] * p->freq_scale * pow(p->freq_base, -2.0 * ii / p->n_rot);
                if (p->freq_factors) theta /= p->freq_factors[ii];
                cs[i] = (float)cos(theta);
                sn[i] = (float)sin(theta);
            }
            for (int h = 0; h < j->n_head; h++) {
                float *x = j->x + ((size_t)t * j->n_head + h) * j->head_dim;
                for (int i = 0; i < nb; i++) {
                    int ii = i0 + i;
                    int a0 = p->mode == KERN_ROPE_NEOX ? ii : 2 * ii;
                    int a1 = p->mode == KERN_ROPE_NEOX ? ii + half : 2 * ii + 1;
                    float x0 = x[a0], x1 = x[a1];
                    x[a0] = x0 * cs[i] - x1 * sn[i];
                    x[a1] = x0 * sn[i] + x1 * cs[i];
                }
            }
        }
    }
}

int kern_cpu_rope(kern_ctx *ctx, float *x, int n_tok, int n_head, int head_dim, const int32_t *pos,
                  const kern_rope_params *p)
{
    rope_job j = {x, n_head, head_dim, pos, p};
    kern_pool_run(ctx->pool, n_tok, 4, rope_task, &j);
    return KERN_OK;
}

/* ---- softmax ---- */
typedef struct { float *x; int dim; } sm_job;

static void softmax_row(float *x, int dim)
{
    float mx = x[0];
    for (int i = 1; i < dim; i++) mx = fmaxf(mx, x[i]);
    double sum = 0;
    for (int i = 0; i < dim; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < dim; i++) x[i] *= inv;
}

static void sm_task(void *a, int64_t b, int64_t e, int tid)
{
    (void)tid;
    sm_job *j = a;
    for (int64_t r = b; r < e; r++) softmax_row(j->x + r * j->dim, j->dim);
}

int kern_cpu_softmax(kern_ctx *ctx, float *x, int n, int dim)
{
    sm_job j = {x, dim};
    kern_pool_run(ctx->pool, n, ELEM_GRAIN / dim + 1, sm_task, &j);
    return KERN_OK;
}

/* ---- element-wise ---- */
static inline float silu(float x) { return x / (1.0f + expf(-x)); }

static inline float gelu(float x)
{
    /* 0.5*x*(1 + tanh(z)) == x * sigmoid(2z): no cancellation for x << 0 */
    const float c2 = 2 * 0.7978845608028654f; /* 2*sqrt(2/pi) */
    return x / (1.0f + expf(-c2 * (x + 0.044715f * x * x * x)));
}

typedef struct { float *y; const float *a, *b; float s; int op; } ew_job;

enum { EW_SILU, EW_GELU, EW_GSILU, EW_GGELU, EW_ADD, EW_MUL, EW_SCALE };

static void ew_task(void *arg, int64_t b, int64_t e, int tid)
{
    (void)tid;
    ew_job *j = arg;
    float *y = j->y;
    const float *p = j->a, *q = j->b;
    switch (j->op) {
    case EW_SILU: for (int64_t i = b; i < e; i++) y[i] = silu(p[i]); break;
    case EW_GELU: for (int64_t i = b; i < e; i++) y[i] = gelu(p[i]); break;
    case EW_GSILU: for (int64_t i = b; i < e; i++) y[i] = silu(p[i]) * q[i]; break;
    case EW_GGELU: for (int64_t i = b; i < e; i++) y[i] = gelu(p[i]) * q[i]; break;
    case EW_ADD: for (int64_t i = b; i < e; i++) y[i] = p[i] + q[i]; break;
    case EW_MUL: for (int64_t i = b; i < e; i++) y[i] = p[i] * q[i]; break;
    case EW_SCALE: for (int64_t i = b; i < e; i++) y[i] = p[i] * j->s; break;
    }
}

static int ew(kern_ctx *ctx, float *y, const float *a, const float *b, float s, size_t n, int op)
{
    ew_job j = {y, a, b, s, op};
    kern_pool_run(ctx->pool, (int64_t)n, ELEM_GRAIN, ew_task, &j);
    return KERN_OK;
}

int kern_cpu_act(kern_ctx *ctx, float *y, const float *x, size_t n, kern_act act)
{
    return ew(ctx, y, x, NULL, 0, n, act == KERN_ACT_SILU ? EW_SILU : EW_GELU);
}

int kern_cpu_gated(kern_ctx *ctx, float *y, const float *g, const float *u, size_t n, kern_act act)
{
    return ew(ctx, y, g, u, 0, n, act == KERN_ACT_SILU ? EW_GSILU : EW_GGELU);
}

int kern_cpu_binary(kern_ctx *ctx, float *y, const float *a, const float *b, size_t n, int op)
{
    return ew(ctx, y, a, b, 0, n, op == KERN_BIN_ADD ? EW_ADD : EW_MUL);
}

int kern_cpu_scale(kern_ctx *ctx, float *y, const float *x, float s, size_t n)
{
    return ew(ctx, y, x, NULL, s, n, EW_SCALE);
}
