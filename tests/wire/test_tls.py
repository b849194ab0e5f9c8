"""TLS on the port (issue 16): with --tls-cert and --tls-key the port
speaks wss:// and https:// only. Checks: a message sent over wss reaches
another wss client; /healthz, REST and a file upload and download (byte
for byte) over https; a plain ws:// client, garbage and a client that
never finishes its handshake are closed and the server goes on serving;
SIGHUP with a new certificate keeps an open connection working and new
connections get the new certificate; SIGHUP with a broken file keeps the
old one and logs an error; flag and file errors stop the start."""
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import msgpack  # noqa: E402
from wsclient import (GUID, TIMEOUT, WS, Checks, Closed, frame, stop_proc, token_for,  # noqa: E402
                      http_response, raw_connect, upgrade_request)
import base64  # noqa: E402

EXE = sys.argv[1]
TMP = tempfile.mkdtemp(prefix="parley-tls-")
CERT = os.path.join(TMP, "cert.pem")
KEY = os.path.join(TMP, "key.pem")


def make_cert(name, cn):
    """A self-signed certificate for 127.0.0.1: (cert path, key path)."""
    c, k = os.path.join(TMP, name + ".crt"), os.path.join(TMP, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", k, "-out", c, "-days", "2", "-subj",
                    "/CN=" + cn, "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return c, k


def install(pair):
    """Puts a certificate and key where the server reads them."""
    shutil.copy(pair[0], CERT + ".new")
    shutil.copy(pair[1], KEY + ".new")
    os.replace(CERT + ".new", CERT)
    os.replace(KEY + ".new", KEY)


def fingerprint_of_file(path):
    with open(path) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return hashlib.sha256(der).hexdigest()


def client_ctx():
    # self-signed: the test compares fingerprints instead of verifying
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Server:
    def __init__(self, tls=True):
        self.dir = tempfile.mkdtemp(prefix="data-", dir=TMP)
        self.err = open(os.path.join(self.dir + ".stderr"), "w+")
        self.proc = subprocess.Popen(
            [EXE, "--listen", "127.0.0.1:0", "--data", self.dir] +
            (["--tls-cert", CERT, "--tls-key", KEY] if tls else []),
            stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.line = self.proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", self.line)
        if not m:
            raise RuntimeError("parleyd did not start: %r" % self.line)
        self.port = int(m.group(1))

    def token(self, user, ws="acme"):
        return token_for(self.dir, user, ws)

    def log(self):
        self.err.flush()
        with open(self.err.name) as f:
            return f.read()

    def wait_log(self, pattern, start=0):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log()[start:])
            if m:
                return m
            time.sleep(0.05)
        raise AssertionError("no log line %r in %r" % (pattern, self.log()[start:]))

    def stop(self):
        return stop_proc(self.proc)


class TWS(WS):
    """WS over TLS: the wire client of wsclient.py on an SSL socket."""

    def __init__(self, port):
        raw = raw_connect(port)
        self.s = client_ctx().wrap_socket(raw, server_hostname="127.0.0.1")
        self.peer_fp = hashlib.sha256(self.s.getpeercert(True)).hexdigest()
        req, key = upgrade_request()
        self.s.sendall(req)
        status, hdrs, rest = http_response(self.s)
        assert status == 101, "handshake: %r" % status
        want = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
        assert hdrs.get("sec-websocket-accept") == want.decode(), hdrs
        self.buf = rest
        self.rid = 0

    def _need(self, n, deadline):
        # no select(): bytes SSL already decrypted are not on the socket
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.s.settimeout(left)
            try:
                b = self.s.recv(1 << 20)
            except socket.timeout:
                continue
            except (ConnectionResetError, ssl.SSLError):
                raise Closed("reset")
            if not b:
                raise Closed("eof")
            self.buf += b


def https(srv, method, path, body=None, headers=None):
    c = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=TIMEOUT,
                                    context=client_ctx())
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def peer_fp(srv):
    raw = raw_connect(srv.port)
    s = client_ctx().wrap_socket(raw, server_hostname="127.0.0.1")
    fp = hashlib.sha256(s.getpeercert(True)).hexdigest()
    s.close()
    return fp


def wss_works(srv, user="probe"):
    ws = TWS(srv.port)
    ws.hello(srv.token(user))
    r = ws.request("ch.list")
    assert r.get("ok"), r
    ws.close()


