package eventsync

import (
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/throttle"
)

func TestThrottleStatusReportsAnActiveHoldOnly(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	st := throttle.Stats{Limit: 12, Rate: 40, InFlight: [2]int{throttle.Live: 3, throttle.Resync: 5}, HeldUntil: now.Add(-time.Second)}
	ts := throttleStatus(st, now)
	if ts.Limit != 12 || ts.Rate != 40 || ts.InFlight[bus.Live] != 3 || ts.InFlight[bus.Resync] != 5 || ts.HeldUntil != nil || ts.Outage {
		t.Errorf("ended hold: %+v", ts)
	}
	st.HeldUntil, st.Outage = now.Add(30*time.Second), true
	if ts = throttleStatus(st, now); ts.HeldUntil == nil || !ts.HeldUntil.Equal(now.Add(30*time.Second)) || !ts.Outage {
		t.Errorf("active outage hold: %+v", ts)
	}
}
