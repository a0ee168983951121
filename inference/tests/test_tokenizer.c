/* test_tokenizer.c: tokenizer tests (Check).
 * Conformance: every case of every ggml-vocab-*.gguf.inp/.out pair in the
 * vocab folder is tokenized without BOS/EOS and without special-token
 * parsing (the conventions of llama.cpp's test-tokenizer-0) and compared with
 * the expected ids; each failing case is printed with its input. Then unit
 * tests: round trips through detokenize, special tokens, BOS/EOS rules,
 * buffer sizes, invalid UTF-8, the pre-tokenizer splits, and malformed
 * tokenizer metadata.
 * Usage: test_tokenizer VOCAB_DIR */
#include "gguf.h"
#include "tokenizer.h"
#include "tokenizer_internal.h"

#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *vocab_dir = ".";

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static infer_tokenizer *load_path(const char *path, infer_gguf **gout)
{
    char err[512];
    const char *name = path;
    infer_gguf *g;
    int rc = infer_gguf_open(path, &g, err, sizeof err);
    ck_assert_msg(rc == INFER_OK, "%s", err);
    infer_tokenizer *t;
    rc = infer_tokenizer_load(g, &t, err, sizeof err);
    ck_assert_msg(rc == INFER_OK, "%s: %s", name, err);
    if (gout)
        *gout = g;
    else
        infer_gguf_close(g);
    return t;
}

static infer_tokenizer *load_vocab(const char *name, infer_gguf **gout)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", vocab_dir, name);
    return load_path(path, gout);
}

/* Tokenize into a growing buffer; exercises the INFER_ERANGE protocol. */
static int32_t *tokenize(const infer_tokenizer *t, const char *s, size_t len, bool add_special,
                         bool parse_special, size_t *n)
{
    int32_t small[4];
    int rc = infer_tokenize(t, s, len, add_special, parse_special, small, 4, n);
    ck_assert(rc == INFER_OK || rc == INFER_ERANGE);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    size_t n2;
    ck_assert_int_eq(infer_tokenize(t, s, len, add_special, parse_special, ids, *n, &n2), INFER_OK);
    ck_assert_uint_eq(n2, *n);
    for (size_t i = 0; i < *n && i < 4; i++)
        ck_assert_int_eq(ids[i], small[i]);
    return ids;
}

static char *detok(const infer_tokenizer *t, const int32_t *ids, size_t n, bool special)
{
    int64_t len = infer_detokenize(t, ids, n, special, NULL, 0);
    ck_assert_int_ge(len, 0);
    char *s = malloc((size_t)len + 1);
    ck_assert_int_eq(infer_detokenize(t, ids, n, special, s, (size_t)len), len);
    s[len] = 0;
    return s;
}

static void print_ids(const char *label, const int32_t *ids, size_t n)
{
    fprintf(stderr, "    %s:", label);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* Runs every case of INP against the ids in OUT with the vocabulary of
 * GGUF; returns the number of failures. With roundtrip, also checks that
 * detokenizing gives back the input text. */
static int run_conformance(const char *gguf, const char *inp_path, const char *out_path,
                           bool roundtrip, int *n_cases)
{
    const char *name = gguf;
    size_t inp_len, out_len;
    char *inp = read_file(inp_path, &inp_len);
    ck_assert_msg(inp != NULL, "cannot read %s", inp_path);
    char *out = read_file(out_path, &out_len);
    ck_assert_msg(out != NULL, "cannot read %s", out_path);
    infer_tokenizer *t = load_path(gguf, NULL);

    /* Cases are separated by "\n__ggml_vocab_test__\n"; one .out line each. */
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t sep_len = sizeof sep - 1;
    char *line = out;   /* walks the .out lines, empty ones included */
    int failures = 0, cases = 0;
    size_t pos = 0;
    while (pos < inp_len) {
        char *next = strstr(inp + pos, sep);
        size_t end = next ? (size_t)(next - inp) : inp_len;
        const char *text = inp + pos;
        size_t len = end - pos;
        cases++;
        ck_assert_msg(line != NULL, "%s: case %d has no line in the .out file", name, cases);
        char *eol = strchr(line, '\n');
        if (eol)
            *eol = 0;
        int32_t want[4096];
        size_t nwant = 0;
        const char *p = line;
        while (*p) {
            char *e;
            long v = strtol(p, &e, 10);
            if (e == p)
                break;
            ck_assert_uint_lt(nwant, 4096);
            want[nwant++] = (int32_t)v;
            p = e;
        }
        size_t n;
        int32_t *got = tokenize(t, text, len, false, false, &n);
        bool ok = n == nwant && memcmp(got, want, n * sizeof *got) == 0;
        if (!ok) {
            failures++;
            fprintf(stderr, "%s case %d FAILED, input (%zu bytes): '%.*s'\n", name, cases, len,
                    (int)len, text);
            print_ids("expected", want, nwant);
            print_ids("got     ", got, n);
        }
        if (roundtrip) {
            char *back = detok(t, got, n, false);
            if (strlen(back) != len || memcmp(back, text, len) != 0) {
                failures++;
                fprintf(stderr, "%s case %d: detokenize gave '%s' for input '%.*s'\n", name,
                        cases, back, (int)len, text);
            }
            free(back);
        }
        free(got);
        line = eol ? eol + 1 : NULL;
        if (!next)
            break;
        pos = end + sep_len;
    }
    ck_assert_msg(line == NULL || *line == 0, "%s: the .out file has more lines than the %d cases",
                  name, cases);
    *n_cases = cases;
    free(inp);
    free(out);
    infer_tokenizer_free(t);
    return failures;
}

START_TEST(test_conformance)
{
    static const char *names[] = {"ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf",
                                  "ggml-vocab-gpt-2.gguf"};
    const char *name = names[_i];
    char gguf[1024], inp[1100], out[1100];
    snprintf(gguf, sizeof gguf, "%s/%s", vocab_dir, name);
    snprintf(inp, sizeof inp, "%s.inp", gguf);
    snprintf(out, sizeof out, "%s.out", gguf);
    int cases = 0;
    /* every .inp case is valid UTF-8 without double-space runs the vocab
     * lacks, so detokenizing must give the input back exactly */
    int failures = run_conformance(gguf, inp, out, true, &cases);
    fprintf(stderr, "%s: %d cases, %d failed\n", name, cases, failures);
    ck_assert_int_gt(cases, 10);
    ck_assert_msg(failures == 0, "%s: %d of %d cases failed (listed above)", name, failures, cases);
}
END_TEST


/* ---- pre-tokenizer splits against the regex engine's (fixtures/pretok.txt) ---- */

static const char *fixture_dir = ".";

static size_t unhex(const char *h, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned v;
        ck_assert_int_eq(sscanf(h + i, "%2x", &v), 1);
        out[k++] = (char)v;
    }
    return k;
}

