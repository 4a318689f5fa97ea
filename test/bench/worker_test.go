package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/testenv"
)

// TestWorkerAgainstBaselines is issue 14's measurement of the worker as a
// user runs it (docs/benchmarks.md, "Worker as a user runs it"): a real
// `eventsync worker` process with its default configuration drains N
// events of about 1 KiB from the live quorum queue into `eventsync fakeapi`,
// and in the same run, interleaved round by round, three baselines drain
// the same N from an identically declared queue into an identical API
// (test/bench/baselines, a module of its own): a raw amqp091-go
// consume-and-ack loop, a raw consume-and-POST loop at the worker's
// concurrency, and a Watermill router whose handlers POST each message.
//
//	EVENTSYNC_BENCH_WORKER=1 go test -run TestWorkerAgainstBaselines -v -timeout 150m ./test/bench
//
// Scenarios: "zero" (API without latency; eventsync with Redis and with
// PostgreSQL; Watermill at the same concurrency and with one handler, its
// plain form), "50ms-c256" and "50ms-c1000" (API answering after 50 ms,
// worker.concurrency 256 and 1,000, Redis). Every contender is a process
// timed from its start until every event is settled: for eventsync when
// its /status counts N live deliveries settled, for a baseline when it
// prints "done" after its N-th ack. Each run is then checked: the queue is
// empty, the API holds exactly N records (N creates), and eventsync applied
// all N. Peak RSS is the process's VmHWM when it is done; CPU time
// (user + system) comes from its rusage after it exits.
//
// Environment: EVENTSYNC_BENCH_WORKER_EVENTS (default 50000),
// EVENTSYNC_BENCH_WORKER_ROUNDS (3), EVENTSYNC_BENCH_WORKER_ONLY (a
// comma-separated list of scenario names), EVENTSYNC_BENCH_WORKER_SRC (an
// eventsync source tree to build the worker from, e.g. a worktree of the
// commit to measure; default this checkout), EVENTSYNC_BENCH_WORKER_RUN_MINUTES
// (10: a run still going then fails). The table is logged after "RESULT".
func TestWorkerAgainstBaselines(t *testing.T) {
	if os.Getenv("EVENTSYNC_BENCH_WORKER") != "1" {
		t.Skip("set EVENTSYNC_BENCH_WORKER=1 to run (publishes 50,000 events per run, 36 runs; about an hour on a loaded 2-core machine)")
	}
	env := newCompareEnv(t)
	var only []string
	if v := os.Getenv("EVENTSYNC_BENCH_WORKER_ONLY"); v != "" {
		only = strings.Split(v, ",")
	}
	esRedis := contender{id: "eventsync-redis", name: "eventsync, Redis store", kind: kindEventsync, store: "redis"}
	esPostgres := contender{id: "eventsync-postgres", name: "eventsync, PostgreSQL store", kind: kindEventsync, store: "postgres"}
	rawAck := contender{id: "ack", name: "raw consume-and-ack (amqp091-go)", kind: "ack"}
	rawPost := contender{id: "post", name: "raw consume-and-POST (amqp091-go + net/http)", kind: "post"}
	wm := contender{id: "watermill", name: "Watermill router, POST handlers", kind: "watermill"}
	wm1 := contender{id: "watermill-1", name: "Watermill router, one POST handler", kind: "watermill", concurrency: 1}
	scenarios := []compareScenario{
		{name: "zero", concurrency: env.defaultConcurrency, contenders: []contender{esRedis, esPostgres, rawAck, rawPost, wm, wm1}},
		{name: "50ms-c256", latency: 50 * time.Millisecond, concurrency: 256, contenders: []contender{esRedis, rawPost, wm}},
		{name: "50ms-c1000", latency: 50 * time.Millisecond, concurrency: 1000, contenders: []contender{esRedis, rawPost, wm}},
	}
	load0 := loadAvg()
	var reports []string
	for _, sc := range scenarios {
		if only != nil && !slices.Contains(only, sc.name) {
			continue
		}
		t.Run(sc.name, func(t *testing.T) {
			reports = append(reports, env.runScenario(t, sc))
		})
	}
	t.Logf("RESULT\n%s\nload average (1/5/15 min) at start %s, at end %s\n\n%s",
		env.describe(), load0, loadAvg(), strings.Join(reports, "\n\n"))
}

