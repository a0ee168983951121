/* test_plan.c: the EASY backfill planner on small clusters with known answers. */
#include "qtest.h"
#include "quota_plan.h"

#define G (1LL << 30)

static bool fits(const quota_res *have, const quota_res *need)
{
    return have->cpus >= need->cpus && have->gpus >= need->gpus && have->mem >= need->mem;
}

static void add(quota_res *a, const quota_res *b, int sign)
{
    a->cpus += sign * b->cpus;
    a->gpus += sign * b->gpus;
    a->mem += sign * b->mem;
}

static quota_plan *cluster(int n, const quota_res *node, quota_backfill mode)
{
    quota_plan *pl = quota_plan_new(n);
    ck_assert_ptr_nonnull(pl);
    quota_res free_now[16];
    for (int i = 0; i < n; i++)
        free_now[i] = *node;
    ck_assert_int_eq(quota_plan_begin(pl, 0, mode, free_now), QUOTA_OK);
    return pl;
}

static quota_plan_job job(int64_t nodes, int64_t cpus, int64_t gpus, int64_t tl)
{
    quota_plan_job j = {.nodes = nodes, .per_node = {cpus, gpus, G}, .time_limit = tl};
    return j;
}

/* Node 0 busy until t=100: a job started in this pass, so the planner knows
 * it gives node 0 back at its time limit. */
static void busy_node0(quota_plan *pl, const quota_res *node)
{
    int got[4];
    quota_plan_job a = job(1, node->cpus, 0, 100);
    ck_assert_int_eq(quota_plan_try(pl, &a, got), QUOTA_PLAN_START);
    ck_assert_int_eq(got[0], 0);
}

/* Jobs start in order while they fit, first fit by node index. */
START_TEST(fcfs_order)
{
    quota_res node = {4, 0, 16 * G};
    quota_plan *pl = cluster(2, &node, QUOTA_BACKFILL_NONE);
    int got[2];
    quota_plan_job small = job(1, 2, 0, 10);
    ck_assert_int_eq(quota_plan_try(pl, &small, got), QUOTA_PLAN_START);
    ck_assert_int_eq(got[0], 0);
    ck_assert_int_eq(quota_plan_try(pl, &small, got), QUOTA_PLAN_START);
    ck_assert_int_eq(got[0], 0);
    quota_plan_job wide = job(2, 3, 0, 10);
    ck_assert_int_eq(quota_plan_try(pl, &wide, got), QUOTA_PLAN_RESERVED);
    ck_assert_int_eq(quota_plan_shadow(pl), 10); /* when the small jobs end */
    /* Without backfill, nothing passes the blocked job, even one that fits. */
    ck_assert_int_eq(quota_plan_try(pl, &small, got), QUOTA_PLAN_WAIT);
    quota_plan_free(pl);
}
END_TEST

/* Two nodes; node 0 busy until 100. B needs both nodes: reserved at 100.
 * C (node 1 for 100 s) ends by the shadow time: backfilled. C2 (150 s)
 * would still hold node 1 at 100, delaying B: it waits. */
START_TEST(backfill_respects_reservation)
{
    quota_res node = {4, 0, 16 * G};
    quota_plan *pl = cluster(2, &node, QUOTA_BACKFILL_EASY);
    busy_node0(pl, &node); /* the planner itself records its release at 100 */
    int got[2];
    quota_plan_job b = job(2, 4, 0, 50);
    ck_assert_int_eq(quota_plan_try(pl, &b, got), QUOTA_PLAN_RESERVED);
    ck_assert_int_eq(quota_plan_shadow(pl), 100);
    quota_plan_job c2 = job(1, 4, 0, 150);
    ck_assert_int_eq(quota_plan_try(pl, &c2, got), QUOTA_PLAN_WAIT);
    quota_plan_job none = job(1, 1, 0, 0); /* no time limit: runs past the shadow */
    ck_assert_int_eq(quota_plan_try(pl, &none, got), QUOTA_PLAN_WAIT);
    quota_plan_job c = job(1, 4, 0, 100);
    ck_assert_int_eq(quota_plan_try(pl, &c, got), QUOTA_PLAN_START);
    ck_assert_int_eq(got[0], 1);
    ck_assert(quota_plan_full(pl));
    quota_plan_free(pl);
}
END_TEST

