/* mpi_report.c: the MPI program of tests/integration/test_mpi.py. Every rank
 * prints one line "rank R of N node NODE host HOST cpus LIST" (NODE: the Commons
 * node its daemon was started on, from COMMONS_NODE; LIST: the CPUs it may run on,
 * from /proc/self/status), then all ranks meet in a barrier. With an argument S,
 * each rank then sleeps S seconds (for the cancel test). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void allowed_cpus(char *out, size_t len)
{
    char line[512];
    FILE *f = fopen("/proc/self/status", "r");
    snprintf(out, len, "?");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "Cpus_allowed_list:", 18) == 0) {
            snprintf(out, len, "%s", line + 18 + strspn(line + 18, " \t"));
            out[strcspn(out, "\n")] = '\0';
        }
    if (f) fclose(f);
}

int main(int argc, char **argv)
{
    int rank, size;
    char host[256] = "?", cpus[256];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    gethostname(host, sizeof host);
    allowed_cpus(cpus, sizeof cpus);
    const char *node = getenv("COMMONS_NODE");
    printf("rank %d of %d node %s host %s cpus %s pid %d\n", rank, size, node ? node : "?", host,
           cpus, (int)getpid());
    fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    if (argc > 1) sleep((unsigned)atoi(argv[1]));
    MPI_Finalize();
    return 0;
}
