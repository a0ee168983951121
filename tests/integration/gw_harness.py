"""Helpers for the gateway's integration tests: start the fake serve fixture
(gw_fakeserve.py) and the real commons-gateway on 127.0.0.1 with free ports
and a temporary state directory, make keys with the gateway's own CLI, talk
HTTP with the standard library, and stop everything by PID."""
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import binary, free_port, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))

POLICY = """\
accounts:
  uni:
    shares: 1
citizens:
  tiers:
    anonymous:
      tokens_per_day: {anon_tokens}
      requests_per_minute: 1000
      max_tokens_per_request: 512
      concurrent_requests: 8
    citizen:
      tokens_per_day: 1000000
      requests_per_minute: 10000
      max_tokens_per_request: 1024
      concurrent_requests: 64
    slowpoke:
      tokens_per_day: 1000000
      requests_per_minute: 2
      max_tokens_per_request: 1024
      concurrent_requests: 8
    frugal:
      tokens_per_day: 100
      requests_per_minute: 1000
      max_tokens_per_request: 64
      concurrent_requests: 8
    single:
      tokens_per_day: 1000000
      requests_per_minute: 1000
      max_tokens_per_request: 1024
      concurrent_requests: 1
  default_tier: citizen
{anon_line}
"""


def policy_text(anonymous=True, anon_tokens=100000):
    return POLICY.format(anon_tokens=anon_tokens,
                         anon_line="  anonymous_tier: anonymous" if anonymous else "")


class FakeServe:
    """The fake commons-serve test fixture in its own process."""

    def __init__(self, workdir, port=None, delay=0.01, max_batch=4, model="fake-model", n_ctx=2048):
        self.port = port or free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.args = [sys.executable, os.path.join(HERE, "gw_fakeserve.py"), "--listen", self.url,
                     "--delay", str(delay), "--max-batch", str(max_batch), "--model", model,
                     "--n-ctx", str(n_ctx)]
        self.log = open(os.path.join(workdir, f"fakeserve-{self.port}.log"), "ab")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise AssertionError(f"fake serve did not start: {line!r}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def stats(self):
        from gw_fakeserve import sp_call
        return sp_call(self.url, {"type": "fake.stats", "v": 1})

    def close(self):
        self.stop()
        self.log.close()


class Gateway:
    """commons-gateway with its own state directory and policy file."""

    def __init__(self, workdir, serves, policy=None, extra=()):
        self.dir = workdir
        self.state = os.path.join(workdir, "gw-state")
        self.policy = os.path.join(workdir, "policy.yaml")
        with open(self.policy, "w") as f:
            f.write(policy or policy_text())
        self.log_path = os.path.join(workdir, "gateway.log")
        self.serves, self.extra = serves, extra
        self.start()

    def start(self):
        """Starts the process (again, after stop(): same state, a new port)."""
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(self.log_path, "ab")
        args = [binary("gateway/commons-gateway"), "--listen", f"127.0.0.1:{self.port}",
                "--policy", self.policy, "--state", self.state, "--foreground", *self.extra]
        for s in self.serves:
            args += ["--serve", s.url if hasattr(s, "url") else s]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        wait_until(self._listening, what="commons-gateway to listen")

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"commons-gateway exited {self.proc.returncode}: {self.read_log()}")
        try:
            self.request("GET", "/health")
            return True
        except OSError:
            return False

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def keys(self, *args):
        p = subprocess.run([binary("gateway/commons-gateway"), "keys", *args, "--state", self.state],
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise AssertionError(f"keys {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p.stdout

    def new_key(self, name="citizen", tier=None):
        args = ["create", "--name", name]
        if tier:
            args += ["--tier", tier, "--policy", self.policy]
        return self.keys(*args).strip()

    def request(self, method, path, body=None, key=None, headers=None, timeout=30):
        """(status, headers dict lower-cased, body bytes)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if key:
            h["Authorization"] = f"Bearer {key}"
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def post(self, path, body, key=None, **kw):
        status, headers, data = self.request("POST", path, body, key=key, **kw)
        return status, headers, json.loads(data) if data else None

    def stream_events(self, path, body, key=None, on_event=None, timeout=60):
        """POSTs a streaming request; returns (status, [decoded events or 'DONE'])."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = {"Content-Type": "application/json"}
        if key:
            h["Authorization"] = f"Bearer {key}"
        try:
            c.request("POST", path, body=json.dumps(body), headers=h)
            r = c.getresponse()
            if r.status != 200:
                return r.status, [json.loads(r.read())]
            events = []
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if not line.startswith("data: "):
                    continue
                ev = "DONE" if line == "data: [DONE]" else json.loads(line[6:])
                if on_event:
                    on_event(ev)
                events.append(ev)
                if ev == "DONE":
                    break
            return r.status, events
        finally:
            c.close()

    def hup(self):
        self.proc.send_signal(signal.SIGHUP)

    def stop(self):
        """SIGTERM (drain and exit); SIGKILL if it hangs. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode


def expected_words(n, seed=0):
    """The fake serve's completion of n tokens."""
    import gw_fakeserve
    w = gw_fakeserve.WORDS
    return "".join(" " + w[(seed + i) % len(w)] for i in range(n))


def make_workdir():
    return tempfile.mkdtemp(prefix="commons-gw-it-")


def remove_workdir(d):
    if os.environ.get("COMMONS_KEEP_TEST_DIRS"):
        print("kept", d)
    else:
        shutil.rmtree(d, ignore_errors=True)
