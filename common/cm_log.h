/* cm_log.h: leveled logging to stderr, one line per record:
 *   2026-11-27T09:10:11.123Z INFO commonsd: message */
#ifndef CM_LOG_H
#define CM_LOG_H

enum cm_log_level { CM_LOG_DEBUG, CM_LOG_INFO, CM_LOG_WARN, CM_LOG_ERROR };

void cm_log_init(const char *progname, enum cm_log_level min_level);
/* Parses "debug|info|warn|error"; returns -1 for anything else. */
int cm_log_level_parse(const char *s);
void cm_log(enum cm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define cm_debug(...) cm_log(CM_LOG_DEBUG, __VA_ARGS__)
#define cm_info(...) cm_log(CM_LOG_INFO, __VA_ARGS__)
#define cm_warn(...) cm_log(CM_LOG_WARN, __VA_ARGS__)
#define cm_error(...) cm_log(CM_LOG_ERROR, __VA_ARGS__)

#endif