const kindEventsync = "eventsync"

// contender is one process that drains the queue.
type contender struct {
	id          string // subtest name
	name        string
	kind        string // kindEventsync, or a mode of the baselines command
	store       string // eventsync: redis or postgres
	concurrency int    // 0: the scenario's
}

type compareScenario struct {
	name        string
	latency     time.Duration // the fake API's per-request latency
	concurrency int           // worker.concurrency, and the baselines' events in flight
	contenders  []contender
}

// compareEnv is what every run shares: the binaries and the services.
type compareEnv struct {
	eventsyncBin, baselinesBin string
	amqpURL, redisURL, pgURL   string
	events, rounds             int
	runTimeout                 time.Duration
	commit                     string
	defaultConcurrency         int // eventsync's worker.concurrency when unset
}

func newCompareEnv(t *testing.T) *compareEnv {
	env := &compareEnv{
		amqpURL:    testenv.RabbitMQ(t),
		redisURL:   testenv.Redis(t),
		pgURL:      testenv.Postgres(t),
		events:     envInt(t, "EVENTSYNC_BENCH_WORKER_EVENTS", 50_000),
		rounds:     envInt(t, "EVENTSYNC_BENCH_WORKER_ROUNDS", 3),
		runTimeout: time.Duration(envInt(t, "EVENTSYNC_BENCH_WORKER_RUN_MINUTES", 10)) * time.Minute,

		defaultConcurrency: eventsync.Config{}.WithDefaults().Worker.Concurrency,
	}
	bin := t.TempDir()
	src := os.Getenv("EVENTSYNC_BENCH_WORKER_SRC")
	if src == "" {
		src = filepath.Join("..", "..")
	}
	env.eventsyncBin = filepath.Join(bin, "eventsync")
	goBuild(t, src, env.eventsyncBin, "./cmd/eventsync")
	env.baselinesBin = filepath.Join(bin, "baselines")
	goBuild(t, "baselines", env.baselinesBin, ".")
	env.commit = commitOf(src)
	return env
}

func goBuild(t *testing.T, dir, out, pkg string) {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s in %s: %v\n%s", pkg, dir, err, b)
	}
}

