/* test_gguf.c: GGUF reader/writer unit tests (Check).
 * Round-trips every value type and several tensor types through the writer
 * and reader, checks each validation rule with a hand-corrupted file, opens
 * every truncation and many byte flips of a valid file (each must either open
 * consistently or fail with a message), and opens the real vocab GGUFs.
 * Usage: test_gguf VOCAB_DIR (the folder with ggml-vocab-*.gguf). */
#include "gguf.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *vocab_dir = ".";

/* ---- a reference file exercising every value type ---- */

static const int64_t ne_f32[2] = {8, 3};
static const int64_t ne_q8[2] = {64, 2};
static const int64_t ne_q4k[1] = {256};
static float f32_data[24];

static int fill_pattern(void *ctx, const char *name, int type, uint32_t n_dims,
                        const int64_t *ne, void *buf, size_t nbytes)
{
    (void)name; (void)type; (void)n_dims; (void)ne;
    int *calls = ctx;
    (*calls)++;
    for (size_t i = 0; i < nbytes; i++)
        ((uint8_t *)buf)[i] = (uint8_t)(i * 7 + 1);
    return 0;
}

static int fill_calls;

static infer_gguf_writer *make_writer(uint32_t alignment)
{
    infer_gguf_writer *w = infer_gguf_writer_new();
    ck_assert_ptr_nonnull(w);
    for (int i = 0; i < 24; i++)
        f32_data[i] = (float)i * 0.5f - 3.0f;
    ck_assert_int_eq(infer_gguf_writer_add_str(w, "general.architecture", "llama"), INFER_OK);
    if (alignment)
        ck_assert_int_eq(infer_gguf_writer_add_u32(w, "general.alignment", alignment), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_u8(w, "t.u8", 200), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_i8(w, "t.i8", -100), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_u16(w, "t.u16", 60000), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_i16(w, "t.i16", -30000), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_u32(w, "t.u32", 4000000000u), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_i32(w, "t.i32", -1), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_u64(w, "t.u64", 1ull << 40), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_i64(w, "t.i64", -(1ll << 40)), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_f32(w, "t.f32", 1.5f), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_f64(w, "t.f64", -2.25), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_bool(w, "t.bool", true), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_strn(w, "t.bin", "a\0b", 3), INFER_OK);
    int32_t ia[5] = {1, -2, 3, -4, 5};
    float fa[3] = {0.25f, -1.0f, 3.5f};
    uint8_t ba[2] = {1, 0};
    ck_assert_int_eq(infer_gguf_writer_add_arr(w, "t.arr_i32", INFER_GGUF_INT32, ia, 5), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_arr(w, "t.arr_f32", INFER_GGUF_FLOAT32, fa, 3), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_arr(w, "t.arr_bool", INFER_GGUF_BOOL, ba, 2), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_arr(w, "t.arr_empty", INFER_GGUF_UINT64, NULL, 0), INFER_OK);
    const char *strs[3] = {"hello", "", "\xe2\x96\x81world"};
    ck_assert_int_eq(infer_gguf_writer_add_arr_str(w, "t.arr_str", strs, NULL, 3), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_tensor(w, "w.f32", INFER_TYPE_F32, 2, ne_f32, f32_data), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_tensor_fn(w, "w.q8", INFER_TYPE_Q8_0, 2, ne_q8, fill_pattern, &fill_calls), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_tensor(w, "w.q4k", INFER_TYPE_Q4_K, 1, ne_q4k, NULL), INFER_OK);
    return w;
}

static void *make_file(uint32_t alignment, size_t *size)
{
    infer_gguf_writer *w = make_writer(alignment);
    void *buf = NULL;
    char err[256];
    ck_assert_int_eq(infer_gguf_writer_write_mem(w, &buf, size, err, sizeof err), INFER_OK);
    infer_gguf_writer_free(w);
    return buf;
}

