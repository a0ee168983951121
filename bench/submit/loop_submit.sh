#!/bin/bash
# loop_submit.sh: submits JOBS jobs by running a submit command once per job
# from CLIENTS concurrent shell loops, like users at a terminal do (one
# process per submission), and prints the rate of accepted submissions.
#
#   loop_submit.sh LABEL JOBS CLIENTS CMD [ARGS...]
#
# CMD is run JOBS times in all; a run that exits 0 counts as accepted. Prints
# a human line and "RESULT {json}" in the same form as submit_bench.
set -u
label=$1 jobs=$2 clients=$3
shift 3
work=$(mktemp -d /tmp/loop-submit.XXXXXX)
trap 'rm -rf "$work"' EXIT

start=$EPOCHREALTIME
pids=()
for ((c = 0; c < clients; c++)); do
    n=$((jobs / clients + (c < jobs % clients ? 1 : 0)))
    (
        ok=0 bad=0
        for ((i = 0; i < n; i++)); do
            if "$@" >/dev/null 2>>"$work/err.$c"; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
        done
        echo "$ok $bad" >"$work/count.$c"
    ) &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
end=$EPOCHREALTIME

accepted=0 failed=0
for ((c = 0; c < clients; c++)); do
    read -r ok bad <"$work/count.$c"
    accepted=$((accepted + ok)) failed=$((failed + bad))
done
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
rate=$(awk -v n="$accepted" -v s="$secs" 'BEGIN { printf "%.1f", (s > 0 ? n / s : 0) }')
echo "$label: $jobs jobs, $clients clients: $accepted accepted, $failed failed in $secs s = $rate accepted jobs/s"
if ((failed)); then
    echo "first error: $(cat "$work"/err.* | head -n 1)"
fi
echo "RESULT {\"mode\":\"throughput\",\"label\":\"$label\",\"jobs\":$jobs,\"clients\":$clients,\"accepted\":$accepted,\"errors\":$failed,\"seconds\":$secs,\"jobs_per_s\":$rate}"
[ "$accepted" -eq "$jobs" ]
