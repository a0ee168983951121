/* test_gateway.c: unit tests of the gateway's pure parts: the DRR fair queue,
 * tier quotas, OpenAI request parsing and response shapes, the key store. */
#include "gw_api.h"
#include "gw_fairq.h"
#include "gw_keys.h"
#include "gw_quota.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- fair queue ------------------------------------------------------- */

typedef struct item {
    gw_fq_item fq;
    int flow, seq;
} item;

START_TEST(fairq_light_flows_not_starved)
{
    /* One heavy flow queues 32 first, four light flows 2 each after it: with
     * equal costs every light request leaves within the first three rounds. */
    gw_fairq *q = gw_fairq_new(100);
    item items[40];
    int k = 0;
    char name[16];
    for (int i = 0; i < 32; i++, k++) {
        items[k] = (item){.flow = 0, .seq = i};
        ck_assert_int_eq(gw_fairq_push(q, "heavy", &items[k].fq, 100), 0);
    }
    for (int f = 1; f <= 4; f++)
        for (int i = 0; i < 2; i++, k++) {
            snprintf(name, sizeof name, "light%d", f);
            items[k] = (item){.flow = f, .seq = i};
            ck_assert_int_eq(gw_fairq_push(q, name, &items[k].fq, 100), 0);
        }
    ck_assert_uint_eq(gw_fairq_len(q), 40);
    ck_assert_uint_eq(gw_fairq_flows(q), 5);
    int last_light = -1, heavy_seen = 0, prev_heavy = -1;
    for (int pos = 0; pos < 40; pos++) {
        item *it = (item *)gw_fairq_pop(q);
        ck_assert_ptr_nonnull(it);
        if (it->flow) last_light = pos;
        else {
            ck_assert_int_eq(it->seq, prev_heavy + 1); /* FIFO within a flow */
            prev_heavy = it->seq;
            heavy_seen++;
        }
    }
    ck_assert_int_le(last_light, 10);
    ck_assert_int_eq(heavy_seen, 32);
    ck_assert_ptr_null(gw_fairq_pop(q));
    ck_assert_uint_eq(gw_fairq_flows(q), 0);
    gw_fairq_free(q);
}
END_TEST

START_TEST(fairq_shares_tokens_not_requests)
{
    /* Flow A's requests cost 10x flow B's: served tokens stay near equal. */
    gw_fairq *q = gw_fairq_new(64);
    static item a[200], b[200];
    for (int i = 0; i < 200; i++) {
        gw_fairq_push(q, "a", &a[i].fq, 500);
        a[i].flow = 0;
        gw_fairq_push(q, "b", &b[i].fq, 50);
        b[i].flow = 1;
    }
    int64_t tok[2] = {0, 0};
    for (int n = 0; n < 110; n++) {
        item *it = (item *)gw_fairq_pop(q);
        tok[it->flow] += it->fq.cost;
    }
    double ratio = (double)tok[0] / (double)tok[1];
    ck_assert_msg(ratio > 0.8 && ratio < 1.25, "tokens a=%lld b=%lld", (long long)tok[0],
                  (long long)tok[1]);
    gw_fairq_free(q);
}
END_TEST

START_TEST(fairq_unpop_and_remove)
{
    gw_fairq *q = gw_fairq_new(10);
    item x[3];
    gw_fairq_push(q, "x", &x[0].fq, 5);
    gw_fairq_push(q, "y", &x[1].fq, 5);
    gw_fairq_push(q, "x", &x[2].fq, 5);
    item *first = (item *)gw_fairq_pop(q);
    ck_assert_ptr_eq(first, &x[0]);
    /* Busy replica: the item goes back and is served next, before y. */
    ck_assert_int_eq(gw_fairq_unpop(q, &first->fq), 0);
    ck_assert_uint_eq(gw_fairq_len(q), 3);
    ck_assert_ptr_eq(gw_fairq_pop(q), &x[0].fq);
    /* An emptied flow comes back through unpop too. */
    gw_fairq_remove(q, &x[2].fq);
    ck_assert_uint_eq(gw_fairq_flows(q), 1);
    ck_assert_int_eq(gw_fairq_unpop(q, &x[0].fq), 0);
    ck_assert_uint_eq(gw_fairq_flows(q), 2);
    ck_assert_ptr_eq(gw_fairq_pop(q), &x[0].fq);
    gw_fairq_remove(q, &x[0].fq); /* not queued: no-op */
    ck_assert_ptr_eq(gw_fairq_pop(q), &x[1].fq);
    ck_assert_ptr_null(gw_fairq_pop(q));
    char longname[GW_FLOW_MAX + 5];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    ck_assert_int_eq(gw_fairq_push(q, longname, &x[0].fq, 1), -1);
    gw_fairq_free(q);
}
END_TEST

