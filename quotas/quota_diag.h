/* quota_diag.h: diagnostics collected while loading a policy.
 *
 * Loading never stops at the first problem: every error and warning is appended
 * here with its position (1-based line and column in the policy text), the field
 * path (e.g. "accounts.nation.children.uni-a.shares") and a message saying what
 * was expected. quota_diags_print() writes them the way a compiler does:
 *
 *   policy.yaml:12:14: error: accounts.nation.children.uni-a.shares: expected a positive integer, got '-3'
 */
#ifndef COMMONS_QUOTA_DIAG_H
#define COMMONS_QUOTA_DIAG_H

#include <stddef.h>
#include <stdio.h>

typedef enum quota_diag_level {
    QUOTA_DIAG_ERROR = 0,
    QUOTA_DIAG_WARNING = 1
} quota_diag_level;

typedef struct quota_diag {
    quota_diag_level level;
    int line;       /* 1-based; 0 when the problem has no position (e.g. unreadable file) */
    int column;     /* 1-based; 0 when unknown */
    char *path;     /* field path, "" for the whole document */
    char *message;  /* what is wrong and what was expected */
} quota_diag;

typedef struct quota_diags {
    char *source;   /* file name, or the name given to quota_policy_load_string() */
    quota_diag *items;
    size_t count, cap;
    size_t errors, warnings;
} quota_diags;

/* A zeroed quota_diags is valid and empty; init just does that. */
void quota_diags_init(quota_diags *d);
void quota_diags_free(quota_diags *d);

/* Appends one diagnostic (printf-style message). Out of memory drops the
 * message text but still counts the error, so a policy is never wrongly valid. */
void quota_diag_add(quota_diags *d, quota_diag_level level, int line, int column,
                    const char *path, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* "SOURCE:LINE:COL: error: PATH: MESSAGE" (position and path omitted when unknown).
 * Returns the length snprintf would have written. */
int quota_diag_format(const quota_diags *d, const quota_diag *item, char *buf, size_t len);

/* Prints every diagnostic, one per line, in the order found, then nothing else. */
void quota_diags_print(const quota_diags *d, FILE *out);

#endif
