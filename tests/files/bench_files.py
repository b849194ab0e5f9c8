"""Files throughput on loopback (not a test: numbers for the report).

usage: bench_files.py PATH/TO/parleyd [MB] [CLIENTS...]

Starts parleyd (--max-file-mb MB+1, a data directory in $TMPDIR), makes
one file of random bytes per client, then for each client count: uploads
(curl -T, POST, Content-Length), each client its own file, all at once;
downloads of those ids at once (curl -o /dev/null). Prints MB/s in all
and per client, beside `cp` of one file on the same disk, with and
without a sync of the copy (an upload's 201 waits for fsync)."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_files import Parleyd  # noqa: E402

EXE = sys.argv[1]
MB = int(sys.argv[2]) if len(sys.argv) > 2 else 100
COUNTS = [int(x) for x in sys.argv[3:]] or [1, 16]


def timed(cmds):
    t0 = time.monotonic()
    ps = [subprocess.Popen(c, stdout=subprocess.PIPE) for c in cmds]
    outs = [p.communicate()[0] for p in ps]
    dt = time.monotonic() - t0
    for p in ps:
        assert p.returncode == 0, "curl failed"
    return dt, outs


def main():
    srv = Parleyd(["--max-file-mb", str(MB + 1), "--file-quota-mb", "1000000"])
    work = tempfile.mkdtemp(prefix="parley-fbench-")
    try:
        n = max(COUNTS)
        files = []
        for i in range(n):
            p = os.path.join(work, "f%d" % i)
            with open(p, "wb") as f:
                for _ in range(MB):
                    f.write(os.urandom(1 << 20))
            files.append(p)
        subprocess.run(["sync"])
        t0 = time.monotonic()
        subprocess.run(["cp", files[0], os.path.join(work, "copy")], check=True)
        cp_s = time.monotonic() - t0
        os.unlink(os.path.join(work, "copy"))
        t0 = time.monotonic()
        subprocess.run(["cp", files[0], os.path.join(work, "copy")], check=True)
        subprocess.run(["sync", os.path.join(work, "copy")], check=True)
        cps_s = time.monotonic() - t0
        print("uptime: %s" % subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
        print("cp %d MB: %.0f MB/s; cp + sync: %.0f MB/s" % (MB, MB / cp_s, MB / cps_s))
        for k in COUNTS:
            tok = srv.token("bench%d" % k)
            url = "http://127.0.0.1:%d/api/v1/files?name=f.bin" % srv.port
            up = [["curl", "-s", "-f", "-T", files[i], "-X", "POST", "-H",
                   "Authorization: Bearer " + tok, url] for i in range(k)]
            dt, outs = timed(up)
            ids = [json.loads(o)["id"] for o in outs]
            print("upload   %2d x %d MB: %.2f s, %.0f MB/s in all, %.0f MB/s each"
                  % (k, MB, dt, k * MB / dt, MB / dt))
            down = [["curl", "-s", "-f", "-o", "/dev/null", "-H",
                     "Authorization: Bearer " + tok,
                     "http://127.0.0.1:%d/api/v1/files/%s" % (srv.port, i)] for i in ids]
            dt, _ = timed(down)
            print("download %2d x %d MB: %.2f s, %.0f MB/s in all, %.0f MB/s each"
                  % (k, MB, dt, k * MB / dt, MB / dt))
        print("uptime: %s" % subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
        rss = open("/proc/%d/status" % srv.proc.pid).read()
        print("parleyd " + " ".join(re.findall(r"VmHWM:\s+\d+ kB", rss)))
    finally:
        srv.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