def expect_event(ws, ch, body):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        m = ws.read_msg(deadline - time.monotonic())
        if m.get("t") == "ev" and m.get("ch") == ch and m.get("body") == body:
            return m
    raise AssertionError("no event %r" % body)


PAIR_A = make_cert("a", "parley-test-a")
PAIR_B = make_cert("b", "parley-test-b")
install(PAIR_A)
FP_A, FP_B = fingerprint_of_file(PAIR_A[0]), fingerprint_of_file(PAIR_B[0])
checks = Checks()
srv = Server()
state = {}


def t_line():
    assert "wss://127.0.0.1:%d/ws" % srv.port in srv.line, srv.line


def t_wss_fanout():
    a, b = TWS(srv.port), TWS(srv.port)
    assert a.peer_fp == FP_A, "served certificate is not the configured one"
    a.hello(srv.token("alice"))
    b.hello(srv.token("bob"))
    r = a.request("ch.create", name="tls", kind="public")
    assert r.get("ok"), r
    ch = r["ch"]["id"]
    r = b.request("ch.join", ch=ch)
    assert r.get("ok"), r
    r = a.request("send", ch=ch, body="over tls", cmid="c1")
    assert r.get("ok"), r
    expect_event(b, ch, "over tls")
    state.update(ch=ch, a=a, b=b)


def t_https_healthz():
    st, data = https(srv, "GET", "/healthz")
    assert st == 200 and data.strip() == b"ok", (st, data)


def t_https_rest():
    tok = srv.token("alice")
    st, data = https(srv, "POST", "/api/v1/channels/%s/messages" % state["ch"],
                     json.dumps({"body": "via rest", "cmid": "r1"}),
                     {"Authorization": "Bearer " + tok,
                      "Content-Type": "application/json"})
    assert st == 201, (st, data)
    expect_event(state["b"], state["ch"], "via rest")
    st, data = https(srv, "GET", "/api/v1/channels/%s/messages?limit=10" % state["ch"],
                     headers={"Authorization": "Bearer " + tok})
    assert st == 200, (st, data)
    bodies = [m["body"] for m in json.loads(data)["msgs"]]
    assert bodies[-2:] == ["over tls", "via rest"], bodies


def t_https_files():
    tok = srv.token("alice")
    blob = os.urandom(4 * 1024 * 1024 + 123)
    st, data = https(srv, "POST", "/api/v1/files?name=blob.bin", blob,
                     {"Authorization": "Bearer " + tok,
                      "Content-Length": str(len(blob))})
    assert st == 201, (st, data)
    meta = json.loads(data)
    assert meta["size"] == len(blob), meta
    assert meta["sha256"] == hashlib.sha256(blob).hexdigest(), meta
    st, got = https(srv, "GET", "/api/v1/files/%s" % meta["id"],
                    headers={"Authorization": "Bearer " + tok})
    assert st == 200, (st, got[:200])
    assert got == blob, "downloaded %d bytes, not the uploaded ones" % len(got)


def refused(send):
    """A raw TCP client sends these bytes: the server must close it without
    speaking HTTP or WebSocket."""
    s = raw_connect(srv.port)
    s.sendall(send)
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert b"HTTP/1.1 101" not in data and b"HTTP/1.1 200" not in data, data[:200]


