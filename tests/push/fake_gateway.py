#!/usr/bin/python3
"""A fake push gateway for parley's webhook (issue 14): it takes the POSTs
that parleyd sends to --push-url, records them, checks their signature and
answers as its mode says, so tests (and the benchmark) can see exactly what
parley told the gateway and when.

Standalone:
    python3 tests/push/fake_gateway.py [--host 127.0.0.1] [--port 0]
        [--mode ok] [--secret-file F] [--log FILE] [--keep N]
prints "listening PORT" (flushed) once bound. As a module:
    gw = FakeGateway(port=0, mode="ok", secret=b"...").start()
    ... gw.url("/push"), gw.notifications(), gw.set_mode("fail") ...
    gw.stop()

Every POST on any path is recorded: headers, raw body, arrival time (unix
ms), and each notification in {"notifications":[...]} with "t" (arrival
ms), "sig_ok" (null without a secret), "post" (index of its POST) and
"mode" (the gateway's mode when it arrived).

Modes:
    ok            200 {"rejected":[]}
    fail          500
    hang          accepts and does not answer until the mode changes (then
                  answers as the new mode says) or 60 s pass (then closes)
    reject:A,B    200 {"rejected":[those of A,B that appear as a pushkey in
                  the POST's devices]}

Control endpoints (GET, not recorded):
    /_stats                  {"posts","notifications","unique_ids",
                              "bad_sig","mode","hanging"}
    /_notifications[?after=K] every notification received (from index K)
    /_posts                  every POST: {"t","path","headers","n",
                              "sig_ok","mode"}
    /_mode?m=MODE            switch mode (hanging POSTs are released)
    /_reset                  forget everything received (mode stays)

--log FILE appends one JSON line per notification:
    {"t","id","user","ch","seq","count","mention","sig_ok"}
--keep N keeps at most N full notifications in memory (default: all; the
benchmark passes a small N, counts and the log are unaffected).

Python standard library only (/usr/bin/python3)."""

import argparse
import hashlib
import hmac
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HANG_MAX_S = 60.0


def now_ms():
    return int(time.time() * 1000)


def valid_mode(mode):
    return mode in ("ok", "fail", "hang") or mode.startswith("reject:")


class _State:
    def __init__(self, mode, secret, log, keep):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.mode = mode
        self.mode_gen = 0
        self.secret = secret
        self.log = log
        self.keep = keep  # None: keep all
        self.reset_locked()
        self.hanging = 0

    def reset_locked(self):
        self.posts = []  # dicts without the body
        self.bodies = []  # raw bodies (None when not kept)
        self.notes = []  # full notifications (up to keep)
        self.n_posts = 0
        self.n_notes = 0
        self.ids = set()
        self.bad_sig = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue for curl
    server_version = "fake-push-gateway/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _reply(self, code, obj=None, raw=None):
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = b""
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # ---- control ----------------------------------------------------------
    def do_GET(self):
        st = self.server.state
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        if u.path == "/_stats":
            with st.lock:
                obj = {"posts": st.n_posts, "notifications": st.n_notes,
                       "unique_ids": len(st.ids), "bad_sig": st.bad_sig,
                       "mode": st.mode, "hanging": st.hanging}
            return self._reply(200, obj)
        if u.path == "/_notifications":
            after = int(q.get("after", ["0"])[0])
            with st.lock:
                obj = st.notes[after:]
            return self._reply(200, obj)
        if u.path == "/_posts":
            with st.lock:
                obj = list(st.posts)
            return self._reply(200, obj)
        if u.path == "/_mode":
            m = q.get("m", [""])[0]
            if not valid_mode(m):
                return self._reply(400, {"error": "bad mode %r" % m})
            self.server.gateway.set_mode(m)
            return self._reply(200, {"mode": m})
        if u.path == "/_reset":
            self.server.gateway.reset()
            return self._reply(200, {})
        return self._reply(404, {"error": "not found"})

    # ---- the webhook ------------------------------------------------------
    def do_POST(self):
        t = now_ms()
        st = self.server.state
        raw = self._read_body()
        sig_ok = None
        if st.secret is not None:
            want = "sha256=" + hmac.new(st.secret, raw, hashlib.sha256).hexdigest()
            got = self.headers.get("X-Parley-Signature", "")
            sig_ok = hmac.compare_digest(want.encode(), got.strip().encode())
        try:
            notes = json.loads(raw).get("notifications")
            if not isinstance(notes, list):
                notes = []
        except (ValueError, AttributeError):
            notes = []
        with st.lock:
            idx = st.n_posts
            st.n_posts += 1
            mode = st.mode
            st.posts.append({"t": t, "path": self.path,
                             "headers": dict(self.headers.items()),
                             "n": len(notes), "sig_ok": sig_ok, "mode": mode,
                             "bytes": len(raw)})
            st.bodies.append(raw if st.keep is None else None)
            if sig_ok is False:
                st.bad_sig += 1
            lines = []
            for n in notes:
                if not isinstance(n, dict):
                    continue
                st.n_notes += 1
                if "id" in n:
                    st.ids.add(n["id"])
                rec = dict(n)
                rec["t"] = t
                rec["sig_ok"] = sig_ok
                rec["post"] = idx
                rec["mode"] = mode
                if st.keep is None or len(st.notes) < st.keep:
                    st.notes.append(rec)
                if st.log is not None:
                    lines.append(json.dumps({
                        "t": t, "id": n.get("id"), "user": n.get("user"),
                        "ch": n.get("ch"), "seq": n.get("seq"),
                        "count": n.get("count"), "mention": n.get("mention"),
                        "sig_ok": sig_ok}))
            if lines:
                st.log.write("\n".join(lines) + "\n")
                st.log.flush()
            st.cond.notify_all()
            if mode == "hang":
                st.hanging += 1
                gen = st.mode_gen
                deadline = time.monotonic() + HANG_MAX_S
                while st.mode == "hang" and st.mode_gen == gen:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.server.stopping:
                        break
                    st.cond.wait(min(left, 0.5))
                st.hanging -= 1
                mode = st.mode
                if mode == "hang":  # timed out or stopping: no answer at all
                    self.close_connection = True
                    return
        if mode == "fail":
            return self._reply(500, {"error": "fake gateway failing"})
        rejected = []
        if mode.startswith("reject:"):
            pks = set(p for p in mode[len("reject:"):].split(",") if p)
            seen = []
            for n in notes:
                for d in (n.get("devices") or []) if isinstance(n, dict) else []:
                    pk = d.get("pushkey") if isinstance(d, dict) else None
                    if pk in pks and pk not in seen:
                        seen.append(pk)
            rejected = seen
        return self._reply(200, {"rejected": rejected})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True


