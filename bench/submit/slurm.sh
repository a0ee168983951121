#!/bin/bash
# slurm.sh: the submission benchmark against Slurm 22.05 from Debian's
# packages alone, for the comparison asked by issue 2 (README.md here; run.sh
# runs the same measurements interleaved with Commons').
#
# Starts munged, slurmctld and slurmd locally in a temporary directory with a
# generated slurm.conf (one node: this host, --cpus CPUs declared; see
# slurm_lib.sh), runs
#   - throughput: JOBS `sbatch --hold --wrap true` submissions from 1 and from
#     8 concurrent shell loops (loop_submit.sh), and JOBS held submissions
#     through libslurm from 1, 8 and 32 C threads (slurm_api_bench.c);
#   - latency: LATENCY_JOBS jobs of `date +%s%N; sleep 1` submitted by 8 loops,
#     timed the same way as submit_bench latency (poll of pending jobs and the
#     job's own clock),
# and stops everything it started, by PID, also on failure. Needs root; installs
# slurmctld, slurmd, slurm-client, munge and libslurm-dev with apt-get when
# missing.
#
#   slurm.sh [--jobs N] [--repeat R] [--sbatch-repeat R] [--latency-jobs N] [--cpus N]
#
# --repeat: runs of the libslurm client (3); --sbatch-repeat: runs of the
# sbatch loops (1), which keep both CPUs busy for long.
#
# Every measurement prints a human line and "RESULT {json}". Exit status 3
# means Slurm could not be started (the reason follows "SLURM_UNAVAILABLE: ").
set -u
here=$(cd "$(dirname "$0")" && pwd)
jobs=2000 repeat=3 sbatch_repeat=1 latency_jobs=1000 cpus=1000
while (($#)); do
    case $1 in
    --jobs) jobs=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --sbatch-repeat) sbatch_repeat=$2; shift 2 ;;
    --latency-jobs) latency_jobs=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "slurm.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
. "$here/slurm_lib.sh"
trap 'rc=$?; slurm_stop; exit $rc' EXIT
trap 'exit 130' INT TERM
if ! slurm_start "$cpus"; then
    echo "SLURM_UNAVAILABLE: $slurm_error"
    exit 3
fi
for ((r = 1; r <= repeat; r++)); do
    for clients in 1 8 32; do
        if ((clients <= 8 && r <= sbatch_repeat)); then slurm_sbatch_throughput "$jobs" "$clients"; fi
        slurm_api_throughput "$jobs" "$clients"
    done
done
if ((latency_jobs > 0)); then slurm_latency "$latency_jobs"; fi
