/* test_runner.c: the agent's process runner alone, no scheduler: exit codes,
 * scripts, output files, environment, time limits, cancel of a whole tree,
 * Unix accounts, bad launches and recovery from the state dir.
 *
 * Usage: test_agent_runner subreaper|cgroup. The whole suite runs with the
 * given containment; "cgroup" exits 77 (skipped) where this machine has no
 * writable cgroup v2 with cgroup.kill. */
#include "agent.h"
#include "agent_internal.h"
#include "cm_log.h"
#include "cm_util.h"

#include <check.h>
#include "fixture.h"
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static enum agent_containment g_contain = AGENT_CONTAIN_SUBREAPER;
static agent_runner *open_runner_grace(int grace_ms)
{
    struct agent_runner_opts o = {.state_dir = g_state, .node = g_node,
                                  .kill_grace_ms = grace_ms, .containment = g_contain};
    agent_runner *r = NULL;
    char err[512] = "";
    int rc = agent_runner_open(&o, &r, err, sizeof err);
    ck_assert_msg(rc == 0, "open: %s", err);
    const char *want = g_contain == AGENT_CONTAIN_CGROUP ? "cgroup" : "subreaper";
    ck_assert_str_eq(agent_runner_containment(r), want);
    return r;
}

static agent_runner *open_runner(void)
{
    return open_runner_grace(500);
}

static void out_path(int64_t id, const char *what, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s-%lld", g_work, what, (long long)id);
}

/* A LAUNCH for the current account running `sh -c CMD` in the work dir. */
static json_t *launch_sh(int64_t id, const char *cmd)
{
    char out[PATH_MAX + 64], err[PATH_MAX + 64];
    out_path(id, "out", out, sizeof out);
    out_path(id, "err", err, sizeof err);
    return json_pack("{sI ss ss ss ss s[sss] sI}", "id", (json_int_t)id, "unix_user", g_user,
                     "workdir", g_work, "stdout", out, "stderr", err, "command", "/bin/sh", "-c",
                     cmd, "time_limit_s", (json_int_t)0);
}

static void launch(agent_runner *r, json_t *l)
{
    char err[512] = "";
    int rc = agent_runner_launch(r, l, err, sizeof err);
    json_decref(l);
    ck_assert_msg(rc == 0, "launch: %s", err);
}

static struct agent_job_status wait_end(agent_runner *r, int64_t id, int timeout_ms)
{
    struct agent_job_status st;
    int64_t until = cm_mono_ms() + timeout_ms;
    for (;;) {
        int next = agent_runner_tick(r);
        agent_runner_status(r, id, 0, &st);
        if (st.phase == AGENT_JOB_ENDED) return st;
        ck_assert_msg(cm_mono_ms() < until, "job %lld did not end in %d ms", (long long)id,
                      timeout_ms);
        usleep((useconds_t)(next < 20 ? next : 20) * 1000);
    }
}

static char *slurp(const char *path)
{
    char err[256];
    char *s = cm_read_file(path, NULL, err, sizeof err);
    ck_assert_msg(s != NULL, "%s", err);
    return s;
}

static char *job_out(int64_t id, const char *what)
{
    char p[PATH_MAX + 64];
    out_path(id, what, p, sizeof p);
    return slurp(p);
}

/* Waits until path, written by job id, exists and holds a number; returns it. */
static long wait_number_file(agent_runner *r, int64_t id, const char *path, int timeout_ms)
{
    int64_t until = cm_mono_ms() + timeout_ms;
    for (;;) {
        agent_runner_tick(r);
        FILE *f = fopen(path, "r");
        long v = -1;
        if (f) {
            if (fscanf(f, "%ld", &v) != 1) v = -1;
            fclose(f);
        }
        if (v > 0) return v;
        if (cm_mono_ms() >= until) {   /* say what became of the job that should write it */
            struct agent_job_status st;
            agent_runner_status(r, id, 0, &st);
            ck_abort_msg("%s never appeared in %d ms: job %lld phase %d pid %d exit %d signal %d "
                         "error '%s'", path, timeout_ms, (long long)id, (int)st.phase, (int)st.pid,
                         st.exit_code, st.signal, st.error);
        }
        usleep(20 * 1000);
    }
}

static bool proc_gone(pid_t pid)
{
    struct agent_procstat st;
    return agent_proc_stat(pid, &st) != 0 || st.state == 'Z';
}

/* Finds the event of kind for id in an events array; NULL if none. */
static json_t *find_event(json_t *events, int64_t id, const char *kind)
{
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e) {
        if (json_integer_value(json_object_get(e, "id")) == id &&
            strcmp(json_string_value(json_object_get(e, "event")), kind) == 0)
            return e;
    }
    return NULL;
}

START_TEST(test_exit_code)
{
    agent_runner *r = open_runner();
    launch(r, launch_sh(1, "exit 3"));
    launch(r, launch_sh(2, "true"));
    struct agent_job_status st = wait_end(r, 1, 5000);
    ck_assert_int_eq(st.exit_code, 3);
    ck_assert_int_eq(st.signal, 0);
    ck_assert(!st.timed_out && !st.cancelled);
    ck_assert_str_eq(st.error, "");
    st = wait_end(r, 2, 5000);
    ck_assert_int_eq(st.exit_code, 0);
    json_t *ev = agent_runner_events(r);
    json_t *started = find_event(ev, 1, "started"), *ended = find_event(ev, 1, "ended");
    ck_assert_ptr_nonnull(started);
    ck_assert_int_gt(json_integer_value(json_object_get(started, "pid")), 0);
    ck_assert_ptr_nonnull(ended);
    ck_assert_int_eq(json_integer_value(json_object_get(ended, "exit_code")), 3);
    ck_assert(json_is_false(json_object_get(ended, "timed_out")));
    ck_assert_ptr_null(json_object_get(ended, "error"));
    /* Ended but not acknowledged: still listed as running. */
    json_t *running = agent_runner_running(r);
    ck_assert_int_eq(json_array_size(running), 2);
    json_decref(running);
    json_t *acked = json_pack("[I I]", (json_int_t)1, (json_int_t)2);
    agent_runner_ack(r, ev, acked);
    json_decref(acked);
    json_decref(ev);
    running = agent_runner_running(r);
    ck_assert_int_eq(json_array_size(running), 0);
    json_decref(running);
    ev = agent_runner_events(r);
    ck_assert_int_eq(json_array_size(ev), 0);
    json_decref(ev);
    agent_runner_close(r);
}
END_TEST

START_TEST(test_signal_reported)
{
    agent_runner *r = open_runner();
    launch(r, launch_sh(3, "kill -KILL $$"));
    struct agent_job_status st = wait_end(r, 3, 5000);
    ck_assert_int_eq(st.signal, SIGKILL);
    ck_assert_int_eq(st.exit_code, 128 + SIGKILL);
    ck_assert(!st.timed_out && !st.cancelled);
    agent_runner_close(r);
}
END_TEST

static json_t *launch_script(int64_t id, const char *text)
{
    json_t *l = launch_sh(id, "unused");
    json_object_del(l, "command");
    json_object_set_new(l, "script", json_string(text));
    return l;
}

