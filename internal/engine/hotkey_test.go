package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/store"
)

// publishVersions publishes versions 1..n of every key, interleaved in
// version order (k0 v1, k1 v1, ..., k0 v2, ...), the title naming the
// version.
func publishVersions(t *testing.T, b bus.Bus, keys []string, n int) {
	t.Helper()
	var msgs []bus.Message
	for v := 1; v <= n; v++ {
		for _, k := range keys {
			msgs = append(msgs, bus.Message{Body: upsert(k, int64(v), fmt.Sprint(v))})
		}
	}
	if err := b.Publish(context.Background(), bus.Live, msgs...); err != nil {
		t.Fatal(err)
	}
}

// acked counts the deliveries settled for good: applied or found
// duplicate, stale or superseded.
func acked(w *Worker) int64 {
	r := w.Status().Results
	return r[string(ResultApplied)] + r[string(ResultDuplicate)] + r[string(ResultStale)] + r[string(ResultSuperseded)]
}

// expectNewest fails unless every key has one remote record, at version n,
// and the API never saw a key's version go down or a second record.
func expectNewest(t *testing.T, h *harness, keys []string, n int) {
	t.Helper()
	for _, k := range keys {
		recs := h.remote(t, k)
		if len(recs) != 1 || recs[0]["title"] != fmt.Sprint(n) {
			t.Errorf("key %s: remote %v, want one record at version %d", k, recs, n)
		}
	}
	if st := h.api.Stats(); st.StaleWrites != 0 || st.DuplicateRecords != 0 || st.OverlappingWrites != 0 {
		t.Errorf("detectors: %d stale writes, %d duplicate records, %d overlapping writes", st.StaleWrites, st.DuplicateRecords, st.OverlappingWrites)
	}
}

// Events of one key that are in this worker at once wait for each other in
// memory: none goes round the broker's retry tiers (they used to, as
// "locked", a second or five each), and every key still ends at its newest
// version without the API ever seeing a version go down.
func TestWorkerHotKeysWaitInMemory(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		// A generous sink timeout: a slow answer on a loaded machine must
		// not turn into a retry this test would count.
		h := newHarnessTimeout(t, sf, 10*time.Second, nil)
		b := &flakySettleBus{Bus: rabbitmqtest.Open(t, rabbitmq.Config{})}
		// Prefetch 64: every event below is in hand at once, and at most 9
		// of a key wait, under the limit of a quarter of the prefetch.
		w, _ := runWorker(t, h, b, func(c *Config) {
			c.Streams = []bus.Stream{bus.Live}
			c.Concurrency, c.Prefetch = 16, 64
			c.LeaseTTL = time.Minute // no wait is long enough to be retried
		})
		keys := []string{"hot0", "hot1", "hot2"}
		const versions = 10
		publishVersions(t, b, keys, versions)
		waitUntil(t, 30*time.Second, "every event acked", func() bool { return acked(w) >= int64(len(keys)*versions) })
		if n := b.retries.Load(); n != 0 {
			t.Errorf("%d deliveries went through the broker's retry (results %v), want none", n, w.Status().Results)
		}
		expectNewest(t, h, keys, versions)
	})
}

// gatedWorker runs a worker on the live stream whose creates wait for
// gate.release; sk is the sink behind the gate.
func gatedWorker(t *testing.T, mutate func(*Config)) (h *harness, sk sink.Sink, gate *gatedSink, b *flakySettleBus, w *Worker, stop func()) {
	t.Helper()
	h = newHarness(t, stores()[0], nil)
	sk = h.applier.sink
	gate = &gatedSink{Sink: sk, stream: bus.Live, release: make(chan struct{})}
	h.applier.sink = gate
	b = &flakySettleBus{Bus: rabbitmqtest.Open(t, rabbitmq.Config{})}
	w, stop = runWorker(t, h, b, func(c *Config) {
		c.Streams = []bus.Stream{bus.Live}
		mutate(c)
	})
	return h, sk, gate, b, w, stop
}

// A worker that stops hands the deliveries waiting for their key back to
// the broker: nothing is lost, and the next worker applies the newest.
func TestWorkerHandsBackEventsWaitingForTheirKeyOnShutdown(t *testing.T) {
	h, sk, gate, b, w, stop := gatedWorker(t, func(c *Config) { c.ShutdownGrace = 200 * time.Millisecond })
	keys := []string{"held"}
	publishVersions(t, b, keys, 5)
	waitUntil(t, 10*time.Second, "one create held and four events waiting", func() bool {
		return gate.waiting.Load() == 1 && w.keys.waitingOn(bus.Live) == 4
	})
	stop()
	close(gate.release)
	if n := w.keys.waitingOn(bus.Live); n != 0 {
		t.Fatalf("%d deliveries still waiting after the worker stopped", n)
	}
	// The held create was cancelled after the grace period and handed
	// back, the four waiting ones too.
	if n := b.releases.Load(); n != 5 {
		t.Errorf("%d deliveries handed back, want 5", n)
	}
	waitUntil(t, 10*time.Second, "all five back in the queue", func() bool { return readyOf(t, b, bus.Live) == 5 })
	h.applier.sink = sk
	runWorker(t, h, b, func(c *Config) { c.Streams = []bus.Stream{bus.Live} })
	waitUntil(t, 20*time.Second, "the newest version applied", func() bool {
		recs := h.remote(t, "held")
		return len(recs) == 1 && recs[0]["title"] == "5"
	})
	expectNewest(t, h, keys, 5)
}

