/* quota_swf.c: parsing one Standard Workload Format line (quota_swf.h). */
#include "quota_swf.h"

#include <string.h>

#include "quota_sim.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define SWF_FIELDS 18

int quota_swf_parse_line(const char *line, quota_swf_job *job, char *err, size_t errlen)
{
    const char *s = line;
    while (*s && isspace((unsigned char)*s))
        s++;
    if (!*s || *s == ';')
        return 0;
    double v[SWF_FIELDS];
    for (int i = 0; i < SWF_FIELDS; i++) {
        while (*s && isspace((unsigned char)*s))
            s++;
        if (!*s) {
            snprintf(err, errlen, "only %d of the %d SWF fields", i, SWF_FIELDS);
            return -1;
        }
        char *e;
        errno = 0;
        v[i] = strtod(s, &e);
        if (e == s || errno || !isfinite(v[i]) || fabs(v[i]) > 9e15 ||
            (*e && !isspace((unsigned char)*e))) {
            snprintf(err, errlen, "field %d is not a number", i + 1);
            return -1;
        }
        s = e;
    }
    while (*s && isspace((unsigned char)*s))
        s++;
    if (*s) {
        snprintf(err, errlen, "more than %d fields", SWF_FIELDS);
        return -1;
    }
    int64_t *ints[] = {&job->id,         &job->submit, &job->wait,   &job->runtime,
                       &job->procs,      NULL,         NULL,         &job->req_procs,
                       &job->req_time,   &job->req_mem_kb, &job->status, &job->user,
                       &job->group,      &job->executable, &job->queue, &job->partition,
                       &job->preceding,  &job->think};
    for (int i = 0; i < SWF_FIELDS; i++)
        if (ints[i])
            *ints[i] = llround(v[i]);
    job->avg_cpu = v[5];
    job->used_mem_kb = v[6];
    return 1;
}

int quota_swf_to_sim(const quota_swf_job *s, int64_t cpus_per_node, int account, int qos,
                     quota_sim_job *out)
{
    int64_t procs = s->procs > 0 ? s->procs : s->req_procs;
    if (s->runtime < 0 || procs < 1 || cpus_per_node < 1 || s->submit < 0)
        return -1;
    memset(out, 0, sizeof *out);
    out->id = s->id;
    out->submit = s->submit;
    out->runtime = s->runtime;
    out->time_limit = s->req_time > 0 ? s->req_time : s->runtime;
    out->account = account;
    out->qos = qos;
    out->nodes = (procs + cpus_per_node - 1) / cpus_per_node;
    out->per_node.cpus = (procs + out->nodes - 1) / out->nodes;
    out->start = out->end = -1;
    return 0;
}
