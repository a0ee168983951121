/* test_placement.c: topology discovery and loading (this machine, our XMLs
 * in configs/topologies, the real machines of COMMONS_SHARED_DATA), and the
 * runner's placement of launches shaped like docs/protocol.md "Topology,
 * placement and multi-node jobs": each task bound to its slice of cpu_list
 * (read back from /proc/PID/status of the running tasks), the environment,
 * the recorded binding on an XML node, spawns, kill_spawns, the mpirun
 * command line of an mpi job, the RLIMIT_AS fallback and bad input. */
#include "agent.h"
#include "agent_internal.h"
#include "cm_log.h"
#include "cm_util.h"

#include <check.h>
#include "fixture.h"
#include <dirent.h>
#include <signal.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct agent_topology g_topo; /* loaded per test */

static void load(const char *xml)
{
    char err[512] = "";
    ck_assert_msg(agent_topology_load(xml, &g_topo, err, sizeof err) == 0, "%s", err);
}

static agent_runner *runner_with(const struct agent_topology *t, enum agent_containment how)
{
    struct agent_runner_opts o = {.state_dir = g_state, .node = g_node, .kill_grace_ms = 300,
                                  .containment = how, .topology = t,
                                  .server = "tcp://127.0.0.1:1", .rsh_agent = "/x/commons-rsh"};
    agent_runner *r = NULL;
    char err[512] = "";
    ck_assert_msg(agent_runner_open(&o, &r, err, sizeof err) == 0, "open: %s", err);
    return r;
}

static agent_runner *runner(const struct agent_topology *t)
{
    return runner_with(t, AGENT_CONTAIN_AUTO);
}

/* A launch of `sh -c CMD` with placement fields given as JSON text. */
static json_t *launch_sh(int64_t id, const char *cmd, const char *placement)
{
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s/out-%lld", g_work, (long long)id);
    json_t *l = json_pack("{sI ss ss ss s[sss]}", "id", (json_int_t)id, "unix_user", g_user,
                          "workdir", g_work, "stdout", out, "command", "/bin/sh", "-c", cmd);
    json_error_t je;
    json_t *p = json_loads(placement, 0, &je);
    ck_assert_msg(p != NULL, "test placement JSON: %s", je.text);
    json_object_update(l, p);
    json_decref(p);
    return l;
}

static void do_launch(agent_runner *r, json_t *l)
{
    char err[512] = "";
    int rc = agent_runner_launch(r, l, err, sizeof err);
    json_decref(l);
    ck_assert_msg(rc == 0, "launch: %s", err);
}

static struct agent_job_status wait_end(agent_runner *r, int64_t id)
{
    struct agent_job_status st;
    int64_t until = cm_mono_ms() + 15000;
    for (;;) {
        agent_runner_tick(r);
        agent_runner_status(r, id, 0, &st);
        if (st.phase == AGENT_JOB_ENDED) return st;
        ck_assert_msg(cm_mono_ms() < until, "job %lld did not end", (long long)id);
        usleep(20000);
    }
}

static char *output(int64_t id)
{
    char p[PATH_MAX], err[256];
    snprintf(p, sizeof p, "%s/out-%lld", g_work, (long long)id);
    char *s = cm_read_file(p, NULL, err, sizeof err);
    ck_assert_msg(s != NULL, "%s", err);
    return s;
}

/* The event of kind for (id, spawn_id) among the owed events (new ref) or NULL. */
static json_t *event(agent_runner *r, int64_t id, int64_t sid, const char *kind)
{
    json_t *all = agent_runner_events(r), *e, *found = NULL;
    size_t i;
    json_array_foreach(all, i, e)
        if (json_integer_value(json_object_get(e, "id")) == id &&
            json_integer_value(json_object_get(e, "spawn_id")) == sid &&
            strcmp(json_string_value(json_object_get(e, "event")), kind) == 0)
            found = json_incref(e);
    json_decref(all);
    return found;
}

