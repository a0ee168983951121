/* test_batch.c: launch batches (runner.c): a burst of launches forked,
 * group-committed and released together; bad, repeated and id-less launches
 * inside a batch; the store's group commit; and kill -9 of the agent at
 * points inside a burst, after which every job runs exactly once.
 *
 * Usage: test_agent_batch subreaper|cgroup ("cgroup" exits 77, skipped,
 * where this machine has no writable cgroup v2 with cgroup.kill). */
#include "agent.h"
#include "agent_internal.h"
#include "cm_log.h"
#include "cm_util.h"

#include <check.h>
#include "fixture.h"
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static enum agent_containment g_contain = AGENT_CONTAIN_SUBREAPER;

static agent_runner *open_runner(void)
{
    struct agent_runner_opts o = {.state_dir = g_state, .node = g_node, .kill_grace_ms = 500,
                                  .containment = g_contain, .lock_wait_ms = 5000};
    agent_runner *r = NULL;
    char err[512] = "";
    ck_assert_msg(agent_runner_open(&o, &r, err, sizeof err) == 0, "open: %s", err);
    return r;
}

/* A LAUNCH running `sh -c CMD` in the work dir, output to /dev/null. */
static json_t *launch_sh(int64_t id, const char *cmd)
{
    return json_pack("{sI ss ss ss ss s[sss]}", "id", (json_int_t)id, "unix_user", g_user,
                     "workdir", g_work, "stdout", "/dev/null", "stderr", "/dev/null", "command",
                     "/bin/sh", "-c", cmd);
}

/* Each job appends its pid to work/m-<id>: one line per start. */
static json_t *marker_job(int64_t id, const char *then)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "echo $$ >> m-%lld; %s", (long long)id, then);
    return launch_sh(id, cmd);
}

static int starts(int64_t id)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/m-%lld", g_work, (long long)id);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

/* How many marker files exist (jobs that started at least once). */
static int started_count(void)
{
    DIR *d = opendir(g_work);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, "m-", 2) == 0;
    closedir(d);
    return n;
}

/* Ticks until every instance of ids [from, to) has ended. */
static void wait_all_ended(agent_runner *r, int64_t from, int64_t to, int timeout_ms)
{
    int64_t until = cm_mono_ms() + timeout_ms;
    for (;;) {
        agent_runner_tick(r);
        int64_t left = 0, first = -1;
        for (int64_t id = from; id < to; id++) {
            struct agent_job_status st;
            agent_runner_status(r, id, 0, &st);
            if (st.phase != AGENT_JOB_ENDED) {
                if (first < 0) first = id;
                left++;
            }
        }
        if (left == 0) return;
        ck_assert_msg(cm_mono_ms() < until, "%lld job(s) not ended after %d ms, first %lld",
                      (long long)left, timeout_ms, (long long)first);
        usleep(10 * 1000);
    }
}

static json_t *find_event(json_t *events, int64_t id, const char *kind)
{
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
        if (json_integer_value(json_object_get(e, "id")) == id &&
            strcmp(json_string_value(json_object_get(e, "event")), kind) == 0)
            return e;
    return NULL;
}

START_TEST(test_batch_runs_each_once)
{
    agent_runner *r = open_runner();
    json_t *batch = json_array();
    for (int64_t id = 1; id <= 100; id++) {
        char then[32];
        snprintf(then, sizeof then, "exit %d", (int)(id % 7));
        json_array_append_new(batch, marker_job(id, then));
    }
    /* Inside the same burst: a repeat of id 5, a launch without an id, one
     * with a bad field and one for an account that does not exist. */
    json_array_append_new(batch, marker_job(5, "exit 0"));
    json_array_append_new(batch, json_pack("{ss}", "unix_user", g_user));
    json_t *bad = marker_job(101, "true");
    json_object_set_new(bad, "workdir", json_string("relative"));
    json_array_append_new(batch, bad);
    json_t *nouser = marker_job(102, "true");
    json_object_set_new(nouser, "unix_user", json_string("no-such-user-x"));
    json_array_append_new(batch, nouser);
    ck_assert_int_eq(agent_runner_launch_batch(r, batch), 1); /* the one without an id */
    json_decref(batch);
    wait_all_ended(r, 1, 103, 30000);
    for (int64_t id = 1; id <= 100; id++) {
        struct agent_job_status st;
        agent_runner_status(r, id, 0, &st);
        ck_assert_msg(st.exit_code == id % 7, "job %lld: exit %d", (long long)id, st.exit_code);
        ck_assert_int_eq(starts(id), 1);
    }
    struct agent_job_status st;
    agent_runner_status(r, 101, 0, &st);
    ck_assert_ptr_nonnull(strstr(st.error, "field \"workdir\""));
    agent_runner_status(r, 102, 0, &st);
    ck_assert_ptr_nonnull(strstr(st.error, "no-such-user-x"));
    ck_assert_int_eq(starts(101) + starts(102), 0);
    /* Every started and ended event is owed once; acknowledged, they are
     * not owed again after a restart, and the instances stay known. */
    json_t *ev = agent_runner_events(r);
    ck_assert_int_eq(json_array_size(ev), 100 * 2 + 2);
    json_t *ids = json_array();
    for (int64_t id = 1; id <= 102; id++) json_array_append_new(ids, json_integer(id));
    agent_runner_ack(r, ev, ids);
    json_decref(ev);
    json_decref(ids);
    agent_runner_close(r);
    r = open_runner();
    ev = agent_runner_events(r);
    ck_assert_int_eq(json_array_size(ev), 0);
    json_decref(ev);
    json_t *again = json_array();
    json_array_append_new(again, marker_job(7, "true"));
    ck_assert_int_eq(agent_runner_launch_batch(r, again), 0);
    json_decref(again);
    agent_runner_status(r, 7, 0, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_ENDED);
    ck_assert_int_eq(st.exit_code, 0);
    ck_assert_int_eq(starts(7), 1);
    agent_runner_close(r);
}
END_TEST

