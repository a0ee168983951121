/* procinfo.c: small readers of /proc used to recognise a job's processes
 * (pid reuse guard, zombie check, job attribution by environment). */
#include "agent_internal.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            close(fd);
            return -1;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return (ssize_t)n;
}

int agent_proc_stat(pid_t pid, struct agent_procstat *st)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (read_small(path, buf, sizeof buf) <= 0) return -1;
    /* comm may hold spaces and ')': the fields start after the last ')'. */
    char *p = strrchr(buf, ')'), *open_paren = strchr(buf, '(');
    if (!p || p[1] != ' ' || !open_paren || open_paren > p) return -1;
    snprintf(st->comm, sizeof st->comm, "%.*s", (int)(p - open_paren - 1), open_paren + 1);
    p += 2;
    int ppid = 0, pgrp = 0;
    char state = 0;
    int used = 0;
    if (sscanf(p, "%c %d %d%n", &state, &ppid, &pgrp, &used) != 3) return -1;
    p += used;
    /* Skip fields 6..21 to reach starttime (field 22). */
    for (int f = 6; f <= 21; f++) {
        while (*p == ' ') p++;
        while (*p && *p != ' ') p++;
    }
    char *end;
    unsigned long long start = strtoull(p, &end, 10);
    if (end == p) return -1;
    st->state = state;
    st->ppid = (pid_t)ppid;
    st->pgrp = (pid_t)pgrp;
    st->starttime = start;
    return 0;
}

bool agent_proc_same(pid_t pid, unsigned long long starttime)
{
    struct agent_procstat st;
    if (pid <= 0 || agent_proc_stat(pid, &st) != 0) return false;
    return st.state != 'Z' && st.state != 'X' && st.starttime == starttime;
}

int64_t agent_proc_job_id(pid_t pid, const char *node, int *attempt, int64_t *spawn_id)
{
    *attempt = 0;
    *spawn_id = 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    size_t cap = 256 * 1024;
    char *buf = malloc(cap);
    if (!buf) return -1;
    ssize_t n = read_small(path, buf, cap);
    int64_t id = -1;
    bool node_ok = false;
    for (ssize_t i = 0; n > 0 && i < n; i += (ssize_t)strlen(buf + i) + 1) {
        const char *kv = buf + i;
        if (strncmp(kv, "COMMONS_JOB_ID=", 15) == 0) {
            char *end;
            long long v = strtoll(kv + 15, &end, 10);
            if (end != kv + 15 && *end == '\0' && v >= 0) id = v;
        } else if (strncmp(kv, "COMMONS_JOB_ATTEMPT=", 20) == 0) {
            *attempt = atoi(kv + 20);
        } else if (strncmp(kv, "COMMONS_SPAWN_ID=", 17) == 0) {
            *spawn_id = strtoll(kv + 17, NULL, 10);
        } else if (strncmp(kv, "COMMONS_NODE=", 13) == 0) {
            node_ok = strcmp(kv + 13, node) == 0;
        }
    }
    free(buf);
    return node_ok ? id : -1;
}

void agent_proc_each(int (*fn)(void *, pid_t), void *arg)
{
    DIR *d = opendir("/proc");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        long pid = strtol(e->d_name, NULL, 10);
        if (pid > 0 && fn(arg, (pid_t)pid)) break;
    }
    closedir(d);
}