START_TEST(test_script_shebang)
{
    agent_runner *r = open_runner();
    /* bash sets BASH_VERSION; sh (dash) does not: proves the #! line was used. */
    launch(r, launch_script(4, "#!/bin/bash\necho \"bash=${BASH_VERSION:+yes}\"\n"
                               "stat -c %a \"$0\"\n"));
    launch(r, launch_script(5, "echo \"plain ${BASH_VERSION:-sh}\"\n"));
    ck_assert_int_eq(wait_end(r, 4, 5000).exit_code, 0);
    ck_assert_int_eq(wait_end(r, 5, 5000).exit_code, 0);
    char *o4 = job_out(4, "out"), *o5 = job_out(5, "out");
    ck_assert_str_eq(o4, "bash=yes\n700\n");
    ck_assert_str_eq(o5, "plain sh\n");
    free(o4);
    free(o5);
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/scripts/4-0.sh", g_state);
    ck_assert_msg(access(p, F_OK) != 0, "script file %s left behind", p);
    agent_runner_close(r);
}
END_TEST

START_TEST(test_output_files)
{
    agent_runner *r = open_runner();
    launch(r, launch_sh(6, "echo out; echo err >&2; pwd"));
    ck_assert_int_eq(wait_end(r, 6, 5000).exit_code, 0);
    char *o = job_out(6, "out"), *e = job_out(6, "err");
    char want[PATH_MAX + 16];
    snprintf(want, sizeof want, "out\n%s\n", g_work);
    ck_assert_str_eq(o, want);
    ck_assert_str_eq(e, "err\n");
    free(o);
    free(e);
    /* Appends, and one file for both streams when the paths are equal. */
    char shared[PATH_MAX + 64];
    out_path(7, "both", shared, sizeof shared);
    for (int id = 7; id <= 8; id++) {
        json_t *l = launch_sh(id, "echo o$COMMONS_JOB_ID; echo e$COMMONS_JOB_ID >&2");
        json_object_set_new(l, "stdout", json_string(shared));
        json_object_set_new(l, "stderr", json_string(shared));
        launch(r, l);
        ck_assert_int_eq(wait_end(r, id, 5000).exit_code, 0);
    }
    char *b = slurp(shared);
    ck_assert_str_eq(b, "o7\ne7\no8\ne8\n");
    free(b);
    /* Without stdout/stderr: WORKDIR/commons-<id>.out. */
    json_t *l = launch_sh(9, "echo default");
    json_object_del(l, "stdout");
    json_object_del(l, "stderr");
    launch(r, l);
    ck_assert_int_eq(wait_end(r, 9, 5000).exit_code, 0);
    char dp[PATH_MAX + 32];
    snprintf(dp, sizeof dp, "%s/commons-9.out", g_work);
    char *d = slurp(dp);
    ck_assert_str_eq(d, "default\n");
    free(d);
    agent_runner_close(r);
}
END_TEST

START_TEST(test_environment)
{
    agent_runner *r = open_runner();
    json_t *l = launch_sh(10, "echo \"$FOO|$COMMONS_JOB_ID|$COMMONS_JOB_NAME|"
                              "$COMMONS_ARRAY_TASK_ID|$COMMONS_CPUS|$COMMONS_NODE|"
                              "$COMMONS_SUBMIT_DIR|${HOME:+home}|${PATH:+path}\"");
    json_object_set_new(l, "env", json_pack("{ss ss}", "FOO", "bar baz", "COMMONS_JOB_ID",
                                            "999"));
    json_object_set_new(l, "name", json_string("myjob"));
    json_object_set_new(l, "array_task_id", json_integer(7));
    json_object_set_new(l, "cpus", json_integer(3));
    launch(r, l);
    l = launch_sh(11, "echo \"${COMMONS_ARRAY_TASK_ID-unset} ${COMMONS_JOB_NAME-unset} "
                      "$COMMONS_ADDR\"");
    /* Submitted from inside an array task: its stale task id must not leak;
     * the user's own COMMONS_* settings pass through. */
    json_object_set_new(l, "env", json_pack("{ss ss}", "COMMONS_ARRAY_TASK_ID", "3",
                                            "COMMONS_ADDR", "tcp://h:1"));
    launch(r, l);
    ck_assert_int_eq(wait_end(r, 10, 5000).exit_code, 0);
    ck_assert_int_eq(wait_end(r, 11, 5000).exit_code, 0);
    char want[PATH_MAX * 2];
    snprintf(want, sizeof want, "bar baz|10|myjob|7|3|%s|%s|home|path\n", g_node, g_work);
    char *o = job_out(10, "out");
    ck_assert_str_eq(o, want);
    free(o);
    o = job_out(11, "out");
    ck_assert_str_eq(o, "unset unset tcp://h:1\n");
    free(o);
    agent_runner_close(r);
}
END_TEST

/* Runs `sh -c cmd` with a 1 s time limit; returns its end and how long it took. */
static struct agent_job_status run_limited(agent_runner *r, int64_t id, const char *cmd,
                                           int64_t *took)
{
    json_t *l = launch_sh(id, cmd);
    json_object_set_new(l, "time_limit_s", json_integer(1));
    int64_t t0 = cm_mono_ms(); /* the limit counts from a moment inside launch */
    launch(r, l);
    struct agent_job_status st = wait_end(r, id, 10000);
    *took = cm_mono_ms() - t0;
    ck_assert(st.timed_out);
    ck_assert(!st.cancelled);
    return st;
}

START_TEST(test_time_limit_term_then_kill)
{
    agent_runner *r = open_runner_grace(500);
    int64_t took;
    /* Ignores SIGTERM (inherited by sleep): only SIGKILL ends it. */
    struct agent_job_status st = run_limited(r, 12, "trap '' TERM; sleep 30; echo survived",
                                             &took);
    ck_assert_int_eq(st.signal, SIGKILL);
    ck_assert_msg(took >= 1400, "ended after %lld ms, before limit + grace", (long long)took);
    char *o = job_out(12, "out");
    ck_assert_str_eq(o, "");
    free(o);
    agent_runner_close(r);
}
END_TEST

START_TEST(test_time_limit_term_honoured)
{
    agent_runner *r = open_runner_grace(5000);
    int64_t took;
    struct agent_job_status st = run_limited(r, 13, "sleep 30", &took);
    ck_assert_int_eq(st.signal, SIGTERM);
    ck_assert_msg(took < 4500, "SIGTERM should have ended it before the grace");
    agent_runner_close(r);
}
END_TEST

/* Launches `sh -c fmt` where fmt's %s is a file the job writes the pid of
 * an escaping process to; returns that pid once it is written. */
static pid_t launch_escapee(agent_runner *r, int64_t id, const char *fmt)
{
    char pidfile[PATH_MAX + 32], cmd[PATH_MAX * 2];
    snprintf(pidfile, sizeof pidfile, "%s/escapee-%lld.pid", g_work, (long long)id);
    snprintf(cmd, sizeof cmd, fmt, pidfile);
    launch(r, launch_sh(id, cmd));
    /* generous: under a parallel test run the shell may take seconds to start */
    return (pid_t)wait_number_file(r, id, pidfile, 30000);
}

