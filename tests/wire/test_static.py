"""The web client's files over HTTP on parleyd's port (docs/protocol.md,
section 9): GET and HEAD of / and /PATH from the copy of web/ compiled into
the binary, the headers a browser relies on (Content-Type, ETag,
Cache-Control, the CSP), revalidation with If-None-Match, refusals
(traversal, other methods), --web-dir, and `parleyd token --url`, whose
link signs in over WebSocket. Requests are written byte for byte on a raw
socket, so that what lws receives is exactly the path under test.

usage: test_static.py PARLEYD"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

from wsclient import TIMEOUT, WS, Checks, Server, http_response, raw_connect

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEB = os.path.join(ROOT, "web")

CSP = ("default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
       "style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
HTML = "text/html; charset=utf-8"
JS = "text/javascript; charset=utf-8"
ETAG = re.compile(r'^"[0-9a-f]{16}"$')


def web_file(rel):
    with open(os.path.join(WEB, rel), "rb") as f:
        return f.read()


def web_files():
    """Every file under web/ that parleyd serves: relative paths."""
    out = []
    for d, dirs, files in os.walk(WEB):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        for f in files:
            if not f.startswith("."):
                out.append(os.path.relpath(os.path.join(d, f), WEB).replace(os.sep, "/"))
    return sorted(out)


def a_js_file():
    js = sorted(f for f in web_files() if f.startswith("js/") and f.endswith(".js"))
    assert js, "web/js/ has no .js file"
    return js[0]


def http(port, method, path, headers=None, body=None, may_close=False):
    """One request on its own connection, exactly as given: (status,
    headers with lower-case names, body). The body is read to EOF. Status
    None (only with may_close) when the server closed without answering."""
    s = raw_connect(port)
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (method, path)
    for k, v in (headers or {}).items():
        head += "%s: %s\r\n" % (k, v)
    if body is not None:
        head += "Content-Length: %d\r\n" % len(body)
    s.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
    status, hdrs, rest = http_response(s)
    data = rest
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    assert status is not None or may_close, "no answer to %s %s" % (method, path)
    return status, hdrs, data


def expect_static(hdrs, ctype):
    assert hdrs.get("content-type") == ctype, hdrs
    assert ETAG.match(hdrs.get("etag", "")), hdrs
    assert hdrs.get("cache-control") == "no-cache", hdrs
    assert hdrs.get("x-content-type-options") == "nosniff", hdrs
    assert hdrs.get("referrer-policy") == "no-referrer", hdrs


def expect_html_headers(hdrs):
    expect_static(hdrs, HTML)
    assert hdrs.get("content-security-policy") == CSP, hdrs.get("content-security-policy")
    assert hdrs.get("x-frame-options") == "DENY", hdrs


# ---- checks ---------------------------------------------------------------

def index(srv):
    want = web_file("index.html")
    for path in ("/", "/index.html", "/?from=link"):
        st, h, body = http(srv.port, "GET", path)
        assert st == 200, (path, st)
        expect_html_headers(h)
        assert body == want, "%s: not web/index.html" % path
        assert h.get("content-length") == str(len(want)), h


def js_file(srv):
    rel = a_js_file()
    st, h, body = http(srv.port, "GET", "/" + rel)
    assert st == 200, st
    expect_static(h, JS)
    assert "content-security-policy" not in h, h  # only HTML documents
    assert body == web_file(rel), "/%s differs from web/%s" % (rel, rel)


def every_file(srv):
    """Whatever web/ holds is served byte for byte, each with its ETag."""
    tags = set()
    for rel in web_files():
        st, h, body = http(srv.port, "GET", "/" + rel)
        assert st == 200, (rel, st)
        assert body == web_file(rel), rel
        assert ETAG.match(h.get("etag", "")), (rel, h)
        tags.add((h["etag"], body))
    # a strong validator: different contents never share one
    assert len({t for t, _ in tags}) == len({b for _, b in tags}), tags


def content_types(srv):
    want = {".html": HTML, ".js": JS, ".css": "text/css; charset=utf-8",
            ".svg": "image/svg+xml", ".json": "application/json",
            ".png": "image/png", ".ico": "image/x-icon",
            ".txt": "text/plain; charset=utf-8"}
    seen = 0
    for rel in web_files():
        ext = os.path.splitext(rel)[1].lower()
        if ext in want:
            st, h, _ = http(srv.port, "HEAD", "/" + rel)
            assert st == 200 and h.get("content-type") == want[ext], (rel, h)
            seen += 1
    assert seen >= 2, "web/ should hold at least HTML and JS"


def revalidate(srv):
    rel = "/" + a_js_file()
    st, h, body = http(srv.port, "GET", rel)
    etag = h["etag"]
    for inm in (etag, '"0000000000000000", ' + etag, "W/" + etag, "*",
                '"a", W/%s,"b"' % etag):
        st, h2, b2 = http(srv.port, "GET", rel, {"If-None-Match": inm})
        assert st == 304, (inm, st)
        assert b2 == b"", "a 304 with a body"
        assert h2.get("etag") == etag, h2
        assert h2.get("cache-control") == "no-cache", h2
    for inm in ('"0000000000000000"', etag[:-2] + '"', '""', "W/\"x\""):
        st, h2, b2 = http(srv.port, "GET", rel, {"If-None-Match": inm})
        assert st == 200 and b2 == body, (inm, st)
    # the ETag of / is index.html's, and a 304 there keeps the CSP
    st, h, _ = http(srv.port, "GET", "/")
    st, h2, b2 = http(srv.port, "GET", "/index.html", {"If-None-Match": h["etag"]})
    assert st == 304 and b2 == b"", st
    assert h2.get("content-security-policy") == CSP, h2


def head(srv):
    for path, rel, ctype in (("/", "index.html", HTML),
                             ("/" + a_js_file(), a_js_file(), JS)):
        st, g, _ = http(srv.port, "GET", path)
        st2, h, body = http(srv.port, "HEAD", path)
        assert st == st2 == 200, (st, st2)
        assert body == b"", "HEAD %s: a body of %d bytes" % (path, len(body))
        assert h.get("content-length") == str(len(web_file(rel))), h
        for k in ("content-type", "etag", "cache-control", "x-content-type-options",
                  "referrer-policy", "content-security-policy", "x-frame-options"):
            assert h.get(k) == g.get(k), (path, k, h.get(k), g.get(k))


def head_keepalive(srv):
    """After a HEAD (of a file or of anything else) the next answer on the
    same connection starts right after the head: no body came between."""
    for path in ("/", "/healthz", "/no-such-file"):
        s = raw_connect(srv.port)
        s.sendall(b"HEAD %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
        st, _, rest = http_response(s)
        assert st in (200, 404), st
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = rest
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), (path, data[:40])


def traversal(srv):
    outside = {}
    for f in ("CMakeLists.txt", "README.md"):
        with open(os.path.join(ROOT, f), "rb") as fh:
            outside[f] = fh.read()
    for path in ("/../CMakeLists.txt", "/%2e%2e/CMakeLists.txt",
                 "/%2E%2E/CMakeLists.txt", "/js/../../README.md",
                 "/js/%2e%2e/%2e%2e/README.md", "/..%2fCMakeLists.txt",
                 "//etc/passwd", "/js/..\\..\\README.md", "/..\\CMakeLists.txt",
                 "/.git/HEAD", "/js/", "/%00index.html", "/index.html%00.js"):
        st, _, body = http(srv.port, "GET", path, may_close=True)
        # A NUL byte in the path is a bad request (lws drops some such
        # connections itself, without an answer); the rest names no file.
        if "%00" in path:
            assert st in (400, None), "%s: %s" % (path, st)
        else:
            assert st == 404, "%s: %s" % (path, st)
        for f, content in outside.items():
            assert content not in body, "%s served %s" % (path, f)
        assert b"root:" not in body, path


def other_methods(srv):
    for method, path in (("POST", "/"), ("PUT", "/index.html"),
                         ("DELETE", "/" + a_js_file()), ("PATCH", "/")):
        st, h, _ = http(srv.port, method, path, body=b"")
        assert st == 405, (method, path, st)
        assert h.get("allow") == "GET, HEAD", h
    # a path that names no file stays 404 whatever the method
    st, _, _ = http(srv.port, "POST", "/no-such-file", body=b"")
    assert st == 404, st


def others_keep_priority(srv):
    st, h, body = http(srv.port, "GET", "/healthz")
    assert st == 200 and body == b"ok\n", (st, body)
    st, h, body = http(srv.port, "GET", "/metrics")
    assert st == 200 and b"parley_connections" in body, st
    st, h, body = http(srv.port, "GET", "/api/v1/channels/Cx/messages")
    assert st == 401, st  # REST, not a file
    st, _, _ = http(srv.port, "GET", "/no-such-file.js")
    assert st == 404, st


def web_dir(exe):
    d = tempfile.mkdtemp(prefix="parley-webdir-")
    srv = None
    try:
        os.makedirs(os.path.join(d, "js"))
        with open(os.path.join(d, "index.html"), "wb") as f:
            f.write(b"<!doctype html><p>first</p>\n")
        with open(os.path.join(d, "js", "app.js"), "wb") as f:
            f.write(b"export const v = 1;\n")
        with open(os.path.join(d, ".secret"), "wb") as f:
            f.write(b"hidden\n")
        srv = Server(exe, ["--web-dir", d])
        st, h, body = http(srv.port, "GET", "/")
        assert st == 200 and body == b"<!doctype html><p>first</p>\n", (st, body)
        expect_html_headers(h)
        tag1 = h["etag"]
        st, h, body = http(srv.port, "GET", "/js/app.js")
        assert st == 200 and body == b"export const v = 1;\n", (st, body)
        expect_static(h, JS)
        # edited on disk: the next request sees it, under a new ETag
        with open(os.path.join(d, "index.html"), "wb") as f:
            f.write(b"<!doctype html><p>second, longer</p>\n")
        st, h, body = http(srv.port, "GET", "/", {"If-None-Match": tag1})
        assert st == 200 and body == b"<!doctype html><p>second, longer</p>\n", (st, body)
        assert h["etag"] != tag1, h
        st, _, body = http(srv.port, "GET", "/", {"If-None-Match": h["etag"]})
        assert st == 304 and body == b"", st
        # a file added while running
        with open(os.path.join(d, "js", "new.js"), "wb") as f:
            f.write(b"export {};\n")
        st, _, body = http(srv.port, "GET", "/js/new.js")
        assert st == 200 and body == b"export {};\n", st
        # the compiled-in copy is not what it serves
        st, _, _ = http(srv.port, "GET", "/style.css")
        assert st == 404 or not os.path.exists(os.path.join(WEB, "style.css")), st
        for path in ("/.secret", "/js", "/js/", "/../" + os.path.basename(d) + "/index.html",
                     "/%2e%2e/etc/passwd"):
            st, _, body = http(srv.port, "GET", path)
            assert st == 404, (path, st)
        st, h, _ = http(srv.port, "POST", "/js/app.js", body=b"")
        assert st == 405 and h.get("allow") == "GET, HEAD", st
    finally:
        if srv:
            srv.stop()
        shutil.rmtree(d, ignore_errors=True)


def token_cmd(exe, *args):
    p = subprocess.run([exe, "token"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def token_url(exe):
    """On a fresh machine: `token --url` first (it makes the secret), then
    the server on the same data directory; the link's page loads and its
    token signs in."""
    data = os.path.join(tempfile.mkdtemp(prefix="parley-tok-"), "data")
    srv = None
    try:
        bare = token_cmd(exe, "--user", "carol", "--workspace", "acme", "--data", data)
        assert re.match(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$", bare), bare
        srv = Server(exe, ["--data", data])
        url = token_cmd(exe, "--user", "carol", "--workspace", "acme", "--name", "Carol",
                        "--data", data, "--url", "--listen", "0.0.0.0:%d" % srv.port)
        u = urllib.parse.urlsplit(url)
        assert u.scheme == "http" and u.netloc == "127.0.0.1:%d" % srv.port, url
        assert u.path == "/" and not u.query, url
        frag = urllib.parse.parse_qs(u.fragment)
        tok = frag["token"][0]
        st, h, body = http(srv.port, "GET", u.path)
        assert st == 200 and body == web_file("index.html"), st
        for t in (tok, bare):
            ws = WS(srv.port)
            r = ws.hello(t)
            assert r.get("user") == "carol" and r.get("ws") == "acme", r
            ws.close()
        url = token_cmd(exe, "--user", "carol", "--workspace", "acme", "--data", data,
                        "--url", "--https", "--listen", "chat.example.org:443")
        assert url.startswith("https://chat.example.org:443/#token="), url
        url = token_cmd(exe, "--user", "carol", "--workspace", "acme", "--data", data, "--url")
        assert url.startswith("http://127.0.0.1:8080/#token="), url
    finally:
        if srv:
            srv.stop()
        shutil.rmtree(os.path.dirname(data), ignore_errors=True)


def main():
    exe = sys.argv[1]
    c = Checks()
    srv = Server(exe)
    try:
        c.run("GET / is index.html, with the CSP", index, srv)
        c.run("a JS module: type and bytes", js_file, srv)
        c.run("every file of web/ byte for byte", every_file, srv)
        c.run("content types by extension", content_types, srv)
        c.run("ETag and If-None-Match: 304 / 200", revalidate, srv)
        c.run("HEAD: same headers, no body", head, srv)
        c.run("HEAD then the next answer on one connection", head_keepalive, srv)
        c.run("traversal attempts: 404", traversal, srv)
        c.run("other methods on a file: 405", other_methods, srv)
        c.run("/healthz, /metrics, /api keep priority", others_keep_priority, srv)
    finally:
        rc = srv.stop()
    if rc != 0:
        print("parleyd exited %d" % rc)
        c.failed.append("parleyd exit status")
    c.run("--web-dir serves a directory, edits included", web_dir, exe)
    c.run("token --url: the link's token signs in", token_url, exe)
    c.exit()


if __name__ == "__main__":
    main()
