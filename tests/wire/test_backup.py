"""Backups (issue 16): `parleyd backup` under write load, `parleyd restore`
into a fresh directory, `parleyd verify`, and a server started on the
restored directory that has every message acknowledged before the backup
started, with the same seq and body, its files byte for byte, searchable,
and whose cmids are still idempotent. Also: an offline backup, the refusals
(a non-empty DEST, a non-empty restore DIR, verify of a running server's
directory) and verify of a store with a gap in one channel's log.

usage: test_backup.py PARLEYD BREAK_STORE"""

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsclient  # noqa: E402
from wsclient import WS, Checks  # noqa: E402

EXE = sys.argv[1]
BREAK = sys.argv[2]
DEADLINE = 120.0  # generous: ASan on a loaded 2-core machine
CLIENTS = 3
WINDOW = 16  # sends in flight per client


def start(data):
    p = subprocess.Popen([EXE, "--listen", "127.0.0.1:0", "--data", data,
                          "--shards", "2", "--send-rate", "1000000",
                          "--send-burst", "1000000"],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r"127\.0\.0\.1:(\d+)", line)
    if not m:
        raise RuntimeError("parleyd did not start: %r" % line)
    return p, int(m.group(1))


def stop(p):
    return wsclient.stop_proc(p, timeout=120)


def run(*args):
    r = subprocess.run([EXE] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=300)
    return r.returncode, r.stdout + r.stderr


class Tok:
    """Tokens signed with DATA/jwt.secret (wsclient.Server.token's way)."""

    def __init__(self, data):
        self.dir = data

    token = wsclient.Server.token


