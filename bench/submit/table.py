#!/usr/bin/env python3
"""table.py: turns run.sh's result lines ("SYSTEM SETTING {json}") into the
Markdown section that run.sh prints and appends to bench/RESULTS.md.
Throughput cells are the median over the repeated runs, with min-max."""
import argparse
import json
import statistics
import sys


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            parts = line.split(" ", 2)
            if len(parts) == 3:
                rows.setdefault((parts[0], parts[1]), []).append(json.loads(parts[2]))
    return rows


def rates(rows, system, setting):
    return [r["jobs_per_s"] for r in rows.get((system, setting), []) if r.get("accepted") == r.get("jobs")]


def cell(values):
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.0f}"
    return f"{med:,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def ratio(a, b):
    if not a or not b:
        return "n/a"
    return f"{statistics.median(a) / statistics.median(b):.1f}x"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    for opt in ("date", "machine", "load", "fsync", "commit", "jobs", "repeat", "latency-jobs", "slurm", "slurm-note"):
        ap.add_argument("--" + opt, default="")
    a = ap.parse_args()
    rows = load(a.results)
    out = []
    w = out.append
    w(f"## bench/submit: job submission (issue 2), {a.date}")
    w("")
    w(f"Machine: {a.machine}; load average before the run: {a.load} (the machine is shared); "
      f"write + fdatasync of 4 KiB in the state folder: {a.fsync}; commit {a.commit}.")
    if a.slurm_note:
        w(f"Slurm: not measured: {a.slurm_note}.")
    else:
        w(f"Slurm: {a.slurm} (Debian package), started locally by bench/submit/slurm.sh (auth/munge, "
          "select/cons_tres, sched/backfill, one node).")
    w(f"Throughput cells: accepted jobs/s, median of {a.repeat} runs of {a.jobs} held jobs (min-max); "
      "a fresh commonsd for each Commons run.")
    w("")
    w("| accepted jobs/s | 1 client | 8 clients |")
    w("|---|---|---|")
    p = {k: rates(rows, "commons", f"proto-{k}") for k in ("full-1", "full-8", "normal-1", "normal-8")}
    c = {k: rates(rows, "commons", f"cli-full-{k}") for k in ("1", "8")}
    s = {k: rates(rows, "slurm", f"sbatch-{k}") for k in ("1", "8")}
    api = {k: rates(rows, "slurm", f"api-{k}") for k in ("1", "8")}
    w(f"| Commons, protocol (C client threads), --sync full | {cell(p['full-1'])} | {cell(p['full-8'])} |")
    w(f"| Commons, protocol (C client threads), --sync normal | {cell(p['normal-1'])} | {cell(p['normal-8'])} |")
    w(f"| Commons, `commons submit --hold` (a process per job), --sync full | {cell(c['1'])} | {cell(c['8'])} |")
    w(f"| Slurm, libslurm `slurm_submit_batch_job` (C client threads), held | {cell(api['1'])} | {cell(api['8'])} |")
    w(f"| Slurm, `sbatch --hold` (a process per job) | {cell(s['1'])} | {cell(s['8'])} |")
    w(f"| ratio Commons protocol (full) / Slurm libslurm (like for like) | {ratio(p['full-1'], api['1'])} "
      f"| {ratio(p['full-8'], api['8'])} |")
    w(f"| ratio Commons protocol (full) / Slurm sbatch | {ratio(p['full-1'], s['1'])} | {ratio(p['full-8'], s['8'])} |")
    w(f"| ratio `commons submit` / `sbatch` (like for like) | {ratio(c['1'], s['1'])} | {ratio(c['8'], s['8'])} |")
    for sync in ("full", "normal"):
        big = rows.get(("commons", f"big-{sync}-8"), [])
        for r in big:
            w(f"| Commons, protocol, --sync {sync}, {r['jobs']:,} jobs | | {r['jobs_per_s']:,.0f} |")
    w("")
    per = rows.get(("commons", "proto-full-8"), [])
    if per and "requests_per_commit" in per[0]:
        rpc = statistics.median(r["requests_per_commit"] for r in per)
        share = statistics.median(r["commit_share"] for r in per)
        p50 = statistics.median(r["rpc_p50_ms"] for r in per)
        p99 = statistics.median(r["rpc_p99_ms"] for r in per)
        one = rows.get(("commons", "proto-full-1"), [])
        one_share = statistics.median(r["commit_share"] for r in one) if one else 0
        w(f"commonsd counters (--sync full, medians): 8 clients: {rpc:.1f} requests per commit, COMMIT "
          f"{share * 100:.0f}% of the wall time, per-request p50 {p50:.2f} ms / p99 {p99:.2f} ms; "
          f"1 client: one commit per request, COMMIT {one_share * 100:.0f}% of the wall time.")
        w("")
    target = p["full-8"]
    if target:
        med = statistics.median(target)
        verdict = "met" if med >= 5000 else "NOT met"
        w(f"Target of issue 2 (>= 5,000 accepted jobs/s with 8 clients, durable commits): {verdict} "
          f"(median {med:,.0f} jobs/s with --sync full; {min(target):,.0f}-{max(target):,.0f} over the runs).")
        w("")
    lc = rows.get(("commons", "latency"), [])
    ls = rows.get(("slurm", "latency"), [])
    if lc or ls:
        n = (lc or ls)[0]["jobs"]
        w(f"| submit -> RUNNING, {n:,} jobs of `sleep 1`, 8 clients | Commons (--sync full, real agent, 1000 CPUs) "
          "| Slurm (1 node, 1000 CPUs) |")
        w("|---|---|---|")

        def lat(rs, key, fmt):
            if not rs:
                return "n/a"
            r = rs[0]
            if r.get("timed_out") or r.get("accepted") != r.get("jobs"):
                return "incomplete: " + fmt(r[key]) if key in r else "incomplete"
            return fmt(r[key])

        ms = lambda v: f"{v:,.0f} ms"
        sec = lambda v: f"{v:.2f} s"
        w(f"| all submitted after | {lat(lc, 'submit_s', sec)} | {lat(ls, 'submit_s', sec)} |")
        for label, key in (("RUNNING (polled every 10 ms), median", "running_p50_ms"),
                           ("RUNNING (polled every 10 ms), p99", "running_p99_ms"),
                           ("process started (job's clock), median", "proc_p50_ms"),
                           ("process started (job's clock), p99", "proc_p99_ms")):
            w(f"| submit -> {label} | {lat(lc, key, ms)} | {lat(ls, key, ms)} |")
        w(f"| all RUNNING after | {lat(lc, 'all_running_s', sec)} | {lat(ls, 'all_running_s', sec)} |")
        w(f"| all processes started after | {lat(lc, 'all_started_s', sec)} | {lat(ls, 'all_started_s', sec)} |")
        w(f"| all ended after | {lat(lc, 'all_done_s', sec)} | {lat(ls, 'all_done_s', sec)} |")
        w("")
        w("Times are from the first submission; \"submit\" is when the client got the acknowledgement.")
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
