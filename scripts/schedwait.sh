#!/usr/bin/env bash
# schedwait.sh: run a command and report, for each given process, how much
# CPU time it got and how long its threads waited in the kernel's run queue
# meanwhile (from /proc/PID/task/*/schedstat). A wait far above the CPU time
# means the process was starved of CPU, not busy: the bound of a benchmark
# on a loaded machine.
#
#   scripts/schedwait.sh "$(pgrep -x redis-server)" "$(pgrep -x beam.smp)" -- \
#       go test -run '^$' -bench BenchmarkWorkerZeroLatency ./internal/engine
set -euo pipefail

pids=()
while [[ $# -gt 0 && $1 != "--" ]]; do pids+=("$1"); shift; done
if [[ $# -lt 2 || ${#pids[@]} -eq 0 ]]; then
	echo "usage: $0 PID... -- command [args...]" >&2
	exit 2
fi
shift

# sample PID: "cpu_ns wait_ns" summed over the process's threads
sample() {
	local cpu=0 wait=0 c w _
	for f in /proc/"$1"/task/*/schedstat; do
		[[ -r $f ]] || continue
		read -r c w _ <"$f" 2>/dev/null || continue
		cpu=$((cpu + c)) wait=$((wait + w))
	done
	echo "$cpu $wait"
}

declare -A before
for p in "${pids[@]}"; do before[$p]=$(sample "$p"); done
start=$(date +%s%N)
status=0
"$@" || status=$?
wall=$(( $(date +%s%N) - start ))
for p in "${pids[@]}"; do
	[[ -d /proc/$p ]] || { echo "pid $p: gone"; continue; }
	read -r c0 w0 <<<"${before[$p]}"
	read -r c1 w1 <<<"$(sample "$p")"
	awk -v name="$(cat /proc/"$p"/comm)" -v pid="$p" -v c=$((c1 - c0)) -v w=$((w1 - w0)) -v wall="$wall" 'BEGIN {
		printf "%s (pid %s): cpu %.1fs (%.0f%% of a core), run-queue wait %.1fs, over %.1fs wall\n", name, pid, c/1e9, 100*c/wall, w/1e9, wall/1e9
	}'
done
echo "load: $(cat /proc/loadavg)"
exit "$status"