START_TEST(test_pretok_fixtures)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/pretok.txt", fixture_dir);
    size_t len;
    char *data = read_file(path, &len);
    ck_assert_msg(data != NULL, "cannot read %s", path);
    int lines = 0, failures = 0;
    for (char *line = data; line && *line;) {
        char *eol = strchr(line, '\n');
        if (eol)
            *eol = 0;
        char *tab1 = strchr(line, '\t');
        ck_assert_ptr_nonnull(tab1);
        char *tab2 = strchr(tab1 + 1, '\t');
        ck_assert_ptr_nonnull(tab2);
        *tab1 = 0;
        int kind = strcmp(line, "gpt2") == 0     ? TOK_PRE_GPT2
                   : strcmp(line, "llama3") == 0 ? TOK_PRE_LLAMA3
                   : strcmp(line, "qwen2") == 0  ? TOK_PRE_QWEN2
                   : strcmp(line, "starcoder") == 0 ? TOK_PRE_STARCODER
                   : strcmp(line, "deepseek-coder") == 0 ? TOK_PRE_DEEPSEEK_CODER
                   : strcmp(line, "deepseek-v3") == 0 ? TOK_PRE_DEEPSEEK3 : -1;
        ck_assert_int_ge(kind, 0);
        char text[1024], want[1024], got[2048];
        size_t tlen = unhex(tab1 + 1, (size_t)(tab2 - tab1 - 1), text);
        /* expected pieces, joined with '|' for display and comparison */
        size_t wl = 0;
        for (char *p = tab2 + 1; *p;) {
            char *comma = strchr(p, ',');
            size_t hl = comma ? (size_t)(comma - p) : strlen(p);
            if (wl)
                want[wl++] = '|';
            wl += unhex(p, hl, want + wl);
            p += hl + (comma ? 1 : 0);
        }
        size_t *b, nb;
        ck_assert_int_eq(tok_pre_split(kind, text, tlen, &b, &nb), INFER_OK);
        size_t gl = 0;
        for (size_t i = 0; i < nb; i++) {
            if (gl)
                got[gl++] = '|';
            memcpy(got + gl, text + b[i], b[i + 1] - b[i]);
            gl += b[i + 1] - b[i];
        }
        free(b);
        lines++;
        if (gl != wl || memcmp(got, want, gl) != 0) {
            failures++;
            fprintf(stderr, "pre-tokenizer %s FAILED on '%.*s'\n    expected '%.*s'\n    got      '%.*s'\n",
                    line, (int)tlen, text, (int)wl, want, (int)gl, got);
        }
        line = eol ? eol + 1 : NULL;
    }
    free(data);
    ck_assert_int_gt(lines, 250);
    ck_assert_msg(failures == 0, "%d of %d pre-tokenizer cases failed (listed above)", failures, lines);
}
END_TEST

/* ---- the real vocabularies: special tokens, BOS/EOS, pieces, buffers ---- */

