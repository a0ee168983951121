/* test_isa_env.c: COMMONS_KERN_ISA=portable forces the portable path before
 * the first kernel call, and kernels still compute correctly there. Plain C
 * (no Check) so it also runs on a GPU box without Debian packages. */
#include "kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); return 1; } while (0)

int main(void)
{
    setenv("COMMONS_KERN_ISA", "portable", 1);
    if (kern_get_isa() != KERN_ISA_PORTABLE) FAIL("COMMONS_KERN_ISA=portable ignored: isa %s", kern_isa_name(kern_get_isa()));
    kern_config cfg = {KERN_BACKEND_CPU, 2, 0};
    kern_ctx *c;
    char err[256];
    if (kern_ctx_create(&cfg, &c, err, sizeof err)) FAIL("%s", err);
    float x[64], w[3 * 64], y[3];
    uint8_t q[3 * 68];
    for (int i = 0; i < 64; i++) x[i] = (float)(i % 7) - 3;
    for (int i = 0; i < 3 * 64; i++) w[i] = (float)(i % 5) - 2;
    if (kern_quantize(KERN_TYPE_Q8_0, q, w, 3, 64, err, sizeof err)) FAIL("%s", err);
    if (kern_matmul(c, y, x, q, KERN_TYPE_Q8_0, 1, 3, 64)) FAIL("%s", kern_ctx_error(c));
    for (int r = 0; r < 3; r++) {
        double s = 0, a = 0;
        for (int i = 0; i < 64; i++) {
            s += (double)w[r * 64 + i] * x[i];
            a += fabs((double)w[r * 64 + i] * x[i]);
        }
        /* Q8 rounding of weights and activations: within 1% of sum |w*x| */
        if (fabs(y[r] - s) > 0.01 * a) FAIL("row %d: %g, expected %g", r, y[r], s);
    }
    kern_ctx_destroy(c);
    if (kern_get_isa() != KERN_ISA_PORTABLE) FAIL("isa changed behind our back");
    puts("ok: portable path forced by COMMONS_KERN_ISA");
    return 0;
}
