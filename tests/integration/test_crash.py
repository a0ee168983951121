"""Crash suite (issue 10): kill -9 commonsd while 8 clients submit 10,000 jobs and jobs
run on an agent; then every acknowledged job exists exactly once, ids are never reused,
and running jobs are reconciled (none lost, none run twice). Also a state directory that
stops being writable: new work is refused with a clear error, nothing stored is lost."""
import getpass
import json
import os
import signal
import subprocess
import threading
import time
import unittest

import pynng

from harness import ClusterTest, wait_until

ME = getpass.getuser()
TOTAL, CLIENTS = 10000, 8


class Client:
    """One protocol client over a real nng socket (the CLI's wire format)."""

    def __init__(self, addr, token):
        self.addr, self.token = addr, token
        self.sock = None

    def call(self, req, timeout_ms=2000):
        if self.sock is None:
            self.sock = pynng.Req0(dial=self.addr, recv_timeout=timeout_ms, send_timeout=timeout_ms,
                                   block_on_dial=False)
        try:
            self.sock.send(json.dumps(dict(req, v=1, token=self.token)).encode())
            return json.loads(self.sock.recv())
        except pynng.exceptions.NNGException:
            self.sock.close()  # a fresh socket, so a late reply is never taken for a new request
            self.sock = None
            return None


class CrashSuite(ClusterTest):
    def test_kill9_during_10000_submissions(self):
        c = self.c
        c.start_scheduler(extra=["--sync", "normal"])
        c.start_agent("n1", cpus=4)
        token = c.add_user("alice", "physics", unix_user=ME)
        work = os.path.join(c.dir, "w")
        os.makedirs(work)
        ran = os.path.join(work, "ran.log")
        acked, runners, lock = [], [], threading.Lock()
        per_client = TOTAL // CLIENTS

        def client(k):
            cl = Client(c.addr, token)
            done = 0
            while done < per_client:
                # Every 250th job runs (a short sleep that logs its id once per run); the rest are held.
                runs = (k * per_client + done) % 250 == 0
                if runs:
                    job = {"command": ["sh", "-c", f"echo $COMMONS_JOB_ID >> {ran}; sleep 1"], "workdir": work}
                else:
                    job = {"command": ["true"], "workdir": work, "hold": True}
                r = cl.call({"type": "job.submit", "job": job})
                if r and r.get("ok"):
                    with lock:
                        acked.append(r["job_id"])
                        if runs:
                            runners.append(r["job_id"])
                    done += 1
                elif r is None:
                    time.sleep(0.05)  # commonsd is down: retry until it is back
                else:
                    raise AssertionError(r)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= TOTAL // 2, timeout=120, what="half the submissions")
        c.kill_scheduler(signal.SIGKILL)
        at_kill = len(acked)
        time.sleep(0.5)
        c.start_scheduler(extra=["--sync", "normal"])
        for t in threads:
            t.join(timeout=300)
        elapsed = time.monotonic() - t0
        self.assertEqual(len(acked), TOTAL)
        self.assertEqual(len(set(acked)), TOTAL, "an id was acknowledged twice")
        jobs = {j["id"]: j for j in c.json("queue", "--all")}
        missing = [j for j in acked if j not in jobs]
        self.assertEqual(missing, [], f"{len(missing)} acknowledged jobs lost (killed after {at_kill} acks)")
        # Running jobs: each ran exactly once and completed, across the restart.
        runners.sort()

        def all_done():
            states = {j["id"]: j["state"] for j in c.json("queue", "--all")}
            return all(states[j] in ("COMPLETED", "FAILED", "NODE_FAIL") for j in runners)
        wait_until(all_done, timeout=120, what="the running jobs to end")
        with open(ran) as f:
            lines = [int(x) for x in f.read().split()]
        self.assertEqual(sorted(lines), sorted(set(lines)), "a job ran twice")
        states = {j["id"]: j["state"] for j in c.json("queue", "--all")}
        completed = [j for j in runners if states[j] == "COMPLETED"]
        self.assertEqual(completed, runners, "a running job was lost")
        # Every job that ran completed. Besides the acknowledged runners, that may be a
        # submission whose reply never came (commonsd killed, or slower than the client's
        # 2 s timeout, after it committed): the client sent it again as a new job.
        self.assertLessEqual(set(runners), set(lines), "an acknowledged job never ran")
        self.assertEqual([j for j in lines if states.get(j) != "COMPLETED"], [], "a job ran but did not complete")
        print(f"\n{TOTAL} acknowledged submissions from {CLIENTS} clients in {elapsed:.1f} s, "
              f"commonsd killed after {at_kill}")


class ReadOnlyState(ClusterTest):
    def test_unwritable_state_refuses_new_work_and_keeps_the_rest(self):
        c = self.c
        c.start_scheduler()
        c.start_agent("n1", cpus=1)
        token = c.add_user("alice", "physics", unix_user=ME)
        first = json.loads(c.cli("--json", "submit", "--hold", "--", "true", token=token).stdout)["job_id"]
        # Make the database read-only underneath commonsd: a bind mount needs root; as
        # anyone, a SQLite lock held by another process has the same effect on writers.
        db = os.path.join(c.state, "commons.db")
        locker = subprocess.Popen(["python3", "-c", (
            "import sqlite3,sys,time\n"
            f"con=sqlite3.connect({db!r}, timeout=1, isolation_level=None)\n"
            "con.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
        self.addCleanup(locker.kill)
        self.assertEqual(locker.stdout.readline().strip(), "locked")
        p = c.cli("submit", "--hold", "--", "true", token=token, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("unavailable", p.stderr)
        # Reads still work, and what was stored is still there.
        self.assertEqual(c.job(first)["state"], "PENDING")
        locker.kill()
        locker.wait()
        # Once writable again, new work is accepted (the probe runs every 5 s).
        wait_until(lambda: c.cli("submit", "--hold", "--", "true", token=token, check=False).returncode == 0,
                   timeout=30, what="commonsd to accept work again")
        self.assertIn("writable again", c.log())
        self.assertIsNone(c.sched.poll())


if __name__ == "__main__":
    unittest.main()