START_TEST(test_special_tokens)
{
    infer_tokenizer *t = load_vocab("ggml-vocab-gpt-2.gguf", NULL);
    const char *text = "a<|endoftext|>b";
    size_t n;
    int32_t *ids = tokenize(t, text, strlen(text), false, true, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(ids[1], 50256);
    ck_assert_int_eq(ids[1], infer_tokenizer_eos(t));
    char *back = detok(t, ids, n, true);
    ck_assert_str_eq(back, text);
    free(back);
    back = detok(t, ids, n, false);   /* EOS is not printed as text... */
    free(back);
    free(ids);
    ids = tokenize(t, text, strlen(text), false, false, &n);   /* ...and not parsed */
    ck_assert_uint_gt(n, 3);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_ne(ids[i], 50256);
    back = detok(t, ids, n, false);
    ck_assert_str_eq(back, text);
    free(back);
    free(ids);
    ck_assert(infer_token_is_eog(t, 50256));
    ck_assert(!infer_token_is_eog(t, 0));
    infer_tokenizer_free(t);

    /* Phi-3: <|end|> is a control token found by parse_special, and the EOT */
    t = load_vocab("ggml-vocab-phi-3.gguf", NULL);
    int32_t end = infer_token_lookup(t, "<|end|>", 7);
    ck_assert_int_ge(end, 0);
    ck_assert_int_eq(infer_tokenizer_eot(t), end);
    ck_assert(infer_token_is_eog(t, end));
    ck_assert(infer_token_is_eog(t, infer_tokenizer_eos(t)));
    text = "<|user|>\nHi<|end|>\n<|assistant|>";
    ids = tokenize(t, text, strlen(text), true, true, &n);
    ck_assert_int_eq(ids[0], infer_tokenizer_bos(t));
    ck_assert_int_eq(ids[1], infer_token_lookup(t, "<|user|>", 8));
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found |= ids[i] == end;
    ck_assert(found);
    ck_assert_int_eq(ids[n - 1], infer_token_lookup(t, "<|assistant|>", 13));
    free(ids);
    infer_tokenizer_free(t);
}
END_TEST

START_TEST(test_bos_eos_and_buffers)
{
    infer_tokenizer *t = load_vocab("ggml-vocab-llama-spm.gguf", NULL);
    ck_assert_int_eq(infer_tokenizer_type(t), INFER_VOCAB_SPM);
    ck_assert_int_eq(infer_tokenizer_n_vocab(t), 32000);
    ck_assert_int_eq(infer_tokenizer_bos(t), 1);
    ck_assert_int_eq(infer_tokenizer_eos(t), 2);
    ck_assert_int_eq(infer_tokenizer_unk(t), 0);
    ck_assert(infer_tokenizer_add_bos(t));
    ck_assert(!infer_tokenizer_add_eos(t));
    size_t n, n0;
    int32_t *ids = tokenize(t, "Hello world", 11, true, false, &n);
    int32_t *plain = tokenize(t, "Hello world", 11, false, false, &n0);
    ck_assert_uint_eq(n, n0 + 1);
    ck_assert_int_eq(ids[0], 1);
    ck_assert(memcmp(ids + 1, plain, n0 * sizeof *ids) == 0);
    /* BOS prints nothing unless special is asked for */
    char buf[64];
    ck_assert_int_eq(infer_token_piece(t, 1, false, buf, sizeof buf), 0);
    ck_assert_int_eq(infer_token_piece(t, 1, true, buf, sizeof buf), 3);
    ck_assert(memcmp(buf, "<s>", 3) == 0);
    char *back = detok(t, ids, n, false);
    ck_assert_str_eq(back, "Hello world");
    free(back);
    /* pieces: the space mark becomes a space; byte tokens become bytes */
    int32_t hello = infer_token_lookup(t, "\xe2\x96\x81Hello", 8);
    ck_assert_int_ge(hello, 0);
    ck_assert_int_eq(infer_token_piece(t, hello, false, buf, sizeof buf), 6);
    ck_assert(memcmp(buf, " Hello", 6) == 0);
    ck_assert_int_eq(infer_token_piece(t, hello, false, buf, 2), 6);  /* truncated, full length */
    ck_assert(memcmp(buf, " H", 2) == 0);
    int32_t nl = infer_token_lookup(t, "<0x0A>", 6);
    ck_assert_int_eq(infer_token_type(t, nl), INFER_TOKEN_BYTE);
    ck_assert_int_eq(infer_token_piece(t, nl, false, buf, sizeof buf), 1);
    ck_assert_int_eq(buf[0], '\n');
    ck_assert_int_eq(infer_token_piece(t, 32000, false, buf, sizeof buf), -1);
    ck_assert_int_eq(infer_token_piece(t, -1, false, buf, sizeof buf), -1);
    int32_t bad[2] = {5, 99999};
    ck_assert_int_eq(infer_detokenize(t, bad, 2, false, buf, sizeof buf), -1);
    size_t len;
    ck_assert_str_eq(infer_token_text(t, hello, &len), "\xe2\x96\x81Hello");
    ck_assert_uint_eq(len, 8);
    ck_assert_ptr_null(infer_token_text(t, 32000, &len));
    ck_assert_int_eq(infer_token_lookup(t, "no-such-token-text", 18), -1);
    /* too small an output buffer: INFER_ERANGE with the needed count */
    int32_t two[2];
    ck_assert_int_eq(infer_tokenize(t, "Hello world", 11, true, false, two, 2, &n0), INFER_ERANGE);
    ck_assert_uint_eq(n0, n);
    ck_assert_int_eq(two[0], 1);
    ck_assert_int_eq(infer_tokenize(t, "", 0, false, false, NULL, 0, &n0), INFER_OK);
    ck_assert_uint_eq(n0, 0);
    ck_assert_int_eq(infer_tokenize(t, NULL, 3, false, false, two, 2, &n0), INFER_EINVAL);
    free(ids);
    free(plain);
    infer_tokenizer_free(t);

    /* GPT-2 has no add_bos key: a BPE vocabulary adds no BOS by default */
    t = load_vocab("ggml-vocab-gpt-2.gguf", NULL);
    ck_assert_int_eq(infer_tokenizer_type(t), INFER_VOCAB_BPE);
    ck_assert_str_eq(infer_tokenizer_pre(t), "gpt-2");
    ck_assert(!infer_tokenizer_add_bos(t));
    ids = tokenize(t, "Hello world", 11, true, false, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(infer_token_piece(t, ids[1], false, buf, sizeof buf), 6);
    ck_assert(memcmp(buf, " world", 6) == 0);
    free(ids);
    infer_tokenizer_free(t);
}
END_TEST

/* Arbitrary bytes (invalid UTF-8, NUL, control bytes) must tokenize and
 * come back unchanged through byte tokens. */
START_TEST(test_arbitrary_bytes_roundtrip)
{
    static const char *names[] = {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf",
                                  "ggml-vocab-phi-3.gguf"};
    char text[512];
    size_t len = 0;
    for (int i = 0; i < 256; i++)
        text[len++] = (char)i;
    static const char tail[] = "\xc3(\xe2\x82 \xf0\x9f\x98 x\xed\xa0\x80y\xf4\x90\x80\x80 z\xc0\xaf";
    memcpy(text + len, tail, sizeof tail - 1);
    len += sizeof tail - 1;
    for (int v = 0; v < 3; v++) {
        infer_tokenizer *t = load_vocab(names[v], NULL);
        size_t n;
        int32_t *ids = tokenize(t, text, len, false, false, &n);
        int64_t blen = infer_detokenize(t, ids, n, false, NULL, 0);
        char *back = malloc((size_t)blen + 1);
        ck_assert_int_eq(infer_detokenize(t, ids, n, false, back, (size_t)blen), blen);
        ck_assert_msg(blen == (int64_t)len && memcmp(back, text, len) == 0,
                      "%s: %zu bytes came back as %lld", names[v], len, (long long)blen);
        free(back);
        free(ids);
        infer_tokenizer_free(t);
    }
}
END_TEST

/* A long text: the heap-based merges keep this quick (timing is measured by
 * bench/, not asserted); the ids must still round-trip. */
START_TEST(test_long_text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/ggml-vocab-gpt-2.gguf.inp", vocab_dir);
    size_t len;
    char *inp = read_file(path, &len);
    ck_assert_ptr_nonnull(inp);
    size_t reps = 100, big_len = len * reps;
    char *big = malloc(big_len + 1);
    for (size_t i = 0; i < reps; i++)
        memcpy(big + i * len, inp, len);
    static const char *names[] = {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"};
    for (int v = 0; v < 2; v++) {
        infer_tokenizer *t = load_vocab(names[v], NULL);
        size_t n;
        int32_t *ids = tokenize(t, big, big_len, false, false, &n);
        ck_assert_uint_gt(n, big_len / 8);
        char *back = malloc(big_len + 16);
        ck_assert_int_eq(infer_detokenize(t, ids, n, false, back, big_len + 16), (int64_t)big_len);
        ck_assert(memcmp(back, big, big_len) == 0);
        free(back);
        free(ids);
        infer_tokenizer_free(t);
    }
    free(big);
    free(inp);
}
END_TEST

/* Random mixtures of ASCII, whitespace runs, multi-byte characters, stray
 * bytes and (with_specials) special-token text, fixed seed: every
 * vocabulary must give the text back, with and without special-token
 * parsing. SentencePiece vocabularies get no special-token text: they put a
 * space prefix after each special token (as llama.cpp and HF's legacy Llama
 * tokenizer do), which test_spm_space_after_special checks instead. */
static size_t random_text(unsigned *seed, bool with_specials, char *buf, size_t cap)
{
    static const char *bits[] = {"a", "Z", "7", " ", "  ", "\n", "\t", "\r\n", "'s", "'LL", ".",
                                 "!!", "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\xa6\x99", "\x80",
                                 "\xff", "\xc3", "\x00", "<0x41>", "123456", "Hello", " world", "_",
                                 /* special-token text last */
                                 "<|endoftext|>", "<s>", "</s>", "<|end|>"};
    const size_t n_bits = sizeof bits / sizeof bits[0] - (with_specials ? 0 : 4);
    size_t n = 0, want = (size_t)(rand_r(seed) % 120);
    while (n < want) {
        const char *b = bits[rand_r(seed) % n_bits];
        size_t l = b[0] ? strlen(b) : 1;   /* "\x00" is one NUL byte */
        if (n + l > cap)
            break;
        memcpy(buf + n, b, l);
        n += l;
    }
    return n;
}

START_TEST(test_random_roundtrip)
{
    static const char *names[] = {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf",
                                  "ggml-vocab-phi-3.gguf"};
    for (int v = 0; v < 3; v++) {
        infer_tokenizer *t = load_vocab(names[v], NULL);
        bool spm = infer_tokenizer_type(t) == INFER_VOCAB_SPM;
        unsigned seed = 1234;
        for (int i = 0; i < 300; i++) {
            char text[512];
            size_t len = random_text(&seed, !spm, text, sizeof text);
            bool parse = i % 2;
            size_t n;
            int32_t *ids = tokenize(t, text, len, false, parse, &n);
            int64_t blen = infer_detokenize(t, ids, n, parse, NULL, 0);
            char *back = malloc((size_t)blen + 1);
            ck_assert_int_eq(infer_detokenize(t, ids, n, parse, back, (size_t)blen), blen);
            if (blen != (int64_t)len || memcmp(back, text, len) != 0) {
                fprintf(stderr, "%s: round trip %d (parse_special %d) lost text:\n  in : '%.*s'\n  out: '%.*s'\n",
                        names[v], i, parse, (int)len, text, (int)blen, back);
                ck_abort_msg("round trip failed");
            }
            free(back);
            free(ids);
        }
        infer_tokenizer_free(t);
    }
}
END_TEST

START_TEST(test_spm_space_after_special)
{
    infer_tokenizer *t = load_vocab("ggml-vocab-llama-spm.gguf", NULL);
    size_t n, n2;
    int32_t *ids = tokenize(t, "</s>x", 5, false, true, &n);
    int32_t *x = tokenize(t, "x", 1, false, false, &n2);   /* "▁x": prefix at text start */
    ck_assert_uint_eq(n, 1 + n2);
    ck_assert_int_eq(ids[0], 2);
    ck_assert(memcmp(ids + 1, x, n2 * sizeof *x) == 0);
    char *back = detok(t, ids, n, true);
    ck_assert_str_eq(back, "</s> x");
    free(back);
    free(ids);
    free(x);
    infer_tokenizer_free(t);
}
END_TEST

/* One tokenizer, several threads: same ids as a single thread. */
struct thread_job {
    const infer_tokenizer *t;
    const char *text;
    size_t len;
    int32_t *ids;
    size_t n;
};

static void *tokenize_job(void *arg)
{
    struct thread_job *j = arg;
    for (int rep = 0; rep < 20; rep++)
        if (infer_tokenize(j->t, j->text, j->len, true, true, j->ids, 100000, &j->n) != INFER_OK)
            j->n = (size_t)-1;
    return NULL;
}

START_TEST(test_threads_share_a_tokenizer)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/ggml-vocab-gpt-2.gguf.inp", vocab_dir);
    size_t len;
    char *text = read_file(path, &len);
    ck_assert_ptr_nonnull(text);
    static const char *names[] = {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"};
    for (int v = 0; v < 2; v++) {
        infer_tokenizer *t = load_vocab(names[v], NULL);
        size_t n_ref;
        int32_t *ref = tokenize(t, text, len, true, true, &n_ref);
        pthread_t th[4];
        struct thread_job jobs[4];
        for (int i = 0; i < 4; i++) {
            jobs[i] = (struct thread_job){t, text, len, malloc(100000 * sizeof(int32_t)), 0};
            ck_assert_int_eq(pthread_create(&th[i], NULL, tokenize_job, &jobs[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            ck_assert_uint_eq(jobs[i].n, n_ref);
            ck_assert(memcmp(jobs[i].ids, ref, n_ref * sizeof *ref) == 0);
            free(jobs[i].ids);
        }
        free(ref);
        infer_tokenizer_free(t);
    }
    free(text);
}
END_TEST

/* ---- synthetic vocabularies built with the GGUF writer ---- */

struct synth {
    const char *model;            /* NULL: no tokenizer.ggml.model */
    const char *pre;              /* NULL: no key */
    const char **tokens;
    size_t n_tokens;
    const float *scores;
    const int32_t *types;
    size_t n_types;               /* lets a test write a wrong-length array */
    const char **merges;
    size_t n_merges;
    bool no_bos_key;
};

static int load_synth(const struct synth *s, infer_tokenizer **t, char *err, size_t errlen)
{
    infer_gguf_writer *w = infer_gguf_writer_new();
    if (s->model)
        ck_assert_int_eq(infer_gguf_writer_add_str(w, "tokenizer.ggml.model", s->model), INFER_OK);
    if (s->pre)
        ck_assert_int_eq(infer_gguf_writer_add_str(w, "tokenizer.ggml.pre", s->pre), INFER_OK);
    if (s->tokens)
        ck_assert_int_eq(infer_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", s->tokens, NULL, s->n_tokens), INFER_OK);
    if (s->scores)
        ck_assert_int_eq(infer_gguf_writer_add_arr(w, "tokenizer.ggml.scores", INFER_GGUF_FLOAT32, s->scores, s->n_tokens), INFER_OK);
    if (s->types)
        ck_assert_int_eq(infer_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", INFER_GGUF_INT32, s->types, s->n_types), INFER_OK);
    if (s->merges)
        ck_assert_int_eq(infer_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", s->merges, NULL, s->n_merges), INFER_OK);
    void *mem;
    size_t size;
    ck_assert_int_eq(infer_gguf_writer_write_mem(w, &mem, &size, NULL, 0), INFER_OK);
    infer_gguf_writer_free(w);
    infer_gguf *g;
    ck_assert_int_eq(infer_gguf_open_memory(mem, size, "synth", &g, NULL, 0), INFER_OK);
    *t = NULL;
    err[0] = 0;
    int rc = infer_tokenizer_load(g, t, err, errlen);
    infer_gguf_close(g);
    free(mem);   /* the tokenizer must not point into the file */
    return rc;
}

/* The 256 GPT-2 byte symbols, then extra tokens. */
static const char **bpe_tokens(const char **extra, size_t n_extra, size_t *n)
{
    const char **v = malloc((256 + n_extra) * sizeof *v);
    static char sym[256][4];
    for (int b = 0; b < 256; b++) {
        uint32_t cp = tok_byte_to_cp((uint8_t)b);
        memset(sym[b], 0, 4);
        if (cp < 0x80)
            sym[b][0] = (char)cp;
        else {
            sym[b][0] = (char)(0xC0 | (cp >> 6));
            sym[b][1] = (char)(0x80 | (cp & 0x3F));
        }
        v[b] = sym[b];
    }
    for (size_t i = 0; i < n_extra; i++)
        v[256 + i] = extra[i];
    *n = 256 + n_extra;
    return v;
}

START_TEST(test_bpe_merge_order)
{
    const char *extra[] = {"ab", "bc", "abc", "xyz"};   /* ids 256..259; byte b is id b */
    size_t n, k;
    const char **toks = bpe_tokens(extra, 4, &n);
    char err[256];
    infer_tokenizer *t;
    /* "b c" ranks before "a b": abc -> a + bc, and "a bc" is no merge */
    const char *m1[] = {"b c", "a b", "ab c", "q r"};
    struct synth s = {"gpt2", "gpt-2", toks, n, NULL, NULL, 0, m1, 4, false};
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_OK);
    int32_t *ids = tokenize(t, "abc", 3, false, false, &k);
    ck_assert_uint_eq(k, 2);
    ck_assert_int_eq(ids[0], 'a');
    ck_assert_int_eq(ids[1], 257);
    free(ids);
    ids = tokenize(t, "qr", 2, false, false, &k);   /* "qr" is no token: no merge */
    ck_assert_uint_eq(k, 2);
    free(ids);
    infer_tokenizer_free(t);
    /* "a b" first: ab, then "ab c" gives the whole word */
    const char *m2[] = {"a b", "b c", "ab c"};
    s.merges = m2;
    s.n_merges = 3;
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_OK);
    ids = tokenize(t, "abc abc", 7, false, false, &k);
    ck_assert_uint_eq(k, 3);   /* abc, " " (Ġ), abc: " abc" has no merge with Ġ */
    ck_assert_int_eq(ids[0], 258);
    ck_assert_int_eq(ids[1], ' ');
    ck_assert_int_eq(ids[2], 258);
    free(ids);
    /* no merges for x y z: GPT-2 splits the word into bytes... */
    ids = tokenize(t, "xyz", 3, false, false, &k);
    ck_assert_uint_eq(k, 3);
    free(ids);
    infer_tokenizer_free(t);
    /* ...while Llama 3 takes a word that is itself a token whole */
    s.pre = "llama-bpe";
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_OK);
    ck_assert(infer_tokenizer_add_bos(t) == false || infer_tokenizer_bos(t) < 0 || true);
    ids = tokenize(t, "xyz", 3, false, false, &k);
    ck_assert_uint_eq(k, 1);
    ck_assert_int_eq(ids[0], 259);
    free(ids);
    infer_tokenizer_free(t);
    free(toks);
}
END_TEST

START_TEST(test_spm_scores_and_fallback)
{
    const char *tok[270];
    float sc[270];
    int32_t ty[270];
    static char bytes[256][8];
    size_t n = 0;
    tok[n] = "<unk>", sc[n] = 0, ty[n++] = INFER_TOKEN_UNKNOWN;
    tok[n] = "<s>", sc[n] = 0, ty[n++] = INFER_TOKEN_CONTROL;
    tok[n] = "</s>", sc[n] = 0, ty[n++] = INFER_TOKEN_CONTROL;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        tok[n] = bytes[b], sc[n] = 0, ty[n++] = INFER_TOKEN_BYTE;
    }
    const int32_t A = (int32_t)n;
    const char *words[] = {"a", "b", "c", "ab", "bc", "\xe2\x96\x81"};
    for (int i = 0; i < 6; i++)
        tok[n] = words[i], sc[n] = -5.0f, ty[n++] = INFER_TOKEN_NORMAL;
    sc[A + 3] = -2.0f;   /* ab */
    sc[A + 4] = -1.0f;   /* bc: better, merged first */
    struct synth s = {"llama", NULL, tok, n, sc, ty, n, NULL, 0, false};
    char err[256];
    infer_tokenizer *t;
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_OK);
    size_t k;
    int32_t *ids = tokenize(t, "abc", 3, true, false, &k);
    /* BOS, "▁" (space prefix), a, bc */
    ck_assert_uint_eq(k, 4);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(ids[1], A + 5);
    ck_assert_int_eq(ids[2], A);
    ck_assert_int_eq(ids[3], A + 4);
    free(ids);
    /* unknown characters fall back to byte tokens: z = <0x7A>, é = 2 bytes */
    ids = tokenize(t, "z\xc3\xa9", 3, false, false, &k);
    ck_assert_uint_eq(k, 4);
    ck_assert_int_eq(ids[1], 3 + 0x7A);
    ck_assert_int_eq(ids[2], 3 + 0xC3);
    ck_assert_int_eq(ids[3], 3 + 0xA9);
    char *back = detok(t, ids, k, false);
    ck_assert_str_eq(back, "z\xc3\xa9");
    free(back);
    free(ids);
    /* control tokens are not parsed unless asked; then BOS comes out */
    ids = tokenize(t, "<s>", 3, false, true, &k);
    ck_assert_uint_eq(k, 1);
    ck_assert_int_eq(ids[0], 1);
    free(ids);
    ids = tokenize(t, "<s>", 3, false, false, &k);
    ck_assert_uint_gt(k, 1);
    for (size_t i = 0; i < k; i++)
        ck_assert_int_ne(ids[i], 1);
    free(ids);
    infer_tokenizer_free(t);
    /* swap the scores: now "ab" wins */
    sc[A + 3] = -1.0f;
    sc[A + 4] = -2.0f;
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_OK);
    ids = tokenize(t, "abc", 3, false, false, &k);
    ck_assert_uint_eq(k, 3);
    ck_assert_int_eq(ids[1], A + 3);
    ck_assert_int_eq(ids[2], A + 2);
    free(ids);
    infer_tokenizer_free(t);
}
END_TEST

START_TEST(test_bad_metadata)
{
    const char *tok[] = {"a", "b", "ab"};
    int32_t ty[3] = {1, 1, 1};
    const char *merges[] = {"ab"};
    char err[256];
    infer_tokenizer *t = (infer_tokenizer *)1;
    struct synth s = {NULL, NULL, tok, 3, NULL, NULL, 0, NULL, 0, false};
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_ENOTFOUND);
    ck_assert_ptr_null(t);
    ck_assert_ptr_nonnull(strstr(err, "tokenizer.ggml.model"));
    s.model = "bert";
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err, "'bert'"));
    s.model = "llama";
    s.tokens = NULL;
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "tokenizer.ggml.tokens"));
    s.tokens = tok;
    s.types = ty;
    s.n_types = 2;
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "token_type"));
    s.n_types = 3;
    ty[1] = 9;
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "token_type[1]"));
    ty[1] = 1;
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_OK);
    infer_tokenizer_free(t);
    s.model = "gpt2";
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "merges"));
    s.merges = merges;
    s.n_merges = 1;
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "merges[0]"));
    merges[0] = "a b";
    s.pre = "foo-bar";
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err, "'foo-bar'"));
    s.pre = "qwen2";
    ck_assert_int_eq(load_synth(&s, &t, err, sizeof err), INFER_OK);
    ck_assert_str_eq(infer_tokenizer_pre(t), "qwen2");
    size_t k;
    int32_t *ids = tokenize(t, "abba", 4, false, false, &k);
    ck_assert_uint_eq(k, 3);   /* ab, b, a */
    ck_assert_int_eq(ids[0], 2);
    free(ids);
    infer_tokenizer_free(t);
}
END_TEST

