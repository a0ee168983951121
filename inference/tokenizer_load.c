/* tokenizer_load.c: builds an infer_tokenizer from the tokenizer.ggml.* keys
 * of a GGUF file: vocabulary texts, scores and types, the text -> id map,
 * byte tokens, BPE merges, special token ids and flags, the pre-tokenizer,
 * and the list of tokens matched whole in text. Defaults for missing keys
 * follow llama.cpp so files converted by its tools behave the same. */
#include "tokenizer_internal.h"
#include "unicode.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int lerr(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int lerr(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

uint64_t tok_hash(const char *s, size_t n)
{
    uint64_t h = TOK_HASH_INIT;
    for (size_t i = 0; i < n; i++)
        h = TOK_HASH_STEP(h, s[i]);
    return h;
}

int32_t tok_lookup(const infer_tokenizer *t, const char *s, size_t len)
{
    return tok_lookup_h(t, s, len, tok_hash(s, len));
}

int32_t tok_lookup_h(const infer_tokenizer *t, const char *s, size_t len, uint64_t h)
{
    for (size_t i = h & t->map_mask;; i = (i + 1) & t->map_mask) {
        int32_t id = t->map[i];
        if (id < 0)
            return -1;
        const struct tok_token *k = &t->tokens[id];
        if (k->len == len && memcmp(t->arena + k->off, s, len) == 0)
            return id;
    }
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

/* Later duplicates of a text replace earlier ones, as in llama.cpp. */
static int build_map(infer_tokenizer *t)
{
    size_t cap = pow2_at_least(2 * (size_t)t->n_vocab);
    t->map = malloc(cap * sizeof *t->map);
    if (!t->map)
        return INFER_ENOMEM;
    memset(t->map, 0xff, cap * sizeof *t->map);
    t->map_mask = cap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const struct tok_token *k = &t->tokens[id];
        size_t i = tok_hash(t->arena + k->off, k->len) & t->map_mask;
        for (;; i = (i + 1) & t->map_mask) {
            int32_t o = t->map[i];
            if (o < 0 || (t->tokens[o].len == k->len &&
                          memcmp(t->arena + t->tokens[o].off, t->arena + k->off, k->len) == 0))
                break;
        }
        t->map[i] = id;
    }
    return INFER_OK;
}