START_TEST(fairq_cost_far_above_quantum)
{
    gw_fairq *q = gw_fairq_new(1);
    item x;
    gw_fairq_push(q, "big", &x.fq, 1000000000);
    ck_assert_ptr_eq(gw_fairq_pop(q), &x.fq); /* no billion-step loop */
    gw_fairq_free(q);
}
END_TEST

/* ---- quotas ------------------------------------------------------------ */

static int64_t loaded_tokens = 0;
static int loads = 0;
static int64_t loader(void *ctx, const char *principal, int64_t day)
{
    (void)ctx;
    (void)principal;
    (void)day;
    loads++;
    return loaded_tokens;
}

START_TEST(quota_rate_per_minute)
{
    gw_quota *q = gw_quota_new(NULL, NULL);
    gw_limits lim = {-1, 3, -1, -1};
    gw_quota_verdict v;
    /* The window is measured on the monotonic clock: the wall clock stands still here. */
    int64_t wall = 20000LL * 86400 * 1000, t = 1000000;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 10, wall, t + i * 1000, &v), GW_QUOTA_OK);
        gw_quota_end(q, "k", 10, 10, wall, t + i * 1000);
    }
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 10, wall, t + 10000, &v), GW_QUOTA_RATE);
    ck_assert_int_eq(v.retry_after_s, 50); /* the first begin leaves the window at t + 60 s */
    ck_assert_ptr_nonnull(strstr(v.message, "3 requests per minute"));
    ck_assert_int_eq(gw_quota_begin(q, "other", &lim, 10, wall, t + 10000, &v), GW_QUOTA_OK);
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 10, wall, t + 60001, &v), GW_QUOTA_OK);
    gw_quota_free(q);
}
END_TEST

/* A step of the wall clock (NTP, date -s) neither blocks a citizen for the
 * length of the step nor lifts the rate limit; it still names the UTC day. */
START_TEST(quota_wall_clock_step)
{
    loaded_tokens = 0;
    loads = 0;
    gw_quota *q = gw_quota_new(loader, NULL);
    gw_limits lim = {100, 2, -1, -1};
    gw_quota_verdict v;
    int64_t wall = 20000LL * 86400 * 1000 + 12 * 3600 * 1000, mono = 500000;
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 10, wall, mono, &v), GW_QUOTA_OK);
        gw_quota_end(q, "k", 10, 10, wall, mono);
    }
    /* The wall clock jumps an hour ahead one second later: the minute is not over. */
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 10, wall + 3600 * 1000, mono + 1000, &v),
                     GW_QUOTA_RATE);
    ck_assert_int_eq(v.retry_after_s, 59);
    /* It jumps an hour back, and a minute has passed: admitted, not held for an hour. */
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 10, wall - 3600 * 1000, mono + 60001, &v),
                     GW_QUOTA_OK);
    gw_quota_end(q, "k", 10, 10, wall - 3600 * 1000, mono + 60001);
    ck_assert_int_eq(loads, 1);
    /* The UTC day follows the wall clock alone: the next day reloads from the store. */
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 10, wall + 13 * 3600 * 1000, mono + 120002, &v),
                     GW_QUOTA_OK);
    ck_assert_int_eq(loads, 2);
    gw_quota_free(q);
}
END_TEST

START_TEST(quota_concurrency)
{
    gw_quota *q = gw_quota_new(NULL, NULL);
    gw_limits lim = {-1, -1, -1, 2};
    gw_quota_verdict v;
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 1, 0, 0, &v), GW_QUOTA_OK);
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 1, 0, 0, &v), GW_QUOTA_OK);
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 1, 0, 0, &v), GW_QUOTA_CONCURRENCY);
    ck_assert_int_ge(v.retry_after_s, 1);
    gw_quota_end(q, "k", 1, 1, 0, 0);
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 1, 0, 0, &v), GW_QUOTA_OK);
    gw_quota_free(q);
}
END_TEST

