"""Closes a client must see, and the slow-consumer bound.

- A connection the server closes while the client keeps sending (issue 10
  item 9): the client gets every answer queued before the close and the
  close code (1008 after more than 20 bad frames), not a TCP reset.
- A client that reads steadily is not closed for pipelining large answers
  (item 10): 20 `history` pages of about 3.2 MB each, 64 MB in all, with
  the default 8 MiB `outbuf`.
- A client that stops reading is closed with 4008 once the bound is
  passed, and sees the code when it reads again.

usage: test_closes.py PARLEYD"""

import sys
import threading
import time

import msgpack

from wsclient import WS, Checks, Server, frame

BODY = "b" * 16000
PAGES = 20


def keeps_sending_after_bad_frames(srv, ch):
    """Three history pages (about 10 MB) are queued when the 21st bad frame
    closes the connection; the client sends on and reads only after a
    second, so most of the answers still wait on the server at the
    close."""
    ws = WS(srv.port)
    ws.hello(srv.token("spammer"))
    data = b""
    for rid in range(1, 4):
        data += frame(2, msgpack.packb({"op": "history", "rid": rid, "ch": ch,
                                        "limit": 200}))
    for _ in range(21):
        data += frame(1, b"not msgpack")
    stop = threading.Event()

    def sender():
        bad = frame(1, b"still not msgpack " * 50)
        try:
            while not stop.is_set():
                ws.s.sendall(bad * 20)
        except OSError:
            pass

    ws.send(data)
    t = threading.Thread(target=sender)
    t.start()
    try:
        time.sleep(1)
        code, before = ws.expect_close(timeout=60)
    finally:
        stop.set()
        t.join()
    msgs = [msgpack.unpackb(p, raw=False) for op, p in before if op == 2]
    pages = [m for m in msgs if m.get("t") == "res"]
    errs = [m for m in msgs if m.get("code") == "BAD_FRAME"]
    assert code == 1008, "close code %s" % code
    assert [m.get("rid") for m in pages] == [1, 2, 3], pages
    assert all(len(m["msgs"]) == 200 for m in pages)
    assert len(errs) >= 20, "%d BAD_FRAME answers" % len(errs)


def setup_channel(srv):
    """A public channel with 200 messages of 16,000 bytes: a history page
    of 200 is about 3.2 MB."""
    ws = WS(srv.port)
    ws.hello(srv.token("writer"))
    r = ws.request("ch.create", name="big", kind="public")
    assert r.get("ok"), r
    ch = r["ch"]["id"]
    data = b""
    for i in range(200):
        ws.rid += 1
        data += frame(2, msgpack.packb({"op": "send", "rid": ws.rid, "ch": ch,
                                        "body": BODY, "cmid": "m%d" % i}))
    ws.send(data)
    last = ws.rid
    while True:
        m = ws.read_msg()
        if m.get("t") == "res":
            assert m.get("ok"), m
            if m.get("rid") == last:
                break
    ws.close()
    return ch


def pipeline_history(ws, ch):
    data = b""
    for _ in range(PAGES):
        ws.rid += 1
        data += frame(2, msgpack.packb({"op": "history", "rid": ws.rid,
                                        "ch": ch, "limit": 200}))
    ws.send(data)


def steady_reader_not_closed(srv, ch):
    ws = WS(srv.port)
    lim = ws.hello(srv.token("reader"))["limits"]
    # the bound is reported: the pause threshold, the hard cap, the stall
    assert lim["outbuf"] == 8 << 20, lim
    assert lim["outbuf_max"] == 8 * lim["outbuf"], lim
    assert lim["outbuf_stall_ms"] == 10000, lim
    first = ws.rid + 1
    pipeline_history(ws, ch)
    got = 0
    total = 0
    while got < PAGES:
        m = ws.read_msg(timeout=120)  # a close here fails the check
        if m.get("t") == "res" and m.get("rid", 0) >= first:
            assert m.get("ok"), m
            assert len(m["msgs"]) == 200, len(m["msgs"])
            got += 1
            total += sum(len(x.get("body", "")) for x in m["msgs"])
    assert total >= PAGES * 200 * 16000
    ws.close()


def stalled_reader_closed(srv, ch):
    before = srv.metric("parley_closed_slow_consumer_total") or 0
    ws = WS(srv.port)
    ws.hello(srv.token("sleeper"))
    pipeline_history(ws, ch)
    # Not reading: wait (without reading) until the server gave up on us.
    deadline = time.monotonic() + 120
    while (srv.metric("parley_closed_slow_consumer_total") or 0) <= before:
        assert time.monotonic() < deadline, "never closed"
        time.sleep(0.2)
    # Reading again: what was in flight, then the close code.
    code, _ = ws.expect_close(timeout=60)
    assert code == 4008, code
    ws.expect_eof()


def main():
    c = Checks()
    srv = Server(sys.argv[1], ["--send-rate", "100000", "--send-burst", "100000"])
    try:
        ch = setup_channel(srv)
        c.run("1008 with answers queued, client keeps sending",
              keeps_sending_after_bad_frames, srv, ch)
        c.run("steady reader, %d x 3.2 MB pipelined: not closed" % PAGES,
              steady_reader_not_closed, srv, ch)
        c.run("reader that stops: 4008, seen when it reads again",
              stalled_reader_closed, srv, ch)
    finally:
        rc = srv.stop()
    if rc:
        c.failed.append("parleyd exit status %d" % rc)
    c.exit()


if __name__ == "__main__":
    main()