/* The line of /proc/PID/status that starts with key, value only. */
static int proc_status(pid_t pid, const char *key, char *out, size_t len)
{
    char p[64], line[512];
    snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
    FILE *f = fopen(p, "re");
    if (!f) return -1;
    int rc = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0) {
            snprintf(out, len, "%s", line + strlen(key) + strspn(line + strlen(key), " \t:"));
            out[strcspn(out, "\n")] = '\0';
            rc = 0;
        }
    fclose(f);
    return rc;
}

/* Children of parent named "sleep" (the tasks, once they reached it). */
static int sleeping_children(pid_t parent, pid_t *out, int cap)
{
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        struct agent_procstat st;
        char name[64];
        if (pid <= 0 || agent_proc_stat(pid, &st) != 0 || st.ppid != parent) continue;
        /* sh -c 'echo; exec sleep' : the task's own pid becomes sleep */
        if (proc_status(pid, "Name", name, sizeof name) == 0 && strcmp(name, "sleep") == 0 &&
            n < cap)
            out[n++] = pid;
    }
    if (d) closedir(d);
    return n;
}

START_TEST(test_topologies_load)
{
    load(NULL);
    cpu_set_t set;
    ck_assert_int_eq(sched_getaffinity(0, sizeof set, &set), 0);
    ck_assert_int_eq(g_topo.npus, CPU_COUNT(&set));
    ck_assert(g_topo.applied);
    ck_assert_int_ge(g_topo.nnuma, 1);
    json_t *rep = agent_topology_report(&g_topo, "rlimit");
    ck_assert_str_eq(json_string_value(json_object_get(rep, "binding")), "applied");
    ck_assert_int_eq(json_integer_value(json_object_get(rep, "pus")), g_topo.npus);
    json_decref(rep);

    load(COMMONS_SOURCE_DIR "/configs/topologies/gpu-2x56c-8gpu.xml");
    ck_assert(!g_topo.applied);
    ck_assert_int_eq(g_topo.npus, 112);
    ck_assert_int_eq(g_topo.packages, 2);
    ck_assert_int_eq(g_topo.ngpus, 8);
    for (int g = 0; g < 8; g++) ck_assert_int_eq(g_topo.gpu_numa[g], g < 4 ? 0 : 1);
    ck_assert_int_eq(g_topo.pu_numa[0], 0);
    ck_assert_int_eq(g_topo.pu_numa[111], 1);
    ck_assert(!agent_topology_has_pu(&g_topo, 112));

    load(COMMONS_SHARED_DATA "/topologies/nvidiaDGX2.xml");
    ck_assert_int_eq(g_topo.ngpus, 16);
    ck_assert_int_eq(g_topo.nnuma, 2);
    for (int g = 0; g < 16; g++) ck_assert_int_eq(g_topo.gpu_numa[g], g < 8 ? 0 : 1);
    rep = agent_topology_report(&g_topo, "cgroup");
    ck_assert_str_eq(json_string_value(json_object_get(rep, "binding")), "recorded");
    json_t *g9 = json_array_get(json_object_get(rep, "gpus"), 9);
    ck_assert_int_eq(json_integer_value(json_object_get(g9, "numa")), 1);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(g9, "name")), "V100"));
    json_decref(rep);
}
END_TEST

