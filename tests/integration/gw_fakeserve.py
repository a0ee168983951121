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

Standard library only: it speaks nng's REQ/REP over TCP (the SP protocol) itself,
see sp_serve() and sp_call(), so the tests need no Python binding of nng.
"""
import argparse
import json
import os
import re
import socket
import struct
import threading
import time

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


# --- nng's SP protocol over TCP, just enough of it -------------------------
# Each side first sends 8 bytes: 00 'S' 'P' 00, its protocol number (16 bits,
# big-endian: REQ0 = 0x30, REP0 = 0x31) and 00 00. Then every message is a
# 64-bit big-endian length and that many bytes. A request starts with its
# backtrace: 32-bit words up to and including the first with the high bit set
# (the request id); the reply must start with the same words.
SP_REQ, SP_REP = 0x30, 0x31


def _recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        part = conn.recv(n - len(buf))
        if not part:
            raise ConnectionError("peer closed")
        buf += part
    return buf


def _handshake(conn, mine, theirs):
    conn.sendall(b"\x00SP\x00" + struct.pack(">H", mine) + b"\x00\x00")
    hello = _recv_exact(conn, 8)
    if hello[:4] != b"\x00SP\x00" or struct.unpack(">H", hello[4:6])[0] != theirs:
        raise ConnectionError(f"not an nng peer of protocol {theirs:#x}: {hello!r}")


def _send_msg(conn, data):
    conn.sendall(struct.pack(">Q", len(data)) + data)


def _recv_msg(conn):
    (n,) = struct.unpack(">Q", _recv_exact(conn, 8))
    if n > 1 << 20:
        raise ConnectionError(f"message of {n} bytes")
    return _recv_exact(conn, n)


def _serve_conn(srv, conn):
    wlock = threading.Lock()

    def answer(header, body):
        try:
            req = json.loads(body)
            rep = srv.handle(req) if isinstance(req, dict) else err("bad_request", "not an object")
        except Exception as e:  # a fixture: report, never die on bad input
            rep = err("bad_request", f"{type(e).__name__}: {e}")
        with wlock:
            try:
                _send_msg(conn, header + json.dumps(rep).encode())
            except OSError:
                pass

    try:
        _handshake(conn, SP_REP, SP_REQ)
        while True:
            msg = _recv_msg(conn)
            i = 0
            while i + 4 <= len(msg):  # the backtrace ends with the request id
                i += 4
                if msg[i - 4] & 0x80:
                    break
            # Polls are held: every request gets its own thread, as nng contexts would.
            threading.Thread(target=answer, args=(msg[:i], msg[i:]), daemon=True).start()
    except (OSError, ConnectionError):
        pass
    finally:
        conn.close()


def sp_serve(srv, host, port):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(64)
    return ls


def sp_call(url, req, timeout=10.0):
    """One REQ/REP exchange with an nng REP socket at tcp://HOST:PORT (for tests)."""
    host, port = url[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        _handshake(conn, SP_REQ, SP_REP)
        _send_msg(conn, struct.pack(">I", 0x80000001) + json.dumps(req).encode())
        reply = _recv_msg(conn)
        return json.loads(reply[4:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", default="tcp://127.0.0.1:7700")
    ap.add_argument("--model", default="fake-model")
    ap.add_argument("--delay", type=float, default=0.01, help="seconds per token")
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--n-ctx", type=int, default=2048)
    args = ap.parse_args()
    srv = FakeServe(args)
    host, port = args.listen[len("tcp://"):].rsplit(":", 1)
    ls = sp_serve(srv, host, int(port))
    print("ready", flush=True)
    try:
        while True:
            conn, _ = ls.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_serve_conn, args=(srv, conn), daemon=True).start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
