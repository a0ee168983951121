/* test_kernels.c: unit tests of the CPU kernels (Check). Every operation is
 * compared with a double-precision reference on random inputs, on every
 * ISA path this CPU has and with 1 and 3 threads; bad arguments must return
 * an error with a message. Tolerances are stated next to each check. */
#include "kernels.h"
#include "ref.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int all_types[] = {KERN_TYPE_F32,  KERN_TYPE_F16,  KERN_TYPE_BF16, KERN_TYPE_Q4_0,
                                KERN_TYPE_Q5_0, KERN_TYPE_Q8_0, KERN_TYPE_Q4_K, KERN_TYPE_Q5_K,
                                KERN_TYPE_Q6_K, KERN_TYPE_Q4_1, KERN_TYPE_Q5_1};
#define N_TYPES (int)(sizeof all_types / sizeof all_types[0])

static kern_ctx *mk(int threads)
{
    kern_config cfg = {.backend = KERN_BACKEND_CPU, .n_threads = threads};
    kern_ctx *c = NULL;
    char err[256];
    ck_assert_msg(kern_ctx_create(&cfg, &c, err, sizeof err) == KERN_OK, "%s", err);
    return c;
}

/* ISAs to run: every one this CPU supports (portable always). */
static kern_isa isas[3];
static int n_isas(void)
{
    int n = 0;
    for (int i = KERN_ISA_PORTABLE; i <= KERN_ISA_AVX512; i++)
        if (kern_isa_supported((kern_isa)i)) isas[n++] = (kern_isa)i;
    return n;
}
static kern_isa isa_at(int i) { n_isas(); return isas[i]; }

/* Random data with a few outliers, like real weights. */
static float *rand_vec(size_t n, double amp)
{
    float *x = malloc(n * sizeof *x);
    ref_fill(x, n, -amp, amp);
    for (size_t i = 0; i < n; i += 97) x[i] *= 4;
    return x;
}

/* ------------------------------------------------------------- types */
START_TEST(test_types)
{
    const size_t elems[] = {1, 1, 1, 32, 32, 32, 256, 256, 256, 32, 32},
                 bytes[] = {4, 2, 2, 18, 22, 34, 144, 176, 210, 20, 24};
    for (int i = 0; i < N_TYPES; i++) {
        ck_assert(kern_type_supported(all_types[i]));
        ck_assert_uint_eq(kern_type_block_elems(all_types[i]), elems[i]);
        ck_assert_uint_eq(kern_type_block_bytes(all_types[i]), bytes[i]);
        ck_assert_uint_eq(kern_row_bytes(all_types[i], 512), 512 / elems[i] * bytes[i]);
    }
    ck_assert_str_eq(kern_type_name(KERN_TYPE_Q4_K), "q4_K");
    ck_assert_uint_eq(kern_row_bytes(KERN_TYPE_Q5_0, 640), 20 * 22);
    ck_assert(!kern_type_supported(4) && !kern_type_supported(-1) && !kern_type_supported(99));
    ck_assert_str_eq(kern_type_name(5), "unknown");
    ck_assert_uint_eq(kern_row_bytes(KERN_TYPE_Q4_K, 100), 0);
    ck_assert_uint_eq(kern_row_bytes(42, 256), 0);
}
END_TEST

/* ------------------------------------------------------- conversions */
START_TEST(test_fp16)
{
    /* every finite f16 survives f16 -> f32 -> f16 and matches the exact value */
    for (uint32_t h = 0; h < 65536; h++) {
        double r = ref_f16((uint16_t)h);
        float f = kern_f16_to_f32((uint16_t)h);
        if (isnan(r)) { ck_assert(isnan(f)); ck_assert(isnan(kern_f16_to_f32(kern_f32_to_f16(f)))); continue; }
        ck_assert_msg((double)f == r, "f16 %04x -> %g, expected %g", h, f, r);
        ck_assert_uint_eq(kern_f32_to_f16(f), h);
    }
    /* f32 -> f16 rounds to nearest: no other f16 is closer */
    ref_seed(1);
    for (int i = 0; i < 20000; i++) {
        float f = (float)(ref_uniform(-1, 1) * pow(2, ref_uniform(-26, 17)));
        uint16_t h = kern_f32_to_f16(f);
        double e = fabs(ref_f16(h) - f);
        if (fabs(f) >= 65520) { ck_assert(isinf(ref_f16(h))); continue; }
        ck_assert(e <= fabs(ref_f16((uint16_t)(h + 1)) - f));
        if (h & 0x7fff) ck_assert(e <= fabs(ref_f16((uint16_t)(h - 1)) - f));
    }
    ck_assert_uint_eq(kern_f32_to_f16(INFINITY), 0x7c00);
    ck_assert_uint_eq(kern_f32_to_f16(1e6f), 0x7c00);
    ck_assert(isnan(kern_f16_to_f32(kern_f32_to_f16(NAN))));
    /* bf16: exact for values with 8 significant bits; round to nearest even */
    ck_assert(kern_bf16_to_f32(kern_f32_to_bf16(1.5f)) == 1.5f);
    ck_assert_uint_eq(kern_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80); /* tie -> even */
    ck_assert_uint_eq(kern_f32_to_bf16(1.0f + 3.0f / 256), 0x3f82); /* tie -> even (up) */
    ck_assert(isnan(kern_bf16_to_f32(kern_f32_to_bf16(NAN))));
    /* row versions agree with the scalar ones on every ISA */
    float x[301], y[301];
    uint16_t h[301];
    ref_fill(x, 301, -100, 100);
    for (int a = 0; a < n_isas(); a++) {
        ck_assert_int_eq(kern_set_isa(isa_at(a)), KERN_OK);
        kern_f32_to_f16_row(h, x, 301);
        kern_f16_to_f32_row(y, h, 301);
        for (int i = 0; i < 301; i++) {
            ck_assert_uint_eq(h[i], kern_f32_to_f16(x[i]));
            ck_assert(y[i] == kern_f16_to_f32(h[i]));
        }
        kern_f32_to_bf16_row(h, x, 301);
        kern_bf16_to_f32_row(y, h, 301);
        for (int i = 0; i < 301; i++) ck_assert(y[i] == kern_bf16_to_f32(kern_f32_to_bf16(x[i])));
    }
    kern_set_isa(kern_isa_best());
}
END_TEST