// commitOf names the commit of the tree the worker was built from and how
// many files that go into the binary differed from it.
func commitOf(dir string) string {
	head, err := exec.Command("git", "-C", dir, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown commit (" + err.Error() + ")"
	}
	status, _ := exec.Command("git", "-C", dir, "status", "--porcelain", "--untracked-files=all").Output()
	dirty := 0
	for line := range strings.Lines(string(status)) {
		path := strings.TrimSpace(line[min(3, len(line)):])
		if (strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") && !strings.HasPrefix(path, "test/")) ||
			path == "go.mod" || path == "go.sum" {
			dirty++
		}
	}
	c := "commit " + strings.TrimSpace(string(head))
	if dirty > 0 {
		c += fmt.Sprintf(" plus uncommitted changes to %d non-test Go files", dirty)
	}
	return c
}

func (env *compareEnv) describe() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("eventsync %s; %s, %d CPUs (nproc), %s; %d events of ~1 KiB per run, %d interleaved rounds",
		env.commit, cpu, runtime.NumCPU(), runtime.Version(), env.events, env.rounds)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// runResult is one contender's drain in one round.
type runResult struct {
	elapsed      time.Duration
	rss          int64         // peak resident set, bytes
	cpu          time.Duration // user + system
	peakInFlight int64         // the most requests the API had in flight at once
}

func (r runResult) rate(events int) float64 { return float64(events) / r.elapsed.Seconds() }

// runScenario runs every contender once per round, rotating their order
// from round to round, and returns the scenario's tables.
func (env *compareEnv) runScenario(t *testing.T, sc compareScenario) string {
	load0 := loadAvg()
	results := make(map[string][]*runResult) // by contender name, one per round (nil: failed)
	for r := range env.rounds {
		for i := range sc.contenders {
			c := sc.contenders[(i+r)%len(sc.contenders)]
			var res *runResult
			t.Run(fmt.Sprintf("round%d/%s", r+1, c.id), func(t *testing.T) {
				res = env.run(t, sc, c)
			})
			results[c.name] = append(results[c.name], res)
		}
	}
	return formatScenario(sc, env.events, results, load0, loadAvg())
}

// run publishes the events to a fresh namespace, starts a fresh fake API
// and drains the queue with one contender.
func (env *compareEnv) run(t *testing.T, sc compareScenario, c contender) *runResult {
	ns := testenv.UniqueName("wb")
	// The worker declares the default retry tiers; so must this bus, or its
	// cleanup would miss their queues.
	b := rabbitmqtest.Open(t, rabbitmq.Config{URL: env.amqpURL, Namespace: ns, RetryTiers: rabbitmq.DefaultRetryTiers})
	queue := ns + "." + string(bus.Live)
	start := time.Now()
	publishKiBEvents(t, b, ns, env.events)
	published := time.Since(start)

	apiAddr := freeAddr(t)
	apiURL := "http://" + apiAddr
	startProc(t, "fakeapi", env.eventsyncBin, "fakeapi", "--listen", apiAddr, "--latency", sc.latency.String())
	waitHTTP(t, apiURL+"/_admin/stats")

	concurrency := sc.concurrency
	if c.concurrency > 0 {
		concurrency = c.concurrency
	}
	load := loadAvg()
	var res runResult
	if c.kind == kindEventsync {
		res = env.runWorker(t, sc, c, ns, apiURL)
	} else {
		res = env.runBaseline(t, c.kind, concurrency, queue, apiURL+"/v1/listings")
	}
	res.peakInFlight = env.check(t, c, queue, apiURL)
	t.Logf("%s: %d events in %s = %.0f events/s; RSS peak %.1f MB, CPU %.1f s, peak in flight at the API %d; load average %s (published in %s)",
		c.name, env.events, res.elapsed.Round(time.Millisecond), res.rate(env.events), mb(res.rss), res.cpu.Seconds(), res.peakInFlight, load, published.Round(time.Second))
	return &res
}

// publishKiBEvents publishes n create events of about 1 KiB each, distinct
// keys, through the bus adapter (as the relay would).
func publishKiBEvents(t *testing.T, b bus.Bus, ns string, n int) {
	const size = 1024
	const chunk = 2000
	filler := strings.Repeat("A quiet flat near the river, two rooms, a balcony, the old town five minutes away. ", 16)
	now := time.Now().UTC().Format(time.RFC3339)
	msgs := make([]bus.Message, 0, chunk)
	for i := range n {
		head := fmt.Sprintf(`{"id":"e-%d","entity":"listing","key":"%s-%07d","version":1,"op":"upsert","occurred_at":%q,"data":{"title":"listing %d","price":%d,"description":"`,
			i, ns, i, now, i, 100+i%900)
		const tail = `"}}`
		body := head + filler[:max(0, size-len(head)-len(tail))] + tail
		msgs = append(msgs, bus.Message{Body: []byte(body)})
		if len(msgs) == chunk || i == n-1 {
			if err := b.Publish(context.Background(), bus.Live, msgs...); err != nil {
				t.Fatalf("publish after %d events: %v", i+1-len(msgs), err)
			}
			msgs = msgs[:0]
		}
	}
}

// runWorker starts `eventsync worker` with the default configuration but
// for the bus, store, namespace, sink and (in the 50 ms scenarios)
// worker.concurrency, and times it until its /status shows every event
// settled.
func (env *compareEnv) runWorker(t *testing.T, sc compareScenario, c contender, ns, apiURL string) runResult {
	store := env.redisURL
	if c.store == "postgres" {
		store = env.pgURL
	}
	t.Cleanup(func() { dropNamespace(t, c.store, store, ns) })
	worker := ""
	if sc.concurrency != env.defaultConcurrency {
		worker = fmt.Sprintf("worker:\n  concurrency: %d\n", sc.concurrency)
	}
	cfg := fmt.Sprintf("bus: %s\nstore: %s\nnamespace: %s\n%ssink:\n  defaults:\n    base_url: %s\n  entities:\n    listing:\n      collection: listings\n",
		env.amqpURL, store, ns, worker, apiURL)
	cfgPath := filepath.Join(t.TempDir(), "eventsync.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := freeAddr(t)
	start := time.Now()
	p := startProc(t, "worker", env.eventsyncBin, "worker", "--config", cfgPath, "--admin", admin)
	deadline := start.Add(env.runTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var settled int64
	var results map[string]int64
	for settled < int64(env.events) {
		select {
		case <-tick.C:
		case err := <-p.done:
			p.done <- err
			t.Fatalf("worker exited after %s: %v", time.Since(start).Round(time.Millisecond), err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker settled %d of %d events in %s", settled, env.events, env.runTimeout)
		}
		if s, r, err := workerSettled(admin); err == nil {
			settled, results = s, r
		}
	}
	elapsed := time.Since(start)
	hwm := peakRSS(t, p.cmd.Process.Pid)
	p.stop(t)
	if results["applied"] != int64(env.events) {
		t.Errorf("worker results %v, want %d applied", results, env.events)
	}
	return usage(t, p.cmd, elapsed, hwm)
}

// runBaseline runs one mode of the baselines command until it reports the
// n-th event done, then waits for it to exit.
func (env *compareEnv) runBaseline(t *testing.T, mode string, concurrency int, queue, api string) runResult {
	logPath := filepath.Join(t.TempDir(), mode+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	out := &doneWriter{done: make(chan time.Time, 1)}
	cmd := exec.Command(env.baselinesBin, mode, "-amqp", env.amqpURL, "-queue", queue,
		"-n", fmt.Sprint(env.events), "-concurrency", fmt.Sprint(concurrency), "-api", api)
	cmd.Stdout, cmd.Stderr = out, logf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fail := func(format string, args ...any) {
		_ = cmd.Process.Kill()
		<-exited
		log, _ := os.ReadFile(logPath)
		t.Fatalf("%s: "+format+"\n--- its log:\n%s", append(append([]any{mode}, args...), log)...)
	}
	var elapsed time.Duration
	var hwm int64
	select {
	case at := <-out.done:
		elapsed = at.Sub(start)
		// It waits a moment after "done" before it closes and exits.
		hwm = peakRSS(t, cmd.Process.Pid)
	case err := <-exited:
		exited <- err
		fail("exited before it was done: %v", err)
	case <-time.After(env.runTimeout):
		fail("not done within %s", env.runTimeout)
	}
	select {
	case err := <-exited:
		if err != nil {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s: %v after it was done\n--- its log:\n%s", mode, err, log)
		}
	case <-time.After(time.Minute):
		fail("did not exit within a minute of being done")
	}
	return usage(t, cmd, elapsed, hwm)
}

// doneWriter is a baseline's stdout: it notes when "done" arrives.
type doneWriter struct {
	once sync.Once
	done chan time.Time
}

func (w *doneWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("done\n")) {
		w.once.Do(func() { w.done <- time.Now() })
	}
	return len(p), nil
}

// usage reads the CPU time of an exited process.
func usage(t *testing.T, cmd *exec.Cmd, elapsed time.Duration, peakRSS int64) runResult {
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Fatalf("no rusage for %s", cmd.Path)
	}
	return runResult{
		elapsed: elapsed,
		rss:     peakRSS,
		cpu:     time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime)),
	}
}

// peakRSS reads a running process's peak resident set (VmHWM) in bytes.
// Not rusage's ru_maxrss: exec folds the peak of the image it replaces into
// it, and os/exec starts a child in the test process's memory (vfork), so
// every child would report at least the test process's own size.
func peakRSS(t *testing.T, pid int) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read peak RSS: %v", err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// check verifies a finished run: nothing left in the queue, and (for the
// contenders that call the API) exactly one create and one record per
// event. It returns the API's peak of requests in flight.
func (env *compareEnv) check(t *testing.T, c contender, queue, apiURL string) int64 {
	conn, err := amqp.Dial(env.amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	// A quorum queue applies acks through its Raft log, so its count lags
	// the acks of a consumer that has just stopped by a moment.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			t.Fatalf("inspect %s: %v", queue, err)
		}
		if q.Messages == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %d messages left in %s", c.name, q.Messages, queue)
			break
		}
	}
	if c.kind == "ack" {
		return 0
	}
	resp, err := http.Get(apiURL + "/_admin/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st fakeapi.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("decode fake API stats: %v", err)
	}
	if got := st.Records["listings"]; got != int64(env.events) || st.Requests["POST"]["201"] != int64(env.events) {
		t.Errorf("%s: the API holds %d records after %d creates (requests %v), want %d of each",
			c.name, got, st.Requests["POST"]["201"], st.Requests, env.events)
	}
	return st.MaxInFlight
}

