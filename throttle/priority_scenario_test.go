package throttle_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/redislimit"
)

// TestPriorityScenario measures live latency (wait for the throttle plus
// the call) at 20 live calls/s, first alone, then while 4 processes with 64
// resync callers each saturate the learned limit of the scenario API.
// Guarded like TestThroughputScenario.
func TestPriorityScenario(t *testing.T) {
	if !*scenarioFlag && os.Getenv("EVENTSYNC_THROTTLE_SCENARIO") != "1" {
		t.Skip("scenario benchmark: run with -scenario or EVENTSYNC_THROTTLE_SCENARIO=1 (see docs/benchmarks.md)")
	}
	redisURL := testenv.Redis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	api, err := fakeapi.Start(ctx, fakeapi.Config{Faults: scenarioAPI, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	name, prefix := testenv.UniqueName("prio"), testenv.UniqueName("sc")
	var procs []*throttle.Sink
	for range scenarioProcesses {
		lim, err := redislimit.Open(ctx, redislimit.Config{URL: redisURL, Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		defer lim.Close()
		s, err := throttle.New(newScenarioSink(t, api.URL), throttle.Config{}, throttle.Options{Name: name, Limiter: lim, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, s)
	}
	live := func(d time.Duration) []time.Duration {
		var lat []time.Duration
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for end, i := time.Now().Add(d), 0; time.Now().Before(end); i++ {
			<-tick.C
			start := time.Now()
			if _, err := procs[0].Create(ctx, record(-1-i)); err == nil {
				lat = append(lat, time.Since(start))
			}
		}
		return lat
	}
	idle := live(10 * time.Second)

	resyncCtx, stopResync := context.WithCancel(throttle.WithPriority(ctx, throttle.Resync))
	var wg sync.WaitGroup
	for p, s := range procs {
		for w := range workersPerProcess {
			wg.Go(func() {
				for i := 0; resyncCtx.Err() == nil; i++ {
					_, _ = s.Create(resyncCtx, record((p*100+w)*1_000_000+i))
				}
			})
		}
	}
	time.Sleep(10 * time.Second) // let the learner find the limit first
	busy := live(30 * time.Second)
	stopResync()
	wg.Wait()
	q := func(l []time.Duration, p float64) time.Duration {
		slices.Sort(l)
		return l[int(p*float64(len(l)-1))].Round(100 * time.Microsecond)
	}
	t.Logf("live latency idle: p50 %v p99 %v (n=%d); during resync: p50 %v p99 %v (n=%d); ratio p50 %.2f p99 %.2f",
		q(idle, 0.5), q(idle, 0.99), len(idle), q(busy, 0.5), q(busy, 0.99), len(busy),
		float64(q(busy, 0.5))/float64(q(idle, 0.5)), float64(q(busy, 0.99))/float64(q(idle, 0.99)))
}
