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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static infer_tokenizer *load_vocab(const char *name, infer_gguf **gout)
{
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/%s", vocab_dir, name);
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

/* Runs every case of VOCAB.inp/.out; returns the number of failures. With
 * roundtrip, also checks that detokenizing gives back the input text. */
static int run_conformance(const char *name, bool roundtrip, int *n_cases)
{
    char path[1024];
    size_t inp_len, out_len;
    snprintf(path, sizeof path, "%s/%s.inp", vocab_dir, name);
    char *inp = read_file(path, &inp_len);
    ck_assert_msg(inp != NULL, "cannot read %s", path);
    snprintf(path, sizeof path, "%s/%s.out", vocab_dir, name);
    char *out = read_file(path, &out_len);
    ck_assert_msg(out != NULL, "cannot read %s", path);
    infer_tokenizer *t = load_vocab(name, NULL);

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
    int cases = 0;
    int failures = run_conformance(name, false, &cases);
    fprintf(stderr, "%s: %d cases, %d failed\n", name, cases, failures);
    ck_assert_int_gt(cases, 10);
    ck_assert_msg(failures == 0, "%s: %d of %d cases failed (listed above)", name, failures, cases);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc > 1)
        vocab_dir = argv[1];
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_conformance, 0, 3);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
