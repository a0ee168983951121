/* tokenizer_bpe.c: byte-level BPE ("gpt2" vocabularies). The pre-tokenizer
 * splits the text into words; each byte of a word becomes the token of its
 * GPT-2 printable symbol, and adjacent pairs are merged lowest merge rank
 * first (leftmost on ties) until no listed merge applies. With
 * ignore_merges (Llama 3) a word that is itself a token is taken whole. */
#include "tokenizer_internal.h"
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

/* GPT-2 maps the 188 printable bytes to themselves and the other 68
 * (0x00-0x20, 0x7F-0xA0, 0xAD) to U+0100.. in byte order. */
uint32_t tok_byte_to_cp(uint8_t b)
{
    if (b <= 0x20)
        return 256u + b;
    if (b >= 0x7F && b <= 0xA0)
        return 256u + 33 + (b - 0x7Fu);
    if (b == 0xAD)
        return 256u + 33 + 34;
    return b;
}

int tok_cp_to_byte(uint32_t cp)
{
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xFF && cp != 0xAD))
        return (int)cp;
    if (cp >= 256 && cp < 256 + 33)
        return (int)(cp - 256);
    if (cp >= 256 + 33 && cp < 256 + 67)
        return (int)(cp - 256 - 33 + 0x7F);
    if (cp == 256 + 67)
        return 0xAD;
    return -1;
}

static size_t merge_slot(const infer_tokenizer *t, uint64_t key)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 17) & t->merge_mask;
    while (t->merge_keys[i] != UINT64_MAX && t->merge_keys[i] != key)
        i = (i + 1) & t->merge_mask;
    return i;
}

/* Rank and result of merging ids a and b; false if no such merge. */
static bool merge_find(const infer_tokenizer *t, int32_t a, int32_t b, int32_t *rank,
                       int32_t *result)
{
    if (a < 0 || b < 0 || !t->merge_keys)
        return false;
    size_t i = merge_slot(t, (uint64_t)(uint32_t)a << 32 | (uint32_t)b);
    if (t->merge_keys[i] == UINT64_MAX)
        return false;
    *rank = t->merge_rank[i];
    *result = t->merge_result[i];
    return true;
}

/* Used at load: the first listing of a pair wins (lowest rank). */
void tok_merge_insert(infer_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t result)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t i = merge_slot(t, key);
    if (t->merge_keys[i] == key)
        return;
    t->merge_keys[i] = key;
    t->merge_rank[i] = rank;
    t->merge_result[i] = result;
}

struct bsym {
    int32_t id;
    int32_t prev, next;
};

static int try_pair(const infer_tokenizer *t, const struct bsym *s, int32_t l, int32_t r,
                    struct tok_heap *h)
{
    int32_t rank, result;
    if (l < 0 || r < 0 || !merge_find(t, s[l].id, s[r].id, &rank, &result))
        return INFER_OK;
    struct tok_cand c = {(float)rank, l, r, (uint32_t)result};
    return tok_heap_push(h, c);
}

/* One pre-tokenized word. s has room for len symbols. */
static int encode_word(const infer_tokenizer *t, const uint8_t *w, size_t len, struct bsym *s,
                       char *scratch, struct tok_heap *h, struct tok_out *out)
{
    if (t->ignore_merges) {
        size_t n = 0;
        for (size_t i = 0; i < len; i++) {
            char u[4];
            size_t k = infer_utf8_encode(tok_byte_to_cp(w[i]), u);
            memcpy(scratch + n, u, k);
            n += k;
        }
        int32_t id = tok_lookup(t, scratch, n);
        if (id >= 0) {
            tok_push(out, id);
            return INFER_OK;
        }
    }
    int32_t ns = (int32_t)len;
    for (int32_t i = 0; i < ns; i++)
        s[i] = (struct bsym){t->byte_tok[w[i]], i - 1, i + 1 < ns ? i + 1 : -1};
    h->n = 0;
    int rc = INFER_OK;
    for (int32_t i = 0; i + 1 < ns && !rc; i++)
        rc = try_pair(t, s, i, i + 1, h);
    struct tok_cand c;
    while (!rc && tok_heap_pop(h, &c)) {
        struct bsym *l = &s[c.left], *r = &s[c.right];
        int32_t rank, result;
        /* Stale if either side changed since the pair was queued. */
        if (l->id < 0 || r->id < 0 || l->next != c.right ||
            !merge_find(t, l->id, r->id, &rank, &result) || (uint32_t)result != c.check ||
            (float)rank != c.prio)
            continue;
        l->id = result;
        r->id = -1;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = c.left;
        rc = try_pair(t, s, l->prev, c.left, h);
        if (!rc)
            rc = try_pair(t, s, c.left, l->next, h);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next) {
        if (s[i].id >= 0)
            tok_push(out, s[i].id);
        else if (t->unk >= 0)
            tok_push(out, t->unk);
    }
    return rc;
}

int tok_bpe_encode(const infer_tokenizer *t, const char *text, size_t len, struct tok_out *out)
{
    if (len == 0)
        return INFER_OK;
    if (len > INT32_MAX / 4)
        return INFER_ERANGE;
    size_t *b = NULL, nw = 0;
    int rc = tok_pre_split(t->pre_kind, text, len, &b, &nw);
    if (rc)
        return rc;
    size_t longest = 0;
    for (size_t i = 0; i < nw; i++)
        if (b[i + 1] - b[i] > longest)
            longest = b[i + 1] - b[i];
    struct bsym *s = malloc(longest * sizeof *s);
    char *scratch = malloc(2 * longest);
    struct tok_heap h = {0};
    if (!s || !scratch)
        rc = INFER_ENOMEM;
    for (size_t i = 0; i < nw && !rc; i++)
        rc = encode_word(t, (const uint8_t *)text + b[i], b[i + 1] - b[i], s, scratch, &h, out);
    tok_heap_free(&h);
    free(s);
    free(scratch);
    free(b);
    return rc;
}
