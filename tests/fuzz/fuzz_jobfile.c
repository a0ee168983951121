/* fuzz_jobfile.c: libFuzzer harness for YAML job files (cli/jobfile.h,
 * jobfile_load_yaml).
 *
 * Input: a job file. The loader opens files by name, so the bytes are handed
 * over as a memfd path. Properties: 0 or -1, -1 always with a message; a
 * loaded spec serializes and goes through job_spec_validate without a crash
 * (spec_check.h). */
#include "fuzz_util.h"
#include "jobfile.h"
#include "spec_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd;
    char path[64];
    fuzz_memfile(data, size, &fd, path, sizeof path);
    json_t *spec = json_object();
    char err[1024] = "";
    int rc = jobfile_load_yaml(spec, path, err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -1, "rc %d", rc);
    if (rc == 0)
        fuzz_check_spec(spec);
    else
        FUZZ_CHECK(err[0] != 0, "rejected without a message");
    json_decref(spec);
    close(fd);
    return 0;
}
