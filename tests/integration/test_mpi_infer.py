"""commons-serve under mpirun (issue 9, docs/distributed.md): `mpirun -np 2
commons-serve --tp 2` and `--pp 2` on small synthetic models, driven with the gateway <->
serve protocol (build/tests/rawsend).

Greedy completions of concurrent requests equal commons-run's single-process output
(Llama with grouped-query attention, Gemma 3 with 4 query heads and 1 KV head, which
tensor parallelism replicates); SIGTERM to mpirun drains and every rank exits; a rank
killed with SIGKILL ends the whole job (no process left, no hang) and the gateway in
front answers 5xx instead of waiting. A model that cannot be split ends the job at once,
saying why."""
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from gw_harness import Gateway, make_workdir, remove_workdir
from harness import binary, free_port, wait_until
from serve_harness import Serve, ServeTest, make_model, parallel, run_greedy

PROMPTS = ["Hello world", "The capital of France is", "Once upon a time there was"]
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2"]
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Sanitizer builds: Open MPI's allocations kept past MPI_Finalize are not ours
# (inference/tests/lsan-mpi.supp); harmless elsewhere.
MPI_ENV = dict(os.environ,
               LSAN_OPTIONS="suppressions=" + os.path.join(REPO, "inference", "tests", "lsan-mpi.supp")
               + ":fast_unwind_on_malloc=0:print_suppressions=0",
               OMPI_MCA_mca_base_component_disable_dlclose="1")


def setUpModule():
    global TMP, LLAMA, GEMMA, SLOW
    if not shutil.which("mpirun"):  # a failure, never a skip counted as a pass
        raise RuntimeError("mpirun not found: install openmpi-bin and libopenmpi-dev")
    TMP = tempfile.mkdtemp(prefix="commons-mpi-model-")
    LLAMA = make_model(os.path.join(TMP, "llama.gguf"), "--arch", "llama", "--embd", "128",
                       "--heads", "4", "--kv-heads", "2", "--ff", "256", "--layers", "2",
                       "--ctx", "4096", "--type", "q8_0", "--tied", "--seed", "7")
    GEMMA = make_model(os.path.join(TMP, "gemma3.gguf"), "--arch", "gemma3", "--embd", "64",
                       "--heads", "4", "--kv-heads", "1", "--head-dim", "32", "--ff", "128",
                       "--layers", "4", "--window", "8", "--ctx", "512", "--type", "q8_0",
                       "--seed", "3")
    # big enough that a 1000-token completion runs for seconds (killed in the middle)
    SLOW = make_model(os.path.join(TMP, "slow.gguf"), "--arch", "llama", "--embd", "512",
                      "--heads", "8", "--kv-heads", "4", "--ff", "1536", "--layers", "6",
                      "--ctx", "2048", "--type", "q8_0", "--tied", "--seed", "5")


def tearDownModule():
    shutil.rmtree(TMP, ignore_errors=True)


