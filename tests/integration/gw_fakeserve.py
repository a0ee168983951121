"""TEST FIXTURE ONLY: a fake commons-serve for the gateway's integration tests.

It speaks the gateway <-> serve protocol of docs/serving.md (serve.info,
gen.start, gen.poll, gen.cancel over nng REQ/REP) but runs no model: the
completion is a deterministic stream of words, one "token" every --delay
seconds, so tests can predict text, token counts and timing. It is not an
inference server and must never be used as one.

Prompt markers change its behaviour, for tests:
  [eos=N]    the sequence ends by itself ("stop") after N tokens
  [crash=N]  the process exits at once when a poll finds N tokens generated
Token i of a sequence is " " + WORDS[(seed + i) % len(WORDS)]; two words are not
ASCII, so offsets (UTF-8 bytes) are exercised.
A sequence counts against --max-batch until it ends or is cancelled; beyond
that gen.start answers "busy". Extra request type for tests: fake.stats.
"""
import argparse
import json
import os
import re
import threading
import time

import pynng

WORDS = ["alpha", "bravo", "charlie", "delta", "écho", "foxtrot", "高尔夫", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"]


def ok(**kw):
    return dict(ok=True, **kw)


def err(code, message):
    return {"ok": False, "error": {"code": code, "message": message}}


class Seq:
    def __init__(self, sid, prompt_tokens, max_tokens, stop, seed, delay, eos, crash):
        self.sid, self.prompt_tokens, self.max_tokens = sid, prompt_tokens, max_tokens
        self.stop, self.seed, self.delay = stop, seed, delay
        self.eos, self.crash = eos, crash
        self.t0 = time.monotonic()
        self.cancelled = False
        self.ended_at = None
        self.last_poll = self.t0

    def tokens_at(self, now):
        n = int((now - self.t0) / self.delay)
        limit = self.max_tokens if self.eos is None else min(self.max_tokens, self.eos)
        return min(n, limit), limit

    def state(self, now):
        """(visible text, done, finish_reason, completion_tokens)"""
        n, limit = self.tokens_at(now)
        text = "".join(" " + WORDS[(self.seed + i) % len(WORDS)] for i in range(n))
        if self.cancelled:
            return text, True, "cancelled", n
        for s in self.stop:
            p = text.find(s)
            if p >= 0:
                return text[:p], True, "stop", n
        if n >= limit:
            return text, True, ("length" if self.eos is None or self.max_tokens <= self.eos else "stop"), n
        held = 0  # hold back a tail that may still become a stop string
        for s in self.stop:
            for k in range(len(s) - 1, 0, -1):
                if text.endswith(s[:k]):
                    held = max(held, k)
                    break
        return text[:len(text) - held], False, None, n

    def next_change(self, now):
        n, _ = self.tokens_at(now)
        return self.t0 + (n + 1) * self.delay


class FakeServe:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.seqs = {}
        self.stats = {"starts": 0, "busy": 0, "cancels": 0, "polls": 0, "start_order": []}

    def active(self, now):
        return sum(1 for s in self.seqs.values() if not s.state(now)[1])

    def handle(self, req):
        t = req.get("type")
        if req.get("v") != 1:
            return err("bad_request", "v must be 1")
        now = time.monotonic()
        if t == "serve.info":
            with self.lock:
                act = self.active(now)
            return ok(model=self.args.model, n_ctx=self.args.n_ctx, max_batch=self.args.max_batch,
                      active=act, waiting=0, kv_blocks_total=64, kv_blocks_free=64, block_tokens=16)
        if t == "fake.stats":
            with self.lock:
                return ok(**json.loads(json.dumps(self.stats)))
        if t == "gen.start":
            return self.start(req, now)
        if t == "gen.poll":
            return self.poll(req)
        if t == "gen.cancel":
            with self.lock:
                s = self.seqs.get(req.get("id"))
                if s is None:
                    return err("not_found", "no such sequence")
                if not s.state(now)[1]:
                    s.cancelled = True
                    self.stats["cancels"] += 1
            return ok()
        return err("bad_request", f"unknown type {t!r}")

    def start(self, req, now):
        sid = req.get("id")
        if not isinstance(sid, str) or not sid:
            return err("bad_request", "id must be a non-empty string")
        if "prompt" in req:
            text = req["prompt"]
            ptoks = len(text.split()) + 1
        elif "messages" in req:
            text = " ".join(m["content"] for m in req["messages"])
            ptoks = sum(len(m["content"].split()) + 3 for m in req["messages"])
        else:
            return err("bad_request", "prompt or messages is required")
        max_tokens = req.get("max_tokens", 16)
        if ptoks + max_tokens > self.args.n_ctx:
            return err("too_long", f"{ptoks} prompt tokens + {max_tokens} exceed the context of {self.args.n_ctx}")
        eos = re.search(r"\[eos=(\d+)\]", text)
        crash = re.search(r"\[crash=(\d+)\]", text)
        with self.lock:
            if sid in self.seqs:
                return err("bad_request", f"id {sid} is already in use")
            if self.active(now) >= self.args.max_batch:
                self.stats["busy"] += 1
                return err("busy", "no free batch slot")
            self.seqs[sid] = Seq(sid, ptoks, max_tokens, req.get("stop", []), req.get("seed", 0),
                                 self.args.delay, int(eos.group(1)) if eos else None,
                                 int(crash.group(1)) if crash else None)
            self.stats["starts"] += 1
            self.stats["start_order"].append(sid)
        return ok(prompt_tokens=ptoks)

    def poll(self, req):
        sid, offset = req.get("id"), req.get("offset", 0)
        wait = min(req.get("wait_ms", 0), 5000) / 1000.0
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            with self.lock:
                self.stats["polls"] += 1
                s = self.seqs.get(sid)
                if s is None:
                    return err("not_found", f"no sequence {sid}")
                s.last_poll = now
                text, done, reason, ntok = s.state(now)
                if s.crash is not None and ntok >= s.crash:
                    os._exit(3)
                nxt = s.next_change(now)
            data = text.encode()  # offsets count UTF-8 bytes, as commons-serve does
            if len(data) > offset or done or now >= deadline:
                return ok(text=data[offset:].decode(), done=done, finish_reason=reason,
                          prompt_tokens=s.prompt_tokens, completion_tokens=ntok)
            time.sleep(max(0.001, min(nxt, deadline) - now))


def worker(srv, sock):
    ctx = sock.new_context()
    while True:
        try:
            raw = ctx.recv()
        except pynng.exceptions.Closed:
            return
        try:
            req = json.loads(raw)
            rep = srv.handle(req) if isinstance(req, dict) else err("bad_request", "not an object")
        except Exception as e:  # a fixture: report, never die on bad input
            rep = err("bad_request", f"{type(e).__name__}: {e}")
        ctx.send(json.dumps(rep).encode())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", default="tcp://127.0.0.1:7700")
    ap.add_argument("--model", default="fake-model")
    ap.add_argument("--delay", type=float, default=0.01, help="seconds per token")
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=96)
    args = ap.parse_args()
    srv = FakeServe(args)
    sock = pynng.Rep0(listen=args.listen)
    threads = [threading.Thread(target=worker, args=(srv, sock), daemon=True) for _ in range(args.threads)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
