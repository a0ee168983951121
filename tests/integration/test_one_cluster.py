"""One cluster for both (issue 8): commonsd, two agents (one playing an 8-GPU node from
an hwloc XML), a service of 1..3 commons-serve replicas behind the gateway, and a batch
workload in a scavenger QOS that fills the GPUs. Inference load rises: the gateway
scales the service up and replicas take GPUs by preempting scavenger jobs, which are
requeued and later finish; load falls and the service scales down; the ledger verifies
and its GPU-hours equal the sum over the jobs."""
import getpass
import html.parser
import json
import os
import shutil
import subprocess
import threading
import time
import unittest

from gw_harness import Gateway
from harness import ClusterTest, wait_until
from serve_harness import make_model

ME = getpass.getuser()
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
XML = os.path.join(REPO, "configs", "topologies", "gpu-2x56c-8gpu.xml")

POLICY = f"""
version: 1
qos:
  normal: {{priority: 10}}
  scavenger: {{priority: 0, preemptible: true, preempt_mode: requeue}}
  service: {{priority: 100, preempt: [scavenger]}}
default_qos: normal
accounts:
  nation:
    children:
      uni-north:
        shares: 50
        children:
          physics: {{shares: 1}}
      public:
        shares: 50
        children:
          inference: {{shares: 1}}
users:
  alice: {{default_account: physics, unix_user: {ME}}}
  svc: {{default_account: inference, unix_user: {ME}}}
citizens:
  tiers:
    open:
      tokens_per_day: 10000000
      requests_per_minute: 100000
      max_tokens_per_request: 1024
      concurrent_requests: 100
  default_tier: open
"""


