/* ref.c: see ref.h. Each dequantizer computes element i directly from the
 * byte layout, so an indexing slip in the kernels shows up as a mismatch. */
#include "ref.h"

#include <math.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;

void ref_seed(uint64_t s) { rng = s ? s : 1; }

double ref_uniform(double lo, double hi)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return lo + (hi - lo) * (double)(rng >> 11) / 9007199254740992.0;
}

void ref_fill(float *x, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)ref_uniform(lo, hi);
}

double ref_f16(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* 6-bit scale (what = 0) or min (what = 1) of sub-block j from the 12 packed
 * bytes: bytes 0-3 hold scales 0-3 (low 6 bits), 4-7 mins 0-3; sub-blocks
 * 4-7 keep their low 4 bits in bytes 8-11 (scale low nibble, min high) and
 * their top 2 bits in the spare top bits of bytes 0-3 (scales) / 4-7 (mins). */
static int k_scale(const uint8_t *s, int j, int what)
{
    if (j < 4) return s[j + 4 * what] & 63;
    int low = what ? s[j + 4] >> 4 : s[j + 4] & 15;
    int high = s[j - 4 + 4 * what] >> 6;
    return low | high << 4;
}

void ref_dequant(int t, const void *src, double *dst, int64_t n)
{
    const uint8_t *b = src;
    for (int64_t i = 0; i < n; i++) {
        switch (t) {
        case KERN_TYPE_F32: { float f; memcpy(&f, b + 4 * i, 4); dst[i] = f; break; }
        case KERN_TYPE_F16: dst[i] = ref_f16(rd16(b + 2 * i)); break;
        case KERN_TYPE_BF16: {
            uint32_t u = (uint32_t)rd16(b + 2 * i) << 16;
            float f;
            memcpy(&f, &u, 4);
            dst[i] = f;
            break;
        }
        case KERN_TYPE_Q4_0: {
            const uint8_t *blk = b + (i / 32) * 18;
            int e = (int)(i % 32), byte = blk[2 + e % 16];
            dst[i] = ref_f16(rd16(blk)) * (((e < 16) ? byte & 15 : byte >> 4) - 8);
            break;
        }
        case KERN_TYPE_Q5_0: {
            const uint8_t *blk = b + (i / 32) * 22;
            int e = (int)(i % 32), byte = blk[6 + e % 16];
            int low = e < 16 ? byte & 15 : byte >> 4, high = (blk[2 + e / 8] >> (e % 8)) & 1;
            dst[i] = ref_f16(rd16(blk)) * ((low | high << 4) - 16);
            break;
        }
        case KERN_TYPE_Q4_1:
        case KERN_TYPE_Q5_1: {
            int q5 = t == KERN_TYPE_Q5_1;
            const uint8_t *blk = b + (i / 32) * (q5 ? 24 : 20);
            int e = (int)(i % 32), byte = blk[(q5 ? 8 : 4) + e % 16];
            int low = e < 16 ? byte & 15 : byte >> 4, high = q5 ? (blk[4 + e / 8] >> (e % 8)) & 1 : 0;
            dst[i] = ref_f16(rd16(blk)) * (low | high << 4) + ref_f16(rd16(blk + 2));
            break;
        }
        case KERN_TYPE_Q8_0: {
            const uint8_t *blk = b + (i / 32) * 34;
            dst[i] = ref_f16(rd16(blk)) * (int8_t)blk[2 + i % 32];
            break;
        }
        case KERN_TYPE_Q4_K:
        case KERN_TYPE_Q5_K: {
            int q5 = t == KERN_TYPE_Q5_K;
            const uint8_t *blk = b + (i / 256) * (q5 ? 176 : 144);
            const uint8_t *sc = blk + 4, *qh = blk + 16, *qs = blk + (q5 ? 48 : 16);
            int e = (int)(i % 256), j = e / 32, l = e % 32;
            int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
            if (q5) q += ((qh[l] >> j) & 1) * 16;
            dst[i] = ref_f16(rd16(blk)) * k_scale(sc, j, 0) * q - ref_f16(rd16(blk + 2)) * k_scale(sc, j, 1);
            break;
        }
        case KERN_TYPE_Q6_K: {
            const uint8_t *blk = b + (i / 256) * 210;
            const uint8_t *ql = blk, *qh = blk + 128;
            const int8_t *sc = (const int8_t *)(blk + 192);
            int e = (int)(i % 256), half = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
            int lowbyte = ql[64 * half + l + 32 * (quarter % 2)];
            int low = quarter < 2 ? lowbyte & 15 : lowbyte >> 4;
            int high = (qh[32 * half + l] >> (2 * quarter)) & 3;
            dst[i] = ref_f16(rd16(blk + 208)) * sc[e / 16] * ((low | high << 4) - 32);
            break;
        }
        default: dst[i] = NAN;
        }
    }
}
