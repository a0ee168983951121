/* cuda_attention.cu: causal grouped-query attention over a head-major KV
 * cache (kernels.h), flash-decoding style.
 *
 * Each query (position t, head h) sees keys lo..pos (pos = q_pos0 + t,
 * lo = pos - window + 1 with a sliding window, else 0). The keys any query of
 * the call sees, lo of query 0 onwards (`span` of them: n_kv, or window + n_q - 1
 * with a window, so a sliding-window layer splits its window rather than the
 * whole cache), are cut into chunks of `chunk` keys; one 4-warp block takes one chunk, each warp
 * every 4th key of it, with an online softmax (running max m, sum l and
 * weighted values o in registers: lane d holds elements d, d+32, ...).
 * Each warp writes its partial (o, m, l); a second kernel merges the
 * partials of a query: out = sum_s e^(m_s-M) o_s / sum_s e^(m_s-M) l_s.
 * Splitting the keys is what keeps a single decode query (n_q = 1) from
 * running on a handful of SMs. Prompts (n_q >= TQ/2) use k_attn_tiled below
 * instead: queries in tiles, K/V staged in shared memory.
 *
 * With pos0 on the device (kern_cuda_attention_dev, for CUDA graphs) the
 * split count is sized for the whole capacity (or the window) and chunks past
 * n_kv write empty partials (m = -inf, l = 0); the first key is computed on
 * the device from pos0. */
#include "cuda_quant.cuh"

#define ATT_WARPS 4
#define ATT_MAX_D 256
#define ATT_DPL (ATT_MAX_D / 32) /* elements of a head per lane */

template <bool F16>
__device__ __forceinline__ float kv_at(const void *base, size_t i)
{
    if (F16) return kcu_h2f(((const uint16_t *)base)[i]);
    return ((const float *)base)[i];
}

/* One key (row r of the caches, element offset) into a warp's online softmax:
 * lane d holds q, o elements d, d+32, ... */
template <bool F16>
__device__ __forceinline__ void attn_key(const float *qv, const void *kc, const void *vc, size_t r, int hd, int lane,
                                         float scale, float &m, float &l, float *o)
{
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < ATT_DPL; i++) {
        int d = lane + 32 * i;
        if (d < hd) s += qv[i] * kv_at<F16>(kc, r + d);
    }
    s = kcu_warp_sum(s) * scale;
    float mn = fmaxf(m, s), corr = expf(m - mn), p = expf(s - mn);
    l = l * corr + p;
#pragma unroll
    for (int i = 0; i < ATT_DPL; i++) {
        int d = lane + 32 * i;
        o[i] = o[i] * corr + (d < hd ? p * kv_at<F16>(vc, r + d) : 0.0f);
    }
    m = mn;
}

/* A warp's partial (o, m, l) of query-head qh, split `split`, for k_attn_merge. */
__device__ __forceinline__ void attn_partial(float *part, int qh, int split, int n_split, int warp, int lane, int hd,
                                             const float *o, float m, float l)
{
    float *pp = part + (((size_t)qh * n_split + split) * ATT_WARPS + warp) * (hd + 2);
#pragma unroll
    for (int i = 0; i < ATT_DPL; i++) {
        int d = lane + 32 * i;
        if (d < hd) pp[d] = o[i];
    }
    if (lane == 0) pp[hd] = m, pp[hd + 1] = l;
}

