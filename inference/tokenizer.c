/* tokenizer.c: tokenizing (special-token splitting, then the SPM or BPE
 * encoder per stretch of plain text), token pieces and detokenizing, and the
 * vocabulary getters. */
#include "tokenizer_internal.h"
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

static bool usable(const infer_tokenizer *t, int32_t id, bool parse_special)
{
    if (id < 0)
        return false;
    int kind = tok_special_kind(t, id);
    return kind == TOK_ALWAYS || (kind == TOK_IF_PARSE_SPECIAL && parse_special);
}

static bool bit(const uint8_t *bits, uint8_t b) { return bits[b >> 3] & (1u << (b & 7)); }

/* Leftmost-longest match of a special token at the start of s. Two bitmaps
 * reject almost every position at once; survivors hash their prefixes in
 * one pass and probe only the lengths some special token has. */
static int32_t match_special(const infer_tokenizer *t, const char *s, size_t n,
                             bool parse_special, size_t *mlen)
{
    const uint8_t *u = (const uint8_t *)s;
    if (n >= 2 && bit(t->special_pair + u[0] * 32, u[1])) {
        enum { MAXH = 256 };
        uint64_t hs[MAXH + 1];
        size_t top = t->special_lens[0] < n ? t->special_lens[0] : n;
        if (top > MAXH)
            top = MAXH;
        hs[0] = TOK_HASH_INIT;
        for (size_t k = 0; k < top; k++)
            hs[k + 1] = TOK_HASH_STEP(hs[k], s[k]);
        for (size_t i = 0; i < t->n_special_lens && t->special_lens[i] >= 2; i++) {
            size_t l = t->special_lens[i];
            if (l > n)
                continue;
            int32_t id = tok_lookup_h(t, s, l, l <= MAXH ? hs[l] : tok_hash(s, l));
            if (usable(t, id, parse_special)) {
                *mlen = l;
                return id;
            }
        }
    }
    if (bit(t->special_one, u[0])) {
        int32_t id = tok_lookup(t, s, 1);
        if (usable(t, id, parse_special)) {
            *mlen = 1;
            return id;
        }
    }
    return -1;
}

static int encode_plain(const infer_tokenizer *t, const char *s, size_t n, bool after_special,
                        struct tok_out *o)
{
    if (n == 0)
        return INFER_OK;
    if (t->type == INFER_VOCAB_SPM)
        return tok_spm_encode(t, s, n, t->add_space_prefix && after_special, o);
    return tok_bpe_encode(t, s, n, o);
}

int infer_tokenize(const infer_tokenizer *t, const char *text, size_t len, bool add_special,
                   bool parse_special, int32_t *out, size_t max, size_t *n)
{
    if (!t || (!text && len) || (!out && max) || !n)
        return INFER_EINVAL;
    struct tok_out o = {out, max, 0};
    if (add_special && t->add_bos && t->bos >= 0)
        tok_push(&o, t->bos);
    /* SentencePiece puts its space prefix at the start of the text and after
     * every special token, as llama.cpp does. */
    bool after_special = true;
    size_t start = 0;
    int rc = INFER_OK;
    for (size_t i = 0; i < len && !rc;) {
        size_t mlen;
        int32_t id = match_special(t, text + i, len - i, parse_special, &mlen);
        if (id < 0) {
            i++;
            continue;
        }
        rc = encode_plain(t, text + start, i - start, after_special, &o);
        tok_push(&o, id);
        after_special = true;
        i += mlen;
        start = i;
    }
    if (!rc && start < len)
        rc = encode_plain(t, text + start, len - start, after_special, &o);
    if (rc)
        return rc;
    if (add_special && t->add_eos && t->eos >= 0)
        tok_push(&o, t->eos);
    *n = o.n;
    return o.n > max ? INFER_ERANGE : INFER_OK;
}

/* Appends with truncation while counting the full length. */
struct sbuf {
    char *buf;
    size_t cap, n;
};

