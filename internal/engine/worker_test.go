package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/sink"
)

// runWorker starts a Worker on a real RabbitMQ bus and returns a stop
// function that cancels it and waits for Run to return.
func runWorker(t *testing.T, h *harness, b bus.Bus, mutate func(*Config)) (*Worker, func()) {
	t.Helper()
	return runWorkerMetrics(t, h, b, mutate, nil)
}

func runWorkerMetrics(t *testing.T, h *harness, b bus.Bus, mutate func(*Config), m *Metrics) (*Worker, func()) {
	t.Helper()
	cfg := h.applier.cfg
	cfg.Concurrency = 16
	cfg.ControlPoll = 100 * time.Millisecond
	cfg.BackoffBase = 100 * time.Millisecond
	cfg.BackoffMax = time.Second
	cfg.MaxAttempts = 1000
	if mutate != nil {
		mutate(&cfg)
	}
	w, err := NewWorker(b, h.store, h.applier.sink, cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return w, stop
}

func publishN(t *testing.T, b bus.Bus, stream bus.Stream, from, n int) {
	t.Helper()
	msgs := make([]bus.Message, n)
	for i := range msgs {
		msgs[i] = bus.Message{Body: upsert(fmt.Sprintf("k%d", from+i), 1, "t")}
	}
	if err := b.Publish(context.Background(), stream, msgs...); err != nil {
		t.Fatal(err)
	}
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", within, what)
}

func readyOf(t *testing.T, b bus.Bus, s bus.Stream) int64 {
	st, err := b.Stats(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	return st.Ready
}

func TestWorkerPauseAndResume(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	ctx := context.Background()
	w, _ := runWorker(t, h, b, func(c *Config) { c.Streams = []bus.Stream{bus.Live} })
	publishN(t, b, bus.Live, 0, 20)
	waitUntil(t, 10*time.Second, "first batch applied", func() bool { return len(h.api.Records("listings")) == 20 })

	if err := control.SetPaused(ctx, h.store, bus.Live, true, "test", ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Second+500*time.Millisecond, "worker stops consuming", func() bool { return !w.Status().Consuming[bus.Live] })
	publishN(t, b, bus.Live, 100, 30)
	time.Sleep(500 * time.Millisecond)
	if n := len(h.api.Records("listings")); n != 20 {
		t.Fatalf("paused worker applied events: %d records", n)
	}
	waitUntil(t, 5*time.Second, "events waiting in the queue", func() bool { return readyOf(t, b, bus.Live) == 30 })

	if err := control.SetPaused(ctx, h.store, bus.Live, false, "test", ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "everything applied after resume", func() bool { return len(h.api.Records("listings")) == 50 })
}

func TestWorkerBreakerStopsPullingDuringOutage(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	w, _ := runWorker(t, h, b, func(c *Config) {
		c.Streams = []bus.Stream{bus.Live}
		c.Breaker = BreakerConfig{Failures: 3, OpenFor: 300 * time.Millisecond, MaxOpenFor: time.Second}
	})
	h.api.StartOutage(3 * time.Second)
	publishN(t, b, bus.Live, 0, 200)
	time.Sleep(2 * time.Second)
	st := h.api.Stats()
	var calls int64
	for _, byStatus := range st.Requests {
		for _, n := range byStatus {
			calls += n
		}
	}
	// Without a breaker 200 events × retries would hammer the API; with it
	// only the first failures and one probe per open period get through.
	if calls > 60 {
		t.Fatalf("%d API calls during a 2s outage: the breaker did not stop pulling", calls)
	}
	t.Logf("%d API calls during the outage", calls)
	if s := w.Status().Breaker; s == "closed" {
		t.Fatalf("breaker %s during the outage", s)
	}
	waitUntil(t, 20*time.Second, "recovery after the outage", func() bool { return len(h.api.Records("listings")) == 200 })
	if d := h.api.Stats().DuplicateRecords; d != 0 {
		t.Fatalf("%d duplicates", d)
	}
}

func TestWorkerGracefulShutdownLosesNothing(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	_ = h.api.SetFaults(fakeapi.Faults{Latency: fakeapi.Duration(100 * time.Millisecond)})
	_, stop := runWorker(t, h, b, func(c *Config) { c.Streams = []bus.Stream{bus.Live} })
	publishN(t, b, bus.Live, 0, 100)
	time.Sleep(300 * time.Millisecond)
	stop()
	applied := len(h.api.Records("listings"))
	left := readyOf(t, b, bus.Live)
	if applied == 0 || applied == 100 {
		t.Fatalf("test needs a shutdown mid-run; applied %d", applied)
	}
	// Each event is applied or back in the queue; the retry tiers hold none
	// because nothing failed.
	if int64(applied)+left < 100 {
		t.Fatalf("lost events: applied %d + queued %d < 100", applied, left)
	}
	// A second worker finishes the rest without duplicates.
	runWorker(t, h, b, func(c *Config) { c.Streams = []bus.Stream{bus.Live} })
	waitUntil(t, 20*time.Second, "the rest applied", func() bool { return len(h.api.Records("listings")) == 100 })
	if d := h.api.Stats().DuplicateRecords; d != 0 {
		t.Fatalf("%d duplicates", d)
	}
}

// gatedSink holds every create of one stream until release is closed.
type gatedSink struct {
	sink.Sink
	stream  bus.Stream
	release chan struct{}
	waiting atomic.Int64
}

func (g *gatedSink) Create(ctx context.Context, r sink.Record) (string, error) {
	if s, _ := bus.StreamFrom(ctx); s == g.stream {
		g.waiting.Add(1)
		select {
		case <-g.release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return g.Sink.Create(ctx, r)
}

// A resync whose calls all wait (on the API's budget, say) must leave
// slots for live events: they are applied while every resync slot is busy.
func TestWorkerKeepsSlotsForLiveDuringResync(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	gate := &gatedSink{Sink: h.applier.sink, stream: bus.Resync, release: make(chan struct{})}
	h.applier.sink = gate
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	w, _ := runWorker(t, h, b, func(c *Config) { c.Concurrency, c.ResyncConcurrency = 4, 3 })
	defer close(gate.release)
	publishN(t, b, bus.Resync, 0, 10)
	waitUntil(t, 10*time.Second, "three resync events waiting on the API", func() bool { return gate.waiting.Load() == 3 })
	time.Sleep(300 * time.Millisecond) // room for a fourth, were the cap broken
	if n := gate.waiting.Load(); n != 3 {
		t.Fatalf("%d resync events waiting on the API, want the cap of 3", n)
	}
	publishN(t, b, bus.Live, 100, 1)
	waitUntil(t, 10*time.Second, "the live event applied while resync waits", func() bool { return len(h.api.Records("listings")) == 1 })
	if n := w.Status().InFlight[bus.Resync]; n != 3 {
		t.Fatalf("%d resync events in flight, want the cap of 3", n)
	}
}

// The lag histogram counts applied events that carry occurred_at, from
// that time to settlement.
func TestWorkerRecordsEndToEndLag(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	reg := prometheus.NewRegistry()
	w, _ := runWorkerMetrics(t, h, b, nil, NewMetrics(reg))
	occurred := time.Now().Add(-3 * time.Second).UTC().Format(time.RFC3339Nano)
	body := fmt.Sprintf(`{"id":"lag-1","entity":"listing","key":"lag1","version":1,"op":"upsert","data":{"title":"t"},"occurred_at":%q}`, occurred)
	if err := b.Publish(context.Background(), bus.Live, bus.Message{Body: []byte(body)}, bus.Message{Body: upsert("nolag", 1, "t")}); err != nil {
		t.Fatal(err)
	}
	// Records reach the API before their deliveries settle; the metric
	// follows the settlement.
	var count uint64
	var sum float64
	waitUntil(t, 10*time.Second, "both events applied and the lag observed", func() bool {
		count, sum = lagSamples(t, reg)
		return len(h.api.Records("listings")) == 2 && count > 0
	})
	if count != 1 || sum < 3 || sum > 13 {
		t.Fatalf("lag histogram: %d samples summing to %.2fs, want one of 3–13s", count, sum)
	}
	// The heartbeat carries the same lag.
	if lag := w.Status().Lag[bus.Live]; lag.Events != 1 || lag.P50 != lag.P99 || lag.P99 < 3 || lag.P99 > 13 {
		t.Fatalf("heartbeat lag: %+v, want one event of 3–13s", lag)
	}
}

func lagSamples(t *testing.T, reg *prometheus.Registry) (count uint64, sum float64) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "eventsync_event_lag_seconds" {
			for _, m := range f.GetMetric() {
				count += m.GetHistogram().GetSampleCount()
				sum += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return count, sum
}

// flakySettleBus wraps a real bus and counts hand-backs (Release) and
// retries, keeping the longest delay a retry asked for. With
// failFirstRetry, the first Retry of any delivery fails without settling
// it, as a retry whose publish to the retry queue failed.
type flakySettleBus struct {
	bus.Bus
	onAck          func(body []byte) // nil: none
	failFirstRetry bool
	failed         atomic.Bool
	releases       atomic.Int64
	retries        atomic.Int64
	longestRetry   atomic.Int64 // nanoseconds
}

func (b *flakySettleBus) Subscribe(ctx context.Context, s bus.Stream, o bus.SubscribeOptions) (bus.Subscription, error) {
	sub, err := b.Bus.Subscribe(ctx, s, o)
	if err != nil {
		return nil, err
	}
	w := &flakySettleSub{Subscription: sub, out: make(chan bus.Delivery), done: make(chan struct{})}
	go func() { // owned by the subscription: ends when sub's channel closes
		defer close(w.done)
		defer close(w.out)
		for d := range sub.Deliveries() {
			w.out <- &flakySettleDelivery{Delivery: d, bus: b}
		}
	}()
	return w, nil
}

type flakySettleSub struct {
	bus.Subscription
	out  chan bus.Delivery
	done chan struct{}
}

func (s *flakySettleSub) Deliveries() <-chan bus.Delivery { return s.out }

func (s *flakySettleSub) Close() error {
	err := s.Subscription.Close()
	go func() { // drain what the forwarder still holds, then wait for it
		for d := range s.out {
			_ = d.Release(context.Background())
		}
	}()
	<-s.done
	return err
}

type flakySettleDelivery struct {
	bus.Delivery
	bus *flakySettleBus
}

func (d *flakySettleDelivery) Ack(ctx context.Context) error {
	if d.bus.onAck != nil {
		d.bus.onAck(d.Body())
	}
	return d.Delivery.Ack(ctx)
}

func (d *flakySettleDelivery) Release(ctx context.Context) error {
	d.bus.releases.Add(1)
	return d.Delivery.Release(ctx)
}

func (d *flakySettleDelivery) Retry(ctx context.Context, delay time.Duration, reason string) error {
	d.bus.retries.Add(1)
	for longest := d.bus.longestRetry.Load(); int64(delay) > longest && !d.bus.longestRetry.CompareAndSwap(longest, int64(delay)); {
		longest = d.bus.longestRetry.Load()
	}
	if d.bus.failFirstRetry && d.bus.failed.CompareAndSwap(false, true) {
		return fmt.Errorf("publish to the retry queue: %w", errors.New("injected failure"))
	}
	return d.Delivery.Retry(ctx, delay, reason)
}

// failOnceSink answers the first create with a retryable 503.
type failOnceSink struct {
	sink.Sink
	failed atomic.Bool
}

func (s *failOnceSink) Create(ctx context.Context, r sink.Record) (string, error) {
	if s.failed.CompareAndSwap(false, true) {
		return "", &sink.Error{Op: "create", Status: 503, Retryable: true}
	}
	return s.Sink.Create(ctx, r)
}

// A retry that could not be scheduled must not leave its delivery unsettled:
// RabbitMQ would hand it out again only when the channel closes, which the
// running worker's subscription never does.
func TestWorkerHandsBackADeliveryWhoseRetryFailed(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	h.applier.sink = &failOnceSink{Sink: h.applier.sink}
	b := &flakySettleBus{Bus: rabbitmqtest.Open(t, rabbitmq.Config{}), failFirstRetry: true}
	runWorker(t, h, b, func(c *Config) { c.Streams = []bus.Stream{bus.Live} })
	publishN(t, b, bus.Live, 0, 1)
	waitUntil(t, 10*time.Second, "the event applied after its failed retry", func() bool { return len(h.api.Records("listings")) == 1 })
	if !b.failed.Load() {
		t.Fatal("the retry never failed: the test did not test anything")
	}
}

// syncBuffer is a log destination the worker's goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Retries are not logged one by one, but an event that keeps coming back
// is: here one the API refuses for the whole test.
func TestWorkerWarnsAboutAnEventThatKeepsFailing(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	var logs syncBuffer
	if err := h.api.SetFaults(fakeapi.Faults{ErrorRate: 1}); err != nil { // 5xx without Retry-After
		t.Fatal(err)
	}
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	runWorker(t, h, b, func(c *Config) {
		c.Streams = []bus.Stream{bus.Live}
		c.BackoffBase, c.BackoffMax = 10*time.Millisecond, 10*time.Millisecond
		c.Breaker = BreakerConfig{Failures: 1000, OpenFor: time.Second, MaxOpenFor: time.Second}
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	if err := b.Publish(context.Background(), bus.Live, bus.Message{Body: upsert("failing", 1, "t")}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "a warning about the failing event", func() bool {
		return strings.Contains(logs.String(), `msg="event keeps failing; retrying" stream=live key=listing/failing attempt=10 result=retried`)
	})
}

// A locked key waits about a second per attempt and stays locked for a
// lease TTL after its holder crashed: it warns far less often.
func TestPersistentRetriesWarnSparingly(t *testing.T) {
	for _, c := range []struct {
		r       Result
		attempt int
		want    bool
	}{
		{ResultRetried, 9, false}, {ResultRetried, 10, true}, {ResultRetried, 11, false}, {ResultRetried, 50, true},
		{ResultLocked, 10, false}, {ResultLocked, 50, false}, {ResultLocked, 100, true},
	} {
		if got := persistent(c.r, c.attempt); got != c.want {
			t.Errorf("persistent(%s, %d) = %v, want %v", c.r, c.attempt, got, c.want)
		}
	}
}

// After an outage trips the breaker, the half-open probe must go to a
// stream that has an event to probe with. Here live is paused when the
// breaker reopens, so only the idle resync stream is pulling; once live
// resumes, its events must flow again (they used to wait for ever on a
// probe the resync stream held without an event to send).
func TestWorkerProbesWithAStreamThatHasEvents(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	ctx := context.Background()
	w, _ := runWorker(t, h, b, func(c *Config) {
		c.Breaker = BreakerConfig{Failures: 3, OpenFor: 200 * time.Millisecond, MaxOpenFor: time.Second}
	})
	h.api.StartOutage(time.Hour)
	publishN(t, b, bus.Live, 0, 10)
	waitUntil(t, 10*time.Second, "the breaker to open", func() bool { return w.Status().Breaker != "closed" })
	if err := control.SetPaused(ctx, h.store, bus.Live, true, "test", ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "live to stop", func() bool { return !w.Status().Consuming[bus.Live] })
	h.api.StartOutage(0)
	time.Sleep(time.Second) // the breaker half-opens while only resync pulls
	if err := control.SetPaused(ctx, h.store, bus.Live, false, "test", ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "the live events applied after the outage", func() bool { return len(h.api.Records("listings")) == 10 })
}

// A stream waiting for its next event must not hold a slot: with one slot
// and an idle resync stream, live events used to wait for ever.
func TestWorkerWithOneSlotServesBothStreams(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	runWorker(t, h, b, func(c *Config) { c.Concurrency, c.Prefetch = 1, 1 })
	publishN(t, b, bus.Live, 0, 20)
	waitUntil(t, 20*time.Second, "the live events applied", func() bool { return len(h.api.Records("listings")) == 20 })
	publishN(t, b, bus.Resync, 100, 5)
	publishN(t, b, bus.Live, 200, 5)
	waitUntil(t, 20*time.Second, "both streams applied", func() bool { return len(h.api.Records("listings")) == 30 })
}

// Pausing one stream wakes only that stream's pump: a live event waiting
// for a slot is not handed back (RabbitMQ counts each hand-back towards its
// delivery limit) when resync is paused and resumed.
func TestWorkerPausingOneStreamLeavesTheOtherAlone(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	gate := &gatedSink{Sink: h.applier.sink, stream: bus.Live, release: make(chan struct{})}
	h.applier.sink = gate
	b := &flakySettleBus{Bus: rabbitmqtest.Open(t, rabbitmq.Config{})}
	ctx := context.Background()
	runWorker(t, h, b, func(c *Config) { c.Concurrency, c.Prefetch = 1, 2 })
	publishN(t, b, bus.Live, 0, 2)
	waitUntil(t, 10*time.Second, "the first live event holding the only slot", func() bool { return gate.waiting.Load() == 1 })
	time.Sleep(200 * time.Millisecond) // the second is now in hand, waiting for the slot
	for _, paused := range []bool{true, false} {
		if err := control.SetPaused(ctx, h.store, bus.Resync, paused, "test", ""); err != nil {
			t.Fatal(err)
		}
		time.Sleep(400 * time.Millisecond) // the worker polls every 100 ms here
	}
	if n := b.releases.Load(); n != 0 {
		t.Errorf("%d live deliveries handed back while only resync was paused and resumed", n)
	}
	close(gate.release)
	waitUntil(t, 10*time.Second, "both live events applied", func() bool { return len(h.api.Records("listings")) == 2 })
}

// A message its producer marked rejected (the relay, for an outbox row it
// cannot encode) is parked with the producer's reason, even when its body
// would parse: the worker does not second-guess it.
func TestWorkerParksARejectedMessageWithItsReason(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	runWorker(t, h, b, nil)
	const reason = "outbox row 7 (entity 'listing', key 'r') cannot be published as an event: occurred_at 'infinity' is not a finite time"
	rejected := bus.Message{Body: upsert("r", 1, "t"), Headers: map[string]string{bus.HeaderRejected: reason}}
	if err := b.Publish(context.Background(), bus.Live, rejected, bus.Message{Body: upsert("ok", 1, "t")}); err != nil {
		t.Fatal(err)
	}
	var parked []bus.ParkedMessage
	waitUntil(t, 10*time.Second, "the rejected message parked", func() bool {
		var err error
		parked, err = b.ListParked(context.Background(), bus.ParkedFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(parked) == 1 && len(h.api.Records("listings")) == 1
	})
	if parked[0].Reason != reason {
		t.Fatalf("parked with %q, want the producer's reason %q", parked[0].Reason, reason)
	}
	if recs := h.api.Records("listings"); recs[0]["external_id"] != "ok" {
		t.Fatalf("the API holds %v, want only the valid event's record", recs)
	}
}
