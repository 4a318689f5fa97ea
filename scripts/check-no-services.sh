#!/usr/bin/env bash
# check-no-services.sh: prove that eventsync works on a machine with only Go.
#
# Points every test service (PostgreSQL, Redis, RabbitMQ, NATS) at a closed
# port, then runs `go test -count=1 ./...` and the quick-start demo
# (`go run ./cmd/eventsync demo --entities 2000 --duration 5s`). It fails when
# either fails, or when a test skips without saying why. It lists every skipped
# test with its reason, grouped, so a skip that names no service stands out.
#
# When it can (root, or unprivileged user namespaces), it runs everything in a
# fresh network namespace that has only a loopback interface where nothing
# listens: then not even code that bypasses internal/testenv and dials
# 127.0.0.1:5432/6379/5672/4222 directly can reach a service running on this
# machine, and such a test fails instead of passing silently. Modules are
# fetched before entering it (the namespace has no internet either).
#
#   scripts/check-no-services.sh                 # isolated when possible
#   scripts/check-no-services.sh --no-namespace  # closed ports only
#   scripts/check-no-services.sh --keep          # keep the logs and demo data dir
#
# Needs bash, awk and Go; unshare and ip (util-linux, iproute2) for isolation.
set -euo pipefail
cd "$(dirname "$0")/.."

use_ns=1 keep=0 inside=0
for arg in "$@"; do
	case $arg in
	--no-namespace) use_ns=0 ;;
	--keep) keep=1 ;;
	--inside-namespace) inside=1 ;; # internal: set by the re-exec below
	-h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "check-no-services: unknown argument $arg; use --no-namespace, --keep or --help" >&2; exit 2 ;;
	esac
done

say() { printf 'check-no-services: %s\n' "$*"; }

