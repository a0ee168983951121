/* quota_load_sections.c: billing, usage, priority, qos and citizens sections. */
#include <stdlib.h>
#include <string.h>

#include "quota_load.h"

void qpl_billing(qp *q, yaml_node_t *n, quota_policy *p)
{
    static const char *const keys[] = {"cpu", "gpu", "mem_per_gb", NULL};
    if (!qp_want_map(q, n, "billing", "billing weights cpu, gpu, mem_per_gb"))
        return;
    qp_check_keys(q, n, "billing", keys);
    qp_num(q, n, "billing", "cpu", 0, &p->billing.cpu);
    qp_num(q, n, "billing", "gpu", 0, &p->billing.gpu);
    qp_num(q, n, "billing", "mem_per_gb", 0, &p->billing.mem_per_gb);
    if (p->billing.cpu == 0 && p->billing.gpu == 0 && p->billing.mem_per_gb == 0)
        qp_warn(q, n, "billing", "all billing weights are zero: jobs cost nothing and "
                                 "fair-share never sees any usage");
}

void qpl_usage(qp *q, yaml_node_t *n, quota_policy *p)
{
    static const char *const keys[] = {"decay_half_life", NULL};
    if (!qp_want_map(q, n, "usage", "decay_half_life"))
        return;
    qp_check_keys(q, n, "usage", keys);
    if (qp_duration(q, n, "usage", "decay_half_life", false, &p->decay_half_life) &&
        p->decay_half_life == 0)
        qp_warn(q, qp_get(q, n, "decay_half_life", NULL), "usage.decay_half_life",
                "a half-life of 0 turns decay off: usage is remembered forever");
}

void qpl_priority(qp *q, yaml_node_t *n, quota_policy *p)
{
    static const char *const keys[] = {"weights", "max_age", "favor_small", NULL};
    static const char *const wkeys[] = {"fairshare", "age", "job_size", "qos", NULL};
    if (!qp_want_map(q, n, "priority", "weights, max_age, favor_small"))
        return;
    qp_check_keys(q, n, "priority", keys);
    yaml_node_t *w = qp_get(q, n, "weights", NULL);
    if (w && qp_want_map(q, w, "priority.weights", "fairshare, age, job_size, qos")) {
        qp_check_keys(q, w, "priority.weights", wkeys);
        quota_prio_weights *pw = &p->priority;
        qp_num(q, w, "priority.weights", "fairshare", 0, &pw->fairshare);
        qp_num(q, w, "priority.weights", "age", 0, &pw->age);
        qp_num(q, w, "priority.weights", "job_size", 0, &pw->job_size);
        qp_num(q, w, "priority.weights", "qos", 0, &pw->qos);
        if (pw->fairshare == 0 && pw->age == 0 && pw->job_size == 0 && pw->qos == 0)
            qp_warn(q, w, "priority.weights",
                    "all priority weights are zero: every job gets priority 0 and the "
                    "queue is first come, first served");
    }
    int64_t age;
    if (qp_duration(q, n, "priority", "max_age", false, &age)) {
        if (age == 0)
            qp_error(q, qp_get(q, n, "max_age", NULL), "priority.max_age",
                     "expected a duration > 0 (the age at which the age factor reaches 1)");
        else
            p->priority.max_age = age;
    }
    qp_bool(q, n, "priority", "favor_small", &p->priority.favor_small);
}

