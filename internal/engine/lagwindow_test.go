package engine

import (
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
)

func TestLagsQuantilesOverARecentWindow(t *testing.T) {
	var l lags
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := l.snapshot(t0); got != nil {
		t.Fatalf("no lag yet: %v", got)
	}
	// 100 live lags 1..100 s: p50 is the 50th, p99 the 99th.
	for i := 1; i <= 100; i++ {
		l.add(bus.Live, t0, float64(i))
	}
	l.add(bus.Resync, t0, 7)
	got := l.snapshot(t0.Add(time.Second))
	if lv := got[bus.Live]; lv.P50 != 50 || lv.P99 != 99 || lv.Events != 100 {
		t.Errorf("live: %+v, want p50 50, p99 99 of 100", lv)
	}
	if rs := got[bus.Resync]; rs.P50 != 7 || rs.P99 != 7 || rs.Events != 1 {
		t.Errorf("resync: %+v", rs)
	}

	// The ring keeps the last lagRingSize only: a burst of small lags
	// pushes the old ones out.
	for range lagRingSize {
		l.add(bus.Live, t0.Add(2*time.Second), 0.5)
	}
	if lv := l.snapshot(t0.Add(3 * time.Second))[bus.Live]; lv.P99 != 0.5 || lv.Events != lagRingSize {
		t.Errorf("after %d newer events: %+v", lagRingSize, lv)
	}

	// Lags older than the window age out: a quiet stream reports none.
	got = l.snapshot(t0.Add(lagWindow + 3*time.Second))
	if _, ok := got[bus.Live]; ok || got != nil {
		t.Errorf("after the window: %v, want none", got)
	}
}
