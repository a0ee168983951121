/* quota_priority.c: the multifactor priority (quota_priority.h). */
#include "quota_priority.h"


static double clamp01(double x)
{
    if (!(x > 0)) /* also NaN */
        return 0.0;
    return x > 1.0 ? 1.0 : x;
}

quota_prio quota_priority(const quota_policy *p, double fairshare_factor, double age_seconds,
                          int64_t job_cpus, int64_t cluster_cpus, int qos)
{
    quota_prio r = {0};
    if (!p)
        return r;
    const quota_prio_weights *w = &p->priority;
    if (qos < 0 || qos >= p->nqos)
        qos = p->default_qos;
    r.factor.fairshare = clamp01(fairshare_factor);
    r.factor.age = w->max_age > 0 ? clamp01(age_seconds / (double)w->max_age) : 0.0;
    if (cluster_cpus > 0) {
        double size = clamp01((double)job_cpus / (double)cluster_cpus);
        r.factor.size = w->favor_small ? 1.0 - size : size;
    }
    if (qos >= 0 && p->max_qos_priority > 0)
        r.factor.qos = clamp01((double)p->qos[qos].priority / (double)p->max_qos_priority);
    r.weighted.fairshare = w->fairshare * r.factor.fairshare;
    r.weighted.age = w->age * r.factor.age;
    r.weighted.size = w->job_size * r.factor.size;
    r.weighted.qos = w->qos * r.factor.qos;
    r.total = r.weighted.fairshare + r.weighted.age + r.weighted.size + r.weighted.qos;
    return r;
}