/* ---- Gemma 3 (the default model), against sentencepiece fixtures ---- */

static const char *gemma_path;

START_TEST(test_gemma_vocab)
{
    char inp[1100], out[1100];
    snprintf(inp, sizeof inp, "%s/gemma3-vocab.inp", fixture_dir);
    snprintf(out, sizeof out, "%s/gemma3-vocab.out", fixture_dir);
    int cases = 0;
    int failures = run_conformance(gemma_path, inp, out, true, &cases);
    fprintf(stderr, "gemma3 vocabulary: %d cases, %d failed\n", cases, failures);
    ck_assert_int_gt(cases, 30);
    ck_assert_msg(failures == 0, "%d of %d Gemma cases failed (listed above)", failures, cases);

    infer_tokenizer *t = load_path(gemma_path, NULL);
    ck_assert_int_eq(infer_tokenizer_n_vocab(t), 262144);
    ck_assert_int_eq(infer_tokenizer_bos(t), 2);
    ck_assert(infer_tokenizer_add_bos(t));
    int32_t sot = infer_token_lookup(t, "<start_of_turn>", 15);
    int32_t eot = infer_token_lookup(t, "<end_of_turn>", 13);
    ck_assert_int_ge(sot, 0);
    ck_assert_int_eq(infer_tokenizer_eot(t), eot);
    ck_assert(infer_token_is_eog(t, eot));
    ck_assert(infer_token_is_eog(t, infer_tokenizer_eos(t)));
    const char *chat = "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n";
    size_t n;
    int32_t *ids = tokenize(t, chat, strlen(chat), true, true, &n);
    ck_assert_int_eq(ids[0], 2);
    ck_assert_int_eq(ids[1], sot);
    /* no space prefix in Gemma: "user" follows the marker directly */
    ck_assert_int_eq(ids[2], infer_token_lookup(t, "user", 4));
    char *back = detok(t, ids, n, true);
    ck_assert_str_eq(back + strlen("<bos>"), chat);
    free(back);
    free(ids);
    /* Gemma's user-defined pieces of literal spaces match the raw text, as
     * in llama.cpp (the sentencepiece fixture above leaves such runs out:
     * it would split them into U+2581 pieces). */
    int32_t four = infer_token_lookup(t, "    ", 4);
    ck_assert_int_eq(infer_token_type(t, four), INFER_TOKEN_USER_DEFINED);
    ids = tokenize(t, "    return", 10, false, false, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ids[0], four);
    ck_assert_int_eq(ids[1], infer_token_lookup(t, "return", 6));
    free(ids);
    infer_tokenizer_free(t);
}
END_TEST

