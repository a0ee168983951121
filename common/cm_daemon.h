/* cm_daemon.h: detaching a daemon (commonsd, commons-gateway, commons-agent) from its terminal. */
#ifndef CM_DAEMON_H
#define CM_DAEMON_H

#include <stddef.h>

/* Goes into the background (daemon(3), keeping the working directory so relative paths stay
 * valid), appends standard error (the log) to dir/log_name (created 0600 if missing; left as
 * it was if the file cannot be opened) and points standard input and output at /dev/null.
 * Returns 0 in the detached process; -1 with err filled ("cannot daemonize: ...") when it
 * could not detach, the caller still running in the foreground. */
int cm_daemonize(const char *dir, const char *log_name, char *err, size_t errlen);

/* Writes this process's PID and a newline to dir/name (atomically, mode 0644) and
 * the file's path into path, for the caller to unlink when it stops. A failure is
 * logged as a warning and returns -1: the daemon runs on without the file. */
int cm_pid_file_write(const char *dir, const char *name, char *path, size_t pathlen);

#endif