/* ------------------------------------------------ quantization formats */
START_TEST(test_dequant_matches_layout)
{
    /* random bytes (with sane f16 scales) decoded by the kernels and by the
     * independent per-element reference: exact up to float rounding */
    ref_seed(2);
    for (int ti = 0; ti < N_TYPES; ti++) {
        int t = all_types[ti];
        int64_t n = 512;
        size_t nb = kern_row_bytes(t, n);
        uint8_t *raw = malloc(nb);
        for (size_t i = 0; i < nb; i++) raw[i] = (uint8_t)(ref_uniform(0, 256));
        /* put small finite f16/f32 values where the format keeps floats */
        size_t bb = kern_type_block_bytes(t);
        for (size_t blk = 0; blk < nb / bb; blk++) {
            uint8_t *p = raw + blk * bb;
            uint16_t d = kern_f32_to_f16((float)ref_uniform(-0.01, 0.01));
            if (t == KERN_TYPE_Q4_0 || t == KERN_TYPE_Q5_0 || t == KERN_TYPE_Q8_0) memcpy(p, &d, 2);
            if (t == KERN_TYPE_Q4_K || t == KERN_TYPE_Q5_K || t == KERN_TYPE_Q4_1 || t == KERN_TYPE_Q5_1) {
                memcpy(p, &d, 2);
                memcpy(p + 2, &d, 2);
            }
            if (t == KERN_TYPE_Q6_K) memcpy(p + 208, &d, 2);
            if (t == KERN_TYPE_F32) { float f = (float)ref_uniform(-5, 5); memcpy(p, &f, 4); }
            if (t == KERN_TYPE_F16 || t == KERN_TYPE_BF16) {
                uint16_t v = t == KERN_TYPE_F16 ? kern_f32_to_f16((float)ref_uniform(-5, 5))
                                                : kern_f32_to_bf16((float)ref_uniform(-5, 5));
                memcpy(p, &v, 2);
            }
        }
        float *got = malloc(n * sizeof *got);
        double *want = malloc(n * sizeof *want);
        ref_dequant(t, raw, want, n);
        for (int a = 0; a < n_isas(); a++) {
            kern_set_isa(isa_at(a));
            ck_assert_int_eq(kern_dequantize(t, got, raw, n, NULL, 0), KERN_OK);
            for (int64_t i = 0; i < n; i++)
                ck_assert_msg(fabs(got[i] - want[i]) <= 1e-6 * (fabs(want[i]) + 1e-3),
                              "%s element %lld: %g vs %g", kern_type_name(t), (long long)i, got[i], want[i]);
        }
        free(raw); free(got); free(want);
    }
    kern_set_isa(kern_isa_best());
}
END_TEST

START_TEST(test_quant_roundtrip)
{
    /* relative RMS error of quantize -> dequantize on uniform data */
    const double tol[] = {0, 1e-3, 5e-3, 0.10, 0.05, 0.01, 0.08, 0.04, 0.03, 0.10, 0.05};
    ref_seed(3);
    int64_t rows = 3, k = 768;
    float *x = rand_vec((size_t)(rows * k), 1.0), *y = malloc(rows * k * sizeof *y);
    for (int ti = 0; ti < N_TYPES; ti++) {
        int t = all_types[ti];
        void *q = malloc(rows * kern_row_bytes(t, k));
        char msg[200];
        ck_assert_int_eq(kern_quantize(t, q, x, rows, k, msg, sizeof msg), KERN_OK);
        ck_assert_int_eq(kern_dequantize(t, y, q, rows * k, msg, sizeof msg), KERN_OK);
        double se = 0, sx = 0;
        for (int64_t i = 0; i < rows * k; i++) { se += pow(y[i] - x[i], 2); sx += pow(x[i], 2); }
        double rel = sqrt(se / sx);
        ck_assert_msg(rel <= tol[ti], "%s round trip relative RMS error %g > %g", kern_type_name(t), rel, tol[ti]);
        free(q);
    }
    /* all-zero blocks stay zero (no division by zero) */
    float z[256] = {0}, back[256];
    uint8_t buf[256 * 4];
    for (int ti = 0; ti < N_TYPES; ti++) {
        ck_assert_int_eq(kern_quantize(all_types[ti], buf, z, 1, 256, NULL, 0), KERN_OK);
        ck_assert_int_eq(kern_dequantize(all_types[ti], back, buf, 256, NULL, 0), KERN_OK);
        for (int i = 0; i < 256; i++) ck_assert(back[i] == 0);
    }
    free(x); free(y);
}
END_TEST

START_TEST(test_quant_bad_args)
{
    char msg[200] = "";
    float x[300] = {0};
    uint8_t buf[2000];
    ck_assert_int_eq(kern_quantize(KERN_TYPE_Q4_K, buf, x, 1, 100, msg, sizeof msg), KERN_EINVAL);
    ck_assert(strstr(msg, "q4_K") != NULL);
    ck_assert_int_eq(kern_quantize(4, buf, x, 1, 32, msg, sizeof msg), KERN_EINVAL);
    ck_assert(strstr(msg, "unsupported") != NULL);
    ck_assert_int_eq(kern_dequantize(KERN_TYPE_Q8_0, x, buf, 33, msg, sizeof msg), KERN_EINVAL);
    ck_assert_int_eq(kern_dequantize(KERN_TYPE_Q8_0, NULL, buf, 32, NULL, 0), KERN_EINVAL);
}
END_TEST

/* ------------------------------------------------------------ matmul */
/* Error allowed relative to sum |w*x|: float weights only see rounding;
 * quantized ones also see the Q8 rounding of the activations. */
static double mm_tol(int t) { return t == KERN_TYPE_F32 ? 1e-5 : t == KERN_TYPE_F16 || t == KERN_TYPE_BF16 ? 1e-4 : 0.012; }

