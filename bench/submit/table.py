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


def latency(rows, w):
    """The submit -> RUNNING table (the latency part), if it was measured."""
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
            if key not in r:
                return "n/a"
            if r.get("timed_out") or r.get("accepted") != r.get("jobs"):
                return "incomplete: " + fmt(r[key]) if key in r else "incomplete"
            return fmt(r[key])

        ms = lambda v: f"{v:,.0f} ms"
        ms1 = lambda v: f"{v:,.1f} ms"
        sec = lambda v: f"{v:.2f} s"
        w(f"| all submitted after | {lat(lc, 'submit_s', sec)} | {lat(ls, 'submit_s', sec)} |")
        w(f"| time between polls of the pending jobs (mean) | {lat(lc, 'poll_ms', ms1)} | {lat(ls, 'poll_ms', ms1)} |")
        for label, key in (("RUNNING (polled), median", "running_p50_ms"),
                           ("RUNNING (polled), p99", "running_p99_ms"),
                           ("process started (job's clock), median", "proc_p50_ms"),
                           ("process started (job's clock), p99", "proc_p99_ms")):
            w(f"| submit -> {label} | {lat(lc, key, ms)} | {lat(ls, key, ms)} |")
        w(f"| all RUNNING after | {lat(lc, 'all_running_s', sec)} | {lat(ls, 'all_running_s', sec)} |")
        w(f"| all processes started after | {lat(lc, 'all_started_s', sec)} | {lat(ls, 'all_started_s', sec)} |")
        w(f"| all ended after | {lat(lc, 'all_done_s', sec)} | {lat(ls, 'all_done_s', sec)} |")
        done = lambda rs: "n/a" if not rs or "completed" not in rs[0] else f"{rs[0]['completed']:,}"
        w(f"| jobs COMPLETED | {done(lc)} | {done(ls)} |")
        w("")
        w("Times are from the first submission; \"submit\" is when the client got the acknowledgement; "
          "\"RUNNING (polled)\" is an upper bound loose by about one poll interval.")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    for opt in ("date", "machine", "load", "fsync", "commit", "jobs", "repeat", "cli-repeat", "latency-jobs", "slurm", "slurm-note", "agent"):
        ap.add_argument("--" + opt, default="")
    a = ap.parse_args()
    rows = load(a.results)
    out = []
    w = out.append
    w(f"## bench/submit: job submission (issue 2), {a.date}")
    w("")
    w(f"Machine: {a.machine}; load average: {a.load} (the machine is shared); "
      f"write + fdatasync of 4 KiB in the state folder: {a.fsync}; commit {a.commit}.")
    if a.slurm_note:
        w(f"Slurm: not measured: {a.slurm_note}.")
    else:
        w(f"Slurm: {a.slurm} (Debian package), started locally by bench/submit/slurm_lib.sh (auth/munge, "
          "select/cons_tres, sched/backfill, one node); its runs interleaved with Commons' runs.")
    if a.agent:
        w(f"Agent measured: {a.agent}.")
    if a.repeat in ("", "0") and a.cli_repeat in ("", "0"):
        w("Throughput: not measured in this run (--latency-only).")
        w("")
        latency(rows, w)
        print("\n".join(out))
        return 0
    w(f"Throughput cells: accepted jobs/s for {a.jobs} held jobs, median of {a.repeat} runs (min-max) for the C "
      f"clients, {a.cli_repeat} run(s) for the process-per-job loops; a fresh commonsd for each Commons run; "
      "n/a: not measured in that setting.")
    w("")
    w("| accepted jobs/s | 1 client | 8 clients | 32 clients |")
    w("|---|---|---|---|")
    keys = ("1", "8", "32")
    p = {f"{sync}-{k}": rates(rows, "commons", f"proto-{sync}-{k}") for sync in ("full", "normal") for k in keys}
    c = {k: rates(rows, "commons", f"cli-full-{k}") for k in keys}
    s = {k: rates(rows, "slurm", f"sbatch-{k}") for k in keys}
    api = {k: rates(rows, "slurm", f"api-{k}") for k in keys}

    def line(label, values):
        w(f"| {label} | " + " | ".join(values) + " |")

    line("Commons, protocol (C client threads), --sync full", [cell(p[f"full-{k}"]) for k in keys])
    line("Commons, protocol (C client threads), --sync normal", [cell(p[f"normal-{k}"]) for k in keys])
    line("Commons, `commons submit --hold` (a process per job), --sync full", [cell(c[k]) for k in keys])
    line("Slurm, libslurm `slurm_submit_batch_job` (C client threads), held", [cell(api[k]) for k in keys])
    line("Slurm, `sbatch --hold` (a process per job)", [cell(s[k]) for k in keys])
    line("ratio Commons protocol (full) / Slurm libslurm (like for like)", [ratio(p[f"full-{k}"], api[k]) for k in keys])
    line("ratio Commons protocol (full) / Slurm sbatch", [ratio(p[f"full-{k}"], s[k]) for k in keys])
    line("ratio `commons submit` / `sbatch` (like for like)", [ratio(c[k], s[k]) for k in keys])
    for sync in ("full", "normal"):
        big = rows.get(("commons", f"big-{sync}-8"), [])
        for r in big:
            w(f"| Commons, protocol, --sync {sync}, {r['jobs']:,} jobs | | {r['jobs_per_s']:,.0f} | |")
    w("")
    parts = []
    for sync in ("full", "normal"):
        for k in keys:
            runs = [r for r in rows.get(("commons", f"proto-{sync}-{k}"), []) if "requests_per_commit" in r]
            if runs:
                med = lambda key: statistics.median(r[key] for r in runs)
                parts.append(f"--sync {sync}, {k} client(s): {med('requests_per_commit'):.1f} requests per commit, "
                             f"COMMIT {med('commit_share') * 100:.0f}% of the wall time, per-request p50 "
                             f"{med('rpc_p50_ms'):.2f} ms / p99 {med('rpc_p99_ms'):.2f} ms")
    if parts:
        w("commonsd's own counters (`stats`; medians over the runs):")
        w("")
        for part in parts:
            w(f"- {part}")
        w("")
    target = p["full-8"]
    if target:
        med = statistics.median(target)
        verdict = "met" if med >= 5000 else "NOT met"
        w(f"Target of issue 2 (>= 5,000 accepted jobs/s with 8 clients, durable commits): {verdict} "
          f"(median {med:,.0f} jobs/s with --sync full; {min(target):,.0f}-{max(target):,.0f} over the runs).")
        w("")
    latency(rows, w)
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