static int load_vocab(infer_tokenizer *t, const infer_gguf *g, char *err, size_t errlen)
{
    infer_gguf_arr toks, scores, types;
    int rc = infer_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks);
    if (rc == INFER_ENOTFOUND)
        return lerr(err, errlen, INFER_EFORMAT, "tokenizer.ggml.tokens: missing");
    if (rc || toks.type != INFER_GGUF_STRING)
        return lerr(err, errlen, INFER_EFORMAT, "tokenizer.ggml.tokens: expected an array of strings");
    if (toks.n == 0 || toks.n > INT32_MAX)
        return lerr(err, errlen, INFER_EFORMAT, "tokenizer.ggml.tokens: %llu tokens, expected 1..%d",
                    (unsigned long long)toks.n, INT32_MAX);
    t->n_vocab = (int32_t)toks.n;
    bool has_scores = infer_gguf_get_arr(g, "tokenizer.ggml.scores", &scores) == INFER_OK;
    bool has_types = infer_gguf_get_arr(g, "tokenizer.ggml.token_type", &types) == INFER_OK;
    if (infer_gguf_find_key(g, "tokenizer.ggml.scores") >= 0 &&
        (!has_scores || scores.n != toks.n || scores.type == INFER_GGUF_STRING))
        return lerr(err, errlen, INFER_EFORMAT,
                    "tokenizer.ggml.scores: expected %llu numbers, one per token",
                    (unsigned long long)toks.n);
    if (infer_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0 &&
        (!has_types || types.n != toks.n || types.type == INFER_GGUF_STRING))
        return lerr(err, errlen, INFER_EFORMAT,
                    "tokenizer.ggml.token_type: expected %llu integers, one per token",
                    (unsigned long long)toks.n);
    uint64_t total = 0;   /* texts are stored NUL-terminated */
    for (uint64_t i = 0; i < toks.n; i++)
        total += toks.strs[i].len + 1;
    if (total >= UINT32_MAX)
        return lerr(err, errlen, INFER_EFORMAT, "tokenizer.ggml.tokens: %llu bytes of text is too much",
                    (unsigned long long)total);
    t->arena = malloc(total + 1);
    t->tokens = calloc(toks.n, sizeof *t->tokens);
    if (!t->arena || !t->tokens)
        return lerr(err, errlen, INFER_ENOMEM, "out of memory for %llu tokens", (unsigned long long)toks.n);
    uint32_t off = 0;
    for (uint64_t i = 0; i < toks.n; i++) {
        struct tok_token *k = &t->tokens[i];
        k->off = off;
        k->len = (uint32_t)toks.strs[i].len;
        memcpy(t->arena + off, toks.strs[i].ptr, k->len);
        t->arena[off + k->len] = 0;
        off += k->len + 1;
        k->type = INFER_TOKEN_NORMAL;
        double d;
        if (has_scores) {
            if (infer_gguf_arr_f64(&scores, i, &d) != INFER_OK)
                return lerr(err, errlen, INFER_EFORMAT, "tokenizer.ggml.scores[%llu]: not a number",
                            (unsigned long long)i);
            k->score = (float)d;
        }
        int64_t ty;
        if (has_types) {
            if (infer_gguf_arr_i64(&types, i, &ty) != INFER_OK || ty < 0 || ty > INFER_TOKEN_BYTE)
                return lerr(err, errlen, INFER_EFORMAT,
                            "tokenizer.ggml.token_type[%llu]: expected a token type 0..6",
                            (unsigned long long)i);
            k->type = (int32_t)ty;
        }
    }
    if (build_map(t))
        return lerr(err, errlen, INFER_ENOMEM, "out of memory for the token map");
    return INFER_OK;
}

static int load_merges(infer_tokenizer *t, const infer_gguf *g, char *err, size_t errlen)
{
    infer_gguf_arr m;
    int rc = infer_gguf_get_arr(g, "tokenizer.ggml.merges", &m);
    if (rc == INFER_ENOTFOUND)
        return lerr(err, errlen, INFER_EFORMAT, "tokenizer.ggml.merges: missing (needed by a gpt2 vocabulary)");
    if (rc || m.type != INFER_GGUF_STRING || m.n > INT32_MAX)
        return lerr(err, errlen, INFER_EFORMAT, "tokenizer.ggml.merges: expected an array of strings");
    size_t cap = pow2_at_least(2 * (size_t)m.n);
    t->merge_keys = malloc(cap * sizeof *t->merge_keys);
    t->merge_rank = malloc(cap * sizeof *t->merge_rank);
    t->merge_result = malloc(cap * sizeof *t->merge_result);
    size_t longest = 0;
    for (uint64_t i = 0; i < m.n; i++)
        if (m.strs[i].len > longest)
            longest = (size_t)m.strs[i].len;
    char *cat = malloc(longest + 1);
    if (!t->merge_keys || !t->merge_rank || !t->merge_result || !cat) {
        free(cat);
        return lerr(err, errlen, INFER_ENOMEM, "out of memory for %llu merges", (unsigned long long)m.n);
    }
    memset(t->merge_keys, 0xff, cap * sizeof *t->merge_keys);
    t->merge_mask = cap - 1;
    for (uint64_t i = 0; i < m.n; i++) {
        const char *s = m.strs[i].ptr;
        size_t len = (size_t)m.strs[i].len;
        /* "left right": split at the first space after the first byte. */
        const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp) {
            free(cat);
            return lerr(err, errlen, INFER_EFORMAT,
                        "tokenizer.ggml.merges[%llu]: '%.*s' is not two space-separated pieces",
                        (unsigned long long)i, (int)(len > 60 ? 60 : len), s);
        }
        size_t ll = (size_t)(sp - s), rl = len - ll - 1;
        int32_t a = tok_lookup(t, s, ll), b = tok_lookup(t, sp + 1, rl);
        memcpy(cat, s, ll);
        memcpy(cat + ll, sp + 1, rl);
        int32_t r = tok_lookup(t, cat, ll + rl);
        /* A merge whose parts or result are not tokens can never apply. */
        if (a >= 0 && b >= 0 && r >= 0)
            tok_merge_insert(t, a, b, (int32_t)i, r);
    }
    free(cat);
    return INFER_OK;
}

