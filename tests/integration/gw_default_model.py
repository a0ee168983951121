"""The gateway in front of commons-serve on the default model (Gemma 3 270M Q4_K_M,
scripts/get-model): chat through the model's chat template, whole and streamed,
with the official `openai` package and with curl. Registered by gateway/CMakeLists.txt
as gateway.default_model (it needs ctest's default_model fixture)."""
import json
import os
import subprocess
import time
import unittest

import openai

from gw_fakeserve import sp_call  # its stdlib nng REQ client
from gw_harness import Gateway, make_workdir, remove_workdir
from harness import binary, free_port, wait_until
from serve_harness import DEFAULT_MODEL

QUESTION = "What is the capital of France? Answer in one word."


class DefaultModelThroughGateway(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = make_workdir()
        cls.serve_url = f"tcp://127.0.0.1:{free_port()}"
        cls.serve_log = open(os.path.join(cls.dir, "serve.log"), "ab")
        cls.serve = subprocess.Popen([binary("inference/commons-serve"), "--model", DEFAULT_MODEL,
                                      "--listen", cls.serve_url, "--ctx", "1024", "--kv-mb", "128",
                                      "--max-batch", "4", "--threads", "2", "--foreground"],
                                     stdout=cls.serve_log, stderr=cls.serve_log)
        try:
            cls.gw = Gateway(cls.dir, [cls.serve_url])
            wait_until(lambda: cls.gw.request("GET", "/health")[0] == 200, timeout=120,
                       what="commons-serve to load the default model")
        except Exception:
            cls.serve.kill()
            cls.serve.wait()
            raise
        cls.key = cls.gw.new_key("default-model")
        cls.model = os.path.basename(DEFAULT_MODEL)[:-len(".gguf")]

    @classmethod
    def tearDownClass(cls):
        status = cls.gw.stop()
        cls.serve.kill()
        cls.serve.wait()
        cls.serve_log.close()
        remove_workdir(cls.dir)
        if status != 0:
            raise AssertionError(f"commons-gateway exited {status} on SIGTERM")

    def direct(self, **fields):
        """Text of one generation asked of commons-serve itself, without the gateway."""
        sid = f"direct-{time.monotonic_ns()}"
        r = sp_call(self.serve_url, {"type": "gen.start", "v": 1, "id": sid, **fields})
        self.assertTrue(r["ok"], r)
        text = b""
        while True:
            r = sp_call(self.serve_url, {"type": "gen.poll", "v": 1, "id": sid, "offset": len(text),
                                         "wait_ms": 2000})
            self.assertTrue(r["ok"], r)
            text += r["text"].encode()
            if r["done"]:
                return text.decode()

    def test_chat_whole_streamed_and_curl(self):
        c = openai.OpenAI(base_url=self.gw.base + "/v1", api_key=self.key, max_retries=0, timeout=300)
        self.assertIn(self.model, [m.id for m in c.models.list()])
        r = c.chat.completions.create(model=self.model, messages=[{"role": "user", "content": QUESTION}],
                                      max_tokens=16, temperature=0)
        whole = r.choices[0].message.content
        # The gateway is transparent: the same text as asking serve directly.
        self.assertEqual(whole, self.direct(messages=[{"role": "user", "content": QUESTION}],
                                            max_tokens=16, temperature=0))
        self.assertTrue(whole.strip())
        self.assertNotIn("<end_of_turn>", whole)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        self.assertGreater(r.usage.prompt_tokens, 5)
        self.assertGreater(r.usage.completion_tokens, 0)

        chunks = list(c.chat.completions.create(model=self.model, stream=True, max_tokens=16, temperature=0,
                                                messages=[{"role": "user", "content": QUESTION}]))
        self.assertEqual("".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices), whole)

        body = json.dumps(dict(model=self.model, messages=[{"role": "user", "content": QUESTION}],
                               max_tokens=16, temperature=0, stream=True))
        p = subprocess.run(["curl", "-sS", "-N", "--max-time", "300", "-H", f"Authorization: Bearer {self.key}",
                            "-H", "Content-Type: application/json", "-d", body,
                            self.gw.base + "/v1/chat/completions"], capture_output=True, text=True, timeout=320)
        self.assertEqual(p.returncode, 0, p.stderr)
        events = [e for e in p.stdout.split("\n\n") if e.strip()]
        self.assertEqual(events[-1], "data: [DONE]")
        text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        self.assertEqual(text, whole)

    def test_completion_with_stop(self):
        c = openai.OpenAI(base_url=self.gw.base + "/v1", api_key=self.key, max_retries=0, timeout=300)
        r = c.completions.create(model=self.model, prompt="Monday, Tuesday, Wednesday,", max_tokens=12,
                                 temperature=0, stop=["Friday"])
        self.assertNotIn("Friday", r.choices[0].text)
        self.assertEqual(r.choices[0].text, self.direct(prompt="Monday, Tuesday, Wednesday,", max_tokens=12,
                                                        temperature=0, stop=["Friday"]))
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))


if __name__ == "__main__":
    unittest.main()