/* Three nodes; 0 and 1 busy until 100. B needs two full nodes: reserved at
 * 100 on nodes 0 and 1, leaving node 2 free at the shadow time. So a long job
 * may backfill onto node 2: it cannot delay B. */
START_TEST(long_job_backfills_beside_reservation)
{
    quota_res node = {4, 0, 16 * G};
    quota_plan *pl = cluster(3, &node, QUOTA_BACKFILL_EASY);
    int got[3];
    quota_plan_job a = job(2, 4, 0, 100);
    ck_assert_int_eq(quota_plan_try(pl, &a, got), QUOTA_PLAN_START);
    quota_plan_job b = job(2, 4, 0, 500);
    ck_assert_int_eq(quota_plan_try(pl, &b, got), QUOTA_PLAN_RESERVED);
    quota_plan_job lng = job(1, 3, 0, 10000);
    ck_assert_int_eq(quota_plan_try(pl, &lng, got), QUOTA_PLAN_START);
    ck_assert_int_eq(got[0], 2);
    /* Node 2 has 1 CPU left now and at the shadow: another long 1-CPU job fits,
     * a 2-CPU one does not. */
    quota_plan_job one = job(1, 1, 0, 10000), two = job(1, 2, 0, 10000);
    ck_assert_int_eq(quota_plan_try(pl, &two, got), QUOTA_PLAN_WAIT);
    ck_assert_int_eq(quota_plan_try(pl, &one, got), QUOTA_PLAN_START);
    quota_plan_free(pl);
}
END_TEST

/* The shadow is the earliest release that makes enough nodes fit. */
START_TEST(shadow_is_earliest_fit)
{
    quota_res node = {8, 0, 16 * G};
    quota_plan *pl = cluster(3, &node, QUOTA_BACKFILL_EASY);
    int got[3];
    quota_plan_job a = job(3, 6, 0, 0);
    ck_assert_int_eq(quota_plan_try(pl, &a, got), QUOTA_PLAN_START);
    quota_res part = {6, 0, G};
    ck_assert_int_eq(quota_plan_release(pl, 2, &part, 300), QUOTA_OK);
    ck_assert_int_eq(quota_plan_release(pl, 0, &part, 50), QUOTA_OK);
    ck_assert_int_eq(quota_plan_release(pl, 1, &part, -20), QUOTA_OK); /* overdue: now */
    quota_plan_job b = job(2, 5, 0, 10);   /* needs 2 nodes with 5 CPUs: at t=50 */
    ck_assert_int_eq(quota_plan_try(pl, &b, got), QUOTA_PLAN_RESERVED);
    ck_assert_int_eq(quota_plan_shadow(pl), 50);
    quota_plan_free(pl);
}
END_TEST

/* GPUs and memory count per node: a GPU job cannot use a CPU-only node. */
START_TEST(gpu_and_memory_aware)
{
    quota_plan *pl = quota_plan_new(3);
    quota_res free_now[3] = {{32, 0, 256 * G}, {32, 4, 256 * G}, {32, 4, 64 * G}};
    ck_assert_int_eq(quota_plan_begin(pl, 0, QUOTA_BACKFILL_EASY, free_now), QUOTA_OK);
    int got[3];
    quota_plan_job g = {.nodes = 1, .per_node = {8, 2, 128 * G}, .time_limit = 60};
    ck_assert_int_eq(quota_plan_try(pl, &g, got), QUOTA_PLAN_START);
    ck_assert_int_eq(got[0], 1); /* node 0 has no GPUs, node 2 too little memory */
    ck_assert_int_eq(quota_plan_try(pl, &g, got), QUOTA_PLAN_START);
    ck_assert_int_eq(got[0], 1); /* 2 GPUs and 128G are still free there */
    /* Node 1 is out of GPUs until the first job's time limit (60). */
    ck_assert_int_eq(quota_plan_try(pl, &g, got), QUOTA_PLAN_RESERVED);
    ck_assert_int_eq(quota_plan_shadow(pl), 60);
    quota_plan_free(pl);
}
END_TEST

