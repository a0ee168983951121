/* Unit tests for the scheduler core: job specs, arrays, dependencies, the
 * store round trip, and FIFO placement. */
#include "cluster.h"
#include "job.h"
#include "cm_util.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static json_t *spec(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    ck_assert_ptr_nonnull(j);
    return j;
}

static int validate(const char *text, char *err, size_t len)
{
    struct job_spec s;
    json_t *j = spec(text);
    int rc = job_spec_validate(j, &s, err, len);
    if (rc == 0) job_spec_free(&s);
    json_decref(j);
    return rc;
}

START_TEST(spec_defaults)
{
    struct job_spec s;
    char err[512];
    json_t *j = spec("{\"command\":[\"/bin/true\"],\"workdir\":\"/tmp\"}");
    ck_assert_int_eq(job_spec_validate(j, &s, err, sizeof err), 0);
    ck_assert_int_eq(s.nodes, 1);
    ck_assert_int_eq(s.tasks, 1);
    ck_assert_int_eq(s.time_limit_s, 3600);
    ck_assert_str_eq(s.name, "/bin/true");
    ck_assert_ptr_null(s.qos); /* filled at submit: the policy default or "normal" */
    job_spec_free(&s);
    json_decref(j);
    j = spec("{\"script\":\"#!/bin/sh\\n\",\"workdir\":\"/tmp\",\"time_limit_s\":\"1:30:00\",\"array\":\"1-10%2\"}");
    ck_assert_int_eq(job_spec_validate(j, &s, err, sizeof err), 0);
    ck_assert_int_eq(s.time_limit_s, 5400);
    ck_assert_int_eq(s.narray, 10);
    ck_assert_int_eq(s.array_throttle, 2);
    job_spec_free(&s);
    json_decref(j);
}
END_TEST

