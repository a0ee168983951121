"""Integration tests of commons-gateway (issue 7, docs/gateway.md): the real
gateway on 127.0.0.1 in front of the fake serve test fixture (gw_fakeserve.py,
deterministic words, one per --delay), driven with the official `openai`
Python package, curl and plain http.client. Needs: pip openai; curl."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

import openai

from gw_harness import FakeServe, Gateway, expected_words, make_workdir, policy_text, remove_workdir
from harness import binary, free_port, wait_until

CHAT = "/v1/chat/completions"
COMPL = "/v1/completions"


def user(text):
    return [{"role": "user", "content": text}]


def chat_body(text="hello there", **kw):
    return dict(model="fake-model", messages=user(text), **kw)


class GatewayBase(unittest.TestCase):
    serve_opts = dict(delay=0.005, max_batch=8)
    gateway_extra = ()

    @classmethod
    def setUpClass(cls):
        cls.dir = make_workdir()
        cls.serve = FakeServe(cls.dir, **cls.serve_opts)
        try:
            cls.gw = Gateway(cls.dir, [cls.serve], extra=cls.gateway_extra)
        except Exception:
            cls.serve.close()
            raise

    @classmethod
    def tearDownClass(cls):
        status = cls.gw.stop()
        cls.serve.close()
        log = cls.gw.read_log()
        remove_workdir(cls.dir)
        if status != 0:  # SIGTERM drains and exits 0 (and under ASan: no leaks)
            raise AssertionError(f"commons-gateway exited {status} on SIGTERM:\n{log[-3000:]}")

    def run(self, result=None):
        failures = len(result.failures) + len(result.errors) if result else 0
        out = super().run(result)
        if result and len(result.failures) + len(result.errors) > failures:
            print("---- gateway log ----\n" + self.gw.read_log()[-4000:])
        return out

    def client(self, key):
        return openai.OpenAI(base_url=self.gw.base + "/v1", api_key=key, max_retries=0, timeout=30)

    def assert_error(self, status, body, want_status, code=None, param=None):
        self.assertEqual(status, want_status, body)
        err = body["error"]
        self.assertTrue(err["message"])
        self.assertIn("type", err)
        if code is not None:
            self.assertEqual(err["code"], code, err)
        if param is not None:
            self.assertEqual(err["param"], param, err)

    def start_and_wait_for_serve(self, thread):
        """Starts a thread that sends one generation and waits until it has reached serve."""
        before = self.serve.stats()["starts"]
        thread.start()
        wait_until(lambda: self.serve.stats()["starts"] > before, what="the request to reach serve")


class TestGatewayApi(GatewayBase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.key = cls.gw.new_key("alice")

    # -- the OpenAI client ---------------------------------------------------
    def test_openai_chat_and_completion(self):
        c = self.client(self.key)
        r = c.chat.completions.create(model="fake-model", messages=user("hi there"), max_tokens=5)
        self.assertEqual(r.choices[0].message.content, expected_words(5))
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 5)
        self.assertEqual(r.usage.prompt_tokens, 5)  # the fixture: words + 3 per message
        self.assertEqual(r.usage.total_tokens, 10)
        self.assertTrue(r.id.startswith("chatcmpl-"))

        r = c.completions.create(model="fake-model", prompt="one two three", max_tokens=4, seed=3)
        self.assertEqual(r.choices[0].text, expected_words(4, seed=3))
        self.assertEqual(r.usage.prompt_tokens, 4)
        self.assertEqual(r.usage.completion_tokens, 4)

        r = c.chat.completions.create(model="fake-model", messages=user("hi"), max_tokens=10,
                                      stop=["delta", "zulu"], temperature=0.2, top_p=0.9)
        self.assertEqual(r.choices[0].message.content, " alpha bravo charlie ")
        self.assertEqual(r.choices[0].finish_reason, "stop")

        r = c.completions.create(model="fake-model", prompt="end soon [eos=2]", max_tokens=50)
        self.assertEqual(r.choices[0].text, expected_words(2))
        self.assertEqual(r.choices[0].finish_reason, "stop")

    def test_openai_streaming(self):
        c = self.client(self.key)
        chunks = list(c.chat.completions.create(model="fake-model", messages=user("stream please"),
                                                max_tokens=6, stream=True,
                                                stream_options={"include_usage": True}))
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        self.assertEqual(text, expected_words(6))
        finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        self.assertEqual(finals, ["length"])
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, 6)
        self.assertGreater(len(chunks), 3)  # streamed in pieces, not one lump
        self.assertEqual(len({ch.id for ch in chunks}), 1)

        chunks = list(c.completions.create(model="fake-model", prompt="go", max_tokens=5, stream=True))
        self.assertEqual("".join(ch.choices[0].text for ch in chunks), expected_words(5))
        self.assertEqual(chunks[-1].choices[0].finish_reason, "length")

    def test_models_health_metrics(self):
        c = self.client(self.key)
        self.assertEqual([m.id for m in c.models.list()], ["fake-model"])
        status, _, body = self.gw.request("GET", "/health")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["status"], "ok")
        self.gw.post(CHAT, chat_body(max_tokens=2), key=self.key)
        status, headers, body = self.gw.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain"))
        text = body.decode()
        self.assertRegex(text, r'commons_gateway_requests_total\{route="chat",code="200"\} [1-9]')
        self.assertRegex(text, r'commons_gateway_replica_up\{replica="tcp://127.0.0.1:\d+",model="fake-model"\} 1')
        self.assertRegex(text, r'commons_gateway_tokens_total\{kind="completion"\} [1-9]')

    def test_status_page(self):
        status, headers, body = self.gw.request("GET", "/status")
        self.assertEqual(status, 200)
        st = json.loads(body)
        self.assertEqual(st["replicas"][0]["model"], "fake-model")
        self.assertTrue(st["replicas"][0]["up"])
        self.assertEqual(st["replicas"][0]["slots"], 8)
        tiers = {t["name"]: t for t in st["tiers"]}
        self.assertEqual(tiers["slowpoke"]["requests_per_minute"], 2)
        self.assertTrue(tiers["citizen"]["default"])
        self.assertTrue(tiers["anonymous"]["anonymous"])
        status, headers, body = self.gw.request("GET", "/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/html"))
        page = body.decode()
        # The page is shipped with the gateway and fills itself from /status: no external CDN.
        self.assertIn('<script src="/status.js"></script>', page)
        self.assertNotRegex(page, r'(src|href)="https?://')
        status, headers, body = self.gw.request("GET", "/status.js")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/javascript"))
        self.assertIn('fetch("/status"', body.decode())
        status, headers, _ = self.gw.request("GET", "/status.css")
        self.assertEqual((status, headers["content-type"].split(";")[0]), (200, "text/css"))

    # -- curl ----------------------------------------------------------------
    def curl(self, *args):
        p = subprocess.run(["curl", "-sS", "-N", "--max-time", "30", *args], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    def test_curl(self):
        auth = ["-H", f"Authorization: Bearer {self.key}", "-H", "Content-Type: application/json"]
        out = self.curl(*auth, "-d", json.dumps(chat_body(max_tokens=3)), self.gw.base + CHAT)
        body = json.loads(out)
        self.assertEqual(body["object"], "chat.completion")
        self.assertEqual(body["choices"][0]["message"]["content"], expected_words(3))

        out = self.curl(*auth, "-i", "-d", json.dumps(dict(model="fake-model", prompt="x", max_tokens=4,
                                                             stream=True)), self.gw.base + COMPL)
        head, _, stream = out.replace("\r\n", "\n").partition("\n\n")
        self.assertIn("content-type: text/event-stream", head.lower())
        events = [e for e in stream.split("\n\n") if e.strip()]
        self.assertEqual(events[-1], "data: [DONE]")
        texts = [json.loads(e[6:])["choices"][0]["text"] for e in events[:-1]]
        self.assertEqual("".join(texts), expected_words(4))
        self.assertEqual(json.loads(events[-2][6:])["choices"][0]["finish_reason"], "length")

        out = self.curl("-i", self.gw.base + "/v1/nope")
        self.assertIn("404", out.splitlines()[0])

    # -- errors ----------------------------------------------------------------
    def test_bad_requests(self):
        k = self.key
        status, _, body = self.gw.request("POST", CHAT, b'{"model": "fake-model", "messages": [', key=k)
        self.assert_error(status, json.loads(body), 400)
        status, _, body = self.gw.request("POST", CHAT, b"\xff\xfe not utf-8", key=k)
        self.assert_error(status, json.loads(body), 400)
        cases = [
            (chat_body(max_tokens="5"), "max_tokens"),
            (chat_body(temperature="hot"), "temperature"),
            (chat_body(n=2), "n"),
            (chat_body(stream="yes"), "stream"),
            (chat_body(stop=[1, 2]), "stop"),
            (chat_body(frobnicate=True), "frobnicate"),
            (dict(model="fake-model", messages=[{"role": "wizard", "content": "x"}]), "messages"),
            (dict(model="fake-model", messages="hello"), "messages"),
            (dict(messages=user("x")), "model"),
        ]
        for body, param in cases:
            with self.subTest(param=param):
                status, _, reply = self.gw.post(CHAT, body, key=k)
                self.assert_error(status, reply, 400, param=param)
        status, _, reply = self.gw.post(COMPL, dict(model="fake-model", prompt=["a", "b"]), key=k)
        self.assert_error(status, reply, 400, param="prompt")
        # The tier allows 1024 tokens per request: more is refused, not clamped.
        status, _, reply = self.gw.post(CHAT, chat_body(max_tokens=5000), key=k)
        self.assert_error(status, reply, 400, code="max_tokens_too_large", param="max_tokens")
        # Prompt + max_tokens over the tier, known once serve counted the prompt.
        status, _, reply = self.gw.post(COMPL, dict(model="fake-model", prompt="w " * 100, max_tokens=1000), key=k)
        self.assert_error(status, reply, 400, code="context_length_exceeded")
        # The openai client maps these to its exceptions.
        with self.assertRaises(openai.BadRequestError):
            self.client(k).chat.completions.create(model="fake-model", messages=user("x"), n=3)
        self.assertEqual(self.gw.request("GET", "/health")[0], 200)

    def test_garbage_bodies(self):
        # Every truncation of a valid body, and bytes that are not JSON at all:
        # each is a 400 with OpenAI's error JSON, and the gateway keeps serving.
        valid = json.dumps(chat_body("héllo", max_tokens=2, stop=["x"], temperature=0.5)).encode()
        bodies = [valid[:n] for n in range(0, len(valid) - 1, 3)]
        bodies += [b"\x00" * 10, b"{" * 5000, b"[" * 100000, b'{"model": "fake-model", "messages": [' * 2000,
                   bytes(range(256)), b'{"model": 1e999}', b'{"model": "fake-model", "messages": [{"role": "user", "content": "\\ud800"}]}']
        for body in bodies:
            status, _, reply = self.gw.request("POST", CHAT, body, key=self.key)
            self.assertEqual(status, 400, body[:80])
            self.assertIn("error", json.loads(reply))
        self.assertEqual(self.gw.post(CHAT, json.loads(valid), key=self.key)[0], 200)

    def test_not_found_and_methods(self):
        status, _, reply = self.gw.post(CHAT, dict(model="no-such-model", messages=user("x")), key=self.key)
        self.assert_error(status, reply, 404, code="model_not_found", param="model")
        with self.assertRaises(openai.NotFoundError):
            self.client(self.key).completions.create(model="gpt-4", prompt="x")
        status, _, body = self.gw.request("GET", "/v2/whatever")
        self.assert_error(status, json.loads(body), 404)
        status, _, body = self.gw.request("GET", CHAT)
        self.assert_error(status, json.loads(body), 405)

    def test_body_limit(self):
        # Refused on its Content-Length, before the body is read: the client
        # gets the 413 without sending its 2 MiB.
        s = socket.create_connection(("127.0.0.1", self.gw.port))
        s.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Authorization: Bearer {self.key}\r\nContent-Length: {2 << 20}\r\n\r\n".encode())
        s.settimeout(10)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            data = s.recv(65536)
            if not data:
                break
            reply += data
        s.close()
        head, _, body = reply.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 413"), head)
        self.assert_error(413, json.loads(body), 413)
        # curl sends the body after "Expect: 100-continue"; it gets the 413 too.
        p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30",
                            "-H", f"Authorization: Bearer {self.key}", "--data-binary", "@-",
                            self.gw.base + CHAT], input=json.dumps(chat_body("x" * (2 << 20))),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.stdout, "413", p.stderr)
        # A chunked upload is counted as it arrives.
        def chunks():
            for _ in range(40):
                yield b"x" * 65536
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=30)
        c.request("POST", CHAT, body=chunks(), headers={"Transfer-Encoding": "chunked",
                                                         "Authorization": f"Bearer {self.key}"},
                  encode_chunked=True)
        r = c.getresponse()
        self.assertEqual(r.status, 413)
        c.close()
        self.assertEqual(self.gw.post(CHAT, chat_body(max_tokens=1), key=self.key)[0], 200)

    def test_header_limit_and_idle_connections(self):
        status, _, _ = self.gw.request("GET", "/health", headers={"X-Big": "a" * 40000})
        self.assertIn(status, (413, 431))
        # A client that sends half a request and goes silent is disconnected
        # (the gateway here runs with --idle-timeout 2).
        s = socket.create_connection(("127.0.0.1", self.gw.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        s.settimeout(10)
        t0 = time.monotonic()
        try:
            data = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            data = b""
        waited = time.monotonic() - t0
        s.close()
        self.assertEqual(data, b"")
        self.assertLess(waited, 8)
        self.assertEqual(self.gw.request("GET", "/health")[0], 200)

    gateway_extra = ("--idle-timeout", "2", "--max-per-ip", "8")

    def test_connection_limit_per_address(self):
        def hold():
            """A kept-alive connection the gateway has answered on, so it is surely counted.
            One refused because an earlier test's connection is still counted is tried again."""
            for _ in range(50):
                h = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=5)
                try:
                    h.request("GET", "/health")
                    r = h.getresponse()
                    r.read()
                    if r.status == 200 and not r.will_close:
                        return h
                except OSError:
                    pass
                h.close()
                time.sleep(0.1)
            self.fail("the gateway refused a connection under its limit for 5 s")
        # Eight in well under the gateway's 2 s idle timeout, which would close them.
        held = [hold() for _ in range(8)]
        try:
            with self.assertRaises(OSError):  # the 9th is closed without an answer
                self.gw.request("GET", "/health", timeout=5)
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                self.assertEqual(self.gw.request("GET", "/health")[0], 200)
                break
            except OSError:
                time.sleep(0.1)
        else:
            self.fail("the gateway did not accept connections again")

    # -- keys, tiers, quotas -------------------------------------------------------
    def test_auth_and_revocation(self):
        status, _, reply = self.gw.post(CHAT, chat_body(max_tokens=1), key="cmk_" + "0" * 64)
        self.assert_error(status, reply, 401, code="invalid_api_key")
        status, _, reply = self.gw.post(CHAT, chat_body(max_tokens=1), headers={"Authorization": "Basic abc"})
        self.assert_error(status, reply, 401)
        with self.assertRaises(openai.AuthenticationError):
            self.client("not-a-key").chat.completions.create(model="fake-model", messages=user("x"))
        key = self.gw.new_key("mallory")
        self.assertEqual(self.gw.post(CHAT, chat_body(max_tokens=1), key=key)[0], 200)
        listed = json.loads(self.gw.keys("list", "--json"))
        mine = [k for k in listed if k["name"] == "mallory"]
        self.assertEqual(len(mine), 1)
        self.assertNotIn("key", mine[0])
        self.assertTrue(key.startswith(mine[0]["prefix"]))
        self.gw.keys("revoke", str(mine[0]["id"]))  # while the gateway runs
        status, _, reply = self.gw.post(CHAT, chat_body(max_tokens=1), key=key)
        self.assert_error(status, reply, 401, code="invalid_api_key")
        self.assertIn("revoked", reply["error"]["message"])

    def test_usage_recorded(self):
        key = self.gw.new_key("counter")
        for n in (3, 4):
            self.assertEqual(self.gw.post(CHAT, chat_body("a b", max_tokens=n), key=key)[0], 200)
        self.gw.stream_events(COMPL, dict(model="fake-model", prompt="q", max_tokens=2, stream=True), key=key)
        # Usage is written when the response has gone out, a moment after the client has it.
        def counter():
            (mine,) = [k for k in json.loads(self.gw.keys("list", "--json")) if k["name"] == "counter"]
            return mine["requests_today"] == 3 and mine
        mine = wait_until(counter, what="the third request's usage")
        # chat: 2 words + 3 = 5 prompt tokens; completion: 1 word + 1 = 2.
        self.assertEqual(mine["tokens_today"], (5 + 3) + (5 + 4) + (2 + 2))

    def test_rate_limit(self):
        key = self.gw.new_key("hasty", tier="slowpoke")  # 2 requests per minute
        for _ in range(2):
            self.assertEqual(self.gw.post(CHAT, chat_body(max_tokens=1), key=key)[0], 200)
        status, headers, reply = self.gw.post(CHAT, chat_body(max_tokens=1), key=key)
        self.assert_error(status, reply, 429, code="rate_limit_exceeded")
        self.assertGreaterEqual(int(headers["retry-after"]), 1)
        self.assertLessEqual(int(headers["retry-after"]), 60)
        with self.assertRaises(openai.RateLimitError):
            self.client(key).chat.completions.create(model="fake-model", messages=user("x"), max_tokens=1)

    def test_token_quota(self):
        key = self.gw.new_key("thrifty", tier="frugal")  # 100 tokens a day, 64 per request
        used = 0
        while True:
            status, headers, reply = self.gw.post(COMPL, dict(model="fake-model", prompt="p", max_tokens=30), key=key)
            if status != 200:
                break
            used += reply["usage"]["total_tokens"]
            self.assertLessEqual(used, 100)
        self.assert_error(status, reply, 429, code="insufficient_quota")
        self.assertGreaterEqual(int(headers["retry-after"]), 1)
        self.assertGreaterEqual(used, 100 - 32 - 30)  # refused only when the next one could not fit

    def test_concurrency_limit(self):
        key = self.gw.new_key("solo", tier="single")  # 1 request at a time
        got = {}
        def slow():
            got["slow"] = self.gw.post(COMPL, dict(model="fake-model", prompt="p", max_tokens=200), key=key)[0]
        t = threading.Thread(target=slow)
        self.start_and_wait_for_serve(t)
        status, headers, reply = self.gw.post(COMPL, dict(model="fake-model", prompt="p", max_tokens=1), key=key)
        t.join()
        self.assert_error(status, reply, 429, code="rate_limit_exceeded")
        self.assertIn("concurrent", reply["error"]["message"])
        self.assertIn("retry-after", headers)
        self.assertEqual(got["slow"], 200)

    def test_client_disconnect_cancels(self):
        before = self.serve.stats()["cancels"]
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=30)
        c.request("POST", COMPL, body=json.dumps(dict(model="fake-model", prompt="p", max_tokens=1000, stream=True)),
                  headers={"Authorization": f"Bearer {self.key}"})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        r.readline()
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        wait_until(lambda: self.serve.stats()["cancels"] != before, step=0.1, what="the replica's cancel")
        self.assertEqual(self.serve.stats()["cancels"], before + 1)


