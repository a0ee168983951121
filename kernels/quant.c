/* quant.c: host-side quantization and dequantization of every supported
 * type, byte-exact with ggml's GGUF layouts, plus the portable quantizers
 * of activations (Q8_0 and Q8_K). The weight quantizers are simple
 * min/max (or abs-max) fits, good enough for tests and synthetic models;
 * they are not ggml's iterative searches. */
#include "kern_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int nearest(float v) { return (int)lrintf(v); }
static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---------------------------------------------------------- dequantize */

static void deq_q4_0(const kblock_q4_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += KQK) {
        float d = kern_f16_to_f32(b->d);
        for (int j = 0; j < KQK / 2; j++) {
            y[j] = d * (float)((b->qs[j] & 0xF) - 8);
            y[j + KQK / 2] = d * (float)((b->qs[j] >> 4) - 8);
        }
    }
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static void deq_q5_0(const kblock_q5_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += KQK) {
        float d = kern_f16_to_f32(b->d);
        uint32_t qh = rd32(b->qh);
        for (int j = 0; j < KQK / 2; j++) {
            int lo = (b->qs[j] & 0xF) | (int)((qh >> j) & 1) << 4;
            int hi = (b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = d * (float)(lo - 16);
            y[j + KQK / 2] = d * (float)(hi - 16);
        }
    }
}

/* Q4_1 (qh == NULL) and Q5_1: x = d*q + m */
static void deq_affine(uint16_t dh, uint16_t mh, const uint8_t *qh, const uint8_t *qs, float *y)
{
    float d = kern_f16_to_f32(dh), m = kern_f16_to_f32(mh);
    uint32_t h = qh ? rd32(qh) : 0;
    for (int j = 0; j < KQK / 2; j++) {
        int lo = (qs[j] & 0xF) | (int)((h >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
        y[j] = d * (float)lo + m;
        y[j + KQK / 2] = d * (float)hi + m;
    }
}

static void deq_q8_0(const kblock_q8_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b++, y += KQK) {
        float d = kern_f16_to_f32(b->d);
        for (int j = 0; j < KQK; j++) y[j] = d * (float)b->qs[j];
    }
}

/* Q4_K and Q5_K share everything but the fifth bit (qh == NULL for Q4_K).
 * Chunk c (64 elements) uses sub-blocks 2c (low nibbles of qs[32c..]) and
 * 2c+1 (high nibbles); Q5_K's fifth bits are bits 2c and 2c+1 of qh[l]. */
static void deq_k45(uint16_t dh, uint16_t mh, const uint8_t *scales, const uint8_t *qh,
                    const uint8_t *qs, float *y)
{
    float d = kern_f16_to_f32(dh), dmin = kern_f16_to_f32(mh);
    for (int c = 0; c < 4; c++) {
        uint8_t s0, m0, s1, m1;
        kern_k4_scale_min(2 * c, scales, &s0, &m0);
        kern_k4_scale_min(2 * c + 1, scales, &s1, &m1);
        const uint8_t *q = qs + 32 * c;
        for (int l = 0; l < 32; l++) {
            int lo = q[l] & 0xF, hi = q[l] >> 4;
            if (qh) {
                lo += (qh[l] >> (2 * c) & 1) << 4;
                hi += (qh[l] >> (2 * c + 1) & 1) << 4;
            }
            y[64 * c + l] = d * s0 * (float)lo - dmin * m0;
            y[64 * c + 32 + l] = d * s1 * (float)hi - dmin * m1;
        }
    }
}

/* Q6_K: each half (128 elements) has ql[64], qh[32], scales[8]; element
 * l + 32*s (s = 0..3) takes low bits from ql[l] (s even) or ql[l+32] (s odd),
 * low nibble for s < 2, high for s >= 2, and bits 2s..2s+1 of qh[l]. */
static void deq_q6_K(const kblock_q6_K *b, float *y)
{
    float d = kern_f16_to_f32(b->d);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        const int8_t *sc = b->scales + 8 * h;
        float *yy = y + 128 * h;
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0 & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2 & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32;
            yy[l] = d * sc[is] * (float)q1;
            yy[l + 32] = d * sc[is + 2] * (float)q2;
            yy[l + 64] = d * sc[is + 4] * (float)q3;
            yy[l + 96] = d * sc[is + 6] * (float)q4;
        }
    }
}