/* Pass 1 fills each QOS; pass 2 resolves the preempt lists once all exist. */
static void qos_one(qp *q, yaml_node_t *v, const char *path, quota_qos *o)
{
    static const char *const keys[] = {"priority",    "max_wall",     "usage_factor",
                                       "preemptible", "preempt_mode", "preempt",
                                       "description", NULL};
    o->max_wall = QUOTA_UNLIMITED;
    o->usage_factor = 1.0;
    if (qp_is_null(v))
        return;
    if (!qp_want_map(q, v, path, "a QOS: priority, max_wall, usage_factor, ..."))
        return;
    qp_check_keys(q, v, path, keys);
    qp_int(q, v, path, "priority", 0, false, &o->priority);
    qp_duration(q, v, path, "max_wall", true, &o->max_wall);
    qp_num(q, v, path, "usage_factor", 0, &o->usage_factor);
    qp_bool(q, v, path, "preemptible", &o->preemptible);
    const char *mode;
    if (qp_str(q, v, path, "preempt_mode", &mode)) {
        char p[QP_PATH];
        if (!strcmp(mode, "requeue"))
            o->preempt_mode = QUOTA_PREEMPT_REQUEUE;
        else if (!strcmp(mode, "cancel"))
            o->preempt_mode = QUOTA_PREEMPT_CANCEL;
        else
            qp_error(q, qp_get(q, v, "preempt_mode", NULL), qp_join(p, path, "preempt_mode"),
                     "expected requeue or cancel, got '%s'", mode);
        if (!o->preemptible)
            qp_warn(q, qp_get(q, v, "preempt_mode", NULL), qp_join(p, path, "preempt_mode"),
                    "has no effect: this QOS is not preemptible");
    }
    const char *desc;
    qp_str(q, v, path, "description", &desc);
}

static void qos_preempts(qp *q, yaml_node_t *v, const char *path, quota_policy *p, int self)
{
    char lp[QP_PATH], ip[QP_PATH + 48];
    yaml_node_t *l = qp_get(q, v, "preempt", NULL);
    if (!l)
        return;
    qp_join(lp, path, "preempt");
    if (l->type != YAML_SEQUENCE_NODE) {
        qp_error(q, l, lp, "expected a list of QOS names, got %s", qp_kind(l));
        return;
    }
    size_t n = (size_t)(l->data.sequence.items.top - l->data.sequence.items.start);
    quota_qos *o = &p->qos[self];
    o->preempts = qp_alloc(q, n ? n : 1, sizeof(int));
    if (!o->preempts)
        return;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = qp_node(q, l->data.sequence.items.start[i]);
        snprintf(ip, sizeof ip, "%s[%zu]", lp, i);
        const char *name = qp_text(it);
        if (!name || qp_is_null(it)) {
            qp_error(q, it, ip, "expected a QOS name, got %s", qp_kind(it));
            continue;
        }
        int k = -1;
        for (int j = 0; j < p->nqos; j++)
            if (!strcmp(p->qos[j].name, name))
                k = j;
        if (k < 0) {
            qp_error(q, it, ip, "QOS '%s' is referenced but not defined under qos", name);
            continue;
        }
        if (k == self) {
            qp_error(q, it, ip, "a QOS cannot preempt itself");
            continue;
        }
        if (!p->qos[k].preemptible)
            qp_warn(q, it, ip, "QOS '%s' is not preemptible, so this has no effect", name);
        o->preempts[o->npreempts++] = k;
    }
}

