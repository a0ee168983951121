"""Hostile and malformed protocol input: commonsd answers or drops it, and keeps running."""
import hashlib
import hmac
import json
import os
import subprocess
import time
import unittest

from harness import ClusterTest, binary


class ProtocolInput(ClusterTest):
    def setUp(self):
        super().setUp()
        self.c.start_scheduler()
        with open(os.path.join(self.c.state, "cluster.key")) as f:
            self.key = f.read().strip()

    def send(self, data, timeout_ms=3000):
        p = subprocess.run([binary("tests/rawsend"), self.c.addr, "-", str(timeout_ms)], input=data,
                           capture_output=True, timeout=30)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def alive(self):
        self.assertIsNone(self.c.sched.poll(), "commonsd died")
        self.assertEqual(self.c.cli("whoami").stdout.strip(), "admin")

    def test_malformed_requests(self):
        cases = {
            b"": "not a JSON object",
            b"{": "not a JSON object",
            b"[1,2]": "not a JSON object",
            b"\x00\xff\xfe garbage": "not a JSON object",
            b'{"v":1}': "field 'type'",
            b'{"type":"job.list","v":2}': "version",
            b'{"type":"job.list"}': "no token",
            b'{"type":"job.list","token":5}': "no token",
            b'{"type":"nope","token":"x"}': "unknown or revoked",
        }
        for data, needle in cases.items():
            r = self.send(data)
            self.assertIsNotNone(r, data)
            self.assertFalse(r["ok"])
            self.assertIn(needle, r["error"]["message"], data)
        with open(os.path.join(self.c.state, "admin.token")) as f:
            admin = f.read().strip()
        r = self.send(json.dumps({"type": "job.submit", "token": admin, "job": {"command": "not-a-list",
                                                                               "workdir": "/tmp"}}).encode())
        self.assertEqual(r["error"]["code"], "invalid_job")
        r = self.send(json.dumps({"type": "job.show", "token": admin, "id": "7"}).encode())
        self.assertIn("field 'id'", r["error"]["message"])
        r = self.send(json.dumps({"type": "frobnicate", "token": admin}).encode())
        self.assertIn("unknown request type", r["error"]["message"])
        self.alive()

    def test_oversized_message_is_dropped(self):
        r = self.send(b'{"type":"whoami","pad":"' + b"x" * (2 * 1024 * 1024) + b'"}', timeout_ms=1500)
        self.assertIsNone(r)
        self.alive()

    def agent_frame(self, payload, key=None):
        text = json.dumps(payload)
        sig = hmac.new((key or self.key).encode(), text.encode(), hashlib.sha256).hexdigest()
        return json.dumps({"type": "agent", "v": 1, "payload": text, "sig": sig}).encode()

    def test_forged_and_replayed_agent_messages(self):
        reg = {"type": "agent.register", "node": "evil", "ts": int(time.time() * 1000), "cpus": 64,
               "memory_mb": 1000, "gpus": 0, "hostname": "evil", "running": []}
        r = self.send(self.agent_frame(reg, key="0" * 64))
        self.assertEqual(r["error"]["code"], "unauthorized")
        self.assertEqual(self.c.json("nodes"), [])
        tampered = json.loads(self.agent_frame(reg))
        tampered["payload"] = tampered["payload"].replace('"cpus": 64', '"cpus": 9999')
        self.assertEqual(self.send(json.dumps(tampered).encode())["error"]["code"], "unauthorized")
        stale = dict(reg, ts=int(time.time() * 1000) - 3600 * 1000)
        self.assertIn("from commonsd's clock", self.send(self.agent_frame(stale))["error"]["message"])
        # A genuine registration works once; the same bytes again are a replay.
        frame = self.agent_frame(reg)
        self.assertTrue(self.send(frame)["ok"])
        r = self.send(frame)
        self.assertEqual(r["error"]["code"], "unauthorized")
        self.assertIn("replayed", r["error"]["message"])
        bad = dict(reg, ts=reg["ts"] + 1, cpus="many")
        self.assertIn("integer cpus", self.send(self.agent_frame(bad))["error"]["message"])
        self.alive()


if __name__ == "__main__":
    unittest.main()
