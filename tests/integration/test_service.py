"""Inference as a scheduled service: `commons service deploy` keeps MIN..MAX replicas
of the real commons-serve running as jobs on a real agent; scale, replacement of a
replica that ends, permissions, and removal."""
import getpass
import json
import os
import subprocess
import unittest

import threading

from gw_harness import Gateway
from harness import ClusterTest, binary, wait_until
from serve_harness import make_model

ME = getpass.getuser()


def rawsend(addr, req):
    p = subprocess.run([binary("tests/rawsend"), addr, "-", "3000"], input=json.dumps(req).encode(),
                       capture_output=True, timeout=30)
    return json.loads(p.stdout) if p.returncode == 0 else None


def start_with_alice(c):
    """commonsd, a 4-CPU agent n1 and user alice (running jobs as this Unix user): her
    token and a file holding it (for a gateway's --token-file)."""
    c.start_scheduler()
    c.start_agent("n1", cpus=4)
    alice = c.add_user("alice", "physics", unix_user=ME)
    token_file = os.path.join(c.dir, "alice.token")
    with open(token_file, "w") as f:
        f.write(alice + "\n")
    return alice, token_file


def gateway_model(gw, key):
    """The model name of the gateway's first replica, once it has learnt one."""
    def models():
        status, _, body = gw.request("GET", "/v1/models", key=key)
        return status == 200 and json.loads(body)["data"]
    return wait_until(models, timeout=60, what="the gateway to learn the replica")[0]["id"]


