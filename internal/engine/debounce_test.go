package engine

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/control"
)

// valueOf reads a gauge or counter of the live stream.
func valueOf(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func debouncingNow(t *testing.T, w *Worker) float64 {
	return valueOf(t, w.metrics.debouncing.WithLabelValues(string(bus.Live)))
}

// apiWrites counts the API's write requests (every method but GET).
func apiWrites(h *harness) int64 {
	var n int64
	for method, byStatus := range h.api.Stats().Requests {
		if method != http.MethodGet {
			for _, c := range byStatus {
				n += c
			}
		}
	}
	return n
}

// A burst of versions of a key within its debounce window costs one API
// call, the newest's; the others are settled stale, and only after the
// newest was committed (its ack comes first).
func TestWorkerDebounceTurnsABurstIntoOneCall(t *testing.T) {
	h := newHarness(t, stores()[0], nil)
	var mu sync.Mutex
	acks := map[string][]int64{} // versions acked, by key, in order
	b := &flakySettleBus{Bus: rabbitmqtest.Open(t, rabbitmq.Config{}), onAck: func(body []byte) {
		ev, err := event.Parse(body, event.DefaultMaxSize)
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		acks[ev.Key] = append(acks[ev.Key], ev.Version)
	}}
	w, _ := runWorker(t, h, b, func(c *Config) {
		c.Streams = []bus.Stream{bus.Live}
		c.Concurrency, c.Prefetch = 16, 64
		c.Debounce = map[string]time.Duration{"listing": time.Second}
	})
	keys := []string{"burst0", "burst1", "burst2"}
	const versions = 10
	publishVersions(t, b, keys, versions)
	waitUntil(t, 30*time.Second, "every event acked", func() bool { return acked(w) >= int64(len(keys)*versions) })
	expectNewest(t, h, keys, versions)
	if n := apiWrites(h); n != int64(len(keys)) {
		t.Errorf("%d API writes for %d keys × %d versions in a window (%v), want one create per key", n, len(keys), versions, h.api.Stats().Requests)
	}
	if n := valueOf(t, w.metrics.coalesced.WithLabelValues(string(bus.Live))); n != float64(len(keys)*(versions-1)) {
		t.Errorf("eventsync_events_coalesced_total = %v, want %d", n, len(keys)*(versions-1))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, k := range keys {
		if got := acks[k]; len(got) != versions || got[0] != versions {
			t.Errorf("key %s: versions acked in the order %v, want version %d first (the older ones only after it)", k, got, versions)
		}
	}
}

// debouncedWorker runs a worker whose every entity has a 30 s window (no
// test here waits it out) and publishes three versions of the key "quiet",
// returning once version 1 waits out its window holding the key and the
// other two wait behind it.
func debouncedWorker(t *testing.T, mutate func(*Config)) (*harness, *flakySettleBus, *Worker, func()) {
	t.Helper()
	h := newHarness(t, stores()[0], nil)
	b := &flakySettleBus{Bus: rabbitmqtest.Open(t, rabbitmq.Config{})}
	w, stop := runWorker(t, h, b, func(c *Config) {
		c.LeaseTTL = time.Minute
		c.Debounce = map[string]time.Duration{DebounceAny: 30 * time.Second}
		mutate(c)
	})
	publishVersions(t, b, []string{"quiet"}, 3)
	waitUntil(t, 10*time.Second, "version 1 debouncing and two versions waiting behind it", func() bool {
		return debouncingNow(t, w) == 1 && w.keys.waitingOn(bus.Live) == 2
	})
	return h, b, w, stop
}

// A debounce wait holds no slot: with one, another event is applied
// meanwhile. A worker that stops during the wait hands the delivery and
// its key's waiters back, and the next worker applies the newest.
func TestWorkerDebounceHoldsNoSlotAndHandsBackOnShutdown(t *testing.T) {
	h, b, w, stop := debouncedWorker(t, func(c *Config) { c.Concurrency = 1 })
	if n := w.Status().InFlight[bus.Live]; n != 0 {
		t.Errorf("%d live events in flight during the debounce wait, want 0", n)
	}
	// Resync is never debounced; it needs the one slot.
	if err := b.Publish(context.Background(), bus.Resync, bus.Message{Body: upsert("other", 1, "1")}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the other key applied during the wait", func() bool { return len(h.remote(t, "other")) == 1 })
	if debouncingNow(t, w) != 1 || len(h.remote(t, "quiet")) != 0 {
		t.Fatal("the debounced key was applied before its window passed")
	}

	stop()
	if n := b.releases.Load(); n != 3 {
		t.Errorf("%d deliveries handed back, want 3 (the debounced one and the two behind it)", n)
	}
	if n, g := w.keys.waitingOn(bus.Live), debouncingNow(t, w); n != 0 || g != 0 {
		t.Fatalf("after the worker stopped: %d deliveries waiting for their key, %v debouncing", n, g)
	}
	waitUntil(t, 10*time.Second, "all three back in the queue", func() bool { return readyOf(t, b, bus.Live) == 3 })
	runWorker(t, h, b, func(c *Config) { c.Streams = []bus.Stream{bus.Live} })
	waitUntil(t, 20*time.Second, "the newest version applied", func() bool {
		recs := h.remote(t, "quiet")
		return len(recs) == 1 && recs[0]["title"] == "3"
	})
	expectNewest(t, h, []string{"quiet"}, 3)
}

// Pausing the stream during a debounce wait hands the delivery and its
// key's waiters back; on resume they are taken again (and wait again).
func TestWorkerDebounceHandsBackOnPause(t *testing.T) {
	h, b, w, _ := debouncedWorker(t, func(c *Config) { c.Streams = []bus.Stream{bus.Live} })
	ctx := context.Background()
	if err := control.SetPaused(ctx, h.store, bus.Live, true, "test", ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the three handed back", func() bool {
		return b.releases.Load() == 3 && debouncingNow(t, w) == 0 && w.keys.waitingOn(bus.Live) == 0
	})
	waitUntil(t, 10*time.Second, "all three back in the queue", func() bool { return readyOf(t, b, bus.Live) == 3 })
	if err := control.SetPaused(ctx, h.store, bus.Live, false, "test", ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the three in hand again, one debouncing", func() bool {
		return debouncingNow(t, w) == 1 && w.keys.waitingOn(bus.Live) == 2
	})
	if len(h.api.Records("listings")) != 0 {
		t.Fatal("a debounced key was applied before its window passed")
	}
}

// The window runs from the receipt of the oldest version not yet applied,
// not from the newest: a key changing every 50 ms, faster than its 300 ms
// window, still reaches the API while it keeps changing (a sliding quiet
// period would write it only once it stops).
func TestWorkerDebounceIsNotASlidingWindow(t *testing.T) {
	h := newHarness(t, stores()[0], nil)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	w, _ := runWorker(t, h, b, func(c *Config) {
		c.Streams = []bus.Stream{bus.Live}
		c.Debounce = map[string]time.Duration{"listing": 300 * time.Millisecond}
	})
	const versions = 40 // 2 s
	for v := 1; v <= versions; v++ {
		if err := b.Publish(context.Background(), bus.Live, bus.Message{Body: upsert("busy", int64(v), fmt.Sprint(v))}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(h.remote(t, "busy")) == 0 {
		t.Error("a key changing faster than its window was not written while it kept changing")
	}
	waitUntil(t, 20*time.Second, "every event acked", func() bool { return acked(w) >= versions })
	expectNewest(t, h, []string{"busy"}, versions)
	if n := apiWrites(h); n < 2 || n >= versions {
		t.Errorf("%d API writes for %d versions 50 ms apart, want more than one and fewer than one per version", n, versions)
	}
}

// A named entity's window wins over "*"; debouncing raises the default
// prefetch (capped at AMQP's 16-bit prefetch count); windows are checked.
func TestDebounceConfig(t *testing.T) {
	c := Config{Debounce: map[string]time.Duration{"listing": 250 * time.Millisecond}}.WithDefaults()
	if c.Prefetch != DebouncePrefetch*c.Concurrency {
		t.Errorf("default prefetch with debounce = %d, want %d × %d", c.Prefetch, DebouncePrefetch, c.Concurrency)
	}
	if c.debounceFor("listing") != 250*time.Millisecond || c.debounceFor("review") != 0 {
		t.Errorf("windows: listing %s, review %s; want 250ms and none", c.debounceFor("listing"), c.debounceFor("review"))
	}
	c.Debounce[DebounceAny] = time.Second
	if c.debounceFor("review") != time.Second || c.debounceFor("listing") != 250*time.Millisecond {
		t.Errorf("with \"*\": listing %s, review %s; want 250ms and 1s", c.debounceFor("listing"), c.debounceFor("review"))
	}
	if p := (Config{Concurrency: 10_000, Debounce: c.Debounce}).WithDefaults().Prefetch; p != maxPrefetch {
		t.Errorf("default prefetch at concurrency 10,000 = %d, want the cap %d", p, maxPrefetch)
	}
	if p := (Config{Debounce: map[string]time.Duration{"listing": 0}}).WithDefaults().Prefetch; p != 256 {
		t.Errorf("default prefetch with only a window of 0 = %d, want the concurrency", p)
	}
	for _, bad := range []map[string]time.Duration{{"listing": -time.Second}, {"": time.Second}, {"listing": 6 * time.Second}} {
		if err := (Config{Debounce: bad}).WithDefaults().Validate(); err == nil || !strings.Contains(err.Error(), "worker.debounce.") {
			t.Errorf("Debounce %v: %v, want an error naming worker.debounce", bad, err)
		}
	}
}
