#!/usr/bin/python3
"""Hosts of a cluster (issue 18, step 2a): parleyd --cluster joins a
3-node NATS cluster, holds a host lease, and sees the other hosts come and
go (/metrics: parley_cluster_hosts, parley_cluster_lease_ok).

- three hosts see three;
- kill -9 of one: the others see two once its lease expires;
- SIGTERM of one: it lets its lease go at once (well before expiry);
- the killed host, started again under its id, is counted again;
- kill -9 of a NATS node: the hosts' leases stay good and all are counted;
- no NATS to reach: parleyd exits 1 and says why; a bad --lease-ms: 2.

Usage: test_hosts.py PARLEYD NATS_CLUSTER_SH
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

PARLEYD, NATS_SH = sys.argv[1], sys.argv[2]
LEASE_MS = 3000
passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print("ok   ", what, flush=True)
    else:
        failed += 1
        print("FAIL ", what, flush=True)


def metric(port, name):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                    timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r"^%s (\d+)" % name, text, re.M)
    return int(m.group(1)) if m else None


def wait_for(fn, want, deadline_s):
    """Polls fn() until it returns want or deadline_s pass; the last value."""
    end = time.monotonic() + deadline_s
    v = fn()
    while v != want and time.monotonic() < end:
        time.sleep(0.1)
        v = fn()
    return v


def keyfile(path):
    """32 random bytes, as parleyd makes its own (mode 0600)."""
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
              "wb") as f:
        f.write(os.urandom(32))
    return path


class Host:
    def __init__(self, work, name, urls, dmkey=None, new_log=False):
        self.name = name
        self.data = os.path.join(work, name)
        os.makedirs(self.data, exist_ok=True)
        self.log = open(os.path.join(work, name + ".log"), "a")
        self.proc = subprocess.Popen(
            [PARLEYD, "--listen", "127.0.0.1:0", "--data", self.data,
             "--shards", "1", "--no-pin", "--cluster", urls,
             "--host-id", name, "--lease-ms", str(LEASE_MS),
             "--jwt-secret-file", os.path.join(work, "jwt.secret"),
             "--dm-key-file", dmkey or os.path.join(work, "dm.key")]
            + (["--cluster-new-log"] if new_log else []),
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError("%s did not start: %r" % (name, line))
        self.port = int(m.group(1))

    def hosts(self):
        return metric(self.port, "parley_cluster_hosts")

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def finish(hosts, work, base, keep_on_failure=False):
    """Kills what is left of hosts, stops the NATS nodes, removes work
    (kept when a check failed and keep_on_failure), prints the count and
    exits with it."""
    for h in hosts:
        if h.proc.poll() is None:
            h.proc.kill()
            h.proc.wait()
    try:
        nats("stop", work, base)
    except Exception as e:  # noqa: report, keep cleaning
        print("stop:", e)
    if failed and keep_on_failure:
        print("logs kept in", work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


def nats(cmd, work, base, *extra):
    r = subprocess.run(["bash", NATS_SH, cmd] + list(extra) +
                       [os.path.join(work, "nats"), str(base)],
                       capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise RuntimeError("nats-cluster.sh %s: %s" % (cmd, r.stderr))
    return r.stdout.strip()


def main():
    work = tempfile.mkdtemp(prefix="parley-hosts-")
    base = 20000 + (os.getpid() % 300) * 30
    hosts = []
    try:
        urls = nats("start", work, base)
        keyfile(os.path.join(work, "jwt.secret"))
        keyfile(os.path.join(work, "dm.key"))
        hosts = [Host(work, "h%d" % i, urls) for i in (1, 2, 3)]
        # a host whose DM key is not the cluster's would derive other DM
        # ids: it refuses to join
        try:
            Host(work, "h9", urls, keyfile(os.path.join(work, "other.key")))
            check(False, "a host with another DM key refuses to start")
        except RuntimeError:
            with open(os.path.join(work, "h9.log")) as f:
                check("--dm-key-file" in f.read(),
                      "a host with another DM key refuses to start, "
                      "saying why")
        for h in hosts:
            check(wait_for(h.hosts, 3, 15) == 3,
                  "%s counts 3 hosts" % h.name)
        check(metric(hosts[0].port, "parley_cluster_lease_ok") == 1,
              "h1's own lease is good")

        # kill -9: the lease is not released; it expires
        h3 = hosts[2]
        h3.stop(signal.SIGKILL)
        t0 = time.monotonic()
        v = wait_for(hosts[0].hosts, 2, LEASE_MS / 1000 * 4)
        check(v == 2, "after kill -9 of h3, h1 counts 2 (got %r, %.1f s)"
              % (v, time.monotonic() - t0))
        check(wait_for(hosts[1].hosts, 2, 5) == 2, "and so does h2")

        # the same id again
        hosts[2] = Host(work, "h3", urls)
        check(wait_for(hosts[0].hosts, 3, 15) == 3, "h3 back: h1 counts 3")

        # a NATS node dies: leases are renewed through the others
        nats("kill", work, base, "1")
        time.sleep(LEASE_MS / 1000 * 2)
        check(all(wait_for(h.hosts, 3, 20) == 3 for h in hosts),
              "a NATS node killed: every host still counts 3")
        check(all(wait_for(lambda: metric(h.port, "parley_cluster_lease_ok"),
                           1, 20) == 1 for h in hosts),
              "and every host's lease is good")
        nats("start", work, base)

        # SIGTERM: the lease goes with the host, before it would expire
        rc = hosts[1].stop()
        check(rc == 0, "h2 exits 0 on SIGTERM (got %r)" % rc)
        check(wait_for(hosts[0].hosts, 2, LEASE_MS / 1000 / 2) == 2,
              "h2's lease released: h1 counts 2 within half a lease")
        for h in (hosts[0], hosts[2]):
            check(h.stop() == 0, "%s exits 0" % h.name)
        hosts = []

        # nothing to reach
        r = subprocess.run([PARLEYD, "--listen", "127.0.0.1:0", "--data",
                            os.path.join(work, "lonely"), "--cluster",
                            "nats://127.0.0.1:%d" % (base + 29),
                            "--host-id", "lonely"],
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 1 and "nats://127.0.0.1:%d" % (base + 29)
              in r.stderr, "no NATS: exit 1 naming the URL (got %r)"
              % r.returncode)
        r = subprocess.run([PARLEYD, "--data", os.path.join(work, "x"),
                            "--cluster", urls, "--lease-ms", "10"],
                           capture_output=True, text=True, timeout=30)
        check(r.returncode == 2 and "lease-ms" in r.stderr,
              "--lease-ms 10: exit 2")
    finally:
        finish(hosts, work, base)


if __name__ == "__main__":
    main()