class TestAnonymousAndReload(GatewayBase):
    def test_anonymous_tier_and_sighup(self):
        # The policy enables an anonymous tier: no key is served under it.
        status, _, reply = self.gw.post(CHAT, chat_body(max_tokens=2))
        self.assertEqual(status, 200, reply)
        # Anonymous max_tokens_per_request is 512.
        status, _, reply = self.gw.post(CHAT, chat_body(max_tokens=600))
        self.assert_error(status, reply, 400, param="max_tokens")
        # A broken policy on SIGHUP keeps the old one.
        with open(self.gw.policy, "w") as f:
            f.write("citizens: [oops\n")
        self.gw.hup()
        time.sleep(0.5)
        self.assertEqual(self.gw.post(CHAT, chat_body(max_tokens=1))[0], 200)
        self.assertIn("not reloaded", self.gw.read_log())
        # Anonymous disabled by the new policy: 401 from the next request on.
        with open(self.gw.policy, "w") as f:
            f.write(policy_text(anonymous=False))
        self.gw.hup()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.gw.post(CHAT, chat_body(max_tokens=1))[0] == 200:
            time.sleep(0.1)
        status, _, reply = self.gw.post(CHAT, chat_body(max_tokens=1))
        self.assert_error(status, reply, 401, code="missing_api_key")
        key = self.gw.new_key("bob")
        self.assertEqual(self.gw.post(CHAT, chat_body(max_tokens=1), key=key)[0], 200)