START_TEST(test_cancel_kills_double_forked_tree)
{
    agent_runner *r = open_runner();
    /* The grandchild leaves the job's session and process group (setsid
     * after a double fork) and ignores SIGTERM. */
    pid_t grandchild = launch_escapee(
        r, 14, "(setsid sh -c 'trap \"\" TERM; sleep 60 & echo $! > %s; wait' &); sleep 60");
    struct agent_procstat ps;
    ck_assert_int_eq(agent_proc_stat(grandchild, &ps), 0);
    struct agent_job_status st;
    agent_runner_status(r, 14, 0, &st);
    ck_assert_int_ne(ps.pgrp, st.pid); /* really out of the job's group */
    ck_assert_int_eq(agent_runner_kill(r, 14, 0, "cancel"), 0);
    st = wait_end(r, 14, 10000);
    ck_assert(st.cancelled);
    ck_assert(!st.timed_out);
    ck_assert_msg(proc_gone(grandchild), "grandchild %d survived the cancel", (int)grandchild);
    json_t *ev = agent_runner_events(r);
    json_t *e = find_event(ev, 14, "ended");
    ck_assert(json_is_true(json_object_get(e, "cancelled")));
    json_decref(ev);
    agent_runner_close(r);
}
END_TEST

START_TEST(test_tree_ends_with_main)
{
    agent_runner *r = open_runner();
    /* The main process exits at once, leaving a double-forked daemon. */
    pid_t bg = launch_escapee(r, 15, "(setsid sleep 60 & echo $! > %s) ; sleep 0.3");
    struct agent_job_status st = wait_end(r, 15, 10000);
    ck_assert_int_eq(st.exit_code, 0);
    ck_assert_msg(proc_gone(bg), "background process %d outlived its job", (int)bg);
    agent_runner_close(r);
}
END_TEST

START_TEST(test_unknown_user)
{
    agent_runner *r = open_runner();
    json_t *l = launch_sh(16, "true");
    json_object_set_new(l, "unix_user", json_string("no-such-user-commons"));
    launch(r, l);
    struct agent_job_status st = wait_end(r, 16, 1000);
    ck_assert_int_eq(st.exit_code, -1);
    ck_assert_msg(strstr(st.error, "no-such-user-commons") &&
                      strstr(st.error, "no such Unix account"),
                  "error: %s", st.error);
    json_t *ev = agent_runner_events(r);
    ck_assert_ptr_null(find_event(ev, 16, "started"));
    json_t *e = find_event(ev, 16, "ended");
    ck_assert_ptr_nonnull(e);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(e, "error")),
                                 "no such Unix account"));
    json_decref(ev);
    agent_runner_close(r);
}
END_TEST

/* Root agent: a job of "nobody" runs as nobody and its output file is
 * nobody's. Other agent: that job is refused with a clear error. */
START_TEST(test_runs_as_job_account)
{
    agent_runner *r = open_runner();
    struct passwd *nb = getpwnam("nobody");
    ck_assert_ptr_nonnull(nb);
    json_t *l = launch_sh(17, "id -u");
    json_object_set_new(l, "unix_user", json_string("nobody"));
    launch(r, l);
    struct agent_job_status st = wait_end(r, 17, 5000);
    if (geteuid() == 0) {
        ck_assert_msg(st.exit_code == 0, "error: %s", st.error);
        char *o = job_out(17, "out");
        char want[32];
        snprintf(want, sizeof want, "%d\n", (int)nb->pw_uid);
        ck_assert_str_eq(o, want);
        free(o);
        char p[PATH_MAX + 64];
        out_path(17, "out", p, sizeof p);
        struct stat sb;
        ck_assert_int_eq(stat(p, &sb), 0);
        ck_assert_int_eq(sb.st_uid, nb->pw_uid);
        /* A script job of that account can reach its script in the state dir. */
        json_t *sl = launch_script(29, "#!/bin/sh\nid -u\n");
        json_object_set_new(sl, "unix_user", json_string("nobody"));
        launch(r, sl);
        st = wait_end(r, 29, 5000);
        ck_assert_msg(st.exit_code == 0, "script as nobody: %s", st.error);
        o = job_out(29, "out");
        ck_assert_str_eq(o, want);
        free(o);
    } else {
        ck_assert_int_eq(st.exit_code, -1);
        ck_assert_ptr_nonnull(strstr(st.error, "can only run jobs of that account"));
    }
    agent_runner_close(r);
}
END_TEST

/* An agent that is not root refuses jobs of other accounts (here: root). */
START_TEST(test_non_root_agent_refuses_others)
{
    if (geteuid() == 0) {
        struct passwd *nb = getpwnam("nobody");
        ck_assert_ptr_nonnull(nb);
        ck_assert_int_eq(chown(g_dir, nb->pw_uid, nb->pw_gid), 0);
        ck_assert_int_eq(setgid(nb->pw_gid), 0);
        ck_assert_int_eq(setuid(nb->pw_uid), 0);
        snprintf(g_user, sizeof g_user, "nobody");
        g_contain = AGENT_CONTAIN_SUBREAPER; /* cgroups are root's to create here */
    }
    agent_runner *r = open_runner();
    json_t *l = launch_sh(18, "true");
    json_object_set_new(l, "unix_user", json_string("root"));
    launch(r, l);
    struct agent_job_status st = wait_end(r, 18, 1000);
    ck_assert_int_eq(st.exit_code, -1);
    ck_assert_msg(strstr(st.error, "can only run jobs of that account"), "error: %s", st.error);
    launch(r, launch_sh(19, "echo mine"));
    st = wait_end(r, 19, 5000);
    ck_assert_msg(st.exit_code == 0, "own account job failed: %s", st.error);
    agent_runner_close(r);
}
END_TEST

