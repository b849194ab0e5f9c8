#!/usr/bin/python3
"""/metrics as a Prometheus server would read it.

Starts this build's parleyd, puts some traffic through it (sends that
commit, a history read, a bad frame) so that the histograms have samples,
then reads GET /metrics and parses it with the official Python client's
text parser (Debian's python3-prometheus-client). On top of what the parser
accepts, it checks what a scraper relies on:

- every sample name belongs to a family with # HELP and # TYPE;
- no (name, labels) sample appears twice (le="1e-06" once printed twice);
- every histogram, per label set, has buckets with strictly increasing
  `le`, cumulative counts that never decrease, a `+Inf` bucket equal to
  `_count`, and a `_sum` (three histograms had none);
- counters and gauges are finite and not negative;
- the figures move with the traffic: the commit histograms count the sends.

Usage: metrics_check.py PARLEYD
Prints "N passed, M failed" last; exit status 0 only when M is 0.
"""
import asyncio
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import msgpack
import websockets
from prometheus_client.parser import text_string_to_metric_families

passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)


def start(parleyd, data):
    p = subprocess.Popen([parleyd, "--listen", "127.0.0.1:0", "--data", data,
                          "--no-pin", "--shards", "2"],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r"127\.0\.0\.1:(\d+)", line)
    if not m:
        p.kill()
        sys.exit("parleyd did not start: " + line)
    return p, int(m.group(1))


async def traffic(port, token):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws",
                                  subprotocols=["parley.v1"]) as w:
        rid = 0

        async def call(**req):
            nonlocal rid
            rid += 1
            req["rid"] = rid
            await w.send(msgpack.packb(req))
            while True:
                f = msgpack.unpackb(await asyncio.wait_for(w.recv(), 10))
                if f.get("t") == "res" and f.get("rid") == rid:
                    return f

        assert (await call(op="hello", token=token))["ok"]
        ch = (await call(op="ch.create", name="metrics", kind="public"))["ch"]["id"]
        for i in range(20):
            r = await call(op="send", ch=ch, body=f"m{i}", cmid=f"c{i}")
            assert r["ok"], r
        await call(op="history", ch=ch, limit=10)
        await w.send(b"\x01not a map")  # one BAD_FRAME
        await call(op="ch.list")


def families(text):
    fams = {}
    for fam in text_string_to_metric_families(text):
        fams[fam.name] = fam
    return fams


def check_exposition(text):
    fams = families(text)
    check(len(fams) > 10, f"only {len(fams)} metric families parsed")

    # HELP and TYPE for every family that has samples
    helps = set(re.findall(r"^# HELP (\S+) ", text, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for name, fam in fams.items():
        if not fam.samples:
            continue
        # the parser strips _total from counter family names
        raw = name if name in types else name + "_total"
        check(raw in helps, f"{raw}: no # HELP")
        check(raw in types, f"{raw}: no # TYPE")

    # no sample twice
    seen = {}
    for fam in fams.values():
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            check(key not in seen, f"sample {key} appears twice")
            seen[key] = s.value
    # the raw text too: the parser may fold duplicates
    lines = [l for l in text.splitlines() if l and not l.startswith("#")]
    keys = [l.rsplit(" ", 1)[0] for l in lines]
    dups = {k for k in keys if keys.count(k) > 1}
    check(not dups, f"sample lines printed twice: {sorted(dups)[:5]}")

    for name, fam in fams.items():
        for s in fam.samples:
            check(not math.isnan(s.value) and not math.isinf(s.value),
                  f"{s.name}{s.labels}: {s.value}")
            if fam.type in ("counter", "gauge", "histogram"):
                check(s.value >= 0, f"{s.name}{s.labels} negative: {s.value}")
        if fam.type != "histogram":
            continue
        groups = {}
        for s in fam.samples:
            labels = {k: v for k, v in s.labels.items() if k != "le"}
            g = groups.setdefault(tuple(sorted(labels.items())),
                                  {"buckets": [], "sum": None, "count": None})
            if s.name.endswith("_bucket"):
                g["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_sum"):
                g["sum"] = s.value
            elif s.name.endswith("_count"):
                g["count"] = s.value
        check(groups, f"{name}: a histogram without samples")
        for labels, g in groups.items():
            what = f"{name}{dict(labels)}"
            les = [b[0] for b in g["buckets"]]
            check(all(a < b for a, b in zip(les, les[1:])),
                  f"{what}: le not strictly increasing: {les[:6]}")
            cums = [b[1] for b in g["buckets"]]
            check(all(a <= b for a, b in zip(cums, cums[1:])),
                  f"{what}: cumulative counts decrease")
            check(les and math.isinf(les[-1]), f"{what}: no +Inf bucket")
            check(g["sum"] is not None, f"{what}: no _sum")
            check(g["count"] is not None, f"{what}: no _count")
            if les and g["count"] is not None:
                check(cums[-1] == g["count"],
                      f"{what}: +Inf {cums[-1]} != _count {g['count']}")
    return fams


def main():
    parleyd = sys.argv[1]
    data = tempfile.mkdtemp(prefix="parley-metrics-")
    p = None
    try:
        p, port = start(parleyd, data)
        token = subprocess.check_output(
            [parleyd, "token", "--user", "alice", "--workspace", "acme",
             "--data", data], text=True).strip()
        asyncio.run(traffic(port, token))
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            check(r.status == 200, f"GET /metrics: {r.status}")
            ctype = r.headers.get("Content-Type", "")
            check(ctype.startswith("text/plain"), f"Content-Type {ctype}")
            text = r.read().decode()
        fams = check_exposition(text)

        def sample(name, labels=None):
            for fam in fams.values():
                for s in fam.samples:
                    if s.name == name and (labels is None or all(
                            s.labels.get(k) == v for k, v in labels.items())):
                        return s.value
            return None

        # 20 sends + ch.create commit: the histograms saw them
        n = sample("parley_request_durable_seconds_count")
        check(n is not None and n >= 21, f"request_durable count {n}")
        s = sample("parley_request_durable_seconds_sum")
        check(s is not None and s > 0, f"request_durable sum {s}")
        c = sample("parley_commit_seconds_count")
        check(c is not None and c >= 1, f"commit count {c}")
        b = sample("parley_commit_batches_sum")
        check(b is not None and c is not None and b >= c,
              f"commit_batches sum {b} < commits {c}")
        bad = sample("parley_bad_frames_total")
        check(bad is not None and bad >= 1, f"bad frames {bad}")
        st = sample("parley_stage_seconds_count")
        check(st is not None and st > 0, f"stage count {st}")
    finally:
        if p:
            p.terminate()
            try:
                rc = p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            check(rc == 0, f"parleyd exit {rc} on SIGTERM")
        shutil.rmtree(data, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