START_TEST(test_bad_topology_files)
{
    char err[512] = "", p[PATH_MAX];
    struct agent_topology *t = &g_topo;
    ck_assert_int_eq(agent_topology_load("/nonexistent/x.xml", t, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/x.xml"));
    snprintf(p, sizeof p, "%s/garbage.xml", g_work);
    FILE *f = fopen(p, "w");
    fputs("<topology><object type=", f);
    fclose(f);
    err[0] = '\0';
    ck_assert_int_eq(agent_topology_load(p, t, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, p));
}
END_TEST

/* Two tasks on this machine, one PU each: each task runs bound to exactly
 * its PU, read from the running process; the job ends when both end. */
START_TEST(test_tasks_bound_to_their_pus)
{
    load(NULL);
    if (g_topo.npus < 2) {
        fprintf(stderr, "test_tasks_bound_to_their_pus: needs 2 PUs\n");
        return;
    }
    int pu[2], n = 0;
    for (int p = 0; p < AGENT_MAX_PUS && n < 2; p++)
        if (agent_topology_has_pu(&g_topo, p)) pu[n++] = p;
    char placement[512];
    snprintf(placement, sizeof placement,
             "{\"cpu_list\": [%d, %d], \"tasks\": 4, \"tasks_per_node\": 2, \"gpus\": 0,"
             " \"alloc\": [{\"node\": \"other\", \"cpu_list\": [0, 1]},"
             " {\"node\": \"%s\", \"cpu_list\": [%d, %d]}], \"step_key\": \"abc123\"}",
             pu[0], pu[1], g_node, pu[0], pu[1]);
    agent_runner *r = runner(&g_topo);
    do_launch(r, launch_sh(1,
        "echo task=$COMMONS_TASK_ID local=$COMMONS_LOCAL_TASK_ID slice=$COMMONS_TASK_CPU_LIST "
        "node=$COMMONS_CPU_LIST omp=$OMP_NUM_THREADS cuda=[$CUDA_VISIBLE_DEVICES] "
        "tpn=$COMMONS_TASKS_PER_NODE key=$COMMONS_STEP_KEY addr=$COMMONS_ADDR; exec sleep 2",
        placement));
    struct agent_job_status st;
    agent_runner_status(r, 1, 0, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_RUNNING);
    pid_t kids[4];
    int nk = 0;
    for (int i = 0; i < 200 && (nk = sleeping_children(st.pid, kids, 4)) < 2; i++) usleep(10000);
    ck_assert_int_eq(nk, 2);
    char a[64], b[64], want0[16], want1[16];
    ck_assert_int_eq(proc_status(kids[0], "Cpus_allowed_list", a, sizeof a), 0);
    ck_assert_int_eq(proc_status(kids[1], "Cpus_allowed_list", b, sizeof b), 0);
    snprintf(want0, sizeof want0, "%d", pu[0]);
    snprintf(want1, sizeof want1, "%d", pu[1]);
    ck_assert_msg((strcmp(a, want0) == 0 && strcmp(b, want1) == 0) ||
                  (strcmp(a, want1) == 0 && strcmp(b, want0) == 0),
                  "tasks allowed on %s and %s, expected %s and %s", a, b, want0, want1);
    json_t *started = event(r, 1, 0, "started");
    ck_assert_ptr_nonnull(started);
    json_t *bind = json_object_get(started, "binding");
    ck_assert(json_is_true(json_object_get(bind, "applied")));
    ck_assert_int_eq(json_array_size(json_object_get(bind, "tasks")), 2);
    ck_assert_int_eq(json_integer_value(json_array_get(json_array_get(json_object_get(bind,
                     "tasks"), 1), 0)), pu[1]);
    json_decref(started);
    st = wait_end(r, 1);
    ck_assert_int_eq(st.exit_code, 0);
    char *out = output(1), line[256];
    /* This node is alloc[1]: global task ids 2 and 3. */
    snprintf(line, sizeof line, "task=2 local=0 slice=%d node=%d,%d omp=1 cuda=[] tpn=2 "
             "key=abc123 addr=tcp://127.0.0.1:1", pu[0], pu[0], pu[1]);
    ck_assert_msg(strstr(out, line), "missing \"%s\" in:\n%s", line, out);
    snprintf(line, sizeof line, "task=3 local=1 slice=%d ", pu[1]);
    ck_assert_msg(strstr(out, line), "missing \"%s\" in:\n%s", line, out);
    free(out);
    agent_runner_close(r);
}
END_TEST

/* The job's status is the first task that failed. */
START_TEST(test_tasks_first_failure)
{
    load(NULL);
    agent_runner *r = runner(&g_topo);
    do_launch(r, launch_sh(2, "if [ $COMMONS_LOCAL_TASK_ID = 1 ]; then exit 7; fi; sleep 1; exit 3",
                           "{\"tasks_per_node\": 2}"));
    ck_assert_int_eq(wait_end(r, 2).exit_code, 7);
    do_launch(r, launch_sh(3, "if [ $COMMONS_LOCAL_TASK_ID = 0 ]; then kill -9 $$; fi; exit 0",
                           "{\"tasks_per_node\": 3}"));
    struct agent_job_status st = wait_end(r, 3);
    ck_assert_int_eq(st.signal, 9);
    ck_assert_int_eq(st.exit_code, 128 + 9);
    do_launch(r, launch_sh(4, "exit 0", "{\"tasks_per_node\": 4}"));
    ck_assert_int_eq(wait_end(r, 4).exit_code, 0);
    agent_runner_close(r);
}
END_TEST

/* An XML node records the binding (locality of the GPUs included) and
 * runs the job unbound. */
START_TEST(test_xml_node_records_binding)
{
    load(COMMONS_SHARED_DATA "/topologies/nvidiaDGX2.xml");
    agent_runner *r = runner(&g_topo);
    do_launch(r, launch_sh(5, "echo cuda=$CUDA_VISIBLE_DEVICES order=$CUDA_DEVICE_ORDER "
                           "$(grep Cpus_allowed_list /proc/self/status)",
                           "{\"cpu_list\": [24, 25], \"gpu_list\": [8, 9], \"gpus\": 2,"
                           " \"tasks_per_node\": 1}"));
    json_t *started = event(r, 5, 0, "started");
    ck_assert_ptr_nonnull(started);
    json_t *bind = json_object_get(started, "binding");
    ck_assert(json_is_false(json_object_get(bind, "applied")));
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(bind, "numa"), 0)), 1);
    ck_assert_int_eq(json_array_size(json_object_get(bind, "numa")), 1);
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(bind, "gpu_numa"), 0)), 1);
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(bind, "gpu_numa"), 1)), 1);
    json_decref(started);
    ck_assert_int_eq(wait_end(r, 5).exit_code, 0);
    char *out = output(5), allowed[64];
    ck_assert_int_eq(proc_status(getpid(), "Cpus_allowed_list", allowed, sizeof allowed), 0);
    char want[128];
    snprintf(want, sizeof want, "cuda=8,9 order=PCI_BUS_ID Cpus_allowed_list: %s", allowed);
    ck_assert_msg(strstr(out, want), "missing \"%s\" in:\n%s", want, out);
    free(out);
    agent_runner_close(r);
}
END_TEST

