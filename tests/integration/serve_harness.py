"""commons-serve on 127.0.0.1 for integration tests: a synthetic model made with
commons-mkmodel (or a given GGUF), the server started with a free port and stopped by
PID, requests sent with build/tests/rawsend (one nng REQ message, prints the reply).
Standard library only."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from harness import binary, free_port, wait_until

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("COMMONS_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
VOCAB = os.path.join(SHARED, "vocab", "ggml-vocab-llama-spm.gguf")
DEFAULT_MODEL = os.path.join(REPO, "models", "gemma-3-270m-q4_k_m.gguf")


def make_model(path, *args):
    subprocess.run([binary("inference/commons-mkmodel"), "--vocab", VOCAB, "--out", path, *args],
                   check=True, capture_output=True, timeout=120)
    return path


def run_greedy(model, prompt, n, *extra):
    """commons-run's output for the same prompt (the reference for serve's text)."""
    p = subprocess.run([binary("inference/commons-run"), "--model", model, "--prompt", prompt,
                        "-n", str(n), "--threads", "1", *extra],
                       capture_output=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError(f"commons-run failed: {p.stderr.decode(errors='replace')}")
    return p.stdout.decode("utf-8", errors="replace")


class Serve:
    def __init__(self, model, *args):
        self.dir = tempfile.mkdtemp(prefix="commons-serve-it-")
        self.addr = f"tcp://127.0.0.1:{free_port()}"
        self.log_path = os.path.join(self.dir, "serve.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary("inference/commons-serve"), "--model", model,
                                      "--listen", self.addr, "--foreground", *args],
                                     stdout=self.log, stderr=self.log)
        wait_until(lambda: self.proc.poll() is not None or "listening on" in self.log_text(),
                   timeout=120, what="commons-serve to listen")
        if self.proc.poll() is not None:
            raise AssertionError(f"commons-serve exited {self.proc.returncode}:\n{self.log_text()}")

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def raw(self, data, timeout_ms=10000):
        p = subprocess.run([binary("tests/rawsend"), self.addr, "-", str(timeout_ms)],
                           input=data if isinstance(data, bytes) else data.encode(),
                           capture_output=True, timeout=timeout_ms / 1000 + 10)
        if p.returncode != 0:
            raise AssertionError(f"no reply from commons-serve: {p.stderr.decode()}")
        return json.loads(p.stdout)

    def call(self, type_, timeout_ms=10000, **fields):
        return self.raw(json.dumps({"type": type_, "v": 1, **fields}), timeout_ms)

    def info(self):
        r = self.call("serve.info")
        assert r["ok"], r
        return r

    def generate(self, id_, wait_ms=2000, **fields):
        """gen.start, then long-polls until done; returns (text, last poll reply, polls)."""
        r = self.call("gen.start", id=id_, **fields)
        if not r["ok"]:
            return None, r, 0
        text, polls = "", 0
        while True:
            p = self.call("gen.poll", id=id_, offset=len(text.encode()), wait_ms=wait_ms)
            polls += 1
            assert p["ok"], p
            text += p["text"]
            if p["done"]:
                return text, p, polls

    def stop(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        self.log.close()

    def cleanup(self):
        if os.environ.get("COMMONS_KEEP_TEST_DIRS"):
            print("kept", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def parallel(fns):
    """Run callables concurrently; return their results in order (re-raise failures)."""
    out, errs = [None] * len(fns), []

    def run(i, f):
        try:
            out[i] = f()
        except BaseException as e:  # noqa: BLE001 - reported below
            errs.append(e)

    ts = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]
    return out


class ServeTest(unittest.TestCase):
    def start(self, model, *args):
        s = Serve(model, *args)
        self.addCleanup(s.cleanup)
        self.addCleanup(s.stop)
        self.addCleanup(self._dump_log_on_failure, s)
        return s

    def _dump_log_on_failure(self, s):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        bad = getattr(result, "errors", []) + getattr(result, "failures", [])
        if any(t is self for t, _ in bad):
            print(f"---- commons-serve log ----\n{s.log_text()[-6000:]}")