static void check_reference(const infer_gguf *g, size_t alignment)
{
    ck_assert_uint_eq(infer_gguf_version(g), 3);
    ck_assert_uint_eq(infer_gguf_alignment(g), alignment);
    ck_assert_int_eq(infer_gguf_n_kv(g), alignment == 32 ? 18 : 19);
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f;
    double d;
    bool b;
    infer_gguf_str s;
    ck_assert_int_eq(infer_gguf_get_u32(g, "t.u8", &u32), INFER_OK);
    ck_assert_uint_eq(u32, 200);
    ck_assert_int_eq(infer_gguf_get_i32(g, "t.i8", &i32), INFER_OK);
    ck_assert_int_eq(i32, -100);
    ck_assert_int_eq(infer_gguf_get_u32(g, "t.u16", &u32), INFER_OK);
    ck_assert_uint_eq(u32, 60000);
    ck_assert_int_eq(infer_gguf_get_i32(g, "t.i16", &i32), INFER_OK);
    ck_assert_int_eq(i32, -30000);
    ck_assert_int_eq(infer_gguf_get_u32(g, "t.u32", &u32), INFER_OK);
    ck_assert_uint_eq(u32, 4000000000u);
    /* width conversions only when the value fits */
    ck_assert_int_eq(infer_gguf_get_i32(g, "t.u32", &i32), INFER_ERANGE);
    ck_assert_int_eq(infer_gguf_get_u32(g, "t.i32", &u32), INFER_ERANGE);
    ck_assert_int_eq(infer_gguf_get_i64(g, "t.u32", &i64), INFER_OK);
    ck_assert_int_eq(i64, 4000000000ll);
    ck_assert_int_eq(infer_gguf_get_u64(g, "t.u64", &u64), INFER_OK);
    ck_assert_uint_eq(u64, 1ull << 40);
    ck_assert_int_eq(infer_gguf_get_u32(g, "t.u64", &u32), INFER_ERANGE);
    ck_assert_int_eq(infer_gguf_get_i64(g, "t.i64", &i64), INFER_OK);
    ck_assert_int_eq(i64, -(1ll << 40));
    ck_assert_int_eq(infer_gguf_get_u64(g, "t.i64", &u64), INFER_ERANGE);
    ck_assert_int_eq(infer_gguf_get_f32(g, "t.f32", &f), INFER_OK);
    ck_assert(f == 1.5f);
    ck_assert_int_eq(infer_gguf_get_f64(g, "t.f64", &d), INFER_OK);
    ck_assert(d == -2.25);
    ck_assert_int_eq(infer_gguf_get_f32(g, "t.u32", &f), INFER_ETYPE);
    ck_assert_int_eq(infer_gguf_get_u32(g, "t.f32", &u32), INFER_ETYPE);
    ck_assert_int_eq(infer_gguf_get_bool(g, "t.bool", &b), INFER_OK);
    ck_assert(b);
    ck_assert_int_eq(infer_gguf_get_u32(g, "t.bool", &u32), INFER_ETYPE);
    ck_assert_int_eq(infer_gguf_get_bool(g, "t.u8", &b), INFER_ETYPE);
    ck_assert_int_eq(infer_gguf_get_u32(g, "no.such", &u32), INFER_ENOTFOUND);
    ck_assert_int_eq(infer_gguf_get_str(g, "t.bin", &s), INFER_OK);
    ck_assert_uint_eq(s.len, 3);
    ck_assert(memcmp(s.ptr, "a\0b", 3) == 0);
    ck_assert_int_eq(infer_gguf_get_str(g, "t.u8", &s), INFER_ETYPE);
    char small[4], big[16];
    ck_assert_int_eq(infer_gguf_get_str_copy(g, "general.architecture", small, sizeof small), INFER_ERANGE);
    ck_assert_str_eq(small, "lla");
    ck_assert_int_eq(infer_gguf_get_str_copy(g, "general.architecture", big, sizeof big), INFER_OK);
    ck_assert_str_eq(big, "llama");

    infer_gguf_arr a;
    ck_assert_int_eq(infer_gguf_get_arr(g, "t.arr_i32", &a), INFER_OK);
    ck_assert_int_eq(a.type, INFER_GGUF_INT32);
    ck_assert_uint_eq(a.n, 5);
    ck_assert_int_eq(infer_gguf_arr_i64(&a, 3, &i64), INFER_OK);
    ck_assert_int_eq(i64, -4);
    ck_assert_int_eq(infer_gguf_arr_i64(&a, 5, &i64), INFER_ERANGE);
    ck_assert_int_eq(infer_gguf_get_arr(g, "t.arr_f32", &a), INFER_OK);
    ck_assert_int_eq(infer_gguf_arr_f64(&a, 2, &d), INFER_OK);
    ck_assert(d == 3.5);
    ck_assert_int_eq(infer_gguf_arr_i64(&a, 0, &i64), INFER_ETYPE);
    ck_assert_int_eq(infer_gguf_get_arr(g, "t.arr_bool", &a), INFER_OK);
    ck_assert_int_eq(a.type, INFER_GGUF_BOOL);
    ck_assert_uint_eq(((const uint8_t *)a.data)[0], 1);
    ck_assert_int_eq(infer_gguf_get_arr(g, "t.arr_empty", &a), INFER_OK);
    ck_assert_uint_eq(a.n, 0);
    ck_assert_int_eq(infer_gguf_get_arr(g, "t.arr_str", &a), INFER_OK);
    ck_assert_int_eq(a.type, INFER_GGUF_STRING);
    ck_assert_uint_eq(a.n, 3);
    ck_assert_uint_eq(a.strs[0].len, 5);
    ck_assert(memcmp(a.strs[0].ptr, "hello", 5) == 0);
    ck_assert_uint_eq(a.strs[1].len, 0);
    ck_assert_uint_eq(a.strs[2].len, 8);
    ck_assert_int_eq(infer_gguf_get_arr(g, "t.u8", &a), INFER_ETYPE);

    ck_assert_int_eq(infer_gguf_n_tensors(g), 3);
    const infer_gguf_tensor *t = infer_gguf_find_tensor(g, "w.f32");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->type, INFER_TYPE_F32);
    ck_assert_uint_eq(t->n_dims, 2);
    ck_assert_int_eq(t->ne[0], 8);
    ck_assert_int_eq(t->ne[1], 3);
    ck_assert_int_eq(t->ne[2], 1);
    ck_assert_uint_eq(t->nbytes, 96);
    ck_assert(memcmp(t->data, f32_data, 96) == 0);
    t = infer_gguf_find_tensor(g, "w.q8");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->nbytes, 2 * 2 * 34);
    for (size_t i = 0; i < t->nbytes; i++)
        ck_assert_uint_eq(((const uint8_t *)t->data)[i], (uint8_t)(i * 7 + 1));
    t = infer_gguf_find_tensor(g, "w.q4k");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->nbytes, 144);
    ck_assert_uint_eq(((const uint8_t *)t->data)[143], 0);
    for (int64_t i = 0; i < 3; i++) {
        t = infer_gguf_tensor_at(g, i);
        ck_assert_uint_eq(t->offset % alignment, 0);
        ck_assert_uint_eq(((const uint8_t *)t->data - (const uint8_t *)infer_gguf_base(g)) % alignment, 0);
    }
    ck_assert_ptr_null(infer_gguf_find_tensor(g, "w.none"));
    ck_assert_ptr_null(infer_gguf_tensor_at(g, 3));
    ck_assert_ptr_null(infer_gguf_tensor_at(g, -1));
}