def http_req(port, method, path, tok, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    h = {"Authorization": "Bearer " + tok}
    if body is not None:
        h["Content-Length"] = str(len(body))
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def upload(port, tok, data, name):
    st, body = http_req(port, "POST", "/api/v1/files?name=" + name, tok, data)
    assert st == 201, (st, body)
    return json.loads(body)["id"]


class Loader(threading.Thread):
    """One user pipelining sends (some with files, some edits and
    deletes of its own messages) into the shared channels until told to
    stop; every answer is recorded with the time it arrived."""

    def __init__(self, i, port, tok, chans, stop_ev):
        super().__init__(daemon=True)
        self.i, self.port, self.tok, self.chans = i, port, tok, chans
        self.stop_ev = stop_ev
        self.acks = []   # (t, ch, seq, cmid, body, files) of sends
        self.mods = []   # (t, ch, seq, kind, target, body) of edits/deletes
        self.files = {}  # file id -> bytes
        self.err = None

    def run(self):
        try:
            self.loop()
        except Exception as e:  # reported by the main thread
            self.err = repr(e)

    def loop(self):
        ws = WS(self.port)
        ws.hello(self.tok)
        pending = {}
        n = 0
        mine = []  # acked sends: (ch, seq, body)
        while True:
            stopping = self.stop_ev.is_set()
            while not stopping and len(pending) < WINDOW:
                n += 1
                ch = self.chans[n % len(self.chans)]
                ws.rid += 1
                if n % 25 == 0 and mine:
                    tch, tseq, _ = mine[(n // 25) % len(mine)]
                    if n % 50 == 0:
                        m = {"op": "delete", "ch": tch, "target": tseq}
                        pending[ws.rid] = ("delete", tch, tseq, "")
                    else:
                        body = "edited %d %d" % (self.i, n)
                        m = {"op": "edit", "ch": tch, "target": tseq,
                             "body": body}
                        pending[ws.rid] = ("edit", tch, tseq, body)
                else:
                    cmid = "c%d-%d" % (self.i, n)
                    body = "tok%dx%d hello from %d" % (self.i, n, self.i)
                    m = {"op": "send", "ch": ch, "body": body, "cmid": cmid}
                    files = []
                    if n % 40 == 7:
                        data = os.urandom(1000 + 37 * n)
                        fid = upload(self.port, self.tok, data,
                                     "f%d-%d.bin" % (self.i, n))
                        self.files[fid] = data
                        files = [fid]
                        m["files"] = files
                    pending[ws.rid] = ("send", ch, cmid, body, files)
                m["rid"] = ws.rid
                ws.send(wsclient.frame(2, wsclient.msgpack.packb(m)))
            if not pending:
                break
            r = ws.read_msg(timeout=DEADLINE)
            if r.get("t") != "res" or r.get("rid") not in pending:
                continue
            t = time.monotonic()
            p = pending.pop(r["rid"])
            assert r.get("ok"), (p, r)
            if p[0] == "send":
                _, ch, cmid, body, files = p
                self.acks.append((t, ch, r["seq"], cmid, body, files))
                mine.append((ch, r["seq"], body))
            else:
                kind, ch, target, body = p
                self.mods.append((t, ch, r["seq"], kind, target, body))
        ws.close()


def read_all_events(ws, ch):
    evs, after = [], 0
    while True:
        r = ws.request("events", ch=ch, after=after, limit=1000)
        assert r.get("ok"), r
        evs += r["evs"]
        if not r.get("more") or not r["evs"]:
            return evs
        after = r["evs"][-1]["seq"]


def read_all_msgs(ws, ch):
    msgs, after = {}, 0
    while True:
        r = ws.request("history", ch=ch, after=after, limit=200)
        assert r.get("ok"), r
        for m in r["msgs"]:
            msgs[m["seq"]] = m
        if not r.get("more") or not r["msgs"]:
            return msgs
        after = r["msgs"][-1]["seq"]


def chk(c, name, fn):
    """A check passes when fn returns True; anything else it returns is
    what went wrong."""
    def f():
        r = fn()
        assert r is True, str(r)[:1500]
    c.run(name, f)


def main():
    c = Checks()
    tmp = tempfile.mkdtemp(prefix="parley-backup-")
    data = os.path.join(tmp, "data")
    dest = os.path.join(tmp, "backup")
    new = os.path.join(tmp, "restored")
    procs = []
    try:
        body(c, tmp, data, dest, new, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    c.exit()


def body(c, tmp, data, dest, new, procs):
    p, port = start(data)
    procs.append(p)
    tk = Tok(data)
    users = ["u%d" % i for i in range(CLIENTS)]
    toks = {u: tk.token(u) for u in users}
    ws = WS(port)
    ws.hello(toks["u0"])
    chans = []
    for i in range(3):
        r = ws.request("ch.create", name="load-%d" % i, kind="public")
        assert r.get("ok"), r
        chans.append(r["ch"]["id"])
    for u in users[1:]:
        w = WS(port)
        w.hello(toks[u])
        for ch in chans:
            assert w.request("ch.join", ch=ch).get("ok")
        w.close()
    ws.close()

    # load, then the backup in the middle of it
    stop_ev = threading.Event()
    loaders = [Loader(i, port, toks[u], chans, stop_ev)
               for i, u in enumerate(users)]
    for ld in loaders:
        ld.start()
    deadline = time.monotonic() + DEADLINE
    while (sum(len(ld.acks) for ld in loaders) < 300 and
           time.monotonic() < deadline and
           not any(ld.err for ld in loaders)):
        time.sleep(0.05)
    t_backup = time.monotonic()
    rc, out = run("backup", "--data", data, dest)
    t_done = time.monotonic()
    print(out, end="")
    chk(c, "backup under load exits 0", lambda: rc == 0 or out)
    chk(c, "backup says it was online",
          lambda: "online, by the server" in out or out)
    # the load goes on a little after the backup
    n_at_done = sum(len(ld.acks) for ld in loaders)
    deadline = time.monotonic() + DEADLINE
    while (sum(len(ld.acks) for ld in loaders) < n_at_done + 100 and
           time.monotonic() < deadline and
           not any(ld.err for ld in loaders)):
        time.sleep(0.05)
    stop_ev.set()
    for ld in loaders:
        ld.join(DEADLINE)
    errs = [ld.err for ld in loaders if ld.err]
    chk(c, "the load ran without errors", lambda: not errs or errs)
    must = [a for ld in loaders for a in ld.acks if a[0] < t_backup]
    after = [a for ld in loaders for a in ld.acks if a[0] > t_done]
    mods_before = [m for ld in loaders for m in ld.mods if m[0] < t_backup]
    files = {k: v for ld in loaders for k, v in ld.files.items()}
    print("acks: %d before the backup, %d after it; %d edits/deletes "
          "before; backup took %.2f s" % (len(must), len(after),
                                          len(mods_before),
                                          t_done - t_backup))
    chk(c, "the load wrote before and after the backup",
          lambda: (len(must) > 0 and len(after) > 0) or (len(must),
                                                        len(after)))

    # the refusals
    rc2, out2 = run("backup", "--data", data, dest)
    chk(c, "backup into a non-empty DEST is refused",
          lambda: rc2 == 2 and "must not exist" in out2 or (rc2, out2))
    rc2, out2 = run("verify", "--data", data)
    chk(c, "verify refuses a running server's directory",
          lambda: rc2 == 2 and "server is running" in out2 or (rc2, out2))
    chk(c, "the server stops cleanly", lambda: stop(p) == 0)

    # restore, verify, start
    rc, out = run("restore", dest, "--data", new)
    print(out, end="")
    chk(c, "restore exits 0 and verifies", lambda: rc == 0 and
          "restore: verify: ok" in out or (rc, out))
    chk(c, "the backup stays as it was (MANIFEST there)",
          lambda: os.path.exists(os.path.join(dest, "MANIFEST")))
    chk(c, "the secrets are 0600", lambda: all(
        (os.stat(os.path.join(new, f)).st_mode & 0o777) == 0o600
        for f in ("jwt.secret", "dm.key")))
    rc, out = run("verify", "--data", new, "--files-sha")
    print(out, end="")
    chk(c, "verify of the restored directory exits 0",
          lambda: rc == 0 and out.startswith("verify: ok") or (rc, out))
    rc, out = run("restore", dest, "--data", new)
    chk(c, "restore into a non-empty DIR is refused",
          lambda: rc == 2 and "must not exist" in out or (rc, out))

    p2, port2 = start(new)
    procs.append(p2)
    tk2 = Tok(new)
    ws = WS(port2)
    ws.hello(tk2.token("u0"))  # same secret: the old tokens work too
    ws2 = WS(port2)
    ws2.hello(toks["u1"])
    ws2.close()
    last = {}
    evs_by = {}
    for ch in chans:
        evs = read_all_events(ws, ch)
        seqs = [e["seq"] for e in evs]
        evs_by[ch] = {e["seq"]: e for e in evs}
        last[ch] = seqs[-1] if seqs else 0
        chk(c, "%s: seqs 1..%d contiguous" % (ch, last[ch]),
              lambda s=seqs: s == list(range(1, len(s) + 1)) or s[:20])
    msgs = {ch: read_all_msgs(ws, ch) for ch in chans}

    edited = {}   # (ch, target) -> body after the edits acked before
    deleted = set()
    touched = set()
    for ld in loaders:
        for (t, ch, seq, kind, target, b) in ld.mods:
            touched.add((ch, target))
    for (t, ch, seq, kind, target, b) in sorted(mods_before):
        if kind == "edit":
            edited[(ch, target)] = b
        else:
            deleted.add((ch, target))
    missing, wrong = [], []
    for (t, ch, seq, cmid, b, fl) in must:
        m = msgs[ch].get(seq)
        if m is None or m.get("cmid") != cmid:
            missing.append((ch, seq, cmid))
            continue
        if (ch, seq) in deleted:
            ok = m.get("deleted") is True
        elif (ch, seq) in edited:
            ok = m["body"] == edited[(ch, seq)] or (ch, seq) in touched
        elif (ch, seq) in touched:
            ok = True  # an edit or delete after the backup point: either
        else:
            ok = m["body"] == b
        if not ok:
            wrong.append((ch, seq, b, m))
    chk(c, "every message acked before the backup is there (%d)" % len(must),
          lambda: not missing or missing[:10])
    chk(c, "with the same body (edits and deletes acked before applied)",
          lambda: not wrong or wrong[:5])
    lost_mods = [m for m in mods_before if m[2] not in evs_by[m[1]]]
    chk(c, "every edit/delete acked before the backup is there",
          lambda: not lost_mods or lost_mods[:5])

    # files byte-exact
    bad = []
    nfiles = 0
    for (t, ch, seq, cmid, b, fl) in must:
        if (ch, seq) in touched:
            continue  # a deleted message's files are not shared any more
        for fid in fl:
            nfiles += 1
            st, got = http_req(port2, "GET", "/api/v1/files/" + fid, toks["u1"])
            if st != 200 or got != files[fid]:
                bad.append((fid, st, len(got), len(files[fid])))
    chk(c, "the files of those messages download byte-exact (%d)" % nfiles,
          lambda: (nfiles > 0 and not bad) or (nfiles, bad[:5]))

    # search finds a must-have message (the index catches up)
    plain = [a for a in must if (a[1], a[2]) not in touched]
    word = plain[-1][4].split()[0]
    deadline = time.monotonic() + DEADLINE
    hit = None
    while time.monotonic() < deadline:
        r = ws.request("search", q=word, ch=plain[-1][1], limit=10)
        if r.get("ok") and any(h["seq"] == plain[-1][2] for h in r["hits"]):
            hit = r
            break
        time.sleep(0.2)
    chk(c, "search finds a message from before the backup",
          lambda: hit is not None or word)

    # sends go on after the last seq; a retried old cmid is idempotent
    ch0 = chans[0]
    r = ws.request("send", ch=ch0, body="after the restore", cmid="new-1")
    chk(c, "a new send continues the seq", lambda: r.get("ok") and
          r["seq"] == last[ch0] + 1 or (r, last[ch0]))
    old = next(a for a in must if a[1] == ch0 and a[3].startswith("c0-"))
    r = ws.request("send", ch=ch0, body=old[4], cmid=old[3])
    chk(c, "a retried cmid from before the backup is idempotent",
          lambda: r.get("ok") and r["seq"] == old[2] and r.get("dup") or
          (r, old))
    ws.close()
    chk(c, "the restored server stops cleanly", lambda: stop(p2) == 0)

    # offline: no server on data
    off = os.path.join(tmp, "offline")
    rc, out = run("backup", "--data", data, off)
    print(out, end="")
    chk(c, "backup with no server running exits 0",
          lambda: rc == 0 and "no server running" in out or (rc, out))
    rc, out = run("verify", "--data", off)
    chk(c, "the offline backup verifies", lambda: rc == 0 or (rc, out))
    with open(os.path.join(off, "MANIFEST")) as f:
        man = json.load(f)
    chk(c, "its MANIFEST counts the events", lambda: man["format"] == 1 and
          man["events"] >= sum(last.values()) and man["verified"] or man)

    # a gap in one channel's log: verify names the channel and the seq
    gap = max(2, last[chans[1]] // 2)
    br = subprocess.run([BREAK, os.path.join(new, "db"), chans[1], str(gap)],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True)
    chk(c, "break_store ran", lambda: br.returncode == 0 or br.stdout)
    rc, out = run("verify", "--data", new)
    print(out, end="")
    chk(c, "verify of a store with a gap exits 1 naming channel and seq",
          lambda: rc == 1 and ("channel %s: events %d..%d missing" %
                               (chans[1], gap, gap)) in out or (rc, out))


if __name__ == "__main__":
    main()
