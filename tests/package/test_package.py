"""The Debian package (issue 16), end to end on this machine: cpack makes
the .deb from this (release) build, dpkg installs it, the files are where
they belong, the postinst made the `parley` system user and /var/lib/parley
(0700, parley's); then the installed server runs with the installed,
unchanged config: as the systemd service where systemd is PID 1 (a runtime
drop-in moves it to a free port), else started by hand as the parley user
with only the port overridden. /healthz answers, a token minted with
`parleyd token` as parley passes a WebSocket hello, SIGTERM stops it with
status 0, the JWT secret it made is 0600 and parley's. Then dpkg --purge,
and what the purge keeps on purpose (the data, the user) is removed too, so
the machine is as before. Needs root and dpkg: says SKIPPED (77) without,
or when a parley that this test did not install is on the machine.

usage: test_package.py BUILD_DIR SOURCE_DIR"""
import filecmp
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import urllib.request

BUILD, SRC = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(SRC, "tests", "wire"))
from wsclient import WS  # noqa: E402  (the shared WebSocket client)

TIMEOUT = 60.0
DATA = "/var/lib/parley"
BACKUPS = "/var/backups/parley"
UNIT = "/lib/systemd/system/parleyd.service"
CONF = "/etc/parley/parleyd.conf"
MARK = os.path.join(DATA, ".installed-by-parley-package-test")
DROPIN = "/run/systemd/system/parleyd.service.d/package-test.conf"
failed = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)), flush=True)
    if not cond:
        failed.append(name)
    return cond


def run(args, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 600)
    return subprocess.run(args, **kw)


def skip(why):
    print("SKIPPED: " + why)
    sys.exit(77)


def installed():
    r = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "parley"])
    return r.returncode == 0 and r.stdout[:2] in ("ii", "iF", "iU", "rc", "iH")


def user_exists():
    try:
        pwd.getpwnam("parley")
        return True
    except KeyError:
        return False


def cleanup():
    """Purge the package and what the purge keeps on purpose."""
    if DROPIN and os.path.exists(DROPIN):
        os.unlink(DROPIN)
        os.rmdir(os.path.dirname(DROPIN))
        if systemd:
            run(["systemctl", "daemon-reload"])
    run(["dpkg", "--purge", "parley"])
    shutil.rmtree(DATA, ignore_errors=True)
    shutil.rmtree(BACKUPS, ignore_errors=True)
    if user_exists():
        run(["deluser", "--quiet", "--system", "parley"])
    try:
        grp.getgrnam("parley")
        run(["delgroup", "--quiet", "--system", "parley"])
    except KeyError:
        pass


if os.geteuid() != 0:
    skip("needs root (dpkg -i, a system user)")
for tool in ("dpkg", "cpack", "dpkg-shlibdeps", "setpriv", "adduser"):
    if not shutil.which(tool):
        skip("no %s here" % tool)
systemd = os.path.isdir("/run/systemd/system")
# Left by an earlier run of this test that was cut off: ours to clean.
if os.path.exists(MARK):
    print("an earlier run left its installation: purging it first")
    cleanup()
if installed() or os.path.exists(DATA) or os.path.exists(BACKUPS) or user_exists():
    skip("parley is installed here, or /var/lib/parley or the user parley exists: "
         "not ours to replace")

