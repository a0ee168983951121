"""`commons sim`: trace replay through the quotas scheduling code, on hand-made traces
with known answers, and the 50/30/20 fairness check over 7 simulated days."""
import json
import os
import subprocess
import tempfile
import unittest
import xml.dom.minidom

from harness import binary

POLICY = """
version: 1
priority:
  weights: {fairshare: 100000, age: 1, job_size: 0, qos: 0}
  max_age: 7d
usage: {decay_half_life: 1d}
accounts:
  g1: {shares: 50}
  g2: {shares: 30}
  g3: {shares: 20}
users:
  u: {default_account: g1}
"""


def swf_line(i, submit, run, procs, limit, group):
    # 18 fields: id submit wait run procs cpu mem req_procs req_time req_mem status user group exe queue part prec think
    return f"{i} {submit} -1 {run} {procs} -1 -1 {procs} {limit} -1 1 {group} {group} -1 -1 -1 -1 -1\n"


class Sim(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="commons-sim-")
        self.policy = os.path.join(self.dir, "policy.yaml")
        with open(self.policy, "w") as f:
            f.write(POLICY)

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.dir])

    def trace(self, lines, header="; MaxNodes: 4\n; MaxProcs: 4\n"):
        path = os.path.join(self.dir, "t.swf")
        with open(path, "w") as f:
            f.write(header + "".join(lines))
        return path

    def sim(self, *args, check=True):
        p = subprocess.run([binary("cli/commons"), "--json", "sim", "--policy", self.policy, *args],
                           capture_output=True, text=True, timeout=300)
        if check:
            self.assertEqual(p.returncode, 0, p.stderr)
            return json.loads(p.stdout)
        return p

    def test_fcfs_and_backfill_known_answers(self):
        # 4 one-CPU nodes. Job 1 takes 2 CPUs for 100 s; job 2 needs all 4 (waits until 100);
        # job 3 (1 CPU, 50 s) fits in the hole and ends before 100: backfilled at 0 with EASY,
        # at 200 (after job 2) without backfill.
        t = self.trace([swf_line(1, 0, 100, 2, 100, 1), swf_line(2, 1, 100, 4, 100, 1),
                        swf_line(3, 2, 50, 1, 50, 1)])
        easy = self.sim("--trace", t, "--priority", "fifo", "--backfill", "easy")
        none = self.sim("--trace", t, "--priority", "fifo", "--backfill", "none")
        self.assertEqual(easy["started"], 3)
        # waits: EASY: job1 0, job2 99, job3 0 -> mean 33; none: job1 0, job2 99, job3 198 -> mean 99
        self.assertAlmostEqual(easy["mean_wait_s"], 33.0, places=3)
        self.assertAlmostEqual(none["mean_wait_s"], 99.0, places=3)
        self.assertEqual(easy["makespan_s"], 200)
        # A backfill candidate whose limit would pass the reservation must wait.
        t = self.trace([swf_line(1, 0, 100, 2, 100, 1), swf_line(2, 1, 100, 4, 100, 1),
                        swf_line(3, 2, 50, 1, 500, 1)])
        r = self.sim("--trace", t, "--priority", "fifo", "--backfill", "easy")
        self.assertAlmostEqual(r["mean_wait_s"], (0 + 99 + 198) / 3, places=3)

    def test_fair_share_over_seven_days(self):
        # Three groups keep 16 one-CPU nodes oversubscribed for 7 days with 1-hour jobs.
        lines, i = [], 1
        for minute in range(0, 7 * 24 * 60, 10):
            for g in (1, 2, 3):
                for _ in range(2):
                    lines.append(swf_line(i, minute * 60, 3600, 1, 3600, g))
                    i += 1
        t = self.trace(lines, header="; MaxNodes: 16\n; MaxProcs: 16\n")
        svg, csv = os.path.join(self.dir, "s.svg"), os.path.join(self.dir, "s.csv")
        r = self.sim("--trace", t, "--accounts-from", "group", "--bucket", "1d", "--svg", svg, "--csv", csv,
                     "--jobs", f"1:{i - 1}")
        # Compare over the 7 days while all were active (the tail drains backlogs unevenly).
        shares = {}
        for a in r["accounts"]:
            week = a["delivered_share_per_bucket"][:7]
            shares[a["account"]] = sum(week) / len(week)
            self.assertAlmostEqual(a["policy_share"], {"g1": .5, "g2": .3, "g3": .2}[a["account"]])
        for name, want in {"g1": .5, "g2": .3, "g3": .2}.items():
            self.assertLess(abs(shares[name] - want), 0.03, f"{name}: {shares}")
        self.assertGreater(r["utilization"], 0.95)
        xml.dom.minidom.parse(svg)  # well-formed SVG
        with open(csv) as f:
            rows = f.read().splitlines()
        self.assertEqual(rows[0], "bucket_start_s,account,policy_share,delivered_share,delivered_units")
        self.assertGreater(len(rows), 21)

    def test_bad_input(self):
        t = self.trace(["1 0 -1 100 1\n"])
        p = self.sim("--trace", t, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("t.swf:3:", p.stderr)
        p = self.sim("--trace", "/nonexistent.swf", check=False)
        self.assertIn("No such file", p.stderr)
        p = self.sim("--trace", t, "--jobs", "0:5", check=False)
        self.assertIn("--jobs", p.stderr)
        t = self.trace([swf_line(1, 0, 100, 2, 100, 1)])
        p = self.sim("--trace", t, "--nodes", "4y2", check=False)
        self.assertIn("--nodes", p.stderr)

    def test_real_trace_window(self):
        data = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "workloads")
        r = self.sim("--trace", os.path.join(data, "lublin_256.swf"), "--jobs", "1:2000", "--priority", "fifo",
                     "--backfill", "easy")
        self.assertEqual(r["jobs"], 2000)
        self.assertEqual(r["started"], 2000)
        self.assertGreater(r["utilization"], 0.3)


if __name__ == "__main__":
    unittest.main()
