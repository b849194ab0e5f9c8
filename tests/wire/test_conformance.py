"""RFC 6455 conformance of parleyd's WebSocket side, after the groups of the
Autobahn test suite: 1 framing, 2 ping/pong, 3 reserved bits, 4 opcodes,
5 fragmentation, 6 UTF-8, 7 close handling, 9 big messages, and the opening
handshake. Every check asserts what a client sees: an answer, a close code,
an HTTP status. Where Autobahn expects an echo, parley answers a request
(its protocol has no echo); a text message is answered with BAD_FRAME
(PROTOCOL.md), not echoed.

usage: test_conformance.py PARLEYD"""

import itertools
import os
import sys
import time

import msgpack

from wsclient import (WS, Checks, Closed, Server, frame, http_response,
                      raw_connect, upgrade_request)

MAX_FRAME = 64 * 1024  # parleyd's default --max-frame
users = itertools.count()


def conn(srv):
    ws = WS(srv.port)
    ws.hello(srv.token("u%d" % next(users)))
    return ws


def request_of_size(rid, size):
    """A ch.list request whose msgpack encoding is exactly size bytes."""
    for k in range(max(0, size - 40), size + 1):
        b = msgpack.packb({"op": "ch.list", "rid": rid, "pad": "x" * k})
        if len(b) == size:
            return b
    raise ValueError("no request of %d bytes" % size)


def expect_alive(ws):
    """The connection still answers requests."""
    r = ws.request("ch.list")
    assert r.get("ok"), r


def expect_close(ws, code):
    got, _ = ws.expect_close()
    assert got == code, "close code %s, want %s" % (got, code)
    ws.expect_eof()


def expect_bad_frame(ws):
    m = ws.read_msg()
    assert m.get("t") == "err" and m.get("code") == "BAD_FRAME", m


# ---- 1 framing ------------------------------------------------------------