def ranks_of(listen):
    """{rank: pid} of the commons-serve processes serving `listen` (from their environment)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone between two reads
        if (cmd and cmd[0].endswith(b"commons-serve") and listen.encode() in cmd
                and b"OMPI_COMM_WORLD_RANK" in env):
            out[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
    return out


class MpiServe(Serve):
    """commons-serve started by mpirun: every rank gets the same flags."""

    def __init__(self, model, mode, *args):
        self.dir = tempfile.mkdtemp(prefix="commons-mpi-serve-it-")
        self.addr = f"tcp://127.0.0.1:{free_port()}"
        self.log_path = os.path.join(self.dir, "serve.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(MPIRUN + [binary("inference/commons-serve"), "--model", model,
                                               "--listen", self.addr, f"--{mode}", "2",
                                               "--threads", "1", "--foreground", *args],
                                     stdout=self.log, stderr=self.log, start_new_session=True,
                                     env=MPI_ENV)
        wait_until(lambda: self.proc.poll() is not None or "listening on" in self.log_text(),
                   timeout=120, what="commons-serve to listen under mpirun")
        if self.proc.poll() is not None:
            raise AssertionError(f"mpirun exited {self.proc.returncode}:\n{self.log_text()}")

    def stop(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=60)
        self.log.close()


class MpiTest(ServeTest):
    def start(self, model, mode, *args):
        s = MpiServe(model, mode, *args)
        self.addCleanup(s.cleanup)
        self.addCleanup(s.stop)
        self.addCleanup(self._dump_log_on_failure, s)
        return s

    def greedy_equals_single_process(self, model, mode, prompts, n=24, *extra):
        s = self.start(model, mode, "--ctx", "512", "--max-batch", "8", "--kv-blocks", "128",
                       "--prefill-chunk", "8", *extra)
        got = parallel([lambda i=i, p=p: s.generate(f"g{i}", prompt=p, max_tokens=n,
                                                    temperature=0)
                        for i, p in enumerate(prompts)])
        for (text, last, _), p in zip(got, prompts):
            self.assertIsNotNone(text, last)
            self.assertEqual(text, run_greedy(model, p, n, "--temp", "0"), f"{mode}: {p!r}")
        log = s.log_text()
        self.assertIn("rank 1 of 2", log)
        return s

    def test_tp_llama(self):
        self.greedy_equals_single_process(LLAMA, "tp", PROMPTS)

    def test_pp_llama(self):
        self.greedy_equals_single_process(LLAMA, "pp", PROMPTS)

    def test_tp_gemma3_one_kv_head(self):
        s = self.greedy_equals_single_process(GEMMA, "tp", PROMPTS[:2])
        self.assertIn("2 heads, 1 KV heads", s.log_text())

    def test_pp_gemma3_three_micro_batches(self):
        self.greedy_equals_single_process(GEMMA, "pp", PROMPTS[:2], 24, "--micro-batches", "3")

    def test_unsplittable_model_ends_the_job(self):
        bad = make_model(os.path.join(TMP, "heads3.gguf"), "--arch", "llama", "--embd", "96",
                         "--heads", "3", "--kv-heads", "3", "--ff", "128", "--layers", "2",
                         "--ctx", "256", "--type", "f32")
        p = subprocess.run(MPIRUN + [binary("inference/commons-serve"), "--model", bad,
                                     "--listen", f"tcp://127.0.0.1:{free_port()}", "--tp", "2"],
                           capture_output=True, text=True, timeout=60, env=MPI_ENV)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("attention.head_count (3) to be a multiple of 2", p.stdout + p.stderr)

    def test_sigterm_drains_every_rank(self):
        s = self.start(LLAMA, "tp", "--ctx", "512", "--kv-blocks", "64")
        self.assertTrue(s.call("gen.start", id="d", prompt=PROMPTS[0], max_tokens=200,
                               temperature=0)["ok"])
        ranks = ranks_of(s.addr)
        self.assertEqual(sorted(ranks), [0, 1])
        os.kill(ranks[0], signal.SIGTERM)   # as an agent stopping the service would
        self.assertEqual(s.proc.wait(timeout=60), 0, s.log_text())
        self.assertEqual(ranks_of(s.addr), {})
        self.assertIn("stopped;", s.log_text())  # rank 1 left its loop when rank 0 stopped

    def test_rank_death_ends_job_and_gateway_answers_5xx(self):
        s = self.start(SLOW, "tp", "--ctx", "2048", "--kv-blocks", "256")
        wdir = make_workdir()
        self.addCleanup(remove_workdir, wdir)
        gw = Gateway(wdir, [s.addr])
        self.addCleanup(gw.stop)
        wait_until(lambda: gw.request("GET", "/health")[0] == 200, timeout=60,
                   what="the gateway to see commons-serve")
        key = gw.new_key("mpi")
        body = dict(model="slow", prompt="Once upon a time", max_tokens=1000, temperature=0)
        result = {}

        def long_request():
            result["reply"] = gw.post("/v1/completions", body, key=key, timeout=120)

        t = threading.Thread(target=long_request)
        t.start()
        wait_until(lambda: "admitted" in s.log_text(), timeout=30,
                   what="the request to reach commons-serve")
        time.sleep(0.3)  # it is generating
        os.kill(ranks_of(s.addr)[1], signal.SIGKILL)
        # mpirun notices, ends rank 0 and exits non-zero; nothing is left behind
        self.assertNotEqual(s.proc.wait(timeout=60), 0)
        wait_until(lambda: ranks_of(s.addr) == {}, timeout=30, what="every rank to end")
        t.join(timeout=90)
        self.assertFalse(t.is_alive(), "the request through the gateway hangs")
        status = result["reply"][0]
        self.assertGreaterEqual(status, 500, result["reply"])
        t0 = time.monotonic()
        status, _, reply = gw.post("/v1/completions", dict(body, max_tokens=4), key=key,
                                   timeout=120)
        self.assertGreaterEqual(status, 500, reply)
        self.assertLess(time.monotonic() - t0, 60)


if __name__ == "__main__":
    unittest.main()
