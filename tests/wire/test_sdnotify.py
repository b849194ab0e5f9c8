"""parleyd under systemd's eyes (issue 16), without systemd: the test plays
the service manager. It listens on a Unix datagram socket given as
NOTIFY_SOCKET and checks what parleyd tells it: READY=1 (with MAINPID and a
STATUS) once the port answers and the startup line is out, WATCHDOG=1 again
and again when WATCHDOG_USEC asks for it (and never when it does not, or
when WATCHDOG_PID names another process), the pings stopping while a shard
thread is held still (ptrace; skipped where ptrace is not allowed) and
coming back when it runs again, STOPPING=1 on SIGTERM, exit 0. And the log
format: with JOURNAL_STREAM naming stderr, lines carry journald's <N>
priority prefixes and no time; without it, an ISO time and a level."""
import ctypes
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wsclient import stop_proc  # noqa: E402

EXE = sys.argv[1]
TIMEOUT = 30.0  # generous: slow, loaded CI machines, ASan builds
failed = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else ": " + detail), flush=True)
    if not cond:
        failed.append(name)


class Manager:
    """The notification socket's end that systemd would hold."""

    def __init__(self, tmp):
        self.path = os.path.join(tmp, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.log = []  # (monotonic time, {key: value}) per datagram

    def recv(self, timeout):
        """The next datagram as a dict, or None after timeout."""
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return None
        d = self.sock.recv(65536).decode()
        m = dict(l.split("=", 1) for l in d.split("\n") if "=" in l)
        self.log.append((time.monotonic(), m))
        return m

    def wait_for(self, key, timeout=TIMEOUT):
        """Reads datagrams until one has key; returns it (None: timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv(deadline - time.monotonic())
            if m is None:
                return None
            if key in m:
                return m

    def close(self):
        self.sock.close()
        os.unlink(self.path)


def start(tmp, env_extra, extra=()):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
    env.update(env_extra)
    data = os.path.join(tmp, "data")
    errf = open(os.path.join(tmp, "stderr-%d" % len(os.listdir(tmp))), "w+")
    p = subprocess.Popen([EXE, "--listen", "127.0.0.1:0", "--data", data, "--shards", "2",
                          "--no-pin"] + list(extra),
                         stdout=subprocess.PIPE, stderr=errf, env=env)
    return p, errf




def stderr_text(errf):
    errf.flush()
    errf.seek(0)
    return errf.read()


def healthz(port):
    try:
        return urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port,
                                      timeout=TIMEOUT).read()
    except OSError as e:
        return repr(e).encode()


# ---- ptrace: hold one thread still (PTRACE_SEIZE + PTRACE_INTERRUPT stop
# that thread alone, not its process: no group stop)
PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.waitpid.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
WALL = 0x40000000


def shard_tid(pid, name):
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                if f.read().strip() == name:
                    return int(tid)
        except OSError:
            pass
    return None


def freeze(tid):
    """Stops thread tid; an error text when ptrace is not allowed here."""
    if libc.ptrace(PTRACE_SEIZE, tid, None, None) != 0:
        return "PTRACE_SEIZE: " + os.strerror(ctypes.get_errno())
    why = None
    if libc.ptrace(PTRACE_INTERRUPT, tid, None, None) != 0:
        why = "PTRACE_INTERRUPT: " + os.strerror(ctypes.get_errno())
    else:
        st = ctypes.c_int()
        if libc.waitpid(tid, ctypes.byref(st), WALL) != tid:
            why = "waitpid: " + os.strerror(ctypes.get_errno())
    if why:
        thaw(tid)
    return why


def thaw(tid):
    libc.ptrace(PTRACE_DETACH, tid, None, None)


tmp = tempfile.mkdtemp(prefix="parley-sdnotify-")

# ---- READY, the watchdog, STOPPING
mgr = Manager(tmp)
p, errf = start(tmp, {"NOTIFY_SOCKET": mgr.path, "WATCHDOG_USEC": "2000000"})
try:
    ready = mgr.wait_for("READY")
    check("READY=1 arrives", ready is not None and ready.get("READY") == "1", repr(mgr.log))
    ready = ready or {}
    # what parleyd did before READY is done: the startup line is in the pipe
    # and the port answers
    line_out = select.select([p.stdout], [], [], 0)[0] != []
    check("READY=1 comes after the startup line", line_out, "stdout empty at READY")
    m = re.search(r"127\.0\.0\.1:(\d+)", ready.get("STATUS", ""))
    check("READY's STATUS says where it listens", m is not None, repr(ready))
    port = int(m.group(1)) if m else 0
    if port:
        c = socket.socket()
        c.settimeout(TIMEOUT)
        err = c.connect_ex(("127.0.0.1", port))
        c.close()
        check("the port accepts connections at READY", err == 0, os.strerror(err))
    check("READY carries MAINPID", ready.get("MAINPID") == str(p.pid), repr(ready))
    line = p.stdout.readline().decode()
    check("the startup line names the same port", ("127.0.0.1:%d" % port) in line, line)
    check("the server answers", healthz(port).startswith(b"ok"))

    pings = 0
    deadline = time.monotonic() + TIMEOUT
    while pings < 3 and time.monotonic() < deadline:
        if mgr.wait_for("WATCHDOG", deadline - time.monotonic()):
            pings += 1
    check("WATCHDOG=1 comes again and again", pings >= 3, "%d pings" % pings)
    check("no STOPPING before the signal", not any("STOPPING" in d for _, d in mgr.log),
          repr(mgr.log))

    # A shard that stops turning its loop stops the pings (systemd would
    # restart parleyd); when it turns again, they come back.
    tid = shard_tid(p.pid, "shard 1")
    check("shard threads are named", tid is not None,
          repr([open("/proc/%d/task/%s/comm" % (p.pid, t)).read()
                for t in os.listdir("/proc/%d/task" % p.pid)]))
    why = freeze(tid) if tid else "no shard thread"
    if why:
        print("SKIPPED the wedged-shard check: " + why, flush=True)
    else:
        try:
            # pings may still come until the shard's last turn is 1 s (half
            # the interval) old; after that, none for as long as it is held
            frozen = time.monotonic()
            last = frozen
            quiet_since = None
            deadline = frozen + TIMEOUT
            # wait for the warning that says which shard, then for 3 s
            # (several ping intervals) without a ping
            while time.monotonic() < deadline:
                if quiet_since is None and "shard 1 has not turned its loop" in stderr_text(errf):
                    quiet_since = time.monotonic()
                if quiet_since is not None and time.monotonic() - quiet_since >= 3.0:
                    break
                d = mgr.wait_for("WATCHDOG", 0.2)
                if d is not None:
                    last = time.monotonic()
                    if quiet_since is not None:
                        quiet_since = None  # a ping after the warning: wrong
                        break
            check("a wedged shard is named in the log",
                  "shard 1 has not turned its loop" in stderr_text(errf),
                  stderr_text(errf)[-2000:])
            check("no WATCHDOG=1 while a shard is wedged",
                  quiet_since is not None and time.monotonic() - quiet_since >= 3.0,
                  "last ping %.1f s after the freeze" % (last - frozen))
        finally:
            thaw(tid)
        check("WATCHDOG=1 again once the shard turns",
              mgr.wait_for("WATCHDOG") is not None, repr(mgr.log[-3:]))
    # SIGHUP (systemctl reload): RELOADING=1, then READY=1 again, and the
    # server goes on (without a certificate there is nothing to reload)
    p.send_signal(signal.SIGHUP)
    rl = mgr.wait_for("RELOADING")
    check("SIGHUP: RELOADING=1", rl is not None and rl.get("RELOADING") == "1", repr(mgr.log[-3:]))
    rd = mgr.wait_for("READY")
    check("SIGHUP: READY=1 after it", rd is not None and rd.get("READY") == "1", repr(mgr.log[-3:]))
    check("SIGHUP: the server goes on", p.poll() is None and healthz(port).startswith(b"ok"))
finally:
    rc = stop_proc(p)
check("exit 0 on SIGTERM", rc == 0, repr(rc))
stopping = mgr.wait_for("STOPPING", 5.0)
check("STOPPING=1 after SIGTERM", stopping is not None and stopping.get("STOPPING") == "1",
      repr(mgr.log[-3:]))
err = stderr_text(errf)
check("plain log lines carry an ISO time and a level",
      re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info +server: .*draining", err, re.M)
      is not None, err[-2000:])
mgr.close()

# ---- no watchdog asked for (or asked for another process): no pings
for name, env in (("no WATCHDOG_USEC", {}),
                  ("WATCHDOG_PID of another process", {"WATCHDOG_USEC": "400000",
                                                       "WATCHDOG_PID": "1"})):
    mgr = Manager(tmp)
    env["NOTIFY_SOCKET"] = mgr.path
    p, errf = start(tmp, env)
    try:
        check(name + ": READY=1", mgr.wait_for("READY") is not None, repr(mgr.log))
        # a while, then the stop: every datagram until STOPPING is in the log
        time.sleep(1.5)
    finally:
        rc = stop_proc(p)
    check(name + ": exit 0", rc == 0, repr(rc))
    mgr.wait_for("STOPPING", 5.0)
    check(name + ": no WATCHDOG=1", not any("WATCHDOG" in d for _, d in mgr.log),
          repr(mgr.log))
    mgr.close()

# ---- journald's format: JOURNAL_STREAM names stderr's device and inode
# (a secret others can read gives a warning line too)
secret = os.path.join(tmp, "secret")
with open(secret, "w") as f:
    f.write("x" * 40)
os.chmod(secret, 0o644)
r, w = os.pipe()
st = os.fstat(w)
env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
p = subprocess.Popen([EXE, "--listen", "127.0.0.1:0", "--data", os.path.join(tmp, "data"),
                      "--jwt-secret-file", secret, "--shards", "1", "--no-pin"],
                     stdout=subprocess.PIPE, stderr=w, env=env)
os.close(w)
p.stdout.readline()
rc = stop_proc(p)
with os.fdopen(r) as f:
    jlines = f.read().splitlines()
check("journal: exit 0", rc == 0, repr(rc))
check("journal: a warning carries <4>",
      any(re.match(r"^<4>auth: .*can be read by others", l) for l in jlines), repr(jlines))
check("journal: info carries <6>",
      any(re.match(r"^<6>server: .*draining", l) for l in jlines), repr(jlines))
check("journal: every line has a priority and no time",
      jlines != [] and all(re.match(r"^<[0-7]>[a-z]", l) and not re.search(r"\d\d:\d\d:\d\d", l)
                           for l in jlines), repr(jlines))

# JOURNAL_STREAM that names something else (a stale one, inherited): plain
env["JOURNAL_STREAM"] = "1:1"
p = subprocess.Popen([EXE, "--listen", "127.0.0.1:0", "--data", os.path.join(tmp, "data"),
                      "--jwt-secret-file", secret, "--shards", "1", "--no-pin"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
p.stdout.readline()
p.send_signal(signal.SIGTERM)
out, err = p.communicate(timeout=60)
check("another JOURNAL_STREAM: lines carry a time, no priority",
      re.search(r"^\d{4}-\d\d-\d\dT\S+ warn +auth: ", err, re.M) is not None
      and not re.search(r"^<\d>", err, re.M), err)

subprocess.run(["rm", "-rf", tmp])
if failed:
    print("FAILED: " + ", ".join(failed))
    sys.exit(1)
print("all passed")
