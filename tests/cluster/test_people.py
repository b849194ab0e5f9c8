#!/usr/bin/python3
"""People across the hosts of a cluster (issue 18): what one user sees of
another who is connected to a different host.

- presence: alice, on h1, watches bob; bob connects to h3 (online), sets
  dnd there (dnd), leaves (offline, after the grace), comes back on h2
  (dnd: the status he chose is the cluster's), and his host is killed
  with kill -9 (offline once its word expires);
- typing: bob types on h3 in a channel alice follows on h1;
- the directory: a name given in a hello on one host is found by
  users.search and users.get on another.

Usage: test_people.py PARLEYD NATS_CLUSTER_SH
"""
import os
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "wire"))
import test_hosts as th  # noqa: E402  (Host, nats, keyfile, check)
import wsclient as W  # noqa: E402


def token(work, user, name=None):
    """A token signed with the cluster's secret (any host's: the same)."""
    import base64, hashlib, hmac, json  # noqa: E401
    with open(os.path.join(work, "jwt.secret"), "rb") as f:
        key = f.read().rstrip()
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")  # noqa: E731
    claims = {"sub": user, "ws": "acme", "exp": int(time.time()) + 3600}
    if name:
        claims["name"] = name
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def req(ws, op, **args):
    """A request, sent again while it is answered UNAVAILABLE (no owner
    yet, or one just taking over): what a client does with retry_ms."""
    end = time.monotonic() + 30
    while True:
        r = ws.request(op, **args)
        if r.get("code") != "UNAVAILABLE" or time.monotonic() > end:
            return r
        time.sleep(r.get("retry_ms", 500) / 1000)


def wait_frame(ws, pred, deadline_s):
    """The first frame pred accepts within deadline_s, else None."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            m = ws.read_msg(min(1.0, max(0.05, end - time.monotonic())))
        except (TimeoutError, OSError):
            continue
        if pred(m):
            return m
    return None


def presence_is(user, status):
    return lambda m: (m.get("t") == "presence" and m.get("user") == user
                      and m.get("status") == status)


def main():
    work = tempfile.mkdtemp(prefix="parley-people-")
    base = 21000 + (os.getpid() % 300) * 30
    hosts = []
    try:
        urls = th.nats("start", work, base)
        th.keyfile(os.path.join(work, "jwt.secret"))
        th.keyfile(os.path.join(work, "dm.key"))
        hosts = [th.Host(work, "h%d" % i, urls) for i in (1, 2, 3)]
        for h in hosts:
            th.wait_for(h.hosts, 3, 30)
        # every partition has its owner before the first write
        th.wait_for(lambda: sum(th.metric(h.port, "parley_cluster_"
                                          "partitions_owned") or 0
                                for h in hosts), 1, 30)

        # ---- presence
        alice = W.WS(hosts[0].port)
        alice.hello(token(work, "alice"))
        r = alice.request("presence.watch", users=["bob"])
        th.check(r.get("ok") and r["presence"]["bob"]["status"] == "offline",
                 "alice watches bob: offline before he comes")
        bob = W.WS(hosts[2].port)
        bob.hello(token(work, "bob", "Bob Builder"))
        th.check(wait_frame(alice, presence_is("bob", "online"), 20),
                 "bob connects to h3: alice, on h1, sees him online")
        r = req(bob, "presence.set", status="dnd")
        th.check(r.get("ok"), "bob sets dnd on h3")
        th.check(wait_frame(alice, presence_is("bob", "dnd"), 20),
                 "alice sees dnd")
        bob.close()
        th.check(wait_frame(alice, presence_is("bob", "offline"), 20),
                 "bob leaves h3: alice sees him offline")
        bob = W.WS(hosts[1].port)
        bob.hello(token(work, "bob", "Bob Builder"))
        th.check(wait_frame(alice, presence_is("bob", "dnd"), 20),
                 "bob back on h2: dnd, the status he chose on h3")

        # ---- the directory, written on h2 (and h3), read on h1
        r = alice.request("users.search", q="build")
        th.check(r.get("ok") and any(u.get("id") == "bob" and
                                     u.get("name") == "Bob Builder"
                                     for u in r.get("users", [])),
                 "users.search on h1 finds the name bob's hello gave "
                 "elsewhere (%r)" % r.get("users"))
        r = alice.request("users.get", users=["bob"])
        th.check(r.get("ok") and r["users"][0].get("name") == "Bob Builder"
                 and r["users"][0].get("status") == "dnd",
                 "users.get on h1: his name and his status (%r)"
                 % r.get("users"))

        # ---- typing, from h2 to h1
        r = req(alice, "ch.create", name="people", kind="public")
        ch = r["ch"]["id"]
        th.check(req(bob, "ch.join", ch=ch).get("ok"), "bob joins")
        bob.request("typing", ch=ch)
        th.check(wait_frame(alice, lambda m: m.get("t") == "typing" and
                            m.get("user") == "bob", 20),
                 "bob types on h2: alice, on h1, is told")

        # ---- bob's host dies
        hosts[1].stop(signal.SIGKILL)
        t0 = time.monotonic()
        m = wait_frame(alice, presence_is("bob", "offline"), 40)
        th.check(m, "kill -9 of bob's host: alice sees him offline "
                 "(%.1f s)" % (time.monotonic() - t0))
        alice.close()
    finally:
        th.finish(hosts, work, base, keep_on_failure=True)


if __name__ == "__main__":
    main()
