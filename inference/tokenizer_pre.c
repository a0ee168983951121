/* tokenizer_pre.c: BPE pre-tokenizers. Each family's regex (see enum tok_pre
 * in tokenizer_internal.h) is compiled by hand into a matcher that answers
 * "how many code points does the pattern match at this position" with the
 * regex's own semantics (alternatives in order, greedy quantifiers, the
 * (?!\S) look-ahead bounded by the current piece). A split stage runs the
 * matcher left to right; text no alternative matches becomes its own piece,
 * as in a regex split that keeps the gaps. */
#include "tokenizer_internal.h"
#include "unicode.h"

#include <stdlib.h>

struct cps {
    uint32_t *cp;
    size_t *off;    /* byte offset of each code point, off[n] = text length */
    size_t n;
};

static unsigned fl(const struct cps *c, size_t i)
{
    return infer_uc_flags(c->cp[i]);
}

static bool is_space(const struct cps *c, size_t i) { return fl(c, i) & INFER_UC_SPACE; }
static bool is_letter(const struct cps *c, size_t i) { return fl(c, i) & INFER_UC_LETTER; }
static bool is_number(const struct cps *c, size_t i) { return fl(c, i) & INFER_UC_NUMBER; }
static bool is_other(const struct cps *c, size_t i)  /* [^\s\p{L}\p{N}] */
{
    return !(fl(c, i) & (INFER_UC_SPACE | INFER_UC_LETTER | INFER_UC_NUMBER));
}
static bool is_crlf(const struct cps *c, size_t i) { return c->cp[i] == '\r' || c->cp[i] == '\n'; }

static uint32_t lower(uint32_t cp) { return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp; }