void qpl_qos(qp *q, yaml_node_t *n, yaml_node_t *default_qos, quota_policy *p)
{
    char path[QP_PATH];
    bool ok = n && qp_want_map(q, n, "qos", "QOS levels by name");
    size_t count = ok ? (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start) : 0;
    if (ok)
        qp_check_unique(q, n, "qos", "QOS");
    if (count == 0) {
        /* No QOS section: one implicit level so every job has a QOS. */
        if (n && ok)
            qp_error(q, n, "qos", "expected at least one QOS level");
        p->qos = qp_alloc(q, 1, sizeof *p->qos);
        if (!p->qos)
            return;
        p->qos[0].name = qp_strdup(q, "normal");
        p->qos[0].max_wall = QUOTA_UNLIMITED;
        p->qos[0].usage_factor = 1.0;
        p->nqos = 1;
    } else {
        p->qos = qp_alloc(q, count, sizeof *p->qos);
        if (!p->qos)
            return;
        for (size_t i = 0; i < count; i++) {
            yaml_node_pair_t *pr = &n->data.mapping.pairs.start[i];
            yaml_node_t *k = qp_node(q, pr->key), *v = qp_node(q, pr->value);
            quota_qos *o = &p->qos[p->nqos];
            if (!qp_check_name(q, k, "qos", "a QOS"))
                continue;
            qp_join(path, "qos", qp_text(k));
            o->name = qp_strdup(q, qp_text(k));
            o->line = (int)k->start_mark.line + 1;
            o->column = (int)k->start_mark.column + 1;
            qos_one(q, v, path, o);
            p->nqos++;
        }
        for (int i = 0; i < p->nqos; i++) {
            yaml_node_t *v = qp_get(q, n, p->qos[i].name, NULL);
            qp_join(path, "qos", p->qos[i].name);
            if (v && v->type == YAML_MAPPING_NODE)
                qos_preempts(q, v, path, p, i);
        }
    }
    p->default_qos = -1;
    const char *want = NULL;
    if (default_qos) {
        want = qp_text(default_qos);
        if (!want || qp_is_null(default_qos)) {
            qp_error(q, default_qos, "default_qos", "expected a QOS name, got %s",
                     qp_kind(default_qos));
            want = NULL;
        }
    }
    for (int i = 0; i < p->nqos; i++) {
        if (p->qos[i].priority > p->max_qos_priority)
            p->max_qos_priority = p->qos[i].priority;
        if (want ? !strcmp(p->qos[i].name, want) : !strcmp(p->qos[i].name, "normal"))
            p->default_qos = i;
    }
    if (p->default_qos >= 0)
        return;
    if (want)
        qp_error(q, default_qos, "default_qos", "QOS '%s' is referenced but not defined under qos",
                 want);
    else if (!default_qos && p->nqos == 1)
        p->default_qos = 0;
    else if (!default_qos && p->nqos > 1)
        qp_error(q, n, "default_qos",
                 "missing: with several QOS levels and none named 'normal', default_qos must "
                 "name the QOS of jobs that ask for none");
}

static void tier_one(qp *q, yaml_node_t *v, const char *path, quota_tier *t)
{
    static const char *const keys[] = {"tokens_per_day", "requests_per_minute",
                                       "max_tokens_per_request", "concurrent_requests",
                                       "description", NULL};
    if (!qp_want_map(q, v, path, "a tier: tokens_per_day, requests_per_minute, ..."))
        return;
    qp_check_keys(q, v, path, keys);
    /* Every field is required: a public endpoint must not be unlimited by accident. */
    for (int i = 0; i < 4; i++)
        qp_require(q, v, path, keys[i]);
    qp_int(q, v, path, "tokens_per_day", 0, true, &t->tokens_per_day);
    qp_int(q, v, path, "requests_per_minute", 0, true, &t->requests_per_minute);
    qp_int(q, v, path, "max_tokens_per_request", 1, true, &t->max_tokens_per_request);
    qp_int(q, v, path, "concurrent_requests", 1, true, &t->concurrent_requests);
    const char *desc;
    qp_str(q, v, path, "description", &desc);
}

static int tier_ref(qp *q, yaml_node_t *citizens, const char *key, quota_policy *p)
{
    yaml_node_t *v = qp_get(q, citizens, key, NULL);
    char path[QP_PATH];
    qp_join(path, "citizens", key);
    if (!v || qp_is_null(v))
        return -1;
    const char *name = qp_text(v);
    if (!name) {
        qp_error(q, v, path, "expected a tier name, got %s", qp_kind(v));
        return -1;
    }
    for (int i = 0; i < p->ntiers; i++)
        if (!strcmp(p->tiers[i].name, name))
            return i;
    qp_error(q, v, path, "tier '%s' is referenced but not defined under citizens.tiers", name);
    return -1;
}

