package throttle_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/redislimit"
)

var scenarioFlag = flag.Bool("scenario", false, "run TestThroughputScenario (takes minutes); or set EVENTSYNC_THROTTLE_SCENARIO=1")

// scenarioAPI is the API: 500 requests/s (unknown to eventsync), a
// ceiling of 150 concurrent requests, 20–50 ms latency.
var scenarioAPI = fakeapi.Faults{
	RateLimit:      500,
	MaxConcurrency: 150,
	Latency:        fakeapi.Duration(20 * time.Millisecond),
	Jitter:         fakeapi.Duration(30 * time.Millisecond),
}

const (
	scenarioProcesses = 4
	workersPerProcess = 64 // events in flight per process, as the engine's concurrency would allow
)

// TestThroughputScenario is the benchmark of docs/benchmarks.md
// ("Throughput control"). It is a test, not a Go benchmark, because one
// run takes minutes and prints a table rather than ns/op. Each "process"
// is an independent pool: its own HTTP sink, its own throttle.Sink and its
// own Redis connection, sharing only Redis and the fake API, as separate
// worker processes would.
func TestThroughputScenario(t *testing.T) {
	if !*scenarioFlag && os.Getenv("EVENTSYNC_THROTTLE_SCENARIO") != "1" {
		t.Skip("scenario benchmark: run with -scenario or EVENTSYNC_THROTTLE_SCENARIO=1 (see docs/benchmarks.md)")
	}
	redisURL := testenv.Redis(t)
	events := envInt(t, "EVENTSYNC_SCENARIO_EVENTS", 100000)
	phase := time.Duration(envInt(t, "EVENTSYNC_SCENARIO_PHASE_SECONDS", 30)) * time.Second
	only := os.Getenv("EVENTSYNC_SCENARIO_ONLY")

	type variant struct {
		name    string
		mode    string // naive, learned, known
		changes bool   // halve then double the limit mid-run
	}
	variants := []variant{
		{"naive: 150 in flight, no limiter", "naive", false},
		{"learned: limit unknown", "learned", false},
		{"known: rate 500 configured", "known", false},
		{"learned, limit 500→250→500", "learned", true},
	}
	var rows []string
	for _, v := range variants {
		if only != "" && !strings.Contains(v.mode+fmt.Sprint(v.changes), only) {
			continue
		}
		r := runScenario(t, redisURL, v.mode, v.changes, events, phase)
		rows = append(rows, fmt.Sprintf("| %s | %s |", v.name, r))
	}
	t.Logf("\n| variant | result |\n|---|---|\n%s", strings.Join(rows, "\n"))
}

type outcome struct {
	ok, rateLimited, overloaded, other atomic.Int64
}

