/* cm_daemon.c: detaching a daemon from its terminal (see cm_daemon.h). */
#include "cm_daemon.h"
#include "cm_log.h"
#include "cm_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cm_daemonize(const char *dir, const char *log_name, char *err, size_t errlen)
{
    char logpath[4200];
    snprintf(logpath, sizeof logpath, "%s/%s", dir, log_name);
    if (daemon(1, 1) != 0) {
        snprintf(err, errlen, "cannot daemonize: %s", strerror(errno));
        return -1;
    }
    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
        dup2(fd, 2);
        close(fd);
    }
    int nul = open("/dev/null", O_RDWR);
    if (nul >= 0) {
        dup2(nul, 0);
        dup2(nul, 1);
        close(nul);
    }
    return 0;
}

int cm_pid_file_write(const char *dir, const char *name, char *path, size_t pathlen)
{
    char text[32], err[512];
    snprintf(path, pathlen, "%s/%s", dir, name);
    int n = snprintf(text, sizeof text, "%d\n", (int)getpid());
    if (cm_write_file_atomic(path, text, (size_t)n, 0644, err, sizeof err) != 0) {
        cm_warn("%s", err);
        return -1;
    }
    return 0;
}
