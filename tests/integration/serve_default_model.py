"""commons-serve on the default model (Gemma 3 270M Q4_K_M, via scripts/get-model):
chat `messages` rendered with the model's chat format, and concurrent prompts, all equal
to commons-run's greedy output for the same input. Registered by inference/serve.cmake
as inference.serve.default_model (it needs the default_model fixture)."""
import subprocess
import unittest

from harness import binary
from serve_harness import DEFAULT_MODEL, ServeTest, parallel, run_greedy


class DefaultModel(ServeTest):
    def setUp(self):
        self.s = self.start(DEFAULT_MODEL, "--ctx", "1024", "--kv-mb", "128", "--max-batch", "4",
                            "--threads", "2")

    def test_chat_equals_commons_run_chat(self):
        q = "What is the capital of France? Answer in one word."
        text, last, _ = self.s.generate("chat", messages=[{"role": "user", "content": q}],
                                        max_tokens=16, temperature=0)
        self.assertTrue(text.strip())
        self.assertIn(last["finish_reason"], ("stop", "length"))
        self.assertNotIn("<end_of_turn>", text)
        p = subprocess.run([binary("inference/commons-run"), "--model", DEFAULT_MODEL, "--chat",
                            "-n", "16", "--temp", "0", "--threads", "1"], input=q + "\n",
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, text + "\n")

    def test_concurrent_prompts_equal_commons_run(self):
        prompts = ["The capital of France is", "Here is a list of the days of the week: Monday,"]
        got = parallel([lambda i=i, p=p: self.s.generate(f"p{i}", prompt=p, max_tokens=20,
                                                         temperature=0)
                        for i, p in enumerate(prompts)])
        for p, (text, last, _) in zip(prompts, got):
            self.assertEqual(text, run_greedy(DEFAULT_MODEL, p, 20, "--temp", "0"), p)
        self.assertEqual(self.s.info()["model"], "gemma-3-270m-q4_k_m")


if __name__ == "__main__":
    unittest.main()
