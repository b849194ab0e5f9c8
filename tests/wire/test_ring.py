#!/usr/bin/python3
"""Writing through io_uring (issue 17): what clients get is the same.

parleyd writes each loop turn's output in one io_uring_enter where the
kernel allows io_uring, and with one send() per connection otherwise or
with --no-io-uring. Either way, every member gets every event, whole and in
order, including one that stopped reading while a burst went out, so that
the kernel took only part of what was written to it (the rest waits and
goes out when the socket drains), and one that reads all along. /metrics says which way the writes went.

Usage: test_ring.py PARLEYD
"""
import ctypes
import os
import socket
import sys
import threading
import time

import msgpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wsclient import BufReader, Checks, Server, WS, frame  # noqa: E402

PARLEYD = sys.argv[1]
N = 12000               # messages in a burst
BODY = 500              # bytes each: 6.3 MB to a reader that does not read
# Small messages keep each turn's write to a reader well under the ring's
# 1 MiB arena (larger ones go by send()), so the write that fills the
# stalled reader's buffers is a ring send the kernel takes part of.


def ring_allowed():
    """Whether this process may make an io_uring (a container's seccomp
    filter may refuse io_uring_setup): then parleyd may too."""
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(425, 4, params)  # io_uring_setup, x86_64 and arm64
    if fd < 0:
        return False
    os.close(fd)
    return True


def body(i):
    return ("%05d:" % i) + chr(ord("a") + i % 26) * (BODY - 6)


def one_burst(srv, alice, bob, carol, name):
    """N pipelined sends from alice to a new channel that bob (not
    reading until every ack came) and carol (reading) are in; all three
    get all N events, whole and in order."""
    ch = alice.request("ch.create", name=name, kind="public")["ch"]["id"]
    for w in (bob, carol):
        r = w.request("ch.join", ch=ch)
        assert r.get("ok"), r
    out = b"".join(frame(2, msgpack.packb(
        {"op": "send", "rid": 100000 + i, "ch": ch, "body": body(i),
         "cmid": "%s-%d" % (name, i)})) for i in range(N))
    # sent from a thread: alice reads her acks and events meanwhile, or
    # her own unread output would stop the server reading her
    t = threading.Thread(target=alice.s.sendall, args=(out,))
    t.start()
    alice_r, carol_r = BufReader(alice), BufReader(carol)
    acks = seen_a = seen_c = 0
    while acks < N or seen_a < N:
        m = alice_r.msg(60)
        if m.get("t") == "res":
            assert m.get("ok"), m
            assert m["seq"] == acks + 1, m
            acks += 1
        else:
            seen_a = check_ev(m, ch, seen_a, "alice")
        while seen_c < N and carol_r.ready():
            seen_c = check_ev(carol_r.msg(), ch, seen_c, "carol")
    t.join()
    while seen_c < N:
        seen_c = check_ev(carol_r.msg(60), ch, seen_c, "carol")
    # bob only now
    bob_r, seen = BufReader(bob), 0
    while seen < N:
        seen = check_ev(bob_r.msg(60), ch, seen, "bob")
    # the WebSockets go on from where the readers stopped
    for w, rd in ((alice, alice_r), (bob, bob_r), (carol, carol_r)):
        w.buf = rd.ws_buf()


def check_ev(m, ch, seen, who):
    if m.get("t") != "ev" or m.get("ch") != ch:
        return seen
    seen += 1
    assert m["seq"] == seen, "%s: seq %d, want %d" % (who, m["seq"], seen)
    assert m["body"] == body(seen - 1), "%s: body of %d" % (who, seen)
    return seen


def burst(extra, want_ring):
    srv = Server(PARLEYD, ["--shards", "2", "--no-pin", "--send-rate", "100000",
                           "--send-burst", "100000"] + extra)
    try:
        alice = WS(srv.port)
        alice.hello(srv.token("alice"))
        # bob reads nothing during a burst, through a small receive
        # buffer: the kernel takes part of a write, then nothing
        bob = WS(srv.port)
        bob.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        bob.hello(srv.token("bob"))
        carol = WS(srv.port)
        carol.hello(srv.token("carol"))
        for i in range(3):
            one_burst(srv, alice, bob, carol, "burst%d" % i)
            if not want_ring or srv.metric("parley_ring_sends_short_total"):
                break
        sends = srv.metric("parley_ring_sends_total")
        short = srv.metric("parley_ring_sends_short_total")
        writes = srv.metric("parley_socket_writes_total")
        if want_ring:
            assert srv.metric("parley_ring_shards") == 2, "ring shards"
            # (a turn's frames to a connection are one write: a burst
            # takes few)
            assert sends and 0 < sends <= writes, (sends, writes)
            assert short, "no ring send was short in 3 bursts: " \
                "the stalled reader's case did not happen"
        else:
            assert srv.metric("parley_ring_shards") == 0, "ring shards"
            assert sends == 0 and short == 0, (sends, short)
            assert srv.metric("parley_socket_writes_short_total"), \
                "no short send(): the stalled reader's case did not happen"
        for w in (alice, bob, carol):
            w.close()
    finally:
        rc = srv.stop()
    assert rc == 0, "parleyd exit %r" % rc


def main():
    c = Checks()
    allowed = ring_allowed()
    if allowed:
        c.run("burst through io_uring, one reader stalled", burst, [], True)
    else:
        print("note  io_uring_setup is refused here: parleyd writes with "
              "send(); the io_uring check cannot run")
        c.run("refused io_uring: send() path, one reader stalled", burst, [], False)
    c.run("--no-io-uring: send() path, one reader stalled", burst,
          ["--no-io-uring"], False)
    c.exit()


if __name__ == "__main__":
    main()
