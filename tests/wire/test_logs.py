"""The operator's log (issue 16): parleyd writes one line per event worth
attention on stderr, with the time, the level and the area; auth refusals
say why and from where, 1009 and 1008 closes are there, a flood from one
call site is cut to 20 lines per 10 s and the count of what was held back
comes with the next line; --log-level error leaves out warnings and info;
a bad --log-level stops the start. The secret a test writes never appears
in the log."""
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsclient as w  # noqa: E402

EXE = sys.argv[1]
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn |info |debug) ([a-z]+): (.*)$")


class Logged:
    """parleyd with its stderr in a file, read as it grows."""

    def __init__(self, extra=(), secret=None):
        self.dir = tempfile.mkdtemp(prefix="parley-logs-")
        self.errpath = os.path.join(self.dir, "stderr")
        args = [EXE, "--listen", "127.0.0.1:0", "--data", os.path.join(self.dir, "d"),
                "--shards", "2"] + list(extra)
        if secret is not None:
            path = os.path.join(self.dir, "secret")
            with open(path, "w") as f:
                f.write(secret)
            os.chmod(path, 0o600)
            args += ["--jwt-secret-file", path]
            self.key = secret.encode()
        self.err = open(self.errpath, "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.err, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError("parleyd did not start: %r" % line)
        self.port = int(m.group(1))

    def lines(self):
        with open(self.errpath) as f:
            return f.read().splitlines()

    def wait_for(self, pred, what, timeout=w.TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [ln for ln in self.lines() if pred(ln)]
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError("no log line %s in %r" % (what, self.lines()[-20:]))

    def stop(self):
        self.proc.terminate()
        rc = self.proc.wait(timeout=60)
        self.err.close()
        return rc


checks = w.Checks()
srv = Logged()


def hello_refused(tok):
    ws = w.WS(srv.port)
    r = ws.request("hello", token=tok)
    assert r.get("ok") is False, r
    code, _ = ws.expect_close()
    assert code == 4001, code
    ws.close()


def every_line_has_time_level_area():
    srv.wait_for(lambda ln: True, "at all")
    for ln in srv.lines():
        assert LINE.match(ln), "not time level area: message: %r" % ln


def auth_refused_says_why_and_from_where():
    hello_refused("not.a.token")
    got = srv.wait_for(lambda ln: " auth: refused 127.0.0.1:" in ln, "auth refused")
    m = LINE.match(got[0])
    assert m and m.group(1) == "warn ", got[0]
    assert "not.a.token" not in got[0], "the token is in the log: %r" % got[0]


def expired_token_says_expired():
    hello_refused(w.token_for(os.path.join(srv.dir, "d"), "u1", ttl=-3600))
    srv.wait_for(lambda ln: " auth: refused " in ln and "expired" in ln, "auth refused: expired")


def close_1009_logged():
    ws = w.WS(srv.port)
    ws.hello(tok("u2"))
    ws.send(w.frame(2, b"\x80" * (65536 + 10)))
    code, _ = ws.expect_close()
    assert code == 1009, code
    ws.close()
    got = srv.wait_for(lambda ln: " net: closed 127.0.0.1:" in ln and " with 1009" in ln, "1009")
    assert LINE.match(got[0]).group(1) == "warn ", got[0]


def tok(user):
    return w.token_for(os.path.join(srv.dir, "d"), user)


def close_1008_logged():
    ws = w.WS(srv.port)
    ws.hello(tok("u3"))
    for _ in range(25):  # bad frames: 20 in 10 s are allowed, then 1008
        ws.send(w.frame(2, b"\xc1"))
    code, _ = ws.expect_close()
    assert code == 1008, code
    ws.close()
    srv.wait_for(lambda ln: " with 1008: too many bad frames" in ln, "1008")


def flood_is_cut_and_counted():
    # the refusals so far (a few) and 60 more, all within one 10 s window
    # of this call site: at most 20 lines, the rest held back
    def refusals():
        return [ln for ln in srv.lines() if " auth: refused " in ln]
    before = len(refusals())
    for _ in range(60):
        hello_refused("x.y.z")
    time.sleep(0.5)
    assert len(refusals()) == 20, "%d refusal lines within 10 s" % len(refusals())
    # the next window: one more refusal carries the count held back
    time.sleep(10.5)
    hello_refused("x.y.z")
    got = srv.wait_for(lambda ln: " auth: refused " in ln and "more like this not logged" in ln,
                       "with the count held back")
    held = int(re.search(r"\((\d+) more like this", got[-1]).group(1))
    assert held == before + 60 - 20, "held %d, expected %d" % (held, before + 60 - 20)


checks.run("auth refused: why and from where, not the token", auth_refused_says_why_and_from_where)
checks.run("auth refused: an expired token says expired", expired_token_says_expired)
checks.run("a 1009 close is logged as a warning", close_1009_logged)
checks.run("a 1008 close (bad frames) is logged", close_1008_logged)
checks.run("a flood is cut to 20 lines, the rest counted", flood_is_cut_and_counted)
checks.run("every line: time, level, area", every_line_has_time_level_area)
checks.run("exits 0 on SIGTERM", lambda: (lambda rc: None if rc == 0 else (_ for _ in ()).throw(AssertionError(rc)))(srv.stop()))


def level_error_is_quiet():
    s = Logged(extra=["--log-level", "error"], secret="short")
    try:
        global srv
        old, srv = srv, s
        hello_refused("not.a.token")
        time.sleep(0.5)
    finally:
        srv = old
        assert s.stop() == 0
    text = "\n".join(s.lines())
    assert "short" not in text, text
    assert " warn " not in text and " info " not in text, text


def short_secret_warns_without_the_secret():
    s = Logged(secret="hunter2")
    try:
        got = s.wait_for(lambda ln: " auth: " in ln and "7-byte secret" in ln, "short secret")
        assert LINE.match(got[0]).group(1) == "warn ", got[0]
        assert "hunter2" not in "\n".join(s.lines())
    finally:
        assert s.stop() == 0


def bad_level_stops():
    r = subprocess.run([EXE, "--log-level", "loud", "--listen", "127.0.0.1:0",
                        "--data", tempfile.mkdtemp(prefix="parley-logs-")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r
    assert "--log-level" in r.stderr, r.stderr


def corrupt_database_exits_3_naming_the_file():
    s = Logged()
    assert s.stop() == 0
    db = os.path.join(s.dir, "d", "db")
    manifest = [f for f in os.listdir(db) if f.startswith("MANIFEST-")][0]
    path = os.path.join(db, manifest)
    with open(path, "r+b") as f:
        b = bytearray(f.read())
        for i in range(20, len(b) - 8, 7):
            b[i] ^= 0x5A
        f.seek(0)
        f.write(b)
    r = subprocess.run([EXE, "--listen", "127.0.0.1:0", "--data", os.path.join(s.dir, "d")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert path in r.stderr and "Corruption" in r.stderr, r.stderr
    assert " error start: " in r.stderr and "restore a backup" in r.stderr, r.stderr


checks.run("--log-level error: no warnings, no info", level_error_is_quiet)
checks.run("a corrupt database: exit 3, the file named", corrupt_database_exits_3_naming_the_file)
checks.run("a short secret: a warning, not the secret", short_secret_warns_without_the_secret)
checks.run("--log-level loud: exit 2", bad_level_stops)
checks.exit()
