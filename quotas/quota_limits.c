/* quota_limits.c: pending and rejection reasons from policy limits (quota_limits.h). */
#include "quota_limits.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const names[QUOTA_REASON_COUNT] = {
    [QUOTA_REASON_NONE] = "None",
    [QUOTA_REASON_ACCOUNT_CPU] = "AccountCPULimit",
    [QUOTA_REASON_ACCOUNT_GPU] = "AccountGPULimit",
    [QUOTA_REASON_ACCOUNT_MEM] = "AccountMemLimit",
    [QUOTA_REASON_ACCOUNT_JOBS] = "AccountJobLimit",
    [QUOTA_REASON_ACCOUNT_QUEUED] = "AccountQueuedJobLimit",
    [QUOTA_REASON_QOS_MAX_WALL] = "QOSMaxWall",
    [QUOTA_REASON_ACCOUNT_MAX_WALL] = "AccountMaxWall",
    [QUOTA_REASON_BUDGET] = "BudgetExhausted",
    [QUOTA_REASON_INVALID_USER] = "InvalidUser",
    [QUOTA_REASON_INVALID_ACCOUNT] = "InvalidAccount",
    [QUOTA_REASON_ACCOUNT_DENIED] = "AccountNotAllowed",
    [QUOTA_REASON_INVALID_QOS] = "InvalidQOS",
};

const char *quota_reason_name(quota_reason r)
{
    return r >= 0 && r < QUOTA_REASON_COUNT ? names[r] : "Unknown";
}

void quota_state_add(const quota_policy *p, quota_state *states, int account,
                     const quota_state *d)
{
    if (!p || !states || !d || account < 0 || account >= p->naccounts)
        return;
    for (int a = account; a >= 0; a = p->accounts[a].parent) {
        quota_state *s = &states[a];
        s->cpus += d->cpus;
        s->gpus += d->gpus;
        s->mem += d->mem;
        s->jobs += d->jobs;
        s->queued += d->queued;
        s->cpu_seconds += d->cpu_seconds;
        s->gpu_seconds += d->gpu_seconds;
    }
}

void quota_budget_charge(const quota_policy *p, quota_state *states, int account,
                         int64_t cpus, int64_t gpus, time_t from, time_t to, time_t now)
{
    if (!p || !states || account < 0 || account >= p->naccounts)
        return;
    if (to > now)
        to = now;
    for (int a = account; a >= 0; a = p->accounts[a].parent) {
        time_t start = quota_period_start(p->accounts[a].limits.budget_period, now);
        time_t lo = from > start ? from : start;
        if (to <= lo)
            continue;
        double secs = (double)(to - lo);
        states[a].cpu_seconds += (double)(cpus > 0 ? cpus : 0) * secs;
        states[a].gpu_seconds += (double)(gpus > 0 ? gpus : 0) * secs;
    }
}

static quota_reason verdict(quota_verdict *v, quota_reason r, int account, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static quota_reason verdict(quota_verdict *v, quota_reason r, int account, const char *fmt, ...)
{
    v->reason = r;
    v->account = account;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->detail, sizeof v->detail, fmt, ap);
    va_end(ap);
    return r;
}

static const char *period_name(quota_period p)
{
    return p == QUOTA_PERIOD_DAY ? "day" : p == QUOTA_PERIOD_WEEK ? "week" : "month";
}

