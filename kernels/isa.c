/* isa.c: run-time choice of the CPU function table. The best ISA is probed
 * once with __builtin_cpu_supports; COMMONS_KERN_ISA=portable in the
 * environment or kern_set_isa() forces the portable path (tests use both). */
#include "kern_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_int active = -1; /* -1: not chosen yet */

kern_isa kern_isa_best(void)
{
#if defined(__x86_64__) && defined(KERN_HAVE_AVX2_TABLE)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return KERN_ISA_AVX2;
#endif
    return KERN_ISA_PORTABLE;
}

kern_isa kern_get_isa(void)
{
    int a = atomic_load(&active);
    if (a < 0) {
        const char *env = getenv("COMMONS_KERN_ISA");
        a = env && strcmp(env, "portable") == 0 ? KERN_ISA_PORTABLE : (int)kern_isa_best();
        atomic_store(&active, a);
    }
    return (kern_isa)a;
}

int kern_set_isa(kern_isa isa)
{
    if (isa != KERN_ISA_PORTABLE && !(isa == KERN_ISA_AVX2 && kern_isa_best() == KERN_ISA_AVX2))
        return KERN_ENOTSUP;
    atomic_store(&active, (int)isa);
    return KERN_OK;
}

const char *kern_isa_name(kern_isa isa)
{
    return isa == KERN_ISA_AVX2 ? "avx2" : isa == KERN_ISA_PORTABLE ? "portable" : "unknown";
}

const kern_cpu_fns *kern_cpu(void)
{
#ifdef KERN_HAVE_AVX2_TABLE
    if (kern_get_isa() == KERN_ISA_AVX2) return &kern_cpu_avx2;
#endif
    return &kern_cpu_portable;
}

int kern_act_type(int wt)
{
    switch (wt) {
    case KERN_TYPE_Q4_0:
    case KERN_TYPE_Q5_0:
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
