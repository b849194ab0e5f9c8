#!/usr/bin/python3
"""A cluster seen by its clients (issue 18): three parleyd --cluster hosts
on a 3-node NATS cluster, six clients (two per host) in one channel, each
sending 50 messages pipelined (a few in flight, a cmid each).

Scenarios (one per ctest test, chosen by the third argument):

  order       every client receives every event of the channel, seqs
              contiguous, and all see the same seq -> message; history on
              every host is that same sequence.
  owner_kill  as order, and kill -9 of the host that owns the partitions
              (parley_cluster_partitions_owned > 0) mid-stream: senders
              retry every unacknowledged send with its cmid until acked
              (UNAVAILABLE and lost connections meanwhile; the clients of
              the dead host reconnect to a survivor and resume); nothing
              acked is lost, no gap, no duplicate, one seq per cmid, on
              both survivors. Prints the time from the kill to the first
              ack of a write sent after it ("writable again").
  nats_kill   as order, and kill -9 of a NATS node mid-stream (the leader
              of the event stream when the monitoring port says which):
              nothing acked is lost, new sends are acked after the kill,
              history the same on every host.

In every scenario a living host must answer every send within 30 s
(UNAVAILABLE at worst, docs/cluster.md): one it leaves unanswered fails the
test (its user would be left waiting for it).

Usage: test_cluster.py PARLEYD NATS_CLUSTER_SH SCENARIO [--separate]

--separate starts the hosts without --cluster (three unrelated servers
sharing only the JWT secret): every scenario must then fail (the check
that the test can fail). Exits 77 (skipped) when nats-server is missing.
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "wire"))
from wsclient import WS, Closed, frame, token_for  # noqa: E402

SHARDS = 2
LEASE_MS = 3000
PER_HOST = 2            # clients on each host
N_MSGS = 50             # messages each client sends
WINDOW = 4              # sends in flight per client
KILL_AT = 100           # acks (of all clients together) before a kill
BACKOFF_S = 0.1         # between retries of a send answered UNAVAILABLE
REQ_TIMEOUT_S = 30      # a living host answers every send within this
#                         (UNAVAILABLE at worst: docs/cluster.md); one
#                         that does not fails the test
SCENARIO_S = 240        # the whole scenario, setup included (ctest: 300)
WRITABLE_BOUND_S = 60   # generous: "writable again" is printed, not timed
EVENTS_S = 60           # after the last ack, for the last events to arrive
RETRYABLE = ("UNAVAILABLE", "INTERNAL", "RATE_LIMITED")


class Failed(Exception):
    pass


LOG_LOCK = threading.Lock()


def log(*a):
    with LOG_LOCK:
        sys.stdout.write(" ".join(str(x) for x in a) + "\n")
        sys.stdout.flush()


def free_base():
    """A NATS base port whose 9 ports (nats-cluster.sh: +0..2 clients,
    +10..12 routes, +20..22 monitoring) are free now."""
    rnd = random.Random(os.getpid() ^ int(time.time() * 1000))
    for _ in range(200):
        base = rnd.randrange(20000, 40000)
        socks = []
        try:
            for off in (0, 1, 2, 10, 11, 12, 20, 21, 22):
                s = socket.socket()
                s.bind(("127.0.0.1", base + off))
                socks.append(s)
            return base
        except OSError:
            pass
        finally:
            for s in socks:
                s.close()
    raise Failed("no free NATS ports")


def metrics(port):
    """host's /metrics as {name: int} (unlabelled samples only); {} when it
    does not answer."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                    timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {m.group(1): int(float(m.group(2))) for m in
            re.finditer(r"^([a-z_]+) ([0-9.e+]+)$", text, re.M)}


def wait_until(fn, deadline_s, what):
    """Polls fn() until it is truthy; its value. Failed after deadline_s."""
    end = time.monotonic() + deadline_s
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= end:
            raise Failed("%s: not within %.0f s" % (what, deadline_s))
        time.sleep(0.1)


