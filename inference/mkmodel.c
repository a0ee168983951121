/* mkmodel.c: commons-mkmodel, writes a random-weight GGUF of any Llama or Gemma 3 shape.
 *
 * For tests (small models in every tensor type, compared against the numpy reference)
 * and benchmarks (sizes we cannot download). The vocabulary is real: every
 * tokenizer.* key is copied from a given GGUF, so prompts tokenize as with a real
 * model. Output is a pure function of the arguments: weights come from a counter-based
 * generator seeded by (seed, tensor name) and are quantized by the kernels' (scalar,
 * deterministic) quantizer, so CI regenerates byte-identical
 * files instead of storing them. Tensors are produced while writing (fill callbacks),
 * so multi-GB models never sit in memory. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gguf.h"
#include "kernels.h"

typedef struct shape {
    const char *arch;
    int embd, layers, heads, kv_heads, head_dim, ff, ctx, window, swa_period;
    float rope_base, rope_scale, rope_base_swa, eps;
    int type, embd_type;
    unsigned long long seed;
    int rope_freqs, tied;
} shape;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: commons-mkmodel --vocab VOCAB.gguf --out OUT.gguf [options]\n"
        "  --arch llama|gemma3   architecture (default llama)\n"
        "  --embd N              embedding length (default 64)\n"
        "  --layers N            blocks (default 2)\n"
        "  --heads N             query heads (default 4)\n"
        "  --kv-heads N          key/value heads (default = heads)\n"
        "  --head-dim N          head dimension (default embd/heads)\n"
        "  --ff N                feed-forward length (default 4*embd)\n"
        "  --ctx N               context length (default 2048)\n"
        "  --window N            gemma3 sliding window (default 512)\n"
        "  --swa-period N        gemma3: every Nth layer global (default: key not written, 6)\n"
        "  --rope-base-swa F     gemma3: RoPE base of local layers (default: not written, 1e4)\n"
        "  --rope-base F         RoPE base (default 10000 llama, 1e6 gemma3)\n"
        "  --type T              matrix type: f32 f16 bf16 q8_0 q5_0 q5_1 q4_0 q4_1 q4_k q5_k "
        "q6_k "
        "(default f32)\n"
        "  --embd-type T         token embedding type (default = --type)\n"
        "  --rope-scale F        linear RoPE scaling by F (gemma3: global layers only)\n"
        "  --rope-freqs          llama: add a Llama 3 style rope_freqs tensor\n"
        "  --tied                llama: no output.weight (tied to the embeddings)\n"
        "  --seed N              weight seed (default 1)\n");
}

static int parse_type(const char *s)
{
    static const struct { const char *name; int type; } t[] = {
        { "f32", INFER_TYPE_F32 }, { "f16", INFER_TYPE_F16 }, { "bf16", INFER_TYPE_BF16 },
        { "q8_0", INFER_TYPE_Q8_0 }, { "q5_0", INFER_TYPE_Q5_0 }, { "q4_0", INFER_TYPE_Q4_0 },
        { "q5_1", INFER_TYPE_Q5_1 }, { "q4_1", INFER_TYPE_Q4_1 },
        { "q4_k", INFER_TYPE_Q4_K }, { "q5_k", INFER_TYPE_Q5_K }, { "q6_k", INFER_TYPE_Q6_K },
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (strcasecmp(s, t[i].name) == 0)
            return t[i].type;
    return -1;
}

/* ---- deterministic weights ---- */