class TestQueueing(GatewayBase):
    # One slot at serve, but the gateway believes in 3: serve answers busy and
    # the gateway must requeue, never fail; a 1 s queue timeout gives 503.
    serve_opts = dict(delay=0.01, max_batch=1)
    gateway_extra = ("--replica-slots", "3", "--queue-timeout", "2")

    def test_busy_is_requeued(self):
        key = self.gw.new_key("q")
        results = []
        def one():
            # 0.2 s each, so that the four overlap at serve even on a slow machine.
            results.append(self.gw.post(COMPL, dict(model="fake-model", prompt="p", max_tokens=20), key=key)[0])
        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * 4)
        self.assertGreater(self.serve.stats()["busy"], 0)

    def test_queue_timeout_is_503(self):
        key = self.gw.new_key("q2")
        def hog():
            self.gw.post(COMPL, dict(model="fake-model", prompt="p", max_tokens=400), key=key)
        t = threading.Thread(target=hog)
        self.start_and_wait_for_serve(t)
        t0 = time.monotonic()
        status, headers, reply = self.gw.post(COMPL, dict(model="fake-model", prompt="p", max_tokens=1), key=key)
        waited = time.monotonic() - t0
        t.join()
        self.assert_error(status, reply, 503)
        self.assertGreaterEqual(waited, 1.5)
        self.assertIn("retry-after", headers)


