/* Unit tests for common/: parsing, crypto, signed frames, daemonizing. */
#include "cm_crypto.h"
#include "cm_daemon.h"
#include "cm_rpc.h"
#include "cm_util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* 1 if fd is open on /dev/null. */
static int is_devnull(int fd)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat("/dev/null", &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

START_TEST(daemonize_redirects)
{
    char dir[] = "/tmp/cm_daemon_XXXXXX", log[64], err[256] = "";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(log, sizeof log, "%s/d.log", dir);
    FILE *f = fopen(log, "w");
    ck_assert_ptr_nonnull(f);
    fputs("before\n", f);
    fclose(f);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        /* daemon(3) ends this process with status 0 and goes on in a detached grandchild. */
        if (cm_daemonize(dir, "d.log", err, sizeof err) != 0) _exit(3);
        fprintf(stderr, "detached %d, stdin null %d, stdout null %d\n", getsid(0) == getpid(),
                is_devnull(0), is_devnull(1));
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char *text = NULL;
    for (int i = 0; i < 500; i++) { /* the grandchild runs on its own: wait up to 5 s */
        free(text);
        text = cm_read_file(log, NULL, err, sizeof err);
        if (text && strchr(text + 7, '\n')) break;
        usleep(10000);
    }
    ck_assert_ptr_nonnull(text);
    ck_assert_str_eq(text, "before\ndetached 1, stdin null 1, stdout null 1\n");
    free(text);
    unlink(log);
    rmdir(dir);
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
    tcase_add_test(tc, daemonize_redirects);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
