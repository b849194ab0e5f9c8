"""A deliberately raw WebSocket client for the wire tests: it sends whatever
bytes a test asks for (unmasked frames, reserved bits, bad close codes), so
that the server's answer to each can be checked. Also starts parleyd and
makes tokens. Python standard library plus msgpack only."""

import base64
import hashlib
import hmac
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import msgpack

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 30.0  # generous: slow, loaded CI machines, ASan builds


class Closed(Exception):
    """The TCP connection ended (EOF or reset) without a close frame."""


def stop_proc(proc, timeout=60):
    """SIGTERM, then its exit status (killed after timeout s: no drain)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def token_for(data_dir, user, ws="acme", ttl=3600):
    """An HS256 token signed with DATA_DIR/jwt.secret, as parleyd checks
    it; ttl seconds from now (negative: already expired)."""
    with open(os.path.join(data_dir, "jwt.secret"), "rb") as f:
        key = f.read().rstrip()
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": user, "ws": ws,
                           "exp": int(time.time()) + ttl}).encode())
    sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


class Server:
    def __init__(self, exe, extra=()):
        self.dir = tempfile.mkdtemp(prefix="parley-wire-")
        self.proc = subprocess.Popen(
            [exe, "--listen", "127.0.0.1:0", "--data", self.dir] + list(extra),
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError("parleyd did not start: %r" % line)
        self.port = int(m.group(1))

    def token(self, user, ws="acme"):
        return token_for(self.dir, user, ws)

    def metric(self, name):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        m = re.search(rb"^" + name.encode() + rb" (\d+)", data, re.M)
        return int(m.group(1)) if m else None

    def stop(self):
        rc = stop_proc(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


def raw_connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def http_response(s):
    """Reads an HTTP response head: (status, headers dict, rest). status
    None when the server closed (or reset) without answering."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            b = s.recv(65536)
            if not b:
                return None, {}, data
            data += b
    except ConnectionResetError:
        return None, {}, data
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


def upgrade_request(path="/ws", version="13", key=None, protocols="parley.v1",
                    extra=""):
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    req = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" \
          "Connection: Upgrade\r\n" % path
    if key != "":
        req += "Sec-WebSocket-Key: %s\r\n" % key
    if version is not None:
        req += "Sec-WebSocket-Version: %s\r\n" % version
    if protocols:
        req += "Sec-WebSocket-Protocol: %s\r\n" % protocols
    return (req + extra + "\r\n").encode(), key