START_TEST(test_bad_placement)
{
    load(COMMONS_SHARED_DATA "/topologies/nvidiaDGX2.xml");
    agent_runner *r = runner(&g_topo);
    struct {
        const char *placement, *want;
    } cases[] = {
        {"{\"cpu_list\": [5]}", "PU 5 is not in this node's topology"},
        {"{\"cpu_list\": [0], \"gpu_list\": [16]}", "GPU 16 is not on this node"},
        {"{\"cpu_list\": [0], \"numa\": [7]}", "NUMA node 7 is not on this node"},
        {"{\"cpu_list\": \"0-3\"}", "field \"cpu_list\": expected an array"},
        {"{\"cpu_list\": [0, 0]}", "appears twice"},
        {"{\"cpu_list\": [-1]}", "field \"cpu_list\"[0]"},
        {"{\"cpu_list\": [0, 1], \"tasks_per_node\": 3}", "cannot hold 3 tasks"},
        {"{\"tasks_per_node\": 100000}", "out of range"},
        {"{\"mpi\": \"yes\"}", "field \"mpi\""},
        {"{\"mpi\": true}", "an mpi job needs its allocation"},
        {"{\"alloc\": [{\"node\": \"a b\"}]}", "field \"alloc\"[0]"},
        {"{\"alloc\": [{\"node\": \"x\", \"cpu_list\": [\"1\"]}]}", "alloc\"[0].cpu_list[0]"},
        {"{\"mpi\": true, \"alloc\": [{\"node\": \"n0\", \"cpu_list\": [0]}]}",
         "only the first node of alloc (n0)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        do_launch(r, launch_sh(10 + (int64_t)i, "exit 0", cases[i].placement));
        struct agent_job_status st = wait_end(r, 10 + (int64_t)i);
        ck_assert_int_eq(st.exit_code, -1);
        ck_assert_msg(strstr(st.error, cases[i].want), "case %zu: error \"%s\" lacks \"%s\"", i,
                      st.error, cases[i].want);
    }
    agent_runner_close(r);
}
END_TEST

/* A spawn runs like a job of the same instance, is listed in running as
 * [id, attempt, spawn_id], and ends with kill_spawns. */
START_TEST(test_spawns)
{
    load(NULL);
    agent_runner *r = runner(&g_topo);
    char err[512] = "";
    json_t *s1 = json_pack("{ss sI si sI s[sss] s{ss} ss ss si}", "op", "spawn", "id",
                           (json_int_t)40, "attempt", 0, "spawn_id", (json_int_t)1, "argv",
                           "/bin/sh", "-c", "exit $X", "env", "X", "5", "unix_user", g_user,
                           "workdir", g_work, "time_limit_s", 0);
    ck_assert_int_eq(agent_runner_spawn(r, s1, err, sizeof err), 0);
    json_decref(s1);
    json_t *s2 = json_pack("{ss sI si sI s[ss] ss ss s[i]}", "op", "spawn", "id", (json_int_t)40,
                           "attempt", 0, "spawn_id", (json_int_t)2, "argv", "sleep", "30",
                           "unix_user", g_user, "workdir", g_work, "cpu_list", 0);
    ck_assert_int_eq(agent_runner_spawn(r, s2, err, sizeof err), 0);
    json_decref(s2);
    json_t *running = agent_runner_running(r);
    bool listed = false;
    size_t i;
    json_t *e;
    json_array_foreach(running, i, e)
        listed |= json_array_size(e) == 3 && json_integer_value(json_array_get(e, 2)) == 2;
    json_decref(running);
    ck_assert(listed);
    json_t *ev = NULL;
    for (int k = 0; k < 500 && !(ev = event(r, 40, 1, "spawn_ended")); k++) {
        agent_runner_tick(r);
        usleep(10000);
    }
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(json_integer_value(json_object_get(ev, "exit_code")), 5);
    json_decref(ev);
    ev = event(r, 40, 2, "spawn_started");
    ck_assert_ptr_nonnull(ev);
    json_decref(ev);
    agent_runner_kill_spawns(r, 40, 0);
    for (int k = 0; k < 500 && !(ev = event(r, 40, 2, "spawn_ended")); k++) {
        agent_runner_tick(r);
        usleep(10000);
    }
    ck_assert_ptr_nonnull(ev);
    ck_assert(json_is_true(json_object_get(ev, "cancelled")));
    json_decref(ev);
    /* No spawn_id, no argv: refused or ended with the field named. */
    json_t *bad = json_pack("{ss sI ss ss}", "op", "spawn", "id", (json_int_t)41, "unix_user",
                            g_user, "workdir", g_work);
    ck_assert_int_eq(agent_runner_spawn(r, bad, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "spawn_id"));
    json_decref(bad);
    /* A spawn with a bad argv ends at once, its error naming the field. */
    bad = json_pack("{ss sI si sI ss ss ss}", "op", "spawn", "id", (json_int_t)42, "attempt", 0,
                    "spawn_id", (json_int_t)3, "argv", "not a list", "unix_user", g_user,
                    "workdir", g_work);
    ck_assert_int_eq(agent_runner_spawn(r, bad, err, sizeof err), 0);
    json_decref(bad);
    ev = event(r, 42, 3, "spawn_ended");
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(json_integer_value(json_object_get(ev, "exit_code")), -1);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(ev, "error")), "\"argv\""));
    json_decref(ev);
    agent_runner_close(r);
}
END_TEST

