/* quota_load.h (private): the section parsers behind quota_policy_load_*().
 *
 * Each parser reads one top-level section of the document into the policy,
 * reporting every problem through the qp context and falling back to defaults
 * so that later sections are still checked. Order matters only for
 * cross-references: qos before accounts (none needed), accounts before users.
 */
#ifndef COMMONS_QUOTA_LOAD_H
#define COMMONS_QUOTA_LOAD_H

#include "quota_policy.h"
#include "quota_yaml.h"

/* calloc/strdup that report "out of memory" as an error (so the policy is
 * rejected) instead of returning silently. */
void *qp_alloc(qp *q, size_t n, size_t size);
char *qp_strdup(qp *q, const char *s);

void qpl_billing(qp *q, yaml_node_t *n, quota_policy *p);
void qpl_usage(qp *q, yaml_node_t *n, quota_policy *p);
void qpl_priority(qp *q, yaml_node_t *n, quota_policy *p);
void qpl_qos(qp *q, yaml_node_t *n, yaml_node_t *default_qos, quota_policy *p);
void qpl_citizens(qp *q, yaml_node_t *n, quota_policy *p);
void qpl_limits(qp *q, yaml_node_t *n, const char *path, quota_limits *l);
/* Builds policy->accounts (root + pre-order tree). Returns each account's
 * field path (indexed like policy->accounts, entries may be NULL) for later
 * diagnostics; free with qpl_free_paths. */
char **qpl_accounts(qp *q, yaml_node_t *n, yaml_node_t *where, quota_policy *p);
void qpl_free_paths(char **paths, int n);
void qpl_users(qp *q, yaml_node_t *n, quota_policy *p);
/* Warnings that need the whole policy (unused accounts, share ratios...). */
void qpl_warnings(qp *q, char **paths, const quota_policy *p);

/* Sorted name indices for the lookup functions. */
int quota_policy_index(quota_policy *p);

#endif