START_TEST(test_roundtrip_memory)
{
    size_t size;
    void *buf = make_file(0, &size);
    infer_gguf *g;
    char err[256];
    ck_assert_int_eq(infer_gguf_open_memory(buf, size, "mem", &g, err, sizeof err), INFER_OK);
    check_reference(g, 32);
    infer_gguf_close(g);
    free(buf);
}
END_TEST

START_TEST(test_roundtrip_file_aligned)
{
    char path[] = "/tmp/test_gguf_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    infer_gguf_writer *w = make_writer(64);
    char err[256];
    fill_calls = 0;
    ck_assert_int_eq(infer_gguf_writer_write(w, path, err, sizeof err), INFER_OK);
    ck_assert_int_eq(fill_calls, 1);
    infer_gguf_writer_free(w);
    infer_gguf *g;
    int rc = infer_gguf_open(path, &g, err, sizeof err);
    ck_assert_msg(rc == INFER_OK, "%s", err);
    check_reference(g, 64);
    ck_assert_uint_eq(infer_gguf_data_offset(g) % 64, 0);
    infer_gguf_close(g);
    unlink(path);
}
END_TEST

START_TEST(test_writer_rejects_bad_input)
{
    infer_gguf_writer *w = infer_gguf_writer_new();
    int64_t ne[2] = {33, 1};
    ck_assert_int_eq(infer_gguf_writer_add_tensor(w, "x", INFER_TYPE_Q8_0, 2, ne, NULL), INFER_EINVAL);
    ck_assert_int_eq(infer_gguf_writer_add_tensor(w, "x", 4, 1, ne, NULL), INFER_EINVAL);
    ck_assert_int_eq(infer_gguf_writer_add_tensor(w, "x", INFER_TYPE_F32, 5, ne, NULL), INFER_EINVAL);
    ck_assert_int_eq(infer_gguf_writer_add_tensor(w, "x", INFER_TYPE_F32, 1, ne, NULL), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_tensor(w, "x", INFER_TYPE_F32, 1, ne, NULL), INFER_EINVAL);
    ck_assert_int_eq(infer_gguf_writer_add_str(w, "", "v"), INFER_EINVAL);
    ck_assert_int_eq(infer_gguf_writer_add_arr(w, "a", INFER_GGUF_ARRAY, ne, 1), INFER_EINVAL);
    ck_assert_int_eq(infer_gguf_writer_add_arr(w, "a", INFER_GGUF_STRING, ne, 1), INFER_EINVAL);
    /* re-adding a key replaces it */
    ck_assert_int_eq(infer_gguf_writer_add_u32(w, "k", 1), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_str(w, "k", "two"), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_u32(w, "general.alignment", 48), INFER_OK);
    void *buf;
    size_t size;
    char err[256] = "";
    ck_assert_int_eq(infer_gguf_writer_write_mem(w, &buf, &size, err, sizeof err), INFER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "alignment"));
    ck_assert_int_eq(infer_gguf_writer_add_i32(w, "general.alignment", 16), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_write_mem(w, &buf, &size, err, sizeof err), INFER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "u32"));
    ck_assert_int_eq(infer_gguf_writer_add_u32(w, "general.alignment", 16), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_write_mem(w, &buf, &size, err, sizeof err), INFER_OK);
    infer_gguf *g;
    ck_assert_int_eq(infer_gguf_open_memory(buf, size, "m", &g, err, sizeof err), INFER_OK);
    ck_assert_int_eq(infer_gguf_n_kv(g), 2);
    infer_gguf_str s;
    ck_assert_int_eq(infer_gguf_get_str(g, "k", &s), INFER_OK);
    ck_assert_uint_eq(s.len, 3);
    ck_assert_uint_eq(infer_gguf_alignment(g), 16);
    infer_gguf_close(g);
    free(buf);
    infer_gguf_writer_free(w);
}
END_TEST

