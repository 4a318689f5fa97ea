package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/testenv"
)

// TestWorkerSIGTERMDrain measures what Kubernetes' terminationGracePeriod
// must cover: a real worker process with 256 calls in flight against an API
// that takes 2 s per call gets SIGTERM.
//
//   - finish: worker.shutdown_grace 30s (the manifests' value). The calls
//     in flight finish and commit; the process exits well within the grace.
//   - release: worker.shutdown_grace 1s, shorter than a call. The calls are
//     cancelled and their events released to the queue; the process exits
//     soon after the grace.
//
// Either way nothing is lost: after the exit every event is either applied
// (a remote record) or back in the queue, and a second worker applies the
// rest, one record per key.
func TestWorkerSIGTERMDrain(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace time.Duration
	}{{"finish", 30 * time.Second}, {"release", time.Second}} {
		t.Run(tc.name, func(t *testing.T) { testSIGTERMDrain(t, tc.grace) })
	}
}

func testSIGTERMDrain(t *testing.T, grace time.Duration) {
	const (
		events      = 600
		concurrency = 256
		latency     = 2 * time.Second
	)
	amqpURL := testenv.RabbitMQ(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := testenv.UniqueName("drain")
	storeURL := testenv.PostgresPool(t, 4)
	t.Cleanup(func() { dropStoreSchema(t, testenv.Postgres(t), ns) })

	api, b := apiAndBus(t, ctx, latency, amqpURL, ns)

	cfgPath := filepath.Join(t.TempDir(), "eventsync.yaml")
	cfg := fmt.Sprintf(`bus: %s
store: %s
namespace: %s
worker:
  concurrency: %d
  shutdown_grace: %s
throttle:
  initial_limit: %d
log:
  level: info
sink:
  defaults:
    base_url: %s
    timeout: 10s
  entities:
    listing:
      collection: listings
`, amqpURL, storeURL, ns, concurrency, grace, concurrency, api.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	batch := make([]bus.Message, events)
	for i := range batch {
		batch[i] = bus.Message{Body: fmt.Appendf(nil, `{"id":"e%d","entity":"listing","key":"k%d","version":1,"op":"upsert","data":{"title":"t%d"}}`, i, i, i)}
	}
	if err := b.Publish(ctx, bus.Live, batch...); err != nil {
		t.Fatal(err)
	}

	w := start(t, "worker", "worker", "--config", cfgPath, "--admin", "off", "--streams", "live")
	waitFor(t, time.Minute, fmt.Sprintf("%d calls in flight at the API", concurrency), func() error {
		if n := api.Stats().InFlight; n < concurrency {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	inFlight := api.Stats().InFlight
	before := len(api.Records("listings"))
	sent := time.Now()
	w.signal(syscall.SIGTERM)
	var exitErr error
	select {
	case exitErr = <-w.done:
		w.done <- exitErr
	case <-time.After(grace + 15*time.Second):
		t.Fatalf("the worker did not exit within %s of SIGTERM (shutdown_grace %s)", grace+15*time.Second, grace)
	}
	took := time.Since(sent)
	if exitErr != nil {
		t.Errorf("worker exited with %v after SIGTERM; log:\n%s", exitErr, tail(w.log, 2000))
	}
	applied := len(api.Records("listings"))
	t.Logf("shutdown_grace %s: SIGTERM with %d calls in flight (%s each) took %s to exit; records %d before, %d after",
		grace, inFlight, latency, took.Round(10*time.Millisecond), before, applied)
	if grace >= latency && applied < before+int(inFlight) {
		t.Errorf("with shutdown_grace %s above the %s calls, the %d calls in flight should have finished: %d records before SIGTERM, %d after", grace, latency, inFlight, before, applied)
	}
	if took > grace+5*time.Second {
		t.Errorf("exit took %s, more than shutdown_grace %s + 5s: terminationGracePeriodSeconds would kill it", took, grace)
	}
	// Nothing lost: what was not applied is back in the queue (a
	// cancelled call may still have landed: its retry adopts the record).
	// The broker requeues a closed connection's unacknowledged deliveries
	// asynchronously, so the count may take a moment to add up.
	waitFor(t, 30*time.Second, "every unapplied event back in the queue", func() error {
		st, err := b.Stats(ctx, bus.Live)
		if err != nil {
			return err
		}
		if got := applied + int(st.Ready+st.Delayed); got < events {
			return fmt.Errorf("records %d + queued %d = %d < %d events published", applied, st.Ready+st.Delayed, got, events)
		}
		return nil
	})

	w2 := start(t, "worker-2", "worker", "--config", cfgPath, "--admin", "off", "--streams", "live")
	waitFor(t, 2*time.Minute, "every event applied", func() error {
		if n := len(api.Records("listings")); n < events {
			return fmt.Errorf("%d of %d records", n, events)
		}
		return nil
	})
	w2.stop(t, grace+15*time.Second)
	if s := api.Stats(); s.DuplicateRecords != 0 || len(api.Records("listings")) != events {
		t.Errorf("after the second worker: %d records for %d keys, %d duplicates", len(api.Records("listings")), events, s.DuplicateRecords)
	}
}