static unsigned long long splitmix(unsigned long long *s)
{
    unsigned long long z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static unsigned long long name_seed(unsigned long long seed, const char *name)
{
    unsigned long long h = 1469598103934665603ULL ^ seed;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

/* Uniform in [-1, 1): 24 random bits scaled by a power of two, exact on any IEEE CPU. */
static float unif(unsigned long long *s)
{
    return (float)(splitmix(s) >> 40) * (1.0f / 8388608.0f) - 1.0f;
}

typedef struct fill_ctx {
    const shape *s;
} fill_ctx;

/* Rows of uniform weights with amplitude amp (std amp/sqrt(3)); norm vectors around 1. */
static int fill(void *vctx, const char *name, int type, uint32_t n_dims, const int64_t *ne,
                void *buf, size_t nbytes)
{
    const shape *s = ((fill_ctx *)vctx)->s;
    (void)nbytes;
    int64_t k = ne[0], rows = n_dims > 1 ? ne[1] : 1;
    unsigned long long st = name_seed(s->seed, name);
    float *row = malloc((size_t)k * sizeof *row);
    if (!row)
        return INFER_ENOMEM;
    float amp, base = 0;
    bool gemma = strcmp(s->arch, "gemma3") == 0;
    if (gemma && strcmp(name, "token_embd.weight") == 0)   /* rms 1 after the sqrt(embd) */
        amp = sqrtf(3.0f / (float)k);                      /* scaling, as in real Gemmas */
    else if (gemma && strcmp(name, "output_norm.weight") == 0)   /* real: mean ~26; gives */
        amp = 1.0f, base = 8.0f;                                 /* logits of std ~8 */
    else if (strstr(name, "post_"))   /* Gemma's post-norms: large, as in the real models, so */
        amp = 1.0f, base = 3.0f; /* the layers and not the scaled embedding dominate */
    else if (strstr(name, "norm") || strstr(name, "rope_freqs"))
        amp = 0.2f, base = 1.0f;
    else if (strcmp(name, "token_embd.weight") == 0 || strcmp(name, "output.weight") == 0)
        amp = 1.0f;
    else
        amp = sqrtf(3.0f / (float)k);   /* keeps activations O(1) through the layers */
    if (strcmp(name, "rope_freqs.weight") == 0)
        amp = 0;   /* set below */
    size_t rb = kern_row_bytes(type, k);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < k; j++)
            row[j] = base + amp * unif(&st);
        if (strcmp(name, "rope_freqs.weight") == 0)   /* Llama 3: 1 (fast) .. 8 (slow dims) */
            for (int64_t j = 0; j < k; j++)
                row[j] = 1.0f + 7.0f * (float)j / (float)(k > 1 ? k - 1 : 1);
        uint8_t *dst = (uint8_t *)buf + (size_t)r * rb;
        if (type == INFER_TYPE_F32) {
            memcpy(dst, row, (size_t)k * sizeof *row);
        } else {
            char msg[200];
            if (kern_quantize(type, dst, row, 1, k, msg, sizeof msg) != KERN_OK) {
                fprintf(stderr, "commons-mkmodel: %s: %s\n", name, msg);
                free(row);
                return INFER_EINVAL;
            }
        }
    }
    free(row);
    return INFER_OK;
}

static int add_tensor(infer_gguf_writer *w, fill_ctx *fc, const char *name, int type,
                      int64_t ne0, int64_t ne1)
{
    int64_t ne[2] = { ne0, ne1 };
    int64_t bs = infer_type_block_size(type);
    if (bs < 1 || ne0 % bs) {
        fprintf(stderr, "commons-mkmodel: tensor %s: row length %lld is not a multiple of "
                "the %s block size %lld; pick dimensions that are\n", name, (long long)ne0,
                infer_type_name(type), (long long)bs);
        return INFER_EINVAL;
    }
    return infer_gguf_writer_add_tensor_fn(w, name, type, ne1 ? 2 : 1, ne, fill, fc);
}

static int write_model(const shape *s, const infer_gguf *vocab, const char *out)
{
    infer_gguf_writer *w = infer_gguf_writer_new();
    if (!w)
        return INFER_ENOMEM;
    int rc = 0;
    char key[128];
    const char *a = s->arch;
    bool gemma = strcmp(a, "gemma3") == 0;
    infer_gguf_arr toks;
    if (infer_gguf_get_arr(vocab, "tokenizer.ggml.tokens", &toks) != INFER_OK) {
        fprintf(stderr, "commons-mkmodel: the vocabulary file has no tokenizer.ggml.tokens\n");
        infer_gguf_writer_free(w);
        return INFER_EFORMAT;
    }
    int64_t V = (int64_t)toks.n;
#define KU32(suffix, v) (snprintf(key, sizeof key, "%s.%s", a, suffix), \
                         rc |= infer_gguf_writer_add_u32(w, key, (uint32_t)(v)))
