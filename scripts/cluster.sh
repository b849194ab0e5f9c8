#!/usr/bin/env bash
# A 3-host parley cluster on this machine, for trying cluster mode
# (docs/cluster.md, "Running a cluster"):
#
#   cluster.sh start  [DIR]   3 NATS nodes (scripts/nats-cluster.sh) and 3
#                             parleyd hosts h1..h3; waits until every host
#                             answers /healthz and counts 3 live hosts,
#                             then prints how to connect
#   cluster.sh stop   [DIR]   SIGTERM the hosts (SIGKILL after 30 s), then
#                             the NATS nodes
#   cluster.sh status [DIR]   one line per process; exit 1 if any is down
#
# DIR (default ./parley-cluster) holds everything: hN/ (host N's --data),
# hN.log, hN.pid, jwt.secret and dm.key (shared by the hosts, as a
# cluster needs; created with random bytes if missing), nats/ (the NATS nodes' stores, logs, pids) and
# cluster.env (the ports start used, which stop and status read back).
#
# Environment (read by start):
#   PARLEY_BIN  parleyd to run (default: build/parleyd of this checkout,
#               else parleyd on PATH)
#   PORT        host N listens on 127.0.0.1:PORT+N-1 (default 8081)
#   NATS_PORT   NATS base port: clients NATS_PORT..+2, routes +10..+12,
#               monitoring +20..+22 (default 14222)
#   SHARDS      --shards of every host, the same on all (default 2)
#   LEASE_MS    --lease-ms: a dead host's partitions move after (5000)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nats_sh="$root/scripts/nats-cluster.sh"
HOSTS=(1 2 3)

usage() {
	echo "usage: $0 start|stop|status [DIR]   (DIR default ./parley-cluster)" >&2
	exit 2
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
cmd=$1
dir=${2:-./parley-cluster}

num() { # num NAME VALUE: VALUE must be a positive integer
	case "$2" in
	'' | *[!0-9]*)
		echo "cluster: $1 must be a number (got '$2')" >&2
		exit 2
		;;
	esac
}

# The ports: from DIR/cluster.env when start wrote one (so that stop and
# status find what start started, whatever the environment says now),
# else the environment or the defaults.
load_ports() {
	if [ -f "$dir/cluster.env" ]; then
		# shellcheck disable=SC1091
		. "$dir/cluster.env"
	else
		PORT=${PORT:-8081}
		NATS_PORT=${NATS_PORT:-14222}
	fi
	num PORT "$PORT"
	num NATS_PORT "$NATS_PORT"
}

host_port() { echo $((PORT + $1 - 1)); }

