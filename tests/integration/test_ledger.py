"""Transparency ledger end to end: real commonsd and agent, a policy applied, jobs
run; `commons ledger verify` holds, the exported entries re-hash with the recipe
of docs/ledger.md, usage totals equal the jobs' own records, and an entry edited
in the SQLite file while commonsd is stopped is named by verify after a restart."""
import csv
import getpass
import hashlib
import io
import json
import os
import signal
import sqlite3

from harness import ClusterTest, wait_until

ME = getpass.getuser()
GENESIS = "0" * 64

POLICY = f"""
version: 1
billing: {{cpu: 1.0, gpu: 10.0, mem_per_gb: 0}}
qos:
  normal: {{priority: 1, max_wall: 1d}}
  cheap: {{priority: 0, max_wall: 1d, usage_factor: 0.5}}
default_qos: normal
accounts:
  nation:
    children:
      uni-a:
        shares: 60
        children:
          physics:
            shares: 1
            children:
              qcd: {{shares: 1}}
      uni-b:
        shares: 40
        children:
          biology: {{shares: 1}}
users:
  alice: {{default_account: qcd, unix_user: {ME}}}
  bob: {{default_account: biology, unix_user: {ME}}}
"""

INSTITUTION = {"qcd": "uni-a", "biology": "uni-b"}
QOS_FACTOR = {"normal": 1.0, "cheap": 0.5}


def entry_hash(e):
    """docs/ledger.md: SHA-256 of prev_hash, seq, time, kind, body joined by newlines."""
    text = f"{e['prev_hash']}\n{e['seq']}\n{e['time']}\n{e['kind']}\n{e['body']}"
    return hashlib.sha256(text.encode()).hexdigest()


def check_chain(test, entries):
    prev = GENESIS
    for i, e in enumerate(entries, 1):
        test.assertEqual(int(e["seq"]), i)
        test.assertEqual(e["prev_hash"], prev)
        test.assertEqual(entry_hash(e), e["hash"], f"entry {i}")
        # Canonical: keys sorted, no spaces (numbers are compared as stored, not reformatted).
        keys = [k for k, _ in json.loads(e["body"], object_pairs_hook=list)]
        test.assertEqual(keys, sorted(keys))
        test.assertNotIn(" ", e["body"])
        prev = e["hash"]