template <bool F16>
__global__ void __launch_bounds__(ATT_WARPS * 32)
k_attn_split(float *__restrict__ part, const float *__restrict__ q, const void *__restrict__ kc,
             const void *__restrict__ vc, int n_head, int group, int hd, int cap, int q_pos0,
             const int32_t *__restrict__ pos0_dev, int window, float scale, int chunk, int n_split)
{
    int qh = blockIdx.x; /* t * n_head + h */
    int split = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int t = qh / n_head, h = qh % n_head, kvh = h / group;
    if (pos0_dev) q_pos0 = *pos0_dev;
    int pos = q_pos0 + t;
    int lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    int first = window > 0 && q_pos0 - window + 1 > 0 ? q_pos0 - window + 1 : 0; /* lo of query 0 */
    int b = first + split * chunk, e = b + chunk - 1;
    if (b < lo) b = lo;
    if (e > pos) e = pos;
    if (e >= cap) e = cap - 1; /* a bad device position must not read past the cache */
    float qv[ATT_DPL], o[ATT_DPL];
    const float *qr = q + (size_t)qh * hd;
#pragma unroll
    for (int i = 0; i < ATT_DPL; i++) {
        int d = lane + 32 * i;
        qv[i] = d < hd ? qr[d] : 0.0f;
        o[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    size_t head_off = (size_t)kvh * cap * hd;
    for (int j = b + warp; j <= e; j += ATT_WARPS)
        attn_key<F16>(qv, kc, vc, head_off + (size_t)j * hd, hd, lane, scale, m, l, o);
    attn_partial(part, qh, split, n_split, warp, lane, hd, o, m, l);
}

/* The merge of one query-head's n_part partials pp[s * (hd + 2) + ...] (o[hd], m, l)
 * into out[hd]: out = sum_s e^(m_s-M) o_s / sum_s e^(m_s-M) l_s over the partials that
 * saw a key (m_s > -inf). If none did (a paged row no sequence covers), out is left
 * untouched. Called by every thread of a block; threads split the hd elements. */
__device__ __forceinline__ void attn_merge_row(float *__restrict__ out, const float *pp, int hd, int n_part)
{
    float M = -INFINITY;
    for (int s = 0; s < n_part; s++) M = fmaxf(M, pp[(size_t)s * (hd + 2) + hd]);
    if (!(M > -INFINITY)) return;
    float L = 0.0f;
    for (int s = 0; s < n_part; s++) {
        const float *p = pp + (size_t)s * (hd + 2);
        if (p[hd] > -INFINITY) L += expf(p[hd] - M) * p[hd + 1];
    }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < n_part; s++) {
            const float *p = pp + (size_t)s * (hd + 2);
            if (p[hd] > -INFINITY) acc += expf(p[hd] - M) * p[d];
        }
        out[d] = acc / L;
    }
}

/* Paged pools (kern_attention_paged): the split kernel with each query row's
 * position and block table read from meta (per row: position, offset of its
 * table in tables, blocks in it; at most max_nb are read whatever meta says);
 * key j of a row is slot j % bt of block tables[off + j / bt]. Chunks start at
 * the row's own first visible key; a chunk past the row's last key (short rows
 * under a grid sized for the longest possible one) writes an empty partial
 * (m = -inf, l = 0) and returns.
 * DIRECT (only with n_split == 1: the whole row in this block): no partials and no
 * merge launch; the 4 warps' partials meet in shared memory and the block merges
 * them into out itself (the same arithmetic as k_attn_merge); a row without keys
 * returns at once (out untouched). Every early return is block-uniform (b and e
 * depend on the block only), so no thread skips the __syncthreads. */
