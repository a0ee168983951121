/* commons-rsh: Open MPI's plm_rsh_agent inside a Commons job, in place of
 * ssh. mpirun calls it as `commons-rsh HOST COMMAND...`; it asks commonsd to
 * run COMMAND (joined with spaces and run by /bin/sh -c, as ssh's remote
 * shell would) on node HOST of the same job (`job.spawn`, authenticated by
 * the job's COMMONS_STEP_KEY), then polls `job.spawn_wait` every 150 ms and
 * exits with the remote exit status (docs/protocol.md, "Spawning on the
 * job's other nodes"; docs/agent.md, "MPI jobs"). Through a restart of
 * commonsd it keeps asking: first commonsd cannot be reached, then it does not
 * know the spawn until the node's agent has reported it again (scheduler/spawn.c
 * adopts it); both for at most OUTAGE_MAX_MS.
 *
 * Exit status: the remote command's (128 + signal when it was killed), 255
 * when it could not be started or its status is unknown (as ssh), 2 for bad
 * usage or a missing job environment. */
#include "cm_rpc.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POLL_MS 150
#define CALL_TIMEOUT_MS 5000
#define OUTAGE_MAX_MS 60000 /* keep asking through a commonsd restart this long */

static const char *need(const char *name)
{
    const char *v = getenv(name);
    if (!v || !v[0]) {
        fprintf(stderr, "commons-rsh: %s is not set: commons-rsh runs inside a Commons job "
                "(the agent sets it)\n", name);
        exit(2);
    }
    return v;
}

static long long parse_ll(const char *name, const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0) {
        fprintf(stderr, "commons-rsh: %s=\"%s\": expected a non-negative integer\n", name, s);
        exit(2);
    }
    return v;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* One request; the reply (ok or not) or NULL after a transport failure. */
static json_t *call(cm_rpc_client *c, json_t *req)
{
    json_t *reply = NULL;
    char err[512];
    if (cm_rpc_call(c, req, &reply, CALL_TIMEOUT_MS, err, sizeof err) != 0) {
        fprintf(stderr, "commons-rsh: %s\n", err);
        return NULL;
    }
    return reply;
}

int main(int argc, char **argv)
{
    int i = 1;
    /* ssh-style flags Open MPI may put before the host (-x, -T, -n ...). */
    while (i < argc && argv[i][0] == '-' && argv[i][1] && !argv[i][2]) i++;
    if (argc - i < 2) {
        fprintf(stderr, "usage: commons-rsh HOST COMMAND...\n"
                        "  runs COMMAND on node HOST of the current Commons job (Open MPI's "
                        "plm_rsh_agent)\n");
        return 2;
    }
    const char *host = argv[i++];
    const char *addr = need("COMMONS_ADDR"), *key = need("COMMONS_STEP_KEY");
    long long id = parse_ll("COMMONS_JOB_ID", need("COMMONS_JOB_ID"));
    long long attempt = parse_ll("COMMONS_JOB_ATTEMPT", need("COMMONS_JOB_ATTEMPT"));
    size_t len = 1;
    for (int k = i; k < argc; k++) len += strlen(argv[k]) + 1;
    char *cmd = calloc(1, len);
    if (!cmd) return 255;
    for (int k = i; k < argc; k++) {
        if (k > i) strcat(cmd, " ");
        strcat(cmd, argv[k]);
    }
    json_t *env = json_object();
    const char *pass[] = {"PATH", "LD_LIBRARY_PATH"};
    for (size_t k = 0; k < sizeof pass / sizeof pass[0]; k++)
        if (getenv(pass[k])) json_object_set_new(env, pass[k], json_string(getenv(pass[k])));
    cm_rpc_client *c;
    char err[512];
    if (cm_rpc_client_open(addr, &c, err, sizeof err) != 0) {
        fprintf(stderr, "commons-rsh: COMMONS_ADDR=%s: %s\n", addr, err);
        return 2;
    }
    json_t *req = json_pack("{ss sI sI ss ss s[sss] so}", "type", "job.spawn", "id",
                            (json_int_t)id, "attempt", (json_int_t)attempt, "step_key", key,
                            "node", host, "argv", "/bin/sh", "-c", cmd, "env", env);
    free(cmd);
    json_t *reply = call(c, req);
    json_decref(req);
    char buf[512];
    if (!reply || !json_is_true(json_object_get(reply, "ok"))) {
        if (reply)
            fprintf(stderr, "commons-rsh: job.spawn on %s refused: %s\n", host,
                    cm_reply_error_text(reply, buf, sizeof buf));
        json_decref(reply);
        cm_rpc_client_close(c);
        return 255;
    }
    json_int_t sid = json_integer_value(json_object_get(reply, "spawn_id"));
    json_decref(reply);
    int status = 255, outage_ms = 0;
    for (;;) {
        sleep_ms(POLL_MS);
        req = json_pack("{ss sI ss sI}", "type", "job.spawn_wait", "id", (json_int_t)id,
                        "step_key", key, "spawn_id", sid);
        reply = call(c, req);
        json_decref(req);
        if (!reply) {
            if ((outage_ms += POLL_MS + CALL_TIMEOUT_MS) > OUTAGE_MAX_MS) break;
            continue;
        }
        const char *code = cm_reply_error_code(reply);
        if (code && strcmp(code, "not_found") == 0) {   /* a restarted commonsd, before the agent */
            json_decref(reply);
            if ((outage_ms += POLL_MS) > OUTAGE_MAX_MS) {
                fprintf(stderr, "commons-rsh: job.spawn_wait: commonsd has not known spawn %lld on %s "
                        "for %d s\n", (long long)sid, host, OUTAGE_MAX_MS / 1000);
                break;
            }
            continue;
        }
        outage_ms = 0;
        if (!json_is_true(json_object_get(reply, "ok"))) {
            fprintf(stderr, "commons-rsh: job.spawn_wait: %s\n",
                    cm_reply_error_text(reply, buf, sizeof buf));
            json_decref(reply);
            break;
        }
        const char *state = json_string_value(json_object_get(reply, "state"));
        if (state && strcmp(state, "ended") == 0) {
            json_int_t code = json_integer_value(json_object_get(reply, "exit_code"));
            const char *e = json_string_value(json_object_get(reply, "error"));
            if (e && e[0]) fprintf(stderr, "commons-rsh: on %s: %s\n", host, e);
            status = code >= 0 && code <= 255 ? (int)code : 255;
            json_decref(reply);
            break;
        }
        json_decref(reply);
    }
    cm_rpc_client_close(c);
    return status;
}