class TestReplicaFailure(unittest.TestCase):
    def setUp(self):
        self.dir = make_workdir()
        self.addCleanup(remove_workdir, self.dir)
        self.serve = FakeServe(self.dir, delay=0.01, max_batch=8)
        self.addCleanup(self.serve.close)
        self.gw = Gateway(self.dir, [self.serve])
        self.addCleanup(self.gw.stop)
        self.key = self.gw.new_key("k")

    def test_replica_dies_mid_stream_and_comes_back(self):
        status, events = self.gw.stream_events(
            CHAT, chat_body("boom [crash=3]", max_tokens=50, stream=True), key=self.key)
        self.assertEqual(status, 200)
        self.assertNotIn("DONE", events)
        self.assertIn("error", events[-1])
        self.assertEqual(events[-1]["error"]["type"], "server_error")
        # The openai client raises on the error event.
        self.serve.stop()
        self.serve.start()
        wait_until(lambda: self.gw.request("GET", "/health")[0] == 200, step=0.1, what="/health 200")
        c = openai.OpenAI(base_url=self.gw.base + "/v1", api_key=self.key, max_retries=0)
        with self.assertRaises(openai.APIError):
            for _ in c.chat.completions.create(model="fake-model", messages=user("boom [crash=2]"),
                                               max_tokens=50, stream=True):
                pass
        self.serve.stop()
        # Non-streamed: a clean 500 (or 503 when the replica is already known down).
        status, _, reply = self.gw.post(CHAT, chat_body(max_tokens=2), key=self.key)
        self.assertIn(status, (500, 503), reply)
        self.assertIn("error", reply)
        self.serve.start()
        wait_until(lambda: self.gw.request("GET", "/health")[0] == 200, step=0.1, what="/health 200")
        status, _, reply = self.gw.post(CHAT, chat_body(max_tokens=2), key=self.key)
        self.assertEqual(status, 200, reply)
        self.assertEqual(self.gw.proc.poll(), None)

    def test_daily_tokens_survive_restart(self):
        key = self.gw.new_key("thrifty", tier="frugal")  # 100 tokens a day
        status, _, reply = self.gw.post(COMPL, dict(model="fake-model", prompt="p", max_tokens=40), key=key)
        self.assertEqual(status, 200, reply)
        used = reply["usage"]["total_tokens"]  # 2 + 40
        self.assertEqual(self.gw.stop(), 0)
        self.gw.start()
        # The budget left is 100 - 42 = 58: a request that may need 2 + 60 is refused...
        status, headers, reply = self.gw.post(COMPL, dict(model="fake-model", prompt="p", max_tokens=60), key=key)
        self.assertEqual(status, 429, reply)
        self.assertEqual(reply["error"]["code"], "insufficient_quota")
        self.assertIn(f"{used} of 100", reply["error"]["message"])
        # ... and one that fits is served.
        self.assertEqual(self.gw.post(COMPL, dict(model="fake-model", prompt="p", max_tokens=40), key=key)[0], 200)

    def test_sigterm_drains(self):
        got = {}
        started = threading.Event()
        def stream():
            got["r"] = self.gw.stream_events(COMPL, dict(model="fake-model", prompt="p", max_tokens=80, stream=True),
                                             key=self.key, on_event=lambda ev: started.set())
        t = threading.Thread(target=stream)
        t.start()
        self.assertTrue(started.wait(10))
        self.gw.proc.send_signal(signal.SIGTERM)
        t.join(30)
        status, events = got["r"]
        self.assertEqual(status, 200)
        self.assertEqual(events[-1], "DONE")  # the request in flight finished
        self.assertEqual("".join(e["choices"][0]["text"] for e in events[:-1]), expected_words(80))
        self.assertEqual(self.gw.proc.wait(timeout=20), 0)
        with self.assertRaises(OSError):
            self.gw.request("GET", "/health", timeout=5)

    def test_no_replica_is_503(self):
        self.serve.stop()
        wait_until(lambda: self.gw.request("GET", "/health")[0] != 200, step=0.1, what="/health not 200")
        status, _, body = self.gw.request("GET", "/health")
        self.assertEqual(status, 503)
        status, headers, reply = self.gw.post(CHAT, chat_body(max_tokens=2), key=self.key)
        self.assertEqual(status, 503, reply)
        self.assertIn("retry-after", headers)


