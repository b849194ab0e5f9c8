#!/usr/bin/env bash
# Durable acks while files upload (numbers for the report, not a test):
# parley-bench acks (64 senders, 10 s) against parleyd alone, then with
# UPLOADERS clients uploading 100 MB files in a loop to the same server.
# usage: tests/files/bench_acks.sh BUILD_DIR [UPLOADERS]
set -euo pipefail
build=$1 up=${2:-2}
work=$(mktemp -d /tmp/parley-fack.XXXXXX)
port=$((9600 + RANDOM % 300))
"$build/parleyd" --data "$work/d" --listen 127.0.0.1:$port --shards 2 \
	--send-rate 10000000 --send-burst 10000000 --max-file-mb 200 \
	--file-quota-mb 100000000 >"$work/log" 2>&1 &
pid=$!
loops=()
cleanup() {
	for l in ${loops[@]+"${loops[@]}"}; do kill "$l" 2>/dev/null || true; done
	kill "$pid" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
head -c 100000000 /dev/urandom >"$work/f"
tok=$("$build/parleyd" token --user up --workspace bench --data "$work/d")
acks() {
	"$build/perf/parley-bench" --server parley --scenario acks --port $port --pid $pid \
		--secret "$work/d/jwt.secret" --senders 64 --duration 10 --quiet --json "$work/a.json" \
		--prefix "r$RANDOM" >/dev/null
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({k: v for k, v in d.items() if any(s in k for s in ("ack", "rate", "p50", "p99", "p999", "max", "cpu", "sent"))}))' "$work/a.json"
}
echo "uptime: $(uptime)"
echo "acks alone:"; acks
for i in $(seq "$up"); do
	( n=0; while :; do curl -s -o /dev/null -T "$work/f" -X POST -H "Authorization: Bearer $tok" \
		"http://127.0.0.1:$port/api/v1/files?name=f$i"; n=$((n + 1)); echo $n >"$work/n$i"; done ) &
	loops+=($!)
done
sleep 2
echo "acks with $up uploaders of 100 MB in a loop:"; acks
total=0; for i in $(seq "$up"); do total=$((total + $(cat "$work/n$i" 2>/dev/null || echo 0))); done
echo "uploads finished meanwhile: $total x 100 MB"
echo "uptime: $(uptime)"