START_TEST(test_bad_launches)
{
    agent_runner *r = open_runner();
    char err[512];
    /* No usable id: nothing to report to, so the call itself fails. */
    json_t *l = json_pack("{ss}", "unix_user", g_user);
    ck_assert_int_eq(agent_runner_launch(r, l, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "\"id\""));
    json_decref(l);
    l = json_string("not an object");
    ck_assert_int_eq(agent_runner_launch(r, l, err, sizeof err), -1);
    json_decref(l);
    struct {
        int64_t id;
        const char *field, *want;
    } cases[] = {
        {20, "workdir", "\"workdir\""},
        {21, "command", "exactly one"},
        {22, "unix_user", "unix_user"},
        {23, "badcommand", "\"command\"[1]"},
        {24, "both", "exactly one"},
        {25, "missingdir", "cannot enter workdir"},
        {26, "noexec", "cannot execute"},
        {27, "stdout", "cannot open stdout"},
        {28, "env", "\"env\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        l = launch_sh(cases[i].id, "true");
        const char *f = cases[i].field;
        if (!strcmp(f, "workdir")) json_object_set_new(l, "workdir", json_string("relative"));
        if (!strcmp(f, "command")) json_object_del(l, "command");
        if (!strcmp(f, "unix_user")) json_object_del(l, "unix_user");
        if (!strcmp(f, "badcommand"))
            json_object_set_new(l, "command", json_pack("[si]", "/bin/echo", 5));
        if (!strcmp(f, "both")) json_object_set_new(l, "script", json_string("true"));
        if (!strcmp(f, "missingdir"))
            json_object_set_new(l, "workdir", json_string("/nonexistent/commons"));
        if (!strcmp(f, "noexec"))
            json_object_set_new(l, "command", json_pack("[s]", "/nonexistent/prog"));
        if (!strcmp(f, "stdout"))
            json_object_set_new(l, "stdout", json_string("/nonexistent/dir/out"));
        if (!strcmp(f, "env")) json_object_set_new(l, "env", json_pack("{si}", "X", 1));
        launch(r, l);
        struct agent_job_status st = wait_end(r, cases[i].id, 5000);
        ck_assert_int_eq(st.exit_code, -1);
        ck_assert_msg(strstr(st.error, cases[i].want), "case %s: error \"%s\" lacks \"%s\"", f,
                      st.error, cases[i].want);
    }
    agent_runner_close(r);
}
END_TEST

START_TEST(test_recovery_reattach)
{
    agent_runner *a = open_runner();
    char marker[PATH_MAX + 32], cmd[PATH_MAX * 2];
    snprintf(marker, sizeof marker, "%s/starts", g_work);
    snprintf(cmd, sizeof cmd, "echo x >> %s; sleep 60", marker);
    launch(a, launch_sh(30, cmd));
    launch(a, launch_sh(31, "exit 4"));
    struct agent_job_status st;
    agent_runner_status(a, 30, 0, &st);
    pid_t pid = st.pid;
    wait_end(a, 31, 5000);
    /* The agent goes away without touching its jobs (as after kill -9). */
    agent_runner_close(a);
    agent_runner *b = open_runner();
    agent_runner_status(b, 30, 0, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_RUNNING);
    ck_assert_int_eq(st.pid, pid);
    json_t *running = agent_runner_running(b);
    ck_assert_int_eq(json_array_size(running), 2); /* 30 runs; 31's end is not acked */
    json_t *want = json_pack("[[I i] [I i]]", (json_int_t)30, 0, (json_int_t)31, 0);
    json_t *got = json_pack("[[I i] [I i]]", (json_int_t)-1, 0, (json_int_t)-1, 0);
    for (size_t i = 0; i < 2; i++) {
        json_t *p = json_array_get(running, i);
        size_t k = json_integer_value(json_array_get(p, 0)) == 30 ? 0 : 1;
        json_array_set(got, k, p);
    }
    ck_assert(json_equal(want, got));
    json_decref(want);
    json_decref(got);
    json_decref(running);
    /* Un-acked events survive: job 31's end is still owed. */
    json_t *ev = agent_runner_events(b);
    json_t *e31 = find_event(ev, 31, "ended");
    ck_assert_ptr_nonnull(e31);
    ck_assert_int_eq(json_integer_value(json_object_get(e31, "exit_code")), 4);
    json_decref(ev);
    /* A repeated launch is answered with the status, never a second start. */
    launch(b, launch_sh(30, cmd));
    launch(b, launch_sh(31, "exit 0"));
    for (int i = 0; i < 10; i++) {
        agent_runner_tick(b);
        usleep(20 * 1000);
    }
    agent_runner_status(b, 30, 0, &st);
    ck_assert_int_eq(st.pid, pid);
    agent_runner_status(b, 31, 0, &st);
    ck_assert_int_eq(st.exit_code, 4);
    char *m = slurp(marker);
    ck_assert_str_eq(m, "x\n");
    free(m);
    ev = agent_runner_events(b);
    json_t *s30 = find_event(ev, 30, "started");
    ck_assert_ptr_nonnull(s30);
    ck_assert_int_eq(json_integer_value(json_object_get(s30, "pid")), pid);
    json_decref(ev);
    ck_assert_int_eq(agent_runner_kill(b, 30, 0, "cancel"), 0);
    st = wait_end(b, 30, 10000);
    ck_assert(st.cancelled);
    ck_assert(proc_gone(pid));
    agent_runner_close(b);
}
END_TEST

START_TEST(test_recovery_dead_job)
{
    agent_runner *a = open_runner();
    launch(a, launch_sh(32, "exit 5"));
    launch(a, launch_sh(34, "sleep 60"));
    launch(a, launch_sh(35, "sleep 60"));
    struct agent_job_status s32, s34, s35;
    agent_runner_status(a, 32, 0, &s32);
    agent_runner_status(a, 34, 0, &s34);
    agent_runner_status(a, 35, 0, &s35);
    ck_assert_int_gt(s32.keeper, 0);
    ck_assert_int_ne(s32.keeper, s32.pid);
    agent_runner_close(a);
    /* While no agent watches: 32 exits by itself, 34 is killed; their
     * keepers record that. 35 dies with its keeper: its status is lost. */
    kill(-s34.pid, SIGKILL);
    kill(s35.keeper, SIGKILL);
    kill(-s35.pid, SIGKILL);
    ck_assert_int_eq(waitpid(s32.keeper, NULL, 0), s32.keeper);
    ck_assert_int_eq(waitpid(s34.keeper, NULL, 0), s34.keeper);
    ck_assert_int_eq(waitpid(s35.keeper, NULL, 0), s35.keeper);
    while (!proc_gone(s35.pid)) usleep(10 * 1000);
    agent_runner *b = open_runner();
    struct agent_job_status st = wait_end(b, 32, 5000);
    ck_assert_int_eq(st.exit_code, 5);
    ck_assert_str_eq(st.error, "");
    st = wait_end(b, 34, 5000);
    ck_assert_int_eq(st.signal, SIGKILL);
    ck_assert_str_eq(st.error, "");
    st = wait_end(b, 35, 5000);
    ck_assert_int_eq(st.exit_code, -1);
    ck_assert_str_eq(st.error, "agent restarted; exit status lost");
    /* Still never started again. */
    launch(b, launch_sh(34, "sleep 60"));
    agent_runner_status(b, 34, 0, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_ENDED);
    agent_runner_close(b);
}
END_TEST

/* A forgotten instance (never released) runs when commonsd launches it again. */
static void runs_when_launched_again(agent_runner *r, int64_t id)
{
    launch(r, launch_sh(id, "echo now"));
    ck_assert_int_eq(wait_end(r, id, 5000).exit_code, 0);
    char *o = job_out(id, "out");
    ck_assert_str_eq(o, "now\n");
    free(o);
}

START_TEST(test_recovery_unreleased)
{
    /* Records of instances the agent died before releasing: one still
     * "launching", one forked and recorded but whose keeper then reported
     * that it never released the job. Both ran nothing, so both are
     * forgotten and a launch sent again starts them. */
    agent_runner *a = open_runner();
    agent_runner_close(a);
    struct agent_job j = {.id = 33, .attempt = 0, .phase = AJ_LAUNCHING, .exit_code = -1};
    char err[256], ep[PATH_MAX + 32];
    ck_assert_int_eq(agent_store_save(g_state, &j, err, sizeof err), 0);
    j.id = 36;
    j.phase = AJ_RUNNING;
    j.pid = 999999999; /* gone */
    j.keeper = 999999998;
    ck_assert_int_eq(agent_store_save(g_state, &j, err, sizeof err), 0);
    snprintf(ep, sizeof ep, "%s/jobs/36-0.exit", g_state);
    ck_assert_int_eq(cm_write_file_atomic(ep, "-1\n", 3, 0600, err, sizeof err), 0);
    agent_runner *b = open_runner();
    struct agent_job_status st;
    agent_runner_status(b, 33, 0, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_UNKNOWN);
    agent_runner_status(b, 36, 0, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_UNKNOWN);
    json_t *running = agent_runner_running(b), *ev = agent_runner_events(b);
    ck_assert_int_eq(json_array_size(running), 0);
    ck_assert_int_eq(json_array_size(ev), 0);
    json_decref(running);
    json_decref(ev);
    ck_assert_msg(access(ep, F_OK) != 0, "stale exit file left");
    launch(b, launch_sh(33, "echo now"));
    ck_assert_int_eq(wait_end(b, 33, 5000).exit_code, 0);
    runs_when_launched_again(b, 36);
    agent_runner_close(b);
}
END_TEST

/* A record cut by a power loss (written without fsync, renamed before its
 * data reached the disk) is set aside, and its instance stays known: it
 * ends as "record lost", is never started again, and a job of it still
 * running is killed. */
START_TEST(test_lost_record_keeps_instance)
{
    char marker[PATH_MAX + 32], cmd[PATH_MAX * 2], p[PATH_MAX + 64], err[256];
    snprintf(marker, sizeof marker, "%s/lost-starts", g_work);
    snprintf(cmd, sizeof cmd, "echo x >> %s; sleep 60", marker);
    agent_runner *a = open_runner();
    launch(a, launch_sh(90, "exit 3"));
    launch(a, launch_sh(91, cmd));
    wait_end(a, 90, 5000);
    struct agent_job_status st;
    agent_runner_status(a, 91, 0, &st);
    pid_t pid = st.pid;
    for (int64_t until = cm_mono_ms() + 5000; access(marker, F_OK) != 0;) {
        ck_assert_msg(cm_mono_ms() < until, "job 91 did not start");
        agent_runner_tick(a);
        usleep(20 * 1000);
    }
    agent_runner_close(a);
    snprintf(p, sizeof p, "%s/jobs/90-0.json", g_state);
    ck_assert_int_eq(cm_write_file_atomic(p, "", 0, 0600, err, sizeof err), 0);
    snprintf(p, sizeof p, "%s/jobs/91-0.json", g_state);
    ck_assert_int_eq(cm_write_file_atomic(p, "{\"id\":91,\"att", 13, 0600, err, sizeof err), 0);
    agent_runner *b = open_runner();
    for (int64_t id = 90; id <= 91; id++) {
        st = wait_end(b, id, 5000);
        ck_assert_int_eq(st.exit_code, -1);
        ck_assert_msg(strstr(st.error, "record was lost"), "job %lld: %s", (long long)id,
                      st.error);
        snprintf(p, sizeof p, "%s/jobs/%lld-0.json.bad", g_state, (long long)id);
        ck_assert_msg(access(p, F_OK) == 0, "%s not kept", p);
    }
    int64_t until = cm_mono_ms() + 5000;
    while (!proc_gone(pid) && cm_mono_ms() < until) {
        agent_runner_tick(b);
        usleep(20 * 1000);
    }
    ck_assert_msg(proc_gone(pid), "the job of a lost record still runs");
    json_t *ev = agent_runner_events(b);
    ck_assert_ptr_nonnull(find_event(ev, 90, "ended"));
    ck_assert_ptr_nonnull(find_event(ev, 91, "ended"));
    json_decref(ev);
    /* Launches sent again start nothing; the rebuilt record survives a restart. */
    launch(b, launch_sh(91, cmd));
    agent_runner_close(b);
    b = open_runner();
    launch(b, launch_sh(91, cmd));
    agent_runner_status(b, 91, 0, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_ENDED);
    ck_assert_msg(strstr(st.error, "record was lost"), "%s", st.error);
    usleep(100 * 1000);
    char *m = slurp(marker);
    ck_assert_str_eq(m, "x\n");
    free(m);
    agent_runner_close(b);
}
END_TEST

/* A fake keeper of a job the agent never released: named as a keeper that
 * knows it, it writes "never released" after delay_ms (0: never). */
static pid_t fake_unreleased_keeper(const char *exit_file, int delay_ms)
{
    pid_t k = fork();
    if (k == 0) {
        prctl(PR_SET_NAME, AGENT_KEEPER_UNRELEASED);
        if (delay_ms <= 0) for (;;) pause();
        usleep((useconds_t)delay_ms * 1000);
        char err[256];
        _exit(cm_write_file_atomic(exit_file, "-1\n", 3, 0600, err, sizeof err) == 0 ? 0 : 1);
    }
    ck_assert_int_gt(k, 0);
    struct agent_procstat st;
    int64_t until = cm_mono_ms() + 2000;
    while (agent_proc_stat(k, &st) != 0 || strcmp(st.comm, AGENT_KEEPER_UNRELEASED) != 0) {
        ck_assert_msg(cm_mono_ms() < until, "fake keeper not named");
        usleep(5 * 1000);
    }
    return k;
}

/* Keepers that learnt the agent went away before releasing their jobs but
 * are slow to say so in their exit file (a loaded node): their name tells
 * a restarted agent, which forgets both instances (nothing ran) instead of
 * reporting them started then failed; the one that never writes is killed. */
START_TEST(test_recovery_unreleased_slow_keeper)
{
    agent_runner *a = open_runner();
    agent_runner_close(a);
    char ep37[PATH_MAX + 32], ep38[PATH_MAX + 32], err[256];
    snprintf(ep37, sizeof ep37, "%s/jobs/37-0.exit", g_state);
    snprintf(ep38, sizeof ep38, "%s/jobs/38-0.exit", g_state);
    pid_t k37 = fake_unreleased_keeper(ep37, 2500), k38 = fake_unreleased_keeper(ep38, 0);
    struct agent_procstat st;
    struct agent_job j = {.id = 37, .attempt = 0, .phase = AJ_RUNNING, .exit_code = -1,
                          .pid = 999999999, .keeper = k37};
    ck_assert_int_eq(agent_proc_stat(k37, &st), 0);
    j.keeper_start = st.starttime;
    ck_assert_int_eq(agent_store_save(g_state, &j, err, sizeof err), 0);
    j.id = 38;
    j.keeper = k38;
    ck_assert_int_eq(agent_proc_stat(k38, &st), 0);
    j.keeper_start = st.starttime;
    ck_assert_int_eq(agent_store_save(g_state, &j, err, sizeof err), 0);
    agent_runner *b = open_runner();
    struct agent_job_status js;
    for (int64_t id = 37; id <= 38; id++) {
        agent_runner_status(b, id, 0, &js);
        ck_assert_msg(js.phase == AGENT_JOB_UNKNOWN, "job %lld: phase %d, error %s",
                      (long long)id, js.phase, js.error);
    }
    json_t *ev = agent_runner_events(b);
    ck_assert_int_eq(json_array_size(ev), 0);
    json_decref(ev);
    int ws;
    ck_assert_int_eq(waitpid(k37, &ws, 0), k37);
    ck_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    ck_assert_int_eq(waitpid(k38, &ws, 0), k38);
    ck_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    ck_assert_msg(access(ep37, F_OK) != 0, "stale exit file left");
    ck_assert_msg(access(ep38, F_OK) != 0, "an exit file appeared for a killed keeper");
    runs_when_launched_again(b, 37);
    agent_runner_close(b);
}
END_TEST

START_TEST(test_events_ack)
{
    agent_runner *r = open_runner();
    launch(r, launch_sh(40, "true"));
    launch(r, launch_sh(41, "true"));
    wait_end(r, 40, 5000);
    wait_end(r, 41, 5000);
    json_t *sent = agent_runner_events(r);
    ck_assert_int_eq(json_array_size(sent), 4); /* started+ended for each, by id */
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(sent, 0), "id")), 40);
    json_t *acked = json_pack("[I I]", (json_int_t)40, (json_int_t)999);
    agent_runner_ack(r, sent, acked);
    json_decref(acked);
    json_decref(sent);
    agent_runner_close(r);
    r = open_runner();
    json_t *left = agent_runner_events(r);
    ck_assert_int_eq(json_array_size(left), 2);
    ck_assert_ptr_null(find_event(left, 40, "ended"));
    ck_assert_ptr_nonnull(find_event(left, 41, "ended"));
    json_decref(left);
    /* An acknowledged instance is still known: its status, and a repeated
     * launch re-sends its end instead of running it again. */
    struct agent_job_status st;
    agent_runner_status(r, 40, 0, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_ENDED);
    ck_assert_int_eq(st.exit_code, 0);
    launch(r, launch_sh(40, "echo again >> never"));
    left = agent_runner_events(r);
    ck_assert_ptr_nonnull(find_event(left, 40, "ended"));
    json_decref(left);
    json_t *running = agent_runner_running(r);
    ck_assert_int_eq(json_array_size(running), 2); /* 40 and 41: ends not acked */
    json_decref(running);
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/never", g_work);
    ck_assert_msg(access(p, F_OK) != 0, "an acknowledged instance ran again");
    agent_runner_close(r);
}
END_TEST

