/* test_cuda_mmq_host.cu: ctest without a GPU for the quantized matmul of
 * cuda_mmq.cu. The block's phases (cuda_mmq.cuh) are __host__ __device__
 * functions of the thread index; this runs every block of a call on the CPU,
 * thread by thread between the kernel's barriers, in the kernel's stage
 * order, with the one device-only step (the wmma multiply) replaced by the
 * product it stands for, read from the same shared-memory tiles with the same
 * pointers and leading dimensions (A row-major, B column-major, C stored
 * column-major). Shared memory starts filled with NaN bytes, so reading a
 * byte no phase wrote shows up. The weights end at a page followed by a
 * PROT_NONE page: a read past the matrix faults. Checked against
 * bf16(dequantized W) . bf16(x) in double: every type, n in {9, 16, 31, 32,
 * 33, 64}, m not a multiple of 64, k not a multiple of the 256-element stage,
 * one split and several, weights 16-byte aligned and not. Also the launch
 * plan's invariants and the dispatch predicate. What only the GPU can show
 * (wmma's fragment semantics, timing) is left to tests/gpu/check_ops.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cuda_mmq.cuh"

static int failures;

static float bf(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }
static float bfv(__nv_bfloat16 v) { return __bfloat162float(v); }

/* Runs one emulated kernel call: y (and the split workspace) as the device would. */
template <int T>
static void emulate(const uint8_t *w, size_t rb, const __nv_bfloat16 *xs, int n, int m, int k, int slots, float *y)
{
    constexpr int A = kcu_nat_align(T);
    kcu_mmq_plan p = kcu_mmq_plan_for(n, m, k, slots);
    size_t smem = kcu_mmq_smem(T, p.n_pad), nm = (size_t)n * m;
    uint8_t *sm = (uint8_t *)aligned_alloc(128, (smem + 127) / 128 * 128);
    float *ws = (float *)malloc(sizeof(float) * nm * p.splits);
    for (size_t i = 0; i < nm * p.splits; i++) ws[i] = NAN;
    const int ng = kcu_mmq_ng(T);
    uint4 *buf = (uint4 *)malloc(sizeof(uint4) * ng * KCU_MMQ_THREADS);
    float acc[4][4][16][16]; /* [warp][fragment][row i][activation j] */
    for (int by = 0; by < p.splits; by++)
        for (int bx = 0; bx < p.nb; bx++) {
            memset(sm, 0xFF, smem); /* bf16 0xFFFF and f32 0xFFFFFFFF are NaN */
            __nv_bfloat16 *wt = (__nv_bfloat16 *)sm, *xt = (__nv_bfloat16 *)(sm + kcu_mmq_x_off(T));
            uint8_t *raw = sm + kcu_mmq_raw_off();
            float *ct = (float *)sm;
            const int row0 = bx * KCU_MMQ_BM, s0 = by * p.sps, s1 = s0 + p.sps < p.ns ? s0 + p.sps : p.ns;
            const int nf = p.n_pad / 16;
            memset(acc, 0, sizeof acc);
            for (int t = 0; t < KCU_MMQ_THREADS; t++) kcu_mmq_zero_pads(wt, xt, n, p.n_pad, m, row0, t);
            if (s0 < s1)
                for (int t = 0; t < KCU_MMQ_THREADS; t++)
                    kcu_mmq_load_raw<T>(buf + ng * t, w, rb, m, row0, s0 * KCU_MMQ_BK,
                                        k - s0 * KCU_MMQ_BK < KCU_MMQ_BK ? k - s0 * KCU_MMQ_BK : KCU_MMQ_BK, t);
            for (int s = s0; s < s1; s++) {
                const int k0 = s * KCU_MMQ_BK, kl = k - k0 < KCU_MMQ_BK ? k - k0 : KCU_MMQ_BK;
                for (int t = 0; t < KCU_MMQ_THREADS; t++) {
                    kcu_mmq_store_raw<T>(raw, buf + ng * t, t);
                    kcu_mmq_stage_x(xt, xs, n, k, k0, kl, t);
                }
                /* (a) */
                if (s + 1 < s1)
                    for (int t = 0; t < KCU_MMQ_THREADS; t++)
                        kcu_mmq_load_raw<T>(buf + ng * t, w, rb, m, row0, k0 + KCU_MMQ_BK,
                                            k - k0 - KCU_MMQ_BK < KCU_MMQ_BK ? k - k0 - KCU_MMQ_BK : KCU_MMQ_BK, t);
                for (int t = 0; t < KCU_MMQ_THREADS; t++) kcu_mmq_dequant<T, A>(wt, raw, w, rb, m, row0, k0, kl, t);
                /* (b): the multiply, as wmma would do it from these pointers */
                for (int warp = 0; warp < 4; warp++)
                    for (int kk = 0; kk < kl; kk += 16) {
                        const __nv_bfloat16 *a = wt + (size_t)16 * warp * KCU_MMQ_LDW + kk; /* row-major */
                        for (int f = 0; f < nf; f++) {
                            const __nv_bfloat16 *b = xt + (size_t)16 * f * KCU_MMQ_LDX + kk; /* column-major */
                            for (int i = 0; i < 16; i++)
                                for (int j = 0; j < 16; j++) {
                                    float d = 0;
                                    for (int q = 0; q < 16; q++)
                                        d += bfv(a[i * KCU_MMQ_LDW + q]) * bfv(b[q + j * KCU_MMQ_LDX]);
                                    acc[warp][f][i][j] += d;
                                }
                        }
                    }
                /* (c) */
            }
            for (int warp = 0; warp < 4; warp++)
                for (int f = 0; f < nf; f++) /* store_matrix_sync, mem_col_major: (i, j) at ptr[i + j*ld] */
                    for (int i = 0; i < 16; i++)
                        for (int j = 0; j < 16; j++)
                            ct[(size_t)16 * f * KCU_MMQ_LDC + 16 * warp + i + j * KCU_MMQ_LDC] = acc[warp][f][i][j];
            float *out = p.splits == 1 ? y : ws + (size_t)by * nm;
            for (int t = 0; t < KCU_MMQ_THREADS; t++) kcu_mmq_write(out, ct, n, m, row0, t);
        }
    if (p.splits > 1) /* k_mmq_reduce */
        for (size_t i = 0; i < nm; i++) {
            float v = 0;
            for (int s = 0; s < p.splits; s++) v += ws[(size_t)s * nm + i];
            y[i] = v;
        }
    free(sm), free(ws), free(buf);
}

