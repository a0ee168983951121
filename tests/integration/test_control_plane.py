"""End to end: commons CLI -> commonsd -> commons-agent, on 127.0.0.1."""
import getpass
import os
import pwd
import signal
import time
import unittest

from harness import ClusterTest, read_text, wait_until

ME = getpass.getuser()


class ControlPlane(ClusterTest):
    def setUp(self):
        super().setUp()
        self.c.start_scheduler()
        self.c.start_agent("n1", cpus=4, memory_mb=4096)
        self.alice = self.c.add_user("alice", "physics", unix_user=ME)
        self.bob = self.c.add_user("bob", "biology", unix_user=ME)
        self.work = os.path.join(self.c.dir, "work")
        os.makedirs(self.work, exist_ok=True)

    def submit(self, *args, token=None, cwd=None):
        p = self.c.cli("--json", "submit", *args, token=token or self.alice, cwd=cwd or self.work)
        import json
        return json.loads(p.stdout)["job_id"]

    def read(self, name):
        with open(os.path.join(self.work, name)) as f:
            return f.read()

    def test_command_runs_and_completes(self):
        jid = self.submit("--output", "out-%j.txt", "--", "sh", "-c", "echo hello $COMMONS_JOB_ID; pwd")
        job = self.c.wait_state(jid, "COMPLETED")
        self.assertEqual(job["exit_code"], 0)
        self.assertEqual(self.read(f"out-{jid}.txt"), f"hello {jid}\n{self.work}\n")
        self.assertEqual(job["nodelist"], "n1")
        self.assertGreater(job["end_time"], 0)

    def test_detached_agent_logs_to_its_state_dir(self):
        # Without --foreground the agent detaches (the command returns), logs to
        # STATE/agent.log, keeps its PID in STATE/agent.pid, and runs jobs from there.
        p = self.c.start_agent("n2", cpus=8, detach=True)
        state = os.path.join(self.c.dir, "agent-n2")
        jid = self.submit("--cpus-per-task", "6", "--output", "big-%j.txt", "--", "sh", "-c", "pwd")
        job = self.c.wait_state(jid, "COMPLETED")
        self.assertEqual(job["nodelist"], "n2")  # n1 has 4 CPUs
        self.assertEqual(self.read(f"big-{jid}.txt"), f"{self.work}\n")  # its workdir, not the daemon's /
        log = os.path.join(state, "agent.log")
        self.assertIn("registered as n2", read_text(log))
        self.assertIn(f"job {jid}.0 started", read_text(log))
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        self.assertIn("agent n2 stopped", read_text(log))
        self.assertFalse(os.path.exists(os.path.join(state, "agent.pid")))

    def test_failure_exit_code_and_signal(self):
        a = self.submit("--", "sh", "-c", "exit 3")
        b = self.submit("--", "sh", "-c", "kill -9 $$")
        ja, jb = self.c.wait_state(a, "FAILED"), self.c.wait_state(b, "FAILED")
        self.assertEqual(ja["exit_code"], 3)
        self.assertEqual(jb["signal"], 9)

    def test_script_with_directives_and_args(self):
        script = os.path.join(self.work, "job.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\n#COMMONS --job-name=dirjob --output=dir-%j.out\n#COMMONS -c 2\n"
                    "echo cpus=$COMMONS_CPUS args=$*\n")
        jid = self.submit(script)
        job = self.c.wait_state(jid, "COMPLETED")
        self.assertEqual(job["name"], "dirjob")
        self.assertEqual(job["cpus"], 2)
        self.assertEqual(self.read(f"dir-{jid}.out"), "cpus=2 args=\n")
        # Flags override directives; script arguments are passed on.
        jid = self.submit("-J", "flagname", script, "x", "y")
        job = self.c.wait_state(jid, "COMPLETED")
        self.assertEqual(job["name"], "flagname")
        self.assertEqual(self.read(f"dir-{jid}.out"), "cpus=2 args=x y\n")

    def test_yaml_job_file(self):
        path = os.path.join(self.work, "job.yaml")
        with open(path, "w") as f:
            f.write("name: yamljob\ncommand: [sh, -c, 'echo $GREETING']\nenv:\n  GREETING: bonjour\n"
                    "stdout: yaml.out\ntime: 5m\n")
        jid = self.submit(path)
        job = self.c.wait_state(jid, "COMPLETED")
        self.assertEqual(job["time_limit_s"], 300)
        self.assertEqual(self.read("yaml.out"), "bonjour\n")
        with open(path, "a") as f:
            f.write("gpus: lots\n")
        p = self.c.cli("submit", path, token=self.alice, check=False, cwd=self.work)
        self.assertEqual(p.returncode, 2)
        self.assertIn("job.yaml:7:7: field 'gpus'", p.stderr)

    def test_array_with_throttle(self):
        p = self.c.cli("--json", "submit", "--array", "1-6%2", "--output", "arr-%A_%a.out", "--", "sh", "-c",
                       "echo $COMMONS_ARRAY_TASK_ID; sleep 0.6", token=self.alice, cwd=self.work)
        import json
        first, last = json.loads(p.stdout)["array_ids"]
        self.assertEqual(last - first, 5)
        peak = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            jobs = self.c.json("queue", "--all", "-u", "alice")
            arr = [j for j in jobs if j.get("array_job_id") == first]
            peak = max(peak, sum(j["state"] == "RUNNING" for j in arr))
            if all(j["state"] == "COMPLETED" for j in arr) and len(arr) == 6:
                break
            if any(j["state"] == "PENDING" and j["reason"] == "ArrayTaskLimit" for j in arr):
                self.saw_throttle = True
            time.sleep(0.05)
        self.assertEqual(peak, 2, "at most 2 tasks may run at once, and 2 should")
        self.assertTrue(getattr(self, "saw_throttle", False))
        for i in range(1, 7):
            self.assertEqual(self.read(f"arr-{first}_{i}.out"), f"{i}\n")

    def test_dependencies(self):
        # Long enough to outlast the four submits and the check below on a loaded machine.
        bad = self.submit("--", "sh", "-c", "sleep 2; exit 1")
        good = self.submit("--", "sh", "-c", "sleep 2")
        after_bad = self.submit("-d", f"afterok:{bad}", "--", "true")
        any_bad = self.submit("-d", f"afterany:{bad}", "--", "true")
        after_good = self.submit("-d", f"afterok:{good}", "--", "true")
        self.assertEqual(self.c.job(after_good)["reason"], "Dependency")
        self.c.wait_state(after_good, "COMPLETED")
        self.c.wait_state(any_bad, "COMPLETED")
        wait_until(lambda: self.c.job(after_bad)["reason"] == "DependencyNeverSatisfied", what="never satisfied")
        self.assertEqual(self.c.job(after_bad)["state"], "PENDING")
        p = self.c.cli("submit", "-d", "afterok:99999", "--", "true", token=self.alice, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("job 99999 does not exist", p.stderr)

    def test_hold_and_release(self):
        jid = self.submit("--hold", "--", "true")
        time.sleep(0.5)
        job = self.c.job(jid)
        self.assertEqual((job["state"], job["reason"]), ("PENDING", "Held"))
        self.c.cli("release", str(jid), token=self.alice)
        self.c.wait_state(jid, "COMPLETED")
        p = self.c.cli("hold", str(jid), token=self.alice, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("only pending jobs", p.stderr)

    def test_time_limit(self):
        jid = self.submit("--time", "2s", "--", "sh", "-c", "trap '' TERM; sleep 60")
        job = self.c.wait_state(jid, "TIMEOUT", timeout=20)
        self.assertLess(job["end_time"] - job["start_time"], 10)

    def test_cancel_running_ends_process_tree(self):
        marker = os.path.join(self.work, "tree.pid")
        jid = self.submit("--", "sh", "-c", f"(sleep 300 & echo $! > {marker}; wait) ; sleep 300")
        self.c.wait_state(jid, "RUNNING")
        def read_marker():
            if os.path.exists(marker):
                with open(marker) as f:
                    return f.read().strip()
        child = int(wait_until(read_marker, what="grandchild pid"))
        self.c.cli("cancel", str(jid), token=self.alice)
        self.assertEqual(self.c.job(jid)["state"], "CANCELLED")

        def gone():
            try:
                os.kill(child, 0)
                with open(f"/proc/{child}/stat") as f:
                    return f.read().split()[2] == "Z"
            except (ProcessLookupError, FileNotFoundError):  # it may end between the two calls
                return True
        wait_until(gone, timeout=15, what="the job's grandchild to end")
        wait_until(lambda: self.c.json("nodes")[0]["cpus_used"] == 0, what="CPUs to be released")

    def test_resources_and_fifo(self):
        first = self.submit("-c", "4", "--", "sleep", "1")
        second = self.submit("-c", "1", "--", "true")
        self.c.wait_state(first, "RUNNING")
        # Strict submission order: the small job waits behind... nothing here, it is second and
        # the node is full, so it waits for Resources.
        self.assertIn(self.c.job(second)["reason"], ("Resources", "Priority"))
        self.c.wait_state(second, "COMPLETED")
        p = self.c.cli("submit", "-c", "64", "--", "true", token=self.alice, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("unsatisfiable", p.stderr)
        self.assertIn("the largest node has 4 CPUs", p.stderr)

    def test_authorization(self):
        script = os.path.join(self.work, "secret.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\necho SECRET-VALUE\nsleep 30\n")
        jid = self.submit(script)
        mine = self.c.job(jid, token=self.alice)
        self.assertIn("SECRET-VALUE", mine["spec"]["script"])
        theirs = self.c.job(jid, token=self.bob)
        self.assertNotIn("script", theirs["spec"])
        self.assertNotIn("SECRET-VALUE", str(theirs))
        self.assertIn("SECRET-VALUE", self.c.job(jid)["spec"]["script"])  # admin
        p = self.c.cli("cancel", str(jid), token=self.bob, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("belongs to another user", p.stderr)
        for bad in ("", "cm_" + "0" * 64):
            p = self.c.cli("queue", token=bad, check=False)
            self.assertEqual(p.returncode, 2 if bad == "" else 1, p.stderr)
        p = self.c.cli("admin", "user", "add", "eve", "--account", "physics", token=self.bob, check=False)
        self.assertIn("forbidden", p.stderr)
        p = self.c.cli("submit", "-A", "biology", "--", "true", token=self.alice, check=False)
        self.assertIn("may not charge account 'biology'", p.stderr)
        # A token past its expiry is refused as expired.
        short = self.c.cli("admin", "token", "create", "bob", "--expires", "2s").stdout.strip()
        self.assertEqual(self.c.cli("whoami", token=short).stdout.strip(), "bob")
        time.sleep(3.1)
        p = self.c.cli("whoami", token=short, check=False)
        self.assertIn("expired token", p.stderr)
        p = self.c.cli("admin", "token", "create", "bob", "--expires", "soon", check=False)
        self.assertEqual(p.returncode, 2)
        # Revoked tokens stop working at once.
        self.c.cli("admin", "token", "revoke", "bob")
        p = self.c.cli("queue", token=self.bob, check=False)
        self.assertIn("unknown or revoked token", p.stderr)
        # An admin may cancel anyone's job (a fresh one: the first may have ended by now).
        other = self.submit("--", "sleep", "30")
        self.c.cli("cancel", str(other))
        self.assertEqual(self.c.job(other)["state"], "CANCELLED")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to switch users")
    def test_runs_as_mapped_unix_user(self):
        nobody = pwd.getpwnam("nobody")
        token = self.c.add_user("carol", "chem", unix_user="nobody")
        os.chmod(self.c.dir, 0o755)  # mkdtemp makes it 0700: nobody could not reach the workdir
        os.chmod(self.work, 0o777)
        jid = self.submit("--output", "ids-%j.out", "--", "id", "-u", token=token)
        self.c.wait_state(jid, "COMPLETED")
        self.assertEqual(self.read(f"ids-{jid}.out").strip(), str(nobody.pw_uid))
        # A mapping to an account that does not exist ends the job with the reason.
        token = self.c.add_user("dave", "chem", unix_user="no-such-user-xyz")
        jid = self.submit("--", "true", token=token)
        job = self.c.wait_state(jid, "FAILED")
        self.assertIn("no-such-user-xyz", job.get("error", ""))


if __name__ == "__main__":
    unittest.main()
