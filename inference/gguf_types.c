/* gguf_types.c: tables for GGUF metadata value types and ggml tensor types
 * (names, block sizes, bytes per block), status-code names, and the checked
 * size arithmetic every tensor extent goes through. */
#include "gguf.h"

const char *infer_status_str(int status)
{
    switch (status) {
    case INFER_OK: return "ok";
    case INFER_EIO: return "i/o error";
    case INFER_EFORMAT: return "format error";
    case INFER_ENOTFOUND: return "not found";
    case INFER_ETYPE: return "wrong type";
    case INFER_ERANGE: return "out of range";
    case INFER_ENOMEM: return "out of memory";
    case INFER_EUNSUPPORTED: return "unsupported";
    case INFER_EINVAL: return "invalid argument";
    default: return "unknown status";
    }
}

static const struct { const char *name; size_t size; } kv_types[INFER_GGUF_TYPE_COUNT] = {
    [INFER_GGUF_UINT8] = {"u8", 1},       [INFER_GGUF_INT8] = {"i8", 1},
    [INFER_GGUF_UINT16] = {"u16", 2},     [INFER_GGUF_INT16] = {"i16", 2},
    [INFER_GGUF_UINT32] = {"u32", 4},     [INFER_GGUF_INT32] = {"i32", 4},
    [INFER_GGUF_FLOAT32] = {"f32", 4},    [INFER_GGUF_BOOL] = {"bool", 1},
    [INFER_GGUF_STRING] = {"string", 0},  [INFER_GGUF_ARRAY] = {"array", 0},
    [INFER_GGUF_UINT64] = {"u64", 8},     [INFER_GGUF_INT64] = {"i64", 8},
    [INFER_GGUF_FLOAT64] = {"f64", 8},
};

const char *infer_gguf_type_name(int type)
{
    return type >= 0 && type < INFER_GGUF_TYPE_COUNT ? kv_types[type].name : "invalid";
}

size_t infer_gguf_type_size(int type)
{
    return type >= 0 && type < INFER_GGUF_TYPE_COUNT ? kv_types[type].size : 0;
}

/* Layouts as ggml defines them (QK_K = 256 super-blocks for the K/IQ types).
 * Retired ids (4, 5, 31-33, 36-38) stay zero and are rejected. */
static const struct {
    const char *name;
    int64_t blck;
    size_t size;
    bool supported;
} tensor_types[INFER_TYPE_COUNT] = {
    [INFER_TYPE_F32] = {"F32", 1, 4, true},
    [INFER_TYPE_F16] = {"F16", 1, 2, true},
    [INFER_TYPE_Q4_0] = {"Q4_0", 32, 18, true},
    [INFER_TYPE_Q4_1] = {"Q4_1", 32, 20, false},
    [INFER_TYPE_Q5_0] = {"Q5_0", 32, 22, true},   /* the default Gemma 3 Q4_K_M uses it */
    [INFER_TYPE_Q5_1] = {"Q5_1", 32, 24, false},
    [INFER_TYPE_Q8_0] = {"Q8_0", 32, 34, true},
    [INFER_TYPE_Q8_1] = {"Q8_1", 32, 36, false},
    [INFER_TYPE_Q2_K] = {"Q2_K", 256, 84, false},
    [INFER_TYPE_Q3_K] = {"Q3_K", 256, 110, false},
    [INFER_TYPE_Q4_K] = {"Q4_K", 256, 144, true},
    [INFER_TYPE_Q5_K] = {"Q5_K", 256, 176, true},
    [INFER_TYPE_Q6_K] = {"Q6_K", 256, 210, true},
    [INFER_TYPE_Q8_K] = {"Q8_K", 256, 292, false},
    [INFER_TYPE_IQ2_XXS] = {"IQ2_XXS", 256, 66, false},
    [INFER_TYPE_IQ2_XS] = {"IQ2_XS", 256, 74, false},
    [INFER_TYPE_IQ3_XXS] = {"IQ3_XXS", 256, 98, false},
    [INFER_TYPE_IQ1_S] = {"IQ1_S", 256, 50, false},
    [INFER_TYPE_IQ4_NL] = {"IQ4_NL", 32, 18, false},
    [INFER_TYPE_IQ3_S] = {"IQ3_S", 256, 110, false},
    [INFER_TYPE_IQ2_S] = {"IQ2_S", 256, 82, false},
    [INFER_TYPE_IQ4_XS] = {"IQ4_XS", 256, 136, false},
    [INFER_TYPE_I8] = {"I8", 1, 1, false},
    [INFER_TYPE_I16] = {"I16", 1, 2, false},
    [INFER_TYPE_I32] = {"I32", 1, 4, false},
    [INFER_TYPE_I64] = {"I64", 1, 8, false},
    [INFER_TYPE_F64] = {"F64", 1, 8, false},
    [INFER_TYPE_IQ1_M] = {"IQ1_M", 256, 56, false},
    [INFER_TYPE_BF16] = {"BF16", 1, 2, true},
    [INFER_TYPE_TQ1_0] = {"TQ1_0", 256, 54, false},
    [INFER_TYPE_TQ2_0] = {"TQ2_0", 256, 66, false},
    [INFER_TYPE_MXFP4] = {"MXFP4", 32, 17, false},
    [INFER_TYPE_NVFP4] = {"NVFP4", 64, 36, false},
    [INFER_TYPE_Q1_0] = {"Q1_0", 128, 18, false},
};

bool infer_type_known(int type)
{
    return type >= 0 && type < INFER_TYPE_COUNT && tensor_types[type].name != NULL;
}

const char *infer_type_name(int type)
{
    return infer_type_known(type) ? tensor_types[type].name : NULL;
}

bool infer_type_supported(int type)
{
    return infer_type_known(type) && tensor_types[type].supported;
}

int64_t infer_type_block_size(int type)
{
    return infer_type_known(type) ? tensor_types[type].blck : 0;
}

size_t infer_type_type_size(int type)
{
    return infer_type_known(type) ? tensor_types[type].size : 0;
}

int infer_type_nbytes(int type, uint32_t n_dims, const int64_t *ne, size_t *out)
{
    if (!infer_type_known(type) || n_dims < 1 || n_dims > INFER_GGUF_MAX_DIMS || !ne)
        return INFER_EFORMAT;
    for (uint32_t d = 0; d < n_dims; d++)
        if (ne[d] < 0)
            return INFER_EFORMAT;
    int64_t blck = tensor_types[type].blck;
    if (ne[0] % blck != 0)
        return INFER_EFORMAT;
    /* Row bytes, then times each outer dim; every step checked against SIZE_MAX. */
    uint64_t total = (uint64_t)(ne[0] / blck);
    if (__builtin_mul_overflow(total, (uint64_t)tensor_types[type].size, &total))
        return INFER_EFORMAT;
    for (uint32_t d = 1; d < n_dims; d++)
        if (__builtin_mul_overflow(total, (uint64_t)ne[d], &total))
            return INFER_EFORMAT;
    if (total > SIZE_MAX)
        return INFER_EFORMAT;
    *out = (size_t)total;
    return INFER_OK;
}