template <bool F16, bool DIRECT>
__global__ void __launch_bounds__(ATT_WARPS * 32)
k_attn_paged(float *__restrict__ dst, const float *__restrict__ q, const void *__restrict__ kp,
             const void *__restrict__ vp, int n_head, int group, int hkv, int hd, int bt, int n_pool,
             const int32_t *__restrict__ meta, const int32_t *__restrict__ tables, int max_nb, int window,
             float scale, int chunk, int n_split)
{
    int qh = blockIdx.x, split = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int row = qh / n_head, h = qh % n_head, kvh = h / group;
    int pos = meta[3 * row], toff = meta[3 * row + 1], nb = meta[3 * row + 2];
    if (nb > max_nb) nb = max_nb;
    int lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    int b = lo + split * chunk, e = b + chunk - 1;
    if (e > pos) e = pos;
    if (e > nb * bt - 1) e = nb * bt - 1; /* never past the row's table */
    float qv[ATT_DPL], o[ATT_DPL];
#pragma unroll
    for (int i = 0; i < ATT_DPL; i++) o[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    if (b > e) { /* no key in this chunk: the merge skips an empty partial */
        if (!DIRECT) attn_partial(dst, qh, split, n_split, warp, lane, hd, o, m, l);
        return;
    }
    const float *qr = q + (size_t)qh * hd;
#pragma unroll
    for (int i = 0; i < ATT_DPL; i++) {
        int d = lane + 32 * i;
        qv[i] = d < hd ? qr[d] : 0.0f;
    }
    for (int j = b + warp; j <= e; j += ATT_WARPS) {
        int id = tables[toff + j / bt];
        id = id < 0 ? 0 : id >= n_pool ? n_pool - 1 : id; /* api.c checked; never fault the GPU */
        attn_key<F16>(qv, kp, vp, (((size_t)id * hkv + kvh) * bt + j % bt) * hd, hd, lane, scale, m, l, o);
    }
    if (!DIRECT) {
        attn_partial(dst, qh, split, n_split, warp, lane, hd, o, m, l);
        return;
    }
    /* the partials laid out as k_attn_merge reads them (split 0 of a 1-split grid) */
    __shared__ float sh[ATT_WARPS * (ATT_MAX_D + 2)];
    attn_partial(sh, 0, 0, 1, warp, lane, hd, o, m, l);
    __syncthreads();
    attn_merge_row(dst + (size_t)qh * hd, sh, hd, ATT_WARPS);
}

__global__ void k_attn_merge(float *__restrict__ out, const float *__restrict__ part, int hd, int n_part)
{
    int qh = blockIdx.x;
    attn_merge_row(out + (size_t)qh * hd, part + (size_t)qh * n_part * (hd + 2), hd, n_part);
}

/* Prompts: a block takes TQ consecutive queries of one head (each warp
 * TQ/ATT_WARPS of them) and walks the keys any of them sees in tiles of TK
 * rows of K and V staged in shared memory as f32, so each K/V row is read
 * from memory once per TQ queries instead of once per query. Same online
 * softmax per query as the split kernel; no merge pass. */
#define TQ 16
#define TK 16
#define QPW (TQ / ATT_WARPS)

template <bool F16>
__global__ void __launch_bounds__(ATT_WARPS * 32)
k_attn_tiled(float *__restrict__ out, const float *__restrict__ q, const void *__restrict__ kc,
             const void *__restrict__ vc, int n_q, int n_head, int group, int hd, int cap, int q_pos0,
             const int32_t *__restrict__ pos0_dev, int window, float scale)
{
    __shared__ float ks[TK][ATT_MAX_D], vs[TK][ATT_MAX_D];
    int h = blockIdx.y, kvh = h / group, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (pos0_dev) q_pos0 = *pos0_dev;
    int t0 = blockIdx.x * TQ, t_end = t0 + TQ < n_q ? t0 + TQ : n_q;
    float qv[QPW][ATT_DPL], o[QPW][ATT_DPL], m[QPW], l[QPW];
    int pos[QPW], lo[QPW];
#pragma unroll
    for (int j = 0; j < QPW; j++) {
        int t = t0 + warp * QPW + j;
        pos[j] = t < t_end ? q_pos0 + t : -1; /* -1: no query, sees no key */
        lo[j] = window > 0 && pos[j] - window + 1 > 0 ? pos[j] - window + 1 : 0;
        m[j] = -INFINITY, l[j] = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) {
            int d = lane + 32 * i;
            qv[j][i] = pos[j] >= 0 && d < hd ? q[((size_t)t * n_head + h) * hd + d] : 0.0f;
            o[j][i] = 0.0f;
        }
    }
    int last = q_pos0 + t_end - 1, first = window > 0 && q_pos0 + t0 - window + 1 > 0 ? q_pos0 + t0 - window + 1 : 0;
    if (last >= cap) last = cap - 1; /* a bad device position must not read past the cache */
    size_t head_off = (size_t)kvh * cap * hd;
    for (int k0 = first; k0 <= last; k0 += TK) {
        int nk = last - k0 + 1 < TK ? last - k0 + 1 : TK;
        __syncthreads(); /* the previous tile is no longer read */
        for (int e = threadIdx.x; e < nk * hd; e += blockDim.x) {
            int r = e / hd, d = e % hd;
            size_t g = head_off + (size_t)(k0 + r) * hd + d;
            ks[r][d] = kv_at<F16>(kc, g);
            vs[r][d] = kv_at<F16>(vc, g);
        }
        __syncthreads();
        for (int r = 0; r < nk; r++) {
            int key = k0 + r;
#pragma unroll
            for (int j = 0; j < QPW; j++) {
                if (key < lo[j] || key > pos[j]) continue; /* uniform across the warp */
                float sc = 0.0f;
#pragma unroll
                for (int i = 0; i < ATT_DPL; i++) {
                    int d = lane + 32 * i;
                    if (d < hd) sc += qv[j][i] * ks[r][d];
                }
                sc = kcu_warp_sum(sc) * scale;
                float mn = fmaxf(m[j], sc), corr = expf(m[j] - mn), p = expf(sc - mn);
                l[j] = l[j] * corr + p;
#pragma unroll
                for (int i = 0; i < ATT_DPL; i++) {
                    int d = lane + 32 * i;
                    o[j][i] = o[j][i] * corr + (d < hd ? p * vs[r][d] : 0.0f);
                }
                m[j] = mn;
            }
        }
    }
#pragma unroll
    for (int j = 0; j < QPW; j++) {
        if (pos[j] < 0) continue;
        int t = t0 + warp * QPW + j;
        float inv = 1.0f / l[j];
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) {
            int d = lane + 32 * i;
            if (d < hd) out[((size_t)t * n_head + h) * hd + d] = o[j][i] * inv;
        }
    }
}

