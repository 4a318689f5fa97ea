package demo

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Report is what one demo run did and whether the system converged.
type Report struct {
	Seed        uint64        `json:"seed"`
	Faults      string        `json:"faults"`
	Entities    int           `json:"entities"`
	Duration    time.Duration `json:"duration"`
	Rate        int           `json:"rate"`
	Workers     int           `json:"workers"`
	Concurrency int           `json:"concurrency"`
	DataDir     string        `json:"data_dir"`
	LogFile     string        `json:"log_file,omitempty"`
	APIURL      string        `json:"api_url"`

	// Elapsed is the whole run; ActiveTook runs from the first insert to
	// the drained system, the time throughput is measured over.
	Elapsed      time.Duration `json:"elapsed"`
	ActiveTook   time.Duration `json:"active_took"`
	InitialSync  Timing        `json:"initial_sync"`
	WorkloadTook time.Duration `json:"workload_took"`
	DrainTook    time.Duration `json:"drain_took"`

	Workload WorkloadCounts `json:"workload"`
	// Published counts events the relay moved from the outbox to the bus.
	Published   uint64 `json:"published"`
	RelayErrors uint64 `json:"relay_errors"`
	// Results sums the workers' delivery outcomes (applied, duplicate,
	// stale, repaired, retried, locked, parked, released).
	Results map[string]int64 `json:"results"`
	API     APIReport        `json:"api"`
	Chaos   ChaosCounts      `json:"chaos"`
	Resync  ResyncReport     `json:"resync"`
	// Parked is the number of messages in the parked queue at the end.
	Parked        int      `json:"parked"`
	ParkedReasons []string `json:"parked_reasons,omitempty"`
	Verdict       Verdict  `json:"verdict"`
	// Problems say why the run failed; empty means it succeeded.
	Problems []string `json:"problems,omitempty"`
}

// Timing is a phase's event count and duration.
type Timing struct {
	Events int64         `json:"events"`
	Took   time.Duration `json:"took"`
}

// ResyncReport describes the half-way resync.
type ResyncReport struct {
	// Started is the offset from the start of the run.
	Started time.Duration `json:"started"`
	// Counted rows were in the table when the resync began (the workload
	// keeps changing it); Published rows were in its consistent snapshot
	// and were published to the resync stream.
	Counted   int64 `json:"counted"`
	Published int64 `json:"published"`
	// Complete is set when the whole snapshot was published and applied
	// and live resumed; Took is then the time from pause to resume.
	Complete bool          `json:"complete"`
	Took     time.Duration `json:"took"`
	// LivePiledUp is how many live events waited when live resumed.
	LivePiledUp int64  `json:"live_piled_up"`
	Problem     string `json:"problem,omitempty"`
}

// Done reports whether the resync covered the table and was applied.
func (r ResyncReport) Done() bool {
	return r.Problem == "" && r.Complete && r.Published > 0
}

// APIReport is the fake API's view: response statuses and detectors.
type APIReport struct {
	// Statuses counts responses by class: 2xx, 404, 429, 5xx, other 4xx,
	// and "timeout" for writes whose response came after the client gave
	// up (status 499).
	Statuses    map[string]int64 `json:"statuses"`
	Calls       int64            `json:"calls"`
	MaxInFlight int64            `json:"max_in_flight"`
	// The detectors: what a correct client never causes.
	OverlappingWrites int64            `json:"overlapping_writes"`
	DuplicateRecords  int64            `json:"duplicate_records"`
	StaleWrites       int64            `json:"stale_writes"`
	FaultsInjected    map[string]int64 `json:"faults_injected"`
}

// OK reports whether the run converged with no duplicate record and no
// overlapping write.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Applied is the number of events that changed the API (applied or
// repaired).
func (r *Report) Applied() int64 { return r.Results["applied"] + r.Results["repaired"] }

// Throughput is events applied per second over the active time.
func (r *Report) Throughput() float64 {
	if r.ActiveTook <= 0 {
		return 0
	}
	return float64(r.Applied()) / r.ActiveTook.Seconds()
}

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// judge adds the verdict's failures to Problems.
func (r *Report) judge() {
	v := r.Verdict
	if !v.Converged() {
		r.problem("not converged: %d missing, %d extra, %d differing, %d duplicated, %d with secrets", v.Missing, v.Extra, v.Differing, v.Duplicated, v.SecretsLeaked)
	}
	if r.API.DuplicateRecords > 0 {
		r.problem("the API holds %d duplicate records", r.API.DuplicateRecords)
	}
	if r.API.OverlappingWrites > 0 {
		r.problem("the API saw %d overlapping writes to one record", r.API.OverlappingWrites)
	}
}

// fill copies the components' counters into r.
func (d *demo) fill(_ context.Context, r *Report) {
	p := d.sample()
	r.Published = p.published
	r.RelayErrors = d.relay.Stats().Errors
	r.Results = p.results
	r.API = p.api
	r.Chaos = d.chaos.counts()
	if d.workload != nil {
		r.Workload = d.workload.counts()
	}
}

// apiReport condenses the fake API's stats.
func apiReport(st map[string]map[string]int64) (statuses map[string]int64, calls int64) {
	statuses = map[string]int64{}
	for _, byStatus := range st {
		for code, n := range byStatus {
			calls += n
			statuses[statusClass(code)] += n
		}
	}
	return statuses, calls
}