START_TEST(test_kill_before_launch)
{
    agent_runner *r = open_runner();
    ck_assert_int_eq(agent_runner_kill(r, 50, 0, "cancel"), 0);
    struct agent_job_status st;
    agent_runner_status(r, 50, 0, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_ENDED);
    ck_assert(st.cancelled);
    launch(r, launch_sh(50, "echo ran"));
    for (int i = 0; i < 5; i++) {
        agent_runner_tick(r);
        usleep(20 * 1000);
    }
    char p[PATH_MAX + 64];
    out_path(50, "out", p, sizeof p);
    ck_assert_msg(access(p, F_OK) != 0, "a killed job id was started");
    agent_runner_close(r);
}
END_TEST

/* A kill without an attempt takes the launches of its id out of a backlog
 * not started yet: recorded as killed, never started; others stay. */
START_TEST(test_kill_without_attempt_drops_waiting_launches)
{
    agent_runner *r = open_runner();
    json_t *backlog = json_array(), *l51 = launch_sh(51, "echo ran");
    json_object_set_new(l51, "attempt", json_integer(2));
    json_array_append_new(backlog, launch_sh(50, "echo ran"));
    json_array_append_new(backlog, l51);
    json_array_append_new(backlog, launch_sh(52, "echo ran"));
    json_t *bad = launch_sh(51, "echo ran");
    json_object_set_new(bad, "attempt", json_string("x"));
    json_array_append_new(backlog, bad);
    ck_assert_uint_eq(agent_runner_kill_waiting(r, backlog, 51, "cancel"), 1);
    ck_assert_uint_eq(json_array_size(backlog), 3); /* 50, 52 and the unusable one stay */
    ck_assert_uint_eq(agent_runner_kill_waiting(r, backlog, 53, "cancel"), 0);
    struct agent_job_status st;
    agent_runner_status(r, 51, 2, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_ENDED);
    ck_assert(st.cancelled);
    json_t *l51again = launch_sh(51, "echo ran");
    json_object_set_new(l51again, "attempt", json_integer(2));
    json_array_append_new(backlog, l51again); /* commonsd sends it again */
    ck_assert_int_ge(agent_runner_launch_batch(r, backlog), 1); /* the unusable one */
    json_decref(backlog);
    ck_assert_int_eq(wait_end(r, 50, 5000).exit_code, 0);
    ck_assert_int_eq(wait_end(r, 52, 5000).exit_code, 0);
    char p[PATH_MAX + 64];
    out_path(51, "out", p, sizeof p);
    ck_assert_msg(access(p, F_OK) != 0, "a launch killed in the backlog was started");
    agent_runner_status(r, 51, 2, &st);
    ck_assert(st.cancelled);
    agent_runner_close(r);
}
END_TEST