class OneCluster(ClusterTest):
    def test_batch_and_inference_share_the_gpus(self):
        c = self.c
        model = make_model(os.path.join(c.dir, "tiny.gguf"), "--arch", "llama", "--embd", "64", "--layers", "2",
                           "--heads", "4", "--kv-heads", "2", "--ff", "128", "--ctx", "512", "--type", "q8_0")
        policy = os.path.join(c.dir, "policy.yaml")
        with open(policy, "w") as f:
            f.write(POLICY)
        c.start_scheduler(extra=["--policy", policy])
        c.start_agent("cpu1", cpus=2)
        c.start_agent("gpu8", cpus=112, gpus=8, extra=["--topology", XML, "--hostname", "127.0.0.1"])
        gpu8 = [n for n in c.json("nodes") if n["name"] == "gpu8"][0]
        self.assertEqual(gpu8["gpus"], 8)
        alice = c.cli("admin", "token", "create", "alice").stdout.strip()
        svc = c.cli("admin", "token", "create", "svc").stdout.strip()
        svc_file = os.path.join(c.dir, "svc.token")
        with open(svc_file, "w") as f:
            f.write(svc + "\n")

        # Scavenger batch work fills all 8 GPUs, long enough to still hold them when the
        # second replica is asked for (after the deploy, the gateway and a scale-up).
        batch = [json.loads(c.cli("--json", "submit", "-q", "scavenger", "-G", "1", "-t", "10:00", "--", "sleep",
                                  "12", token=alice).stdout)["job_id"] for _ in range(8)]
        for j in batch:
            c.wait_state(j, "RUNNING", token=alice)
        self.assertEqual([n for n in c.json("nodes") if n["name"] == "gpu8"][0]["gpus_used"], 8)

        # The service's first replica needs a GPU: it preempts one scavenger job.
        c.cli("service", "deploy", "chat", "--model", model, "--replicas", "1..3", "--gpus-per-replica", "1",
              "--qos", "service", token=svc)

        def live_replicas():
            s = c.json("service", "list", "chat")[0]
            return [r for r in s["replicas"] if r["state"] == "RUNNING" and not r["stopping"]]
        wait_until(lambda: len(live_replicas()) == 1, timeout=60, what="the first replica")
        gw = Gateway(c.dir, [], policy=POLICY, extra=[
            "--service", "chat", "--commonsd", c.addr, "--token-file", svc_file, "--autoscale",
            "--scale-up-after", "0.5", "--scale-down-after", "4", "--replica-slots", "1", "--queue-timeout", "120"])
        self.addCleanup(gw.stop)
        key = gw.new_key("citizen")

        def models():
            status, _, body = gw.request("GET", "/v1/models", key=key)
            return status == 200 and json.loads(body)["data"]
        name = wait_until(models, timeout=60, what="the gateway to learn the replica")[0]["id"]

        # Inference load rises: the service scales up, taking more GPUs from scavengers.
        results = []

        def ask():
            st, _, _ = gw.post("/v1/completions", {"model": name, "prompt": "hello", "max_tokens": 500,
                                                   "temperature": 0}, key=key, timeout=300)
            results.append(st)
        threads = [threading.Thread(target=ask) for _ in range(48)]
        for t in threads:
            t.start()
        wait_until(lambda: c.json("service", "list", "chat")[0]["target"] >= 2, timeout=90, what="a scale-up")
        wait_until(lambda: len(live_replicas()) >= 2, timeout=90, what="a second replica running")
        for t in threads:
            t.join(timeout=300)
        self.assertEqual(results, [200] * 48)
        preempted = [j for j in batch if c.job(j, token=alice)["requeues"] >= 1]
        self.assertGreaterEqual(len(preempted), 2)
        for j in preempted:
            self.assertIn("preempted", c.job(j, token=alice)["note"])

        # Load falls: the service scales back to its minimum.
        wait_until(lambda: c.json("service", "list", "chat")[0]["target"] == 1, timeout=90, what="a scale-down")
        # Every scavenger job, preempted or not, finishes.
        for j in batch:
            c.wait_state(j, "COMPLETED", timeout=120, token=alice)
        self.check_status_page(gw, c)
        c.cli("service", "remove", "chat", token=svc)
        wait_until(lambda: not [j for j in c.json("queue") if j["name"] == "chat"], timeout=60,
                   what="the replicas to end")

        # The ledger verifies, records each preemption, and its GPU-hours equal the jobs'.
        c.cli("ledger", "verify")
        export = os.path.join(c.dir, "ledger.json")
        c.cli("ledger", "export", "--format", "json", "--out", export)
        with open(export) as f:
            entries = json.load(f)
        kinds = [e["kind"] for e in entries]
        self.assertGreaterEqual(kinds.count("preemption"), len(preempted))
        # Bodies are kept as the exact hashed text (docs/ledger.md).
        runs = [json.loads(e["body"]) for e in entries if e["kind"] in ("job_end", "job_requeue")]
        ledger_gpu_h = sum(r["gpus"] * (r["end"] - r["start"]) for r in runs) / 3600
        report = c.json("usage", "--by", "account", "--period", "month")
        self.assertAlmostEqual(sum(r["gpu_hours"] for r in report), ledger_gpu_h, places=6)
        self.assertEqual({r["name"] for r in report if r["gpu_hours"] > 0}, {"physics", "inference"})


    def check_status_page(self, gw, c):
        """The public status page, rendered by headless Chromium, shows what the API says."""
        def status():
            st, _, body = gw.request("GET", "/status")
            st = json.loads(body)
            cl = st.get("cluster") or {}
            names = {r["name"] for r in cl.get("usage", []) if r["billed"] > 0}
            return {"uni-north", "public"} <= names and st
        wait_until(status, timeout=60, what="the cluster view with both institutions' usage")
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        self.assertIsNotNone(chromium, "Debian's chromium package is needed (scripts/install-deps)")
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=8000"]
        # Compare against the view the page rendered: /status just before or just after
        # the render (replicas still ending while the service scales down change usage).
        views = []
        for _ in range(5):
            before = status()
            dom = subprocess.run([chromium, *flags, "--dump-dom", gw.base + "/"], capture_output=True, text=True,
                                 timeout=120).stdout
            views = [v for v in (before, status()) if v]
            if views and "data-institution" in dom:
                break
        artifacts = os.path.join(os.environ.get("COMMONS_BUILD", "."), "test-artifacts")
        os.makedirs(artifacts, exist_ok=True)
        shot = os.path.join(artifacts, "status-page.png")
        subprocess.run([chromium, *flags, "--window-size=1000,1600", f"--screenshot={shot}", gw.base + "/"],
                       capture_output=True, timeout=120)
        self.assertGreater(os.path.getsize(shot), 10000)

        class Page(html.parser.HTMLParser):
            def __init__(self):
                super().__init__()
                self.ids, self.rows, self.cur, self.cls, self.rects = {}, {}, None, None, 0
                self.row = None

            def handle_starttag(self, tag, attrs):
                a = dict(attrs)
                self.cur, self.cls = a.get("id"), a.get("class")
                if tag == "tr" and ("data-account" in a or "data-institution" in a):
                    self.row = a.get("data-account") or a.get("data-institution")
                    self.rows[self.row] = {}
                if tag == "rect" and "data-day" in a:
                    self.rects += 1

            def handle_data(self, data):
                if self.cur:
                    self.ids[self.cur] = data.strip()
                if self.row and self.cls:
                    self.rows[self.row][self.cls] = data.strip()
                self.cur = self.cls = None
        page = Page()
        page.feed(dom)

        def matches(st):
            cl = st["cluster"]
            usage = [r for r in cl["usage"] if r["billed"] > 0]
            total = sum(r["billed"] for r in usage)
            return all(page.rows[i]["delivered"] == f"{100 * sum(r['billed'] for r in usage if r['name'] == i) / total:.1f}%"
                       for i in ("uni-north", "public")) and \
                int(page.ids["generations"]) == st["inference"]["generations"]
        st = views[-1]
        cl = st["cluster"]
        self.assertEqual(int(page.ids["gpus-total"]), sum(n["gpus"] for n in cl["nodes"]))
        self.assertEqual(int(page.ids["cpus-total"]), sum(n["cpus"] for n in cl["nodes"]))
        self.assertEqual(int(page.ids["nodes-total"]), len(cl["nodes"]))
        self.assertEqual(page.rows["uni-north"]["policy"], "50.0%")
        self.assertEqual(page.rows["public"]["policy"], "50.0%")
        self.assertTrue(any(matches(v) for v in views), f"page {page.rows} {page.ids} vs /status {views}")
        self.assertGreaterEqual(page.rects, 2)  # a bar per institution and day
        self.assertEqual(int(page.ids["generations"]), 48)


if __name__ == "__main__":
    unittest.main()