START_TEST(spec_errors)
{
    struct { const char *json, *needle; } cases[] = {
        {"{\"workdir\":\"/tmp\"}", "exactly one of 'command'"},
        {"{\"command\":[\"x\"],\"script\":\"y\",\"workdir\":\"/tmp\"}", "exactly one of"},
        {"{\"command\":[\"x\"],\"workdir\":\"rel\"}", "'workdir'"},
        {"{\"command\":[],\"workdir\":\"/tmp\"}", "'command'"},
        {"{\"command\":[1],\"workdir\":\"/tmp\"}", "command[0]"},
        {"{\"command\":[\"x\"],\"workdir\":\"/tmp\",\"cpus_per_task\":0}", "'cpus_per_task'"},
        {"{\"command\":[\"x\"],\"workdir\":\"/tmp\",\"nodes\":2,\"tasks\":1}", "'tasks'"},
        {"{\"command\":[\"x\"],\"workdir\":\"/tmp\",\"time_limit_s\":\"soon\"}", "'time_limit_s'"},
        {"{\"command\":[\"x\"],\"workdir\":\"/tmp\",\"colour\":\"red\"}", "unknown job field 'colour'"},
        {"{\"command\":[\"x\"],\"workdir\":\"/tmp\",\"env\":{\"1X\":\"a\"}}", "env.1X"},
        {"{\"command\":[\"x\"],\"workdir\":\"/tmp\",\"hold\":\"yes\"}", "'hold'"},
        {"{\"command\":[\"x\"],\"workdir\":\"/tmp\",\"dependency\":\"after:1\"}", "afterok"},
        {"{\"command\":[\"x\"],\"workdir\":\"/tmp\",\"array\":\"5-1\"}", "array '5-1'"},
        {"{\"command\":[\"x\"],\"workdir\":\"/tmp\",\"array\":\"1-3%0\"}", "throttle"},
        {"[1,2]", "JSON object"},
        {"{\"script\":\"#!/bin/sh\",\"workdir\":\"/tmp\",\"mpi\":true}", "not a batch script"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[512] = "";
        ck_assert_msg(validate(cases[i].json, err, sizeof err) == -1, "accepted %s", cases[i].json);
        ck_assert_msg(strstr(err, cases[i].needle) != NULL, "case %zu: '%s' lacks '%s'", i, err, cases[i].needle);
    }
}
END_TEST

START_TEST(arrays_and_deps)
{
    int *idx, thr;
    char err[256];
    ck_assert_int_eq(job_array_parse("0-15:4", &idx, &thr, err, sizeof err), 4);
    ck_assert_int_eq(idx[3], 12);
    free(idx);
    ck_assert_int_eq(job_array_parse("1,3,5", &idx, &thr, err, sizeof err), 3);
    ck_assert_int_eq(idx[2], 5);
    free(idx);
    ck_assert_int_eq(job_array_parse("1-100001", &idx, &thr, err, sizeof err), -1);
    ck_assert_int_eq(job_array_parse("1,", &idx, &thr, err, sizeof err), -1);
    ck_assert_int_eq(job_array_parse("a-b", &idx, &thr, err, sizeof err), -1);
    struct job_dep d[8];
    ck_assert_int_eq(job_deps_parse("afterok:1:2,afterany:3", d, 8, err, sizeof err), 3);
    ck_assert_int_eq(d[1].id, 2);
    ck_assert_int_eq(d[2].kind, DEP_AFTERANY);
    ck_assert_int_eq(job_deps_parse("afterok:", d, 8, err, sizeof err), -1);
    ck_assert_int_eq(job_deps_parse("afterok:0", d, 8, err, sizeof err), -1);
}
END_TEST

static char tmpdir[64];

static void open_cluster(struct cluster *c)
{
    char err[512];
    memset(c, 0, sizeof *c);
    c->set = (struct cluster_settings){.node_timeout_ms = 30000, .backfill = QUOTA_BACKFILL_EASY,
                                       .service_ports_lo = SERVICE_PORTS_LO, .service_ports_hi = SERVICE_PORTS_HI};
    ck_assert_msg(store_open(&c->store, tmpdir, STORE_SYNC_NORMAL, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(cluster_load(c, err, sizeof err) == 0, "%s", err);
}

static int64_t submit(struct cluster *c, struct user *u, const char *text)
{
    struct job_spec s;
    char err[512];
    const char *code;
    json_t *j = spec(text);
    ck_assert_msg(job_spec_validate(j, &s, err, sizeof err) == 0, "%s", err);
    int64_t id = cluster_submit(c, u, &s, &code, err, sizeof err);
    job_spec_free(&s);
    json_decref(j);
    return id;
}

/* A cluster in a new tmpdir, a transaction open, with account phys and its user
 * alice (whose token fills token[80]). */
static void open_new_cluster(struct cluster *c, char *token)
{
    char err[512];
    strcpy(tmpdir, "/tmp/commons-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    open_cluster(c);
    ck_assert_int_eq(store_begin(&c->store), 0);
    ck_assert_int_eq(cluster_account_add(c, "phys", "", err, sizeof err), 0);
    ck_assert_int_eq(cluster_user_add(c, "alice", "phys", NULL, 0, "alice", token, err, sizeof err), 0);
}

static void remove_tmpdir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(fifo_and_persistence)
{
    struct cluster c;
    char err[512], token[80];
    open_new_cluster(&c, token);
    ck_assert_int_eq(cluster_user_add(&c, "alice", "phys", NULL, 0, "alice", token, err, sizeof err), -1);
    struct user *u = cluster_user(&c, "alice");
    /* No node yet: rejected with the reason. */
    const char *job = "{\"command\":[\"x\"],\"workdir\":\"/tmp\",\"cpus_per_task\":2}";
    ck_assert_int_eq(submit(&c, u, job), -1);
    ck_assert_ptr_nonnull(cluster_node_register(&c, "n1", "n1", 4, 1000, 0, NULL, err, sizeof err));
    ck_assert_int_eq(submit(&c, u, "{\"command\":[\"x\"],\"workdir\":\"/tmp\",\"cpus_per_task\":8}"), -1);
    int64_t a = submit(&c, u, job), b = submit(&c, u, job), x = submit(&c, u, job);
    int64_t held = submit(&c, u, "{\"command\":[\"x\"],\"workdir\":\"/tmp\",\"hold\":true}");
    ck_assert_int_eq(a, 1);
    ck_assert_int_eq(held, 4);
    ck_assert_int_eq(cluster_schedule(&c), 2);
    ck_assert_int_eq(cluster_job(&c, a)->state, JOB_RUNNING);
    ck_assert_int_eq(cluster_job(&c, b)->state, JOB_RUNNING);
    ck_assert_str_eq(cluster_job(&c, x)->reason, "Resources");
    ck_assert_str_eq(cluster_job(&c, held)->reason, "Held");
    ck_assert_int_eq(cluster_node(&c, "n1")->used_cpus, 4);
    ck_assert_int_eq(store_commit(&c.store), 0);
    cluster_free(&c);

    /* Restart: the same jobs, states, allocation and token. */
    open_cluster(&c);
    int expired;
    ck_assert_ptr_nonnull(cluster_user_by_token(&c, token, &expired));
    ck_assert_ptr_null(cluster_user_by_token(&c, "cm_wrong", &expired));
    ck_assert_int_eq(expired, 0);
    /* A token past its expiry is refused and said to be expired. */
    char old_token[80];
    ck_assert_int_eq(store_begin(&c.store), 0);
    ck_assert_int_eq(cluster_token_create(&c, "alice", 1000, old_token, err, sizeof err), 0);
    ck_assert_int_eq(store_commit(&c.store), 0);
    ck_assert_ptr_null(cluster_user_by_token(&c, old_token, &expired));
    ck_assert_int_eq(expired, 1);
    ck_assert_int_eq(cluster_job(&c, a)->state, JOB_RUNNING);
    ck_assert_int_eq(cluster_node(&c, "n1")->used_cpus, 4);
    ck_assert_int_eq(c.npending, 2);
    ck_assert_int_eq(c.next_id, 5);
    /* A job ends: its CPUs free up and the next pending job starts. */
    ck_assert_int_eq(store_begin(&c.store), 0);
    struct node *n = cluster_node(&c, "n1");
    /* After a restart a node is UNKNOWN: nothing starts there until its agent is heard. */
    ck_assert_int_eq(cluster_schedule(&c), 0);
    cluster_node_heard(&c, n);
    json_t *ev = json_pack("{s:I, s:i, s:s, s:i, s:i}", "id", (json_int_t)a, "attempt", 0, "event", "ended",
                           "exit_code", 3, "signal", 0);
    cluster_job_event(&c, n, ev);
    json_decref(ev);
    ck_assert_int_eq(cluster_job(&c, a)->state, JOB_FAILED);
    ck_assert_int_eq(cluster_schedule(&c), 1);
    ck_assert_int_eq(cluster_job(&c, x)->state, JOB_RUNNING);
    /* Cancel of a running job keeps its CPUs until the agent confirms. */
    ck_assert_int_eq(cluster_cancel(&c, cluster_job(&c, b), err, sizeof err), 0);
    ck_assert_int_eq(cluster_job(&c, b)->state, JOB_CANCELLED);
    ck_assert_int_eq(n->used_cpus, 4);
    ck_assert_int_eq(cluster_cancel(&c, cluster_job(&c, b), err, sizeof err), -1);
    ck_assert_int_eq(store_commit(&c.store), 0);
    cluster_free(&c);
    remove_tmpdir();
}
END_TEST

/* After a restart of commonsd, spawns its agents still run are adopted; a new
 * spawn's id then stays above every id of the earlier run, adopted yet or not
 * (docs/protocol.md, "Spawning"). */
START_TEST(spawn_ids_after_adoption)
{
    int64_t started = cm_now_ms(); /* this run of commonsd starts */
    struct cluster c;
    char err[512], token[80];
    open_new_cluster(&c, token);
    struct node *n = cluster_node_register(&c, "n1", "n1", 4, 1000, 0, NULL, err, sizeof err);
    ck_assert_ptr_nonnull(n);
    int64_t a = submit(&c, cluster_user(&c, "alice"), "{\"command\":[\"x\"],\"workdir\":\"/tmp\"}");
    ck_assert_int_eq(cluster_schedule(&c), 1);
    /* The agent lists spawn 1000 of job a, started by an earlier run (whose spawn 1001,
     * on the same node, it has not listed yet). */
    json_t *running = json_pack("[[I, i, I]]", (json_int_t)a, 0, (json_int_t)1000), *cmds = json_array();
    cluster_spawn_commands(&c, n, running, cmds);
    ck_assert_int_eq(json_array_size(cmds), 0);
    ck_assert_ptr_nonnull(cluster_spawn_find(&c, 1000));
    json_t *argv = json_pack("[s]", "orted");
    int64_t sid = cluster_spawn_create(&c, cluster_job(&c, a), "n1", argv, NULL, err, sizeof err);
    ck_assert_msg(sid > 0, "%s", err);
    ck_assert_int_gt(sid, started); /* not 1001: that one is the earlier run's */
    /* The earlier run's 1001 is adopted in turn, beside the new one. */
    json_array_set_new(json_array_get(running, 0), 2, json_integer(1001));
    cluster_spawn_commands(&c, n, running, cmds);
    ck_assert_int_eq(cluster_spawn_find(&c, 1001)->state, SPAWN_RUNNING);
    ck_assert_int_eq(cluster_spawn_find(&c, sid)->state, SPAWN_PENDING);
    json_decref(argv);
    json_decref(running);
    json_decref(cmds);
    ck_assert_int_eq(store_commit(&c.store), 0);
    cluster_free(&c);
    remove_tmpdir();
}
END_TEST

static int replica_port_of(struct cluster *c, int64_t id)
{
    return (int)json_integer_value(json_object_get(cluster_job(c, id)->spec, "service_port"));
}

/* Service replicas get ports of the cluster's range (commonsd --service-ports):
 * never one a job that has not ended holds, a freed one again once the range
 * is used up, and a full range refuses the replica, saying so. */
START_TEST(service_ports_are_unique)
{
    struct cluster c;
    char err[512], token[80];
    open_new_cluster(&c, token);
    c.set.service_ports_lo = 30000;
    c.set.service_ports_hi = 30001;
    ck_assert_ptr_nonnull(cluster_node_register(&c, "n1", "n1", 8, 1000, 0, NULL, err, sizeof err));
    json_t *sp = spec("{\"workdir\":\"/tmp\",\"model\":\"/m.gguf\",\"serve_bin\":\"/bin/serve\"}");
    ck_assert_msg(cluster_service_deploy(&c, cluster_user(&c, "alice"), "chat", sp, 3, 3, err, sizeof err) == 0,
                  "%s", err);
    cluster_services_reconcile(&c);
    /* Jobs 1 and 2 hold the two ports; the third replica has none. */
    ck_assert_int_eq(c.next_id, 3);
    ck_assert_int_eq(replica_port_of(&c, 1), 30000);
    ck_assert_int_eq(replica_port_of(&c, 2), 30001);
    ck_assert_int_eq(cluster_service(&c, "chat")->submit_failing, 1);
    /* The command says the same port. */
    json_t *cmd = json_object_get(cluster_job(&c, 2)->spec, "command");
    ck_assert_str_eq(json_string_value(json_array_get(cmd, 4)), "tcp://0.0.0.0:30001");
    /* Job 1 ends: its port goes to the next replica. */
    ck_assert_int_eq(cluster_cancel(&c, cluster_job(&c, 1), err, sizeof err), 0);
    cluster_services_reconcile(&c);
    ck_assert_int_eq(c.next_id, 4);
    ck_assert_int_eq(replica_port_of(&c, 3), 30000);
    ck_assert_int_eq(cluster_service(&c, "chat")->submit_failing, 1); /* the third still has none */
    /* Another service cannot start in a full range: its deploy says why. */
    ck_assert_int_eq(cluster_service_deploy(&c, cluster_user(&c, "alice"), "other", sp, 1, 1, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "30000-30001") && strstr(err, "--service-ports"), "%s", err);
    ck_assert_ptr_null(cluster_service(&c, "other"));
    /* Running replicas list their own port as the endpoint. */
    ck_assert_int_eq(cluster_schedule(&c), 2);
    json_t *list = cluster_service_json(&c, cluster_service(&c, "chat"));
    json_t *reps = json_object_get(list, "replicas");
    ck_assert_int_eq(json_array_size(reps), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *r = json_array_get(reps, i);
        char want[64];
        snprintf(want, sizeof want, "tcp://n1:%d", replica_port_of(&c, json_integer_value(json_object_get(r, "job"))));
        ck_assert_str_eq(json_string_value(json_object_get(r, "endpoint")), want);
    }
    json_decref(list);
    json_decref(sp);
    ck_assert_int_eq(store_commit(&c.store), 0);
    cluster_free(&c);
    remove_tmpdir();
}
END_TEST

/* commonsd reloads its state after a failed commit (cluster_free, cluster_load):
 * the options it started with stay in force. */
START_TEST(settings_survive_reload)
{
    struct cluster c;
    char err[512], token[80];
    open_new_cluster(&c, token);
    c.set.service_ports_lo = 31000;
    ck_assert_int_eq(store_commit(&c.store), 0);
    cluster_free(&c);
    /* The reload used to lose --backfill: EASY became NONE (0), strict priority order. */
    ck_assert_int_eq(c.set.backfill, QUOTA_BACKFILL_EASY);
    ck_assert_int_eq(c.set.node_timeout_ms, 30000);
    ck_assert_int_eq(c.set.service_ports_lo, 31000);
    ck_assert_int_eq(c.set.service_ports_hi, SERVICE_PORTS_HI);
    ck_assert_msg(store_open(&c.store, tmpdir, STORE_SYNC_NORMAL, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(cluster_load(&c, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.set.backfill, QUOTA_BACKFILL_EASY);
    cluster_free(&c);
    remove_tmpdir();
}
END_TEST

START_TEST(service_ports_parse_limits)
{
    int lo, hi;
    char err[256];
    ck_assert_int_eq(service_ports_parse("20000-20099", &lo, &hi, err, sizeof err), 0);
    ck_assert_int_eq(lo, 20000);
    ck_assert_int_eq(hi, 20099);
    ck_assert_int_eq(service_ports_parse("1024-1024", &lo, &hi, err, sizeof err), 0);
    const char *bad[] = {"80-90", "3000-2000", "3000", "3000-70000", "a-b", "3000-3001x", "-3000-3001", "3000--1",
                         "", "3000-"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        ck_assert_msg(service_ports_parse(bad[i], &lo, &hi, err, sizeof err) == -1, "accepted '%s'", bad[i]);
        ck_assert_msg(strstr(err, "1024 <= LO <= HI <= 65535"), "'%s': %s", bad[i], err);
    }
}
END_TEST

/* A node of 2 NUMA nodes x 4 PUs with 2 GPUs on each NUMA node. */
static json_t *two_socket_topology(void)
{
    return json_loads("{\"numa\": [{\"id\": 0, \"pus\": [0, 1, 2, 3]}, {\"id\": 1, \"pus\": [4, 5, 6, 7]}],"
                      " \"gpus\": [{\"index\": 0, \"numa\": 0}, {\"index\": 1, \"numa\": 0},"
                      " {\"index\": 2, \"numa\": 1}, {\"index\": 3, \"numa\": 1}]}", 0, NULL);
}

START_TEST(placement_follows_locality)
{
    struct node n;
    memset(&n, 0, sizeof n);
    n.cpus = 8;
    n.gpus = 4;
    char err[256];
    json_t *t = two_socket_topology();
    ck_assert_int_eq(node_set_topology(&n, t, err, sizeof err), 0);
    struct job_place a, b, x;
    /* 3 PUs + 1 GPU: all in one NUMA node, with a GPU of that NUMA node. */
    ck_assert_int_eq(node_pick(&n, 3, 1, &a), 0);
    ck_assert_int_eq(a.npus, 3);
    ck_assert_int_eq(a.ngpus, 1);
    int numa_a = a.pus[0] / 4;
    for (int i = 0; i < 3; i++) ck_assert_int_eq(a.pus[i] / 4, numa_a);
    ck_assert_int_eq(a.gpus[0] / 2, numa_a);
    node_mark(&n, &a, +1);
    /* 4 PUs + 2 GPUs: only the other NUMA node has 4 free PUs and 2 local GPUs. */
    ck_assert_int_eq(node_pick(&n, 4, 2, &b), 0);
    for (int i = 0; i < 4; i++) ck_assert_int_ne(b.pus[i] / 4, numa_a);
    for (int i = 0; i < 2; i++) ck_assert_int_ne(b.gpus[i] / 2, numa_a);
    node_mark(&n, &b, +1);
    /* The last free PU and GPU, whatever their place; nothing is handed out twice. */
    ck_assert_int_eq(node_pick(&n, 1, 1, &x), 0);
    ck_assert_int_eq(x.npus, 1);
    for (int i = 0; i < 3; i++) ck_assert_int_ne(x.pus[0], a.pus[i]);
    ck_assert_int_ne(x.gpus[0], a.gpus[0]);
    node_mark(&n, &a, -1);
    ck_assert_int_eq(n.topo.pu_used[a.pus[0]], 0);
    free(a.pus); free(a.gpus); free(b.pus); free(b.gpus); free(x.pus); free(x.gpus);
    /* A topology that disagrees with the offered counts is ignored: counts only. */
    n.cpus = 6;
    ck_assert_int_eq(node_set_topology(&n, t, err, sizeof err), 1);
    ck_assert_msg(strstr(err, "8 PUs") != NULL, "%s", err);
    ck_assert_ptr_null(n.topology);
    ck_assert_int_eq(node_pick(&n, 1, 0, &x), -1);
    json_decref(t);
    node_free_topology(&n);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, spec_defaults);
    tcase_add_test(tc, spec_errors);
    tcase_add_test(tc, arrays_and_deps);
    tcase_add_test(tc, fifo_and_persistence);
    tcase_add_test(tc, placement_follows_locality);
    tcase_add_test(tc, spawn_ids_after_adoption);
    tcase_add_test(tc, service_ports_are_unique);
    tcase_add_test(tc, service_ports_parse_limits);
    tcase_add_test(tc, settings_survive_reload);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
