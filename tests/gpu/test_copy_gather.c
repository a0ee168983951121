/* test_copy_gather.c: ctest kernels_copy_gather. kern_copy, kern_host_alloc and
 * kern_kv_gather (kernels.h) on the CPU backend against a reference written here, both KV
 * types, a gather that leaves the destination's other positions untouched, and
 * every bad argument refused with a message; then the CUDA backend's entry
 * points refuse a non-CUDA context. Runs without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern_cuda.h"
#include "kernels.h"

static int fails;
#define CHECK(cond, ...) \
    do { if (!(cond)) { fails++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static void gather_case(kern_ctx *kc, int type, int hkv, int hd, int bt, int n_pool)
{
    kern_kv_layout blk = {type, hkv, hd, bt}, dl = {type, hkv, hd, 5 * bt};
    size_t bb = kern_kv_bytes(&blk), db = kern_kv_bytes(&dl), es = type == KERN_TYPE_F32 ? 4 : 2;
    uint8_t *pool = kern_alloc(kc, bb * n_pool), *dst = kern_alloc(kc, db), *want = malloc(db);
    for (size_t i = 0; i < bb * n_pool; i++) pool[i] = (uint8_t)(i * 131 + 7);
    memset(dst, 0xAB, db);
    memset(want, 0xAB, db);
    int32_t ids[3] = {n_pool - 1, 0, 2};
    /* reference: block ids[i], head h, slot s -> dst position i*bt + s of head h */
    for (int i = 0; i < 3; i++)
        for (int h = 0; h < hkv; h++)
            for (int s = 0; s < bt; s++)
                memcpy(want + ((size_t)h * dl.capacity + (size_t)i * bt + s) * hd * es,
                       pool + (size_t)ids[i] * bb + ((size_t)h * bt + s) * hd * es, (size_t)hd * es);
    int rc = kern_kv_gather(kc, dst, &dl, pool, &blk, n_pool, ids, 3);
    CHECK(rc == KERN_OK, "gather: %s", kern_ctx_error(kc));
    CHECK(!memcmp(dst, want, db), "gather type %d hkv %d hd %d bt %d: bytes differ from the reference", type, hkv,
          hd, bt);
    /* bad arguments: refused, destination untouched */
    int32_t bad_id[1] = {n_pool};
    kern_kv_layout small = dl, other = dl;
    small.capacity = 2 * bt;
    other.head_dim = hd + 1;
    CHECK(kern_kv_gather(kc, dst, &dl, pool, &blk, n_pool, bad_id, 1) == KERN_EINVAL &&
              strstr(kern_ctx_error(kc), "outside the pool"), "id past the pool: %s", kern_ctx_error(kc));
    CHECK(kern_kv_gather(kc, dst, &small, pool, &blk, n_pool, ids, 3) == KERN_EINVAL &&
              strstr(kern_ctx_error(kc), "capacity"), "too small a destination: %s", kern_ctx_error(kc));
    CHECK(kern_kv_gather(kc, dst, &other, pool, &blk, n_pool, ids, 3) == KERN_EINVAL, "layouts differ");
    CHECK(kern_kv_gather(kc, NULL, &dl, pool, &blk, n_pool, ids, 3) == KERN_EINVAL, "NULL dst");
    CHECK(kern_kv_gather(kc, dst, &dl, pool, &blk, n_pool, ids, 0) == KERN_EINVAL, "no ids");
    CHECK(kern_kv_gather(kc, dst, &dl, pool, NULL, n_pool, ids, 3) == KERN_EINVAL, "NULL block layout");
    CHECK(!memcmp(dst, want, db), "a refused gather changed the destination");
    kern_free(kc, pool);
    kern_free(kc, dst);
    free(want);
}

int main(void)
{
    kern_config cfg = {.backend = KERN_BACKEND_CPU, .n_threads = 1};
    kern_ctx *kc;
    char err[256];
    if (kern_ctx_create(&cfg, &kc, err, sizeof err)) return printf("CPU context: %s\n", err), 1;

    char *a = kern_alloc(kc, 100), *b = kern_alloc(kc, 100);
    for (int i = 0; i < 100; i++) a[i] = (char)i, b[i] = 0;
    CHECK(kern_copy(kc, b, a, 100) == KERN_OK && !memcmp(a, b, 100), "copy");
    CHECK(kern_copy(kc, b, a, 0) == KERN_OK, "empty copy");
    CHECK(kern_copy(kc, a + 10, a, 20) == KERN_EINVAL && strstr(kern_ctx_error(kc), "overlap"), "overlap: %s",
          kern_ctx_error(kc));
    CHECK(kern_copy(kc, NULL, a, 4) == KERN_EINVAL, "NULL dst");
    CHECK(kern_copy(NULL, b, a, 4) == KERN_EINVAL, "NULL ctx");
    kern_free(kc, a);
    kern_free(kc, b);
    char *h = kern_host_alloc(kc, 1000);
    CHECK(h && (uintptr_t)h % 64 == 0, "kern_host_alloc: %p %s", (void *)h, kern_ctx_error(kc));
    if (h) memset(h, 7, 1000);
    kern_host_free(kc, h);
    CHECK(kern_host_alloc(kc, 0) == NULL && strstr(kern_ctx_error(kc), "0 bytes"), "0-byte host alloc accepted");
    kern_host_free(kc, NULL);

    gather_case(kc, KERN_TYPE_F32, 2, 64, 16, 4);
    gather_case(kc, KERN_TYPE_F16, 1, 256, 16, 3);
    gather_case(kc, KERN_TYPE_F16, 3, 6, 5, 7); /* sizes that are no multiple of 16 bytes */

    /* the CUDA-only entry points refuse a CPU context */
    int32_t id = 0;
    kern_kv_layout l = {KERN_TYPE_F32, 1, 4, 4};
    CHECK(kern_cuda_copy(kc, &id, &id, 4) == KERN_EINVAL, "kern_cuda_copy on a CPU context");
    CHECK(kern_cuda_kv_gather(kc, &id, &l, &id, &l, 1, &id, 1) == KERN_EINVAL, "kern_cuda_kv_gather on CPU");
    CHECK(kern_cuda_graph_begin(kc) == KERN_EINVAL, "graph capture on a CPU context");
    kern_ctx_destroy(kc);
    printf("%s\n", fails ? "FAILED" : "all copy/gather checks passed");
    return fails ? 1 : 0;
}