START_TEST(test_state_dir_guarded)
{
    agent_runner *r = open_runner();
    struct agent_runner_opts o = {.state_dir = g_state, .node = g_node,
                                  .containment = g_contain};
    agent_runner *second = NULL;
    char err[512];
    ck_assert_int_eq(agent_runner_open(&o, &second, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "in use by another agent"));
    agent_runner_close(r);
    /* A corrupt record is set aside, not fatal. */
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/jobs/60-0.json", g_state);
    ck_assert_int_eq(cm_write_file_atomic(p, "{broken", 7, 0600, err, sizeof err), 0);
    r = open_runner();
    char bad[PATH_MAX + 80];
    snprintf(bad, sizeof bad, "%s.bad", p);
    ck_assert_int_eq(access(bad, F_OK), 0);
    struct agent_job_status js;
    agent_runner_status(r, 60, 0, &js); /* the instance its name gives stays known */
    ck_assert_int_eq(js.phase, AGENT_JOB_ENDED);
    agent_runner_close(r);
    /* A node name that would escape the cgroup folder is refused. */
    o.node = "../x";
    ck_assert_int_eq(agent_runner_open(&o, &second, err, sizeof err), -1);
}
END_TEST

/* A requeued job's new attempt is a new instance; old ones stay refused. */
START_TEST(test_attempts_are_instances)
{
    agent_runner *r = open_runner();
    char marker[PATH_MAX + 32], cmd[PATH_MAX * 2];
    snprintf(marker, sizeof marker, "%s/attempts", g_work);
    snprintf(cmd, sizeof cmd, "echo $COMMONS_JOB_ATTEMPT >> %s", marker);
    launch(r, launch_sh(70, cmd));
    wait_end(r, 70, 5000);
    json_t *l = launch_sh(70, cmd);
    json_object_set_new(l, "attempt", json_integer(1));
    launch(r, l);
    struct agent_job_status st;
    int64_t until = cm_mono_ms() + 5000;
    do {
        agent_runner_tick(r);
        agent_runner_status(r, 70, 1, &st);
        usleep(20 * 1000);
    } while (st.phase != AGENT_JOB_ENDED && cm_mono_ms() < until);
    ck_assert_int_eq(st.phase, AGENT_JOB_ENDED);
    ck_assert_int_eq(st.exit_code, 0);
    launch(r, launch_sh(70, cmd)); /* attempt 0 again: refused */
    l = launch_sh(70, cmd);
    json_object_set_new(l, "attempt", json_integer(-2));
    char err[256];
    ck_assert_int_eq(agent_runner_launch(r, l, err, sizeof err), -1); /* bad attempt, no instance */
    json_decref(l);
    for (int i = 0; i < 5; i++) {
        agent_runner_tick(r);
        usleep(20 * 1000);
    }
    char *m = slurp(marker);
    ck_assert_str_eq(m, "0\n1\n");
    free(m);
    json_t *ev = agent_runner_events(r);
    size_t i;
    json_t *e;
    int ended[2] = {0, 0};
    json_array_foreach(ev, i, e)
        if (!strcmp(json_string_value(json_object_get(e, "event")), "ended"))
            ended[json_integer_value(json_object_get(e, "attempt"))]++;
    ck_assert_int_eq(ended[0], 1);
    ck_assert_int_eq(ended[1], 1);
    json_decref(ev);
    agent_runner_close(r);
}
END_TEST