/* n must be a multiple of t's block size (callers check). */
void kern_dequant_row(int t, const void *src, float *dst, int64_t n)
{
    switch (t) {
    case KERN_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case KERN_TYPE_F16: kern_cpu()->f16_to_f32(dst, src, (size_t)n); break;
    case KERN_TYPE_BF16: kern_bf16_to_f32_row(dst, src, (size_t)n); break;
    case KERN_TYPE_Q4_0: deq_q4_0(src, dst, n / KQK); break;
    case KERN_TYPE_Q4_1:
        for (int64_t i = 0; i < n / KQK; i++) {
            const kblock_q4_1 *b = (const kblock_q4_1 *)src + i;
            deq_affine(b->d, b->m, NULL, b->qs, dst + i * KQK);
        }
        break;
    case KERN_TYPE_Q5_1:
        for (int64_t i = 0; i < n / KQK; i++) {
            const kblock_q5_1 *b = (const kblock_q5_1 *)src + i;
            deq_affine(b->d, b->m, b->qh, b->qs, dst + i * KQK);
        }
        break;
    case KERN_TYPE_Q5_0: deq_q5_0(src, dst, n / KQK); break;
    case KERN_TYPE_Q8_0: deq_q8_0(src, dst, n / KQK); break;
    case KERN_TYPE_Q4_K:
        for (int64_t i = 0; i < n / KQK_K; i++) {
            const kblock_q4_K *b = (const kblock_q4_K *)src + i;
            deq_k45(b->d, b->dmin, b->scales, NULL, b->qs, dst + i * KQK_K);
        }
        break;
    case KERN_TYPE_Q5_K:
        for (int64_t i = 0; i < n / KQK_K; i++) {
            const kblock_q5_K *b = (const kblock_q5_K *)src + i;
            deq_k45(b->d, b->dmin, b->scales, b->qh, b->qs, dst + i * KQK_K);
        }
        break;
    case KERN_TYPE_Q6_K:
        for (int64_t i = 0; i < n / KQK_K; i++) deq_q6_K((const kblock_q6_K *)src + i, dst + i * KQK_K);
        break;
    default: break;
    }
}

/* ------------------------------------------------------------ quantize */

static void q_q4_0(const float *x, kblock_q4_0 *b)
{
    /* the value of largest magnitude maps to -8 exactly (the asymmetric end) */
    float amax = 0, max = 0;
    for (int j = 0; j < KQK; j++)
        if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
    float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0;
    b->d = kern_f32_to_f16(d);
    for (int j = 0; j < KQK / 2; j++) {
        int lo = clampi(nearest(x[j] * id) + 8, 0, 15);
        int hi = clampi(nearest(x[j + KQK / 2] * id) + 8, 0, 15);
        b->qs[j] = (uint8_t)(lo | hi << 4);
    }
}

static void q_q5_0(const float *x, kblock_q5_0 *b)
{
    float amax = 0, max = 0; /* as Q4_0: the largest magnitude maps to -16 */
    for (int j = 0; j < KQK; j++)
        if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
    float d = max / -16.0f, id = d != 0 ? 1.0f / d : 0;
    b->d = kern_f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < KQK / 2; j++) {
        int lo = clampi(nearest(x[j] * id) + 16, 0, 31);
        int hi = clampi(nearest(x[j + KQK / 2] * id) + 16, 0, 31);
        b->qs[j] = (uint8_t)((lo & 0xF) | (hi & 0xF) << 4);
        qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
    }
    for (int j = 0; j < 4; j++) b->qh[j] = (uint8_t)(qh >> (8 * j));
}

