/* serve_text.c: a sequence's completion text as clients see it (serve.h).
 *
 * Tokens are bytes, not characters: a piece may end inside a UTF-8 sequence, a
 * byte-fallback token may produce invalid UTF-8, and a stop string may arrive split
 * over several tokens. Clients get JSON strings, which must be valid UTF-8, and must
 * never see a stop string. So raw bytes are kept, stops are searched in them, and
 * the visible text grows only up to (a) the bytes that cannot be the start of a stop
 * and (b) the last complete UTF-8 sequence; invalid bytes become U+FFFD.
 * Invariant: no stop occurrence starts before conv (the held tail always covers a
 * partial stop), so stops are searched from conv on. */
#include <stdlib.h>
#include <string.h>

#include "serve.h"

static int reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    char *b = realloc(*buf, c);
    if (!b)
        return -1;
    *buf = b;
    *cap = c;
    return 0;
}

/* Length of the valid UTF-8 sequence at s (n bytes available): 1..4, 0 if it is a
 * valid beginning cut short by the end of the data, -1 if invalid. */
static int utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    int len;
    unsigned lo = 0x80, hi = 0xBF;   /* allowed range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;        /* overlong */
        if (c == 0xED) hi = 0x9F;        /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;        /* overlong */
        if (c == 0xF4) hi = 0x8F;        /* beyond U+10FFFF */
    } else
        return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n)
            return 0;
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
            return -1;
    }
    return len;
}

/* Convert raw[conv..limit) into vis; an incomplete sequence at the end waits unless
 * final (then it becomes U+FFFD). */
static int convert(serve_text *t, size_t limit, bool final)
{
    if (reserve(&t->vis, &t->vis_cap, t->vis_len + 3 * (limit - t->conv) + 1))
        return -1;
    while (t->conv < limit) {
        const unsigned char *p = (const unsigned char *)t->raw + t->conv;
        int len = utf8_len(p, limit - t->conv);
        if (len == 0 && !final)
            break;
        if (len <= 0) {   /* invalid, or cut short at the very end: one replacement char */
            memcpy(t->vis + t->vis_len, "\xEF\xBF\xBD", 3);
            t->vis_len += 3;
            t->conv++;
            continue;
        }
        memcpy(t->vis + t->vis_len, p, (size_t)len);
        t->vis_len += (size_t)len;
        t->conv += (size_t)len;
    }
    t->vis[t->vis_len] = 0;
    return 0;
}

int serve_text_append(serve_text *t, const char *bytes, size_t n, const char *const *stops,
                      int n_stops, bool *stopped)
{
    *stopped = false;
    if (reserve(&t->raw, &t->raw_cap, t->raw_len + n + 1))
        return -1;
    memcpy(t->raw + t->raw_len, bytes, n);
    t->raw_len += n;
    t->raw[t->raw_len] = 0;
    size_t hold = 0;
    long at = infer_stop_find(t->raw + t->conv, t->raw_len - t->conv, stops, n_stops, &hold);
    if (at >= 0) {
        t->raw_len = t->conv + (size_t)at;
        t->raw[t->raw_len] = 0;
        *stopped = true;
        return convert(t, t->raw_len, true);
    }
    return convert(t, t->raw_len - hold, false);
}

int serve_text_finish(serve_text *t)
{
    return convert(t, t->raw_len, true);
}

void serve_text_free(serve_text *t)
{
    free(t->raw);
    free(t->vis);
    memset(t, 0, sizeof *t);
}
