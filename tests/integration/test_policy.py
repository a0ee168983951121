"""Quota policies in commonsd: apply/show/check, users and accounts from the policy,
limits as pending reasons, fair-share order, SIGHUP reload, and EASY backfill."""
import getpass
import json
import os
import signal
import time
import unittest

from harness import ClusterTest, wait_until

ME = getpass.getuser()

POLICY = f"""
version: 1
billing: {{cpu: 1.0, gpu: 10.0, mem_per_gb: 0}}
usage: {{decay_half_life: 7d}}
priority:
  weights: {{fairshare: 10000, age: 10, job_size: 0, qos: 0}}
  max_age: 7d
qos:
  normal: {{priority: 1, max_wall: 1d}}
default_qos: normal
accounts:
  nation:
    children:
      north:
        shares: 50
        children:
          physics:
            shares: 1
            limits: {{max_running_gpus: 1}}
      south:
        shares: 50
        children:
          biology:
            shares: 1
users:
  alice: {{default_account: physics, unix_user: {ME}}}
  bob: {{default_account: biology, unix_user: {ME}}}
"""


class Policy(ClusterTest):
    def setUp(self):
        super().setUp()
        self.policy = os.path.join(self.c.dir, "policy.yaml")
        with open(self.policy, "w") as f:
            f.write(POLICY)

    def token(self, user):
        return self.c.cli("admin", "token", "create", user).stdout.strip()

    def submit(self, token, *args):
        return json.loads(self.c.cli("--json", "submit", *args, token=token).stdout)["job_id"]

    def test_apply_show_and_bad_policy(self):
        c = self.c
        c.start_scheduler()
        bad = os.path.join(c.dir, "bad.yaml")
        with open(bad, "w") as f:
            f.write(POLICY.replace("shares: 50", "shares: -5", 1).replace("default_account: biology",
                                                                         "default_account: zoology"))
        p = c.cli("policy", "check", bad, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("bad.yaml:15:17: error: accounts.nation.children.north.shares", p.stderr)
        self.assertIn("zoology", p.stderr)
        p = c.cli("policy", "apply", bad, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("No quota policy", c.cli("policy", "show").stdout)
        self.assertEqual(c.cli("policy", "check", self.policy).returncode, 0)
        self.assertIn("version 1", c.cli("policy", "apply", self.policy).stdout)
        shown = c.cli("policy", "show").stdout
        self.assertIn("applied", shown)
        self.assertIn("default_account: physics", shown)
        # A failing apply leaves version 1 in force; a good one makes version 2.
        self.assertEqual(c.cli("policy", "apply", bad, check=False).returncode, 1)
        self.assertEqual(c.json("policy", "show")["version"], 1)
        c.cli("policy", "apply", self.policy)
        hist = c.json("policy", "show")["versions"]
        self.assertEqual([v["version"] for v in hist], [1, 2])
        self.assertEqual(hist[0]["applied_by"], "admin")
        # Users and accounts now come from the policy.
        p = c.cli("admin", "user", "add", "carol", "--account", "physics", check=False)
        self.assertIn("users come from the policy", p.stderr)
        p = c.cli("admin", "account", "add", "x", check=False)
        self.assertIn("accounts come from the policy", p.stderr)
        self.assertEqual(c.cli("whoami", token=self.token("alice")).stdout.strip(), "alice")

    def test_limits_fairshare_and_prio(self):
        c = self.c
        c.start_scheduler(extra=["--policy", self.policy])
        c.start_agent("n1", cpus=2, gpus=4)
        alice, bob = self.token("alice"), self.token("bob")
        p = c.cli("submit", "-A", "biology", "--", "true", token=alice, check=False)
        self.assertIn("AccountNotAllowed", p.stderr)
        p = c.cli("submit", "--time", "2d", "--", "true", token=alice, check=False)
        self.assertIn("QOSMaxWall", p.stderr)
        p = c.cli("submit", "--qos", "gold", "--", "true", token=alice, check=False)
        self.assertIn("no QOS 'gold'", p.stderr)
        # physics may run one GPU at a time.
        g1 = self.submit(alice, "-G", "1", "--", "sleep", "2")
        g2 = self.submit(alice, "-G", "1", "--", "true")
        c.wait_state(g1, "RUNNING")
        wait_until(lambda: c.job(g2)["reason"] == "AccountGPULimit", what="AccountGPULimit")
        c.wait_state(g2, "COMPLETED", timeout=30)
        # physics has used the machine, biology has not: with the node busy, bob's
        # later job goes before alice's earlier one.
        # Long enough that the blocker outlasts the next submits and checks, and b runs while
        # a is seen pending, on a loaded machine too.
        blocker = self.submit(alice, "-c", "2", "--", "sleep", "5")
        c.wait_state(blocker, "RUNNING")
        a = self.submit(alice, "-c", "2", "--", "sleep", "3")
        b = self.submit(bob, "-c", "2", "--", "sleep", "3")
        prio = {j["id"]: j for j in c.json("prio")}
        self.assertGreater(prio[b]["fairshare"], prio[a]["fairshare"])
        self.assertEqual(c.job(a)["reason"], "Priority")
        jb = c.wait_state(b, ("RUNNING", "COMPLETED"), timeout=30)
        self.assertEqual(c.job(a)["state"], "PENDING")
        ja = c.wait_state(a, "COMPLETED", timeout=30)
        self.assertGreaterEqual(ja["start_time"], jb["start_time"])
        share = {r["account"]: r for r in c.json("share")}
        self.assertGreater(share["physics"]["raw_usage"], share["biology"]["raw_usage"])
        self.assertGreater(share["north"]["raw_usage"], 0)
        self.assertIn("FairShare", c.cli("share").stdout)

    def test_sighup_reloads_changed_policy(self):
        c = self.c
        c.start_scheduler(extra=["--policy", self.policy])
        self.assertEqual(c.json("policy", "show")["version"], 1)
        c.sched.send_signal(signal.SIGHUP)  # unchanged: no new version
        time.sleep(0.5)
        self.assertEqual(c.json("policy", "show")["version"], 1)
        with open(self.policy, "a") as f:
            f.write("  carol: {default_account: biology}\n")
        c.sched.send_signal(signal.SIGHUP)
        wait_until(lambda: c.json("policy", "show")["version"] == 2, what="version 2 after SIGHUP")
        self.assertEqual(c.json("policy", "show")["versions"][1]["applied_by"], "SIGHUP")
        with open(self.policy, "a") as f:
            f.write("  dave: {default_account: nowhere}\n")
        c.sched.send_signal(signal.SIGHUP)
        wait_until(lambda: "not applied" in c.log(), what="the rejection in the log")
        self.assertEqual(c.json("policy", "show")["version"], 2)
        self.assertIsNone(c.sched.poll())


PREEMPT_POLICY = f"""
version: 1
qos:
  normal: {{priority: 10}}
  urgent: {{priority: 100, preempt: [scavenger, keep]}}
  scavenger: {{priority: 0, preemptible: true, preempt_mode: requeue}}
  oneshot: {{priority: 0, preemptible: true, preempt_mode: cancel}}
  keep: {{priority: 0, preemptible: false}}
default_qos: normal
accounts:
  lab: {{shares: 1}}
users:
  alice: {{default_account: lab, unix_user: {ME}}}
"""


class Preemption(ClusterTest):
    def test_urgent_work_preempts_scavengers_only(self):
        c = self.c
        path = os.path.join(c.dir, "p.yaml")
        with open(path, "w") as f:
            f.write(PREEMPT_POLICY.replace("[scavenger, keep]", "[scavenger, keep, oneshot]"))
        c.start_scheduler(extra=["--policy", path])
        c.start_agent("n1", cpus=3)
        tok = c.cli("admin", "token", "create", "alice").stdout.strip()

        def sub(*args):
            return json.loads(c.cli("--json", "submit", *args, token=tok).stdout)["job_id"]
        keep = sub("-q", "keep", "--", "sleep", "300")
        scav = sub("-q", "scavenger", "--", "sleep", "300")
        once = sub("-q", "oneshot", "--", "sleep", "300")
        for j in (keep, scav, once):
            c.wait_state(j, "RUNNING")
        # A normal job does not preempt; it waits.
        normal = sub("--", "true")
        time.sleep(0.5)
        self.assertEqual(c.job(normal)["state"], "PENDING")
        c.cli("cancel", str(normal))
        # An urgent job takes one CPU from the youngest preemptible job: 'once' (cancel mode).
        urgent = sub("-q", "urgent", "--", "true")
        c.wait_state(urgent, "COMPLETED", timeout=30)
        j = c.wait_state(once, "CANCELLED")
        self.assertIn(f"for job {urgent}", j["note"])
        self.assertIn("cancelled", j["note"])
        self.assertEqual(c.job(keep)["state"], "RUNNING")  # its QOS forbids preemption
        self.assertEqual(c.job(scav)["state"], "RUNNING")
        # Two more urgent CPUs: the scavenger is requeued (keeping its submit time), 'keep' never.
        submit_time = c.job(scav)["submit_time"]
        big = sub("-q", "urgent", "-c", "2", "--", "sleep", "1")
        c.wait_state(big, ("RUNNING", "COMPLETED"), timeout=30)
        j = c.job(scav)
        self.assertEqual(j["requeues"], 1)
        self.assertIn(f"for job {big}", j["note"])
        self.assertIn("requeued", j["note"])
        self.assertEqual(j["submit_time"], submit_time)
        self.assertEqual(c.job(keep)["state"], "RUNNING")
        self.assertIn("preempted", c.cli("show", str(scav)).stdout)
        # Each preemption is in the transparency ledger, and the chain verifies.
        export = os.path.join(c.dir, "ledger.json")
        c.cli("ledger", "export", "--format", "json", "--out", export)
        with open(export) as f:
            text = f.read()
        self.assertEqual(text.count('"kind": "preemption"') + text.count('"kind":"preemption"'), 2, text[:2000])
        c.cli("ledger", "verify")
        # Once the urgent job is done, the scavenger runs again.
        c.wait_state(scav, "RUNNING", timeout=30)
        for jid in (keep, scav):
            c.cli("cancel", str(jid))


class Backfill(ClusterTest):
    def test_easy_backfill_never_delays_the_reservation(self):
        c = self.c
        c.start_scheduler()
        c.start_agent("n1", cpus=4)
        tok = c.add_user("alice", "physics", unix_user=ME)

        def sub(*args):
            return json.loads(c.cli("--json", "submit", *args, token=tok).stdout)["job_id"]
        a = sub("-c", "2", "--time", "1:00:00", "--", "sleep", "300")
        c.wait_state(a, "RUNNING")
        big = sub("-c", "4", "--time", "10", "--", "true")     # must wait for a: reserved at a's end
        short = sub("-c", "1", "--time", "10", "--", "sleep", "300")  # ends before a's limit: backfills
        long = sub("-c", "1", "--time", "2:00:00", "--", "true")  # would delay big: waits
        c.wait_state(short, "RUNNING")
        time.sleep(0.5)
        self.assertEqual((c.job(big)["state"], c.job(big)["reason"]), ("PENDING", "Resources"))
        self.assertEqual((c.job(long)["state"], c.job(long)["reason"]), ("PENDING", "Priority"))
        for j in (a, short, big, long):
            c.cli("cancel", str(j))


if __name__ == "__main__":
    unittest.main()