static int attention(kern_ctx *ctx, float *out, const float *q, const void *k, const void *v,
                     const kern_kv_layout *l, const kern_attn_params *p, const int32_t *pos0_dev)
{
    kern_cuda *c = kcu(ctx);
    if (l->head_dim > ATT_MAX_D)
        return kern_fail(ctx, KERN_ENOTSUP, "kern_attention: CUDA backend supports head_dim <= %d, got %d",
                         ATT_MAX_D, l->head_dim);
    int group = p->n_head / l->n_head_kv;
    if (p->n_q >= TQ / 2) { /* prompts: tiled, K/V shared by TQ queries */
        dim3 grid((p->n_q + TQ - 1) / TQ, p->n_head);
        if (l->type == KERN_TYPE_F16)
            k_attn_tiled<true><<<grid, ATT_WARPS * 32, 0, c->stream>>>(out, q, k, v, p->n_q, p->n_head, group,
                                                                      l->head_dim, l->capacity, p->q_pos0, pos0_dev,
                                                                      p->window, p->scale);
        else
            k_attn_tiled<false><<<grid, ATT_WARPS * 32, 0, c->stream>>>(out, q, k, v, p->n_q, p->n_head, group,
                                                                       l->head_dim, l->capacity, p->q_pos0, pos0_dev,
                                                                       p->window, p->scale);
        KCU_LAUNCHED();
        return KERN_OK;
    }
    /* keys any query may see: first .. first+span-1 (first computed by the kernel) */
    int span = pos0_dev ? l->capacity : p->n_kv;
    if (p->window > 0 && (int64_t)p->window + p->n_q - 1 < span) span = p->window + p->n_q - 1;
    int nq = p->n_q * p->n_head;
    /* enough blocks to fill the GPU twice, chunks of 64 .. any keys */
    int want = (2 * c->n_sm + nq - 1) / nq;
    int chunk = (span + want - 1) / want;
    if (chunk < 64) chunk = 64;
    int n_split = (span + chunk - 1) / chunk;
    size_t n_part = (size_t)n_split * ATT_WARPS;
    int rc = kcu_grow(ctx, &c->part, &c->part_bytes, (size_t)nq * n_part * (l->head_dim + 2) * sizeof(float));
    if (rc) return rc;
    dim3 grid(nq, n_split);
    if (l->type == KERN_TYPE_F16)
        k_attn_split<true><<<grid, ATT_WARPS * 32, 0, c->stream>>>((float *)c->part, q, k, v, p->n_head, group,
                                                                  l->head_dim, l->capacity, p->q_pos0, pos0_dev,
                                                                  p->window, p->scale, chunk, n_split);
    else
        k_attn_split<false><<<grid, ATT_WARPS * 32, 0, c->stream>>>((float *)c->part, q, k, v, p->n_head, group,
                                                                   l->head_dim, l->capacity, p->q_pos0, pos0_dev,
                                                                   p->window, p->scale, chunk, n_split);
    KCU_LAUNCHED();
    k_attn_merge<<<nq, l->head_dim >= 128 ? 128 : 64, 0, c->stream>>>(out, (const float *)c->part, l->head_dim,
                                                                      (int)n_part);
    KCU_LAUNCHED();
    return KERN_OK;
}