static void check_matmul(kern_ctx *c, int t, int n, int m, int k)
{
    float *x = rand_vec((size_t)n * k, 1.0), *wf = rand_vec((size_t)m * k, 0.5);
    size_t rb = kern_row_bytes(t, k);
    uint8_t *w = malloc(rb * m);
    ck_assert_int_eq(kern_quantize(t, w, wf, m, k, NULL, 0), KERN_OK);
    double *wd = malloc((size_t)m * k * sizeof *wd);
    ref_dequant(t, w, wd, (int64_t)m * k);
    float *y = malloc((size_t)n * m * sizeof *y);
    for (int i = 0; i < n * m; i++) y[i] = NAN; /* poisoned: every output must be written */
    ck_assert_msg(kern_matmul(c, y, x, w, t, n, m, k) == KERN_OK, "%s", kern_ctx_error(c));
    for (int i = 0; i < n; i++)
        for (int r = 0; r < m; r++) {
            double s = 0, a = 0;
            for (int j = 0; j < k; j++) {
                s += wd[(size_t)r * k + j] * x[(size_t)i * k + j];
                a += fabs(wd[(size_t)r * k + j] * x[(size_t)i * k + j]);
            }
            double got = y[(size_t)i * m + r];
            ck_assert_msg(fabs(got - s) <= mm_tol(t) * a + 1e-6,
                          "%s isa=%s threads=%d n=%d m=%d k=%d y[%d][%d]=%g want %g (sum|wx| %g)", kern_type_name(t),
                          kern_isa_name(kern_get_isa()), kern_ctx_threads(c), n, m, k, i, r, got, s, a);
        }
    free(x); free(wf); free(w); free(wd); free(y);
}

START_TEST(test_matmul_all_types)
{
    ref_seed(4);
    kern_ctx *c1 = mk(1), *c3 = mk(3);
    for (int a = 0; a < n_isas(); a++) {
        kern_set_isa(isa_at(a));
        for (int ti = 0; ti < N_TYPES; ti++) {
            int t = all_types[ti];
            check_matmul(c1, t, 1, 37, 512);
            check_matmul(c3, t, 1, 37, 512);
            check_matmul(c3, t, 11, 21, 256);
            check_matmul(c1, t, 3, 5, 768);
            /* long rows: decode takes the one-row path (3680: 115 blocks, a partial group of 8) */
            check_matmul(c3, t, 1, 9, kern_type_block_elems(t) == 256 ? 2304 : 3680);
        }
    }
    kern_set_isa(kern_isa_best());
    kern_ctx_destroy(c1);
    kern_ctx_destroy(c3);
}
END_TEST

START_TEST(test_matmul_tiled)
{
    /* several activation rows take the tiled kernels (16 weight rows at a
     * time, AVX-512) and the 4-row ones for what is left: m = 53 is 3 tiles,
     * a group of 4 and 1 row; n = 2 (below every type's threshold for
     * tiles), 6 (the K-quants' threshold) and 9 cover full and partial
     * groups of 4 activation rows; k = 1024 is several (super-)blocks */
    ref_seed(7);
    kern_ctx *c1 = mk(1), *c2 = mk(2);
    for (int a = 0; a < n_isas(); a++) {
        kern_set_isa(isa_at(a));
        for (int ti = 0; ti < N_TYPES; ti++) {
            int t = all_types[ti];
            check_matmul(c2, t, 2, 53, 1024);
            check_matmul(c1, t, 6, 53, 1024);
            check_matmul(c2, t, 9, 32, 512);
        }
    }
    kern_set_isa(kern_isa_best());
    kern_ctx_destroy(c1);
    kern_ctx_destroy(c2);
}
END_TEST

START_TEST(test_matmul_rows_agree)
{
    /* A row of a batched matmul equals the same row computed alone (what
     * batched decoding promises): bitwise for the quantized types on rows
     * under 2 KiB (one-row, 4-row and tiled kernels share their
     * arithmetic), to float rounding of the accumulation order for float
     * weights. */
    ref_seed(8);
    kern_ctx *c = mk(2);
    enum { N = 6, M = 37, K = 1024 };
    float *x = rand_vec((size_t)N * K, 1), *wf = rand_vec((size_t)M * K, 1), yb[N * M], y1[M];
    for (int a = 0; a < n_isas(); a++) {
        kern_set_isa(isa_at(a));
        for (int ti = 0; ti < N_TYPES; ti++) {
            int t = all_types[ti];
            int exact = t != KERN_TYPE_F32 && t != KERN_TYPE_F16 && t != KERN_TYPE_BF16;
            uint8_t *w = malloc(kern_row_bytes(t, K) * M);
            kern_quantize(t, w, wf, M, K, NULL, 0);
            ck_assert_int_eq(kern_matmul(c, yb, x, w, t, N, M, K), KERN_OK);
            for (int i = 0; i < N; i++) {
                ck_assert_int_eq(kern_matmul(c, y1, x + (size_t)i * K, w, t, 1, M, K), KERN_OK);
                for (int r = 0; r < M; r++) {
                    float b = yb[i * M + r];
                    if (exact)
                        ck_assert_msg(memcmp(&b, &y1[r], sizeof b) == 0, "%s %s row %d/%d: batched %.9g alone %.9g",
                                      kern_type_name(t), kern_isa_name(isa_at(a)), i, r, b, y1[r]);
                    else
                        ck_assert_msg(fabsf(b - y1[r]) <= 1e-4f * (fabsf(y1[r]) + 1), "%s %s row %d/%d: batched %g alone %g",
                                      kern_type_name(t), kern_isa_name(isa_at(a)), i, r, b, y1[r]);
                }
            }
            free(w);
        }
    }
    kern_set_isa(kern_isa_best());
    kern_ctx_destroy(c);
    free(x); free(wf);
}
END_TEST