/* Subreaper containment finds trees by environment too: the end of a spawn
 * (COMMONS_SPAWN_ID set) leaves the job of the same id on this node alone. */
START_TEST(test_spawn_end_spares_its_job)
{
    load(NULL);
    agent_runner *r = runner_with(&g_topo, AGENT_CONTAIN_SUBREAPER);
    do_launch(r, launch_sh(80, "exec sleep 30", "{}"));
    char err[512] = "";
    json_t *sp = json_pack("{ss sI si sI s[sss] ss ss}", "op", "spawn", "id", (json_int_t)80,
                           "attempt", 0, "spawn_id", (json_int_t)1, "argv", "/bin/sh", "-c",
                           "sleep 0.3", "unix_user", g_user, "workdir", g_work);
    ck_assert_int_eq(agent_runner_spawn(r, sp, err, sizeof err), 0);
    json_decref(sp);
    json_t *ev = NULL;
    for (int k = 0; k < 500 && !(ev = event(r, 80, 1, "spawn_ended")); k++) {
        agent_runner_tick(r);
        usleep(10000);
    }
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(json_integer_value(json_object_get(ev, "exit_code")), 0);
    json_decref(ev);
    for (int k = 0; k < 30; k++) {
        agent_runner_tick(r);
        usleep(10000);
    }
    struct agent_job_status st;
    agent_runner_status(r, 80, 0, &st);
    ck_assert_int_eq(st.phase, AGENT_JOB_RUNNING);
    ck_assert_int_eq(kill(st.pid, 0), 0);
    ck_assert_int_eq(agent_runner_kill(r, 80, 0, "cancel"), 0);
    ck_assert(wait_end(r, 80).cancelled);
    agent_runner_close(r);
}
END_TEST

