/* tokenizer_internal.h: the loaded vocabulary shared by tokenizer.c (load,
 * special tokens, pieces), tokenizer_spm.c, tokenizer_bpe.c,
 * tokenizer_pre.c (BPE pre-tokenizers) and tokenizer_heap.c. Not installed. */
#ifndef INFER_TOKENIZER_INTERNAL_H
#define INFER_TOKENIZER_INTERNAL_H

#include "tokenizer.h"

struct tok_token {
    uint32_t off, len;   /* text in the arena */
    float score;
    int32_t type;        /* enum infer_token_type */
};

/* Pre-tokenizer families (regex sets of the HF tokenizers, hand-compiled). */
enum tok_pre {
    TOK_PRE_GPT2 = 1,      /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    TOK_PRE_LLAMA3,        /* case-insensitive contractions, [^\r\n\p{L}\p{N}]?\p{L}+, \p{N}{1,3}, ... */
    TOK_PRE_QWEN2,         /* as LLAMA3 with single digits */
    TOK_PRE_STARCODER,     /* digits split one by one, then GPT2 */
    TOK_PRE_DEEPSEEK_CODER,/* [\r\n], \s?\p{L}+, \s?\p{P}+, CJK runs, \p{N} in turn */
    TOK_PRE_DEEPSEEK3      /* \p{N}{1,3}, CJK/kana runs, then its punctuation-aware pattern */
};

struct infer_tokenizer {
    int type;                   /* enum infer_vocab_type */
    char pre[64];               /* tokenizer.ggml.pre as found (or "default") */
    int pre_kind;               /* enum tok_pre, BPE only */
    int32_t n_vocab;
    char *arena;
    struct tok_token *tokens;

    /* text -> id, open addressing; slots hold ids, -1 empty */
    int32_t *map;
    size_t map_mask;

    /* BPE merges: (left id, right id) -> rank and merged id */
    uint64_t *merge_keys;       /* UINT64_MAX empty */
    int32_t *merge_rank;
    int32_t *merge_result;
    size_t merge_mask;

    /* SPM: id of "<0xXX>"; BPE: id of the GPT-2 symbol of byte b; -1 if none */
    int32_t byte_tok[256];

    int32_t bos, eos, eot, unk, pad;
    bool add_bos, add_eos, add_space_prefix, ignore_merges;

    /* Tokens matched as whole strings in text (see tok_special_kind). */
    uint8_t special_one[32];    /* bitmap: bytes that alone spell one */
    uint8_t *special_pair;      /* 65536-bit map of the first two bytes of longer ones */
    uint32_t *special_lens;     /* distinct text lengths, longest first */
    size_t n_special_lens;

    int32_t *eog;
    size_t n_eog;
};

/* Collects ids; counts past max so callers learn the needed size. */
struct tok_out {
    int32_t *ids;
    size_t max;
    size_t n;
};

static inline void tok_push(struct tok_out *o, int32_t id)
{
    if (o->n < o->max)
        o->ids[o->n] = id;
    o->n++;
}

int32_t tok_lookup(const infer_tokenizer *t, const char *s, size_t len);
/* The same with h = tok_hash(s, len) already known. The hash is FNV-1a, so
 * the hashes of all prefixes of s come out of one pass. */
int32_t tok_lookup_h(const infer_tokenizer *t, const char *s, size_t len, uint64_t h);
uint64_t tok_hash(const char *s, size_t n);
#define TOK_HASH_INIT 1469598103934665603ull
#define TOK_HASH_STEP(h, byte) (((h) ^ (uint8_t)(byte)) * 1099511628211ull)

/* How text spelling a token is treated: user-defined tokens always match as
 * a whole, control/unknown tokens and the named ids (BOS, EOS, EOT, UNK,
 * PAD) only when parse_special is asked for, the rest are plain pieces. */
enum tok_special { TOK_PLAIN = 0, TOK_ALWAYS, TOK_IF_PARSE_SPECIAL };

static inline int tok_special_kind(const infer_tokenizer *t, int32_t id)
{
    if (t->tokens[id].len == 0)
        return TOK_PLAIN;
    int ty = t->tokens[id].type;
    if (ty == INFER_TOKEN_USER_DEFINED)
        return TOK_ALWAYS;
    if (ty == INFER_TOKEN_CONTROL || ty == INFER_TOKEN_UNKNOWN || id == t->bos || id == t->eos ||
        id == t->eot || id == t->unk || id == t->pad)
        return TOK_IF_PARSE_SPECIAL;
    return TOK_PLAIN;
}

/* Encoders for one stretch of plain text (special tokens already split off).
 * Return INFER_OK or INFER_ENOMEM. */
int tok_spm_encode(const infer_tokenizer *t, const char *text, size_t len, bool space_prefix,
                   struct tok_out *out);
int tok_bpe_encode(const infer_tokenizer *t, const char *text, size_t len, struct tok_out *out);

/* Load time: record merge (a, b) -> result at rank; a pair listed twice
 * keeps its first (lowest) rank. merge_keys must have a free slot. */
void tok_merge_insert(infer_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t result);

/* Split text into pre-tokenizer words: *bounds gets n+1 increasing byte
 * offsets (malloc'd) with bounds[0] = 0 and bounds[n] = len. */
int tok_pre_split(int pre_kind, const char *text, size_t len, size_t **bounds, size_t *n);

/* GPT-2's reversible byte <-> printable code point mapping. */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp);   /* -1 if cp is not in the mapping */

/* Binary min-heap of merge candidates ordered by (prio, left). */
struct tok_cand {
    float prio;        /* BPE: rank; SPM: -score */
    int32_t left, right;
    uint32_t check;    /* BPE: merged id; SPM: byte length of the pair */
};

struct tok_heap {
    struct tok_cand *v;
    size_t n, cap;
};

int tok_heap_push(struct tok_heap *h, struct tok_cand c);   /* INFER_OK / INFER_ENOMEM */
bool tok_heap_pop(struct tok_heap *h, struct tok_cand *c);
void tok_heap_free(struct tok_heap *h);

#endif