START_TEST(test_matmul_isas_agree)
{
    /* every ISA path quantizes activations identically, so results agree
     * with the portable path to float rounding of the accumulation order */
    ref_seed(5);
    kern_ctx *c = mk(2);
    int n = 4, m = 9, k = 1024;
    float *x = rand_vec((size_t)n * k, 1), *wf = rand_vec((size_t)m * k, 1), y0[36], y1[36];
    for (int ti = 0; ti < N_TYPES; ti++) {
        int t = all_types[ti];
        uint8_t *w = malloc(kern_row_bytes(t, k) * m);
        kern_quantize(t, w, wf, m, k, NULL, 0);
        kern_set_isa(KERN_ISA_PORTABLE);
        ck_assert_int_eq(kern_matmul(c, y0, x, w, t, n, m, k), KERN_OK);
        for (int a = 1; a < n_isas(); a++) {
            kern_set_isa(isa_at(a));
            ck_assert_int_eq(kern_matmul(c, y1, x, w, t, n, m, k), KERN_OK);
            for (int i = 0; i < n * m; i++)
                ck_assert_msg(fabsf(y0[i] - y1[i]) <= 1e-3f * (fabsf(y0[i]) + 1), "%s: portable %g %s %g",
                              kern_type_name(t), y0[i], kern_isa_name(isa_at(a)), y1[i]);
        }
        free(w);
    }
    kern_set_isa(kern_isa_best());
    kern_ctx_destroy(c);
    free(x); free(wf);
}
END_TEST

START_TEST(test_matmul_bad_args)
{
    kern_ctx *c = mk(2);
    float x[512] = {0}, y[16];
    uint8_t w[4096] = {0};
    ck_assert_int_eq(kern_matmul(c, y, x, w, KERN_TYPE_Q4_K, 1, 2, 100), KERN_EINVAL);
    ck_assert(strstr(kern_ctx_error(c), "multiple") != NULL);
    ck_assert_int_eq(kern_matmul(c, y, x, w, KERN_TYPE_Q8_0, 1, 2, 48), KERN_EINVAL);
    ck_assert_int_eq(kern_matmul(c, y, x, w, 4, 1, 2, 64), KERN_EINVAL);
    ck_assert(strstr(kern_ctx_error(c), "unsupported") != NULL);
    ck_assert_int_eq(kern_matmul(c, y, x, w, 31, 1, 2, 64), KERN_EINVAL);
    ck_assert_int_eq(kern_matmul(c, y, x, w, -5, 1, 2, 64), KERN_EINVAL);
    ck_assert_int_eq(kern_matmul(c, y, NULL, w, KERN_TYPE_F32, 1, 2, 64), KERN_EINVAL);
    ck_assert_int_eq(kern_matmul(c, y, x, w, KERN_TYPE_F32, 0, 2, 64), KERN_EINVAL);
    ck_assert_int_eq(kern_matmul(c, y, x, w, KERN_TYPE_F32, 1, -2, 64), KERN_EINVAL);
    ck_assert_int_eq(kern_matmul(NULL, y, x, w, KERN_TYPE_F32, 1, 2, 64), KERN_EINVAL);
    ck_assert_int_eq(kern_matmul(c, y, x, w, KERN_TYPE_F32, 1, 2, 64), KERN_OK);
    ck_assert_str_eq(kern_ctx_error(c), "");
    kern_ctx_destroy(c);
}
END_TEST

START_TEST(test_matmul_multi)
{
    /* several weights of different types sharing x in one call give what
     * separate calls give (same activation quantization, same kernels) */
    ref_seed(11);
    kern_ctx *c = mk(3);
    int n = 3, k = 512;
    const int types[4] = {KERN_TYPE_Q5_0, KERN_TYPE_Q8_0, KERN_TYPE_Q4_K, KERN_TYPE_F16};
    const int ms[4] = {37, 8, 21, 5};
    float *x = rand_vec((size_t)n * k, 1);
    kern_matmul_op ops[4];
    float *want[4];
    for (int a = 0; a < n_isas(); a++) {
        kern_set_isa(isa_at(a));
        for (int o = 0; o < 4; o++) {
            float *wf = rand_vec((size_t)ms[o] * k, 1);
            void *w = malloc(kern_row_bytes(types[o], k) * ms[o]);
            kern_quantize(types[o], w, wf, ms[o], k, NULL, 0);
            ops[o] = (kern_matmul_op){malloc(sizeof(float) * n * ms[o]), w, types[o], ms[o]};
            want[o] = malloc(sizeof(float) * n * ms[o]);
            ck_assert_int_eq(kern_matmul(c, want[o], x, w, types[o], n, ms[o], k), KERN_OK);
            free(wf);
        }
        ck_assert_msg(kern_matmul_multi(c, x, n, k, ops, 4) == KERN_OK, "%s", kern_ctx_error(c));
        for (int o = 0; o < 4; o++)
            for (int i = 0; i < n * ms[o]; i++)
                ck_assert_msg(fabsf(ops[o].y[i] - want[o][i]) <= 1e-5f * (fabsf(want[o][i]) + 1),
                              "%s op %d [%d]: %g vs %g", kern_isa_name(kern_get_isa()), o, i, ops[o].y[i], want[o][i]);
        ck_assert_int_eq(kern_matmul_multi(c, x, n, k, ops, 0), KERN_EINVAL);
        ck_assert_int_eq(kern_matmul_multi(c, x, n, k, ops, KERN_MATMUL_MAX_OPS + 1), KERN_EINVAL);
        ops[2].wt = 4;
        ck_assert_int_eq(kern_matmul_multi(c, x, n, k, ops, 4), KERN_EINVAL);
        ck_assert(strstr(kern_ctx_error(c), "unsupported") != NULL);
        ops[2].wt = KERN_TYPE_Q4_K;
        ck_assert_int_eq(kern_matmul_multi(c, x, n, 100, ops, 4), KERN_EINVAL); /* 100 % 32 */
        for (int o = 0; o < 4; o++) { free(ops[o].y); free((void *)ops[o].w); free(want[o]); }
    }
    kern_set_isa(kern_isa_best());
    kern_ctx_destroy(c);
    free(x);
}
END_TEST