// dropNamespace removes what a worker wrote to its store.
func dropNamespace(t *testing.T, kind, url, ns string) {
	if kind == "redis" {
		deleteRedisPrefix(t, url, ns)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err == nil {
		_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{ns}.Sanitize()+" CASCADE")
		_ = conn.Close(ctx)
	}
	if err != nil {
		t.Errorf("cleanup: drop schema %s: %v", ns, err)
	}
}

// formatScenario renders one scenario as markdown: each contender's rate
// per round with its RSS, CPU and the API's peak of requests in flight,
// then eventsync as a ratio of each baseline, computed round by round
// (both ran within minutes of each other) and given as the min–max over
// rounds.
func formatScenario(sc compareScenario, events int, results map[string][]*runResult, load0, load1 string) string {
	var b strings.Builder
	title := "API without latency"
	if sc.latency > 0 {
		title = fmt.Sprintf("API latency %s", sc.latency)
	}
	fmt.Fprintf(&b, "### %s: %s, concurrency %d (load average %s → %s)\n\n", sc.name, title, sc.concurrency, load0, load1)
	ideal := 0.0
	idealCol := ""
	if sc.latency > 0 {
		ideal = float64(sc.concurrency) / sc.latency.Seconds()
		idealCol = fmt.Sprintf(" of ideal (%.0f/s) |", ideal)
	}
	b.WriteString("| contender | events/s per round | min–max |" + idealCol + " RSS peak | CPU per 1,000 events | peak in flight at the API |\n|---|---|---|---|---|---|" +
		strings.Repeat("---|", strings.Count(idealCol, "|")) + "\n")
	for _, c := range sc.contenders {
		var rounds []string
		var rates, rss, cpu, inFlight []float64
		for _, r := range results[c.name] {
			if r == nil {
				rounds = append(rounds, "failed")
				continue
			}
			rate := r.rate(events)
			rounds = append(rounds, fmt.Sprintf("%.0f", rate))
			rates = append(rates, rate)
			rss = append(rss, mb(r.rss))
			cpu = append(cpu, r.cpu.Seconds()/float64(events)*1e6) // ms per 1,000
			if r.peakInFlight > 0 {
				inFlight = append(inFlight, float64(r.peakInFlight))
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s |", c.label(), strings.Join(rounds, " / "), span(rates, 1, ""))
		if ideal > 0 {
			fmt.Fprintf(&b, " %s |", span(rates, 100/ideal, " %"))
		}
		fmt.Fprintf(&b, " %s | %s | %s |\n", span(rss, 1, " MB"), span(cpu, 1, " ms"), span(inFlight, 1, ""))
	}
	var bases []contender
	header := "\n| eventsync |"
	for _, c := range sc.contenders {
		if c.kind != kindEventsync {
			bases = append(bases, c)
			header += " of " + c.label() + " |"
		}
	}
	b.WriteString(header + "\n|---|" + strings.Repeat("---|", len(bases)) + "\n")
	for _, es := range sc.contenders {
		if es.kind != kindEventsync {
			continue
		}
		b.WriteString("| " + es.label() + " |")
		for _, base := range bases {
			var ratios []float64
			for i, r := range results[es.name] {
				if bs := results[base.name]; r != nil && i < len(bs) && bs[i] != nil {
					ratios = append(ratios, bs[i].elapsed.Seconds()/r.elapsed.Seconds())
				}
			}
			b.WriteString(" " + span(ratios, 100, " %") + " |")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// label is the contender's name in the tables.
func (c contender) label() string {
	if c.concurrency > 0 {
		return fmt.Sprintf("%s (concurrency %d)", c.name, c.concurrency)
	}
	return c.name
}

// span formats the min–max of xs×scale, rounded, with unit ("–" when
// empty).
func span(xs []float64, scale float64, unit string) string {
	if len(xs) == 0 {
		return "–"
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range xs {
		lo, hi = min(lo, x*scale), max(hi, x*scale)
	}
	a, z := fmt.Sprintf("%.0f", lo), fmt.Sprintf("%.0f", hi)
	if a != z {
		a += "–" + z
	}
	return a + unit
}
