"""commons-serve end to end (docs/serving.md): a small synthetic Llama served on
127.0.0.1 and driven with the gateway <-> serve protocol through build/tests/rawsend.

Concurrent generations equal commons-run's output for the same prompt and sampling
parameters (greedy and seeded), stop strings, busy when the KV pool is exhausted,
too_long, cancel and abandonment free blocks, long-polls, bad input, SIGTERM drain."""
import json
import os
import shutil
import signal
import tempfile
import time
import unittest

from harness import wait_until
from serve_harness import ServeTest, make_model, parallel, run_greedy

PROMPTS = ["Hello world", "The capital of France is", "Once upon a time there was",
           "1 2 3 4 5", "In the beginning", "Commons is public compute infrastructure for"]


def setUpModule():
    global TMP, MODEL
    TMP = tempfile.mkdtemp(prefix="commons-serve-model-")
    MODEL = make_model(os.path.join(TMP, "llama.gguf"), "--arch", "llama", "--embd", "128",
                       "--heads", "4", "--kv-heads", "2", "--ff", "256", "--layers", "2",
                       "--ctx", "4096", "--type", "q8_0", "--tied", "--seed", "7")


def tearDownModule():
    shutil.rmtree(TMP, ignore_errors=True)


class Generation(ServeTest):
    def setUp(self):
        self.s = self.start(MODEL, "--ctx", "512", "--max-batch", "8", "--kv-blocks", "256",
                            "--prefill-chunk", "8", "--threads", "1")

    def test_info(self):
        i = self.s.info()
        self.assertEqual(i["model"], "llama")
        self.assertEqual(i["n_ctx"], 512)
        self.assertEqual(i["max_batch"], 8)
        self.assertEqual((i["active"], i["waiting"]), (0, 0))
        self.assertEqual(i["kv_blocks_total"], 256)
        self.assertEqual(i["kv_blocks_free"], 256)
        self.assertEqual(i["block_tokens"], 16)

    def test_concurrent_greedy_equals_commons_run(self):
        # Six prompts at once (prefill chunk 8: the longer ones are chunked while the
        # others decode), plus the first prompt twice: all equal commons-run's output.
        jobs = [(f"g{i}", p) for i, p in enumerate(PROMPTS)] + [("again", PROMPTS[0])]
        got = parallel([lambda id_=id_, p=p: self.s.generate(id_, prompt=p, max_tokens=24,
                                                             temperature=0) for id_, p in jobs])
        for (id_, p), (text, last, _) in zip(jobs, got):
            self.assertEqual(text, run_greedy(MODEL, p, 24, "--temp", "0"), f"{id_}: {p!r}")
            self.assertIn(last["finish_reason"], ("length", "stop"))
            if last["finish_reason"] == "length":
                self.assertEqual(last["completion_tokens"], 24)
            self.assertGreater(last["prompt_tokens"], 1)
        self.assertEqual(got[0][0], got[-1][0])
        i = self.s.info()
        self.assertEqual((i["active"], i["waiting"], i["kv_blocks_free"]), (0, 0, 256))
        self.assertGreaterEqual(i["tokens_generated"], 7 * 10)
        # Batching happened: fewer steps than tokens generated.
        self.assertLess(i["steps"], i["tokens_generated"])
        m = self.s.call("serve.metrics")["metrics"]
        values = {l.split(" ")[0]: float(l.split(" ")[1]) for l in m.splitlines()
                  if l and not l.startswith("#")}
        self.assertEqual(values["commons_serve_generated_tokens_total"], i["tokens_generated"])
        self.assertEqual(values['commons_serve_kv_blocks{state="free"}'], 256)
        self.assertEqual(values['commons_serve_sequences{state="active"}'], 0)
        self.assertGreaterEqual(values["commons_serve_requests_total"], 7)

    def test_seeded_sampling_equals_commons_run(self):
        # The random model's distributions are sharp: a high temperature and no top_p/min_p
        # cut make the seed matter.
        params = dict(temperature=3.0, top_k=40, top_p=1.0, min_p=0.0, seed=11, max_tokens=20)
        flags = ["--temp", "3", "--top-k", "40", "--top-p", "1", "--min-p", "0"]
        a, b = parallel([lambda: self.s.generate("s1", prompt=PROMPTS[2], **params),
                         lambda: self.s.generate("s2", prompt=PROMPTS[2], **params)])
        want = run_greedy(MODEL, PROMPTS[2], 20, *flags, "--seed", "11")
        self.assertEqual(a[0], want)
        self.assertEqual(b[0], want)
        other, _, _ = self.s.generate("s3", prompt=PROMPTS[2], **{**params, "seed": 12})
        self.assertEqual(other, run_greedy(MODEL, PROMPTS[2], 20, *flags, "--seed", "12"))
        self.assertNotEqual(other, want, "seeds 11 and 12 should sample differently here")
        # Without a seed every request gets a fresh one: equal requests, different samples.
        unseeded = {k: v for k, v in params.items() if k != "seed"}
        texts = [self.s.generate(f"u{i}", prompt=PROMPTS[2], **unseeded)[0] for i in range(4)]
        self.assertGreater(len(set(texts)), 1, texts)

    def test_stop_string(self):
        full = run_greedy(MODEL, PROMPTS[1], 30, "--temp", "0")
        self.assertGreater(len(full), 12)
        stop = full[8:12]
        text, last, _ = self.s.generate("stop", prompt=PROMPTS[1], max_tokens=30, temperature=0,
                                        stop=["never appears", stop])
        self.assertEqual(text, full[:full.index(stop)])
        self.assertEqual(last["finish_reason"], "stop")
        self.assertNotIn(stop, text)

    def test_long_poll_returns_on_text_and_at_end(self):
        self.assertTrue(self.s.call("gen.start", id="lp", prompt=PROMPTS[3], max_tokens=300,
                                    temperature=0)["ok"])
        t0 = time.monotonic()
        p = self.s.call("gen.poll", id="lp", offset=0, wait_ms=5000)
        self.assertTrue(p["ok"])
        self.assertLess(time.monotonic() - t0, 4.0, "a held poll must return when text arrives")
        self.assertTrue(p["text"] or p["done"])
        text = p["text"]
        while not p["done"]:
            p = self.s.call("gen.poll", id="lp", offset=len(text.encode()), wait_ms=5000)
            text += p["text"]
        # After the end: an immediate, empty, final answer.
        t0 = time.monotonic()
        p = self.s.call("gen.poll", id="lp", offset=len(text.encode()), wait_ms=5000)
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertEqual((p["text"], p["done"]), ("", True))
        self.assertEqual(text, run_greedy(MODEL, PROMPTS[3], 300, "--temp", "0"))
        # A poll past the end of the text is refused.
        bad = self.s.call("gen.poll", id="lp", offset=len(text.encode()) + 1)
        self.assertEqual(bad["error"]["code"], "bad_request")

    def test_bad_requests(self):
        cases = [
            (b"{not json", "bad_request"),
            (b"[1, 2]", "bad_request"),
            (json.dumps({"type": "gen.start", "v": 2, "id": "x", "prompt": "a"}), "bad_request"),
            (json.dumps({"type": "nope", "v": 1}), "bad_request"),
            (json.dumps({"type": "gen.start", "v": 1, "prompt": "a"}), "bad_request"),
            (json.dumps({"type": "gen.start", "v": 1, "id": 5, "prompt": "a"}), "bad_request"),
            (json.dumps({"type": "gen.start", "v": 1, "id": "x"}), "bad_request"),
            (json.dumps({"type": "gen.start", "v": 1, "id": "x", "prompt": "a", "messages": []}),
             "bad_request"),
            (json.dumps({"type": "gen.start", "v": 1, "id": "x", "prompt": "a", "max_tokens": "9"}),
             "bad_request"),
            (json.dumps({"type": "gen.start", "v": 1, "id": "x", "prompt": "a", "max_tokens": 0}),
             "bad_request"),
            (json.dumps({"type": "gen.start", "v": 1, "id": "x", "prompt": "a", "temperature": -1}),
             "bad_request"),
            (json.dumps({"type": "gen.start", "v": 1, "id": "x", "prompt": "a", "top_p": 2}),
             "bad_request"),
            (json.dumps({"type": "gen.start", "v": 1, "id": "x", "prompt": "a", "stop": [1]}),
             "bad_request"),
            # the synthetic vocabulary has no chat format
            (json.dumps({"type": "gen.start", "v": 1, "id": "x",
                         "messages": [{"role": "user", "content": "hi"}]}), "bad_request"),
            (json.dumps({"type": "gen.start", "v": 1, "id": "x", "prompt": "a " * 600}), "too_long"),
            (json.dumps({"type": "gen.start", "v": 1, "id": "x", "prompt": "a",
                         "max_tokens": 600}), "too_long"),
            (json.dumps({"type": "gen.poll", "v": 1, "id": "missing"}), "not_found"),
            (json.dumps({"type": "gen.poll", "v": 1, "id": "x", "offset": -1}), "bad_request"),
            (json.dumps({"type": "gen.cancel", "v": 1, "id": "missing"}), "not_found"),
        ]
        for data, code in cases:
            r = self.s.raw(data)
            self.assertFalse(r["ok"], data)
            self.assertEqual(r["error"]["code"], code, f"{data!r}: {r}")
            self.assertTrue(r["error"]["message"])
        # Over 1 MiB: nng drops the message unanswered; the server keeps serving.
        big = json.dumps({"type": "gen.start", "v": 1, "id": "big", "prompt": "a" * (1 << 20)})
        with self.assertRaises(AssertionError):
            self.s.raw(big, timeout_ms=1500)
        # A duplicate id is refused while the first is known.
        self.assertTrue(self.s.call("gen.start", id="dup", prompt="a", max_tokens=2)["ok"])
        self.assertEqual(self.s.call("gen.start", id="dup", prompt="a")["error"]["code"],
                         "bad_request")
        # Still serving, nothing leaked.
        text, last, _ = self.s.generate("after", prompt=PROMPTS[0], max_tokens=5, temperature=0)
        self.assertEqual(last["completion_tokens"], 5)
        wait_until(lambda: self.s.info()["kv_blocks_free"] == 256, what="blocks back")


