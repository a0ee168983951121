"""Crash behaviour: kill -9 of commonsd and of an agent."""
import getpass
import json
import os
import signal
import subprocess
import threading
import time
import unittest

from harness import TIME_SCALE, ClusterTest, binary, wait_until

ME = getpass.getuser()


class SchedulerCrash(ClusterTest):
    def test_acknowledged_jobs_survive_kill9(self):
        c = self.c
        c.start_scheduler()
        c.start_agent("n1", cpus=2)
        token = c.add_user("alice", "physics", unix_user=ME)
        work = os.path.join(c.dir, "w")
        os.makedirs(work)
        marker = os.path.join(work, "ran-%j")
        long_job = json.loads(c.cli("--json", "submit", "--output", "long.out", "--", "sh", "-c",
                                    "sleep 3; echo done", token=token, cwd=work).stdout)["job_id"]
        c.wait_state(long_job, "RUNNING")

        # Four clients submit as fast as they can while commonsd is killed.
        acked, lock, stop = [], threading.Lock(), threading.Event()

        def client():
            env = c.env(token)
            while not stop.is_set():
                p = subprocess.run([binary("cli/commons"), "--json", "submit", "--hold", "--", "true"],
                                   env=env, capture_output=True, text=True, cwd=work)
                if p.returncode == 0:
                    with lock:
                        acked.append(json.loads(p.stdout)["job_id"])
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 40, timeout=30, what="some acknowledged submissions")
        c.kill_scheduler(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join()
        c.start_scheduler()
        jobs = {j["id"]: j for j in c.json("queue", "--all")}
        for jid in acked:
            self.assertIn(jid, jobs, f"acknowledged job {jid} was lost")
        self.assertEqual(len(acked), len(set(acked)), "a job id was handed out twice")
        # The running job kept running on its agent and its end is recorded after the restart.
        job = c.wait_state(long_job, "COMPLETED", timeout=30)
        self.assertEqual(job["exit_code"], 0)
        with open(os.path.join(work, "long.out")) as f:
            self.assertEqual(f.read(), "done\n")
        # Ids are never reused.
        new = json.loads(c.cli("--json", "submit", "--", "true", token=token, cwd=work).stdout)["job_id"]
        self.assertGreater(new, max(jobs))


class AgentCrash(ClusterTest):
    node_timeout = 2

    def test_node_down_ends_or_requeues_jobs(self):
        c = self.c
        c.start_scheduler()
        c.start_agent("n1", cpus=2)
        token = c.add_user("alice", "physics", unix_user=ME)
        failing = json.loads(c.cli("--json", "submit", "--", "sleep", "300", token=token).stdout)["job_id"]
        requeue = json.loads(c.cli("--json", "submit", "--requeue", "--", "sleep", "300", token=token).stdout)["job_id"]
        c.wait_state(failing, "RUNNING")
        c.wait_state(requeue, "RUNNING")
        c.agents["n1"].send_signal(signal.SIGKILL)
        c.agents["n1"].wait()
        t0 = time.monotonic()
        wait_until(lambda: c.json("nodes")[0]["state"] == "DOWN", timeout=10, what="node DOWN")
        self.assertLess(time.monotonic() - t0, 6 * TIME_SCALE)
        self.assertEqual(c.job(failing)["state"], "NODE_FAIL")
        job = c.job(requeue)
        self.assertEqual((job["state"], job["requeues"]), ("PENDING", 1))
        self.assertIn("stopped responding", job["error"])
        # The restarted agent rejoins, kills the orphaned old instances, and the requeued job runs again.
        c.start_agent("n1", cpus=2)
        job = c.wait_state(requeue, "RUNNING")
        self.assertEqual(job["state"], "RUNNING")
        self.assertEqual(c.job(requeue)["requeues"], 1)
        c.cli("cancel", str(requeue))
        c.wait_state(requeue, "CANCELLED")


class CorruptState(ClusterTest):
    def test_corrupt_database_is_refused(self):
        c = self.c
        c.start_scheduler()
        c.kill_scheduler(signal.SIGTERM)
        db = os.path.join(c.state, "commons.db")
        for extra in ("-wal", "-shm"):
            if os.path.exists(db + extra):
                os.remove(db + extra)
        with open(db, "r+b") as f:
            f.seek(0)
            f.write(b"this is not a database" * 10)
        p = subprocess.run([binary("scheduler/commonsd"), "--state", c.state, "--listen", c.addr, "--foreground"],
                           capture_output=True, text=True, timeout=20)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("corrupt or not a Commons database", p.stderr)


class Teardown(ClusterTest):
    def test_teardown_leaves_no_cgroup(self):
        """The harness's teardown (kill -9, --kill-jobs) leaves none of the agent's cgroup
        folders, also the one an agent killed between a job's cgroup and its record leaves
        behind (SchedulerCrash used to leave one when its last job was being launched)."""
        c = self.c
        c.start_scheduler()
        c.start_agent("n1", cpus=2)
        token = c.add_user("alice", "physics", unix_user=ME)
        jid = json.loads(c.cli("--json", "submit", "--", "sleep", "300", token=token).stdout)["job_id"]
        c.wait_state(jid, "RUNNING")
        base = c.agent_cgroup("n1")
        if not (base and os.path.isdir(os.path.join(base, f"job-{jid}-0"))):
            self.skipTest("the agent does not contain jobs in cgroups on this host")
        # What such a launch leaves: an empty job folder that no record names.
        os.mkdir(os.path.join(base, "job-999-0"))
        c.stop()
        self.assertFalse(os.path.exists(base), f"{base} was left behind")


if __name__ == "__main__":
    unittest.main()
