/* quotas.h: the quotas library's contract in one include.
 *
 *   quota_policy.h   policy model, load/validate, lookups, dump
 *   quota_diag.h     diagnostics (file:line:col: error: path: message)
 *   quota_units.h    durations ("7d") and sizes ("64G")
 *   quota_share.h    billed usage, decay, Fair Tree fair-share
 *   quota_priority.h multifactor priority
 *   quota_limits.h   limits, budgets and pending reasons
 *   quota_plan.h     EASY backfill planner (per-node CPUs, GPUs, memory)
 *   quota_sim.h      virtual-time simulator core for `commons sim`
 *   quota_swf.h      Standard Workload Format line parser
 *
 * Pure library: no I/O except reading a policy file (and printing diagnostics
 * to a FILE* the caller passes); traces are read by the caller, line by line.
 * A loaded policy is read-only and may be shared between threads until it is
 * freed; planners and simulations are single-threaded objects. */
#ifndef COMMONS_QUOTAS_H
#define COMMONS_QUOTAS_H

#include "quota_diag.h"
#include "quota_limits.h"
#include "quota_plan.h"
#include "quota_policy.h"
#include "quota_priority.h"
#include "quota_share.h"
#include "quota_sim.h"
#include "quota_swf.h"
#include "quota_units.h"

#endif
