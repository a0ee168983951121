#!/bin/bash
# slurm.sh: the same submission benchmark against Slurm 22.05 from Debian's
# packages, for the comparison asked by issue 2 (see README.md here).
#
# Starts munged, slurmctld and slurmd locally in a temporary directory with a
# generated slurm.conf (one node: this host, --cpus CPUs declared), runs
#   - throughput: JOBS `sbatch --hold --wrap true` submissions from 1 and from
#     8 concurrent shell loops (loop_submit.sh), and JOBS held submissions
#     through libslurm from 1, 8 and 32 C threads (slurm_api_bench.c);
#   - latency: LATENCY_JOBS jobs of `date +%s%N; sleep 1` submitted by 8 loops,
#     timed the same way as submit_bench latency (poll of pending jobs and the
#     job's own clock),
# and stops everything it started, by PID, also on failure. Needs root (it
# runs the daemons as root, like a test cluster) and installs slurmctld,
# slurmd, slurm-client, munge and libslurm-dev with apt-get when missing.
#
#   slurm.sh [--jobs N] [--repeat R] [--sbatch-repeat R] [--latency-jobs N] [--cpus N]
#            [--results FILE]
#
# --repeat: runs of the libslurm client (3); --sbatch-repeat: runs of the
# sbatch loops (1), which keep both CPUs busy for long.
#
# Every measurement prints a human line and "RESULT {json}"; with --results
# the RESULT lines are also appended to FILE. Exit status 3 means Slurm could
# not be started (the reason is printed as "SLURM_UNAVAILABLE: ...").
set -u
here=$(cd "$(dirname "$0")" && pwd)
jobs=2000 repeat=3 sbatch_repeat=1 latency_jobs=1000 cpus=1000 results=""
while (($#)); do
    case $1 in
    --jobs) jobs=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --sbatch-repeat) sbatch_repeat=$2; shift 2 ;;
    --latency-jobs) latency_jobs=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "slurm.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

unavailable() {
    echo "SLURM_UNAVAILABLE: $*"
    [ -n "$results" ] && echo "SLURM_UNAVAILABLE: $*" >>"$results"
    exit 3
}
record() { # prints RESULT lines of a measurement and keeps them
    local line
    while IFS= read -r line; do
        echo "$line"
        if [[ $line == RESULT* && -n $results ]]; then echo "$line" >>"$results"; fi
    done
}

