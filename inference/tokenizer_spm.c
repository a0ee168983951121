/* tokenizer_spm.c: SentencePiece-style encoding ("llama" vocabularies).
 * Spaces become U+2581 "▁" (plus one in front when the vocabulary adds a
 * space prefix), the text starts as one symbol per UTF-8 character, and the
 * adjacent pair whose concatenation is the highest-scoring vocabulary entry
 * is merged until none is left. Symbols that are not tokens fall back to
 * <0xXX> byte tokens (or UNK). A heap keeps this O(n log n). */
#include "tokenizer_internal.h"
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

static const char SPACE_MARK[3] = {'\xe2', '\x96', '\x81'};   /* U+2581 */

struct sym {
    uint32_t off, len;    /* bytes of buf; len 0 once merged away */
    int32_t prev, next;
};

/* Token types a merge may produce: control, unknown, byte and unused pieces
 * never come out of plain text in SentencePiece. */
static bool mergeable(const infer_tokenizer *t, int32_t id)
{
    int ty = t->tokens[id].type;
    return ty == INFER_TOKEN_NORMAL || ty == INFER_TOKEN_USER_DEFINED ||
           ty == INFER_TOKEN_UNDEFINED;
}

static int try_pair(const infer_tokenizer *t, const char *buf, const struct sym *s, int32_t l,
                    int32_t r, struct tok_heap *h)
{
    if (l < 0 || r < 0)
        return INFER_OK;
    uint32_t len = s[l].len + s[r].len;
    int32_t id = tok_lookup(t, buf + s[l].off, len);
    if (id < 0 || !mergeable(t, id))
        return INFER_OK;
    struct tok_cand c = {-t->tokens[id].score, l, r, len};
    return tok_heap_push(h, c);
}

int tok_spm_encode(const infer_tokenizer *t, const char *text, size_t len, bool space_prefix,
                   struct tok_out *out)
{
    if (len == 0)
        return INFER_OK;
    /* Escaped text: at most 3 bytes per input byte plus the prefix. */
    if (len > (UINT32_MAX - 3) / 3)
        return INFER_ERANGE;
    char *buf = malloc(3 * len + 3);
    struct sym *s = malloc((3 * len + 3) * sizeof *s);
    struct tok_heap h = {0};
    int rc = INFER_ENOMEM;
    if (!buf || !s)
        goto done;
    size_t n = 0;
    if (space_prefix) {
        memcpy(buf, SPACE_MARK, 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + n, SPACE_MARK, 3);
            n += 3;
        } else {
            buf[n++] = text[i];
        }
    }
    int32_t ns = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = infer_utf8_decode(buf + i, n - i, &cp);
        s[ns] = (struct sym){(uint32_t)i, (uint32_t)l, ns - 1, ns + 1};
        ns++;
        i += l;
    }
    s[ns - 1].next = -1;
    rc = INFER_OK;
    for (int32_t i = 0; i + 1 < ns && !rc; i++)
        rc = try_pair(t, buf, s, i, i + 1, &h);
    struct tok_cand c;
    while (!rc && tok_heap_pop(&h, &c)) {
        struct sym *l = &s[c.left], *r = &s[c.right];
        /* Stale: one side was merged since this pair was queued. */
        if (l->len == 0 || r->len == 0 || l->next != c.right || l->len + r->len != c.check)
            continue;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = c.left;
        rc = try_pair(t, buf, s, l->prev, c.left, &h);
        if (!rc)
            rc = try_pair(t, buf, s, c.left, l->next, &h);
    }
    for (int32_t i = 0; i >= 0 && !rc; i = s[i].next) {
        int32_t id = tok_lookup(t, buf + s[i].off, s[i].len);
        if (id >= 0 && mergeable(t, id)) {
            tok_push(out, id);
            continue;
        }
        /* Not a piece: its bytes as <0xXX> tokens, else one UNK. */
        bool all_bytes = true;
        for (uint32_t k = 0; k < s[i].len; k++)
            all_bytes &= t->byte_tok[(uint8_t)buf[s[i].off + k]] >= 0;
        if (all_bytes) {
            for (uint32_t k = 0; k < s[i].len; k++)
                tok_push(out, t->byte_tok[(uint8_t)buf[s[i].off + k]]);
        } else if (t->unk >= 0) {
            tok_push(out, t->unk);
        }
    }
done:
    tok_heap_free(&h);
    free(buf);
    free(s);
    return rc;
}