static int pick_pre(infer_tokenizer *t, const infer_gguf *g, char *err, size_t errlen)
{
    /* ignore_merges and the BOS default follow llama.cpp per name */
    static const struct { const char *name; int kind; bool llama3; } names[] = {
        {"default", TOK_PRE_GPT2, false}, {"gpt-2", TOK_PRE_GPT2, false},
        {"gpt2", TOK_PRE_GPT2, false}, {"phi-2", TOK_PRE_GPT2, false},
        {"mpt", TOK_PRE_GPT2, false}, {"olmo", TOK_PRE_GPT2, false},
        {"jais", TOK_PRE_GPT2, false}, {"roberta-bpe", TOK_PRE_GPT2, false},
        {"jina-es", TOK_PRE_GPT2, false}, {"jina-de", TOK_PRE_GPT2, false},
        {"jina-v1-en", TOK_PRE_GPT2, false}, {"jina-v2-es", TOK_PRE_GPT2, false},
        {"jina-v2-de", TOK_PRE_GPT2, false}, {"jina-v2-code", TOK_PRE_GPT2, false},
        {"gigachat", TOK_PRE_GPT2, false}, {"trillion", TOK_PRE_GPT2, false},
        {"llama3", TOK_PRE_LLAMA3, true}, {"llama-v3", TOK_PRE_LLAMA3, true},
        {"llama-bpe", TOK_PRE_LLAMA3, true}, {"falcon3", TOK_PRE_LLAMA3, true},
        {"falcon-h1", TOK_PRE_LLAMA3, true}, {"pixtral", TOK_PRE_LLAMA3, true},
        {"midm-2.0", TOK_PRE_LLAMA3, true}, {"lfm2", TOK_PRE_LLAMA3, true},
        {"dbrx", TOK_PRE_LLAMA3, false}, {"smaug-bpe", TOK_PRE_LLAMA3, false},
        {"chatglm-bpe", TOK_PRE_LLAMA3, false},
        {"qwen2", TOK_PRE_QWEN2, false}, {"deepseek-r1-qwen", TOK_PRE_QWEN2, false},
        {"stablelm2", TOK_PRE_QWEN2, false}, {"megrez", TOK_PRE_QWEN2, false},
        {"hunyuan", TOK_PRE_QWEN2, false},
        {"starcoder", TOK_PRE_STARCODER, false}, {"smollm", TOK_PRE_STARCODER, false},
        {"refact", TOK_PRE_STARCODER, false}, {"command-r", TOK_PRE_STARCODER, false},
        {"codeshell", TOK_PRE_STARCODER, false}, {"exaone", TOK_PRE_STARCODER, false},
        {"minerva-7b", TOK_PRE_STARCODER, false},
        {"deepseek-coder", TOK_PRE_DEEPSEEK_CODER, false},
        {"deepseek-v3", TOK_PRE_DEEPSEEK3, false},
    };
    infer_gguf_str pre = {"default", 7};
    if (infer_gguf_find_key(g, "tokenizer.ggml.pre") >= 0 &&
        infer_gguf_get_str(g, "tokenizer.ggml.pre", &pre) != INFER_OK)
        return lerr(err, errlen, INFER_EFORMAT, "tokenizer.ggml.pre: expected a string");
    size_t n = pre.len < sizeof t->pre - 1 ? (size_t)pre.len : sizeof t->pre - 1;
    memcpy(t->pre, pre.ptr, n);
    t->pre[n] = 0;
    if (t->type == INFER_VOCAB_SPM)
        return INFER_OK;   /* SentencePiece has no regex pre-tokenizer */
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strlen(names[i].name) == pre.len && memcmp(names[i].name, pre.ptr, pre.len) == 0) {
            t->pre_kind = names[i].kind;
            t->ignore_merges = names[i].llama3;
            return INFER_OK;
        }
    }
    return lerr(err, errlen, INFER_EUNSUPPORTED,
                "tokenizer.ggml.pre '%.*s' is not a supported BPE pre-tokenizer (supported: "
                "gpt-2 family, llama3/llama-bpe, qwen2, starcoder/smollm family, "
                "deepseek-coder, deepseek-v3)",
                (int)(pre.len > 60 ? 60 : pre.len), pre.ptr);
}

