/* gw_clock.h: the clock of the gateway's timed waits.
 *
 * Every timeout and period in the gateway (a request's queue deadline, the
 * admission tick, the health and discovery periods, the drain at shutdown,
 * the sliding minute of rate limits) is measured on CLOCK_MONOTONIC, so a
 * step of the wall clock (NTP, an administrator setting the date) neither
 * stretches nor cuts them. pthread_cond_timedwait measures CLOCK_REALTIME
 * unless its condition variable was made otherwise, so every condition
 * variable the gateway waits on with a timeout is made by gw_cond_init_mono,
 * and every deadline given to such a wait comes from gw_mono_deadline.
 * The wall clock (cm_now_ms, time()) is read only for times shown to people
 * or stored: the UTC day of token quotas and usage, "created" in responses,
 * the status page's "updated", logs.
 */
#ifndef GW_CLOCK_H
#define GW_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Initializes *cv so that its timed waits measure CLOCK_MONOTONIC.
 * 0, or the errno value of the pthread call that failed (*cv then unusable). */
int gw_cond_init_mono(pthread_cond_t *cv);

/* The absolute CLOCK_MONOTONIC time ms milliseconds from now (a negative ms
 * counts as 0), as pthread_cond_timedwait takes it on a gw_cond_init_mono
 * condition variable. */
void gw_mono_deadline(int64_t ms, struct timespec *out);

#endif