class Admission(ServeTest):
    def test_busy_when_kv_exhausted_and_cancel_frees(self):
        # 200 blocks of 16 positions: prompt + 3000 tokens take 188 (and seconds to generate,
        # so the sequence is still running while the others are refused).
        s = self.start(MODEL, "--kv-blocks", "200", "--max-batch", "4", "--threads", "1")
        r = s.call("gen.start", id="big", prompt=PROMPTS[0], max_tokens=3000, temperature=0)
        self.assertTrue(r["ok"], r)
        i = s.info()
        self.assertEqual(i["kv_blocks_free"], 12)
        self.assertEqual(i["active"] + i["waiting"], 1)
        r = s.call("gen.start", id="second", prompt=PROMPTS[0], max_tokens=500)
        self.assertEqual(r["error"]["code"], "busy", r)
        self.assertIn("KV", r["error"]["message"])
        r = s.call("gen.start", id="huge", prompt=PROMPTS[0], max_tokens=3300)
        self.assertEqual(r["error"]["code"], "too_long", r)   # more than the whole pool
        self.assertTrue(s.call("gen.cancel", id="big")["ok"])
        i = s.info()
        self.assertEqual(i["kv_blocks_free"], 200)
        self.assertEqual((i["active"], i["waiting"]), (0, 0))
        p = s.call("gen.poll", id="big", offset=0)
        self.assertTrue(p["done"])
        self.assertEqual(p["finish_reason"], "cancelled")
        self.assertLess(p["completion_tokens"], 3000)
        text, last, _ = s.generate("second", prompt=PROMPTS[0], max_tokens=500, temperature=0)
        self.assertEqual(last["finish_reason"], "length")
        self.assertEqual(s.info()["kv_blocks_free"], 200)

    def test_busy_when_batch_full(self):
        s = self.start(MODEL, "--max-batch", "2", "--kv-blocks", "600", "--threads", "1")
        for id_ in ("a", "b"):
            # Greedy: a sampled end-of-text token would free a slot early.
            self.assertTrue(s.call("gen.start", id=id_, prompt=PROMPTS[1], max_tokens=3000, temperature=0)["ok"])
        r = s.call("gen.start", id="c", prompt="x", max_tokens=4)
        self.assertEqual(r["error"]["code"], "busy")
        self.assertIn("batch slots", r["error"]["message"])
        self.assertTrue(s.call("gen.cancel", id="a")["ok"])
        self.assertTrue(s.call("gen.start", id="c", prompt="x", max_tokens=4)["ok"])

    def test_abandoned_sequence_is_cancelled(self):
        # 4000 tokens take this model several seconds; nobody polls after the start.
        s = self.start(MODEL, "--kv-blocks", "300", "--abandon-s", "1", "--threads", "1")
        self.assertTrue(s.call("gen.start", id="lost", prompt=PROMPTS[2], max_tokens=4000, temperature=0)["ok"])
        wait_until(lambda: s.info()["kv_blocks_free"] == 300, timeout=20,
                   what="the abandoned sequence's blocks to be freed")
        p = s.call("gen.poll", id="lost")
        self.assertTrue(p["done"])
        self.assertEqual(p["finish_reason"], "cancelled")
        self.assertIn("abandoned", s.log_text())