/* Q4_1 (nmax 15, qh == NULL) and Q5_1 (nmax 31): x ~ d*q + min */
static void q_affine(const float *x, int nmax, uint16_t *dh, uint16_t *mh, uint8_t *qh, uint8_t *qs)
{
    float lo = x[0], hi = x[0];
    for (int j = 1; j < KQK; j++) { lo = fminf(lo, x[j]); hi = fmaxf(hi, x[j]); }
    *dh = kern_f32_to_f16((hi - lo) / (float)nmax);
    *mh = kern_f32_to_f16(lo);
    float d = kern_f16_to_f32(*dh), m = kern_f16_to_f32(*mh), id = d > 0 ? 1.0f / d : 0;
    uint32_t h = 0;
    for (int j = 0; j < KQK / 2; j++) {
        int a = clampi(nearest((x[j] - m) * id), 0, nmax), b = clampi(nearest((x[j + KQK / 2] - m) * id), 0, nmax);
        qs[j] = (uint8_t)((a & 0xF) | (b & 0xF) << 4);
        h |= (uint32_t)(a >> 4) << j | (uint32_t)(b >> 4) << (j + 16);
    }
    if (qh)
        for (int j = 0; j < 4; j++) qh[j] = (uint8_t)(h >> (8 * j));
}

static void q_q8_0(const float *x, kblock_q8_0 *b)
{
    float amax = 0;
    for (int j = 0; j < KQK; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0;
    b->d = kern_f32_to_f16(d);
    for (int j = 0; j < KQK; j++) b->qs[j] = (int8_t)clampi(nearest(x[j] * id), -127, 127);
}

static void pack_k4_scales(uint8_t *s, const int *ls, const int *lm)
{
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] |= (uint8_t)ls[j];
            s[j + 4] |= (uint8_t)lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0xF) | (lm[j] & 0xF) << 4);
            s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): per 32-element sub-block an affine fit
 * x ~ s*q - m with m >= 0 (min clamped to <= 0), then the 8 scales and 8
 * mins are quantized to 6 bits against the super-block's d and dmin. */
static void q_k45(const float *x, int nmax, uint16_t *dh, uint16_t *mh, uint8_t *scales,
                  uint8_t *qh, uint8_t *qs)
{
    float sc[8], mn[8], max_sc = 0, max_mn = 0;
    for (int j = 0; j < 8; j++) {
        float lo = x[32 * j], hi = x[32 * j];
        for (int l = 1; l < 32; l++) { lo = fminf(lo, x[32 * j + l]); hi = fmaxf(hi, x[32 * j + l]); }
        if (lo > 0) lo = 0;
        sc[j] = (hi - lo) / (float)nmax;
        mn[j] = -lo;
        max_sc = fmaxf(max_sc, sc[j]);
        max_mn = fmaxf(max_mn, mn[j]);
    }
    float d = max_sc / 63.0f, dmin = max_mn / 63.0f;
    *dh = kern_f32_to_f16(d);
    *mh = kern_f32_to_f16(dmin);
    d = kern_f16_to_f32(*dh); /* fit values against the scales actually stored */
    dmin = kern_f16_to_f32(*mh);
    int ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        ls[j] = d > 0 ? clampi(nearest(sc[j] / d), 0, 63) : 0;
        lm[j] = dmin > 0 ? clampi(nearest(mn[j] / dmin), 0, 63) : 0;
    }
    pack_k4_scales(scales, ls, lm);
    if (qh) memset(qh, 0, 32);
    memset(qs, 0, 128);
    for (int j = 0; j < 8; j++) {
        float s = d * (float)ls[j], m = dmin * (float)lm[j];
        for (int l = 0; l < 32; l++) {
            int q = s > 0 ? clampi(nearest((x[32 * j + l] + m) / s), 0, nmax) : 0;
            int c = j / 2, hi = j & 1; /* sub-block j lives in chunk j/2, nibble j&1 */
            qs[32 * c + l] |= (uint8_t)((q & 0xF) << (4 * hi));
            if (qh) qh[l] |= (uint8_t)((q >> 4) << j);
        }
    }
}

