/* mkvocab.c: writes a tokenizer-only GGUF with N placeholder tokens, so
 * commons-mkmodel can build synthetic models of any vocabulary size on a GPU
 * machine that has no copy of the real vocabularies (../shared/data). The
 * logits checks feed token ids directly and never tokenize text.
 * Usage: mkvocab OUT.gguf N */
#include <stdio.h>
#include <stdlib.h>

#include "gguf.h"

int main(int argc, char **argv)
{
    long n = argc == 3 ? strtol(argv[2], NULL, 10) : 0;
    if (n < 4 || n > 1 << 22) {
        fprintf(stderr, "usage: mkvocab OUT.gguf N   (4 <= N <= 4194304 tokens)\n");
        return 2;
    }
    char **tok = malloc((size_t)n * sizeof *tok);
    float *score = malloc((size_t)n * sizeof *score);
    int32_t *type = malloc((size_t)n * sizeof *type);
    infer_gguf_writer *w = infer_gguf_writer_new();
    if (!tok || !score || !type || !w) return fprintf(stderr, "mkvocab: out of memory\n"), 1;
    for (long i = 0; i < n; i++) {
        tok[i] = malloc(16);
        snprintf(tok[i], 16, i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : "t%ld", i);
        score[i] = -(float)i;
        type[i] = i < 3 ? (i == 0 ? 2 : 3) : 1; /* unknown, control, normal */
    }
    int rc = infer_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    rc |= infer_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, NULL, (uint64_t)n);
    rc |= infer_gguf_writer_add_arr(w, "tokenizer.ggml.scores", INFER_GGUF_FLOAT32, score, (uint64_t)n);
    rc |= infer_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", INFER_GGUF_INT32, type, (uint64_t)n);
    rc |= infer_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
    rc |= infer_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    char err[256] = "";
    if (rc || infer_gguf_writer_write(w, argv[1], err, sizeof err)) {
        fprintf(stderr, "mkvocab: cannot write %s: %s\n", argv[1], err[0] ? err : "out of memory");
        return 1;
    }
    infer_gguf_writer_free(w);
    for (long i = 0; i < n; i++) free(tok[i]);
    free(tok), free(score), free(type);
    return 0;
}
