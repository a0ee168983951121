/* test_clock.c: the gateway's timed waits measure the monotonic clock
 * (gw_clock.h): deadlines, condition variables and the dispatcher's wait.
 * A condition variable left on CLOCK_REALTIME would take a monotonic deadline
 * (seconds since boot) as a date in 1970 and return at once; a deadline taken
 * from the wall clock on a monotonic one would not expire for decades. Each
 * test below fails in one of those two ways if a side is on the wrong clock. */
#include "gw_clock.h"
#include "gw_disp.h"

#include "cm_util.h"

#include <check.h>
#include <errno.h>
#include <time.h>

static int64_t ms_of(clockid_t clk)
{
    struct timespec t;
    clock_gettime(clk, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int64_t ns_of(const struct timespec *t) { return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec; }

/* Slack for a loaded 2-core machine (or a sanitizer build): a wait may end
 * late by scheduling, never early. */
#define LATE_MS 3000

START_TEST(deadline_is_monotonic_now_plus_ms)
{
    static const int64_t cases[] = {0, 1, 999, 1000, 1500, 86400000};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct timespec before, after, d;
        clock_gettime(CLOCK_MONOTONIC, &before);
        gw_mono_deadline(cases[i], &d);
        clock_gettime(CLOCK_MONOTONIC, &after);
        ck_assert_int_ge(d.tv_nsec, 0);
        ck_assert_int_lt(d.tv_nsec, 1000000000);
        ck_assert_int_ge(ns_of(&d), ns_of(&before) + cases[i] * 1000000);
        ck_assert_int_le(ns_of(&d), ns_of(&after) + cases[i] * 1000000);
    }
    struct timespec before, d;
    clock_gettime(CLOCK_MONOTONIC, &before);
    gw_mono_deadline(-5000, &d); /* a deadline already passed: now, not 5 s ago */
    ck_assert_int_ge(ns_of(&d), ns_of(&before));
}
END_TEST

static void timed_wait(const struct timespec *until, int64_t want_ms)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    ck_assert_int_eq(gw_cond_init_mono(&cv), 0);
    int64_t t0 = cm_mono_ms();
    pthread_mutex_lock(&mu);
    int rc;
    while ((rc = pthread_cond_timedwait(&cv, &mu, until)) == 0) {
    } /* nobody signals: only spurious wake-ups */
    pthread_mutex_unlock(&mu);
    int64_t waited = cm_mono_ms() - t0;
    ck_assert_int_eq(rc, ETIMEDOUT);
    ck_assert_int_ge(waited, want_ms - 1); /* cm_mono_ms truncates both ends */
    ck_assert_int_lt(waited, want_ms + LATE_MS);
    pthread_cond_destroy(&cv);
}

START_TEST(cond_waits_on_the_monotonic_clock)
{
    /* A deadline read from CLOCK_MONOTONIC directly: the condition variable's clock. */
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += 200 * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    timed_wait(&until, 200);
    /* The helper's deadline on the helper's condition variable. */
    gw_mono_deadline(300, &until);
    timed_wait(&until, 300);
}
END_TEST

/* No replica: a queued request waits out its deadline (monotonic ms), sleeping
 * between ticks. Were the job's condition variable on the wall clock, every
 * tick would return at once and the wait would spin for its whole length. */
START_TEST(dispatcher_wait_sleeps_until_its_deadline)
{
    gw_disp *d;
    char err[256];
    ck_assert_int_eq(gw_disp_new(NULL, 0, NULL, &d, err, sizeof err), 0);
    gw_job j;
    ck_assert_int_eq(gw_job_init(&j), 0);
    snprintf(j.model, sizeof j.model, "m");
    ck_assert_int_eq(gw_disp_enqueue(d, &j, "citizen", 10), GW_DISP_OK);
    int queued, inflight, slots;
    gw_disp_load(d, &queued, &inflight, &slots);
    ck_assert_int_eq(queued, 1);

    int64_t t0 = cm_mono_ms(), cpu0 = ms_of(CLOCK_THREAD_CPUTIME_ID);
    ck_assert_int_eq(gw_disp_wait(d, &j, t0 + 500, NULL, NULL), GW_DISP_TIMEOUT);
    int64_t waited = cm_mono_ms() - t0, cpu = ms_of(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    ck_assert_int_ge(waited, 500);
    ck_assert_int_lt(waited, 500 + LATE_MS);
    ck_assert_msg(cpu < 50, "the wait used %lld ms of CPU in %lld ms: it spun instead of sleeping",
                  (long long)cpu, (long long)waited);
    ck_assert_int_eq(j.admitted, false);
    gw_disp_load(d, &queued, &inflight, &slots);
    ck_assert_int_eq(queued, 0); /* a request that timed out leaves the queue */

    /* A deadline already passed answers at once. */
    ck_assert_int_eq(gw_disp_enqueue(d, &j, "citizen", 10), GW_DISP_OK);
    ck_assert_int_eq(gw_disp_wait(d, &j, cm_mono_ms() - 1, NULL, NULL), GW_DISP_TIMEOUT);
    gw_job_destroy(&j);
    gw_disp_free(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gateway_clock");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, deadline_is_monotonic_now_plus_ms);
    tcase_add_test(tc, cond_waits_on_the_monotonic_clock);
    tcase_add_test(tc, dispatcher_wait_sleeps_until_its_deadline);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
