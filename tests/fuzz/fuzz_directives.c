/* fuzz_directives.c: libFuzzer harness for #COMMONS directives in batch
 * scripts (cli/jobfile.h, jobfile_apply_directives).
 *
 * Input: a batch script. Properties: the parser returns 0 or -1, -1 always
 * with a message; the spec it filled (with the script attached, as
 * `commons submit` does) serializes and goes through job_spec_validate
 * without a crash (spec_check.h). */
#include "fuzz_util.h"
#include "jobfile.h"
#include "spec_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *script = fuzz_cstr(data, size);
    json_t *spec = json_object();
    char err[1024] = "";
    int rc = jobfile_apply_directives(spec, script, "job.sh", err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -1, "rc %d", rc);
    if (rc == 0) {
        /* `commons submit` attaches the script only when it is text; do the
         * same (json_string refuses invalid UTF-8). */
        json_t *s = json_string(script);
        if (s) json_object_set_new(spec, "script", s);
        fuzz_check_spec(spec);
    } else {
        FUZZ_CHECK(err[0] != 0, "rejected without a message");
    }
    json_decref(spec);
    free(script);
    return 0;
}