# pid_of N: the pid of host hN if it is running, else nothing.
pid_of() {
	local f="$dir/h$1.pid" p
	[ -f "$f" ] || return 0
	p=$(cat "$f" 2>/dev/null || true)
	[ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
	return 0
}

healthy() {
	[ "$(curl -s -m 2 "http://127.0.0.1:$(host_port "$1")/healthz" 2>/dev/null)" = ok ]
}

# metric N NAME: the value of NAME in host N's /metrics, or "?".
metric() {
	local v
	v=$(curl -s -m 2 "http://127.0.0.1:$(host_port "$1")/metrics" 2>/dev/null |
		awk -v m="$2" '$1 == m { print $2; exit }')
	echo "${v:-?}"
}

stop_hosts() {
	local i p pids=()
	for i in "${HOSTS[@]}"; do
		p=$(pid_of "$i")
		[ -n "$p" ] && kill -TERM "$p" 2>/dev/null && pids+=("$p")
	done
	# parleyd drains its clients (--drain-ms, 2 s) and lets its lease go
	local deadline=$((SECONDS + 30))
	for p in "${pids[@]}"; do
		while kill -0 "$p" 2>/dev/null; do
			if [ "$SECONDS" -ge "$deadline" ]; then
				echo "cluster: pid $p did not stop within 30 s: SIGKILL" >&2
				kill -KILL "$p" 2>/dev/null || true
			fi
			sleep 0.1
		done
	done
	for i in "${HOSTS[@]}"; do
		rm -f "$dir/h$i.pid"
	done
}

stop_nats() {
	[ -d "$dir/nats" ] && bash "$nats_sh" stop "$dir/nats" "$NATS_PORT"
	return 0
}

start() {
	local bin i p urls secret dmkey lease shards
	PORT=${PORT:-8081}
	NATS_PORT=${NATS_PORT:-14222}
	shards=${SHARDS:-2}
	lease=${LEASE_MS:-5000}
	num PORT "$PORT"
	num NATS_PORT "$NATS_PORT"
	num SHARDS "$shards"
	num LEASE_MS "$lease"
	if [ -n "${PARLEY_BIN:-}" ]; then
		bin=$PARLEY_BIN
	elif [ -x "$root/build/parleyd" ]; then
		bin=$root/build/parleyd
	else
		bin=$(command -v parleyd || true)
	fi
	if [ -z "$bin" ] || [ ! -x "$bin" ]; then
		echo "cluster: no parleyd (build it: scripts/build.sh --release," \
			"or set PARLEY_BIN)" >&2
		exit 1
	fi
	command -v nats-server >/dev/null || {
		echo "cluster: nats-server not found (scripts/install-deps.sh)" >&2
		exit 1
	}
	command -v curl >/dev/null || {
		echo "cluster: curl not found (scripts/install-deps.sh)" >&2
		exit 1
	}
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	if [ -f "$dir/cluster.env" ] && [ -n "$(pid_of 1)$(pid_of 2)$(pid_of 3)" ]; then
		# hosts of an earlier start are running: keep its ports
		load_ports
	fi
	printf 'PORT=%s\nNATS_PORT=%s\n' "$PORT" "$NATS_PORT" >"$dir/cluster.env"

	secret=$dir/jwt.secret
	dmkey=$dir/dm.key
	for f in "$secret" "$dmkey"; do
		[ -s "$f" ] && continue
		(umask 077 && head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$f")
		echo >>"$f"
		echo "cluster: created $f" >&2
	done

	echo "cluster: NATS nodes on 127.0.0.1:$NATS_PORT..$((NATS_PORT + 2))" >&2
	urls=$(bash "$nats_sh" start "$dir/nats" "$NATS_PORT")

	for i in "${HOSTS[@]}"; do
		[ -n "$(pid_of "$i")" ] && continue
		mkdir -p "$dir/h$i"
		# its own session: the host outlives this shell and its terminal
		setsid "$bin" --cluster "$urls" --host-id "h$i" \
			--listen "127.0.0.1:$(host_port "$i")" --data "$dir/h$i" \
			--jwt-secret-file "$secret" --dm-key-file "$dmkey" \
			--shards "$shards" \
			--lease-ms "$lease" </dev/null >>"$dir/h$i.log" 2>&1 &
		echo $! >"$dir/h$i.pid"
	done

	local deadline=$((SECONDS + 60)) up
	while :; do
		up=0
		for i in "${HOSTS[@]}"; do
			if [ -z "$(pid_of "$i")" ]; then
				echo "cluster: host h$i exited (log: $dir/h$i.log):" >&2
				tail -n 5 "$dir/h$i.log" >&2 || true
				stop_hosts
				stop_nats
				exit 1
			fi
			healthy "$i" && up=$((up + 1))
		done
		[ "$up" = "${#HOSTS[@]}" ] && break
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "cluster: hosts not healthy within 60 s (logs: $dir/h*.log)" >&2
			stop_hosts
			stop_nats
			exit 1
		fi
		sleep 0.2
	done
	# then until each counts all three (the leases take a moment to be
	# seen); only a warning past the deadline: they serve meanwhile
	deadline=$((SECONDS + 15 + 3 * lease / 1000))
	for i in "${HOSTS[@]}"; do
		while [ "$(metric "$i" parley_cluster_hosts)" != "${#HOSTS[@]}" ]; do
			if [ "$SECONDS" -ge "$deadline" ]; then
				echo "cluster: warning: h$i counts" \
					"$(metric "$i" parley_cluster_hosts) live hosts," \
					"not ${#HOSTS[@]} (log: $dir/h$i.log)" >&2
				break
			fi
			sleep 0.2
		done
	done

	cat <<EOF
parley cluster running in $dir
  NATS:  $urls
EOF
	for i in "${HOSTS[@]}"; do
		p=$(host_port "$i")
		echo "  h$i:    ws://127.0.0.1:$p/ws   http://127.0.0.1:$p/  (pid $(pid_of "$i"), log $dir/h$i.log)"
	done
	cat <<EOF
A token (any host takes it: they share $secret), and a link that signs
the browser client in on h1 (use another --listen for another host):
  $bin token --user alice --workspace acme --jwt-secret-file $secret
  $bin token --user alice --workspace acme --jwt-secret-file $secret --url --listen 127.0.0.1:$(host_port 1)
Status: $0 status $dir    Stop: $0 stop $dir
EOF
}

status() {
	local i p rc=0
	bash "$nats_sh" status "$dir/nats" "$NATS_PORT" || rc=1
	for i in "${HOSTS[@]}"; do
		p=$(pid_of "$i")
		if [ -z "$p" ]; then
			echo "h$i: not running"
			rc=1
		elif healthy "$i"; then
			echo "h$i: running (pid $p) 127.0.0.1:$(host_port "$i") healthz ok," \
				"hosts $(metric "$i" parley_cluster_hosts)," \
				"partitions owned $(metric "$i" parley_cluster_partitions_owned)"
		else
			echo "h$i: running (pid $p) 127.0.0.1:$(host_port "$i") not healthy"
			rc=1
		fi
	done
	return "$rc"
}

case "$cmd" in
start) start ;;
stop)
	[ -d "$dir" ] || { echo "cluster: no $dir" >&2; exit 1; }
	load_ports
	stop_hosts
	stop_nats
	;;
status)
	[ -d "$dir" ] || { echo "cluster: no $dir" >&2; exit 1; }
	load_ports
	status
	;;
*) usage ;;
esac
