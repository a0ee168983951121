/* dist.h: distributed inference over MPI (Open MPI) — tensor and pipeline parallelism.
 *
 * One process per rank, started by mpirun. Every rank loads its own slice of the model
 * (infer_model_load_shard, model.h) and joins the layer graph through hooks
 * (model_internal.h), so infer_eval and infer_batch_step run distributed unchanged as
 * long as every rank calls them with the same arguments:
 *   tensor parallel (INFER_SHARD_TP, --tp N): each rank computes its heads and FFN
 *     columns; the WO and W_down products are summed with MPI_Allreduce (2 per layer,
 *     n x n_embd floats each). Each rank computes the logits of its share of the
 *     vocabulary; rank 0 gathers them (MPI_Send/Recv of rows x V/N floats).
 *   pipeline parallel (INFER_SHARD_PP, --pp N): rank r is stage r and holds a
 *     contiguous range of layers; x goes from stage to stage (MPI_Send/Isend) and the
 *     last stage sends the logits to rank 0. A batched step is cut into micro-batches
 *     (groups of sequences) so stage r works on one while stage r+1 works on the
 *     previous one.
 *
 * Serving: rank 0 runs commons-serve; the others call infer_dist_worker_run. Each
 * infer_dist_batch_step of rank 0 first sends the step (sequences, tokens, block ids)
 * to the workers, which evaluate it on paged KV pools of the same geometry, using rank
 * 0's block ids. infer_dist_stop ends the workers' loops.
 *
 * With d == NULL (a single process) infer_dist_batch_step / _logits are exactly
 * infer_batch_step / infer_batch_logits. Built without MPI, infer_dist_init fails
 * with "built without MPI" and everything else only ever sees d == NULL.
 *
 * Threads: MPI is initialized with MPI_THREAD_SERIALIZED; calls on one infer_dist
 * must not overlap (commons-serve: the engine thread steps, the main thread stops
 * after joining it). A failure that leaves ranks out of step (anything but a rejected
 * step) aborts the whole job (MPI_Abort): mpirun then ends every rank. */
#ifndef INFER_DIST_H
#define INFER_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct infer_dist infer_dist;

/* Whether this build has MPI. */
bool infer_dist_available(void);

/* Initialize MPI and check the job has exactly n ranks (kind: INFER_SHARD_TP or _PP).
 * Errors: no MPI in this build, a job of another size (started without mpirun?). */
int infer_dist_init(int *argc, char ***argv, int kind, int n, infer_dist **out,
                    char *err, size_t errlen);
/* Finalize MPI (the model must have been freed). NULL is fine. */
void infer_dist_free(infer_dist *d);
int infer_dist_rank(const infer_dist *d);
int infer_dist_size(const infer_dist *d);
int infer_dist_kind(const infer_dist *d);

/* Load this rank's slice and attach it to the job. Every rank calls it; it fails on
 * all ranks when it fails on one (the others say which rank). */
int infer_dist_load(infer_dist *d, const char *path, kern_ctx *kc, infer_model **out,
                    char *err, size_t errlen);
/* The job a model belongs to (NULL: loaded alone). */
infer_dist *infer_model_dist(const infer_model *m);

/* Every rank passes its *v and takes the smallest of them (e.g. the KV blocks that fit
 * every rank's budget). */
int infer_dist_min_int(infer_dist *d, int *v);

/* Rank 0: one step (batch.h), evaluated by all ranks. Pipeline: logits come from
 * infer_dist_batch_logits (rank 0 only), not infer_batch_logits. */
int infer_dist_batch_step(infer_dist *d, infer_batch *b, const infer_batch_seq *seqs,
                          int n_seqs, char *err, size_t errlen);
const float *infer_dist_batch_logits(const infer_dist *d, const infer_batch *b, int *n_rows);
/* Ranks > 0: evaluate rank 0's steps on b until infer_dist_stop. Returns 0 then. */
int infer_dist_worker_run(infer_dist *d, infer_batch *b, char *err, size_t errlen);
/* Rank 0: end the workers' loops. */
void infer_dist_stop(infer_dist *d);
/* End the whole job now (every rank), exit status code. */
void infer_dist_abort(infer_dist *d, int code);

/* Pipeline: micro-batches per step (default: the number of stages). */
void infer_dist_set_micro_batches(infer_dist *d, int n);

/* Time this rank spent inside MPI calls that move data (not waiting for work), and
 * their number and payload bytes, since the start. */
typedef struct infer_dist_stats {
    double comm_s;
    uint64_t calls, bytes;
} infer_dist_stats;
infer_dist_stats infer_dist_get_stats(const infer_dist *d);

#ifdef __cplusplus
}
#endif
#endif
