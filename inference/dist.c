/* dist.c: the part of dist.h every build has — the single-process path of the batched
 * step and, in a build without MPI, the refusals (dist_mpi.c has the rest). */
#include <stdio.h>

#include "dist.h"
#include "model_internal.h"

infer_dist *infer_model_dist(const infer_model *m)
{
    return m ? m->dist_owner : NULL;
}

#ifndef COMMONS_HAVE_MPI
/* No MPI: infer_dist_init always fails, so no other function ever sees a non-NULL d. */

bool infer_dist_available(void) { return false; }

int infer_dist_init(int *argc, char ***argv, int kind, int n, infer_dist **out,
                    char *err, size_t errlen)
{
    (void)argc; (void)argv;
    *out = NULL;
    snprintf(err, errlen, "%s %d: this program was built without MPI (install Open MPI's "
             "development files, libopenmpi-dev, and rebuild)",
             kind == INFER_SHARD_PP ? "--pp" : "--tp", n);
    return INFER_EUNSUPPORTED;
}

void infer_dist_free(infer_dist *d) { (void)d; }
int infer_dist_rank(const infer_dist *d) { (void)d; return 0; }
int infer_dist_size(const infer_dist *d) { (void)d; return 1; }
int infer_dist_kind(const infer_dist *d) { (void)d; return INFER_SHARD_NONE; }

int infer_dist_load(infer_dist *d, const char *path, kern_ctx *kc, infer_model **out,
                    char *err, size_t errlen)
{
    (void)d;
    return infer_model_load(path, kc, NULL, NULL, out, err, errlen);
}

int infer_dist_min_int(infer_dist *d, int *v) { (void)d; (void)v; return INFER_OK; }

int infer_dist_batch_step(infer_dist *d, infer_batch *b, const infer_batch_seq *seqs,
                          int n_seqs, char *err, size_t errlen)
{
    (void)d;
    return infer_batch_step(b, seqs, n_seqs, err, errlen);
}

const float *infer_dist_batch_logits(const infer_dist *d, const infer_batch *b, int *n_rows)
{
    (void)d;
    return infer_batch_logits(b, n_rows);
}

int infer_dist_worker_run(infer_dist *d, infer_batch *b, char *err, size_t errlen)
{
    (void)d; (void)b;
    snprintf(err, errlen, "built without MPI: there are no workers");
    return INFER_EUNSUPPORTED;
}

void infer_dist_stop(infer_dist *d) { (void)d; }
void infer_dist_abort(infer_dist *d, int code) { (void)d; (void)code; }
void infer_dist_set_micro_batches(infer_dist *d, int n) { (void)d; (void)n; }
infer_dist_stats infer_dist_get_stats(const infer_dist *d)
{
    (void)d;
    return (infer_dist_stats){ 0 };
}
#endif