int kcu_attention(kern_ctx *ctx, float *out, const float *q, const void *k, const void *v,
                  const kern_kv_layout *l, const kern_attn_params *p)
{
    return attention(ctx, out, q, k, v, l, p, NULL);
}

int kcu_attention_d(kern_ctx *ctx, float *out, const float *q, const void *k, const void *v,
                    const kern_kv_layout *l, const kern_attn_params *p, const int32_t *pos0_dev)
{
    return attention(ctx, out, q, k, v, l, p, pos0_dev);
}

/* One paged attention launch + its merge over `rows` query rows whose meta and
 * tables are device memory (one launch alone when the split count is 1: the kernel
 * merges its warps itself). span: the most keys a row may see; it alone sizes the
 * split, so equal (rows, span) give equal grids (what a CUDA graph needs). */
static int paged_launch(kern_ctx *ctx, float *out, const float *q, const void *k_pool, const void *v_pool,
                        const kern_kv_layout *block, int n_pool, const int32_t *meta, const int32_t *tables,
                        int max_nb, int rows, int span, int n_head, int window, float scale)
{
    kern_cuda *c = kcu(ctx);
    const int hd = block->head_dim, bt = block->capacity, hkv = block->n_head_kv;
    const bool f16 = block->type == KERN_TYPE_F16;
    int nq = rows * n_head, group = n_head / hkv;
    /* enough blocks to fill the GPU twice, chunks of 64 .. any keys, gridDim.y <= 65535 */
    int want = (2 * c->n_sm + nq - 1) / nq;
    int chunk = (span + want - 1) / want;
    if (chunk < 64) chunk = 64;
    if (chunk < (span + 65534) / 65535) chunk = (span + 65534) / 65535;
    int n_split = (span + chunk - 1) / chunk;
    if (n_split == 1) {
#define PAGED(F) k_attn_paged<F, true><<<nq, ATT_WARPS * 32, 0, c->stream>>>(out, q, k_pool, v_pool, n_head, group, \
                                       hkv, hd, bt, n_pool, meta, tables, max_nb, window, scale, chunk, 1)
        if (f16) PAGED(true);
        else PAGED(false);
#undef PAGED
        KCU_LAUNCHED();
        return KERN_OK;
    }
    size_t n_part = (size_t)n_split * ATT_WARPS;
    int rc = kcu_grow(ctx, &c->part, &c->part_bytes, (size_t)nq * n_part * (hd + 2) * sizeof(float));
    if (rc) return rc;
    dim3 grid(nq, n_split);
    float *part = (float *)c->part;
#define PAGED(F) k_attn_paged<F, false><<<grid, ATT_WARPS * 32, 0, c->stream>>>(part, q, k_pool, v_pool, n_head, \
                                        group, hkv, hd, bt, n_pool, meta, tables, max_nb, window, scale, chunk, n_split)
    if (f16) PAGED(true);
    else PAGED(false);
#undef PAGED
    KCU_LAUNCHED();
    k_attn_merge<<<nq, hd >= 128 ? 128 : 64, 0, c->stream>>>(out, (const float *)c->part, hd, (int)n_part);
    KCU_LAUNCHED();
    return KERN_OK;
}