class Drain(ServeTest):
    def test_sigterm_finishes_running_sequences(self):
        s = self.start(MODEL, "--kv-blocks", "300", "--threads", "1", "--drain-s", "300")
        self.assertTrue(s.call("gen.start", id="run", prompt=PROMPTS[4], max_tokens=3000,
                               temperature=0)["ok"])
        s.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: s.info()["draining"], what="the drain to start")
        r = s.call("gen.start", id="late", prompt="x", max_tokens=3)
        self.assertEqual(r["error"]["code"], "busy")
        text, p = "", {"done": False}
        while not p["done"]:
            p = s.call("gen.poll", id="run", offset=len(text.encode()), wait_ms=2000)
            text += p["text"]
        self.assertEqual(p["finish_reason"], "length")
        self.assertEqual(text, run_greedy(MODEL, PROMPTS[4], 3000, "--temp", "0"))
        self.assertEqual(s.proc.wait(timeout=30), 0)
        self.assertIn("draining", s.log_text())

    def test_drain_deadline_cancels(self):
        s = self.start(MODEL, "--kv-blocks", "300", "--threads", "1", "--drain-s", "1")
        self.assertTrue(s.call("gen.start", id="slow", prompt=PROMPTS[4], max_tokens=4000, temperature=0)["ok"])
        s.proc.send_signal(signal.SIGTERM)
        text, p = "", {"done": False}
        while not p["done"]:
            p = s.call("gen.poll", id="slow", offset=len(text.encode()), wait_ms=2000)
            text += p["text"]
        self.assertEqual(p["finish_reason"], "cancelled")
        self.assertLess(p["completion_tokens"], 4000)
        self.assertEqual(s.proc.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main()