def frame(op, payload=b"", fin=True, rsv=0, mask=True, length=None, key=None):
    """A frame from the client; masked with key (random by default; the
    key 0 leaves the payload as is, cheap for floods of frames)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    n = len(payload) if length is None else length
    if n < 126:
        h = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n <= 0xffff:
        h = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        h = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    if not mask:
        return h + payload
    k = key if key is not None else os.urandom(4)
    if k == b"\0\0\0\0":
        return h + k + payload
    return h + k + bytes(b ^ k[i & 3] for i, b in enumerate(payload))


class WS:
    def __init__(self, port, protocols="parley.v1"):
        self.s = raw_connect(port)
        req, key = upgrade_request(protocols=protocols)
        self.s.sendall(req)
        status, hdrs, rest = http_response(self.s)
        assert status == 101, "handshake: %r" % status
        want = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
        assert hdrs.get("sec-websocket-accept") == want.decode(), hdrs
        self.protocol = hdrs.get("sec-websocket-protocol")
        self.buf = rest
        self.rid = 0

    def send(self, data):
        self.s.sendall(data)

    def send_split(self, data, chunk):
        """Sends data in pieces of chunk bytes, each its own TCP write."""
        for i in range(0, len(data), chunk):
            self.s.sendall(data[i:i + chunk])
            time.sleep(0.001)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            r, _, _ = select.select([self.s], [], [], left)
            if not r:
                continue
            try:
                b = self.s.recv(1 << 20)
            except ConnectionResetError:
                raise Closed("reset")
            if not b:
                raise Closed("eof")
            self.buf += b

    def read_frame(self, timeout=TIMEOUT):
        """(opcode, payload) of the next frame from the server."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert not (b1 & 0x80), "the server masked a frame"
        assert not (b0 & 0x70), "the server set reserved bits"
        n, hl = b1 & 0x7f, 2
        if n == 126:
            self._need(4, deadline)
            n, hl = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, hl = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(hl + n, deadline)
        payload = self.buf[hl:hl + n]
        self.buf = self.buf[hl + n:]
        assert b0 & 0x80, "fragmented frame from the server"
        return b0 & 0x0f, payload

    def read_msg(self, timeout=TIMEOUT):
        """The next binary message, decoded; pongs are skipped."""
        while True:
            op, p = self.read_frame(timeout)
            if op == 0xa:
                continue
            if op == 0x8:
                raise AssertionError("closed %s" % close_code(p))
            assert op == 2, "opcode %d from the server" % op
            return msgpack.unpackb(p, raw=False)

    def request(self, op, **args):
        self.rid += 1
        m = {"op": op, "rid": self.rid}
        m.update(args)
        self.send(frame(2, msgpack.packb(m)))
        return self.expect_res(self.rid)

    def expect_res(self, rid, timeout=TIMEOUT):
        while True:
            m = self.read_msg(timeout)
            if m.get("t") == "res" and m.get("rid") == rid:
                return m

    def hello(self, token):
        r = self.request("hello", token=token)
        assert r.get("ok"), r
        return r

    def expect_close(self, timeout=TIMEOUT):
        """Reads until the server's close frame; returns (code or None,
        frames before it). Then the server must end TCP cleanly (EOF), not
        with a reset, once we answer."""
        before = []
        while True:
            op, p = self.read_frame(timeout)
            if op == 0x8:
                break
            before.append((op, p))
        code = close_code(p)
        try:
            self.s.sendall(frame(8, p[:2]))
        except OSError:
            pass
        return code, before

    def expect_eof(self, timeout=TIMEOUT):
        """The server closes TCP (EOF) after the close handshake."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._need(len(self.buf) + 1, deadline)
            except Closed as e:
                return str(e)
            self.buf = b""

    def close(self):
        self.s.close()


class BufReader:
    """Reads a WS's messages from megabytes of buffered frames: a
    bytearray with an offset, not WS's bytes sliced per frame (quadratic
    copies). Takes over ws.buf; give what is left back with ws_buf()."""

    def __init__(self, ws):
        self.s = ws.s
        self.buf = bytearray(ws.buf)
        self.off = 0

    def ws_buf(self):
        """What was read and not parsed, for the WS to go on with."""
        return bytes(self.buf[self.off:])

    def _need(self, n, deadline):
        while len(self.buf) - self.off < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.s.settimeout(left)
            try:
                b = self.s.recv(1 << 20)
            except socket.timeout:
                raise TimeoutError("no frame in time")
            if not b:
                raise Closed("eof")
            if self.off > (1 << 20):
                del self.buf[:self.off]
                self.off = 0
            self.buf += b

    def _frame_len(self):
        """(header length, payload length) of the buffered frame's head,
        or None when its header is not all here."""
        have = len(self.buf) - self.off
        if have < 2:
            return None
        n = self.buf[self.off + 1] & 0x7f
        hl = 4 if n == 126 else 10 if n == 127 else 2
        if have < hl:
            return None
        if hl > 2:
            n = int.from_bytes(self.buf[self.off + 2:self.off + hl], "big")
        return hl, n

    def ready(self):
        """A whole frame is buffered, or the socket has bytes."""
        f = self._frame_len()
        if f and len(self.buf) - self.off >= f[0] + f[1]:
            return True
        r, _, _ = select.select([self.s], [], [], 0)
        return bool(r)

    def msg(self, timeout=TIMEOUT):
        """The next binary message, decoded; pongs are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            self._need(2, deadline)
            n7 = self.buf[self.off + 1] & 0x7f
            self._need(4 if n7 == 126 else 10 if n7 == 127 else 2, deadline)
            hl, n = self._frame_len()
            self._need(hl + n, deadline)
            op = self.buf[self.off] & 0x0f
            p = bytes(self.buf[self.off + hl:self.off + hl + n])
            self.off += hl + n
            if op == 0xa:
                continue
            assert op == 2, "opcode %d from the server" % op
            return msgpack.unpackb(p, raw=False)


def close_code(p):
    if len(p) == 0:
        return None
    assert len(p) >= 2, "a close frame of one byte from the server"
    return struct.unpack("!H", p[:2])[0]


class Checks:
    """Runs named checks, reports each, and fails the process at the end
    if any failed."""

    def __init__(self):
        self.failed = []

    def run(self, name, fn, *args):
        t0 = time.monotonic()
        try:
            fn(*args)
            print("ok    %-50s %.1fs" % (name, time.monotonic() - t0), flush=True)
        except Exception as e:  # noqa: anything a check raises is a failure
            print("FAIL  %-50s %s: %s" % (name, type(e).__name__, e), flush=True)
            self.failed.append(name)

    def exit(self):
        if self.failed:
            print("%d check(s) failed: %s" % (len(self.failed), ", ".join(self.failed)))
            raise SystemExit(1)
        print("all checks passed")