/* ------------------------------------------------ repacked weights */
START_TEST(test_matmul_repacked)
{
    /* Q4_0 repacked at load (KERN_TYPE_Q4_0_R4, where the ISA has its
     * decode kernel): the layout kernels.h documents, and every ISA and
     * row count gives bitwise what the Q4_0 weights give (decode kernel on
     * whole 4-row groups, rows unpacked to Q4_0 elsewhere), also in a multi
     * call behind a 5-row weight, where its groups straddle the threads'
     * row ranges. */
    ref_seed(12);
    kern_ctx *c1 = mk(1), *c3 = mk(3);
    enum { M = 36, K = 512, NMAX = 17 };
    const int ns[] = {1, 2, 3, 5, NMAX};
    int best_rt = kern_repack_type(c1, KERN_TYPE_Q4_0, M, K);
    const char *env = getenv("COMMONS_KERN_REPACK");
    if (kern_get_isa() == KERN_ISA_AVX512 && !(env && strcmp(env, "0") == 0))
        ck_assert_int_eq(best_rt, KERN_TYPE_Q4_0_R4);
    float *x = rand_vec((size_t)NMAX * K, 1), *wf = rand_vec((size_t)M * K, 1), *w8f = rand_vec((size_t)5 * K, 1);
    size_t bytes = kern_row_bytes(KERN_TYPE_Q4_0, K) * M;
    uint8_t *w = malloc(bytes), *w8 = malloc(kern_row_bytes(KERN_TYPE_Q8_0, K) * 5), *rp = aligned_alloc(64, bytes);
    kern_quantize(KERN_TYPE_Q4_0, w, wf, M, K, NULL, 0);
    kern_quantize(KERN_TYPE_Q8_0, w8, w8f, 5, K, NULL, 0);
    /* refused where it does not apply, with a message */
    ck_assert_int_eq(kern_repack_type(c1, KERN_TYPE_Q8_0, M, K), KERN_TYPE_Q8_0);
    ck_assert_int_eq(kern_repack_type(c1, KERN_TYPE_Q4_0, 6, K), KERN_TYPE_Q4_0);
    ck_assert_int_eq(kern_repack_type(c1, KERN_TYPE_Q4_0, M, 96), KERN_TYPE_Q4_0);
    ck_assert_int_eq(kern_repack(c1, rp, w, KERN_TYPE_Q8_0, M, K), KERN_EINVAL);
    ck_assert(strstr(kern_ctx_error(c1), "nothing to repack") != NULL);
    ck_assert_int_eq(kern_repack(c1, rp + 1, w, KERN_TYPE_Q4_0, M, K), KERN_EINVAL);
    if (best_rt != KERN_TYPE_Q4_0_R4) {
        ck_assert_int_eq(kern_repack(c1, rp, w, KERN_TYPE_Q4_0, M, K), KERN_EINVAL);
        goto done;
    }
    ck_assert_int_eq(kern_repack(c1, rp, w, KERN_TYPE_Q4_0, M, K), KERN_OK);
    /* layout: group 1 (rows 4..7), piece 1 (blocks 8..15) */
    for (int r = 0; r < 4; r++)
        for (int b = 8; b < 16; b++) {
            const uint8_t *row = w + (size_t)(4 + r) * kern_row_bytes(KERN_TYPE_Q4_0, K) + (size_t)b * 18;
            const uint8_t *piece = rp + 4 * kern_row_bytes(KERN_TYPE_Q4_0, K) + 576;
            int h = (b % 8) / 4, j = b % 4;
            ck_assert(memcmp(piece + 2 * (16 * h + 4 * r + j), row, 2) == 0);
            ck_assert(memcmp(piece + 64 + 64 * (b % 8) + 16 * r, row + 2, 16) == 0);
        }
    float want[NMAX * M], got[NMAX * M];
    ck_assert_int_eq(kern_matmul(c1, want, x, w, KERN_TYPE_Q4_0_R4, 1, 6, K), KERN_EINVAL); /* m % 4 */
    for (int a = 0; a < n_isas(); a++) {
        kern_set_isa(isa_at(a));
        for (int ni = 0; ni < (int)(sizeof ns / sizeof ns[0]); ni++)
            for (int ci = 0; ci < 2; ci++) {
                kern_ctx *c = ci ? c3 : c1;
                int n = ns[ni];
                ck_assert_int_eq(kern_matmul(c, want, x, w, KERN_TYPE_Q4_0, n, M, K), KERN_OK);
                ck_assert_msg(kern_matmul(c, got, x, rp, KERN_TYPE_Q4_0_R4, n, M, K) == KERN_OK, "%s",
                              kern_ctx_error(c));
                ck_assert_msg(memcmp(want, got, sizeof(float) * n * M) == 0, "%s n=%d: repacked differs",
                              kern_isa_name(isa_at(a)), n);
                /* the same multi call on the Q4_0 weights: row ranges
                 * start inside groups of 4 here */
                float y8[NMAX * 5], y8r[NMAX * 5];
                kern_matmul_op ops[2] = {{y8, w8, KERN_TYPE_Q8_0, 5}, {want, w, KERN_TYPE_Q4_0, M}};
                ck_assert_int_eq(kern_matmul_multi(c, x, n, K, ops, 2), KERN_OK);
                ops[0].y = y8r;
                ops[1] = (kern_matmul_op){got, rp, KERN_TYPE_Q4_0_R4, M};
                memset(got, 0, sizeof got);
                ck_assert_int_eq(kern_matmul_multi(c, x, n, K, ops, 2), KERN_OK);
                ck_assert_msg(memcmp(want, got, sizeof(float) * n * M) == 0 &&
                              memcmp(y8, y8r, sizeof(float) * n * 5) == 0,
                              "%s n=%d threads %d: multi with repacked differs", kern_isa_name(isa_at(a)), n,
                              ci ? 3 : 1);
            }
    }
    kern_set_isa(kern_isa_best());
done:
    kern_ctx_destroy(c1);
    kern_ctx_destroy(c3);
    free(x); free(wf); free(w8f); free(w); free(w8); free(rp);
}
END_TEST