static void q_q6_K(const float *x, kblock_q6_K *b)
{
    float sc[16], max_sc = 0;
    for (int g = 0; g < 16; g++) {
        float amax = 0;
        for (int l = 0; l < 16; l++) amax = fmaxf(amax, fabsf(x[16 * g + l]));
        sc[g] = amax / 31.0f;
        max_sc = fmaxf(max_sc, sc[g]);
    }
    float d = max_sc / 127.0f;
    b->d = kern_f32_to_f16(d);
    d = kern_f16_to_f32(b->d);
    memset(b->ql, 0, sizeof b->ql);
    memset(b->qh, 0, sizeof b->qh);
    for (int g = 0; g < 16; g++) b->scales[g] = (int8_t)(d > 0 ? clampi(nearest(sc[g] / d), 0, 127) : 0);
    for (int i = 0; i < KQK_K; i++) {
        float s = d * (float)b->scales[i / 16];
        int q = (s > 0 ? clampi(nearest(x[i] / s), -32, 31) : 0) + 32;
        /* inverse of deq_q6_K's indexing */
        int h = i / 128, r = i % 128, s4 = r / 32, l = r % 32;
        uint8_t *ql = b->ql + 64 * h + l + (s4 & 1) * 32;
        *ql |= (uint8_t)((q & 0xF) << (s4 >= 2 ? 4 : 0));
        b->qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * s4));
    }
}

void kern_quant_q8_0_portable(const float *x, void *y, int k)
{
    for (int i = 0; i < k / KQK; i++) q_q8_0(x + i * KQK, (kblock_q8_0 *)y + i);
}

void kern_quant_q8_K_portable(const float *x, void *y, int k)
{
    for (int i = 0; i < k / KQK_K; i++, x += KQK_K) {
        kblock_q8_K *b = (kblock_q8_K *)y + i;
        float amax = 0;
        for (int j = 0; j < KQK_K; j++) amax = fmaxf(amax, fabsf(x[j]));
        float id = amax > 0 ? 127.0f / amax : 0;
        b->d = amax / 127.0f;
        for (int g = 0; g < KQK_K / 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) {
                int q = clampi(nearest(x[16 * g + l] * id), -127, 127);
                b->qs[16 * g + l] = (int8_t)q;
                sum += q;
            }
            b->bsums[g] = (int16_t)sum;
        }
    }
}

static void quant_row(int t, const float *x, void *dst, int64_t k)
{
    uint8_t *o = dst;
    switch (t) {
    case KERN_TYPE_F32: memcpy(dst, x, (size_t)k * 4); break;
    case KERN_TYPE_F16: kern_cpu()->f32_to_f16(dst, x, (size_t)k); break;
    case KERN_TYPE_BF16: kern_f32_to_bf16_row(dst, x, (size_t)k); break;
    case KERN_TYPE_Q4_0:
        for (int64_t i = 0; i < k / KQK; i++) q_q4_0(x + i * KQK, (kblock_q4_0 *)o + i);
        break;
    case KERN_TYPE_Q5_0:
        for (int64_t i = 0; i < k / KQK; i++) q_q5_0(x + i * KQK, (kblock_q5_0 *)o + i);
        break;
    case KERN_TYPE_Q4_1:
        for (int64_t i = 0; i < k / KQK; i++) {
            kblock_q4_1 *b = (kblock_q4_1 *)o + i;
            q_affine(x + i * KQK, 15, &b->d, &b->m, NULL, b->qs);
        }
        break;
    case KERN_TYPE_Q5_1:
        for (int64_t i = 0; i < k / KQK; i++) {
            kblock_q5_1 *b = (kblock_q5_1 *)o + i;
            q_affine(x + i * KQK, 31, &b->d, &b->m, b->qh, b->qs);
        }
        break;
    case KERN_TYPE_Q8_0:
        for (int64_t i = 0; i < k / KQK; i++) q_q8_0(x + i * KQK, (kblock_q8_0 *)o + i);
        break;
    case KERN_TYPE_Q4_K:
        for (int64_t i = 0; i < k / KQK_K; i++) {
            kblock_q4_K *b = (kblock_q4_K *)o + i;
            q_k45(x + i * KQK_K, 15, &b->d, &b->dmin, b->scales, NULL, b->qs);
        }
        break;
    case KERN_TYPE_Q5_K:
        for (int64_t i = 0; i < k / KQK_K; i++) {
            kblock_q5_K *b = (kblock_q5_K *)o + i;
            q_k45(x + i * KQK_K, 31, &b->d, &b->dmin, b->scales, b->qh, b->qs);
        }
        break;
    case KERN_TYPE_Q6_K:
        for (int64_t i = 0; i < k / KQK_K; i++) q_q6_K(x + i * KQK_K, (kblock_q6_K *)o + i);
        break;
    default: break;
    }
}