if [[ $inside == 0 && $use_ns == 1 ]]; then
	ns=()
	if command -v unshare >/dev/null && command -v ip >/dev/null; then
		if unshare -n true 2>/dev/null; then
			ns=(unshare -n)
		elif unshare -rn true 2>/dev/null; then
			ns=(unshare -rn) # unprivileged: map ourselves to root in a user namespace
		fi
	fi
	if [[ ${#ns[@]} -gt 0 ]]; then
		say "fetching modules before leaving the network (go list -deps -test ./...)"
		go list -deps -test ./... >/dev/null
		args=(--inside-namespace)
		[[ $keep == 1 ]] && args+=(--keep)
		exec "${ns[@]}" -- bash "$0" "${args[@]}"
	fi
	say "NOT isolated: no usable 'unshare -n' (needs root or user namespaces) or no 'ip'; only the test variables point at closed ports, so a test that bypasses internal/testenv could still reach a service on its default port"
fi

isolation="closed ports only, same network as this machine"
if [[ $inside == 1 ]]; then
	ip link set lo up
	export GOPROXY=off GOTOOLCHAIN=local # no internet here: fail fast instead of timing out
	isolation="isolated network namespace: loopback only, nothing listening"
fi
say "running with $isolation"

# Nothing from the caller's environment may steer eventsync to a real service.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep '^EVENTSYNC_' || true)
export EVENTSYNC_TEST_POSTGRES=postgres://postgres@127.0.0.1:1/test
export EVENTSYNC_TEST_REDIS=redis://127.0.0.1:1/0
export EVENTSYNC_TEST_RABBITMQ=amqp://guest:guest@127.0.0.1:1/
export EVENTSYNC_TEST_NATS=nats://127.0.0.1:1

work=$(mktemp -d "${TMPDIR:-/tmp}/eventsync-no-services.XXXXXX")
cleanup() {
	if [[ $keep == 1 ]]; then say "kept $work"; else rm -rf "$work" && say "removed $work (run with --keep to look around the demo's data dir)"; fi
}
trap cleanup EXIT

# ---- go test ----------------------------------------------------------------

say "go test -count=1 ./...  (logs in $work, removed at the end unless --keep or a failure)"
start=$SECONDS
set +e
go test -count=1 -json ./... 2>"$work/test.stderr" | tee "$work/test.json" | awk -v module="$(go list -m)/" '
	# live progress: one line per finished package
	/"Action":"(pass|fail)"/ && !/"Test":/ {
		pkg = $0; sub(/.*"Package":"/, "", pkg); sub(/".*/, "", pkg); sub("^" module, "", pkg)
		el = $0; sub(/.*"Elapsed":/, "", el); sub(/[,}].*/, "", el)
		printf "  %-4s %-22s %5.1fs\n", (/"Action":"pass"/ ? "ok" : "FAIL"), pkg, el
		fflush()
	}'
test_rc=${PIPESTATUS[0]}
set -e
test_secs=$((SECONDS - start))
if [[ -s $work/test.stderr ]]; then
	sed 's/^/  go: /' "$work/test.stderr"
fi

# Summarise the JSON event stream: packages, failures with their output, and
# every skipped test grouped by its reason. Written for any POSIX awk.
summary=$(awk -v module="$(go list -m)/" '
function jstr(s, key,    i, out, c, n) {
	i = index(s, "\"" key "\":\"")
	if (i == 0) return ""
	s = substr(s, i + length(key) + 4)
	out = ""
	while ((n = length(s)) > 0) {
		c = substr(s, 1, 1)
		if (c == "\"") break
		if (c == "\\") {
			c = substr(s, 2, 1)
			if (c == "n") out = out "\n"
			else if (c == "t") out = out "\t"
			else if (c == "u") { out = out sprintf("%c", hex(substr(s, 3, 4))); s = substr(s, 5) }
			else out = out c
			s = substr(s, 3)
			continue
		}
		out = out c
		s = substr(s, 2)
	}
	return out
}
function hex(h,    v, i) {
	v = 0
	for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789abcdef", tolower(substr(h, i, 1))) - 1
	return v < 128 ? v : 63 # non-ASCII shown as "?"
}
function short(p) { sub("^" module, "", p); return p }
{
	line = $0
	head = line; o = index(line, "\"Output\":"); if (o > 0) head = substr(line, 1, o - 1)
	action = jstr(head, "Action"); pkg = short(jstr(head, "Package")); test = jstr(head, "Test")
	output = o > 0 ? jstr(substr(line, o), "Output") : ""
	if (action == "build-output") { build[short(jstr(head, "ImportPath"))] = build[short(jstr(head, "ImportPath"))] output; next }
	if (action == "build-fail") { buildfail[short(jstr(head, "ImportPath"))] = 1; next }
	id = pkg " " test
	if (action == "output") {
		out[id] = out[id] output
		# the last "file.go:N: message" line of a test is its skip message
		if (test != "" && match(output, /^    [^ ]+\.go:[0-9]+: /)) {
			msg = substr(output, RLENGTH + 1); sub(/\n$/, "", msg); last[id] = msg
		}
		next
	}
	if (test == "") {
		if (action == "pass") passed++
		else if (action == "fail") { failed++; failedpkg[pkg] = 1 }
		else if (action == "skip") notests++
		next
	}
	if (action == "fail") failedtest[id] = 1
	if (action != "skip") next
	reason = last[id]
	top = test; sub(/\/.*/, "", top)
	if (reason == "") { noreason = noreason "  " pkg " " test "\n"; next }
	if (match(reason, /needs (postgres|redis|rabbitmq|nats) at [^ ]+/)) {
		svc = substr(reason, RSTART + 6, RLENGTH - 6); sub(/ .*/, "", svc)
		host = substr(reason, RSTART, RLENGTH); sub(/.* at /, "", host)
		if (host != "127.0.0.1:1") wrongaddr = wrongaddr "  " pkg " " test ": " reason "\n"
		svcs[svc]++; nsvc++
		key = "needs " svc " at " host
	} else if (tolower(reason) ~ /postgres|redis|rabbitmq|nats/) {
		svcs["service-named-otherwise"]++; nsvc++
		key = reason
	} else {
		nother++
		key = "ON PURPOSE: " reason
	}
	if (!(key in seen)) { seen[key] = 1; keys[++nkeys] = key }
	k = key SUBSEP pkg
	if (!(k in kp)) { kp[k] = 1; pkgs[key] = pkgs[key] SUBSEP pkg }
	if (test != top) { sub_n[k, top]++; sub_name[k, top] = test }
	if (!((k, top) in listed)) { listed[k, top] = 1; order[k] = order[k] SUBSEP top }
}
END {
	printf "packages: %d passed, %d failed, %d without tests\n", passed, failed, notests
	for (p in failedpkg) {
		printf "\n==== FAIL %s\n", p
		if (p in buildfail) printf "%s", build[p]
		for (b in buildfail) if (index(b, p " ") == 1 || index(b, p "_test ") == 1) printf "%s", build[b]
		printf "%s", out[p " "]
		for (t in failedtest) { split(t, a, " "); if (a[1] == p) printf "%s", out[t] }
	}
	printf "\nskipped tests: %d for a missing service", nsvc
	sep = " ("
	ns = split("postgres redis rabbitmq nats service-named-otherwise", sl, " ")
	for (i = 1; i <= ns; i++) if (sl[i] in svcs) { printf "%s%s %d", sep, sl[i], svcs[sl[i]]; sep = ", " }
	if (nsvc > 0) printf ")"
	printf ", %d on purpose\n", nother
	for (i = 1; i <= nkeys; i++) {
		key = keys[i]
		printf "  %s\n", key
		np = split(substr(pkgs[key], 2), pl, SUBSEP)
		for (j = 1; j <= np; j++) {
			k = key SUBSEP pl[j]
			nt = split(substr(order[k], 2), tl, SUBSEP)
			list = ""
			for (m = 1; m <= nt; m++) {
				name = tl[m]
				if ((k, name) in sub_n) name = sub_n[k, name] == 1 ? sub_name[k, name] : name " (" sub_n[k, name] " subtests)"
				list = list (m > 1 ? ", " : "") name
			}
			printf "      %-22s %s\n", pl[j], list
		}
	}
	if (noreason != "") printf "\nPROBLEM: these tests skip without saying why:\n%s", noreason
	if (wrongaddr != "") printf "\nPROBLEM: these tests ignore EVENTSYNC_TEST_* (they name an address other than the closed port 127.0.0.1:1):\n%s", wrongaddr
	if (noreason != "" || wrongaddr != "") exit 3
}' "$work/test.json") && summary_rc=0 || summary_rc=$?
printf '%s\n' "$summary"

# ---- demo -------------------------------------------------------------------

say "go run ./cmd/eventsync demo --entities 2000 --duration 5s"
start=$SECONDS
set +e
go run ./cmd/eventsync demo --entities 2000 --duration 5s --data-dir "$work/demo" </dev/null 2>&1 | tee "$work/demo.out"
demo_rc=${PIPESTATUS[0]}
set -e
demo_secs=$((SECONDS - start))
verdict=$(grep -E '^  verdict ' "$work/demo.out" | sed -E 's/^  verdict +//' || true)

# ---- verdict ----------------------------------------------------------------

echo
say "environment: $isolation"
say "go test ./...: exit $test_rc in ${test_secs}s; $(head -1 <<<"$summary")"
say "demo: exit $demo_rc in ${demo_secs}s (build included); verdict: ${verdict:-none printed}"
problems=()
[[ $test_rc == 0 ]] || problems+=("go test failed (exit $test_rc)")
[[ $summary_rc == 0 ]] || problems+=("some skips give no reason or bypass EVENTSYNC_TEST_* (see PROBLEM above)")
[[ $demo_rc == 0 ]] || problems+=("the demo failed (exit $demo_rc)")
if [[ ${#problems[@]} -gt 0 ]]; then
	keep=1
	say "FAIL: $(IFS=';'; echo "${problems[*]}")"
	exit 1
fi
say "PASS: eventsync builds, tests and converges without any service"
