/* threadpool.c: persistent workers and a parallel-for over index ranges.
 * Decode dispatches ~10 jobs per layer, so dispatch must be cheap: workers
 * spin briefly on a generation counter before sleeping on a condition
 * variable, and the caller works on the job too. Ranges are handed out in
 * grain-sized pieces from an atomic counter (dynamic balance). */
#include "kern_internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#define SPIN_ITERS 20000 /* ~tens of microseconds: covers the gap between ops */

struct kern_pool {
    int n_threads; /* including the caller */
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;      /* bumped once per job */
    atomic_int sleeping;  /* workers blocked (or about to block) on cv */
    atomic_int pending;   /* workers that have not finished the current job */
    atomic_llong next;    /* next unclaimed index of the current job */
    atomic_int stop;
    int64_t total, grain;
    kern_range_fn fn;
    void *arg;
};

typedef struct { kern_pool *p; int tid; } worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void work(kern_pool *p, int tid)
{
    for (;;) {
        int64_t b = atomic_fetch_add(&p->next, p->grain);
        if (b >= p->total) return;
        int64_t e = b + p->grain < p->total ? b + p->grain : p->total;
        p->fn(p->arg, b, e, tid);
    }
}

static void *worker(void *a)
{
    worker_arg *wa = a;
    kern_pool *p = wa->p;
    int tid = wa->tid;
    free(wa);
    /* gen was 0 when the pool was created; a worker that starts late must
     * still take the jobs dispatched before it first looked. */
    unsigned seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop) && spins < SPIN_ITERS) {
            cpu_relax();
            spins++;
        }
        if (atomic_load(&p->gen) == seen && !atomic_load(&p->stop)) {
            /* Sleep. The dispatcher bumps gen before reading sleeping, and we
             * bump sleeping before re-reading gen (both seq_cst), so either it
             * sees us and broadcasts under mu, or we see the new gen. */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleeping, 1);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleeping, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = atomic_load(&p->gen);
        work(p, tid);
        atomic_fetch_sub(&p->pending, 1);
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
            if (!wa || pthread_create(&p->th[i - 1], NULL, worker, wa ? (wa->p = p, wa->tid = i, wa) : NULL)) {
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

void kern_pool_run(kern_pool *p, int64_t total, int64_t grain, kern_range_fn fn, void *arg)
{
    if (total <= 0) return;
    if (grain < 1) grain = 1;
    if (p->n_threads == 1 || total <= grain) {
        fn(arg, 0, total, 0);
        return;
    }
    p->total = total;
    p->grain = grain;
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->next, 0);
    atomic_store(&p->pending, p->n_threads - 1);
    atomic_fetch_add(&p->gen, 1); /* publishes the job fields above */
    if (atomic_load(&p->sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    work(p, 0);
    for (int spins = 0; atomic_load(&p->pending) > 0; spins++) {
        if (spins < SPIN_ITERS) cpu_relax();
        else sched_yield(); /* a worker was descheduled: don't burn its core */
    }
}
