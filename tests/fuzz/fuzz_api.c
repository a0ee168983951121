/* fuzz_api.c: libFuzzer harness for commonsd's whole request path
 * (scheduler/api.h, api_handle) on an in-memory cluster whose SQLite store
 * lives in a temporary folder: one main-loop turn per input, as commonsd.c
 * runs it (handle every request inside one transaction, node checks, a
 * scheduling pass, commit, answer held polls).
 *
 * Every input starts from the same fresh cluster (accounts root and lab,
 * users admin and ann), so a finding replays from its input alone.
 * Input: one JSON request object, or an array of up to 64 of them (a batch).
 * To let the fuzzer reach past authentication, the harness fills in:
 *   - "token": when absent, admin's token; the string "@ann", ann's token;
 *   - agent frames: {"type":"agent","payload":{...}} with an object payload
 *     gets the payload's "ts" (when absent: now, increasing) and a valid
 *     signature with the cluster key. Anything else goes through unchanged.
 * Properties: every reply is an object with a boolean "ok", and a failure
 * carries string "code" and "message"; the turn commits; reloading the
 * cluster from the store afterwards (a restart) succeeds and finds the same
 * jobs, nodes and users (what was acknowledged is durable). */
#include "api.h"
#include "cm_crypto.h"
#include "cm_log.h"
#include "cm_rpc.h"
#include "cm_util.h"
#include "fuzz_util.h"

#include <ftw.h>

#define MAX_BATCH 64

static const char key[] = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
static char tmp_dir[200], state_dir[256];
static struct daemon d;
static char admin_token[80], ann_token[80];
/* api_handle only stores request handles (for held polls and queued
 * replies); these stand in for nng's, one per request of a batch. */
static char fake_reqs[MAX_BATCH];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void die(const char *what, const char *err)
{
    fprintf(stderr, "fuzz_api: %s: %s\n", what, err);
    abort();
}

static void open_cluster(void)
{
    char err[6000] = "";
    d.c.set = (struct cluster_settings){.node_timeout_ms = 30000, .backfill = QUOTA_BACKFILL_EASY,
                                        .service_ports_lo = SERVICE_PORTS_LO, .service_ports_hi = SERVICE_PORTS_HI};
    if (store_open(&d.c.store, state_dir, STORE_SYNC_NORMAL, err, sizeof err) != 0 ||
        cluster_load(&d.c, err, sizeof err) != 0)
        die("open", err);
}