static int32_t read_id(const infer_tokenizer *t, const infer_gguf *g, const char *key, int32_t def)
{
    uint32_t v;
    int rc = infer_gguf_get_u32(g, key, &v);
    if (rc == INFER_ENOTFOUND)
        return def < t->n_vocab ? def : -1;
    /* negative or out-of-range ids mean "none" (some converters write -1) */
    return rc == INFER_OK && v < (uint32_t)t->n_vocab ? (int32_t)v : -1;
}

static bool read_flag(const infer_gguf *g, const char *key, bool def)
{
    bool v;
    return infer_gguf_get_bool(g, key, &v) == INFER_OK ? v : def;
}

/* End-of-turn markers of the chat formats we know, in priority order. */
static const char *const EOT_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
    "<|eom_id|>", "<\xef\xbd\234end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
};

static void load_specials_ids(infer_tokenizer *t, const infer_gguf *g)
{
    bool spm = t->type == INFER_VOCAB_SPM;
    t->bos = read_id(t, g, "tokenizer.ggml.bos_token_id", spm ? 1 : -1);
    t->eos = read_id(t, g, "tokenizer.ggml.eos_token_id", spm ? 2 : -1);
    t->unk = read_id(t, g, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1);
    t->pad = read_id(t, g, "tokenizer.ggml.padding_token_id", -1);
    t->eot = read_id(t, g, "tokenizer.ggml.eot_token_id", -1);
    for (size_t i = 0; t->eot < 0 && i < sizeof EOT_TEXTS / sizeof EOT_TEXTS[0]; i++) {
        int32_t id = tok_lookup(t, EOT_TEXTS[i], strlen(EOT_TEXTS[i]));
        if (id >= 0 && id != t->eos)
            t->eot = id;
    }
    t->add_bos = read_flag(g, "tokenizer.ggml.add_bos_token", spm || t->ignore_merges);
    t->add_eos = read_flag(g, "tokenizer.ggml.add_eos_token", false);
    t->add_space_prefix = read_flag(g, "tokenizer.ggml.add_space_prefix", spm);
}

static void set_bit(uint8_t *bits, uint8_t b) { bits[b >> 3] |= (uint8_t)(1u << (b & 7)); }

