/* Unit tests for common/: parsing, crypto, signed frames. */
#include "cm_crypto.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

START_TEST(durations)
{
    ck_assert_int_eq(cm_parse_duration("10"), 600);
    ck_assert_int_eq(cm_parse_duration("1:30"), 90);
    ck_assert_int_eq(cm_parse_duration("2:00:05"), 7205);
    ck_assert_int_eq(cm_parse_duration("1-2"), 86400 + 7200);
    ck_assert_int_eq(cm_parse_duration("1-02:03:04"), 86400 + 7384);
    ck_assert_int_eq(cm_parse_duration("90s"), 90);
    ck_assert_int_eq(cm_parse_duration("30m"), 1800);
    ck_assert_int_eq(cm_parse_duration("7d"), 7 * 86400);
    const char *bad[] = {"", "x", "1:", "1::2", "-5", "5q", "1-", "1:2:3:4", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(cm_parse_duration(bad[i]) == -1, "accepted '%s'", bad[i]);
}
END_TEST

START_TEST(sizes)
{
    ck_assert_int_eq(cm_parse_size_mb("512"), 512);
    ck_assert_int_eq(cm_parse_size_mb("4G"), 4096);
    ck_assert_int_eq(cm_parse_size_mb("4gb"), 4096);
    ck_assert_int_eq(cm_parse_size_mb("1T"), 1048576);
    ck_assert_int_eq(cm_parse_size_mb("3X"), -1);
    ck_assert_int_eq(cm_parse_size_mb("G"), -1);
    ck_assert_int_eq(cm_parse_size_mb(""), -1);
}
END_TEST

START_TEST(sha256_known)
{
    char out[65];
    cm_sha256_hex("abc", 3, out);
    ck_assert_str_eq(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* RFC 4231 test case 2 */
    cm_hmac_sha256_hex("Jefe", "what do ya want for nothing?", 28, out);
    ck_assert_str_eq(out, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}
END_TEST

START_TEST(signed_frames)
{
    json_t *p = json_pack("{s:s, s:s, s:I}", "type", "agent.poll", "node", "n1", "ts", (json_int_t)5);
    json_t *frame = cm_rpc_sign("key1", p);
    json_t *out = NULL;
    char err[256];
    ck_assert_int_eq(cm_rpc_verify("key1", frame, &out, err, sizeof err), 0);
    ck_assert_str_eq(json_string_value(json_object_get(out, "node")), "n1");
    json_decref(out);
    ck_assert_int_eq(cm_rpc_verify("key2", frame, &out, err, sizeof err), -1);
    ck_assert_str_eq(err, "bad signature");
    /* Tampered payload with the old signature. */
    json_object_set_new(frame, "payload", json_string("{\"type\":\"agent.poll\",\"node\":\"n2\",\"ts\":5}"));
    ck_assert_int_eq(cm_rpc_verify("key1", frame, &out, err, sizeof err), -1);
    json_object_del(frame, "sig");
    ck_assert_int_eq(cm_rpc_verify("key1", frame, &out, err, sizeof err), -1);
    json_decref(frame);
    json_decref(p);
}
END_TEST

START_TEST(constant_time_eq)
{
    ck_assert(cm_str_eq_ct("abc", "abc"));
    ck_assert(!cm_str_eq_ct("abc", "abd"));
    ck_assert(!cm_str_eq_ct("abc", "ab"));
    char a[65], b[65];
    ck_assert_int_eq(cm_random_hex(32, a), 0);
    ck_assert_int_eq(cm_random_hex(32, b), 0);
    ck_assert_int_eq(strlen(a), 64);
    ck_assert(!cm_str_eq_ct(a, b));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("common");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, durations);
    tcase_add_test(tc, sizes);
    tcase_add_test(tc, sha256_known);
    tcase_add_test(tc, signed_frames);
    tcase_add_test(tc, constant_time_eq);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
