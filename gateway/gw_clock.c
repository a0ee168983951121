/* gw_clock.c: monotonic condition variables and deadlines (see gw_clock.h). */
#include "gw_clock.h"

int gw_cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    int rc = pthread_condattr_init(&a);
    if (rc != 0) return rc;
    rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

void gw_mono_deadline(int64_t ms, struct timespec *out)
{
    if (ms < 0) ms = 0;
    clock_gettime(CLOCK_MONOTONIC, out);
    int64_t ns = (int64_t)out->tv_nsec + (ms % 1000) * 1000000;
    out->tv_sec += (time_t)(ms / 1000 + ns / 1000000000);
    out->tv_nsec = (long)(ns % 1000000000);
}
