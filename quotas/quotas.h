/* quotas.h: the quotas library's contract in one include.
 *
 *   quota_policy.h   policy model, load/validate, lookups, dump
 *   quota_diag.h     diagnostics (file:line:col: error: path: message)
 *   quota_units.h    durations ("7d") and sizes ("64G")
 *   quota_share.h    billed usage, decay, Fair Tree fair-share
 *   quota_priority.h multifactor priority
 *   quota_limits.h   limits, budgets and pending reasons
 *
 * Pure library: no I/O except reading a policy file (and printing diagnostics
 * to a FILE* the caller passes). Not thread-safe for a policy being freed;
 * a loaded policy is read-only and may be shared between threads. */
#ifndef COMMONS_QUOTAS_H
#define COMMONS_QUOTAS_H

#include "quota_diag.h"
#include "quota_limits.h"
#include "quota_policy.h"
#include "quota_priority.h"
#include "quota_share.h"
#include "quota_units.h"

#endif
