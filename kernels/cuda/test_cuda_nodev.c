/* test_cuda_nodev.c: ctest for the CUDA backend that needs no GPU. Without
 * a device, kern_ctx_create(KERN_BACKEND_CUDA) must fail with KERN_EBACKEND,
 * a NULL ctx and a message naming the cause, never crash. With one (a GPU
 * box running ctest), the context must work: upload/download round trip,
 * device memory not host memory, a bad ordinal refused. Either way a
 * non-existent ordinal is refused with a message. Kernel correctness is
 * tests/gpu's job. */
#include <stdio.h>
#include <string.h>

#include "kern_cuda.h"
#include "kernels.h"

static int failures;
#define CHECK(cond, ...)                                       \
    do {                                                       \
        if (!(cond)) {                                         \
            failures++;                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                      \
            fputc('\n', stderr);                               \
        }                                                      \
    } while (0)

int main(void)
{
    char err[256] = "unchanged";
    kern_ctx *ctx = (kern_ctx *)&failures; /* must be overwritten with NULL on failure */
    kern_config cfg = {.backend = KERN_BACKEND_CUDA, .n_threads = 1, .device = 0};
    int rc = kern_ctx_create(&cfg, &ctx, err, sizeof err);
    if (rc != KERN_OK) {
        printf("no usable CUDA device: %s\n", err);
        CHECK(rc == KERN_EBACKEND || rc == KERN_ENOTSUP, "status %d, expected KERN_EBACKEND", rc);
        CHECK(ctx == NULL, "ctx not NULL after a failed create");
        CHECK(strstr(err, "CUDA") != NULL, "message does not mention CUDA: '%s'", err);
    } else {
        char desc[128];
        CHECK(kern_cuda_describe(ctx, desc, sizeof desc) == KERN_OK, "describe: %s", kern_ctx_error(ctx));
        printf("CUDA device present: %s\n", desc);
        CHECK(kern_ctx_backend(ctx) == KERN_BACKEND_CUDA, "backend");
        CHECK(!kern_ctx_host_memory(ctx), "CUDA memory reported as host memory");
        float in[100], out[100];
        for (int i = 0; i < 100; i++) in[i] = (float)i * 0.5f, out[i] = -1;
        float *d = kern_alloc(ctx, sizeof in);
        CHECK(d != NULL, "alloc: %s", kern_ctx_error(ctx));
        if (d) {
            CHECK(kern_upload(ctx, d, in, sizeof in) == KERN_OK, "upload: %s", kern_ctx_error(ctx));
            CHECK(kern_download(ctx, out, d, sizeof out) == KERN_OK, "download: %s", kern_ctx_error(ctx));
            CHECK(memcmp(in, out, sizeof in) == 0, "round trip changed the data");
            CHECK(kern_softmax(ctx, d, 0, 10) == KERN_EINVAL, "bad softmax size accepted");
            kern_free(ctx, d);
        }
        CHECK(kern_cuda_topk(ctx, NULL, NULL, NULL, 1, 10, 3) == KERN_EINVAL, "topk NULL accepted");
        kern_ctx_destroy(ctx);
    }
    ctx = NULL;
    cfg.device = 4096;
    rc = kern_ctx_create(&cfg, &ctx, err, sizeof err);
    CHECK(rc != KERN_OK && ctx == NULL, "device 4096 accepted");
    CHECK(strstr(err, "CUDA") != NULL, "message for device 4096 does not mention CUDA: '%s'", err);
    kern_ctx *cpu = NULL;
    kern_config cc = {.backend = KERN_BACKEND_CPU, .n_threads = 1};
    CHECK(kern_ctx_create(&cc, &cpu, err, sizeof err) == KERN_OK, "cpu ctx: %s", err);
    CHECK(kern_cuda_stream(cpu) == NULL, "CPU ctx has a CUDA stream");
    CHECK(kern_cuda_argmax(cpu, NULL, NULL, 1, 1) == KERN_EINVAL, "CUDA argmax on a CPU ctx accepted");
    kern_ctx_destroy(cpu);
    if (failures) return 1;
    printf("ok\n");
    return 0;
}
