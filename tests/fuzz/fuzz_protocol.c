/* fuzz_protocol.c: libFuzzer harness for commonsd's JSON protocol decoding:
 * the job-spec validator (scheduler/job.h) and agent frame verification
 * (common/cm_rpc.h).
 *
 * Input: the body of a request, parsed as commonsd does (json_loadb).
 * Properties:
 *   - job_spec_validate succeeds, or fails with a message and leaves nothing
 *     allocated; a normalized spec validates again to the same JSON (the
 *     store keeps the normalized spec, so a restarted commonsd sees the same
 *     job) and its counts are within the documented bounds;
 *   - cm_rpc_verify rejects the frame as sent (the harness's key is secret,
 *     so no input can carry a valid signature by chance) with a message;
 *     once the harness signs the frame's payload string itself, verify
 *     succeeds exactly when that string is a JSON object. */
#include "cm_crypto.h"
#include "cm_rpc.h"
#include "fuzz_util.h"
#include "job.h"

#include <jansson.h>

static const char key[] = "6675a2e1c0d3b4f5a6978880796a5b4c3d2e1f00112233445566778899aabbcc";

static void check_spec(json_t *req)
{
    struct job_spec s;
    char err[1024] = "";
    if (job_spec_validate(req, &s, err, sizeof err) != 0) {
        FUZZ_CHECK(err[0] != 0, "rejected without a message");
        FUZZ_CHECK(s.json == NULL && s.array_idx == NULL, "rejected spec left allocations");
        return;
    }
    FUZZ_CHECK(s.nodes >= 1 && s.tasks >= s.nodes && s.cpus_per_task >= 1 && s.gpus >= 0 && s.mem_mb >= 0 &&
                   s.time_limit_s >= 1,
               "counts out of range");
    FUZZ_CHECK(s.ndeps >= 0 && s.ndeps <= JOB_MAX_DEPS, "ndeps %d", s.ndeps);
    FUZZ_CHECK(s.narray >= 0 && s.narray <= JOB_MAX_ARRAY && (s.narray == 0) == (s.array_idx == NULL),
               "narray %d", s.narray);
    struct job_spec again;
    char err2[1024] = "";
    int rc = job_spec_validate(s.json, &again, err2, sizeof err2);
    FUZZ_CHECK(rc == 0, "the normalized spec no longer validates: %s", err2);
    FUZZ_CHECK(json_equal(s.json, again.json), "normalizing twice changed the spec");
    job_spec_free(&again);
    job_spec_free(&s);
}

static void check_frame(json_t *frame)
{
    json_t *payload = NULL;
    char err[512] = "";
    FUZZ_CHECK(cm_rpc_verify(key, frame, &payload, err, sizeof err) != 0, "an unsigned frame verified");
    FUZZ_CHECK(err[0] != 0 && payload == NULL, "rejected without a message");

    const char *text = json_string_value(json_object_get(frame, "payload"));
    if (!text) return;
    /* Sign what verify will hash (the C string, up to any embedded NUL). */
    char sig[65];
    cm_hmac_sha256_hex(key, text, strlen(text), sig);
    json_t *signed_frame = json_deep_copy(frame);
    json_object_set_new(signed_frame, "sig", json_string(sig));
    err[0] = 0;
    int rc = cm_rpc_verify(key, signed_frame, &payload, err, sizeof err);
    json_t *direct = json_loads(text, 0, NULL);
    FUZZ_CHECK((rc == 0) == json_is_object(direct), "verify %d disagrees with parsing the payload", rc);
    if (rc == 0) {
        FUZZ_CHECK(json_equal(payload, direct), "verify returned another payload");
        json_decref(payload);
    } else {
        FUZZ_CHECK(err[0] != 0, "rejected without a message");
    }
    json_decref(direct);
    json_decref(signed_frame);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *req = json_loadb((const char *)data, size, 0, &jerr);
    if (!req) return 0;
    check_spec(req);
    check_frame(req);
    json_decref(req);
    return 0;
}