static void fresh_cluster(void)
{
    nftw(state_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    if (mkdir(state_dir, 0700) != 0) die("mkdir", state_dir);
    memset(&d, 0, sizeof d);
    d.cluster_key = (char *)key;
    open_cluster();
    char err[512] = "";
    json_t *lab = json_pack("[s]", "lab");
    if (store_begin(&d.c.store) || cluster_account_add(&d.c, "root", "", err, sizeof err) ||
        cluster_account_add(&d.c, "lab", "root", err, sizeof err) ||
        cluster_user_add(&d.c, "admin", "root", NULL, 1, "root", admin_token, err, sizeof err) ||
        cluster_user_add(&d.c, "ann", "lab", lab, 0, "ann", ann_token, err, sizeof err) || store_commit(&d.c.store))
        die("bootstrap", err[0] ? err : d.c.store.err);
    json_decref(lab);
}

static void remove_tmp(void)
{
    nftw(tmp_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    cm_log_init("fuzz_api", CM_LOG_ERROR);
    /* tmpfs when there is one: SQLite's fsyncs cost nothing there. */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(tmp_dir, sizeof tmp_dir, "%s/commons-fuzz-api-XXXXXX", base);
    if (!mkdtemp(tmp_dir)) die("mkdtemp", tmp_dir);
    snprintf(state_dir, sizeof state_dir, "%s/state", tmp_dir);
    atexit(remove_tmp); /* a crash leaves it: it holds the state that crashed */
    return 0;
}

static void check_reply(json_t *reply)
{
    FUZZ_CHECK(json_is_object(reply) && json_is_boolean(json_object_get(reply, "ok")), "reply without 'ok'");
    if (json_is_false(json_object_get(reply, "ok"))) {
        json_t *e = json_object_get(reply, "error");
        FUZZ_CHECK(json_is_string(json_object_get(e, "code")) && json_is_string(json_object_get(e, "message")),
                   "error reply without code and message");
    }
}

static void drain_replies(void)
{
    for (int i = 0; i < d.nout; i++) {
        check_reply(d.out[i].reply);
        json_decref(d.out[i].reply);
    }
    d.nout = 0;
}

/* The harness's conveniences (see the top comment). */
static void prepare(json_t *req, int64_t *ts)
{
    json_t *tok = json_object_get(req, "token");
    if (!tok)
        json_object_set_new(req, "token", json_string(admin_token));
    else if (json_is_string(tok) && strcmp(json_string_value(tok), "@ann") == 0)
        json_object_set_new(req, "token", json_string(ann_token));
    json_t *payload = json_object_get(req, "payload");
    const char *type = json_string_value(json_object_get(req, "type"));
    if (type && strcmp(type, "agent") == 0 && json_is_object(payload)) {
        if (!json_object_get(payload, "ts")) json_object_set_new(payload, "ts", json_integer((*ts)++));
        json_t *frame = cm_rpc_sign(key, payload);
        if (!frame) return; /* a payload that does not serialize stays unsigned */
        json_object_update(req, frame);
        json_decref(frame);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *in = json_loadb((const char *)data, size, 0, NULL);
    if (!in) return 0;
    fresh_cluster();
    int64_t ts = cm_now_ms();
    FUZZ_CHECK(store_begin(&d.c.store) == 0, "begin: %s", d.c.store.err);
    size_t n = json_is_array(in) ? json_array_size(in) : 1;
    if (n > MAX_BATCH) n = MAX_BATCH;
    for (size_t i = 0; i < n; i++) {
        json_t *req = json_is_array(in) ? json_array_get(in, i) : in;
        json_t *reply;
        if (!json_is_object(req)) {
            reply = cm_reply_err("bad_request", "request is not a JSON object");
        } else {
            prepare(req, &ts);
            reply = api_handle(&d, (struct srv_req *)&fake_reqs[i], req);
        }
        if (reply) api_queue_reply(&d, (struct srv_req *)&fake_reqs[i], reply);
    }
    cluster_check_nodes(&d.c);
    if (d.c.dirty) cluster_schedule(&d.c);
    api_flush_parked(&d, 0);
    FUZZ_CHECK(store_commit(&d.c.store) == 0, "commit: %s", d.c.store.err);
    drain_replies();
    api_flush_parked(&d, 1);
    drain_replies();
    json_decref(in);

    /* Restart: the store must give back what memory held. */
    int64_t next_id = d.c.next_id;
    int nnodes = d.c.nnodes, nusers = d.c.nusers, naccounts = d.c.naccounts;
    int64_t njobs = 0;
    for (int64_t id = 1; id < d.c.next_id; id++) njobs += d.c.jobs[id] != NULL;
    cluster_free(&d.c);
    open_cluster();
    int64_t njobs2 = 0;
    for (int64_t id = 1; id < d.c.next_id; id++) njobs2 += d.c.jobs[id] != NULL;
    FUZZ_CHECK(d.c.next_id == next_id && njobs2 == njobs, "restart: %lld jobs (next id %lld), had %lld (%lld)",
               (long long)njobs2, (long long)d.c.next_id, (long long)njobs, (long long)next_id);
    FUZZ_CHECK(d.c.nnodes == nnodes && d.c.nusers == nusers && d.c.naccounts == naccounts,
               "restart: %d nodes %d users %d accounts, had %d %d %d", d.c.nnodes, d.c.nusers, d.c.naccounts,
               nnodes, nusers, naccounts);
    cluster_free(&d.c);
    return 0;
}