START_TEST(quota_tokens_per_day)
{
    loaded_tokens = 900;
    loads = 0;
    gw_quota *q = gw_quota_new(loader, NULL);
    gw_limits lim = {1000, -1, -1, -1};
    gw_quota_verdict v;
    int64_t day0 = 20000LL * 86400 * 1000 + 3600 * 1000; /* 01:00 UTC */
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 60, day0, 0, &v), GW_QUOTA_OK);
    ck_assert_int_eq(loads, 1);
    /* 900 charged + 60 reserved + 60 > 1000; the reservation returns soon. */
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 60, day0, 0, &v), GW_QUOTA_TOKENS);
    ck_assert_int_eq(v.retry_after_s, 1);
    gw_quota_end(q, "k", 60, 95, day0, 0); /* 995 used */
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 10, day0, 0, &v), GW_QUOTA_TOKENS);
    ck_assert_int_eq(v.retry_after_s, 23 * 3600); /* until 00:00 UTC */
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 5, day0, 0, &v), GW_QUOTA_OK);
    gw_quota_end(q, "k", 5, 5, day0, 0);
    /* The next day starts from what the store says (here: nothing). */
    loaded_tokens = 0;
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 900, day0 + 86400 * 1000, 0, &v), GW_QUOTA_OK);
    ck_assert_int_eq(loads, 2);
    gw_quota_free(q);
}
END_TEST

START_TEST(quota_forgets_idle_principals)
{
    loaded_tokens = 7;
    loads = 0;
    gw_quota *q = gw_quota_new(loader, NULL);
    gw_limits lim = {1000, -1, -1, -1};
    gw_quota_verdict v;
    int64_t t0 = 20000LL * 86400 * 1000 + 3600 * 1000, m0 = 5000;
    ck_assert_int_eq(gw_quota_begin(q, "busy", &lim, 1, t0, m0, &v), GW_QUOTA_OK); /* stays in flight */
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 1, t0, m0, &v), GW_QUOTA_OK);
    gw_quota_end(q, "k", 1, 1, t0, m0);
    char name[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(name, sizeof name, "anon:%d", i);
        gw_quota_begin(q, name, &lim, 1, t0, m0, &v);
        gw_quota_end(q, name, 1, 1, t0, m0);
    }
    ck_assert_int_eq(loads, 100002);
    /* Two hours later, still the same UTC day: a new principal triggers the sweep. */
    int64_t t1 = t0 + 2 * 3600 * 1000, m1 = m0 + 2 * 3600 * 1000;
    ck_assert_int_eq(gw_quota_begin(q, "newcomer", &lim, 1, t1, m1, &v), GW_QUOTA_OK);
    ck_assert_int_eq(gw_quota_begin(q, "k", &lim, 1, t1, m1, &v), GW_QUOTA_OK);
    ck_assert_int_eq(loads, 100004); /* k was forgotten and reloaded from the store */
    gw_quota_end(q, "busy", 1, 1, t1, m1); /* the one in flight was kept */
    ck_assert_int_eq(gw_quota_begin(q, "busy", &lim, 1, t1, m1, &v), GW_QUOTA_OK);
    ck_assert_int_eq(loads, 100004);
    gw_quota_free(q);
}
END_TEST

/* ---- OpenAI JSON -------------------------------------------------------- */

static int parse(gw_kind kind, const char *body, gw_gen *g, gw_api_err *e)
{
    return gw_api_parse(kind, body, strlen(body), g, e);
}

START_TEST(api_parse_chat)
{
    gw_gen g;
    gw_api_err e;
    ck_assert_int_eq(parse(GW_CHAT,
                           "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                           "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                           "{\"type\":\"text\",\"text\":\"b\"}]}],\"max_tokens\":7,\"temperature\":0.5,"
                           "\"top_p\":0.9,\"seed\":42,\"stop\":[\"x\",\"y\"],\"n\":1,\"stream\":true,"
                           "\"stream_options\":{\"include_usage\":true},\"user\":\"u\","
                           "\"presence_penalty\":0}",
                           &g, &e),
                     0);
    ck_assert_str_eq(g.model, "m");
    ck_assert_int_eq(g.max_tokens, 7);
    ck_assert(g.stream && g.include_usage && g.has_seed && g.seed == 42);
    ck_assert_int_eq(g.nstop, 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(g.input, 1), "content")), "ab");
    json_t *start = gw_api_serve_start(&g, "id1", 7);
    ck_assert_str_eq(json_string_value(json_object_get(start, "type")), "gen.start");
    ck_assert_int_eq(json_array_size(json_object_get(start, "messages")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(start, "seed")), 42);
    json_decref(start);
    gw_gen_free(&g);

    ck_assert_int_eq(parse(GW_COMPLETION, "{\"model\":\"m\",\"prompt\":[\"hi\"],\"stop\":\"s\"}", &g, &e), 0);
    ck_assert_str_eq(json_string_value(g.input), "hi");
    ck_assert_int_eq(g.max_tokens, -1);
    ck_assert_int_eq(g.nstop, 1);
    gw_gen_free(&g);
}
END_TEST

