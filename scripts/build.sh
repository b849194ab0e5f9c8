#!/usr/bin/env bash
# Configures and builds parley into one build directory of the repository:
#   (default), --release   build/       RelWithDebInfo
#   --asan                 build-asan/  Debug, PARLEY_ASAN=ON (ASan + UBSan)
#   --tsan                 build-tsan/  RelWithDebInfo, PARLEY_TSAN=ON
# Compiler and make output go to stderr; stdout gets only the absolute path of
# the build directory, so callers can write dir=$(scripts/build.sh --asan).
set -euo pipefail

usage() {
	echo "usage: $0 [--release|--asan|--tsan]"
}

mode=release
for arg in "$@"; do
	case "$arg" in
	--release) mode=release ;;
	--asan) mode=asan ;;
	--tsan) mode=tsan ;;
	-h | --help) usage; exit 0 ;;
	*) echo "build: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
	esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "$mode" in
release) dir=build; opts=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DPARLEY_ASAN=OFF -DPARLEY_TSAN=OFF) ;;
asan) dir=build-asan; opts=(-DCMAKE_BUILD_TYPE=Debug -DPARLEY_ASAN=ON -DPARLEY_TSAN=OFF) ;;
tsan) dir=build-tsan; opts=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DPARLEY_ASAN=OFF -DPARLEY_TSAN=ON) ;;
esac

echo "build: $mode in $dir/" >&2
# Configuring every time is cheap and keeps the cache's options what this
# script says they are, even if someone edited them by hand.
cmake -S "$root" -B "$root/$dir" -G "Unix Makefiles" "${opts[@]}" >&2
make -C "$root/$dir" -j"$(nproc)" >&2
echo "$root/$dir"
