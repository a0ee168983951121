/* isa.c: run-time choice of the CPU function table. What the CPU supports
 * is probed with __builtin_cpu_supports (which also checks that the OS saves
 * the vector state); the best supported ISA is used unless COMMONS_KERN_ISA
 * or kern_set_isa() picks another (tests run every supported one). */
#include "kern_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_int active = -1; /* -1: not chosen yet */

int kern_isa_supported(kern_isa isa)
{
    switch (isa) {
    case KERN_ISA_PORTABLE: return 1;
#if defined(__x86_64__) && defined(KERN_HAVE_AVX2_TABLE)
    case KERN_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case KERN_ISA_AVX512:
        return kern_isa_supported(KERN_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
#endif
    default: return 0;
    }
}

kern_isa kern_isa_best(void)
{
    if (kern_isa_supported(KERN_ISA_AVX512)) return KERN_ISA_AVX512;
    if (kern_isa_supported(KERN_ISA_AVX2)) return KERN_ISA_AVX2;
    return KERN_ISA_PORTABLE;
}

const char *kern_isa_name(kern_isa isa)
{
    switch (isa) {
    case KERN_ISA_PORTABLE: return "portable";
    case KERN_ISA_AVX2: return "avx2";
    case KERN_ISA_AVX512: return "avx512";
    default: return "unknown";
    }
}

kern_isa kern_get_isa(void)
{
    int a = atomic_load(&active);
    if (a < 0) {
        /* an unknown or unsupported name falls back to the best ISA */
        const char *env = getenv("COMMONS_KERN_ISA");
        a = (int)kern_isa_best();
        for (int i = KERN_ISA_PORTABLE; env && i <= KERN_ISA_AVX512; i++)
            if (strcmp(env, kern_isa_name((kern_isa)i)) == 0 && kern_isa_supported((kern_isa)i)) a = i;
        atomic_store(&active, a);
    }
    return (kern_isa)a;
}

int kern_set_isa(kern_isa isa)
{
    if (!kern_isa_supported(isa)) return KERN_ENOTSUP;
    atomic_store(&active, (int)isa);
    return KERN_OK;
}

const kern_cpu_fns *kern_cpu(void)
{
    switch (kern_get_isa()) {
#ifdef KERN_HAVE_AVX2_TABLE
    case KERN_ISA_AVX2: return &kern_cpu_avx2;
    case KERN_ISA_AVX512: return kern_cpu_avx512();
#endif
    default: return &kern_cpu_portable;
    }
}

int kern_act_type(int wt)
{
    switch (wt) {
    case KERN_TYPE_Q4_0:
    case KERN_TYPE_Q4_1:
    case KERN_TYPE_Q5_0:
    case KERN_TYPE_Q5_1:
    case KERN_TYPE_Q8_0: return KERN_TYPE_Q8_0;
    case KERN_TYPE_Q4_K:
    case KERN_TYPE_Q5_K:
    case KERN_TYPE_Q6_K: return KERN_ACT_Q8_K;
    default: return KERN_TYPE_F32;
    }
}

size_t kern_act_row_bytes(int fmt, int k)
{
    switch (fmt) {
    case KERN_TYPE_Q8_0: return (size_t)(k / KQK) * sizeof(kblock_q8_0);
    case KERN_ACT_Q8_K: return (size_t)(k / KQK_K) * sizeof(kblock_q8_K);
    default: return (size_t)k * sizeof(float);
    }
}

void kern_act_quantize(const kern_cpu_fns *f, int fmt, const float *x, void *dst, int k)
{
    switch (fmt) {
    case KERN_TYPE_Q8_0: f->quant_q8_0(x, dst, k); break;
    case KERN_ACT_Q8_K: f->quant_q8_K(x, dst, k); break;
    default: memcpy(dst, x, (size_t)k * sizeof(float)); break;
    }
}