class Service(ClusterTest):
    def running(self, name, want):
        def ready():
            svc = self.c.json("service", "list", name)
            reps = [r for r in svc[0]["replicas"] if r["state"] == "RUNNING" and not r["stopping"]] if svc else []
            return len(reps) == want and reps
        return wait_until(ready, timeout=60, what=f"{want} running replicas")

    def test_deploy_scale_replace_remove(self):
        c = self.c
        model = make_model(os.path.join(c.dir, "tiny.gguf"), "--arch", "llama", "--embd", "64", "--layers", "2",
                           "--heads", "4", "--kv-heads", "2", "--ff", "128", "--ctx", "256", "--type", "q8_0")
        c.start_scheduler()
        c.start_agent("n1", cpus=4)
        alice = c.add_user("alice", "physics", unix_user=ME)
        bob = c.add_user("bob", "biology", unix_user=ME)
        p = c.cli("service", "deploy", "chat", "--model", model, "--replicas", "1..3", token=alice)
        self.assertIn("deployed", p.stdout)
        reps = self.running("chat", 1)
        # The replica is a real commons-serve answering on its endpoint.
        port = reps[0]["endpoint"].rsplit(":", 1)[1]
        info = wait_until(lambda: rawsend(f"tcp://127.0.0.1:{port}", {"type": "serve.info", "v": 1}), timeout=60,
                          what="the replica to answer")
        self.assertTrue(info["ok"], info)
        job = c.job(reps[0]["job"], token=alice)
        self.assertEqual((job["user"], job["account"], job["name"]), ("alice", "physics", "chat"))
        # Scale within MIN..MAX; outside is refused; others may not touch it.
        c.cli("service", "scale", "chat", "2", token=alice)
        reps = self.running("chat", 2)
        # Both replicas are on n1, each on a port of its own in this cluster's range.
        lo, hi = map(int, c.service_ports.split("-"))
        ports = {int(r["endpoint"].rsplit(":", 1)[1]) for r in reps}
        self.assertEqual(len(ports), 2, reps)
        self.assertTrue(all(lo <= p <= hi for p in ports), (ports, c.service_ports))
        p = c.cli("service", "scale", "chat", "5", token=alice, check=False)
        self.assertIn("1..3", p.stderr)
        p = c.cli("service", "scale", "chat", "1", token=bob, check=False)
        self.assertIn("forbidden", p.stderr)
        p = c.cli("submit", "--", "true", token=alice, check=False)  # ordinary jobs still work beside it
        self.assertEqual(p.returncode, 0)
        # A replica that ends is replaced.
        c.cli("cancel", str(reps[0]["job"]), token=alice)
        wait_until(lambda: reps[0]["job"] not in [r["job"] for r in self.running("chat", 2)], timeout=60,
                   what="a replacement replica")
        self.assertIn("chat", c.cli("service", "list", token=bob).stdout)
        c.cli("service", "scale", "chat", "1", token=alice)
        self.running("chat", 1)
        c.cli("service", "remove", "chat", token=alice)
        self.assertEqual(c.json("service", "list"), [])
        wait_until(lambda: not [j for j in c.json("queue") if j["name"] == "chat"], timeout=60,
                   what="the replicas to end")
        # Bad input.
        for bad in ("80-90", "3000-2000", "3000", "3000-70000", "a-b"):
            p = subprocess.run([binary("scheduler/commonsd"), "--state", os.path.join(c.dir, "unused"),
                                "--foreground", "--service-ports", bad], capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 2, bad)
            self.assertIn(f"--service-ports: expected LO-HI with 1024 <= LO <= HI <= 65535, got '{bad}'", p.stderr)
        p = c.cli("service", "deploy", "x", "--model", "/nonexistent.gguf", "--replicas", "1..2", token=alice,
                  check=False)
        self.assertEqual(p.returncode, 2)
        p = c.cli("service", "deploy", "x", "--model", model, "--replicas", "3..2", token=alice, check=False)
        self.assertIn("MIN <= MAX", p.stderr)
        for field, value in (("service", "chat"), ("service_port", 20001)):
            bad = json.dumps({"type": "job.submit", "v": 1, "token": alice,
                              "job": {"command": ["x"], "workdir": "/tmp", field: value}}).encode()
            r = json.loads(subprocess.run([binary("tests/rawsend"), c.addr, "-"], input=bad,
                                          capture_output=True).stdout)
            self.assertIn(f"field '{field}' is set by commonsd", r["error"]["message"])


    def test_gateway_routes_to_and_scales_the_service(self):
        c = self.c
        model = make_model(os.path.join(c.dir, "tiny.gguf"), "--arch", "llama", "--embd", "64", "--layers", "2",
                           "--heads", "4", "--kv-heads", "2", "--ff", "128", "--ctx", "512", "--type", "q8_0")
        alice, token_file = start_with_alice(c)
        c.cli("service", "deploy", "chat", "--model", model, "--replicas", "1..2", token=alice)
        self.running("chat", 1)
        gw = Gateway(c.dir, [], extra=["--service", "chat", "--commonsd", c.addr, "--token-file", token_file,
                                       "--autoscale", "--scale-up-after", "0.5", "--scale-down-after", "3",
                                       "--replica-slots", "1", "--queue-timeout", "120"])
        self.addCleanup(gw.stop)
        key = gw.new_key("ada")
        name = gateway_model(gw, key)
        # Greedy: a sampled draw from the random-weight model may pick the end-of-text token early.
        status, _, r = gw.post("/v1/completions", {"model": name, "prompt": "hello", "max_tokens": 8,
                                                   "temperature": 0}, key=key)
        self.assertEqual(status, 200, r)
        self.assertEqual((r["choices"][0]["finish_reason"], r["usage"]["completion_tokens"]), ("length", 8))
        # A flood keeps the single slot busy with requests waiting: the gateway asks for a second replica.
        results = []

        def one():
            st, _, body = gw.post("/v1/completions", {"model": name, "prompt": "tell me", "max_tokens": 500,
                                                      "temperature": 0}, key=key, timeout=300)
            results.append(st)
        # Enough work to keep the one slot busy with requests waiting for several seconds
        # even on a fast, quiet machine.
        threads = [threading.Thread(target=one) for _ in range(48)]
        for t in threads:
            t.start()
        wait_until(lambda: c.json("service", "list", "chat")[0]["target"] == 2, timeout=60,
                   what="the autoscaler to add a replica")
        self.running("chat", 2)
        for t in threads:
            t.join(timeout=300)
        self.assertEqual(results, [200] * 48)
        self.assertIn("scaled 1 -> 2", gw.read_log())
        # Idle again: back down to the minimum.
        wait_until(lambda: c.json("service", "list", "chat")[0]["target"] == 1, timeout=60,
                   what="the autoscaler to remove a replica")
        self.assertIn("scaled 2 -> 1", gw.read_log())


if __name__ == "__main__":
    unittest.main()
