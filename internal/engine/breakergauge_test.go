package engine

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
)

// breakerGauges reads eventsync_breaker_state and eventsync_breaker_open.
func breakerGauges(t *testing.T, g prometheus.Gatherer) (state, open float64) {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	state, open = -1, -1
	for _, f := range families {
		switch f.GetName() {
		case "eventsync_breaker_state":
			state = f.GetMetric()[0].GetGauge().GetValue()
		case "eventsync_breaker_open":
			open = f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if state < 0 || open < 0 {
		t.Fatalf("breaker gauges missing: state %v open %v", state, open)
	}
	return state, open
}

// The gauges follow the breaker's clock: an open breaker turns half-open
// when its time is up, with no event to say so.
func TestBreakerGaugesReportEveryState(t *testing.T) {
	clock := &manualClock{t: time.Unix(1000, 0)}
	b := newBreaker(BreakerConfig{Failures: 2, OpenFor: time.Second, MaxOpenFor: 4 * time.Second}, clock.Now, nil)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	want := func(what string, state, open float64) {
		t.Helper()
		if s, o := breakerGauges(t, reg); s != state || o != open {
			t.Fatalf("%s: breaker %s, gauges state %v open %v; want %v %v", what, b.State(), s, o, state, open)
		}
	}
	want("no worker running", 0, 0)
	stop := m.breaker.follow(b.State)
	want("closed", 0, 0)
	b.Record(false, true, false)
	b.Record(false, true, false)
	want("open", 2, 1)
	clock.Advance(1100 * time.Millisecond)
	want("half-open after the open period", 1, 1)
	if probe, err := b.Admit(context.Background(), nil); err != nil || !probe {
		t.Fatalf("Admit = %v, %v; want the probe", probe, err)
	}
	want("half-open with the probe out", 1, 1)
	b.Record(true, false, true)
	want("closed after a successful probe", 0, 0)

	// Several workers on one Metrics: the worst state shows.
	other := newBreaker(BreakerConfig{Failures: 1, OpenFor: time.Second, MaxOpenFor: time.Second}, clock.Now, nil)
	stopOther := m.breaker.follow(other.State)
	other.Record(false, true, false)
	want("one of two workers open", 2, 1)
	stopOther()
	want("the open worker stopped", 0, 0)
	stop()
}

// During an API outage the gauges say the breaker tripped, in every
// sample from the trip until the outage ends (the old gauge read 0 while
// half-open, and was reset whenever the pump took the next event).
func TestWorkerBreakerGaugeDuringOutage(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	reg := prometheus.NewRegistry()
	runWorkerMetrics(t, h, b, func(c *Config) {
		c.Streams = []bus.Stream{bus.Live}
		c.Breaker = BreakerConfig{Failures: 3, OpenFor: 300 * time.Millisecond, MaxOpenFor: time.Second}
	}, NewMetrics(reg))
	if s, o := breakerGauges(t, reg); s != 0 || o != 0 {
		t.Fatalf("before the outage: state %v open %v, want closed", s, o)
	}
	const outage = 3 * time.Second
	end := time.Now().Add(outage)
	h.api.StartOutage(outage)
	publishN(t, b, bus.Live, 0, 50)
	tripped, samples, states := false, 0, map[float64]int{}
	// Samples stop well before the outage's end: on a loaded machine one
	// may take a while, and the breaker may close only after the end.
	for time.Until(end) > 500*time.Millisecond {
		s, o := breakerGauges(t, reg)
		if s > 0 {
			tripped = true
		}
		if tripped {
			samples++
			states[s]++
			if o != 1 || s == 0 {
				t.Fatalf("sample %d after the trip, during the outage: state %v open %v; want tripped (state 1 or 2, open 1)", samples, s, o)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !tripped {
		t.Fatal("the breaker gauges never showed the outage")
	}
	t.Logf("%d samples after the trip: %v (state: count)", samples, states)
	waitUntil(t, 20*time.Second, "recovery after the outage", func() bool { return len(h.api.Records("listings")) == 50 })
	waitUntil(t, 5*time.Second, "gauges back to closed", func() bool {
		s, o := breakerGauges(t, reg)
		return s == 0 && o == 0
	})
}

// A worker's status counts the deliveries RabbitMQ handed it beyond those
// in flight: prefetched ones waiting for a slot are unacknowledged too
// (ctl status once showed none while the broker held four).
func TestWorkerStatusCountsUnackedDeliveries(t *testing.T) {
	sf := stores()[0]
	h := newHarness(t, sf, nil)
	gate := &gatedSink{Sink: h.applier.sink, stream: bus.Live, release: make(chan struct{})}
	h.applier.sink = gate
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	w, _ := runWorker(t, h, b, func(c *Config) {
		c.Streams = []bus.Stream{bus.Live}
		c.Concurrency, c.Prefetch = 2, 6
	})
	publishN(t, b, bus.Live, 0, 20)
	waitUntil(t, 10*time.Second, "two events in flight, the prefetch of six unacked, 14 ready", func() bool {
		st := w.Status()
		return st.InFlight[bus.Live] == 2 && st.Unacked[bus.Live] == 6 && readyOf(t, b, bus.Live) == 14
	})
	close(gate.release)
	waitUntil(t, 20*time.Second, "all applied", func() bool { return len(h.api.Records("listings")) == 20 })
	waitUntil(t, 5*time.Second, "nothing unacked", func() bool { return w.Status().Unacked[bus.Live] == 0 })
}
