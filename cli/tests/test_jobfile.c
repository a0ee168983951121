/* Tests for cli/jobfile.c: flags, #COMMONS directives and YAML job files. */
#include "cm_util.h"
#include "jobfile.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *data_dir;

static char *path(const char *name)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", data_dir, name);
    return buf;
}

START_TEST(yaml_good)
{
    json_t *s = json_object();
    char err[1024];
    ck_assert_msg(jobfile_load_yaml(s, path("good.yaml"), err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(json_string_value(json_object_get(s, "name")), "analysis");
    ck_assert_int_eq(json_array_size(json_object_get(s, "command")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(s, "tasks")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(s, "mem_mb")), 8192);
    ck_assert_int_eq(json_integer_value(json_object_get(s, "time_limit_s")), 7200);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(s, "env"), "OMP_PROC_BIND")), "true");
    ck_assert(json_is_true(json_object_get(s, "requeue")));
    json_decref(s);
}
END_TEST

static void expect_yaml_error(const char *file, const char *needle)
{
    json_t *s = json_object();
    char err[1024] = "";
    ck_assert_int_eq(jobfile_load_yaml(s, path(file), err, sizeof err), -1);
    ck_assert_msg(strstr(err, needle) != NULL, "'%s' lacks '%s'", err, needle);
    json_decref(s);
}

START_TEST(yaml_errors)
{
    expect_yaml_error("bad-type.yaml", "bad-type.yaml:3:16: field 'cpus_per_task': --cpus-per-task: expected a non-negative integer, got 'many'");
    expect_yaml_error("bad-key.yaml", "bad-key.yaml:3:1: unknown field 'colour'");
    expect_yaml_error("bad-syntax.yaml", "bad-syntax.yaml:3:1: YAML syntax error");
    expect_yaml_error("missing.yaml", "No such file");
}
END_TEST

START_TEST(directives)
{
    char err[1024], *text = cm_read_file(path("directives.sh"), NULL, err, sizeof err);
    ck_assert_ptr_nonnull(text);
    json_t *s = json_object();
    ck_assert_msg(jobfile_apply_directives(s, text, "directives.sh", err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(json_string_value(json_object_get(s, "name")), "sim");
    ck_assert_int_eq(json_integer_value(json_object_get(s, "tasks")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(s, "cpus_per_task")), 4);
    /* The directive after the first command is ignored, as sbatch does. */
    ck_assert_int_eq(json_integer_value(json_object_get(s, "time_limit_s")), 1800);
    ck_assert_int_eq(json_integer_value(json_object_get(s, "mem_mb")), 2048);
    ck_assert(json_is_true(json_object_get(s, "hold")));
    ck_assert_str_eq(json_string_value(json_object_get(s, "stdout")), "sim-%j.log");
    free(text);
    /* Flags applied afterwards win. */
    ck_assert_int_eq(jobfile_apply_flag(s, "c", "8", "command line", err, sizeof err), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(s, "cpus_per_task")), 8);
    json_decref(s);

    text = cm_read_file(path("bad-directive.sh"), NULL, err, sizeof err);
    s = json_object();
    ck_assert_int_eq(jobfile_apply_directives(s, text, "bad-directive.sh", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "bad-directive.sh:3: --time: expected") != NULL, "%s", err);
    free(text);
    ck_assert_int_eq(jobfile_apply_directives(s, "#COMMONS --bogus 1\n", "x.sh", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "x.sh:1: #COMMONS: unknown option '--bogus'") != NULL, "%s", err);
    ck_assert_int_eq(jobfile_apply_directives(s, "#COMMONS --ntasks\n", "x.sh", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "needs a value") != NULL, "%s", err);
    ck_assert_int_eq(jobfile_apply_directives(s, "#COMMONS oops\n", "x.sh", err, sizeof err), -1);
    json_decref(s);
}
END_TEST

START_TEST(flags)
{
    json_t *s = json_object();
    char err[1024];
    ck_assert_int_eq(jobfile_apply_flag(s, "mem", "3X", "command line", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "--mem: expected a size") != NULL, "%s", err);
    ck_assert_int_eq(jobfile_apply_flag(s, "export", "NONE", "command line", err, sizeof err), 0);
    ck_assert_int_eq(json_object_size(json_object_get(s, "env")), 0);
    setenv("COMMONS_TOKEN", "secret", 1);
    setenv("CM_TEST_VAR", "v1", 1);
    ck_assert_int_eq(jobfile_apply_flag(s, "export", "ALL", "command line", err, sizeof err), 0);
    ck_assert_ptr_null(json_object_get(json_object_get(s, "env"), "COMMONS_TOKEN"));
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(s, "env"), "CM_TEST_VAR")), "v1");
    ck_assert_int_eq(jobfile_apply_flag(s, "export", "CM_TEST_VAR,X=1", "command line", err, sizeof err), 0);
    ck_assert_int_eq(json_object_size(json_object_get(s, "env")), 2);
    ck_assert_int_eq(jobfile_apply_flag(s, "export", "1BAD", "command line", err, sizeof err), -1);
    ck_assert_int_eq(jobfile_flag_takes_value("hold"), 0);
    ck_assert_int_eq(jobfile_flag_takes_value("nope"), -1);
    json_decref(s);
}
END_TEST

int main(int argc, char **argv)
{
    data_dir = argc > 1 ? argv[1] : "tests/data";
    Suite *s = suite_create("jobfile");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, yaml_good);
    tcase_add_test(tc, yaml_errors);
    tcase_add_test(tc, directives);
    tcase_add_test(tc, flags);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