/* Wall-time limits of the QOS and of the account and its ancestors. */
static quota_reason check_wall(const quota_policy *p, const quota_request *req, int qos,
                               quota_verdict *v)
{
    char want[32], max[32];
    int64_t t = req->time_limit;
    quota_format_duration(t > 0 ? t : QUOTA_UNLIMITED, want, sizeof want);
    int64_t qmax = p->qos[qos].max_wall;
    if (qmax >= 0 && (t <= 0 || t > qmax)) {
        quota_format_duration(qmax, max, sizeof max);
        return verdict(v, QUOTA_REASON_QOS_MAX_WALL, -1,
                       "time limit %s exceeds QOS %s's max_wall %s", want, p->qos[qos].name,
                       max);
    }
    for (int a = req->account; a > 0; a = p->accounts[a].parent) {
        int64_t amax = p->accounts[a].limits.max_wall;
        if (amax >= 0 && (t <= 0 || t > amax)) {
            quota_format_duration(amax, max, sizeof max);
            return verdict(v, QUOTA_REASON_ACCOUNT_MAX_WALL, a,
                           "time limit %s exceeds account %s's max_wall %s", want,
                           p->accounts[a].name, max);
        }
    }
    return QUOTA_REASON_NONE;
}

/* Running limits; with states NULL, whether the job alone could ever fit. */
static quota_reason check_running(const quota_policy *p, const quota_state *states,
                                  const quota_request *req, quota_verdict *v)
{
    static const quota_state zero;
    for (int a = req->account; a > 0; a = p->accounts[a].parent) {
        const quota_limits *l = &p->accounts[a].limits;
        const quota_state *s = states ? &states[a] : &zero;
        const char *n = p->accounts[a].name;
        const char *now = states ? "runs" : "may run at most";
        if (l->max_running_cpus >= 0 && s->cpus + req->cpus > l->max_running_cpus)
            return verdict(v, QUOTA_REASON_ACCOUNT_CPU, a,
                           "account %s %s %lld of max %lld CPUs; job asks %lld", n, now,
                           (long long)s->cpus, (long long)l->max_running_cpus,
                           (long long)req->cpus);
        if (l->max_running_gpus >= 0 && s->gpus + req->gpus > l->max_running_gpus)
            return verdict(v, QUOTA_REASON_ACCOUNT_GPU, a,
                           "account %s %s %lld of max %lld GPUs; job asks %lld", n, now,
                           (long long)s->gpus, (long long)l->max_running_gpus,
                           (long long)req->gpus);
        if (l->max_running_mem >= 0 && s->mem + req->mem > l->max_running_mem) {
            char used[32], max[32], ask[32];
            quota_format_size(s->mem, used, sizeof used);
            quota_format_size(l->max_running_mem, max, sizeof max);
            quota_format_size(req->mem, ask, sizeof ask);
            return verdict(v, QUOTA_REASON_ACCOUNT_MEM, a,
                           "account %s %s %s of max %s memory; job asks %s", n, now, used, max,
                           ask);
        }
        if (l->max_running_jobs >= 0 && s->jobs + 1 > l->max_running_jobs)
            return verdict(v, QUOTA_REASON_ACCOUNT_JOBS, a,
                           "account %s %s %lld of max %lld jobs", n, now, (long long)s->jobs,
                           (long long)l->max_running_jobs);
    }
    return QUOTA_REASON_NONE;
}

/* One budget: blocks when the job could push usage past it. */
static bool over_budget(double budget_hours, double used_s, int64_t units, int64_t t)
{
    if (budget_hours < 0 || units <= 0)
        return false;
    double need = t > 0 ? (double)units * (double)t : 0.0;
    double budget = budget_hours * 3600.0;
    return used_s + need > budget || used_s >= budget;
}

static quota_reason check_budget(const quota_policy *p, const quota_state *states,
                                 const quota_request *req, quota_verdict *v)
{
    static const quota_state zero;
    double t = req->time_limit > 0 ? (double)req->time_limit : 0.0;
    for (int a = req->account; a > 0; a = p->accounts[a].parent) {
        const quota_limits *l = &p->accounts[a].limits;
        const quota_state *s = states ? &states[a] : &zero;
        const char *n = p->accounts[a].name, *per = period_name(l->budget_period);
        if (over_budget(l->cpu_hours, s->cpu_seconds, req->cpus, req->time_limit))
            return verdict(v, QUOTA_REASON_BUDGET, a,
                           "account %s has used %.1f of its %.1f CPU-hours this %s; job may "
                           "use %.1f",
                           n, s->cpu_seconds / 3600.0, l->cpu_hours, per,
                           (double)req->cpus * t / 3600.0);
        if (over_budget(l->gpu_hours, s->gpu_seconds, req->gpus, req->time_limit))
            return verdict(v, QUOTA_REASON_BUDGET, a,
                           "account %s has used %.1f of its %.1f GPU-hours this %s; job may "
                           "use %.1f",
                           n, s->gpu_seconds / 3600.0, l->gpu_hours, per,
                           (double)req->gpus * t / 3600.0);
    }
    return QUOTA_REASON_NONE;
}

