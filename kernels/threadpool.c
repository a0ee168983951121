/* threadpool.c: persistent workers and a parallel-for over index ranges.
 *
 * Decode dispatches ~10 jobs per layer, so dispatch must be cheap, and the
 * machine may be shared (more runnable threads than cores), so the caller
 * must never wait for a worker that has not started on the job. Hence:
 *  - the job's generation and next unclaimed index live in one 64-bit atomic
 *    (state = gen << 32 | next); a range is claimed with a CAS that also
 *    checks the generation, so a worker that wakes late either gets a range
 *    of the current job or nothing;
 *  - the caller claims ranges too, then waits only until every claimed range
 *    is done (done == total), never for idle or descheduled workers;
 *  - workers spin briefly on the generation before sleeping on a condition
 *    variable.
 * Job fields (fn, arg, total, grain) are rewritten only after the previous
 * job is complete; a worker that read stale fields fails its CAS. */
#include "kern_internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#define SPIN_ITERS 20000  /* ~tens of microseconds: covers the gap between ops */
#define MAX_CHUNK 0x7fffffff /* ranges are claimed in 32-bit pieces */

struct kern_pool {
    int n_threads; /* including the caller */
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t state;   /* gen << 32 | next unclaimed index */
    atomic_llong done;        /* items finished in the current job */
    atomic_int sleeping;      /* workers blocked (or about to block) on cv */
    atomic_int stop;
    _Atomic(kern_range_fn) fn;
    _Atomic(void *) arg;
    atomic_llong total, grain;
};

typedef struct { kern_pool *p; int tid; } worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline uint32_t gen_of(uint64_t s) { return (uint32_t)(s >> 32); }

/* Claims and runs ranges of job gen until none is left (or the job changed). */
static void work(kern_pool *p, uint32_t gen, int tid)
{
    kern_range_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
    void *arg = atomic_load_explicit(&p->arg, memory_order_relaxed);
    int64_t total = atomic_load_explicit(&p->total, memory_order_relaxed);
    int64_t grain = atomic_load_explicit(&p->grain, memory_order_relaxed);
    uint64_t cur = atomic_load(&p->state);
    for (;;) {
        if (gen_of(cur) != gen) return;
        int64_t b = (uint32_t)cur;
        if (b >= total) return;
        int64_t e = b + grain < total ? b + grain : total;
        /* acq_rel: the acquire pairs with the caller's release of the job fields */
        if (atomic_compare_exchange_weak_explicit(&p->state, &cur, (uint64_t)gen << 32 | (uint64_t)e,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            fn(arg, b, e, tid);
            atomic_fetch_add(&p->done, e - b);
            cur = atomic_load(&p->state);
        }
    }
}

static void *worker(void *a)
{
    worker_arg *wa = a;
    kern_pool *p = wa->p;
    int tid = wa->tid;
    free(wa);
    uint32_t seen = 0; /* gen was 0 at creation; a late starter still sees job 1 */
    for (;;) {
        int spins = 0;
        while (gen_of(atomic_load(&p->state)) == seen && !atomic_load(&p->stop) && spins < SPIN_ITERS) {
            cpu_relax();
            spins++;
        }
        if (gen_of(atomic_load(&p->state)) == seen && !atomic_load(&p->stop)) {
            /* Sleep. The caller bumps the generation before reading sleeping,
             * and we bump sleeping before re-reading the generation (both
             * seq_cst), so either it sees us and broadcasts under mu, or we
             * see the new generation. */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleeping, 1);
            while (gen_of(atomic_load(&p->state)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleeping, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = gen_of(atomic_load(&p->state));
        work(p, seen, tid);
    }
}

int kern_pool_create(int n_threads, kern_pool **out)
{
    *out = NULL;
    if (n_threads < 1) n_threads = 1;
    kern_pool *p = calloc(1, sizeof *p);
    if (!p) return KERN_ENOMEM;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->th = calloc((size_t)n_threads - 1, sizeof *p->th);
        if (!p->th) { kern_pool_destroy(p); return KERN_ENOMEM; }
        for (int i = 1; i < n_threads; i++) {
            worker_arg *wa = malloc(sizeof *wa);
            if (wa) *wa = (worker_arg){p, i};
            if (!wa || pthread_create(&p->th[i - 1], NULL, worker, wa)) {
                free(wa);
                p->n_threads = i; /* destroy joins only the started ones */
                kern_pool_destroy(p);
                return KERN_EBACKEND;
            }
        }
    }
    *out = p;
    return KERN_OK;
}

void kern_pool_destroy(kern_pool *p)
{
    if (!p) return;
    atomic_store(&p->stop, 1);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads && p->th; i++) pthread_join(p->th[i - 1], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->th);
    free(p);
}

int kern_pool_threads(const kern_pool *p) { return p->n_threads; }

static void run_one(kern_pool *p, int64_t total, int64_t grain, kern_range_fn fn, void *arg)
{
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->arg, arg, memory_order_relaxed);
    atomic_store_explicit(&p->total, total, memory_order_relaxed);
    atomic_store_explicit(&p->grain, grain, memory_order_relaxed);
    atomic_store(&p->done, 0);
    uint32_t gen = gen_of(atomic_load(&p->state)) + 1;
    atomic_store(&p->state, (uint64_t)gen << 32); /* seq_cst: publishes the fields above */
    if (atomic_load(&p->sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    work(p, gen, 0);
    for (int spins = 0; atomic_load(&p->done) < total; spins++) {
        if (spins < SPIN_ITERS) cpu_relax();
        else sched_yield(); /* the worker holding a range was descheduled */
    }
}

void kern_pool_run(kern_pool *p, int64_t total, int64_t grain, kern_range_fn fn, void *arg)
{
    if (total <= 0) return;
    if (grain < 1) grain = 1;
    if (p->n_threads == 1 || total <= grain) {
        fn(arg, 0, total, 0);
        return;
    }
    if (total > MAX_CHUNK) { /* indices are claimed as 32-bit values; 2^31 items never
                                 occur in practice (8 GiB of floats), so just run them here */
        fn(arg, 0, total, 0);
        return;
    }
    run_one(p, total, grain, fn, arg);
}
