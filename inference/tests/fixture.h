/* fixture.h: reader of the logits fixtures written by tests/ref/reference.py.
 *
 * Text format (whitespace separated, one record per line; see tests/ref/README.md):
 *   commons-logits-fixture 1
 *   name NAME
 *   model_fnv1a64 HEX
 *   n_vocab V
 *   n_prompt P
 *   first_pos F          (optional, default 0: positions before F are not stored)
 *   tokens N t0 .. tN-1
 *   probes M id0 .. idM-1
 *   then for each position i >= F: "pos i argmax A gap G maxabs X",
 *   "top K id v id v ...", "probe v0 .. vM-1"; finally "end". */
#ifndef TEST_FIXTURE_H
#define TEST_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#define FIX_MAX_TOP 64

typedef struct fix_pos {
    int argmax;
    double gap;      /* reference logit of the best minus the second best token */
    double maxabs;   /* largest |logit| of the row */
    int n_top;
    int top_id[FIX_MAX_TOP];
    double top_val[FIX_MAX_TOP];
    double *probe;   /* n_probe values */
} fix_pos;

typedef struct fixture {
    char name[128];
    uint64_t fnv;
    int n_vocab, n_prompt, n_tokens, n_probe;
    int first_pos;   /* pos[i] describes position first_pos + i */
    int32_t *tokens;
    int *probe_id;
    fix_pos *pos;    /* n_tokens - first_pos */
} fixture;

/* 0 on success; else fills err with the file and what was wrong. */
int fixture_load(const char *path, fixture *f, char *err, size_t errlen);
void fixture_free(fixture *f);

/* FNV-1a 64 of a whole file (0 on success). */
int fnv1a64_file(const char *path, uint64_t *out);

#endif
