#!/usr/bin/env bash
# pgconns.sh: run a command and report the most PostgreSQL connections it
# held at once. Every process the command starts (go test, its test
# binaries, the e2e tests' eventsync processes) inherits PGAPPNAME, which
# pgx and psql send as application_name, so its sessions can be told from
# everyone else's on a shared server. A background loop samples
# pg_stat_activity every --interval seconds; the report gives the command's
# peak, the peak of all client sessions seen meanwhile and max_connections.
#
#   scripts/pgconns.sh -- env EVENTSYNC_REQUIRE_SERVICES=1 go test -race -count=1 ./...
#   scripts/pgconns.sh --interval 0.5 --log conns.tsv -- go test ./test/e2e
#
# --log FILE keeps every sample (time, this command's sessions, all client
# sessions). Connects like psql with PGHOST/PGUSER/PGDATABASE/PGPORT,
# default postgres@127.0.0.1:5432/test. Exits with the command's status.
set -euo pipefail

interval=0.2 log=""
while [[ $# -gt 0 && $1 != "--" ]]; do
	case $1 in
	--interval) interval=$2; shift 2 ;;
	--log) log=$2; shift 2 ;;
	-h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "pgconns: unknown argument $1; usage: $0 [--interval SECONDS] [--log FILE] -- command [args...]" >&2; exit 2 ;;
	esac
done
if [[ $# -lt 2 ]]; then
	echo "usage: $0 [--interval SECONDS] [--log FILE] -- command [args...]" >&2
	exit 2
fi
shift
command -v psql >/dev/null || { echo "pgconns: needs psql (Debian package postgresql-client)" >&2; exit 2; }

export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-test}
app="eventsync-pgconns-$$"
samples=$(mktemp "${TMPDIR:-/tmp}/pgconns.XXXXXX")
query="SELECT to_char(clock_timestamp(), 'HH24:MI:SS.MS'), count(*) FILTER (WHERE application_name = '$app'),
       count(*) FILTER (WHERE backend_type = 'client backend' AND application_name <> 'pgconns-sampler'),
       current_setting('max_connections')
FROM pg_stat_activity"

# The sampler keeps one psql session open (so it does not churn
# connections itself) and asks once per interval until the stop file
# appears; then psql reads its end of input and the pipeline ends.
stopfile=$samples.stop
sampler() {
	while [[ ! -e $stopfile ]]; do
		printf '%s\n' "$query;"
		sleep "$interval"
	done | PGAPPNAME=pgconns-sampler psql -X -q -At -F $'\t' -v ON_ERROR_STOP=0 2>/dev/null |
		cat >"$samples"
}
sampler &
sampler_pid=$!
stop_sampler() {
	touch "$stopfile"
	wait "$sampler_pid" 2>/dev/null || true
}
trap 'stop_sampler; rm -f "$samples" "$stopfile"' EXIT

start=$SECONDS
status=0
PGAPPNAME=$app "$@" || status=$?
stop_sampler

[[ -n $log ]] && cp "$samples" "$log"
awk -F '\t' -v secs=$((SECONDS - start)) '
	{ n++; if ($2 > mine) { mine = $2; at = $1 }; if ($3 > all) all = $3; max = $4 }
	END {
		if (n == 0) { print "pgconns: no sample taken (is PostgreSQL reachable with psql?)"; exit }
		printf "pgconns: peak %d connections of this command (all clients: peak %d; max_connections %d); %d samples over %ds\n", mine, all, max, n, secs
	}' "$samples"
exit "$status"