class TestRealServe(unittest.TestCase):
    """The gateway in front of the real commons-serve on a small synthetic Llama
    (commons-mkmodel): the protocol as serve implements it, not as the fixture
    imitates it."""

    @classmethod
    def setUpClass(cls):
        from serve_harness import VOCAB, make_model
        cls.dir = make_workdir()
        model = make_model(os.path.join(cls.dir, "tiny.gguf"), "--arch", "llama", "--embd", "128",
                           "--heads", "4", "--kv-heads", "2", "--ff", "256", "--layers", "2",
                           "--ctx", "512", "--type", "q8_0", "--tied")
        cls.serve_url = f"tcp://127.0.0.1:{free_port()}"
        cls.serve_log = open(os.path.join(cls.dir, "serve.log"), "ab")
        cls.serve = subprocess.Popen([binary("inference/commons-serve"), "--model", model, "--listen",
                                      cls.serve_url, "--max-batch", "4", "--kv-mb", "16", "--threads", "1",
                                      "--foreground"], stdout=cls.serve_log, stderr=cls.serve_log)
        try:
            cls.gw = Gateway(cls.dir, [cls.serve_url])
            wait_until(lambda: cls.gw.request("GET", "/health")[0] == 200, timeout=60,
                       what="commons-serve to answer the gateway")
        except Exception:
            cls.serve.kill()
            cls.serve.wait()
            raise
        cls.key = cls.gw.new_key("real")

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop()
        cls.serve.kill()
        cls.serve.wait()
        cls.serve_log.close()
        remove_workdir(cls.dir)

    def client(self):
        return openai.OpenAI(base_url=self.gw.base + "/v1", api_key=self.key, max_retries=0, timeout=60)

    def test_generate_whole_and_streamed(self):
        c = self.client()
        (model,) = [m.id for m in c.models.list()]
        self.assertEqual(model, "tiny")
        r = c.completions.create(model=model, prompt="Hello, who are you?", max_tokens=12, temperature=0)
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        self.assertGreater(r.usage.prompt_tokens, 3)
        self.assertLessEqual(r.usage.completion_tokens, 12)
        if r.choices[0].finish_reason == "length":
            self.assertEqual(r.usage.completion_tokens, 12)
        whole = r.choices[0].text
        chunks = list(c.completions.create(model=model, prompt="Hello, who are you?", max_tokens=12,
                                           temperature=0, stream=True))
        self.assertEqual("".join(ch.choices[0].text for ch in chunks), whole)
        # Seeded sampling is reproducible through the gateway too.
        texts = [c.completions.create(model=model, prompt="The capital of France is", max_tokens=8,
                                      seed=7, temperature=0.8).choices[0].text for _ in range(2)]
        self.assertEqual(texts[0], texts[1])
        # The synthetic model has no chat template: serve's bad_request reaches the client as 400.
        with self.assertRaises(openai.BadRequestError) as cm:
            c.chat.completions.create(model=model, messages=user("hi"), max_tokens=4)
        self.assertIn("chat format", str(cm.exception))

    def test_context_overflow_and_concurrency(self):
        status, _, reply = self.gw.post(COMPL, dict(model="tiny", prompt="x", max_tokens=600), key=self.key)
        self.assertEqual(status, 400, reply)
        self.assertEqual(reply["error"]["code"], "context_length_exceeded")
        # More requests than serve's 4 slots: queued at the gateway, all served.
        results = []
        def one(i):
            results.append(self.gw.post(COMPL, dict(model="tiny", prompt=f"number {i}", max_tokens=6,
                                                    temperature=0), key=self.key)[0])
        threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * 10)


