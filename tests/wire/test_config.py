"""parleyd --version and --config FILE (issue 16): the version is the
build's git describe; a config file sets any flag by its name, a flag on
the command line wins over it, and a bad file (unknown key or section, a
bad boolean, a line that is not key = value, a missing file) stops the
start with the file, the line and why."""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

EXE = sys.argv[1]
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
failed = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else ": " + detail))
    if not cond:
        failed.append(name)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(args):
    p = subprocess.Popen([EXE] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    return p, line


def stop(p):
    p.terminate()
    return p.wait(timeout=30)


tmp = tempfile.mkdtemp(prefix="parley-config-")

# --version
r = subprocess.run([EXE, "--version"], capture_output=True, text=True, timeout=30)
check("--version exits 0", r.returncode == 0, repr(r))
m = re.match(r"^parleyd (\S+)\n$", r.stdout)
check("--version prints parleyd VERSION", m is not None, repr(r.stdout))
g = subprocess.run(["git", "-C", SRC, "describe", "--always", "--tags"],
                   capture_output=True, text=True)
if m and g.returncode == 0:
    # the build's describe, maybe marked -dirty, maybe a commit or two old
    # when the tree moved on without a reconfigure: the same history
    want = g.stdout.strip()
    got = m.group(1).replace("-dirty", "")
    check("--version is the git describe of the source", got == want or
          subprocess.run(["git", "-C", SRC, "merge-base", "--is-ancestor",
                          got.split("-g")[-1], "HEAD"]).returncode == 0,
          "%r vs %r" % (got, want))

# a config file sets flags by name
port = free_port()
data = os.path.join(tmp, "data")
conf = os.path.join(tmp, "parley.conf")
with open(conf, "w") as f:
    f.write("# a comment\n\n; another\nlisten = 127.0.0.1:%d\ndata = %s\n"
            "shards = 1\nno-search = true\nsend-rate = 77\n" % (port, data))
p, line = start(["--config", conf])
check("config: listens where the file says", ("127.0.0.1:%d" % port) in line and data in line, line)
try:
    body = urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=10).read()
    check("config: the server answers", body.startswith(b"ok"), repr(body))
finally:
    check("config: exits 0 on SIGTERM", stop(p) == 0)
check("config: the data directory is the file's", os.path.isdir(os.path.join(data, "db")))

# a flag wins over its key
port2 = free_port()
p, line = start(["--config", conf, "--listen", "127.0.0.1:%d" % port2])
check("a flag overrides the file", ("127.0.0.1:%d" % port2) in line, line)
stop(p)
p, line = start(["--listen", "127.0.0.1:%d" % port2, "--config=" + conf])
check("a flag overrides the file, whatever the order", ("127.0.0.1:%d" % port2) in line, line)
stop(p)


def bad(text, want, name):
    path = os.path.join(tmp, "bad.conf")
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([EXE, "--config", path], capture_output=True, text=True, timeout=30)
    check(name, r.returncode == 2 and want in r.stderr, "%d %r" % (r.returncode, r.stderr))


bad("# c\n\nshards = 1\nbogus = 1\n", "bad.conf:4: unknown key bogus", "unknown key, with its line")
bad("[other]\nshards = 1\n", "bad.conf:2: unknown section [other]", "unknown section")
bad("no-search = maybe\n", "no-search: expected true or false", "bad boolean")
bad("shards\n", "bad.conf:1: not key = value", "a line that is not key = value")
bad("config = x\n", "unknown key config", "config in a config file")
bad("shards = many\n", "--shards: expected a number", "a bad value is the flag's error")
r = subprocess.run([EXE, "--config", os.path.join(tmp, "missing.conf")],
                   capture_output=True, text=True, timeout=30)
check("a missing file", r.returncode == 2 and "missing.conf" in r.stderr, r.stderr)

with open(conf, "w") as f:
    f.write("[parleyd]\nlisten = 127.0.0.1:%d\ndata = %s\nno-pin = false\n" % (free_port(), data))
p, line = start(["--config", conf])
check("a [parleyd] section, a false boolean", "listening" in line, line)
stop(p)

# secrets: a short one, or one others can read, is warned about
sec = os.path.join(tmp, "short.secret")
with open(sec, "w") as f:
    f.write("short\n")
os.chmod(sec, 0o644)
p = subprocess.Popen([EXE, "--listen", "127.0.0.1:0", "--data", os.path.join(tmp, "d2"),
                      "--jwt-secret-file", sec], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
p.stdout.readline()
stop(p)
err = p.stderr.read()
check("a 5-byte secret is warned about", "5-byte secret" in err and "at least 32" in err, err)
check("a secret others can read is warned about", "mode 0644" in err and "chmod 600" in err, err)
p = subprocess.Popen([EXE, "--listen", "127.0.0.1:0", "--data", os.path.join(tmp, "d3")],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
p.stdout.readline()
stop(p)
err = p.stderr.read()
check("the secret parleyd makes draws no warning", "warning" not in err, err)
check("the secret parleyd makes is 0600",
      os.stat(os.path.join(tmp, "d3", "jwt.secret")).st_mode & 0o777 == 0o600)

subprocess.run(["rm", "-rf", tmp])
print("%d passed, %d failed" % (0, len(failed)) if failed else "all passed")
sys.exit(1 if failed else 0)
