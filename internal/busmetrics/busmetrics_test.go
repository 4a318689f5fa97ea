package busmetrics

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/eventsync/bus"
)

// statsBus answers Stats from a script and counts the calls.
type statsBus struct {
	bus.Bus
	mu    sync.Mutex
	calls int
	fail  bool
	ready int64
}

func (b *statsBus) Stats(_ context.Context, s bus.Stream) (bus.StreamStats, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	if b.fail {
		return bus.StreamStats{}, errors.New("broker unreachable")
	}
	return bus.StreamStats{Stream: s, Ready: b.ready, Delayed: -1, Unacked: 3, Parked: 2, Consumers: 1}, nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// gather reads reg's metrics as name{stream} -> value.
func gather(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetValue() + "}"
			}
			out[name] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestCollectorReadsOncePerMaxAgeAndSaysWhenItFails(t *testing.T) {
	b := &statsBus{ready: 7}
	c := &clock{t: time.Unix(1000, 0)}
	col := New(b, Options{MaxAge: 5 * time.Second, Now: c.now})
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	want := func(what string, metrics map[string]float64, calls int) {
		t.Helper()
		if got := gather(t, reg); !maps.Equal(got, metrics) {
			t.Fatalf("%s: metrics %v, want %v", what, got, metrics)
		}
		if b.calls != calls {
			t.Fatalf("%s: %d reads of the broker, want %d", what, b.calls, calls)
		}
	}
	up := func(ready float64) map[string]float64 {
		// Delayed -1 (unknown) is absent.
		return map[string]float64{
			"eventsync_queue_stats_up": 1, "eventsync_parked_messages": 2,
			"eventsync_queue_ready{live}": ready, "eventsync_queue_ready{resync}": ready,
			"eventsync_queue_unacked{live}": 3, "eventsync_queue_unacked{resync}": 3,
			"eventsync_queue_consumers{live}": 1, "eventsync_queue_consumers{resync}": 1,
		}
	}
	want("first scrape", up(7), 2) // one read per stream
	b.ready = 9
	c.t = c.t.Add(4 * time.Second)
	want("within MaxAge", up(7), 2)
	c.t = c.t.Add(2 * time.Second)
	want("after MaxAge", up(9), 4)
	b.fail = true
	c.t = c.t.Add(6 * time.Second)
	want("broker unreachable", map[string]float64{"eventsync_queue_stats_up": 0}, 5)
}