class TestTwoReplicas(unittest.TestCase):
    def setUp(self):
        self.dir = make_workdir()
        self.addCleanup(remove_workdir, self.dir)
        self.a = FakeServe(self.dir, delay=0.01, max_batch=2)
        self.addCleanup(self.a.close)
        self.b = FakeServe(self.dir, delay=0.01, max_batch=2)
        self.addCleanup(self.b.close)
        self.gw = Gateway(self.dir, [self.a, self.b])
        self.addCleanup(self.gw.stop)
        self.key = self.gw.new_key("k")

    def burst(self, n, tokens=20):
        results = []
        def one():
            results.append(self.gw.post(COMPL, dict(model="fake-model", prompt="p", max_tokens=tokens), key=self.key)[0])
        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    def test_least_loaded_routing_and_failover(self):
        self.assertEqual(self.burst(4, tokens=100), [200] * 4)  # 1 s each: surely all four at once
        # Two slots each: four at once fill both replicas, never three on one.
        self.assertEqual(self.a.stats()["starts"], 2)
        self.assertEqual(self.b.stats()["starts"], 2)
        self.assertEqual(self.a.stats()["busy"] + self.b.stats()["busy"], 0)
        self.b.stop()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._replica_up_lines().endswith(" 0"):
            time.sleep(0.1)
        # With one replica down, requests go to the other, more slowly but all served.
        self.assertEqual(self.burst(4, tokens=5), [200] * 4)
        self.assertEqual(self.a.stats()["starts"], 6)

    def _replica_up_lines(self):
        text = self.gw.request("GET", "/metrics")[2].decode()
        port = self.b.port
        return "".join(l for l in text.splitlines() if l.startswith("commons_gateway_replica_up") and f":{port}" in l)


