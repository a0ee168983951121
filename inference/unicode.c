/* unicode.c: UTF-8 codec and category lookup by binary search over the
 * generated range table (about 1500 ranges); ASCII comes from a direct
 * table generated alongside it. */
#include "unicode.h"

static unsigned lookup(uint32_t cp)
{
    size_t lo = 0, hi = infer_uc_n_ranges;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < infer_uc_ranges[mid].start)
            hi = mid;
        else if (cp > infer_uc_ranges[mid].end)
            lo = mid + 1;
        else
            return infer_uc_ranges[mid].flags;
    }
    return 0;
}

unsigned infer_uc_flags(uint32_t cp)
{
    if (cp < 128)
        return infer_uc_ascii[cp];
    return cp == INFER_UC_INVALID ? 0 : lookup(cp);
}

size_t infer_utf8_decode(const char *str, size_t n, uint32_t *cp)
{
    const uint8_t *s = (const uint8_t *)str;
    uint8_t c = s[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = INFER_UC_INVALID;
        return 1;
    }
    if (len > n) {
        *cp = INFER_UC_INVALID;
        return 1;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = INFER_UC_INVALID;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = INFER_UC_INVALID;
        return 1;
    }
    *cp = v;
    return len;
}

size_t infer_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF)
        return 0;
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp <= 0x10FFFF) {
        out[0] = (char)(0xF0 | (cp >> 18));
        out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (char)(0x80 | (cp & 0x3F));
        return 4;
    }
    return 0;
}