static bool bad_account(const quota_policy *p, int a)
{
    return a <= 0 || a >= p->naccounts || p->accounts[a].nchildren > 0;
}

quota_reason quota_check_start(const quota_policy *p, const quota_state *states,
                               const quota_request *req, quota_verdict *v)
{
    quota_verdict scratch;
    if (!v)
        v = &scratch;
    if (!p || !states || !req || bad_account(p, req->account))
        return verdict(v, QUOTA_REASON_INVALID_ACCOUNT, -1, "no such leaf account");
    int qos = req->qos < 0 ? p->default_qos : req->qos;
    if (qos < 0 || qos >= p->nqos)
        return verdict(v, QUOTA_REASON_INVALID_QOS, -1, "no such QOS (index %d)", req->qos);
    quota_reason r;
    if ((r = check_wall(p, req, qos, v)) || (r = check_running(p, states, req, v)) ||
        (r = check_budget(p, states, req, v)))
        return r;
    return verdict(v, QUOTA_REASON_NONE, -1, "no limit applies");
}

quota_reason quota_check_submit(const quota_policy *p, const quota_state *states, int user,
                                const quota_request *req, quota_verdict *v)
{
    quota_verdict scratch;
    if (!v)
        v = &scratch;
    if (!p || !req || user < 0 || user >= p->nusers)
        return verdict(v, QUOTA_REASON_INVALID_USER, -1, "user is not in the policy");
    const quota_user *u = &p->users[user];
    if (bad_account(p, req->account))
        return verdict(v, QUOTA_REASON_INVALID_ACCOUNT, -1,
                       "no such account, or it has sub-accounts (jobs go to leaf accounts)");
    if (!quota_user_may_use(p, user, req->account))
        return verdict(v, QUOTA_REASON_ACCOUNT_DENIED, req->account,
                       "user %s may not charge account %s", u->name,
                       p->accounts[req->account].name);
    int qos = req->qos < 0 ? p->default_qos : req->qos;
    if (qos < 0 || qos >= p->nqos)
        return verdict(v, QUOTA_REASON_INVALID_QOS, -1, "no such QOS (index %d)", req->qos);
    quota_reason r;
    if ((r = check_wall(p, req, qos, v)) || (r = check_running(p, NULL, req, v)) ||
        (r = check_budget(p, NULL, req, v)))
        return r;
    for (int a = req->account; states && a > 0; a = p->accounts[a].parent) {
        const quota_limits *l = &p->accounts[a].limits;
        if (l->max_queued_jobs >= 0 && states[a].queued + 1 > l->max_queued_jobs)
            return verdict(v, QUOTA_REASON_ACCOUNT_QUEUED, a,
                           "account %s has %lld of max %lld jobs queued",
                           p->accounts[a].name, (long long)states[a].queued,
                           (long long)l->max_queued_jobs);
    }
    return verdict(v, QUOTA_REASON_NONE, -1, "accepted");
}

time_t quota_period_start(quota_period period, time_t now)
{
    struct tm tm;
    if (!gmtime_r(&now, &tm))
        return now;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    if (period == QUOTA_PERIOD_WEEK)
        tm.tm_mday -= (tm.tm_wday + 6) % 7; /* back to Monday; timegm normalises */
    else if (period == QUOTA_PERIOD_MONTH)
        tm.tm_mday = 1;
    return timegm(&tm);
}
