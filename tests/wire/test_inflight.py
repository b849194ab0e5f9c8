#!/usr/bin/python3
"""Requests in flight per connection (docs/protocol.md, Limits).

A client that pipelines cheap requests the session hands to another actor
(here `typing`: session -> user actor -> channel actor, not rate limited)
and does not read the answers must not grow the server without bound: past
a bound of requests in flight the server stops reading that connection
(TCP back-pressure) until the actors have taken them up. Checked:
  flood     N pipelined requests: the server's peak RSS (VmHWM) grows by
            far less than it did without the bound, and once the client
            reads, every request has its answer, in order;
  neighbour another client of the same shard is answered before the
            server has taken in the whole flood (counted in requests:
            parley_requests_total), not behind all of it;
  close     connections closed with many requests in flight: the server
            keeps working (a new connection of the same user pipelines and
            gets every answer) and exits 0 on SIGTERM.
With one shard (both clients and every actor share it) and with two (the
requests cross shards). Nothing is asserted on time.

Usage: test_inflight.py PARLEYD
"""
import os
import socket
import sys
import threading
import time

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wsclient import BufReader, Checks, Server, WS, frame  # noqa: E402

ZERO_KEY = b"\0\0\0\0"  # masked with key 0: cheap to make 200,000

PARLEYD = sys.argv[1]
N = 200000
# The server's peak RSS may grow by this much during the flood. Before the
# bound, 200,000 pipelined typing requests grew it by 56 to 66 MiB (release
# build, one or two shards); with it, by about 1 MiB.
RSS_GROWTH_MAX = 24 << 20
# ASan keeps freed memory in quarantine (256 MiB by default): RSS would
# grow by what the flood allocated and freed, bounded or not.
if "ASAN_OPTIONS" in os.environ:
    os.environ["ASAN_OPTIONS"] += ":quarantine_size_mb=4"
# TSan shadows every byte the server touches (several times over) and
# keeps freed memory a while: with the bound, two shards grew by up to 36
# MiB under it; without the bound, by 182 MiB (two shards) and 388 (one).
if "TSAN_OPTIONS" in os.environ:
    RSS_GROWTH_MAX = 96 << 20


def proc_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s" % field)


def setup(srv, user):
    ws = WS(srv.port)
    ws.hello(srv.token(user))
    r = ws.request("ch.create", name="flood-" + user, kind="private")
    assert r.get("ok"), r
    return ws, r["ch"]["id"]


def flood_bytes(ch, first, n):
    out = bytearray()
    for rid in range(first, first + n):
        m = {"op": "typing", "rid": rid, "ch": ch}
        out += frame(2, msgpack.packb(m), key=ZERO_KEY)
    return bytes(out)


class Sender(threading.Thread):
    """Sends the flood in chunks; counts how many requests went out."""

    def __init__(self, ws, ch, first, n, chunk=1000):
        super().__init__(daemon=True)
        self.ws, self.n, self.chunk = ws, n, chunk
        # made beforehand: the client must be faster than the server
        self.parts = [flood_bytes(ch, first + i, min(chunk, n - i))
                      for i in range(0, n, chunk)]
        self.sent = 0
        self.error = None

    def run(self):
        try:
            for i, part in enumerate(self.parts):
                self.ws.s.sendall(part)
                self.sent = min((i + 1) * self.chunk, self.n)
        except OSError as e:
            self.error = e


def wait_stalled(sender, pid, quiet=3.0, limit=300.0):
    """Waits until the sender is done or has made no progress for quiet
    seconds (the server stopped reading); samples the server's RSS. This
    only picks when to start reading: nothing is asserted on time."""
    t_end = time.monotonic() + limit
    last, t_last = -1, time.monotonic()
    while sender.is_alive() and time.monotonic() < t_end:
        if sender.sent != last:
            last, t_last = sender.sent, time.monotonic()
        elif time.monotonic() - t_last > quiet:
            break
        time.sleep(0.1)


