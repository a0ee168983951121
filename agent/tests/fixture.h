/* fixture.h: the temporary directories of the agent's unit tests (one
 * Check fixture shared by test_runner.c and test_placement.c): g_dir holds
 * state/ (the runner's state dir) and work/ (jobs' workdir, world-writable
 * so that jobs of other accounts can write their output); g_node is unique
 * per test process, g_user is the current account; fixture_main runs a suite
 * with the containment its argument names. */
#ifndef AGENT_TEST_FIXTURE_H
#define AGENT_TEST_FIXTURE_H

#include "agent_internal.h"
#include "cm_log.h"

#include <check.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[256], g_state[300], g_work[300], g_node[64];
static char g_user[64];

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/agent-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    chmod(g_dir, 0711);
    snprintf(g_state, sizeof g_state, "%s/state", g_dir);
    snprintf(g_work, sizeof g_work, "%s/work", g_dir);
    ck_assert_int_eq(mkdir(g_work, 0777), 0);
    chmod(g_work, 01777);
    snprintf(g_node, sizeof g_node, "t%d", (int)getpid());
    struct passwd *pw = getpwuid(geteuid());
    ck_assert_ptr_nonnull(pw);
    snprintf(g_user, sizeof g_user, "%s", pw->pw_name);
}

static void teardown(void)
{
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", g_dir);
}

/* main() of a suite that runs with one containment, named by its only
 * argument ("subreaper" or "cgroup"; "cgroup" exits 77, skipped, where this
 * machine has no writable cgroup v2 with cgroup.kill). */
static inline int fixture_main(int argc, char **argv, const char *name, Suite *(*suite)(void),
                               enum agent_containment *contain)
{
    if (argc != 2 || (strcmp(argv[1], "subreaper") && strcmp(argv[1], "cgroup"))) {
        fprintf(stderr, "usage: %s subreaper|cgroup\n", argv[0]);
        return 2;
    }
    cm_log_init(name, CM_LOG_ERROR);
    if (strcmp(argv[1], "cgroup") == 0) {
        char node[64];
        snprintf(node, sizeof node, "probe%d", (int)getpid());
        if (!agent_contain_cgroup_available(node)) {
            fprintf(stderr, "no writable cgroup v2 with cgroup.kill here: skipped\n");
            return 77;
        }
        *contain = AGENT_CONTAIN_CGROUP;
    }
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

#endif