#define KF32(suffix, v) (snprintf(key, sizeof key, "%s.%s", a, suffix), \
                         rc |= infer_gguf_writer_add_f32(w, key, (float)(v)))
    rc |= infer_gguf_writer_add_str(w, "general.architecture", a);
    rc |= infer_gguf_writer_add_str(w, "general.name", "commons synthetic model");
    KU32("context_length", s->ctx);
    KU32("embedding_length", s->embd);
    KU32("block_count", s->layers);
    KU32("feed_forward_length", s->ff);
    KU32("attention.head_count", s->heads);
    KU32("attention.head_count_kv", s->kv_heads);
    KU32("attention.key_length", s->head_dim);
    KU32("attention.value_length", s->head_dim);
    KU32("rope.dimension_count", s->head_dim);
    KF32("rope.freq_base", s->rope_base);
    KF32("attention.layer_norm_rms_epsilon", s->eps);
    if (gemma)
        KU32("attention.sliding_window", s->window);
    if (gemma && s->swa_period)
        KU32("attention.sliding_window_pattern", s->swa_period);
    if (gemma && s->rope_base_swa > 0)
        KF32("rope.freq_base_swa", s->rope_base_swa);
    if (s->rope_scale > 0) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", a);
        rc |= infer_gguf_writer_add_str(w, key, "linear");
        KF32("rope.scaling.factor", s->rope_scale);
    }
    for (int64_t i = 0; i < infer_gguf_n_kv(vocab); i++)
        if (strncmp(infer_gguf_key(vocab, i), "tokenizer.", 10) == 0)
            rc |= infer_gguf_writer_copy_kv(w, vocab, i);
    if (rc) {
        fprintf(stderr, "commons-mkmodel: cannot add metadata (out of memory?)\n");
        infer_gguf_writer_free(w);
        return INFER_ENOMEM;
    }

    fill_ctx fc = { .s = s };
    int64_t E = s->embd, Q = (int64_t)s->heads * s->head_dim;
    int64_t KV = (int64_t)s->kv_heads * s->head_dim, F = s->ff;
    int T = s->type, F32 = INFER_TYPE_F32;
    rc = add_tensor(w, &fc, "token_embd.weight", s->embd_type, E, V);
    if (!rc)
        rc = add_tensor(w, &fc, "output_norm.weight", F32, E, 0);
    if (!rc && !gemma && !s->tied)
        rc = add_tensor(w, &fc, "output.weight", T, E, V);
    if (!rc && !gemma && s->rope_freqs)
        rc = add_tensor(w, &fc, "rope_freqs.weight", F32, s->head_dim / 2, 0);
    for (int il = 0; il < s->layers && !rc; il++) {
        struct { const char *n; int t; int64_t k, rows; } ts[] = {
            { "attn_norm", F32, E, 0 }, { "attn_q", T, E, Q }, { "attn_k", T, E, KV },
            { "attn_v", T, E, KV }, { "attn_output", T, Q, E }, { "ffn_norm", F32, E, 0 },
            { "ffn_gate", T, E, F }, { "ffn_up", T, E, F }, { "ffn_down", T, F, E },
            { "attn_q_norm", F32, s->head_dim, 0 }, { "attn_k_norm", F32, s->head_dim, 0 },
            { "post_attention_norm", F32, E, 0 }, { "post_ffw_norm", F32, E, 0 },
        };
        int nt = gemma ? 13 : 9;
        for (int i = 0; i < nt && !rc; i++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%d.%s.weight", il, ts[i].n);
            rc = add_tensor(w, &fc, name, ts[i].t, ts[i].k, ts[i].rows);
        }
    }
    char err[512] = "";
    if (!rc && (rc = infer_gguf_writer_write(w, out, err, sizeof err)))
        fprintf(stderr, "commons-mkmodel: %s\n", err);
    infer_gguf_writer_free(w);
    return rc;
}

