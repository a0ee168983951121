/* fuzz_jobarg.c: libFuzzer harness for the job-array and dependency syntax
 * (scheduler/job.h: job_array_parse, job_deps_parse), which users type on
 * the command line and in job files.
 *
 * Input: the text of the option. Properties: a parse succeeds with a count
 * in range and values that satisfy the documented rules (array indices >= 0,
 * at most JOB_MAX_ARRAY of them, throttle >= 0; dependency ids >= 1, at most
 * the given maximum), or fails with -1 and a message. */
#include "fuzz_util.h"
#include "job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    char err[2048] = "";
    int *idx = NULL, throttle = -1;
    int n = job_array_parse(s, &idx, &throttle, err, sizeof err);
    if (n < 0) {
        FUZZ_CHECK(n == -1 && idx == NULL && err[0], "array: rc %d", n);
    } else {
        FUZZ_CHECK(n >= 1 && n <= JOB_MAX_ARRAY && idx != NULL && throttle >= 0, "array: n %d throttle %d", n,
                   throttle);
        for (int i = 0; i < n; i++) FUZZ_CHECK(idx[i] >= 0, "array index %d", idx[i]);
    }
    free(idx);

    struct job_dep deps[JOB_MAX_DEPS];
    err[0] = 0;
    n = job_deps_parse(s, deps, JOB_MAX_DEPS, err, sizeof err);
    if (n < 0) {
        FUZZ_CHECK(n == -1 && err[0], "deps: rc %d", n);
    } else {
        FUZZ_CHECK(n <= JOB_MAX_DEPS, "deps: n %d", n);
        for (int i = 0; i < n; i++)
            FUZZ_CHECK(deps[i].id >= 1 && (deps[i].kind == DEP_AFTEROK || deps[i].kind == DEP_AFTERANY),
                       "dep %d: id %lld", i, (long long)deps[i].id);
    }
    free(s);
    return 0;
}
