package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/testenv"
)

// TestHotKeysDebounce is issue 18's coalescing measurement
// (docs/benchmarks.md, "Hot keys: debounce"): K keys × V versions, each
// key's versions in commit order, keys interleaved at random, drained by
// one real `eventsync worker` process (Redis store, RabbitMQ,
// competing-consumers mode) into the fake API answering after 20 ms. In
// the same run, alternating run by run, the worker runs with its default
// configuration (no debounce: the baseline) and with worker.debounce
// {"*": W} at each prefetch asked for. Two ways to publish: "burst" (all
// K × V at once, committed at the same instant) and "paced" (R events/s,
// each committed when it is published).
//
// Each run reports the API's writes per version; the lag of every version
// from its commit (occurred_at) to the API: the first successful write of
// its key at that version or newer, timed by a recorder in front of the
// fake API (so a version coalesced into a newer one counts until the
// newer one landed); the worker's own p99 lag (eventsync_event_lag_seconds,
// applied events only); the drain time, the calls saved by coalescing,
// the API's stale writes and whether every record ended at version V.
//
//	EVENTSYNC_BENCH_HOTKEYS=1 go test -run TestHotKeysDebounce -v -timeout 60m ./test/bench
//
// EVENTSYNC_BENCH_HOTKEYS_KEYS (200), _VERSIONS (20), _ROUNDS (3),
// _DEBOUNCE (250ms), _PREFETCH (comma-separated; 0 is the worker's default
// with debounce on; default "256,1024,0"), _RATE (paced events/s, 1000;
// "off" runs bursts only). The table is logged after "RESULT".
func TestHotKeysDebounce(t *testing.T) {
	if os.Getenv("EVENTSYNC_BENCH_HOTKEYS") != "1" {
		t.Skip("set EVENTSYNC_BENCH_HOTKEYS=1 to run (a few minutes)")
	}
	keys := envInt(t, "EVENTSYNC_BENCH_HOTKEYS_KEYS", 200)
	versions := envInt(t, "EVENTSYNC_BENCH_HOTKEYS_VERSIONS", 20)
	rounds := envInt(t, "EVENTSYNC_BENCH_HOTKEYS_ROUNDS", 3)
	window := 250 * time.Millisecond
	if v := os.Getenv("EVENTSYNC_BENCH_HOTKEYS_DEBOUNCE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("EVENTSYNC_BENCH_HOTKEYS_DEBOUNCE=%q: want a duration like 250ms", v)
		}
		window = d
	}
	prefetches := []int{256, 1024, 0}
	if v := os.Getenv("EVENTSYNC_BENCH_HOTKEYS_PREFETCH"); v != "" {
		prefetches = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 0 {
				t.Fatalf("EVENTSYNC_BENCH_HOTKEYS_PREFETCH=%q: want non-negative integers", v)
			}
			prefetches = append(prefetches, n)
		}
	}
	modes := []int{0} // events/s; 0: burst
	if v := os.Getenv("EVENTSYNC_BENCH_HOTKEYS_RATE"); v != "off" {
		modes = append(modes, envInt(t, "EVENTSYNC_BENCH_HOTKEYS_RATE", 1000))
	}
	variants := []hotVariant{{name: "default (no debounce)"}}
	for _, p := range prefetches {
		v := hotVariant{name: fmt.Sprintf("debounce %s, prefetch %d", window, p), debounce: window, prefetch: p}
		if p == 0 {
			v.name = fmt.Sprintf("debounce %s, default prefetch", window)
		}
		variants = append(variants, v)
	}

	amqpURL, redisURL := testenv.RabbitMQ(t), testenv.Redis(t)
	bb := rabbitBench{url: amqpURL}
	bin := filepath.Join(t.TempDir(), "eventsync")
	goBuild(t, filepath.Join("..", ".."), bin, "./cmd/eventsync")
	commit := commitOf(filepath.Join("..", ".."))
	load0 := loadAvg()
	var rows []string
	for round := 1; round <= rounds; round++ {
		for _, rate := range modes {
			for _, v := range variants {
				r := runDebounced(t, bin, bb, redisURL, keys, versions, rate, v, uint64(round))
				publish := "burst"
				if rate > 0 {
					publish = fmt.Sprintf("paced %d/s", rate)
				}
				n := float64(keys * versions)
				rows = append(rows, fmt.Sprintf("| %d | %s | %s | **%.3f** | %s | **%s** | %s | %s | %.2f | %d | %d | %s |",
					round, publish, v.name, float64(r.writes)/n, ms(r.lags.q(0.5)), ms(r.lags.q(0.99)), ms(r.lags.q(1)), ms(r.workerP99),
					r.elapsed.Seconds(), r.coalesced, r.staleWrites, r.converged))
				t.Logf("round %d, %s, %s: %s, results %v, API writes %d, lag p50 %s p99 %s, load %s",
					round, publish, v.name, r.elapsed.Round(time.Millisecond), r.results, r.writes, ms(r.lags.q(0.5)), ms(r.lags.q(0.99)), loadAvg())
			}
		}
	}
	t.Logf("RESULT\neventsync %s; %d keys × %d versions, one worker, fake API 20 ms, Redis store, RabbitMQ %s; load average at start %s, at end %s\n\n"+
		"| round | publish | worker | API writes per version | lag p50 | lag p99 | lag max | worker's lag p99 (applied) | drain s | coalesced | stale writes | converged |\n"+
		"|---|---|---|---|---|---|---|---|---|---|---|---|\n%s",
		commit, keys, versions, rabbitVersion(t, amqpURL), load0, loadAvg(), strings.Join(rows, "\n"))
}

