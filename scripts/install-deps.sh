#!/usr/bin/env bash
# Installs what parley needs to build, run and test on Debian 12 (bookworm):
# the toolchain, the C libraries CMakeLists.txt asks pkg-config for, and the
# Python modules the black-box tests use. With --bench it also installs the
# tools perf/ uses (nats-server, redis-server, gnuplot).
#
# Safe to run again: it asks dpkg which packages are missing and touches apt
# (update + install) only when something is. Runs as root, or through sudo
# (DEBIAN_FRONTEND is passed through env, since sudo drops the environment).
set -euo pipefail

usage() {
	echo "usage: $0 [--bench]"
	echo "  --bench   also install nats-server, redis-server and gnuplot (perf/)"
}

bench=0
for arg in "$@"; do
	case "$arg" in
	--bench) bench=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "install-deps: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
	esac
done

pkgs=(
	build-essential cmake pkg-config
	libwebsockets-dev libwebsockets-evlib-uv libuv1-dev
	librocksdb-dev libmsgpack-dev libck-dev
	libmimalloc-dev libjwt-dev libcmocka-dev libssl-dev
	libsqlite3-dev libjansson-dev
	python3-websockets python3-msgpack python3-prometheus-client
)
if [ "$bench" = 1 ]; then
	pkgs+=(nats-server redis-server gnuplot)
fi

# A package counts as present only when dpkg says "ii" (installed, ok);
# "rc" (removed, config left) and half-installed states count as missing.
missing=()
for p in "${pkgs[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	if [ "${status:0:2}" != "ii" ]; then
		missing+=("$p")
	fi
done

if [ "${#missing[@]}" -eq 0 ]; then
	echo "install-deps: all ${#pkgs[@]} packages already installed"
	exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "install-deps: not root and sudo is missing; as root run:" >&2
		echo "  apt-get install ${missing[*]}" >&2
		exit 1
	fi
	sudo=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq update; then
	echo "install-deps: apt-get update failed" >&2
	exit 1
fi
if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -y \
	-o Dpkg::Use-Pty=0 install --no-install-recommends "${missing[@]}" >/dev/null; then
	echo "install-deps: apt-get install failed for: ${missing[*]}" >&2
	exit 1
fi

# apt can succeed while leaving a package unconfigured: check again.
for p in "${missing[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	if [ "${status:0:2}" != "ii" ]; then
		echo "install-deps: $p is still not installed (status '${status}')" >&2
		exit 1
	fi
done
echo "install-deps: done"