static int check_shape(int t, int64_t n, char *msg, size_t msglen, const char *what)
{
    if (!kern_type_supported(t)) {
        if (msg) snprintf(msg, msglen, "%s: unsupported tensor type id %d", what, t);
        return KERN_EINVAL;
    }
    if (n <= 0 || n % (int64_t)kern_type_block_elems(t)) {
        if (msg)
            snprintf(msg, msglen, "%s: %lld elements is not a positive multiple of %s's block of %zu",
                     what, (long long)n, kern_type_name(t), kern_type_block_elems(t));
        return KERN_EINVAL;
    }
    return KERN_OK;
}

int kern_quantize(int t, void *dst, const float *src, int64_t n_rows, int64_t k, char *msg,
                  size_t msglen)
{
    int rc = check_shape(t, k, msg, msglen, "kern_quantize");
    if (rc) return rc;
    if (!dst || !src || n_rows < 0) {
        if (msg) snprintf(msg, msglen, "kern_quantize: NULL buffer or negative row count");
        return KERN_EINVAL;
    }
    size_t rb = kern_row_bytes(t, k);
    for (int64_t r = 0; r < n_rows; r++) quant_row(t, src + r * k, (uint8_t *)dst + (size_t)r * rb, k);
    return KERN_OK;
}

int kern_dequantize(int t, float *dst, const void *src, int64_t n, char *msg, size_t msglen)
{
    int rc = check_shape(t, n, msg, msglen, "kern_dequantize");
    if (rc) return rc;
    if (!dst || !src) {
        if (msg) snprintf(msg, msglen, "kern_dequantize: NULL buffer");
        return KERN_EINVAL;
    }
    kern_dequant_row(t, src, dst, n);
    return KERN_OK;
}

/* KERN_TYPE_Q4_0_R4 (layout in kernels.h): per group of 4 rows, pieces of
 * 8 blocks. The offset of row r's block b within its group: */
static size_t r4_scale_off(int r, int b) { return (size_t)(b / 8) * KERN_R4_PIECE + 2 * (16 * (b % 8 / 4) + 4 * r + b % 4); }
static size_t r4_qs_off(int r, int b) { return (size_t)(b / 8) * KERN_R4_PIECE + 64 + 64 * (b % 8) + 16 * r; }

void kern_repack_q4_0_r4(void *dst, const void *src, int64_t m, int64_t k)
{
    const int nb = (int)(k / KQK);
    const size_t wb = (size_t)nb * sizeof(kblock_q4_0);
    for (int64_t g = 0; g < m / 4; g++) {
        uint8_t *d = (uint8_t *)dst + (size_t)g * 4 * wb;
        const kblock_q4_0 *rows = (const kblock_q4_0 *)((const uint8_t *)src + (size_t)4 * g * wb);
        for (int b = 0; b < nb; b++) /* dst in order: written once, sequentially */
            for (int r = 0; r < 4; r++) {
                memcpy(d + r4_scale_off(r, b), &rows[(size_t)r * nb + b].d, 2);
                memcpy(d + r4_qs_off(r, b), rows[(size_t)r * nb + b].qs, KQK / 2);
            }
    }
}

void kern_unpack_q4_0_r4(void *dst, const void *src, int64_t m, int64_t k)
{
    const int nb = (int)(k / KQK);
    const size_t wb = (size_t)nb * sizeof(kblock_q4_0);
    for (int64_t g = 0; g < m / 4; g++) {
        const uint8_t *s = (const uint8_t *)src + (size_t)g * 4 * wb;
        for (int r = 0; r < 4; r++) {
            kblock_q4_0 *row = (kblock_q4_0 *)((uint8_t *)dst + (size_t)(4 * g + r) * wb);
            for (int b = 0; b < nb; b++) {
                memcpy(&row[b].d, s + r4_scale_off(r, b), 2);
                memcpy(row[b].qs, s + r4_qs_off(r, b), KQK / 2);
            }
        }
    }
}
