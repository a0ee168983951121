/* cpu_portable.c: the portable C function table (kern_cpu_portable): dot
 * products of each weight type with its activation format, and the small
 * vector helpers attention uses. The reference for the SIMD paths. */
#include "kern_internal.h"

static float dot_f32(int k, const void *w, const void *x)
{
    const float *a = w, *b = x;
    float s = 0;
    for (int i = 0; i < k; i++) s += a[i] * b[i];
    return s;
}

static float dot_f16(int k, const void *w, const void *x)
{
    const uint16_t *a = w;
    const float *b = x;
    float s = 0;
    for (int i = 0; i < k; i++) s += kern_f16_to_f32(a[i]) * b[i];
    return s;
}

static float dot_bf16(int k, const void *w, const void *x)
{
    const uint16_t *a = w;
    const float *b = x;
    float s = 0;
    for (int i = 0; i < k; i++) s += kern_bf16_to_f32(a[i]) * b[i];
    return s;
}

static float dot_q4_0(int k, const void *w, const void *x)
{
    const kblock_q4_0 *a = w;
    const kblock_q8_0 *b = x;
    float s = 0;
    for (int i = 0; i < k / KQK; i++) {
        int sum = 0;
        for (int j = 0; j < KQK / 2; j++)
            sum += ((a[i].qs[j] & 0xF) - 8) * b[i].qs[j] + ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + KQK / 2];
        s += kern_f16_to_f32(a[i].d) * kern_f16_to_f32(b[i].d) * (float)sum;
    }
    return s;
}

