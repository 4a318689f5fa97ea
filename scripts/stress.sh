#!/usr/bin/env bash
# stress.sh: run the chaos tests again and again beside a CPU hog, and count.
#
# Starts a CPU hog (default `stress-ng --cpu 4`; installed from Debian with
# apt-get when missing), builds each chosen test's package once with -race,
# and runs each test N times with -count=1 and EVENTSYNC_REQUIRE_SERVICES=1
# (the services must be up, as for .ci/run). For every test it reports runs,
# passes, fails and the longest streak of consecutive passes. Each run's
# go test -v output is kept; a failed run also keeps the logs of the
# eventsync processes the e2e tests started (EVENTSYNC_E2E_LOG_DIR). The hog
# is stopped on exit, however the script ends.
#
#   scripts/stress.sh                          # the defaults below, 10/10/5 runs
#   scripts/stress.sh --consecutive            # run until 10/10/5 passes in a row
#   scripts/stress.sh -n 3 --hog 'stress-ng --cpu 8'
#   scripts/stress.sh --no-hog ./test/e2e:TestWorkersConvergeUnderChaos/redis:20
#
# Tests are PKG:PATTERN[:N], PATTERN as for go test -run (anchored per
# level: TestA/sub runs subtest sub of TestA). Without any, the defaults:
#   ./test/e2e:TestWorkersConvergeUnderChaos:10
#   ./internal/engine:TestWorkersConvergeThroughPausesAndOutages:10
#   ./test/e2e:TestResyncConvergesWithLiveChanges:5
#
# Options:
#   -n N             runs per test (overrides each test's N)
#   --consecutive    the goal is N passes in a row: a test is run until its
#                    streak reaches N, or until --max-runs runs (default 3×N)
#   --max-runs M     the cap of --consecutive
#   --hog CMD        the CPU hog, run through bash (default 'stress-ng --cpu 4')
#   --no-hog         no hog
#   --timeout D      go test -timeout of one run (default 15m)
#   --out DIR        where logs go (default a new directory under $TMPDIR)
#
# Exits 0 when every test met its goal (all N runs passed, or N in a row).
set -euo pipefail
cd "$(dirname "$0")/.."

defaults=(
	./test/e2e:TestWorkersConvergeUnderChaos:10
	./internal/engine:TestWorkersConvergeThroughPausesAndOutages:10
	./test/e2e:TestResyncConvergesWithLiveChanges:5
)
runs="" consecutive=0 max_runs="" hog="stress-ng --cpu 4" timeout=15m out=""
specs=()
usage() { sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
	case $1 in
	-n) runs=$2; shift 2 ;;
	--consecutive) consecutive=1; shift ;;
	--max-runs) max_runs=$2; shift 2 ;;
	--hog) hog=$2; shift 2 ;;
	--no-hog) hog=""; shift ;;
	--timeout) timeout=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	-*) echo "stress: unknown option $1 (see --help)" >&2; exit 2 ;;
	*) specs+=("$1"); shift ;;
	esac
