#!/bin/bash
# run.sh: the job-submission benchmark of issue 2, end to end (README.md here).
#
# Builds commonsd, commons, commons-agent and submit_bench; for each
# measurement starts a fresh commonsd on 127.0.0.1 (free port, temporary
# state directory) and stops it by PID; runs the same measurements against a
# local one-node Slurm (slurm_lib.sh, as slurm.sh does), interleaved with
# Commons' so that both see the same load on a shared machine; prints a table
# and appends it to bench/RESULTS.md with the machine, the date and the commit.
#
#   run.sh [--build DIR] [--jobs N] [--repeat R] [--cli-repeat R] [--big N]
#          [--latency-jobs N] [--latency-only] [--agent BIN] [--no-slurm] [--no-append]
#
#   --build DIR        CMake build folder (default $COMMONS_BUILD or build-bench);
#                      configured and built here when commonsd is missing
#   --jobs N           jobs per throughput run (default 2000)
#   --repeat R         runs per throughput setting; the table shows the median (3)
#   --cli-repeat R     runs of the process-per-job loops (`commons submit`,
#                      `sbatch`), which keep both CPUs busy for long (1)
#   --big N            also one 8-client run of N jobs per sync mode (e.g. 10000)
#   --latency-jobs N   one-second jobs for submit -> RUNNING (default 1000; 0 skips)
#   --latency-only     only the submit -> RUNNING part (--repeat 0 --cli-repeat 0)
#   --agent BIN        the commons-agent to measure (default: the build's), e.g. an
#                      older build's, to compare agents against the same commonsd
#   --no-slurm         skip Slurm
#   --no-append        print the table only
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/slurm_lib.sh"
build=${COMMONS_BUILD:-$root/build-bench}
jobs=2000 repeat=3 cli_repeat=1 big=0 latency_jobs=1000 slurm=1 append=1 agent=
while (($#)); do
    case $1 in
    --build) build=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --cli-repeat) cli_repeat=$2; shift 2 ;;
    --big) big=$2; shift 2 ;;
    --latency-jobs) latency_jobs=$2; shift 2 ;;
    --latency-only) repeat=0; cli_repeat=0; shift ;;
    --agent) agent=$2; shift 2 ;;
    --no-slurm) slurm=0; shift ;;
    --no-append) append=0; shift ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
build=$(mkdir -p "$build" && cd "$build" && pwd)
agent=${agent:-$build/agent/commons-agent}

# ---- build
if [ ! -x "$build/scheduler/commonsd" ] || [ ! -x "$build/agent/commons-agent" ] || [ ! -x "$build/cli/commons" ]; then
    echo "run.sh: building commonsd, commons and commons-agent in $build"
    cmake -S "$root" -B "$build" >"$build/bench-configure.log" 2>&1 ||
        { tail -n 20 "$build/bench-configure.log"; echo "run.sh: cmake configure failed" >&2; exit 1; }
    cmake --build "$build" -j2 --target commonsd commons commons-agent ||
        { echo "run.sh: build failed" >&2; exit 1; }
fi
bench=$build/bench-submit/submit_bench
mkdir -p "$build/bench-submit"
cc -std=c11 -O2 -Wall -Wextra -D_GNU_SOURCE -I"$root/common" -o "$bench" \
    "$here"/submit_bench.c "$here"/throughput.c "$here"/latency.c "$here"/bench_util.c \
    "$build/common/libcommons_common.a" -lnng -ljansson -lmbedcrypto -lpthread ||
    { echo "run.sh: cannot build submit_bench" >&2; exit 1; }