func statusClass(code string) string {
	c, err := strconv.Atoi(code)
	switch {
	case err != nil:
		return code
	case c == 499:
		return "timeout"
	case c >= 200 && c < 300:
		return "2xx"
	case c == 404 || c == 429:
		return code
	case c >= 500:
		return "5xx"
	}
	return "4xx"
}

// Write prints the report for people.
func (r *Report) Write(w io.Writer) {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %-10s %s\n", label, fmt.Sprintf(format, args...))
	}
	fmt.Fprintln(w, "eventsync demo report")
	line("run", "%s listings, %s workload at %d tx/s, %d workers × %d in flight, faults %s, seed %d",
		num(int64(r.Entities)), r.Duration, r.Rate, r.Workers, r.Concurrency, r.Faults, r.Seed)
	line("took", "%s (initial sync %s, workload %s, drain %s)", secs(r.Elapsed), secs(r.InitialSync.Took), secs(r.WorkloadTook), secs(r.DrainTook))
	wl := r.Workload
	line("workload", "%s transactions: %s committed, %s rolled back, %s failed; rows %s inserted, %s updated, %s deleted",
		num(wl.Transactions), num(wl.Committed), num(wl.RolledBack), num(wl.Errors), num(wl.Inserts), num(wl.Updates), num(wl.Deletes))
	line("relay", "%s events published from the outbox (%d failed batches retried)", num(int64(r.Published)), r.RelayErrors)
	line("workers", "%s", results(r.Results))
	line("", "throughput %s events applied/s over %s", num(int64(r.Throughput())), secs(r.ActiveTook))
	rs := r.Resync
	switch {
	case rs.Done():
		line("resync", "%s rows snapshotted, published and applied in %s with live paused; %s live events piled up meanwhile",
			num(rs.Published), secs(rs.Took), num(rs.LivePiledUp))
	case rs.Problem != "":
		line("resync", "FAILED after %s of about %s rows: %s", num(rs.Published), num(rs.Counted), rs.Problem)
	default:
		line("resync", "did not run")
	}
	line("chaos", "%s duplicate deliveries injected, %s deliveries reordered", num(r.Chaos.Duplicates), num(r.Chaos.Reordered))
	a := r.API
	line("API", "%s calls: %s; peak %d in flight", num(a.Calls), statuses(a.Statuses), a.MaxInFlight)
	if len(a.FaultsInjected) > 0 {
		line("", "faults injected: %s", counts(a.FaultsInjected))
	}
	line("detectors", "overlapping writes %s · duplicate records %s · stale writes %s",
		num(a.OverlappingWrites), num(a.DuplicateRecords), num(a.StaleWrites))
	if r.Parked > 0 {
		line("parked", "%d events parked, e.g. %s", r.Parked, strings.Join(r.ParkedReasons, "; "))
	}
	v := r.Verdict
	line("verify", "%s rows vs %s remote records: missing %d · extra %d · differing %d · duplicated %d · secrets leaked %d",
		num(v.SourceRows), num(v.RemoteRecords), v.Missing, v.Extra, v.Differing, v.Duplicated, v.SecretsLeaked)
	for _, e := range v.Examples {
		line("", "e.g. %s", e)
	}
	if r.OK() {
		line("verdict", "CONVERGED: the API equals the table, no duplicate record, no overlapping write")
	} else {
		line("verdict", "FAILED: %s", strings.Join(r.Problems, "; "))
	}
	line("data dir", "%s (kept)", r.DataDir)
	if r.LogFile != "" {
		line("log", "%s", r.LogFile)
	}
}

func results(m map[string]int64) string {
	order := []string{"applied", "duplicate", "stale", "superseded", "repaired", "retried", "locked", "parked", "released"}
	parts := make([]string, 0, len(order))
	for _, k := range order {
		parts = append(parts, k+" "+num(m[k]))
	}
	return strings.Join(parts, " · ")
}

func statuses(m map[string]int64) string {
	order := []string{"2xx", "404", "429", "5xx", "timeout", "4xx"}
	var parts []string
	for _, k := range order {
		if n, ok := m[k]; ok || k == "2xx" || k == "429" || k == "5xx" {
			parts = append(parts, k+" "+num(n))
		}
	}
	return strings.Join(parts, " · ")
}

func counts(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+" "+num(m[k]))
	}
	return strings.Join(parts, ", ")
}

// num formats n with thousands separators.
func num(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// NextSteps are commands that work on what a run left in dataDir once the
// demo has exited (only one process at a time can open the embedded NATS
// data). verify needs the fake API of the third step running.
func NextSteps(dataDir string) []string {
	return []string{
		"eventsync ctl status --data-dir " + dataDir + "          # streams, pause flags, workers",
		"eventsync ctl parked list --data-dir " + dataDir + "     # parked events with their reasons",
		"eventsync fakeapi --state-file " + dataDir + "/fakeapi.json   # serve the synced records on http://127.0.0.1:8081 (keep it running)",
		"eventsync verify --entity listing --source sqlite://" + dataDir + "/app.db --table listings --key id \\\n" +
			"      --exclude-columns id,owner_email --fakeapi http://127.0.0.1:8081   # check again, from another terminal",
	}
}