static int parse_int(const char *flag, const char *v, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < 1 || x > (1 << 24)) {
        fprintf(stderr, "commons-mkmodel: %s expects a positive integer, got '%s'\n", flag, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int main(int argc, char **argv)
{
    shape s = { .arch = "llama", .embd = 64, .layers = 2, .heads = 4, .ctx = 2048,
                .window = 512, .eps = 1e-6f, .type = INFER_TYPE_F32, .embd_type = -1,
                .seed = 1 };
    const char *vocab_path = NULL, *out = NULL;
    int kv_heads = 0, head_dim = 0, ff = 0;
    float rope_base = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(f, "--rope-freqs")) { s.rope_freqs = 1; continue; }
        if (!strcmp(f, "--tied")) { s.tied = 1; continue; }
        if (i + 1 >= argc) {
            fprintf(stderr, "commons-mkmodel: %s needs a value (or is unknown)\n", f);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(f, "--vocab")) vocab_path = v;
        else if (!strcmp(f, "--out")) out = v;
        else if (!strcmp(f, "--arch")) s.arch = v;
        else if (!strcmp(f, "--embd")) bad = parse_int(f, v, &s.embd);
        else if (!strcmp(f, "--layers")) bad = parse_int(f, v, &s.layers);
        else if (!strcmp(f, "--heads")) bad = parse_int(f, v, &s.heads);
        else if (!strcmp(f, "--kv-heads")) bad = parse_int(f, v, &kv_heads);
        else if (!strcmp(f, "--head-dim")) bad = parse_int(f, v, &head_dim);
        else if (!strcmp(f, "--ff")) bad = parse_int(f, v, &ff);
        else if (!strcmp(f, "--ctx")) bad = parse_int(f, v, &s.ctx);
        else if (!strcmp(f, "--window")) bad = parse_int(f, v, &s.window);
        else if (!strcmp(f, "--swa-period")) bad = parse_int(f, v, &s.swa_period);
        else if (!strcmp(f, "--rope-base-swa")) {
            s.rope_base_swa = strtof(v, NULL);
            bad = !(s.rope_base_swa > 1);
            if (bad) fprintf(stderr, "commons-mkmodel: --rope-base-swa must be > 1\n");
        }
        else if (!strcmp(f, "--rope-base")) {
            rope_base = strtof(v, NULL);
            bad = !(rope_base > 1);
            if (bad) fprintf(stderr, "commons-mkmodel: --rope-base must be > 1\n");
        } else if (!strcmp(f, "--rope-scale")) {
            s.rope_scale = strtof(v, NULL);
            bad = !(s.rope_scale >= 1);
            if (bad) fprintf(stderr, "commons-mkmodel: --rope-scale must be >= 1\n");
        } else if (!strcmp(f, "--seed")) s.seed = strtoull(v, NULL, 10);
        else if (!strcmp(f, "--type") || !strcmp(f, "--embd-type")) {
            int t = parse_type(v);
            if (t < 0) {
                fprintf(stderr, "commons-mkmodel: unknown type '%s'\n", v);
                bad = 1;
            }
            *(strcmp(f, "--type") ? &s.embd_type : &s.type) = t;
        } else {
            fprintf(stderr, "commons-mkmodel: unknown option %s\n", f);
            usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (!vocab_path || !out) {
        fprintf(stderr, "commons-mkmodel: --vocab and --out are required\n");
        usage(stderr);
        return 2;
    }
    if (strcmp(s.arch, "llama") && strcmp(s.arch, "gemma3")) {
        fprintf(stderr, "commons-mkmodel: --arch must be llama or gemma3\n");
        return 2;
    }
    s.kv_heads = kv_heads ? kv_heads : s.heads;
    s.head_dim = head_dim ? head_dim : s.embd / s.heads;
    s.ff = ff ? ff : 4 * s.embd;
    s.rope_base = rope_base > 0 ? rope_base : strcmp(s.arch, "gemma3") ? 10000.0f : 1e6f;
    if (s.embd_type < 0)
        s.embd_type = s.type;
    if (s.heads % s.kv_heads || s.head_dim % 2) {
        fprintf(stderr, "commons-mkmodel: heads must be a multiple of kv-heads and the head "
                "dimension even\n");
        return 2;
    }
    char err[512];
    infer_gguf *vocab;
    if (infer_gguf_open(vocab_path, &vocab, err, sizeof err)) {
        fprintf(stderr, "commons-mkmodel: %s\n", err);
        return 1;
    }
    int rc = write_model(&s, vocab, out);
    infer_gguf_close(vocab);
    return rc ? 1 : 0;
}
