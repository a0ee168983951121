#!/bin/sh
# e2e_agent.sh: commons-agent against the real commonsd and CLI on 127.0.0.1:
# exit codes, time limit, cancel of a double-forked tree, kill -9 of the
# agent while jobs run (they are re-attached and keep their real exit status),
# commonsd down for a while (the agent waits, logs once, reports later), and
# SIGTERM (jobs stay) followed by --kill-jobs (they end, reported on restart),
# and kill -9 of the agent while a burst of launches starts.
# Usage: e2e_agent.sh COMMONSD COMMONS_AGENT COMMONS
set -u
SD=$1 AGENT=$2 CLI=$3
T=$(mktemp -d /tmp/agent-e2e-XXXXXX)
chmod 0711 "$T"
PORT=$((20000 + $$ % 20000))
export COMMONS_ADDR="tcp://127.0.0.1:$PORT" COMMONS_TOKEN_FILE="$T/sd/admin.token"
SD_PID= AGENT_PID=

cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null
    [ -n "$SD_PID" ] && kill "$SD_PID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    echo "--- agent log"; cat "$T/agent.log"
    echo "--- commonsd log"; tail -20 "$T/sd.log"
    exit 1
}

start_agent() { # extra options: "$@"
    "$AGENT" --server "$COMMONS_ADDR" --name e2e1 --key-file "$T/sd/cluster.key" \
        --state "$T/agent" --kill-grace 1 --foreground "$@" >>"$T/agent.log" 2>&1 &
    AGENT_PID=$!
}

# wait_state ID STATE [SECONDS]: until `commons show` says STATE.
wait_state() {
    i=0
    while [ $i -lt $((${3:-10} * 10)) ]; do
        "$CLI" --json show "$1" >"$T/show.json" 2>/dev/null
        grep -q "\"state\": \"$2\"" "$T/show.json" && return 0
        sleep 0.1
        i=$((i + 1))
    done
    fail "job $1 never reached $2: $(grep '"state"' "$T/show.json")"
}

# wait_log TEXT: until the agent's log has TEXT (the agent really started a job,
# which commonsd's RUNNING does not prove: that is placement).
wait_log() {
    i=0
    until grep -q "$1" "$T/agent.log"; do
        [ $i -lt 100 ] || fail "the agent never logged: $1"
        sleep 0.1
        i=$((i + 1))
    done
}

field() { sed -n "s/^  \"$1\": \(.*\),\$/\1/p" "$T/show.json"; }

submit() { "$CLI" submit --workdir "$T/w" "$@" | sed -n 's/^Submitted job //p'; }

