#!/usr/bin/python3
"""The cluster's log lost what a host's store has (issue 18): as after a
power cut of every NATS node, whose JetStream does not fsync.

- two hosts write, then everything stops and NATS comes back empty;
- a host whose store is ahead of the log refuses to start (exit 1) and
  says why, rather than skip the new messages that will take the lost
  ones' stream sequences;
- with --cluster-new-log the owner's store starts a new log: its history
  is all there, sends go on from the next seq, a cmid sent before is
  still a duplicate; the other host, restored from the owner's backup
  and started the same way, sees the same, and the messages sent since;
- a new host started from a backup of a running one reads the log from
  where the backup was taken.

Usage: test_lost_log.py PARLEYD NATS_CLUSTER_SH
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "wire"))
import test_hosts as th  # noqa: E402
import test_people as tp  # noqa: E402
import wsclient as W  # noqa: E402


def seqs(ws, ch):
    r = ws.request("history", ch=ch, limit=100)
    return [m["seq"] for m in r.get("msgs", [])]


def owner_of(hosts):
    for h in hosts:
        if (th.metric(h.port, "parley_cluster_partitions_owned") or 0) > 0:
            return h
    return None


def main():
    work = tempfile.mkdtemp(prefix="parley-lostlog-")
    base = 22000 + (os.getpid() % 300) * 30
    hosts = []
    try:
        urls = th.nats("start", work, base)
        th.keyfile(os.path.join(work, "jwt.secret"))
        th.keyfile(os.path.join(work, "dm.key"))
        hosts = [th.Host(work, "h%d" % i, urls) for i in (1, 2)]
        th.wait_for(lambda: owner_of(hosts) is not None, True, 30)
        own = owner_of(hosts)
        other = hosts[1] if own is hosts[0] else hosts[0]
        a = W.WS(other.port)
        a.hello(tp.token(work, "alice"))
        ch = tp.req(a, "ch.create", name="kept", kind="public")["ch"]["id"]
        for i in range(5):
            r = tp.req(a, "send", ch=ch, body="before %d" % i,
                          cmid="b%d" % i)
            th.check(r.get("ok") and r.get("seq") == i + 1,
                     "send %d acked with seq %d" % (i, i + 1))
        a.close()
        for h in hosts:
            th.check(h.stop() == 0, "%s stops" % h.name)
        hosts = []

        # NATS comes back without its store
        th.nats("stop", work, base)
        for n in ("n1", "n2", "n3"):
            shutil.rmtree(os.path.join(work, "nats", n), ignore_errors=True)
        urls = th.nats("start", work, base)

        r = subprocess.run(
            [th.PARLEYD, "--listen", "127.0.0.1:0", "--data", own.data,
             "--shards", "1", "--no-pin", "--cluster", urls, "--host-id",
             own.name, "--lease-ms", str(th.LEASE_MS), "--jwt-secret-file",
             os.path.join(work, "jwt.secret"), "--dm-key-file",
             os.path.join(work, "dm.key")],
            capture_output=True, text=True, timeout=60)
        th.check(r.returncode == 1 and "the log ends at 0" in r.stderr,
                 "a store ahead of the log refuses to start (exit %r)"
                 % r.returncode)

        # the owner's store starts a new log
        keep = th.Host(work, own.name, urls, new_log=True)
        hosts = [keep]
        th.wait_for(lambda: owner_of(hosts) is not None, True, 30)
        a = W.WS(keep.port)
        a.hello(tp.token(work, "alice"))
        th.check(seqs(a, ch) == [1, 2, 3, 4, 5],
                 "with --cluster-new-log its history is whole")
        r = tp.req(a, "send", ch=ch, body="after", cmid="a0")
        th.check(r.get("ok") and r.get("seq") == 6,
                 "and the next send is seq 6 (%r)" % r)
        r = tp.req(a, "send", ch=ch, body="before 1", cmid="b1")
        th.check(r.get("ok") and r.get("seq") == 2 and r.get("dup"),
                 "a cmid from before the loss is still a duplicate")

        # the other host becomes a copy of it
        bk = os.path.join(work, "bk")
        r = subprocess.run([th.PARLEYD, "backup", "--data", keep.data, bk],
                           capture_output=True, text=True, timeout=120)
        th.check(r.returncode == 0, "backup of the owner (%s)" % r.stderr)
        shutil.rmtree(other.data, ignore_errors=True)
        r = subprocess.run([th.PARLEYD, "restore", bk, "--data",
                            other.data], capture_output=True, text=True,
                           timeout=120)
        th.check(r.returncode == 0, "restore on %s (%s)" % (other.name,
                                                           r.stderr))
        copy = th.Host(work, other.name, urls, new_log=True)
        hosts.append(copy)
        b = W.WS(copy.port)
        b.hello(tp.token(work, "alice"))
        got = th.wait_for(lambda: seqs(b, ch), [1, 2, 3, 4, 5, 6], 30)
        th.check(got == [1, 2, 3, 4, 5, 6],
                 "the copy has the history and the send since (%r)" % got)
        r = tp.req(b, "send", ch=ch, body="from the copy", cmid="c0")
        th.check(r.get("ok") and r.get("seq") == 7,
                 "a send on the copy is seq 7 (%r)" % r)
        th.check(th.wait_for(lambda: seqs(a, ch)[-1:], [7], 30) == [7],
                 "and the owner has it")

        # a new host from a backup of a running one: the log from there
        bk2 = os.path.join(work, "bk2")
        r = subprocess.run([th.PARLEYD, "backup", "--data", copy.data, bk2],
                           capture_output=True, text=True, timeout=120)
        th.check(r.returncode == 0, "backup of %s" % copy.name)
        r = tp.req(a, "send", ch=ch, body="after the backup", cmid="a1")
        th.check(r.get("seq") == 8, "seq 8 is sent after the backup")
        r = subprocess.run([th.PARLEYD, "restore", bk2, "--data",
                            os.path.join(work, "h3")], capture_output=True,
                           text=True, timeout=120)
        th.check(r.returncode == 0, "restored as h3")
        h3 = th.Host(work, "h3", urls)
        hosts.append(h3)
        c = W.WS(h3.port)
        c.hello(tp.token(work, "alice"))
        got = th.wait_for(lambda: seqs(c, ch), list(range(1, 9)), 30)
        th.check(got == list(range(1, 9)),
                 "h3 has the backup's history and what the log has since "
                 "(%r)" % got)
        c.close()
        a.close()
        b.close()
    finally:
        th.finish(hosts, work, base, keep_on_failure=True)


if __name__ == "__main__":
    main()
