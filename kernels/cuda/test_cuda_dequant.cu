/* test_cuda_dequant.cu: ctest without a GPU. The CUDA kernels dequantize
 * weights with kcu_deq32 (cuda_quant.cuh), which is also compiled for the
 * host; this runs it on the CPU over quantized random rows of every type and
 * checks each 32-element chunk against kern_dequantize (the CPU backend's
 * reference), both with the type's natural load alignment and with byte
 * loads from an odd address, plus the float-row tail reader. The bit
 * layouts of all eleven block formats are thereby checked here; only the
 * arithmetic on the GPU itself is left to tests/gpu. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda_quant.cuh"

static int failures;

template <int T, int A>
static void check_rows(const uint8_t *rows, const float *ref, int n_rows, int k, const char *how)
{
    size_t rb = kern_row_bytes(T, k);
    double worst = 0;
    for (int r = 0; r < n_rows; r++)
        for (int c = 0; c < k / 32; c++) {
            float w[32];
            kcu_deq32<T, A>(rows + r * rb, c, w);
            for (int i = 0; i < 32; i++) {
                double want = ref[(size_t)r * k + 32 * c + i], e = fabs(w[i] - want);
                if (!(e <= 1e-6 * (fabs(want) + 1e-3))) {
                    if (failures++ < 10)
                        printf("FAIL %s %s row %d elem %d: %g, expected %g\n", kern_type_name(T), how, r,
                               32 * c + i, (double)w[i], want);
                }
                worst = e > worst ? e : worst;
            }
        }
    printf("%-5s %-14s max abs diff %.3g\n", kern_type_name(T), how, worst);
}

template <int T>
static void check_type(int k)
{
    const int n_rows = 5;
    size_t rb = kern_row_bytes(T, k);
    float *src = (float *)malloc(sizeof(float) * n_rows * k), *ref = (float *)malloc(sizeof(float) * n_rows * k);
    uint64_t s = 0x2545F4914F6CDD1Dull ^ (uint64_t)T;
    for (int i = 0; i < n_rows * k; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        src[i] = (float)((s >> 11) * (1.0 / 9007199254740992.0)) * 4 - 2;
    }
    /* 16-byte aligned copy and one at an odd address */
    uint8_t *buf = (uint8_t *)aligned_alloc(64, rb * n_rows + 64), *odd = buf + 1;
    uint8_t *al = (uint8_t *)aligned_alloc(64, rb * n_rows + 64);
    char msg[128];
    if (kern_quantize(T, al, src, n_rows, k, msg, sizeof msg) ||
        kern_dequantize(T, ref, al, (int64_t)n_rows * k, msg, sizeof msg)) {
        printf("FAIL %s: host quantize/dequantize: %s\n", kern_type_name(T), msg);
        failures++;
        return;
    }
    memcpy(odd, al, rb * n_rows);
    check_rows<T, kcu_nat_align(T)>(al, ref, n_rows, k, "aligned");
    check_rows<T, 1>(odd, ref, n_rows, k, "odd address");
    if (T == KERN_TYPE_F32 || T == KERN_TYPE_F16 || T == KERN_TYPE_BF16)
        for (int i = 0; i < k; i++)
            if (kcu_float_elem(T, odd, i) != ref[i]) {
                if (failures++ < 10) printf("FAIL %s float tail elem %d\n", kern_type_name(T), i);
            }
    free(src), free(ref), free(buf), free(al);
}

int main(void)
{
    check_type<KERN_TYPE_F32>(64);
    check_type<KERN_TYPE_F16>(64);
    check_type<KERN_TYPE_BF16>(64);
    check_type<KERN_TYPE_Q4_0>(128);
    check_type<KERN_TYPE_Q4_1>(128);
    check_type<KERN_TYPE_Q5_0>(128);
    check_type<KERN_TYPE_Q5_1>(128);
    check_type<KERN_TYPE_Q8_0>(128);
    check_type<KERN_TYPE_Q4_K>(512);
    check_type<KERN_TYPE_Q5_K>(512);
    check_type<KERN_TYPE_Q6_K>(512);
    if (failures) {
        printf("%d mismatches\n", failures);
        return 1;
    }
    printf("ok: every type's chunks match kern_dequantize\n");
    return 0;
}