void qpl_citizens(qp *q, yaml_node_t *n, quota_policy *p)
{
    static const char *const keys[] = {"tiers", "default_tier", "anonymous_tier", NULL};
    if (!qp_want_map(q, n, "citizens", "tiers, default_tier, anonymous_tier"))
        return;
    qp_check_keys(q, n, "citizens", keys);
    yaml_node_t *t = qp_get(q, n, "tiers", NULL);
    if (t && qp_want_map(q, t, "citizens.tiers", "tiers by name")) {
        qp_check_unique(q, t, "citizens.tiers", "tier");
        size_t count = (size_t)(t->data.mapping.pairs.top - t->data.mapping.pairs.start);
        p->tiers = qp_alloc(q, count ? count : 1, sizeof *p->tiers);
        for (size_t i = 0; p->tiers && i < count; i++) {
            yaml_node_pair_t *pr = &t->data.mapping.pairs.start[i];
            yaml_node_t *k = qp_node(q, pr->key);
            char path[QP_PATH];
            if (!qp_check_name(q, k, "citizens.tiers", "a tier"))
                continue;
            quota_tier *tier = &p->tiers[p->ntiers++];
            tier->name = qp_strdup(q, qp_text(k));
            tier->line = (int)k->start_mark.line + 1;
            tier->column = (int)k->start_mark.column + 1;
            tier_one(q, qp_node(q, pr->value), qp_join(path, "citizens.tiers", tier->name),
                     tier);
        }
    }
    p->default_tier = tier_ref(q, n, "default_tier", p);
    if (p->default_tier < 0 && !qp_get(q, n, "default_tier", NULL) && p->ntiers > 0)
        p->default_tier = 0;
    p->anonymous_tier = tier_ref(q, n, "anonymous_tier", p);
}

void qpl_limits(qp *q, yaml_node_t *n, const char *path, quota_limits *l)
{
    static const char *const keys[] = {"max_running_cpus", "max_running_gpus",
                                       "max_running_memory", "max_running_jobs",
                                       "max_queued_jobs", "max_wall", "budget", NULL};
    static const char *const bkeys[] = {"period", "cpu_hours", "gpu_hours", NULL};
    if (!qp_want_map(q, n, path, "limits: max_running_cpus, max_wall, budget, ..."))
        return;
    qp_check_keys(q, n, path, keys);
    qp_int(q, n, path, "max_running_cpus", 0, true, &l->max_running_cpus);
    qp_int(q, n, path, "max_running_gpus", 0, true, &l->max_running_gpus);
    qp_size(q, n, path, "max_running_memory", true, &l->max_running_mem);
    qp_int(q, n, path, "max_running_jobs", 0, true, &l->max_running_jobs);
    qp_int(q, n, path, "max_queued_jobs", 0, true, &l->max_queued_jobs);
    qp_duration(q, n, path, "max_wall", true, &l->max_wall);
    if (l->max_queued_jobs >= 0 && l->max_running_jobs > l->max_queued_jobs)
        qp_warn(q, qp_get(q, n, "max_queued_jobs", NULL), path,
                "max_queued_jobs (%lld) is below max_running_jobs (%lld): jobs must queue "
                "before they run, so the running limit can never be reached",
                (long long)l->max_queued_jobs, (long long)l->max_running_jobs);
    yaml_node_t *b = qp_get(q, n, "budget", NULL);
    char bp[QP_PATH];
    qp_join(bp, path, "budget");
    if (!b || !qp_want_map(q, b, bp, "budget: period, cpu_hours, gpu_hours"))
        return;
    qp_check_keys(q, b, bp, bkeys);
    qp_num(q, b, bp, "cpu_hours", 0, &l->cpu_hours);
    qp_num(q, b, bp, "gpu_hours", 0, &l->gpu_hours);
    const char *period;
    if (qp_require(q, b, bp, "period") && qp_str(q, b, bp, "period", &period)) {
        char pp[QP_PATH];
        if (!strcmp(period, "day"))
            l->budget_period = QUOTA_PERIOD_DAY;
        else if (!strcmp(period, "week"))
            l->budget_period = QUOTA_PERIOD_WEEK;
        else if (!strcmp(period, "month"))
            l->budget_period = QUOTA_PERIOD_MONTH;
        else
            qp_error(q, qp_get(q, b, "period", NULL), qp_join(pp, bp, "period"),
                     "expected day, week or month, got '%s'", period);
    }
    if (l->cpu_hours < 0 && l->gpu_hours < 0)
        qp_warn(q, b, bp, "budget sets neither cpu_hours nor gpu_hours, so it limits nothing");
}