/* A job too big for the cluster is NEVER and does not block the others. */
START_TEST(never_does_not_block)
{
    quota_res node = {4, 0, 16 * G};
    quota_plan *pl = cluster(2, &node, QUOTA_BACKFILL_NONE);
    int got[4];
    quota_plan_job wide = job(3, 1, 0, 10), fat = job(1, 8, 0, 10), gpu = job(1, 1, 1, 10);
    ck_assert_int_eq(quota_plan_try(pl, &wide, got), QUOTA_PLAN_NEVER);
    ck_assert_int_eq(quota_plan_try(pl, &fat, got), QUOTA_PLAN_NEVER);
    ck_assert_int_eq(quota_plan_try(pl, &gpu, got), QUOTA_PLAN_NEVER);
    ck_assert_int_eq(quota_plan_shadow(pl), -1);
    quota_plan_job ok = job(2, 4, 0, 10);
    ck_assert_int_eq(quota_plan_try(pl, &ok, got), QUOTA_PLAN_START);
    quota_plan_job bad = job(0, 1, 0, 10);
    ck_assert_int_eq(quota_plan_try(pl, &bad, got), QUOTA_EARG);
    ck_assert_int_eq(quota_plan_release(pl, 7, &node, 10), QUOTA_EARG);
    quota_plan_free(pl);
}
END_TEST

/* A failed search is remembered (jobs needing as much or more fail without a
 * search); smaller jobs must still be placed. */
START_TEST(failed_searches_do_not_overprune)
{
    quota_plan *pl = quota_plan_new(2);
    quota_res free_now[2] = {{1, 0, 16 * G}, {3, 1, 16 * G}};
    ck_assert_int_eq(quota_plan_begin(pl, 0, QUOTA_BACKFILL_EASY, free_now), QUOTA_OK);
    quota_res busy = {3, 0, 0};
    ck_assert_int_eq(quota_plan_release(pl, 0, &busy, 100), QUOTA_OK);
    ck_assert_int_eq(quota_plan_release(pl, 1, &(quota_res){1, 0, 0}, 100), QUOTA_OK);
    int got[2];
    quota_plan_job top = job(2, 4, 0, 50);
    ck_assert_int_eq(quota_plan_try(pl, &top, got), QUOTA_PLAN_RESERVED);
    quota_plan_job x = job(1, 3, 0, 10), y = job(1, 2, 0, 10), z = job(1, 1, 0, 10);
    ck_assert_int_eq(quota_plan_try(pl, &x, got), QUOTA_PLAN_START);
    ck_assert_int_eq(got[0], 1);
    ck_assert_int_eq(quota_plan_try(pl, &y, got), QUOTA_PLAN_WAIT); /* remembered */
    ck_assert_int_eq(quota_plan_try(pl, &y, got), QUOTA_PLAN_WAIT);
    ck_assert_int_eq(quota_plan_try(pl, &z, got), QUOTA_PLAN_START);
    ck_assert_int_eq(got[0], 0);
    /* A GPU-only task (no CPUs) still finds node 1's GPU though every CPU is taken. */
    quota_plan_job g = job(1, 0, 1, 10);
    ck_assert_int_eq(quota_plan_try(pl, &g, got), QUOTA_PLAN_START);
    ck_assert_int_eq(got[0], 1);
    quota_plan_free(pl);
}
END_TEST

/* The EASY promise, checked on random clusters and queues: after a pass, the
 * reserved job still fits at the shadow time on what the running jobs give
 * back by then, minus every job started in the pass that runs past it. */