extern "C" int kern_cuda_attention_paged(kern_ctx *ctx, float *out, const float *q, const void *k_pool,
                                         const void *v_pool, const kern_kv_layout *block, int n_pool,
                                         const kern_paged_seq *seqs, int n_seqs, int n_head, int window, float scale)
{
    if (!kern_cuda_is(ctx)) return kern_fail(ctx, KERN_EINVAL, "kern_attention_paged: not a CUDA context");
    const int hd = block->head_dim, bt = block->capacity;
    if (hd > ATT_MAX_D)
        return kern_fail(ctx, KERN_ENOTSUP, "kern_attention_paged: CUDA backend supports head_dim <= %d, got %d",
                         ATT_MAX_D, hd);
    /* rows (all sequences' queries, each at its row0 + t), then the block tables,
     * staged as one int array; span = the most keys any row sees */
    int rows = 0, n_tab = 0, span = 1;
    for (int s = 0; s < n_seqs; s++) {
        int end = seqs[s].row0 + seqs[s].n_q;
        rows = end > rows ? end : rows;
        n_tab += (seqs[s].q_pos0 + seqs[s].n_q + bt - 1) / bt;
        int vis = seqs[s].q_pos0 + seqs[s].n_q;
        if (window > 0 && vis > window) vis = window;
        span = vis > span ? vis : span;
    }
    size_t n_int = (size_t)3 * rows + (size_t)n_tab;
    int32_t *h = (int32_t *)malloc(n_int * sizeof *h);
    if (!h) return kern_fail(ctx, KERN_ENOMEM, "kern_attention_paged: out of host memory");
    /* rows no sequence covers (gaps between row ranges) see nothing: position -1 */
    for (int r = 0; r < rows; r++) h[3 * r] = -1, h[3 * r + 1] = 0, h[3 * r + 2] = 0;
    int32_t *tab = h + 3 * (size_t)rows;
    for (int s = 0, off = 0; s < n_seqs; s++) {
        int nb = (seqs[s].q_pos0 + seqs[s].n_q + bt - 1) / bt;
        memcpy(tab + off, seqs[s].blocks, (size_t)nb * sizeof *tab);
        for (int t = 0; t < seqs[s].n_q; t++) {
            int r = seqs[s].row0 + t;
            h[3 * r] = seqs[s].q_pos0 + t, h[3 * r + 1] = off, h[3 * r + 2] = nb;
        }
        off += nb;
    }
    const void *dev;
    int rc = kcu_stage(ctx, h, n_int * sizeof *h, &dev);
    free(h);
    if (rc) return rc;
    const int32_t *meta = (const int32_t *)dev;
    return paged_launch(ctx, out, q, k_pool, v_pool, block, n_pool, meta, meta + 3 * (size_t)rows, n_tab, rows, span,
                        n_head, window, scale);
}

extern "C" int kern_cuda_attention_paged_dev(kern_ctx *ctx, float *out, const float *q, const void *k_pool,
                                             const void *v_pool, const kern_kv_layout *block, int n_pool,
                                             const int32_t *meta_dev, const int32_t *tables_dev, int max_blocks,
                                             int n_rows, int n_head, int window, float scale)
{
    if (!ctx) return KERN_EINVAL;
    if (!kern_cuda_is(ctx)) return kern_fail(ctx, KERN_EINVAL, "kern_cuda_attention_paged_dev: not a CUDA context");
    if (!out || !q || !k_pool || !v_pool || !meta_dev || !tables_dev || !block || kern_kv_bytes(block) == 0 ||
        n_pool <= 0 || max_blocks <= 0 || n_rows <= 0 || n_head <= 0 || n_head % block->n_head_kv || window < 0 ||
        (int64_t)max_blocks * block->capacity > INT32_MAX / 2)
        return kern_fail(ctx, KERN_EINVAL, "kern_cuda_attention_paged_dev: bad arguments (NULL, layout, sizes, "
                         "heads or window)");
    if (block->head_dim > ATT_MAX_D)
        return kern_fail(ctx, KERN_ENOTSUP, "kern_cuda_attention_paged_dev: CUDA backend supports head_dim <= %d, "
                         "got %d", ATT_MAX_D, block->head_dim);
    /* the grid depends on (n_rows, capacity, window) only, never on the positions */
    int span = max_blocks * block->capacity;
    if (window > 0 && window < span) span = window;
    return paged_launch(ctx, out, q, k_pool, v_pool, block, n_pool, meta_dev, tables_dev, max_blocks, n_rows, span,
                        n_head, window, scale);
}
