#!/usr/bin/python3
"""Uploaded files in a cluster (issue 18): any host takes an upload, any
host shares it in a message and serves its bytes and preview, and the bytes
outlive the host that took them.

Three hosts on a 3-node NATS cluster. O owns the partitions; J and K do
not. alice uploads a 1.5 MiB file on J (three pieces between hosts), a
PNG on K and a text on O, and shares all three in one message sent on K.
bob, a member, downloads each from every host (a host that has not pulled
the bytes yet answers 503 with Retry-After, and is asked again), and the
PNG's preview; carol, not a member, gets 404 on every host. A file
uploaded on O reaches J's disk without anyone asking J for it. After
kill -9 of J, K and O still serve J's upload. No host refused a write
outside the log (Cluster.stop checks parley_cluster_local_refused_total).

Usage: test_files.py PARLEYD NATS_CLUSTER_SH
Exits 77 (skipped) when nats-server is missing.
"""
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "wire"))
sys.path.insert(0, os.path.join(HERE, "..", "files"))
from test_cluster import Failed, log, run_alone, wait_until  # noqa: E402
from test_files import make_png  # noqa: E402
from wsclient import WS  # noqa: E402

WAIT_S = 60      # a host pulls the bytes within this (503 meanwhile)
PULL_PASS_S = 40  # the background pass visits every record within 13 s


def call(host, method, path, token, body=None):
    c = http.client.HTTPConnection("127.0.0.1", host.port, timeout=120)
    h = {"Authorization": "Bearer " + token}
    if body is not None:
        h["Content-Length"] = str(len(body))
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data, r


def upload(c, host, user, name, data):
    st, body, _ = call(host, "POST", "/api/v1/files?name=" +
                       urllib.parse.quote(name, safe=""), c.token(user), data)
    if st != 201:
        raise Failed("upload of %s on %s: %d %r" % (name, host.name, st, body))
    j = json.loads(body)
    want = hashlib.sha256(data).hexdigest()
    if j.get("sha256") != want or j.get("size") != len(data):
        raise Failed("upload of %s on %s answered %r" % (name, host.name, j))
    log("note  %s uploaded on %s: %s, %d bytes" % (name, host.name,
                                                    j["type"], len(data)))
    return j


def fetch(c, host, user, fid, suffix="", retry_404=False):
    """GET the file (or its preview) on host, asking again while the host
    answers 503 (the bytes on their way) or, for a preview being made,
    404; (status, bytes, headers)."""
    end = time.monotonic() + WAIT_S
    n503 = 0
    while True:
        st, data, r = call(host, "GET", "/api/v1/files/" + fid + suffix,
                           c.token(user))
        if st == 503:
            n503 += 1
            if r.getheader("Retry-After") is None:
                raise Failed("503 on %s without Retry-After" % host.name)
        if st == 503 or (st == 404 and retry_404):
            if time.monotonic() > end:
                raise Failed("%s%s on %s: still %d after %d s: %r" % (
                    fid, suffix, host.name, st, WAIT_S, data))
            time.sleep(0.2)
            continue
        return st, data, r, n503


def run(c):
    c.start()
    owner = c.owner()
    others = [h for h in c.hosts if h is not owner]
    o, j, k = owner, others[0], others[1]
    log("note  owner %s; %s and %s do not own the files" % (
        o.name, j.name, k.name))

    a = WS(k.port)
    a.hello(c.token("alice"))
    r = a.request("ch.create", name="files", kind="public")
    if not r.get("ok"):
        raise Failed("ch.create: %r" % r)
    ch = r["ch"]["id"]
    b = WS(j.port)
    b.hello(c.token("bob"))
    if not b.request("ch.join", ch=ch).get("ok"):
        raise Failed("bob's ch.join")
    b.close()

    big = os.urandom(3 * 512 * 1024 - 1000)   # three pieces between hosts
    png = make_png(400, 300)
    txt = b"minutes of the meeting\n" * 100
    f_big = upload(c, j, "alice", "data.bin", big)
    f_png = upload(c, k, "alice", "pic.png", png)
    f_txt = upload(c, o, "alice", "notes.txt", txt)

    r = a.request("send", ch=ch, body="three files", cmid="files-1",
                  files=[f_big["id"], f_png["id"], f_txt["id"]])
    if not r.get("ok"):
        raise Failed("send with the files on %s: %r" % (k.name, r))
    log("note  shared on %s in seq %d" % (k.name, r["seq"]))

    for h in c.hosts:
        for f, data in ((f_big, big), (f_png, png), (f_txt, txt)):
            st, got, _, n503 = fetch(c, h, "bob", f["id"])
            if st != 200 or got != data:
                raise Failed("bob's %s on %s: %d, %d bytes (want %d)" % (
                    f["name"], h.name, st, len(got), len(data)))
            log("note  %s on %s: the same %d bytes (after %d x 503)" % (
                f["name"], h.name, len(got), n503))
        st, got, r, _ = fetch(c, h, "bob", f_png["id"], "/thumb",
                              retry_404=True)
        if st != 200 or r.getheader("Content-Type") != "image/jpeg" or \
                not got.startswith(b"\xff\xd8"):
            raise Failed("the preview on %s: %d %s" % (
                h.name, st, r.getheader("Content-Type")))
        for f in (f_big, f_png, f_txt):
            st, got, _, _ = fetch(c, h, "carol", f["id"])
            if st != 404:
                raise Failed("carol (not a member) got %s on %s: %d" % (
                    f["name"], h.name, st))
    log("note  every host serves the three files and the preview to bob, "
        "404 to carol")

    # no download asked for it on j: the background pass brings it
    later = b"pulled without being asked\n" * 50
    f_later = upload(c, o, "alice", "later.txt", later)
    sha = f_later["sha256"]
    path = os.path.join(j.data, "files", sha[:2], sha)
    wait_until(lambda: os.path.exists(path), PULL_PASS_S,
               "%s's copy of later.txt" % j.name)
    with open(path, "rb") as fh:
        if fh.read() != later:
            raise Failed("%s's copy of later.txt differs" % j.name)
    log("note  %s pulled later.txt by itself" % j.name)

    j.kill9()
    for h in (o, k):
        st, got, _, _ = fetch(c, h, "bob", f_big["id"])
        if st != 200 or got != big:
            raise Failed("after kill -9 of %s, data.bin on %s: %d" % (
                j.name, h.name, st))
    log("note  after kill -9 of %s (which took data.bin), %s and %s serve "
        "it" % (j.name, o.name, k.name))
    a.close()  # Cluster.stop fails the test if a host refused a write


if __name__ == "__main__":
    run_alone("cluster_files", __doc__, run)