START_TEST(reservation_never_delayed_random)
{
    enum { N = 12, RUNNING = 30, QUEUE = 60 };
    unsigned seed = 99;
    /* The check must not be vacuous: count reservations, and backfilled jobs
     * (started after one) that run past the shadow time, i.e. use leftovers. */
    int rounds_reserved = 0, past_shadow = 0;
#define RND(m) ((seed = seed * 1103515245u + 12345u), (int64_t)((seed >> 8) % (unsigned)(m)))
    for (int round = 0; round < 300; round++) {
        quota_plan *pl = quota_plan_new(N);
        quota_res cap = {8, 2, 32 * G}, free_now[N];
        quota_res avail[N]; /* at the shadow time, computed independently below */
        for (int i = 0; i < N; i++)
            free_now[i] = cap;
        int64_t rel_node[RUNNING], rel_end[RUNNING];
        quota_res rel_res[RUNNING];
        int nrel = 0;
        for (int r = 0; r < RUNNING; r++) { /* running jobs, one node each */
            int n = (int)RND(N);
            quota_res u = {1 + RND(4), RND(2), (1 + RND(8)) * G};
            if (!fits(&free_now[n], &u))
                continue;
            add(&free_now[n], &u, -1);
            rel_node[nrel] = n;
            rel_res[nrel] = u;
            rel_end[nrel++] = 1 + RND(1000);
        }
        ck_assert_int_eq(quota_plan_begin(pl, 0, QUOTA_BACKFILL_EASY, free_now), QUOTA_OK);
        for (int r = 0; r < nrel; r++)
            quota_plan_release(pl, (int)rel_node[r], &rel_res[r], rel_end[r]);
        quota_plan_job reserved = {0}, started[QUEUE];
        int started_nodes[QUEUE][N], nstarted = 0, got[N];
        bool backfilled[QUEUE], blocked = false;
        for (int q = 0; q < QUEUE; q++) {
            quota_plan_job j = {.nodes = 1 + RND(4),
                                .per_node = {1 + RND(8), RND(3), (1 + RND(16)) * G},
                                .time_limit = 1 + RND(2000)};
            int v = quota_plan_try(pl, &j, got);
            if (v == QUOTA_PLAN_RESERVED) {
                reserved = j;
                blocked = true;
            }
            if (v == QUOTA_PLAN_START) {
                backfilled[nstarted] = blocked;
                started[nstarted] = j;
                memcpy(started_nodes[nstarted++], got, (size_t)j.nodes * sizeof got[0]);
            }
        }
        int64_t shadow = quota_plan_shadow(pl);
        if (shadow >= 0) {
            rounds_reserved++;
            for (int i = 0; i < N; i++)
                avail[i] = free_now[i];
            for (int r = 0; r < nrel; r++)
                if (rel_end[r] <= shadow)
                    add(&avail[rel_node[r]], &rel_res[r], 1);
            for (int s = 0; s < nstarted; s++)
                for (int64_t k = 0; k < started[s].nodes; k++)
                    if (started[s].time_limit > shadow) { /* still running then */
                        add(&avail[started_nodes[s][k]], &started[s].per_node, -1);
                        past_shadow += backfilled[s];
                    }
            int64_t fit = 0;
            for (int i = 0; i < N; i++)
                fit += fits(&avail[i], &reserved.per_node);
            ck_assert_msg(fit >= reserved.nodes, "round %d: reserved job fits on %lld of %lld "
                          "nodes at shadow %lld", round, (long long)fit,
                          (long long)reserved.nodes, (long long)shadow);
        }
        quota_plan_free(pl);
    }
#undef RND
    ck_assert_int_gt(rounds_reserved, 150);
    ck_assert_int_gt(past_shadow, 50);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("quota_plan");
    TCase *t = tcase_create("easy");
    tcase_add_test(t, fcfs_order);
    tcase_add_test(t, backfill_respects_reservation);
    tcase_add_test(t, long_job_backfills_beside_reservation);
    tcase_add_test(t, shadow_is_earliest_fit);
    tcase_add_test(t, gpu_and_memory_aware);
    tcase_add_test(t, never_does_not_block);
    tcase_add_test(t, failed_searches_do_not_overprune);
    tcase_add_test(t, reservation_never_delayed_random);
    suite_add_tcase(s, t);
    return qt_run(s);
}