/* A restarted runner re-attaches to a multi-task job and a spawn: both
 * stay listed, and ending them ends every process. */
START_TEST(test_restart_reattaches_tasks_and_spawns)
{
    load(NULL);
    agent_runner *r = runner(&g_topo);
    do_launch(r, launch_sh(70, "exec sleep 60", "{\"tasks_per_node\": 2}"));
    char err[512] = "";
    json_t *sp = json_pack("{ss sI si sI s[ss] ss ss}", "op", "spawn", "id", (json_int_t)71,
                           "attempt", 0, "spawn_id", (json_int_t)9, "argv", "sleep", "60",
                           "unix_user", g_user, "workdir", g_work);
    ck_assert_int_eq(agent_runner_spawn(r, sp, err, sizeof err), 0);
    json_decref(sp);
    struct agent_job_status st;
    agent_runner_status(r, 70, 0, &st);
    pid_t waiter = st.pid, kids[4];
    int nk = 0;
    for (int i = 0; i < 200 && (nk = sleeping_children(waiter, kids, 4)) < 2; i++) usleep(10000);
    ck_assert_int_eq(nk, 2);
    agent_runner_close(r); /* the agent stops; its jobs go on */
    r = runner(&g_topo);
    json_t *running = agent_runner_running(r);
    char *text = json_dumps(running, JSON_COMPACT);
    ck_assert_msg(strstr(text, "[70,0]") && strstr(text, "[71,0,9]"), "running: %s", text);
    free(text);
    json_decref(running);
    /* The binding is part of the record: the started event sent again carries it. */
    json_t *started = event(r, 70, 0, "started");
    ck_assert_ptr_nonnull(started);
    json_t *bind = json_object_get(started, "binding");
    ck_assert(json_is_object(bind));
    ck_assert(json_is_false(json_object_get(bind, "applied"))); /* no cpu_list: nothing bound */
    ck_assert(json_is_array(json_object_get(bind, "tasks")));
    json_decref(started);
    ck_assert_int_eq(kill(kids[0], 0), 0);
    agent_runner_kill_spawns(r, 71, 0);
    ck_assert_int_eq(agent_runner_kill(r, 70, 0, "cancel"), 0);
    st = wait_end(r, 70);
    ck_assert(st.cancelled);
    json_t *ev = NULL;
    for (int k = 0; k < 500 && !(ev = event(r, 71, 9, "spawn_ended")); k++) {
        agent_runner_tick(r);
        usleep(10000);
    }
    ck_assert_ptr_nonnull(ev);
    json_decref(ev);
    for (int i = 0; i < nk; i++) {
        struct agent_procstat ps;
        ck_assert_msg(agent_proc_stat(kids[i], &ps) != 0 || ps.state == 'Z', "task %d alive",
                      (int)kids[i]);
    }
    agent_runner_close(r);
}
END_TEST

