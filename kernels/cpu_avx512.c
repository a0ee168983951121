/* cpu_avx512.c: the AVX-512 (F, BW, VL, VNNI) function table. It is the
 * AVX2 table with the 32-block kernels (Q4_0, Q5_0, Q8_0) replaced: on
 * 256-bit vectors, vpdpbusd multiplies unsigned by signed bytes and adds
 * groups of 4 into int32 lanes in one instruction (AVX2 needs vpmaddubsw +
 * vpmaddwd), and Q5_0's fifth bits become bytes with one masked move.
 * These dominate decode and prompt time of Q4_0/Q5_0/Q8_0 models. */
#include "kern_avx2_inl.h"

#include <pthread.h>

#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

enum { V_Q4_0, V_Q5_0, V_Q8_0 };

/* Same contract as the AVX2 4-row kernels (kern_dot4_fn). Q4_0/Q5_0: the
 * accumulator of each block starts at -off*sum(y) (one vpdpbusd per
 * activation row), then one vpdpbusd per weight row adds sum(q*y) with q
 * unsigned. Q8_0: |w| times y with w's sign. */
AVX512 static inline __attribute__((always_inline)) void dot4_vnni(int kind, int nx, int k, const void *w, size_t ws,
                                                                   const void *x, size_t xs, float *out, size_t os)
{
    const uint8_t *w0 = w;
    const size_t bb = kind == V_Q4_0 ? sizeof(kblock_q4_0) : kind == V_Q5_0 ? sizeof(kblock_q5_0) : sizeof(kblock_q8_0);
    const __m256i offv = _mm256_set1_epi8(kind == V_Q4_0 ? 8 : 16), zero = _mm256_setzero_si256();
    __m128 acc[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    for (int i = 0; i < k / KQK; i++) {
        prefetch_ahead(w0, ws, i, bb);
        const uint8_t *blk = w0 + (size_t)i * bb;
        __m256i q[4];
        for (int r = 0; r < 4; r++) {
            const uint8_t *br = blk + r * ws;
            if (kind == V_Q4_0) {
                q[r] = q4_0_bytes(br + 2);
            } else if (kind == V_Q5_0) {
                uint32_t qh;
                memcpy(&qh, br + 2, 4);
                q[r] = _mm256_or_si256(q4_0_bytes(br + 6), _mm256_maskz_mov_epi8((__mmask32)qh, offv));
            } else {
                q[r] = _mm256_loadu_si256((const __m256i *)(br + 2));
            }
        }
        __m128 sw = scales4(blk, ws, 1.0f);
        for (int xi = 0; xi < nx; xi++) {
            const kblock_q8_0 *y = (const kblock_q8_0 *)((const uint8_t *)x + xi * xs) + i;
            __m256i yv = _mm256_loadu_si256((const __m256i *)y->qs), s[4];
            if (kind == V_Q8_0) {
                for (int r = 0; r < 4; r++)
                    s[r] = _mm256_dpbusd_epi32(zero, _mm256_abs_epi8(q[r]), _mm256_sign_epi8(yv, q[r]));
            } else {
                __m256i init = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, offv, yv));
                for (int r = 0; r < 4; r++) s[r] = _mm256_dpbusd_epi32(init, q[r], yv);
            }
            __m128 sc = _mm_mul_ps(sw, _mm_set1_ps(f16(y->d)));
            acc[xi] = _mm_fmadd_ps(sc, _mm_cvtepi32_ps(reduce4(s[0], s[1], s[2], s[3])), acc[xi]);
        }
    }
    for (int xi = 0; xi < nx; xi++) _mm_storeu_ps(out + xi * os, acc[xi]);
}

KERN_DOT4_INSTANCE(AVX512, dot4_q4_0, dot4_vnni, V_Q4_0)
KERN_DOT4_INSTANCE(AVX512, dot4_q5_0, dot4_vnni, V_Q5_0)
KERN_DOT4_INSTANCE(AVX512, dot4_q8_0, dot4_vnni, V_Q8_0)

static kern_cpu_fns table;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void build(void)
{
    table = kern_cpu_avx2;
    table.dot4[KERN_TYPE_Q4_0] = dot4_q4_0;
    table.dot4[KERN_TYPE_Q5_0] = dot4_q5_0;
    table.dot4[KERN_TYPE_Q8_0] = dot4_q8_0;
    table.gemm[KERN_TYPE_Q4_0] = kern_gemm_q4_0_avx512;
    table.gemm[KERN_TYPE_Q5_0] = kern_gemm_q5_0_avx512;
    table.gemm[KERN_TYPE_Q8_0] = kern_gemm_q8_0_avx512;
    table.gemm[KERN_TYPE_Q4_K] = kern_gemm_q4_K_avx512;
    table.gemm[KERN_TYPE_Q5_K] = kern_gemm_q5_K_avx512;
    table.gemm[KERN_TYPE_Q6_K] = kern_gemm_q6_K_avx512;
}

const kern_cpu_fns *kern_cpu_avx512(void)
{
    pthread_once(&once, build);
    return &table;
}
