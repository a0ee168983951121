/* quota_swf.c: parsing one Standard Workload Format line (quota_swf.h). */
#include "quota_swf.h"

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
