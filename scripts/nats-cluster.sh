#!/usr/bin/env bash
# A local 3-node nats-server cluster with JetStream, for the cluster tests
# (tests/cluster/) and for trying parleyd's cluster mode by hand.
#
#   nats-cluster.sh start  DIR BASEPORT   start the nodes that are not running,
#                                         wait (30 s at most) until /healthz is
#                                         ok on all 3, print the client URLs
#                                         comma-separated on stdout
#   nats-cluster.sh stop   DIR BASEPORT   SIGTERM all nodes, SIGKILL after 5 s
#   nats-cluster.sh status DIR BASEPORT   one line per node: running or not,
#                                         and its /healthz answer
#   nats-cluster.sh kill N DIR BASEPORT   kill -9 node N (1..3): failover tests
#
# Node i (1..3): server_name ni, client port BASEPORT+i-1, route port
# BASEPORT+10+i-1, monitoring (http) BASEPORT+20+i-1, store_dir DIR/ni,
# config DIR/ni.conf, log DIR/ni.log, pid DIR/ni.pid. Cluster name "parley".
# Messages go to stderr; stdout gets only the URLs (start).
set -euo pipefail

usage() {
	echo "usage: $0 start|stop|status DIR BASEPORT" >&2
	echo "       $0 kill N DIR BASEPORT" >&2
	exit 2
}

[ $# -ge 1 ] || usage
cmd=$1
shift
victim=
if [ "$cmd" = kill ]; then
	[ $# -eq 3 ] || usage
	victim=$1
	shift
	case "$victim" in 1 | 2 | 3) ;; *) usage ;; esac
fi
[ $# -eq 2 ] || usage
dir=$1
base=$2
case "$base" in '' | *[!0-9]*) usage ;; esac
if [ "$base" -lt 1024 ] || [ "$base" -gt 65500 ]; then
	echo "nats-cluster: BASEPORT must be 1024..65500" >&2
	exit 2
fi

cport() { echo $((base + $1 - 1)); }
rport() { echo $((base + 10 + $1 - 1)); }
mport() { echo $((base + 20 + $1 - 1)); }

# pid_of I: the pid of node I if it is running, else nothing.
pid_of() {
	local f="$dir/n$1.pid" p
	[ -f "$f" ] || return 0
	p=$(cat "$f" 2>/dev/null || true)
	[ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
	return 0
}

healthy() {
	curl -s -m 1 "http://127.0.0.1:$(mport "$1")/healthz" 2>/dev/null | grep -q '"ok"'
}

conf() {
	local i=$1
	cat <<EOF
server_name: n$i
listen: 127.0.0.1:$(cport "$i")
http: 127.0.0.1:$(mport "$i")
# a parleyd turn is one log message: room for a busy one (default 1 MB)
max_payload: 8MB
jetstream {
  store_dir: "$dir/n$i"
  max_memory_store: 64MB
  max_file_store: 1GB
}
cluster {
  name: parley
  listen: 127.0.0.1:$(rport "$i")
  routes: [
    nats-route://127.0.0.1:$(rport 1)
    nats-route://127.0.0.1:$(rport 2)
    nats-route://127.0.0.1:$(rport 3)
  ]
}
EOF
}

case "$cmd" in
start)
	command -v nats-server >/dev/null || {
		echo "nats-cluster: nats-server not found (scripts/install-deps.sh)" >&2
		exit 1
	}
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	for i in 1 2 3; do
		[ -n "$(pid_of "$i")" ] && continue
		mkdir -p "$dir/n$i"
		conf "$i" >"$dir/n$i.conf"
		rm -f "$dir/n$i.pid"
		nats-server -c "$dir/n$i.conf" -l "$dir/n$i.log" -P "$dir/n$i.pid" \
			</dev/null >/dev/null 2>&1 &
	done
	deadline=$((SECONDS + 30))
	while :; do
		ok=0
		for i in 1 2 3; do
			healthy "$i" && ok=$((ok + 1))
		done
		[ "$ok" = 3 ] && break
		for i in 1 2 3; do
			if [ -z "$(pid_of "$i")" ] && [ -f "$dir/n$i.log" ] &&
				grep -q '\[FTL\]' "$dir/n$i.log"; then
				echo "nats-cluster: node n$i exited (log: $dir/n$i.log)" >&2
				grep '\[FTL\]' "$dir/n$i.log" | tail -n 1 >&2
				exit 1
			fi
		done
		if [ "$SECONDS" -ge "$deadline" ]; then
			for i in 1 2 3; do
				if ! healthy "$i"; then
					echo "nats-cluster: node n$i did not come up within 30 s" \
						"(log: $dir/n$i.log)" >&2
					tail -n 5 "$dir/n$i.log" >&2 2>/dev/null || true
				fi
			done
			exit 1
		fi
		sleep 0.1
	done
	echo "nats://127.0.0.1:$(cport 1),nats://127.0.0.1:$(cport 2),nats://127.0.0.1:$(cport 3)"
	;;
stop)
	pids=()
	for i in 1 2 3; do
		p=$(pid_of "$i")
		[ -n "$p" ] && kill -TERM "$p" 2>/dev/null && pids+=("$p")
	done
	deadline=$((SECONDS + 5))
	for p in "${pids[@]}"; do
		while kill -0 "$p" 2>/dev/null; do
			if [ "$SECONDS" -ge "$deadline" ]; then
				kill -KILL "$p" 2>/dev/null || true
				break
			fi
			sleep 0.05
		done
	done
	# the processes are not our children: wait for them to be gone
	for p in "${pids[@]}"; do
		while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
	done
	;;
status)
	rc=0
	for i in 1 2 3; do
		p=$(pid_of "$i")
		if [ -n "$p" ]; then
			echo "n$i: running (pid $p) healthz $(curl -s -m 1 "http://127.0.0.1:$(mport "$i")/healthz" || echo none)"
		else
			echo "n$i: not running"
			rc=1
		fi
	done
	exit "$rc"
	;;
kill)
	p=$(pid_of "$victim")
	if [ -z "$p" ]; then
		echo "nats-cluster: node n$victim is not running" >&2
		exit 1
	fi
	kill -KILL "$p"
	while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
	;;
*) usage ;;
esac