// Beyond a quarter of the prefetch per key, deliveries do not wait in
// memory: they take the broker's retry, in its shortest tier (never above
// LockedRetryDelay, which RabbitMQ would round up to the next tier), and
// converge later.
func TestWorkerRetriesEventsBeyondTheWaitingLimitInTheShortestTier(t *testing.T) {
	h, _, gate, b, w, _ := gatedWorker(t, func(c *Config) { c.Prefetch = 8 }) // at most 2 wait
	keys := []string{"busy"}
	publishVersions(t, b, keys, 8)
	waitUntil(t, 10*time.Second, "a delivery beyond the limit retried", func() bool { return b.retries.Load() > 0 })
	if n := w.keys.waitingOn(bus.Live); n > 2 {
		t.Fatalf("%d deliveries waiting, over the limit of 2", n)
	}
	close(gate.release)
	waitUntil(t, 30*time.Second, "every event acked", func() bool { return acked(w) >= 8 })
	if d := time.Duration(b.longestRetry.Load()); d > w.cfg.LockedRetryDelay {
		t.Errorf("a locked retry asked for %s, above LockedRetryDelay %s (the next tier up)", d, w.cfg.LockedRetryDelay)
	}
	if n := w.Status().Results[string(ResultRetried)]; n != 0 {
		t.Errorf("%d events retried as failures; waiting is not failing", n)
	}
	expectNewest(t, h, keys, 8)
}

// Versions of a key that waited behind the one being written cost no API
// call: the newest of them is applied next, the rest are settled stale
// after it, and eventsync_events_coalesced_total counts the calls saved.
func TestWorkerCoalescesTheVersionsOfAKeyInHand(t *testing.T) {
	h, _, gate, b, w, _ := gatedWorker(t, func(c *Config) { c.Concurrency, c.Prefetch = 16, 64 })
	keys := []string{"burst"}
	publishVersions(t, b, keys, 10)
	waitUntil(t, 10*time.Second, "version 1's create held and nine versions waiting", func() bool {
		return gate.waiting.Load() == 1 && w.keys.waitingOn(bus.Live) == 9
	})
	close(gate.release)
	waitUntil(t, 30*time.Second, "every event acked", func() bool { return acked(w) >= 10 })
	expectNewest(t, h, keys, 10)
	writes := apiWrites(h)
	if writes != 2 {
		t.Errorf("%d API writes for ten versions in hand (%v), want 2: the one under way and the newest", writes, h.api.Stats().Requests)
	}
	if n := valueOf(t, w.metrics.coalesced.WithLabelValues(string(bus.Live))); n != 8 {
		t.Errorf("eventsync_events_coalesced_total = %v, want 8 (versions 2 to 9)", n)
	}
}

// A call cancelled because the worker stopped past its grace period still
// gives its lease back: the key is free at once, not locked for the rest
// of the lease's TTL.
func TestWorkerStoppedPastItsGraceReleasesTheLease(t *testing.T) {
	h, _, gate, b, _, stop := gatedWorker(t, func(c *Config) {
		c.ShutdownGrace = 100 * time.Millisecond
		c.LeaseTTL = time.Minute
	})
	publishVersions(t, b, []string{"cut"}, 1)
	waitUntil(t, 10*time.Second, "the create held at the API", func() bool { return gate.waiting.Load() == 1 })
	stop()
	close(gate.release)
	_, _, err := h.store.Acquire(context.Background(), store.Key{Entity: "listing", Key: "cut"}, "next-worker", time.Minute, 1)
	var locked *store.LockedError
	if errors.As(err, &locked) {
		t.Fatalf("the key is still locked after the worker stopped (%v): the cancelled call did not give its lease back", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// A resync event older than a live one of the same key, both in this
// worker while the key is busy, costs no call: the live version goes
// first and the resync one is settled stale after it (issue 18: "a queued
// resync event older than a live one for the same key costs no call").
func TestWorkerCoalescesAResyncEventBehindANewerLiveOne(t *testing.T) {
	h, _, gate, b, w, _ := gatedWorker(t, func(c *Config) {
		c.Streams = []bus.Stream{bus.Live, bus.Resync}
		c.Concurrency, c.Prefetch = 16, 64
	})
	if err := b.Publish(context.Background(), bus.Live, bus.Message{Body: upsert("mixed", 1, "1")}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "version 1's create held", func() bool { return gate.waiting.Load() == 1 })
	if err := b.Publish(context.Background(), bus.Resync, bus.Message{Body: upsert("mixed", 2, "2")}); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), bus.Live, bus.Message{Body: upsert("mixed", 3, "3")}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the resync and the live version waiting", func() bool {
		return w.keys.waitingOn(bus.Live) == 1 && w.keys.waitingOn(bus.Resync) == 1
	})
	close(gate.release)
	waitUntil(t, 30*time.Second, "every event acked", func() bool { return acked(w) >= 3 })
	expectNewest(t, h, []string{"mixed"}, 3)
	writes := apiWrites(h)
	if writes != 2 {
		t.Errorf("%d API writes (%v), want 2: version 1's create and live version 3; resync version 2 costs none", writes, h.api.Stats().Requests)
	}
	if n := valueOf(t, w.metrics.coalesced.WithLabelValues(string(bus.Resync))); n != 1 {
		t.Errorf("eventsync_events_coalesced_total{stream=resync} = %v, want 1", n)
	}
}