/* A job the agent could not record is never released and runs nothing
 * (what a launch batch does when its group commit fails). */
START_TEST(test_unrecorded_job_never_runs)
{
    char marker[PATH_MAX + 32], ep[PATH_MAX + 32], err[512];
    snprintf(marker, sizeof marker, "%s/ran", g_work);
    snprintf(ep, sizeof ep, "%s/exit", g_work);
    json_t *lj = launch_sh(80, "touch ran");
    struct agent_launch l;
    ck_assert_int_eq(agent_launch_parse(lj, &l, err, sizeof err), 0);
    struct agent_account acct;
    ck_assert_int_eq(agent_account_resolve(g_user, &acct, err, sizeof err), 0);
    struct agent_spawn_ctx ctx = {g_node, g_state, "", ep, NULL, NULL};
    struct agent_proc p;
    ck_assert_int_eq(agent_spawn_fork(&l, &acct, &ctx, "", &p, err, sizeof err), 0);
    ck_assert_int_eq(agent_spawn_pid(&p, ep, err, sizeof err), 0);
    pid_t keeper = p.keeper, pid = p.pid;
    ck_assert_int_gt(keeper, 0);
    ck_assert_int_gt(pid, 0);
    agent_spawn_abort(&p, ep); /* the record could not be written */
    ck_assert(proc_gone(pid));
    ck_assert_int_eq(waitpid(keeper, NULL, WNOHANG), -1); /* keeper already reaped */
    usleep(100 * 1000);
    ck_assert_msg(access(marker, F_OK) != 0, "an unreleased job ran");
    json_decref(lj);
    /* The keeper's marker for such a job reads back as "unreleased". */
    ck_assert_int_eq(cm_write_file_atomic(ep, "-1\n", 3, 0600, err, sizeof err), 0);
    int status = 0;
    ck_assert_int_eq(agent_exit_read(ep, &status), 0);
    ck_assert_int_eq(status, AGENT_EXIT_UNRELEASED);
}
END_TEST

/* The cgroup folder of a running process, from /proc/PID/cgroup and the
 * cgroup2 mount (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts). */
static void cgroup_dir_of(pid_t pid, char *out, size_t len)
{
    char p[64], line[PATH_MAX];
    snprintf(p, sizeof p, "/proc/%d/cgroup", (int)pid);
    FILE *f = fopen(p, "r");
    ck_assert_ptr_nonnull(f);
    out[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "0::", 3) != 0) continue;
        line[strcspn(line, "\n")] = '\0';
        const char *mounts[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
        for (int i = 0; i < 2 && !out[0]; i++) {
            struct stat sb;
            snprintf(out, len, "%s%s", mounts[i], line + 3);
            if (stat(out, &sb) != 0 || !S_ISDIR(sb.st_mode)) out[0] = '\0';
        }
    }
    fclose(f);
    ck_assert_msg(out[0], "no cgroup v2 folder found for pid %d", (int)pid);
}