def framing_sizes(srv, split):
    ws = conn(srv)
    for size in (0, 125, 126, 127, 128, 65535, 65536):
        if size == 0:
            data = frame(2, b"")
        else:
            ws.rid += 1
            data = frame(2, request_of_size(ws.rid, size))
        if split:
            # the header alone, then the payload in pieces: each its own write
            ws.send_split(data[:4], 1)
            ws.send_split(data[4:], max(1, len(data) // 7))
        else:
            ws.send(data)
        if size == 0:
            expect_bad_frame(ws)
        else:
            assert ws.expect_res(ws.rid).get("ok")
    ws.close()


def framing_many_in_one_write(srv):
    ws = conn(srv)
    rids = []
    data = b""
    for _ in range(50):
        ws.rid += 1
        rids.append(ws.rid)
        data += frame(2, msgpack.packb({"op": "ch.list", "rid": ws.rid}))
    ws.send(data)
    for rid in rids:
        assert ws.expect_res(rid).get("ok")
    ws.close()


def framing_unmasked(srv):
    ws = conn(srv)
    ws.send(frame(2, msgpack.packb({"op": "ch.list", "rid": 99}), mask=False))
    got, before = ws.expect_close()
    assert got == 1002, got
    assert not before, "an unmasked frame was processed: %r" % before
    ws.expect_eof()


def framing_text_is_bad_frame(srv):
    ws = conn(srv)
    ws.send(frame(1, b"hello"))
    expect_bad_frame(ws)
    expect_alive(ws)
    ws.close()


# ---- 2 ping / pong ----------------------------------------------------------

def ping(srv, size):
    ws = conn(srv)
    payload = os.urandom(size)
    ws.send(frame(9, payload))
    op, p = ws.read_frame()
    assert op == 0xa and p == payload, (op, len(p))
    expect_alive(ws)
    ws.close()


def ping_split(srv):
    ws = conn(srv)
    payload = b"x" * 125
    ws.send_split(frame(9, payload), 1)
    op, p = ws.read_frame()
    assert op == 0xa and p == payload
    ws.close()


def ping_too_long(srv):
    ws = conn(srv)
    ws.send(frame(9, b"x" * 126))
    expect_close(ws, 1002)


def pong_unsolicited(srv):
    ws = conn(srv)
    ws.send(frame(0xa, b"unsolicited"))
    expect_alive(ws)
    ws.close()


def pings_one_by_one(srv):
    ws = conn(srv)
    for i in range(10):
        ws.send(frame(9, b"p%d" % i))
        op, p = ws.read_frame()
        assert op == 0xa and p == b"p%d" % i
    ws.close()


# ---- 3 reserved bits, 4 opcodes -------------------------------------------

def bad_header(srv, data, after_request=False):
    ws = conn(srv)
    if after_request:
        ws.rid += 1
        ok = frame(2, msgpack.packb({"op": "ch.list", "rid": ws.rid}))
        ws.send(ok + data)
        assert ws.expect_res(ws.rid).get("ok")  # what came first is answered
    else:
        ws.send(data)
    expect_close(ws, 1002)


# ---- 5 fragmentation --------------------------------------------------------

def fragments(srv, pieces, pings=False):
    ws = conn(srv)
    ws.rid += 1
    b = msgpack.packb({"op": "ch.list", "rid": ws.rid, "pad": "y" * 300})
    step = max(1, len(b) // pieces)
    parts = [b[i:i + step] for i in range(0, len(b), step)]
    data = b""
    for i, part in enumerate(parts):
        data += frame(2 if i == 0 else 0, part, fin=i == len(parts) - 1)
        if pings and i < len(parts) - 1:
            data += frame(9, b"between")
    ws.send_split(data, 17)
    pongs = 0
    while True:
        op, p = ws.read_frame()
        if op == 0xa:
            pongs += 1
            continue
        m = msgpack.unpackb(p, raw=False)
        if m.get("rid") == ws.rid:
            assert m.get("ok"), m
            break
    assert not pings or pongs >= 1
    ws.close()


def fragments_empty(srv):
    ws = conn(srv)
    ws.rid += 1
    b = msgpack.packb({"op": "ch.list", "rid": ws.rid})
    ws.send(frame(2, b"", fin=False) + frame(0, b, fin=False) + frame(0, b""))
    assert ws.expect_res(ws.rid).get("ok")
    ws.close()


def continuation_without_start(srv):
    ws = conn(srv)
    ws.send(frame(0, b"abc"))
    expect_close(ws, 1002)


def new_message_inside_fragmented(srv):
    ws = conn(srv)
    ws.send(frame(2, b"\x81", fin=False) + frame(2, b"\xa1"))
    expect_close(ws, 1002)


def fragmented_ping(srv):
    ws = conn(srv)
    ws.send(frame(9, b"a", fin=False) + frame(0, b"b"))
    expect_close(ws, 1002)


# ---- 6 UTF-8 ------------------------------------------------------------------

VALID_UTF8 = ["κόσμε".encode(), b"\xf4\x8f\xbf\xbf", b"\xef\xbf\xbf", b""]
INVALID_UTF8 = [b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
                b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xf5", b"\xe1\x80", b"\x80",
                b"\xed\xbf\xbf", b"\xf8\x88\x80\x80\x80"]


def text_frame(srv, b, fragmented):
    """Every text message, valid UTF-8 or not, gets BAD_FRAME and the
    connection stays open: the contract (RFC 6455 would fail invalid UTF-8
    with 1007)."""
    ws = conn(srv)
    if fragmented and len(b) > 1:
        ws.send(frame(1, b[:1], fin=False) + frame(0, b[1:]))
    else:
        ws.send(frame(1, b))
    expect_bad_frame(ws)
    expect_alive(ws)
    ws.close()


# ---- 7 close ------------------------------------------------------------------

def close_with(srv, payload, want):
    ws = conn(srv)
    ws.send(frame(8, payload))
    got, before = ws.expect_close()
    assert got in want, "close %s, want %s" % (got, want)
    ws.expect_eof()


def close_then_data(srv):
    ws = conn(srv)
    ws.send(frame(8, b"\x03\xe8") +
            frame(2, msgpack.packb({"op": "ch.list", "rid": 77})))
    got, before = ws.expect_close()
    assert got == 1000, got
    assert not before, "data after the close frame was answered"
    ws.expect_eof()


def close_after_answers(srv):
    """A close that follows requests: the answers come first, then the
    close, then EOF."""
    ws = conn(srv)
    data = b""
    for i in range(20):
        data += frame(2, msgpack.packb({"op": "ch.list", "rid": 100 + i}))
    ws.send(data + frame(8, b"\x0f\xa0"))
    got, before = ws.expect_close()
    assert got == 4000, got
    rids = [msgpack.unpackb(p, raw=False).get("rid") for op, p in before if op == 2]
    assert rids == list(range(100, 120)), rids
    ws.expect_eof()


# ---- 9 big messages -------------------------------------------------------------

def too_large(srv, data):
    ws = conn(srv)
    try:
        ws.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    got, _ = ws.expect_close()
    assert got == 1009, got
    # exactly one close frame, then EOF
    try:
        while True:
            op, p = ws.read_frame()
            assert op != 8, "a second close frame"
    except Closed:
        pass


def largest_fragmented(srv):
    ws = conn(srv)
    ws.rid += 1
    b = request_of_size(ws.rid, MAX_FRAME)
    parts = [b[i:i + 4096] for i in range(0, len(b), 4096)]
    data = b"".join(frame(2 if i == 0 else 0, p, fin=i == len(parts) - 1)
                    for i, p in enumerate(parts))
    ws.send(data)
    assert ws.expect_res(ws.rid).get("ok")
    ws.close()


# ---- the opening handshake ------------------------------------------------------

def handshake(srv, req, want_status, want_headers=None):
    s = raw_connect(srv.port)
    try:
        s.sendall(req)
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, hdrs, _ = http_response(s)
    assert status == want_status, "status %s, want %s" % (status, want_status)
    for k, v in (want_headers or {}).items():
        assert hdrs.get(k) == v, "%s: %r, want %r" % (k, hdrs.get(k), v)
    s.close()


def handshake_protocols(srv, offer, want):
    ws = WS(srv.port, protocols=offer)
    assert ws.protocol == want, (ws.protocol, want)
    ws.hello(srv.token("u%d" % next(users)))
    ws.close()


def handshake_big_header(srv):
    req, _ = upgrade_request(extra="X-Big: %s\r\n" % ("a" * 100 * 1024))
    handshake(srv, req, 431)


def handshake_slow_head(srv):
    s = raw_connect(srv.port)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    status, _, _ = http_response(s)
    assert status in (408, None), status
    # the head deadline (10 s) ends it, well before a minute
    assert time.monotonic() - t0 < 60
    s.close()


def http_still_works(srv):
    s = raw_connect(srv.port)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, _ = http_response(s)
    assert status == 200, status
    s.close()


def main():
    srv = Server(sys.argv[1])
    c = Checks()
    try:
        c.run("1 sizes 0..65536, one write", framing_sizes, srv, False)
        c.run("1 sizes 0..65536, split writes", framing_sizes, srv, True)
        c.run("1 50 frames in one write", framing_many_in_one_write, srv)
        c.run("1 unmasked frame: 1002, not processed", framing_unmasked, srv)
        c.run("1 text frame: BAD_FRAME, stays open", framing_text_is_bad_frame, srv)
        c.run("2 ping 0 bytes", ping, srv, 0)
        c.run("2 ping 125 bytes", ping, srv, 125)
        c.run("2 ping 125 bytes byte by byte", ping_split, srv)
        c.run("2 ping 126 bytes: 1002", ping_too_long, srv)
        c.run("2 unsolicited pong ignored", pong_unsolicited, srv)
        c.run("2 ten pings, ten pongs", pings_one_by_one, srv)
        for rsv in range(1, 8):
            c.run("3 RSV=%d on binary: 1002" % rsv, bad_header, srv,
                  frame(2, b"\x80", rsv=rsv))
        c.run("3 RSV on ping: 1002", bad_header, srv, frame(9, b"", rsv=4))
        c.run("3 RSV after a request: answer, then 1002", bad_header, srv,
              frame(2, b"\x80", rsv=2), True)
        for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
            c.run("4 opcode %d: 1002" % op, bad_header, srv, frame(op, b"x"))
        c.run("4 opcode 5 after a request: answer, then 1002", bad_header, srv,
              frame(5, b""), True)
        c.run("5 two fragments", fragments, srv, 2)
        c.run("5 one-byte fragments", fragments, srv, 400)
        c.run("5 fragments with pings between", fragments, srv, 5, True)
        c.run("5 empty fragments", fragments_empty, srv)
        c.run("5 continuation without start: 1002", continuation_without_start, srv)
        c.run("5 new message inside fragmented: 1002", new_message_inside_fragmented, srv)
        c.run("5 fragmented ping: 1002", fragmented_ping, srv)
        for i, b in enumerate(VALID_UTF8):
            for fr in (False, True):
                c.run("6 valid UTF-8 text #%d%s: BAD_FRAME" % (i, " fragmented" if fr else ""),
                      text_frame, srv, b, fr)
        for i, b in enumerate(INVALID_UTF8):
            for fr in (False, True):
                c.run("6 invalid UTF-8 text #%d%s: BAD_FRAME, open (contract)" % (i, " fragmented" if fr else ""),
                      text_frame, srv, b, fr)
        c.run("7 close, no payload: 1000 or empty", close_with, srv, b"", (1000, None))
        c.run("7 close, 1-byte payload: 1002", close_with, srv, b"\x03", (1002,))
        for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                     3000, 3999, 4000, 4999):
            c.run("7 close %d: echoed" % code, close_with, srv,
                  code.to_bytes(2, "big") + b"bye", (code,))
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
                     5000, 65535):
            c.run("7 close %d: 1002" % code, close_with, srv,
                  code.to_bytes(2, "big"), (1002,))
        c.run("7 close reason of 123 bytes: echoed", close_with, srv,
              b"\x03\xe8" + b"r" * 123, (1000,))
        c.run("7 close reason invalid UTF-8: 1007", close_with, srv,
              b"\x03\xe8" + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xed\xa0\x80", (1007,))
        c.run("7 close of 126 bytes: 1002", close_with, srv,
              b"\x03\xe8" + b"r" * 124, (1002,))
        c.run("7 data after close: ignored", close_then_data, srv)
        c.run("7 answers, then the close, then EOF", close_after_answers, srv)
        c.run("9 largest message (64 KiB) in 4 KiB fragments", largest_fragmented, srv)
        c.run("9 64 KiB + 1 in one frame: one 1009", too_large, srv,
              frame(2, b"\x80" * (MAX_FRAME + 1)))
        c.run("9 64 KiB + 1 in fragments: one 1009", too_large, srv,
              frame(2, b"\x80" * MAX_FRAME, fin=False) + frame(0, b"\x80"))
        c.run("9 header says 2^40 bytes: one 1009", too_large, srv,
              frame(2, b"", length=1 << 40))
        c.run("9 header says 2^63 bytes: 1002 or 1009", close_with_header, srv)
        ok = upgrade_request()[0]
        c.run("handshake ok", handshake, srv, ok, 101)
        c.run("handshake version 8: 426", handshake, srv,
              upgrade_request(version="8")[0], 426, {"sec-websocket-version": "13"})
        c.run("handshake no version: 426", handshake, srv,
              upgrade_request(version=None)[0], 426, {"sec-websocket-version": "13"})
        c.run("handshake no key: 400", handshake, srv, upgrade_request(key="")[0], 400)
        c.run("handshake bad key: 400", handshake, srv,
              upgrade_request(key="not-base64-of-16-bytes")[0], 400)
        c.run("handshake unknown path: 404", handshake, srv,
              upgrade_request(path="/nope")[0], 404)
        c.run("handshake unknown subprotocols only: 400", handshake, srv,
              upgrade_request(protocols="chat, superchat")[0], 400)
        c.run("handshake POST upgrade: 400", handshake, srv,
              ok.replace(b"GET ", b"POST ", 1), 400)
        c.run("handshake no Connection: upgrade: 400", handshake, srv,
              ok.replace(b"Connection: Upgrade", b"Connection: keep-alive"), 400)
        c.run("handshake subprotocol among others", handshake_protocols, srv,
              "chat, parley.v1", "parley.v1")
        c.run("handshake no subprotocol offered", handshake_protocols, srv, None, None)
        c.run("handshake 100 KB header: 431", handshake_big_header, srv)
        c.run("handshake slow head: closed", handshake_slow_head, srv)
        c.run("plain HTTP still served", http_still_works, srv)
    finally:
        rc = srv.stop()
    if rc != 0:
        print("parleyd exited %d" % rc)
        c.failed.append("parleyd exit status")
    c.exit()


def close_with_header(srv):
    ws = conn(srv)
    ws.send(b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00" + os.urandom(4))
    got, _ = ws.expect_close()
    assert got in (1002, 1009), got


if __name__ == "__main__":
    main()