static float dot_q5_0(int k, const void *w, const void *x)
{
    const kblock_q5_0 *a = w;
    const kblock_q8_0 *b = x;
    float s = 0;
    for (int i = 0; i < k / KQK; i++) {
        uint32_t qh = (uint32_t)a[i].qh[0] | (uint32_t)a[i].qh[1] << 8 | (uint32_t)a[i].qh[2] << 16 |
                      (uint32_t)a[i].qh[3] << 24;
        int sum = 0;
        for (int j = 0; j < KQK / 2; j++) {
            int lo = ((a[i].qs[j] & 0xF) | (int)((qh >> j) & 1) << 4) - 16;
            int hi = ((a[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4) - 16;
            sum += lo * b[i].qs[j] + hi * b[i].qs[j + KQK / 2];
        }
        s += kern_f16_to_f32(a[i].d) * kern_f16_to_f32(b[i].d) * (float)sum;
    }
    return s;
}

/* Q4_1 (qh == NULL) and Q5_1 block: d*dy*sum(q*y) + m*dy*sum(y) */
static float dot_affine_block(uint16_t dh, uint16_t mh, const uint8_t *qh, const uint8_t *qs, const kblock_q8_0 *b)
{
    uint32_t h = qh ? (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24 : 0;
    int sum = 0, ysum = 0;
    for (int j = 0; j < KQK / 2; j++) {
        int lo = (qs[j] & 0xF) | (int)((h >> j) & 1) << 4, hi = (qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
        sum += lo * b->qs[j] + hi * b->qs[j + KQK / 2];
        ysum += b->qs[j] + b->qs[j + KQK / 2];
    }
    float dy = kern_f16_to_f32(b->d);
    return kern_f16_to_f32(dh) * dy * (float)sum + kern_f16_to_f32(mh) * dy * (float)ysum;
}

static float dot_q4_1(int k, const void *w, const void *x)
{
    const kblock_q4_1 *a = w;
    float s = 0;
    for (int i = 0; i < k / KQK; i++) s += dot_affine_block(a[i].d, a[i].m, NULL, a[i].qs, (const kblock_q8_0 *)x + i);
    return s;
}

static float dot_q5_1(int k, const void *w, const void *x)
{
    const kblock_q5_1 *a = w;
    float s = 0;
    for (int i = 0; i < k / KQK; i++) s += dot_affine_block(a[i].d, a[i].m, a[i].qh, a[i].qs, (const kblock_q8_0 *)x + i);
    return s;
}

static float dot_q8_0(int k, const void *w, const void *x)
{
    const kblock_q8_0 *a = w, *b = x;
    float s = 0;
    for (int i = 0; i < k / KQK; i++) {
        int sum = 0;
        for (int j = 0; j < KQK; j++) sum += a[i].qs[j] * b[i].qs[j];
        s += kern_f16_to_f32(a[i].d) * kern_f16_to_f32(b[i].d) * (float)sum;
    }
    return s;
}

/* Q4_K/Q5_K super-block: sum_j d*sc_j*sum(q*y) - dmin*m_j*sum(y), with the
 * sub-block sums of y taken from the activation's bsums. */
static float dot_k45(uint16_t dh, uint16_t mh, const uint8_t *scales, const uint8_t *qh,
                     const uint8_t *qs, const kblock_q8_K *y)
{
    int sumi = 0, summ = 0;
    for (int c = 0; c < 4; c++) {
        uint8_t s0, m0, s1, m1;
        kern_k4_scale_min(2 * c, scales, &s0, &m0);
        kern_k4_scale_min(2 * c + 1, scales, &s1, &m1);
        const uint8_t *q = qs + 32 * c;
        const int8_t *y0 = y->qs + 64 * c, *y1 = y0 + 32;
        int a0 = 0, a1 = 0;
        for (int l = 0; l < 32; l++) {
            int lo = q[l] & 0xF, hi = q[l] >> 4;
            if (qh) {
                lo += (qh[l] >> (2 * c) & 1) << 4;
                hi += (qh[l] >> (2 * c + 1) & 1) << 4;
            }
            a0 += lo * y0[l];
            a1 += hi * y1[l];
        }
        sumi += s0 * a0 + s1 * a1;
        summ += m0 * (y->bsums[4 * c] + y->bsums[4 * c + 1]) + m1 * (y->bsums[4 * c + 2] + y->bsums[4 * c + 3]);
    }
    return y->d * (kern_f16_to_f32(dh) * (float)sumi - kern_f16_to_f32(mh) * (float)summ);
}

static float dot_q4_K(int k, const void *w, const void *x)
{
    const kblock_q4_K *a = w;
    const kblock_q8_K *b = x;
    float s = 0;
    for (int i = 0; i < k / KQK_K; i++) s += dot_k45(a[i].d, a[i].dmin, a[i].scales, NULL, a[i].qs, &b[i]);
    return s;
}

static float dot_q5_K(int k, const void *w, const void *x)
{
    const kblock_q5_K *a = w;
    const kblock_q8_K *b = x;
    float s = 0;
    for (int i = 0; i < k / KQK_K; i++) s += dot_k45(a[i].d, a[i].dmin, a[i].scales, a[i].qh, a[i].qs, &b[i]);
    return s;
}

static float dot_q6_K(int k, const void *w, const void *x)
{
    const kblock_q6_K *a = w;
    const kblock_q8_K *b = x;
    float s = 0;
    for (int i = 0; i < k / KQK_K; i++) {
        int sumi = 0;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = a[i].ql + 64 * h, *qh = a[i].qh + 32 * h;
            const int8_t *sc = a[i].scales + 8 * h, *y = b[i].qs + 128 * h;
            int g[8] = {0};
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                g[is + 0] += (((ql[l] & 0xF) | ((qh[l] >> 0 & 3) << 4)) - 32) * y[l];
                g[is + 2] += (((ql[l + 32] & 0xF) | ((qh[l] >> 2 & 3) << 4)) - 32) * y[l + 32];
                g[is + 4] += (((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32) * y[l + 64];
                g[is + 6] += (((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32) * y[l + 96];
            }
            for (int j = 0; j < 8; j++) sumi += sc[j] * g[j];
        }
        s += kern_f16_to_f32(a[i].d) * b[i].d * (float)sumi;
    }
    return s;
}

static void f16_to_f32(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = kern_f16_to_f32(src[i]);
}

static void f32_to_f16(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = kern_f32_to_f16(src[i]);
}

static void axpy_f32(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static void axpy_f16(float *y, float a, const uint16_t *x, int n)
{
    for (int i = 0; i < n; i++) y[i] += a * kern_f16_to_f32(x[i]);
}

static void scale_f32(float *y, float a, int n)
{
    for (int i = 0; i < n; i++) y[i] *= a;
}

const kern_cpu_fns kern_cpu_portable = {
    .dot = {[KERN_TYPE_F32] = dot_f32, [KERN_TYPE_F16] = dot_f16, [KERN_TYPE_BF16] = dot_bf16,
            [KERN_TYPE_Q4_0] = dot_q4_0, [KERN_TYPE_Q4_1] = dot_q4_1, [KERN_TYPE_Q5_0] = dot_q5_0,
            [KERN_TYPE_Q5_1] = dot_q5_1, [KERN_TYPE_Q8_0] = dot_q8_0, [KERN_TYPE_Q4_K] = dot_q4_K,
            [KERN_TYPE_Q5_K] = dot_q5_K, [KERN_TYPE_Q6_K] = dot_q6_K},
    .quant_q8_0 = kern_quant_q8_0_portable,
    .quant_q8_K = kern_quant_q8_K_portable,
    .f16_to_f32 = f16_to_f32,
    .f32_to_f16 = f32_to_f16,
    .axpy_f32 = axpy_f32,
    .axpy_f16 = axpy_f16,
    .scale_f32 = scale_f32,
};
