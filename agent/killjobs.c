/* killjobs.c: `commons-agent --kill-jobs`: end every job an agent's state dir
 * knows, with no commonsd involved (a node taken out of service in a hurry,
 * test clean-up). Jobs outlive their agent by design, so this is the way to
 * end them when no agent will be told to. */
#include "agent.h"
#include "cm_log.h"
#include "cm_util.h"

#include <stdio.h>
#include <unistd.h>

int agent_kill_jobs(const struct agent_config *cfg)
{
    struct agent_runner_opts o = {.state_dir = cfg->state_dir, .node = cfg->name,
                                  .kill_grace_ms = cfg->kill_grace_ms,
                                  .containment = cfg->containment, .lock_wait_ms = 5000};
    agent_runner *r;
    char err[512];
    if (agent_runner_open(&o, &r, err, sizeof err) != 0) {
        cm_error("%s", err);
        return 1;
    }
    json_t *running = agent_runner_running(r);
    size_t i;
    json_t *p;
    json_array_foreach(running, i, p)
        agent_runner_kill(r, json_integer_value(json_array_get(p, 0)),
                          (int)json_integer_value(json_array_get(p, 1)), "node_fail");
    json_decref(running);
    int n = agent_runner_active(r);
    /* The grace, then the longest a tree may take to drain, then a margin. */
    int64_t until = cm_mono_ms() + cfg->kill_grace_ms + 12000;
    while (agent_runner_active(r) > 0 && cm_mono_ms() < until) {
        int next = agent_runner_tick(r);
        usleep((useconds_t)(next < 20 ? next : 20) * 1000);
    }
    int left = agent_runner_active(r);
    agent_runner_close(r);
    if (left) {
        cm_error("%d of %d job(s) did not end", left, n);
        return 1;
    }
    cm_info("%d job(s) ended; their ends are reported by the next agent on %s", n,
            cfg->state_dir);
    return 0;
}