def jain(xs):
    s, q = sum(xs), sum(x * x for x in xs)
    return s * s / (len(xs) * q) if q else 1.0


class TestFairness(GatewayBase):
    """Issue 7: one key with 32 parallel requests and four keys with 2 each.

    The replica has 10 batch slots: 2 per key is the fair share, and each light
    key can use at most 2 (it has only 2 requests). With more slots a
    work-conserving scheduler rightly gives the spare ones to the heavy key,
    and a Jain index of raw tokens would fall for that reason alone."""
    serve_opts = dict(delay=0.01, max_batch=10)
    TOKENS = 48  # per request: 0.48 s at 10 ms a token

    def test_heavy_key_does_not_starve_light_keys(self):
        keys = {"heavy": self.gw.new_key("heavy")}
        for i in range(4):
            keys[f"light{i}"] = self.gw.new_key(f"light{i}")
        plan = [("heavy", j) for j in range(32)] + [(f"light{i}", j) for i in range(4) for j in range(2)]
        # The heavy key's requests are sent first: FIFO would serve all 32 first.
        barrier = threading.Barrier(len(plan))
        lock = threading.Lock()
        tokens = {k: [] for k in keys}  # arrival times of each token per key
        finished = {k: [] for k in keys}
        statuses = []
        t0 = time.monotonic()

        def one(name, j):
            def on_event(ev):
                if ev != "DONE" and ev.get("choices"):
                    n = len(ev["choices"][0]["text"].split())
                    with lock:
                        tokens[name].extend([time.monotonic() - t0] * n)
            barrier.wait()
            if name != "heavy":
                time.sleep(0.05)
            status, _ = self.gw.stream_events(
                COMPL, dict(model="fake-model", prompt=f"{name} {j}", max_tokens=self.TOKENS, stream=True),
                key=keys[name], on_event=on_event)
            with lock:
                statuses.append(status)
                finished[name].append(time.monotonic() - t0)

        threads = [threading.Thread(target=one, args=p) for p in plan]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(statuses, [200] * len(plan))
        for k in keys:
            self.assertEqual(len(tokens[k]), self.TOKENS * (32 if k == "heavy" else 2), k)

        heavy_last = max(finished["heavy"])
        for i in range(4):
            self.assertLess(max(finished[f"light{i}"]), heavy_last, f"light{i} finished after the heavy key")

        # Jain's index of tokens delivered per key, in windows while every key
        # is active (between its first and last token).
        for k, ts in tokens.items():
            print(f"{k}: first token {min(ts):.2f}s, last {max(ts):.2f}s, finished {sorted('%.2f' % f for f in finished[k])}")
        start = max(min(ts) for ts in tokens.values())
        end = min(max(ts) for ts in tokens.values())
        window = 0.1
        n = int((end - start) / window)
        self.assertGreaterEqual(n, 1, f"keys were never all active together ({start:.2f}..{end:.2f})")
        indices = []
        for w in range(n):
            lo, hi = start + w * window, start + (w + 1) * window
            counts = [sum(1 for t in ts if lo <= t < hi) for ts in tokens.values()]
            indices.append(jain(counts))
        print(f"fairness: {n} windows of {window}s, Jain {['%.3f' % j for j in indices]}, "
              f"lights done by {max(max(finished[f'light{i}']) for i in range(4)):.2f}s, heavy {heavy_last:.2f}s")
        self.assertGreaterEqual(min(indices), 0.9, indices)


if __name__ == "__main__":
    unittest.main()