def t_plain_ws():
    req, _ = upgrade_request()
    refused(req)
    refused(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    wss_works(srv)


def t_garbage():
    refused(os.urandom(512))
    refused(b"\x16\x03\x01\x00\x05hello" + os.urandom(64))
    wss_works(srv)


def t_stalled_handshake():
    # a client that starts a handshake and says nothing more is closed
    # (at the head deadline, 10 s), and the failure is counted
    s = raw_connect(srv.port)
    s.sendall(b"\x16\x03\x01")
    s.settimeout(TIMEOUT)
    t0 = time.monotonic()
    try:
        b = s.recv(100)
    except ConnectionResetError:
        b = b""
    assert b == b"", b
    assert time.monotonic() - t0 < TIMEOUT, "not closed"
    s.close()
    st, data = https(srv, "GET", "/metrics")
    m = re.search(rb"^parley_tls_handshake_failures_total (\d+)", data, re.M)
    assert m and int(m.group(1)) >= 3, data[-600:]
    m = re.search(rb"^parley_tls_handshakes_total (\d+)", data, re.M)
    assert m and int(m.group(1)) >= 5, data[-600:]


def t_reload():
    a, b, ch = state["a"], state["b"], state["ch"]
    install(PAIR_B)
    mark = len(srv.log())
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log(r"reloaded certificate", mark)
    # the open connections go on, on the old session
    r = a.request("send", ch=ch, body="after reload", cmid="c2")
    assert r.get("ok"), r
    expect_event(b, ch, "after reload")
    r = b.request("send", ch=ch, body="back", cmid="c3")
    assert r.get("ok"), r
    expect_event(a, ch, "back")
    # a new connection gets the new certificate
    assert peer_fp(srv) == FP_B, "new connections still get the old certificate"
    ws = TWS(srv.port)
    assert ws.peer_fp == FP_B
    ws.hello(srv.token("carol"))
    ws.close()


def t_reload_broken():
    with open(CERT, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n"
                "-----END CERTIFICATE-----\n")
    mark = len(srv.log())
    srv.proc.send_signal(signal.SIGHUP)
    line = srv.wait_log(r"error.*tls.*reload failed[^\n]*", mark).group(0)
    assert CERT in line, line
    assert peer_fp(srv) == FP_B, "the previous certificate is not served any more"
    wss_works(srv)
    st, _ = https(srv, "GET", "/healthz")
    assert st == 200
    # a key that does not match the certificate: refused too
    install(PAIR_A)
    shutil.copy(PAIR_B[1], KEY)
    mark = len(srv.log())
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log(r"reload failed", mark)
    assert peer_fp(srv) == FP_B
    state["a"].request("ch.list")


def t_stop():
    state["a"].close()
    state["b"].close()
    rc = srv.stop()
    assert rc == 0, "exit %s" % rc


def t_plain_sighup():
    # without a certificate SIGHUP is harmless: said, and it serves on
    p = Server(tls=False)
    try:
        assert "ws://127.0.0.1:%d/ws" % p.port in p.line, p.line
        p.proc.send_signal(signal.SIGHUP)
        p.wait_log(r"nothing to reload")
        ws = WS(p.port)
        ws.hello(p.token("dave"))
        ws.close()
        assert p.proc.poll() is None
    finally:
        rc = p.stop()
        p.err.close()
    assert rc == 0, "exit %s" % rc


def run_bad(args):
    return subprocess.run([EXE, "--listen", "127.0.0.1:0", "--data",
                           os.path.join(TMP, "bad")] + args,
                          capture_output=True, text=True, timeout=60)


def t_flags():
    r = run_bad(["--tls-cert", PAIR_A[0]])
    assert r.returncode == 2 and "--tls-key" in r.stderr, r
    r = run_bad(["--tls-key", PAIR_A[1]])
    assert r.returncode == 2 and "--tls-cert" in r.stderr, r
    missing = os.path.join(TMP, "nope.pem")
    r = run_bad(["--tls-cert", missing, "--tls-key", PAIR_A[1]])
    assert r.returncode == 1 and missing in r.stderr and \
        "listening" not in r.stdout, r
    r = run_bad(["--tls-cert", PAIR_A[0], "--tls-key", PAIR_B[1]])
    assert r.returncode == 1 and "does not match" in r.stderr, r


checks.run("the startup line says wss://", t_line)
checks.run("wss: a message reaches another wss client", t_wss_fanout)
checks.run("https: GET /healthz", t_https_healthz)
checks.run("https: REST post and history", t_https_rest)
checks.run("https: a 4 MB upload, downloaded byte for byte", t_https_files)
checks.run("plain ws:// and http:// are refused, wss goes on", t_plain_ws)
checks.run("garbage instead of a ClientHello", t_garbage)
checks.run("a stalled handshake is closed, counted", t_stalled_handshake)
checks.run("SIGHUP: new cert for new conns, open ones go on", t_reload)
checks.run("SIGHUP with a broken cert keeps the old one", t_reload_broken)
checks.run("SIGTERM stops it (exit 0)", t_stop)
checks.run("flag and file errors stop the start", t_flags)
checks.run("plain mode: SIGHUP is harmless", t_plain_sighup)
srv.err.close()
if checks.failed:
    print(open(srv.err.name).read()[-3000:])
shutil.rmtree(TMP, ignore_errors=True)
checks.exit()
