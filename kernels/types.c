/* types.c: the tensor type table (GGUF ids, block sizes, names) and the
 * scalar f16/bf16 conversions every other file builds on. */
#include "kern_internal.h"

#include <math.h>
#include <string.h>

typedef struct { const char *name; size_t elems, bytes; } type_info;

static const type_info *info(int t)
{
    static const type_info f32 = {"f32", 1, 4}, f16 = {"f16", 1, 2}, bf16 = {"bf16", 1, 2},
                           q4_0 = {"q4_0", KQK, sizeof(kblock_q4_0)},
                           q4_1 = {"q4_1", KQK, sizeof(kblock_q4_1)},
                           q5_0 = {"q5_0", KQK, sizeof(kblock_q5_0)},
                           q5_1 = {"q5_1", KQK, sizeof(kblock_q5_1)},
                           q8_0 = {"q8_0", KQK, sizeof(kblock_q8_0)},
                           q4_K = {"q4_K", KQK_K, sizeof(kblock_q4_K)},
                           q5_K = {"q5_K", KQK_K, sizeof(kblock_q5_K)},
                           q6_K = {"q6_K", KQK_K, sizeof(kblock_q6_K)};
    switch (t) {
    case KERN_TYPE_F32: return &f32;
    case KERN_TYPE_F16: return &f16;
    case KERN_TYPE_BF16: return &bf16;
    case KERN_TYPE_Q4_0: return &q4_0;
    case KERN_TYPE_Q4_1: return &q4_1;
    case KERN_TYPE_Q5_0: return &q5_0;
    case KERN_TYPE_Q5_1: return &q5_1;
    case KERN_TYPE_Q8_0: return &q8_0;
    case KERN_TYPE_Q4_K: return &q4_K;
    case KERN_TYPE_Q5_K: return &q5_K;
    case KERN_TYPE_Q6_K: return &q6_K;
    default: return NULL;
    }
}

int kern_type_supported(int t) { return info(t) != NULL; }
const char *kern_type_name(int t) { return info(t) ? info(t)->name : "unknown"; }
size_t kern_type_block_elems(int t) { return info(t) ? info(t)->elems : 0; }
size_t kern_type_block_bytes(int t) { return info(t) ? info(t)->bytes : 0; }

size_t kern_row_bytes(int t, int64_t k)
{
    const type_info *i = info(t);
    if (!i || k < 0 || k % (int64_t)i->elems) return 0;
    return (size_t)(k / (int64_t)i->elems) * i->bytes;
}

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float kern_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24 */
        float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31) return u2f(sign | 0x7f800000u | (mant << 13));
    return u2f(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t kern_f32_to_f16(float f)
{
    uint32_t x = f2u(f), sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf stays inf, nan stays a (quiet) nan */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 | ((ax >> 13) & 0x3ff) : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* >= 65520 rounds to inf */
    if (ax < 0x38800000u) { /* below 2^-14: f16 subnormal. Adding 0.5 makes the FPU
                               round at 2^-24, the subnormal unit (nearest even). */
        float r = u2f(ax) + 0.5f;
        return (uint16_t)(sign | (f2u(r) - 0x3f000000u));
    }
    /* rebias exponent by -112 and round the 13 dropped bits to nearest even */
    ax += 0xc8000fffu + ((ax >> 13) & 1);
    return (uint16_t)(sign | (ax >> 13));
}

float kern_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t kern_f32_to_bf16(float f)
{
    uint32_t x = f2u(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

void kern_f16_to_f32_row(float *dst, const uint16_t *src, size_t n) { kern_cpu()->f16_to_f32(dst, src, n); }
void kern_f32_to_f16_row(uint16_t *dst, const float *src, size_t n) { kern_cpu()->f32_to_f16(dst, src, n); }

void kern_bf16_to_f32_row(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = kern_bf16_to_f32(src[i]);
}

void kern_f32_to_bf16_row(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = kern_f32_to_bf16(src[i]);
}
