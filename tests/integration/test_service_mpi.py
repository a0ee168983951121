"""A service whose replicas are split models (docs/scheduler.md, "Services"):
`commons service deploy NAME --model M --replicas 1..2 --tp 2` on a real local cluster
(commonsd and an agent on 127.0.0.1) makes each replica an mpi job whose agent runs
`mpirun -np 2 commons-serve --tp 2` (and `--pp 2`). The replica runs 2 ranks, the gateway finds rank 0's
endpoint and answers a greedy completion with commons-run's single-process text, the split
survives a restart of commonsd (it is in the service's stored record) and so does the
running replica, and `service remove` ends every rank. Bad input is refused naming the flag and the limit; a replica that no
node could ever hold is refused at deploy, and one whose node is busy stays pending with a
reason, like any job."""
import json
import os
import shutil
import subprocess
import unittest

from gw_harness import Gateway
from harness import ClusterTest, binary, wait_until
from serve_harness import Serve, make_model, run_greedy
from test_mpi import alive
from test_mpi_infer import ranks_of  # functions only: importing a TestCase here would run its tests too
from test_service import gateway_model, rawsend, start_with_alice

PROMPT = "The capital of France is"


def setUpModule():
    if not shutil.which("mpirun"):  # a failure, never a skip counted as a pass
        raise RuntimeError("mpirun not found: install openmpi-bin and libopenmpi-dev (scripts/install-deps)")


class Rank0(Serve):
    """A replica's rank 0, driven like a commons-serve of serve_harness (not started here)."""

    def __init__(self, addr):
        self.addr = addr


