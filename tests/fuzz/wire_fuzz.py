#!/usr/bin/python3
"""wire_fuzz: a bounded, seeded fuzzer of parley's WebSocket wire.

Starts its own parleyd (the build's binary) on a fresh data directory, opens
several raw WebSocket connections (authenticated ones in two workspaces and
unauthenticated ones) and sends them batches of mutated msgpack requests and
mutated WebSocket frames. Everything it gets back is checked against the
contract (/work/shared/PROTOCOL.md, docs/protocol.md):

  - every server frame is one binary frame holding one msgpack map of a known
    kind; responses carry a rid that was asked for, once; every error code is
    one of the contract's;
  - every bad frame (text frame, not one complete map, trailing bytes, invalid
    UTF-8, and the project's documented extras: nesting deeper than 8, a
    non-string key, ext types) gets exactly one BAD_FRAME, and the connection
    stays open until more than 20 of them (then close 1008);
  - every request with a rid gets its response;
  - every connection the server ends gets a close frame carrying a code that
    fits what the client did (1008 abuse, 1009 frame too large, 4001 hello,
    4008 slow consumer, 1002/1007 RFC violations, 1001 at shutdown), and no
    TCP reset, and no end without a close frame;
  - after every batch a probe request on a fresh connection and one on the
    fuzzed connection (when still open) are answered correctly;
  - at the end a message sent before fuzzing is still in history, and
    parleyd exits 0 on SIGTERM with no sanitizer report in its log.

Bounded: it stops after --seconds (PARLEY_FUZZ_SECONDS overrides). The seed
is printed; PARLEY_FUZZ_SEED=N replays it (the frames of batch k depend only
on the seed and k; ids the server makes are referred to by role), and
PARLEY_FUZZ_ONLY=k runs batch k alone on fresh connections.

Exit status: 0 when nothing was found, 1 with findings (summarised at the
end, each with seed, batch and the batch's frames), 2 on a setup failure.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import msgpack

CODES = {"BAD_FRAME", "BAD_REQUEST", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND",
         "TOO_LARGE", "RATE_LIMITED", "CONFLICT", "UNAVAILABLE", "INTERNAL"}
KINDS = {"res", "err", "ev", "member", "read", "typing", "presence",
         "receipt", "chan", "gap", "goaway"}
EV_KINDS = {"msg", "edit", "delete", "react"}
MAX_FRAME = 64 * 1024
MAX_DEPTH = 8
BAD_LIMIT = 20
SECRET = b"wire-fuzz-secret-0123456789abcdef"
WAIT = 30.0  # generous deadline (s) for any one expected answer


def log(*a):
    print(*a, flush=True)


# ---- msgpack: a packer that can write what msgpack-python will not ----------

class Raw:
    """Bytes inserted as they are (an already-encoded msgpack value)."""
    def __init__(self, b):
        self.b = b


class DupMap:
    """A map written with its pairs as given (duplicate keys allowed)."""
    def __init__(self, pairs):
        self.pairs = pairs


class BadStr:
    """A msgpack str whose bytes are given (invalid UTF-8 allowed)."""
    def __init__(self, b):
        self.b = b


def _hdr(n, fix, fixmax, c8, c16, c32):
    if fix is not None and n <= fixmax:
        return bytes([fix | n])
    if c8 is not None and n < 256:
        return bytes([c8, n])
    if n < 65536:
        return bytes([c16]) + struct.pack(">H", n)
    return bytes([c32]) + struct.pack(">I", n)


def pack(v):
    if isinstance(v, Raw):
        return v.b
    if isinstance(v, BadStr):
        return _hdr(len(v.b), 0xa0, 31, 0xd9, 0xda, 0xdb) + v.b
    if isinstance(v, DupMap):
        return (_hdr(len(v.pairs), 0x80, 15, None, 0xde, 0xdf) +
                b"".join(pack(k) + pack(x) for k, x in v.pairs))
    if isinstance(v, dict):
        return pack(DupMap(list(v.items())))
    if isinstance(v, (list, tuple)):
        return (_hdr(len(v), 0x90, 15, None, 0xdc, 0xdd) +
                b"".join(pack(x) for x in v))
    return msgpack.packb(v, use_bin_type=True)


# ---- the decoder's rules, as docs/protocol.md and proto/codec.c state them ---

class Bad(Exception):
    pass


def classify(b):
    """None when b is one well-formed map within the limits, else why not."""
    if not b:
        return "empty"
    if len(b) > MAX_FRAME:
        return "too large"
    if not (0x80 <= b[0] <= 0x8f or b[0] in (0xde, 0xdf)):
        return "not a map"
    pos = [0]

    def need(n):
        if pos[0] + n > len(b):
            raise Bad("truncated")
        s = b[pos[0]:pos[0] + n]
        pos[0] += n
        return s

    def num(n):
        return int.from_bytes(need(n), "big")

    def walk(depth, key=False):
        t = need(1)[0]
        if t <= 0x7f or t >= 0xe0 or t in (0xc0, 0xc2, 0xc3):
            if key:
                raise Bad("key")
            return
        if 0xa0 <= t <= 0xbf or t in (0xd9, 0xda, 0xdb):
            n = t & 0x1f if t <= 0xbf else num({0xd9: 1, 0xda: 2, 0xdb: 4}[t])
            s = need(n)
            try:
                s.decode("utf-8")
            except UnicodeDecodeError:
                raise Bad("utf8")
            return
        if key:
            raise Bad("key")
        if t in (0xc4, 0xc5, 0xc6):
            need(num({0xc4: 1, 0xc5: 2, 0xc6: 4}[t]))
            return
        if t in (0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3):
            need({0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8,
                  0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8}[t])
            return
        if 0x80 <= t <= 0x8f or t in (0xde, 0xdf):
            n = t & 0x0f if t <= 0x8f else num(2 if t == 0xde else 4)
            ismap = True
        elif 0x90 <= t <= 0x9f or t in (0xdc, 0xdd):
            n = t & 0x0f if t <= 0x9f else num(2 if t == 0xdc else 4)
            ismap = False
        else:
            raise Bad("type")  # 0xc1, ext
        if depth > MAX_DEPTH:
            raise Bad("depth")
        if n * (2 if ismap else 1) > len(b) - pos[0]:
            raise Bad("truncated")
        for _ in range(n):
            if ismap:
                walk(depth + 1, key=True)
            walk(depth + 1)

    try:
        walk(1)
    except Bad as e:
        return str(e)
    if pos[0] != len(b):
        return "trailing"
    return None


def first_pairs(b):
    """The top-level pairs of a well-formed map (duplicates kept)."""
    try:
        return msgpack.unpackb(b, raw=False, strict_map_key=False,
                               object_pairs_hook=list, use_list=True)
    except Exception:
        return None


# ---- tokens -----------------------------------------------------------------

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(claims, key=SECRET, alg="HS256", header=None):
    h = header or {"alg": alg, "typ": "JWT"}
    s = b64u(json.dumps(h).encode()) + "." + b64u(json.dumps(claims).encode())
    sig = hmac.new(key, s.encode(), hashlib.sha256).digest()
    return s + "." + b64u(sig)


def token(user, ws, exp_in=3600, **extra):
    c = {"sub": user, "ws": ws, "exp": int(time.time()) + exp_in}
    c.update(extra)
    return jwt(c)


# ---- the server -------------------------------------------------------------

SAN_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
             "runtime error:", "ThreadSanitizer", "SUMMARY: UndefinedBehavior")


class Server:
    def __init__(self, binary, extra):
        self.dir = tempfile.mkdtemp(prefix="parley-fuzz-")
        self.secret = os.path.join(self.dir, "secret")
        with open(self.secret, "wb") as f:
            f.write(SECRET)
        self.logpath = os.path.join(self.dir, "parleyd.log")
        self.logf = open(self.logpath, "wb")
        args = [binary, "--listen", "127.0.0.1:0", "--data",
                os.path.join(self.dir, "data"), "--jwt-secret-file",
                self.secret, "--no-pin"] + extra
        self.proc = subprocess.Popen(args, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        self.port = None
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            with open(self.logpath, "rb") as f:
                for line in f:
                    m = re.match(rb"parleyd listening on ws://127\.0\.0\.1:(\d+)/ws", line)
                    if m:
                        self.port = int(m.group(1))
                if self.port:
                    return
            time.sleep(0.05)
        raise RuntimeError("parleyd did not start:\n" + self.log_tail())

    def log_text(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def sanitizer_report(self):
        text = self.log_text()
        for m in SAN_MARKS:
            i = text.find(m)
            if i >= 0:
                return text[max(0, i - 200):i + 6000]
        return None

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=120, signalled=False):
        if self.proc.poll() is None and not signalled:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "killed after %d s" % timeout

    def cleanup(self, keep):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---- a raw WebSocket client ------------------------------------------------

def frame(opcode, payload, fin=True, rsv=0, mask=True, key=b"\x00\x00\x00\x00",
          len_override=None):
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if len_override is None else len_override
    if n < 126:
        hdr = bytes([b0, (0x80 if mask else 0) | n])
    elif n < 65536:
        hdr = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, (0x80 if mask else 0) | 127]) + struct.pack(">Q", n)
    if not mask:
        return hdr + payload
    if key == b"\x00\x00\x00\x00":
        return hdr + key + payload
    k = key * (len(payload) // 4 + 1)
    return hdr + key + bytes(a ^ b for a, b in zip(payload, k))


class Conn:
    """One WebSocket connection and what the contract lets it expect."""

    def fileno(self):
        return self.sock.fileno()

    def __init__(self, fz, label, role, user=None, ws=None):
        self.fz, self.label, self.role = fz, label, role
        self.user, self.ws = user, ws
        self.auth = "no"
        self.state = "open"       # open, closing (close seen or sent), done
        self.close_code = None    # code of the server's close frame
        self.close_reason = b""
        self.we_closed = False
        self.reset = None         # errno text when the peer reset
        self.eof_without_close = False
        self.pending = {}         # rid -> [required, what]
        self.answered = {}        # rid -> count
        self.bad_sent = 0         # frames the server must answer BAD_FRAME
        self.bad_recv = 0
        self.hello_sent = False
        self.big_sent = False
        self.rfc_sent = False
        self.rfc_kinds = set()
        self.text_bad_utf8 = False
        self.bytes_sent = 0
        self.last_seq = {}
        self.frag = None          # server message being reassembled
        self.msgs = []            # decoded server frames not yet taken
        self.rbuf = b""
        self.checked_end = False
        self.t_open = time.time()
        self.writing = False      # a frame is partly written
        self.ctl = []             # control frames to send once it is out
        self.log = []             # (batch, frame description), the latest last
        self.optional = set()     # rids that may still be answered, or not
        self.sock = socket.create_connection(("127.0.0.1", fz.port), timeout=WAIT)
        key = base64.b64encode(os.urandom(16)).decode()  # RFC 6455: plain base64
        req = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: parley.v1"
               "\r\n\r\n" % (fz.port, key))
        self.sock.sendall(req.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.sock.recv(4096)
            if not d:
                raise RuntimeError("%s: no WebSocket handshake answer" % label)
            buf += d
        head, self.rbuf = buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError("%s: handshake answered %r" % (label, head[:80]))
        want = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        if want not in head:
            fz.finding("handshake", self, "Sec-WebSocket-Accept missing or wrong")
        self.sock.setblocking(False)
        fz.stats["connections"] += 1
        fz.live.add(self)
        self._parse()

    # -- receiving

    def pump(self, timeout):
        """Read what is there on every live connection (waiting up to
        timeout for the first bytes), so that a close is seen at once."""
        self.fz.pump(timeout)

    def _read(self):
        while self.state != "done":
            try:
                d = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as e:
                self._end(reset=os.strerror(e.errno) if e.errno else str(e))
                return
            if not d:
                self._end()
                return
            self.rbuf += d
            self._parse()

    def _parse(self):
        while self.state != "done":
            b = self.rbuf
            if len(b) < 2:
                return
            fin, rsv, op = b[0] >> 7, (b[0] >> 4) & 7, b[0] & 15
            masked, n, p = b[1] >> 7, b[1] & 127, 2
            if n == 126:
                if len(b) < 4:
                    return
                n, p = struct.unpack(">H", b[2:4])[0], 4
            elif n == 127:
                if len(b) < 10:
                    return
                n, p = struct.unpack(">Q", b[2:10])[0], 10
            if masked:
                p += 4
            if len(b) < p + n:
                return
            payload = b[p:p + n]
            self.rbuf = b[p + n:]
            if masked or rsv:
                self.fz.finding("server frame", self,
                                "server frame masked or with RSV bits: %r" % b[:p])
            self._frame(fin, op, payload)

    def _frame(self, fin, op, payload):
        fz = self.fz
        if op == 8:
            self.fz.stats["close frames"] += 1
            if len(payload) >= 2:
                self.close_code = struct.unpack(">H", payload[:2])[0]
                self.close_reason = payload[2:]
            else:
                self.close_code = 0  # no code
            if self.state == "open":
                self.state = "closing"
                self._send_raw(frame(8, payload[:2], key=b"\x01\x02\x03\x04"),
                               force=True)
            return
        if op == 9:
            if self.state == "open":
                self._send_raw(frame(10, payload), force=True)
            return
        if op == 10:
            return
        if op == 0:
            if self.frag is None:
                fz.finding("server frame", self, "continuation without a start")
                return
            self.frag[1] += payload
            if fin:
                op, payload = self.frag
                self.frag = None
            else:
                return
        elif not fin:
            self.frag = [op, payload]
            return
        if op != 2:
            fz.finding("server frame", self,
                       "server message with opcode %d (not binary): %r" % (op, payload[:80]))
            return
        self._message(payload)

    def _message(self, payload):
        fz = self.fz
        fz.stats["server frames"] += 1
        try:
            m = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except Exception as e:
            fz.finding("server frame", self,
                       "server frame is not one msgpack map (%s): %r" % (e, payload[:120]))
            return
        if not isinstance(m, dict) or m.get("t") not in KINDS:
            fz.finding("server frame", self, "unknown server frame %r" % (m,))
            return
        t = m["t"]
        if t == "res":
            self._res(m)
        elif t == "err":
            code = m.get("code")
            fz.stats["err " + str(code)] += 1
            if code not in CODES or not isinstance(m.get("msg"), str):
                fz.finding("contract", self, "err frame with bad code/msg: %r" % (m,))
            if code == "BAD_FRAME":
                self.bad_recv += 1
            if code == "RATE_LIMITED" and not isinstance(m.get("retry_ms"), int):
                fz.finding("contract", self, "RATE_LIMITED without retry_ms: %r" % (m,))
        elif t == "ev":
            ok = (isinstance(m.get("ch"), str) and isinstance(m.get("seq"), int)
                  and m.get("k") in EV_KINDS and isinstance(m.get("ts"), int)
                  and isinstance(m.get("from"), str))
            if not ok:
                fz.finding("contract", self, "malformed event %r" % (m,))
            elif not self.hello_sent:
                last = self.last_seq.get(m["ch"], 0)
                if m["seq"] <= last:
                    fz.finding("contract", self, "event seq %d after %d in %s"
                               % (m["seq"], last, m["ch"]))
                self.last_seq[m["ch"]] = m["seq"]
        self.msgs.append(m)

    def _res(self, m):
        fz = self.fz
        rid, ok = m.get("rid"), m.get("ok")
        if not isinstance(rid, int) or not isinstance(ok, bool):
            fz.finding("contract", self, "res without rid/ok: %r" % (m,))
            return
        if not ok:
            code = m.get("code")
            fz.stats["res " + str(code)] += 1
            if code not in CODES or not isinstance(m.get("msg"), str):
                fz.finding("contract", self, "error response with bad code/msg: %r" % (m,))
            if code == "RATE_LIMITED" and not isinstance(m.get("retry_ms"), int):
                fz.finding("contract", self, "RATE_LIMITED without retry_ms: %r" % (m,))
        else:
            fz.stats["res ok"] += 1
        p = self.pending.get(rid)
        if not p and rid in self.optional:
            self.optional.discard(rid)
            return
        if not p:
            fz.finding("contract", self,
                       "response to rid %d, which was not asked for (or twice): %r"
                       % (rid, _short(m)))
            return
        # a rid sent twice (a duplicated key, a flipped bit) is answered
        # for the request that must have an answer first
        p.remove(True) if True in p else p.pop()
        if not p:
            del self.pending[rid]
        self.answered[rid] = m

    def _end(self, reset=None):
        if self.state == "done":
            return
        if reset:
            self.reset = reset
        elif self.close_code is None:
            self.eof_without_close = True
        self.state = "done"
        self.fz.live.discard(self)
        try:
            self.sock.close()
        except OSError:
            pass
        self.fz.end_checked(self)

    # -- sending

    def _send_raw(self, data, force=False, pace=0):
        """Send all of data, one or more whole frames (reading meanwhile).
        False once it cannot. A close or ping that arrives meanwhile is
        answered after data, never inside a frame. pace: bytes per write,
        with a short wait between writes (a slow client)."""
        if self.state == "done" or (self.state == "closing" and not force):
            return False
        if self.writing:                 # a control frame while a frame is out
            self.ctl.append(data)
            return True
        self.writing = True
        try:
            ok = self._write(data, pace)
        finally:
            self.writing = False
        while ok and self.ctl:
            ok = self._write(self.ctl.pop(0), 0)
        return ok

    def _write(self, data, pace):
        view = memoryview(data)
        deadline = time.time() + WAIT
        while view and self.state != "done":
            try:
                n = self.sock.send(view[:pace] if pace else view)
                view = view[n:]
                self.bytes_sent += n
                if pace and view:
                    self.pump(0.005)
                continue
            except BlockingIOError:
                pass
            except OSError as e:
                self._end(reset=os.strerror(e.errno) if e.errno else str(e))
                return False
            if time.time() > deadline:
                self.fz.finding("stuck", self, "server took no bytes for %d s" % WAIT)
                self._end(reset="stuck")
                return False
            try:
                select.select([self.sock], [self.sock], [], 0.2)
            except (OSError, ValueError):
                pass
            self.pump(0)
        return self.state != "done"

    def request(self, obj, required=True, what=None):
        """Send a well-formed request map with an expected rid."""
        rid = obj.get("rid")
        self.pending.setdefault(rid, []).append(required)
        return self._send_raw(frame(2, msgpack.packb(obj, use_bin_type=True),
                                    key=b"\x11\x22\x33\x44"))

    def forgive(self):
        """What is still pending may be answered later, or never."""
        self.optional.update(self.pending)
        self.pending = {}

    def wait_rid(self, rid, timeout=WAIT):
        deadline = time.time() + timeout
        while rid not in self.answered and self.state == "open":
            if time.time() > deadline:
                return None
            self.pump(0.2)
        return self.answered.get(rid)

    def close(self):
        """Client-initiated close: send 1000, wait for the echo and EOF."""
        if self.state == "open":
            self.we_closed = True
            self.state = "closing"
            self._send_raw(frame(8, struct.pack(">H", 1000), key=b"\x05\x06\x07\x08"),
                           force=True)
        deadline = time.time() + WAIT
        while self.state != "done" and time.time() < deadline:
            self.pump(0.2)
        if self.state != "done":
            self.fz.finding("close", self, "no EOF within %d s after our close" % WAIT)
            self._end(reset="timeout")


RFC_KINDS = ["RSV1 set", "opcode 3", "unmasked", "ping of 126 bytes",
             "continuation without a start", "new message inside a fragmented one"]


def _short(m, n=300):
    s = repr(m)
    return s if len(s) <= n else s[:n] + "..."


# ---- generating requests ----------------------------------------------------

OPS = ["hello", "hb", "ch.create", "dm.open", "ch.join", "ch.leave",
       "ch.invite", "ch.list", "ch.members", "send", "history", "events",
       "edit", "edits", "delete", "react", "read", "typing", "presence.set",
       "presence.watch", "search", "users.search", "users.get", "ch.info",
       "ch.set", "ch.role", "ch.kick", "delivered", "receipts",
       "push.register", "push.unregister", "push.list", "notify.set",
       "notify.get"]

TEXTS = ["hello", "", "x" * 200, "h\u00e9llo w\u00f6rld", "\U0001F600" * 10,
         "\u0000nul", "@fz2 ping", "\"quoted phrase\"", "pre*", "a AND b",
         "\u202eRTL", "\ufeffbom", "line\nbreak\ttab"]
ODD_INTS = [0, 1, -1, 2, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31,
            2**32 - 1, 2**32, 2**53, 2**63 - 1, 2**63, 2**64 - 1, -2**31,
            -2**63]
BAD_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
            b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80\x80", b"ok\xc3"]


class Gen:
    """Builds one batch of client messages from an rng and the id pool."""

    def __init__(self, rng, fz, conn_role):
        self.r, self.fz, self.role = rng, fz, conn_role

    def pick(self, seq):
        return seq[self.r.randrange(len(seq))]

    def ch(self):
        return self.pick(self.fz.chan_pool)

    def user(self):
        return self.pick(self.fz.user_pool)

    def seq(self):
        r = self.r.random()
        if r < 0.6:
            return self.r.randrange(0, 12)
        return self.pick(ODD_INTS)

    def text(self, limit=None):
        r = self.r.random()
        if limit and r < 0.15:
            n = limit + self.r.choice([-1, 0, 1])
            return "a" * n
        if limit and r < 0.2:
            n = limit // 2 + self.r.choice([-1, 0, 1])
            return "\u00e9" * n  # 2 bytes each
        return self.pick(TEXTS)

    def hello_token(self):
        if self.role == "auth" and self.r.random() < 0.5:
            return self.fz.tokens[self.conn_user]
        r = self.r.random()
        u = self.conn_user or "fz4"
        w = "wb" if u == "fz5" else "wa"
        if r < 0.15 and self.role == "unauth":
            return token("fz4", "wa")          # a good one: the hello works
        if r < 0.3:
            return token(u, w, exp_in=-3600)    # expired
        if r < 0.4:
            return jwt({"sub": u, "ws": w, "exp": int(time.time()) + 600},
                       header={"alg": "none", "typ": "JWT"})
        if r < 0.5:
            return jwt({"sub": u, "ws": w, "exp": int(time.time()) + 600},
                       key=b"not-the-secret")
        if r < 0.6:
            return jwt({"sub": u, "ws": w, "exp": int(time.time()) + 600},
                       header={"alg": "hs256", "typ": "JWT"})
        if r < 0.7:
            return jwt({"sub": "bad id!", "ws": w, "exp": int(time.time()) + 600})
        if r < 0.8:
            return "a.b.c"
        return self.pick(["", "x" * 300, "...", "eyJ" * 50])

    def args(self, op):
        r = self.r
        ch = self.ch
        if op == "hello":
            a = {"token": self.hello_token()}
            if r.random() < 0.3:
                a["resume"] = {self.ch(): self.seq() for _ in range(r.randrange(0, 4))}
            return a
        if op == "ch.create":
            a = {"name": "f%d-%s" % (r.randrange(1000), self.text(80)[:70])
                 if r.random() < 0.8 else self.text(80),
                 "kind": self.pick(["public", "private", "dm", "PUBLIC", ""])}
            if r.random() < 0.3:
                a["topic"] = self.text(250)
            return a
        if op in ("dm.open", "presence.watch", "users.get"):
            return {"users": [self.user() for _ in range(r.randrange(0, 4))]}
        if op in ("ch.join", "ch.leave", "typing", "ch.info", "receipts"):
            return {"ch": ch()}
        if op in ("ch.invite", "ch.kick"):
            return {"ch": ch(), "users": [self.user() for _ in range(r.randrange(0, 3))]}
        if op == "ch.members":
            a = {"ch": ch()}
            if r.random() < 0.5:
                a["limit"] = self.seq()
            if r.random() < 0.3:
                a["after"] = self.user()
            return a
        if op == "send":
            a = {"ch": ch(), "body": self.text(16384),
                 "cmid": "c%d" % r.randrange(10**6)}
            if r.random() < 0.2:
                a["thread"] = self.seq()
            if r.random() < 0.2:
                a["mentions"] = [self.user() for _ in range(r.randrange(0, 3))]
            if r.random() < 0.05:
                a["files"] = ["F" + "0" * 16]
            return a
        if op == "history":
            a = {"ch": ch()}
            k = r.random()
            if k < 0.3:
                a["before"] = self.seq()
            elif k < 0.6:
                a["after"] = self.seq()
            if r.random() < 0.5:
                a["limit"] = self.seq()
            if r.random() < 0.2:
                a["thread"] = self.seq()
            return a
        if op == "events":
            return {"ch": ch(), "after": self.seq(), "limit": self.seq()}
        if op == "edit":
            return {"ch": ch(), "target": self.seq(), "body": self.text(16384)}
        if op in ("edits", "delete"):
            return {"ch": ch(), "target": self.seq()}
        if op == "react":
            return {"ch": ch(), "target": self.seq(), "emoji": self.text(64)[:66] or ":+1:",
                    "on": r.random() < 0.7}
        if op in ("read", "delivered"):
            return {"ch": ch(), "seq": self.seq()}
        if op == "presence.set":
            return {"status": self.pick(["online", "away", "dnd", "invisible",
                                         "offline", "busy"])}
        if op == "search":
            a = {"q": self.text()}
            if r.random() < 0.4:
                a["ch"] = ch()
            if r.random() < 0.4:
                a["limit"] = self.seq()
            return a
        if op == "users.search":
            return {"q": self.text(64), "limit": self.seq()}
        if op == "ch.set":
            a = {"ch": ch()}
            for k, v in (("topic", self.text(250)), ("archived", r.random() < 0.1),
                         ("post", self.pick(["all", "owners", "x"]))):
                if r.random() < 0.4:
                    a[k] = v
            return a
        if op == "ch.role":
            return {"ch": ch(), "user": self.user(),
                    "role": self.pick(["owner", "member", "admin"])}
        if op in ("push.register", "push.unregister"):
            a = {"app": "app", "pushkey": "k%d" % r.randrange(20),
                 "platform": "fcm"}
            if r.random() < 0.3:
                a["data"] = {"x": self.text()}
            return a
        if op == "notify.set":
            a = {"level": self.pick(["all", "mentions", "none", "some"])}
            if r.random() < 0.5:
                a["ch"] = ch()
            return a
        return {}

    # -- value-level mutations

    def any_value(self, depth=0):
        r = self.r
        k = r.randrange(12)
        if k == 0:
            return self.pick(ODD_INTS)
        if k == 1:
            return r.random() * 1e6 - 5e5
        if k == 2:
            return r.random() < 0.5
        if k == 3:
            return None
        if k == 4:
            return self.text()
        if k == 5:
            return os.urandom(0) + bytes(r.randrange(256) for _ in range(r.randrange(0, 20)))
        if k == 6 and depth < 3:
            return [self.any_value(depth + 1) for _ in range(r.randrange(0, 4))]
        if k == 7 and depth < 3:
            return {self.text()[:10]: self.any_value(depth + 1)
                    for _ in range(r.randrange(0, 3))}
        if k == 8:
            return self.ch()
        if k == 9:
            return self.user()
        if k == 10:
            return self.seq()
        return "x" * r.choice([0, 1, 63, 64, 65, 80, 81, 250, 251, 1000])

    def nested(self, d):
        v = self.any_value(3)
        for _ in range(d):
            v = [v] if self.r.random() < 0.5 else {"k": v}
        return v

    def mutate_obj(self, m):
        """Returns a value to pack (dict, DupMap, or anything)."""
        r = self.r
        keys = list(m.keys())
        k = r.randrange(15)
        if k == 0 and keys:                              # drop a key
            del m[self.pick(keys)]
        elif k == 1:                                     # extra keys
            for _ in range(r.randrange(1, 4)):
                m[self.pick(["x", "extra", "op2", "rid2", "ch", "t", "ok",
                             "\u00e9", "k" * 64])] = self.any_value()
        elif k == 2 and keys:                            # type confusion
            m[self.pick(keys)] = self.any_value()
        elif k == 3 and keys:                            # odd ints
            m[self.pick(keys)] = self.pick(ODD_INTS)
        elif k == 4 and keys:                            # deep nesting
            m[self.pick(keys)] = self.nested(r.randrange(1, 12))
        elif k == 5 and keys:                            # bad UTF-8 value
            m[self.pick(keys)] = BadStr(b"ab" + self.pick(BAD_UTF8) + b"cd")
        elif k == 6:                                     # bad UTF-8 key
            pairs = list(m.items()) + [(BadStr(self.pick(BAD_UTF8)), 1)]
            r.shuffle(pairs)
            return DupMap(pairs)
        elif k == 7 and keys:                            # duplicated keys
            pairs = list(m.items())
            kk = self.pick(keys)
            pairs.insert(r.randrange(len(pairs) + 1), (kk, self.any_value()))
            return DupMap(pairs)
        elif k == 8:                                     # non-map root
            return self.pick([[m.get("op"), m.get("rid")], "op", 42, None,
                              True, 1.5, b"\x00", [m], [], Raw(b"\xc1"),
                              Raw(b"\xd4\x01\x00"), Raw(b"\xc7\x02\x05ab")])
        elif k == 9 and keys:                            # ext value
            m[self.pick(keys)] = Raw(self.pick([b"\xd4\x01\x00", b"\xd5\x7f\x00\x00",
                                                b"\xc7\x00\x01", b"\xc1",
                                                b"\xd6\xff\x00\x00\x00\x00"]))
        elif k == 10:                                    # non-str key
            pairs = list(m.items()) + [(self.pick([1, -1, None, True, b"bin", 1.5]),
                                        "v")]
            r.shuffle(pairs)
            return DupMap(pairs)
        elif k == 11:                                    # rid games
            v = self.pick([None, -1, 2**64 - 1, "7", 1.0, True, [1], 0])
            if v is None:
                m.pop("rid", None)
            else:
                m["rid"] = v
        elif k == 12:                                    # op games
            m["op"] = self.pick(["", "HELLO", "send ", "nope", "ch.", "hello\u0000",
                                 b"send", 7, None, "x" * 100, self.pick(OPS)])
        elif k == 13:                                    # huge strings
            big = r.choice([16384, 16385, 30000, 60000])
            m[self.pick(keys or ["body"])] = "b" * big
        else:                                            # big containers
            m[self.pick(keys or ["users"])] = [self.user()] * r.choice([0, 250, 251, 501, 1001])
        return m

    def mutate_bytes(self, b):
        r = self.r
        k = r.randrange(5)
        if k == 0 and len(b) > 1:
            return b[:r.randrange(1, len(b))]               # truncated
        if k == 1:
            return b + self.pick([b"\x00", b"\xc0", b"\x80", b"\x81\xa1a\x01",
                                  b"\xff" * 3, pack({"op": "hb"})])  # trailing
        if k == 2 and b:
            ba = bytearray(b)
            for _ in range(r.randrange(1, 5)):
                ba[r.randrange(len(ba))] ^= 1 << r.randrange(8)
            return bytes(ba)
        if k == 3:
            return b""
        if k == 4 and b:                                    # inflate a count
            ba = bytearray(b)
            i = r.randrange(len(ba))
            ba[i] = self.pick([0xdc, 0xdd, 0xde, 0xdf, 0xdb, 0xc6])
            return bytes(ba) + b"\xff\xff\xff\xff"
        return b

    def message(self, rid):
        """One client message: (payload bytes, required-or-not rid info)."""
        r = self.r
        if self.role == "auth":
            op = self.pick(OPS) if r.random() < 0.9 else "send"
        else:
            op = self.pick(OPS) if r.random() < 0.6 else "hello"
        m = {"op": op}
        if r.random() < 0.9:
            m["rid"] = rid
        m.update(self.args(op))
        k = r.random()
        if k < 0.3:
            v = m
        elif k < 0.8:
            v = self.mutate_obj(m)
        else:
            v = m
        b = pack(v)
        if k >= 0.8:
            b = self.mutate_bytes(b)
        return b


# ---- the fuzzer -------------------------------------------------------------

class Counter(dict):
    def __missing__(self, k):
        return 0


class Fuzzer:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.stats = Counter()
        self.closes = Counter()
        self.findings = []
        self.kinds = Counter()
        self.batch = None          # (index, conn label, [(desc, bytes)])
        self.shutting_down = False
        self.live = set()
        self.lost = Counter()         # lost close codes, by the expected code
        self.reset_after = Counter()  # resets after a close frame, by its code
        self.probe_rid = 7 << 40   # far from the batch's rids, bit flips included

    def pump(self, timeout):
        live = [c for c in self.live if c.state != "done"]
        if not live:
            return
        try:
            r, _, _ = select.select(live, [], [], timeout)
        except (OSError, ValueError):
            return
        for c in r:
            c._read()

    # -- findings

    def finding(self, kind, conn, what):
        self.kinds[kind] += 1
        label = conn.label if conn else "-"
        bi = self.batch[0] if self.batch else None
        f = {"kind": kind, "conn": label, "what": what, "batch": bi,
             "frames": list(conn.log[-40:]) if conn else None}
        self.findings.append(f)
        if self.kinds[kind] <= 3:
            log("FINDING [%s] seed=%d batch=%s conn=%s: %s" % (kind, self.seed, bi, label, what))

    def hint(self, c):
        """What the close code should have been, from what the client sent."""
        h = []
        if c.bad_sent > BAD_LIMIT:
            h.append("1008: %d bad frames sent" % c.bad_sent)
        if c.big_sent:
            h.append("1009: a message over %d bytes sent" % MAX_FRAME)
        if c.hello_sent:
            h.append("4001: a hello sent (bad token?)")
        if c.rfc_sent:
            h.append("1002: RFC 6455 violations sent (%s)" % ", ".join(sorted(c.rfc_kinds)))
        if c.role == "unauth":
            h.append("4001: unauthenticated for %.1f s" % (time.time() - c.t_open))
        return "; ".join(h) or "nothing the client did asks for a close"

    def end_checked(self, c):
        """A connection ended: the close must carry a code that fits."""
        if c.checked_end:
            return
        c.checked_end = True
        code = c.close_code
        self.closes["reset" if c.reset and code is None else
                    "eof, no close frame" if code is None else code] += 1
        if code is None:
            self.lost[self.hint(c).split(":")[0]] += 1
        elif c.reset:
            self.reset_after[code] += 1
        if c.reset and code is None:
            self.finding("lost close code", c,
                         "connection reset (%s) before any close frame arrived: "
                         "the close code was lost (expected: %s)" % (c.reset, self.hint(c)))
            return
        if c.eof_without_close:
            self.finding("lost close code", c, "connection ended (EOF) without a close "
                         "frame (expected: %s)" % self.hint(c))
            return
        if c.reset:
            self.finding("reset after close", c,
                         "close %s arrived, then the connection was reset (%s): the "
                         "server did not read to the client's close reply" % (code, c.reset))
        if c.we_closed and code == 1000:
            return
        if code == 0:
            self.finding("no close code", c, "close frame without a code")
            return
        why = self.close_ok(c, code)
        if why:
            self.finding("close code", c, "close %d (%r): %s" % (code, c.close_reason, why))

    def close_ok(self, c, code):
        if code == 1008:
            if c.bad_recv >= BAD_LIMIT or (c.hello_sent and c.bytes_sent > 4 * MAX_FRAME):
                return None
            return "1008 after only %d BAD_FRAME answers (%d bad frames sent)" % (
                c.bad_recv, c.bad_sent)
        if code == 1009:
            return None if c.big_sent else "1009 but no frame over %d bytes was sent" % MAX_FRAME
        if code == 4001:
            return None if (c.auth != "yes" or c.hello_sent) else "4001 on an authenticated connection"
        if code == 4008:
            return None
        if code == 1001:
            return None if self.shutting_down else "1001 while the server is not stopping"
        if code in (1002, 1007):
            if c.rfc_sent:
                return None
            if code == 1007 and c.text_bad_utf8:
                return ("1007 for a text frame with invalid UTF-8: the contract "
                        "answers every text frame with BAD_FRAME")
            return "%d but the client broke no RFC 6455 rule" % code
        return "code not in the contract"

    # -- setup

    def connect(self, label, role, user=None, ws=None, hello=True):
        c = Conn(self, label, role, user, ws)
        if role == "auth" and hello:
            rid = 1
            c.request({"op": "hello", "rid": rid, "token": self.tokens[user]})
            res = c.wait_rid(rid)
            if not res or not res.get("ok"):
                raise RuntimeError("%s: hello failed: %r" % (label, res))
            c.auth = "yes"
            c.hello_res = res
        return c

    def call(self, c, op, **a):
        c.rid = getattr(c, "rid", 100) + 1
        req = {"op": op, "rid": c.rid}
        req.update(a)
        c.request(req)
        res = c.wait_rid(c.rid)
        if res is None:
            raise RuntimeError("%s: no answer to %r (%s)" % (c.label, req, c.state))
        return res

    def setup(self):
        self.tokens = {u: token(u, "wb" if u in ("fz5", "fz6") else "wa", exp_in=86400,
                                name="User " + u)
                       for u in ("keeper", "prober", "fz1", "fz2", "fz3", "fz4",
                                 "fz5", "fz6")}
        keeper = self.connect("keeper", "auth", "keeper", "wa")
        r = self.call(keeper, "ch.create", name="vault", kind="private")
        self.vault = r["ch"]["id"]
        self.canary = "canary message, sent before fuzzing"
        r = self.call(keeper, "send", ch=self.vault, body=self.canary, cmid="canary")
        if not r.get("ok"):
            raise RuntimeError("canary send failed: %r" % r)
        self.canary_seq = r["seq"]
        keeper.close()
        prober = self.connect("prober", "auth", "prober", "wa")
        self.probe_ch = self.call(prober, "ch.create", name="probe", kind="public")["ch"]["id"]
        self.anchor = "probe anchor"
        r = self.call(prober, "send", ch=self.probe_ch, body=self.anchor, cmid="anchor")
        self.anchor_seq = r["seq"]
        prober.close()
        f1 = self.connect("setup-fz1", "auth", "fz1", "wa")
        pub = self.call(f1, "ch.create", name="fz-pub", kind="public")["ch"]["id"]
        priv = self.call(f1, "ch.create", name="fz-priv", kind="private")["ch"]["id"]
        self.call(f1, "ch.invite", ch=priv, users=["fz2"])
        dm = self.call(f1, "dm.open", users=["fz2"])["ch"]["id"]
        for i in range(5):
            self.call(f1, "send", ch=pub, body="setup %d" % i, cmid="s%d" % i)
            self.call(f1, "send", ch=priv, body="secret %d" % i, cmid="p%d" % i)
        f1.close()
        f5 = self.connect("setup-fz5", "auth", "fz5", "wb")
        wbpub = self.call(f5, "ch.create", name="wb-pub", kind="public")["ch"]["id"]
        f5.close()
        self.chan_pool = [pub, pub, priv, dm, wbpub, self.probe_ch, self.vault,
                          "C" + "0" * 16, "Cdeadbeefdeadbeef", "", "../etc",
                          "x" * 64, "x" * 65, "D" + "f" * 16]
        self.user_pool = ["fz1", "fz2", "fz3", "fz4", "fz5", "keeper", "prober",
                          "ghost", "", "bad id", "u" * 64, "u" * 65]
        # The witness stays idle to the end: SIGTERM must close it with a code.
        self.witness = self.connect("witness", "auth", "fz6", "wb")

    # -- one batch

    def slot_conn(self, i):
        roles = [("auth", "fz1", "wa"), ("auth", "fz2", "wa"), ("auth", "fz3", "wa"),
                 ("auth", "fz5", "wb"), ("unauth", None, None), ("unauth", None, None)]
        role, user, ws = roles[i]
        c = self.slots[i]
        if c is None or c.state != "open":
            self.slot_gen[i] += 1
            c = self.connect("slot%d.%d(%s)" % (i, self.slot_gen[i], user or "unauth"),
                             role, user, ws)
            self.slots[i] = c
        return c

    def prelude(self):
        """Fixed batches first, so that every run meets the defects the
        random ones found: a client that keeps writing after the server
        decided to close (1008, 1009, 4001) must still get the close code."""
        hb = pack({"op": "hb"})
        bad_hello = pack({"op": "hello", "rid": 1, "token": "a.b.c"})
        scenarios = [
            ("1008", "auth", [("text", b"not msgpack")] * (BAD_LIMIT + 1)),
            ("1009", "auth", [("binary", b"\x80" + b"\x00" * MAX_FRAME)]),
            ("4001", "unauth", [("binary", bad_hello)]),
        ]
        for code, role, msgs in scenarios:
            label = "prelude-%s" % code
            c = self.connect(label, role, "fz3" if role == "auth" else None, "wa")
            frames = []
            self.batch = (label, label, frames)
            for kind, payload in msgs + [("binary", hb)] * 5:
                desc = "%s %d bytes: %s" % (kind, len(payload), payload[:48].hex())
                frames.append(desc)
                c.log.append((label, desc))
                if kind == "text":
                    c.bad_sent += 1
                elif len(payload) > MAX_FRAME:
                    c.big_sent = True
                else:
                    self.expect_request(c, payload)
                self.stats["messages"] += 1
                self.stats["frames"] += 1
                if not c._send_raw(frame(1 if kind == "text" else 2, payload,
                                         key=b"\x0f\x1e\x2d\x3c")):
                    break
                # a client busy writing, not reading yet: what follows
                # arrives after the server's decision to close (a pacing,
                # not a timing assertion)
                time.sleep(0.01)
            deadline = time.time() + WAIT
            while c.state != "done" and time.time() < deadline:
                c.pump(0.2)
            if c.state != "done":
                self.stats["prelude not closed"] += 1
                c.close()
        self.batch = None

    def run_batch(self, bi):
        rng = random.Random("%d:%d" % (self.seed, bi))
        slot = rng.randrange(6)
        c = self.slot_conn(slot)
        g = Gen(rng, self, c.role)
        g.conn_user = c.user
        n = rng.choice([1, 2, 5, 10, 20, 30, 40])
        frames = []
        self.batch = (bi, c.label, frames)
        self.stats["batches"] += 1
        for k in range(n):
            if c.state != "open":
                break
            c.rid = getattr(c, "rid", 100) + 1
            payload = g.message(c.rid)
            self.send_message(c, g, payload, frames)
            c.pump(0)
        self.probe(c, frames)
        self.batch = None

    def send_message(self, c, g, payload, frames):
        """Sends payload with a frame-level mutation; books the expectation."""
        r = g.r
        k = r.random()
        key = bytes(r.randrange(256) for _ in range(4))
        kind = "binary"
        if k < 0.04:                                  # oversized
            payload = payload + b"\x00" * (MAX_FRAME + 1 - len(payload) +
                                           r.choice([0, 0, 1, 1000, 100000]))
            kind = "oversized"
        elif k < 0.06:                                # at the limit: accepted
            m = {"op": "send", "rid": c.rid, "ch": g.ch(), "cmid": "big", "body": ""}
            over = len(pack(m)) + 2                      # str16 header: 2 more
            m["body"] = "z" * (MAX_FRAME - over - r.choice([0, 0, 1, 100]))
            payload = pack(m)
            kind = "at limit"
        elif k < 0.14:
            kind = "text"
        elif k < 0.24:
            kind = "fragmented"
        elif k < 0.25 and self.args.rfc:
            kind = "rfc"
        desc = "%s %d bytes: %s" % (kind, len(payload), payload[:96].hex())
        frames.append(desc)
        c.log.append((self.batch[0], desc))
        self.stats["messages"] += 1
        self.stats["kind " + kind] += 1
        if kind == "rfc":
            return self.send_rfc(c, g, payload, frames)
        # expectations
        if len(payload) > MAX_FRAME:
            c.big_sent = True
        elif kind == "text":
            c.bad_sent += 1
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                c.text_bad_utf8 = True
        else:
            why = classify(payload)
            if why:
                c.bad_sent += 1
                self.stats["bad " + why] += 1
            else:
                self.expect_request(c, payload)
        op = 1 if kind == "text" else 2
        if kind == "fragmented" and len(payload) > 1:
            cuts = sorted(r.sample(range(1, len(payload)), min(len(payload) - 1,
                                                              r.randrange(1, 5))))
            parts = [payload[a:b] for a, b in zip([0] + cuts, cuts + [len(payload)])]
            data = b""
            for i, p in enumerate(parts):
                data += frame(op if i == 0 else 0, p, fin=i == len(parts) - 1, key=key)
                if r.random() < 0.3:
                    data += frame(9, b"ping", key=key)
            self.stats["frames"] += len(parts)
        else:
            data = frame(op, payload, key=key)
            self.stats["frames"] += 1
        # an oversized message sometimes in pieces, as a slow client writes
        c._send_raw(data, pace=16384 if kind == "oversized" and r.random() < 0.5 else 0)

    def send_rfc(self, c, g, payload, frames):
        r = g.r
        c.rfc_sent = True
        # lws may take the message anyway (it does take unmasked frames)
        pairs = first_pairs(payload) if not classify(payload) else None
        for k, v in pairs if isinstance(pairs, list) else []:
            if k == "rid" and isinstance(v, int):
                c.optional.add(v)
        k = r.randrange(6)
        if k == 0:
            data = frame(2, payload, rsv=4)                 # RSV1 without extension
        elif k == 1:
            data = frame(3, payload)                        # reserved opcode
        elif k == 2:
            data = frame(2, payload, mask=False)            # unmasked
        elif k == 3:
            data = frame(9, b"p" * 126)                     # control frame > 125
        elif k == 4:
            data = frame(0, payload)                        # continuation, no start
        else:
            data = frame(2, payload, fin=False) + frame(2, payload)  # new msg mid-fragment
        c.rfc_kinds.add(RFC_KINDS[k])
        frames[-1] = "rfc#%d (%s) " % (k, RFC_KINDS[k]) + frames[-1]
        c.log[-1] = (c.log[-1][0], frames[-1])
        self.stats["frames"] += 1
        c._send_raw(data)

    def expect_request(self, c, payload):
        pairs = first_pairs(payload)
        if not isinstance(pairs, list):
            return
        rids = [v for k, v in pairs if k == "rid"]
        ops = [v for k, v in pairs if k == "op"]
        if "hello" in ops:
            c.hello_sent = True
            if c.auth == "no":
                c.auth = "maybe"
        good = [v for v in rids if isinstance(v, int) and not isinstance(v, bool)
                and 0 <= v < 2**64]
        if len(rids) == 1 and len(good) == 1:
            c.pending.setdefault(good[0], []).append(True)
        else:
            for v in good:   # duplicated rid keys: either one may be answered
                c.pending.setdefault(v, []).append(False)

    # -- probes

    def probe(self, c, frames):
        # on the fuzzed connection, while it is open
        if c.state == "open":
            self.probe_rid += 1
            rid = self.probe_rid
            c.request({"op": "ch.list", "rid": rid})
            res = c.wait_rid(rid)
            if c.state == "open":
                if res is None:
                    self.finding("probe", c, "ch.list probe on the fuzzed connection: "
                                 "no answer in %d s" % WAIT)
                else:
                    want = {"yes": [True], "no": [False], "maybe": [True, False]}[c.auth]
                    if res["ok"] not in want or (not res["ok"] and
                                                 res.get("code") != "UNAUTHORIZED"):
                        self.finding("probe", c, "ch.list probe (auth %s) answered %r"
                                     % (c.auth, _short(res)))
                    self.stats["probes ok"] += 1
                self.settle(c)
        # the other connections read what came for them (pings, events)
        for o in self.slots + [self.witness]:
            if o is not None and o is not c:
                o.pump(0)
        # on a fresh connection
        p = self.connect("probe", "auth", "prober", "wa")
        res = self.call(p, "history", ch=self.probe_ch, after=0, limit=1)
        msgs = res.get("msgs") if res.get("ok") else None
        if not msgs or msgs[0].get("seq") != self.anchor_seq or \
                msgs[0].get("body") != self.anchor:
            self.finding("probe", p, "history probe on a fresh connection answered %r"
                         % _short(res))
        else:
            self.stats["probes ok"] += 1
        p.close()
        if not self.server.alive():
            self.finding("crash", None, "parleyd exited (status %s) during batch %s:\n%s"
                         % (self.server.proc.returncode, self.batch[0], self.server.log_tail()))
            raise SystemExit

    def settle(self, c):
        """After the probe: every bad frame answered, every rid answered."""
        deadline = time.time() + WAIT
        while c.state == "open" and time.time() < deadline:
            required = [rid for rid, p in c.pending.items() if True in p]
            if c.bad_recv >= c.bad_sent and not required:
                break
            c.pump(0.2)
        if c.state != "open":
            return
        if c.rfc_sent:
            # after an RFC 6455 violation lws may have read anything: only
            # the close (if any) is checked on this connection
            c.forgive()
            return
        if c.bad_recv != c.bad_sent:
            self.finding("bad frame count", c, "%d bad frames sent, %d BAD_FRAME answers"
                         % (c.bad_sent, c.bad_recv))
            c.bad_recv = c.bad_sent
        required = [rid for rid, p in c.pending.items() if True in p]
        if required:
            self.finding("unanswered", c, "no response to rids %s" % required[:10])
        c.forgive()

    # -- the whole run

    def run(self):
        a = self.args
        self.server = Server(a.parleyd, a.server_arg)
        self.port = self.server.port
        log("wire_fuzz: seed %d, %g s, parleyd %s on port %d (log %s)" % (
            self.seed, a.seconds, a.parleyd, self.port, self.server.logpath))
        log("wire_fuzz: reproduce with PARLEY_FUZZ_SEED=%d PARLEY_FUZZ_SECONDS=%g"
            % (self.seed, a.seconds))
        t0 = time.time()
        try:
            self.setup()
            self.slots = [None] * 6
            self.slot_gen = [0] * 6
            self.prelude()
            if a.only is not None:
                self.run_batch(a.only)
            else:
                bi = 0
                while time.time() - t0 < a.seconds:
                    self.run_batch(bi)
                    bi += 1
            self.finish()
        except SystemExit:
            pass
        except (RuntimeError, OSError) as e:
            # a server that died may take a moment to be reaped
            try:
                self.server.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            where = "batch %s" % self.batch[0] if self.batch else "setup or the end"
            if not self.server.alive():
                self.finding("crash", None, "parleyd exited (status %s) during %s (%s: %s):\n%s"
                             % (self.server.proc.returncode, where, type(e).__name__, e,
                                self.server.log_tail()))
            else:
                self.finding("error", None, "during %s: %s: %s" % (where, type(e).__name__, e))
        finally:
            rep = self.server.sanitizer_report()
            if rep:
                self.finding("sanitizer", None, rep)
            self.report(time.time() - t0)
            self.server.cleanup(keep=bool(self.findings) and a.keep)
        return 1 if self.findings else 0

    def finish(self):
        self.batch = None
        for c in self.slots:
            if c and c.state == "open":
                c.close()
        k = self.connect("final", "auth", "keeper", "wa")
        res = self.call(k, "history", ch=self.vault, after=0, limit=10)
        msgs = res.get("msgs") if res.get("ok") else None
        if not msgs or msgs[0].get("seq") != self.canary_seq or \
                msgs[0].get("body") != self.canary or msgs[0].get("from") != "keeper":
            self.finding("canary", k, "the message sent before fuzzing is gone: %r"
                         % _short(res))
        k.close()
        # SIGTERM: the idle witness gets goaway and a close with a code
        self.shutting_down = True
        self.server.proc.send_signal(signal.SIGTERM)
        w = self.witness
        deadline = time.time() + 120
        while w.state != "done" and time.time() < deadline:
            w.pump(0.2)
        if w.state != "done":
            self.finding("shutdown", w, "still connected 120 s after SIGTERM")
        elif not any(m.get("t") == "goaway" for m in w.msgs):
            self.finding("shutdown", w, "no goaway before the close at SIGTERM")
        rc = self.server.stop(signalled=True)
        if rc != 0:
            self.finding("exit status", None, "parleyd exited %s after SIGTERM:\n%s"
                         % (rc, self.server.log_tail()))

    def report(self, secs):
        log("")
        log("wire_fuzz: seed %d, %.0f s, %d batches, %d messages in %d frames, "
            "%d connections, %d server frames" % (
                self.seed, secs, self.stats["batches"], self.stats["messages"],
                self.stats["frames"], self.stats["connections"],
                self.stats["server frames"]))
        log("  message kinds: " + ", ".join("%s %d" % (k[5:], v) for k, v in
                                            sorted(self.stats.items()) if k.startswith("kind ")))
        log("  bad frames by reason: " + ", ".join(
            "%s %d" % (k[4:], v) for k, v in sorted(self.stats.items()) if k.startswith("bad ")))
        log("  answers: " + ", ".join("%s %d" % (k, v) for k, v in sorted(self.stats.items())
                                      if k.startswith("res ") or k.startswith("err ")))
        log("  connection ends: " + ", ".join("%s %d" % (k, v) for k, v in
                                              sorted(self.closes.items(), key=str)))
        log("  probes answered correctly: %d" % self.stats["probes ok"])
        if self.lost:
            log("  ended without a close frame, by the code expected: " + ", ".join(
                "%s %d" % kv for kv in sorted(self.lost.items())))
        if self.reset_after:
            log("  reset after the close frame, by its code: " + ", ".join(
                "%s %d" % kv for kv in sorted(self.reset_after.items())))
        if not self.findings:
            log("wire_fuzz: no findings")
            return
        log("wire_fuzz: %d FINDINGS (seed %d): %s" % (
            len(self.findings), self.seed,
            ", ".join("%s %d" % kv for kv in sorted(self.kinds.items()))))
        shown = Counter()
        for f in self.findings:
            shown[f["kind"]] += 1
            if shown[f["kind"]] > 2:
                continue
            log("")
            log("--- [%s] batch %s, connection %s" % (f["kind"], f["batch"], f["conn"]))
            log(f["what"])
            if f["frames"]:
                log("the connection's last %d messages, oldest first (batch: "
                    "message); replay one batch alone with PARLEY_FUZZ_SEED=%d "
                    "PARLEY_FUZZ_ONLY=batch (the prelude batches run first in "
                    "every run):" % (len(f["frames"]), self.seed))
                for b, d in f["frames"]:
                    log("  %5s: %s" % (b, d))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parleyd", required=True)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", type=int, default=None, help="run this batch alone")
    ap.add_argument("--rfc", action="store_true",
                    help="also send RFC 6455 violations (reserved bits and opcodes, "
                    "unmasked frames, bad control frames); PARLEY_FUZZ_RFC=1")
    ap.add_argument("--keep", action="store_true", help="keep the data dir on findings")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra parleyd argument (repeatable)")
    a = ap.parse_args()
    env = os.environ
    if env.get("PARLEY_FUZZ_SECONDS"):
        a.seconds = float(env["PARLEY_FUZZ_SECONDS"])
    if env.get("PARLEY_FUZZ_SEED"):
        a.seed = int(env["PARLEY_FUZZ_SEED"])
    if env.get("PARLEY_FUZZ_RFC"):
        a.rfc = env["PARLEY_FUZZ_RFC"] not in ("", "0")
    if env.get("PARLEY_FUZZ_ONLY"):
        a.only = int(env["PARLEY_FUZZ_ONLY"])
    if a.seed is None:
        a.seed = int.from_bytes(os.urandom(4), "big")
    try:
        sys.exit(Fuzzer(a).run())
    except RuntimeError as e:
        log("wire_fuzz: setup failed: %s" % e)
        sys.exit(2)


if __name__ == "__main__":
    main()
