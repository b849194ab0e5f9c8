#!/usr/bin/env bash
# Installs what parley needs to build, run and test on Debian 12 (bookworm):
# the toolchain, the C libraries CMakeLists.txt asks pkg-config for (file
# previews: libmagic, and libvips, whose Debian build links poppler-glib for
# PDFs: `vips -l | grep pdfload` shows it), the
# Python modules the black-box tests use, and for the browser tests
# (tests/web/) Debian's chromium, a font, node >= 20 with npm and the npm
# packages pinned in tests/web/package-lock.json (npm ci into
# tests/web/node_modules; playwright-core drives the system chromium and
# downloads no browser); for the package test (tests/package/): adduser
# (the package's postinst needs it) and systemd (systemd-analyze verify
# checks the installed unit; installing it in a container starts nothing).
# The cluster bus (cluster/, tests/cluster/): libnats-dev and nats-server.
# With --bench it also installs the tools perf/ uses
# (redis-server, gnuplot).
#
# Safe to run again: it asks dpkg which packages are missing and touches apt
# (update + install) only when something is, and runs npm ci only when
# node_modules does not match the lockfile. Runs as root, or through sudo
# (DEBIAN_FRONTEND is passed through env, since sudo drops the environment).
set -euo pipefail

usage() {
	echo "usage: $0 [--bench]"
	echo "  --bench   also install redis-server and gnuplot (perf/)"
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
	libsqlite3-dev libjansson-dev libcurl4-openssl-dev libinih-dev
	libmagic-dev libvips-dev zlib1g-dev libsystemd-dev liburing-dev
	python3-websockets python3-msgpack python3-prometheus-client
	openssl curl
	chromium fonts-dejavu-core fonts-noto-color-emoji
	adduser systemd
	nats-server libnats-dev
)
if [ "$bench" = 1 ]; then
	pkgs+=(redis-server gnuplot python3-jwt)
fi

# apt_install PKG...: installs those of the packages dpkg does not have.
apt_install() {
	# A package counts as present only when dpkg says "ii" (installed, ok);
	# "rc" (removed, config left) and half-installed states count as missing.
	local p status missing=() sudo=()
	for p in "$@"; do
		status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
		if [ "${status:0:2}" != "ii" ]; then
			missing+=("$p")
		fi
	done

	if [ "${#missing[@]}" -eq 0 ]; then
		echo "install-deps: all $# packages already installed"
		return 0
	fi

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
}

apt_install "${pkgs[@]}"

# ---- node and npm for the browser tests (tests/web/)
# Debian 12's own nodejs is 18: too old. Machines that have node from
# elsewhere (NodeSource, with npm bundled) keep it.
if ! command -v node >/dev/null 2>&1; then
	apt_install nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
	echo "install-deps: node $(node --version 2>/dev/null || echo '(none)') is too old: the browser" \
		"tests (tests/web/) need node >= 20 (Debian 12 has 18; install e.g. NodeSource's nodejs 20)" >&2
	exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
	apt_install npm
fi

# npm ci only when node_modules was not installed from this very lockfile
# (the stamp holds the lockfile's hash; npm ci starts by deleting
# node_modules, so a failed run leaves no stamp behind).
web="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/web"
stamp="$web/node_modules/.parley-lock.sha256"
want=$(sha256sum "$web/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
	echo "install-deps: tests/web/node_modules matches package-lock.json"
else
	echo "install-deps: npm ci in tests/web (node $(node --version))"
	if ! (cd "$web" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error); then
		echo "install-deps: npm ci in tests/web failed" >&2
		exit 1
	fi
	echo "$want" >"$stamp"
fi
echo "install-deps: done"