/* ---------------------------------------------------- embedding rows */
START_TEST(test_get_rows)
{
    ref_seed(6);
    kern_ctx *c = mk(3);
    int rows = 10, dim = 512;
    float *wf = rand_vec((size_t)rows * dim, 1), out[3 * 512];
    double want[512];
    int32_t ids[3] = {7, 0, 9};
    for (int ti = 0; ti < N_TYPES; ti++) {
        int t = all_types[ti];
        size_t rb = kern_row_bytes(t, dim);
        uint8_t *tab = malloc(rb * rows);
        kern_quantize(t, tab, wf, rows, dim, NULL, 0);
        ck_assert_int_eq(kern_get_rows(c, out, tab, t, rows, dim, ids, 3), KERN_OK);
        for (int i = 0; i < 3; i++) {
            ref_dequant(t, tab + rb * ids[i], want, dim);
            for (int j = 0; j < dim; j++) ck_assert(fabs(out[i * dim + j] - want[j]) <= 1e-6 * (fabs(want[j]) + 1e-3));
        }
        int32_t bad[2] = {1, 10};
        ck_assert_int_eq(kern_get_rows(c, out, tab, t, rows, dim, bad, 2), KERN_EINVAL);
        ck_assert(strstr(kern_ctx_error(c), "outside") != NULL);
        free(tab);
    }
    ck_assert_int_eq(kern_get_rows(c, out, wf, KERN_TYPE_Q6_K, rows, 100, ids, 1), KERN_EINVAL);
    kern_ctx_destroy(c);
    free(wf);
}
END_TEST

/* ---------------------------------------------------- norms and rope */
START_TEST(test_rmsnorm)
{
    ref_seed(7);
    kern_ctx *c = mk(3);
    int n = 5, dim = 640;
    float *x = rand_vec((size_t)n * dim, 3), *w = rand_vec(dim, 2), *y = malloc(n * dim * sizeof *y);
    for (int withw = 0; withw < 2; withw++) {
        ck_assert_int_eq(kern_rmsnorm(c, y, x, withw ? w : NULL, n, dim, 1e-6f), KERN_OK);
        for (int i = 0; i < n; i++) {
            double ss = 0;
            for (int j = 0; j < dim; j++) ss += (double)x[i * dim + j] * x[i * dim + j];
            double s = 1 / sqrt(ss / dim + 1e-6);
            for (int j = 0; j < dim; j++) {
                double want = x[i * dim + j] * s * (withw ? w[j] : 1);
                ck_assert(fabs(y[i * dim + j] - want) <= 1e-5 * (fabs(want) + 1e-3));
            }
        }
    }
    memcpy(y, x, n * dim * sizeof *y); /* in place */
    ck_assert_int_eq(kern_rmsnorm(c, y, y, w, n, dim, 1e-6f), KERN_OK);
    ck_assert_int_eq(kern_rmsnorm(c, y, x, w, n, 0, 1e-6f), KERN_EINVAL);
    ck_assert_int_eq(kern_rmsnorm(c, y, x, w, n, dim, -1), KERN_EINVAL);
    kern_ctx_destroy(c);
    free(x); free(w); free(y);
}
END_TEST

static void check_rope(kern_ctx *c, kern_rope_mode mode, int head_dim, int n_rot, float scale, int factors)
{
    int n_tok = 3, n_head = 4;
    int32_t pos[3] = {0, 17, 4000};
    size_t n = (size_t)n_tok * n_head * head_dim;
    float *x = rand_vec(n, 1), *y = malloc(n * sizeof *y), ff[600];
    for (int i = 0; i < n_rot / 2; i++) ff[i] = (float)(1 + i % 5);
    memcpy(y, x, n * sizeof *y);
    kern_rope_params p = {mode, n_rot, 10000.0f, scale, factors ? ff : NULL};
    ck_assert_int_eq(kern_rope(c, y, n_tok, n_head, head_dim, pos, &p), KERN_OK);
    for (int t = 0; t < n_tok; t++)
        for (int h = 0; h < n_head; h++) {
            const float *a = x + ((size_t)t * n_head + h) * head_dim;
            const float *b = y + ((size_t)t * n_head + h) * head_dim;
            for (int d = n_rot; d < head_dim; d++) ck_assert(a[d] == b[d]); /* unrotated tail */
            for (int i = 0; i < n_rot / 2; i++) {
                double th = pos[t] * (double)scale * pow(10000.0, -2.0 * i / n_rot) / (factors ? ff[i] : 1);
                int i0 = mode == KERN_ROPE_NEOX ? i : 2 * i, i1 = mode == KERN_ROPE_NEOX ? i + n_rot / 2 : 2 * i + 1;
                double r0 = a[i0] * cos(th) - a[i1] * sin(th), r1 = a[i0] * sin(th) + a[i1] * cos(th);
                ck_assert_msg(fabs(b[i0] - r0) < 2e-5 && fabs(b[i1] - r1) < 2e-5, "rope mode %d pos %d pair %d",
                              mode, pos[t], i);
            }
        }
    free(x); free(y);
}

START_TEST(test_rope)
{
    ref_seed(8);
    kern_ctx *c = mk(2);
    check_rope(c, KERN_ROPE_NORMAL, 64, 64, 1.0f, 0);
    check_rope(c, KERN_ROPE_NEOX, 64, 64, 1.0f, 0);
    check_rope(c, KERN_ROPE_NORMAL, 128, 128, 0.25f, 1);
    check_rope(c, KERN_ROPE_NEOX, 80, 32, 1.0f, 1); /* partial rotation */
    check_rope(c, KERN_ROPE_NORMAL, 1100, 1100, 1.0f, 1); /* more pairs than one angle chunk */
    float x[64];
    int32_t pos = 0;
    kern_rope_params bad = {KERN_ROPE_NORMAL, 63, 10000, 1, NULL};
    ck_assert_int_eq(kern_rope(c, x, 1, 1, 64, &pos, &bad), KERN_EINVAL);
    bad.n_rot = 128;
    ck_assert_int_eq(kern_rope(c, x, 1, 1, 64, &pos, &bad), KERN_EINVAL);
    bad.n_rot = 64;
    bad.mode = 1;
    ck_assert_int_eq(kern_rope(c, x, 1, 1, 64, &pos, &bad), KERN_EINVAL);
    kern_ctx_destroy(c);
}
END_TEST

