/* fixture.h: the temporary directories of the agent's unit tests (one
 * Check fixture shared by test_runner.c and test_placement.c): g_dir holds
 * state/ (the runner's state dir) and work/ (jobs' workdir, world-writable
 * so that jobs of other accounts can write their output); g_node is unique
 * per test process, g_user is the current account. */
#ifndef AGENT_TEST_FIXTURE_H
#define AGENT_TEST_FIXTURE_H

#include <check.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
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

#endif