START_TEST(test_type_table)
{
    ck_assert_int_eq(infer_type_block_size(INFER_TYPE_F32), 1);
    ck_assert_uint_eq(infer_type_type_size(INFER_TYPE_F16), 2);
    ck_assert_uint_eq(infer_type_type_size(INFER_TYPE_BF16), 2);
    ck_assert_uint_eq(infer_type_type_size(INFER_TYPE_Q8_0), 34);
    ck_assert_uint_eq(infer_type_type_size(INFER_TYPE_Q4_0), 18);
    ck_assert_uint_eq(infer_type_type_size(INFER_TYPE_Q4_K), 144);
    ck_assert_uint_eq(infer_type_type_size(INFER_TYPE_Q5_K), 176);
    ck_assert_uint_eq(infer_type_type_size(INFER_TYPE_Q6_K), 210);
    ck_assert_int_eq(infer_type_block_size(INFER_TYPE_Q6_K), 256);
    ck_assert(infer_type_supported(INFER_TYPE_Q4_K));
    ck_assert(infer_type_supported(INFER_TYPE_Q5_0));
    ck_assert(!infer_type_supported(INFER_TYPE_Q4_1));
    ck_assert(!infer_type_supported(INFER_TYPE_IQ2_XXS));
    ck_assert(infer_type_known(INFER_TYPE_IQ2_XXS));
    ck_assert(!infer_type_known(4));
    ck_assert(!infer_type_known(INFER_TYPE_COUNT));
    ck_assert(!infer_type_known(33));
    ck_assert_int_eq(infer_type_block_size(INFER_TYPE_Q1_0), 128);
    ck_assert(!infer_type_known(-1));
    ck_assert_str_eq(infer_type_name(INFER_TYPE_Q5_K), "Q5_K");
    size_t n;
    int64_t ne[4] = {256, 3, 2, 1};
    ck_assert_int_eq(infer_type_nbytes(INFER_TYPE_Q6_K, 4, ne, &n), INFER_OK);
    ck_assert_uint_eq(n, 6 * 210);
    int64_t huge[4] = {INT64_MAX - 31, INT64_MAX, 2, 1};
    ck_assert_int_eq(infer_type_nbytes(INFER_TYPE_F32, 2, huge, &n), INFER_EFORMAT);
    int64_t neg[1] = {-32};
    ck_assert_int_eq(infer_type_nbytes(INFER_TYPE_F32, 1, neg, &n), INFER_EFORMAT);
    ck_assert_str_eq(infer_status_str(INFER_EFORMAT), "format error");
}
END_TEST

