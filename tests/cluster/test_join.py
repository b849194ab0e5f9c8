#!/usr/bin/python3
"""A host joins a busy cluster (issue 18): it says it is ready only once
every write acknowledged anywhere can be read on it.

h1 starts alone on a 3-node NATS cluster; a client on h1 creates a channel
and sends PRELOAD messages (pipelined, a cmid each), and goes on sending
while h2 and then h3 start. As soon as a new host prints its "listening
on" line, a client connects to it and, CHECKS times, reads from it the
message acknowledged last on h1 before the read: it must be there (seq,
cmid and body). A new host that served before it had stored the log (or
before the owner waited for it) answers without it, or FORBIDDEN (it has
not stored the join yet).

Usage: test_join.py PARLEYD NATS_CLUSTER_SH
Exits 77 (skipped) when nats-server is missing.
"""
import os
import sys
import threading
import time

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "wire"))
from test_cluster import Failed, Host, free_base, log, run_alone, wait_until  # noqa: E402
from wsclient import WS, frame  # noqa: E402

PRELOAD = 5000   # messages in the log before h2 starts
WINDOW = 32      # sends in flight
CHECKS = 40      # reads on each new host
TEST_S = 240     # the whole test (ctest: 300)


class Sender(threading.Thread):
    """Sends into ch on host's port until stopped; the last acked seq and
    its (cmid, body) are kept under lock."""

    def __init__(self, c, host, ch, user):
        super().__init__(daemon=True)
        self.ws = WS(host.port)
        self.ws.hello(c.token(user))
        self.ch = ch
        self.lock = threading.Lock()
        self.acked = {}          # seq -> (cmid, body)
        self.last = 0
        self.n = 0
        self.stopping = False
        self.error = None

    def run(self):
        rid, inflight = 0, {}
        try:
            while not self.stopping:
                out = []
                while len(inflight) < WINDOW:
                    rid += 1
                    cmid = "j%06d" % rid
                    body = "join check %d" % rid
                    inflight[rid] = (cmid, body)
                    out.append(frame(2, msgpack.packb(
                        {"op": "send", "rid": rid, "ch": self.ch,
                         "cmid": cmid, "body": body})))
                if out:
                    self.ws.send(b"".join(out))
                m = self.ws.read_msg(timeout=30)
                if m.get("t") != "res":
                    continue
                got = inflight.pop(m.get("rid"), None)
                if got is None:
                    continue
                if not m.get("ok"):
                    raise Failed("send on h1: %r" % m)
                with self.lock:
                    self.acked[m["seq"]] = got
                    self.last = max(self.last, m["seq"])
                    self.n += 1
        except Exception as e:  # noqa: the main thread reports it
            self.error = "%s: %s" % (type(e).__name__, e)

    def latest(self):
        if self.error:
            raise Failed("sender: %s" % self.error)
        with self.lock:
            return self.last, self.acked.get(self.last)


def check_new_host(c, h, ch, sender):
    """CHECKS reads on h, each of the message acked last before it."""
    ws = WS(h.port)
    try:
        r = ws.hello(c.token("bob"))
        for i in range(CHECKS):
            seq, want = sender.latest()
            r = ws.request("history", ch=ch, after=seq - 1, limit=1)
            if not r.get("ok"):
                raise Failed("%s, read %d right after it started: history "
                             "answered %s (%s)" % (h.name, i, r.get("code"),
                                                   r.get("msg")))
            msgs = r.get("msgs") or []
            got = msgs[0] if msgs else {}
            if got.get("seq") != seq or (got.get("cmid"), got.get("body")) \
                    != want:
                raise Failed("%s, read %d: seq %d was acknowledged on h1 "
                             "before the read, %s has %r" % (
                                 h.name, i, seq, h.name, got or "nothing"))
            time.sleep(0.05)
    finally:
        ws.close()
    log("note  %s: %d reads right after it started, each had the write "
        "acked last before it (seq %d at the end)" % (h.name, CHECKS, seq))


def run(c):
    end = time.monotonic() + TEST_S
    c.base = free_base()
    c.urls = c.nats("start")
    h1 = Host(c, "h1")
    c.hosts.append(h1)
    wait_until(lambda: h1.metrics().get("parley_cluster_partitions_owned")
               == 2, 30, "h1 owns both partitions")
    ws = WS(h1.port)
    ws.hello(c.token("alice"))
    r = ws.request("ch.create", name="joins", kind="public")
    if not r.get("ok"):
        raise Failed("ch.create: %r" % r)
    ch = r["ch"]["id"]
    bob = WS(h1.port)
    bob.hello(c.token("bob"))
    r = bob.request("ch.join", ch=ch)
    if not r.get("ok"):
        raise Failed("ch.join: %r" % r)
    bob.close()

    sender = Sender(c, h1, ch, "alice")
    sender.start()
    wait_until(lambda: sender.latest()[0] and sender.n >= PRELOAD, 120,
               "%d messages acked on h1" % PRELOAD)
    log("note  %d messages in the log; h2 starts while sends go on"
        % sender.n)
    for name in ("h2", "h3"):
        h = Host(c, name)  # returns at its "listening on" line
        c.hosts.append(h)
        check_new_host(c, h, ch, sender)
        if time.monotonic() > end:
            raise Failed("took longer than %d s" % TEST_S)
    sender.stopping = True
    sender.join(60)
    sender.latest()  # raises what the sender met
    log("note  %d messages acked on h1 in all" % sender.n)
    ws.close()


if __name__ == "__main__":
    run_alone("cluster_join", __doc__, run)