class Ledger(ClusterTest):
    def setUp(self):
        super().setUp()
        self.policy = os.path.join(self.c.dir, "policy.yaml")
        with open(self.policy, "w") as f:
            f.write(POLICY)

    def token(self, user):
        return self.c.cli("admin", "token", "create", user).stdout.strip()

    def submit(self, token, *args):
        return json.loads(self.c.cli("--json", "submit", *args, token=token).stdout)["job_id"]

    def export(self, fmt, token=None):
        out = os.path.join(self.c.dir, f"ledger.{fmt}")
        self.c.cli("ledger", "export", "--format", fmt, "--out", out, token=token)
        with open(out, newline="") as f:
            return f.read()

    def test_ledger(self):
        c = self.c
        c.start_scheduler()
        # Jobs before any policy are recorded too, without billing.
        c.start_agent("n1", cpus=4, gpus=2)
        pre = json.loads(c.cli("--json", "submit", "--", "true").stdout)["job_id"]
        c.wait_state(pre, "COMPLETED", timeout=30)
        c.cli("policy", "apply", self.policy)
        alice, bob = self.token("alice"), self.token("bob")
        jobs = [self.submit(alice, "-c", "2", "--", "sleep", "1"),
                self.submit(alice, "-G", "1", "--qos", "cheap", "--", "sleep", "1"),
                self.submit(bob, "--", "false"),
                self.submit(bob, "-G", "2", "--", "sleep", "1")]
        long = self.submit(alice, "--", "sleep", "60")
        c.wait_state(long, "RUNNING", timeout=30)
        c.cli("cancel", str(long))
        never = self.submit(bob, "--hold", "--", "true")
        c.cli("cancel", str(never))  # never ran: no entry
        for j in jobs:
            c.wait_state(j, ("COMPLETED", "FAILED"), timeout=60)
        wait_until(lambda: c.job(long)["state"] == "CANCELLED", what="cancel")
        ran = [pre] + jobs + [long]

        # The chain verifies, for any user.
        p = c.cli("ledger", "verify", token=bob)
        self.assertIn("ledger ok: 7 entries", p.stdout)
        v = c.json("ledger", "verify")
        self.assertTrue(v["valid"])
        self.assertEqual(v["entries"], 7)

        # Export: JSON and CSV hold the same entries, and both re-hash.
        entries = json.loads(self.export("json"))
        check_chain(self, entries)
        rows = list(csv.DictReader(io.StringIO(self.export("csv"))))
        check_chain(self, rows)
        self.assertEqual([r["hash"] for r in rows], [e["hash"] for e in entries])
        self.assertEqual(entries[-1]["hash"], v["head_hash"])
        kinds = [e["kind"] for e in entries]
        self.assertEqual(kinds, ["job_end", "policy_change"] + ["job_end"] * 5)
        pol = json.loads(entries[1]["body"])
        shown = c.json("policy", "show")["policy"]
        self.assertEqual((pol["version"], pol["sha256"], pol["applied_by"]), (1, shown["sha256"], "admin"))
        self.assertEqual(pol["sha256"], hashlib.sha256(POLICY.encode()).hexdigest())

        # Every job that ran has one job_end entry matching the scheduler's record.
        by_job = {b["job"]: b for b in (json.loads(e["body"]) for e in entries if e["kind"] == "job_end")}
        self.assertEqual(sorted(by_job), sorted(ran))
        queue = {j["id"]: j for j in c.json("queue", "--all")}
        expect = {}
        for jid in ran:
            q, b = queue[jid], by_job[jid]
            self.assertEqual((b["user"], b["account"], b["cpus"], b["gpus"], b["start"], b["end"], b["state"]),
                             (q["user"], q["account"], q["cpus"], q["gpus"], q["start_time"], q["end_time"],
                              q["state"]), f"job {jid}")
            secs = q["end_time"] - q["start_time"]
            if jid == pre:
                self.assertNotIn("billed", b)
                self.assertEqual((b["policy_version"], b["institution"]), (0, q["account"]))
                continue
            self.assertEqual((b["policy_version"], b["institution"], b["qos"]), (1, INSTITUTION[q["account"]], q["qos"]))
            billed = secs * QOS_FACTOR[q["qos"]] * (1.0 * q["cpus"] + 10.0 * q["gpus"])
            self.assertAlmostEqual(b["billed"], billed, places=6)
            tot = expect.setdefault(INSTITUTION[q["account"]], [0, 0.0, 0.0, 0.0])
            tot[0] += 1
            tot[1] += secs * q["cpus"] / 3600
            tot[2] += secs * q["gpus"] / 3600
            tot[3] += billed

        # usage --by institution equals the sums over the jobs (all in one month
        # unless the test straddles midnight at the month's end: then sum months).
        report = c.json("usage", "--by", "institution", "--period", "month")
        got = {}
        for r in report:
            g = got.setdefault(r["name"], [0, 0.0, 0.0, 0.0])
            for i, k in enumerate(("jobs", "cpu_hours", "gpu_hours", "billed")):
                g[i] += r[k]
        self.assertEqual(set(got), set(expect) | {"root"})  # the pre-policy job ran under account root
        for inst, tot in expect.items():
            self.assertEqual(got[inst][0], tot[0])
            for i in (1, 2, 3):
                self.assertAlmostEqual(got[inst][i], tot[i], places=6)
        accounts = {r["name"] for r in c.json("usage", "--by", "account", "--period", "day")}
        self.assertEqual(accounts, {"qcd", "biology", "root"})
        self.assertIn("uni-a", c.cli("usage", "--by", "institution").stdout)
        self.assertEqual(c.json("usage", "--by", "account", "--since", "2999-01-01"), [])

        # Who sees what: a user sees only their own usage by user and may not export.
        self.assertEqual({r["name"] for r in c.json("usage", "--by", "user", token=alice)}, {"alice"})
        self.assertEqual({r["name"] for r in c.json("usage", "--by", "user")}, {"admin", "alice", "bob"})
        p = c.cli("ledger", "export", token=alice, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("for admins", p.stderr)

        # Bad input.
        for args in (["usage", "--by", "group"], ["usage"], ["usage", "--by", "user", "--since", "yesterday"],
                     ["ledger", "export", "--format", "xml"], ["ledger", "verify", "--anchor", "3:zz"], ["ledger"],
                     ["ledger", "shred"], ["usage", "--by", "user", "--period", "year"]):
            p = c.cli(*args, check=False)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn("usage:", p.stderr)
        # An anchor: the published head matches; a different hash does not.
        self.assertIn("anchor matches", c.cli("ledger", "verify", "--anchor", f"7:{v['head_hash']}").stdout)
        p = c.cli("ledger", "verify", "--anchor", f"7:{GENESIS}", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("anchor does not match", p.stdout)

        # Tampering with the file while commonsd is stopped is found after a restart.
        db = os.path.join(c.state, "commons.db")
        body3 = entries[2]["body"]

        def tamper(sql, *args):
            c.kill_scheduler(signal.SIGTERM)
            con = sqlite3.connect(db)
            con.execute(sql, args)
            con.commit()
            con.close()
            c.start_scheduler()

        forged = json.loads(body3)
        forged["cpus"] += 1
        tamper("UPDATE ledger SET body=? WHERE seq=3", json.dumps(forged, sort_keys=True, separators=(",", ":")))
        p = c.cli("ledger", "verify", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("BROKEN at entry 3 (changed)", p.stdout)
        tamper("UPDATE ledger SET body=? WHERE seq=3", body3)
        self.assertEqual(c.cli("ledger", "verify").returncode, 0)
        tamper("DELETE FROM ledger WHERE seq=5")
        p = c.cli("--json", "ledger", "verify", check=False)
        self.assertEqual(p.returncode, 1)
        v = json.loads(p.stdout)
        self.assertEqual((v["valid"], v["first_bad_seq"], v["problem"]), (False, 5, "missing"))
        self.assertIn("entry 5 is missing", v["message"])


class LedgerRequeue(ClusterTest):
    node_timeout = 2

    def test_lost_node_requeue_and_node_fail(self):
        c = self.c
        c.start_scheduler()
        c.start_agent("n1", cpus=2)
        token = c.add_user("alice", "physics", unix_user=ME)
        lost = json.loads(c.cli("--json", "submit", "--", "sleep", "300", token=token).stdout)["job_id"]
        again = json.loads(c.cli("--json", "submit", "--requeue", "--", "sleep", "300", token=token).stdout)["job_id"]
        c.wait_state(lost, "RUNNING")
        first = c.wait_state(again, "RUNNING")
        c.agents["n1"].send_signal(signal.SIGKILL)
        c.agents["n1"].wait()
        wait_until(lambda: c.job(again)["requeues"] == 1, timeout=15, what="requeue")
        c.start_agent("n1", cpus=2)
        second = c.wait_state(again, "RUNNING", timeout=30)
        c.cli("cancel", str(again))
        c.wait_state(again, "CANCELLED")
        self.assertEqual(c.cli("ledger", "verify").returncode, 0)
        entries = json.loads(c.cli("--json", "ledger", "export").stdout)
        check_chain(self, entries)
        got = [(e["kind"], json.loads(e["body"])) for e in entries]
        self.assertEqual(sorted((k, b["job"], b["state"], b["attempt"]) for k, b in got),
                         [("job_end", lost, "NODE_FAIL", 0), ("job_end", again, "CANCELLED", 1),
                          ("job_requeue", again, "REQUEUED", 0)])
        runs = {(k, b["job"]): b for k, b in got}
        self.assertEqual(runs[("job_requeue", again)]["start"], first["start_time"])
        self.assertEqual(runs[("job_end", again)]["start"], second["start_time"])
        self.assertLessEqual(runs[("job_requeue", again)]["end"], second["start_time"])
        rows = c.json("usage", "--by", "user", "--period", "month")
        self.assertEqual((sum(r["jobs"] for r in rows), sum(r["runs"] for r in rows)), (2, 3))
        secs = sum(b["end"] - b["start"] for _, b in got)
        self.assertAlmostEqual(sum(r["cpu_hours"] for r in rows), secs / 3600, places=9)