static int cmp_u32_desc(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int build_special_tables(infer_tokenizer *t)
{
    size_t nl = 0;
    t->special_lens = malloc((size_t)t->n_vocab * sizeof *t->special_lens);
    t->special_pair = calloc(65536 / 8, 1);
    t->eog = malloc((3 + sizeof EOT_TEXTS / sizeof EOT_TEXTS[0]) * sizeof *t->eog);
    if (!t->special_lens || !t->special_pair || !t->eog)
        return INFER_ENOMEM;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (tok_special_kind(t, id) == TOK_PLAIN)
            continue;
        const uint8_t *s = (const uint8_t *)t->arena + t->tokens[id].off;
        if (t->tokens[id].len == 1)
            set_bit(t->special_one, s[0]);
        else
            set_bit(t->special_pair + s[0] * 32, s[1]);
        t->special_lens[nl++] = t->tokens[id].len;
    }
    /* distinct lengths, longest first, for leftmost-longest matching */
    qsort(t->special_lens, nl, sizeof *t->special_lens, cmp_u32_desc);
    size_t k = 0;
    for (size_t i = 0; i < nl; i++)
        if (k == 0 || t->special_lens[k - 1] != t->special_lens[i])
            t->special_lens[k++] = t->special_lens[i];
    t->n_special_lens = k;
    /* end of generation: EOS, EOT and any other known end-of-turn marker */
    t->n_eog = 0;
    int32_t cand[3] = {t->eos, t->eot, -1};
    for (size_t i = 0; i < 3; i++)
        if (cand[i] >= 0)
            t->eog[t->n_eog++] = cand[i];
    for (size_t i = 0; i < sizeof EOT_TEXTS / sizeof EOT_TEXTS[0]; i++) {
        int32_t id = tok_lookup(t, EOT_TEXTS[i], strlen(EOT_TEXTS[i]));
        bool seen = false;
        for (size_t j = 0; j < t->n_eog; j++)
            seen |= t->eog[j] == id;
        if (id >= 0 && !seen)
            t->eog[t->n_eog++] = id;
    }
    return INFER_OK;
}

static void byte_tokens(infer_tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        char s[8];
        size_t n;
        if (t->type == INFER_VOCAB_SPM)
            n = (size_t)snprintf(s, sizeof s, "<0x%02X>", b);
        else
            n = infer_utf8_encode(tok_byte_to_cp((uint8_t)b), s);
        t->byte_tok[b] = tok_lookup(t, s, n);
    }
}

int infer_tokenizer_load(const infer_gguf *g, infer_tokenizer **out, char *err, size_t errlen)
{
    if (!g || !out)
        return INFER_EINVAL;
    *out = NULL;
    infer_gguf_str model;
    int rc = infer_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc == INFER_ENOTFOUND)
        return lerr(err, errlen, INFER_ENOTFOUND, "tokenizer.ggml.model: missing (no tokenizer in this file)");
    if (rc)
        return lerr(err, errlen, INFER_EFORMAT, "tokenizer.ggml.model: expected a string");
    int type;
    if (model.len == 5 && memcmp(model.ptr, "llama", 5) == 0)
        type = INFER_VOCAB_SPM;
    else if (model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0)
        type = INFER_VOCAB_BPE;
    else
        return lerr(err, errlen, INFER_EUNSUPPORTED,
                    "tokenizer.ggml.model '%.*s' is not supported (expected 'llama' or 'gpt2')",
                    (int)(model.len > 60 ? 60 : model.len), model.ptr);
    infer_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return lerr(err, errlen, INFER_ENOMEM, "out of memory");
    t->type = type;
    if (!(rc = load_vocab(t, g, err, errlen)) && !(rc = pick_pre(t, g, err, errlen)) &&
        !(type == INFER_VOCAB_BPE && (rc = load_merges(t, g, err, errlen)))) {
        byte_tokens(t);
        load_specials_ids(t, g);
        if (build_special_tables(t))
            rc = lerr(err, errlen, INFER_ENOMEM, "out of memory for special tokens");
    }
    if (rc) {
        infer_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return INFER_OK;
}

void infer_tokenizer_free(infer_tokenizer *t)
{
    if (!t)
        return;
    free(t->arena);
    free(t->tokens);
    free(t->map);
    free(t->merge_keys);
    free(t->merge_rank);
    free(t->merge_result);
    free(t->special_lens);
    free(t->special_pair);
    free(t->eog);
    free(t);
}
