#!/usr/bin/env bash
# Builds the Debian package: a release build (scripts/build.sh --release,
# build/), then `cpack -G DEB` from it (cmake/package.cmake says what goes
# in). The .deb lands in build/packages/; stdout gets only its path, so
# callers can write deb=$(scripts/package.sh). Needs dpkg-dev (dpkg-shlibdeps
# lists the libraries' packages), which build-essential brings.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=$(bash "$root/scripts/build.sh" --release)
out="$dir/packages"
rm -rf "$out"
mkdir -p "$out"
(cd "$dir" && cpack -G DEB -B "$out" >&2)
deb=$(find "$out" -maxdepth 1 -name 'parley_*.deb' | head -n 1)
if [ -z "$deb" ]; then
	echo "package: cpack made no parley_*.deb in $out" >&2
	exit 1
fi
echo "$deb"
