#!/usr/bin/env bash
# The test command of README.md, and what CI runs (.ci/run). Phases:
#   deps          scripts/install-deps.sh --bench (nats-server, redis-server
#                 and gnuplot too: the harness's smoke uses them)
#   release       build/       all tests, the bench smoke included
#   asan          build-asan/  all tests but the bench smoke, ASan + UBSan,
#                 leaks fatal (the browser tests too: a real client against
#                 the ASan parleyd)
#   tsan          build-tsan/  tests labelled "runtime" (mailboxes, shards,
#                 presence and search threads)
# Tests labelled "unit" run two at a time; the others (e2e: each starts a
# parleyd on a port) one at a time. A phase runs even when an earlier one
# failed, so one run shows everything. The last line of output is
# "N passed, M failed" over all phases (a failed build counts as 1 failed);
# the exit status is 0 only when M is 0.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

total_pass=0
total_fail=0
summary=()

banner() { printf '\n==== %s\n' "$*"; }

# note PHASE TEXT: one line of the final summary.
note() { summary+=("$(printf '%-16s %s' "$1" "$2")"); }

# The sanitizers of GCC 12 cannot map their shadow memory when the kernel
# randomizes mmap with more than 28 bits (newer kernels' default): run their
# tests with address randomization off where the kernel allows us to.
san_wrap=()
rnd_bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)
if [ "$rnd_bits" -gt 28 ] && setarch "$(uname -m)" -R true 2>/dev/null; then
	san_wrap=(setarch "$(uname -m)" -R)
fi

# ctest_run LOGNAME CMD...: runs one ctest command, shows its output, and
# adds its counts to ph_pass/ph_fail from the "X% tests passed, N tests
# failed out of M" line. Without that line, exit 0 means no test matched
# (--no-tests=ignore), anything else that ctest itself failed: 1 failed.
ctest_run() {
	local out="$logs/$1.log" rc line n m
	shift
	"$@" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$out" | tail -n 1)
	if [ -n "$line" ]; then
		n=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
		m=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
		ph_pass=$((ph_pass + m - n))
		ph_fail=$((ph_fail + n))
		if [ "$rc" -ne 0 ] && [ "$n" -eq 0 ]; then
			echo "test.sh: ctest exited $rc with no failed test: counted as 1 failed"
			ph_fail=$((ph_fail + 1))
		fi
	elif [ "$rc" -ne 0 ]; then
		echo "test.sh: ctest exited $rc without a result line: counted as 1 failed"
		ph_fail=$((ph_fail + 1))
	fi
}

# ctest_phase NAME DIR [ctest selection args]: "unit" tests -j2, the rest -j1,
# each run under ${wrap[@]} (sanitizer options, setarch). Tests whose label
# matches $skip (a regex; empty: none) are left out.
ctest_phase() {
	local name=$1 dir=$2 start=$SECONDS unit_skip=() other=unit
	shift 2
	if [ -n "${skip:-}" ]; then
		unit_skip=(-LE "$skip")
		other="unit|$skip"
	fi
	ph_pass=0
	ph_fail=0
	banner "$name: tests in ${dir#"$root"/}"
	ctest_run "$name-unit" "${wrap[@]}" ctest --test-dir "$dir" --output-on-failure \
		--timeout 600 --no-tests=ignore -L unit "${unit_skip[@]}" -j2 "$@"
	ctest_run "$name-other" "${wrap[@]}" ctest --test-dir "$dir" --output-on-failure \
		--timeout 600 --no-tests=ignore -LE "$other" -j1 "$@"
	total_pass=$((total_pass + ph_pass))
	total_fail=$((total_fail + ph_fail))
	note "$name tests" "$ph_pass passed, $ph_fail failed ($((SECONDS - start)) s)"
}

# web_shots NAME DIR: the browser tests' screenshots of this phase stay in
# DIR/web-shots/ (emptied before the phase, so none is stale); one summary
# line says where.
web_shots() {
	local n
	n=$(find "$2/web-shots" -name '*.png' 2>/dev/null | wc -l)
	[ "$n" -eq 0 ] || note "$1 shots" "$n screenshots in ${2#"$root"/}/web-shots/"
}

# build_phase NAME FLAG: sets $dir on success; a failed build is 1 failed.
build_phase() {
	local name=$1 flag=$2 start=$SECONDS
	banner "$name: build"
	if dir=$(bash scripts/build.sh "$flag"); then
		note "$name build" "ok ($((SECONDS - start)) s)"
		return 0
	fi
	total_fail=$((total_fail + 1))
	note "$name build" "FAILED (counted as 1 failed)"
	note "$name tests" "skipped: no build"
	return 1
}

# ---- deps
banner "deps"
if bash scripts/install-deps.sh --bench; then
	note deps ok
else
	total_fail=$((total_fail + 1))
	note deps "FAILED (counted as 1 failed)"
fi

# ---- release: all tests
wrap=()
skip=
if build_phase release --release; then
	rm -rf "$dir/web-shots"
	ctest_phase release "$dir"
	web_shots release "$dir"
fi

# ---- ASan + UBSan: all tests but the bench smoke (it measures, and the
# release phase already ran it against this code) and the e2e suite's
# cluster variants (the same actors code as the e2e suite here, through
# six servers each: twelve minutes; tests/cluster/ runs the cluster's own
# code under ASan)
wrap=(env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "${san_wrap[@]}")
skip='bench|cluster_e2e'
if build_phase asan --asan; then
	rm -rf "$dir/web-shots"
	ctest_phase asan "$dir"
	web_shots asan "$dir"
fi

# ---- TSan: the runtime's tests only (suppressions: tests/tsan.supp, for
# libraries that are not built with TSan)
skip=bench
tsan_opts=halt_on_error=1:second_deadlock_stack=1
[ ! -f tests/tsan.supp ] || tsan_opts+=:suppressions=$root/tests/tsan.supp
wrap=(env TSAN_OPTIONS="$tsan_opts" "${san_wrap[@]}")
if build_phase tsan --tsan; then
	count=$(ctest --test-dir "$dir" -N -L runtime 2>/dev/null | sed -n 's/^Total Tests: *//p')
	if [ "${count:-0}" -gt 0 ]; then
		ctest_phase tsan "$dir" -L runtime
	else
		echo "test.sh: no test is labelled \"runtime\" yet: TSan tests skipped"
		note "tsan tests" "skipped: no test labelled runtime"
	fi
fi

banner "summary"
printf '%s\n' "${summary[@]}"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
