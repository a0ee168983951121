/* ledger_records.c: the entries commonsd appends to the ledger: a job's run
 * ended (job_end, job_requeue) and a policy was put in force (policy_change).
 * docs/ledger.md defines each body; keep the two in step. */
#include "cluster.h"
#include "ledger.h"

#include "cm_log.h"
#include "cm_util.h"

/* The institution is the account at depth 2 (root 0, e.g. the nation 1), so
 * with nation -> institution -> department -> group it is the institution;
 * an account at depth 1 is its own institution. */
static const char *institution_of(const quota_policy *p, int a)
{
    while (p->accounts[a].depth > 2 && p->accounts[a].parent >= 0) a = p->accounts[a].parent;
    return p->accounts[a].name;
}

int ledger_record_job(struct cluster *c, struct job *j)
{
    if (!j->start_time) return 0; /* never ran: nothing was used */
    int final = job_state_is_final(j->state);
    int64_t now = cm_now_ms() / 1000;
    int64_t end = final && j->end_time ? j->end_time : now;
    if (end < j->start_time) end = j->start_time; /* the wall clock stepped back */
    int64_t cpus = (int64_t)job_cpus_per_node(j) * j->nalloc, gpus = (int64_t)j->gpus * j->nalloc;
    int64_t mem_mb = j->mem_mb * j->nalloc;
    int a = cluster_job_account(c, j);
    const char *inst = a >= 0 ? institution_of(c->policy, a) : j->account;
    json_t *b = json_pack("{s:I, s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:s, s:i, s:I}", "job",
                          (json_int_t)j->id, "user", j->user, "account", j->account, "institution", inst, "qos",
                          j->qos ? j->qos : "", "nodes", j->nalloc, "cpus", (json_int_t)cpus, "gpus", (json_int_t)gpus,
                          "mem_mb", (json_int_t)mem_mb, "start", (json_int_t)j->start_time, "end", (json_int_t)end,
                          "state", final ? job_state_name(j->state) : "REQUEUED", "attempt", j->requeues,
                          "policy_version", (json_int_t)c->policy_version);
    if (b && c->policy) {
        /* The same billing as cluster_usage_charge: nothing when the account left the policy. */
        double billed = a < 0 ? 0.0
                              : quota_billed(c->policy, cpus, gpus, mem_mb * 1048576LL, (double)(end - j->start_time),
                                             cluster_job_qos(c, j));
        json_object_set_new(b, "billed", json_real(billed));
    }
    int64_t seq = b ? ledger_append(&c->store, now, final ? LEDGER_JOB_END : LEDGER_JOB_REQUEUE, b) : -1;
    json_decref(b);
    if (seq < 0) cm_error("job %lld: no ledger entry written: %s", (long long)j->id, b ? c->store.err : "out of memory");
    return seq < 0 ? -1 : 0;
}

int ledger_record_policy(struct cluster *c, int64_t version, const char *sha256, const char *applied_by,
                         const char *source)
{
    json_t *b = json_pack("{s:I, s:s, s:s, s:s}", "version", (json_int_t)version, "sha256", sha256, "applied_by",
                          applied_by ? applied_by : "", "source", source ? source : "");
    if (!b) {
        snprintf(c->store.err, sizeof c->store.err, "ledger: out of memory");
        return -1;
    }
    int64_t seq = ledger_append(&c->store, cm_now_ms() / 1000, LEDGER_POLICY_CHANGE, b);
    json_decref(b);
    return seq < 0 ? -1 : 0;
}
