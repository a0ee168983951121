/* node.c: this node's resources as the OS reports them (a plain count here;
 * hwloc topology and placement come with the agent's own issue). */
#include "agent.h"

#include <sched.h>
#include <stdio.h>
#include <unistd.h>

/* The CPUs this process may run on (a container or cpuset may allow fewer
 * than are online), else the online count. */
int agent_detect_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int64_t agent_detect_memory_mb(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f) return 0;
    char line[256];
    long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemTotal: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb / 1024;
}