func runScenario(t *testing.T, redisURL, mode string, changes bool, events int, phase time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	api, err := fakeapi.Start(ctx, fakeapi.Config{Faults: scenarioAPI, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	name := testenv.UniqueName("scenario")
	prefix := testenv.UniqueName("sc")

	var res outcome
	var perSecond sync.Map // second → *[3]atomic.Int64 {ok, 429, 503}
	start := time.Now()
	count := func(idx int) {
		sec := int(time.Since(start) / time.Second)
		v, _ := perSecond.LoadOrStore(sec, new([3]atomic.Int64))
		v.(*[3]atomic.Int64)[idx].Add(1)
	}

	// The work: events ids; a failed event comes back after its Retry-After
	// (at least 100 ms), as the engine's delayed retry would bring it.
	total := events
	if changes {
		total = math.MaxInt32 // time-bound instead
	}
	queue := make(chan int, 1<<16)
	var issued atomic.Int64
	var done atomic.Int64
	next := func() (int, bool) {
		select {
		case id := <-queue:
			return id, true
		default:
		}
		if n := issued.Add(1); n <= int64(total) {
			return int(n), true
		}
		select {
		case id := <-queue:
			return id, true
		case <-ctx.Done():
			return 0, false
		case <-time.After(20 * time.Millisecond):
			return -1, true
		}
	}

	var stats []*throttle.Sink
	var wg sync.WaitGroup
	for p := range scenarioProcesses {
		hs := newScenarioSink(t, api.URL)
		var target sink.Sink = hs
		workers := workersPerProcess
		if mode == "naive" {
			workers = 150 / scenarioProcesses
			if p < 150%scenarioProcesses {
				workers++
			}
		} else {
			lim, err := redislimit.Open(ctx, redislimit.Config{URL: redisURL, Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			defer lim.Close()
			cfg := throttle.Config{}
			if mode == "known" {
				cfg.Rate = 500
			}
			ts, err := throttle.New(hs, cfg, throttle.Options{Name: name, Limiter: lim, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			target, stats = ts, append(stats, ts)
		}
		for range workers {
			wg.Go(func() {
				for {
					id, ok := next()
					if !ok {
						return
					}
					if id < 0 {
						if done.Load() >= int64(total) {
							return
						}
						continue
					}
					_, err := target.Create(throttle.WithPriority(ctx, throttle.Resync), sink.Record{
						Entity: "listing", Key: strconv.Itoa(id), Version: 1, Data: json.RawMessage(`{"title":"x"}`),
					})
					var se *sink.Error
					switch {
					case err == nil:
						res.ok.Add(1)
						count(0)
						if done.Add(1) >= int64(total) {
							cancel()
						}
						continue
					case ctx.Err() != nil:
						return
					case errors.As(err, &se) && se.Status == http.StatusTooManyRequests:
						res.rateLimited.Add(1)
						count(1)
					case errors.As(err, &se) && se.Status == http.StatusServiceUnavailable:
						res.overloaded.Add(1)
						count(2)
					default:
						res.other.Add(1)
					}
					_, after := sink.Retryable(err)
					time.AfterFunc(max(after, 100*time.Millisecond), func() { queue <- id })
				}
			})
		}
	}

	var trace []string
	traceDone := make(chan struct{})
	if len(stats) > 0 {
		go func() {
			defer close(traceDone)
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					st := stats[0].Stats()
					trace = append(trace, fmt.Sprintf("%.0f,%d,%d", st.Rate, st.Limit, st.InFlight[0]+st.InFlight[1]))
				}
			}
		}()
	} else {
		close(traceDone)
	}
	if changes {
		time.Sleep(phase)
		setRate(t, api, 250)
		time.Sleep(phase)
		setRate(t, api, 500)
		time.Sleep(phase)
		cancel()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cancel()
	<-traceDone
	if len(trace) > 0 {
		t.Logf("%s changes=%v: process 0 rate,limit,in-flight per second: %s", mode, changes, strings.Join(trace, " "))
	}

	calls := res.ok.Load() + res.rateLimited.Load() + res.overloaded.Load() + res.other.Load()
	rejected := res.rateLimited.Load() + res.overloaded.Load()
	rate := float64(res.ok.Load()) / elapsed.Seconds()
	var limits []string
	for _, s := range stats {
		st := s.Stats()
		limits = append(limits, fmt.Sprintf("%.0f/s,%d", st.Rate, st.Limit))
	}
	timeline := timelineOf(&perSecond, int(elapsed/time.Second))
	t.Logf("%s changes=%v: timeline ok/429/503 per second: %s", mode, changes, timeline)
	summary := fmt.Sprintf("%d ok in %.1fs = %.0f/s (%.1f%% of 500); %d calls, 429: %d, 503: %d (%.2f%% rejected), other errors %d; peak in flight at API %d; final rate,limit per process [%s]",
		res.ok.Load(), elapsed.Seconds(), rate, rate/5, calls, res.rateLimited.Load(), res.overloaded.Load(),
		100*float64(rejected)/float64(max(calls, 1)), res.other.Load(), api.Stats().MaxInFlight, strings.Join(limits, " "))
	if changes {
		p := int(phase / time.Second)
		summary += "; " + followTimes(&perSecond, p)
	}
	t.Logf("%s: %s", mode, summary)
	return summary
}

// followTimes reports, after the halving at second p and the doubling at
// 2p, how long until rejections stop and until throughput reaches 90% of
// the new limit (3-second average).
func followTimes(perSecond *sync.Map, p int) string {
	get := func(sec, idx int) int64 {
		v, ok := perSecond.Load(sec)
		if !ok {
			return 0
		}
		return v.(*[3]atomic.Int64)[idx].Load()
	}
	lastReject := p
	for s := p; s < 2*p; s++ {
		if get(s, 1)+get(s, 2) > 0 {
			lastReject = s + 1
		}
	}
	up := -1
	for s := 2 * p; s+2 < 3*p; s++ {
		if get(s, 0)+get(s+1, 0)+get(s+2, 0) >= 3*450 {
			up = s - 2*p
			break
		}
	}
	var avgHalf int64
	for s := p + 10; s < 2*p; s++ {
		avgHalf += get(s, 0)
	}
	return fmt.Sprintf("after halving: rejections stop within %ds, throughput %.0f/s from 10s after the change (%.0f%% of 250); after doubling: 3s-average ≥ 450/s from second %d",
		lastReject-p, float64(avgHalf)/float64(p-10), float64(avgHalf)/float64(p-10)/2.5, up+3)
}

func timelineOf(perSecond *sync.Map, n int) string {
	var b strings.Builder
	for s := 0; s <= n; s++ {
		v, ok := perSecond.Load(s)
		if !ok {
			b.WriteString(" 0/0/0")
			continue
		}
		c := v.(*[3]atomic.Int64)
		fmt.Fprintf(&b, " %d/%d/%d", c[0].Load(), c[1].Load(), c[2].Load())
	}
	return b.String()
}

func setRate(t *testing.T, api *fakeapi.Running, rate float64) {
	f := api.Faults()
	f.RateLimit, f.Burst = rate, 0
	if err := api.SetFaults(f); err != nil {
		t.Error(err)
	}
}

func newScenarioSink(t *testing.T, url string) *httpsink.Sink {
	t.Helper()
	cfg, err := httpsink.ParseConfig(fmt.Appendf(nil, `
defaults: {base_url: %q, timeout: 5s}
entities:
  listing: {collection: listings}
`, url))
	if err != nil {
		t.Fatal(err)
	}
	s, err := httpsink.New(cfg, httpsink.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}
