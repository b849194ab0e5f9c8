"""Files (issue 15), black-box: uploads and downloads over HTTP against a
real parleyd (--max-file-mb 8 for speed).

Uploads byte-exact (0, 1, 64 KiB+1, 5 MiB, the limit), stored once by
content, Range, ETag/304, HEAD, 413 before the body is read, uploads cut
short leave nothing in DATA/files/tmp, types from the bytes with the
download headers, access (other user, other workspace: 404), kill -9 after
a 201 and during an upload, the quota, and the janitor.

usage: test_files.py PATH/TO/parleyd"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "wire"))
from wsclient import WS  # noqa: E402

EXE = sys.argv[1] if len(sys.argv) > 1 else "build/parleyd"
HERE = os.path.dirname(os.path.abspath(__file__))
WAIT = 60.0  # generous: slow, loaded CI machines, ASan builds
MB = 1 << 20
_uniq = [0]


def uniq(tag):
    _uniq[0] += 1
    return "%s%d%s" % (tag, _uniq[0], os.urandom(3).hex())


def wait_until(fn, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("no %s within %.0f s" % (what, timeout))
        time.sleep(0.05)


class Parleyd:
    def __init__(self, args, env=None):
        self.args = list(args)
        self.env = dict(os.environ, **(env or {}))
        self.dir = tempfile.mkdtemp(prefix="parley-files-")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [EXE, "--listen", "127.0.0.1:0", "--data", self.dir, "--shards", "2"]
            + self.args, stdout=subprocess.PIPE, text=True, env=self.env)
        line = self.proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("parleyd did not start: %r" % line)
        self.port = int(m.group(1))
        out = self.proc.stdout
        threading.Thread(target=lambda: [None for _ in out], daemon=True).start()

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def token(self, user, ws="acme"):
        with open(os.path.join(self.dir, "jwt.secret"), "rb") as f:
            key = f.read().rstrip()
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
        claims = {"sub": user, "ws": ws, "exp": int(time.time()) + 3600}
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims).encode())
        sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
        return (head + b"." + body + b"." + sig).decode()

    # -- HTTP --
    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)

    def upload(self, user, name, data, ws="acme"):
        c = self.conn()
        c.request("POST", "/api/v1/files?name=" + urllib.parse.quote(name, safe=""),
                  body=data, headers={"Authorization": "Bearer " + self.token(user, ws),
                                      "Content-Length": str(len(data))})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, (json.loads(body) if body else None), r

    def get(self, user, fid, ws="acme", headers=None, method="GET", suffix=""):
        c = self.conn()
        h = {"Authorization": "Bearer " + self.token(user, ws)}
        h.update(headers or {})
        c.request(method, "/api/v1/files/" + fid + suffix, headers=h)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body, r

    def tmp_files(self):
        return os.listdir(os.path.join(self.dir, "files", "tmp"))

    def stored(self):
        """Every stored file's bytes under DATA/files/<aa>/."""
        out = []
        root = os.path.join(self.dir, "files")
        for d in os.listdir(root):
            if len(d) == 2:
                out += [os.path.join(root, d, f) for f in os.listdir(os.path.join(root, d))]
        return out

    def raw(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        return s


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def ok_upload(srv, user, name, data, ws="acme"):
    st, j, _ = srv.upload(user, name, data, ws)
    check(st == 201, "upload %s: %s %r" % (name, st, j))
    check(j["size"] == len(data) and j["name"] == name, "answer %r" % j)
    check(j["sha256"] == hashlib.sha256(data).hexdigest(), "sha256 %r" % j)
    check(re.match(r"^F[0-9a-f]{24}$", j["id"]), "id %r" % j["id"])
    return j


# ---- checks ----------------------------------------------------------------

def check_roundtrip(srv):
    u = uniq("rt")
    for n in (0, 1, 64 * 1024 + 1, 5 * MB, 8 * MB):
        data = os.urandom(n)
        j = ok_upload(srv, u, "f%d.bin" % n, data)
        st, body, r = srv.get(u, j["id"])
        check(st == 200 and body == data, "download of %d bytes: %s, %d bytes" % (n, st, len(body)))
        check(r.getheader("Content-Length") == str(n), "Content-Length %r" % r.getheader("Content-Length"))
        # HEAD: the head only, same length
        st, body, r = srv.get(u, j["id"], method="HEAD")
        check(st == 200 and body == b"" and r.getheader("Content-Length") == str(n),
              "HEAD: %s %r" % (st, r.getheader("Content-Length")))
    check(srv.tmp_files() == [], "tmp not empty: %r" % srv.tmp_files())


def check_dedup(srv):
    u = uniq("dd")
    data = os.urandom(300 * 1024)
    before = set(srv.stored())
    a = ok_upload(srv, u, "a.bin", data)
    b = ok_upload(srv, uniq("dd"), "b.bin", data)
    check(a["id"] != b["id"], "two uploads, one id")
    new = set(srv.stored()) - before
    check(len(new) == 1, "identical bytes stored %d times: %r" % (len(new), new))
    path = new.pop()
    check(os.path.basename(path) == a["sha256"] and
          os.path.basename(os.path.dirname(path)) == a["sha256"][:2], "path %s" % path)
    for who, j in ((u, a),):
        st, body, _ = srv.get(who, j["id"])
        check(st == 200 and body == data, "dedup download")


def check_range_etag(srv):
    u = uniq("rg")
    data = os.urandom(100000)
    j = ok_upload(srv, u, "r.bin", data)
    fid = j["id"]
    for rng, want, cr in (("bytes=0-9", data[:10], "bytes 0-9/100000"),
                          ("bytes=500-1499", data[500:1500], "bytes 500-1499/100000"),
                          ("bytes=-100", data[-100:], "bytes 99900-99999/100000"),
                          ("bytes=99990-", data[99990:], "bytes 99990-99999/100000"),
                          ("bytes=99990-200000", data[99990:], "bytes 99990-99999/100000")):
        st, body, r = srv.get(u, fid, headers={"Range": rng})
        check(st == 206 and body == want, "%s: %s, %d bytes" % (rng, st, len(body)))
        check(r.getheader("Content-Range") == cr, "%s: Content-Range %r" % (rng, r.getheader("Content-Range")))
    st, body, r = srv.get(u, fid, headers={"Range": "bytes=100000-"})
    check(st == 416 and r.getheader("Content-Range") == "bytes */100000",
          "past the end: %s %r" % (st, r.getheader("Content-Range")))
    check(r.msg.get_all("Content-Type") == ["application/json"],
          "416: Content-Type %r" % r.msg.get_all("Content-Type"))
    st, body, r = srv.get(u, fid, headers={"Range": "bytes=0-1,5-6"})
    check(st == 200 and body == data, "several ranges: %s" % st)
    st, body, r = srv.get(u, fid)
    etag = r.getheader("ETag")
    check(etag == '"%s"' % j["sha256"], "ETag %r" % etag)
    check(r.getheader("Accept-Ranges") == "bytes", "Accept-Ranges")
    st, body, r = srv.get(u, fid, headers={"If-None-Match": etag})
    check(st == 304 and body == b"", "If-None-Match: %s" % st)
    st, body, r = srv.get(u, fid, headers={"If-None-Match": '"other"'})
    check(st == 200 and body == data, "If-None-Match other: %s" % st)


def check_too_large(srv):
    """413 from the head alone: the body is never sent, the answer comes."""
    u = uniq("big")
    s = srv.raw()
    s.sendall(("POST /api/v1/files?name=big.bin HTTP/1.1\r\nHost: x\r\n"
               "Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
               % (srv.token(u), 8 * MB + 1)).encode())
    got = b""
    while b"\r\n\r\n" not in got:
        d = s.recv(65536)
        if not d:
            break
        got += d
    s.close()
    check(got.startswith(b"HTTP/1.1 413"), "oversize: %r" % got[:80])
    check(b"TOO_LARGE" in got or b"\r\n\r\n" in got, "oversize body")
    check(srv.tmp_files() == [], "tmp after 413: %r" % srv.tmp_files())
    # no Content-Length: 411
    s = srv.raw()
    s.sendall(("POST /api/v1/files?name=x HTTP/1.1\r\nHost: x\r\n"
               "Authorization: Bearer %s\r\n\r\n" % srv.token(u)).encode())
    got = s.recv(65536)
    s.close()
    check(got.startswith(b"HTTP/1.1 411"), "no Content-Length: %r" % got[:80])


def partial_upload(srv, user, total, send, close="shut"):
    s = srv.raw()
    s.sendall(("POST /api/v1/files?name=cut.bin HTTP/1.1\r\nHost: x\r\n"
               "Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
               % (srv.token(user), total)).encode())
    s.sendall(os.urandom(send))
    return s


def check_cut_short(srv):
    u = uniq("cut")
    before = set(srv.stored())
    # wrong Content-Length: a shorter body, then the client closes
    s = partial_upload(srv, u, 2 * MB, 300 * 1024)
    wait_until(lambda: srv.tmp_files(), "a .part in tmp")
    s.shutdown(socket.SHUT_WR)
    s.close()
    wait_until(lambda: srv.tmp_files() == [], "tmp emptied after a short body")
    # a client that stops half way and goes away (reset)
    s = partial_upload(srv, u, 4 * MB, 2 * MB)
    wait_until(lambda: srv.tmp_files(), "a .part in tmp")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    wait_until(lambda: srv.tmp_files() == [], "tmp emptied after a reset")
    check(set(srv.stored()) == before, "bytes stored from cut uploads")
    # and nothing counts against the quota, nor was stored: a full upload works
    ok_upload(srv, u, "after.bin", b"x" * 1000)


def make_png(w, h):
    """A valid RGB PNG of w x h (stdlib only)."""
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack("!I", len(d)) + t + d + struct.pack("!I", zlib.crc32(t + d) & 0xffffffff)
    raw = b"".join(b"\x00" + bytes(v for x in range(w) for v in (x * 6 % 256, y * 8 % 256, 128))
                   for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack("!IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def check_types(srv):
    u = uniq("ty")
    png = make_png(40, 30)
    html = b"<!DOCTYPE html>\n<html><head><title>x</title></head><body><script>alert(1)</script></body></html>\n"
    j = ok_upload(srv, u, "notes.txt", png)
    check(j["type"] == "image/png", "PNG named .txt: %r" % j["type"])
    st, body, r = srv.get(u, j["id"])
    check(r.msg.get_all("Content-Type") == ["image/png"], "type %r" % r.msg.get_all("Content-Type"))
    check(r.getheader("Content-Disposition") is None, "a PNG is inline")
    # its thumbnail, once the preview is made (asynchronous)
    wait_until(lambda: srv.get(u, j["id"], suffix="/thumb")[0] == 200, "a thumbnail")
    st, body, r = srv.get(u, j["id"], suffix="/thumb")
    check(r.getheader("Content-Type") == "image/jpeg" and body[:2] == b"\xff\xd8",
          "thumbnail: %r %r" % (r.getheader("Content-Type"), body[:4]))
    check(srv.get(uniq("ty"), j["id"], suffix="/thumb")[0] == 404, "thumbnail, another user")
    j = ok_upload(srv, u, "cat.png", html)
    check(j["type"].startswith("text/html"), "HTML named .png: %r" % j["type"])
    st, body, r = srv.get(u, j["id"])
    check(r.getheader("Content-Type").startswith("text/html"), "type")
    check(r.getheader("Content-Disposition") == "attachment; filename*=UTF-8''cat.png",
          "disposition %r" % r.getheader("Content-Disposition"))
    check(r.getheader("X-Content-Type-Options") == "nosniff", "nosniff")
    check(srv.get(u, j["id"], suffix="/thumb")[0] == 404, "no thumbnail for HTML")


def check_headers(srv):
    u = uniq("hd")
    name = "r\u00e9sum\u00e9 \"v2\";.bin"
    j = ok_upload(srv, u, name, b"plain bytes \x00\x01")
    st, body, r = srv.get(u, j["id"])
    check(r.getheader("X-Content-Type-Options") == "nosniff", "nosniff")
    check(r.getheader("Content-Security-Policy") == "sandbox; default-src 'none'", "CSP")
    cd = r.getheader("Content-Disposition")
    check(cd == "attachment; filename*=UTF-8''" + urllib.parse.quote(name.encode(), safe="!#$&+-.^_`|~"),
          "disposition %r" % cd)
    check(r.getheader("Cache-Control", "").startswith("private"), "Cache-Control")
    # bad names
    for bad in ("", "a/b", "x" * 256):
        st, jj, _ = srv.upload(u, bad, b"z")
        check(st == 400 and jj["code"] == "BAD_REQUEST", "name %r: %s" % (bad[:10], st))
    # %00: refused (lws itself closes such a request), never stored
    c = srv.conn()
    c.request("POST", "/api/v1/files?name=a%00b", body=b"z",
              headers={"Authorization": "Bearer " + srv.token(u)})
    try:
        r = c.getresponse()
        r.read()
        check(r.status == 400, "NUL in name: %s" % r.status)
    except (http.client.RemoteDisconnected, ConnectionError):
        pass
    # names with the query's own separators, percent-encoded: kept whole
    for name in ("Q&A=notes.txt", "100% sure.txt", "a+b c.txt"):
        jj = ok_upload(srv, u, name, b"n")
        check(jj["name"] == name, "name %r came back as %r" % (name, jj["name"]))
    # no token
    c = srv.conn()
    c.request("POST", "/api/v1/files?name=a", body=b"z")
    r = c.getresponse()
    r.read()
    check(r.status == 401, "no token: %s" % r.status)
    st, body, r = srv.get(u, "F" + "0" * 24)
    check(st == 404, "unknown id: %s" % st)


def check_access(srv):
    a, b = uniq("al"), uniq("bo")
    data = os.urandom(5000)
    j = ok_upload(srv, a, "secret.bin", data)
    st, body, _ = srv.get(a, j["id"])
    check(st == 200 and body == data, "uploader: %s" % st)
    st, body, _ = srv.get(b, j["id"])
    check(st == 404, "another user: %s" % st)
    st, body, _ = srv.get(a, j["id"], ws="other")
    check(st == 404, "same user id in another workspace: %s" % st)
    st, body, _ = srv.get(b, j["id"], method="HEAD")
    check(st == 404, "another user, HEAD: %s" % st)


class Client(WS):
    def __init__(self, srv, user, ws="acme"):
        WS.__init__(self, srv.port)
        self.user = user
        self.hello(srv.token(user, ws))

    def ok(self, op, **args):
        r = self.request(op, **args)
        check(r.get("ok"), "%s: %s %r -> %r" % (self.user, op, args, r))
        return r


def check_shared(srv):
    """Shared in a channel: its members may fetch it; deleting the message
    ends that; in a public channel its members only; nobody elsewhere."""
    a, b, c, d = uniq("sa"), uniq("sb"), uniq("sc"), uniq("sd")
    ca, cb = Client(srv, a), Client(srv, b)
    Client(srv, c).close()
    try:
        priv = ca.ok("ch.create", name=uniq("priv-"), kind="private")["ch"]["id"]
        ca.ok("ch.invite", ch=priv, users=[b])
        data = os.urandom(40000)
        j = ok_upload(srv, a, "plan.pdf", data)
        check(srv.get(b, j["id"])[0] == 404, "member before the share: 404")
        r = ca.ok("send", ch=priv, body="", cmid=uniq("m"), files=[j["id"]])
        seq = r["seq"]
        st, body, _ = srv.get(b, j["id"])
        check(st == 200 and body == data, "member of the channel: %s" % st)
        check(srv.get(b, j["id"], headers={"Range": "bytes=0-0"})[1] == data[:1], "member, Range")
        check(srv.get(c, j["id"])[0] == 404, "not a member of the private channel: 404")
        check(srv.get(b, j["id"], ws="other")[0] == 404, "a member's id in another workspace: 404")
        # bob cannot share alice's upload
        r = cb.request("send", ch=priv, body="", cmid=uniq("m"), files=[j["id"]])
        check(not r.get("ok") and r.get("code") == "NOT_FOUND", "sharing someone else's file: %r" % r)
        ca.ok("delete", ch=priv, target=seq)
        wait_until(lambda: srv.get(b, j["id"])[0] == 404, "access ends with the message")
        check(srv.get(a, j["id"])[0] == 200, "the uploader keeps it")
        # public channel: its members (the contract's word), not the rest
        # of the workspace, though they may read its history
        pub = ca.ok("ch.create", name=uniq("pub-"), kind="public")["ch"]["id"]
        j2 = ok_upload(srv, a, "pub.txt", b"hello all")
        ca.ok("send", ch=pub, body="see", cmid=uniq("m"), files=[j2["id"]])
        check(srv.get(d, j2["id"])[0] == 404, "public channel, not a member: 404")
        cd = Client(srv, d)
        cd.ok("ch.join", ch=pub)
        check(srv.get(d, j2["id"])[1] == b"hello all", "public channel, after joining")
        cd.close()
        check(srv.get(d, j2["id"], ws="other")[0] == 404, "public channel, another workspace")
    finally:
        ca.close()
        cb.close()


def check_kill_after_201(srv):
    u = uniq("k9")
    data = os.urandom(3 * MB + 7)
    j = ok_upload(srv, u, "durable.bin", data)
    srv.kill9()
    srv.start()
    st, body, _ = srv.get(u, j["id"])
    check(st == 200 and body == data, "after kill -9: %s, %d bytes" % (st, len(body)))


def check_kill_during(srv):
    u = uniq("kd")
    s = partial_upload(srv, u, 6 * MB, 3 * MB)
    wait_until(lambda: srv.tmp_files(), "a .part in tmp")
    before = set(srv.stored())
    srv.kill9()
    s.close()
    check(srv.tmp_files() != [], "the .part is on disk after kill -9")
    srv.start()
    check(srv.tmp_files() == [], "tmp swept at start: %r" % srv.tmp_files())
    check(set(srv.stored()) == before, "bytes stored from an upload cut by kill -9")


def check_quota(srv):
    # --file-quota-mb 40: 5 x 8 MiB of the same bytes (stored once, counted
    # five times), then one byte more is refused
    u = uniq("qu")
    data = os.urandom(8 * MB)
    for i in range(5):
        ok_upload(srv, u, "q%d.bin" % i, data)
    st, j, _ = srv.upload(u, "one-more.bin", b"x")
    check(st == 413 and j["code"] == "TOO_LARGE" and "quota" in j["msg"],
          "over quota: %s %r" % (st, j))
    # another user is not affected
    ok_upload(srv, uniq("qu"), "other.bin", b"x")
    # concurrent uploads racing for the last bytes of a quota: at most
    # what fits is accepted
    v = uniq("qc")
    ok_upload(srv, v, "base.bin", os.urandom(36 * MB // 8 * 8 // 9 * 0 + 8 * MB))
    for i in range(3):
        ok_upload(srv, v, "b%d.bin" % i, os.urandom(8 * MB))
    # 32 MiB used, 8 left: two 5 MiB uploads at once, one must be refused
    res = []

    def up(i):
        try:
            res.append(srv.upload(v, "c%d.bin" % i, os.urandom(5 * MB))[0])
        except Exception as e:  # noqa: BLE001
            res.append(repr(e))
    ts = [threading.Thread(target=up, args=(i,)) for i in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    check(sorted(res, key=str) == [201, 413], "racing for the quota: %r" % res)


def check_janitor(exe_args):
    srv = Parleyd(exe_args, env={"PARLEY_FILE_TTL_MS": "1500"})
    try:
        u = uniq("jn")
        data = os.urandom(20000)
        ca = Client(srv, u)
        ch = ca.ok("ch.create", name=uniq("jan-"), kind="private")["ch"]["id"]
        kept = os.urandom(1000)
        k = ok_upload(srv, u, "kept.bin", kept)
        seq = ca.ok("send", ch=ch, body="", cmid=uniq("m"), files=[k["id"]])["seq"]
        a = ok_upload(srv, u, "a.bin", data)
        b = ok_upload(srv, u, "b.bin", data)  # the same bytes, twice
        check(len(srv.stored()) == 2, "stored once")
        wait_until(lambda: srv.get(u, a["id"])[0] == 404 and srv.get(u, b["id"])[0] == 404,
                   "unshared files reclaimed")
        wait_until(lambda: len(srv.stored()) == 1, "bytes unlinked when no file uses them")
        check(srv.get(u, k["id"])[1] == kept, "a shared file is kept")
        # its message deleted: it goes too
        ca.ok("delete", ch=ch, target=seq)
        ca.close()
        wait_until(lambda: srv.get(u, k["id"])[0] == 404, "a file whose message was deleted reclaimed")
        wait_until(lambda: srv.stored() == [], "its bytes unlinked")
        # and the same bytes uploaded again are stored again
        c = ok_upload(srv, u, "c.bin", data)
        check(len(srv.stored()) == 1, "stored again")
        st, body, _ = srv.get(u, c["id"])
        check(st == 200 and body == data, "after the janitor: %s" % st)
    finally:
        srv.cleanup()


def check_messages(srv):
    """A message with files: its event and history carry them (name, size,
    type, w/h and thumb for an image made before the send, snippet for
    text); a file name is found by search, and the hit carries the files;
    an edit keeps them searchable; a delete takes both away."""
    a, b = uniq("ma"), uniq("mb")
    ca, cb = Client(srv, a), Client(srv, b)
    try:
        ch = ca.ok("ch.create", name=uniq("f-"), kind="private")["ch"]["id"]
        ca.ok("ch.invite", ch=ch, users=[b])
        png = make_png(64, 48)
        jp = ok_upload(srv, a, "quarterly-chart.png", png)
        wait_until(lambda: srv.get(a, jp["id"], suffix="/thumb")[0] == 200,
                   "the chart's thumbnail")
        jt = ok_upload(srv, a, "notes \u00e9t\u00e9.txt", "hello \u00e9t\u00e9\n".encode())
        wait_until(lambda: (lambda e: e and e[0].get("snippet"))(
            ca.ok("send", ch=ch, body="probe", cmid=uniq("p"),
                  files=[jt["id"]])["seq"] and
            ca.ok("history", ch=ch, limit=1)["msgs"][-1].get("files")),
            "a snippet for the text file")
        r = ca.ok("send", ch=ch, body="", cmid=uniq("m"), files=[jp["id"], jt["id"]])
        seq = r["seq"]
        ev = None
        while ev is None:
            m = cb.read_msg()
            if m.get("t") == "ev" and m.get("seq") == seq:
                ev = m
        check(ev["body"] == "" and len(ev["files"]) == 2, "event %r" % ev)
        f0, f1 = ev["files"]
        check(f0["id"] == jp["id"] and f0["name"] == "quarterly-chart.png" and
              f0["size"] == len(png) and f0["type"] == "image/png" and
              f0.get("w") == 64 and f0.get("h") == 48 and f0.get("thumb") is True,
              "image entry %r" % f0)
        check(f1["type"].startswith("text/plain") and "thumb" not in f1 and
              f1.get("snippet", "").startswith("hello \u00e9t\u00e9"), "text entry %r" % f1)
        h = cb.ok("history", ch=ch, limit=1)["msgs"][-1]
        check(h["seq"] == seq and h["files"] == ev["files"], "history %r" % h)
        # search by a word of a file name, right after the ack
        hits = cb.ok("search", q="quarterly")["hits"]
        check([x["seq"] for x in hits] == [seq] and hits[0]["files"] == ev["files"],
              "search by file name: %r" % hits)
        check(cb.ok("search", q="chart*")["hits"][0]["seq"] == seq, "prefix of a file name")
        # an edit changes the text; the files stay findable
        ca.ok("edit", ch=ch, target=seq, body="the numbers")
        check([x["seq"] for x in cb.ok("search", q="quarterly numbers")["hits"]] == [seq],
              "body and file name together after an edit")
        # files of another user's upload, or unknown: NOT_FOUND, nothing sent
        r = cb.request("send", ch=ch, body="x", cmid=uniq("m"), files=[jp["id"]])
        check(r.get("code") == "NOT_FOUND", "someone else's upload %r" % r)
        r = cb.request("send", ch=ch, body="x", cmid=uniq("m"), files=["F" + "0" * 24])
        check(r.get("code") == "NOT_FOUND", "an unknown id %r" % r)
        # a delete: no files in history, not found by name
        ca.ok("delete", ch=ch, target=seq)
        h = cb.ok("history", ch=ch, limit=5)["msgs"]
        d = [x for x in h if x["seq"] == seq][0]
        check(d.get("deleted") and "files" not in d, "deleted %r" % d)
        check(cb.ok("search", q="quarterly")["hits"] == [], "deleted: not found")
    finally:
        ca.close()
        cb.close()


def main():
    failed = []
    args = ["--max-file-mb", "8", "--file-quota-mb", "40"]
    srv = Parleyd(args)
    checks = [("upload/download byte-exact, HEAD", check_roundtrip),
              ("identical bytes stored once", check_dedup),
              ("Range, ETag, 304", check_range_etag),
              ("413 before the body, 411", check_too_large),
              ("cut-short uploads leave nothing", check_cut_short),
              ("download headers, names, auth", check_headers),
              ("access: other user, other workspace", check_access),
              ("access through a channel", check_shared),
              ("kill -9 after 201", check_kill_after_201),
              ("kill -9 during an upload", check_kill_during),
              ("quota", check_quota),
              ("types from the bytes, thumbnails", check_types),
              ("messages with files: events, history, search", check_messages)]
    try:
        for name, fn in checks:
            try:
                fn(srv)
                print("ok   %s" % name)
            except Exception as e:  # noqa: BLE001
                failed.append(name)
                print("FAIL %s: %s" % (name, e))
                if srv.proc.poll() is not None:
                    srv.start()
        try:
            check_janitor(args)
            print("ok   janitor")
        except Exception as e:  # noqa: BLE001
            failed.append("janitor")
            print("FAIL janitor: %s" % e)
    finally:
        rc = srv.stop() if srv.proc.poll() is None else 0
        shutil.rmtree(srv.dir, ignore_errors=True)
    if rc != 0:
        failed.append("SIGTERM exit %r" % rc)
    if failed:
        print("%d failed: %s" % (len(failed), ", ".join(failed)))
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
