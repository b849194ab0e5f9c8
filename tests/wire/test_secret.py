"""The JWT secret a fresh data directory gets: processes that race to
create it (parleyd token run many times at once, or alongside a starting
server) all end up with the same secret, none fails and none reads a
half-written file; the file is 0600. Before the secret was written through
a temporary file and link(), the losers of the race failed ("cannot read")
or signed with an empty key."""

import base64
import hashlib
import hmac
import os
import shutil
import stat
import subprocess
import sys
import tempfile

exe = sys.argv[1]
failed = 0


def check(ok, what):
    global failed
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failed += 1


def verifies(token, key):
    head, claims, sig = token.split(".")
    want = hmac.new(key, (head + "." + claims).encode(), hashlib.sha256).digest()
    got = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    return hmac.compare_digest(want, got)


ROUNDS, RACERS = 20, 12
for r in range(ROUNDS):
    top = tempfile.mkdtemp(prefix="parley-secret-")
    data = os.path.join(top, "data")
    try:
        procs = [subprocess.Popen([exe, "token", "--user", "u%d" % i,
                                   "--workspace", "acme", "--data", data],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
                 for i in range(RACERS)]
        outs = [p.communicate(timeout=60) for p in procs]
        codes = [p.returncode for p in procs]
        if any(codes):
            check(False, "round %d: a racer failed: %r" % (
                r, [(c, e.strip()) for c, (o, e) in zip(codes, outs) if c]))
            continue
        path = os.path.join(data, "jwt.secret")
        with open(path, "rb") as f:
            key = f.read().rstrip()
        bad = [i for i, (o, e) in enumerate(outs) if not verifies(o.strip(), key)]
        if bad or len(key) != 64:
            check(False, "round %d: %d tokens not signed with the file's secret "
                  "(%d bytes)" % (r, len(bad), len(key)))
            continue
        mode = stat.S_IMODE(os.stat(path).st_mode)
        leftovers = [n for n in os.listdir(data) if n != "jwt.secret"]
        if mode != 0o600 or leftovers:
            check(False, "round %d: mode %o, left behind %r" % (r, mode, leftovers))
            continue
    finally:
        shutil.rmtree(top, ignore_errors=True)
else:
    pass
check(failed == 0, "%d rounds of %d processes making one secret: all agree" %
      (ROUNDS, RACERS))
print("%d passed, %d failed" % (1 if failed == 0 else 0, 1 if failed else 0))
sys.exit(1 if failed else 0)
