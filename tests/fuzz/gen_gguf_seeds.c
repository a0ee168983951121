/* gen_gguf_seeds.c: writes the GGUF seed files of corpus/gguf/ with the
 * project's own GGUF writer, so the seeds are reproducible and small (a few
 * KB each): files with every metadata type and a few tensors, and tiny
 * SentencePiece and byte-level BPE vocabularies (one per pre-tokenizer
 * family) so the fuzzer reaches the tokenizer loader from the first run.
 *
 * Usage: gen_gguf_seeds OUT_DIR   (built with COMMONS_FUZZ=ON; the seeds
 * are committed, so this only runs when they change) */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *out_dir;

static void save(infer_gguf_writer *w, const char *name)
{
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/%s", out_dir, name);
    if (infer_gguf_writer_write(w, path, err, sizeof err) != INFER_OK) {
        fprintf(stderr, "gen_gguf_seeds: %s\n", err);
        exit(1);
    }
    infer_gguf_writer_free(w);
}

/* Every metadata type, two small tensors (F32 and Q8_0). */
static void all_types(uint32_t alignment, const char *name)
{
    infer_gguf_writer *w = infer_gguf_writer_new();
    infer_gguf_writer_add_str(w, "general.architecture", "llama");
    if (alignment) infer_gguf_writer_add_u32(w, "general.alignment", alignment);
    infer_gguf_writer_add_u8(w, "t.u8", 200);
    infer_gguf_writer_add_i8(w, "t.i8", -3);
    infer_gguf_writer_add_u16(w, "t.u16", 60000);
    infer_gguf_writer_add_i16(w, "t.i16", -30000);
    infer_gguf_writer_add_u32(w, "llama.context_length", 128);
    infer_gguf_writer_add_i32(w, "t.i32", -1);
    infer_gguf_writer_add_f32(w, "llama.rope.freq_base", 10000.0f);
    infer_gguf_writer_add_bool(w, "t.bool", true);
    infer_gguf_writer_add_u64(w, "t.u64", 1ull << 40);
    infer_gguf_writer_add_i64(w, "t.i64", -(1ll << 40));
    infer_gguf_writer_add_f64(w, "t.f64", 0.5);
    int32_t arr[3] = {1, -2, 3};
    infer_gguf_writer_add_arr(w, "t.arr_i32", INFER_GGUF_INT32, arr, 3);
    const char *strs[2] = {"x", ""};
    infer_gguf_writer_add_arr_str(w, "t.arr_str", strs, NULL, 2);
    float f[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int64_t ne1[1] = {8};
    infer_gguf_writer_add_tensor(w, "a.weight", INFER_TYPE_F32, 1, ne1, f);
    int64_t ne2[2] = {32, 2};
    infer_gguf_writer_add_tensor(w, "b.weight", INFER_TYPE_Q8_0, 2, ne2, NULL);
    int64_t ne0[1] = {0};
    infer_gguf_writer_add_tensor(w, "empty", INFER_TYPE_F16, 1, ne0, NULL);
    save(w, name);
}

static void spm_vocab(void)
{
    infer_gguf_writer *w = infer_gguf_writer_new();
    infer_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    enum { NB = 256, NT = 3 + 5 + NB };
    static char bytes[NB][8];
    const char *toks[NT] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", ("\xe2\x96\x81" "a"), "ab"};
    float scores[NT];
    int32_t types[NT];
    for (int i = 0; i < NB; i++) {
        snprintf(bytes[i], sizeof bytes[i], "<0x%02X>", i);
        toks[8 + i] = bytes[i];
    }
    for (int i = 0; i < NT; i++) {
        scores[i] = i < 8 ? -(float)i : -1000.0f;
        types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 8 ? 1 : 6;
    }
    infer_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, NT);
    infer_gguf_writer_add_arr(w, "tokenizer.ggml.scores", INFER_GGUF_FLOAT32, scores, NT);
    infer_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", INFER_GGUF_INT32, types, NT);
    infer_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
    infer_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    infer_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true);
    save(w, "vocab-spm.gguf");
}

/* GPT-2's byte-to-unicode symbols: printable Latin-1 bytes map to
 * themselves, the rest to U+0100 onwards. */
static void byte_symbol(int b, char *out)
{
    static int next[256], init;
    if (!init) {
        int n = 0;
        for (int i = 0; i < 256; i++) {
            bool keep = (i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255);
            next[i] = keep ? i : 256 + n++;
        }
        init = 1;
    }
    int cp = next[b];
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

static void bpe_vocab(const char *pre, const char *name)
{
    infer_gguf_writer *w = infer_gguf_writer_new();
    infer_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    infer_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre);
    enum { NB = 256, NT = NB + 4 };
    static char sym[NB][4];
    const char *toks[NT];
    int32_t types[NT];
    for (int i = 0; i < NB; i++) {
        byte_symbol(i, sym[i]);
        toks[i] = sym[i];
        types[i] = 1;
    }
    toks[NB] = "he";
    toks[NB + 1] = "\xc4\xa0" "w"; /* "Ġw" */
    toks[NB + 2] = "hel";
    toks[NB + 3] = "<|endoftext|>";
    types[NB] = types[NB + 1] = types[NB + 2] = 1;
    types[NB + 3] = 3;
    const char *merges[3] = {"h e", "\xc4\xa0 w", "he l"};
    infer_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, NT);
    infer_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", INFER_GGUF_INT32, types, NT);
    infer_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, NULL, 3);
    infer_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", NB + 3);
    save(w, name);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_gguf_seeds OUT_DIR\n");
        return 2;
    }
    out_dir = argv[1];
    all_types(0, "types.gguf");
    all_types(64, "types-align64.gguf");
    spm_vocab();
    static const char *pres[][2] = {{"gpt-2", "vocab-bpe-gpt2.gguf"},     {"llama-bpe", "vocab-bpe-llama3.gguf"},
                                    {"qwen2", "vocab-bpe-qwen2.gguf"},     {"starcoder", "vocab-bpe-starcoder.gguf"},
                                    {"deepseek-coder", "vocab-bpe-dscoder.gguf"}, {"deepseek-v3", "vocab-bpe-dsv3.gguf"}};
    for (size_t i = 0; i < sizeof pres / sizeof pres[0]; i++) bpe_vocab(pres[i][0], pres[i][1]);
    return 0;
}