/* ------------------------------------- softmax, activations, elementwise */
START_TEST(test_softmax_act)
{
    ref_seed(9);
    kern_ctx *c = mk(3);
    size_t n = 70000; /* element-wise ops split over the threads */
    float *a = rand_vec(n, 8), *b = rand_vec(n, 3), *y = malloc(n * sizeof *y);
    /* softmax: 3 rows of 10000, with a large offset that would overflow exp */
    memcpy(y, a, n * sizeof *y);
    y[5] = 1000;
    ck_assert_int_eq(kern_softmax(c, y, 3, 10000), KERN_OK);
    for (int r = 0; r < 3; r++) {
        double mx = -1e300, s = 0;
        const float *x = a + r * 10000;
        for (int i = 0; i < 10000; i++) mx = fmax(mx, r == 0 && i == 5 ? 1000 : x[i]);
        for (int i = 0; i < 10000; i++) s += exp((r == 0 && i == 5 ? 1000 : x[i]) - mx);
        for (int i = 0; i < 10000; i++) {
            double want = exp((r == 0 && i == 5 ? 1000 : x[i]) - mx) / s;
            ck_assert(fabs(y[r * 10000 + i] - want) <= 1e-5 * want + 1e-12);
        }
    }
    for (int op = 0; op < 7; op++) {
        int rc = op == 0 ? kern_act_apply(c, y, a, n, KERN_ACT_SILU)
               : op == 1 ? kern_act_apply(c, y, a, n, KERN_ACT_GELU)
               : op == 2 ? kern_gated(c, y, a, b, n, KERN_ACT_SILU)
               : op == 3 ? kern_gated(c, y, a, b, n, KERN_ACT_GELU)
               : op == 4 ? kern_add(c, y, a, b, n)
               : op == 5 ? kern_mul(c, y, a, b, n)
                         : kern_scale(c, y, a, 0.37f, n);
        ck_assert_int_eq(rc, KERN_OK);
        for (size_t i = 0; i < n; i++) {
            double x = a[i], u = b[i];
            double silu = x / (1 + exp(-x)), gelu = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
            double want = op == 0 ? silu : op == 1 ? gelu : op == 2 ? silu * u : op == 3 ? gelu * u
                        : op == 4 ? x + u : op == 5 ? x * u : x * 0.37f;
            ck_assert_msg(fabs(y[i] - want) <= 1e-5 * (fabs(want) + 1e-2), "op %d x=%g: %g want %g", op, x, y[i], want);
        }
    }
    ck_assert_int_eq(kern_act_apply(c, y, a, n, (kern_act)7), KERN_EINVAL);
    ck_assert_int_eq(kern_add(c, y, NULL, b, n), KERN_EINVAL);
    ck_assert_int_eq(kern_softmax(c, y, 0, 5), KERN_EINVAL);
    kern_ctx_destroy(c);
    free(a); free(b); free(y);
}
END_TEST

/* --------------------------------------------------------- attention */
static void check_attention(kern_ctx *c, int kv_type, int n_head, int n_head_kv, int hd, int n_q, int q_pos0,
                            int window)
{
    int cap = q_pos0 + n_q + 3, n_kv = q_pos0 + n_q;
    kern_kv_layout l = {kv_type, n_head_kv, hd, cap};
    void *kc = kern_alloc(c, kern_kv_bytes(&l)), *vc = kern_alloc(c, kern_kv_bytes(&l));
    float *k = rand_vec((size_t)n_kv * n_head_kv * hd, 1), *v = rand_vec((size_t)n_kv * n_head_kv * hd, 1);
    float *q = rand_vec((size_t)n_q * n_head * hd, 1), *out = malloc((size_t)n_q * n_head * hd * sizeof *out);
    /* store in two pieces, as prompt then decode would */
    ck_assert_int_eq(kern_kv_store(c, kc, &l, 0, n_kv - 1, k), KERN_OK);
    ck_assert_int_eq(kern_kv_store(c, kc, &l, n_kv - 1, 1, k + (size_t)(n_kv - 1) * n_head_kv * hd), KERN_OK);
    ck_assert_int_eq(kern_kv_store(c, vc, &l, 0, n_kv, v), KERN_OK);
    kern_attn_params p = {n_q, n_head, q_pos0, n_kv, window, 1.0f / sqrtf((float)hd)};
    ck_assert_msg(kern_attention(c, out, q, kc, vc, &l, &p) == KERN_OK, "%s", kern_ctx_error(c));
    double rnd = kv_type == KERN_TYPE_F16 ? 2e-3 : 1e-5; /* f16 cache rounds K and V */
    double *s = malloc((size_t)n_kv * sizeof *s);
    for (int t = 0; t < n_q; t++)
        for (int h = 0; h < n_head; h++) {
            int kvh = h / (n_head / n_head_kv), pos = q_pos0 + t;
            double mx = -1e300, sum = 0;
            for (int j = 0; j < n_kv; j++) {
                int visible = j <= pos && (window == 0 || pos - j < window);
                s[j] = -1e300;
                if (!visible) continue;
                double d = 0;
                for (int e = 0; e < hd; e++)
                    d += (double)q[((size_t)t * n_head + h) * hd + e] * k[((size_t)j * n_head_kv + kvh) * hd + e];
                s[j] = d / sqrt(hd);
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < n_kv; j++) sum += s[j] > -1e299 ? exp(s[j] - mx) : 0;
            for (int e = 0; e < hd; e++) {
                double o = 0;
                for (int j = 0; j < n_kv; j++)
                    if (s[j] > -1e299) o += exp(s[j] - mx) / sum * v[((size_t)j * n_head_kv + kvh) * hd + e];
                double got = out[((size_t)t * n_head + h) * hd + e];
                ck_assert_msg(fabs(got - o) <= rnd, "attention %s t=%d h=%d e=%d: %g want %g", kern_type_name(kv_type),
                              t, h, e, got, o);
            }
        }
    kern_free(c, kc); kern_free(c, vc);
    free(k); free(v); free(q); free(out); free(s);
}