START_TEST(api_parse_rejects)
{
    static const struct {
        gw_kind kind;
        const char *body, *param;
    } bad[] = {
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[", ""},
        {GW_CHAT, "[1,2]", ""},
        {GW_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model"},
        {GW_CHAT, "{\"model\":\"m\"}", "messages"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[]}", "messages"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "messages"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":\"5\"}", "max_tokens"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", "max_tokens"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":3}", "temperature"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":0}", "top_p"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}", "n"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":\"yes\"}", "stream"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[1]}", "stop"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[]}", "tools"},
        {GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream_options\":{\"include_usage\":true}}", "stream_options"},
        {GW_COMPLETION, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", "prompt"},
        {GW_COMPLETION, "{\"model\":\"m\",\"prompt\":[1,2,3]}", "prompt"},
        {GW_COMPLETION, "{\"model\":\"m\",\"prompt\":\"x\",\"echo\":true}", "echo"},
        {GW_COMPLETION, "{\"model\":\"m\",\"prompt\":\"x\",\"seed\":1.5}", "seed"},
        {GW_COMPLETION, "{\"model\":\"m\",\"messages\":[]}", "messages"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gw_gen g;
        gw_api_err e;
        ck_assert_msg(parse(bad[i].kind, bad[i].body, &g, &e) == -1, "accepted %s", bad[i].body);
        ck_assert_int_eq(e.status, 400);
        ck_assert_msg(strcmp(e.param, bad[i].param) == 0, "%s: param '%s', want '%s' (%s)",
                      bad[i].body, e.param, bad[i].param, e.message);
        ck_assert(e.message[0]);
    }
}
END_TEST

START_TEST(api_shapes)
{
    gw_gen g;
    gw_api_err e;
    ck_assert_int_eq(parse(GW_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &g, &e), 0);
    char *body = gw_api_response(&g, "chatcmpl-1", 5, "hello", "stop", 3, 2);
    json_t *j = json_loads(body, 0, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(j, "object")), "chat.completion");
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(c0, "message"), "content")), "hello");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "usage"), "total_tokens")), 5);
    json_decref(j);
    free(body);

    char *chunk = gw_api_chunk(&g, "chatcmpl-1", 5, "tok", false, NULL);
    ck_assert(strncmp(chunk, "data: {", 7) == 0);
    ck_assert(strcmp(chunk + strlen(chunk) - 2, "\n\n") == 0);
    j = json_loads(chunk + 6, JSON_DISABLE_EOF_CHECK, NULL);
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(c0, "delta"), "content")), "tok");
    ck_assert(json_is_null(json_object_get(c0, "finish_reason")));
    json_decref(j);
    free(chunk);

    gw_api_fail(&e, 429, "rate_limit_error", NULL, "rate_limit_exceeded", "slow down %d", 1);
    body = gw_api_error_body(&e);
    j = json_loads(body, 0, NULL);
    json_t *eo = json_object_get(j, "error");
    ck_assert_str_eq(json_string_value(json_object_get(eo, "message")), "slow down 1");
    ck_assert_str_eq(json_string_value(json_object_get(eo, "type")), "rate_limit_error");
    ck_assert(json_is_null(json_object_get(eo, "param")));
    ck_assert_str_eq(json_string_value(json_object_get(eo, "code")), "rate_limit_exceeded");
    json_decref(j);
    free(body);
    gw_gen_free(&g);
}
END_TEST

/* ---- key store --------------------------------------------------------- */

static char *file_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(1 << 22);
    *len = fread(buf, 1, (1 << 22) - 1, f);
    buf[*len] = 0;
    fclose(f);
    return buf;
}