tmp = tempfile.mkdtemp(prefix="parley-package-")
proc = None
try:
    # ---- build the package from this build
    r = run(["cpack", "-G", "DEB", "-B", tmp], cwd=BUILD)
    debs = [f for f in os.listdir(tmp) if re.match(r"^parley_.*\.deb$", f)]
    if not check("cpack makes parley_VERSION_ARCH.deb", r.returncode == 0 and len(debs) == 1,
                 r.stdout[-3000:] + r.stderr[-3000:]):
        sys.exit(1)
    deb = os.path.join(tmp, debs[0])
    print("package: %s, %d bytes" % (debs[0], os.path.getsize(deb)), flush=True)
    r = run(["dpkg-deb", "-f", deb, "Version", "Depends"])
    check("a Debian version and the libraries' packages as dependencies",
          re.match(r"^Version: [0-9][0-9A-Za-z.+~]*\n", r.stdout) is not None
          and "librocksdb" in r.stdout and "adduser" in r.stdout, r.stdout)

    # ---- install it
    r = run(["dpkg", "-i", deb], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if not check("dpkg -i installs it", r.returncode == 0 and installed(),
                 r.stdout[-3000:] + r.stderr[-3000:]):
        sys.exit(1)
    if os.path.isdir(DATA):
        open(MARK, "w").close()  # see the top: a cut-off run is ours to clean

    st = os.stat("/usr/bin/parleyd")
    check("/usr/bin/parleyd, executable", stat.S_ISREG(st.st_mode) and st.st_mode & 0o111)
    check("the unit in /lib/systemd/system", os.path.isfile(UNIT))
    check("the unit is the project's", os.path.isfile(UNIT) and filecmp.cmp(
        UNIT, os.path.join(SRC, "packaging", "parleyd.service"), shallow=False))
    check("the default config in /etc/parley", os.path.isfile(CONF) and filecmp.cmp(
        CONF, os.path.join(SRC, "packaging", "parleyd.conf"), shallow=False))
    r = run(["dpkg-query", "-W", "-f=${Conffiles}", "parley"])
    check("the config is a conffile", CONF in r.stdout, r.stdout)
    check("docs in /usr/share/doc/parley",
          all(os.path.isfile("/usr/share/doc/parley/" + f) for f in ("README.md", "copyright")))
    r = run(["/usr/bin/parleyd", "--version"])
    b = run([os.path.join(BUILD, "parleyd"), "--version"])
    check("the installed parleyd is this build's", r.returncode == 0 and r.stdout == b.stdout,
          "%r vs %r" % (r.stdout, b.stdout))
    r = run(["ldd", "/usr/bin/parleyd"])
    check("every library it needs is there", r.returncode == 0 and "not found" not in r.stdout,
          r.stdout)
    if shutil.which("systemd-analyze"):
        r = run(["systemd-analyze", "verify", UNIT])
        check("systemd-analyze verify: the unit is sound", r.returncode == 0 and
              "parleyd.service" not in r.stderr, r.stdout + r.stderr)

    if shutil.which("deb-systemd-helper"):
        check("the service is enabled (multi-user.target wants it)", os.path.islink(
            "/etc/systemd/system/multi-user.target.wants/parleyd.service"))

    # ---- the user and the data directory the postinst made
    try:
        pw = pwd.getpwnam("parley")
    except KeyError:
        pw = None
    if not check("the parley user exists", pw is not None):
        sys.exit(1)
    check("a system user (uid < 1000), no login shell",
          pw.pw_uid < 1000 and not pw.pw_shell.endswith(("/bash", "/sh")), repr(pw))
    check("its group parley", grp.getgrgid(pw.pw_gid).gr_name == "parley")
    check("its home is /var/lib/parley", pw.pw_dir == DATA, pw.pw_dir)
    st = os.stat(DATA)
    check("/var/lib/parley: 0700, parley's",
          stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == pw.pw_uid and st.st_gid == pw.pw_gid,
          "mode %o uid %d gid %d" % (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))

    # ---- run it: the installed binary, the installed config
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")}
    if systemd:
        # the postinst started it on the config's port; on a free one here
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        os.makedirs(os.path.dirname(DROPIN), exist_ok=True)
        with open(DROPIN, "w") as f:
            f.write("[Service]\nExecStart=\nExecStart=/usr/bin/parleyd --config %s "
                    "--listen 127.0.0.1:%d\n" % (CONF, port))
        run(["systemctl", "daemon-reload"])
        r = run(["systemctl", "restart", "parleyd"])  # Type=notify: waits for READY=1
        active = run(["systemctl", "is-active", "parleyd"]).stdout.strip()
        check("systemctl restart parleyd: active", r.returncode == 0 and active == "active",
              r.stderr + active + run(["journalctl", "-u", "parleyd", "-n", "30",
                                       "--no-pager"]).stdout)
        mainpid = int(run(["systemctl", "show", "-p", "MainPID", "--value", "parleyd"]).stdout)
        check("it runs as parley", mainpid > 0 and os.stat("/proc/%d" % mainpid).st_uid == pw.pw_uid)
    else:
        print("systemd is not PID 1 here: parleyd started by hand as parley", flush=True)
        proc = subprocess.Popen(
            ["setpriv", "--reuid=parley", "--regid=parley", "--init-groups", "--",
             "/usr/bin/parleyd", "--config", CONF, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, text=True, cwd="/", env=env)
        line = proc.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        check("parleyd starts with the installed config", m is not None and DATA in line, line)
        if not m:
            sys.exit(1)
        port = int(m.group(1))
        check("it runs as parley", os.stat("/proc/%d" % proc.pid).st_uid == pw.pw_uid)

    try:
        body = urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=TIMEOUT).read()
    except OSError as e:
        body = repr(e).encode()
    check("/healthz answers ok", body.startswith(b"ok"), repr(body))
    r = run(["setpriv", "--reuid=parley", "--regid=parley", "--init-groups", "--",
             "/usr/bin/parleyd", "token", "--user", "alice", "--workspace", "acme",
             "--data", DATA], cwd="/", env=env)
    token = r.stdout.strip()
    check("parleyd token, as parley, with the server's secret", r.returncode == 0 and token,
          r.stderr)
    try:
        ws = WS(port)
        res = ws.request("hello", token=token)
        ws.close()
    except Exception as e:  # noqa: BLE001  (any failure is the check's)
        res = repr(e)
    check("a WebSocket hello with that token", isinstance(res, dict) and res.get("ok"), res)
    st = os.stat(BACKUPS) if os.path.isdir(BACKUPS) else None
    check("/var/backups/parley: 0700, parley's",
          st is not None and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == pw.pw_uid)
    # an online backup as the README says, as parley: the running server
    # (sandboxed under systemd) writes its checkpoint there
    r = run(["setpriv", "--reuid=parley", "--regid=parley", "--init-groups", "--",
             "/usr/bin/parleyd", "backup", "--data", DATA, BACKUPS + "/t1"], cwd="/", env=env)
    check("parleyd backup into /var/backups/parley while it runs",
          r.returncode == 0 and os.path.isdir(BACKUPS + "/t1/db"), r.stdout + r.stderr)

    if systemd:
        r = run(["systemctl", "stop", "parleyd"])
        result = run(["systemctl", "show", "-p", "Result", "--value", "parleyd"]).stdout.strip()
        check("systemctl stop: a clean stop", r.returncode == 0 and result == "success", result)
    else:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        proc = None
        check("SIGTERM: exit 0", rc == 0, rc)
    secret = os.path.join(DATA, "jwt.secret")
    st = os.stat(secret) if os.path.exists(secret) else None
    check("the JWT secret is 0600 and parley's",
          st is not None and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == pw.pw_uid,
          st and "mode %o uid %d" % (stat.S_IMODE(st.st_mode), st.st_uid))
    st = os.stat(os.path.join(DATA, "db"))
    check("the database is parley's", st.st_uid == pw.pw_uid)

    # ---- installed again (what an upgrade does: the postinst runs with the
    # old version): an edited config is kept, the data stays
    with open(secret, "rb") as f:
        key = f.read()
    with open(CONF, "a") as f:
        f.write("# edited by the package test\n")
    r = run(["dpkg", "--force-confdef", "--force-confold", "-i", deb], stdin=subprocess.DEVNULL,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    check("dpkg -i again (an upgrade)", r.returncode == 0 and installed(), r.stdout + r.stderr)
    with open(CONF) as f:
        check("an edited config survives it", f.read().endswith("# edited by the package test\n"))
    with open(secret, "rb") as f:
        check("the data survives it", f.read() == key)
    if systemd:
        run(["systemctl", "stop", "parleyd"])  # the postinst restarted it

    # ---- purge: the package's files go, the data and the user stay
    r = run(["dpkg", "--purge", "parley"])
    check("dpkg --purge", r.returncode == 0 and not installed(), r.stdout + r.stderr)
    gone = [f for f in ("/usr/bin/parleyd", UNIT, CONF, "/etc/parley",
                        "/etc/systemd/system/multi-user.target.wants/parleyd.service",
                        "/usr/share/doc/parley") if os.path.lexists(f)]
    check("the purge leaves none of the package's files", gone == [], gone)
    check("the purge keeps the data and the user (README says so)",
          os.path.exists(secret) and user_exists())
finally:
    if proc:
        proc.kill()
        proc.wait()
    cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
check("the machine is as before: no package, no user, no data",
      not installed() and not user_exists() and not os.path.exists(DATA)
      and not os.path.exists(BACKUPS))

if failed:
    print("FAILED: " + ", ".join(failed))
    sys.exit(1)
print("all passed")