static void put(struct sbuf *b, const char *s, size_t n)
{
    if (b->n < b->cap) {
        size_t k = b->cap - b->n < n ? b->cap - b->n : n;
        memcpy(b->buf + b->n, s, k);
    }
    b->n += n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static void piece(const infer_tokenizer *t, int32_t id, bool special, struct sbuf *b)
{
    const struct tok_token *k = &t->tokens[id];
    const char *s = t->arena + k->off;
    switch (k->type) {
    case INFER_TOKEN_CONTROL:
    case INFER_TOKEN_UNKNOWN:
    case INFER_TOKEN_UNUSED:
        if (special)
            put(b, s, k->len);
        return;
    case INFER_TOKEN_USER_DEFINED:
        put(b, s, k->len);
        return;
    case INFER_TOKEN_BYTE:
        if (t->type == INFER_VOCAB_SPM && k->len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' &&
            hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
            char c = (char)(hexval(s[3]) * 16 + hexval(s[4]));
            put(b, &c, 1);
            return;
        }
        break;
    default:
        break;
    }
    if (t->type == INFER_VOCAB_SPM) {
        /* U+2581 back to a space */
        size_t i = 0, from = 0;
        while (i + 3 <= k->len) {
            if (memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                put(b, s + from, i - from);
                put(b, " ", 1);
                i += 3;
                from = i;
            } else {
                i++;
            }
        }
        put(b, s + from, k->len - from);
        return;
    }
    /* GPT-2 symbols back to bytes; anything outside the mapping as is */
    for (size_t i = 0; i < k->len;) {
        uint32_t cp;
        size_t l = infer_utf8_decode(s + i, k->len - i, &cp);
        int byte = cp == INFER_UC_INVALID ? -1 : tok_cp_to_byte(cp);
        if (byte >= 0) {
            char c = (char)byte;
            put(b, &c, 1);
        } else {
            put(b, s + i, l);
        }
        i += l;
    }
}

int64_t infer_token_piece(const infer_tokenizer *t, int32_t id, bool special, char *buf,
                          size_t len)
{
    if (!t || id < 0 || id >= t->n_vocab || (!buf && len))
        return -1;
    struct sbuf b = {buf, len, 0};
    piece(t, id, special, &b);
    return (int64_t)b.n;
}

int64_t infer_detokenize(const infer_tokenizer *t, const int32_t *ids, size_t n, bool special,
                         char *buf, size_t len)
{
    if (!t || (!ids && n) || (!buf && len))
        return -1;
    struct sbuf b = {buf, len, 0};
    /* SentencePiece: drop the space the tokenizer put in front of the text,
     * i.e. the leading space of the first piece that prints anything. */
    bool strip = t->type == INFER_VOCAB_SPM && t->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return -1;
        if (!strip) {
            piece(t, ids[i], special, &b);
            continue;
        }
        char small[256];
        struct sbuf p = {small, sizeof small, 0};
        piece(t, ids[i], special, &p);
        char *full = small;
        if (p.n > sizeof small) {
            if (!(full = malloc(p.n)))
                return -1;
            p = (struct sbuf){full, p.n, 0};
            piece(t, ids[i], special, &p);
        }
        if (p.n > 0) {
            size_t skip = full[0] == ' ' ? 1 : 0;
            put(&b, full + skip, p.n - skip);
            strip = false;
        }
        if (full != small)
            free(full);
    }
    return (int64_t)b.n;
}

int infer_tokenizer_type(const infer_tokenizer *t) { return t->type; }
const char *infer_tokenizer_pre(const infer_tokenizer *t) { return t->pre; }
int32_t infer_tokenizer_n_vocab(const infer_tokenizer *t) { return t->n_vocab; }
int32_t infer_tokenizer_bos(const infer_tokenizer *t) { return t->bos; }
int32_t infer_tokenizer_eos(const infer_tokenizer *t) { return t->eos; }
int32_t infer_tokenizer_eot(const infer_tokenizer *t) { return t->eot; }
int32_t infer_tokenizer_unk(const infer_tokenizer *t) { return t->unk; }
int32_t infer_tokenizer_pad(const infer_tokenizer *t) { return t->pad; }
bool infer_tokenizer_add_bos(const infer_tokenizer *t) { return t->add_bos; }
bool infer_tokenizer_add_eos(const infer_tokenizer *t) { return t->add_eos; }

bool infer_token_is_eog(const infer_tokenizer *t, int32_t id)
{
    for (size_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return true;
    return false;
}

int infer_token_type(const infer_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->tokens[id].type : INFER_TOKEN_UNDEFINED;
}

float infer_token_score(const infer_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->tokens[id].score : 0.0f;
}

const char *infer_token_text(const infer_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab)
        return NULL;
    if (len)
        *len = t->tokens[id].len;
    return t->arena + t->tokens[id].off;
}

int32_t infer_token_lookup(const infer_tokenizer *t, const char *text, size_t len)
{
    return text || len == 0 ? tok_lookup(t, text ? text : "", len) : -1;
}