[ "$(id -u)" -eq 0 ] || unavailable "this script starts slurmctld/slurmd/munged as root; run it as root"
need=(slurmctld slurmd sbatch squeue scancel sinfo munged mungekey)
missing=()
for c in "${need[@]}"; do command -v "$c" >/dev/null || missing+=("$c"); done
[ -f /usr/include/slurm/slurm.h ] || missing+=(libslurm-dev)
if ((${#missing[@]})); then
    echo "slurm.sh: installing Slurm and munge (missing: ${missing[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge \
        libslurm-dev >/tmp/slurm-bench-apt.log 2>&1 ||
        unavailable "apt-get install of slurmctld slurmd slurm-client munge libslurm-dev failed (see /tmp/slurm-bench-apt.log)"
fi
version=$(slurmctld -V 2>/dev/null)
echo "slurm.sh: $version"

dir=$(mktemp -d /tmp/commons-slurm.XXXXXX)
cc -std=c11 -O2 -Wall -Wextra -D_GNU_SOURCE -o "$dir/slurm_api_bench" "$here/slurm_api_bench.c" -lslurm -lpthread ||
    { rm -rf "$dir"; unavailable "cannot build slurm_api_bench.c against libslurm"; }
chmod 755 "$dir" # munged needs others to be able to reach its socket
started=() # PIDs of the daemons this script started, in start order
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "${SLURM_CONF:-}" ] && ((${#started[@]} > 1)); then
        # Ending jobs first lets slurmd reap their slurmstepd processes.
        scancel --quiet --user=root 2>/dev/null
        for _ in $(seq 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
    fi
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do
        local p=${started[i]}
        kill -TERM "$p" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ -n "${KEEP_SLURM_DIR:-}" ]; then echo "slurm.sh: kept $dir"; else rm -rf "$dir"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS WHAT CMD...: runs CMD until it succeeds
    local secs=$1 what=$2
    shift 2
    for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    unavailable "$what did not happen within $secs s"
}

# ---- munge: our own key and socket, so the host's munged (if any) is untouched.
mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/out"
chmod 755 "$dir/munge"
mungekey --create --keyfile="$dir/munge/munge.key" >/dev/null 2>&1 || unavailable "mungekey --create failed"
chmod 600 "$dir/munge/munge.key"
munged --foreground --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" \
    >"$dir/munge/stdout.log" 2>&1 &
started+=($!)
wait_for 10 "munged start" test -S "$dir/munge/munge.socket"

# ---- slurm.conf: one node (this host) declaring $cpus CPUs.
node=$(hostname -s)
mem_mb=$(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo)
cat >"$dir/slurm.conf" <<EOF
ClusterName=commonsbench
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MaxJobCount=200000
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=bench Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$dir/slurm.conf
slurmctld -D -i -f "$SLURM_CONF" >"$dir/slurmctld.stdout" 2>&1 &
started+=($!)
slurmd -D -N "$node" -f "$SLURM_CONF" >"$dir/slurmd.stdout" 2>&1 &
started+=($!)
node_idle() { [ "$(sinfo -h -n "$node" -o %T 2>/dev/null)" = idle ]; }
if ! (for _ in $(seq 600); do node_idle && exit 0; sleep 0.1; done; exit 1); then
    echo "---- slurmctld.log"; tail -n 20 "$dir/slurmctld.log" 2>/dev/null
    echo "---- slurmd.log"; tail -n 20 "$dir/slurmd.log" 2>/dev/null
    unavailable "the Slurm node did not become idle within 60 s (logs above)"
fi
echo "slurm.sh: slurmctld and slurmd up (node $node, $cpus CPUs declared) in $dir"

cancel_all() { # cancels every job and waits until the controller lists none
    scancel --quiet --user=root
    for _ in $(seq 600); do [ -z "$(squeue -h -o %i)" ] && return 0; sleep 0.1; done
    echo "slurm.sh: jobs still listed 60 s after scancel" >&2
}

# ---- throughput: held jobs, like submit_bench throughput; through the sbatch
# command (a process per job) and through libslurm from C threads.
for ((r = 1; r <= repeat; r++)); do
    for clients in 1 8 32; do
        if ((clients <= 8 && r <= sbatch_repeat)); then
            "$here/loop_submit.sh" "slurm sbatch" "$jobs" "$clients" \
                sbatch --hold --quiet -J bench -o /dev/null --wrap true | record
            cancel_all
        fi
        "$dir/slurm_api_bench" "$jobs" "$clients" | record
        cancel_all
    done
done

# ---- latency: LATENCY_JOBS one-second jobs from 8 loops, a poller of pending jobs.
if ((latency_jobs > 0)); then
    lat=$dir/latency
    mkdir -p "$lat"
    t0=$EPOCHREALTIME
    (
        while [ ! -e "$lat/stop" ]; do
            ts=$EPOCHREALTIME
            ids=$(squeue -h -t PD -o %i | tr '\n' ' ')
            echo "$ts $EPOCHREALTIME $ids"
            sleep 0.01
        done
    ) >"$lat/polls" &
    poller=$!
    pids=()
    for ((c = 0; c < 8; c++)); do
        n=$((latency_jobs / 8 + (c < latency_jobs % 8 ? 1 : 0)))
        (
            for ((i = 0; i < n; i++)); do
                id=$(sbatch --parsable -J lat -o "$dir/out/%j.out" --wrap 'date +%s%N; exec sleep 1') &&
                    echo "${id%%;*} $EPOCHREALTIME"
            done
        ) >"$lat/accepted.$c" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    t_submitted=$EPOCHREALTIME
    # All jobs ended: none pending, running or completing.
    t_done=""
    for _ in $(seq 6000); do
        if [ -z "$(squeue -h -o %i)" ]; then t_done=$EPOCHREALTIME; break; fi
        sleep 0.05
    done
    touch "$lat/stop"
    wait "$poller"
    python3 - "$lat" "$dir/out" "$t0" "$t_submitted" "${t_done:-0}" "$latency_jobs" <<'EOF' | record
# Same method as submit_bench latency: a job left PENDING no later than the
# answer of the first poll sent after its acceptance that does not list it.
import glob, json, os, sys
lat, out, t0, t_sub, t_done, want = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:7])
accepted = {}
for f in glob.glob(os.path.join(lat, "accepted.*")):
    for line in open(f):
        jid, t = line.split()
        accepted[int(jid)] = float(t)
polls = []
for line in open(os.path.join(lat, "polls")):
    parts = line.split()
    if len(parts) >= 2:
        polls.append((float(parts[0]), float(parts[1]), {int(x) for x in parts[2:] if x.isdigit()}))
left = {}
for jid, acc in accepted.items():
    for ts, tr, pend in polls:
        if ts >= acc and jid not in pend:
            left[jid] = tr
            break
proc = {}
for jid in accepted:
    try:
        with open(os.path.join(out, f"{jid}.out")) as f:
            proc[jid] = int(f.readline().strip()) / 1e9
    except (OSError, ValueError):
        pass
def q(v, p):
    v = sorted(v)
    if not v:
        return 0.0
    import math
    return v[min(len(v), max(1, math.ceil(p * len(v)))) - 1]
run_lat = [(left[j] - accepted[j]) * 1e3 for j in left]
proc_lat = [(proc[j] - accepted[j]) * 1e3 for j in proc]
res = {"mode": "latency", "label": "slurm", "jobs": int(want), "clients": 8, "accepted": len(accepted),
       "proc_reported": len(proc), "submit_s": t_sub - t0,
       "running_p50_ms": q(run_lat, 0.5), "running_p99_ms": q(run_lat, 0.99),
       "all_running_s": (max(left.values()) - t0) if len(left) == len(accepted) and left else 0.0,
       "proc_p50_ms": q(proc_lat, 0.5), "proc_p99_ms": q(proc_lat, 0.99),
       "all_started_s": (max(proc.values()) - t0) if proc else 0.0,
       "all_done_s": (t_done - t0) if t_done else 0.0, "timed_out": not t_done,
       "poll_ms": (polls[-1][1] - polls[0][0]) * 1e3 / len(polls) if polls else 0.0}
print(f"slurm latency: {len(accepted)} of {int(want)} jobs accepted with 8 clients in {res['submit_s']:.2f} s")
print(f"  submit -> RUNNING (seen by polling squeue, one poll every {res['poll_ms']:.1f} ms): median {res['running_p50_ms']:.1f} ms, "
      f"p99 {res['running_p99_ms']:.1f} ms; all RUNNING after {res['all_running_s']:.2f} s")
print(f"  submit -> process started (job's own clock): median {res['proc_p50_ms']:.1f} ms, "
      f"p99 {res['proc_p99_ms']:.1f} ms over {len(proc)} jobs; all started after {res['all_started_s']:.2f} s")
print(f"  all ended after {res['all_done_s']:.2f} s")
print("RESULT " + json.dumps(res))
EOF
fi
