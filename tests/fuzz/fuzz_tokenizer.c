/* fuzz_tokenizer.c: libFuzzer harness for the tokenizers
 * (inference/tokenizer.h) on the real vocabularies in
 * ${COMMONS_SHARED_DATA}/vocab: llama-spm (SentencePiece), gpt-2 (byte-level
 * BPE) and phi-3 (SentencePiece, other specials).
 *
 * The vocabularies load once, in LLVMFuzzerInitialize, from the folder named
 * by $COMMONS_FUZZ_VOCAB_DIR (scripts/fuzz sets it), else from the
 * COMMONS_SHARED_DATA of the build.
 *
 * Input: byte 0 picks the vocabulary (mod 3) and the flags (bit 2:
 * add_special, bit 3: parse_special); the rest is text, any bytes.
 * Properties:
 *   - every id is within the vocabulary and the count is the same when the
 *     output buffer is exactly as large as asked for;
 *   - round trip: without special-token parsing, detokenize(tokenize(text))
 *     gives the text back byte for byte (invalid UTF-8 goes through byte
 *     tokens), except where SentencePiece vocabularies cannot by design:
 *     text holding U+2581 (the character SentencePiece uses for a space
 *     reads back as a space), and text that spells a user-defined token
 *     (those are matched even without parse_special, and the text after one
 *     gets a space prefix, as in llama.cpp); those inputs are only checked
 *     for the ids;
 *   - detokenize's length query and its filled result agree, and a too-small
 *     buffer gets a prefix of the full text. */
#include "fuzz_util.h"
#include "gguf.h"
#include "tokenizer.h"

static const char *const names[] = {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf",
                                    "ggml-vocab-phi-3.gguf"};
#define NVOCAB (int)(sizeof names / sizeof names[0])
static infer_tokenizer *toks[NVOCAB];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("COMMONS_FUZZ_VOCAB_DIR");
    if (!dir || !*dir) dir = FUZZ_DEFAULT_VOCAB_DIR;
    for (int v = 0; v < NVOCAB; v++) {
        char path[4096], err[512];
        snprintf(path, sizeof path, "%s/%s", dir, names[v]);
        infer_gguf *g;
        if (infer_gguf_open(path, &g, err, sizeof err) != INFER_OK ||
            infer_tokenizer_load(g, &toks[v], err, sizeof err) != INFER_OK) {
            fprintf(stderr, "fuzz_tokenizer: %s (set COMMONS_FUZZ_VOCAB_DIR to the vocab/ test data)\n", err);
            exit(2);
        }
        infer_gguf_close(g);
    }
    return 0;
}

/* Whether SentencePiece cannot give this text back (see the top comment). */
static int spm_lossy(const infer_tokenizer *t, const char *s, size_t n, const int32_t *ids, size_t nids)
{
    for (size_t i = 0; i + 2 < n; i++)
        if ((uint8_t)s[i] == 0xe2 && (uint8_t)s[i + 1] == 0x96 && (uint8_t)s[i + 2] == 0x81) return 1;
    for (size_t i = 0; i < nids; i++)
        if (infer_token_type(t, ids[i]) == INFER_TOKEN_USER_DEFINED) return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const infer_tokenizer *t = toks[data[0] % NVOCAB];
    bool add_special = data[0] & 4, parse_special = data[0] & 8;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    size_t n = 0;
    int rc = infer_tokenize(t, text, len, add_special, parse_special, NULL, 0, &n);
    FUZZ_CHECK(rc == INFER_OK || rc == INFER_ERANGE, "tokenize (size query) %d", rc);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) abort();
    size_t n2 = 0;
    rc = infer_tokenize(t, text, len, add_special, parse_special, ids, n, &n2);
    FUZZ_CHECK(rc == INFER_OK && n2 == n, "tokenize gave %zu ids after asking for %zu (rc %d)", n2, n, rc);
    int32_t nv = infer_tokenizer_n_vocab(t);
    for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < nv, "id %d of %d", ids[i], nv);

    int64_t blen = infer_detokenize(t, ids, n, parse_special, NULL, 0);
    FUZZ_CHECK(blen >= 0, "detokenize (size query) %lld", (long long)blen);
    char *back = malloc((size_t)blen + 1);
    if (!back) abort();
    FUZZ_CHECK(infer_detokenize(t, ids, n, parse_special, back, (size_t)blen) == blen, "detokenize length");
    if (blen > 1) {
        /* A short buffer gets the same leading bytes. */
        size_t half = (size_t)blen / 2;
        char *part = malloc(half);
        if (!part) abort();
        FUZZ_CHECK(infer_detokenize(t, ids, n, parse_special, part, half) == blen, "short detokenize length");
        FUZZ_CHECK(memcmp(part, back, half) == 0, "short detokenize differs");
        free(part);
    }
    bool spm = infer_tokenizer_type(t) == INFER_VOCAB_SPM;
    if (!add_special && !parse_special && !(spm && spm_lossy(t, text, len, ids, n))) {
        FUZZ_CHECK(blen == (int64_t)len && memcmp(back, text, len) == 0,
                   "%s: round trip changed %zu bytes into %lld", names[data[0] % NVOCAB], len, (long long)blen);
    }
    free(back);
    free(ids);
    return 0;
}