/* ---- more vocabularies, converted from Hugging Face files by
 * scripts/get-extra-vocabs (expected ids from the `tokenizers` library) ---- */

static const char *extra_dir;

START_TEST(test_extra_vocabs)
{
    DIR *d = opendir(extra_dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    int vocabs = 0, failures = 0;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 5, ".gguf") != 0)
            continue;
        char gguf[1024], inp[1100], out[1100];
        snprintf(gguf, sizeof gguf, "%s/%s", extra_dir, e->d_name);
        snprintf(inp, sizeof inp, "%s.inp", gguf);
        snprintf(out, sizeof out, "%s.out", gguf);
        int cases = 0;
        int f = run_conformance(gguf, inp, out, true, &cases);
        fprintf(stderr, "%s: %d cases, %d failed\n", e->d_name, cases, f);
        failures += f;
        vocabs++;
    }
    closedir(d);
    ck_assert_int_gt(vocabs, 0);
    ck_assert_msg(failures == 0, "%d cases failed (listed above)", failures);
}
END_TEST

static bool has_gguf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    struct dirent *e;
    bool found = false;
    while (!found && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        found = l >= 5 && strcmp(e->d_name + l - 5, ".gguf") == 0;
    }
    closedir(d);
    return found;
}

int main(int argc, char **argv)
{
    /* test_tokenizer VOCAB_DIR FIXTURE_DIR            the vocab files and units
     * test_tokenizer --gemma MODEL.gguf FIXTURE_DIR    the Gemma 3 vocabulary
     * test_tokenizer --extra DIR                       every DIR/NAME.gguf with .inp/.out
     * The last two exit 77 (skipped) when their files are absent. */
    bool gemma = argc > 3 && strcmp(argv[1], "--gemma") == 0;
    bool extra = !gemma && argc > 2 && strcmp(argv[1], "--extra") == 0;
    if (gemma) {
        gemma_path = argv[2];
        fixture_dir = argv[3];
        FILE *f = fopen(gemma_path, "rb");
        if (!f) {
            printf("skipped: %s not found (scripts/get-model fetches it)\n", gemma_path);
            return 77;
        }
        fclose(f);
    } else if (extra) {
        extra_dir = argv[2];
        if (!has_gguf(extra_dir)) {
            printf("skipped: no vocabularies in %s (scripts/get-extra-vocabs makes them)\n", extra_dir);
            return 77;
        }
    }
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    if (gemma) {
        tcase_add_test(tc, test_gemma_vocab);
    } else if (extra) {
        tcase_add_test(tc, test_extra_vocabs);
    } else {
        if (argc > 1)
            vocab_dir = argv[1];
        if (argc > 2)
            fixture_dir = argv[2];
        tcase_add_loop_test(tc, test_conformance, 0, 3);
        tcase_add_test(tc, test_pretok_fixtures);
        tcase_add_test(tc, test_special_tokens);
        tcase_add_test(tc, test_bos_eos_and_buffers);
        tcase_add_test(tc, test_arbitrary_bytes_roundtrip);
        tcase_add_test(tc, test_long_text);
        tcase_add_test(tc, test_random_roundtrip);
        tcase_add_test(tc, test_spm_space_after_special);
        tcase_add_test(tc, test_threads_share_a_tokenizer);
        tcase_add_test(tc, test_bpe_merge_order);
        tcase_add_test(tc, test_spm_scores_and_fallback);
        tcase_add_test(tc, test_bad_metadata);
    }
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
