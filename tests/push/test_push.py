"""Push notifications (issue 14), black-box: parleyd with --push-url pointed
at tests/push/fake_gateway.py (in this process), clients over WebSocket.

Every check uses its own users and channels. A check that says "no push"
never sleeps: it waits for a positive marker (a later push that must come)
and then for the server's push queue to be empty (/metrics parley_push_pending
and parley_push_waiting both 0, i.e. every decided notification has been
answered by the gateway), and only then looks for the push that must not be
there.

usage: test_push.py PATH/TO/parleyd"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "wire"))

from fake_gateway import FakeGateway  # noqa: E402
from wsclient import WS, Checks, frame, stop_proc  # noqa: E402

EXE = sys.argv[1] if len(sys.argv) > 1 else "build/parleyd"
WAIT = 30.0  # generous: slow, loaded CI machines, ASan builds
HEX32 = re.compile(r"^[0-9a-f]{32}$")
FIELDS = ("id", "ws", "user", "ch", "ch_name", "ch_kind", "seq", "from",
          "from_name", "ts", "body", "mention", "count", "unread", "devices")
_uniq = [0]


def uniq(tag):
    _uniq[0] += 1
    return "%s%d-%s" % (tag, _uniq[0], os.urandom(3).hex())


def wait_until(fn, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("no %s within %.0f s" % (what, timeout))
        time.sleep(0.05)


# ---- the server ---------------------------------------------------------------

class Parleyd:
    """parleyd on a temporary data directory that survives restarts."""

    def __init__(self, args):
        self.args = list(args)
        self.dir = tempfile.mkdtemp(prefix="parley-push-")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [EXE, "--listen", "127.0.0.1:0", "--data", self.dir] + self.args,
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("parleyd did not start: %r (args %r)" % (line, self.args))
        self.port = int(m.group(1))
        out = self.proc.stdout
        threading.Thread(target=lambda: [None for _ in out], daemon=True).start()

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        return stop_proc(self.proc)

    def restart(self):
        rc = self.stop()
        assert rc == 0, "parleyd exited %r on SIGTERM" % rc
        self.start()

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def token(self, user, ws="acme", name=None, role=None):
        with open(os.path.join(self.dir, "jwt.secret"), "rb") as f:
            key = f.read().rstrip()
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
        claims = {"sub": user, "ws": ws, "exp": int(time.time()) + 3600}
        if name is not None:
            claims["name"] = name
        if role is not None:
            claims["role"] = role
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims).encode())
        sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
        return (head + b"." + body + b"." + sig).decode()

    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
        c.request("GET", "/metrics")
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        assert r.status == 200, "/metrics answered %d" % r.status
        out = {}
        for l in text.splitlines():
            if not l or l.startswith("#"):
                continue
            k, v = l.rsplit(" ", 1)
            try:
                out[k.replace(" ", "")] = float(v)
            except ValueError:
                pass
        return out

    def metric(self, name):
        m = self.metrics()
        assert name in m, "/metrics has no %s (push metrics: %r)" % (
            name, sorted(k for k in m if "push" in k))
        return m[name]

    def quiesce(self, timeout=WAIT):
        """Waits until no notification is waiting out its delay or pending
        (decided, not yet accepted by the gateway)."""
        def idle():
            m = self.metrics()
            for k in ("parley_push_pending", "parley_push_waiting"):
                assert k in m, "/metrics has no %s" % k
            return m["parley_push_pending"] == 0 and m["parley_push_waiting"] == 0
        wait_until(idle, "empty push queue (parley_push_pending and "
                   "parley_push_waiting both 0)", timeout)


# ---- clients -------------------------------------------------------------------

class Client(WS):
    """A WebSocket client whose sends are locked, so that an optional thread
    can send heartbeats (hb=True: the device stays active)."""

    def __init__(self, srv, user, ws="acme", name=None, hb=False, role=None):
        WS.__init__(self, srv.port)
        self.lock = threading.Lock()
        self.user = user
        self.stop_hb = threading.Event()
        self.helloed = self.hello(srv.token(user, ws, name, role))
        if hb:
            self.hb_thread = threading.Thread(target=self._hb, daemon=True)
            self.hb_thread.start()

    def _hb(self):
        while not self.stop_hb.wait(1.0):
            try:
                self.send(frame(2, msgpack.packb({"op": "hb"})))
            except OSError:
                return

    def send(self, data):
        with self.lock:
            WS.send(self, data)

    def ok(self, op, **args):
        r = self.request(op, **args)
        assert r.get("ok"), "%s: %s %r -> %r" % (self.user, op, args, r)
        return r

    def err(self, op, code, **args):
        r = self.request(op, **args)
        codes = code if isinstance(code, tuple) else (code,)
        assert not r.get("ok") and r.get("code") in codes, \
            "%s: %s %r: wanted %s, got %r" % (self.user, op, args, code, r)
        return r

    def say(self, ch, body, **args):
        r = self.ok("send", ch=ch, body=body, cmid=uniq("c"), **args)
        return r["seq"], r["ts"]

    def close(self):
        self.stop_hb.set()
        try:
            self.send(frame(8, b"\x03\xe8"))
        except OSError:
            pass
        WS.close(self)


def burst(c, ch, n, tag="burst"):
    """n sends in one go (answers read afterwards): [(seq, ts)]."""
    rids = []
    for i in range(n):
        c.rid += 1
        c.send(frame(2, msgpack.packb({"op": "send", "rid": c.rid, "ch": ch,
                                       "body": "%s %d" % (tag, i),
                                       "cmid": uniq("c")})))
        rids.append(c.rid)
    out = []
    for rid in rids:
        r = c.expect_res(rid)
        assert r.get("ok"), "send: %r" % r
        out.append((r["seq"], r["ts"]))
    return out


def register(c, pushkey, app="app.test", platform="ios", data=None):
    args = {"app": app, "pushkey": pushkey, "platform": platform}
    if data is not None:
        args["data"] = data
    c.ok("push.register", **args)


def away_user(srv, user, ch=None, level=None, ch_level=None, pushkeys=None,
              ws="acme", name=None, dnd=False):
    """A user who has a pusher (its own pushkey unless told), optionally a
    member of ch (a public channel) and levels set, then disconnects."""
    c = Client(srv, user, ws=ws, name=name)
    for pk in (pushkeys if pushkeys is not None else ["pk-" + user]):
        register(c, pk)
    if ch is not None:
        c.ok("ch.join", ch=ch)
    if level is not None:
        c.ok("notify.set", level=level)
    if ch_level is not None:
        c.ok("notify.set", level=ch_level, ch=ch)
    if dnd:
        c.ok("presence.set", status="dnd")
    c.close()
    return user


def wait_offline(watcher, users):
    """Until users.get says every user is offline (no device connected)."""
    def gone():
        r = watcher.ok("users.get", users=list(users))
        st = {u["id"]: u.get("status") for u in r["users"]}
        return all(st.get(u) == "offline" for u in users)
    wait_until(gone, "offline status for %r" % (list(users),))


def new_channel(c, kind="public"):
    return c.ok("ch.create", name=uniq("push-"), kind=kind)["ch"]["id"]


def of(notes, user=None, ch=None, seq=None):
    return [n for n in notes if (user is None or n.get("user") == user)
            and (ch is None or n.get("ch") == ch)
            and (seq is None or n.get("seq") == seq)]


def wait_push(gw, user, ch, seq, timeout=WAIT, pred=None):
    """The notifications for (user, ch, seq) once at least one came."""
    def f(notes):
        hits = of(notes, user, ch, seq)
        if pred is not None:
            hits = [n for n in hits if pred(n)]
        return hits
    return gw.wait(f, timeout, "push for %s in %s seq %s" % (user, ch, seq))


def none_for(gw, user, ch=None, why=""):
    hits = of(gw.notifications(), user, ch)
    assert not hits, "%s got a push it should not%s: %r" % (
        user, (" (" + why + ")") if why else "", hits)


# ---- the checks ----------------------------------------------------------------

def check_pushers(srv, gw):
    c = Client(srv, uniq("pu"))
    assert c.ok("push.list")["pushers"] == [], "a new user has pushers"
    register(c, "pk0", data={"k": "v", "n": 1})
    pl = c.ok("push.list")["pushers"]
    assert len(pl) == 1, pl
    p = pl[0]
    assert (p.get("app"), p.get("pushkey"), p.get("platform"), p.get("data")) == \
        ("app.test", "pk0", "ios", {"k": "v", "n": 1}), "push.list: %r" % p
    assert isinstance(p.get("ts"), int) and p["ts"] > 1600000000000, \
        "ts not unix ms: %r" % p
    for i in range(1, 10):
        register(c, "pk%d" % i)
    pl = c.ok("push.list")["pushers"]
    assert [p["pushkey"] for p in pl] == ["pk%d" % i for i in range(10)], \
        "10 pushers, oldest first: %r" % [p["pushkey"] for p in pl]
    assert "data" not in pl[1], "data on a pusher registered without: %r" % pl[1]
    register(c, "pk10")
    keys = [p["pushkey"] for p in c.ok("push.list")["pushers"]]
    assert keys == ["pk%d" % i for i in range(1, 11)], \
        "an 11th pusher must evict the oldest (pk0): %r" % keys
    register(c, "pk1", platform="android")
    pl = c.ok("push.list")["pushers"]
    keys = [p["pushkey"] for p in pl]
    assert keys == ["pk%d" % i for i in range(2, 11)] + ["pk1"], \
        "same (app, pushkey) must replace and become newest: %r" % keys
    assert pl[-1]["platform"] == "android", "replaced pusher: %r" % pl[-1]
    register(c, "pk3", app="other.app")
    pl = c.ok("push.list")["pushers"]
    assert len(pl) == 10 and pl[0]["pushkey"] == "pk3" and pl[0]["app"] == "app.test" \
        and (pl[-1]["app"], pl[-1]["pushkey"]) == ("other.app", "pk3"), \
        "same pushkey, other app is another pusher (evicting pk2): %r" % [
            (p["app"], p["pushkey"]) for p in pl]
    c.ok("push.unregister", app="app.test", pushkey="pk3")
    pl = c.ok("push.list")["pushers"]
    assert ("app.test", "pk3") not in [(p["app"], p["pushkey"]) for p in pl] and \
        ("other.app", "pk3") in [(p["app"], p["pushkey"]) for p in pl] and len(pl) == 9, \
        "unregister removes exactly that (app, pushkey): %r" % [
            (p["app"], p["pushkey"]) for p in pl]
    c.ok("push.unregister", app="app.test", pushkey="never-registered")
    assert len(c.ok("push.list")["pushers"]) == 9
    c.err("push.register", "TOO_LARGE", app="app.test", pushkey="big",
          platform="ios", data={"k": "x" * 1100})
    register(c, "small", data={"k": "x" * 500})
    c.err("push.register", "BAD_REQUEST", app="app.test", platform="ios")
    c.err("push.register", "BAD_REQUEST", app="", pushkey="x", platform="ios")
    c.err("push.register", ("BAD_REQUEST", "TOO_LARGE"), app="app.test", pushkey="p" * 513,
          platform="ios")
    c.close()


def check_notify_ops(srv, gw):
    a = Client(srv, uniq("na"))
    b = Client(srv, uniq("nb"))
    r = a.ok("notify.get")
    assert r.get("default") == "mentions" and r.get("channels") == {}, \
        "notify.get of a new user: %r" % r
    pub = new_channel(a)
    priv = new_channel(b, "private")
    a.ok("notify.set", level="all")
    a.ok("notify.set", level="none", ch=pub)
    r = a.ok("notify.get")
    assert r.get("default") == "all" and r.get("channels") == {pub: "none"}, \
        "after notify.set all and %s none: %r" % (pub, r)
    a.ok("notify.set", level="mentions", ch=pub)
    r = a.ok("notify.get")
    assert r.get("channels") == {pub: "mentions"}, "set again: %r" % r
    a.err("notify.set", "NOT_FOUND", level="all", ch=priv)
    a.err("notify.set", "NOT_FOUND", level="all", ch="no-such-channel")
    a.err("notify.set", "BAD_REQUEST", level="loud")
    a.err("notify.set", "BAD_REQUEST", level="loud", ch=pub)
    a.err("notify.set", "BAD_REQUEST")
    r = a.ok("notify.get")
    assert r.get("default") == "all" and r.get("channels") == {pub: "mentions"}, \
        "refused notify.set changed something: %r" % r
    a.close()
    b.close()


def check_fields(srv, gw):
    """One push per (message, user), every field as the contract says."""
    a = Client(srv, uniq("fa"), name="Alice Field")
    register(a, "pk-sender")  # the sender never gets its own message
    ch = new_channel(a)
    bob = uniq("fb")
    c = Client(srv, bob)
    register(c, "pk-b1", data={"room": 7})
    register(c, "pk-b2", app="app.other", platform="android")
    c.ok("ch.join", ch=ch)
    c.close()
    wait_offline(a, [bob])
    seq, ts = a.say(ch, "hello @bob", mentions=[bob])
    hits = wait_push(gw, bob, ch, seq)
    srv.quiesce()
    hits = of(gw.notifications(), bob, ch)
    assert len(hits) == 1, "wanted exactly one push for %s, got %r" % (bob, hits)
    n = hits[0]
    missing = [f for f in FIELDS if f not in n]
    assert not missing, "fields missing: %r in %r" % (missing, n)
    assert HEX32.match(n["id"]), "id not 32 lowercase hex: %r" % n["id"]
    want = {"ws": "acme", "user": bob, "ch": ch, "ch_kind": "public", "seq": seq,
            "from": a.user, "from_name": "Alice Field", "ts": ts,
            "body": "hello @bob", "mention": True, "count": 1, "unread": 1}
    bad = {k: (n.get(k), v) for k, v in want.items() if n.get(k) != v}
    assert not bad, "fields (got, wanted): %r" % bad
    assert n["ch_name"] and isinstance(n["ch_name"], str), "ch_name: %r" % n
    devs = sorted(n["devices"], key=lambda d: d.get("pushkey", ""))
    want_devs = [{"app": "app.test", "pushkey": "pk-b1", "platform": "ios",
                  "data": {"room": 7}},
                 {"app": "app.other", "pushkey": "pk-b2", "platform": "android",
                  "data": {}}]
    assert devs == want_devs, "devices: %r" % n["devices"]
    none_for(gw, a.user, why="the sender")
    # a thread reply pushes too; the id is per message
    seq2, _ = a.say(ch, "in thread", thread=seq, mentions=[bob])
    n2 = wait_push(gw, bob, ch, seq2)[0]
    assert HEX32.match(n2["id"]) and n2["id"] != n["id"], \
        "ids of two messages: %r %r" % (n["id"], n2["id"])
    a.close()


def rest_send(srv, user, ch, body):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=WAIT)
    c.request("POST", "/api/v1/channels/%s/messages" % ch,
              body=json.dumps({"body": body, "cmid": uniq("r")}),
              headers={"Authorization": "Bearer " + srv.token(user),
                       "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    assert r.status == 201, "REST send: %d %r" % (r.status, data)
    return json.loads(data)["seq"]


def check_sender(srv, gw):
    """The sender, not there itself (it posts over REST), gets no push of
    its own message."""
    a = Client(srv, uniq("sa"))
    ch = new_channel(a)
    register(a, "pk-" + a.user)
    a.ok("notify.set", level="all")
    a.close()
    m = away_user(srv, uniq("sm"), ch=ch, level="all")
    w = Client(srv, uniq("sw"))
    wait_offline(w, [a.user, m])
    seq = rest_send(srv, a.user, ch, "from a script")
    wait_push(gw, m, ch, seq)
    srv.quiesce()
    none_for(gw, a.user, why="the sender")
    w.close()


def check_gone_in_delay(srv, gw):
    """A message deleted, or a channel left, while the delay runs: no push."""
    a = Client(srv, uniq("ea"))
    ch = new_channel(a)
    x = away_user(srv, uniq("ex"), ch=ch, level="all")
    l = away_user(srv, uniq("el"), ch=ch, level="all")
    wait_offline(a, [x, l])
    s1, _ = a.say(ch, "oops")
    a.ok("delete", ch=ch, target=s1)
    s2, _ = a.say(ch, "for the leaver")
    c = Client(srv, l)
    c.ok("ch.leave", ch=ch)
    c.close()
    n = wait_push(gw, x, ch, s2, timeout=WAIT + 10)[0]
    srv.quiesce()
    got = of(gw.notifications(), x, ch)
    assert [g["seq"] for g in got] == [s2] and n["count"] == 1, \
        "message %d deleted within the delay was pushed: %r" % (s1, got)
    none_for(gw, l, why="left the channel within the delay")
    a.close()


def check_active_device(srv, gw):
    a = Client(srv, uniq("aa"))
    ch = new_channel(a)
    act = Client(srv, uniq("ab"), hb=True)
    register(act, "pk-act")
    act.ok("ch.join", ch=ch)
    act.ok("notify.set", level="all")
    away = away_user(srv, uniq("ac"), ch=ch, level="all")
    wait_offline(a, [away])
    seq, _ = a.say(ch, "everyone")
    wait_push(gw, away, ch, seq)
    srv.quiesce()
    none_for(gw, act.user, why="it has an active device (connected, sending hb)")
    act.close()
    a.close()


def check_levels(srv, gw):
    a = Client(srv, uniq("la"))
    ch = new_channel(a)
    u = {k: uniq("l" + k) for k in ("def", "all", "none", "chall", "chnone", "chmen")}
    away_user(srv, u["def"], ch=ch)
    away_user(srv, u["all"], ch=ch, level="all")
    away_user(srv, u["none"], ch=ch, level="none")
    away_user(srv, u["chall"], ch=ch, level="none", ch_level="all")
    away_user(srv, u["chnone"], ch=ch, level="all", ch_level="none")
    away_user(srv, u["chmen"], ch=ch, level="all", ch_level="mentions")
    wait_offline(a, u.values())
    s1, _ = a.say(ch, "plain")
    n_all = wait_push(gw, u["all"], ch, s1)[0]
    n_chall = wait_push(gw, u["chall"], ch, s1)[0]
    assert n_all["mention"] is False and n_chall["mention"] is False, \
        "mention on a plain message: %r %r" % (n_all, n_chall)
    srv.quiesce()
    for k in ("def", "none", "chnone", "chmen"):
        none_for(gw, u[k], ch, "level for a plain message")
    s2, _ = a.say(ch, "look", mentions=[u["def"], u["none"], u["chnone"], u["chmen"]])
    for k in ("def", "chmen"):
        n = wait_push(gw, u[k], ch, s2)[0]
        assert n["mention"] is True and n["count"] == 1, \
            "%s mentioned: %r" % (k, n)
    wait_push(gw, u["all"], ch, s2)
    srv.quiesce()
    for k in ("none", "chnone"):
        none_for(gw, u[k], ch, "level none, even mentioned")
    for k in ("def", "chmen"):
        got = of(gw.notifications(), u[k], ch)
        assert [n["seq"] for n in got] == [s2], \
            "%s: wanted only the mention pushed: %r" % (k, got)
    a.close()


def check_dm(srv, gw):
    snd = uniq("ds")  # no name claim: from_name is the id
    a = Client(srv, snd)
    b = away_user(srv, uniq("db"))  # default for channels: mentions
    c = away_user(srv, uniq("dc"), level="none")  # channels none, DMs still all
    d = away_user(srv, uniq("dd"))
    wait_offline(a, [b, c, d])
    dm_b = a.ok("dm.open", users=[b])["ch"]
    dm_c = a.ok("dm.open", users=[c])["ch"]
    dm_d = a.ok("dm.open", users=[d])["ch"]
    dm_b = dm_b["id"] if isinstance(dm_b, dict) else dm_b
    dm_c = dm_c["id"] if isinstance(dm_c, dict) else dm_c
    dm_d = dm_d["id"] if isinstance(dm_d, dict) else dm_d
    # d turns its DM off
    cd = Client(srv, d)
    cd.ok("notify.set", level="none", ch=dm_d)
    cd.close()
    wait_offline(a, [d])
    sd, _ = a.say(dm_d, "psst d")
    sb, ts = a.say(dm_b, "psst")
    n = wait_push(gw, b, dm_b, sb)[0]
    assert (n["ch_kind"], n["ch_name"], n["from"], n["from_name"], n["mention"],
            n["body"], n["ts"]) == ("dm", "", snd, snd, False, "psst", ts), \
        "DM push: %r" % n
    sc, _ = a.say(dm_c, "psst c")
    wait_push(gw, c, dm_c, sc)
    srv.quiesce()
    none_for(gw, d, why="its DM set to none")
    a.close()


def check_at_channel(srv, gw):
    a = Client(srv, uniq("ca"))
    register(a, "pk-" + a.user)
    ch = new_channel(a)
    ms = [away_user(srv, uniq("cm")) for _ in range(3)]
    off = away_user(srv, uniq("cn"), ch=None, level="none")
    for m in ms:
        a.ok("ch.invite", ch=ch, users=[m])
    a.ok("ch.invite", ch=ch, users=[off])
    wait_offline(a, ms + [off])
    seq, _ = a.say(ch, "all hands", mentions=["@channel"])
    for m in ms:
        n = wait_push(gw, m, ch, seq)[0]
        assert n["count"] == 1, n
    srv.quiesce()
    none_for(gw, off, why="level none")
    none_for(gw, a.user, why="the sender")
    # "@channel" is not counted in the mentions unread counter
    c = Client(srv, ms[0])
    row = [x for x in c.helloed["channels"] if x["id"] == ch]
    assert row and row[0]["unread"] == 1 and row[0]["mentions"] == 0, \
        "hello channels after an @channel message: %r" % row
    c.close()
    a.close()


def check_at_here(srv, gw):
    """@here: members online at the event (connected), gone by the time the
    delay has passed, get it; one who was offline before does not."""
    a = Client(srv, uniq("ha"))
    ch = new_channel(a)
    old = away_user(srv, uniq("ho"), ch=ch)
    wait_offline(a, [old])
    here = Client(srv, uniq("hh"), hb=True)
    register(here, "pk-" + here.user)
    here.ok("ch.join", ch=ch)
    seq, _ = a.say(ch, "anyone?", mentions=["@here"])
    here.close()
    n = wait_push(gw, here.user, ch, seq, timeout=WAIT + 10)[0]
    assert n["count"] == 1, n
    srv.quiesce()
    none_for(gw, old, why="@here and offline before the message")
    a.close()


def check_read_in_delay(srv, gw):
    a = Client(srv, uniq("ra"))
    ch = new_channel(a)
    r = away_user(srv, uniq("rr"), ch=ch, level="all")
    wait_offline(a, [r])
    s1, _ = a.say(ch, "will be read")
    t0 = time.monotonic()
    c = Client(srv, r)
    c.ok("read", ch=ch, seq=s1)
    c.close()
    took = time.monotonic() - t0
    wait_offline(a, [r])
    s2, _ = a.say(ch, "will not")
    n = wait_push(gw, r, ch, s2, timeout=WAIT + 10)[0]
    srv.quiesce()
    got = of(gw.notifications(), r, ch)
    assert [x["seq"] for x in got] == [s2] and n["count"] == 1, \
        "read %d within the delay (%.1f s after it): wanted no push for it, got %r" % (
            s1, took, got)
    a.close()


def check_dnd(srv, gw):
    a = Client(srv, uniq("na"))
    ch = new_channel(a)
    d = away_user(srv, uniq("nd"), ch=ch, level="all", dnd=True)
    p = away_user(srv, uniq("np"), ch=ch, level="all")
    wait_offline(a, [d, p])
    s1, _ = a.say(ch, "one")
    wait_push(gw, p, ch, s1)
    srv.quiesce()
    none_for(gw, d, why="dnd")
    a.close()
    srv.restart()
    a = Client(srv, a.user)
    s2, _ = a.say(ch, "two")
    wait_push(gw, p, ch, s2)
    srv.quiesce()
    none_for(gw, d, why="dnd, chosen before a restart")
    c = Client(srv, d)
    c.ok("presence.set", status="online")
    c.close()
    wait_offline(a, [d])
    s3, _ = a.say(ch, "three")
    wait_push(gw, d, ch, s3)
    a.close()


def check_coalesce(srv, gw):
    """Five messages in one burst: pushed as one or a few notifications whose
    counts add up to 5, the newest message among them. (That they fall due
    together is not certain with a short delay: the strict check, one push
    with count 5, is in "kill -9 while events wait out the delay".)"""
    a = Client(srv, uniq("ka"))
    ch = new_channel(a)
    u = away_user(srv, uniq("ku"), ch=ch, level="all")
    wait_offline(a, [u])
    seqs = [sq for sq, _ in burst(a, ch, 5)]
    last = max(seqs)
    wait_push(gw, u, ch, last)
    srv.quiesce()
    got = of(gw.notifications(), u, ch)
    assert sum(n["count"] for n in got) == 5 and len(got) <= 5 and \
        all(n["seq"] in seqs for n in got), \
        "5 messages: wanted pushes whose counts add up to 5, got %r" % (
            [(n["seq"], n["count"]) for n in got],)
    n = [n for n in got if n["seq"] == last][0]
    assert n["unread"] == 5, "unread: %r" % n
    print("      (burst of 5: %d push(es), counts %r)" % (
        len(got), [x["count"] for x in got]), flush=True)
    a.close()


def check_many_per_post(srv, gw):
    a = Client(srv, uniq("ma"))
    ch = new_channel(a)
    users = [away_user(srv, uniq("mu")) for _ in range(150)]
    a.ok("ch.invite", ch=ch, users=users)
    wait_offline(a, users)
    seq, _ = a.say(ch, "big news", mentions=["@channel"])
    gw.wait(lambda ns: len({n["user"] for n in of(ns, ch=ch, seq=seq)}) == 150,
            WAIT + 30, "push to all 150 members")
    srv.quiesce()
    got = of(gw.notifications(), ch=ch, seq=seq)
    assert sorted(n["user"] for n in got) == sorted(users), \
        "one push per member: %d pushes for %d users" % (len(got), len({n["user"] for n in got}))
    per_post = {}
    for n in got:
        per_post[n["post"]] = per_post.get(n["post"], 0) + 1
    sizes = [p["n"] for p in gw.posts() if p["n"]]
    assert max(sizes) <= 100, "a POST with %d notifications (max 100)" % max(sizes)
    assert max(per_post.values()) > 1, \
        "150 pushes went one per POST (%d POSTs): wanted several users per POST" % len(per_post)
    a.close()


def check_id_only(srv, gw):
    a = Client(srv, uniq("ia"))
    ch = new_channel(a)
    u = away_user(srv, uniq("iu"), ch=ch, level="all")
    wait_offline(a, [u])
    seq, _ = a.say(ch, "secret text")
    n = wait_push(gw, u, ch, seq)[0]
    assert "body" not in n, "--push-content id-only: body sent: %r" % n
    missing = [f for f in FIELDS if f != "body" and f not in n]
    assert not missing, "fields missing: %r in %r" % (missing, n)
    raw = b"".join(p.get("body", b"") for p in gw.posts())
    assert b"secret text" not in raw, "the message text went to the gateway"
    a.close()


def check_signature(srv, gw):
    posts = gw.posts()
    assert posts, "no POST received yet"
    bad = [p for p in posts if p["sig_ok"] is not True]
    assert not bad, "POSTs without a valid X-Parley-Signature: %r" % [
        (p["headers"].get("X-Parley-Signature"), p["bytes"]) for p in bad[:3]]
    # the gateway itself tells a wrong signature from a right one
    body = b'{"notifications":[]}'
    for sig, want in (("sha256=" + hmac.new(gw.state.secret, body, hashlib.sha256)
                       .hexdigest(), True), ("sha256=" + "0" * 64, False)):
        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=WAIT)
        c.request("POST", "/selftest", body=body,
                  headers={"X-Parley-Signature": sig})
        c.getresponse().read()
        c.close()
        assert gw.posts()[-1]["sig_ok"] is want, "gateway self-test"
    for p in posts:
        assert p["headers"].get("Content-Type", "").startswith("application/json"), \
            "Content-Type: %r" % p["headers"].get("Content-Type")


def check_fail_then_ok(srv, gw):
    a = Client(srv, uniq("fa"))
    ch = new_channel(a)
    u = away_user(srv, uniq("fu"), ch=ch, level="all")
    wait_offline(a, [u])
    srv.quiesce()
    m0 = srv.metrics()
    gw.set_mode("fail")
    try:
        seq, _ = a.say(ch, "through the storm")
        first = wait_push(gw, u, ch, seq, pred=lambda n: n["mode"] == "fail")[0]
        wait_until(lambda: srv.metric("parley_push_pending") >= 1,
                   "parley_push_pending >= 1 while the gateway fails")
        # a second failed attempt: it is retried
        wait_push(gw, u, ch, seq, pred=lambda n: n["mode"] == "fail" and n["post"] != first["post"])
        wait_until(lambda: srv.metric("parley_push_retried_total")
                   > m0.get("parley_push_retried_total", 0),
                   "parley_push_retried_total to grow")
    finally:
        gw.set_mode("ok")
    n = wait_push(gw, u, ch, seq, pred=lambda n: n["mode"] == "ok")[0]
    assert n["id"] == first["id"], "retry changed the id: %s -> %s" % (first["id"], n["id"])
    got = of(gw.notifications(), u, ch, seq)
    assert len({x["id"] for x in got}) == 1, "ids: %r" % [x["id"] for x in got]
    srv.quiesce()
    m1 = srv.metrics()
    assert m1["parley_push_sent_total"] >= m0.get("parley_push_sent_total", 0) + 1, \
        "parley_push_sent_total did not move: %r -> %r" % (
            m0.get("parley_push_sent_total"), m1["parley_push_sent_total"])
    k = 'parley_push_posts_total{result="error"}'
    assert m1.get(k, 0) >= m0.get(k, 0) + 2, "%s: %r -> %r" % (k, m0.get(k), m1.get(k))
    k = 'parley_push_posts_total{result="ok"}'
    assert m1.get(k, 0) >= m0.get(k, 0) + 1, "%s: %r -> %r" % (k, m0.get(k), m1.get(k))
    assert m1["parley_push_pending"] == 0
    a.close()


def check_hang(srv, gw):
    a = Client(srv, uniq("ga"))
    ch = new_channel(a)
    u = away_user(srv, uniq("gu"), ch=ch, level="all")
    wait_offline(a, [u])
    srv.quiesce()
    k = 'parley_push_posts_total{result="timeout"}'
    t0 = srv.metrics().get(k, 0)
    gw.set_mode("hang")
    try:
        seq, _ = a.say(ch, "anyone there")
        first = wait_push(gw, u, ch, seq)[0]
        # not answered within --push-timeout-ms 1000: sent again
        wait_push(gw, u, ch, seq, pred=lambda n: n["post"] != first["post"])
    finally:
        gw.set_mode("ok")  # the POST hanging now is answered 200 at once
    srv.quiesce()
    got = of(gw.notifications(), u, ch, seq)
    assert len({n["id"] for n in got}) == 1, "retry changed the id: %r" % [
        n["id"] for n in got]
    t1 = srv.metrics().get(k, 0)
    assert t1 > t0, "%s did not move: %r -> %r" % (k, t0, t1)
    a.close()


def check_reject(srv, gw):
    a = Client(srv, uniq("ja"))
    ch = new_channel(a)
    u = away_user(srv, uniq("ju"), ch=ch, level="all", pushkeys=["pk-dead", "pk-live"])
    wait_offline(a, [u])
    srv.quiesce()
    r0 = srv.metrics().get("parley_push_rejected_total", 0)
    gw.set_mode("reject:pk-dead")
    try:
        seq, _ = a.say(ch, "bye dead phone")
        n = wait_push(gw, u, ch, seq)[0]
        assert {d["pushkey"] for d in n["devices"]} == {"pk-dead", "pk-live"}, n
        srv.quiesce()
    finally:
        gw.set_mode("ok")
    m = srv.metrics()
    assert m.get("parley_push_rejected_total", 0) >= r0 + 1, \
        "parley_push_rejected_total: %r -> %r" % (r0, m.get("parley_push_rejected_total"))
    c = Client(srv, u)
    keys = [p["pushkey"] for p in c.ok("push.list")["pushers"]]
    c.close()
    assert keys == ["pk-live"], "after the gateway rejected pk-dead: push.list %r" % keys
    wait_offline(a, [u])
    seq2, _ = a.say(ch, "still there")
    n = wait_push(gw, u, ch, seq2)[0]
    assert [d["pushkey"] for d in n["devices"]] == ["pk-live"], n
    a.close()


def check_give_up(srv, gw):
    """--push-give-up-ms 3000, the gateway failing: dropped and counted."""
    a = Client(srv, uniq("xa"))
    ch = new_channel(a)
    u = away_user(srv, uniq("xu"), ch=ch, level="all")
    wait_offline(a, [u])
    d0 = srv.metrics().get("parley_push_dropped_total", 0)
    gw.set_mode("fail")
    seq, _ = a.say(ch, "into the void")
    first = wait_push(gw, u, ch, seq)[0]
    wait_until(lambda: srv.metric("parley_push_dropped_total") >= d0 + 1,
               "parley_push_dropped_total to count the dropped push")
    srv.quiesce()
    gw.set_mode("ok")
    seq2, _ = a.say(ch, "marker")
    wait_push(gw, u, ch, seq2)
    srv.quiesce()
    late = [n for n in gw.notifications() if n["id"] == first["id"] and n["mode"] == "ok"]
    assert not late, "a dropped push was still sent: %r" % late
    a.close()


def check_kill9_failing(srv, gw):
    a = Client(srv, uniq("ya"))
    ch = new_channel(a)
    users = [away_user(srv, uniq("yu"), ch=ch, level="all") for _ in range(3)]
    wait_offline(a, users)
    gw.set_mode("fail")
    try:
        seq, _ = a.say(ch, "survive this")
        firsts = {u: wait_push(gw, u, ch, seq)[0]["id"] for u in users}
        wait_until(lambda: srv.metric("parley_push_pending") >= 3,
                   "parley_push_pending >= 3")
        a.close()
        srv.kill9()
        srv.start()
    finally:
        gw.set_mode("ok")
    for u in users:
        n = wait_push(gw, u, ch, seq, pred=lambda n: n["mode"] == "ok")[0]
        assert n["id"] == firsts[u], "id changed across the restart: %s -> %s" % (
            firsts[u], n["id"])
    srv.quiesce()


def check_kill9_in_delay(srv, gw):
    """Events still in their delay (--push-delay-ms 5000) when parleyd is
    killed are pushed after the restart; restarted once they are overdue,
    they fall due together: one push per user with count 5, the newest."""
    a = Client(srv, uniq("za"))
    ch = new_channel(a)
    users = [away_user(srv, uniq("zu"), ch=ch, level="all") for _ in range(2)]
    wait_offline(a, users)
    srv.quiesce()
    sent = burst(a, ch, 5, "before the crash")
    # the notifier takes events over a few ms after they are durable
    try:
        wait_until(lambda: srv.metric("parley_push_waiting") >= 5,
                   "parley_push_waiting >= 5", timeout=3)
    finally:
        early = of(gw.notifications(), ch=ch)
        a.close()
        srv.kill9()
    assert not early, "inconclusive: pushed before the kill: %r" % early
    due = max(ts for _, ts in sent) + 5000 + 200
    while time.time() * 1000 < due:  # restart once all are overdue
        time.sleep(0.1)
    srv.start()
    last = max(sq for sq, _ in sent)
    for u in users:
        wait_push(gw, u, ch, last, timeout=WAIT + 10)
    srv.quiesce()
    for u in users:
        got = of(gw.notifications(), u, ch)
        assert [(n["seq"], n["count"]) for n in got] == [(last, 5)], \
            "after the restart, wanted one push (seq %d, count 5) for %s: %r" % (
                last, u, [(n["seq"], n["count"]) for n in got])
        assert HEX32.match(got[0]["id"]), got[0]


def check_workspaces(srv, gw):
    a = Client(srv, uniq("wa"))
    ch = new_channel(a)
    same = uniq("wx")  # a user id that exists in both workspaces
    away_user(srv, same, ch=ch, level="all", pushkeys=["pk-acme-" + same])
    other = Client(srv, same, ws="beta")
    register(other, "pk-beta-" + same)
    other.ok("notify.set", level="all")
    # the same id in another workspace is another user: acme's channel,
    # where acme's user of that id is a member, does not exist for it
    other.err("notify.set", "NOT_FOUND", level="none", ch=ch)
    bch = new_channel(other)
    other.close()
    beta_only = uniq("wb")
    c = Client(srv, beta_only, ws="beta")
    register(c, "pk-beta-" + beta_only)
    c.ok("notify.set", level="all")
    c.close()
    wait_offline(a, [same])
    seq, _ = a.say(ch, "acme only", mentions=[beta_only, "@channel"])
    n = wait_push(gw, same, ch, seq)[0]
    assert n["ws"] == "acme" and [d["pushkey"] for d in n["devices"]] == \
        ["pk-acme-" + same], "acme push carries beta's pushers: %r" % n
    # a positive marker in beta: its own messages push there
    b2 = Client(srv, uniq("wc"), ws="beta")
    b2.ok("ch.join", ch=bch)
    wait_offline(b2, [same])
    bseq, _ = b2.say(bch, "beta msg")
    nb = wait_push(gw, same, bch, bseq)[0]
    assert nb["ws"] == "beta" and [d["pushkey"] for d in nb["devices"]] == \
        ["pk-beta-" + same], "beta push: %r" % nb
    srv.quiesce()
    def leak(n):
        pks = [d.get("pushkey", "") for d in n.get("devices", [])]
        if n.get("ws") == "acme":
            return n.get("user") == beta_only or any(p.startswith("pk-beta-") for p in pks)
        return n.get("ch") == ch or any(p.startswith("pk-acme-") for p in pks)
    leaks = [n for n in gw.notifications() if leak(n)]
    assert not leaks, "pushes crossed workspaces: %r" % leaks
    b2.close()
    a.close()


def check_everyone_big(srv, gw):
    """Past 1,000 members "@channel" and "@here" are for owners and admins:
    a member gets FORBIDDEN (and nothing is sent or pushed), an owner and a
    workspace admin may; a mention by id stays open to everyone."""
    owner = Client(srv, uniq("bo"))
    ch = new_channel(owner)
    member = Client(srv, uniq("bm"))
    member.ok("ch.join", ch=ch)
    admin = Client(srv, uniq("ba"), role="admin")
    admin.ok("ch.join", ch=ch)
    reader = uniq("br")
    away_user(srv, reader, ch=ch, level="mentions", pushkeys=["pk-" + reader])
    # 4 members now; 1,000 more make 1,004 (> 1,000)
    others = [uniq("bx") for _ in range(1000)]
    owner.ok("ch.invite", ch=ch, users=others)
    wait_offline(owner, [reader])
    for word in ("@channel", "@here"):
        r = member.err("send", "FORBIDDEN", ch=ch, body="everyone!",
                       cmid=uniq("c"), mentions=[word])
        assert "1,000" in r.get("msg", ""), r
    hist = owner.ok("history", ch=ch)["msgs"]
    assert not [m for m in hist if m["body"] == "everyone!"], hist
    member.say(ch, "by id", mentions=[reader])
    seq, _ = owner.say(ch, "owner to all", mentions=["@channel"])
    n = wait_push(gw, reader, ch, seq)[0]
    assert n["mention"] is True, n
    seq2, _ = admin.say(ch, "admin to all", mentions=["@channel"])
    wait_push(gw, reader, ch, seq2)
    for c in (owner, member, admin):
        c.close()


def main():
    checks = Checks()
    tmp = tempfile.mkdtemp(prefix="parley-push-test-")
    secret_file = os.path.join(tmp, "push.secret")
    with open(secret_file, "w") as f:
        f.write("gateway-shared-secret\n")
    servers, gws = [], []

    def setup(extra, mode="ok", secret=None):
        gw = FakeGateway(mode=mode, secret=secret).start()
        gws.append(gw)
        srv = Parleyd(["--push-url", gw.url("/push")] + extra)
        servers.append(srv)
        return srv, gw

    try:
        # main: short delay, signed
        s1, g1 = setup(["--push-delay-ms", "300", "--push-secret-file", secret_file],
                       secret=b"gateway-shared-secret")
        for name, fn in (("pushers: register/list/unregister", check_pushers),
                         ("notify.set/get", check_notify_ops),
                         ("one push, every field", check_fields),
                         ("the sender gets none", check_sender),
                         ("no push to an active device", check_active_device),
                         ("levels all/mentions/none", check_levels),
                         ("DMs default to all", check_dm),
                         ("@channel", check_at_channel),
                         ("a burst of messages: counts add up", check_coalesce),
                         ("many users per POST", check_many_per_post),
                         ("gateway rejects a pushkey", check_reject),
                         ("gateway fails, then ok: retried", check_fail_then_ok),
                         ("dnd, also after a restart", check_dnd),
                         ("kill -9 with pushes pending", check_kill9_failing),
                         ("other workspaces get nothing", check_workspaces),
                         ("@channel past 1,000 members: owners and admins",
                          check_everyone_big),
                         ("signature", check_signature)):
            checks.run(name, fn, s1, g1)
        # id-only, and a gateway that hangs
        s2, g2 = setup(["--push-delay-ms", "300", "--push-content", "id-only",
                        "--push-timeout-ms", "1000"])
        checks.run("--push-content id-only", check_id_only, s2, g2)
        checks.run("gateway hangs: timed out and retried", check_hang, s2, g2)
        # give up
        s3, g3 = setup(["--push-delay-ms", "300", "--push-give-up-ms", "3000"])
        checks.run("give up after --push-give-up-ms", check_give_up, s3, g3)
        # a long delay: reading, @here, crash while waiting
        s4, g4 = setup(["--push-delay-ms", "5000"])
        checks.run("read within the delay: no push", check_read_in_delay, s4, g4)
        checks.run("@here", check_at_here, s4, g4)
        checks.run("deleted or left within the delay: no push",
                   check_gone_in_delay, s4, g4)
        checks.run("kill -9 while events wait out the delay; one push, count 5",
                   check_kill9_in_delay, s4, g4)
    finally:
        for s in servers:
            s.cleanup()
        for g in gws:
            g.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    checks.exit()


if __name__ == "__main__":
    main()
