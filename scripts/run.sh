#!/usr/bin/env bash
# Starts parley from a fresh checkout: installs the dependencies, builds the
# release binary, prints sign-in links to the web client for two users
# (alice and bob in workspace acme) and execs build/parleyd. Arguments are passed to parleyd
# unchanged; with none, its defaults apply (listen 127.0.0.1:8080, data in
# ./parley-data, JWT secret created there on first start). It runs from the
# repository root, so relative paths in the arguments are relative to it.
#   scripts/run.sh
#   scripts/run.sh --listen 0.0.0.0:9000 --data /var/lib/parley
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

case "${1:-}" in
-h | --help)
	echo "usage: $0 [parleyd options]  (see: build/parleyd --help)"
	exit 0
	;;
esac

bash scripts/install-deps.sh
bash scripts/build.sh --release >/dev/null

# Pick the address, data dir and secret file from the arguments only to print
# matching instructions; parleyd itself parses them.
listen=127.0.0.1:8080
data=./parley-data
secret=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
	a=${args[i]}
	next=${args[i + 1]:-}
	case "$a" in
	--listen) listen=$next ;;
	--listen=*) listen=${a#--listen=} ;;
	--data) data=$next ;;
	--data=*) data=${a#--data=} ;;
	--jwt-secret-file) secret=$next ;;
	--jwt-secret-file=*) secret=${a#--jwt-secret-file=} ;;
	esac
done
case "$listen" in
0.0.0.0:* | :*) connect=127.0.0.1:${listen##*:} ;;
*) connect=$listen ;;
esac
tokopts=
[ "$data" = ./parley-data ] || printf -v tokopts ' --data %q' "$data"
[ -z "$secret" ] || printf -v tokopts '%s --jwt-secret-file %q' "$tokopts" "$secret"
tokargs=(--listen "$connect")
[ "$data" = ./parley-data ] || tokargs+=(--data "$data")
[ -z "$secret" ] || tokargs+=(--jwt-secret-file "$secret")

# Links for the browser: the token rides in the fragment, which browsers do
# not send to the server. `token` creates the data directory and its secret
# when they do not exist yet, as parleyd would on its first start.
# A failure is printed by parleyd token; parleyd then says what is wrong too.
link_alice=$(build/parleyd token --user alice --workspace acme --name Alice --url "${tokargs[@]}") ||
	link_alice="(no link: see the error above)"
link_bob=$(build/parleyd token --user bob --workspace acme --name Bob --url "${tokargs[@]}") ||
	link_bob="(no link: see the error above)"

cat <<EOF

parley is starting: build/parleyd${*:+ $*}

  Open this link in a browser to sign in as alice (workspace acme):
    $link_alice
  and this one in another tab or window as bob, to chat with alice:
    $link_bob
  (the links hold tokens valid for 24 hours: anyone with a link is that user)

  WebSocket:  ws://$connect/ws   (subprotocol parley.v1, binary msgpack frames)
  a token:    build/parleyd token --user alice --workspace acme$tokopts
              (signed with the server's secret, created if missing;
               send it as {"op":"hello","rid":1,"token":...})
  health:     curl http://$connect/healthz
  protocol:   docs/protocol.md
Stop with Ctrl-C or SIGTERM.

EOF
exec build/parleyd "$@"
