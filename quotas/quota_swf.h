/* quota_swf.h: one line of the Standard Workload Format (Feitelson's Parallel
 * Workloads Archive), the job traces `commons sim` replays.
 *
 * A trace is text: header lines start with ';', each other line is one job of
 * 18 whitespace-separated numbers, -1 meaning unknown. Reading files (and
 * un-gzipping them) is the caller's job; this only parses a line.
 */
#ifndef COMMONS_QUOTA_SWF_H
#define COMMONS_QUOTA_SWF_H

#include <stddef.h>
#include <stdint.h>

typedef struct quota_swf_job {
    int64_t id;           /*  1 job number */
    int64_t submit;       /*  2 submit time, seconds */
    int64_t wait;         /*  3 wait time in the original system */
    int64_t runtime;      /*  4 run time */
    int64_t procs;        /*  5 allocated processors */
    double avg_cpu;       /*  6 average CPU time used */
    double used_mem_kb;   /*  7 used memory per processor, KB */
    int64_t req_procs;    /*  8 requested processors */
    int64_t req_time;     /*  9 requested time (the limit) */
    int64_t req_mem_kb;   /* 10 requested memory per processor, KB */
    int64_t status;       /* 11 1 completed, 0 failed, 5 cancelled, ... */
    int64_t user;         /* 12 user id */
    int64_t group;        /* 13 group id */
    int64_t executable;   /* 14 */
    int64_t queue;        /* 15 */
    int64_t partition;    /* 16 */
    int64_t preceding;    /* 17 preceding job */
    int64_t think;        /* 18 think time after the preceding job */
} quota_swf_job;

struct quota_sim_job;

/* A replayable job from an SWF record, for nodes of cpus_per_node CPUs: its
 * processors (allocated, or requested when unknown) packed onto
 * ceil(procs / cpus_per_node) nodes with the same CPUs each; time limit =
 * requested time (the run time when unknown); memory and GPUs not modelled.
 * Returns 0, or -1 when the record cannot be replayed (no run time, no
 * processors). account and qos are the caller's mapping (e.g. from s->group). */
int quota_swf_to_sim(const quota_swf_job *s, int64_t cpus_per_node, int account, int qos,
                     struct quota_sim_job *out);

/* Returns 1 and fills *job for a job line, 0 for a comment or blank line, -1
 * for a malformed line (err says which field and why). */
int quota_swf_parse_line(const char *line, quota_swf_job *job, char *err, size_t errlen);

#endif