// hotVariant is one worker configuration of the measurement.
type hotVariant struct {
	name     string
	debounce time.Duration // 0: none
	prefetch int           // 0: the worker's default
}

type debounceResult struct {
	elapsed     time.Duration
	results     map[string]int64
	writes      int64
	staleWrites int64
	coalesced   int64
	lags        durations
	workerP99   float64 // seconds
	converged   string
}

// durations are sorted lags.
type durations []time.Duration

// q is the q-quantile (nearest rank); 1 is the maximum.
func (d durations) q(q float64) float64 {
	if len(d) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[max(0, min(i, len(d)-1))].Seconds()
}

func ms(seconds float64) string {
	if math.IsNaN(seconds) {
		return "–"
	}
	return fmt.Sprintf("%.0f ms", seconds*1000)
}

// writeLog records when the fake API accepted each write: the key's
// external id and the version its body carried.
type writeLog struct {
	mu     sync.Mutex
	writes map[string][]landed // by external id, in order
}

type landed struct {
	at      time.Time
	version int
}

// recorder serves api, noting every successful write.
func (l *writeLog) recorder(api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodDelete {
			api.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		api.ServeHTTP(sw, r)
		var rec struct {
			ExternalID string `json:"external_id"`
			Version    int    `json:"version"`
		}
		if sw.status/100 != 2 || json.Unmarshal(body, &rec) != nil || rec.ExternalID == "" {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.writes[rec.ExternalID] = append(l.writes[rec.ExternalID], landed{at: time.Now(), version: rec.Version})
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

// lag is how long after committed the API first held key at version v or
// newer; false if it never did.
func (l *writeLog) lag(key string, v int, committed time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.writes[key] {
		if w.version >= v {
			return w.at.Sub(committed), true
		}
	}
	return 0, false
}

func runDebounced(t *testing.T, bin string, bb rabbitBench, redisURL string, keys, versions, rate int, v hotVariant, seed uint64) debounceResult {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ns := testenv.UniqueName("hotkeys")
	api, err := fakeapi.New(fakeapi.Config{Faults: fakeapi.Faults{Latency: fakeapi.Duration(20 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	log := &writeLog{writes: map[string][]landed{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: log.recorder(api.Handler()), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		_ = srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("fake API: %v", err)
		}
		_ = api.Close()
	}()
	b, closeBus := bb.open(t, ctx, ns, 0)
	defer func() {
		closeBus()
		deleteRedisPrefix(t, redisURL, ns)
	}()
	worker := ""
	if v.prefetch > 0 {
		worker += fmt.Sprintf("  prefetch: %d\n", v.prefetch)
	}
	if v.debounce > 0 {
		worker += fmt.Sprintf("  debounce:\n    \"*\": %s\n", v.debounce)
	}
	if worker != "" {
		worker = "worker:\n" + worker
	}
	cfg := fmt.Sprintf("bus: %s\nstore: %s\nnamespace: %s\nlog:\n  level: warn\n%ssink:\n  defaults:\n    base_url: http://%s\n  entities:\n    listing:\n      collection: listings\n",
		bb.busURL(), redisURL, ns, worker, ln.Addr())
	cfgPath := filepath.Join(t.TempDir(), "eventsync.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := freeAddr(t)
	p := startProc(t, "worker", bin, "worker", "--config", cfgPath, "--admin", admin, "--worker-id", "w0")
	waitSubscribed(t, ctx, b, 1)

	order := interleaved(keys, versions, seed)
	committed := make([]time.Time, len(order))
	message := func(i int, at time.Time) bus.Message {
		e := order[i]
		committed[i] = at
		return bus.Message{Body: fmt.Appendf(nil, `{"id":"e-%d-%d","entity":"listing","key":"k%03d","version":%d,"op":"upsert","occurred_at":%q,"data":{"title":"listing %d v%d","version":%d}}`,
			e.key, e.version, e.key, e.version, at.UTC().Format(time.RFC3339Nano), e.key, e.version, e.version)}
	}
	start := time.Now()
	if rate == 0 {
		msgs := make([]bus.Message, len(order))
		for i := range order {
			msgs[i] = message(i, start)
		}
		if err := b.Publish(ctx, bus.Live, msgs...); err != nil {
			t.Fatal(err)
		}
	} else {
		// Every 10 ms the events due by then, each committed when published.
		tick := time.NewTicker(10 * time.Millisecond)
		for i := 0; i < len(order); {
			<-tick.C
			due := min(len(order), int(time.Since(start).Seconds()*float64(rate))+1)
			var msgs []bus.Message
			for now := time.Now(); i < due; i++ {
				msgs = append(msgs, message(i, now))
			}
			if err := b.Publish(ctx, bus.Live, msgs...); err != nil {
				t.Fatal(err)
			}
		}
		tick.Stop()
	}

	var res debounceResult
	for {
		if ctx.Err() != nil {
			t.Fatalf("%s: not settled in time: %v", v.name, res.results)
		}
		time.Sleep(20 * time.Millisecond)
		_, r, err := workerSettled(admin)
		if err != nil {
			continue
		}
		res.results = r
		final := r["applied"] + r["stale"] + r["duplicate"] + r["superseded"] + r["parked"]
		if final >= int64(len(order)) && bb.settled(ctx, b) {
			break
		}
	}
	res.elapsed = time.Since(start)
	if fams, err := scrape(admin); err == nil {
		for _, m := range fams["eventsync_events_coalesced_total"].GetMetric() {
			res.coalesced += int64(m.GetCounter().GetValue())
		}
	}
	res.workerP99 = (&fleet{admins: []string{admin}}).lag(t).quantile(0.99)
	p.stop(t)

	stats := api.Stats()
	for method, byStatus := range stats.Requests {
		if method == http.MethodGet {
			continue
		}
		for _, n := range byStatus {
			res.writes += n
		}
	}
	res.staleWrites = stats.StaleWrites
	if stats.DuplicateRecords != 0 || stats.StaleWrites != 0 {
		t.Errorf("%s: duplicates %d, stale writes %d", v.name, stats.DuplicateRecords, stats.StaleWrites)
	}
	res.converged = "yes"
	recs := api.Records("listings")
	if len(recs) != keys {
		res.converged = fmt.Sprintf("no: %d records", len(recs))
	}
	for _, r := range recs {
		if n, _ := r["version"].(float64); int(n) != versions {
			res.converged = fmt.Sprintf("no: %v at version %v", r["external_id"], r["version"])
			break
		}
	}
	if res.converged != "yes" {
		t.Errorf("%s: not converged (%s)", v.name, res.converged)
	}
	for i, e := range order {
		d, ok := log.lag(fmt.Sprintf("k%03d", e.key), e.version, committed[i])
		if !ok {
			t.Errorf("%s: k%03d never reached version %d at the API", v.name, e.key, e.version)
			continue
		}
		res.lags = append(res.lags, d)
	}
	slices.Sort(res.lags)
	return res
}