/* 's 't 're 've 'm 'll 'd, optionally ASCII case-insensitive. */
static size_t contraction(const struct cps *c, size_t p, size_t end, bool icase)
{
    if (c->cp[p] != '\'' || p + 1 >= end)
        return 0;
    uint32_t a = icase ? lower(c->cp[p + 1]) : c->cp[p + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (p + 2 >= end)
        return 0;
    uint32_t b = icase ? lower(c->cp[p + 2]) : c->cp[p + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

static size_t run(const struct cps *c, size_t p, size_t end,
                  bool (*pred)(const struct cps *, size_t))
{
    size_t q = p;
    while (q < end && pred(c, q))
        q++;
    return q - p;
}

/* \s+(?!\S)|\s+ at p (a space): the whole run if it ends the piece or is a
 * single char, else the run minus its last char (which then leads the next
 * word, e.g. "  Hello" -> " ", " Hello"). */
static size_t spaces(const struct cps *c, size_t p, size_t end)
{
    size_t n = run(c, p, end, is_space);
    return p + n == end || n == 1 ? n : n - 1;
}

/* ' ?X+' for a class X: optional ASCII space then at least one X. */
static size_t opt_space_run(const struct cps *c, size_t p, size_t end,
                            bool (*pred)(const struct cps *, size_t))
{
    size_t q = p + (c->cp[p] == ' ' ? 1 : 0);
    if (q < end && pred(c, q))
        return q - p + run(c, q, end, pred);
    return 0;
}

static size_t match_gpt2(const struct cps *c, size_t p, size_t end)
{
    size_t m;
    if ((m = contraction(c, p, end, false)) || (m = opt_space_run(c, p, end, is_letter)) ||
        (m = opt_space_run(c, p, end, is_number)) || (m = opt_space_run(c, p, end, is_other)))
        return m;
    return is_space(c, p) ? spaces(c, p, end) : 0;
}

static size_t match_llama3(const struct cps *c, size_t p, size_t end, size_t max_digits)
{
    size_t m;
    if ((m = contraction(c, p, end, true)))
        return m;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (is_letter(c, p))
        return run(c, p, end, is_letter);
    if (!is_crlf(c, p) && !is_number(c, p) && p + 1 < end && is_letter(c, p + 1))
        return 1 + run(c, p + 1, end, is_letter);
    /* \p{N}{1,max} */
    if (is_number(c, p)) {
        m = run(c, p, end, is_number);
        return m < max_digits ? m : max_digits;
    }
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    if ((m = opt_space_run(c, p, end, is_other)))
        return m + run(c, p + m, end, is_crlf);
    if (!is_space(c, p))
        return 0;
    /* \s*[\r\n]+ : through the last CR/LF of the whitespace run */
    size_t n = run(c, p, end, is_space), last = 0;
    for (size_t i = 0; i < n; i++)
        if (is_crlf(c, p + i))
            last = i + 1;
    if (last)
        return last;
    return spaces(c, p, end);
}

static bool is_lm(const struct cps *c, size_t i) { return fl(c, i) & (INFER_UC_LETTER | INFER_UC_MARK); }
static bool is_ps(const struct cps *c, size_t i) { return fl(c, i) & (INFER_UC_PUNCT | INFER_UC_SYMBOL); }
static bool is_punct(const struct cps *c, size_t i) { return fl(c, i) & INFER_UC_PUNCT; }
static bool is_ascii_letter(const struct cps *c, size_t i)
{
    uint32_t x = c->cp[i] | 0x20;
    return x >= 'a' && x <= 'z';
}
static bool is_ascii_punct(uint32_t x)   /* [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~] */
{
    return (x >= 0x21 && x <= 0x2F) || (x >= 0x3A && x <= 0x40) || (x >= 0x5B && x <= 0x60) ||
           (x >= 0x7B && x <= 0x7E);
}
/* [一-龥ࠀ-一가-퟿] of deepseek-coder */
static bool is_cjk_coder(const struct cps *c, size_t i)
{
    uint32_t x = c->cp[i];
    return (x >= 0x0800 && x <= 0x9FA5) || (x >= 0xAC00 && x <= 0xD7FF);
}
/* [一-龥぀-ゟ゠-ヿ] of deepseek-v3: CJK ideographs, hiragana, katakana */
static bool is_cjk_v3(const struct cps *c, size_t i)
{
    uint32_t x = c->cp[i];
    return (x >= 0x4E00 && x <= 0x9FA5) || (x >= 0x3040 && x <= 0x30FF);
}

/* \s?X+ */
static size_t opt_ws_run(const struct cps *c, size_t p, size_t end,
                         bool (*pred)(const struct cps *, size_t))
{
    if (pred(c, p))
        return run(c, p, end, pred);
    if (is_space(c, p) && p + 1 < end && pred(c, p + 1))
        return 1 + run(c, p + 1, end, pred);
    return 0;
}

/* deepseek-v3's last stage:
 * [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|
 *  ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_deepseek3(const struct cps *c, size_t p, size_t end)
{
    size_t m;
    if (is_ascii_punct(c->cp[p]) && p + 1 < end && is_ascii_letter(c, p + 1))
        return 1 + run(c, p + 1, end, is_ascii_letter);
    /* an optional lead that is not CR/LF/L/P/S (a mark may lead or belong) */
    if (is_lm(c, p))
        return run(c, p, end, is_lm);
    if (!is_crlf(c, p) && !(fl(c, p) & (INFER_UC_LETTER | INFER_UC_PUNCT | INFER_UC_SYMBOL)) &&
        p + 1 < end && is_lm(c, p + 1))
        return 1 + run(c, p + 1, end, is_lm);
    if ((m = opt_space_run(c, p, end, is_ps)))
        return m + run(c, p + m, end, is_crlf);
    if (!is_space(c, p))
        return 0;
    size_t n = run(c, p, end, is_space), last = 0;
    for (size_t i = 0; i < n; i++)
        if (is_crlf(c, p + i))
            last = i + 1;
    return last ? last : spaces(c, p, end);
}

enum stage {
    ST_GPT2, ST_LLAMA3, ST_QWEN2,
    ST_DIGIT,        /* \p{N} */
    ST_DIGITS3,      /* \p{N}{1,3} */
    ST_CRLF,         /* [\r\n] */
    ST_WS_LETTERS,   /* \s?\p{L}+ */
    ST_WS_PUNCT,     /* \s?\p{P}+ */
    ST_CJK_CODER,    /* [一-龥ࠀ-一가-퟿]+ */
    ST_CJK_V3,       /* [一-龥぀-ゟ゠-ヿ]+ */
    ST_DEEPSEEK3
};

static size_t match(enum stage st, const struct cps *c, size_t p, size_t end)
{
    size_t m;
    switch (st) {
    case ST_GPT2: return match_gpt2(c, p, end);
    case ST_LLAMA3: return match_llama3(c, p, end, 3);
    case ST_QWEN2: return match_llama3(c, p, end, 1);
    case ST_DIGIT: return is_number(c, p) ? 1 : 0;
    case ST_DIGITS3: m = run(c, p, end, is_number); return m < 3 ? m : 3;
    case ST_CRLF: return is_crlf(c, p) ? 1 : 0;
    case ST_WS_LETTERS: return opt_ws_run(c, p, end, is_letter);
    case ST_WS_PUNCT: return opt_ws_run(c, p, end, is_punct);
    case ST_CJK_CODER: return run(c, p, end, is_cjk_coder);
    case ST_CJK_V3: return run(c, p, end, is_cjk_v3);
    case ST_DEEPSEEK3: return match_deepseek3(c, p, end);
    }
    return 0;
}

/* Splits every piece [b[i], b[i+1]) (code point indices) further; writes
 * the new boundaries to nb (capacity c->n + 1) and returns their count - 1. */
static size_t split_stage(enum stage st, const struct cps *c, const size_t *b, size_t nb_in,
                          size_t *nb)
{
    size_t k = 0;
    nb[k++] = 0;
    for (size_t i = 0; i < nb_in; i++) {
        size_t p = b[i], end = b[i + 1];
        while (p < end) {
            size_t m = match(st, c, p, end);
            if (m == 0) {       /* gap: grows until the next match or the end */
                p++;
                continue;
            }
            if (nb[k - 1] != p)
                nb[k++] = p;    /* close the gap before this match */
            p += m;
            nb[k++] = p;
        }
        if (nb[k - 1] != end)
            nb[k++] = end;
    }
    return k - 1;
}

int tok_pre_split(int pre_kind, const char *text, size_t len, size_t **bounds, size_t *n_out)
{
    struct cps c = {0};
    c.cp = malloc((len + 1) * sizeof *c.cp);
    c.off = malloc((len + 1) * sizeof *c.off);
    size_t *b1 = malloc((len + 2) * sizeof *b1);
    size_t *b2 = malloc((len + 2) * sizeof *b2);
    if (!c.cp || !c.off || !b1 || !b2) {
        free(c.cp), free(c.off), free(b1), free(b2);
        return INFER_ENOMEM;
    }
    for (size_t i = 0; i < len;) {
        c.off[c.n] = i;
        i += infer_utf8_decode(text + i, len - i, &c.cp[c.n]);
        c.n++;
    }
    c.off[c.n] = len;

    /* Each family is a list of regexes applied in turn, each splitting the
     * pieces the previous one left (llama.cpp's multi-regex families). */
    static const enum stage gpt2[] = {ST_GPT2}, llama3[] = {ST_LLAMA3}, qwen2[] = {ST_QWEN2},
        starcoder[] = {ST_DIGIT, ST_GPT2},
        ds_coder[] = {ST_CRLF, ST_WS_LETTERS, ST_WS_PUNCT, ST_CJK_CODER, ST_DIGIT},
        ds_v3[] = {ST_DIGITS3, ST_CJK_V3, ST_DEEPSEEK3};
    const enum stage *stages;
    size_t n_stages;
    switch (pre_kind) {
    case TOK_PRE_LLAMA3: stages = llama3, n_stages = 1; break;
    case TOK_PRE_QWEN2: stages = qwen2, n_stages = 1; break;
    case TOK_PRE_STARCODER: stages = starcoder, n_stages = 2; break;
    case TOK_PRE_DEEPSEEK_CODER: stages = ds_coder, n_stages = 5; break;
    case TOK_PRE_DEEPSEEK3: stages = ds_v3, n_stages = 3; break;
    default: stages = gpt2, n_stages = 1; break;
    }
    size_t nb = 0;
    b1[0] = 0;
    if (c.n > 0) {
        b1[1] = c.n;
        nb = 1;
    }
    for (size_t s = 0; s < n_stages; s++) {
        nb = split_stage(stages[s], &c, b1, nb, b2);
        size_t *tmp = b1;
        b1 = b2;
        b2 = tmp;
    }
    /* code point indices -> byte offsets */
    for (size_t i = 0; i <= nb; i++)
        b1[i] = c.off[b1[i]];
    free(c.cp), free(c.off), free(b2);
    *bounds = b1;
    *n_out = nb;
    return INFER_OK;
}