/* ---- corruptions with a known cause ---- */

/* Open a patched copy; expect rc and an error mentioning each of the words. */
static void expect_fail(const uint8_t *buf, size_t size, int rc_want, const char *w1, const char *w2)
{
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, buf, size);
    infer_gguf *g = (infer_gguf *)1;
    char err[512] = "";
    int rc = infer_gguf_open_memory(copy, size, "bad.gguf", &g, err, sizeof err);
    ck_assert_msg(rc == rc_want, "rc %d, want %d (%s)", rc, rc_want, err);
    ck_assert_ptr_null(g);
    ck_assert_msg(strstr(err, "bad.gguf: byte ") == err, "message lacks location: %s", err);
    ck_assert_msg(!w1 || strstr(err, w1), "message '%s' lacks '%s'", err, w1);
    ck_assert_msg(!w2 || strstr(err, w2), "message '%s' lacks '%s'", err, w2);
    free(copy);
}

static size_t find(const uint8_t *buf, size_t size, const char *s)
{
    const uint8_t *p = memmem(buf, size, s, strlen(s));
    ck_assert_ptr_nonnull(p);
    return (size_t)(p - buf);
}

/* Offset of a tensor info field: after the name come n_dims, ne[], type, offset. */
static size_t tensor_field(const uint8_t *buf, size_t size, const char *name, int field)
{
    size_t at = find(buf, size, name) + strlen(name);
    uint32_t n_dims;
    memcpy(&n_dims, buf + at, 4);
    switch (field) {
    case 0: return at;                        /* n_dims */
    case 1: return at + 4;                    /* ne[0] */
    case 2: return at + 4 + 8 * n_dims;       /* type */
    default: return at + 8 + 8 * n_dims;      /* offset */
    }
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

START_TEST(test_specific_corruptions)
{
    size_t size;
    uint8_t *ref = make_file(0, &size);
    uint8_t *b = malloc(size);
#define RESET() memcpy(b, ref, size)
    RESET(); b[0] = 'X';
    expect_fail(b, size, INFER_EFORMAT, "not a GGUF file", NULL);
    RESET(); put32(b + 4, 1);
    expect_fail(b, size, INFER_EFORMAT, "version 1", NULL);
    RESET(); put32(b + 4, 3u << 24);
    expect_fail(b, size, INFER_EFORMAT, "big-endian", NULL);
    RESET(); put64(b + 16, 1ull << 60);
    expect_fail(b, size, INFER_EFORMAT, "key/value count", NULL);
    RESET(); put64(b + 8, 1ull << 40);
    expect_fail(b, size, INFER_EFORMAT, "tensor count", NULL);
    /* key name length far beyond the file */
    RESET(); put64(b + 24, 1ull << 50);
    expect_fail(b, size, INFER_EFORMAT, "byte 24", "past the end");
    /* value type out of range, element type nested array */
    size_t at = find(ref, size, "t.u8") + 4;
    RESET(); put32(b + at, 13);
    expect_fail(b, size, INFER_EFORMAT, "'t.u8'", "value type 13");
    at = find(ref, size, "t.arr_i32") + 9 + 4;
    RESET(); put32(b + at, INFER_GGUF_ARRAY);
    expect_fail(b, size, INFER_EFORMAT, "'t.arr_i32'", "nested");
    /* array length too large for the file */
    RESET(); put64(b + at + 4, 1ull << 61);
    expect_fail(b, size, INFER_EFORMAT, "'t.arr_i32'", "past the end");
    at = find(ref, size, "t.arr_str") + 9 + 4;
    RESET(); put64(b + at + 4, 1ull << 40);
    expect_fail(b, size, INFER_EFORMAT, "'t.arr_str'", "cannot fit");
    /* a string inside the string array too long */
    RESET(); put64(b + at + 12, 1ull << 40);
    expect_fail(b, size, INFER_EFORMAT, "'t.arr_str'", "string 0");
    /* duplicate key: rename t.i8 to t.u8 */
    at = find(ref, size, "t.i8");
    RESET(); b[at + 2] = 'u';
    expect_fail(b, size, INFER_EFORMAT, "duplicate key 't.u8'", NULL);
    /* NUL in a key name */
    RESET(); b[at + 1] = 0;
    expect_fail(b, size, INFER_EFORMAT, "NUL", NULL);
    /* n_dims out of range */
    at = tensor_field(ref, size, "w.f32", 0);
    RESET(); put32(b + at, 5);
    expect_fail(b, size, INFER_EFORMAT, "'w.f32'", "n_dims is 5");
    RESET(); put32(b + at, 0);
    expect_fail(b, size, INFER_EFORMAT, "'w.f32'", "n_dims is 0");
    /* negative dimension */
    at = tensor_field(ref, size, "w.f32", 1);
    RESET(); put64(b + at, (uint64_t)-8);
    expect_fail(b, size, INFER_EFORMAT, "'w.f32'", "-8");
    /* size overflow */
    RESET(); put64(b + at, 1ull << 62); put64(b + at + 8, 1ull << 62);
    expect_fail(b, size, INFER_EFORMAT, "'w.f32'", "overflows");
    /* ne[0] not a multiple of the Q8_0 block */
    at = tensor_field(ref, size, "w.q8", 1);
    RESET(); put64(b + at, 65);
    expect_fail(b, size, INFER_EFORMAT, "'w.q8'", "block size 32");
    /* unknown and retired tensor types */
    at = tensor_field(ref, size, "w.q8", 2);
    RESET(); put32(b + at, 4);
    expect_fail(b, size, INFER_EFORMAT, "'w.q8'", "type 4");
    RESET(); put32(b + at, 1000);
    expect_fail(b, size, INFER_EFORMAT, "'w.q8'", "type 1000");
    /* misaligned offset, offset past the end, overlapping tensors */
    at = tensor_field(ref, size, "w.q4k", 3);
    RESET(); put64(b + at, 8);
    expect_fail(b, size, INFER_EFORMAT, "'w.q4k'", "alignment");
    RESET(); put64(b + at, 1ull << 40);
    expect_fail(b, size, INFER_EFORMAT, "'w.q4k'", "past the end");
    RESET(); put64(b + at, (uint64_t)-32);
    expect_fail(b, size, INFER_EFORMAT, "'w.q4k'", "past the end");
    RESET(); put64(b + at, 0);
    expect_fail(b, size, INFER_EFORMAT, "overlap", "'w.f32'");
    /* file cut right after the tensor infos: tensors have nowhere to live */
    expect_fail(ref, tensor_field(ref, size, "w.q4k", 3) + 8, INFER_EFORMAT, "tensor data should start", NULL);
    free(b);
    free(ref);
#undef RESET
}
END_TEST

START_TEST(test_duplicate_tensor_and_alignment_key)
{
    infer_gguf_writer *w = infer_gguf_writer_new();
    int64_t ne[1] = {4};
    ck_assert_int_eq(infer_gguf_writer_add_tensor(w, "aa", INFER_TYPE_F32, 1, ne, NULL), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_tensor(w, "ab", INFER_TYPE_F32, 1, ne, NULL), INFER_OK);
    ck_assert_int_eq(infer_gguf_writer_add_u32(w, "general.alignment", 32), INFER_OK);
    void *mem;
    size_t size;
    ck_assert_int_eq(infer_gguf_writer_write_mem(w, &mem, &size, NULL, 0), INFER_OK);
    infer_gguf_writer_free(w);
    uint8_t *b = mem;
    size_t at = find(b, size, "ab");
    b[at + 1] = 'a';
    expect_fail(b, size, INFER_EFORMAT, "duplicate tensor 'aa'", NULL);
    b[at + 1] = 'b';
    at = find(b, size, "general.alignment") + strlen("general.alignment");
    put32(b + at + 4, 24);
    expect_fail(b, size, INFER_EFORMAT, "general.alignment", "power of two");
    put32(b + at, INFER_GGUF_INT32);
    expect_fail(b, size, INFER_EFORMAT, "general.alignment", "expected u32");
    free(mem);
}
END_TEST

START_TEST(test_open_errors)
{
    infer_gguf *g = (infer_gguf *)1;
    char err[256] = "";
    ck_assert_int_eq(infer_gguf_open("/nonexistent/x.gguf", &g, err, sizeof err), INFER_EIO);
    ck_assert_ptr_null(g);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/x.gguf"));
    ck_assert_int_eq(infer_gguf_open("/tmp", &g, err, sizeof err), INFER_EIO);
    char path[] = "/tmp/test_gguf_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    ck_assert_int_eq(infer_gguf_open(path, &g, err, sizeof err), INFER_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "magic"));
    unlink(path);
    /* NULL err buffer is allowed */
    ck_assert_int_eq(infer_gguf_open_memory("GGUF", 4, NULL, &g, NULL, 0), INFER_EFORMAT);
}
END_TEST

/* ---- exhaustive truncation and byte flips ---- */

/* Touch everything an opened file hands out, so a bad pointer would fault
 * (or be reported by the sanitizers in a COMMONS_SANITIZE build). */
static unsigned walk(const infer_gguf *g)
{
    unsigned sum = 0;
    for (int64_t i = 0; i < infer_gguf_n_kv(g); i++) {
        sum += (unsigned)strlen(infer_gguf_key(g, i));
        infer_gguf_str s;
        infer_gguf_arr a;
        if (infer_gguf_kv_str(g, i, &s) == INFER_OK)
            for (uint64_t k = 0; k < s.len; k++)
                sum += (uint8_t)s.ptr[k];
        if (infer_gguf_kv_arr(g, i, &a) == INFER_OK) {
            if (a.type == INFER_GGUF_STRING) {
                for (uint64_t j = 0; j < a.n; j++)
                    for (uint64_t k = 0; k < a.strs[j].len; k++)
                        sum += (uint8_t)a.strs[j].ptr[k];
            } else {
                for (uint64_t k = 0; k < a.n * infer_gguf_type_size(a.type); k++)
                    sum += ((const uint8_t *)a.data)[k];
            }
        }
    }
    for (int64_t i = 0; i < infer_gguf_n_tensors(g); i++) {
        const infer_gguf_tensor *t = infer_gguf_tensor_at(g, i);
        ck_assert_ptr_eq(infer_gguf_find_tensor(g, t->name), t);
        for (size_t k = 0; k < t->nbytes; k++)
            sum += ((const uint8_t *)t->data)[k];
    }
    return sum;
}

/* Opens an exact-size heap copy so any read past the end is a real overrun. */
static int try_open(const uint8_t *buf, size_t size, int64_t *n_kv, int64_t *n_t)
{
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, buf, size);
    infer_gguf *g = NULL;
    char err[512] = "";
    int rc = infer_gguf_open_memory(copy, size, "fuzz", &g, err, sizeof err);
    if (rc == INFER_OK) {
        ck_assert_ptr_nonnull(g);
        walk(g);
        *n_kv = infer_gguf_n_kv(g);
        *n_t = infer_gguf_n_tensors(g);
        infer_gguf_close(g);
    } else {
        ck_assert_ptr_null(g);
        ck_assert_msg(strlen(err) > 10, "failure %d without a message", rc);
    }
    free(copy);
    return rc;
}