/* The mpirun command line and its hostfile/rankfile for the first node. */
START_TEST(test_mpi_plan)
{
    load(NULL);
    json_t *l = launch_sh(50, "unused", "{\"mpi\": true, \"tasks_per_node\": 2, \"cpu_list\": [0, 1],"
                          " \"alloc\": [{\"node\": \"n1\", \"cpu_list\": [0, 1]},"
                          " {\"node\": \"n2\", \"cpu_list\": [1, 0]}]}");
    json_object_set_new(l, "command", json_pack("[ss]", "./hello", "arg"));
    struct agent_launch al;
    char err[512] = "", dir[PATH_MAX];
    ck_assert_msg(agent_launch_parse(l, &al, err, sizeof err) == 0, "%s", err);
    snprintf(dir, sizeof dir, "%s/mpi", g_work);
    struct agent_bind_ctx c = {&g_topo, "n1", dir, "/opt/commons-rsh", true, true, 0, 0};
    struct agent_bind b;
    if (g_topo.npus < 2) return;
    ck_assert_msg(agent_bind_plan(&al, &c, &b, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(b.ntasks, 1);
    char cmdline[2048] = "";
    for (char **a = b.argv_override; *a; a++) {
        strcat(cmdline, *a);
        strcat(cmdline, " ");
    }
    ck_assert_msg(strstr(cmdline, "mpirun --hostfile ") == cmdline, "%s", cmdline);
    ck_assert_ptr_nonnull(strstr(cmdline, "--mca plm_rsh_agent /opt/commons-rsh "));
    ck_assert_ptr_nonnull(strstr(cmdline, "--mca plm_rsh_no_tree_spawn 1 --leave-session-attached -np 4 "));
    ck_assert_ptr_nonnull(strstr(cmdline, "--rankfile "));
    ck_assert_ptr_nonnull(strstr(cmdline, "--allow-run-as-root ./hello arg "));
    char p[PATH_MAX + 16], ferr[128];
    snprintf(p, sizeof p, "%s/hostfile", dir);
    char *hosts = cm_read_file(p, NULL, ferr, sizeof ferr);
    ck_assert_ptr_nonnull(hosts);
    ck_assert_str_eq(hosts, "n1 slots=2\nn2 slots=2\n");
    snprintf(p, sizeof p, "%s/rankfile", dir);
    char *ranks = cm_read_file(p, NULL, ferr, sizeof ferr);
    ck_assert_ptr_nonnull(ranks);
    ck_assert_str_eq(ranks, "rank 0=n1 slot=0\nrank 1=n1 slot=1\nrank 2=n2 slot=1\n"
                            "rank 3=n2 slot=0\n");
    free(hosts);
    free(ranks);
    agent_bind_free(&b);
    json_decref(l);
}
END_TEST

/* Without a memory controller the memory limit is RLIMIT_AS. */
START_TEST(test_memory_rlimit)
{
    load(NULL);
    agent_runner *r = runner(&g_topo);
    if (strcmp(agent_runner_limits(r), "rlimit") != 0) {
        agent_runner_close(r);
        return; /* cgroup limits: memory.max, not visible with ulimit */
    }
    json_t *l = launch_sh(60, "ulimit -v", "{}");
    json_object_set_new(l, "mem_mb", json_integer(64));
    do_launch(r, l);
    ck_assert_int_eq(wait_end(r, 60).exit_code, 0);
    char *out = output(60);
    ck_assert_str_eq(out, "65536\n");
    free(out);
    agent_runner_close(r);
}
END_TEST

int main(void)
{
    cm_log_init("test_agent_placement", CM_LOG_WARN);
    Suite *s = suite_create("agent_placement");
    TCase *tc = tcase_create("placement");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_topologies_load);
    tcase_add_test(tc, test_bad_topology_files);
    tcase_add_test(tc, test_tasks_bound_to_their_pus);
    tcase_add_test(tc, test_tasks_first_failure);
    tcase_add_test(tc, test_xml_node_records_binding);
    tcase_add_test(tc, test_bad_placement);
    tcase_add_test(tc, test_spawns);
    tcase_add_test(tc, test_mpi_plan);
    tcase_add_test(tc, test_restart_reattaches_tasks_and_spawns);
    tcase_add_test(tc, test_spawn_end_spares_its_job);
    tcase_add_test(tc, test_memory_rlimit);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