/* Weights of type T [m][k] placed so that they end where a PROT_NONE page
 * begins, `shift` bytes below (a multiple of the natural alignment), x [n][k]. */
template <int T>
static void check(int n, int m, int k, int slots, int shift)
{
    size_t rb = kern_row_bytes(T, k), wb = rb * m;
    long pg = sysconf(_SC_PAGESIZE);
    size_t span = (wb + shift + pg - 1) / pg * pg;
    uint8_t *map = (uint8_t *)mmap(NULL, span + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        printf("FAIL mmap\n");
        failures++;
        return;
    }
    mprotect(map + span, pg, PROT_NONE);
    uint8_t *w = map + span - shift - wb;
    float *wf = (float *)malloc(sizeof(float) * m * k), *wd = (float *)malloc(sizeof(float) * m * k);
    enum { GUARD = 64 }; /* floats after y that must stay NaN */
    float *x = (float *)malloc(sizeof(float) * n * k), *y = (float *)malloc(sizeof(float) * (n * m + GUARD));
    __nv_bfloat16 *xs = (__nv_bfloat16 *)aligned_alloc(16, (sizeof(__nv_bfloat16) * n * k + 15) / 16 * 16);
    uint64_t r = 0x9E3779B97F4A7C15ull ^ ((uint64_t)T << 32) ^ (uint64_t)(n * 131 + m * 7 + k);
    for (size_t i = 0; i < (size_t)m * k + (size_t)n * k; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        float v = (float)((r >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
        if (i < (size_t)m * k) wf[i] = v;
        else x[i - (size_t)m * k] = 3 * v;
    }
    char msg[128];
    if (kern_quantize(T, w, wf, m, k, msg, sizeof msg) || kern_dequantize(T, wd, w, (int64_t)m * k, msg, sizeof msg)) {
        printf("FAIL %s quantize: %s\n", kern_type_name(T), msg);
        failures++;
        return;
    }
    for (int i = 0; i < n * k; i++) xs[i] = __float2bfloat16_rn(x[i]);
    for (int i = 0; i < n * m + GUARD; i++) y[i] = NAN;
    emulate<T>(w, rb, xs, n, m, k, slots, y);
    double worst = 0, ymax = 0;
    int bad = 0;
    for (int i = n * m; i < n * m + GUARD; i++) bad += !isnan(y[i]);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double ref = 0;
            for (int q = 0; q < k; q++) ref += (double)bf(wd[(size_t)i * k + q]) * bf(x[(size_t)j * k + q]);
            double e = fabs(y[(size_t)j * m + i] - ref);
            if (!(e == e) || !isfinite(y[(size_t)j * m + i])) bad++;
            worst = e > worst ? e : worst;
            ymax = fabs(ref) > ymax ? fabs(ref) : ymax;
        }
    kcu_mmq_plan p = kcu_mmq_plan_for(n, m, k, slots);
    int fail = bad || !(worst <= 1e-5 * ymax);
    failures += fail;
    printf("%s %-5s n=%-2d m=%-4d k=%-4d w%%16=%-2d grid %dx%d (%d stage(s) per split) max err %.2e of %.2e%s\n",
           fail ? "FAIL" : "ok  ", kern_type_name(T), n, m, k, (int)((uintptr_t)w % 16), p.nb, p.splits, p.sps, worst,
           ymax, bad ? " NON-FINITE" : "");
    munmap(map, span + pg);
    free(wf), free(wd), free(x), free(y), free(xs);
}

/* Plan invariants over many shapes: every stage in exactly one split, no
 * empty split, grid within limits, about one block per resident slot when k allows it. */
static void check_plans(void)
{
    int bad = 0, count = 0;
    const int ms[] = {1, 63, 64, 65, 256, 640, 1000, 2048, 5632, 32000, 262144};
    const int ks[] = {32, 96, 256, 640, 1024, 2048, 5632, 16384};
    const int sms[] = {1, 4, 132, 396}; /* resident blocks: H100/H200 hold 264 or 396 */
    for (int mi = 0; mi < 11; mi++)
        for (int ki = 0; ki < 8; ki++)
            for (int si = 0; si < 4; si++)
                for (int n = 9; n <= 64; n += 55) {
                    kcu_mmq_plan p = kcu_mmq_plan_for(n, ms[mi], ks[ki], sms[si]);
                    count++;
                    bool ok = p.nb * KCU_MMQ_BM >= ms[mi] && (p.nb - 1) * KCU_MMQ_BM < ms[mi] &&
                              p.ns * KCU_MMQ_BK >= ks[ki] && (p.ns - 1) * KCU_MMQ_BK < ks[ki] && p.sps >= 1 &&
                              p.splits >= 1 && p.splits <= 65535 && p.splits * p.sps >= p.ns &&
                              (p.splits - 1) * p.sps < p.ns && p.n_pad % 16 == 0 && p.n_pad >= n &&
                              p.n_pad - n < 16;
                    /* enough blocks: splits asked for (capped at ns), at most halved by equal split sizes */
                    int want = p.nb >= sms[si] ? 1 : (sms[si] + p.nb - 1) / p.nb;
                    want = want < p.ns ? want : p.ns;
                    ok = ok && 2 * p.splits > want && p.splits <= want;
                    if (!ok && bad++ < 5)
                        printf("FAIL plan m=%d k=%d slots=%d: nb %d ns %d sps %d splits %d\n", ms[mi], ks[ki], sms[si],
                               p.nb, p.ns, p.sps, p.splits);
                }
    failures += bad != 0;
    printf("%s %d launch plans\n", bad ? "FAIL" : "ok  ", count);
}

/* Shared memory per block within sm_90's 227 KB for every type at n = 64. */
template <int T>
static void check_smem(void)
{
    size_t s = kcu_mmq_smem(T, KCU_MMQ_MAX_N);
    bool ok = s <= 227 * 1024 && kcu_mmq_x_off(T) % 128 == 0 && kcu_mmq_rawp(T) % 16 == 0 &&
              kcu_mmq_rawp(T) >= 16 * kcu_mmq_gpr(T) && kcu_mmq_ng(T) * KCU_MMQ_THREADS >= KCU_MMQ_BM * kcu_mmq_gpr(T);
    failures += !ok;
    printf("%s %-5s shared memory %zu bytes per block at n=64\n", ok ? "ok  " : "FAIL", kern_type_name(T), s);
}

static void expect_takes(bool want, int t, int n, int k, const void *w, const char *what)
{
    bool got = kcu_mmq_takes(t, n, k, w);
    failures += got != want;
    printf("%s dispatch: %s -> %s\n", got == want ? "ok  " : "FAIL", what, got ? "mmq" : "other path");
}

template <int T>
static void check_type(void)
{
    check_smem<T>();
    const bool kq = kcu_block_elems(T) == 256;
    const int k1 = kq ? 768 : 640, k2 = kq ? 256 : 96; /* 2.5 / 3 stages, and one partial stage */
    const int nat = kcu_nat_align(T), shift = nat == 16 ? 0 : nat; /* shift: w % 16 != 0 where allowed */
    const int ns[] = {9, 16, 31, 32, 33, 64};
    for (int i = 0; i < 6; i++) check<T>(ns[i], 77, k1, 396, shift); /* a split per stage */
    check<T>(33, 77, k1, 1, shift);     /* one split: every stage after the first prefetched */
    check<T>(17, 200, k1, 8, 0);        /* 4 row blocks, 2 splits of 2 and 1 stages */
    check<T>(40, 130, 1024, 16, shift); /* one split per stage */
    check<T>(12, 64, k2, 396, shift);   /* a single partial stage */
}

int main(void)
{
    check_plans();
    check_type<KERN_TYPE_Q4_0>();
    check_type<KERN_TYPE_Q4_1>();
    check_type<KERN_TYPE_Q5_0>();
    check_type<KERN_TYPE_Q5_1>();
    check_type<KERN_TYPE_Q8_0>();
    check_type<KERN_TYPE_Q4_K>();
    check_type<KERN_TYPE_Q5_K>();
    check_type<KERN_TYPE_Q6_K>();
    static __attribute__((aligned(16))) uint8_t wbuf[64];
    expect_takes(true, KERN_TYPE_Q8_0, 9, 2048, wbuf, "Q8_0 n=9");
    expect_takes(true, KERN_TYPE_Q8_0, 64, 2048, wbuf + 2, "Q8_0 n=64, 2-byte aligned weights");
    expect_takes(false, KERN_TYPE_Q8_0, 8, 2048, wbuf, "Q8_0 n=8 (the matvec's)");
    expect_takes(false, KERN_TYPE_Q8_0, 65, 2048, wbuf, "Q8_0 n=65 (cuBLAS)");
    expect_takes(false, KERN_TYPE_Q8_0, 32, 2048, wbuf + 1, "Q8_0 at an odd address");
    expect_takes(false, KERN_TYPE_Q4_K, 32, 2048, wbuf + 2, "Q4_K not 16-byte aligned");
    expect_takes(true, KERN_TYPE_Q4_K, 32, 2048, wbuf, "Q4_K aligned");
    expect_takes(false, KERN_TYPE_Q4_K, 32, 640, wbuf, "Q4_K k=640 (not whole super-blocks)");
    expect_takes(false, KERN_TYPE_BF16, 32, 2048, wbuf, "BF16 (cuBLAS)");
    expect_takes(false, KERN_TYPE_F32, 32, 2048, wbuf, "F32 (cuBLAS)");
    setenv("COMMONS_CUDA_MMQ", "0", 1);
    expect_takes(false, KERN_TYPE_Q8_0, 32, 2048, wbuf, "COMMONS_CUDA_MMQ=0");
    unsetenv("COMMONS_CUDA_MMQ");
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("ok: the quantized matmul's blocks, emulated on the host, match the reference\n");
    return 0;
}