done
[[ ${#specs[@]} -gt 0 ]] || specs=("${defaults[@]}")
for v in "$runs" "$max_runs"; do
	[[ -z $v || $v =~ ^[1-9][0-9]*$ ]] || { echo "stress: -n and --max-runs take a positive integer, got $v" >&2; exit 2; }
done

say() { printf 'stress: %s\n' "$*"; }
out=${out:-$(mktemp -d "${TMPDIR:-/tmp}/eventsync-stress.XXXXXX")}
mkdir -p "$out"

# ---- the hog ------------------------------------------------------------------

hog_pid="" watchdog_pid="" test_pid=""
stop_test() {
	# A run leads its own process group, with the eventsync processes an
	# e2e test started: end them all (workers stop cleanly on SIGTERM).
	if [[ -n $test_pid ]]; then
		kill -TERM -- "-$test_pid" 2>/dev/null || true
		wait "$test_pid" 2>/dev/null || true
		test_pid=""
	fi
}
stop_hog() {
	if [[ -n $watchdog_pid ]]; then
		kill "$watchdog_pid" 2>/dev/null || true
		wait "$watchdog_pid" 2>/dev/null || true
		watchdog_pid=""
	fi
	if [[ -n $hog_pid ]]; then
		# The hog leads its own process group (setsid): end the group, so
		# stress-ng's workers go with it.
		kill -TERM -- "-$hog_pid" 2>/dev/null || true
		wait "$hog_pid" 2>/dev/null || true
		say "stopped the hog"
		hog_pid=""
	fi
}
trap 'stop_test; stop_hog; rm -rf "$out/bin"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n $hog ]]; then
	if [[ $hog == stress-ng* ]] && ! command -v stress-ng >/dev/null; then
		say "installing stress-ng (apt-get install -y stress-ng)"
		if ! apt-get install -y stress-ng >"$out/apt.log" 2>&1; then
			apt-get update >>"$out/apt.log" 2>&1 && apt-get install -y stress-ng >>"$out/apt.log" 2>&1 ||
				{ echo "stress: could not install stress-ng (needs root and Debian's packages); log: $out/apt.log" >&2; exit 1; }
		fi
	fi
	setsid bash -c "exec $hog" >"$out/hog.log" 2>&1 &
	hog_pid=$!
	# Should this script be killed outright, the trap never runs: a watchdog
	# ends the hog when the script is gone.
	(
		while kill -0 $$ 2>/dev/null; do sleep 2; done
		kill -TERM -- "-$hog_pid" 2>/dev/null
	) &
	watchdog_pid=$!
	sleep 1
	kill -0 "$hog_pid" 2>/dev/null || { echo "stress: the hog '$hog' exited at once:" >&2; cat "$out/hog.log" >&2; exit 1; }
	say "hog running: $hog (pid $hog_pid)"
else
	say "no hog"
fi

# ---- the runs -------------------------------------------------------------------

export EVENTSYNC_REQUIRE_SERVICES=1
declare -A bins dirs
summary=()
all_ok=1 total_pass=0 total_fail=0
say "logs in $out"
for spec in "${specs[@]}"; do
	IFS=: read -r pkg pattern n <<<"$spec"
	[[ -n $pkg && -n $pattern ]] || { echo "stress: test $spec is not PKG:PATTERN[:N]" >&2; exit 2; }
	n=${runs:-${n:-10}}
	[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "stress: N in $spec must be a positive integer" >&2; exit 2; }
	limit=$n
	[[ $consecutive == 1 ]] && limit=${max_runs:-$((3 * n))}

	if [[ -z ${bins[$pkg]:-} ]]; then
		bin="$out/bin/$(echo "$pkg" | tr -c 'A-Za-z0-9_\n' _).test"
		say "building $pkg (go test -c -race)"
		go test -c -race -o "$bin" "$pkg"
		bins[$pkg]=$bin
		dirs[$pkg]=$(go list -f '{{.Dir}}' "$pkg")
	fi
	bin=${bins[$pkg]} pkgdir=${dirs[$pkg]}
	# go -run anchors: ^A$/^b$ for A/b.
	run_re=$(awk -F/ '{ for (i = 1; i <= NF; i++) printf "%s^%s$", (i > 1 ? "/" : ""), $i }' <<<"$pattern")
	name=$(tr -c 'A-Za-z0-9_\n' _ <<<"$pattern")

	pass=0 fail=0 streak=0 best=0 i=0 fails=""
	while ((i < limit)); do
		i=$((i + 1))
		dir="$out/$name-$i"
		mkdir -p "$dir/e2e"
		start=$SECONDS
		rc=0
		# A test binary runs in its package's directory, as under go test;
		# in the background, so that a signal reaches the trap at once.
		(cd "$pkgdir" && EVENTSYNC_E2E_LOG_DIR="$dir/e2e" exec setsid "$bin" -test.run "$run_re" -test.count=1 \
			-test.timeout "$timeout" -test.v >"$dir/test.log" 2>&1) &
		test_pid=$!
		wait "$test_pid" || rc=$?
		test_pid=""
		if [[ $rc == 0 ]] && grep -q -- '^--- PASS' "$dir/test.log"; then
			pass=$((pass + 1)) streak=$((streak + 1))
			((streak > best)) && best=$streak
			say "$pattern run $i: pass in $((SECONDS - start))s (streak $streak)"
			rm -rf "$dir/e2e"
		else
			fail=$((fail + 1)) streak=0 fails+=" $i"
			[[ $rc == 0 ]] && echo "stress: exit 0 but no test passed: does $pattern match a test in $pkg?" >>"$dir/test.log"
			say "$pattern run $i: FAIL (exit $rc) in $((SECONDS - start))s; log $dir/test.log"
			grep -E -- '^\s*--- FAIL|^panic:|timed out' "$dir/test.log" | head -5 | sed 's/^/    /' || true
		fi
		if [[ $consecutive == 1 && $streak -ge $n ]]; then break; fi
		if [[ $consecutive == 1 && $((limit - i + streak)) -lt $n ]]; then
			say "$pattern: $n in a row is out of reach within $limit runs"
			break
		fi
	done
	total_pass=$((total_pass + pass)) total_fail=$((total_fail + fail))
	ok=0
	if [[ $consecutive == 1 ]]; then
		((best >= n)) && ok=1
		goal="$n in a row"
	else
		((fail == 0)) && ok=1
		goal="$n of $n"
	fi
	[[ $ok == 1 ]] || all_ok=0
	line=$(printf '%-45s %-17s runs %3d  passed %3d  failed %3d  longest streak %3d  goal %s: %s' \
		"$pattern" "$pkg" "$i" "$pass" "$fail" "$best" "$goal" "$([[ $ok == 1 ]] && echo met || echo MISSED)")
	[[ -n $fails ]] && line+="  (failed runs:$fails)"
	summary+=("$line")
done

stop_hog
{
	echo "stress: summary (hog: ${hog:-none}; go test -race -count=1 with EVENTSYNC_REQUIRE_SERVICES=1)"
	printf '  %s\n' "${summary[@]}"
	echo "stress: $total_pass passed, $total_fail failed"
} | tee "$out/summary.txt"
[[ $all_ok == 1 ]]