mkdir -p "$T/w" && chmod 0777 "$T/w"
"$SD" --state "$T/sd" --listen "$COMMONS_ADDR" --foreground >"$T/sd.log" 2>&1 &
SD_PID=$!
i=0
while [ ! -s "$T/sd/admin.token" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$T/sd/cluster.key" ] || fail "commonsd did not start"
start_agent
i=0
until "$CLI" nodes 2>/dev/null | grep -q '^e2e1 *IDLE'; do
    [ $i -lt 50 ] || fail "the agent never registered"
    sleep 0.1
    i=$((i + 1))
done
grep -q "containment" "$T/agent.log" || fail "register did not log its containment"

# Exit code and output.
J=$(submit -- /bin/sh -c 'echo "hi $COMMONS_JOB_ID $COMMONS_NODE"; exit 3')
wait_state "$J" FAILED
[ "$(field exit_code)" = 3 ] || fail "job $J exit_code $(field exit_code), expected 3"
grep -qx "hi $J e2e1" "$T/w/commons-$J.out" || fail "job $J output: $(cat "$T/w/commons-$J.out")"

# Time limit: SIGTERM ignored, SIGKILL after the grace.
J=$(submit -t 0:1 -- /bin/sh -c 'trap "" TERM; sleep 60')
wait_state "$J" TIMEOUT 15

# Cancel ends a grandchild that left the job's session.
J=$(submit -- /bin/sh -c "(setsid sleep 60 & echo \$! > $T/w/gc.pid) ; sleep 60")
wait_state "$J" RUNNING
i=0
while [ ! -s "$T/w/gc.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
GC=$(cat "$T/w/gc.pid")
"$CLI" cancel "$J" >/dev/null || fail "cancel $J refused"
wait_state "$J" CANCELLED
i=0
while kill -0 "$GC" 2>/dev/null && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
kill -0 "$GC" 2>/dev/null && fail "grandchild $GC of cancelled job $J survived"

# kill -9 of the agent alone: jobs keep running, are re-attached, keep their status.
A=$(submit -- /bin/sh -c 'sleep 2; exit 7')
B=$(submit -- /bin/sh -c 'sleep 2; echo done')
wait_log "job $A.0 started"
wait_log "job $B.0 started"
kill -9 "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null
start_agent
wait_state "$A" FAILED 15
[ "$(field exit_code)" = 7 ] || fail "re-attached job $A exit_code $(field exit_code), expected 7"
wait_state "$B" COMPLETED 15
grep -qx done "$T/w/commons-$B.out" || fail "job $B ran twice or not at all"
[ "$(grep -c 're-attached' "$T/agent.log")" -ge 2 ] || fail "no re-attach logged"
[ "$(grep -c "job $B.0 started" "$T/agent.log")" = 1 ] || fail "job $B was started twice"

# commonsd down for a while: the agent keeps its job, logs the outage once, and
# reports the end once commonsd is back.
C=$(submit -- /bin/sh -c 'sleep 1; exit 4')
wait_log "job $C.0 started"
kill -9 "$SD_PID"
wait "$SD_PID" 2>/dev/null
sleep 6 # longer than a call's timeout (a shorter outage is bridged by nng)
"$SD" --state "$T/sd" --listen "$COMMONS_ADDR" --foreground >>"$T/sd.log" 2>&1 &
SD_PID=$!
wait_state "$C" FAILED 15
[ "$(field exit_code)" = 4 ] || fail "job $C exit_code $(field exit_code), expected 4"
[ "$(grep -c 'unreachable' "$T/agent.log")" = 1 ] || fail "outage not logged exactly once"
grep -q 'reachable again' "$T/agent.log" || fail "recovery not logged"

# SIGTERM: the agent exits 0 and leaves its job running; --kill-jobs ends it;
# the next agent reports that end.
D=$(submit -- /bin/sh -c "echo \$\$ > $T/w/d.pid; exec sleep 60")
wait_log "job $D.0 started"
i=0
while [ ! -s "$T/w/d.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
DPID=$(cat "$T/w/d.pid")
kill "$AGENT_PID"
wait "$AGENT_PID"
RC=$?
AGENT_PID=
[ "$RC" = 0 ] || fail "agent exit status $RC after SIGTERM"
kill -0 "$DPID" 2>/dev/null || fail "job $D did not outlive the agent's SIGTERM"
"$AGENT" --name e2e1 --state "$T/agent" --kill-grace 1 --kill-jobs >>"$T/agent.log" 2>&1 ||
    fail "--kill-jobs failed"
kill -0 "$DPID" 2>/dev/null && fail "job $D survived --kill-jobs"
start_agent
wait_state "$D" CANCELLED

# kill -9 of the agent while a burst of launches starts (their "released" is
# not written yet: the new agent reads it from the keepers' names): commonsd
# sends again what the dead agent had not acknowledged, and every job of the
# burst runs exactly once and COMPLETES. (agent.batch kills inside batches.)
kill "$AGENT_PID"
wait "$AGENT_PID"
AGENT_PID=
start_agent --cpus 60
wait_log "registered as e2e1 .* 60 CPUs"
done_before=$("$CLI" queue --all -t COMPLETED | grep -c COMPLETED)
A=$("$CLI" submit --workdir "$T/w" -a 1-60 -- /bin/sh -c \
    "echo \$\$ >> $T/w/burst-\$COMMONS_ARRAY_TASK_ID; sleep 2" | sed -n 's/^Submitted array job //p')
[ -n "$A" ] || fail "the burst was not submitted"
i=0
until [ "$(ls "$T/w" | grep -c '^burst-')" -ge 10 ]; do
    [ $i -lt 300 ] || fail "the burst never started"
    sleep 0.02
    i=$((i + 1))
done
kill -9 "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null
start_agent --cpus 60
i=0
until [ "$("$CLI" queue --all -t COMPLETED | grep -c COMPLETED)" -ge $((done_before + 60)) ]; do
    [ $i -lt 300 ] || fail "the burst did not complete: $("$CLI" queue --all | tail -n 5)"
    sleep 0.1
    i=$((i + 1))
done
for t in $(seq 60); do
    [ "$(wc -l <"$T/w/burst-$t")" = 1 ] || fail "array task $t started $(wc -l <"$T/w/burst-$t") times"
done
echo "PASS"