def check_flood(srv):
    pid = srv.proc.pid
    ws, ch = setup(srv, "flooder")
    ws.s.settimeout(None)
    rss0 = proc_kb(pid, "VmRSS")
    hwm0 = proc_kb(pid, "VmHWM")
    sender = Sender(ws, ch, 1000, N)
    sender.start()
    wait_stalled(sender, pid)
    sent_before_reading = sender.sent
    rd = BufReader(ws)
    want = 1000
    while want < 1000 + N:
        m = rd.msg()
        if m.get("t") != "res":
            continue  # typing frames of others: none expected, harmless
        assert m.get("rid") == want, "answer %r, expected rid %d" % (m, want)
        assert m.get("ok"), m
        want += 1
    sender.join(60)
    assert sender.error is None, sender.error
    hwm = proc_kb(pid, "VmHWM")
    growth = (hwm - max(rss0, 0)) * 1024
    print("      flood: %d requests, %d sent before reading; RSS %d KiB "
          "before, peak %d KiB (peak before %d KiB): +%.1f MiB"
          % (N, sent_before_reading, rss0, hwm, hwm0, growth / 1048576.0),
          flush=True)
    assert growth < RSS_GROWTH_MAX, \
        "server RSS grew by %.1f MiB (bound %d MiB)" % (
            growth / 1048576.0, RSS_GROWTH_MAX >> 20)
    ws.close()


def check_neighbour(srv):
    ws, ch = setup(srv, "flooder2")
    other, och = setup(srv, "neighbour")
    ws.s.settimeout(None)
    sender = Sender(ws, ch, 1, N)
    base = srv.metric("parley_requests_total")
    sender.start()
    # Once the flood is all on its way (in the kernel's buffers, or read),
    # the neighbour asks; the flooder still reads nothing.
    sender.join(300)
    assert not sender.is_alive() and sender.error is None, sender.error
    r = other.request("typing", ch=och)
    assert r.get("ok"), r
    taken = srv.metric("parley_requests_total") - base
    print("      neighbour answered when the server had decoded %d of the "
          "%d flood requests" % (taken - 1, N), flush=True)
    # Without the bound the server read the whole flood ahead of the
    # neighbour's request and answered it only after all of it.
    assert taken - 1 < N, \
        "the whole flood was taken in before the neighbour's answer"
    rd = BufReader(ws)
    want = 1
    while want <= N:
        m = rd.msg()
        if m.get("t") == "res":
            assert m.get("rid") == want, (m, want)
            assert m.get("ok"), m
            want += 1
    ws.close()
    other.close()


def check_close(srv):
    for i in range(3):
        ws, ch = setup(srv, "closer%d" % i)
        ws.s.settimeout(None)
        sender = Sender(ws, ch, 1, 50000)
        sender.start()
        deadline = time.monotonic() + 120
        while sender.sent < 20000 and sender.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        ws.s.shutdown(socket.SHUT_RDWR)
        ws.close()
        sender.join(60)
    other, och = setup(srv, "after-close")
    r = other.request("typing", ch=och)
    assert r.get("ok"), r
    r = other.request("ch.list")
    assert r.get("ok"), r
    other.close()
    # the closed connections' slots and counts are gone: a new one of the
    # same user pipelines past the bound and gets every answer
    ws = WS(srv.port)
    ws.hello(srv.token("closer0"))
    r = ws.request("ch.list")
    assert r.get("ok"), r
    ch = r["channels"][0]["id"] if r.get("channels") else None
    assert ch, r
    ws.send(flood_bytes(ch, 100, 2000))
    rd = BufReader(ws)
    want = 100
    while want < 2100:
        m = rd.msg()
        if m.get("t") == "res":
            assert m.get("rid") == want and m.get("ok"), (m, want)
            want += 1
    ws.close()


def main():
    checks = Checks()
    for shards in ("1", "2"):
        srv = Server(PARLEYD, ["--shards", shards, "--no-search"])
        tag = " (%s shard%s)" % (shards, "s" if shards != "1" else "")
        checks.run("flood: bounded memory, every answer in order" + tag,
                   check_flood, srv)
        if shards == "1":  # two: the clients may be on different shards
            checks.run("neighbour answered before the flood is taken in"
                       + tag, check_neighbour, srv)
        checks.run("close with requests in flight" + tag, check_close, srv)
        rc = srv.stop()
        if rc != 0:
            print("FAIL  parleyd exited %d on SIGTERM%s" % (rc, tag))
            checks.failed.append("exit status" + tag)
    checks.exit()


if __name__ == "__main__":
    main()
