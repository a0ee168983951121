/* tokenizer.h: text <-> token ids for the vocabularies stored in GGUF metadata.
 *
 * Two algorithms, chosen by tokenizer.ggml.model:
 *   "llama" — SentencePiece-style: merge pieces by score, "▁" (U+2581) for
 *             spaces, <0xXX> byte fallback (Llama 2, TinyLlama, Mistral,
 *             Phi-3, Gemma — Gemma has its own token list and no space prefix).
 *   "gpt2"  — byte-level BPE: a pre-tokenizer regex chosen by tokenizer.ggml.pre
 *             splits the text, each chunk is mapped through GPT-2's byte→unicode
 *             table and merged by the ranks in tokenizer.ggml.merges.
 * Token types come from tokenizer.ggml.token_type; BOS/EOS/EOT/UNK/PAD ids and
 * add_bos/add_eos from tokenizer.ggml.* keys, with llama.cpp's defaults for
 * "llama" vocabularies and none for "gpt2" ones when a key is missing
 * (docs/tokenizer.md lists them, and the supported pre-tokenizers).
 *
 * A loaded tokenizer owns copies of everything it needs: the GGUF may be
 * closed afterwards. It is immutable, so one tokenizer can serve many threads. */
#ifndef INFER_TOKENIZER_H
#define INFER_TOKENIZER_H

#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

enum infer_vocab_type {
    INFER_VOCAB_SPM = 1,   /* "llama" */
    INFER_VOCAB_BPE = 2    /* "gpt2" */
};

/* Values of tokenizer.ggml.token_type (SentencePiece's piece types). */
enum infer_token_type {
    INFER_TOKEN_UNDEFINED = 0,
    INFER_TOKEN_NORMAL = 1,
    INFER_TOKEN_UNKNOWN = 2,
    INFER_TOKEN_CONTROL = 3,
    INFER_TOKEN_USER_DEFINED = 4,
    INFER_TOKEN_UNUSED = 5,
    INFER_TOKEN_BYTE = 6
};

typedef struct infer_tokenizer infer_tokenizer;

/* Build a tokenizer from the tokenizer.ggml.* keys. Fails with
 * INFER_ENOTFOUND (no tokenizer), INFER_EUNSUPPORTED (unknown model or
 * pre-tokenizer name, named in the message) or INFER_EFORMAT. */
int infer_tokenizer_load(const infer_gguf *g, infer_tokenizer **out, char *err, size_t errlen);
void infer_tokenizer_free(infer_tokenizer *t);   /* NULL is fine */

/* Tokenize len bytes of UTF-8 text (invalid UTF-8 is tokenized byte-wise,
 * never rejected). add_special: add BOS/EOS as the vocabulary's add_bos/add_eos
 * say. parse_special: text like "<start_of_turn>" that spells a control or
 * user-defined token becomes that token; otherwise it is plain text.
 * Writes at most max ids to out and sets *n to the full count; returns
 * INFER_ERANGE when max was too small (call again with *n). */
int infer_tokenize(const infer_tokenizer *t, const char *text, size_t len,
                   bool add_special, bool parse_special,
                   int32_t *out, size_t max, size_t *n);

/* Text of one token as bytes to print: "▁" becomes " ", <0xXX> becomes the
 * byte, GPT-2 byte symbols map back to bytes. Control tokens (BOS, ...) give
 * "" unless special is true. Writes min(len, piece length) bytes, no NUL;
 * returns the full piece length, or -1 for an id out of range. A piece may be
 * a partial UTF-8 sequence: concatenate pieces before printing. */
int64_t infer_token_piece(const infer_tokenizer *t, int32_t id, bool special,
                          char *buf, size_t len);

/* Whole sequence to text, with the SentencePiece rule that the space the
 * tokenizer prefixed to the text is dropped again. Same return convention. */
int64_t infer_detokenize(const infer_tokenizer *t, const int32_t *ids, size_t n,
                         bool special, char *buf, size_t len);

/* Vocabulary facts. Ids are -1 when the vocabulary has no such token. */
int infer_tokenizer_type(const infer_tokenizer *t);          /* enum infer_vocab_type */
const char *infer_tokenizer_pre(const infer_tokenizer *t);   /* pre-tokenizer name */
int32_t infer_tokenizer_n_vocab(const infer_tokenizer *t);
int32_t infer_tokenizer_bos(const infer_tokenizer *t);
int32_t infer_tokenizer_eos(const infer_tokenizer *t);
int32_t infer_tokenizer_eot(const infer_tokenizer *t);
int32_t infer_tokenizer_unk(const infer_tokenizer *t);
int32_t infer_tokenizer_pad(const infer_tokenizer *t);
bool infer_tokenizer_add_bos(const infer_tokenizer *t);
bool infer_tokenizer_add_eos(const infer_tokenizer *t);
/* End of generation: EOS, EOT, and the end-of-turn tokens of known chat
 * formats present in the vocabulary (<end_of_turn>, <|eot_id|>, <|im_end|>, ...). */
bool infer_token_is_eog(const infer_tokenizer *t, int32_t id);
int infer_token_type(const infer_tokenizer *t, int32_t id);  /* enum infer_token_type; 0 if out of range */
float infer_token_score(const infer_tokenizer *t, int32_t id);
/* Stored text of a token, raw ("▁Hello", "Ġworld", "<0x0A>"); NULL if out of range. */
const char *infer_token_text(const infer_tokenizer *t, int32_t id, size_t *len);
/* Id whose stored text is exactly these bytes, or -1. */
int32_t infer_token_lookup(const infer_tokenizer *t, const char *text, size_t len);

#ifdef __cplusplus
}
#endif
#endif