static void put_file(const char *dir, const char *name)
{
    char p[PATH_MAX + 64], err[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    ck_assert_msg(cm_write_file_atomic(p, "-1\n", 3, 0600, err, sizeof err) == 0, "%s", err);
}

static bool exists_in(const char *dir, const char *name)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

/* A launch cut by a crash before its record was written leaves its keeper's
 * exit file, its script and (cgroup mode) an empty cgroup folder that no
 * record names: a restarted agent removes them, and nothing of a known job. */
START_TEST(test_restart_sweeps_unrecorded_leftovers)
{
    agent_runner *a = open_runner();
    launch(a, launch_sh(40, "sleep 60"));
    struct agent_job_status st;
    agent_runner_status(a, 40, 0, &st);
    pid_t pid = st.pid;
    ck_assert_int_gt(pid, 0);
    char cg[PATH_MAX] = "", base[PATH_MAX] = "";
    if (g_contain == AGENT_CONTAIN_CGROUP) {
        cgroup_dir_of(pid, cg, sizeof cg);
        ck_assert_msg(strstr(cg, "/job-40-0"), "job 40 runs in %s", cg);
        snprintf(base, sizeof base, "%.*s", (int)(strrchr(cg, '/') - cg), cg);
    }
    agent_runner_close(a);

    char jobs[PATH_MAX + 16], scripts[PATH_MAX + 16];
    snprintf(jobs, sizeof jobs, "%s/jobs", g_state);
    snprintf(scripts, sizeof scripts, "%s/scripts", g_state);
    put_file(jobs, "41-0.exit");
    put_file(jobs, "41-1-s2.exit");
    put_file(jobs, "40-0.exit.note"); /* not an instance's name: never touched */
    put_file(scripts, "41-0.sh");
    char stale[PATH_MAX + 32];
    if (base[0]) {
        snprintf(stale, sizeof stale, "%s/job-41-0", base);
        ck_assert_int_eq(mkdir(stale, 0755), 0);
    }

    agent_runner *b = open_runner();
    ck_assert(!exists_in(jobs, "41-0.exit"));
    ck_assert(!exists_in(jobs, "41-1-s2.exit"));
    ck_assert(!exists_in(scripts, "41-0.sh"));
    ck_assert(exists_in(jobs, "40-0.exit.note"));
    if (base[0]) {
        ck_assert_msg(access(stale, F_OK) != 0, "%s was left", stale);
        ck_assert_msg(access(cg, F_OK) == 0, "the running job's cgroup %s was removed", cg);
    }
    agent_runner_status(b, 40, 0, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_RUNNING);
    ck_assert_int_eq(st.pid, pid);
    ck_assert(!proc_gone(pid));
    ck_assert_int_eq(agent_runner_kill(b, 40, 0, "cancel"), 0);
    wait_end(b, 40, 10000);
    agent_runner_close(b);
}
END_TEST

/* The exit file of a retired instance (its end acknowledged) that a crash kept
 * from going is removed at restart too; the instance stays known. */
START_TEST(test_restart_removes_retired_exit_file)
{
    agent_runner *a = open_runner();
    launch(a, launch_sh(43, "exit 4"));
    wait_end(a, 43, 5000);
    json_t *sent = agent_runner_events(a), *acked = json_pack("[I]", (json_int_t)43);
    agent_runner_ack(a, sent, acked);
    json_decref(acked);
    json_decref(sent);
    agent_runner_close(a);
    char jobs[PATH_MAX + 16];
    snprintf(jobs, sizeof jobs, "%s/jobs", g_state);
    put_file(jobs, "43-0.exit");
    agent_runner *b = open_runner();
    ck_assert_msg(!exists_in(jobs, "43-0.exit"), "a retired instance's exit file was left");
    struct agent_job_status st;
    agent_runner_status(b, 43, 0, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_ENDED);
    ck_assert_int_eq(st.exit_code, 4);
    json_t *ev = agent_runner_events(b);
    ck_assert_ptr_null(find_event(ev, 43, "ended"));
    json_decref(ev);
    agent_runner_close(b);
}
END_TEST

/* Subreaper mode: a child of the agent whose environment names no job is an orphan
 * and is killed, but only once two sweeps (SWEEP_EVERY_MS apart) found it so: a job
 * process in the middle of an exec reads as such for a moment. */
START_TEST(test_orphan_killed_at_second_sweep)
{
    if (g_contain != AGENT_CONTAIN_SUBREAPER) return; /* cgroup mode has no orphan sweep */
    agent_runner *r = open_runner();
    pid_t orphan = fork();
    ck_assert_int_ge(orphan, 0);
    if (orphan == 0) {
        char *argv[] = {"sleep", "30", NULL}, *envp[] = {"PATH=/usr/bin:/bin", NULL};
        execve("/bin/sleep", argv, envp);
        _exit(127);
    }
    usleep(100 * 1000); /* exec'd: its environment now names no job */
    agent_runner_tick(r); /* the first sweep only marks it */
    ck_assert_msg(!proc_gone(orphan), "an orphan was killed at the first sweep that saw it");
    int64_t until = cm_mono_ms() + 5000;
    while (!proc_gone(orphan) && cm_mono_ms() < until) {
        agent_runner_tick(r);
        usleep(20 * 1000);
    }
    bool gone = proc_gone(orphan);
    if (!gone) kill(orphan, SIGKILL);
    waitpid(orphan, NULL, 0);
    ck_assert_msg(gone, "an orphan outlived two sweeps");
    agent_runner_close(r);
}
END_TEST

/* /proc/PID/stat of a process whose name holds ") " and spaces still parses,
 * and a record whose content does not match its file name is set aside. */
/* The instance names of records, exit files, scripts and cgroup folders: what
 * agent_instance_name writes is read back; anything else is no instance's. */
START_TEST(test_instance_names)
{
    char n[AGENT_INSTANCE_NAME_MAX], f[AGENT_INSTANCE_NAME_MAX + 16];
    int64_t id, sid;
    int attempt;
    const struct { int64_t id; int attempt; int64_t sid; } cases[] = {
        {0, 0, 0}, {7, 3, 0}, {42, 1, 5}, {INT64_MAX, INT_MAX, INT64_MAX}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        agent_instance_name(cases[i].id, cases[i].attempt, cases[i].sid, n);
        snprintf(f, sizeof f, "job-%s.exit", n);
        ck_assert_msg(agent_instance_name_parse(f, "job-", ".exit", &id, &attempt, &sid), "%s", f);
        ck_assert(id == cases[i].id && attempt == cases[i].attempt && sid == cases[i].sid);
        ck_assert(!agent_instance_name_parse(f, "", ".exit", &id, &attempt, &sid));
        ck_assert(!agent_instance_name_parse(f, "job-", ".sh", &id, &attempt, &sid));
    }
    ck_assert(agent_instance_name_parse("12-0-s3.json", "", ".json", &id, &attempt, &sid));
    ck_assert(id == 12 && attempt == 0 && sid == 3);
    const char *bad[] = {"", ".json", "12.json", "12-.json", "-1-0.json", "+1-0.json",
                         " 1-0.json", "1--1.json", "1-+1.json", "1-0-s0.json", "1-0-s.json",
                         "1-0-s-2.json", "1-0-x2.json", "1-0.json.bad", "1-0.json.tmp.9",
                         "1-2147483648.json", "9223372036854775808-0.json",
                         "1-0-s9223372036854775808.json"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!agent_instance_name_parse(bad[i], "", ".json", &id, &attempt, &sid),
                      "\"%s\" read as an instance's name", bad[i]);
}
END_TEST

START_TEST(test_procinfo_and_records_resist_odd_input)
{
    char link[PATH_MAX + 32];
    snprintf(link, sizeof link, "%s/a) b (c", g_work);
    ck_assert_int_eq(symlink("/bin/sleep", link), 0);
    pid_t pid = fork();
    if (pid == 0) {
        execl(link, link, "5", (char *)NULL);
        _exit(127);
    }
    ck_assert_int_gt(pid, 0);
    usleep(100 * 1000);
    struct agent_procstat st;
    ck_assert_int_eq(agent_proc_stat(pid, &st), 0);
    ck_assert_int_eq(st.ppid, getpid());
    ck_assert_int_gt(st.starttime, 0);
    ck_assert(agent_proc_same(pid, st.starttime));
    ck_assert(!agent_proc_same(pid, st.starttime + 1)); /* a reused pid is not the job */
    int attempt;
    int64_t sid;
    ck_assert_int_eq(agent_proc_job_id(pid, g_node, &attempt, &sid), -1); /* not a job */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    ck_assert_int_eq(agent_proc_stat(pid, &st), -1);

    agent_runner *r = open_runner();
    agent_runner_close(r);
    char p[PATH_MAX + 64], err[256];
    struct agent_job j = {.id = 61, .attempt = 0, .phase = AJ_ENDED, .exit_code = 0};
    ck_assert_int_eq(agent_store_save(g_state, &j, err, sizeof err), 0);
    char from[PATH_MAX + 64];
    snprintf(from, sizeof from, "%s/jobs/61-0.json", g_state);
    snprintf(p, sizeof p, "%s/jobs/62-0.json", g_state);
    ck_assert_int_eq(rename(from, p), 0);
    r = open_runner();
    char bad[PATH_MAX + 80];
    snprintf(bad, sizeof bad, "%s.bad", p);
    ck_assert_int_eq(access(bad, F_OK), 0);
    struct agent_job_status js;
    agent_runner_status(r, 62, 0, &js); /* the instance its name gives stays known */
    ck_assert_int_eq(js.phase, AGENT_JOB_ENDED);
    agent_runner_close(r);
}
END_TEST

static Suite *runner_suite(void)
{
    Suite *s = suite_create("agent_runner");
    TCase *tc = tcase_create("runner");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_exit_code);
    tcase_add_test(tc, test_signal_reported);
    tcase_add_test(tc, test_script_shebang);
    tcase_add_test(tc, test_output_files);
    tcase_add_test(tc, test_environment);
    tcase_add_test(tc, test_time_limit_term_then_kill);
    tcase_add_test(tc, test_time_limit_term_honoured);
    tcase_add_test(tc, test_cancel_kills_double_forked_tree);
    tcase_add_test(tc, test_tree_ends_with_main);
    tcase_add_test(tc, test_unknown_user);
    tcase_add_test(tc, test_runs_as_job_account);
    tcase_add_test(tc, test_non_root_agent_refuses_others);
    tcase_add_test(tc, test_bad_launches);
    tcase_add_test(tc, test_recovery_reattach);
    tcase_add_test(tc, test_recovery_dead_job);
    tcase_add_test(tc, test_recovery_unreleased);
    tcase_add_test(tc, test_lost_record_keeps_instance);
    tcase_add_test(tc, test_recovery_unreleased_slow_keeper);
    tcase_add_test(tc, test_events_ack);
    tcase_add_test(tc, test_kill_before_launch);
    tcase_add_test(tc, test_kill_without_attempt_drops_waiting_launches);
    tcase_add_test(tc, test_state_dir_guarded);
    tcase_add_test(tc, test_attempts_are_instances);
    tcase_add_test(tc, test_unrecorded_job_never_runs);
    tcase_add_test(tc, test_restart_sweeps_unrecorded_leftovers);
    tcase_add_test(tc, test_restart_removes_retired_exit_file);
    tcase_add_test(tc, test_orphan_killed_at_second_sweep);
    tcase_add_test(tc, test_instance_names);
    tcase_add_test(tc, test_procinfo_and_records_resist_odd_input);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    return fixture_main(argc, argv, "test_agent", runner_suite, &g_contain);
}