# ---- processes: everything started here is stopped by PID on exit
work=$(mktemp -d /tmp/commons-bench.XXXXXX)
chmod 711 "$work" # the latency jobs run as nobody and write below it
results=$work/results # lines: "SYSTEM SETTING RESULT-JSON"
: >"$results"
pids=()
stop_pid() {
    local p=$1
    kill -TERM "$p" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    return 0
}
cleanup() {
    local rc=$?
    trap - EXIT
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
    slurm_stop
    if [ -n "${KEEP_BENCH_DIR:-}" ]; then echo "run.sh: kept $work"; else rm -rf "$work"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_commonsd SYNC NAME: a fresh commonsd; sets addr, state, sched_pid, token.
start_commonsd() {
    local sync=$1 name=$2
    state=$work/$name/state
    mkdir -p "$work/$name"
    addr=tcp://127.0.0.1:$(free_port)
    "$build/scheduler/commonsd" --state "$state" --listen "$addr" --foreground --sync "$sync" \
        --log-level warn 2>"$work/$name/commonsd.log" &
    sched_pid=$!
    pids+=("$sched_pid")
    for _ in $(seq 100); do [ -s "$state/admin.token" ] && break; sleep 0.1; done
    [ -s "$state/admin.token" ] || { cat "$work/$name/commonsd.log"; echo "run.sh: commonsd did not start" >&2; exit 1; }
}
stop_last() { # stops the most recently started process
    local last=$((${#pids[@]} - 1))
    stop_pid "${pids[last]}"
    unset "pids[last]"
    pids=("${pids[@]}")
}
# keep SYSTEM SETTING: prints a measurement's lines, keeps its RESULT line.
keep() {
    local line
    while IFS= read -r line; do
        echo "  $line"
        if [[ $line == RESULT* ]]; then echo "$1 $2 ${line#RESULT }" >>"$results"; fi
    done
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# What one durable commit costs on this disk: median and p99 of 200 small
# write+fdatasync pairs in the folder that holds the state directories. Taken
# before and after the measurements: the disk is shared and its latency moves.
fsync_probe() {
    python3 - "$work" <<'EOF'
import os, statistics, sys, time
fd = os.open(os.path.join(sys.argv[1], "fsync-probe"), os.O_WRONLY | os.O_CREAT, 0o600)
t = []
for i in range(200):
    a = time.perf_counter()
    os.pwrite(fd, b"x" * 4096, (i % 16) * 4096)
    os.fdatasync(fd)
    t.append((time.perf_counter() - a) * 1e3)
os.close(fd)
t.sort()
print(f"{statistics.median(t):.2f} ms median, {t[197]:.2f} ms p99")
EOF
}
fsync_ms=$(fsync_probe)
echo "run.sh: write + fdatasync on this disk: $fsync_ms"

# ---- Slurm, started once; its runs follow Commons' runs of the same setting
slurm_note=""
if ((slurm)); then
    if ! slurm_start 1000; then
        slurm_note=$slurm_error
        slurm=0
    fi
else
    slurm_note="skipped (--no-slurm)"
fi

commons_setup() { # a fresh commonsd with user bench and a fake node
    start_commonsd "$1" "$2"
    "$bench" setup --addr "$addr" --state "$state" --token-out "$work/token" --fake-node fake1 --cpus 1000 || exit 1
}

# ---- throughput through the protocol: C client threads (Commons: both sync modes)
for ((r = 1; r <= repeat; r++)); do
    # 32 clients: not the target's setting; it shows how group commit scales.
    for clients in 1 8 32; do
        for sync in full normal; do
            commons_setup "$sync" "tp-$sync-$clients-$r"
            echo "commons --sync $sync, run $r, $clients client(s):"
            "$bench" throughput --addr "$addr" --token-file "$work/token" --jobs "$jobs" --clients "$clients" |
                keep commons "proto-$sync-$clients"
            stop_last
        done
        if ((slurm)); then
            echo "slurm libslurm, run $r, $clients client(s):"
            slurm_api_throughput "$jobs" "$clients" | keep slurm "api-$clients"
        fi
    done
done
if ((big > 0)); then
    for sync in full normal; do
        commons_setup "$sync" "tp-$sync-big"
        echo "commons --sync $sync, $big jobs, 8 clients:"
        "$bench" throughput --addr "$addr" --token-file "$work/token" --jobs "$big" --clients 8 |
            keep commons "big-$sync-8"
        stop_last
    done
fi

# ---- throughput through the commands, one process per submission
for ((r = 1; r <= cli_repeat; r++)); do
    for clients in 1 8; do
        commons_setup full "cli-$clients-$r"
        echo "commons CLI, run $r, $clients client(s):"
        COMMONS_ADDR=$addr COMMONS_TOKEN=$(cat "$work/token") \
            "$here/loop_submit.sh" "commons submit" "$jobs" "$clients" \
            "$build/cli/commons" submit --hold -- true | keep commons "cli-full-$clients"
        stop_last
        if ((slurm)); then
            echo "slurm sbatch, run $r, $clients client(s):"
            slurm_sbatch_throughput "$jobs" "$clients" | keep slurm "sbatch-$clients"
        fi
    done
done

# ---- submit -> RUNNING with the real agent (Commons) and slurmd (Slurm)
if ((latency_jobs > 0)); then
    start_commonsd full latency
    # Jobs run as "nobody" (the agent runs as root and switches user), so their
    # output folder must be writable by everyone.
    "$bench" setup --addr "$addr" --state "$state" --token-out "$work/token" --unix-user nobody || exit 1
    out=$work/latency/out
    mkdir -p "$out" && chmod 711 "$work/latency" && chmod 1777 "$out"
    "$agent" --server "$addr" --name node1 --key-file "$state/cluster.key" \
        --state "$work/latency/agent" --cpus 1000 --memory-mb 100000 --foreground --kill-grace 1 \
        --log-level "${AGENT_LOG_LEVEL:-warn}" 2>"$work/latency/agent.log" &
    pids+=($!)
    registered=0
    for _ in $(seq 100); do
        if COMMONS_ADDR=$addr COMMONS_TOKEN_FILE=$state/admin.token "$build/cli/commons" --json nodes 2>/dev/null |
            grep -q '"IDLE"'; then registered=1; break; fi
        sleep 0.1
    done
    ((registered)) || { cat "$work/latency/agent.log"; echo "run.sh: the agent did not register" >&2; exit 1; }
    echo "commons --sync full, $latency_jobs one-second jobs, 8 clients, real agent (--cpus 1000):"
    "$bench" latency --addr "$addr" --token-file "$work/token" --jobs "$latency_jobs" --clients 8 --outdir "$out" \
        --sleep 1 --timeout 600 | keep commons latency
    stop_last # agent
    stop_last # commonsd
    if ((slurm)); then
        echo "slurm, $latency_jobs one-second jobs, 8 clients, slurmd declaring 1000 CPUs:"
        slurm_latency "$latency_jobs" | keep slurm latency
    fi
fi
slurm_stop

# ---- table
fsync_ms="$fsync_ms before, $(fsync_probe) after"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null)
git -C "$root" diff --quiet HEAD -- scheduler common agent bench/submit 2>/dev/null || commit="$commit (+ uncommitted changes)"
model=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
table=$(python3 "$here/table.py" "$results" \
    --date "$(date -u '+%Y-%m-%d %H:%M UTC')" --machine "$model, $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)" \
    --load "$load_before before, $load_after after" --fsync "$fsync_ms" --commit "$commit" --jobs "$jobs" --repeat "$repeat" \
    --cli-repeat "$cli_repeat" --latency-jobs "$latency_jobs" \
    --slurm "$slurm_version" --slurm-note "$slurm_note" --agent "$agent")
echo
echo "$table"
if ((append)); then
    f=$root/bench/RESULTS.md
    [ -f "$f" ] || printf '# Benchmark results\n\nEach section is appended by a benchmark script in bench/; newest last.\n' >"$f"
    printf '\n%s\n' "$table" >>"$f"
    echo
    echo "run.sh: appended to $f"
fi
