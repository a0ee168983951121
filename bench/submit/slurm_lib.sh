# slurm_lib.sh: a one-node Slurm 22.05 (Debian packages) started in a
# temporary directory, and the measurements run against it. Sourced by
# slurm.sh (Slurm alone) and run.sh (Commons and Slurm runs interleaved, so
# both see the same load on a shared machine). Needs root and bash.
#
#   slurm_start CPUS          installs what is missing (apt-get), starts munged,
#                             slurmctld and slurmd; 0, or 1 with slurm_error set
#   slurm_stop                cancels all jobs, stops what slurm_start started
#                             (by PID), removes the directory (KEEP_SLURM_DIR=1
#                             keeps it)
#   slurm_sbatch_throughput JOBS CLIENTS   `sbatch --hold` from shell loops
#   slurm_api_throughput JOBS CLIENTS      libslurm from C threads
#   slurm_latency JOBS                     one-second jobs from 8 loops
#
# The measurements print a human line and "RESULT {json}" like submit_bench,
# and cancel every job before returning.

slurm_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
slurm_pids=() # daemons started here, in start order
slurm_dir="" slurm_error="" slurm_version="" slurm_node=""

_slurm_free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

slurm_start() {
    local cpus=$1
    if [ "$(id -u)" -ne 0 ]; then
        slurm_error="slurm_lib starts slurmctld, slurmd and munged as root; run it as root"
        return 1
    fi
    local missing=() c
    for c in slurmctld slurmd sbatch squeue scancel sinfo munged mungekey; do
        command -v "$c" >/dev/null || missing+=("$c")
    done
    [ -f /usr/include/slurm/slurm.h ] || missing+=(libslurm-dev)
    if ((${#missing[@]})); then
        echo "slurm: installing Slurm and munge (missing: ${missing[*]})"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurmctld slurmd slurm-client \
            munge libslurm-dev >/tmp/slurm-bench-apt.log 2>&1; then
            slurm_error="apt-get install of slurmctld slurmd slurm-client munge libslurm-dev failed (see /tmp/slurm-bench-apt.log)"
            return 1
        fi
    fi
    slurm_version=$(slurmctld -V 2>/dev/null)
    slurm_dir=$(mktemp -d /tmp/commons-slurm.XXXXXX)
    chmod 755 "$slurm_dir" # munged needs others to be able to reach its socket
    mkdir -p "$slurm_dir/munge" "$slurm_dir/state" "$slurm_dir/spool" "$slurm_dir/out"
    chmod 755 "$slurm_dir/munge"
    if ! cc -std=c11 -O2 -Wall -Wextra -D_GNU_SOURCE -o "$slurm_dir/slurm_api_bench" "$slurm_here/slurm_api_bench.c" \
        -lslurm -lpthread; then
        slurm_error="cannot build slurm_api_bench.c against libslurm"
        slurm_stop
        return 1
    fi

    # munge with our own key and socket: the host's munged, if any, is untouched.
    if ! mungekey --create --keyfile="$slurm_dir/munge/munge.key" >/dev/null 2>&1; then
        slurm_error="mungekey --create failed"
        slurm_stop
        return 1
    fi
    chmod 600 "$slurm_dir/munge/munge.key"
    munged --foreground --socket="$slurm_dir/munge/munge.socket" --key-file="$slurm_dir/munge/munge.key" \
        --pid-file="$slurm_dir/munge/munged.pid" --log-file="$slurm_dir/munge/munged.log" \
        --seed-file="$slurm_dir/munge/munged.seed" >"$slurm_dir/munge/stdout.log" 2>&1 &
    slurm_pids+=($!)
    local i
    for i in $(seq 100); do [ -S "$slurm_dir/munge/munge.socket" ] && break; sleep 0.1; done
    if [ ! -S "$slurm_dir/munge/munge.socket" ]; then
        slurm_error="munged did not start: $(tail -n 1 "$slurm_dir/munge/munged.log" 2>/dev/null)"
        slurm_stop
        return 1
    fi

    # One node: this host, declaring $cpus CPUs (config_overrides: slurmd
    # believes the configuration rather than the hardware).
    slurm_node=$(hostname -s)
    local mem_mb
    mem_mb=$(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo)
    cat >"$slurm_dir/slurm.conf" <<EOF
ClusterName=commonsbench
SlurmctldHost=$slurm_node(127.0.0.1)
SlurmctldPort=$(_slurm_free_port)
SlurmdPort=$(_slurm_free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$slurm_dir/munge/munge.socket
StateSaveLocation=$slurm_dir/state
SlurmdSpoolDir=$slurm_dir/spool
SlurmctldPidFile=$slurm_dir/slurmctld.pid
SlurmdPidFile=$slurm_dir/slurmd.pid
SlurmctldLogFile=$slurm_dir/slurmctld.log
SlurmdLogFile=$slurm_dir/slurmd.log
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
NodeName=$slurm_node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=bench Nodes=$slurm_node Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$slurm_dir/slurm.conf
    slurmctld -D -i -f "$SLURM_CONF" >"$slurm_dir/slurmctld.stdout" 2>&1 &
    slurm_pids+=($!)
    slurmd -D -N "$slurm_node" -f "$SLURM_CONF" >"$slurm_dir/slurmd.stdout" 2>&1 &
    slurm_pids+=($!)
    for i in $(seq 600); do
        [ "$(sinfo -h -n "$slurm_node" -o %T 2>/dev/null)" = idle ] && break
        sleep 0.1
    done
    if [ "$(sinfo -h -n "$slurm_node" -o %T 2>/dev/null)" != idle ]; then
        echo "---- slurmctld.log"; tail -n 20 "$slurm_dir/slurmctld.log" 2>/dev/null
        echo "---- slurmd.log"; tail -n 20 "$slurm_dir/slurmd.log" 2>/dev/null
        slurm_error="the Slurm node did not become idle within 60 s (logs above)"
        slurm_stop
        return 1
    fi
    echo "slurm: $slurm_version: slurmctld and slurmd up (node $slurm_node, $cpus CPUs declared) in $slurm_dir"
}

slurm_cancel_all() { # cancels every job and waits until the controller lists none
    scancel --quiet --user=root
    local i
    for i in $(seq 600); do [ -z "$(squeue -h -o %i)" ] && return 0; sleep 0.1; done
    echo "slurm: jobs still listed 60 s after scancel" >&2
}

slurm_stop() {
    if [ -n "${SLURM_CONF:-}" ] && ((${#slurm_pids[@]} > 1)); then
        # Ending the jobs first lets slurmd reap their slurmstepd processes.
        scancel --quiet --user=root 2>/dev/null
        local i
        for i in $(seq 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
    fi
    local k p
    for ((k = ${#slurm_pids[@]} - 1; k >= 0; k--)); do
        p=${slurm_pids[k]}
        kill -TERM "$p" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    slurm_pids=()
    unset SLURM_CONF
    if [ -n "$slurm_dir" ]; then
        if [ -n "${KEEP_SLURM_DIR:-}" ]; then echo "slurm: kept $slurm_dir"; else rm -rf "$slurm_dir"; fi
        slurm_dir=""
    fi
}

slurm_sbatch_throughput() {
    "$slurm_here/loop_submit.sh" "slurm sbatch" "$1" "$2" sbatch --hold --quiet -J bench -o /dev/null --wrap true
    slurm_cancel_all
}

slurm_api_throughput() {
    "$slurm_dir/slurm_api_bench" "$1" "$2"
    slurm_cancel_all
}

# Same method as submit_bench latency: a poller lists the pending jobs; a job
# left PENDING no later than the answer of the first poll sent after its
# acceptance that does not list it; each job prints its start time first.
slurm_latency() {
    local n=$1 lat=$slurm_dir/latency
    mkdir -p "$lat"
    rm -f "$lat"/*
    local t0=$EPOCHREALTIME
    (
        while [ ! -e "$lat/stop" ]; do
            ts=$EPOCHREALTIME
            ids=$(squeue -h -t PD -o %i | tr '\n' ' ')
            echo "$ts $EPOCHREALTIME $ids"
            sleep 0.01
        done
    ) >"$lat/polls" &
    local poller=$! pids=() c
    for ((c = 0; c < 8; c++)); do
        (
            for ((i = 0; i < n / 8 + (c < n % 8 ? 1 : 0); i++)); do
                id=$(sbatch --parsable -J lat -o "$slurm_dir/out/%j.out" --wrap 'date +%s%N; exec sleep 1') &&
                    echo "${id%%;*} $EPOCHREALTIME"
            done
        ) >"$lat/accepted.$c" &
        pids+=($!)
    done
    local p
    for p in "${pids[@]}"; do wait "$p"; done
    local t_submitted=$EPOCHREALTIME t_done=0
    for _ in $(seq 6000); do # all ended: none pending, running or completing
        if [ -z "$(squeue -h -o %i)" ]; then t_done=$EPOCHREALTIME; break; fi
        sleep 0.05
    done
    touch "$lat/stop"
    wait "$poller"
    python3 - "$lat" "$slurm_dir/out" "$t0" "$t_submitted" "$t_done" "$n" <<'EOF'
import glob, json, math, os, sys
lat, out = sys.argv[1], sys.argv[2]
t0, t_sub, t_done, want = map(float, sys.argv[3:7])
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
    return v[min(len(v), max(1, math.ceil(p * len(v)))) - 1] if v else 0.0
run_lat = [(left[j] - accepted[j]) * 1e3 for j in left]
proc_lat = [(proc[j] - accepted[j]) * 1e3 for j in proc]
res = {"mode": "latency", "label": "slurm", "jobs": int(want), "clients": 8, "accepted": len(accepted),
       "proc_reported": len(proc), "submit_s": t_sub - t0,
       "running_p50_ms": q(run_lat, 0.5), "running_p99_ms": q(run_lat, 0.99),
       "all_running_s": (max(left.values()) - t0) if left and len(left) == len(accepted) else 0.0,
       "proc_p50_ms": q(proc_lat, 0.5), "proc_p99_ms": q(proc_lat, 0.99),
       "all_started_s": (max(proc.values()) - t0) if proc else 0.0,
       "all_done_s": (t_done - t0) if t_done else 0.0, "timed_out": not t_done,
       "poll_ms": (polls[-1][0] - polls[0][0]) * 1e3 / (len(polls) - 1) if len(polls) > 1 else 0.0}
print(f"slurm latency: {len(accepted)} of {int(want)} jobs accepted with 8 clients in {res['submit_s']:.2f} s")
print(f"  submit -> RUNNING (seen by polling squeue, one poll every {res['poll_ms']:.1f} ms): median "
      f"{res['running_p50_ms']:.1f} ms, p99 {res['running_p99_ms']:.1f} ms; all RUNNING after {res['all_running_s']:.2f} s")
print(f"  submit -> process started (job's own clock): median {res['proc_p50_ms']:.1f} ms, "
      f"p99 {res['proc_p99_ms']:.1f} ms over {len(proc)} jobs; all started after {res['all_started_s']:.2f} s")
print(f"  all ended after {res['all_done_s']:.2f} s")
print("RESULT " + json.dumps(res))
EOF
    slurm_cancel_all
}