class ServiceMpi(ClusterTest):
    def serving(self, name, what):
        """(replica, port, {rank: pid}) of the service's one running replica, once both its
        ranks live and rank 0 answers on the endpoint the service lists (rank 0 listens)."""
        def ready():
            svc = self.c.json("service", "list", name)
            reps = [r for r in svc[0]["replicas"] if r["state"] == "RUNNING" and not r["stopping"]] if svc else []
            if len(reps) != 1:
                return None
            port = reps[0]["endpoint"].rsplit(":", 1)[1]
            ranks = ranks_of(f"tcp://0.0.0.0:{port}")
            info = sorted(ranks) == [0, 1] and rawsend(f"tcp://127.0.0.1:{port}", {"type": "serve.info", "v": 1})
            return info and info["ok"] and (reps[0], port, ranks)
        return wait_until(ready, timeout=60, what=what)

    def test_tp2_replica_serves_survives_restart_and_removal_ends_every_rank(self):
        c = self.c
        model = make_model(os.path.join(c.dir, "llama.gguf"), "--arch", "llama", "--embd", "128", "--heads", "4",
                           "--kv-heads", "2", "--ff", "256", "--layers", "2", "--ctx", "512", "--type", "q8_0",
                           "--tied", "--seed", "7")
        alice, token_file = start_with_alice(c)
        p = c.cli("service", "deploy", "chat", "--model", model, "--replicas", "1..2", "--tp", "2", token=alice)
        self.assertIn("--tp 2 under mpirun", p.stdout)
        svc = c.json("service", "list", "chat")[0]
        self.assertEqual(svc["split"], {"mode": "tp", "ranks": 2, "nodes": 1, "ranks_per_node": 2})
        self.assertIn("tp 2 (1x2)", c.cli("service", "list").stdout)

        rep, port, ranks = self.serving("chat", "a replica of 2 ranks, rank 0 answering")
        job = c.job(rep["job"], token=alice)
        self.assertEqual((job["user"], job["name"], job["nodes"]), ("alice", "chat", 1))

        gw = Gateway(c.dir, [], extra=["--service", "chat", "--commonsd", c.addr, "--token-file", token_file])
        self.addCleanup(gw.stop)
        key = gw.new_key("ada")
        name = gateway_model(gw, key)
        status, _, r = gw.post("/v1/completions", {"model": name, "prompt": PROMPT, "max_tokens": 12,
                                                   "temperature": 0}, key=key, timeout=120)
        self.assertEqual(status, 200, r)
        greedy = run_greedy(model, PROMPT, 12, "--temp", "0")
        self.assertEqual(r["choices"][0]["text"], greedy)

        # The split is in the stored record, and the running replica (mpirun, its daemon through
        # commons-rsh, both ranks) goes on across a restart of commonsd.
        c.kill_scheduler()
        c.start_scheduler()
        self.assertEqual(c.json("service", "list", "chat")[0]["split"]["ranks"], 2)
        after, port_after, ranks_after = self.serving("chat", "the replica after the restart")
        self.assertEqual((after["job"], port_after, ranks_after), (rep["job"], port, ranks))
        with open(f"/proc/{ranks[0]}/cmdline", "rb") as f:
            self.assertEqual(f.read().split(b"\0")[-3:-1], [b"--tp", b"2"])
        status, _, r = gw.post("/v1/completions", {"model": name, "prompt": PROMPT, "max_tokens": 12,
                                                   "temperature": 0}, key=key, timeout=120)
        self.assertEqual((status, r["choices"][0]["text"]), (200, greedy))

        c.cli("service", "remove", "chat", token=alice)
        wait_until(lambda: not any(alive(pid) for pid in ranks.values()), timeout=30,
                   what="every rank of the replica to end")
        wait_until(lambda: c.job(rep["job"])["state"] in ("CANCELLED", "COMPLETED"), timeout=30,
                   what="the replica job to end")
        self.assertEqual(ranks_of(f"tcp://0.0.0.0:{port}"), {})

    def test_pp2_replica_generates_greedy_text(self):
        c = self.c
        model = make_model(os.path.join(c.dir, "gemma3.gguf"), "--arch", "gemma3", "--embd", "64", "--heads", "4",
                           "--kv-heads", "1", "--head-dim", "32", "--ff", "128", "--layers", "4", "--window", "8",
                           "--ctx", "512", "--type", "q8_0", "--seed", "3")
        alice, _ = start_with_alice(c)
        c.cli("service", "deploy", "pipe", "--model", model, "--replicas", "1..1", "--pp", "2", "--ntasks-per-node",
              "2", token=alice)
        self.assertEqual(c.json("service", "list", "pipe")[0]["split"],
                         {"mode": "pp", "ranks": 2, "nodes": 1, "ranks_per_node": 2})
        rep, port, ranks = self.serving("pipe", "a pp 2 replica, rank 0 answering")
        with open(f"/proc/{ranks[1]}/cmdline", "rb") as f:
            self.assertEqual(f.read().split(b"\0")[-3:-1], [b"--pp", b"2"])
        text, last, _ = Rank0(f"tcp://127.0.0.1:{port}").generate("p", prompt=PROMPT, max_tokens=16, temperature=0)
        self.assertEqual(text, run_greedy(model, PROMPT, 16, "--temp", "0"), last)
        c.cli("service", "remove", "pipe", token=alice)
        wait_until(lambda: not any(alive(pid) for pid in ranks.values()), timeout=30,
                   what="every rank of the replica to end")

    def test_bad_split_input_a_replica_too_large_and_one_that_waits(self):
        c = self.c
        model = os.path.join(c.dir, "m.gguf")  # never loaded here: no replica runs
        open(model, "w").close()
        alice, _ = start_with_alice(c)

        def deploy(*args):
            return c.cli("service", "deploy", "x", "--model", model, "--replicas", "1..2", *args, token=alice,
                         check=False)
        for args, want in ((("--tp", "1"), "--tp 1: expected the number of MPI ranks to split the model over from 2 to 64"),
                           (("--pp", "1000"), "--pp 1000: expected the number of MPI ranks to split the model over from 2 to 64"),
                           (("--tp", "two"), "--tp two: expected"),
                           (("--tp", ""), "--tp : expected"),
                           (("--tp", "2", "--pp", "2"), "--pp with --tp: give one of --tp and --pp"),
                           (("--nodes", "2"), "give --tp N or --pp N too"),
                           (("--tp", "2", "--nodes", "0"), "--nodes 0: expected a number from 1 to 64"),
                           (("--tp", "4", "--nodes", "3"), "3 nodes x 1 ranks per node is not the 4 ranks of tp 4"),
                           (("--tp", "4", "--nodes", "2", "--ntasks-per-node", "1"), "2 nodes x 1 ranks per node")):
            p = deploy(*args)
            # 2: refused by the command line; 1: by commonsd (placement is its to judge)
            self.assertEqual(p.returncode, 1 if "ranks per node" in want else 2, (args, p.stdout, p.stderr))
            self.assertIn(want, p.stderr, args)
        self.assertEqual(c.json("service", "list"), [])

        # The same checks in commonsd for any client (the CLI is not the only one).
        def raw(replica):
            spec = {"model": "/m.gguf", "serve_bin": "/bin/true", "workdir": "/tmp", **replica}
            req = {"type": "service.deploy", "v": 1, "token": alice, "name": "raw", "replica": spec, "min": 1,
                   "max": 1}
            r = json.loads(subprocess.run([binary("tests/rawsend"), c.addr, "-"], input=json.dumps(req).encode(),
                                          capture_output=True, timeout=30).stdout)
            self.assertFalse(r["ok"], replica)
            return r["error"]["message"]
        self.assertIn("give one of them", raw({"tp": 2, "pp": 2}))
        self.assertIn("field 'tp': expected the number of ranks as an integer from 2 to 64", raw({"tp": "2"}))
        self.assertIn("field 'pp': expected", raw({"pp": 65}))
        self.assertIn("only a split model", raw({"nodes": 2}))
        self.assertIn("field 'mpi'", raw({"tp": 2, "mpi": False}))
        self.assertIn("field 'tasks'", raw({"tp": 2, "tasks": 3}))

        # Like a job larger than every node, a replica that could never run is refused at once:
        # 4 ranks of 2 CPUs on one node need 8 CPUs, and n1 has 4.
        p = deploy("--tp", "4", "--cpus-per-replica", "2")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("a replica of service 'x' cannot run: no 1 node(s) could ever run this job: it needs 8 CPUs",
                      p.stderr)
        self.assertEqual(c.json("service", "list"), [])
        # Spread over 2 nodes it needs 4 CPUs on each, and this cluster has one node.
        p = deploy("--tp", "4", "--cpus-per-replica", "2", "--nodes", "2")
        self.assertIn("no 2 node(s) could ever run this job: it needs 4 CPUs", p.stderr)

        # Like any job, a replica waits while its node is busy: 2 ranks of 1 CPU beside a job holding 3 of n1's 4.
        blocker = c.json("submit", "-c", "3", "--", "sleep", "120", token=alice)["job_id"]
        c.wait_state(blocker, "RUNNING")
        self.assertEqual(deploy("--tp", "2").returncode, 0)
        wait_until(lambda: [(r["state"], r["reason"]) for r in c.json("service", "list", "x")[0]["replicas"]]
                   == [("PENDING", "Resources")], timeout=30, what="the replica to wait for resources")
        c.cli("service", "remove", "x", token=alice)
        c.cli("cancel", str(blocker), token=alice)
        self.assertEqual(c.json("service", "list"), [])


if __name__ == "__main__":
    unittest.main()
