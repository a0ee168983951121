"""A scripted agent for scheduler tests: sends signed agent frames (docs/protocol.md)
through build/tests/rawsend and returns commonsd's replies. It is a test fixture that
lets a test play nodes with any topology and see the exact commands commonsd sends;
the real agent has its own end-to-end tests."""
import hashlib
import hmac
import json
import os
import subprocess
import time

from harness import binary


class FakeAgent:
    def __init__(self, cluster, name, cpus, gpus=0, memory_mb=4096, topology=None):
        self.c, self.name = cluster, name
        with open(os.path.join(cluster.state, "cluster.key")) as f:
            self.key = f.read().strip()
        self.ts = int(time.time() * 1000)
        self.running = []
        self.reply = self.send({"type": "agent.register", "cpus": cpus, "gpus": gpus, "memory_mb": memory_mb,
                                "hostname": name, "running": [], **({"topology": topology} if topology else {})})

    def send(self, payload):
        self.ts = max(self.ts + 1, int(time.time() * 1000))
        payload = dict(payload, node=self.name, ts=self.ts)
        text = json.dumps(payload)
        sig = hmac.new(self.key.encode(), text.encode(), hashlib.sha256).hexdigest()
        frame = json.dumps({"type": "agent", "v": 1, "payload": text, "sig": sig}).encode()
        p = subprocess.run([binary("tests/rawsend"), self.c.addr, "-", "10000"], input=frame, capture_output=True,
                           timeout=30)
        if p.returncode != 0:
            raise AssertionError(f"no reply from commonsd: {p.stderr.decode()}")
        return json.loads(p.stdout)

    def poll(self, wait_ms=0):
        r = self.send({"type": "agent.poll", "running": self.running, "wait_ms": wait_ms})
        assert r["ok"], r
        return r["commands"]

    def event(self, **ev):
        r = self.send({"type": "agent.event", "events": [ev]})
        assert r["ok"], r
        return r


def user_request(cluster, req):
    """Sends one user-less request (e.g. job.spawn with a step key) and returns the reply."""
    p = subprocess.run([binary("tests/rawsend"), cluster.addr, "-", "10000"], input=json.dumps(req).encode(),
                       capture_output=True, timeout=30)
    return json.loads(p.stdout)