START_TEST(keys_lifecycle)
{
    char dir[] = "/tmp/gw-keys-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char err[256];
    gw_keystore *ks;
    ck_assert_int_eq(gw_keys_open(dir, &ks, err, sizeof err), GW_KEYS_OK);
    char k1[GW_KEY_LEN + 1], k2[GW_KEY_LEN + 1];
    gw_key_info info;
    ck_assert_int_eq(gw_keys_create(ks, "alice", "researcher", k1, &info, err, sizeof err), GW_KEYS_OK);
    ck_assert_int_eq(strlen(k1), GW_KEY_LEN);
    ck_assert(strncmp(k1, "cmk_", 4) == 0);
    ck_assert(strncmp(info.prefix, k1, GW_KEY_PREFIX_LEN) == 0);
    ck_assert_int_eq(gw_keys_create(ks, "bob", NULL, k2, NULL, err, sizeof err), GW_KEYS_OK);
    ck_assert_str_ne(k1, k2);
    ck_assert_int_eq(gw_keys_create(ks, "bad name", NULL, k2, NULL, err, sizeof err), GW_KEYS_EARG);
    ck_assert_int_eq(gw_keys_create(ks, "x", "-tier", k2, NULL, err, sizeof err), GW_KEYS_EARG);

    ck_assert_int_eq(gw_keys_lookup(ks, k1, &info, err, sizeof err), GW_KEYS_OK);
    ck_assert_str_eq(info.name, "alice");
    ck_assert_str_eq(info.tier, "researcher");
    char wrong[GW_KEY_LEN + 1];
    strcpy(wrong, k1);
    wrong[10] = wrong[10] == 'a' ? 'b' : 'a';
    ck_assert_int_eq(gw_keys_lookup(ks, wrong, &info, err, sizeof err), GW_KEYS_ENOTFOUND);
    ck_assert_int_eq(gw_keys_lookup(ks, "cmk_short", &info, err, sizeof err), GW_KEYS_ENOTFOUND);

    ck_assert_int_eq(gw_keys_add_usage(ks, 1, 100, 10, 20, err, sizeof err), GW_KEYS_OK);
    ck_assert_int_eq(gw_keys_add_usage(ks, 1, 100, 1, 2, err, sizeof err), GW_KEYS_OK);
    int64_t t;
    ck_assert_int_eq(gw_keys_tokens_on(ks, 1, 100, &t, err, sizeof err), GW_KEYS_OK);
    ck_assert_int_eq(t, 33);
    ck_assert_int_eq(gw_keys_tokens_on(ks, 1, 101, &t, err, sizeof err), GW_KEYS_OK);
    ck_assert_int_eq(t, 0);

    int count;
    ck_assert_int_eq(gw_keys_revoke(ks, "alice", &count, err, sizeof err), GW_KEYS_OK);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(gw_keys_lookup(ks, k1, &info, err, sizeof err), GW_KEYS_ENOTFOUND);
    ck_assert_int_ne(info.revoked, 0);
    ck_assert_int_eq(gw_keys_revoke(ks, "alice", &count, err, sizeof err), GW_KEYS_ENOTFOUND);
    ck_assert_int_eq(gw_keys_revoke(ks, k2, &count, err, sizeof err), GW_KEYS_OK); /* by prefix */
    ck_assert_int_eq(gw_keys_revoke(ks, "99", &count, err, sizeof err), GW_KEYS_ENOTFOUND);

    gw_key_info *list;
    size_t n;
    ck_assert_int_eq(gw_keys_list(ks, &list, &n, err, sizeof err), GW_KEYS_OK);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(list[0].tokens_total, 33);
    ck_assert_int_eq(list[0].requests_total, 2);
    ck_assert(list[0].revoked && list[1].revoked);
    free(list);
    gw_keys_close(ks);

    /* Only hashes are stored: the key text appears in no file of the store. */
    const char *files[] = {"gateway.db", "gateway.db-wal"};
    for (int i = 0; i < 2; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        size_t len;
        char *text = file_text(path, &len);
        if (!text) continue;
        ck_assert_ptr_null(memmem(text, len, k1 + 4, 20));
        ck_assert_ptr_null(memmem(text, len, k2 + 4, 20));
        free(text);
        unlink(path);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/gateway.db-shm", dir);
    unlink(path);
    rmdir(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gateway");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, fairq_light_flows_not_starved);
    tcase_add_test(tc, fairq_shares_tokens_not_requests);
    tcase_add_test(tc, fairq_unpop_and_remove);
    tcase_add_test(tc, fairq_cost_far_above_quantum);
    tcase_add_test(tc, quota_rate_per_minute);
    tcase_add_test(tc, quota_wall_clock_step);
    tcase_add_test(tc, quota_concurrency);
    tcase_add_test(tc, quota_tokens_per_day);
    tcase_add_test(tc, quota_forgets_idle_principals);
    tcase_add_test(tc, api_parse_chat);
    tcase_add_test(tc, api_parse_rejects);
    tcase_add_test(tc, api_shapes);
    tcase_add_test(tc, keys_lifecycle);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