class FakeGateway:
    """The gateway in this process: start() binds (port 0: any free port)
    and serves on a thread."""

    def __init__(self, port=0, mode="ok", secret=None, host="127.0.0.1",
                 log=None, keep=None):
        if not valid_mode(mode):
            raise ValueError("bad mode %r" % mode)
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None:
            secret = secret.rstrip()
        self._logf = open(log, "a") if isinstance(log, str) else log
        self.state = _State(mode, secret, self._logf, keep)
        self.host, self._port = host, port
        self.httpd = None
        self.thread = None

    def start(self):
        self.httpd = _Server((self.host, self._port), _Handler)
        self.httpd.state = self.state
        self.httpd.gateway = self
        self.httpd.stopping = False
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.2},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.httpd is None:
            return
        self.httpd.stopping = True
        with self.state.cond:
            self.state.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
        self.httpd = None
        if self._logf is not None:
            self._logf.flush()

    def url(self, path="/push"):
        return "http://%s:%d%s" % (self.host, self.port, path)

    def set_mode(self, mode):
        if not valid_mode(mode):
            raise ValueError("bad mode %r" % mode)
        with self.state.cond:
            self.state.mode = mode
            self.state.mode_gen += 1
            self.state.cond.notify_all()

    def mode(self):
        with self.state.lock:
            return self.state.mode

    def reset(self):
        with self.state.cond:
            self.state.reset_locked()

    def notifications(self):
        """Every notification received so far (copies of the dicts, plus
        "t", "sig_ok", "post", "mode")."""
        with self.state.lock:
            return [dict(n) for n in self.state.notes]

    def posts(self):
        """Every POST so far: {"t","path","headers","n","sig_ok","mode",
        "bytes"} plus "body" (raw bytes) when bodies are kept."""
        with self.state.lock:
            out = []
            for p, b in zip(self.state.posts, self.state.bodies):
                p = dict(p)
                if b is not None:
                    p["body"] = b
                out.append(p)
            return out

    def stats(self):
        with self.state.lock:
            return {"posts": self.state.n_posts,
                    "notifications": self.state.n_notes,
                    "unique_ids": len(self.state.ids),
                    "bad_sig": self.state.bad_sig,
                    "mode": self.state.mode, "hanging": self.state.hanging}

    def hanging(self):
        with self.state.lock:
            return self.state.hanging

    def wait(self, pred, timeout=30.0, what="a condition"):
        """Waits until pred(notifications) is truthy and returns its value;
        raises AssertionError naming what after timeout seconds."""
        deadline = time.monotonic() + timeout
        with self.state.cond:
            while True:
                v = pred([dict(n) for n in self.state.notes])
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "gateway: no %s within %.0f s (%d notification(s) "
                        "received: %s)" % (what, timeout, len(self.state.notes),
                                           _summary(self.state.notes)))
                self.state.cond.wait(min(left, 0.5))


def _summary(notes, limit=12):
    s = ["%s/%s#%s c=%s m=%s" % (n.get("user"), n.get("ch"), n.get("seq"),
                                 n.get("count"), n.get("mention"))
         for n in notes[-limit:]]
    return ("... " if len(notes) > limit else "") + ", ".join(s)


def main(argv=None):
    ap = argparse.ArgumentParser(description="fake push gateway for parley")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--secret-file")
    ap.add_argument("--log")
    ap.add_argument("--keep", type=int, default=None,
                    help="keep at most N full notifications in memory")
    a = ap.parse_args(argv)
    if not valid_mode(a.mode):
        ap.error("bad --mode %r" % a.mode)
    secret = None
    if a.secret_file:
        with open(a.secret_file, "rb") as f:
            secret = f.read().rstrip()
    gw = FakeGateway(port=a.port, mode=a.mode, secret=secret, host=a.host,
                     log=a.log, keep=a.keep).start()
    print("listening %d" % gw.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        gw.stop()


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