/* The store's group commit: every record durable and readable, and a
 * failure reported per record with the path. */
START_TEST(test_store_save_many)
{
    agent_runner_close(open_runner()); /* creates state/jobs */
    struct agent_job jobs[20], *v[20];
    for (int i = 0; i < 20; i++) {
        jobs[i] = (struct agent_job){.id = 200 + i, .phase = AJ_RUNNING, .pid = 1000 + i,
                                     .exit_code = -1};
        v[i] = &jobs[i];
    }
    int rcs[20];
    char err[512] = "";
    ck_assert_int_eq(agent_store_save_many(g_state, v, 20, rcs, err, sizeof err), 0);
    for (int i = 0; i < 20; i++) {
        struct agent_job back;
        ck_assert_int_eq(rcs[i], 0);
        ck_assert_int_eq(agent_store_load_one(g_state, 200 + i, 0, 0, &back, err, sizeof err), 0);
        ck_assert_int_eq(back.pid, 1000 + i);
        ck_assert_int_eq(back.phase, AJ_RUNNING);
        json_decref(back.binding);
    }
    char missing[PATH_MAX + 16];
    snprintf(missing, sizeof missing, "%s/nowhere", g_dir);
    ck_assert_int_eq(agent_store_save_many(missing, v, 3, rcs, err, sizeof err), 3);
    ck_assert_int_eq(rcs[0] + rcs[1] + rcs[2], -3);
    ck_assert_ptr_nonnull(strstr(err, "nowhere/jobs/200-0.json"));
}
END_TEST

/* Launches n marker jobs from id `from` in a child process (an agent with
 * its own runner) and kills it with SIGKILL once `after` of them have
 * started; returns how many had started then. */
static int burst_and_kill(int64_t from, int n, int after)
{
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        struct agent_runner_opts o = {.state_dir = g_state, .node = g_node,
                                      .kill_grace_ms = 500, .containment = g_contain,
                                      .lock_wait_ms = 5000};
        agent_runner *r = NULL;
        char err[512];
        if (agent_runner_open(&o, &r, err, sizeof err) != 0) _exit(3);
        json_t *batch = json_array();
        for (int64_t id = from; id < from + n; id++)
            json_array_append_new(batch, marker_job(id, "sleep 0.3"));
        agent_runner_launch_batch(r, batch);
        for (;;) usleep((useconds_t)agent_runner_tick(r) * 1000);
    }
    int64_t until = cm_mono_ms() + 30000;
    while (started_count() < after && cm_mono_ms() < until) {
        int status;
        ck_assert_int_eq(waitpid(child, &status, WNOHANG), 0); /* the agent must not exit */
        usleep(1000);
    }
    kill(child, SIGKILL);
    int at = started_count();
    ck_assert_int_eq(waitpid(child, NULL, 0), child);
    return at;
}

/* kill -9 of the agent at several points of a burst (after the first
 * start, a quarter, half, most): the next agent, sent every launch again
 * (commonsd re-sends what it has not seen acknowledged), runs each job
 * exactly once and reports each end with the job's own status. */
START_TEST(test_kill9_during_burst)
{
    const int n = 100, points[] = {1, n / 4, n / 2, n - 10};
    int mid = 0;
    for (int k = 0; k < 4; k++) {
        int64_t from = 1000 * (k + 1);
        /* Markers of earlier rounds stay: count only this round's. */
        int before = started_count();
        int at = burst_and_kill(from, n, before + points[k]) - before;
        mid += at > 0 && at < n;
        agent_runner *r = open_runner();
        json_t *batch = json_array();
        for (int64_t id = from; id < from + n; id++)
            json_array_append_new(batch, marker_job(id, "sleep 0.3"));
        ck_assert_int_eq(agent_runner_launch_batch(r, batch), 0);
        json_decref(batch);
        wait_all_ended(r, from, from + n, 60000);
        json_t *ev = agent_runner_events(r);
        for (int64_t id = from; id < from + n; id++) {
            struct agent_job_status st;
            agent_runner_status(r, id, 0, &st);
            ck_assert_msg(starts(id) == 1, "round %d: job %lld started %d times", k,
                          (long long)id, starts(id));
            ck_assert_msg(st.exit_code == 0 && st.error[0] == '\0',
                          "round %d: job %lld ended with %d (%s)", k, (long long)id,
                          st.exit_code, st.error);
            ck_assert_msg(find_event(ev, id, "ended") != NULL, "round %d: job %lld's end not owed",
                          k, (long long)id);
        }
        json_decref(ev);
        ck_assert_int_eq(agent_runner_active(r), 0);
        agent_runner_close(r);
    }
    /* The kills did land inside bursts (not before or after all of them). */
    ck_assert_int_ge(mid, 3);
}
END_TEST

static Suite *batch_suite(void)
{
    Suite *s = suite_create("agent_batch");
    TCase *tc = tcase_create("batch");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_batch_runs_each_once);
    tcase_add_test(tc, test_store_save_many);
    tcase_add_test(tc, test_kill9_during_burst);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    return fixture_main(argc, argv, "test_agent_batch", batch_suite, &g_contain);
}
