/* quota_units.c: parsing and printing durations and sizes (see quota_units.h). */
#include "quota_units.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Empty values and "unlimited", shared by both parsers: returns true when text
 * was one of them, with *rc the parser's result. */
static bool special(const char *text, bool allow_unlimited, int64_t *out, char *err,
                    size_t errlen, const char *expect, int *rc)
{
    *rc = -1;
    if (!text || !*text) {
        snprintf(err, errlen, "empty value; %s", expect);
        return true;
    }
    if (strcasecmp(text, "unlimited") && strcasecmp(text, "infinite"))
        return false;
    if (allow_unlimited) {
        *out = QUOTA_UNLIMITED;
        *rc = 0;
    } else {
        snprintf(err, errlen, "'%s' is not allowed here; %s", text, expect);
    }
    return true;
}

/* Reads a non-negative decimal integer; returns the end or NULL on overflow/none. */
static const char *read_uint(const char *s, int64_t *v)
{
    if (!isdigit((unsigned char)*s))
        return NULL;
    int64_t x = 0;
    while (isdigit((unsigned char)*s)) {
        int d = *s - '0';
        if (x > (INT64_MAX - d) / 10)
            return NULL;
        x = x * 10 + d;
        s++;
    }
    *v = x;
    return s;
}

/* "D-HH:MM:SS", "HH:MM:SS" or "MM:SS" (Slurm's clock forms). */
static int parse_clock(const char *t, int64_t *out)
{
    int64_t days = 0, part[3];
    int n = 0;
    const char *s = t, *dash = strchr(t, '-');
    if (dash) {
        s = read_uint(t, &days);
        if (!s || s != dash)
            return -1;
        s++;
    }
    while (n < 3) {
        s = read_uint(s, &part[n]);
        if (!s)
            return -1;
        n++;
        if (*s != ':')
            break;
        s++;
    }
    if (*s || n < 2)
        return -1;
    int64_t h = 0, m, sec;
    if (n == 3) {
        h = part[0];
        m = part[1];
        sec = part[2];
    } else {
        m = part[0];
        sec = part[1];
    }
    if (m >= 60 || sec >= 60 || (dash && h >= 24) || days > 1000000 || h > 1000000 || m > 1000000)
        return -1;
    *out = ((days * 24 + h) * 60 + m) * 60 + sec;
    return 0;
}

int quota_parse_duration(const char *text, bool allow_unlimited, int64_t *seconds,
                         char *err, size_t errlen)
{
    const char *expect = "expected a duration like 30m, 12h, 7d, 1d12h or D-HH:MM:SS";
    int rc;
    if (special(text, allow_unlimited, seconds, err, errlen, expect, &rc))
        return rc;
    if (strchr(text, ':')) {
        if (parse_clock(text, seconds) == 0)
            return 0;
        snprintf(err, errlen, "malformed duration '%s'; %s", text, expect);
        return -1;
    }
    int64_t total = 0;
    const char *s = text;
    while (*s) {
        int64_t v, mul;
        const char *e = read_uint(s, &v);
        if (!e) {
            snprintf(err, errlen, "malformed duration '%s'; %s", text, expect);
            return -1;
        }
        switch (*e) {
        case 's': mul = 1; break;
        case 'm': mul = 60; break;
        case 'h': mul = 3600; break;
        case 'd': mul = 86400; break;
        case 'w': mul = 7 * 86400; break;
        case '\0':
            snprintf(err, errlen, "'%s' has no unit; write e.g. %ss, %sm or %sh", text, text,
                     text, text);
            return -1;
        default:
            if (isalpha((unsigned char)*e))
                snprintf(err, errlen, "unknown unit '%c' in '%s'; units are s, m, h, d, w", *e,
                         text);
            else
                snprintf(err, errlen, "malformed duration '%s'; %s", text, expect);
            return -1;
        }
        if (v > (INT64_MAX / 2 - total) / mul) {
            snprintf(err, errlen, "duration '%s' is too large", text);
            return -1;
        }
        total += v * mul;
        s = e + 1;
    }
    *seconds = total;
    return 0;
}

int quota_parse_size(const char *text, bool allow_unlimited, int64_t *bytes, char *err,
                     size_t errlen)
{
    const char *expect = "expected a size like 512M, 64G or 1.5T";
    int rc;
    if (special(text, allow_unlimited, bytes, err, errlen, expect, &rc))
        return rc;
    if (!isdigit((unsigned char)text[0])) {
        snprintf(err, errlen, "malformed size '%s'; %s", text, expect);
        return -1;
    }
    errno = 0;
    char *e;
    double v = strtod(text, &e);
    if (errno || e == text || !isfinite(v) || v < 0) {
        snprintf(err, errlen, "malformed size '%s'; %s", text, expect);
        return -1;
    }
    double mul;
    switch (toupper((unsigned char)*e)) {
    case 'K': mul = 1024.0; break;
    case 'M': mul = 1024.0 * 1024; break;
    case 'G': mul = 1024.0 * 1024 * 1024; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; break;
    case 'P': mul = 1024.0 * 1024 * 1024 * 1024 * 1024; break;
    case '\0':
        snprintf(err, errlen, "'%s' has no unit; write e.g. %sG or %sM", text, text, text);
        return -1;
    default:
        snprintf(err, errlen, "unknown unit in '%s'; units are K, M, G, T, P (powers of 1024)",
                 text);
        return -1;
    }
    e++;
    if (strcmp(e, "") != 0 && strcmp(e, "B") != 0 && strcmp(e, "iB") != 0 &&
        strcmp(e, "b") != 0) {
        snprintf(err, errlen, "trailing '%s' in size '%s'; %s", e, text, expect);
        return -1;
    }
    double b = v * mul;
    if (b >= 9.0e18) {
        snprintf(err, errlen, "size '%s' is too large", text);
        return -1;
    }
    *bytes = (int64_t)llround(b);
    return 0;
}

int quota_format_duration(int64_t s, char *buf, size_t len)
{
    if (s < 0)
        return snprintf(buf, len, "unlimited");
    if (s == 0)
        return snprintf(buf, len, "0s");
    static const struct { int64_t mul; char unit; } u[] = {
        {86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
    size_t n = 0;
    int total = 0;
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
        if (s < u[i].mul)
            continue;
        int w = snprintf(buf + n, n < len ? len - n : 0, "%lld%c", (long long)(s / u[i].mul),
                         u[i].unit);
        s %= u[i].mul;
        total += w;
        n += (size_t)w;
    }
    return total;
}

int quota_format_size(int64_t b, char *buf, size_t len)
{
    if (b < 0)
        return snprintf(buf, len, "unlimited");
    static const char units[] = "KMGTP";
    double v = (double)b;
    int i = -1;
    while (i < 4 && v >= 1024.0) {
        v /= 1024.0;
        i++;
    }
    if (i < 0)
        return snprintf(buf, len, "%lldB", (long long)b);
    if (v == floor(v))
        return snprintf(buf, len, "%.0f%c", v, units[i]);
    return snprintf(buf, len, "%.3g%c", v, units[i]);
}