START_TEST(test_every_truncation)
{
    size_t size;
    uint8_t *ref = make_file(0, &size);
    int64_t kv, nt;
    size_t last_tensor_end = 0;
    infer_gguf *g;
    ck_assert_int_eq(infer_gguf_open_memory(ref, size, "ref", &g, NULL, 0), INFER_OK);
    for (int64_t i = 0; i < infer_gguf_n_tensors(g); i++) {
        const infer_gguf_tensor *t = infer_gguf_tensor_at(g, i);
        size_t end = (size_t)((const uint8_t *)t->data - ref) + t->nbytes;
        if (end > last_tensor_end)
            last_tensor_end = end;
    }
    infer_gguf_close(g);
    for (size_t cut = 0; cut < size; cut++) {
        int rc = try_open(ref, cut, &kv, &nt);
        /* Only the trailing padding after the last tensor may be cut. */
        if (cut < last_tensor_end)
            ck_assert_msg(rc == INFER_EFORMAT, "truncated at %zu of %zu opened", cut, size);
        else
            ck_assert_msg(rc == INFER_OK && kv == 18 && nt == 3, "cut at %zu: rc %d", cut, rc);
    }
    free(ref);
}
END_TEST

START_TEST(test_byte_flips)
{
    size_t size;
    uint8_t *ref = make_file(0, &size);
    infer_gguf *g;
    ck_assert_int_eq(infer_gguf_open_memory(ref, size, "ref", &g, NULL, 0), INFER_OK);
    size_t header = (size_t)infer_gguf_data_offset(g);
    infer_gguf_close(g);
    uint8_t *b = malloc(size);
    static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
    unsigned ok = 0, failed = 0;
    for (size_t at = 0; at < header; at++) {
        for (size_t v = 0; v <= sizeof vals; v++) {
            memcpy(b, ref, size);
            b[at] = v < sizeof vals ? vals[v] : (uint8_t)~ref[at];
            if (b[at] == ref[at])
                continue;
            int64_t kv, nt;
            if (try_open(b, size, &kv, &nt) == INFER_OK)
                ok++;
            else
                failed++;
        }
    }
    /* Both outcomes must occur: flips in string bytes are harmless, flips in
     * lengths and types are not. */
    ck_assert_uint_gt(ok, 0);
    ck_assert_uint_gt(failed, 0);
    free(b);
    free(ref);
}
END_TEST