class Host:
    def __init__(self, c, name):
        self.name = name
        self.data = os.path.join(c.work, name)
        os.makedirs(self.data, exist_ok=True)
        self.logpath = os.path.join(c.work, name + ".log")
        self.dead = False       # killed by the test
        self.stopped = False    # SIGTERM by the test
        args = [c.parleyd, "--listen", "127.0.0.1:0", "--data", self.data,
                "--shards", str(SHARDS), "--no-pin",
                "--jwt-secret-file", c.secret, "--dm-key-file", c.dmkey,
                "--send-rate", "100000", "--send-burst", "100000"]
        if not c.separate:
            args += ["--cluster", c.urls, "--host-id", name,
                     "--lease-ms", str(LEASE_MS)]
        with open(self.logpath, "ab") as lf:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                         stderr=lf)
        line = self.proc.stdout.readline().decode(errors="replace")
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise Failed("%s did not start: %r" % (name, line))
        self.port = int(m.group(1))
        # drain stdout so that parleyd never blocks on a full pipe
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for _ in self.proc.stdout:
            pass

    def metrics(self):
        return metrics(self.port)

    def kill9(self):
        self.dead = True
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Cluster:
    """3 NATS nodes and 3 hosts in a temporary directory; stop() undoes
    everything that was started, whatever failed."""

    def __init__(self, parleyd, nats_sh, separate):
        self.parleyd, self.nats_sh, self.separate = parleyd, nats_sh, separate
        self.work = tempfile.mkdtemp(prefix="parley-cluster-")
        self.secret = os.path.join(self.work, "jwt.secret")
        self.dmkey = os.path.join(self.work, "dm.key")
        for path in (self.secret, self.dmkey):  # the same on every host
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(32).hex() + "\n")
        self.hosts = []
        self.base = None
        self.urls = None

    def nats(self, cmd, *extra):
        r = subprocess.run(["bash", self.nats_sh, cmd] + list(extra) +
                           [os.path.join(self.work, "nats"), str(self.base)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise Failed("nats-cluster.sh %s: %s" % (cmd, r.stderr.strip()))
        return r.stdout.strip()

    def start(self):
        if not self.separate:
            self.base = free_base()
            self.urls = self.nats("start")
        for i in (1, 2, 3):
            self.hosts.append(Host(self, "h%d" % i))
        if not self.separate:
            for h in self.hosts:
                wait_until(lambda: h.metrics().get("parley_cluster_hosts") == 3,
                           30, "%s counts 3 hosts" % h.name)
        log("note  cluster up: hosts on ports %s%s" % (
            ", ".join(str(h.port) for h in self.hosts),
            " (separate servers, no --cluster)" if self.separate else
            ", NATS base %d" % self.base))

    def token(self, user):
        return token_for(self.work, user)  # reads work/jwt.secret

    def owner(self, deadline_s=30):
        """The host that owns the partitions (all SHARDS of them)."""
        def find():
            own = [h for h in self.hosts if not h.dead and
                   h.metrics().get("parley_cluster_partitions_owned", 0) > 0]
            return own[0] if len(own) == 1 else None
        return wait_until(find, deadline_s,
                          "one host with parley_cluster_partitions_owned > 0")

    def stream_leader(self):
        """The NATS node (1..3) leading the event stream PARLEY_EV, from the
        nodes' /jsz; None when they do not say."""
        for i in range(3):
            url = "http://127.0.0.1:%d/jsz?accounts=true&streams=true" % (
                self.base + 20 + i)
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    jsz = json.load(r)
            except (OSError, ValueError):
                continue
            for acc in jsz.get("account_details") or []:
                for st in acc.get("stream_detail") or []:
                    if st.get("name") == "PARLEY_EV":
                        leader = (st.get("cluster") or {}).get("leader", "")
                        m = re.fullmatch(r"n([123])", leader)
                        if m:
                            return int(m.group(1))
        return None

    def tails(self):
        for h in self.hosts:
            rc = h.proc.poll()
            if rc is not None and not h.dead and not h.stopped:
                log("note  %s exited by itself, status %d" % (h.name, rc))
            elif rc is not None and rc != 0 and h.stopped:
                log("note  %s exited %d on SIGTERM" % (h.name, rc))
            try:
                with open(h.logpath, errors="replace") as f:
                    lines = f.readlines()[-15:]
            except OSError:
                continue
            log("----- %s.log (last %d lines)" % (h.name, len(lines)))
            for l in lines:
                log("  " + l.rstrip())

    def stop(self):
        """Stops everything; the hosts (not killed by the test) that did
        not exit 0 on SIGTERM, as 'hN: status S', and those that refused
        a write outside the log (a write made for a partition the host
        does not own: its requests were answered UNAVAILABLE)."""
        bad = []
        for h in self.hosts:
            if h.proc.poll() is None and not self.separate:
                n = h.metrics().get("parley_cluster_local_refused_total", 0)
                if n:
                    bad.append("%s: refused %d writes outside the log"
                               % (h.name, n))
        for h in self.hosts:
            try:
                rc = h.stop()
                if not h.dead and rc != 0:
                    bad.append("%s: status %s" % (h.name, rc))
            except Exception as e:  # noqa: report, keep cleaning
                log("stop %s: %s" % (h.name, e))
                bad.append("%s: %s" % (h.name, e))
        if self.base is not None:
            try:
                self.nats("stop")
            except Exception as e:  # noqa: report, keep cleaning
                log("nats stop: %s" % e)
        if bad:
            self.tails()
        if os.environ.get("PARLEY_KEEP"):
            log("note  kept %s" % self.work)
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        return bad


class Shared:
    """What the client threads and the main thread share."""

    def __init__(self, deadline):
        self.lock = threading.Lock()
        self.acks = 0               # acks, all clients together
        self.t_kill = None          # monotonic time of the kill signal
        self.first_new_ack = None   # first fresh ack of a send after it
        self.slowest = (0.0, None)  # (s from first try to ack, cmid)
        self.abort = False
        self.stop_reading = False   # main: stop waiting for events
        self.deadline = deadline


class Client(threading.Thread):
    """One user's device: connects to its host, sends its N_MSGS with
    WINDOW in flight, retries every unacknowledged send with its cmid
    until acked, reconnects (to the next living host) and resumes when its
    connection goes, and checks every event it receives: seq exactly one
    more than the last, no cmid twice."""

    def __init__(self, cluster, shared, idx, host):
        super().__init__(daemon=True, name="client%d" % idx)
        self.c, self.sh, self.idx = cluster, shared, idx
        self.user = "u%d" % idx
        self.host = host
        self.first_host = host
        self.ws = None
        self.ch = None
        self.rid = 0
        self.cmids = ["c%d-%d" % (idx, j) for j in range(N_MSGS)]
        self.todo = list(self.cmids)     # not yet sent (or to send again)
        self.retry_at = {}               # cmid -> monotonic time to resend
        self.inflight = {}               # rid -> (cmid, time sent)
        self.acked = {}                  # cmid -> seq
        self.first_try = {}              # cmid -> monotonic time first sent
        self.events = {}                 # seq -> (from, cmid, body)
        self.seen_cmids = set()
        self.last_seq = 0
        self.first_seq = None
        self.reconnects = 0
        self.error = None
        self.go = threading.Event()
        self.want_cmids = None           # set by main: every cmid sent

    def body(self, cmid):
        return "message %s from %s" % (cmid, self.user)

    # --- connection -------------------------------------------------

    def connect(self, host, resume):
        ws = WS(host.port)
        self.rid += 1
        args = {"op": "hello", "rid": self.rid, "token": self.c.token(self.user)}
        if resume:
            args["resume"] = {self.ch: self.last_seq}
        ws.send(frame(2, msgpack.packb(args)))
        r = ws.expect_res(self.rid)
        if not r.get("ok"):
            ws.close()
            raise Failed("hello on %s: %r" % (host.name, r))
        self.ws, self.host = ws, host
        return r

    def reconnect(self, why):
        """A new connection to the first living host from the current one
        on, resumed after last_seq; every send in flight goes again."""
        if self.ws:
            self.ws.close()
            self.ws = None
        self.reconnects += 1
        tk = self.sh.t_kill
        log("note  %s: left %s%s (%s), %d sends in flight" % (
            self.user, self.host.name,
            " %.2f s after the kill" % (time.monotonic() - tk) if tk else "",
            why, len(self.inflight)))
        for cmid, _ in self.inflight.values():
            self.todo.append(cmid)
        self.inflight.clear()
        hosts = self.c.hosts
        i = hosts.index(self.host)
        while True:
            self.check_deadline("reconnect after %s" % why)
            for k in range(len(hosts)):
                h = hosts[(i + k) % len(hosts)]
                if h.dead:
                    continue
                try:
                    self.connect(h, True)
                    log("note  %s: resumed on %s after seq %d" % (
                        self.user, h.name, self.last_seq))
                    return
                except (OSError, Closed, AssertionError, TimeoutError,
                        Failed):
                    pass
            time.sleep(0.2)

    def check_deadline(self, what):
        if self.sh.abort:
            raise Failed("aborted (another client failed)")
        if time.monotonic() > self.sh.deadline:
            raise Failed("%s: scenario deadline passed" % what)

    def request(self, op, **args):
        """A request on a quiet connection (setup), its response."""
        self.rid += 1
        m = {"op": op, "rid": self.rid}
        m.update(args)
        self.ws.send(frame(2, msgpack.packb(m)))
        return self.ws.expect_res(self.rid)

    # --- the stream -------------------------------------------------

    def on_event(self, m):
        if m.get("t") != "ev" or m.get("ch") != self.ch:
            return
        seq = m["seq"]
        if self.first_seq is None:
            self.first_seq = seq
        elif seq != self.last_seq + 1:
            raise Failed("%s: event seq %d after %d (gap or duplicate)"
                         % (self.user, seq, self.last_seq))
        cmid = m.get("cmid")
        if cmid in self.seen_cmids:
            raise Failed("%s: cmid %s in two events (seq %d)"
                         % (self.user, cmid, seq))
        self.seen_cmids.add(cmid)
        self.events[seq] = (m.get("from"), cmid, m.get("body"))
        self.last_seq = seq

    def on_res(self, m):
        got = self.inflight.pop(m.get("rid"), None)
        if got is None:
            return
        cmid, t_sent = got
        now = time.monotonic()
        if m.get("ok"):
            seq = m.get("seq")
            if cmid in self.acked and self.acked[cmid] != seq:
                raise Failed("%s: %s acked as seq %d, then as %d"
                             % (self.user, cmid, self.acked[cmid], seq))
            if cmid not in self.acked:
                took = now - self.first_try[cmid]
                with self.sh.lock:
                    self.sh.acks += 1
                    if took > self.sh.slowest[0]:
                        self.sh.slowest = (took, cmid)
            self.acked[cmid] = seq
            with self.sh.lock:
                tk = self.sh.t_kill
                if tk is not None and t_sent > tk and not m.get("dup") and \
                        self.sh.first_new_ack is None:
                    self.sh.first_new_ack = now - tk
            return
        code = m.get("code")
        if code not in RETRYABLE:
            raise Failed("%s: send %s answered %s: %s"
                         % (self.user, cmid, code, m.get("msg")))
        wait = m.get("retry_ms", 0) / 1000 if code == "RATE_LIMITED" else 0
        self.retry_at[cmid] = now + max(BACKOFF_S, wait)

    def send_some(self):
        now = time.monotonic()
        for cmid, t in list(self.retry_at.items()):
            if t <= now:
                del self.retry_at[cmid]
                self.todo.append(cmid)
        out = []
        while self.todo and len(self.inflight) < WINDOW:
            cmid = self.todo.pop(0)
            if cmid in self.acked:
                continue
            self.rid += 1
            self.inflight[self.rid] = (cmid, now)
            self.first_try.setdefault(cmid, now)
            out.append(frame(2, msgpack.packb(
                {"op": "send", "rid": self.rid, "ch": self.ch,
                 "cmid": cmid, "body": self.body(cmid)})))
        if out:
            self.ws.send(b"".join(out))
        for rid, (cmid, t) in self.inflight.items():
            if now - t > REQ_TIMEOUT_S:
                tk = self.sh.t_kill
                raise Failed("send %s unanswered by %s for %d s (sent %s); "
                             "a living host must answer, UNAVAILABLE at "
                             "worst" % (cmid, self.host.name, REQ_TIMEOUT_S,
                                        "%+.2f s from the kill" % (t - tk)
                                        if tk is not None else "before any kill"))

    def done(self):
        if len(self.acked) < N_MSGS or self.want_cmids is None:
            return False
        return self.want_cmids <= self.seen_cmids

    def stream(self):
        while not self.done():
            if self.sh.stop_reading and len(self.acked) == N_MSGS:
                return
            self.check_deadline("%s: %d/%d acked, %d events seen" % (
                self.user, len(self.acked), N_MSGS, len(self.events)))
            try:
                self.send_some()
                try:
                    m = self.ws.read_msg(timeout=0.05)
                except TimeoutError:
                    continue
                if m.get("t") == "res":
                    self.on_res(m)
                elif m.get("t") == "gap":
                    raise Failed("%s: gap notice %r" % (self.user, m))
                else:
                    self.on_event(m)
            except (OSError, Closed, TimeoutError, AssertionError) as e:
                # a lost connection (kill -9 of its host) or a close frame
                self.reconnect("%s: %s" % (type(e).__name__, e))

    def run(self):
        try:
            self.go.wait()
            self.stream()
        except Exception as e:  # noqa: the main thread reports it
            self.error = "%s: %s" % (type(e).__name__, e)
            self.sh.abort = True


def history(c, host, ch, user):
    """The channel's messages on host, paged oldest first:
    {seq: (from, cmid, body)}."""
    ws = WS(host.port)
    try:
        ws.hello(c.token(user))
        out, after = {}, 0
        while True:
            r = ws.request("history", ch=ch, after=after, limit=200)
            if not r.get("ok"):
                raise Failed("history on %s: %r" % (host.name, r))
            for m in r["msgs"]:
                out[m["seq"]] = (m.get("from"), m.get("cmid"), m.get("body"))
            if not r["msgs"] or not r.get("more"):
                return out
            after = r["msgs"][-1]["seq"]
    finally:
        ws.close()


def run(c, scenario):
    deadline = time.monotonic() + SCENARIO_S
    t0 = time.monotonic()
    c.start()
    sh = Shared(deadline)
    clients = [Client(c, sh, i, c.hosts[i // PER_HOST])
               for i in range(PER_HOST * len(c.hosts))]
    owner = None
    if scenario == "owner_kill":
        owner = c.owner()
        log("note  owner: %s" % owner.name)

    # setup, one client at a time: the first creates the channel on h1,
    # the others join; nobody sends before everyone is in
    for cl in clients:
        cl.connect(cl.host, False)
    r = clients[0].request("ch.create", name="general", kind="public")
    if not r.get("ok"):
        raise Failed("ch.create on h1: %r" % r)
    ch = r["ch"]["id"]
    for cl in clients:
        cl.ch = ch
    for cl in clients[1:]:
        r = cl.request("ch.join", ch=ch)
        if not r.get("ok"):
            raise Failed("%s: ch.join of %s on %s: %r"
                         % (cl.user, ch, cl.host.name, r))
    everything = set()
    for cl in clients:
        everything |= set(cl.cmids)
        cl.want_cmids = everything
    log("note  %d clients in %s, 2 per host (%.1f s of setup)"
        % (len(clients), ch, time.monotonic() - t0))

    nats_victim = None
    if scenario == "nats_kill":
        # chosen before the stream: the kill must land mid-stream
        nats_victim = c.stream_leader()
        log("note  NATS node to kill: n%s (%s)" % (
            nats_victim or 1, "the leader of PARLEY_EV" if nats_victim
            else "no stream leader found"))
        nats_victim = nats_victim or 1

    t1 = time.monotonic()
    for cl in clients:
        cl.start()
        cl.go.set()

    victim = None
    if scenario in ("owner_kill", "nats_kill"):
        # polled tightly: the kill must land mid-stream
        while sh.acks < KILL_AT and not sh.abort and \
                any(cl.is_alive() for cl in clients):
            if time.monotonic() > deadline:
                raise Failed("not %d acks before the deadline" % KILL_AT)
            time.sleep(0.001)
        if not sh.abort:
            t_sig, acked_then = time.monotonic(), sh.acks
            if scenario == "owner_kill":
                owner.kill9()
                victim = owner.name
            else:
                c.nats("kill", str(nats_victim))
                victim = "nats n%d" % nats_victim
            # times are from the signal: SIGKILL stops the process at
            # once, and its parent (init, for a NATS node) may take a
            # while to reap it
            with sh.lock:
                sh.t_kill = t_sig
            log("note  kill -9 of %s after %d acks (reaped %.2f s after "
                "the signal; times below are from the signal)"
                % (victim, acked_then, time.monotonic() - t_sig))

    # every send acked (or a client failed), then the events get a minute
    # more to arrive: what has not by then is reported as missing
    while not sh.abort and time.monotonic() < deadline and \
            any(cl.is_alive() and len(cl.acked) < N_MSGS for cl in clients):
        time.sleep(0.05)
    t_acked = time.monotonic()
    for cl in clients:
        cl.join(max(0, min(deadline, t_acked + EVENTS_S) - time.monotonic()))
    sh.stop_reading = True
    for cl in clients:
        cl.join(max(1, deadline - time.monotonic()))
    errors = ["%s (on %s): %s" % (cl.user, cl.host.name, cl.error)
              for cl in clients if cl.error]
    if any(cl.is_alive() for cl in clients):
        sh.abort = True
        errors.append("clients still running at the deadline")
    if errors:
        raise Failed("; ".join(errors))
    log("note  stream done: %d sends acked, %.1f s; the slowest, %s, "
        "%.2f s after its first try" % (sh.acks, time.monotonic() - t1,
                                         sh.slowest[1], sh.slowest[0]))
    if victim:
        moved = [cl for cl in clients if cl.first_host.dead]
        log("note  reconnects: %s" % ", ".join(
            "%s %d" % (cl.user, cl.reconnects) for cl in clients))
        if sh.first_new_ack is None:
            raise Failed("no send made after the kill of %s was acked" % victim)
        log("note  writable again %.2f s after the kill of %s "
            "(first fresh ack of a send made after it; lease %d ms)"
            % (sh.first_new_ack, victim, LEASE_MS))
        if sh.first_new_ack > WRITABLE_BOUND_S:
            raise Failed("writable again only after %.1f s"
                         % sh.first_new_ack)
        for cl in moved:
            if cl.host.dead or cl.reconnects < 1:
                raise Failed("%s was on the dead %s and did not move"
                             % (cl.user, cl.first_host.name))

    for cl in clients:
        lost = sorted(everything - cl.seen_cmids)
        if lost:
            raise Failed("%s (on %s) never got the events of %d acked "
                         "messages (%s%s), last seq seen %d" % (
                             cl.user, cl.host.name, len(lost),
                             ", ".join(lost[:5]),
                             ", ..." if len(lost) > 5 else "", cl.last_seq))
    # one order: every client saw the same events, contiguous, one per cmid
    ref = clients[0].events
    seqs = sorted(ref)
    if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
        raise Failed("seqs not contiguous: %s..%s, %d events"
                     % (seqs[0], seqs[-1], len(seqs)))
    if len(seqs) != len(everything):
        raise Failed("%d events for %d cmids" % (len(seqs), len(everything)))
    by_cmid = {v[1]: s for s, v in ref.items()}
    if set(by_cmid) != everything:
        raise Failed("events' cmids are not the cmids sent")
    for cl in clients:
        if cl.events != ref:
            diff = [s for s in sorted(set(cl.events) | set(ref))
                    if cl.events.get(s) != ref.get(s)]
            raise Failed("%s saw another sequence than %s: first difference "
                         "at seq %d: %r vs %r" % (
                             cl.user, clients[0].user, diff[0],
                             cl.events.get(diff[0]), ref.get(diff[0])))
        for cmid, seq in cl.acked.items():
            if by_cmid[cmid] != seq:
                raise Failed("%s: %s acked as seq %d, but the event of seq "
                             "%d is %s" % (cl.user, cmid, seq, seq,
                                           ref.get(seq)))
            if ref[seq] != (cl.user, cmid, cl.body(cmid)):
                raise Failed("%s: seq %d is %r" % (cl.user, seq, ref[seq]))
    log("note  one order: seqs %d..%d, %d messages, the same for all %d "
        "clients" % (seqs[0], seqs[-1], len(seqs), len(clients)))
    gone = ["%s (status %d)" % (h.name, h.proc.poll()) for h in c.hosts
            if not h.dead and h.proc.poll() is not None]
    if gone:
        raise Failed("hosts the test did not kill exited: %s" % ", ".join(gone))

    # and history on every host that lives is that sequence (a host may
    # still be applying the last of it: waited for)
    for h in c.hosts:
        if h.dead:
            continue
        last = [None, None]

        def same():
            try:
                last[0] = history(c, h, ch, clients[0].user)
            except (Failed, OSError, Closed, AssertionError,
                    TimeoutError) as e:
                last[1] = e
                return False
            return last[0] == ref
        try:
            wait_until(same, 30, "history on %s" % h.name)
        except Failed:
            if last[0] is None:
                raise Failed("history on %s: %s" % (h.name, last[1]))
            got = last[0]
            diff = [s for s in sorted(set(got) | set(ref))
                    if got.get(s) != ref.get(s)]
            raise Failed("history on %s: %d messages, differs from the "
                         "events at %d seqs (first %s: %r vs %r)" % (
                             h.name, len(got), len(diff), diff[0],
                             got.get(diff[0]), ref.get(diff[0])))
    log("note  history on %s: the same %d messages" % (
        ", ".join(h.name for h in c.hosts if not h.dead), len(ref)))
    for cl in clients:
        if cl.ws:
            cl.ws.close()
    log("note  %s: %.1f s in all" % (scenario, time.monotonic() - t0))


def run_on(c, name, fn):
    """fn(c), then c.stop(); reports and exits 0 (passed) or 1 (fn raised,
    or Cluster.stop found a host that did not exit 0 or refused a write
    outside the log)."""
    ok = False
    try:
        fn(c)
        ok = True
    except Exception as e:  # noqa: any failure, reported below
        log("FAIL  %s: %s: %s" % (name, type(e).__name__, e))
        c.tails()
    finally:
        bad = c.stop()
    if ok and bad:
        log("FAIL  %s: %s" % (name, "; ".join(bad)))
        ok = False
    if ok:
        log("ok    %s" % name)
    sys.exit(0 if ok else 1)


def run_alone(name, doc, fn):
    """main() of a test of its own on a Cluster (test_join.py,
    test_files.py): argv PARLEYD NATS_CLUSTER_SH; fn(cluster) raises to
    fail. Exits 0, 1, 2 (usage) or 77 (no nats-server)."""
    if len(sys.argv) != 3:
        print(doc)
        sys.exit(2)
    if not shutil.which("nats-server"):
        log("skip  nats-server is not installed (scripts/install-deps.sh)")
        sys.exit(77)
    run_on(Cluster(sys.argv[1], sys.argv[2], False), name, fn)


def main():
    if len(sys.argv) not in (4, 5) or sys.argv[3] not in (
            "order", "owner_kill", "nats_kill") or \
            (len(sys.argv) == 5 and sys.argv[4] != "--separate"):
        print(__doc__)
        sys.exit(2)
    parleyd, nats_sh, scenario = sys.argv[1:4]
    separate = len(sys.argv) == 5
    if not separate and not shutil.which("nats-server"):
        log("skip  nats-server is not installed (scripts/install-deps.sh)")
        sys.exit(77)
    run_on(Cluster(parleyd, nats_sh, separate), "cluster_" + scenario,
           lambda c: run(c, scenario))


if __name__ == "__main__":
    main()
