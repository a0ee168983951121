/* ref.h: independent double-precision references for the kernel tests,
 * written per element from the format descriptions (not shared with the
 * implementation under test). */
#ifndef COMMONS_KERN_TEST_REF_H
#define COMMONS_KERN_TEST_REF_H

#include "kernels.h"

double ref_f16(uint16_t h);
/* Dequantizes n elements of type t into dst (doubles). */
void ref_dequant(int t, const void *src, double *dst, int64_t n);
/* xorshift random numbers, reproducible per seed. */
void ref_seed(uint64_t s);
double ref_uniform(double lo, double hi);
void ref_fill(float *x, size_t n, double lo, double hi);

#endif