/* ---- real files ---- */

START_TEST(test_real_vocab_files)
{
    static const char *names[] = {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf",
                                  "ggml-vocab-phi-3.gguf"};
    for (size_t f = 0; f < 3; f++) {
        char path[1024], err[512];
        snprintf(path, sizeof path, "%s/%s", vocab_dir, names[f]);
        infer_gguf *g;
        int rc = infer_gguf_open(path, &g, err, sizeof err);
        ck_assert_msg(rc == INFER_OK, "%s", err);
        infer_gguf_str model;
        ck_assert_int_eq(infer_gguf_get_str(g, "tokenizer.ggml.model", &model), INFER_OK);
        infer_gguf_arr toks;
        ck_assert_int_eq(infer_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks), INFER_OK);
        ck_assert_int_eq(toks.type, INFER_GGUF_STRING);
        ck_assert_uint_gt(toks.n, 1000);
        walk(g);
        /* copy every key into a new file and read it back identically */
        infer_gguf_writer *w = infer_gguf_writer_new();
        for (int64_t i = 0; i < infer_gguf_n_kv(g); i++)
            ck_assert_int_eq(infer_gguf_writer_copy_kv(w, g, i), INFER_OK);
        void *mem;
        size_t size;
        ck_assert_int_eq(infer_gguf_writer_write_mem(w, &mem, &size, err, sizeof err), INFER_OK);
        infer_gguf_writer_free(w);
        infer_gguf *c;
        ck_assert_int_eq(infer_gguf_open_memory(mem, size, "copy", &c, err, sizeof err), INFER_OK);
        ck_assert_int_eq(infer_gguf_n_kv(c), infer_gguf_n_kv(g));
        infer_gguf_arr toks2;
        ck_assert_int_eq(infer_gguf_get_arr(c, "tokenizer.ggml.tokens", &toks2), INFER_OK);
        ck_assert_uint_eq(toks2.n, toks.n);
        for (uint64_t i = 0; i < toks.n; i++) {
            ck_assert_uint_eq(toks2.strs[i].len, toks.strs[i].len);
            ck_assert(memcmp(toks2.strs[i].ptr, toks.strs[i].ptr, toks.strs[i].len) == 0);
        }
        infer_gguf_close(c);
        free(mem);
        infer_gguf_close(g);
    }
}
END_TEST

int main(int argc, char **argv)
{
    if (argc > 1)
        vocab_dir = argv[1];
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_roundtrip_memory);
    tcase_add_test(tc, test_roundtrip_file_aligned);
    tcase_add_test(tc, test_writer_rejects_bad_input);
    tcase_add_test(tc, test_type_table);
    tcase_add_test(tc, test_specific_corruptions);
    tcase_add_test(tc, test_duplicate_tensor_and_alignment_key);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_every_truncation);
    tcase_add_test(tc, test_byte_flips);
    tcase_add_test(tc, test_real_vocab_files);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