START_TEST(test_attention)
{
    ref_seed(10);
    kern_ctx *c1 = mk(1), *c3 = mk(3);
    for (int a = 0; a < n_isas(); a++) {
        kern_set_isa(isa_at(a));
        for (int kt = 0; kt < 2; kt++) {
            int t = kt ? KERN_TYPE_F16 : KERN_TYPE_F32;
            check_attention(c1, t, 8, 2, 64, 1, 20, 0);  /* decode, GQA 4:1, heads of a group together */
            check_attention(c3, t, 8, 2, 64, 1, 20, 0);  /* decode, fewer groups than threads: per head */
            check_attention(c3, t, 4, 4, 32, 7, 0, 0);   /* prompt from 0, MHA */
            check_attention(c3, t, 6, 2, 40, 5, 11, 4);  /* sliding window */
            check_attention(c1, t, 2, 1, 256, 3, 30, 8); /* Gemma-wide heads, window */
        }
    }
    kern_set_isa(kern_isa_best());
    kern_kv_layout l = {KERN_TYPE_F32, 3, 16, 8};
    float buf[3 * 16 * 8] = {0}, out[64];
    kern_attn_params p = {1, 4, 0, 1, 0, 1};
    ck_assert_int_eq(kern_attention(c1, out, buf, buf, buf, &l, &p), KERN_EINVAL); /* 4 % 3 */
    ck_assert(strstr(kern_ctx_error(c1), "multiple") != NULL);
    l.n_head_kv = 2;
    p.n_kv = 9;
    ck_assert_int_eq(kern_attention(c1, out, buf, buf, buf, &l, &p), KERN_EINVAL); /* beyond capacity */
    p.n_kv = 1;
    p.q_pos0 = 1;
    ck_assert_int_eq(kern_attention(c1, out, buf, buf, buf, &l, &p), KERN_EINVAL); /* query past n_kv */
    l.type = KERN_TYPE_Q8_0;
    ck_assert_int_eq(kern_attention(c1, out, buf, buf, buf, &l, &p), KERN_EINVAL);
    ck_assert_uint_eq(kern_kv_bytes(&l), 0);
    l.type = KERN_TYPE_F16;
    ck_assert_int_eq(kern_kv_store(c1, buf, &l, 7, 2, buf), KERN_EINVAL);
    kern_ctx_destroy(c1);
    kern_ctx_destroy(c3);
}
END_TEST

/* ----------------------------------------------------- context, ISA */
START_TEST(test_ctx_and_isa)
{
    kern_config cfg = {.backend = (kern_backend)7}; /* no such backend */
    kern_ctx *c = (kern_ctx *)1;
    char err[200] = "";
    ck_assert_int_eq(kern_ctx_create(&cfg, &c, err, sizeof err), KERN_ENOTSUP);
    ck_assert_ptr_null(c);
    ck_assert(strlen(err) > 0);
    /* CUDA: works where built and a device exists; otherwise a status and a message */
    cfg.backend = KERN_BACKEND_CUDA;
    err[0] = 0;
    int rc = kern_ctx_create(&cfg, &c, err, sizeof err);
    if (rc == KERN_OK) {
        ck_assert_int_eq(kern_ctx_backend(c), KERN_BACKEND_CUDA);
        kern_ctx_destroy(c);
    } else {
        ck_assert(rc == KERN_ENOTSUP || rc == KERN_EBACKEND);
        ck_assert_ptr_null(c);
        ck_assert(strlen(err) > 0);
    }
    ck_assert_int_eq(kern_ctx_create(NULL, &c, NULL, 0), KERN_EINVAL);
    c = mk(4);
    ck_assert_int_eq(kern_ctx_threads(c), 4);
    ck_assert(kern_ctx_host_memory(c));
    ck_assert_ptr_null(kern_alloc(c, 0));
    void *p = kern_alloc(c, 100);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq((uintptr_t)p % 64, 0);
    char src[100] = "weights", back[100];
    ck_assert_int_eq(kern_upload(c, p, src, 100), KERN_OK);
    ck_assert_int_eq(kern_download(c, back, p, 100), KERN_OK);
    ck_assert_str_eq(back, "weights");
    kern_free(c, p);
    ck_assert_int_eq(kern_sync(c), KERN_OK);
    kern_ctx_destroy(c);
    ck_assert_int_eq(kern_set_isa(KERN_ISA_PORTABLE), KERN_OK);
    ck_assert_int_eq(kern_get_isa(), KERN_ISA_PORTABLE);
    ck_assert_int_eq(kern_set_isa((kern_isa)9), KERN_ENOTSUP);
    ck_assert(!kern_isa_supported((kern_isa)9));
    ck_assert(kern_isa_supported(kern_isa_best()));
    ck_assert_str_eq(kern_isa_name(KERN_ISA_AVX512), "avx512");
    ck_assert_int_eq(kern_set_isa(kern_isa_best()), KERN_OK);
    ck_assert_str_eq(kern_isa_name(KERN_ISA_PORTABLE), "portable");
}
END_TEST

START_TEST(test_many_dispatches)
{
    /* the pool survives thousands of tiny jobs (decode issues ~10 per layer) */
    kern_ctx *c = mk(3);
    enum { N = 100000 }; /* a few pieces of the element-wise grain: really dispatched */
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b), *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) { a[i] = (float)i; b[i] = 1; }
    for (int it = 0; it < 2000; it++) {
        a[it] += 1; /* each job's result differs: a stale or skipped piece shows */
        ck_assert_int_eq(kern_add(c, y, a, b, N), KERN_OK);
        ck_assert(y[it] == a[it] + 1 && y[N - 1 - it] == a[N - 1 - it] + 1);
    }
    for (int i = 0; i < N; i++) ck_assert(y[i] == a[i] + 1);
    free(a); free(b); free(y);
    kern_ctx_destroy(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("cpu");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_types);
    tcase_add_test(tc, test_fp16);
    tcase_add_test(tc, test_dequant_matches_layout);
    tcase_add_test(tc, test_quant_roundtrip);
    tcase_add_test(tc, test_quant_bad_args);
    tcase_add_test(tc, test_matmul_all_types);
    tcase_add_test(tc, test_matmul_tiled);
    tcase_add_test(tc, test_matmul_rows_agree);
    tcase_add_test(tc, test_matmul_isas_agree);
    tcase_add_test(tc, test_matmul_bad_args);
    tcase_add_test(tc, test_matmul_multi);
    tcase_add_test(tc, test_matmul_repacked);
    tcase_add_test(tc, test_get_rows);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_rope);
    tcase_add_test(tc, test_softmax_act);
    tcase_add_test(tc, test_attention);
    tcase_add_test(tc, test_ctx_and_isa);
    tcase_add_test(tc, test_many_dispatches);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
