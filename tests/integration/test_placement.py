"""commonsd with topology-reporting nodes: specific PUs and GPUs follow locality,
`commons nodes --topology`, drain/resume, and the spawn relay for multi-node jobs.
Nodes are played by a scripted agent (fake_agent.py) to see the exact launches."""
import getpass
import json
import time
import unittest

from fake_agent import FakeAgent, user_request
from harness import ClusterTest, wait_until

ME = getpass.getuser()

TOPO = {"source": "xml:test", "binding": "recorded", "limits": "cgroup", "packages": 2, "cores": 8, "pus": 8,
        "numa": [{"id": 0, "pus": [0, 1, 2, 3], "memory_mb": 2048}, {"id": 1, "pus": [4, 5, 6, 7], "memory_mb": 2048}],
        "gpus": [{"index": 0, "numa": 0}, {"index": 1, "numa": 0}, {"index": 2, "numa": 1}, {"index": 3, "numa": 1}]}


class Placement(ClusterTest):
    def setUp(self):
        super().setUp()
        self.c.start_scheduler()
        self.tok = self.c.add_user("alice", "physics", unix_user=ME)

    def submit(self, *args):
        return json.loads(self.c.cli("--json", "submit", *args, token=self.tok).stdout)["job_id"]

    def launches(self, agent):
        cmds = agent.poll()
        return {c["job"]["id"]: c["job"] for c in cmds if c["op"] == "launch"}

    def test_pus_and_gpus_follow_numa(self):
        big = FakeAgent(self.c, "big", cpus=8, gpus=4, topology=TOPO)
        self.assertTrue(big.reply["ok"], big.reply)
        a = self.submit("-c", "3", "-G", "1", "--", "true")
        b = self.submit("-c", "4", "-G", "2", "--", "true")
        launches = {}
        wait_until(lambda: launches.update(self.launches(big)) or len(launches) == 2, what="two launches")
        la, lb = launches[a], launches[b]
        numa_a = {p // 4 for p in la["cpu_list"]}
        self.assertEqual(len(la["cpu_list"]), 3)
        self.assertEqual(len(numa_a), 1, la)
        self.assertEqual(la["numa"], list(numa_a))
        self.assertEqual({g // 2 for g in la["gpu_list"]}, numa_a)
        self.assertEqual(len(lb["cpu_list"]), 4)
        self.assertTrue(all(p // 4 not in numa_a for p in lb["cpu_list"]), lb)
        self.assertTrue(all(g // 2 not in numa_a for g in lb["gpu_list"]), lb)
        shown = self.c.json("nodes", "--topology", "big")
        self.assertEqual(sorted(shown["pus_used"]), sorted(la["cpu_list"] + lb["cpu_list"]))
        self.assertIn("NUMA", self.c.cli("nodes", "--topology", "big").stdout)
        # The end of a job frees its PUs for the next one.
        big.running = [[a, 0], [b, 0]]
        big.event(id=a, attempt=0, event="ended", exit_code=0, signal=0)
        big.running = [[b, 0]]
        wait_until(lambda: self.c.job(a)["state"] == "COMPLETED", what="a completes")
        self.assertEqual(sorted(self.c.json("nodes", "--topology", "big")["pus_used"]), sorted(lb["cpu_list"]))
        # A node offering other counts than its topology (agent --cpus) is placed by counts, unbound.
        odd = FakeAgent(self.c, "odd", cpus=4, topology=TOPO)
        self.assertTrue(odd.reply["ok"])
        self.assertIn("placing by counts", self.c.log())
        self.assertIsNone(self.c.json("nodes", "--topology", "odd")["topology"])

    def test_drain_and_resume(self):
        n = FakeAgent(self.c, "n1", cpus=4)
        running = self.submit("--", "sleep", "100")
        wait_until(lambda: running in self.launches(n), what="launch")
        n.running = [[running, 0]]
        p = self.c.cli("nodes", "drain", "n1", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("reason", p.stderr)
        self.c.cli("nodes", "drain", "n1", "--reason", "disk replacement")
        node = self.c.json("nodes")[0]
        self.assertEqual((node["state"], node["reason"]), ("DRAINING", "disk replacement"))
        waiting = self.submit("--", "true")
        time.sleep(0.5)
        self.assertEqual(self.c.job(waiting)["reason"], "ReqNodeNotAvail")
        self.assertEqual(self.c.job(running)["state"], "RUNNING")
        p = self.c.cli("nodes", "drain", "n1", "--reason", "x", token=self.tok, check=False)
        self.assertIn("forbidden", p.stderr)
        self.c.cli("nodes", "resume", "n1")
        wait_until(lambda: waiting in self.launches(n), what="launch after resume")
        self.assertIn("not_found", self.c.cli("nodes", "drain", "nope", "--reason", "x", check=False).stderr)

    def test_spawn_relay_for_multi_node_jobs(self):
        n1, n2 = FakeAgent(self.c, "n1", cpus=2), FakeAgent(self.c, "n2", cpus=2)
        jid = self.submit("-N", "2", "--ntasks-per-node", "2", "--mpi", "--", "mpi-program")
        launch = {}
        wait_until(lambda: launch.update(self.launches(n1)) or jid in launch, what="launch on the first node")
        job = launch[jid]
        self.assertTrue(job["mpi"])
        self.assertEqual(job["tasks_per_node"], 2)
        self.assertEqual([a["node"] for a in job["alloc"]], ["n1", "n2"])
        self.assertEqual(n2.poll(), [])  # the job itself runs on its first node only
        key = job["step_key"]
        bad = user_request(self.c, {"type": "job.spawn", "v": 1, "id": jid, "attempt": 0, "step_key": "0" * 64,
                                    "node": "n2", "argv": ["orted"]})
        self.assertEqual(bad["error"]["code"], "unauthorized")
        r = user_request(self.c, {"type": "job.spawn", "v": 1, "id": jid, "attempt": 0, "step_key": key,
                                  "node": "n3", "argv": ["orted"]})
        self.assertIn("not one of job", r["error"]["message"])
        r = user_request(self.c, {"type": "job.spawn", "v": 1, "id": jid, "attempt": 0, "step_key": key,
                                  "node": "n2", "argv": ["orted", "--x"], "env": {"A": "1"}})
        sid = r["spawn_id"]
        cmds = n2.poll()
        self.assertEqual([(c["op"], c["spawn_id"], c["argv"]) for c in cmds], [("spawn", sid, ["orted", "--x"])])
        n2.running = [[jid, 0, sid]]
        n2.event(id=jid, attempt=0, spawn_id=sid, event="spawn_started")
        wait = {"type": "job.spawn_wait", "v": 1, "id": jid, "step_key": key, "spawn_id": sid}
        self.assertEqual(user_request(self.c, wait)["state"], "running")
        # Cancelling the job ends its spawns on the other node too.
        self.c.cli("cancel", str(jid), token=self.tok)
        ops = [c["op"] for c in n2.poll()]
        self.assertIn("kill_spawns", ops)
        n2.event(id=jid, attempt=0, spawn_id=sid, event="spawn_ended", exit_code=137, signal=9)
        r = user_request(self.c, wait)
        self.assertEqual((r["state"], r["signal"]), ("ended", 9))


if __name__ == "__main__":
    unittest.main()
