/* spec_check.h: what the jobfile harnesses check about a spec they built.
 *
 * The CLI sends what jobfile_* produced to commonsd, which runs
 * job_spec_validate on it; so a spec built from hostile text is pushed
 * through the validator too. Properties: the spec still serializes (every
 * string is valid UTF-8, as JSON needs), and validation either succeeds or
 * fails with a message. */
#ifndef FUZZ_SPEC_CHECK_H
#define FUZZ_SPEC_CHECK_H

#include "fuzz_util.h"
#include "job.h"

#include <jansson.h>

static inline void fuzz_check_spec(json_t *spec)
{
    char *text = json_dumps(spec, JSON_COMPACT);
    FUZZ_CHECK(text != NULL, "the spec built from the input does not serialize");
    /* What commonsd receives is the text, parsed again. */
    json_error_t jerr;
    json_t *wire = json_loads(text, 0, &jerr);
    FUZZ_CHECK(wire != NULL, "the serialized spec does not parse: %s", jerr.text);
    free(text);
    struct job_spec js;
    char err[512] = "";
    if (job_spec_validate(wire, &js, err, sizeof err) == 0)
        job_spec_free(&js);
    else
        FUZZ_CHECK(err[0] != 0, "validation failed without a message");
    json_decref(wire);
}

#endif
